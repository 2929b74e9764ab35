//! Hyper-V configurations: every corpus file reads with the values its MANIFEST.tsv row
//! documents, the XML (version 5) and .vmcx saves of the same VMs agree, the .vmcx reader
//! agrees key by key with an independent one (dissect.hypervisor), the host's data.vmcx and a
//! .vmrs are refused, malformed files are one clear error; `--to hyperv` writes VHDX disks
//! identical to the source (`qemu-img compare`) and a PowerShell script that tree-sitter's
//! PowerShell grammar parses, whose cmdlets carry the parameters Microsoft documents (one
//! test per cmdlet, citing its page); a Hyper-V configuration migrates to KVM.

mod common;

use common::*;
use diskferry::vm::{ControllerKind, Firmware, NicModel};
use diskferry::vmconfig::hyperv::{self, tree::Node, tree::Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const DIR: &str = "corpus/configs/hyperv";
const GEN1_XML: &str = "dissect-target-B90AC31B-C6F8-479F-9B91-07B894A6A3F6.xml";
const GEN2_XML: &str = "dissect-target-D351C151-DAC7-4042-B434-B72D522C1E4A.xml";
const GEN1_VMCX: &str = "dissect-target-EC04F346-DB96-4700-AF5B-77B3C56C38BD.vmcx";
const GEN2_VMCX: &str = "dissect-target-993F7B33-6057-4D1E-A1FE-A1A1D77BE974.vmcx";
const OTHER_VMCX: &str = "dissect-test.vmcx";
const HOST_DATA: &str = "dissect-target-child-data.vmcx";
const VMRS: &str = "dissect-test.VMRS";

fn read(shared: &Path, file: &str) -> diskferry::vmconfig::ConfigVm {
    let bytes = std::fs::read(shared.join(DIR).join(file)).unwrap();
    assert!(hyperv::probe(&bytes[..bytes.len().min(4096)]), "{file}");
    hyperv::parse(&bytes, file).unwrap_or_else(|e| panic!("{e}"))
}

/// (file, name, firmware, disk path, disk bus, memory MiB, CPUs, NICs, CDs)
type Row = (
    &'static str,
    &'static str,
    Firmware,
    &'static str,
    ControllerKind,
    u64,
    u32,
    usize,
    usize,
);

/// Each VM file with its MANIFEST.tsv facts: name, generation (UEFI), secure boot, the disk's
/// stored path and bus, memory, processors, NICs.
#[test]
fn corpus_hyperv_configs_read_with_manifest_values() {
    let Some(shared) = shared_dir("corpus_hyperv_configs_read_with_manifest_values") else {
        return;
    };
    // (file, name, firmware, disk path, disk bus, memory MiB, CPUs, NICs, CDs)
    let rows: &[Row] = &[
        (
            GEN1_XML,
            "Default Generation 1",
            Firmware::Bios,
            r"C:\Disks\Default Generation 1.vhdx",
            ControllerKind::Ide,
            512,
            1,
            1,
            1,
        ),
        (
            GEN2_XML,
            "Default Generation 2",
            Firmware::Uefi { secure_boot: true },
            r"C:\Disks\Default Generation 2.vhdx",
            ControllerKind::Scsi(diskferry::vm::ScsiModel::LsiSas),
            512,
            1,
            1,
            0,
        ),
        (
            GEN1_VMCX,
            "Default Generation 1",
            Firmware::Bios,
            r"C:\Disks\Default Generation 1.vhdx",
            ControllerKind::Ide,
            1024,
            1,
            1,
            1,
        ),
        (
            GEN2_VMCX,
            "Default Generation 2",
            Firmware::Uefi { secure_boot: true },
            r"C:\Disks\Default Generation 2.vhdx",
            ControllerKind::Scsi(diskferry::vm::ScsiModel::LsiSas),
            1024,
            1,
            1,
            0,
        ),
        (
            OTHER_VMCX,
            "Other Location",
            Firmware::Bios,
            r"C:\Users\Public\Documents\Hyper-V\Virtual Hard Disks\Other Location.vhdx",
            ControllerKind::Ide,
            1024,
            1,
            1,
            1,
        ),
    ];
    // corpus/configs/MANIFEST.tsv: path, kind, made_by, ...
    let listed: BTreeSet<String> =
        std::fs::read_to_string(shared.join("corpus/configs/MANIFEST.tsv"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split('\t').next()?.strip_prefix("hyperv/"))
            .map(str::to_string)
            .collect();
    let mut covered: BTreeSet<String> = rows.iter().map(|r| r.0.to_string()).collect();
    covered.insert(HOST_DATA.into());
    covered.insert(VMRS.into());
    assert_eq!(
        listed, covered,
        "every corpus Hyper-V file has its row here"
    );
    for &(file, name, firmware, disk, bus, mib, cpus, nics, cds) in rows {
        let c = read(&shared, file);
        let vm = &c.vm;
        assert_eq!(vm.name, name, "{file}");
        assert_eq!(vm.firmware, firmware, "{file}");
        assert_eq!(c.disk_files, vec![disk.to_string()], "{file}");
        assert_eq!(vm.disks.len(), 1, "{file}");
        assert_eq!(vm.disks[0].controller.kind, bus, "{file}");
        assert_eq!(
            (vm.disks[0].controller.index, vm.disks[0].unit),
            (0, 0),
            "{file}"
        );
        assert_eq!(vm.memory_bytes, mib << 20, "{file}");
        assert_eq!(vm.cpus.count, cpus, "{file}");
        assert_eq!(vm.nics.len(), nics, "{file}");
        assert_eq!(vm.cdroms.len(), cds, "{file}");
        for n in &vm.nics {
            // All zeros with MacAddressIsStatic False: Hyper-V assigns one at start.
            assert_eq!(n.mac, None, "{file}");
            assert_eq!(n.model, NicModel::Netvsc, "{file}");
            assert_eq!(n.network, None, "{file}: no switch");
        }
        if cds == 1 {
            // The empty DVD drive Hyper-V puts on IDE 1:0.
            assert_eq!(vm.cdroms[0].controller.index, 1, "{file}");
            assert_eq!(vm.cdroms[0].unit, 0, "{file}");
        }
    }
}

/// The XML (2012 R2) and .vmcx (Windows 10) saves of "Default Generation 1" and "Default
/// Generation 2" agree on everything but memory, which the VMs' owner changed between the two
/// saves (512 and 1024 MiB in the files themselves).
#[test]
fn xml_and_vmcx_of_the_same_vm_agree() {
    let Some(shared) = shared_dir("xml_and_vmcx_of_the_same_vm_agree") else {
        return;
    };
    for (xml, vmcx) in [(GEN1_XML, GEN1_VMCX), (GEN2_XML, GEN2_VMCX)] {
        let a = read(&shared, xml);
        let b = read(&shared, vmcx);
        assert_eq!(a.disk_files, b.disk_files);
        let (mut va, mut vb) = (a.vm.clone(), b.vm.clone());
        va.memory_bytes = 0;
        vb.memory_bytes = 0;
        va.warnings.clear();
        vb.warnings.clear();
        assert_eq!(va, vb, "{xml} and {vmcx}");
    }
}

/// Every typed leaf of a tree as `path=value` lines; those under a key that has a sibling of
/// the same name (which a Python dict, as dissect builds, collapses to one) also go to
/// `ambiguous`.
fn leaves(
    node: &Node,
    prefix: &str,
    dup: bool,
    out: &mut BTreeSet<String>,
    ambiguous: &mut BTreeSet<String>,
) {
    for c in &node.children {
        let path = if prefix.is_empty() {
            c.name.clone()
        } else {
            format!("{prefix}/{}", c.name)
        };
        let dup = dup || node.children.iter().filter(|o| o.name == c.name).count() > 1;
        let line = match &c.value {
            Value::Str(v) => Some(format!("{path}={v}")),
            Value::Int(v) => Some(format!("{path}={v}")),
            Value::Bool(v) => Some(format!("{path}={v}")),
            Value::None => None,
        };
        if let Some(line) = line {
            if dup {
                ambiguous.insert(line.clone());
            }
            out.insert(line);
        }
        leaves(c, &path, dup, out, ambiguous);
    }
}

const DISSECT_DUMP: &str = r#"
import sys
from dissect.hypervisor.descriptor.hyperv import HyperVFile
f = HyperVFile(open(sys.argv[1], "rb"))
def walk(d, prefix):
    for k, v in d.items():
        p = prefix + "/" + k if prefix else k
        if isinstance(v, dict):
            walk(v, p)
        elif isinstance(v, bool):
            print(p + "=" + ("true" if v else "false"))
        elif isinstance(v, int):
            print(p + "=" + str(v))
        elif isinstance(v, str):
            print(p + "=" + v.rstrip("\0"))
walk(f.as_dict(), "")
"#;

/// Our .vmcx reader and dissect.hypervisor's (fox-it, pure Python, an independent reading of
/// VmDataStore.dll's format) see the same keys with the same values, in every corpus store.
#[test]
fn vmcx_reads_as_dissect_does() {
    let test = "vmcx_reads_as_dissect_does";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let env = shared.join("tools/oracle-env");
    let py = match Command::new(&env).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        other => {
            skip(
                test,
                &format!("the oracle venv is not available: {other:?}"),
            );
            return;
        }
    };
    for file in [GEN1_VMCX, GEN2_VMCX, OTHER_VMCX, HOST_DATA, VMRS] {
        let path = shared.join(DIR).join(file);
        let out = Command::new(&py)
            .args(["-c", DISSECT_DUMP, s(&path)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dissect failed on {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: BTreeSet<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let tree = hyperv::vmcx::parse(&std::fs::read(&path).unwrap(), file).unwrap();
        let (mut ours, mut ambiguous) = (BTreeSet::new(), BTreeSet::new());
        leaves(&tree, "", false, &mut ours, &mut ambiguous);
        assert!(
            theirs.len() > 10,
            "{file}: dissect saw {} keys",
            theirs.len()
        );
        let missing: Vec<_> = theirs.difference(&ours).take(5).collect();
        let extra: Vec<_> = ours
            .difference(&theirs)
            .filter(|l| !ambiguous.contains(*l))
            .take(5)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{file}: only dissect has {missing:?}; only we have {extra:?}"
        );
    }
}

/// The host's VM registry (data.vmcx) and a runtime-state file (.vmrs) are not VMs: one
/// clear error each, naming the file.
#[test]
fn host_registry_and_runtime_state_are_refused() {
    let Some(shared) = shared_dir("host_registry_and_runtime_state_are_refused") else {
        return;
    };
    for (file, says) in [(HOST_DATA, "data.vmcx"), (VMRS, ".vmrs")] {
        let bytes = std::fs::read(shared.join(DIR).join(file)).unwrap();
        assert!(hyperv::probe(&bytes), "{file} is a Hyper-V store");
        let e = hyperv::parse(&bytes, file).unwrap_err().to_string();
        assert!(e.starts_with(file) && e.contains(says), "{file}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

fn utf16(text: &str) -> Vec<u8> {
    let mut b = vec![0xff, 0xfe];
    for u in text.encode_utf16() {
        b.extend(u.to_le_bytes());
    }
    b
}

/// Malformed files: truncated and corrupted .vmcx, bad UTF-16, XML entities, huge values:
/// one error line naming the file, no panic.
#[test]
fn malformed_configurations_are_one_clear_error() {
    let Some(shared) = shared_dir("malformed_configurations_are_one_clear_error") else {
        return;
    };
    let good = std::fs::read(shared.join(DIR).join(GEN1_VMCX)).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [5, 100, 0x1000, 0x2004, 0x2100, 0x3100, good.len() - 1] {
        cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    let mut huge = good.clone();
    huge[0x2004..0x2008].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("huge object count".into(), huge));
    let mut far = good.clone();
    // The first object entry's offset points far past the end.
    far[0x2008 + 5..0x2008 + 13].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("object offset past the end".into(), far));
    let mut big_entry = good.clone();
    // The first key entry of the first key table claims 4 GiB.
    big_entry[0x3000 + 10 + 2..0x3000 + 10 + 6].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("key entry larger than its table".into(), big_entry));
    let mut bad = utf16(
        "<configuration><properties><name type=\"string\">x</name></properties></configuration>",
    );
    bad.extend(0xdc00u16.to_le_bytes());
    cases.push(("unpaired surrogate".into(), bad));
    cases.push(("odd UTF-16 length".into(), {
        let mut b = utf16("<configuration/>");
        b.push(b'x');
        b
    }));
    cases.push((
        "entity".into(),
        utf16("<?xml version=\"1.0\"?><!DOCTYPE c [<!ENTITY a \"aaaa\">]><configuration>&a;</configuration>"),
    ));
    cases.push((
        "memory out of range".into(),
        utf16("<configuration><properties><name type=\"string\">x</name></properties><settings><memory><bank><size type=\"integer\">99999999999999999999</size></bank></memory></settings></configuration>"),
    ));
    // Read, but more memory than any hypervisor gives a VM (40000000 MiB): the model's bounds.
    cases.push((
        "memory beyond any hypervisor".into(),
        utf16("<configuration><properties><name type=\"string\">x</name></properties><settings><memory><bank><size type=\"integer\">40000000</size></bank></memory></settings></configuration>"),
    ));
    cases.push((
        "not an integer".into(),
        utf16("<configuration><properties><subtype type=\"integer\">two</subtype></properties><settings/></configuration>"),
    ));
    // Found by hyperv_parse: quoted text with line breaks kept the error from being one line.
    cases.push((
        "a line break in a bad value".into(),
        utf16("<configuration><properties><subtype type=\"integer\">1\n2</subtype></properties><settings/></configuration>"),
    ));
    cases.push((
        "a line break in a mismatched end tag".into(),
        utf16("<configuration><properties></propertie\ns></configuration>"),
    ));
    cases.push((
        "unknown generation".into(),
        utf16("<configuration><properties><subtype type=\"integer\">7</subtype></properties><settings/></configuration>"),
    ));
    for (what, bytes) in cases {
        let e = hyperv::parse(&bytes, "bad.vmcx")
            .map(|_| refused_by_info_and_migrate("bad.vmcx", &bytes))
            .unwrap_or_else(|e| e.to_string());
        assert!(e.starts_with("bad.vmcx"), "{what}: {e}");
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
        if what == "memory beyond any hypervisor" {
            assert!(e.contains("the VM's memory (41943040000000 bytes)"), "{e}");
        }
    }
}

/// A folder holding a Hyper-V VM as Hyper-V lays it out: the configuration in
/// `Virtual Machines/` and its disk, named as the configuration names it, in
/// `Virtual Hard Disks/` beside it.
fn hyperv_folder(shared: &Path, d: &Path, config: &str, disk_name: &str) -> (PathBuf, PathBuf) {
    let vms = d.join("vm/Virtual Machines");
    let disks = d.join("vm/Virtual Hard Disks");
    std::fs::create_dir_all(&vms).unwrap();
    std::fs::create_dir_all(&disks).unwrap();
    let cfg = vms.join(config);
    std::fs::copy(shared.join(DIR).join(config), &cfg).unwrap();
    let raw = d.join("content.raw");
    make_raw(&raw, 48 << 20, &[(0, 1 << 20), (40 << 20, 3 << 20)]);
    let disk = disks.join(disk_name);
    run_ok(&["convert", "-O", "vhdx", s(&raw), s(&disk)]);
    (cfg, raw)
}

/// A Generation 1 Hyper-V VM (its .vmcx, the disk found in `..\Virtual Hard Disks\` by its
/// file name) migrates to KVM with identical content; under --confine the sibling folder is
/// out of bounds: one clear error.
#[test]
fn a_hyperv_vm_migrates_to_kvm() {
    let test = "a_hyperv_vm_migrates_to_kvm";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    if !have_qemu(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (cfg, raw) = hyperv_folder(&shared, d.path(), GEN1_VMCX, "Default Generation 1.vhdx");
    let out = d.path().join("kvm");
    let (code, stdout, err) = run(&["migrate", "--to", "kvm", s(&cfg), s(&out)]);
    assert_eq!(code, 0, "{stdout}{err}");
    let xml = std::fs::read_to_string(out.join("Default_Generation_1.xml")).unwrap();
    assert!(xml.contains("<name>Default Generation 1</name>"), "{xml}");
    assert!(xml.contains("<memory unit='KiB'>1048576</memory>"), "{xml}");
    assert!(qemu_compare(
        "raw",
        &raw,
        "qcow2",
        &out.join("Default_Generation_1-disk1.qcow2")
    ));
    let (code, _, err) = run(&[
        "migrate",
        "--confine",
        "--to",
        "kvm",
        s(&cfg),
        s(&d.path().join("kvm2")),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("refused") && err.contains(".."), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!d.path().join("kvm2").exists());
}

fn have_ps_parser(test: &str) -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/ps-venv/bin/python");
    let ok = py.is_file()
        && Command::new(&py)
            .args(["-c", "import tree_sitter, tree_sitter_powershell"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        Some(py)
    } else {
        skip(
            test,
            "the PowerShell parser is not installed (tests/hyperv_support/install-peers)",
        );
        None
    }
}

/// One command of the script as the PowerShell grammar parsed it.
#[derive(Debug)]
struct Cmd {
    name: String,
    args: Vec<(Option<String>, Option<String>)>,
}

impl Cmd {
    fn param(&self, p: &str) -> Option<Option<&str>> {
        self.args
            .iter()
            .find(|(k, _)| k.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(p)))
            .map(|(_, v)| v.as_deref())
    }
}

/// Parses `script` with tree-sitter's PowerShell grammar: its commands, or a panic with the
/// syntax error.
fn parse_ps(py: &Path, script: &Path) -> Vec<Cmd> {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hyperv_support/ps_check.py");
    let out = Command::new(py).arg(helper).arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "the script does not parse: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Cmd {
                name: v["command"].as_str().unwrap_or("").to_string(),
                args: v["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        (
                            a[0].as_str().map(str::to_string),
                            a[1].as_str().map(str::to_string),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Two bare disks with a described VM migrated `--to hyperv`; the output folder, the script's
/// parsed commands and the migrate output.
fn to_hyperv(
    d: &Path,
    firmware: &str,
    extra: &[&str],
    name: &str,
) -> (PathBuf, Vec<PathBuf>, String) {
    let a = d.join("system.raw");
    make_raw(&a, 64 << 20, &[(0, 2 << 20), (60 << 20, 1 << 20)]);
    let b = d.join("data.raw");
    make_raw(&b, 16 << 20, &[(5 << 20, 100_000)]);
    let out = d.join("hv");
    let mut args = vec![
        "migrate",
        "--to",
        "hyperv",
        "--name",
        name,
        "--cpus",
        "4",
        "--memory",
        "3001M",
        "--firmware",
        firmware,
        "--nic",
        "e1000,mac=00:15:5d:01:02:03,network=LAN",
        "--nic",
        "vmxnet3",
    ];
    args.extend_from_slice(extra);
    args.extend([s(&a), s(&b), s(&out)]);
    let (code, stdout, err) = run(&args);
    assert_eq!(code, 0, "{stdout}{err}");
    (out, vec![a, b], format!("{stdout}{err}"))
}

fn script_of(out: &Path) -> PathBuf {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ps1"))
        .expect("a .ps1")
}

/// The disks arrive identical as VHDX, the script parses as PowerShell, and the output says
/// what it could not carry.
#[test]
fn to_hyperv_writes_identical_vhdx_disks_and_a_script_that_parses() {
    let test = "to_hyperv_writes_identical_vhdx_disks_and_a_script_that_parses";
    if !have_qemu(test) {
        return;
    }
    let Some(py) = have_ps_parser(test) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (out, sources, said) = to_hyperv(d.path(), "uefi-secure", &["--os", "ubuntu-64"], "web01");
    for (i, src) in sources.iter().enumerate() {
        let vhdx = out.join(format!("web01-disk{}.vhdx", i + 1));
        assert!(qemu_compare("raw", src, "vhdx", &vhdx), "disk {}", i + 1);
    }
    let cmds = parse_ps(&py, &script_of(&out));
    let names: Vec<&str> = cmds.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names[0], "New-VM", "{names:?}");
    assert!(said.contains("rounded up to 3002 MiB"), "{said}");
    assert!(said.contains("'LAN'"), "{said}");
    assert!(said.contains("become Hyper-V synthetic adapters"), "{said}");
}

fn cmd<'a>(cmds: &'a [Cmd], name: &str) -> Vec<&'a Cmd> {
    cmds.iter()
        .filter(|c| c.name.eq_ignore_ascii_case(name))
        .collect()
}

/// New-VM: -Name (the VM's name, quoted), -Generation 2 for UEFI and 1 for BIOS,
/// -MemoryStartupBytes in bytes (a multiple of 2 MiB), -VHDPath of the boot disk relative to
/// the script. Source: https://learn.microsoft.com/powershell/module/hyper-v/new-vm
#[test]
fn new_vm_parameters() {
    let test = "new_vm_parameters";
    let Some(py) = have_ps_parser(test) else {
        return;
    };
    for (firmware, generation) in [("uefi", "2"), ("bios", "1")] {
        let d = tempfile::tempdir().unwrap();
        let (out, _, _) = to_hyperv(d.path(), firmware, &[], "web01");
        let cmds = parse_ps(&py, &script_of(&out));
        let new = cmd(&cmds, "New-VM");
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].param("-Name"), Some(Some("'web01'")));
        assert_eq!(new[0].param("-Generation"), Some(Some(generation)));
        assert_eq!(
            new[0].param("-MemoryStartupBytes"),
            Some(Some("3147825152"))
        );
        assert_eq!(3147825152u64 % (2 << 20), 0);
        assert_eq!(
            new[0].param("-VHDPath"),
            Some(Some("(Join-Path $PSScriptRoot 'web01-disk1.vhdx')"))
        );
        assert_eq!(new[0].param("-NoVHD"), None);
    }
}

/// Add-VMHardDiskDrive: -ControllerType SCSI|IDE, -ControllerNumber, -ControllerLocation,
/// -Path. Generation 2 boots from SCSI 0:0 (New-VM -VHDPath puts it there) and the second
/// disk goes to SCSI 0:1; Generation 1 boots from IDE 0:0 and the second disk goes to IDE 0:1
/// (IDE 1:0 holds the DVD drive New-VM adds). Source:
/// https://learn.microsoft.com/powershell/module/hyper-v/add-vmharddiskdrive and
/// https://learn.microsoft.com/windows-server/virtualization/hyper-v/plan/should-i-create-a-generation-1-or-2-virtual-machine-in-hyper-v
/// ("Generation 2 ... boot from a SCSI virtual hard disk"; Generation 1 boots from IDE).
#[test]
fn add_vmharddiskdrive_parameters() {
    let test = "add_vmharddiskdrive_parameters";
    let Some(py) = have_ps_parser(test) else {
        return;
    };
    for (firmware, bus, location) in [("uefi", "SCSI", "1"), ("bios", "IDE", "1")] {
        let d = tempfile::tempdir().unwrap();
        let (out, _, _) = to_hyperv(d.path(), firmware, &[], "web01");
        let cmds = parse_ps(&py, &script_of(&out));
        let add = cmd(&cmds, "Add-VMHardDiskDrive");
        assert_eq!(add.len(), 1, "{firmware}: the boot disk comes with New-VM");
        assert_eq!(add[0].param("-VM"), Some(Some("$vm")));
        assert_eq!(add[0].param("-ControllerType"), Some(Some(bus)));
        assert_eq!(add[0].param("-ControllerNumber"), Some(Some("0")));
        assert_eq!(add[0].param("-ControllerLocation"), Some(Some(location)));
        assert_eq!(
            add[0].param("-Path"),
            Some(Some("(Join-Path $PSScriptRoot 'web01-disk2.vhdx')"))
        );
    }
}

/// Set-VMProcessor -Count. Source:
/// https://learn.microsoft.com/powershell/module/hyper-v/set-vmprocessor
#[test]
fn set_vmprocessor_parameters() {
    let Some(py) = have_ps_parser("set_vmprocessor_parameters") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (out, _, _) = to_hyperv(d.path(), "bios", &[], "web01");
    let cmds = parse_ps(&py, &script_of(&out));
    let p = cmd(&cmds, "Set-VMProcessor");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].param("-VM"), Some(Some("$vm")));
    assert_eq!(p[0].param("-Count"), Some(Some("4")));
}

