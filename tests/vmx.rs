//! VMware .vmx in and out (`migrate` source, `--to vmx`, `--to esxi-vmx`, `info FILE.vmx`).
//!
//! Every .vmx of the corpus (../shared/corpus/configs/vmware and libvirt-vmx2xml) reads into
//! the VM model with the values libvirt's vmx2xml expects for it (the paired .xml, read with
//! our libvirt reader) and the values virt-v2v's `-i vmx --print-source` reports; what we
//! write reads back into the same model, is read alike by virt-v2v, and follows VMware's
//! documented rules, one test per rule (each cites its source); a VM moved bare disks ->
//! `--to vmx` -> `--to kvm` keeps its disks bit for bit (`qemu-img compare`). Malformed files
//! are one clear error with the line number.

mod common;

use common::*;
use diskferry::vm::{ControllerKind, Firmware, NicModel, ScsiModel, Vm};
use diskferry::vmconfig::vmx::hwversion::Product;
use diskferry::vmconfig::vmx::{self, layout, parse, write};
use std::path::{Path, PathBuf};

/// The corpus's .vmx files (relative to corpus/configs), sorted.
fn corpus_vmx(shared: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["vmware", "libvirt-vmx2xml"] {
        for e in std::fs::read_dir(shared.join("corpus/configs").join(dir)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".vmx") {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 15, "the corpus has 15 .vmx files: {out:?}");
    out
}

fn read_corpus(shared: &Path, rel: &str) -> diskferry::vmconfig::ConfigVm {
    let path = shared.join("corpus/configs").join(rel);
    let bytes = std::fs::read(&path).unwrap();
    vmx::read_vmx(&bytes, &path).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// What the tests compare of a VM: everything a .vmx carries, in plain terms.
#[derive(Debug, PartialEq)]
struct Facts {
    name: String,
    description: Option<String>,
    cpus: u32,
    cores_per_socket: Option<u32>,
    memory_mib: u64,
    firmware: Firmware,
    tpm: bool,
    os: Option<&'static str>,
    disks: Vec<(ControllerKind, u32, u32)>,
    cdroms: Vec<(ControllerKind, u32, u32)>,
    nics: Vec<(NicModel, Option<String>, Option<String>)>,
    serial_ports: usize,
}

fn facts(vm: &Vm) -> Facts {
    Facts {
        name: vm.name.clone(),
        description: vm.description.clone(),
        cpus: vm.cpus.count,
        cores_per_socket: vm.cpus.cores_per_socket,
        memory_mib: vm.memory_bytes >> 20,
        firmware: vm.firmware,
        tpm: vm.tpm,
        os: vm.guest_os.os.map(|o| o.name()),
        disks: vm
            .disks
            .iter()
            .map(|d| (d.controller.kind, d.controller.index, d.unit))
            .collect(),
        cdroms: vm
            .cdroms
            .iter()
            .map(|d| (d.controller.kind, d.controller.index, d.unit))
            .collect(),
        nics: vm
            .nics
            .iter()
            .map(|n| (n.model.clone(), n.mac.clone(), n.network.clone()))
            .collect(),
        serial_ports: vm.serial_ports.len(),
    }
}

/// The corpus files' values, as each file states them (read by eye, key by key).
#[test]
fn every_corpus_vmx_reads_with_its_values() {
    const TEST: &str = "every_corpus_vmx_reads_with_its_values";
    let Some(shared) = shared_dir(TEST) else {
        return;
    };
    use ControllerKind::*;
    // (file, name, cpus, memory MiB, firmware, disks (bus, controller, unit), NIC models/MACs)
    type Row = (
        &'static str,
        &'static str,
        u32,
        u64,
        Firmware,
        &'static [(ControllerKind, u32, u32)],
        &'static [(&'static str, Option<&'static str>)],
    );
    let bios = Firmware::Bios;
    let efi = Firmware::Uefi { secure_boot: false };
    let sb = Firmware::Uefi { secure_boot: true };
    const LSI: ControllerKind = Scsi(ScsiModel::LsiLogic);
    const PV: ControllerKind = Scsi(ScsiModel::Pvscsi);
    const SAS: ControllerKind = Scsi(ScsiModel::LsiSas);
    let rows: &[Row] = &[
        (
            "vmware/dissect-encrypted.vmx",
            "Encrypted VM",
            1,
            32,
            bios,
            &[],
            &[],
        ),
        (
            "vmware/virt-manager-test-vmdk-desc.vmx",
            "esx4.0-rhel4.8-i386",
            2,
            512,
            bios,
            &[(LSI, 0, 0)],
            &[("pcnet", Some("00:0c:29:f7:05:02"))],
        ),
        (
            "vmware/virt-v2v-test-i-vmx-3.vmx",
            "RHEL 7.1 UEFI",
            1,
            2048,
            efi,
            &[(PV, 0, 0)],
            &[("vmxnet3", Some("00:0c:29:4b:2b:8c"))],
        ),
        (
            "vmware/virt-v2v-test-i-vmx-5.vmx",
            "MSEdge - Win10_preview",
            1,
            2048,
            bios,
            &[(SAS, 0, 0)],
            &[("e1000e", Some("00:0c:29:bf:e4:5d"))],
        ),
        (
            "vmware/virt-v2v-test-i-vmx-6.vmx",
            "esx6.7-rhel8.6-nvme-disk",
            1,
            2048,
            bios,
            &[(Nvme, 0, 0)],
            &[("vmxnet3", Some("00:50:56:ac:cf:51"))],
        ),
        (
            "vmware/virt-v2v-test-i-vmx-7.vmx",
            "win2019",
            2,
            4096,
            sb,
            &[(SAS, 0, 0), (Sata, 0, 3)],
            &[("vmxnet3", Some("00:0c:29:46:9b:0b"))],
        ),
        (
            "libvirt-vmx2xml/gsx-in-the-wild-4.vmx",
            "Client",
            1,
            264,
            bios,
            &[(Ide, 0, 0)],
            &[("pcnet", Some("00:0c:29:c5:e3:5d"))],
        ),
        (
            "libvirt-vmx2xml/esx-in-the-wild-16.vmx",
            "Auto-esx8.0-rhel9.4-efi-nvme-disk",
            1,
            2048,
            sb,
            &[(Nvme, 0, 0)],
            &[("vmxnet3", Some("00:50:56:a0:a6:7e"))],
        ),
        (
            "libvirt-vmx2xml/esx-in-the-wild-14.vmx",
            "wild14",
            12,
            32768,
            bios,
            &[(PV, 0, 0), (PV, 0, 1)],
            &[("vmxnet3", Some("00:00:00:00:00:00"))],
        ),
    ];
    for (file, name, cpus, mib, fw, disks, nics) in rows {
        let c = read_corpus(&shared, file);
        let f = facts(&c.vm);
        assert_eq!(f.name, *name, "{file}");
        assert_eq!(f.cpus, *cpus, "{file}");
        assert_eq!(f.memory_mib, *mib, "{file}");
        assert_eq!(f.firmware, *fw, "{file}");
        assert_eq!(f.disks, disks.to_vec(), "{file}");
        let got: Vec<(String, Option<String>)> = f
            .nics
            .iter()
            .map(|(m, mac, _)| (m.to_string(), mac.clone()))
            .collect();
        let want: Vec<(String, Option<String>)> = nics
            .iter()
            .map(|(m, mac)| (m.to_string(), mac.map(str::to_string)))
            .collect();
        assert_eq!(got, want, "{file}");
    }
    // Facts beyond the table.
    let v1 = read_corpus(&shared, "vmware/virt-v2v-test-i-vmx-1.vmx");
    assert_eq!(v1.vm.disks.len(), 21, "21 disks, unit 7 skipped by VMware");
    assert_eq!(v1.disk_files[7], "BZ1308535_21disks_7.vmdk");
    assert_eq!(v1.vm.disks[7].unit, 8);
    assert_eq!(v1.vm.disks[15].controller.index, 1);
    assert_eq!(
        v1.vm.guest_os.os.map(|o| o.name()),
        Some("Red Hat Enterprise Linux 6")
    );
    let v17 = read_corpus(&shared, "libvirt-vmx2xml/esx-in-the-wild-17.vmx");
    assert_eq!(
        v17.disk_files[1],
        "subfolder/esx8.0-win11-with-second-disk-in-subfolder_1.vmdk"
    );
    let enc = read_corpus(&shared, "vmware/dissect-encrypted.vmx");
    assert!(
        enc.vm.warnings.iter().any(|w| w.contains("encrypted")),
        "{:?}",
        enc.vm.warnings
    );
    let v9 = read_corpus(&shared, "libvirt-vmx2xml/esx-in-the-wild-9.vmx");
    assert_eq!(v9.vm.cpus.cores_per_socket, Some(4));
    // Every corpus file reads (the table above covers most; the rest must at least read).
    for rel in corpus_vmx(&shared) {
        read_corpus(&shared, &rel);
    }
}

/// libvirt's vmx2xml test expectations (the .xml beside each .vmx) as the oracle: read with
/// our libvirt reader, they give the same name, description, CPUs, memory, firmware, disk
/// buses and files, NIC MACs, models and networks.
#[test]
fn libvirt_vmx2xml_expectations_agree() {
    const TEST: &str = "libvirt_vmx2xml_expectations_agree";
    let Some(shared) = shared_dir(TEST) else {
        return;
    };
    let dir = shared.join("corpus/configs/libvirt-vmx2xml");
    let mut checked = 0;
    for rel in corpus_vmx(&shared)
        .into_iter()
        .filter(|r| r.starts_with("libvirt-vmx2xml/"))
    {
        let xml_path = dir.join(Path::new(&rel).with_extension("xml").file_name().unwrap());
        let ours = read_corpus(&shared, &rel);
        let xml = std::fs::read(&xml_path).unwrap();
        let theirs = diskferry::vmconfig::libvirt::parse_domain(&xml, s(&xml_path)).unwrap();
        let (a, b) = (&ours.vm, &theirs.vm);
        assert_eq!(a.name, b.name, "{rel}");
        assert_eq!(a.description, b.description, "{rel}");
        assert_eq!(a.cpus.count, b.cpus.count, "{rel}");
        assert_eq!(
            a.cpus.cores_per_socket.filter(|c| *c > 1),
            b.cpus.cores_per_socket,
            "{rel}"
        );
        assert_eq!(a.memory_bytes, b.memory_bytes, "{rel}");
        assert_eq!(a.firmware, b.firmware, "{rel}");
        let kinds = |v: &Vm| {
            v.disks
                .iter()
                .map(|d| d.controller.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(a), kinds(b), "{rel}");
        // libvirt writes the datastore form `[datastore] directory/<fileName>`.
        let files: Vec<String> = theirs
            .disk_files
            .iter()
            .map(|f| {
                f.to_string_lossy()
                    .trim_start_matches("[datastore] directory/")
                    .to_string()
            })
            .collect();
        assert_eq!(ours.disk_files, files, "{rel}");
        assert_eq!(a.nics.len(), b.nics.len(), "{rel}");
        let xml_text = String::from_utf8_lossy(&xml);
        let interfaces: Vec<&str> = xml_text.split("<interface").skip(1).collect();
        for (i, (x, y)) in a.nics.iter().zip(&b.nics).enumerate() {
            assert_eq!(x.mac, y.mac, "{rel} NIC {i}");
            // libvirt leaves <model> out when the .vmx has no virtualDev (VMware's vlance).
            let block = interfaces[i].split("</interface>").next().unwrap();
            if block.contains("<model") {
                assert_eq!(x.model, y.model, "{rel} NIC {i}");
            } else {
                assert_eq!(x.model, NicModel::PcNet, "{rel} NIC {i}");
            }
            // libvirt's bridge is the networkName (NSX and vds NICs have none).
            if y.network.is_some() {
                assert_eq!(x.network, y.network, "{rel} NIC {i}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 8, "the eight libvirt vmx2xml pairs");
}

fn bus(kind: ControllerKind) -> String {
    match kind {
        ControllerKind::Ide => "ide",
        ControllerKind::Sata => "sata",
        ControllerKind::Scsi(_) => "scsi",
        ControllerKind::Nvme => "nvme",
        ControllerKind::VirtioBlk => "virtio-blk",
    }
    .into()
}

/// Our reading in virt-v2v's terms. virt-v2v (input/input_vmx.ml, find_nics and
/// find_removables) takes a MAC from `generatedAddress` only, names a NIC without networkName
/// `ethernetN`, gives a model only when virtualDev is set, and lists IDE CD drives only; it
/// orders disks SCSI, NVMe, SATA, IDE, as we do.
fn as_v2v(vm: &Vm, vmx_text: &str) -> V2v {
    let lower = vmx_text.to_ascii_lowercase();
    V2v {
        name: vm.name.clone(),
        memory: vm.memory_bytes,
        vcpus: vm.cpus.count,
        firmware: match vm.firmware {
            Firmware::Bios => "bios".into(),
            Firmware::Uefi { .. } => "uefi".into(),
        },
        disks: vm.disks.iter().map(|d| bus(d.controller.kind)).collect(),
        cdroms: vm
            .cdroms
            .iter()
            .filter(|c| c.controller.kind == ControllerKind::Ide)
            .map(|_| "ide".to_string())
            .collect(),
        nics: vm
            .nics
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let generated = !lower.contains(&format!("ethernet{i}.addresstype = \"static\""));
                let has_model = lower.contains(&format!("ethernet{i}.virtualdev"));
                let network = if lower.contains(&format!("ethernet{i}.networkname")) {
                    n.network.clone().unwrap_or_default()
                } else {
                    format!("ethernet{i}")
                };
                (
                    network,
                    n.mac.clone().filter(|_| generated),
                    has_model.then(|| match &n.model {
                        NicModel::PcNet => "vlance".to_string(),
                        m => m.to_string(),
                    }),
                )
            })
            .collect(),
    }
}

/// Copies a corpus .vmx into `dir` with a small real VMDK for each disk it names (virt-v2v
/// opens every disk with qemu-nbd).
fn stage_with_disks(shared: &Path, rel: &str, dir: &Path) -> PathBuf {
    let c = read_corpus(shared, rel);
    let vmx = dir.join(Path::new(rel).file_name().unwrap());
    std::fs::copy(shared.join("corpus/configs").join(rel), &vmx).unwrap();
    for f in &c.disk_files {
        let p = dir.join(f);
        if Path::new(f).is_absolute() {
            continue;
        }
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        qemu_img_ok(&["create", "-q", "-f", "vmdk", s(&p), "1M"]);
    }
    vmx
}

/// Where virt-v2v 2.2 reads a corpus file differently, and why (from its input_vmx.ml).
fn v2v_differs(rel: &str) -> Option<&'static str> {
    match rel {
        "libvirt-vmx2xml/gsx-in-the-wild-4.vmx" => Some(
            "the IDE disk has no deviceType; virt-v2v takes an IDE disk only with deviceType ata-hardDisk (find_ide_disks)",
        ),
        _ => None,
    }
}

#[test]
fn virt_v2v_reads_the_corpus_alike() {
    const TEST: &str = "virt_v2v_reads_the_corpus_alike";
    let Some(shared) = shared_dir(TEST) else {
        return;
    };
    let Some(v2v) = v2v_binary(TEST) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (i, rel) in corpus_vmx(&shared).into_iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let vmx = stage_with_disks(&shared, &rel, &dir);
        let ours = read_corpus(&shared, &rel);
        let text = String::from_utf8_lossy(&std::fs::read(&vmx).unwrap()).into_owned();
        let theirs = v2v_read(&v2v, "vmx", &vmx).unwrap_or_else(|e| panic!("{rel}: virt-v2v: {e}"));
        let mine = as_v2v(&ours.vm, &text);
        match v2v_differs(&rel) {
            None => assert_eq!(mine, theirs, "{rel}"),
            Some(why) => assert_ne!(mine, theirs, "{rel}: virt-v2v no longer differs ({why})"),
        }
    }
}

/// A machine with everything a .vmx carries, for the writer's tests.
fn rich_vm() -> Vm {
    use diskferry::vm::*;
    let mut vm = Vm::new("web \"01\" | #1");
    vm.description = Some("line one\nline \"two\" | three #4".into());
    vm.cpus = Cpus {
        count: 4,
        cores_per_socket: Some(2),
    };
    vm.memory_bytes = 3 << 30;
    vm.firmware = Firmware::Uefi { secure_boot: true };
    vm.tpm = true;
    vm.guest_os.vmware_id = Some("windows9-64".into());
    vm.guest_os.resolve();
    let disk = |kind, index, unit| Disk {
        source: DiskSource::Blank,
        capacity_bytes: None,
        controller: Controller { kind, index },
        unit,
        boot_order: None,
    };
    vm.disks = vec![
        disk(ControllerKind::Scsi(ScsiModel::Pvscsi), 0, 0),
        disk(ControllerKind::Scsi(ScsiModel::Pvscsi), 0, 1),
        disk(ControllerKind::Sata, 0, 2),
        disk(ControllerKind::Nvme, 1, 0),
        disk(ControllerKind::Ide, 0, 1),
    ];
    vm.cdroms = vec![Cdrom {
        source: DiskSource::Blank,
        controller: Controller {
            kind: ControllerKind::Sata,
            index: 0,
        },
        unit: 0,
    }];
    vm.nics = vec![
        Nic {
            model: NicModel::Vmxnet3,
            mac: Some("00:50:56:01:02:03".into()),
            network: Some("LAN".into()),
        },
        Nic {
            model: NicModel::E1000e,
            mac: Some("00:0c:29:aa:bb:cc".into()),
            network: Some("bridged".into()),
        },
    ];
    vm.serial_ports = vec![SerialPort {
        index: 0,
        connection: None,
    }];
    vm
}

/// Writes `vm` as a .vmx and reads it back. A .vmx orders disks by nothing but their
/// addresses, so the disks come back in address order: each written file must come back at
/// the address the layout gave it, and the machine is returned with its disks in the order
/// they were written.
fn write_and_read(vm: &Vm, product: Product) -> (String, Vm, Vec<String>) {
    let l = layout::layout(vm).unwrap();
    let files: Vec<String> = (1..=vm.disks.len()).map(|i| format!("d{i}.vmdk")).collect();
    let (text, warnings) = write::vmx_text(vm, &files, &l, product);
    let back = vmx::read_vmx(text.as_bytes(), Path::new("x.vmx"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut back_vm = back.vm.clone();
    back_vm.disks = files
        .iter()
        .zip(&l.disks)
        .map(|(f, slot)| {
            let i = back
                .disk_files
                .iter()
                .position(|b| b == f)
                .unwrap_or_else(|| panic!("{f} not read back\n{text}"));
            let d = back.vm.disks[i].clone();
            assert_eq!(
                (d.controller.index, d.unit),
                (slot.controller, slot.unit),
                "{f}"
            );
            d
        })
        .collect();
    (text, back_vm, warnings)
}

/// What we write reads back into the same model, for every corpus machine and a machine with
/// every feature, for both products. (A NIC without a network gets Workstation's NAT, which
/// reads back as the network `nat`, or ESXi's `VM Network`; an unknown guest is `other-64`.)
#[test]
fn written_vmx_reads_back_into_the_same_model() {
    const TEST: &str = "written_vmx_reads_back_into_the_same_model";
    let mut vms = vec![rich_vm()];
    if let Some(shared) = shared_dir(TEST) {
        for rel in corpus_vmx(&shared) {
            vms.push(read_corpus(&shared, &rel).vm);
        }
    }
    for vm in &vms {
        for product in [Product::Hosted, Product::Esxi] {
            let (text, back, _) = write_and_read(vm, product);
            let mut want = facts(vm);
            for (_, _, net) in &mut want.nics {
                if net.is_none() {
                    *net = Some(match product {
                        Product::Hosted => "nat".into(),
                        Product::Esxi => "VM Network".into(),
                    });
                }
            }
            // VMware needs a guestOS: an unknown one is written as other-64 (with a warning).
            if vm.guest_os.os.is_none() && vm.guest_os.vmware_id.is_none() {
                want.os = Some("Other 64-bit");
            }
            // A BIOS machine's TPM is not written (rule test below).
            want.tpm &= want.firmware != Firmware::Bios;
            assert_eq!(facts(&back), want, "{}: {product:?}\n{text}", vm.name);
        }
    }
}

/// VMware's .vmx syntax (libvirt src/vmx/vmx.c, virVMXParseConfig and its escaping test
/// annotation.vmx): `key = "value"`, one per line, keys case-insensitive; `"` and `|` in a
/// value escaped as `|22` and `|7C`; our writer also escapes `#` (`|23`, as VMware writes
/// unity.customColor) and line breaks (`|0A`).
#[test]
fn rule_values_are_quoted_and_escaped() {
    let (text, back, _) = write_and_read(&rich_vm(), Product::Hosted);
    for line in text.lines() {
        let (k, v) = line.split_once(" = ").unwrap_or_else(|| panic!("{line}"));
        assert!(!k.is_empty() && !k.contains([' ', '"']), "{line}");
        assert!(
            v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
            "{line}"
        );
        let inner = &v[1..v.len() - 1];
        assert!(!inner.contains(['"', '#']), "{line}");
    }
    assert!(
        text.contains("displayName = \"web |2201|22 |7C |231\""),
        "{text}"
    );
    assert_eq!(back.description, rich_vm().description);
    assert!(text.starts_with(".encoding = \"UTF-8\"\n"), "{text}");
}

/// The hardware version is the lowest that has every device used (Broadcom KB 315655 /
/// VMware KB 1003746 "Virtual machine hardware versions"; Workstation 14 release notes for
/// the hosted column): NVMe 13 on ESXi / 14 hosted, Secure Boot 13 / 14, vTPM 14, SATA 10.
#[test]
fn rule_hardware_version_fits_the_devices() {
    let version = |text: &str| -> u32 {
        let f = parse::parse(text.as_bytes(), Path::new("x")).unwrap();
        f.get("virtualHW.version").unwrap().parse().unwrap()
    };
    let mut vm = rich_vm();
    assert_eq!(version(&write_and_read(&vm, Product::Esxi).0), 14);
    assert_eq!(version(&write_and_read(&vm, Product::Hosted).0), 14);
    vm.tpm = false;
    assert_eq!(version(&write_and_read(&vm, Product::Esxi).0), 13);
    vm.firmware = Firmware::Bios;
    vm.disks
        .retain(|d| d.controller.kind != ControllerKind::Nvme);
    assert_eq!(version(&write_and_read(&vm, Product::Esxi).0), 10);
}

/// SCSI target 7 belongs to the controller itself (vSphere Virtual Machine Administration,
/// "SCSI and SATA Storage Controller Conditions, Limitations, and Compatibility": a SCSI
/// controller has 15 device nodes, 0-6 and 8-15); an IDE bus has 2 channels of 2 devices.
#[test]
fn rule_scsi_unit_7_and_ide_limits_are_kept() {
    use diskferry::vm::*;
    let mut vm = Vm::new("x");
    for unit in 0..9 {
        vm.disks.push(Disk {
            source: DiskSource::Blank,
            capacity_bytes: None,
            controller: Controller {
                kind: ControllerKind::Scsi(ScsiModel::LsiLogic),
                index: 0,
            },
            unit: if unit == 6 { 7 } else { unit },
            boot_order: None,
        });
    }
    for _ in 0..5 {
        vm.disks.push(Disk {
            source: DiskSource::Blank,
            capacity_bytes: None,
            controller: Controller {
                kind: ControllerKind::Ide,
                index: 3,
            },
            unit: 5,
            boot_order: None,
        });
    }
    let (text, back, warnings) = write_and_read(&vm, Product::Hosted);
    assert!(!text.to_ascii_lowercase().contains("scsi0:7."), "{text}");
    let ide: Vec<_> = back
        .disks
        .iter()
        .filter(|d| d.controller.kind == ControllerKind::Ide)
        .map(|d| (d.controller.index, d.unit))
        .collect();
    assert_eq!(ide, [(0, 0), (0, 1), (1, 0), (1, 1)]);
    assert_eq!(back.disks.len(), 14, "the fifth IDE disk goes to SATA");
    assert!(
        warnings.iter().any(|w| w.contains("written at sata0:0")),
        "{warnings:?}"
    );
}

/// Static MAC addresses must lie in 00:50:56:00:00:00-00:50:56:3F:FF:FF (vSphere Networking,
/// "Assign a Static MAC Address"); others need `checkMACAddress = "FALSE"`; a generated one is
/// kept as `generatedAddress` (what VMware writes for 00:0C:29 addresses).
#[test]
fn rule_mac_addresses_follow_vmware_ranges() {
    assert_eq!(write::mac_kind("00:50:56:3f:ff:ff"), write::MacKind::Static);
    assert_eq!(
        write::mac_kind("00:50:56:40:00:00"),
        write::MacKind::Generated
    );
    assert_eq!(
        write::mac_kind("00:0c:29:01:02:03"),
        write::MacKind::Generated
    );
    assert_eq!(
        write::mac_kind("52:54:00:12:34:56"),
        write::MacKind::Foreign
    );
    let mut vm = rich_vm();
    vm.nics[1].mac = Some("52:54:00:12:34:56".into());
    let (text, back, warnings) = write_and_read(&vm, Product::Esxi);
    assert!(
        text.contains(
            "ethernet0.addressType = \"static\"\nethernet0.address = \"00:50:56:01:02:03\""
        ),
        "{text}"
    );
    assert!(
        text.contains("ethernet1.checkMACAddress = \"FALSE\""),
        "{text}"
    );
    assert_eq!(back.nics[1].mac.as_deref(), Some("52:54:00:12:34:56"));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("outside VMware's ranges"))
    );
}

/// Memory is a multiple of 4 MiB (vSphere Virtual Machine Administration, "Change the Memory
/// Configuration": the memory size must be a multiple of 4 MB).
#[test]
fn rule_memory_is_a_multiple_of_4_mib() {
    let mut vm = rich_vm();
    vm.memory_bytes = (1 << 30) + 1;
    let (text, back, warnings) = write_and_read(&vm, Product::Hosted);
    assert!(text.contains("memsize = \"1028\""), "{text}");
    assert_eq!(back.memory_bytes % (4 << 20), 0);
    assert!(warnings.iter().any(|w| w.contains("rounded up")));
}

/// A vTPM needs UEFI firmware (vSphere Security, "Virtual Trusted Platform Module Overview":
/// the VM must use EFI firmware); and it needs encryption or a key provider, said in a warning.
#[test]
fn rule_a_vtpm_needs_uefi() {
    let mut vm = rich_vm();
    let (text, _, warnings) = write_and_read(&vm, Product::Esxi);
    assert!(text.contains("vtpm.present = \"TRUE\""));
    assert!(warnings.iter().any(|w| w.contains("key provider")));
    vm.firmware = Firmware::Bios;
    let (text, back, warnings) = write_and_read(&vm, Product::Hosted);
    assert!(!text.contains("vtpm"), "{text}");
    assert!(!back.tpm);
    assert!(warnings.iter().any(|w| w.contains("only to UEFI")));
}

/// Each SCSI controller has one model (`scsiN.virtualDev`); virtio devices, which VMware does
/// not emulate, become pvscsi for Linux and LSI Logic SAS otherwise, with a warning; a VMDK's
/// ddb.adapterType matches its controller (VMware Virtual Disk Format 5.0, "The Disk Database":
/// ide, buslogic, lsilogic or legacyESX).
#[test]
fn rule_controllers_and_adapter_types_match() {
    use diskferry::vm::*;
    let mut vm = rich_vm();
    vm.disks[0].controller.kind = ControllerKind::VirtioBlk;
    vm.disks[1].controller.kind = ControllerKind::Scsi(ScsiModel::BusLogic);
    let l = layout::layout(&vm).unwrap();
    // Windows: virtio -> lsisas1068 on scsi0; BusLogic cannot share it: moved to scsi1.
    assert_eq!(l.scsi.get(&0), Some(&ScsiModel::LsiSas));
    assert_eq!(l.scsi.get(&1), Some(&ScsiModel::BusLogic));
    assert_eq!(layout::adapter_type(&l, l.disks[0]), "lsilogic");
    assert_eq!(layout::adapter_type(&l, l.disks[1]), "buslogic");
    assert_eq!(layout::adapter_type(&l, l.disks[2]), "ide");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("no VMware equivalent"))
    );
    let (text, _, _) = write_and_read(&vm, Product::Esxi);
    assert!(text.contains("scsi0.virtualDev = \"lsisas1068\""), "{text}");
    assert!(text.contains("scsi1.virtualDev = \"buslogic\""), "{text}");
    // SATA and NVMe disks carry no deviceType (as ESXi writes them), IDE ones ata-hardDisk.
    assert!(!text.contains("sata0:2.deviceType") && !text.contains("nvme1:0.deviceType"));
    assert!(
        text.contains("ide0:1.deviceType = \"ata-hardDisk\""),
        "{text}"
    );
}

const VM_ARGS: &[&str] = &[
    "--name",
    "web01",
    "--cpus",
    "4",
    "--cores-per-socket",
    "2",
    "--memory",
    "2G",
    "--firmware",
    "uefi-secure",
    "--os",
    "ubuntu-64",
    "--disk-bus",
    "scsi",
    "--nic",
    "vmxnet3,mac=00:50:56:00:00:01,network=LAN",
    "--nic",
    "e1000e,network=bridged",
];

fn info_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&run_ok(&["info", "--output", "json", s(path)])).unwrap()
}

