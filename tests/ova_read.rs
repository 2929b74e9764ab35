//! Packages as sources: `info` shows the VM and its disks, `convert` reads a disk in place
//! (chosen by index or name; several disks without a choice is an error that lists them), the
//! manifest is checked while a disk is read (a tampered disk or descriptor leaves no output),
//! the corpus's OVAs read or fail with one clear line, and a VM goes OVA -> KVM -> OVA with the
//! same model and identical disks.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Extracts `tar` into `dir` with GNU tar.
fn untar(tar: &Path, dir: &Path) {
    let ok = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success(), "tar -xf {}", tar.display());
}

/// Packs `members` of `dir` into a ustar archive `out` with GNU tar, in that order.
fn tar_ustar<S: AsRef<std::ffi::OsStr>>(out: &Path, dir: &Path, members: &[S]) {
    let ok = Command::new("tar")
        .args(["--format=ustar", "-cf"])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .args(members)
        .status()
        .unwrap();
    assert!(ok.success(), "tar -cf {}", out.display());
}

/// A two-disk VMware OVA made by `migrate`, and its source disks.
fn package(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let a = d.join("a.raw");
    make_raw(&a, 32 << 20, &[(0, 2 << 20), (30 << 20, 1 << 20)]);
    let b = d.join("b.raw");
    make_raw(&b, 8 << 20, &[(1 << 20, 300_000)]);
    let ova = d.join("vm.ova");
    run_ok(&[
        "migrate",
        "--to",
        "vsphere",
        "--name",
        "vm",
        "--cpus",
        "2",
        "--memory",
        "2G",
        "--os",
        "ubuntu-64",
        "--firmware",
        "uefi",
        "--nic",
        "vmxnet3,mac=00:50:56:aa:bb:cc,network=LAN",
        "--disk-bus",
        "pvscsi",
        s(&a),
        s(&b),
        s(&ova),
    ]);
    (ova, a, b)
}

#[test]
fn info_shows_the_vm_and_its_disks() {
    let dir = tempfile::tempdir().unwrap();
    let (ova, _, _) = package(dir.path());
    let text = run_ok(&["info", s(&ova)]);
    for want in [
        "format: ova (OVF 1.x, VMware dialect, vmx-10)",
        "name: vm",
        "firmware: UEFI",
        "CPUs: 2",
        "memory: 2048 MiB",
        "0: vm-disk1.vmdk (vmdk, virtual size 33554432 bytes",
        "1: vm-disk2.vmdk (vmdk, virtual size 8388608 bytes",
        "on SCSI (pvscsi) 0:0",
        "NIC 0: vmxnet3 on 'LAN', MAC 00:50:56:aa:bb:cc",
        "manifest: 3 file(s), SHA256; descriptor verified",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&ova)])).unwrap();
    assert_eq!(json["format"], "ova");
    assert_eq!(json["vm"]["cpus"]["count"], 2);
    assert_eq!(json["disks"][1]["virtual-size"], 8u64 << 20);
    // --disk shows the disk itself, as an image.
    let text = run_ok(&["info", "--disk", "1", s(&ova)]);
    assert!(text.contains("file format: vmdk") && text.contains("create type: streamOptimized"));
}

