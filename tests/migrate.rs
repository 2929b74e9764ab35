//! `diskferry migrate`: a VM made of bare disks moved to each target, and the result read by
//! the peers that consume it: COT and virt-v2v read the OVAs back with the same VM, GNU tar
//! lists them (no PAX headers), `sha256sum` verifies their manifests, `qemu-img compare` finds
//! the disks identical; the libvirt XML passes `virt-xml-validate` and `virsh -c
//! test:///default define`. The import rules of vSphere and VirtualBox that cannot run here
//! (../shared/notes/packages.md, VirtualBox's ovfreader.cpp) are checked one test each.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const VM_ARGS: &[&str] = &[
    "--name",
    "web01",
    "--cpus",
    "4",
    "--cores-per-socket",
    "2",
    "--memory",
    "3G",
    "--os",
    "ubuntu-64",
    "--nic",
    "vmxnet3,network=LAN",
    "--nic",
    "e1000,mac=00:50:56:01:02:03,network=Backup",
];

fn migrate(d: &Path, target: &str, extra: &[&str], dest: &Path) -> String {
    let (a, b) = two_disks(d);
    let mut args = vec!["migrate", "--to", target];
    args.extend_from_slice(VM_ARGS);
    if extra.contains(&"--os") {
        let at = args.iter().position(|a| *a == "--os").unwrap();
        args.drain(at..at + 2);
    }
    args.extend_from_slice(extra);
    args.extend([s(&a), s(&b), s(dest)]);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
    err
}

/// Members of a tar, as GNU tar lists them.
fn tar_names(ova: &Path) -> Vec<String> {
    let list = Command::new("tar").arg("-tf").arg(ova).output().unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn extract(ova: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(ova)
            .arg("-C")
            .arg(into)
            .status()
            .unwrap()
            .success()
    );
}