/// Bare disks -> `--to vmx` -> that .vmx `--to kvm`: the disks stay identical and the machine
/// the same; `--to esxi-vmx` writes vmfs descriptors with flat extents; virt-v2v reads the
/// .vmx we write with the same description.
#[test]
fn migrate_round_trip_keeps_disks_and_machine() {
    const TEST: &str = "migrate_round_trip_keeps_disks_and_machine";
    if !have_qemu(TEST) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (a, b) = two_disks(d);
    let ws = d.join("ws");
    let mut args = vec!["migrate", "--to", "vmx"];
    args.extend_from_slice(VM_ARGS);
    args.extend([s(&a), s(&b), s(&ws)]);
    run_ok(&args);
    let vmx_path = ws.join("web01.vmx");
    let info = info_json(&vmx_path);
    assert_eq!(info["format"], "vmx");
    assert_eq!(info["vm"]["cpus"]["count"], 4);
    assert_eq!(info["vm"]["memory_bytes"], 2u64 << 30);
    assert_eq!(info["vm"]["firmware"]["secure_boot"], true);
    assert_eq!(info["vm"]["nics"][0]["mac"], "00:50:56:00:00:01");
    assert_eq!(
        info["vm"]["disks"][0]["controller"]["kind"]["scsi"],
        "lsi-logic"
    );
    // monolithicSparse: a binary file whose embedded descriptor says so.
    let raw = std::fs::read(ws.join("web01-disk1.vmdk")).unwrap();
    assert!(raw.starts_with(b"KDMV"), "a sparse VMDK");
    let text = String::from_utf8_lossy(&raw[..raw.len().min(1 << 16)]).into_owned();
    assert!(text.contains("createType=\"monolithicSparse\""));
    assert!(text.contains("ddb.adapterType = \"lsilogic\""));
    // On to KVM, from the .vmx.
    let kvm = d.join("kvm");
    run_ok(&["migrate", "--to", "kvm", s(&vmx_path), s(&kvm)]);
    assert!(qemu_compare(
        "qcow2",
        &a,
        "qcow2",
        &kvm.join("web01-disk1.qcow2")
    ));
    assert!(qemu_compare(
        "raw",
        &b,
        "qcow2",
        &kvm.join("web01-disk2.qcow2")
    ));
    let domain = std::fs::read(kvm.join("web01.xml")).unwrap();
    let back = diskferry::vmconfig::libvirt::parse_domain(&domain, "web01.xml").unwrap();
    let src = vmx::read_vmx(&std::fs::read(&vmx_path).unwrap(), &vmx_path).unwrap();
    let (mut x, mut y) = (facts(&src.vm), facts(&back.vm));
    // libvirt has no place for the VMware-only network kinds: compare the rest.
    x.nics.iter_mut().for_each(|n| n.2 = None);
    y.nics.iter_mut().for_each(|n| n.2 = None);
    x.description = None;
    y.description = None;
    assert_eq!(x, y);
    // ESXi: vmfs descriptors and flat extents, identical content.
    let esx = d.join("esx");
    let mut args = vec!["migrate", "--to", "esxi-vmx"];
    args.extend_from_slice(VM_ARGS);
    args.extend([s(&a), s(&b), s(&esx)]);
    run_ok(&args);
    let desc = std::fs::read_to_string(esx.join("web01-disk1.vmdk")).unwrap();
    assert!(desc.contains("createType=\"vmfs\""), "{desc}");
    assert!(desc.contains("VMFS \"web01-disk1-flat.vmdk\""), "{desc}");
    assert!(esx.join("web01-disk2-flat.vmdk").exists());
    assert!(qemu_compare(
        "qcow2",
        &a,
        "vmdk",
        &esx.join("web01-disk1.vmdk")
    ));
    assert!(qemu_compare(
        "raw",
        &b,
        "vmdk",
        &esx.join("web01-disk2.vmdk")
    ));
    let esx2 = d.join("esx2");
    let (code, _, err) = run(&{
        let mut v = vec!["migrate", "--to", "esxi-vmx"];
        v.extend_from_slice(VM_ARGS);
        v.extend([s(&a), s(&b), s(&esx2)]);
        v
    });
    assert_eq!(code, 0);
    assert!(err.contains("vim-cmd solo/registervm"), "{err}");
    // virt-v2v reads both .vmx alike.
    let Some(v2v) = v2v_binary(TEST) else {
        return;
    };
    for vmx_file in [vmx_path, esx.join("web01.vmx")] {
        let text = std::fs::read_to_string(&vmx_file).unwrap();
        let ours = vmx::read_vmx(text.as_bytes(), &vmx_file).unwrap();
        let theirs = v2v_read(&v2v, "vmx", &vmx_file).unwrap();
        assert_eq!(as_v2v(&ours.vm, &text), theirs, "{}", vmx_file.display());
    }
}