#[test]
fn a_disk_converts_in_place_chosen_by_index_or_name() {
    let test = "a_disk_converts_in_place_chosen_by_index_or_name";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ova, a, b) = package(d);
    let (code, _, err) = run(&["convert", s(&ova), s(&d.join("x.raw"))]);
    assert_ne!(code, 0);
    assert!(
        err.contains("choose one with --disk: 0 'vm-disk1.vmdk', 1 'vm-disk2.vmdk'"),
        "{err}"
    );
    assert!(!d.join("x.raw").exists());
    let one = d.join("one.raw");
    run_ok(&["convert", "--disk", "0", s(&ova), s(&one)]);
    assert_eq!(sha256_file(&one), sha256_file(&a));
    let two = d.join("two.qcow2");
    run_ok(&[
        "convert",
        "--disk",
        "vm-disk2.vmdk",
        "-O",
        "qcow2",
        s(&ova),
        s(&two),
    ]);
    if have_qemu(test) {
        assert!(qemu_compare("raw", &b, "qcow2", &two));
    }
    // compare and map read a package's disk too.
    assert_eq!(run(&["compare", "--disk", "0", s(&ova), s(&a)]).0, 0);
    assert_eq!(run(&["compare", "--disk", "1", s(&ova), s(&a)]).0, 1);
    let map: serde_json::Value = serde_json::from_str(&run_ok(&[
        "map",
        "--output",
        "json",
        "--disk",
        "1",
        s(&ova),
    ]))
    .unwrap();
    assert!(
        map.as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["data"] == true))
    );
    let (code, _, err) = run(&["convert", "--disk", "7", s(&ova), s(&d.join("x.raw"))]);
    assert_ne!(code, 0);
    assert!(err.contains("no disk '7'"), "{err}");
}

/// The byte offset of member `name`'s data in the tar at `path`.
fn member_offset(path: &Path, name: &str) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 0usize;
    while at + 512 <= bytes.len() {
        let h = &bytes[at..at + 512];
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let size = u64::from_str_radix(
            std::str::from_utf8(&h[124..135])
                .unwrap()
                .trim_matches(['\0', ' ']),
            8,
        )
        .unwrap();
        if &h[..end] == name.as_bytes() {
            return at as u64 + 512;
        }
        at += 512 + size.next_multiple_of(512) as usize;
    }
    panic!("no member {name}");
}

#[test]
fn a_tampered_disk_or_descriptor_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ova, _, _) = package(d);
    // One byte of the first disk's embedded descriptor text (read, so its digest differs).
    let bad = d.join("bad.ova");
    std::fs::copy(&ova, &bad).unwrap();
    let at = member_offset(&bad, "vm-disk1.vmdk");
    let mut bytes = std::fs::read(&bad).unwrap();
    let desc = at as usize + 512;
    let pos = desc
        + bytes[desc..desc + 4096]
            .windows(4)
            .position(|w| w == b"CID=")
            .unwrap()
        + 4;
    bytes[pos] = if bytes[pos] == b'f' { b'e' } else { b'f' };
    std::fs::write(&bad, &bytes).unwrap();
    let out = d.join("out.raw");
    let (code, _, err) = run(&["convert", "--disk", "0", s(&bad), s(&out)]);
    assert_ne!(code, 0);
    assert!(err.contains("vm-disk1.vmdk"), "{err}");
    assert!(
        err.to_lowercase().contains("digest") || err.contains("SHA256"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists());
    let (code, _, err) = run(&["migrate", "--to", "kvm", s(&bad), s(&d.join("k"))]);
    assert_ne!(code, 0, "{err}");
    assert!(!d.join("k").exists());
    // The descriptor, which is checked on opening.
    let bad2 = d.join("bad2.ova");
    let mut bytes = std::fs::read(&ova).unwrap();
    let at = member_offset(&ova, "vm.ovf") as usize;
    let pos = at + bytes[at..].windows(6).position(|w| w == b"<Name>").unwrap() + 6;
    bytes[pos] = b'w';
    std::fs::write(&bad2, &bytes).unwrap();
    let (code, _, err) = run(&["info", s(&bad2)]);
    assert_ne!(code, 0);
    assert!(err.contains("vm.ovf"), "{err}");
}