/// (--firmware, other migrate arguments, -EnableSecureBoot, -SecureBootTemplate)
type FirmwareCase = (
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    Option<&'static str>,
);

/// Set-VMFirmware -EnableSecureBoot On|Off, and -SecureBootTemplate
/// MicrosoftUEFICertificateAuthority for a Linux guest (the default "MicrosoftWindows"
/// template does not boot Linux's shim); -FirstBootDevice the SCSI 0:0 disk; no
/// Set-VMFirmware for Generation 1 (it has none). Source:
/// https://learn.microsoft.com/powershell/module/hyper-v/set-vmfirmware and
/// https://learn.microsoft.com/windows-server/virtualization/hyper-v/supported-linux-and-freebsd-virtual-machines-for-hyper-v-on-windows
/// ("use the Microsoft UEFI Certificate Authority" template for Linux with Secure Boot).
#[test]
fn set_vmfirmware_parameters() {
    let Some(py) = have_ps_parser("set_vmfirmware_parameters") else {
        return;
    };
    let cases: &[FirmwareCase] = &[
        (
            "uefi-secure",
            &["--os", "ubuntu-64"],
            Some("On"),
            Some("MicrosoftUEFICertificateAuthority"),
        ),
        ("uefi-secure", &["--os", "windows9-64"], Some("On"), None),
        ("uefi", &["--os", "ubuntu-64"], Some("Off"), None),
        ("bios", &[], None, None),
    ];
    for &(firmware, extra, secure, template) in cases {
        let d = tempfile::tempdir().unwrap();
        let (out, _, _) = to_hyperv(d.path(), firmware, extra, "web01");
        let cmds = parse_ps(&py, &script_of(&out));
        let fw = cmd(&cmds, "Set-VMFirmware");
        let sb = fw.iter().find(|c| c.param("-EnableSecureBoot").is_some());
        assert_eq!(
            sb.and_then(|c| c.param("-EnableSecureBoot").flatten()),
            secure,
            "{firmware}"
        );
        assert_eq!(
            sb.and_then(|c| c.param("-SecureBootTemplate").flatten()),
            template,
            "{firmware} {extra:?}"
        );
        let first = fw.iter().find(|c| c.param("-FirstBootDevice").is_some());
        assert_eq!(first.is_some(), secure.is_some(), "{firmware}");
        if firmware == "bios" {
            assert!(fw.is_empty());
        } else {
            let get = cmd(&cmds, "Get-VMHardDiskDrive");
            assert_eq!(get[0].param("-ControllerType"), Some(Some("SCSI")));
            assert_eq!(get[0].param("-ControllerLocation"), Some(Some("0")));
        }
    }
}