/// An OVA (made by `--to vsphere`) moved to a .vmx keeps its machine and disks.
#[test]
fn an_ova_moves_to_vmx() {
    const TEST: &str = "an_ova_moves_to_vmx";
    if !have_qemu(TEST) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (a, b) = two_disks(d);
    let ova = d.join("web.ova");
    let mut args = vec!["migrate", "--to", "vsphere"];
    args.extend_from_slice(VM_ARGS);
    args.extend([s(&a), s(&b), s(&ova)]);
    run_ok(&args);
    let ws = d.join("ws");
    run_ok(&["migrate", "--to", "vmx", s(&ova), s(&ws)]);
    let info = info_json(&ws.join("web01.vmx"));
    assert_eq!(info["vm"]["cpus"]["cores_per_socket"], 2);
    assert_eq!(info["vm"]["guest_os"]["os"]["vmware"], "ubuntu-64");
    assert!(qemu_compare(
        "qcow2",
        &a,
        "vmdk",
        &ws.join("web01-disk1.vmdk")
    ));
    assert!(qemu_compare(
        "raw",
        &b,
        "vmdk",
        &ws.join("web01-disk2.vmdk")
    ));
}

/// Malformed .vmx files: one clear line naming the file and the line.
#[test]
fn malformed_vmx_is_one_clear_error_with_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let big = format!(
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nannotation = \"{}\"\n",
        "x".repeat(2 << 20)
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("unterminated.vmx", ".encoding = \"UTF-8\"\nconfig.version = \"8\"\ndisplayName = \"web\n".into(), "line 3: unterminated quoted value"),
        ("huge.vmx", big, "line 3: the value of 'annotation' is 2097152 bytes"),
        ("duplicate.vmx", ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nmemsize = \"1024\"\nMemSize = \"2048\"\n".into(), "line 4: the key 'MemSize' is given twice (first on line 3)"),
        ("escape.vmx", ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nannotation = \"50|% off\"\n".into(), "line 3: 'annotation': bad escape '|% '"),
        ("number.vmx", ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nnumvcpus = \"many\"\n".into(), "line 3: 'numvcpus': 'many' is not a number"),
        // Read (MiB), but more memory than any hypervisor gives a VM: the VM model's bounds.
        ("memsize.vmx", ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nmemsize = \"40000000\"\n".into(), "the VM's memory (41943040000000 bytes) is more than any hypervisor runs (at most 32 TiB)"),
        ("datastore.vmx", ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nscsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"[datastore1] web/web.vmdk\"\n".into(), "line 5: 'scsi0:0.fileName': '[datastore1] web/web.vmdk' is an ESXi datastore path"),
    ];
    for (name, text, want) in cases {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (code, out, err) = run(&["info", s(&p)]);
        assert_ne!(code, 0, "{name}: {out}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
        let (code, _, err) = run(&["migrate", "--to", "kvm", s(&p), s(&tmp.path().join("out"))]);
        assert_ne!(code, 0);
        assert!(err.contains(want), "{name}: {err}");
    }
}

