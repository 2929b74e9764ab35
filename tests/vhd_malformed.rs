//! Damaged VHDs made at test time: reading fails with one clear line (or, for what the format
//! keeps a copy of, reads with a warning); `check` reports each damage with qemu-img's exit
//! codes and `check -r` repairs what can be repaired safely.

mod common;
mod vhd_support;

use common::*;
use std::path::{Path, PathBuf};
use vhd_support::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 6 MiB dynamic VHD with data in its three blocks; returns (raw, vhd path, vhd bytes).
fn dynamic(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let raw = raw_with(
        dir,
        "src.raw",
        6 * MIB,
        &[(0, 8192), (2 * MIB, MIB), (5 * MIB, 4096)],
    );
    let vhd = dir.join("d.vhd");
    run_ok(&["convert", "-O", "vhd", s(&raw), s(&vhd)]);
    let bytes = std::fs::read(&vhd).unwrap();
    (raw, vhd, bytes)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Reading `path` fails with one line containing `want`; check finds corruption (exit 2) or
/// cannot check (exit 1), never panics.
fn unreadable(path: &Path, want: &str) {
    let out = path.with_extension("out.raw");
    let line = fails_cleanly(&["convert", "-f", "vhd", s(path), s(&out)]);
    assert!(line.contains(want), "expected '{want}' in: {line}");
    assert!(!out.exists());
    let (code, out, err) = run(&["check", "-f", "vhd", s(path)]);
    assert!(code == 1 || code == 2, "check exit {code}: {out}{err}");
}

fn check_code(path: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    args.push(s(path));
    let (code, out, err) = run(&args);
    assert!(!err.contains("panicked"), "{err}");
    (code, out)
}

#[test]
fn truncated_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, _, bytes) = dynamic(d);
    // Cut in the middle of the last block: its BAT entry now points past the end.
    let cut = write(d, "cut.vhd", &bytes[..bytes.len() - 512 - MIB as usize]);
    unreadable(&cut, "past the end of the file");
    let (code, out) = check_code(&cut, &["-r", "all"]);
    assert_eq!(code, 2, "a truncated block cannot be repaired: {out}");
    assert_eq!(
        std::fs::metadata(&cut).unwrap().len(),
        bytes.len() as u64 - 512 - MIB
    );
    // Shorter than a footer, and empty.
    unreadable(&write(d, "tiny.vhd", &bytes[..300]), "footer");
    let line = fails_cleanly(&[
        "convert",
        "-f",
        "vhd",
        s(&write(d, "empty.vhd", &[])),
        s(&d.join("o.raw")),
    ]);
    assert!(line.contains("footer") || line.contains("empty"), "{line}");
    // A fixed VHD missing part of its data.
    let raw = raw_with(d, "f.raw", 4 * MIB, &[(0, 4096)]);
    let fixed = d.join("f.vhd");
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        "-o",
        "subformat=fixed",
        s(&raw),
        s(&fixed),
    ]);
    let fb = std::fs::read(&fixed).unwrap();
    let mut short = fb[..MIB as usize].to_vec();
    short.extend_from_slice(&fb[fb.len() - 512..]);
    unreadable(&write(d, "fshort.vhd", &short), "truncated");
}

