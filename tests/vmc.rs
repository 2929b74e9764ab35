//! Virtual PC / Virtual Server .vmc: samples built in the layouts those products write read
//! into the model; `--to virtualpc` writes dynamic VHDs identical to the source (`qemu-img
//! compare`) and a UTF-16 .vmc that reads back into the same model and follows, one test per
//! rule, what Virtual PC 2007 and Virtual Server 2005 R2 take; a .vmc migrates to KVM with
//! its disks found by relative path, then by the absolute path's file name, through the gate;
//! malformed files are one clear error.

mod common;

use common::*;
use diskferry::vm::{ControllerKind, DiskSource, NicModel};
use diskferry::vmconfig::vmc;
use std::path::{Path, PathBuf};

fn utf16(text: &str) -> Vec<u8> {
    let mut b = vec![0xff, 0xfe];
    for u in text.replace('\n', "\r\n").encode_utf16() {
        b.extend(u.to_le_bytes());
    }
    b
}

/// A Virtual PC 2007 .vmc as Virtual PC writes it (the layout of the public example in
/// "Convertir maquinas virtuales de Microsoft Virtual PC a KVM", 2013: version 2.0, the
/// comment line, `ide_controller id="1"` (the CD) listed before `id="0"`, empty typed
/// `absolute`/`relative` for a CD without a medium, a MAC as 12 hex digits of type bytes),
/// with `disk` as the hard disk's relative name and `absolute` its absolute path.
fn vpc2007(relative: &str, absolute: &str, ram: &str, nic_count: u32) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-16"?>
<!-- Microsoft Virtual Machine Options and Settings -->
<preferences>
	<version type="string">2.0</version>
	<alerts>
		<notifications>
			<no_boot_disk type="boolean">true</no_boot_disk>
		</notifications>
	</alerts>
	<hardware>
		<memory>
			<ram_size type="integer">{ram}</ram_size>
		</memory>
		<pci_bus>
			<ethernet_adapter>
				<controller_count type="integer">{nic_count}</controller_count>
				<ethernet_controller id="0">
					<virtual_network>
						<id type="bytes">DF36471DB98511DC81FCE3DE11264C6C</id>
						<name type="string">Local only</name>
					</virtual_network>
					<ethernet_card_address type="bytes">0003FFA51F38</ethernet_card_address>
				</ethernet_controller>
			</ethernet_adapter>
			<video_adapter>
				<vram_size type="integer">8</vram_size>
			</video_adapter>
			<ide_adapter>
				<ide_controller id="1">
					<location id="0">
						<drive_type type="integer">2</drive_type>
						<pathname>
							<absolute type="string" />
							<relative type="string" />
						</pathname>
					</location>
				</ide_controller>
				<ide_controller id="0">
					<location id="0">
						<drive_type type="integer">1</drive_type>
						<pathname>
							<absolute type="string">{absolute}</absolute>
							<relative type="string">{relative}</relative>
						</pathname>
					</location>
				</ide_controller>
			</ide_adapter>
		</pci_bus>
	</hardware>
</preferences>
"#
    )
}