/// Disk paths go through the open gate: under `--confine`, a .vmx naming a disk outside its
/// folder (`..`, absolute) is refused, and nothing is written.
#[test]
fn disk_paths_escaping_the_folder_are_refused_under_confine() {
    const TEST: &str = "disk_paths_escaping_the_folder_are_refused_under_confine";
    if !have_qemu(TEST) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("secret.vmdk");
    qemu_img_ok(&["create", "-q", "-f", "vmdk", s(&outside), "1M"]);
    let dir = tmp.path().join("vm");
    std::fs::create_dir(&dir).unwrap();
    for (name, file) in [
        ("up.vmx", "../secret.vmdk".to_string()),
        ("abs.vmx", outside.display().to_string()),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, format!(".encoding = \"UTF-8\"\nconfig.version = \"8\"\nscsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"{file}\"\n")).unwrap();
        let dest = tmp.path().join(format!("out-{name}"));
        let (code, _, err) = run(&["migrate", "--confine", "--to", "kvm", s(&p), s(&dest)]);
        assert_ne!(code, 0, "{name}");
        assert!(err.contains("refused"), "{name}: {err}");
        assert!(!dest.exists());
        // Without --confine the same file is read (the gate's default allows it).
        run_ok(&["migrate", "--to", "kvm", s(&p), s(&dest)]);
    }
}

