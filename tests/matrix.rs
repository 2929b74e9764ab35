//! The migrate matrix (issue 14): every source kind to every `--to` target.
//!
//! One VM, two disks, two NICs with fixed MACs, UEFI, is built in every source kind `migrate`
//! reads: bare disks (the second a qcow2 over a raw base), Workstation and ESXi .vmx,
//! VirtualBox .vbox (the second disk a differencing VDI in `Snapshots/`), Virtual PC .vmc
//! (a differencing VHD), Hyper-V XML (written here, as diskferry writes no Hyper-V XML; a
//! differencing VHDX), libvirt XML and xl.cfg (a qcow2 over a qcow2 backing file), Proxmox
//! conf, OVAs in VMware's and VirtualBox's dialects, an OVF folder and an XVA. Each source is
//! made by diskferry itself from the base VM (or by hand, Hyper-V), then migrated to every
//! distinct `--to` target (`diskferry::migrate::target_names`, aliases once), and the result is
//! checked:
//!
//! - every disk's content is identical to the source's, by `qemu-img compare` on the written
//!   file (an OVA's disks after GNU tar extracts them; a Compute Engine disk after tar unpacks
//!   `disk.raw`), except an XVA's, which no peer here reads: diskferry's own XVA reader,
//!   whose chunks tests/xva_write.rs checks with Python's hashlib and xxhash;
//! - where the target's output describes the VM (every package and configuration format
//!   diskferry reads), it is read back and its name, CPU count, memory, firmware, NIC count,
//!   MACs, disk count and disk order equal the source's, or the migration warned about the
//!   field; a NIC model that changed is the target's own choice: writing the read-back
//!   machine to the same target again keeps it (the mapping is the writer's, not a copy
//!   here), and the migration said so when it was not a move to the guest's paravirtual
//!   model.
//!
//! Disks are a few MiB and sparse, pairs run on several threads, and outputs are not flushed
//! (`Durability::Unsafe`): the whole matrix takes seconds in release.

mod common;

use common::*;
use diskferry::gate::Gate;
use diskferry::host_file::Durability;
use diskferry::image::OpenOptions;
use diskferry::migrate::{
    Description, MigrateOptions, Source, SourceKind, Summary, Target, migrate, source_kind,
    target_names,
};
use diskferry::vm::{Firmware, Vm};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const NAME: &str = "matrix-vm";
const MACS: [&str; 2] = ["00:50:56:01:02:03", "00:50:56:01:02:04"];
const MEMORY: u64 = 2 << 30;
const CPUS: u32 = 2;
const MIB: u64 = 1 << 20;

/// The second disk's differencing layer: (byte, offset, length) written over its base, one
/// run overwriting the base's data, one where the base is empty.
const PATCH: [(u8, u64, u64); 2] = [(0x5a, MIB, 64 << 10), (0xa5, 2 * MIB, 192 << 10)];

fn open_options() -> OpenOptions {
    // The configurations written name their disks by absolute path (libvirt, xl).
    OpenOptions {
        gate: Gate::anywhere(),
        ..OpenOptions::default()
    }
}

fn options() -> MigrateOptions {
    MigrateOptions {
        durability: Durability::Unsafe,
        threads: Some(1),
        ..MigrateOptions::default()
    }
}

fn description() -> Description {
    Description {
        name: Some(NAME.into()),
        cpus: Some(CPUS),
        memory_bytes: Some(MEMORY),
        firmware: Some("uefi".into()),
        guest_os: Some("ubuntu-64".into()),
        nics: vec![
            format!("vmxnet3,mac={},network=LAN", MACS[0]),
            format!("e1000,mac={},network=Backup", MACS[1]),
        ],
        ..Description::default()
    }
}

/// The base content: disk 1 (8 MiB, data at both ends), disk 2's base (4 MiB) and disk 2
/// with [`PATCH`] over it.
struct Content {
    disk1: PathBuf,
    base2: PathBuf,
    patched2: PathBuf,
}

fn content(d: &Path) -> Content {
    let disk1 = d.join("disk1.raw");
    make_raw(&disk1, 8 * MIB, &[(0, MIB), (6 * MIB, MIB)]);
    let base2 = d.join("base2.raw");
    let f = std::fs::File::create(&base2).unwrap();
    f.set_len(4 * MIB).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&pseudo_random(256 << 10, 77), MIB).unwrap();
    let patched2 = d.join("patched2.raw");
    std::fs::copy(&base2, &patched2).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&patched2)
        .unwrap();
    for (byte, offset, len) in PATCH {
        f.write_all_at(&vec![byte; len as usize], offset).unwrap();
    }
    Content {
        disk1,
        base2,
        patched2,
    }
}

