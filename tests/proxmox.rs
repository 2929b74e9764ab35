//! Proxmox VE configurations: every conf in ../shared/corpus/configs/proxmox reads with the
//! values it holds; what `migrate --to proxmox` writes reads back into the same model, its
//! disks identical (`qemu-img compare`) and usable as a `migrate` source again; malformed
//! confs are one error naming the line. Proxmox cannot run here, so its rules are checked one
//! test each, citing qm.conf(5) (https://pve.proxmox.com/pve-docs/qm.conf.5.html), qm(1)
//! (https://pve.proxmox.com/pve-docs/qm.1.html) and the storage docs
//! (https://pve.proxmox.com/pve-docs/chapter-pvesm.html).

mod common;

use common::*;
use diskferry::gate::Gate;
use diskferry::vm::{ControllerKind, DiskSource, Firmware, NicModel, OsFamily, ScsiModel};
use diskferry::vmconfig::proxmox::{self, Proxmox};
use diskferry::vmconfig::{DiskLocation, VmConfig, locate_disks};
use std::path::Path;

/// (file, name, memory MiB (Proxmox's default of 512 where the file has none), vCPUs, firmware, disks, CD-ROMs, NICs, OS family)
type Row = (
    &'static str,
    &'static str,
    u64,
    u32,
    Firmware,
    usize,
    usize,
    usize,
    Option<OsFamily>,
);

const BIOS: Firmware = Firmware::Bios;