/// Add-VMNetworkAdapter -SwitchName (only when the switch exists: Get-VMSwitch -Name first),
/// -Name, -Passthru; Set-VMNetworkAdapter -StaticMacAddress as 12 hex digits; New-VM's own
/// default adapter is removed first so the VM has exactly the source's adapters. Source:
/// https://learn.microsoft.com/powershell/module/hyper-v/add-vmnetworkadapter and
/// https://learn.microsoft.com/powershell/module/hyper-v/set-vmnetworkadapter
#[test]
fn network_adapter_parameters() {
    let Some(py) = have_ps_parser("network_adapter_parameters") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let (out, _, _) = to_hyperv(d.path(), "bios", &[], "web01");
    let cmds = parse_ps(&py, &script_of(&out));
    assert_eq!(cmd(&cmds, "Remove-VMNetworkAdapter").len(), 1);
    let sw = cmd(&cmds, "Get-VMSwitch");
    assert_eq!(sw[0].param("-Name"), Some(Some("'LAN'")));
    let add = cmd(&cmds, "Add-VMNetworkAdapter");
    // NIC 1: with the switch or, when it is missing, without; NIC 2: no network.
    assert_eq!(add.len(), 3);
    assert_eq!(add[0].param("-SwitchName"), Some(Some("'LAN'")));
    assert_eq!(add[0].param("-Name"), Some(Some("'Network Adapter 1'")));
    assert!(
        add.iter()
            .all(|a| a.param("-Passthru").is_some() && a.param("-VM") == Some(Some("$vm")))
    );
    assert_eq!(add[1].param("-SwitchName"), None);
    assert_eq!(add[2].param("-Name"), Some(Some("'Network Adapter 2'")));
    let set = cmd(&cmds, "Set-VMNetworkAdapter");
    assert_eq!(set.len(), 1, "only the first NIC has a fixed MAC");
    assert_eq!(
        set[0].param("-StaticMacAddress"),
        Some(Some("'00155D010203'"))
    );
    assert_eq!(set[0].param("-VMNetworkAdapter"), Some(Some("$nic")));
}

