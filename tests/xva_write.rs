//! `diskferry migrate ... --to xenserver` writing XVAs, checked by tools that share no code with
//! diskferry: GNU tar lists every XVA with ova.xml first; Python (tests/xva_support/check_xva.py)
//! re-reads the tar with `tarfile`, verifies every chunk's checksum with `hashlib` (SHA-1) and the
//! `xxhash` PyPI package (XXH64), and loads ova.xml with `xmlrpc.client.loads`; `qemu-img
//! compare` finds the disks read back identical to the sources. No reader of XVAs installs from
//! npm (@xen-orchestra/xva only writes them; tests/xva.rs reads what it writes), so XAPI's
//! import rules are re-implemented below, one test per rule, each citing xen-api's
//! `ocaml/xapi/import.ml` (or `stream_vdi.ml`/`importexport.ml`), where the importer lives.
//!
//! The Python peer is installed by tests/xva_support/install-peers (a venv under
//! target/peers, run by .ci/run).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const MIB: u64 = 1 << 20;

/// Two disks: `a` (8 MiB: data in chunks 0-1 and in the last, chunk 7; chunks 2-6 zero) and
/// `b` (3 MiB + 4608 bytes: zeros but for chunk 1, so its first and its short last chunk are
/// zero chunks that must still be written).
fn disks(d: &Path) -> (PathBuf, PathBuf) {
    let a = d.join("a.raw");
    make_raw(&a, 8 * MIB, &[(0, MIB + MIB / 2), (7 * MIB + 512, 4096)]);
    let b = d.join("b.raw");
    make_raw(&b, 3 * MIB + 4608, &[(MIB + 100, 5000)]);
    (a, b)
}

const VM_ARGS: &[&str] = &[
    "--name",
    "web01",
    "--cpus",
    "4",
    "--cores-per-socket",
    "2",
    "--memory",
    "3G",
    "--firmware",
    "uefi",
    "--nic",
    "e1000,mac=00:16:3e:01:02:03,network=LAN",
    "--nic",
    "e1000,mac=00:16:3e:01:02:04,network=LAN",
];

/// Migrates the two disks to `dest` for xenserver with `extra` arguments.
fn write_xva(d: &Path, dest: &Path, extra: &[&str]) -> String {
    let (a, b) = disks(d);
    let mut args = vec!["migrate", "--to", "xenserver"];
    args.extend_from_slice(VM_ARGS);
    args.extend_from_slice(extra);
    args.extend([s(&a), s(&b), s(dest)]);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty() || s(dest) == "-", "nothing on stdout: {out}");
    err
}

/// The Python with the `xxhash` package (tests/xva_support/install-peers), or a skip.
fn python(test: &str) -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/xxhash-venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import xxhash, xmlrpc.client"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(
            test,
            "python with the xxhash package is missing (tests/xva_support/install-peers)",
        );
        return None;
    }
    Some(py)
}