/// `sha256sum`/`sha1sum -c` over the manifest, converted to coreutils' spelling.
fn manifest_verifies(dir: &Path, mf: &str) {
    let text = std::fs::read_to_string(dir.join(mf)).unwrap();
    let (tool, tag) = if text.starts_with("SHA1(") {
        ("sha1sum", "SHA1(")
    } else {
        ("sha256sum", "SHA256(")
    };
    let mut lines = String::new();
    for line in text.lines() {
        let (name, digest) = line
            .strip_prefix(tag)
            .and_then(|l| l.split_once(")= "))
            .unwrap_or_else(|| panic!("manifest line not in VMware's spelling: {line}"));
        lines.push_str(&format!("{digest}  {name}\n"));
    }
    let list = dir.join("coreutils.sums");
    std::fs::write(&list, lines).unwrap();
    let out = Command::new(tool)
        .arg("-c")
        .arg(&list)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// No PAX ('x', 'g') or GNU long-name ('L', 'K') headers: vSphere and VirtualBox refuse them.
fn no_pax(ova: &Path) {
    let bytes = std::fs::read(ova).unwrap();
    let mut at = 0usize;
    while at + 512 <= bytes.len() && bytes[at..at + 512].iter().any(|&b| b != 0) {
        let h = &bytes[at..at + 512];
        assert!(
            !matches!(h[156], b'x' | b'g' | b'L' | b'K'),
            "header type {}",
            h[156] as char
        );
        assert_eq!(&h[257..262], b"ustar");
        let size = u64::from_str_radix(
            std::str::from_utf8(&h[124..135])
                .unwrap()
                .trim_matches(['\0', ' ']),
            8,
        )
        .unwrap();
        at += 512 + size.next_multiple_of(512) as usize;
    }
}

/// COT's reading of a package (tests/ovf_support/cot_model.py): None when COT is missing.
fn cot(test: &str, package: &Path) -> Option<serde_json::Value> {
    let py = repo().join("target/peers/cot-venv/bin/python");
    if !py.exists() {
        skip(
            test,
            "COT is not installed (run tests/ovf_support/install-peers)",
        );
        return None;
    }
    let out = Command::new(py)
        .arg(repo().join("tests/ovf_support/cot_model.py"))
        .arg(package)
        .output()
        .unwrap();
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// virt-v2v's `--print-source` of an OVA: None when it is missing.
fn virt_v2v(test: &str, ova: &Path) -> Option<String> {
    let run = repo().join("target/peers/virt-v2v/run");
    if !run.exists() {
        skip(
            test,
            "virt-v2v is not unpacked (run tests/ovf_support/install-peers)",
        );
        return None;
    }
    let out = Command::new(run)
        .args(["-i", "ova"])
        .arg(ova)
        .arg("--print-source")
        .env("LIBGUESTFS_BACKEND", "direct")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virt-v2v: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_peers(test: &str, ova: &Path, firmware: &str) {
    if let Some(c) = cot(test, ova) {
        assert_eq!(c["cpus"], 4, "{c}");
        assert_eq!(c["memory"], 3u64 << 30, "{c}");
        assert_eq!(c["nics"], 2, "{c}");
        assert_eq!(c["disks"], 2, "{c}");
        assert_eq!(
            c["capacities"],
            serde_json::json!([64u64 << 20, 16u64 << 20]),
            "{c}"
        );
    }
    if let Some(v) = virt_v2v(test, ova) {
        assert!(v.contains("source name: web01"), "{v}");
        assert!(v.contains("memory: 3221225472"), "{v}");
        assert!(v.contains("nr vCPUs: 4"), "{v}");
        assert!(v.contains(&format!("firmware: {firmware}")), "{v}");
        assert!(v.contains("mac: 00:50:56:01:02:03"), "{v}");
        // Both disks, on their buses.
        let disks = v
            .split("disks:")
            .nth(1)
            .unwrap()
            .split("removable media:")
            .next()
            .unwrap();
        assert_eq!(disks.trim().lines().count(), 2, "{v}");
    }
}

fn disks_identical(test: &str, d: &Path, fmt: &str, files: [&Path; 2]) {
    if !have_qemu(test) {
        return;
    }
    let (a, b) = (d.join("system.qcow2"), d.join("data.raw"));
    assert!(qemu_compare("qcow2", &a, fmt, files[0]));
    assert!(qemu_compare("raw", &b, fmt, files[1]));
    // qemu-img checks no VHD (exit 63); our own check does.
    for f in files {
        let (code, _, err) = if fmt == "vpc" {
            run(&["check", s(f)])
        } else {
            qemu_img(&["check", s(f)])
        };
        assert_eq!(code, 0, "{}: {err}", f.display());
    }
}

#[test]
fn vsphere_ova_lists_verifies_and_reads_back_alike() {
    let test = "vsphere_ova_lists_verifies_and_reads_back_alike";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ova = d.join("web01.ova");
    migrate(
        d,
        "vsphere",
        &["--firmware", "uefi", "--disk-bus", "pvscsi"],
        &ova,
    );
    // vSphere: the descriptor first, then the manifest, then the files in References order.
    assert_eq!(
        tar_names(&ova),
        [
            "web01.ovf",
            "web01.mf",
            "web01-disk1.vmdk",
            "web01-disk2.vmdk"
        ]
    );
    no_pax(&ova);
    let x = d.join("x");
    extract(&ova, &x);
    manifest_verifies(&x, "web01.mf");
    disks_identical(
        test,
        d,
        "vmdk",
        [&x.join("web01-disk1.vmdk"), &x.join("web01-disk2.vmdk")],
    );
    check_peers(test, &ova, "uefi");
}

/// vSphere's import rules (packages.md, "OVF / OVA"): each one that our descriptor and disks
/// must meet.
#[test]
fn vsphere_import_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ova = d.join("web01.ova");
    migrate(
        d,
        "esxi",
        &["--firmware", "uefi-secure", "--disk-bus", "lsisas"],
        &ova,
    );
    let x = d.join("x");
    extract(&ova, &x);
    let ovf = std::fs::read_to_string(x.join("web01.ovf")).unwrap();
    // OVF 1.0 envelope (vSphere refuses OVF 2.0 StorageItem / EthernetPortItem).
    assert!(ovf.contains(r#"xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1""#));
    assert!(!ovf.contains("StorageItem") && !ovf.contains("EthernetPortItem"));
    // A vmx-NN system type (never "virtualbox-2.2": "Unsupported hardware family").
    assert!(ovf.contains("<vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>"));
    // No StartupSection ("Unsupported section").
    assert!(!ovf.contains("StartupSection"));
    // Firmware and secure boot as vmw:Config, marked optional.
    assert!(
        ovf.contains(r#"<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>"#)
    );
    assert!(ovf.contains(r#"vmw:key="uefi.secureBoot.enabled" vmw:value="true""#));
    // Memory in "byte * 2^20", the SAS controller as lsilogicsas, NICs as VmxNet3 / E1000.
    assert!(ovf.contains("<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>"));
    assert!(ovf.contains("<rasd:ResourceSubType>lsilogicsas</rasd:ResourceSubType>"));
    assert!(ovf.contains("<rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>"));
    assert!(ovf.contains("<rasd:ResourceSubType>E1000</rasd:ResourceSubType>"));
    // The video card, which a target may not know, is optional.
    assert!(ovf.contains("<Item ovf:required=\"false\">"));
    // Disks: stream-optimized, version 3 ("sparse VMDK version too old"), with a tools
    // version and the adapter type of their controller.
    assert!(ovf.contains("vmdk.html#streamOptimized"));
    for n in ["web01-disk1.vmdk", "web01-disk2.vmdk"] {
        let bytes = std::fs::read(x.join(n)).unwrap();
        assert_eq!(&bytes[..4], b"KDMV");
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()),
            3,
            "{n}"
        );
        let desc = String::from_utf8_lossy(&bytes[512..512 * 21]);
        assert!(desc.contains("createType=\"streamOptimized\""), "{desc}");
        assert!(desc.contains("ddb.adapterType = \"lsilogic\""), "{desc}");
        assert!(desc.contains("ddb.toolsVersion"), "{desc}");
    }
    // The manifest in the one spelling vSphere accepts.
    let mf = std::fs::read_to_string(x.join("web01.mf")).unwrap();
    for line in mf.lines() {
        assert!(
            line.starts_with("SHA256(") && line.contains(")= "),
            "{line}"
        );
    }
    // Every RASD item's children in the schema's (alphabetical) order.
    for item in ovf.split("<Item").skip(1) {
        let item = &item[..item.find("</Item>").unwrap()];
        let names: Vec<&str> = item
            .split("<rasd:")
            .skip(1)
            .map(|t| &t[..t.find('>').unwrap()])
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}

/// VirtualBox's import rules (VirtualBox ovfreader.cpp, packages.md).
#[test]
fn virtualbox_ova_follows_its_import_rules() {
    let test = "virtualbox_ova_follows_its_import_rules";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ova = d.join("web01.ova");
    let err = migrate(d, "virtualbox", &["--disk-bus", "nvme"], &ova);
    // NVMe is not in VirtualBox's OVF import: said, not dropped.
    assert!(err.contains("NVMe"), "{err}");
    no_pax(&ova);
    let x = d.join("x");
    extract(&ova, &x);
    manifest_verifies(&x, "web01.mf");
    let ovf = std::fs::read_to_string(x.join("web01.ovf")).unwrap();
    assert!(ovf.contains("<vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>"));
    // Memory only in the units VirtualBox accepts.
    assert!(ovf.contains("<rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>"));
    // SATA as ResourceType 20, AHCI.
    assert!(ovf.contains("<rasd:ResourceSubType>AHCI</rasd:ResourceSubType>"));
    assert!(ovf.contains("<rasd:ResourceType>20</rasd:ResourceType>"));
    // Its OS type where it reads it; VMDK disks only.
    assert!(ovf.contains("<vbox:OSType ovf:required=\"false\">Ubuntu_64</vbox:OSType>"));
    assert!(!ovf.contains("vhdspec"));
    disks_identical(
        test,
        d,
        "vmdk",
        [&x.join("web01-disk1.vmdk"), &x.join("web01-disk2.vmdk")],
    );
    check_peers(test, &ova, "bios");
}

#[test]
fn xenserver_ova_carries_vhd_disks() {
    let test = "xenserver_ova_carries_vhd_disks";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ova = d.join("web01.ova");
    migrate(d, "xcp-ng", &[], &ova);
    assert_eq!(
        tar_names(&ova),
        [
            "web01.ovf",
            "web01.mf",
            "web01-disk1.vhd",
            "web01-disk2.vhd"
        ]
    );
    let x = d.join("x");
    extract(&ova, &x);
    manifest_verifies(&x, "web01.mf");
    let ovf = std::fs::read_to_string(x.join("web01.ovf")).unwrap();
    assert!(ovf.contains("vhdspec.mspx"));
    assert!(ovf.contains("<vssd:VirtualSystemType>xen-3.0-unknown</vssd:VirtualSystemType>"));
    assert!(ovf.contains("HVM_boot_policy"));
    disks_identical(
        test,
        d,
        "vpc",
        [&x.join("web01-disk1.vhd"), &x.join("web01-disk2.vhd")],
    );
    check_peers(test, &ova, "bios");
}

/// `--to xenserver` (and `xcp-ng`) writes an XVA unless the destination is named `*.ova`
/// (above): ova.xml first, then the disks' chunks (tests/xva_write.rs checks them in depth).
#[test]
fn xenserver_writes_an_xva_unless_the_destination_is_an_ova() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let xva = d.join("web01.xva");
    let err = migrate(d, "xenserver", &[], &xva);
    assert!(err.contains("xe vm-import filename="), "{err}");
    let names = tar_names(&xva);
    assert_eq!(names[0], "ova.xml");
    assert!(names.iter().any(|n| n.ends_with(".xxhash")), "{names:?}");
    let info = run_ok(&["info", s(&xva)]);
    assert!(info.contains("format: xva"), "{info}");
}

#[test]
fn kvm_folder_defines_in_libvirt_and_holds_the_disks() {
    let test = "kvm_folder_defines_in_libvirt_and_holds_the_disks";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("web01-kvm");
    let err = migrate(d, "kvm", &["--firmware", "uefi-secure"], &out);
    assert!(err.contains("'default' network"), "{err}");
    let xml = out.join("web01.xml");
    let text = std::fs::read_to_string(&xml).unwrap();
    // A Linux guest: virtio.
    assert!(text.contains("bus='virtio'") && text.contains("<model type='virtio'/>"));
    assert!(text.contains("<feature enabled='yes' name='secure-boot'/>"));
    assert!(text.contains("<topology sockets='2' dies='1' cores='2' threads='1'/>"));
    disks_identical(
        test,
        d,
        "qcow2",
        [
            &out.join("web01-disk1.qcow2"),
            &out.join("web01-disk2.qcow2"),
        ],
    );
    let Some(validate) = which("virt-xml-validate") else {
        skip(
            test,
            "virt-xml-validate is not installed (Debian libvirt-clients, libxml2-utils)",
        );
        return;
    };
    let v = Command::new(validate)
        .arg(&xml)
        .arg("domain")
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let virsh = which("virsh").expect("virsh comes with virt-xml-validate");
    let v = Command::new(virsh)
        .args(["-c", "test:///default", "define"])
        .arg(&xml)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn a_windows_guest_gets_emulated_buses_and_is_told_which_drivers_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("win");
    let err = migrate(d, "kvm", &["--os", "win10"], &out);
    assert!(err.contains("virtio-win"), "{err}");
    let text = std::fs::read_to_string(out.join("web01.xml")).unwrap();
    assert!(
        text.contains("bus='sata'") && text.contains("<model type='e1000e'/>"),
        "{text}"
    );
    assert!(text.contains("<clock offset='localtime'/>"));
}

#[test]
fn ovf_folder_and_disks_folder() {
    let test = "ovf_folder_and_disks_folder";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("web01-ovf");
    migrate(d, "ovf", &[], &out);
    manifest_verifies(&out, "web01.mf");
    if let Some(c) = cot(test, &out.join("web01.ovf")) {
        assert_eq!(c["cpus"], 4, "{c}");
    }
    let out = d.join("web01-disks");
    migrate(d, "disks", &["-O", "vdi"], &out);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["web01-disk1.vdi", "web01-disk2.vdi"]);
    disks_identical(
        test,
        d,
        "vdi",
        [&out.join("web01-disk1.vdi"), &out.join("web01-disk2.vdi")],
    );
}

#[test]
fn an_ova_streams_to_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = two_disks(d);
    let mut args = vec!["migrate", "--to", "vsphere"];
    args.extend_from_slice(VM_ARGS);
    args.extend([s(&a), s(&b), "-"]);
    let out = diskferry().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ova = d.join("piped.ova");
    std::fs::write(&ova, &out.stdout).unwrap();
    assert_eq!(
        tar_names(&ova),
        [
            "web01.ovf",
            "web01.mf",
            "web01-disk1.vmdk",
            "web01-disk2.vmdk"
        ]
    );
    no_pax(&ova);
    let x = d.join("x");
    extract(&ova, &x);
    manifest_verifies(&x, "web01.mf");
}

/// A disk that fails half-way leaves no OVA and no folder behind.
#[test]
fn a_failure_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.raw");
    make_raw(&good, 8 << 20, &[(0, 4096)]);
    // A stream-optimized VMDK with a damaged grain: it opens, and fails when that grain is
    // read, after the first disk is written.
    let raw = d.join("bad.raw");
    make_raw(&raw, 8 << 20, &[(0, 1 << 20)]);
    let bad = d.join("bad.vmdk");
    run_ok(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&raw),
        s(&bad),
    ]);
    let mut bytes = std::fs::read(&bad).unwrap();
    // The first grain's marker is a sector after the descriptor: its data starts 12 bytes in.
    let grain = (0x10000..bytes.len())
        .step_by(512)
        .find(|&at| bytes[at + 12] == 0x78)
        .expect("a compressed grain");
    bytes[grain + 14..grain + 80].fill(0xff);
    std::fs::write(&bad, &bytes).unwrap();
    assert_ne!(
        run(&["convert", "-O", "raw", s(&bad), s(&d.join("probe.raw"))]).0,
        0
    );
    for (target, dest) in [("vsphere", "out.ova"), ("kvm", "out-kvm")] {
        let (code, _, err) = run(&[
            "migrate",
            "--to",
            target,
            s(&good),
            s(&bad),
            s(&d.join(dest)),
        ]);
        assert_ne!(code, 0);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("out") || n.starts_with(".out"))
            .collect();
        assert!(left.is_empty(), "{target}: {left:?}");
    }
    // An existing destination folder is never written into.
    let existing = d.join("taken");
    std::fs::create_dir(&existing).unwrap();
    let (code, _, err) = run(&["migrate", "--to", "kvm", s(&good), s(&existing)]);
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");
}