/// A Virtual Server 2005 .vmc: the same preferences tree with the VM's disks on the emulated
/// SCSI adapter (`scsi_adapter`/`scsi_controller id`/`location id`), which Virtual Server has
/// and Virtual PC has not.
const VS2005: &str = r#"<?xml version="1.0" encoding="UTF-16"?>
<!-- Microsoft Virtual Machine Options and Settings -->
<preferences>
	<version type="string">2.0</version>
	<hardware>
		<memory>
			<ram_size type="integer">1024</ram_size>
		</memory>
		<pci_bus>
			<ethernet_adapter>
				<controller_count type="integer">2</controller_count>
				<ethernet_controller id="1">
					<virtual_network>
						<name type="string">Internal Network</name>
					</virtual_network>
					<ethernet_card_address type="bytes">0003FF000002</ethernet_card_address>
				</ethernet_controller>
				<ethernet_controller id="0">
					<virtual_network>
						<name type="string">External Network (Broadcom)</name>
					</virtual_network>
					<ethernet_card_address type="bytes">0003FF000001</ethernet_card_address>
				</ethernet_controller>
			</ethernet_adapter>
			<ide_adapter>
				<ide_controller id="0">
					<location id="0">
						<drive_type type="integer">1</drive_type>
						<pathname>
							<absolute type="string">D:\VS\sql01\sql01-system.vhd</absolute>
							<relative type="string">.\sql01-system.vhd</relative>
						</pathname>
					</location>
				</ide_controller>
			</ide_adapter>
			<scsi_adapter>
				<scsi_controller id="0">
					<location id="1">
						<drive_type type="integer">1</drive_type>
						<pathname>
							<absolute type="string">D:\VS\sql01\sql01-data.vhd</absolute>
							<relative type="string">.\sql01-data.vhd</relative>
						</pathname>
					</location>
				</scsi_controller>
			</scsi_adapter>
		</pci_bus>
	</hardware>
</preferences>
"#;

#[test]
fn virtual_pc_2007_layout_reads() {
    let bytes = utf16(&vpc2007(r".\origen.vhd", r"C:\origen.vhd", "650", 1));
    assert!(vmc::probe(&bytes[..bytes.len().min(4096)]));
    let c = vmc::parse(&bytes, "/x/origen.vmc").unwrap();
    let vm = &c.vm;
    assert_eq!(vm.name, "origen");
    assert_eq!(vm.memory_bytes, 650 << 20);
    assert_eq!(c.disk_files, vec![r".\origen.vhd".to_string()]);
    assert_eq!(vm.disks[0].controller.kind, ControllerKind::Ide);
    assert_eq!((vm.disks[0].controller.index, vm.disks[0].unit), (0, 0));
    assert_eq!(vm.disks[0].boot_order, Some(0));
    assert_eq!(vm.cdroms.len(), 1);
    assert_eq!((vm.cdroms[0].controller.index, vm.cdroms[0].unit), (1, 0));
    assert_eq!(vm.cdroms[0].source, DiskSource::Blank);
    assert_eq!(vm.nics.len(), 1);
    assert_eq!(vm.nics[0].mac.as_deref(), Some("00:03:ff:a5:1f:38"));
    assert_eq!(vm.nics[0].network.as_deref(), Some("Local only"));
    assert_eq!(vm.nics[0].model, NicModel::Other("dec21140".into()));
    // controller_count 0 with a stale controller element: no adapter ("Not connected").
    let none = vmc::parse(&utf16(&vpc2007(r".\a.vhd", "", "256", 0)), "a.vmc").unwrap();
    assert!(none.vm.nics.is_empty());
}

#[test]
fn virtual_server_2005_layout_reads_scsi_disks_and_nics_in_order() {
    let c = vmc::parse(&utf16(VS2005), "sql01.vmc").unwrap();
    let vm = &c.vm;
    assert_eq!(vm.memory_bytes, 1 << 30);
    assert_eq!(
        c.disk_files,
        vec![
            r".\sql01-system.vhd".to_string(),
            r".\sql01-data.vhd".to_string()
        ]
    );
    assert_eq!(vm.disks[0].controller.kind, ControllerKind::Ide);
    assert!(matches!(
        vm.disks[1].controller.kind,
        ControllerKind::Scsi(_)
    ));
    assert_eq!(vm.disks[1].unit, 1);
    let nets: Vec<_> = vm
        .nics
        .iter()
        .map(|n| n.network.as_deref().unwrap())
        .collect();
    assert_eq!(nets, ["External Network (Broadcom)", "Internal Network"]);
}

