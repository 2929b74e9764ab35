//! Differencing VHDs: made with `create -b` and `convert -B`, read through chains of any depth
//! (as libyal reads them with their parents), found through their locators after moving, and
//! refused clearly when the parent is missing, wrong or loops.

mod common;
mod vhd_support;

use common::*;
use std::path::{Path, PathBuf};
use vhd_support::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// base.raw (data at 0..64K, 1M..1M+8K, 3M..3M+1M) → base.vhd; changed.raw = base.raw with
/// new data, zeros over some of the base's data, and data past the base's allocation.
fn base_and_changed(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let size = 6 * MIB + 512;
    let base_raw = raw_with(
        dir,
        "base.raw",
        size,
        &[(0, 64 << 10), (MIB, 8192), (3 * MIB, MIB)],
    );
    let base = dir.join("base.vhd");
    run_ok(&["convert", "-O", "vhd", s(&base_raw), s(&base)]);
    let mut bytes = std::fs::read(&base_raw).unwrap();
    let fresh = common::pseudo_random(4096, 99);
    bytes[8192..8192 + 4096].copy_from_slice(&fresh);
    bytes[MIB as usize..MIB as usize + 4096].fill(0); // zeros where the base has data
    bytes[5 * MIB as usize..5 * MIB as usize + 4096].copy_from_slice(&fresh);
    let changed = dir.join("changed.raw");
    std::fs::write(&changed, &bytes).unwrap();
    (base_raw, base, changed)
}

/// Converts `changed` into the differencing VHD `child` over the `base.vhd` beside it (named
/// as a relative path, as a user would).
fn convert_over_base(changed: &Path, child: &Path) {
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        "-B",
        "base.vhd",
        s(changed),
        s(child),
    ]);
}

#[test]
fn create_with_backing_reads_as_the_parent() {
    let test = "create_with_backing_reads_as_the_parent";
    let dir = tempfile::tempdir().unwrap();
    let (base_raw, base, _) = base_and_changed(dir.path());
    let child = dir.path().join("child.vhd");
    run_ok(&["create", "-f", "vhd", "-b", "base.vhd", s(&child)]);
    let (code, out, _) = run(&["compare", s(&child), s(&base_raw)]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&child)])).unwrap();
    assert_eq!(
        v["virtual-size"],
        6 * MIB + 512,
        "size taken from the parent"
    );
    assert_eq!(v["format-specific"]["data"]["subformat"], "differencing");
    assert!(
        v["backing-filename"]
            .as_str()
            .unwrap()
            .ends_with("base.vhd"),
        "{v}"
    );
    // Nothing but metadata: no block was allocated.
    assert!(std::fs::metadata(&child).unwrap().len() < 8192);
    // Compared only when libyal ran (a missing libyal is a skip line, or a failure when
    // DISKFERRY_REQUIRE_PEERS is set): never against the expected value standing in for it.
    if let Some(got) = libyal_chain_sha(test, &[&child, &base]) {
        assert_eq!(
            got,
            sparse_sha256(&base_raw),
            "libyal reading child + parent"
        );
    }
}