/// What Python reads in `xva` (see check_xva.py).
fn python_read(py: &Path, xva: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xva_support/check_xva.py");
    let out = Command::new(py).arg(script).arg(xva).output().unwrap();
    assert!(
        out.status.success(),
        "check_xva.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// GNU tar's listing of `xva` (with `flag` for a compressed one): the member names.
fn gnu_tar_names(xva: &Path, flag: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new("tar");
    if let Some(f) = flag {
        cmd.arg(f);
    }
    let out = cmd.arg("-tvf").arg(xva).output().unwrap();
    assert!(
        out.status.success(),
        "tar -tvf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect()
}

/// Every check an XVA must pass: GNU tar lists it with ova.xml first, Python verifies every
/// chunk with `kind` checksums, and both disks convert back identical to their sources.
fn check_xva(test: &str, d: &Path, xva: &Path, tar_flag: Option<&str>, kind: &str) -> Value {
    let names = gnu_tar_names(xva, tar_flag);
    assert_eq!(names[0], "ova.xml", "{names:?}");
    let Some(py) = python(test) else {
        return Value::Null;
    };
    let read = python_read(&py, xva);
    let chunks = read["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty());
    for c in chunks {
        assert!(c["error"].is_null(), "{c}");
        assert_eq!(c["ok"], true, "checksum mismatch: {c}");
        assert_eq!(c["kind"], kind, "{c}");
    }
    assert_eq!(read["ova"]["version"]["export_vsn"], "2");
    read_back_identical(test, d, xva);
    read
}

/// Both disks, converted back to raw by diskferry, equal their sources (qemu-img compare).
fn read_back_identical(test: &str, d: &Path, xva: &Path) {
    let (a, b) = (d.join("a.raw"), d.join("b.raw"));
    for (i, src) in [a, b].iter().enumerate() {
        let out = d.join(format!("back{i}.raw"));
        let _ = std::fs::remove_file(&out);
        run_ok(&[
            "convert",
            "-O",
            "raw",
            "--disk",
            &i.to_string(),
            s(xva),
            s(&out),
        ]);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(src).unwrap(),
            "disk {i} differs"
        );
        if have_qemu(test) {
            assert!(qemu_compare("raw", src, "raw", &out), "disk {i}");
        }
    }
}

/// The chunk members of each VDI, in archive order: (vdi, number, size).
fn chunk_list(read: &Value) -> Vec<(String, u64, u64)> {
    read["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let (vdi, n) = c["name"].as_str().unwrap().split_once('/').unwrap();
            (
                vdi.to_string(),
                n.parse().unwrap(),
                c["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn default_xva_has_xxhash_chunks_and_reads_back_bit_exact() {
    let test = "default_xva_has_xxhash_chunks_and_reads_back_bit_exact";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let xva = d.join("web01.xva");
    let err = write_xva(d, &xva, &[]);
    assert!(err.contains("xe vm-import filename="), "{err}");
    let read = check_xva(test, d, &xva, None, "xxhash");
    if read.is_null() {
        return;
    }
    // Zero chunks are left out except each disk's first and last; the last is short.
    let chunks = chunk_list(&read);
    let numbers: Vec<(String, u64, u64)> = chunks.clone();
    let a: Vec<u64> = numbers
        .iter()
        .filter(|c| c.0 == "Ref:002")
        .map(|c| c.1)
        .collect();
    let b: Vec<(u64, u64)> = numbers
        .iter()
        .filter(|c| c.0 == "Ref:003")
        .map(|c| (c.1, c.2))
        .collect();
    assert_eq!(a, [0, 1, 7]);
    assert_eq!(b, [(0, MIB), (1, MIB), (3, 4608)]);
    // diskferry's own reader agrees.
    let info: Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&xva)])).unwrap();
    assert_eq!(info["vm"]["name"], "web01");
}

#[test]
fn sha1_checksums_for_older_xenserver() {
    let test = "sha1_checksums_for_older_xenserver";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let xva = d.join("web01.xva");
    write_xva(d, &xva, &["-o", "checksum=sha1"]);
    check_xva(test, d, &xva, None, "checksum");
}

#[test]
fn gzip_compressed_xva() {
    let test = "gzip_compressed_xva";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let xva = d.join("web01.xva");
    write_xva(d, &xva, &["-o", "compress=gzip"]);
    assert_eq!(&std::fs::read(&xva).unwrap()[..2], [0x1f, 0x8b]);
    check_xva(test, d, &xva, Some("-z"), "xxhash");
}

#[test]
fn zstd_compressed_xva() {
    let test = "zstd_compressed_xva";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let xva = d.join("web01.xva");
    write_xva(d, &xva, &["-o", "compress=zstd,checksum=sha1"]);
    assert_eq!(&std::fs::read(&xva).unwrap()[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    check_xva(test, d, &xva, Some("--zstd"), "checksum");
}

#[test]
fn xva_to_a_pipe() {
    let test = "xva_to_a_pipe";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = disks(d);
    let mut args = vec!["migrate", "-q", "--to", "xcp-ng"];
    args.extend_from_slice(VM_ARGS);
    args.extend([s(&a), s(&b), "-"]);
    // Standard output is a pipe here: nothing is sought back to.
    let mut child = diskferry()
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut bytes).unwrap();
    assert!(child.wait().unwrap().success());
    let xva = d.join("piped.xva");
    std::fs::write(&xva, &bytes).unwrap();
    check_xva(test, d, &xva, None, "xxhash");
}

#[test]
fn unknown_options_and_disk_formats_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, _) = disks(d);
    let xva = d.join("x.xva");
    for (extra, says) in [
        (
            vec!["-o", "subformat=dynamic"],
            "unknown -o option 'subformat'",
        ),
        (vec!["-o", "checksum=md5"], "checksum=md5"),
        (vec!["-o", "compress=xz"], "compress=xz"),
        (vec!["-O", "vhd"], "-O and -o apply to --to disks"),
    ] {
        let mut args = vec!["migrate", "--to", "xenserver"];
        args.extend(extra.iter().copied());
        args.extend([s(&a), s(&xva)]);
        let (code, _, err) = run(&args);
        assert_ne!(code, 0);
        assert!(err.contains(says), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!xva.exists());
    }
}

/// The OVA -> XVA -> OVA round trip keeps what both can say: name, CPUs, memory, firmware,
/// the disks' sizes and content, the NICs' MACs and network.
#[test]
fn ova_to_xva_to_ova_keeps_the_vm() {
    let test = "ova_to_xva_to_ova_keeps_the_vm";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = disks(d);
    let ova = d.join("first.ova");
    let mut args = vec!["migrate", "-q", "--to", "vsphere"];
    args.extend_from_slice(VM_ARGS);
    args.extend([s(&a), s(&b), s(&ova)]);
    run_ok(&args);
    let xva = d.join("mid.xva");
    run_ok(&["migrate", "-q", "--to", "xenserver", s(&ova), s(&xva)]);
    let back = d.join("back.ova");
    run_ok(&["migrate", "-q", "--to", "vsphere", s(&xva), s(&back)]);
    let vm = |p: &Path| -> Value {
        let v: Value = serde_json::from_str(&run_ok(&["info", "--output", "json", s(p)])).unwrap();
        v["vm"].clone()
    };
    let (first, mid, last) = (vm(&ova), vm(&xva), vm(&back));
    for v in [&mid, &last] {
        for key in ["name", "cpus", "memory_bytes", "firmware"] {
            assert_eq!(v[key], first[key], "{key}");
        }
        let macs = |v: &Value| -> Vec<(Value, Value)> {
            v["nics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| (n["mac"].clone(), n["network"].clone()))
                .collect()
        };
        assert_eq!(macs(v), macs(&first));
        let sizes = |v: &Value| -> Vec<Value> {
            v["disks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["capacity_bytes"].clone())
                .collect()
        };
        assert_eq!(sizes(v), sizes(&first));
    }
    check_xva(test, d, &xva, None, "xxhash");
}

/// ova.xml as Python loaded it, from a freshly written XVA (None: Python is missing).
fn written_ova(test: &str) -> Option<(Value, Value)> {
    let py = python(test)?;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let xva = d.join("web01.xva");
    write_xva(d, &xva, &[]);
    let read = python_read(&py, &xva);
    Some((read["ova"].clone(), read))
}

fn objects<'v>(ova: &'v Value, class: &str) -> Vec<(&'v str, &'v Value)> {
    ova["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["class"] == class)
        .map(|o| (o["id"].as_str().unwrap(), &o["snapshot"]))
        .collect()
}

fn ids(ova: &Value, class: &str) -> Vec<String> {
    objects(ova, class)
        .iter()
        .map(|(i, _)| i.to_string())
        .collect()
}

/// XAPI unmarshals every record with the generated `API.From.<class>_t` (import.ml: `VM.precheck`,
/// `VBD.precheck`, `VIF.precheck`, `non_cdrom_vdis`), which fails on a missing field that has no
/// default; the field set here is what Xen Orchestra's writer emits for each class
/// (@xen-orchestra/xva templates/*.mjs), which XAPI imports.
/// Source: https://github.com/xapi-project/xen-api/blob/master/ocaml/xapi/import.ml
#[test]
fn xapi_rule_every_record_has_the_fields_xapi_requires() {
    let test = "xapi_rule_every_record_has_the_fields_xapi_requires";
    let Some((ova, _)) = written_ova(test) else {
        return;
    };
    let required: &[(&str, &[&str])] = &[
        (
            "VM",
            &[
                "uuid",
                "name_label",
                "name_description",
                "power_state",
                "is_a_template",
                "memory_static_min",
                "memory_static_max",
                "memory_dynamic_min",
                "memory_dynamic_max",
                "VCPUs_max",
                "VCPUs_at_startup",
                "VCPUs_params",
                "actions_after_shutdown",
                "actions_after_reboot",
                "actions_after_crash",
                "HVM_boot_policy",
                "HVM_boot_params",
                "HVM_shadow_multiplier",
                "platform",
                "PV_bootloader",
                "PV_kernel",
                "PV_ramdisk",
                "PV_args",
                "other_config",
                "domain_type",
                "VBDs",
                "VIFs",
                "last_booted_record",
                "last_boot_CPU_flags",
                "user_version",
                "version",
            ],
        ),
        (
            "VBD",
            &[
                "uuid",
                "VM",
                "VDI",
                "device",
                "userdevice",
                "bootable",
                "mode",
                "type",
                "empty",
                "unpluggable",
                "currently_attached",
                "other_config",
                "qos_algorithm_type",
                "qos_algorithm_params",
            ],
        ),
        (
            "VDI",
            &[
                "uuid",
                "name_label",
                "name_description",
                "SR",
                "virtual_size",
                "type",
                "sharable",
                "read_only",
                "other_config",
                "sm_config",
                "xenstore_data",
                "on_boot",
                "allow_caching",
            ],
        ),
        (
            "VIF",
            &[
                "uuid",
                "device",
                "network",
                "VM",
                "MAC",
                "MTU",
                "other_config",
                "qos_algorithm_type",
                "qos_algorithm_params",
                "locking_mode",
                "ipv4_allowed",
                "ipv6_allowed",
            ],
        ),
        (
            "SR",
            &["uuid", "name_label", "content_type", "type", "VDIs"],
        ),
        (
            "network",
            &["uuid", "name_label", "bridge", "MTU", "other_config"],
        ),
    ];
    for (class, fields) in required {
        let objs = objects(&ova, class);
        assert!(!objs.is_empty(), "no {class}");
        for (id, snap) in objs {
            for f in *fields {
                assert!(!snap[f].is_null(), "{class} {id} lacks {f}");
            }
        }
    }
    let vm = objects(&ova, "VM")[0].1;
    assert_eq!(vm["domain_type"], "hvm");
    assert_eq!(vm["HVM_boot_policy"], "BIOS order");
    assert_eq!(vm["HVM_boot_params"]["firmware"], "uefi");
    assert_eq!(vm["name_label"], "web01");
}

/// The version block: import fails when the export's xapi_major.xapi_minor is newer than the
/// host's (importexport.ml `version_of_rpc` and import.ml's version check,
/// `import_incompatible_version`); 1.20 is XenServer/XCP-ng 8.2's, older than every current
/// host, and what Xen Orchestra writes. `export_vsn` 2 announces inline chunk checksums.
/// Source: https://github.com/xapi-project/xen-api/blob/master/ocaml/xapi/importexport.ml
#[test]
fn xapi_rule_version_block_is_not_newer_than_the_host() {
    let test = "xapi_rule_version_block_is_not_newer_than_the_host";
    let Some((ova, _)) = written_ova(test) else {
        return;
    };
    let v = &ova["version"];
    for f in [
        "hostname",
        "date",
        "product_version",
        "product_brand",
        "build_number",
        "xapi_major",
        "xapi_minor",
        "export_vsn",
    ] {
        assert!(!v[f].is_null(), "version lacks {f}");
    }
    let major: u64 = v["xapi_major"].as_str().unwrap().parse().unwrap();
    let minor: u64 = v["xapi_minor"].as_str().unwrap().parse().unwrap();
    assert!((major, minor) <= (1, 20), "{major}.{minor}");
    assert_eq!(v["export_vsn"], "2");
}

/// Every VBD's and VIF's `VM` is looked up among the export's objects (import.ml, VBD and VIF
/// `precheck`: `lookup vbd_record.API.vBD_VM state.table`, "Failed to find VBD's VM").
/// Source: https://github.com/xapi-project/xen-api/blob/master/ocaml/xapi/import.ml
#[test]
fn xapi_rule_vbds_and_vifs_name_the_exported_vm() {
    let test = "xapi_rule_vbds_and_vifs_name_the_exported_vm";
    let Some((ova, _)) = written_ova(test) else {
        return;
    };
    let vms = ids(&ova, "VM");
    assert_eq!(vms.len(), 1);
    for class in ["VBD", "VIF"] {
        let objs = objects(&ova, class);
        assert!(!objs.is_empty());
        for (id, snap) in objs {
            assert_eq!(snap["VM"], vms[0].as_str(), "{class} {id}");
        }
    }
    // And the VM lists them back.
    let vm = objects(&ova, "VM")[0].1;
    let listed = |f: &str| -> Vec<String> {
        vm[f]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed("VBDs"), ids(&ova, "VBD"));
    assert_eq!(listed("VIFs"), ids(&ova, "VIF"));
}

/// A VIF's network is looked up among the export's objects ("Failed to find VIF's Network",
/// import.ml VIF `precheck`); the network itself is matched to a host network by name_label,
/// then bridge, or created (import.ml `Net.precheck`).
/// Source: https://github.com/xapi-project/xen-api/blob/master/ocaml/xapi/import.ml
#[test]
fn xapi_rule_vifs_name_an_exported_network_and_keep_their_mac() {
    let test = "xapi_rule_vifs_name_an_exported_network_and_keep_their_mac";
    let Some((ova, _)) = written_ova(test) else {
        return;
    };
    let nets = ids(&ova, "network");
    let vifs = objects(&ova, "VIF");
    assert_eq!(vifs.len(), 2);
    for (i, (id, snap)) in vifs.iter().enumerate() {
        assert!(
            nets.iter().any(|n| snap["network"] == n.as_str()),
            "VIF {id}"
        );
        assert_eq!(snap["device"], i.to_string());
    }
    assert_eq!(vifs[0].1["MAC"], "00:16:3e:01:02:03");
    assert_eq!(objects(&ova, "network")[0].1["name_label"], "LAN");
}

/// A VBD of type Disk whose VDI is not in the export is silently skipped (import.ml VBD
/// `precheck`: "`Disk, false -> ... Skip`"), so every Disk VBD must name an exported VDI.
/// Source: https://github.com/xapi-project/xen-api/blob/master/ocaml/xapi/import.ml
#[test]
fn xapi_rule_disk_vbds_name_exported_vdis() {
    let test = "xapi_rule_disk_vbds_name_exported_vdis";
    let Some((ova, _)) = written_ova(test) else {
        return;
    };
    let vdis = ids(&ova, "VDI");
    let disks: Vec<_> = objects(&ova, "VBD")
        .into_iter()
        .filter(|(_, v)| v["type"] == "Disk")
        .collect();
    assert_eq!(disks.len(), 2);
    for (id, vbd) in &disks {
        assert!(vdis.iter().any(|v| vbd["VDI"] == v.as_str()), "VBD {id}");
        assert_eq!(vbd["mode"], "RW");
        assert_eq!(vbd["empty"], false);
    }
    // Exactly one boots, the first.
    let boot: Vec<_> = disks.iter().map(|(_, v)| v["bootable"] == true).collect();
    assert_eq!(boot, [true, false]);
    assert_eq!(disks[0].1["userdevice"], "0");
}

/// Each streamed VDI's SR is looked up in the export and must not be an ISO SR
/// (import.ml `non_cdrom_vdis`: `find_in_export vdir.API.vDI_SR`, `sR_content_type <> "iso"`);
/// the VDI's virtual_size is the disk's.
/// Source: https://github.com/xapi-project/xen-api/blob/master/ocaml/xapi/import.ml
#[test]
fn xapi_rule_vdis_live_in_an_exported_non_iso_sr() {
    let test = "xapi_rule_vdis_live_in_an_exported_non_iso_sr";
    let Some((ova, _)) = written_ova(test) else {
        return;
    };
    let srs = objects(&ova, "SR");
    assert_eq!(srs.len(), 1);
    assert_ne!(srs[0].1["content_type"], "iso");
    let sizes: Vec<_> = objects(&ova, "VDI")
        .into_iter()
        .map(|(_, v)| {
            assert_eq!(v["SR"], srs[0].0);
            v["virtual_size"].as_str().unwrap().parse::<u64>().unwrap()
        })
        .collect();
    assert_eq!(sizes, [8 * MIB, 3 * MIB + 4608]);
}

/// XAPI creates the VM with `VM.create_from_record`, which enforces
/// static_min <= dynamic_min <= dynamic_max <= static_max and 1 <= VCPUs_at_startup <=
/// VCPUs_max (xen-api `vm_memory_constraints.ml` `assert_valid`, `xapi_vm_helpers.ml`
/// `validate_VCPUs_*`).
/// Source: https://github.com/xapi-project/xen-api/blob/master/ocaml/xapi/import.ml (VM.handle)
#[test]
fn xapi_rule_memory_and_vcpu_constraints_hold() {
    let test = "xapi_rule_memory_and_vcpu_constraints_hold";
    let Some((ova, _)) = written_ova(test) else {
        return;
    };
    let vm = objects(&ova, "VM")[0].1;
    let n = |f: &str| -> u64 { vm[f].as_str().unwrap().parse().unwrap() };
    assert!(n("memory_static_min") <= n("memory_dynamic_min"));
    assert!(n("memory_dynamic_min") <= n("memory_dynamic_max"));
    assert!(n("memory_dynamic_max") <= n("memory_static_max"));
    assert_eq!(n("memory_static_max"), 3 << 30);
    assert!(1 <= n("VCPUs_at_startup") && n("VCPUs_at_startup") <= n("VCPUs_max"));
    assert_eq!(n("VCPUs_max"), 4);
    assert_eq!(vm["platform"]["cores-per-socket"], "2");
}

/// The importer reads each disk's chunks in the lexicographic order of the VDIs' ids, requires
/// strictly increasing chunk numbers, each chunk followed by its checksum, and the disk's last
/// chunk present; it places chunks by the lengths it read, filling skipped numbers with zeros
/// (xen-api `ocaml/xapi/stream_vdi.ml`, `recv_all_vdi`).
/// Source: https://github.com/xapi-project/xen-api/blob/master/ocaml/xapi/stream_vdi.ml
#[test]
fn xapi_rule_chunks_in_vdi_order_increasing_ending_with_the_last() {
    let test = "xapi_rule_chunks_in_vdi_order_increasing_ending_with_the_last";
    let Some((ova, read)) = written_ova(test) else {
        return;
    };
    let members: Vec<String> = read["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    // ova.xml, then chunk and checksum alternating.
    assert_eq!(members[0], "ova.xml");
    for pair in members[1..].chunks(2) {
        assert_eq!(pair[1], format!("{}.xxhash", pair[0]));
    }
    let chunks = chunk_list(&read);
    let mut vdis: Vec<String> = chunks.iter().map(|c| c.0.clone()).collect();
    vdis.dedup();
    let mut sorted = vdis.clone();
    sorted.sort();
    assert_eq!(vdis, sorted, "VDIs in lexicographic order");
    for (vdi, size) in objects(&ova, "VDI").iter().map(|(id, v)| {
        (
            id.to_string(),
            v["virtual_size"].as_str().unwrap().parse::<u64>().unwrap(),
        )
    }) {
        let mine: Vec<_> = chunks.iter().filter(|c| c.0 == vdi).collect();
        assert_eq!(mine[0].1, 0, "{vdi}: the first chunk");
        assert!(
            mine.windows(2).all(|w| w[0].1 < w[1].1),
            "{vdi}: increasing"
        );
        let last = mine.last().unwrap();
        assert_eq!(
            last.1 * MIB + last.2,
            size,
            "{vdi}: the last chunk ends the disk"
        );
        assert!(mine.iter().all(|c| c.2 <= MIB));
    }
}

/// `--to xenserver-vhd`: the folder holds one dynamic VHD per disk named `<uuid>.vhd` (a file
/// SR names each VDI's file by the VDI's uuid: xapi-project/sm `drivers/FileSR.py`, which scans
/// `*.vhd` and takes the uuid from the name) with 2 MiB blocks (blktap's `vhd-util` and Xen
/// Orchestra's vhd-lib, which refuses any other block size: `vhd-lib/Vhd/VhdAbstract.js`),
/// identical in content to the sources (qemu-img compare) and read by vhd-lib; and the `xe`
/// script that attaches them is valid shell naming every disk and NIC.
#[test]
fn xenserver_vhd_folder_holds_uuid_named_2mib_block_vhds_and_the_xe_commands() {
    let test = "xenserver_vhd_folder_holds_uuid_named_2mib_block_vhds_and_the_xe_commands";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = disks(d);
    let out = d.join("web01-xen");
    let mut args = vec!["migrate", "--to", "xenserver-vhd"];
    args.extend_from_slice(VM_ARGS);
    args.extend([s(&a), s(&b), s(&out)]);
    let (code, _, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("xe sr-scan uuid=$SR"), "{err}");
    let script = std::fs::read_to_string(out.join("web01-xe.sh")).unwrap();
    assert!(
        Command::new("sh")
            .args(["-n", s(&out.join("web01-xe.sh"))])
            .status()
            .unwrap()
            .success()
    );
    // The disks, in the script's order (the first boots).
    let uuids: Vec<String> = script
        .lines()
        .filter_map(|l| l.strip_prefix("xe vbd-create vm-uuid=$VM vdi-uuid="))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(uuids.len(), 2, "{script}");
    assert!(script.contains("device=0 bootable=true"));
    assert!(script.contains("mac=00:16:3e:01:02:03"));
    assert!(script.contains("HVM-boot-params:firmware=uefi"));
    assert!(script.contains("static-max=3221225472"));
    let xo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xo");
    for (uuid, src) in uuids.iter().zip([&a, &b]) {
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");
        let vhd = out.join(format!("{uuid}.vhd"));
        let info: Value =
            serde_json::from_str(&run_ok(&["info", "--output", "json", s(&vhd)])).unwrap();
        assert_eq!(info["format"], "vhd", "{info}");
        let text = run_ok(&["info", s(&vhd)]);
        assert!(text.contains("subformat: dynamic"), "{text}");
        assert!(text.contains("cluster_size: 2097152"), "{text}");
        if have_qemu(test) {
            assert!(qemu_compare("raw", src, "vpc", &vhd));
        }
        if xo.join("node_modules/vhd-lib").is_dir() {
            let o = Command::new("node")
                .arg(xo.join("read-vhd.js"))
                .arg(&vhd)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "vhd-lib: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let size = std::fs::metadata(src).unwrap().len();
            assert!(
                String::from_utf8_lossy(&o.stdout).contains(&format!("\"size\":{size}")),
                "{}",
                String::from_utf8_lossy(&o.stdout)
            );
        } else {
            skip(test, "vhd-lib is not installed (npm ci in tests/xo)");
        }
    }
}