#[test]
fn malformed_vmc_files_are_one_clear_error() {
    let good = vpc2007(r".\a.vhd", "", "256", 1);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("odd length", {
            let mut b = utf16(&good);
            b.push(0);
            b
        }),
        ("unpaired surrogate", {
            let mut b = utf16("<preferences>");
            b.extend(0xd800u16.to_le_bytes());
            b.extend(&utf16("</preferences>")[2..]);
            b
        }),
        ("truncated", utf16(&good[..good.len() / 2])),
        (
            "entity",
            utf16("<!DOCTYPE p [<!ENTITY x \"xxxxxxxx\">]><preferences>&x;</preferences>"),
        ),
        (
            "huge ram",
            utf16(&vpc2007(r".\a.vhd", "", "99999999999999999999999", 1)),
        ),
        (
            "ram not a number",
            utf16(&vpc2007(r".\a.vhd", "", "lots", 1)),
        ),
        // Read (the ids repeat), but more NICs than any hypervisor gives a VM: the model's
        // bounds refuse it.
        (
            "nics beyond any hypervisor",
            utf16(
                &vpc2007(r".\a.vhd", "", "256", 64).replacen(
                    "<ethernet_controller id=\"0\">",
                    &((1..130)
                        .map(|i| format!("<ethernet_controller id=\"{}\"/>", i % 64))
                        .collect::<String>()
                        + "<ethernet_controller id=\"0\">"),
                    1,
                ),
            ),
        ),
        (
            "bad id",
            utf16(&good.replace(
                "ide_controller id=\"0\"",
                "ide_controller id=\"4294967296\"",
            )),
        ),
        ("other root", utf16("<configuration/>")),
    ];
    cases.push((
        "deep",
        utf16(
            &("<preferences>".to_string()
                + &"<a>".repeat(100)
                + &"</a>".repeat(100)
                + "</preferences>"),
        ),
    ));
    for (what, bytes) in cases {
        let e = vmc::parse(&bytes, "bad.vmc")
            .map(|_| refused_by_info_and_migrate("bad.vmc", &bytes))
            .unwrap_or_else(|e| e.to_string());
        assert!(e.starts_with("bad.vmc"), "{what}: {e}");
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
        if what == "nics beyond any hypervisor" {
            assert!(e.contains("the VM's network adapter count (130)"), "{e}");
        }
    }
}

/// A folder with a .vmc and its disk: the .vmc's relative path names `relative`, its
/// absolute path `absolute`; the disk file is `disk_name` in the folder.
fn vmc_folder(d: &Path, relative: &str, absolute: &str, disk_name: &str) -> (PathBuf, PathBuf) {
    let folder = d.join("vpc");
    std::fs::create_dir_all(&folder).unwrap();
    let raw = d.join("content.raw");
    make_raw(&raw, 40 << 20, &[(0, 1 << 20), (30 << 20, 2 << 20)]);
    run_ok(&["convert", "-O", "vhd", s(&raw), s(&folder.join(disk_name))]);
    let cfg = folder.join("xp.vmc");
    std::fs::write(&cfg, utf16(&vpc2007(relative, absolute, "512", 1))).unwrap();
    (cfg, raw)
}