/// A source: what `migrate` is given, and each disk's expected content (raw).
struct Built {
    kind: &'static str,
    paths: Vec<PathBuf>,
    described: bool,
    expected: [PathBuf; 2],
    /// True when disk 2 is a differencing image over a base.
    differencing: bool,
}

fn open_source(b: &Built) -> Source {
    let desc = if b.described {
        description()
    } else {
        Description::default()
    };
    Source::open(&b.paths, &desc, &open_options())
        .unwrap_or_else(|e| panic!("source {}: {e}", b.kind))
}

/// The first file of a migration's output that describes a VM (a package or a configuration
/// format diskferry reads).
fn described_file(summary: &Summary) -> Option<PathBuf> {
    summary.files.iter().find_map(|f| {
        if !f.is_file() {
            return None;
        }
        match source_kind(f) {
            Ok(SourceKind::Disk) | Err(_) => None,
            Ok(_) => Some(f.clone()),
        }
    })
}

/// Replaces `from` by `to` in a configuration file, as text (UTF-8, or UTF-16LE with a BOM as
/// a .vmc is), at least once.
fn replace_in(file: &Path, from: &str, to: &str) {
    let bytes = std::fs::read(file).unwrap();
    let utf16 = bytes.starts_with(&[0xff, 0xfe]);
    let text = if utf16 {
        let units: Vec<u16> = bytes[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).unwrap()
    } else {
        String::from_utf8(bytes).unwrap()
    };
    assert!(
        text.contains(from),
        "{}: no '{from}' in:\n{text}",
        file.display()
    );
    let text = text.replace(from, to);
    let out = if utf16 {
        let mut b = vec![0xff, 0xfe];
        for u in text.encode_utf16() {
            b.extend_from_slice(&u.to_le_bytes());
        }
        b
    } else {
        text.into_bytes()
    };
    std::fs::write(file, out).unwrap();
}