#[test]
fn corpus_packages_read_or_fail_with_one_line() {
    let test = "corpus_packages_read_or_fail_with_one_line";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let c = shared.join("corpus");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A hand-made OVA with a qemu-img monolithicSparse VMDK: read in place as qemu-img reads
    // the extracted member.
    let ova = c.join("forklift-ova/2nd_disk_v3.ova");
    let text = run_ok(&["info", s(&ova)]);
    assert!(text.contains("name: 2nd-disk-vm"), "{text}");
    let out = d.join("fk.raw");
    run_ok(&["convert", s(&ova), s(&out)]);
    let x = d.join("x");
    std::fs::create_dir(&x).unwrap();
    untar(&ova, &x);
    if have_qemu(test) {
        assert!(qemu_compare("raw", &out, "vmdk", &x.join("2nd_disk.vmdk")));
    }
    // Damaged ones: one clear line each, naming what is wrong.
    for (name, words) in [
        ("forklift-ova/2nd_disk.ova", "line-end check bytes"),
        ("glance/testserver-bad-ovf.ova", "invalid XML"),
        (
            "glance/testserver-no-disk.ova",
            "no member 'testserver-disk1.vmdk'",
        ),
        ("glance/testserver-no-ovf.ova", "without an OVF descriptor"),
        ("glance/testserver.ova", "no image format"),
    ] {
        let (code, _, err) = run(&["convert", s(&c.join(name)), s(&d.join("y.raw"))]);
        assert_ne!(code, 0, "{name}");
        assert!(err.contains(words), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(!d.join("y.raw").exists());
    }
    // A package whose disk is damaged still shows its VM.
    let text = run_ok(&["info", s(&c.join("glance/testserver-no-disk.ova"))]);
    assert!(
        text.contains("name: testserver") && text.contains("cannot be read"),
        "{text}"
    );
}

/// OVA (VMware) -> KVM -> OVA: the same VM model, identical disks.
#[test]
fn a_vm_goes_to_kvm_and_back_unchanged() {
    let test = "a_vm_goes_to_kvm_and_back_unchanged";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ova, a, b) = package(d);
    let kvm = d.join("kvm");
    run_ok(&["migrate", "--to", "kvm", s(&ova), s(&kvm)]);
    let back = d.join("back.ova");
    run_ok(&[
        "migrate",
        "--to",
        "vsphere",
        s(&kvm.join("vm.xml")),
        s(&back),
    ]);
    let model = |p: &Path| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&run_ok(&["info", "--output", "json", s(p)]))
            .unwrap()["vm"]
            .clone()
    };
    assert_eq!(model(&ova), model(&back));
    for (i, src) in [(0, &a), (1, &b)] {
        let out = d.join(format!("back{i}.raw"));
        run_ok(&["convert", "--disk", &i.to_string(), s(&back), s(&out)]);
        assert_eq!(sha256_file(&out), sha256_file(src), "disk {i}");
    }
    if have_qemu(test) {
        assert!(qemu_compare(
            "raw",
            &a,
            "qcow2",
            &kvm.join("vm-disk1.qcow2")
        ));
    }
}

/// An OVF folder reads like an OVA; its files stay inside its folder.
#[test]
fn an_ovf_folder_reads_and_cannot_reach_outside() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ova, a, _) = package(d);
    let folder = d.join("f");
    std::fs::create_dir(&folder).unwrap();
    untar(&ova, &folder);
    let out = d.join("f.raw");
    run_ok(&["convert", "--disk", "0", s(&folder.join("vm.ovf")), s(&out)]);
    assert_eq!(sha256_file(&out), sha256_file(&a));
    // A descriptor naming a file outside its folder is refused, whatever the gate allows.
    let ovf = std::fs::read_to_string(folder.join("vm.ovf")).unwrap();
    let evil = ovf.replace("ovf:href=\"vm-disk1.vmdk\"", "ovf:href=\"../a.raw\"");
    std::fs::write(folder.join("evil.ovf"), evil).unwrap();
    let (code, _, err) = run(&[
        "convert",
        "--disk",
        "0",
        s(&folder.join("evil.ovf")),
        s(&d.join("e.raw")),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("../a.raw") && err.contains("out of the package"),
        "{err}"
    );
    assert!(!d.join("e.raw").exists());
}