/// A .vmc migrates to KVM: its disk found by the relative path, or (when there is none, or it
/// is stale) by the absolute Windows path's file name beside the .vmc, with identical content;
/// when nothing is found the error names every path tried.
#[test]
fn a_vmc_migrates_to_kvm_finding_disks_by_relative_then_absolute_path() {
    let test = "a_vmc_migrates_to_kvm_finding_disks_by_relative_then_absolute_path";
    if !have_qemu(test) {
        return;
    }
    for (relative, absolute) in [
        (r".\xp.vhd", r"C:\VMs\old\xp.vhd"),
        (
            "",
            r"C:\Documents and Settings\me\My Documents\My Virtual Machines\xp.vhd",
        ),
        (r".\moved\gone.vhd", r"E:\xp.vhd"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let (cfg, raw) = vmc_folder(d.path(), relative, absolute, "xp.vhd");
        let out = d.path().join("kvm");
        let (code, o, e) = run(&["migrate", "--to", "kvm", s(&cfg), s(&out)]);
        assert_eq!(code, 0, "{relative}: {o}{e}");
        let xml = std::fs::read_to_string(out.join("xp.xml")).unwrap();
        assert!(xml.contains("<memory unit='KiB'>524288</memory>"), "{xml}");
        assert!(qemu_compare(
            "raw",
            &raw,
            "qcow2",
            &out.join("xp-disk1.qcow2")
        ));
    }
    let d = tempfile::tempdir().unwrap();
    let (cfg, _) = vmc_folder(d.path(), r".\moved\gone.vhd", r"E:\old\lost.vhd", "xp.vhd");
    let (code, _, e) = run(&["migrate", "--to", "kvm", s(&cfg), s(&d.path().join("kvm"))]);
    assert_ne!(code, 0);
    assert!(
        e.contains("is not there")
            && e.contains("moved/gone.vhd")
            && e.contains("lost.vhd")
            && e.contains("vpc/gone.vhd"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

/// A relative path that leads out of the .vmc's folder is refused under --confine: one clear
/// error, nothing written.
#[test]
fn a_vmc_path_escaping_the_folder_is_refused_under_confine() {
    let d = tempfile::tempdir().unwrap();
    let (cfg, _) = vmc_folder(d.path(), r"..\content.raw", "", "xp.vhd");
    let out = d.path().join("kvm");
    let (code, _, e) = run(&["migrate", "--confine", "--to", "kvm", s(&cfg), s(&out)]);
    assert_ne!(code, 0);
    assert!(e.contains("refused") && e.contains("xp.vmc"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(!out.exists());
}

/// Bare disks `--to virtualpc` with `args`: the output folder and what migrate said.
fn to_virtualpc(d: &Path, disks: usize, args: &[&str]) -> (PathBuf, Vec<PathBuf>, i32, String) {
    let mut files = Vec::new();
    for i in 0..disks {
        let p = d.join(format!("d{i}.raw"));
        make_raw(
            &p,
            (24 + 8 * i as u64) << 20,
            &[(0, 1 << 20), ((20 << 20) + i as u64 * 4096, 65536)],
        );
        files.push(p);
    }
    let out = d.join("vpc");
    let mut a = vec!["migrate", "--to", "virtualpc", "--name", "xp"];
    a.extend_from_slice(args);
    a.extend(files.iter().map(|p| s(p)));
    a.push(s(&out));
    let (code, o, e) = run(&a);
    (out, files, code, format!("{o}{e}"))
}

fn written(out: &Path) -> diskferry::vmconfig::ConfigVm {
    let path = out.join("xp.vmc");
    vmc::parse(&std::fs::read(&path).unwrap(), s(&path)).unwrap()
}

/// The disks arrive identical as dynamic VHDs (footer disk type 3, with the footer's copy at
/// offset 0 as the VHD specification requires of dynamic disks), and the .vmc reads back
/// into the same model: memory, disks on IDE 0:0/0:1, the CD on 1:0, NICs with MACs and
/// networks.
#[test]
fn to_virtualpc_round_trips_disks_and_model() {
    let test = "to_virtualpc_round_trips_disks_and_model";
    if !have_qemu(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (out, files, code, said) = to_virtualpc(
        d.path(),
        2,
        &[
            "--memory",
            "768M",
            "--nic",
            "e1000,mac=00:03:ff:01:02:03,network=LAN",
            "--nic",
            "e1000,network=Wifi",
        ],
    );
    assert_eq!(code, 0, "{said}");
    for (i, f) in files.iter().enumerate() {
        let vhd = out.join(format!("xp-disk{}.vhd", i + 1));
        assert!(qemu_compare("raw", f, "vpc", &vhd));
        let head = std::fs::read(&vhd).unwrap();
        assert_eq!(&head[..8], b"conectix");
        assert_eq!(
            u32::from_be_bytes(head[60..64].try_into().unwrap()),
            3,
            "dynamic"
        );
    }
    let c = written(&out);
    assert_eq!(c.vm.memory_bytes, 768 << 20);
    assert_eq!(
        c.disk_files,
        vec![r".\xp-disk1.vhd".to_string(), r".\xp-disk2.vhd".to_string()]
    );
    let slots: Vec<_> =
        c.vm.disks
            .iter()
            .map(|d| (d.controller.kind, d.controller.index, d.unit))
            .collect();
    assert_eq!(
        slots,
        [(ControllerKind::Ide, 0, 0), (ControllerKind::Ide, 0, 1)]
    );
    assert_eq!(c.vm.nics.len(), 2);
    assert_eq!(c.vm.nics[0].mac.as_deref(), Some("00:03:ff:01:02:03"));
    assert_eq!(c.vm.nics[0].network.as_deref(), Some("LAN"));
    assert_eq!(c.vm.nics[1].mac, None);
    assert_eq!(c.vm.nics[1].network.as_deref(), Some("Wifi"));
    // And the folder migrates on (to KVM) with the same content.
    let kvm = d.path().join("kvm");
    run_ok(&["migrate", "--to", "kvm", s(&out.join("xp.vmc")), s(&kvm)]);
    assert!(qemu_compare(
        "raw",
        &files[1],
        "qcow2",
        &kvm.join("xp-disk2.qcow2")
    ));
}

/// The .vmc is UTF-16LE with a byte-order mark and the declaration Virtual PC writes
/// (`encoding="UTF-16"`), CRLF line ends (the public .vmc examples above are all so).
#[test]
fn rule_vmc_is_utf16le_with_bom() {
    let d = tempfile::tempdir().unwrap();
    let (out, _, code, said) = to_virtualpc(d.path(), 1, &["--memory", "256M"]);
    assert_eq!(code, 0, "{said}");
    let b = std::fs::read(out.join("xp.vmc")).unwrap();
    assert_eq!(&b[..2], &[0xff, 0xfe]);
    let units: Vec<u16> = b[2..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let text = String::from_utf16(&units).unwrap();
    assert!(
        text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-16\"?>\r\n"),
        "{text}"
    );
    assert!(text.contains("<preferences>\r\n"));
}

/// Three hard disks at most, on IDE 0:0, 0:1 and 1:1, the CD/DVD drive on IDE 1:0 (Connectix
/// Virtual PC for Windows 4.0 User Guide, "Components of a virtual machine": "Hard Disk 1 ...
/// Hard Disk 2 or Hard Disk 3"; Virtual PC 2007 keeps the four IDE positions, the CD on the
/// secondary channel's master). A fourth disk is an error, not a silent drop.
#[test]
fn rule_three_ide_disks_and_the_cd_on_ide_1_0() {
    let d = tempfile::tempdir().unwrap();
    let (out, _, code, said) = to_virtualpc(d.path(), 3, &["--memory", "256M"]);
    assert_eq!(code, 0, "{said}");
    let c = written(&out);
    let slots: Vec<_> =
        c.vm.disks
            .iter()
            .map(|d| (d.controller.kind, d.controller.index, d.unit))
            .collect();
    assert_eq!(
        slots,
        [
            (ControllerKind::Ide, 0, 0),
            (ControllerKind::Ide, 0, 1),
            (ControllerKind::Ide, 1, 1)
        ]
    );
    assert_eq!(c.vm.cdroms.len(), 1);
    assert_eq!(
        (c.vm.cdroms[0].controller.index, c.vm.cdroms[0].unit),
        (1, 0)
    );
    let d4 = tempfile::tempdir().unwrap();
    let (out4, _, code, said) = to_virtualpc(d4.path(), 4, &["--memory", "256M"]);
    assert_ne!(code, 0);
    assert!(said.contains("at most 3"), "{said}");
    assert!(!out4.exists());
}

/// Memory between 4 MiB and 3712 MiB (3.6 GB, the per-VM maximum Microsoft published for
/// Virtual Server 2005 R2 and Virtual PC 2007; the figure is the products' stated limit,
/// not checked here against a running product): more is lowered with a warning.
#[test]
fn rule_memory_is_within_virtual_pc_limits() {
    let d = tempfile::tempdir().unwrap();
    let (out, _, code, said) = to_virtualpc(d.path(), 1, &["--memory", "8G"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("lowered to 3712 MiB"), "{said}");
    assert_eq!(written(&out).vm.memory_bytes, 3712 << 20);
}

/// BIOS only: a UEFI VM is written with a warning that it will not boot as it is (Virtual PC
/// and Virtual Server emulate an AMI BIOS and have no UEFI).
#[test]
fn rule_bios_only_uefi_is_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let (_, _, code, said) = to_virtualpc(d.path(), 1, &["--firmware", "uefi", "--memory", "1G"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("UEFI") && said.contains("only a BIOS"),
        "{said}"
    );
}

/// One processor: Virtual PC and Virtual Server give each VM a single processor.
#[test]
fn rule_one_processor() {
    let d = tempfile::tempdir().unwrap();
    let (_, _, code, said) = to_virtualpc(d.path(), 1, &["--cpus", "4", "--memory", "1G"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("4 processors become 1"), "{said}");
}

/// An IDE disk is seen up to 127 GiB: the VHD specification's CHS geometry for a disk caps at
/// 65535 cylinders x 16 heads x 255 sectors (Microsoft, "Virtual Hard Disk Image Format
/// Specification", appendix "CHS Calculation"), which is what Virtual PC's BIOS gives the
/// guest.
#[test]
fn rule_ide_disks_beyond_127_gib_warn() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.qcow2");
    run_ok(&["create", "-f", "qcow2", s(&big), "130G"]);
    let out = d.path().join("vpc");
    let (code, o, e) = run(&[
        "migrate",
        "--to",
        "virtualpc",
        "--memory",
        "1G",
        s(&big),
        s(&out),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    assert!(format!("{o}{e}").contains("127 GiB"), "{o}{e}");
}

/// Up to four NICs (Virtual PC 2007's Networking settings offer four adapters).
#[test]
fn rule_four_nics_at_most() {
    let d = tempfile::tempdir().unwrap();
    let mut args = vec!["--memory", "1G"];
    for _ in 0..5 {
        args.extend(["--nic", "e1000"]);
    }
    let (out, _, code, said) = to_virtualpc(d.path(), 1, &args);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("5 NICs"), "{said}");
    assert_eq!(written(&out).vm.nics.len(), 4);
}

/// An OVA (made by `migrate --to vsphere`) migrates `--to virtualpc` with identical disks.
#[test]
fn an_ova_migrates_to_virtualpc() {
    let test = "an_ova_migrates_to_virtualpc";
    if !have_qemu(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("a.raw");
    make_raw(&raw, 32 << 20, &[(0, 1 << 20), (20 << 20, 300_000)]);
    let ova = d.path().join("vm.ova");
    run_ok(&[
        "migrate",
        "--to",
        "vsphere",
        "--name",
        "xp",
        "--memory",
        "512M",
        "--os",
        "winxppro",
        "--nic",
        "e1000,mac=00:03:ff:0a:0b:0c",
        s(&raw),
        s(&ova),
    ]);
    let out = d.path().join("vpc");
    run_ok(&["migrate", "--to", "virtualpc", s(&ova), s(&out)]);
    assert!(qemu_compare("raw", &raw, "vpc", &out.join("xp-disk1.vhd")));
    let c = written(&out);
    assert_eq!(c.vm.memory_bytes, 512 << 20);
    assert_eq!(c.vm.nics[0].mac.as_deref(), Some("00:03:ff:0a:0b:0c"));
}