/// Writes disk 2's differencing child over `base` (in `folder`, format `fmt`) with the
/// patched content; returns the child's file name. diskferry writes VDI, VHD, VHDX and qcow2
/// children (`convert -B`); a VMDK child is qemu-img's (monolithicSparse with a
/// parentFileNameHint, as Workstation's snapshots are) with the patch written by qemu-io.
fn child_of(folder: &Path, base: &str, base_fmt: &str, fmt: &str, c: &Content) -> String {
    let child = format!(
        "{}-child.{}",
        base.rsplit_once('.').unwrap().0,
        base.rsplit_once('.').unwrap().1
    );
    if fmt == "vmdk" {
        let st = Command::new("qemu-img")
            .current_dir(folder)
            .args([
                "create", "-q", "-f", "vmdk", "-b", base, "-F", "vmdk", &child,
            ])
            .status()
            .unwrap();
        assert!(st.success());
        for (byte, offset, len) in PATCH {
            let st = Command::new("qemu-io")
                .current_dir(folder)
                .args([
                    "-f",
                    "vmdk",
                    "-c",
                    &format!("write -q -P {byte} {offset} {len}"),
                    &child,
                ])
                .status()
                .unwrap();
            assert!(st.success());
        }
    } else {
        let out = diskferry()
            .current_dir(folder)
            .args(["convert", "-O", fmt, "-B", base, "-F", base_fmt])
            .arg(&c.patched2)
            .arg(&child)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child
}

/// A Hyper-V (version 5 XML) configuration of the VM: Generation 2, Secure Boot off, both
/// disks on the synthetic SCSI controller, two synthetic NICs with static MACs.
fn hyperv_xml(disks: [&str; 2]) -> Vec<u8> {
    let scsi = "3afc77d9-23ab-4c97-be1c-f47a18ce3b4a";
    let nics = [
        "761106cc-1c7c-42cd-b42d-fc1370654ef0",
        "761106cc-1c7c-42cd-b42d-fc1370654ef1",
    ];
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-16\" standalone=\"yes\"?>\r\n<configuration>\r\n",
    );
    x += &format!("  <_{scsi}_>\r\n    <controller0>\r\n");
    for (i, d) in disks.iter().enumerate() {
        x += &format!(
            "      <drive{i}>\r\n        <pathname type=\"string\">D:\\Hyper-V\\{NAME}\\Virtual Hard Disks\\{d}</pathname>\r\n        <type type=\"string\">VHD</type>\r\n      </drive{i}>\r\n"
        );
    }
    x += &format!("    </controller0>\r\n  </_{scsi}_>\r\n");
    for (guid, mac) in nics.iter().zip(MACS) {
        x += &format!(
            "  <_{guid}_>\r\n    <MacAddress type=\"string\">{}</MacAddress>\r\n    <MacAddressIsStatic type=\"bool\">True</MacAddressIsStatic>\r\n    <SwitchName type=\"string\">LAN</SwitchName>\r\n  </_{guid}_>\r\n",
            mac.replace(':', "-").to_uppercase()
        );
    }
    x += "  <_ac6b8dc1-3257-4a70-b1b2-a9c9215659ad_>\r\n    <secure_boot_enabled type=\"bool\">False</secure_boot_enabled>\r\n  </_ac6b8dc1-3257-4a70-b1b2-a9c9215659ad_>\r\n";
    x += "  <manifest>\r\n";
    let mut vdevs = vec![(
        scsi,
        "d422512d-2bf2-4752-809d-7b82b5fcb1b4",
        "Synthetic SCSI Controller",
    )];
    for n in nics {
        vdevs.push((
            n,
            "2fc216b0-d2e2-4967-9b6d-b8a5c9ca2778",
            "Synthetic Ethernet Port",
        ));
    }
    for (i, (instance, device, name)) in vdevs.iter().enumerate() {
        x += &format!(
            "    <vdev{:03}>\r\n      <device type=\"string\">{device}</device>\r\n      <instance type=\"string\">{}</instance>\r\n      <name type=\"string\">{name}</name>\r\n    </vdev{:03}>\r\n",
            i + 1,
            instance.to_uppercase(),
            i + 1
        );
    }
    x += "  </manifest>\r\n";
    x += &format!(
        "  <properties>\r\n    <name type=\"string\">{NAME}</name>\r\n    <subtype type=\"integer\">1</subtype>\r\n  </properties>\r\n  <settings>\r\n    <memory>\r\n      <bank>\r\n        <dynamic_memory_enabled type=\"bool\">False</dynamic_memory_enabled>\r\n        <size type=\"integer\">{}</size>\r\n      </bank>\r\n    </memory>\r\n    <processors>\r\n      <count type=\"integer\">{CPUS}</count>\r\n    </processors>\r\n  </settings>\r\n</configuration>\r\n",
        MEMORY >> 20
    );
    let mut b = vec![0xff, 0xfe];
    for u in x.encode_utf16() {
        b.extend_from_slice(&u.to_le_bytes());
    }
    b
}