#[test]
fn bad_checksums_are_errors_unless_a_good_copy_exists() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _, bytes) = dynamic(d);
    let n = bytes.len();
    // Both footers damaged: nothing to trust.
    let mut both = bytes.clone();
    both[40] ^= 1;
    both[n - 512 + 40] ^= 1;
    unreadable(&write(d, "both.vhd", &both), "checksum");
    // The header's checksum.
    let mut hdr = bytes.clone();
    hdr[512 + 100] ^= 1;
    let p = write(d, "hdr.vhd", &hdr);
    unreadable(&p, "header checksum");
    assert_eq!(check_code(&p, &[]).0, 2);

    // Only the end footer damaged: read through the copy at 0, with a warning; check -r all
    // rewrites it.
    let mut end = bytes.clone();
    end[n - 512 + 40] ^= 1;
    let p = write(d, "end.vhd", &end);
    assert_eq!(diskferry_sha(&p, None, d), sparse_sha256(&raw));
    let info = run_ok(&["info", s(&p)]);
    assert!(
        info.contains("warning") && info.contains("copy at offset 0"),
        "{info}"
    );
    let (code, out) = check_code(&p, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("end footer"), "{out}");
    let (code, out) = check_code(&p, &["-r", "leaks"]);
    assert_eq!(code, 2, "-r leaks does not touch corruptions: {out}");
    let (code, out) = check_code(&p, &["-r", "all"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Repaired"), "{out}");
    assert_eq!(
        std::fs::read(&p).unwrap(),
        bytes,
        "repaired file equals the original"
    );

    // The end footer missing altogether (the file ends after the last block).
    let p = write(d, "nofooter.vhd", &bytes[..n - 512]);
    assert_eq!(diskferry_sha(&p, None, d), sparse_sha256(&raw));
    assert_eq!(check_code(&p, &[]).0, 2);
    assert_eq!(check_code(&p, &["-r", "all"]).0, 0);
    assert_eq!(std::fs::read(&p).unwrap(), bytes);

    // The copy at 0 damaged: the end footer is used; -r all rewrites the copy.
    let mut copy = bytes.clone();
    copy[40] ^= 1;
    let p = write(d, "copy.vhd", &copy);
    let info = run_ok(&["info", s(&p)]);
    assert!(info.contains("copy at offset 0"), "{info}");
    assert_eq!(check_code(&p, &[]).0, 2);
    assert_eq!(check_code(&p, &["-r", "all"]).0, 0);
    assert_eq!(std::fs::read(&p).unwrap(), bytes);
}

#[test]
fn impossible_tables_and_fields_fail_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, _, bytes) = dynamic(d);
    let layout = Layout::read(&bytes);
    let t = layout.table_offset as usize;
    let h = 512usize;
    let edit = |name: &str, f: &dyn Fn(&mut Vec<u8>)| -> PathBuf {
        let mut b = bytes.clone();
        f(&mut b);
        write(d, name, &b)
    };
    // A BAT entry past the end of the file, and one at the end of the address space.
    let past = edit("past.vhd", &|b| {
        let sector = (b.len() / 512 + 100) as u32;
        put32(b, t + 4, sector)
    });
    unreadable(&past, "BAT entry 1 points past the end");
    let (_, out) = check_code(&past, &[]);
    assert!(out.contains("BAT entry 1"), "{out}");
    unreadable(
        &edit("far.vhd", &|b| put32(b, t + 8, 0xFFFF_FFF0)),
        "BAT entry 2",
    );
    // A BAT claiming a billion entries: reading needs (and reads) only the entries that cover
    // the disk, as blktap does; check measures the claim against the file, allocating
    // nothing, and reports it.
    let huge = edit("huge.vhd", &|b| {
        put32(b, h + 28, 0x4000_0000);
        fix_header(&mut b[h..]);
    });
    let (_, want) = diskferry_sha(&d.join("d.vhd"), None, d);
    assert_eq!(diskferry_sha(&huge, None, d).1, want);
    let (code, out) = check_code(&huge, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("block allocation table"), "{out}");
    // Too few entries for the disk.
    unreadable(
        &edit("few.vhd", &|b| {
            put32(b, h + 28, 1);
            fix_header(&mut b[h..]);
        }),
        "too few",
    );
    // A block size that is no power of two.
    unreadable(
        &edit("bs.vhd", &|b| {
            put32(b, h + 32, 3 << 20);
            fix_header(&mut b[h..]);
        }),
        "block size",
    );
    // The footer sends the header past the end (both copies, checksums fixed).
    unreadable(
        &edit("hdr-off.vhd", &|b| {
            let n = b.len();
            for at in [0, n - 512] {
                put64(b, at + 16, 1 << 40);
                fix_footer(&mut b[at..]);
            }
        }),
        "past the end",
    );
    // An unknown disk type.
    unreadable(
        &edit("type.vhd", &|b| {
            let n = b.len();
            for at in [0, n - 512] {
                put32(b, at + 60, 9);
                fix_footer(&mut b[at..]);
            }
        }),
        "disk type",
    );
}