/// A manifest that names a file the package does not hold: `info` shows the machine with a
/// warning naming the file (as COT's `info` does; virt-v2v even converts with a warning),
/// while convert, migrate and check refuse the incomplete package with one clear line.
#[test]
fn a_manifest_naming_a_missing_file_is_shown_by_info_and_refused_by_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ova, _, _) = package(d);
    let folder = d.join("f");
    std::fs::create_dir(&folder).unwrap();
    untar(&ova, &folder);
    let mf = folder.join("vm.mf");
    let mut text = std::fs::read_to_string(&mf).unwrap();
    text.push_str(&format!("SHA256(extra.iso)= {}\n", "0".repeat(64)));
    std::fs::write(&mf, text).unwrap();
    // The same inside an OVA.
    let repacked = d.join("re.ova");
    tar_ustar(
        &repacked,
        &folder,
        &["vm.ovf", "vm.mf", "vm-disk1.vmdk", "vm-disk2.vmdk"],
    );
    for package in [folder.join("vm.ovf"), repacked] {
        missing_file_shown_and_refused(d, &package, &["extra.iso"], "line 4");
    }
}

/// `info` of `package` shows the machine with a warning naming each of `missing`; convert,
/// check and migrate fail with one line naming the first, at `line` of the manifest.
fn missing_file_shown_and_refused(d: &Path, package: &Path, missing: &[&str], line: &str) {
    let (code, out, err) = run(&["info", s(package)]);
    assert_eq!(code, 0, "info {}: {err}", package.display());
    assert!(out.contains("name: "), "{out}");
    for m in missing {
        assert!(
            out.lines()
                .any(|l| l.starts_with("warning: ") && l.contains(&format!("'{m}'"))),
            "info {}: no warning names '{m}': {out}",
            package.display()
        );
    }
    let (code, json, err) = run(&["info", "--output", "json", s(package)]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let warnings = v["warnings"].as_array().expect("a warnings list");
    for m in missing {
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap().contains(&format!("'{m}'"))),
            "{json}"
        );
    }
    let out = d.join("out.raw");
    let migrated = d.join("migrated");
    for args in [
        vec!["convert", s(package), s(&out)],
        vec!["check", s(package)],
        vec!["migrate", "--to", "kvm", s(package), s(&migrated)],
    ] {
        let (code, _, err) = run(&args);
        assert_ne!(code, 0, "{args:?} accepted an incomplete package");
        let named: Vec<&str> = err
            .lines()
            .filter(|l| l.contains(&format!("'{}'", missing[0])))
            .collect();
        assert!(
            !named.is_empty() && named.iter().all(|l| l.contains(line)),
            "{args:?}: {err}"
        );
        assert!(!out.exists() && !migrated.exists(), "{args:?} left output");
    }
}

/// The corpus's COT input.ovf: its manifest lists input.iso and sample_cfg.txt, which the
/// corpus (like COT's own tests) does not hold. MANIFEST.tsv records it as not malformed
/// (qemu-img reads it as raw), and `cot info` shows it, logging each missing file as an
/// error and exiting 0.
#[test]
fn corpus_ovf_with_missing_non_disk_files_is_shown_by_info() {
    let test = "corpus_ovf_with_missing_non_disk_files_is_shown_by_info";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ovf = shared.join("corpus/cot/input.ovf");
    missing_file_shown_and_refused(dir.path(), &ovf, &["input.iso", "sample_cfg.txt"], "line 3");
    // The disk it does hold is still read for its format and size.
    let (_, out, _) = run(&["info", s(&ovf)]);
    assert!(
        out.contains("input.vmdk (vmdk, virtual size 1073741824 bytes"),
        "{out}"
    );
}