/// Every source kind, built in `d`.
fn build_sources(d: &Path, c: &Content) -> Vec<Built> {
    let base = Source::open(
        &[c.disk1.clone(), c.base2.clone()],
        &description(),
        &open_options(),
    )
    .unwrap();
    let plain = || [c.disk1.clone(), c.base2.clone()];
    let patched = || [c.disk1.clone(), c.patched2.clone()];
    let mut out = Vec::new();
    // Bare disks: the second a qcow2 over its raw base.
    let bare = d.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(&c.base2, bare.join("base2.raw")).unwrap();
    let overlay = d
        .join("bare")
        .join(child_of(&bare, "base2.raw", "raw", "qcow2", c));
    out.push(Built {
        kind: "bare disks",
        paths: vec![c.disk1.clone(), overlay],
        described: true,
        expected: patched(),
        differencing: true,
    });
    // (kind, --to, the differencing format of disk 2, if the format has one here)
    let made: &[(&str, &str, Option<&str>)] = &[
        ("vmx (Workstation)", "vmx", Some("vmdk")),
        ("vmx (ESXi)", "esxi-vmx", None),
        ("vbox", "virtualbox-vbox", Some("vdi")),
        ("vmc", "virtualpc", Some("vhd")),
        ("libvirt", "kvm", Some("qcow2")),
        ("xl.cfg", "xen", Some("qcow2")),
        ("proxmox", "proxmox", None),
        ("OVA (VMware)", "vsphere", None),
        ("OVA (VirtualBox)", "virtualbox", None),
        ("OVF folder", "ovf", None),
        ("XVA", "xenserver", None),
    ];
    for &(kind, to, diff) in made {
        let target = Target::parse(to).unwrap();
        let dest = if target.is_package() {
            d.join(format!(
                "src-{to}.{}",
                if to == "xenserver" { "xva" } else { "ova" }
            ))
        } else {
            d.join(format!("src-{to}"))
        };
        let summary = migrate(&base, &dest, target, &options(), &mut |_| {})
            .unwrap_or_else(|e| panic!("building {kind}: {e}"));
        let file = described_file(&summary).unwrap_or_else(|| panic!("{kind}: no configuration"));
        let mut differencing = false;
        if let (Some(fmt), Target::Config(config)) = (diff, target) {
            let plan = config.disk_plan(&base.vm, NAME).unwrap();
            let base_name = &plan[1].file_name;
            let child = child_of(&dest, base_name, fmt, fmt, c);
            if fmt == "vdi" {
                vbox_snapshot(&dest, &file, base_name, &child);
            } else {
                replace_in(&file, base_name, &child);
            }
            differencing = true;
        }
        out.push(Built {
            kind,
            paths: vec![file],
            described: false,
            expected: if differencing { patched() } else { plain() },
            differencing,
        });
    }
    // Hyper-V: the configuration in `Virtual Machines/`, the disks in `Virtual Hard Disks/`,
    // the second a differencing VHDX.
    let hv = d.join("hyperv");
    let vms = hv.join("Virtual Machines");
    let vhds = hv.join("Virtual Hard Disks");
    std::fs::create_dir_all(&vms).unwrap();
    std::fs::create_dir_all(&vhds).unwrap();
    run_ok(&[
        "convert",
        "-O",
        "vhdx",
        s(&c.disk1),
        s(&vhds.join("system.vhdx")),
    ]);
    run_ok(&[
        "convert",
        "-O",
        "vhdx",
        s(&c.base2),
        s(&vhds.join("data.vhdx")),
    ]);
    let child = child_of(&vhds, "data.vhdx", "vhdx", "vhdx", c);
    let cfg = vms.join("4A3E6C1D-0000-4000-8000-000000000001.xml");
    std::fs::write(&cfg, hyperv_xml(["system.vhdx", &child])).unwrap();
    out.push(Built {
        kind: "Hyper-V XML",
        paths: vec![cfg],
        described: false,
        expected: patched(),
        differencing: true,
    });
    out
}

/// Makes a VirtualBox machine's second disk a differencing VDI in `Snapshots/`, as VirtualBox
/// keeps a snapshot's current state: the child is registered under its parent in the
/// MediaRegistry and attached in its place.
fn vbox_snapshot(folder: &Path, vbox: &Path, base_name: &str, child: &str) {
    let parent_uuid = uuid_of(&folder.join(base_name));
    let child_uuid = uuid_of(&folder.join(child));
    std::fs::create_dir_all(folder.join("Snapshots")).unwrap();
    let snap = format!("Snapshots/{{{child_uuid}}}.vdi");
    std::fs::rename(folder.join(child), folder.join(&snap)).unwrap();
    let text = std::fs::read_to_string(vbox).unwrap();
    let at = text
        .find(&format!("location=\"{base_name}\""))
        .expect("the parent in the MediaRegistry");
    let end = at + text[at..].find("/>").unwrap();
    let mut t = String::new();
    t += &text[..end];
    t += &format!(
        "><HardDisk uuid=\"{{{child_uuid}}}\" location=\"{snap}\" format=\"VDI\"/></HardDisk>"
    );
    t += &text[end + 2..];
    let attached = format!("<Image uuid=\"{{{parent_uuid}}}\"/>");
    assert!(t.contains(&attached), "{t}");
    let t = t.replace(&attached, &format!("<Image uuid=\"{{{child_uuid}}}\"/>"));
    std::fs::write(vbox, t).unwrap();
}

/// qemu-img's name for a registry format.
fn qemu_format(f: &str) -> &str {
    match f {
        "vhd" => "vpc",
        other => other,
    }
}

