//! Xen xl.cfg: every xl.cfg in ../shared/corpus/configs/xen reads with the values it holds,
//! and agrees field by field with the libvirt domain XML that libvirt's xl converter made of
//! the same VM (its xlconfigdata round-trip pairs); what `migrate --to xen` writes reads
//! back into the same model with identical disks (`qemu-img compare`) and migrates on;
//! malformed files are one error naming the line. xl cannot run here: its rules are checked
//! one test each, citing xl.cfg(5) (https://xenbits.xen.org/docs/unstable/man/xl.cfg.5.html),
//! xl-disk-configuration(5) (https://xenbits.xen.org/docs/unstable/man/xl-disk-configuration.5.html)
//! and xl-network-configuration(5)
//! (https://xenbits.xen.org/docs/unstable/man/xl-network-configuration.5.html).

mod common;

use common::*;
use diskferry::vm::{ControllerKind, Firmware, NicModel};
use diskferry::vmconfig::VmConfig;
use diskferry::vmconfig::libvirt;
use diskferry::vmconfig::xl::{self, Xl, read::GuestType};
use std::path::PathBuf;

/// (file, name, type, memory MiB, vCPUs, UEFI, disks, CD-ROMs, NICs)
type Row = (
    &'static str,
    &'static str,
    GuestType,
    u64,
    u32,
    bool,
    usize,
    usize,
    usize,
);

#[test]
fn corpus_xl_configs_read_with_the_values_they_hold() {
    let test = "corpus_xl_configs_read_with_the_values_they_hold";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = shared.join("corpus/configs/xen");
    let expected: &[Row] = &[
        (
            "libvirt-xlconfig-test-disk-positional-parms-full.cfg",
            "XenGuest2",
            GuestType::Hvm,
            579,
            1,
            false,
            2,
            1,
            1,
        ),
        (
            "libvirt-xlconfig-test-fullvirt-ovmf.cfg",
            "XenGuest2",
            GuestType::Hvm,
            579,
            1,
            true,
            2,
            1,
            1,
        ),
        (
            "libvirt-xlconfig-test-paravirt-cmdline.cfg",
            "XenGuest2",
            GuestType::Pv,
            579,
            1,
            false,
            1,
            0,
            1,
        ),
        (
            "libvirt-xlconfig-test-pvh-type.cfg",
            "XenGuest2",
            GuestType::Pvh,
            579,
            1,
            false,
            0,
            0,
            0,
        ),
        (
            "xen-xlexample.hvm",
            "example.hvm",
            GuestType::Hvm,
            128,
            2,
            false,
            1,
            0,
            1,
        ),
        (
            "xen-xlexample.pvhlinux",
            "example.pvhlinux",
            GuestType::Pvh,
            512,
            4,
            false,
            1,
            0,
            1,
        ),
        (
            "xen-xlexample.pvlinux",
            "example.pvlinux",
            GuestType::Pv,
            128,
            2,
            false,
            1,
            0,
            1,
        ),
    ];
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".xml"))
        .collect();
    files.sort();
    let mut listed: Vec<&str> = expected.iter().map(|r| r.0).collect();
    listed.sort();
    assert_eq!(files, listed, "every corpus xl.cfg has its row");
    for &(file, name, ty, mib, cpus, uefi, disks, cds, nics) in expected {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        assert!(xl::probe(&bytes), "{file}: probe");
        let c = xl::parse(&bytes, file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let vm = &c.vm;
        assert_eq!(
            (
                vm.name.as_str(),
                c.guest_type,
                vm.memory_bytes >> 20,
                vm.cpus.count
            ),
            (name, ty, mib, cpus),
            "{file}"
        );
        assert_eq!(matches!(vm.firmware, Firmware::Uefi { .. }), uefi, "{file}");
        assert_eq!(
            (vm.disks.len(), vm.cdroms.len(), vm.nics.len()),
            (disks, cds, nics),
            "{file}"
        );
        assert_eq!(c.disk_files.len(), disks);
    }
    // The positional and key=value forms of the same three disks read alike.
    let read = |f: &str| xl::parse(&std::fs::read(dir.join(f)).unwrap(), f).unwrap();
    let a = read("libvirt-xlconfig-test-disk-positional-parms-full.cfg");
    let b = read("libvirt-xlconfig-test-fullvirt-ovmf.cfg");
    assert_eq!(
        a.disk_files,
        [
            "/dev/HostVG/XenGuest2",
            "/var/lib/libvirt/images/XenGuest2-home"
        ]
    );
    assert_eq!(a.disk_files, b.disk_files);
    assert_eq!(a.vm.disks, b.vm.disks);
    assert_eq!(a.vm.cdroms, b.vm.cdroms);
    assert_eq!(a.vm.disks[1].controller.kind, ControllerKind::Ide);
    assert_eq!(
        (a.vm.disks[1].controller.index, a.vm.disks[1].unit),
        (0, 1),
        "hdb"
    );
    assert_eq!(a.vm.nics[0].model, NicModel::E1000);
    // The official example's `vif = [ '' ]`: one NIC with xl's defaults (HVM: rtl8139).
    let h = read("xen-xlexample.hvm");
    assert_eq!(h.vm.nics[0].model, NicModel::Rtl8139);
    assert_eq!(h.vm.nics[0].mac, None);
    let pv = read("xen-xlexample.pvlinux");
    assert!(
        pv.vm.warnings.iter().any(|w| w.contains("/boot/vmlinuz")),
        "{:?}",
        pv.vm.warnings
    );
}