/// A gzip-compressed and a chunked disk (`ovf:compression`, `ovf:chunkSize`), each checked
/// against a manifest of what the package stores (the compressed member, each part), as
/// ovftool writes them.
#[test]
fn compressed_and_chunked_disks_read_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ova, a, _) = package(d);
    let x = d.join("x");
    std::fs::create_dir(&x).unwrap();
    untar(&ova, &x);
    let ovf = std::fs::read_to_string(x.join("vm.ovf")).unwrap();
    let sha = |p: &Path| sha256_file(p);
    for (kind, attr) in [
        ("gzip", "ovf:compression=\"gzip\""),
        ("chunks", "ovf:chunkSize=\"1048576\""),
    ] {
        let w = d.join(kind);
        std::fs::create_dir(&w).unwrap();
        let mut members = vec!["vm.ovf".to_string(), "vm.mf".to_string()];
        let mut parts = Vec::new();
        if kind == "gzip" {
            let gz = Command::new("gzip")
                .arg("-c")
                .arg(x.join("vm-disk1.vmdk"))
                .output()
                .unwrap();
            std::fs::write(w.join("vm-disk1.vmdk"), &gz.stdout).unwrap();
            parts.push("vm-disk1.vmdk".to_string());
        } else {
            let bytes = std::fs::read(x.join("vm-disk1.vmdk")).unwrap();
            for (i, c) in bytes.chunks(1 << 20).enumerate() {
                let name = format!("vm-disk1.vmdk.{i:09}");
                std::fs::write(w.join(&name), c).unwrap();
                parts.push(name);
            }
        }
        std::fs::copy(x.join("vm-disk2.vmdk"), w.join("vm-disk2.vmdk")).unwrap();
        let desc = ovf.replacen(
            "ovf:href=\"vm-disk1.vmdk\"",
            &format!("ovf:href=\"vm-disk1.vmdk\" {attr}"),
            1,
        );
        std::fs::write(w.join("vm.ovf"), desc.trim_end()).unwrap();
        let mut mf = format!("SHA256(vm.ovf)= {}\n", sha(&w.join("vm.ovf")));
        for p in parts.iter().chain(["vm-disk2.vmdk".to_string()].iter()) {
            mf.push_str(&format!("SHA256({p})= {}\n", sha(&w.join(p))));
        }
        std::fs::write(w.join("vm.mf"), mf).unwrap();
        members.extend(parts);
        members.push("vm-disk2.vmdk".into());
        let out_ova = d.join(format!("{kind}.ova"));
        tar_ustar(&out_ova, &w, &members);
        let out = d.join(format!("{kind}.raw"));
        run_ok(&["convert", "--disk", "0", s(&out_ova), s(&out)]);
        assert_eq!(sha256_file(&out), sha256_file(&a), "{kind}");
        // A damaged part or compressed member fails its digest and leaves nothing.
        let target = w.join(&members[2]);
        let mut bytes = std::fs::read(&target).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&target, bytes).unwrap();
        let bad = d.join(format!("{kind}-bad.ova"));
        tar_ustar(&bad, &w, &members);
        let out = d.join(format!("{kind}-bad.raw"));
        let (code, _, err) = run(&["convert", "--disk", "0", s(&bad), s(&out)]);
        assert_ne!(code, 0, "{kind}");
        // Named by its digest, or by the read that found the damage first.
        assert!(err.contains("vm-disk1.vmdk"), "{kind}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{kind}: {err}");
        assert!(!out.exists());
    }
}