/// The disks a migration wrote, each as (qemu-img format, file), in the VM's order; files
/// inside archives are unpacked into `scratch`.
fn written_disks(
    source: &Source,
    summary: &Summary,
    target: Target,
    dest: &Path,
    scratch: &Path,
) -> Vec<(String, PathBuf)> {
    let n = source.vm.disks.len();
    let extract = |archive: &Path, member: &str, into: &Path| -> PathBuf {
        std::fs::create_dir_all(into).unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(into)
            .arg(member)
            .status()
            .unwrap();
        assert!(st.success(), "tar -xf {} {member}", archive.display());
        into.join(member)
    };
    match target {
        Target::Config(config) => config
            .disk_plan(&source.vm, NAME)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                // Some targets name disks by a fresh UUID (xenserver-vhd): the i-th written
                // file of the plan's extension (not an ESXi flat extent), in the VM's order.
                let ext = p.file_name.rsplit('.').next().unwrap().to_string();
                let file = summary
                    .files
                    .iter()
                    .filter(|f| {
                        let n = f.file_name().unwrap().to_string_lossy();
                        n.ends_with(&format!(".{ext}")) && !n.ends_with("-flat.vmdk")
                    })
                    .nth(i)
                    .cloned()
                    .unwrap_or_else(|| dest.join(&p.file_name));
                if p.file_name.ends_with(".tar.gz") {
                    (
                        "raw".to_string(),
                        extract(&file, "disk.raw", &scratch.join(format!("gcp{i}"))),
                    )
                } else {
                    (qemu_format(p.format).to_string(), file)
                }
            })
            .collect(),
        Target::Ovf => (1..=n)
            .map(|i| ("vmdk".into(), dest.join(format!("{NAME}-disk{i}.vmdk"))))
            .collect(),
        Target::Disks => (1..=n)
            .map(|i| ("qcow2".into(), dest.join(format!("{NAME}-disk{i}.qcow2"))))
            .collect(),
        Target::XenServer if !diskferry::migrate::is_ova_name(dest) => (0..n)
            .map(|i| {
                // No peer here reads an XVA: diskferry's reader, each chunk verified.
                let raw = scratch.join(format!("xva-disk{i}.raw"));
                run_ok(&[
                    "convert",
                    "--disk",
                    &i.to_string(),
                    "-O",
                    "raw",
                    s(dest),
                    s(&raw),
                ]);
                ("raw".into(), raw)
            })
            .collect(),
        _ => {
            let ext = if target == Target::XenServer {
                "vhd"
            } else {
                "vmdk"
            };
            (1..=n)
                .map(|i| {
                    let member = format!("{NAME}-disk{i}.{ext}");
                    (
                        qemu_format(ext).to_string(),
                        extract(dest, &member, &scratch.join("ova")),
                    )
                })
                .collect()
        }
    }
}

fn warned(summary: &Summary, words: &[&str]) -> bool {
    summary.warnings.iter().any(|w| {
        let w = w.to_ascii_lowercase();
        words.iter().any(|k| w.contains(k))
    })
}