#[test]
fn bad_descriptions_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.raw");
    make_raw(&good, 1 << 20, &[]);
    let out = d.join("x.ova");
    for (args, words) in [
        (vec!["--to", "hyperv-2008"], "unknown target"),
        (vec!["--to", "kvm", "--nic", "tulip"], "tulip"),
        (vec!["--to", "kvm", "--firmware", "coreboot"], "coreboot"),
        (vec!["--to", "kvm", "--os", "plan9"], "plan9"),
        (
            vec!["--to", "kvm", "--cpus", "3", "--cores-per-socket", "2"],
            "does not divide",
        ),
        (vec!["--to", "vsphere", "-O", "qcow2"], "--to disks"),
        (
            vec!["--to", "kvm", "--cpus", "0"],
            "--cpus must be at least 1",
        ),
        (
            vec!["--to", "kvm", "--nic", "e1000,mac=01:00:5e:00:00:01"],
            "multicast",
        ),
        (
            vec![
                "--to",
                "kvm",
                "--nic",
                "e1000,mac=52:54:00:00:00:01",
                "--nic",
                "virtio,mac=52:54:00:00:00:01",
            ],
            "given to two NICs",
        ),
    ] {
        let mut a = vec!["migrate"];
        a.extend(args.iter().copied());
        a.extend([s(&good), s(&out)]);
        let (code, _, err) = run(&a);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(words), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// Every libvirt domain in the corpus (libvirt's own test files, virt-install and
/// virt-manager's, libvirt's vmx-to-xml and xl-to-xml outputs) reads as its XML says.
#[test]
fn corpus_libvirt_domains_read_as_written() {
    let test = "corpus_libvirt_domains_read_as_written";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let c = shared.join("corpus/configs");
    // (file, name, memory bytes, vCPUs, UEFI, disks with a file, NICs)
    let expected: &[(&str, &str, u64, u32, bool, usize, usize)] = &[
        (
            "libvirt/libvirt-qemuxmlconf-disk-backing-chains-noindex.x86_64-latest.xml",
            "QEMUGuest1",
            219136 << 10,
            1,
            false,
            2,
            0,
        ),
        (
            "libvirt/libvirt-qemuxmlconf-firmware-manual-efi.x86_64-latest.xml",
            "guest",
            1 << 30,
            1,
            true,
            0,
            0,
        ),
        (
            "libvirt/virt-install-boot-uefi-secure-boot.xml",
            "vm1",
            65536 << 10,
            1,
            true,
            0,
            1,
        ),
        (
            "libvirt/virt-manager-bootorder-in.xml",
            "f30",
            8294400 << 10,
            5,
            false,
            1,
            1,
        ),
        (
            "xen/libvirt-xlconfig-test-fullvirt-ovmf.xml",
            "XenGuest2",
            592896 << 10,
            1,
            true,
            2,
            1,
        ),
        (
            "libvirt-vmx2xml/esx-in-the-wild-16.xml",
            "Auto-esx8.0-rhel9.4-efi-nvme-disk",
            2 << 30,
            1,
            true,
            1,
            1,
        ),
        (
            "libvirt-vmx2xml/esx-in-the-wild-14.xml",
            "wild14",
            32 << 30,
            12,
            false,
            2,
            1,
        ),
    ];
    // virt-install's test output holds two domains (the install boot and the final one):
    // not one domain, one clear error.
    let two = std::fs::read(c.join("libvirt/virt-install-win11.xml")).unwrap();
    let err = diskferry::vmconfig::libvirt::parse_domain(&two, "win11.xml").unwrap_err();
    assert!(err.to_string().contains("after the root element"), "{err}");
    let mut seen = Vec::new();
    for &(file, name, memory, cpus, uefi, disks, nics) in expected {
        let bytes = std::fs::read(c.join(file)).unwrap();
        assert!(diskferry::vmconfig::libvirt::probe(&bytes), "{file}");
        let d = diskferry::vmconfig::libvirt::parse_domain(&bytes, file)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        seen.push((
            file,
            d.vm.name.clone(),
            d.vm.memory_bytes,
            d.vm.cpus.count,
            matches!(d.vm.firmware, diskferry::vm::Firmware::Uefi { .. }),
            d.vm.disks.len(),
            d.vm.nics.len(),
        ));
        assert_eq!(
            seen.last().unwrap(),
            &(file, name.to_string(), memory, cpus, uefi, disks, nics),
            "{file}"
        );
    }
}

#[test]
fn migrate_help_lists_every_target() {
    let help = run_ok(&["migrate", "--help"]);
    for name in diskferry::migrate::target_names() {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(name)
                && l.trim_start()[name.len()..].starts_with([':', ',']))
                || help.contains(&format!(", {name}:"))
                || help.contains(&format!(", {name},")),
            "--to {name} is not in migrate --help:\n{help}"
        );
    }
}