/// The offset in the stream-optimized VMDK `vmdk` of the first byte of sector padding after
/// the grain nearest its middle: a byte no reader of the disk's content looks at (grains are
/// read as marker plus compressed size), so only the manifest's digest can notice it change.
fn padding_near_middle(vmdk: &[u8]) -> u64 {
    let u64_at = |at: usize| u64::from_le_bytes(vmdk[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(vmdk[at..at + 4].try_into().unwrap());
    // The header's overHead (sectors before the first grain) is at byte 64.
    let mut pos = u64_at(64) as usize * 512;
    let mut best: Option<usize> = None;
    let middle = vmdk.len() / 2;
    while pos + 512 <= vmdk.len() {
        let (value, size) = (u64_at(pos), u32_at(pos + 8) as usize);
        if size == 0 {
            // A metadata marker: its type (0 = end of stream) and `value` sectors after it.
            if u32_at(pos + 12) == 0 {
                break;
            }
            pos += 512 + value as usize * 512;
            continue;
        }
        let end = pos + 12 + size;
        if !end.is_multiple_of(512)
            && best.is_none_or(|b| b.abs_diff(middle) > end.abs_diff(middle))
        {
            best = Some(end);
        }
        pos = end.next_multiple_of(512);
    }
    best.expect("a grain with padding") as u64
}

/// The disk's digest is checked by a thread beside the conversion's reads: a byte changed in
/// the middle of the member, where the conversion itself reads nothing amiss, still fails the
/// command with the file named, whatever the output format or write order, and no output
/// (nor a staged part of one) is left.
#[test]
fn a_digest_mismatch_in_the_middle_of_a_disk_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("disk.raw");
    std::fs::write(&raw, pseudo_random(24 << 20, 7)).unwrap();
    let ova = d.join("vm.ova");
    run_ok(&[
        "migrate",
        "--to",
        "vsphere",
        "--name",
        "vm",
        s(&raw),
        s(&ova),
    ]);
    // The package reads back as it was made.
    let good = d.join("good.raw");
    run_ok(&["convert", s(&ova), s(&good)]);
    assert_eq!(sha256_file(&good), sha256_file(&raw));
    std::fs::remove_file(&good).unwrap();

    let at = member_offset(&ova, "vm-disk1.vmdk");
    let mut bytes = std::fs::read(&ova).unwrap();
    // The member's size, from its tar header (octal, bytes 124..136).
    let header = &bytes[at as usize - 512..at as usize];
    let field = std::str::from_utf8(&header[124..136]).unwrap();
    let len = u64::from_str_radix(field.trim_matches(['\0', ' ']), 8).unwrap();
    let member = &bytes[at as usize..(at + len) as usize];
    let pad = at + padding_near_middle(member);
    assert_eq!(bytes[pad as usize], 0, "sector padding is zeros");
    bytes[pad as usize] = 1;
    let bad = d.join("bad.ova");
    std::fs::write(&bad, &bytes).unwrap();
    let before = dir_names(d);
    for args in [
        vec!["convert"],
        vec!["convert", "-W"],
        vec!["convert", "-O", "qcow2"],
        vec!["convert", "-m", "1"],
    ] {
        let out = d.join("out.img");
        let mut argv = args.clone();
        argv.extend([s(&bad), s(&out)]);
        let (code, _, err) = run(&argv);
        assert_ne!(code, 0, "{args:?} accepted a damaged disk");
        assert!(
            err.contains("digest of 'vm-disk1.vmdk' does not match the manifest"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert_eq!(dir_names(d), before, "{args:?} left something behind");
    }
    let (code, _, err) = run(&["migrate", "--to", "kvm", s(&bad), s(&d.join("k"))]);
    assert_ne!(code, 0);
    assert!(err.contains("vm-disk1.vmdk"), "{err}");
    assert_eq!(dir_names(d), before, "migrate left something behind");
}

/// An OVF whose three disks are files named `2`, `1` and `0`.
fn numbered_ovf(d: &Path) -> PathBuf {
    let mut refs = String::new();
    let mut disks = String::new();
    let mut items = String::new();
    for i in 0..3u8 {
        let file = (2 - i).to_string();
        let raw = d.join(format!("src{i}.raw"));
        std::fs::write(&raw, vec![b'a' + i; 65536]).unwrap();
        run_ok(&["convert", "-O", "qcow2", s(&raw), s(&d.join(&file))]);
        refs.push_str(&format!("<File ovf:id=\"f{i}\" ovf:href=\"{file}\"/>"));
        disks.push_str(&format!(
            "<Disk ovf:capacity=\"65536\" ovf:diskId=\"vmdisk{i}\" ovf:fileRef=\"f{i}\" ovf:format=\"http://qemu.org/qcow2\"/>"
        ));
        items.push_str(&format!(
            "<Item><rasd:ElementName>Hard Disk {i}</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource><rasd:InstanceID>{}</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>",
            10 + i
        ));
    }
    let ovf = d.join("vm.ovf");
    std::fs::write(
        &ovf,
        format!(
            "<?xml version=\"1.0\"?><Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\"><References>{refs}</References><DiskSection><Info>d</Info>{disks}</DiskSection><VirtualSystem ovf:id=\"vm\"><Info>v</Info><Name>vm</Name><VirtualHardwareSection><Info>h</Info>{items}</VirtualHardwareSection></VirtualSystem></Envelope>"
        ),
    )
    .unwrap();
    ovf
}

/// `--disk 0` where disk 0 is a file named `2` and disk 2 a file named `0` is ambiguous: an
/// error saying so and how to choose, and `index=`/`file=` reach each disk.
#[test]
fn a_disk_named_by_another_disks_index_is_chosen_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ovf = numbered_ovf(d);
    let out = d.join("x.raw");
    fails_clearly(
        &["convert", "--disk", "0", s(&ovf), s(&out)],
        &out,
        &["disk 0 by index and disk 2 by file name", "--disk index=0"],
    );
    for (which, byte) in [
        ("index=0", b'a'),
        ("file=0", b'c'),
        ("index=2", b'c'),
        ("1", b'b'),
    ] {
        run_ok(&["convert", "--disk", which, s(&ovf), s(&out)]);
        let got = std::fs::read(&out).unwrap();
        assert!(got.iter().all(|b| *b == byte), "--disk {which}");
        std::fs::remove_file(&out).unwrap();
    }
}

/// A package's disks are whole: a disk that is a differencing image (a qcow2 overlay here)
/// is refused naming its parent, never read as zeros where the parent holds the data.
#[test]
fn a_differencing_disk_in_a_package_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ovf = numbered_ovf(d);
    let base = d.join("base.qcow2");
    run_ok(&["create", "-f", "qcow2", s(&base), "64K"]);
    // Disk 1 (file `1`) becomes an overlay of base.qcow2.
    std::fs::remove_file(d.join("1")).unwrap();
    run_ok(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&d.join("1")),
    ]);
    let out = d.join("x.raw");
    fails_clearly(
        &["convert", "--disk", "1", s(&ovf), s(&out)],
        &out,
        &[
            "disk '1' is a differencing image of 'base.qcow2'",
            "must be whole",
        ],
    );
}