#[test]
fn convert_with_backing_stores_only_the_differences() {
    let test = "convert_with_backing_stores_only_the_differences";
    let dir = tempfile::tempdir().unwrap();
    let (_, base, changed) = base_and_changed(dir.path());
    let want = sparse_sha256(&changed);
    let child = dir.path().join("child.vhd");
    convert_over_base(&changed, &child);
    assert_eq!(diskferry_sha(&child, None, dir.path()), want);
    if let Some(got) = libyal_chain_sha(test, &[&child, &base]) {
        assert_eq!(got, want, "libyal reading child + parent");
    }
    // Two blocks hold differences (blocks 0 and 2 of 2 MiB); block 1 and 3 are untouched.
    // (The workers that place data give blocks their places as data arrives, so the order of
    // blocks in the file may vary from run to run; their content may not.)
    let layout = Layout::read(&std::fs::read(&child).unwrap());
    let mut blocks = layout.blocks();
    blocks.sort();
    let allocated: Vec<usize> = blocks.iter().map(|b| b.0).collect();
    assert_eq!(allocated, vec![0, 2], "blocks stored in the child");
    // Only the changed sectors are marked: the rest of block 0 comes from the parent.
    let bytes = std::fs::read(&child).unwrap();
    let bitmap = &bytes[blocks[0].1 as usize..][..512];
    let set: Vec<usize> = (0..4096)
        .filter(|i| bitmap[i / 8] & (0x80 >> (i % 8)) != 0)
        .collect();
    let expected: Vec<usize> = (16..24).chain(2048..2056).collect();
    assert_eq!(set, expected, "sector bitmap of block 0");

    // Through a pipe (the BAT is planned from the source and the parent): same content.
    let piped = dir.path().join("piped.vhd");
    let out = diskferry()
        .current_dir(dir.path())
        .args(["convert", "-O", "vhd", "-B", "base.vhd", s(&changed), "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&piped, &out.stdout).unwrap();
    assert_eq!(diskferry_sha(&piped, None, dir.path()), want);
    if let Some(got) = libyal_chain_sha(test, &[&piped, &base]) {
        assert_eq!(got, want, "libyal reading the piped child + parent");
    }
    let (code, out, err) = run(&["check", s(&child)]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn chains_of_depth_three_read_through() {
    let test = "chains_of_depth_three_read_through";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, base, changed) = base_and_changed(d);
    let mid = d.join("mid.vhd");
    convert_over_base(&changed, &mid);
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes[4 * MIB as usize..4 * MIB as usize + 512].fill(0x77);
    bytes[0..512].fill(0);
    let top_raw = d.join("top.raw");
    std::fs::write(&top_raw, &bytes).unwrap();
    let top = d.join("top.vhd");
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        "-B",
        "mid.vhd",
        s(&top_raw),
        s(&top),
    ]);
    let want = sparse_sha256(&top_raw);
    assert_eq!(diskferry_sha(&top, None, d), want);
    if let Some(got) = libyal_chain_sha(test, &[&top, &mid, &base]) {
        assert_eq!(got, want);
    }
    let chain: Vec<serde_json::Value> = serde_json::from_str(&run_ok(&[
        "info",
        "--backing-chain",
        "--output",
        "json",
        s(&top),
    ]))
    .unwrap();
    let names: Vec<&str> = chain
        .iter()
        .map(|i| i["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names[1].ends_with("mid.vhd") && names[2].ends_with("base.vhd"),
        "{names:?}"
    );
}

#[test]
fn parents_are_found_after_moving_the_chain_or_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    std::fs::create_dir(&a).unwrap();
    let (_, _, changed) = base_and_changed(&a);
    let want = sparse_sha256(&changed);
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        "-B",
        "base.vhd",
        s(&changed),
        s(&a.join("child.vhd")),
    ]);
    // The whole chain moves: the relative locator (W2ru) finds the parent.
    let b = dir.path().join("b");
    std::fs::rename(&a, &b).unwrap();
    assert_eq!(diskferry_sha(&b.join("child.vhd"), None, &b), want);
    // Only the child moves, back where the chain was made: the relative path is now wrong,
    // the absolute locator (W2ku) still names the old place...
    std::fs::create_dir(&a).unwrap();
    std::fs::rename(b.join("child.vhd"), a.join("child.vhd")).unwrap();
    std::fs::rename(b.join("base.vhd"), a.join("base.vhd")).unwrap();
    let elsewhere = dir.path().join("c");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::rename(a.join("child.vhd"), elsewhere.join("child.vhd")).unwrap();
    assert_eq!(
        diskferry_sha(&elsewhere.join("child.vhd"), None, &elsewhere),
        want
    );
    // ... and the parent's name beside the child is the last resort.
    std::fs::rename(a.join("base.vhd"), elsewhere.join("base.vhd")).unwrap();
    let mut bytes = std::fs::read(elsewhere.join("child.vhd")).unwrap();
    let layout = Layout::read(&bytes);
    for (_, _, len, off) in layout.locators() {
        bytes[off as usize..(off + len as u64) as usize].fill(b'x');
    }
    std::fs::write(elsewhere.join("child.vhd"), &bytes).unwrap();
    let (code, _, err) = run(&[
        "convert",
        s(&elsewhere.join("child.vhd")),
        s(&elsewhere.join("o.raw")),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sparse_sha256(&elsewhere.join("o.raw")), want);
}

#[test]
fn a_missing_parent_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, base, changed) = base_and_changed(dir.path());
    let child = dir.path().join("child.vhd");
    convert_over_base(&changed, &child);
    std::fs::remove_file(&base).unwrap();
    let line = fails_cleanly(&["convert", s(&child), s(&dir.path().join("o.raw"))]);
    assert!(
        line.contains("not found") && line.contains("base.vhd"),
        "{line}"
    );
    // info without --backing-chain still describes the child.
    let info = run_ok(&["info", s(&child)]);
    assert!(
        info.contains("backing file:") && info.contains("base.vhd"),
        "{info}"
    );
}