/// A package destination that is a symbolic link is followed, as convert follows one: the
/// link's target gets the OVA (or XVA), and the link stays a link.
#[test]
fn a_package_destination_that_is_a_link_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("d.raw");
    make_raw(&disk, 1 << 20, &[(0, 4096)]);
    std::fs::create_dir(d.join("real")).unwrap();
    for (target, name) in [("vsphere", "t.ova"), ("xenserver", "t.xva")] {
        let real = d.join("real").join(name);
        std::fs::write(&real, b"old").unwrap();
        let link = d.join(format!("link-{name}"));
        std::os::unix::fs::symlink(format!("real/{name}"), &link).unwrap();
        run_ok(&["migrate", "--to", target, "-q", s(&disk), s(&link)]);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{target}: the link was replaced"
        );
        let info = run_ok(&["info", s(&real)]);
        assert!(info.contains("d"), "{target}: {info}");
        assert!(std::fs::metadata(&real).unwrap().len() > 3, "{target}");
    }
}

/// A VM name longer than a tar header's 100-byte name field still makes an OVA: member and
/// file names are cut, the VM keeps its name.
#[test]
fn a_long_vm_name_is_cut_in_file_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("d.raw");
    make_raw(&disk, 1 << 20, &[(0, 4096)]);
    let name = "L".repeat(300);
    let ova = d.join("x.ova");
    run_ok(&[
        "migrate",
        "--to",
        "vsphere",
        "-q",
        "--name",
        &name,
        s(&disk),
        s(&ova),
    ]);
    for member in tar_names(&ova) {
        assert!(member.len() <= 100, "{member}");
    }
    no_pax(&ova);
    let info = run_ok(&["info", "--output", "json", s(&ova)]);
    assert!(info.contains(&name), "the VM lost its name: {info}");
    let folder = d.join("kvm");
    run_ok(&[
        "migrate",
        "--to",
        "kvm",
        "-q",
        "--name",
        &name,
        s(&disk),
        s(&folder),
    ]);
    for f in dir_names(&folder) {
        assert!(f.len() <= 100, "{f}");
    }
}