/// `info FILE.vmx` shows the machine in lines for people.
#[test]
fn info_shows_the_machine() {
    const TEST: &str = "info_shows_the_machine";
    let Some(shared) = shared_dir(TEST) else {
        return;
    };
    let p = shared.join("corpus/configs/vmware/virt-v2v-test-i-vmx-7.vmx");
    let out = run_ok(&["info", s(&p)]);
    for want in [
        "format: vmx",
        "name: win2019",
        "guest OS: Windows Server 2019",
        "firmware: UEFI (Secure Boot)",
        "CPUs: 2",
        "memory: 4096 MiB",
        "0: win2019.vmdk (on SCSI (lsisas) 0, unit 0)",
        "1: win2019_1.vmdk (on SATA 0, unit 3)",
        "NIC 0: vmxnet3 on 'VM Network', MAC 00:0c:29:46:9b:0b",
    ] {
        assert!(out.contains(want), "{want}:\n{out}");
    }
}

/// The probe (a .vmx has no magic) claims every corpus .vmx and no other configuration or
/// descriptor of the corpus (libvirt XML, OVF, Proxmox, xl.cfg, Hyper-V, VirtualBox, VMDK
/// descriptors), reading only the first 4 KiB as `migrate` does.
#[test]
fn probe_claims_vmx_files_only() {
    const TEST: &str = "probe_claims_vmx_files_only";
    let Some(shared) = shared_dir(TEST) else {
        return;
    };
    let root = shared.join("corpus/configs");
    let mut seen = (0, 0);
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let bytes = std::fs::read(&f).unwrap();
            let head = &bytes[..bytes.len().min(4096)];
            let is_vmx = f.extension().is_some_and(|e| e == "vmx");
            assert_eq!(parse::probe(head), is_vmx, "{}", f.display());
            if is_vmx {
                seen.0 += 1;
            } else {
                seen.1 += 1;
            }
        }
    }
    assert!(seen.0 >= 15 && seen.1 >= 20, "{seen:?}");
}