/// libvirt's xl converter made each .xml from its .cfg (libvirt tests/xlconfigtest.c): the
/// two readers must agree on what both express.
#[test]
fn xl_and_libvirts_reading_of_the_same_vm_agree() {
    let test = "xl_and_libvirts_reading_of_the_same_vm_agree";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = shared.join("corpus/configs/xen");
    for stem in [
        "libvirt-xlconfig-test-fullvirt-ovmf",
        "libvirt-xlconfig-test-paravirt-cmdline",
        "libvirt-xlconfig-test-pvh-type",
    ] {
        let cfg = xl::parse(
            &std::fs::read(dir.join(format!("{stem}.cfg"))).unwrap(),
            stem,
        )
        .unwrap();
        let dom = libvirt::parse_domain(
            &std::fs::read(dir.join(format!("{stem}.xml"))).unwrap(),
            stem,
        )
        .unwrap();
        let (a, b) = (&cfg.vm, &dom.vm);
        assert_eq!(a.name, b.name, "{stem}");
        assert_eq!(a.memory_bytes, b.memory_bytes, "{stem}");
        assert_eq!(a.cpus.count, b.cpus.count, "{stem}");
        assert_eq!(
            matches!(a.firmware, Firmware::Uefi { .. }),
            matches!(b.firmware, Firmware::Uefi { .. }),
            "{stem}"
        );
        let files: Vec<PathBuf> = cfg.disk_files.iter().map(PathBuf::from).collect();
        assert_eq!(files, dom.disk_files, "{stem}");
        let macs = |v: &diskferry::vm::Vm| {
            v.nics
                .iter()
                .map(|n| (n.mac.clone(), n.network.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(macs(a), macs(b), "{stem}");
    }
}

fn written(vm: &[&str]) -> (tempfile::TempDir, PathBuf, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = two_disks(d);
    let out = d.join("xen");
    let mut args = vec!["migrate", "--to", "xen"];
    args.extend_from_slice(vm);
    args.extend([s(&a), s(&b), s(&out)]);
    let (code, _, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let cfg = std::fs::read_to_string(out.join("web01.cfg")).unwrap();
    (dir, out, cfg, err)
}

const VM: &[&str] = &[
    "--name",
    "web01",
    "--cpus",
    "2",
    "--memory",
    "1G",
    "--os",
    "debian12-64",
    "--firmware",
    "uefi",
    "--nic",
    "e1000,mac=00:16:3e:01:02:03,network=xenbr1",
    "--nic",
    "rtl8139",
];

#[test]
fn a_written_cfg_reads_back_into_the_same_vm_and_migrates_on() {
    let test = "a_written_cfg_reads_back_into_the_same_vm_and_migrates_on";
    let (dir, out, _, _) = written(VM);
    let d = dir.path();
    let cfg = out.join("web01.cfg");
    let bytes = std::fs::read(&cfg).unwrap();
    assert!(xl::probe(&bytes));
    let back = Xl.read(&bytes, &cfg).unwrap();
    let vm = &back.vm;
    assert_eq!(
        (vm.name.as_str(), vm.memory_bytes, vm.cpus.count),
        ("web01", 1 << 30, 2)
    );
    assert_eq!(vm.firmware, Firmware::Uefi { secure_boot: false });
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(
        back.disk_files,
        [
            s(&out.join("web01-disk1.qcow2")),
            s(&out.join("web01-disk2.qcow2"))
        ]
    );
    let nics: Vec<_> = vm
        .nics
        .iter()
        .map(|n| (n.model.clone(), n.mac.clone(), n.network.clone()))
        .collect();
    assert_eq!(
        nics,
        [
            (
                NicModel::E1000,
                Some("00:16:3e:01:02:03".into()),
                Some("xenbr1".into())
            ),
            (NicModel::Rtl8139, None, Some("xenbr0".into())),
        ]
    );
    if have_qemu(test) {
        assert!(qemu_compare(
            "qcow2",
            &d.join("system.qcow2"),
            "qcow2",
            &out.join("web01-disk1.qcow2")
        ));
        assert!(qemu_compare(
            "raw",
            &d.join("data.raw"),
            "qcow2",
            &out.join("web01-disk2.qcow2")
        ));
    }
    // The cfg is a migrate source; moved elsewhere with its disks, they are found beside it.
    let moved = d.join("moved");
    std::fs::rename(&out, &moved).unwrap();
    let again = d.join("again");
    let (code, _, err) = run(&[
        "migrate",
        "--to",
        "disks",
        "-O",
        "raw",
        s(&moved.join("web01.cfg")),
        s(&again),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("its copy beside the configuration"), "{err}");
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

/// The parser's error, or, for a file it reads, the one `info` and `migrate` give.
fn err_of(text: &str) -> String {
    match xl::parse(text.as_bytes(), "bad.cfg") {
        Err(e) => e.to_string(),
        Ok(_) => refused_by_info_and_migrate("bad.cfg", text.as_bytes()),
    }
}

#[test]
fn malformed_cfgs_are_one_error_naming_the_line() {
    let cases: &[(&str, &str)] = &[
        (
            "name = \"a\nmemory = 1\n",
            "bad.cfg: line 1: a string without its closing quote",
        ),
        (
            "name = \"a\"\nmemory 512\n",
            "bad.cfg: line 2: expected '=' after 'memory'",
        ),
        (
            "name = \"a\"\nmemory = \"lots\"\n",
            "bad.cfg: line 2: 'memory' must be a number",
        ),
        (
            "name = \"a\"\n\nmemory = 12ab\n",
            "bad.cfg: line 3: '12ab' is not a number",
        ),
        (
            "name = \"a\"\ndisk = [ 'x.img,raw,vda,rw' ]\n",
            "bad.cfg: line 2: disk vdev 'vda' is not hdX, sdX or xvdX",
        ),
        (
            "name = \"a\"\ndisk = [ 'format=raw' ]\n",
            "bad.cfg: line 2: disk 'format=raw': no vdev",
        ),
        (
            "name = \"a\"\nvif = [ 'mac=zz' ]\n",
            "bad.cfg: line 2: vif 'mac=zz': 'zz' is not a MAC address",
        ),
        ("memory = 512\nvcpus = 1\n", "bad.cfg: no 'name' setting"),
        (
            "name = \"a\"\ntype = \"hvm2\"\n",
            "bad.cfg: line 2: type 'hvm2' is not hvm, pvh or pv",
        ),
        (
            "name = \"a\"\ndisk = [ 'a',\n",
            "bad.cfg: line 2: the list of 'disk' has no closing ']'",
        ),
        (
            "name = \"a\"\nmemory = 99999999999999\n",
            "bad.cfg: line 2: 'memory' is too large",
        ),
        (
            "name = \"a\"\nvcpus = 99999999999999999999\n",
            "bad.cfg: line 2: 'vcpus' must be a number",
        ),
        (
            "name = \"a\" x\n",
            "bad.cfg: line 1: unexpected 'x' after the value of 'name'",
        ),
        // Read, but more memory (MiB) than any hypervisor gives a VM: the model's bounds.
        (
            "name = \"a\"\nmemory = 40000000\n",
            "bad.cfg: the VM's memory (41943040000000 bytes) is more than any hypervisor runs (at most 32 TiB)",
        ),
    ];
    for (text, want) in cases {
        let e = err_of(text);
        assert!(e.starts_with(want), "{text:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// xl.cfg(5) "name": "Specifies the name of the domain. Names of domains existing on a
/// single host must be unique." (mandatory: xl create refuses a config without it).
#[test]
fn rule_name_is_required_and_written_quoted() {
    let (_d, _, cfg, _) = written(VM);
    assert!(cfg.contains("name = 'web01'\n"), "{cfg}");
}

/// xl.cfg(5) "type": hvm for a fully virtualized guest; "memory" and "maxmem" in MB;
/// "vcpus"; "bios="ovmf"" selects OVMF (UEFI) for HVM guests; "viridian" for Windows.
#[test]
fn rule_hvm_memory_vcpus_and_ovmf() {
    let (_d, _, cfg, _) = written(VM);
    for line in [
        "type = \"hvm\"",
        "memory = 1024",
        "maxmem = 1024",
        "vcpus = 2",
        "bios = \"ovmf\"",
        "boot = \"c\"",
    ] {
        assert!(cfg.lines().any(|l| l == line), "{line}: {cfg}");
    }
    let (_d, _, cfg, err) = written(&[
        "--name",
        "web01",
        "--os",
        "windows9-64",
        "--firmware",
        "uefi-secure",
    ]);
    assert!(cfg.contains("viridian = 1\n"), "{cfg}");
    assert!(err.contains("Secure Boot is not carried"), "{err}");
}

/// xl-disk-configuration(5): "target=<target>: ... it consumes the whole rest of the
/// DISKSPEC including trailing whitespace. Therefore in that case it must come last";
/// "format=<format>" raw, qcow, qcow2, vhd, qed; "vdev" xvd*, hd*, sd*; "access=rw".
#[test]
fn rule_disk_specs_end_with_the_target() {
    let (_d, out, cfg, _) = written(VM);
    let spec = format!(
        "'format=qcow2, vdev=xvda, access=rw, backendtype=qdisk, target={}'",
        out.join("web01-disk1.qcow2").display()
    );
    assert!(cfg.contains(&spec), "{cfg}");
    // And a target with commas reads back whole.
    let d = xl::read::parse_disk("format=raw, vdev=xvdb, target=/srv/a,b.img").unwrap();
    assert_eq!(d.target, "/srv/a,b.img");
}

/// xl-network-configuration(5): "mac", "bridge" (default xenbr0), "model" (the emulated
/// NIC of an HVM guest: e1000, rtl8139 ...).
#[test]
fn rule_vifs_carry_mac_bridge_and_model() {
    let (_d, _, cfg, _) = written(VM);
    assert!(
        cfg.contains("vif = [ 'mac=00:16:3e:01:02:03,bridge=xenbr1,model=e1000', 'bridge=xenbr0,model=rtl8139' ]"),
        "{cfg}"
    );
    let (_d, _, cfg, err) = written(&["--name", "web01", "--nic", "vmxnet3,network=VM Network"]);
    assert!(cfg.contains("'bridge=xenbr0,model=e1000'"), "{cfg}");
    assert!(
        err.contains("'VM Network'") && err.contains("e1000"),
        "{err}"
    );
}

/// A disk target that leads out of the cfg's folder is refused under --confine (the open
/// gate), with one line naming the file, and nothing is written.
#[test]
fn a_disk_path_escaping_the_folder_is_refused_under_confine() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_raw(&d.join("secret.raw"), 1 << 20, &[(0, 4096)]);
    std::fs::create_dir(d.join("vm")).unwrap();
    let cfg = d.join("vm/escape.cfg");
    std::fs::write(
        &cfg,
        "name = \"a\"\nbuilder = \"hvm\"\nmemory = 512\ndisk = [ 'format=raw,vdev=xvda,target=../secret.raw' ]\n",
    )
    .unwrap();
    let out = d.join("out");
    one_line_error(
        &["migrate", "--confine", "--to", "vmx", s(&cfg), s(&out)],
        &["escape.cfg", "'../secret.raw' refused", "--confine"],
    );
    assert!(!out.exists());
    let (code, _, err) = run(&["migrate", "--to", "vmx", s(&cfg), s(&out)]);
    assert_eq!(code, 0, "{err}");
}