/// A package or a VM configuration describes a whole VM: given among bare disks it is an
/// error naming it, never read as a raw disk holding its text.
#[test]
fn a_vm_description_among_disks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("d.raw");
    make_raw(&disk, 1 << 20, &[(0, 4096)]);
    let ova = d.join("vm.ova");
    run_ok(&["migrate", "--to", "vsphere", "-q", s(&disk), s(&ova)]);
    let xml = d.join("vm.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='kvm'><name>x</name><memory unit='KiB'>1048576</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices><disk type='file' device='disk'><source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
            disk.display()
        ),
    )
    .unwrap();
    for (first, says) in [(&ova, "an OVA or OVF package"), (&xml, "libvirt")] {
        let out = d.join("out");
        fails_clearly(
            &["migrate", "--to", "kvm", s(first), s(&disk), s(&out)],
            &out,
            &[says, "must be the only source", s(first)],
        );
        fails_clearly(
            &["migrate", "--to", "kvm", s(&disk), s(first), s(&out)],
            &out,
            &[says, "must be the only source"],
        );
    }
}

/// IDE has two controllers of two drives on every PC: more disks on it are refused on the
/// command line, and a VMware OVA moves what a source puts beyond them (libvirt's hde...)
/// to SATA with a warning, as the .vmx writer does, instead of writing IDE controllers
/// VMware does not have.
#[test]
fn ide_holds_four_disks_and_vmware_packages_keep_to_vmware_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut disks = Vec::new();
    for i in 0..6 {
        let p = d.join(format!("d{i}.raw"));
        make_raw(&p, 1 << 20, &[(0, 512)]);
        disks.push(p);
    }
    let out = d.join("o.ova");
    let mut args = vec!["migrate", "--to", "vsphere", "--disk-bus", "ide"];
    args.extend(disks.iter().map(|p| s(p)));
    args.push(s(&out));
    fails_clearly(&args, &out, &["--disk-bus ide holds 4 disks"]);

    let mut xml = String::from(
        "<domain type='kvm'><name>ide6</name><memory unit='KiB'>1048576</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>",
    );
    for (i, p) in disks.iter().enumerate() {
        xml.push_str(&format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='hd{}' bus='ide'/></disk>",
            p.display(),
            (b'a' + i as u8) as char
        ));
    }
    xml.push_str("</devices></domain>");
    let domain = d.join("ide6.xml");
    std::fs::write(&domain, xml).unwrap();
    let (code, _, err) = run(&["migrate", "--to", "vsphere", s(&domain), s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("written at sata0:0"), "{err}");
    assert!(err.contains("written at sata0:1"), "{err}");
    let info = run_ok(&["info", "--output", "json", s(&out)]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let places: Vec<String> = v["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["controller"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        places,
        [
            "IDE 0:0", "IDE 0:1", "IDE 1:0", "IDE 1:1", "SATA 0:0", "SATA 0:1"
        ],
        "{info}"
    );
}

/// An OVF folder of one small disk written by `migrate --to ovf`, its descriptor passed through
/// `edit` and its manifest removed (the edit changes the descriptor's digest).
fn edited_ovf(d: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let disk = d.join("app.raw");
    make_raw(&disk, 1 << 20, &[(0, 4096)]);
    let folder = d.join("ovf");
    run_ok(&["migrate", "--to", "ovf", "-q", s(&disk), s(&folder)]);
    let ovf = folder.join("app.ovf");
    let text = std::fs::read_to_string(&ovf).unwrap();
    std::fs::write(&ovf, edit(text)).unwrap();
    std::fs::remove_file(folder.join("app.mf")).unwrap();
    ovf
}

/// What an OVF holds besides the one machine migrate reads (the other systems of a
/// collection, the deployment configurations not chosen, ProductSection properties) is named
/// in the summary's warnings, for every target: `info` listed it as notes, migrate said nothing.
#[test]
fn an_ovf_collection_configurations_and_properties_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ovf = edited_ovf(d, |text| {
        let start = text.find("  <VirtualSystem ").unwrap();
        let end = text.find("</VirtualSystem>").unwrap() + "</VirtualSystem>".len();
        let system = &text[start..end];
        let first = system.replacen(
            "<Info>A virtual machine</Info>",
            r#"<Info>A virtual machine</Info>
    <ProductSection><Info>p</Info><Product>App</Product>
      <Property ovf:key="ip0" ovf:type="string" ovf:value="10.0.0.2"/>
      <Property ovf:key="root-password" ovf:type="string" ovf:password="true"/>
    </ProductSection>"#,
            1,
        );
        let second = system
            .replace(r#"ovf:id="app""#, r#"ovf:id="db""#)
            .replace("<Name>app</Name>", "<Name>db</Name>");
        format!(
            r#"{}  <DeploymentOptionSection><Info>c</Info>
    <Configuration ovf:id="small"><Label>S</Label><Description>s</Description></Configuration>
    <Configuration ovf:id="large" ovf:default="true"><Label>L</Label><Description>l</Description></Configuration>
  </DeploymentOptionSection>
  <VirtualSystemCollection ovf:id="pair"><Info>two</Info>
    <ProductSection><Info>c</Info><Property ovf:key="domain" ovf:type="string"/></ProductSection>
{first}
{second}
  </VirtualSystemCollection>{}"#,
            &text[..start],
            &text[end..]
        )
    });
    for (target, dest) in [("kvm", "k"), ("vsphere", "v.ova")] {
        let (code, _, err) = run(&["migrate", "--to", target, s(&ovf), s(&d.join(dest))]);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("warning: the package holds 2 virtual systems")
                && err.contains("only the first, 'app', is migrated; not carried: 'db'"),
            "{err}"
        );
        assert!(
            err.contains("2 deployment configurations (small, large): the hardware of 'large'"),
            "{err}"
        );
        assert!(
            err.contains(
                "warning: 3 ProductSection properties ('domain', 'ip0', 'root-password') are not carried"
            ),
            "{err}"
        );
    }
}