/// `check` of a package reads every disk to its end through the manifest: exit 0 when all
/// pass, 2 naming the disk whose digest differs (or whose format is damaged), as a corrupt
/// image's check; a package whose descriptor fails its digest is a corruption too.
#[test]
fn check_reads_every_disk_of_a_package_through_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ova, a, b) = package(d);
    let (code, out, err) = run(&["check", s(&ova)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("disk 0 'vm-disk1.vmdk'"), "{out}");
    assert!(out.contains("disk 1 'vm-disk2.vmdk'"), "{out}");
    assert!(out.contains("No errors were found"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(&["check", "--output=json", s(&ova)])).unwrap();
    assert_eq!(json["check-errors"], 0);
    let sizes: Vec<u64> = json["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["virtual-size"].as_u64().unwrap())
        .collect();
    let len = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(sizes, vec![len(&a), len(&b)]);

    // One byte of the second disk's grains changed: its digest differs.
    let bad = d.join("bad.ova");
    let mut bytes = std::fs::read(&ova).unwrap();
    let at = member_offset(&ova, "vm-disk2.vmdk") as usize;
    let grain = at + 70_000;
    bytes[grain] ^= 0x40;
    std::fs::write(&bad, &bytes).unwrap();
    let (code, out, err) = run(&["check", s(&bad)]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("ERROR: disk 1 'vm-disk2.vmdk'"), "{err}");
    assert!(out.contains("1 errors were found"), "{out}");
    assert!(
        out.contains("disk 0 'vm-disk1.vmdk'"),
        "the good disk is checked too: {out}"
    );

    // A real OVA whose VMDK has damaged line-end bytes (forklift's test data).
    if let Some(shared) = shared_dir("check_reads_every_disk_of_a_package_through_its_manifest") {
        let damaged = shared.join("corpus/forklift-ova/2nd_disk.ova");
        let (code, _, err) = run(&["check", s(&damaged)]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("line-end check bytes"), "{err}");
        let good = shared.join("corpus/forklift-ova/2nd_disk_v3.ova");
        assert_eq!(run(&["check", s(&good)]).0, 0);
    }
}