/// Checks one pair; returns what is wrong, one line each.
fn check_pair(built: &Built, to: &str, target: Target, scratch: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let source = open_source(built);
    let dest = if target.is_package() {
        scratch.join(if target == Target::XenServer && to.ends_with(".ova") {
            "out.ova"
        } else if target == Target::XenServer {
            "out.xva"
        } else {
            "out.ova"
        })
    } else {
        scratch.join("out")
    };
    let summary = match migrate(&source, &dest, target, &options(), &mut |_| {}) {
        Ok(s) => s,
        Err(e) => return vec![format!("migrate failed: {e}")],
    };
    // Disk content, by qemu-img where it reads the format.
    let disks = written_disks(&source, &summary, target, &dest, scratch);
    if disks.len() != 2 {
        bad.push(format!("{} disks written", disks.len()));
    }
    for (i, (fmt, file)) in disks.iter().enumerate() {
        if !file.is_file() {
            bad.push(format!("disk {} not written as {}", i + 1, file.display()));
            continue;
        }
        if !qemu_compare("raw", &built.expected[i], fmt, file) {
            bad.push(format!("disk {} ({fmt}) differs from the source", i + 1));
        }
    }
    // The model, where the output describes the VM.
    let Some(described) = described_file(&summary) else {
        return bad;
    };
    let back = match Source::open(
        std::slice::from_ref(&described),
        &Description::default(),
        &open_options(),
    ) {
        Ok(b) => b,
        Err(e) => {
            bad.push(format!("reading back {}: {e}", described.display()));
            return bad;
        }
    };
    let (a, b) = (&source.vm, &back.vm);
    let mut field = |same: bool, what: &str, words: &[&str], shown: String| {
        if !same && !warned(&summary, words) {
            bad.push(format!(
                "{what} changed without a warning: {shown}; warnings: {:?}",
                summary.warnings
            ));
        }
    };
    field(
        a.name == b.name,
        "name",
        &["name"],
        format!("{} -> {}", a.name, b.name),
    );
    field(
        a.cpus.count == b.cpus.count,
        "CPU count",
        &["cpu", "processor"],
        format!("{} -> {}", a.cpus.count, b.cpus.count),
    );
    field(
        a.memory_bytes == b.memory_bytes,
        "memory",
        &["memory"],
        format!("{} -> {}", a.memory_bytes, b.memory_bytes),
    );
    let uefi = |vm: &Vm| matches!(vm.firmware, Firmware::Uefi { .. });
    field(
        uefi(a) == uefi(b),
        "firmware",
        &["uefi", "firmware"],
        format!("{} -> {}", a.firmware, b.firmware),
    );
    field(
        a.nics.len() == b.nics.len(),
        "NIC count",
        &["nic", "adapter", "network"],
        format!("{} -> {}", a.nics.len(), b.nics.len()),
    );
    for (i, (x, y)) in a.nics.iter().zip(&b.nics).enumerate() {
        field(
            x.mac == y.mac,
            &format!("NIC {} MAC", i + 1),
            &["mac"],
            format!("{:?} -> {:?}", x.mac, y.mac),
        );
    }
    if back.disks.len() != 2 {
        bad.push(format!("{} disks read back", back.disks.len()));
    }
    // Disk order: each disk read back has the size of the source's disk at its index.
    for (i, (x, y)) in source.disks.iter().zip(&back.disks).enumerate() {
        if y.virtual_size() < x.virtual_size() {
            bad.push(format!(
                "disk {} read back of {} bytes, the source's is {}",
                i + 1,
                y.virtual_size(),
                x.virtual_size()
            ));
        }
    }
    bad.extend(nic_models_are_the_targets(
        &summary, &source, &back, target, &dest, scratch,
    ));
    bad
}

/// A NIC model that changed is the target's choice: migrating the read-back machine to the
/// same target keeps it (a fixed point of the writer's own mapping, so no table is copied
/// here); a change to a model other than virtio was warned about.
fn nic_models_are_the_targets(
    summary: &Summary,
    source: &Source,
    back: &Source,
    target: Target,
    first: &Path,
    scratch: &Path,
) -> Vec<String> {
    let mut bad = Vec::new();
    let changed: Vec<usize> = (0..source.vm.nics.len().min(back.vm.nics.len()))
        .filter(|&i| source.vm.nics[i].model != back.vm.nics[i].model)
        .collect();
    if changed.is_empty() {
        return bad;
    }
    for &i in &changed {
        let (from, to) = (&source.vm.nics[i].model, &back.vm.nics[i].model);
        let paravirt = to.to_string() == "virtio" || to.to_string() == "netvsc";
        if !paravirt && !warned(summary, &[&from.to_string(), "nic", "adapter", "network"]) {
            bad.push(format!(
                "NIC {} model {from} -> {to} without a warning: {:?}",
                i + 1,
                summary.warnings
            ));
        }
    }
    let dest = match first.extension() {
        Some(ext) => scratch.join("again").with_extension(ext),
        None => scratch.join("again"),
    };
    let again = match migrate(back, &dest, target, &options(), &mut |_| {}) {
        Ok(s) => s,
        Err(e) => return vec![format!("migrating the read-back VM again: {e}")],
    };
    let Some(file) = described_file(&again) else {
        return vec!["the second migration describes no VM".into()];
    };
    match Source::open(&[file], &Description::default(), &open_options()) {
        Ok(twice) => {
            for &i in &changed {
                if twice.vm.nics.get(i).map(|n| &n.model) != Some(&back.vm.nics[i].model) {
                    bad.push(format!(
                        "NIC {} model is not the target's own: {} -> {} -> {:?}",
                        i + 1,
                        source.vm.nics[i].model,
                        back.vm.nics[i].model,
                        twice.vm.nics.get(i).map(|n| n.model.to_string())
                    ));
                }
            }
        }
        Err(e) => bad.push(format!("reading the second migration back: {e}")),
    }
    bad
}