#[test]
fn check_reports_overlaps_and_leaks_and_repairs_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, vhd, bytes) = dynamic(d);
    let (code, out) = check_code(&vhd, &["--output", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["corruptions"].as_u64(), v["leaks"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(v["total-clusters"], 3);
    assert_eq!(v["allocated-clusters"], 3);
    assert_eq!(v["image-end-offset"], bytes.len());

    // Two entries naming the same block.
    let layout = Layout::read(&bytes);
    let t = layout.table_offset as usize;
    let mut b = bytes.clone();
    let e0 = be32(&b, t);
    put32(&mut b, t + 4, e0);
    let p = write(d, "overlap.vhd", &b);
    let (code, out) = check_code(&p, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("overlap"), "{out}");
    assert_eq!(
        check_code(&p, &["-r", "all"]).0,
        2,
        "overlaps are not repaired"
    );
    // A block over the BAT.
    let mut b = bytes.clone();
    put32(&mut b, t + 4, (layout.table_offset / 512) as u32);
    let (code, out) = check_code(&write(d, "overbat.vhd", &b), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("block allocation table"), "{out}");

    // Unused space before the footer (an interrupted writer): a leak, repaired by -r leaks.
    let mut b = bytes[..bytes.len() - 512].to_vec();
    b.extend(std::iter::repeat_n(0u8, 3 * MIB as usize));
    b.extend_from_slice(&bytes[bytes.len() - 512..]);
    let p = write(d, "leak.vhd", &b);
    assert_eq!(diskferry_sha(&p, None, d), sparse_sha256(&raw));
    let (code, out) = check_code(&p, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("leaked"), "{out}");
    let (code, out) = check_code(&p, &["-r", "leaks"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read(&p).unwrap(), bytes, "the leak is cut off");
    // Not a VHD at all: check cannot check.
    let junk = write(d, "junk.vhd", &vec![0x55u8; 4096]);
    assert_eq!(check_code(&junk, &["-f", "vhd"]).0, 1);
}

#[test]
fn differencing_damage_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = raw_with(d, "p.raw", 4 * MIB, &[(0, 4096)]);
    let parent = d.join("p.vhd");
    run_ok(&["convert", "-O", "vhd", s(&raw), s(&parent)]);
    let child = d.join("c.vhd");
    run_ok(&["create", "-f", "vhd", "-b", "p.vhd", s(&child)]);
    assert_eq!(check_code(&child, &[]).0, 0);
    // Locators pointing past the end: a warning; the parent's name still finds it.
    let mut b = std::fs::read(&child).unwrap();
    for i in 0..2 {
        put64(&mut b, 512 + 576 + 24 * i + 16, 1 << 40);
    }
    fix_header(&mut b[512..]);
    let p = write(d, "c2.vhd", &b);
    assert_eq!(diskferry_sha(&p, None, d), sparse_sha256(&raw));
    let info = run_ok(&["info", s(&p)]);
    assert!(
        info.contains("warning") && info.contains("parent locator"),
        "{info}"
    );
    let (code, out) = check_code(&p, &[]);
    assert_eq!(code, 0, "warnings only: {out}");
    assert!(out.contains("Warning"), "{out}");
    // A parent with another UUID, and a missing parent: corruptions.
    run_ok(&["convert", "-O", "vhd", s(&raw), s(&d.join("other.vhd"))]);
    std::fs::rename(d.join("other.vhd"), &parent).unwrap();
    let (code, out) = check_code(&child, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("UUID"), "{out}");
    std::fs::remove_file(&parent).unwrap();
    let (code, out) = check_code(&child, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not found"), "{out}");
}

#[test]
fn short_footers_of_old_virtual_pc_are_read() {
    // Virtual PC before 2004 wrote 511-byte footers; blktap and dissect read them too.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = raw_with(d, "f.raw", MIB, &[(0, 4096)]);
    let fixed = d.join("f.vhd");
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        "-o",
        "subformat=fixed",
        s(&raw),
        s(&fixed),
    ]);
    let mut b = std::fs::read(&fixed).unwrap();
    // The footer's last byte (reserved, zero) is not stored.
    assert_eq!(b.pop(), Some(0));
    let p = write(d, "short.vhd", &b);
    assert_eq!(diskferry_sha(&p, None, d), sparse_sha256(&raw));
}