/// A hostile VM name stays one single-quoted string (and out of the script's comment line,
/// where a line break would start code): quotes (ASCII and the typographic ones
/// PowerShell also takes as quotes) doubled, `$(...)` and backticks inert. Source:
/// https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_quoting_rules
#[test]
fn any_vm_name_is_one_quoted_string() {
    let Some(py) = have_ps_parser("any_vm_name_is_one_quoted_string") else {
        return;
    };
    let name = "O'Brien\u{2019}s $(Remove-Item C:\\) `n \"vm\"\nRemove-Item -Recurse C:\\";
    let d = tempfile::tempdir().unwrap();
    let (out, _, _) = to_hyperv(d.path(), "bios", &[], name);
    let cmds = parse_ps(&py, &script_of(&out));
    let new = cmd(&cmds, "New-VM");
    assert_eq!(
        new[0].param("-Name"),
        Some(Some(
            "'O''Brien\u{2019}\u{2019}s $(Remove-Item C:\\) `n \"vm\"\nRemove-Item -Recurse C:\\'"
        ))
    );
    assert!(
        cmd(&cmds, "Remove-Item").is_empty(),
        "the name's command is not a command"
    );
}

/// Generation 1 boots only from IDE: a boot disk that was on SCSI moves to IDE 0:0 with a
/// warning. Source: should-i-create-a-generation-1-or-2-virtual-machine-in-hyper-v (above).
#[test]
fn a_scsi_boot_disk_moves_to_ide_on_generation_1_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let (_, _, said) = to_hyperv(d.path(), "bios", &["--disk-bus", "scsi"], "web01");
    assert!(said.contains("goes to IDE 0:0"), "{said}");
}

/// An OVA (made by `migrate --to vsphere`) migrates `--to hyperv` with identical disks, its
/// UEFI firmware giving a Generation 2 VM.
#[test]
fn an_ova_migrates_to_hyperv() {
    let test = "an_ova_migrates_to_hyperv";
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
        "app",
        "--memory",
        "2G",
        "--firmware",
        "uefi",
        "--os",
        "windows9-64",
        s(&raw),
        s(&ova),
    ]);
    let out = d.path().join("hv");
    run_ok(&["migrate", "--to", "hyperv", s(&ova), s(&out)]);
    assert!(qemu_compare(
        "raw",
        &raw,
        "vhdx",
        &out.join("app-disk1.vhdx")
    ));
    let script = std::fs::read_to_string(out.join("app.ps1")).unwrap();
    assert!(
        script.contains("-Generation 2 -MemoryStartupBytes 2147483648"),
        "{script}"
    );
    assert!(script.contains("-EnableSecureBoot Off"), "{script}");
}