/// Each distinct target once (aliases parse to the same target), plus `xenserver` to a
/// destination named `.ova` (XenCenter's OVA instead of an XVA).
fn targets() -> Vec<(String, Target)> {
    let mut out: Vec<(String, Target)> = Vec::new();
    for name in target_names() {
        let t = Target::parse(name).unwrap();
        if !out.iter().any(|(_, u)| *u == t) {
            out.push((name.to_string(), t));
        }
    }
    out.push(("xenserver.ova".into(), Target::XenServer));
    out
}

#[test]
fn every_source_kind_migrates_to_every_target() {
    let test = "every_source_kind_migrates_to_every_target";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = content(d);
    let sources = build_sources(d, &c);
    // Every source reads as the VM it was made from, before any pair runs.
    for b in &sources {
        let src = open_source(b);
        assert_eq!(src.vm.name, NAME, "{}", b.kind);
        assert_eq!(src.disks.len(), 2, "{}", b.kind);
        assert_eq!(src.vm.nics.len(), 2, "{}", b.kind);
        let macs: Vec<_> = src.vm.nics.iter().map(|n| n.mac.as_deref()).collect();
        assert_eq!(macs, MACS.map(Some), "{}", b.kind);
    }
    // `info` of every configuration shows its VM when the disks are elsewhere (a Proxmox
    // conf names storage volumes only its host resolves), each disk listed as not found.
    for b in sources.iter().filter(|b| !b.described) {
        let file = &b.paths[0];
        let Ok(SourceKind::Config(_)) = source_kind(file) else {
            continue;
        };
        let alone = d.join("alone").join(b.kind.replace([' ', '(', ')'], "_"));
        std::fs::create_dir_all(&alone).unwrap();
        let copy = alone.join(file.file_name().unwrap());
        std::fs::copy(file, &copy).unwrap();
        let json = info_json(&copy);
        assert_eq!(json["vm"]["name"], NAME, "{}", b.kind);
        let located = json["disk_locations"].as_array().unwrap();
        assert_eq!(located.len(), 2, "{}: {json}", b.kind);
        // Each disk is listed: not found beside the lone copy, or (libvirt and xl name
        // disks by absolute path) found where the configuration says, outside it.
        let missing = located
            .iter()
            .filter(|l| l["found"].is_null() && !l["tried"].as_array().unwrap().is_empty())
            .count();
        let elsewhere = located
            .iter()
            .filter(|l| {
                l["found"]
                    .as_str()
                    .is_some_and(|f| !Path::new(f).starts_with(&alone))
            })
            .count();
        assert_eq!(missing + elsewhere, 2, "{}: {json}", b.kind);
        assert!(missing == 2 || elsewhere == 2, "{}: {json}", b.kind);
        let text = run_ok(&["info", s(&copy)]);
        assert_eq!(
            text.matches("; not found (looked for ").count(),
            missing,
            "{}: {text}",
            b.kind
        );
        // Where they are, they are found.
        let json = info_json(file);
        assert!(
            json["disk_locations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["found"].is_string()),
            "{}: {json}",
            b.kind
        );
    }
    assert_eq!(
        sources.iter().filter(|b| b.differencing).count(),
        7,
        "differencing second disks"
    );
    let targets = targets();
    // Every pair, `gcp` included: its disks are whole GiB, but sparse members of the archive,
    // so only their data is gzipped and extracted.
    let pairs: Vec<(usize, usize)> = (0..sources.len())
        .flat_map(|a| (0..targets.len()).map(move |b| (a, b)))
        .collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(a, b)) = pairs.get(k) else {
                        break;
                    };
                    let (name, target) = &targets[b];
                    let scratch = d.join(format!("pair-{a}-{b}"));
                    std::fs::create_dir_all(&scratch).unwrap();
                    let bad = check_pair(&sources[a], name, *target, &scratch);
                    let _ = std::fs::remove_dir_all(&scratch);
                    if !bad.is_empty() {
                        failures.lock().unwrap().push(format!(
                            "{} -> {name}:\n    {}",
                            sources[a].kind,
                            bad.join("\n    ")
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} pairs failed:\n{}",
        failures.len(),
        pairs.len(),
        failures.join("\n")
    );
}