#[test]
fn corpus_proxmox_confs_read_with_the_values_they_hold() {
    let test = "corpus_proxmox_confs_read_with_the_values_they_hold";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = shared.join("corpus/configs/proxmox");
    let expected: &[Row] = &[
        (
            "cfg2cmd-efi-secboot-and-tpm-q35.conf",
            "proxmox-vm",
            512,
            1,
            Firmware::Uefi { secure_boot: true },
            0,
            0,
            0,
            None,
        ),
        (
            "cfg2cmd-q35-ide.conf",
            "proxmox-vm",
            512,
            2,
            BIOS,
            1,
            4,
            1,
            Some(OsFamily::Linux),
        ),
        (
            "cfg2cmd-simple-backingchain.conf",
            "simple",
            512,
            1,
            BIOS,
            2,
            0,
            0,
            None,
        ),
        (
            "parse-config-input-cloudinit-snapshot.conf",
            "deb1223",
            4096,
            2,
            BIOS,
            1,
            0,
            1,
            Some(OsFamily::Linux),
        ),
        (
            "parse-config-input-regular-vm-efi.conf",
            "eficloneclone",
            2048,
            1,
            Firmware::Uefi { secure_boot: false },
            1,
            1,
            1,
            Some(OsFamily::Linux),
        ),
        (
            "parse-config-input-snapshots.conf",
            "win-machine-ver",
            4096,
            4,
            BIOS,
            4,
            2,
            2,
            Some(OsFamily::Windows),
        ),
        (
            "restore-config-input-179.conf",
            "proxmox-vm",
            2048,
            1,
            BIOS,
            5,
            1,
            1,
            Some(OsFamily::Linux),
        ),
        (
            "snapshot-expected-create-104.conf",
            "win",
            8192,
            4,
            BIOS,
            1,
            1,
            1,
            Some(OsFamily::Windows),
        ),
        (
            "snapshot-expected-rollback-105.conf",
            "win",
            8192,
            4,
            BIOS,
            3,
            1,
            1,
            Some(OsFamily::Windows),
        ),
    ];
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<&str> = expected.iter().map(|r| r.0).collect();
    listed.sort();
    assert_eq!(files, listed, "every corpus conf has its expected row");
    for &(file, name, mib, cpus, firmware, disks, cds, nics, family) in expected {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        assert!(proxmox::probe(&bytes), "{file}: probe");
        let c = proxmox::parse(&bytes, file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let vm = &c.vm;
        assert_eq!(
            (
                vm.name.as_str(),
                vm.memory_bytes >> 20,
                vm.cpus.count,
                vm.firmware
            ),
            (name, mib, cpus, firmware),
            "{file}"
        );
        assert_eq!(
            (vm.disks.len(), vm.cdroms.len(), vm.nics.len()),
            (disks, cds, nics),
            "{file}"
        );
        assert_eq!(vm.guest_os.os.map(|o| o.family()), family, "{file}");
        assert_eq!(c.volumes.len(), vm.disks.len(), "{file}");
    }
    // Details of the richest one: buses, sizes, boot order, NICs, what is not carried.
    let bytes = std::fs::read(dir.join("parse-config-input-snapshots.conf")).unwrap();
    let vm = proxmox::parse(&bytes, "snapshots.conf").unwrap().vm;
    let kinds: Vec<_> = vm
        .disks
        .iter()
        .map(|d| (d.controller.kind, d.unit, d.capacity_bytes))
        .collect();
    assert_eq!(
        kinds,
        [
            (ControllerKind::Ide, 0, Some(1 << 30)),
            (
                ControllerKind::Scsi(ScsiModel::VirtioScsi),
                0,
                Some(1 << 30)
            ),
            (
                ControllerKind::Scsi(ScsiModel::VirtioScsi),
                1,
                Some(32 << 30)
            ),
            (ControllerKind::VirtioBlk, 0, Some(1 << 30)),
        ]
    );
    // boot: order=scsi1;ide2;net0;ide1: scsi1 boots first, no other disk is in the order.
    let boots: Vec<_> = vm.disks.iter().map(|d| d.boot_order).collect();
    assert_eq!(boots, [None, None, Some(0), None]);
    assert_eq!(vm.nics[0].model, NicModel::Virtio);
    assert_eq!(vm.nics[0].mac.as_deref(), Some("bc:24:11:a3:da:b1"));
    assert_eq!(vm.nics[0].network.as_deref(), Some("vnet0"));
    assert_eq!(vm.nics[1].model, NicModel::E1000);
    assert_eq!(vm.guest_os.os.unwrap().name(), "Windows 10 64-bit");
    assert!(
        vm.warnings
            .iter()
            .any(|w| w.contains("snapshot 'win19_5_2_plus_stuff'")),
        "{:?}",
        vm.warnings
    );
    assert!(
        vm.warnings.iter().any(|w| w.contains("unused0")),
        "{:?}",
        vm.warnings
    );
    // The cloud-init conf's snapshot holds 'numa: verify meee~ :)' (qemu-server's own
    // negative test): snapshot sections are not the VM's state and are not interpreted.
    let bytes = std::fs::read(dir.join("parse-config-input-cloudinit-snapshot.conf")).unwrap();
    let vm = proxmox::parse(&bytes, "ci.conf").unwrap().vm;
    assert_eq!(vm.nics[0].model, NicModel::Vmxnet3);
    assert!(
        vm.warnings.iter().any(|w| w.contains("cloud-init")),
        "{:?}",
        vm.warnings
    );
    // vzdump's `#qmdump#map` lines are not the description; a leading comment is.
    let bytes = std::fs::read(dir.join("restore-config-input-179.conf")).unwrap();
    let vm = proxmox::parse(&bytes, "179.conf").unwrap().vm;
    assert_eq!(vm.description.as_deref(), Some(" many disks"));
    assert_eq!(vm.cdroms[0].source, DiskSource::Blank);
}

fn migrate(d: &Path, target: &str, vm: &[&str], dest: &Path) -> String {
    let (a, b) = two_disks(d);
    let mut args = vec!["migrate", "--to", target];
    args.extend_from_slice(vm);
    args.extend([s(&a), s(&b), s(dest)]);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
    err
}

const LINUX_VM: &[&str] = &[
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
    "--firmware",
    "uefi",
    "--nic",
    "virtio,mac=52:54:00:01:02:03,network=vmbr0",
    "--nic",
    "e1000,mac=00:50:56:01:02:03,network=vmbr1",
];

#[test]
fn a_written_conf_reads_back_into_the_same_vm_and_migrates_on() {
    let test = "a_written_conf_reads_back_into_the_same_vm_and_migrates_on";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("pve");
    migrate(d, "proxmox", LINUX_VM, &out);
    let conf = out.join("100.conf");
    let bytes = std::fs::read(&conf).unwrap();
    assert!(proxmox::probe(&bytes));
    let back = Proxmox.read(&bytes, &conf).unwrap();
    let vm = &back.vm;
    assert_eq!(vm.name, "web01");
    assert_eq!(vm.memory_bytes, 3 << 30);
    assert_eq!((vm.cpus.count, vm.cpus.cores_per_socket), (4, Some(2)));
    assert_eq!(vm.firmware, Firmware::Uefi { secure_boot: false });
    assert_eq!(vm.guest_os.os.map(|o| o.family()), Some(OsFamily::Linux));
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(vm.disks[0].capacity_bytes, Some(64 << 20));
    assert_eq!(vm.disks[0].boot_order, Some(0));
    // The volumes as stored; found beside the conf by their file names.
    let found: Vec<String> = locate_disks(&Proxmox, &back, &conf, &Gate::confined())
        .into_iter()
        .map(|l| match l {
            DiskLocation::Found(p, _) => p.file_name().unwrap().to_string_lossy().into_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(found, ["vm-100-disk-0.qcow2", "vm-100-disk-1.qcow2"]);
    let nics: Vec<_> = vm
        .nics
        .iter()
        .map(|n| {
            (
                n.model.clone(),
                n.mac.clone().unwrap(),
                n.network.clone().unwrap(),
            )
        })
        .collect();
    // A Linux guest gets virtio NICs (mapping.rs), MACs and Proxmox bridges kept.
    assert_eq!(
        nics,
        [
            (NicModel::Virtio, "52:54:00:01:02:03".into(), "vmbr0".into()),
            (NicModel::Virtio, "00:50:56:01:02:03".into(), "vmbr1".into()),
        ]
    );
    if have_qemu(test) {
        assert!(qemu_compare(
            "qcow2",
            &d.join("system.qcow2"),
            "qcow2",
            &out.join("vm-100-disk-0.qcow2")
        ));
        assert!(qemu_compare(
            "raw",
            &d.join("data.raw"),
            "qcow2",
            &out.join("vm-100-disk-1.qcow2")
        ));
    }
    // The folder is a migrate source as it stands (volumes found beside the conf).
    let again = d.join("again");
    let (code, _, err) = run(&["migrate", "--to", "disks", "-O", "raw", s(&conf), s(&again)]);
    assert_eq!(code, 0, "{err}");
    if have_qemu(test) {
        assert!(qemu_compare(
            "raw",
            &d.join("system.raw"),
            "raw",
            &again.join("web01-disk1.raw")
        ));
        assert!(qemu_compare(
            "raw",
            &d.join("data.raw"),
            "raw",
            &again.join("web01-disk2.raw")
        ));
    }
}

#[test]
fn vmware_to_proxmox_keeps_what_a_windows_guest_drives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("pve");
    let err = migrate(
        d,
        "proxmox",
        &[
            "--name",
            "sql01",
            "--os",
            "windows2019srv-64",
            "--disk-bus",
            "pvscsi",
            "--firmware",
            "uefi-secure",
            "--nic",
            "vmxnet3,network=VM Network",
        ],
        &out,
    );
    let conf = std::fs::read_to_string(out.join("100.conf")).unwrap();
    // pvscsi stays pvscsi (VMware Tools' driver is in the guest), vmxnet3 stays vmxnet3,
    // ostype win10 covers Server 2016/2019 (qm.conf(5) ostype).
    assert!(conf.contains("scsihw: pvscsi\n"), "{conf}");
    assert!(
        conf.contains("scsi0: local:100/vm-100-disk-0.qcow2,size=64M\n"),
        "{conf}"
    );
    assert!(conf.contains("net0: vmxnet3,bridge=vmbr0\n"), "{conf}");
    assert!(conf.contains("ostype: win10\n"), "{conf}");
    assert!(
        conf.contains("bios: ovmf\n") && conf.contains("machine: q35\n"),
        "{conf}"
    );
    assert!(err.contains("VMware Tools"), "{err}");
    assert!(err.contains("'VM Network'"), "{err}");
    assert!(err.contains("pre-enrolled-keys=1"), "{err}");
    // An LSI Logic Windows guest goes to SATA, which Windows drives, with the drivers named.
    let out2 = d.join("pve2");
    let err = migrate(
        d,
        "proxmox",
        &["--os", "windows9-64", "--disk-bus", "lsilogic"],
        &out2,
    );
    let conf = std::fs::read_to_string(out2.join("100.conf")).unwrap();
    assert!(
        conf.contains("sata0: ") && conf.contains("sata1: "),
        "{conf}"
    );
    assert!(err.contains("virtio-win"), "{err}");
}

/// The parser's error, or, for a conf it reads, the one `info` and `migrate` give.
fn parse_err(text: &str) -> String {
    match proxmox::parse(text.as_bytes(), "bad.conf") {
        Err(e) => e.to_string(),
        Ok(_) => refused_by_info_and_migrate("bad.conf", text.as_bytes()),
    }
}

#[test]
fn malformed_confs_are_one_error_naming_the_line() {
    let cases: &[(&str, &str)] = &[
        (
            "name: a\nmemory: lots\n",
            "bad.conf: line 2: memory 'lots' is not a number of MiB",
        ),
        (
            "name: a\nthis is not a setting\n",
            "bad.conf: line 2: 'this is not a setting' is not a 'key: value' line",
        ),
        (
            "cores: 2\ncores: 4\n",
            "bad.conf: line 2: 'cores' is set twice (first on line 1)",
        ),
        (
            "scsi31: local:vm-1-disk-0\n",
            "bad.conf: line 1: 'scsi31' is out of range (scsi0 to scsi30)",
        ),
        (
            "net0: virtio=zz:zz,bridge=vmbr0\n",
            "bad.conf: line 1: net0: 'zz:zz' is not a MAC address",
        ),
        (
            "bios: coreboot\n",
            "bad.conf: line 1: bios 'coreboot' is neither seabios nor ovmf",
        ),
        // Proxmox qemu-server, PVE/QemuServer.pm, $serialdesc: '(/dev/.+|socket)', anchored;
        // serial0 to serial3 ($MAX_SERIAL_PORTS = 4).
        (
            "serial0: pty\n",
            "bad.conf: line 1: serial0 'pty' is neither socket nor a host device (/dev/...)",
        ),
        (
            "serial1: /dev/\n",
            "bad.conf: line 1: serial1 '/dev/' is neither socket nor a host device (/dev/...)",
        ),
        (
            "serial2: sockets\n",
            "bad.conf: line 1: serial2 'sockets' is neither socket nor a host device (/dev/...)",
        ),
        (
            "serial4: socket\n",
            "bad.conf: line 1: 'serial4' is out of range (serial0 to serial3)",
        ),
        (
            "\n\nscsi0: vm-disk,size=10Q\n",
            "bad.conf: line 3: scsi0: size '10Q' is not a size",
        ),
        (
            "memory: 99999999999999999999\n",
            "bad.conf: line 1: memory '99999999999999999999' is not a number of MiB",
        ),
        (
            "memory: 9999999999999\n",
            "bad.conf: line 1: memory '9999999999999' MiB is too large",
        ),
        (
            "ostype: beos\n",
            "bad.conf: line 1: ostype 'beos' is not one of Proxmox's",
        ),
        (
            "name: x\n[snap\n",
            "bad.conf: line 2: '[snap' is not a [section] line",
        ),
        (
            "scsi0: none\n",
            "bad.conf: line 1: scsi0: 'none' is a volume only for a CD-ROM",
        ),
        // Each in range, but sockets times cores is more vCPUs than any hypervisor runs.
        (
            "name: a\ncores: 4096\nsockets: 4096\n",
            "bad.conf: the VM's virtual CPU count (16777216) is more than any hypervisor runs (at most 4096)",
        ),
    ];
    for (text, want) in cases {
        let e = parse_err(text);
        assert!(e.starts_with(want), "{text:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = proxmox::parse(b"name: a\nmemory: \xff\n", "bad.conf").unwrap_err();
    assert_eq!(e.to_string(), "bad.conf: line 2: not UTF-8 text");
}

#[test]
fn a_volume_not_beside_the_conf_says_how_to_fetch_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("111.conf");
    std::fs::write(
        &conf,
        "name: w\nmemory: 512\nscsi0: lvmthin:vm-111-disk-0,size=1G\n",
    )
    .unwrap();
    let (code, _, err) = run(&[
        "migrate",
        "--to",
        "disks",
        s(&conf),
        s(&dir.path().join("o")),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("line 3: scsi0 is volume 'lvmthin:vm-111-disk-0'"),
        "{err}"
    );
    assert!(err.contains("pvesm path lvmthin:vm-111-disk-0"), "{err}");
    // A block volume exported beside the conf as .raw is found.
    make_raw(&dir.path().join("vm-111-disk-0.raw"), 1 << 20, &[(0, 4096)]);
    let back = Proxmox.read(&std::fs::read(&conf).unwrap(), &conf).unwrap();
    assert_eq!(back.disk_files, ["lvmthin:vm-111-disk-0"]);
    let found = locate_disks(&Proxmox, &back, &conf, &Gate::confined());
    assert!(
        matches!(&found[..], [DiskLocation::Found(p, _)] if p.ends_with("vm-111-disk-0.raw")),
        "{found:?}"
    );
    // A volume naming `..` cannot leave the folder: only its last part is looked for.
    std::fs::write(&conf, "scsi0: local:../../etc/passwd\nmemory: 1\n").unwrap();
    let (code, _, err) = run(&[
        "migrate",
        "--to",
        "disks",
        s(&conf),
        s(&dir.path().join("o2")),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("no passwd"), "{err}");
}

/// `info` shows a Proxmox VM whose volumes are not beside the configuration (the usual case:
/// only the host resolves `local-lvm:vm-100-disk-0`), each disk listed as not found.
#[test]
fn info_shows_a_vm_whose_volumes_are_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("100.conf");
    std::fs::write(
        &conf,
        "name: away\nmemory: 2048\ncores: 2\nscsihw: virtio-scsi-single\nscsi0: local-lvm:vm-100-disk-0,size=32G\nscsi1: local:100/vm-100-disk-1.qcow2,size=8G\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\n",
    )
    .unwrap();
    let text = run_ok(&["info", s(&conf)]);
    assert!(text.contains("name: away"), "{text}");
    assert!(
        text.contains(
            "0: local-lvm:vm-100-disk-0 (on SCSI (virtio-scsi) 0, unit 0); not found (looked for "
        ),
        "{text}"
    );
    assert!(text.contains("vm-100-disk-0.raw"), "{text}");
    let json = info_json(&conf);
    assert_eq!(json["vm"]["memory_bytes"], 2048u64 << 20);
    let located = json["disk_locations"].as_array().unwrap();
    assert_eq!(located.len(), 2);
    assert!(located.iter().all(|l| l["found"].is_null()), "{json}");
    // Once one is copied beside the configuration, it is found.
    make_raw(&dir.path().join("vm-100-disk-1.qcow2"), 1 << 20, &[]);
    let json = info_json(&conf);
    assert!(
        json["disk_locations"][1]["found"]
            .as_str()
            .unwrap()
            .ends_with("vm-100-disk-1.qcow2"),
        "{json}"
    );
}

fn written(args: &[&str]) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("pve");
    let err = migrate(d, "proxmox", args, &out);
    (
        std::fs::read_to_string(out.join("100.conf")).unwrap(),
        std::fs::read_to_string(out.join("import.sh")).unwrap(),
        err,
    )
}

/// qm.conf(5): "memory: ... Memory size in MiB"; "cores: The number of cores per socket";
/// "sockets: The number of CPU sockets".
#[test]
fn rule_memory_is_mib_and_cpus_are_cores_times_sockets() {
    let (conf, _, _) = written(LINUX_VM);
    assert!(
        conf.contains("memory: 3072\n")
            && conf.contains("cores: 2\n")
            && conf.contains("sockets: 2\n"),
        "{conf}"
    );
}

/// qm.conf(5) netN: "[model=]<e1000 | ... | virtio | vmxnet3> [,bridge=<bridge>]
/// [,macaddr=<XX:XX:XX:XX:XX:XX>]", written by Proxmox as `<model>=<MAC>`; bridges are
/// `vmbrN` (pve-network docs) or SDN VNets.
#[test]
fn rule_net_lines_are_model_equals_mac_and_a_bridge() {
    let (conf, _, _) = written(LINUX_VM);
    assert!(
        conf.contains("net0: virtio=52:54:00:01:02:03,bridge=vmbr0\n"),
        "{conf}"
    );
    assert!(
        conf.contains("net1: virtio=00:50:56:01:02:03,bridge=vmbr1\n"),
        "{conf}"
    );
}

/// qm.conf(5) bios: "ovmf" needs an efidisk0 for persistent UEFI variables; efidisk0
/// "efitype=<2m | 4m>", "pre-enrolled-keys=<boolean>" (Secure Boot keys); qm(1) creates it
/// with `--efidisk0 <storage>:1,...`; tpmstate0 "version=<v1.2 | v2.0>".
#[test]
fn rule_uefi_gets_ovmf_q35_and_an_efidisk_with_keys_for_secure_boot() {
    let (conf, script, _) = written(&["--os", "windows11-64", "--firmware", "uefi-secure"]);
    assert!(
        conf.contains("bios: ovmf\n") && conf.contains("machine: q35\n"),
        "{conf}"
    );
    assert!(
        script.contains("--efidisk0 \"$STORAGE:1,efitype=4m,pre-enrolled-keys=1\""),
        "{script}"
    );
    assert!(conf.contains("ostype: win11\n"), "{conf}");
}

/// qm(1) `qm set --scsi0 <storage>:0,import-from=<path>` (PVE 7.2+) imports a disk; the
/// dir storage names images `images/<vmid>/vm-<vmid>-disk-<n>.<format>` (Storage docs,
/// "Directory Backend").
#[test]
fn rule_disks_are_named_and_imported_as_proxmox_does() {
    let (conf, script, err) = written(LINUX_VM);
    assert!(
        conf.contains("scsi0: local:100/vm-100-disk-0.qcow2,size=64M\n"),
        "{conf}"
    );
    assert!(
        conf.contains("scsi1: local:100/vm-100-disk-1.qcow2,size=16M\n"),
        "{conf}"
    );
    assert!(
        script.contains(
            "qm set \"$VMID\" --scsi0 \"$STORAGE:0,import-from=$PWD/vm-100-disk-0.qcow2\""
        ),
        "{script}"
    );
    assert!(
        script.contains("grep -Ev '^((scsi|sata|virtio)[0-9]+|boot): ' 100.conf > \"$CONF\""),
        "{script}"
    );
    assert!(
        err.contains("qm importdisk 100 vm-100-disk-0.qcow2 local-lvm"),
        "{err}"
    );
    // The script is valid sh.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("import.sh");
    std::fs::write(&p, &script).unwrap();
    let st = std::process::Command::new("sh")
        .arg("-n")
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// qm.conf(5) boot: "order=<device[;device...]>"; name: "Set a name for the VM. Only used
/// on the configuration web interface" and must be a valid DNS name (pve-config's
/// dns-name format).
#[test]
fn rule_boot_order_and_dns_names() {
    let (conf, _, err) = written(&["--name", "Web Server_1", "--os", "ubuntu-64"]);
    assert!(conf.contains("boot: order=scsi0;net0\n"), "{conf}");
    assert!(conf.contains("name: Web-Server-1\n"), "{conf}");
    assert!(err.contains("DNS"), "{err}");
}

/// qm.conf(5): sataN "(n is 0 to 5)": a seventh SATA disk goes to SCSI.
#[test]
fn rule_sata_holds_six_disks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut args = vec![
        "migrate",
        "--to",
        "proxmox",
        "--os",
        "windows9-64",
        "--disk-bus",
        "sata",
    ];
    let files: Vec<String> = (0..7)
        .map(|i| {
            let p = d.join(format!("d{i}.raw"));
            make_raw(&p, 1 << 20, &[]);
            p.to_string_lossy().into_owned()
        })
        .collect();
    args.extend(files.iter().map(String::as_str));
    let out = d.join("pve");
    args.push(s(&out));
    let (code, _, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let conf = std::fs::read_to_string(out.join("100.conf")).unwrap();
    assert!(
        conf.contains("sata5: ") && !conf.contains("sata6") && conf.contains("scsi0: "),
        "{conf}"
    );
    assert!(conf.contains("scsihw: "), "{conf}");
}

/// qm.conf(5): scsiN "(n is 0 to 30)", sataN "(n is 0 to 5)", virtioN "(n is 0 to 15)":
/// disks past scsi30 go to the next bus with room, each with a warning, and more disks
/// than all of them hold are refused before anything is written.
#[test]
fn rule_scsi_holds_thirty_one_disks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files: Vec<String> = (0..54)
        .map(|i| {
            let p = d.join(format!("d{i}.raw"));
            make_raw(&p, 1 << 20, &[]);
            p.to_string_lossy().into_owned()
        })
        .collect();
    let args = |n: usize, out: &Path| {
        let mut a = vec![
            "migrate",
            "--to",
            "proxmox",
            "--os",
            "ubuntu-64",
            "--disk-bus",
            "scsi",
        ];
        a.extend(files[..n].iter().map(String::as_str));
        a.push(s(out));
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let out = d.join("pve");
    let a = args(40, &out);
    let (code, _, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let conf = std::fs::read_to_string(out.join("100.conf")).unwrap();
    assert!(
        conf.contains("scsi30: ") && !conf.contains("scsi31"),
        "{conf}"
    );
    assert!(
        conf.contains("sata5: ") && conf.contains("virtio2: "),
        "{conf}"
    );
    assert!(
        err.contains("disk 32: scsi0-30 are taken: written as sata0"),
        "{err}"
    );
    let out = d.join("pve-too-many");
    let a = args(54, &out);
    fails_clearly(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &out,
        &["54 disks", "53 disk slots"],
    );
}

/// Proxmox qemu-server, PVE/QemuServer.pm: `serialN` (N 0 to 3) is 'socket' or a host serial
/// device under /dev; both read, the socket being the console every port has anyway.
#[test]
fn rule_serial_ports_are_a_socket_or_a_host_device() {
    let c = proxmox::parse(
        b"name: a\nserial0: socket\nserial3: /dev/ttyS1\n",
        "ok.conf",
    )
    .unwrap();
    let ports: Vec<(u32, Option<&str>)> =
        c.vm.serial_ports
            .iter()
            .map(|p| (p.index, p.host_end()))
            .collect();
    assert_eq!(ports, [(0, None), (3, Some("/dev/ttyS1"))]);
}