/// VMware takes memory in multiples of 4 MiB: a VMware OVA's memory item is rounded up as a
/// .vmx's memsize is, with the warning, and the summary prints the MiB written, not the
/// source's (the OVA kept 1001 MiB silently; the esxi-vmx summary said 1000 MiB for 1004).
#[test]
fn vmware_memory_is_a_multiple_of_4_mib_and_the_summary_says_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("m.raw");
    make_raw(&disk, 1 << 20, &[(0, 4096)]);
    let ova = d.join("m.ova");
    let (code, _, err) = run(&[
        "migrate",
        "--to",
        "vsphere",
        "--memory",
        "1001M",
        s(&disk),
        s(&ova),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(1 CPU(s), 1004 MiB,"), "{err}");
    assert!(
        err.contains("warning: memory rounded up from 1001 MiB to 1004 MiB"),
        "{err}"
    );
    let x = d.join("x");
    extract(&ova, &x);
    let ovf = std::fs::read_to_string(x.join("m.ovf")).unwrap();
    assert!(ovf.contains("<rasd:VirtualQuantity>1004</rasd:VirtualQuantity>"));

    // 1000.5 MiB, not a whole MiB: the summary printed 1000 MiB for a memsize of 1004.
    let folder = d.join("e");
    let (code, _, err) = run(&[
        "migrate",
        "--to",
        "esxi-vmx",
        "--memory",
        "1049100288",
        s(&disk),
        s(&folder),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(1 CPU(s), 1004 MiB,"), "{err}");
    assert!(
        err.contains("memory rounded up from 1049100288 bytes to 1004 MiB"),
        "{err}"
    );
    let vmx = std::fs::read_to_string(folder.join("m.vmx")).unwrap();
    assert!(vmx.contains("memsize = \"1004\""), "{vmx}");
}

/// A serial port connected to a file, a pipe or the network in the source becomes the
/// target's console terminal (a pty for KVM and xl, a socket for Proxmox) or is dropped
/// (XenServer): the changed connection is warned about, naming the host end, for the .vmx
/// and the libvirt readers alike (libvirt's reader did not keep the host end at all). A pty
/// stays a pty without a word.
#[test]
fn a_serial_port_whose_host_end_changes_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("s.vmdk");
    run_ok(&["create", "-q", "-f", "vmdk", s(&disk), "1M"]);
    let vmx = d.join("s.vmx");
    std::fs::write(
        &vmx,
        "displayName = \"ser\"\nguestOS = \"ubuntu-64\"\nmemsize = \"1024\"\nscsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"s.vmdk\"\nserial0.present = \"TRUE\"\nserial0.fileType = \"file\"\nserial0.fileName = \"/var/log/ser.log\"\nserial1.present = \"TRUE\"\nserial1.fileType = \"pipe\"\nserial1.fileName = \"/tmp/ser-pipe\"\n",
    )
    .unwrap();
    for (target, says) in [
        (
            "kvm",
            "serial port 0: its host end (file:/var/log/ser.log) is not carried: written as a pty",
        ),
        (
            "kvm",
            "serial port 1: its host end (pipe:/tmp/ser-pipe) is not carried",
        ),
        (
            "proxmox",
            "serial port 0: its host end (file:/var/log/ser.log) is not carried: written as a socket",
        ),
        (
            "xen",
            "serial port 0: its host end (file:/var/log/ser.log) is not carried: written as a pty",
        ),
        ("xen", "1 more serial port(s) not carried"),
        ("xenserver-vhd", "2 serial port(s) are not carried"),
    ] {
        let out = d.join(format!("out-{target}"));
        let _ = std::fs::remove_dir_all(&out);
        let (code, _, err) = run(&["migrate", "--to", target, s(&vmx), s(&out)]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(says), "{target}: {err}");
    }

    let domain = d.join("l.xml");
    std::fs::write(
        &domain,
        format!(
            "<domain type='kvm'><name>lv</name><memory unit='KiB'>1048576</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='vmdk'/><source file='{}'/><target dev='vda' bus='virtio'/></disk><serial type='file'><source path='/var/log/lv.log'/><target port='0'/></serial><serial type='tcp'><source mode='bind' host='0.0.0.0' service='4555'/><target port='1'/></serial><serial type='pty'><target port='2'/></serial></devices></domain>",
            disk.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["migrate", "--to", "kvm", s(&domain), s(&d.join("lk"))]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("serial port 0: its host end (file:/var/log/lv.log)"),
        "{err}"
    );
    assert!(
        err.contains("serial port 1: its host end (tcp:0.0.0.0:4555)"),
        "{err}"
    );
    assert!(!err.contains("serial port 2"), "a pty stays a pty: {err}");

    // xl.cfg's list of ports: the reader kept the first alone.
    let raw = d.join("x.raw");
    make_raw(&raw, 1 << 20, &[(0, 512)]);
    let cfg = d.join("x.cfg");
    std::fs::write(
        &cfg,
        format!(
            "name = \"xv\"\ntype = \"hvm\"\nmemory = 1024\nvcpus = 1\ndisk = [ '{},raw,xvda,rw' ]\nserial = [ 'pty', 'file:/var/log/xv.log' ]\n",
            raw.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["migrate", "--to", "kvm", s(&cfg), s(&d.join("xk"))]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("serial port 1: its host end (file:/var/log/xv.log)"),
        "{err}"
    );
    assert!(!err.contains("serial port 0"), "a pty stays a pty: {err}");
}

/// The firmware's variable store is a file of its own that no target reads: a .vmx's
/// `nvram` and a libvirt domain's `<nvram>` (as text, or as `<source file>` since libvirt
/// 8.5, or libvirt's default place for an EFI guest that names none) are named in a warning.
#[test]
fn an_nvram_file_left_behind_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("n.vmdk");
    run_ok(&["create", "-q", "-f", "vmdk", s(&disk), "1M"]);
    let vmx = d.join("n.vmx");
    std::fs::write(
        &vmx,
        "displayName = \"nv\"\nguestOS = \"ubuntu-64\"\nmemsize = \"1024\"\nfirmware = \"efi\"\nnvram = \"nv.nvram\"\nsata0.present = \"TRUE\"\nsata0:0.present = \"TRUE\"\nsata0:0.fileName = \"n.vmdk\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["migrate", "--to", "kvm", s(&vmx), s(&d.join("k"))]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: the VM's NVRAM file ('nv.nvram') is not carried; UEFI variables"),
        "{err}"
    );

    let domain = |os: &str| {
        format!(
            "<domain type='kvm'><name>lv</name><memory unit='KiB'>1048576</memory><vcpu>1</vcpu><os{os}</os><devices><disk type='file' device='disk'><driver name='qemu' type='vmdk'/><source file='{}'/><target dev='sda' bus='sata'/></disk></devices></domain>",
            disk.display()
        )
    };
    for (i, (os, says)) in [
        (
            "><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader><nvram template='/usr/share/OVMF/OVMF_VARS.fd'>/srv/nvram/lv_VARS.fd</nvram>",
            "NVRAM ('/srv/nvram/lv_VARS.fd') is not carried",
        ),
        (
            " firmware='efi'><type>hvm</type><nvram type='file'><source file='/srv/lv.fd'/></nvram>",
            "NVRAM ('/srv/lv.fd') is not carried",
        ),
        (
            " firmware='efi'><type>hvm</type>",
            "NVRAM (libvirt's default, '/var/lib/libvirt/qemu/nvram/lv_VARS.fd') is not carried",
        ),
        (
            "><type>hvm</type><nvram>[datastore] lv/lv.nvram</nvram>",
            "NVRAM ('[datastore] lv/lv.nvram') is not carried; BIOS settings",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let xml = d.join(format!("lv{i}.xml"));
        std::fs::write(&xml, domain(os)).unwrap();
        let (code, _, err) = run(&[
            "migrate",
            "--to",
            "vsphere",
            s(&xml),
            s(&d.join(format!("lv{i}.ova"))),
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(says), "{os}: {err}");
    }
    // A BIOS guest naming no store has none to leave behind.
    let xml = d.join("bios.xml");
    std::fs::write(&xml, domain("><type>hvm</type>")).unwrap();
    let (code, _, err) = run(&["migrate", "--to", "vsphere", s(&xml), s(&d.join("b.ova"))]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("NVRAM"), "{err}");
}

/// `-q` silences the progress and the summary of what was carried, never the warnings about
/// what was not: they still go to standard error (a script passing -q lost them all).
#[test]
fn quiet_keeps_the_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("q.raw");
    make_raw(&disk, 1 << 20, &[(0, 4096)]);
    let out = d.join("q.ova");
    let (code, stdout, err) = run(&[
        "migrate",
        "-q",
        "--to",
        "vsphere",
        "--memory",
        "1001M",
        s(&disk),
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        err,
        "diskferry: warning: memory rounded up from 1001 MiB to 1004 MiB (VMware takes multiples of 4 MiB)\n"
    );
    // The folder targets' finishing steps are part of the summary, silenced too.
    let (code, _, err) = run(&["migrate", "-q", "--to", "kvm", s(&disk), s(&d.join("k"))]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("migrated") && !err.contains("virsh define"),
        "{err}"
    );
    assert!(
        err.lines().all(|l| l.starts_with("diskferry: warning: ")),
        "{err}"
    );
}

/// Every target gives the memory it writes in the summary, and warns when that is not the
/// source's: 1000.5 MiB becomes whole MiB where the configuration holds MiB (VirtualBox's and
/// XenServer's OVF, .vbox, .vmc, Proxmox, xl, and libvirt, which gives a QEMU guest whole
/// MiB), 2 MiB steps for Hyper-V, and stays to the byte in XAPI's fields (XVA, xe
/// commands). They all rounded up silently, and the summary printed the source's 1000 MiB.
#[test]
fn every_target_says_the_memory_it_writes_and_warns_when_it_differs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("m.raw");
    make_raw(&disk, 1 << 20, &[(0, 4096)]);
    // (target, destination, memory in the summary, the rounding's reason, text written)
    let cases: &[(&str, &str, &str, Option<&str>, &str)] = &[
        (
            "virtualbox",
            "vb.ova",
            "1001 MiB",
            Some("VirtualBox takes whole MiB"),
            "<rasd:VirtualQuantity>1001</rasd:VirtualQuantity>",
        ),
        (
            "xenserver",
            "xs.ova",
            "1001 MiB",
            Some("the OVF's memory item holds whole MiB"),
            "<rasd:VirtualQuantity>1001</rasd:VirtualQuantity>",
        ),
        (
            "xenserver",
            "xs.xva",
            "1049100288 bytes",
            None,
            "1049100288",
        ),
        (
            "kvm",
            "kvm",
            "1001 MiB",
            Some("libvirt gives a QEMU guest whole MiB"),
            "<memory unit='KiB'>1025024</memory>",
        ),
        (
            "vbox",
            "vbox",
            "1001 MiB",
            Some("VirtualBox takes whole MiB"),
            "RAMSize=\"1001\"",
        ),
        (
            "proxmox",
            "pve",
            "1001 MiB",
            Some("Proxmox takes whole MiB"),
            "memory: 1001",
        ),
        (
            "xl",
            "xl",
            "1001 MiB",
            Some("xl.cfg takes whole MiB"),
            "memory = 1001",
        ),
        (
            "vmc",
            "vmc",
            "1001 MiB",
            Some("Virtual PC takes whole MiB"),
            "",
        ),
        (
            "hyperv",
            "hv",
            "1002 MiB",
            Some("Hyper-V takes whole multiples of 2 MiB"),
            "",
        ),
        (
            "xenserver-vhd",
            "xsv",
            "1049100288 bytes",
            None,
            "static-max=1049100288",
        ),
    ];
    for (target, dest, shown, why, written) in cases {
        let out = d.join(dest);
        let (code, _, err) = run(&[
            "migrate",
            "--to",
            target,
            "--memory",
            "1049100288",
            s(&disk),
            s(&out),
        ]);
        assert_eq!(code, 0, "{target}: {err}");
        assert!(
            err.contains(&format!("(1 CPU(s), {shown},")),
            "{target}: {err}"
        );
        match why {
            Some(why) => assert!(
                err.contains("1049100288 bytes") && err.contains(why),
                "{target}: {err}"
            ),
            None => assert!(!err.contains("rounded"), "{target}: {err}"),
        }
        if written.is_empty() {
            continue;
        }
        let folder = if out.is_dir() {
            out.clone()
        } else {
            let x = d.join(format!("{dest}.x"));
            extract(&out, &x);
            x
        };
        let texts: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                !p.extension().is_some_and(|e| {
                    ["vmdk", "vhd", "qcow2", "vdi", "vhdx"].contains(&e.to_str().unwrap())
                })
            })
            .filter_map(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        assert!(
            texts.iter().any(|t| t.contains(written)),
            "{target}: {written} not in {texts:?}"
        );
    }
}

/// An OVF's startup order (StartupSection, in the collection around the system or, as
/// XenCenter writes it, the envelope) and its license agreement (EulaSection, which an OVF
/// deployment shows for the user to accept) are warned about: `info` listed them as notes,
/// migrate said nothing, so the licence went unseen and the start order was lost.
#[test]
fn an_ovf_startup_order_and_license_agreement_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ovf = edited_ovf(d, |text| {
        let start = text.find("  <VirtualSystem ").unwrap();
        let end = text.find("</VirtualSystem>").unwrap() + "</VirtualSystem>".len();
        let system = text[start..end].replacen(
            "<Info>A virtual machine</Info>",
            "<Info>A virtual machine</Info>\n    <EulaSection><Info>l</Info><License>Use at your own risk.</License></EulaSection>",
            1,
        );
        format!(
            r#"{}  <VirtualSystemCollection ovf:id="pair"><Info>one</Info>
    <StartupSection><Info>s</Info>
      <Item ovf:id="app" ovf:order="1" ovf:startDelay="30" ovf:startAction="powerOn" ovf:stopAction="guestShutdown"/>
    </StartupSection>
{system}
  </VirtualSystemCollection>{}"#,
            &text[..start],
            &text[end..]
        )
    });
    for (target, dest) in [("kvm", "k"), ("vsphere", "v.ova")] {
        let (code, _, err) = run(&["migrate", "--to", target, s(&ovf), s(&d.join(dest))]);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains(
                "warning: the package's startup order (StartupSection, for 'app') is not carried"
            ),
            "{err}"
        );
        assert!(
            err.contains("warning: the package's license agreement (EulaSection) is not carried"),
            "{err}"
        );
    }
    // info lists both as notes, as before.
    let (code, out, err) = run(&["info", s(&ovf)]);
    assert_eq!(code, 0, "{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("startup order (StartupSection)"), "{all}");
    assert!(all.contains("license agreement (EulaSection)"), "{all}");
}