#[test]
fn a_parent_with_another_uuid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (base_raw, base, changed) = base_and_changed(dir.path());
    let child = dir.path().join("child.vhd");
    convert_over_base(&changed, &child);
    // Another disk with the same name and content: a new UUID.
    std::fs::remove_file(&base).unwrap();
    run_ok(&["convert", "-O", "vhd", s(&base_raw), s(&base)]);
    let line = fails_cleanly(&["convert", s(&child), s(&dir.path().join("o.raw"))]);
    assert!(line.contains("UUID"), "{line}");
}

#[test]
fn a_parent_loop_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = raw_with(d, "r.raw", 4 * MIB, &[(0, 4096)]);
    let p = d.join("p.vhd");
    run_ok(&["convert", "-O", "vhd", s(&raw), s(&p)]);
    let p_uuid = std::fs::read(&p).unwrap()[68..84].to_vec();
    let c = d.join("c.vhd");
    run_ok(&["create", "-f", "vhd", "-b", "p.vhd", s(&c)]);
    // q: a child of c, given p's UUID and put in p's place: c → p(=q) → c → ...
    let q = d.join("q.vhd");
    run_ok(&["create", "-f", "vhd", "-b", "c.vhd", s(&q)]);
    let mut bytes = std::fs::read(&q).unwrap();
    let n = bytes.len();
    for at in [0, n - 512] {
        bytes[at + 68..at + 84].copy_from_slice(&p_uuid);
        fix_footer(&mut bytes[at..at + 512]);
    }
    std::fs::write(&p, &bytes).unwrap();
    std::fs::remove_file(&q).unwrap();
    let line = fails_cleanly(&["convert", s(&c), s(&d.join("o.raw"))]);
    assert!(line.contains("loop"), "{line}");
}

#[test]
fn only_vhd_parents_and_dynamic_children() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = raw_with(d, "r.raw", 4 * MIB, &[(0, 4096)]);
    let line = fails_cleanly(&[
        "create",
        "-f",
        "vhd",
        "-b",
        "r.raw",
        "-F",
        "raw",
        s(&d.join("c.vhd")),
    ]);
    assert!(line.contains("must be a VHD"), "{line}");
    run_ok(&["convert", "-O", "vhd", s(&raw), s(&d.join("p.vhd"))]);
    let line = fails_cleanly(&[
        "create",
        "-f",
        "vhd",
        "-o",
        "subformat=fixed",
        "-b",
        "p.vhd",
        s(&d.join("c.vhd")),
    ]);
    assert!(line.contains("fixed"), "{line}");
    assert!(!d.join("c.vhd").exists());
}

#[test]
fn child_locators_and_parent_fields_follow_windows_and_blktap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, base, _) = base_and_changed(d);
    let child = d.join("child.vhd");
    run_ok(&["create", "-f", "vhd", "-b", "base.vhd", s(&child)]);
    let bytes = std::fs::read(&child).unwrap();
    let layout = Layout::read(&bytes);
    let parent_bytes = std::fs::read(&base).unwrap();
    // Parent UUID and timestamp are the parent footer's.
    assert_eq!(&layout.header[40..56], &parent_bytes[68..84]);
    assert_eq!(be32(&layout.header, 56), be32(&parent_bytes, 24));
    // The unicode name is the parent's file name (blktap requires it to match the basename
    // of every locator).
    let name: Vec<u16> = layout.header[64..576]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    assert_eq!(String::from_utf16(&name).unwrap(), "base.vhd");
    let locs = layout.locators();
    let codes: Vec<&[u8]> = locs.iter().map(|l| &l.0[..]).collect();
    assert_eq!(codes, vec![&b"W2ru"[..], &b"W2ku"[..]]);
    let text = |l: &([u8; 4], u32, u32, u64)| -> String {
        let raw = &bytes[l.3 as usize..(l.3 + l.2 as u64) as usize];
        let u: Vec<u16> = raw
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&u).unwrap()
    };
    assert_eq!(text(&locs[0]), ".\\base.vhd");
    let abs = std::fs::canonicalize(&base).unwrap();
    assert_eq!(text(&locs[1]), abs.to_str().unwrap().replace('/', "\\"));
    for l in &locs {
        assert_eq!(l.3 % 512, 0, "locator data is sector-aligned");
        assert!(
            l.1 as u64 >= l.2 as u64 && l.1 % 512 == 0,
            "space in bytes, whole sectors"
        );
        assert!(
            l.3 + l.1 as u64 <= layout.table_offset,
            "locators before the BAT"
        );
    }
}
