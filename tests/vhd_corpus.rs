//! Every VHD of ../shared/corpus: the ones qemu-img reads convert to raw with the sha256 of
//! MANIFEST.tsv; the differencing one whose parent is missing, the fuzzer files, the hand-edited
//! files with stale checksums and the structure fragments fail with one clear line.

mod common;
mod vhd_support;

use common::*;
use std::path::{Path, PathBuf};
use vhd_support::*;

/// VHD rows (not VHDX) of the manifest.
fn vhd_rows(shared: &Path) -> Vec<ManifestRow> {
    manifest(shared)
        .into_iter()
        .filter(|r| r.format.starts_with("VHD") && !r.format.starts_with("VHDX"))
        .collect()
}

fn is_fragment(r: &ManifestRow) -> bool {
    r.made_by.starts_with("FRAGMENT")
}

/// The rows qemu-img converts (and whose content is the disk's own: a differencing disk's
/// qemu conversion ignores its parent).
fn readable(r: &ManifestRow) -> bool {
    r.raw_sha256.is_some() && !r.malformed && !r.format.contains("differencing") && !is_fragment(r)
}

/// Converts a corpus VHD with and without `-f vhd` and compares with the manifest.
fn check_row(shared: &Path, row: &ManifestRow, dir: &Path) {
    let file = corpus_file(shared, &row.path, dir);
    let want = row.raw_sha256.clone().unwrap();
    let (size, sha) = diskferry_sha(&file, Some("vhd"), dir);
    assert_eq!(sha, want, "{}: content differs from MANIFEST", row.path);
    if let Some(v) = row.virtual_size {
        assert_eq!(
            size, v,
            "{}: virtual size differs from qemu-img's",
            row.path
        );
    }
    // Detection from the content alone (fixed VHDs included, which qemu-img calls raw).
    let (code, out, err) = run(&["info", "--output", "json", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{}: {err}", row.path);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], "vhd", "{}", row.path);
    // Real files from Windows, Virtual PC, Disk2vhd and qemu check clean (warnings aside).
    let (code, out, err) = run(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{}: check found problems: {out}{err}", row.path);
}

/// Rows whose decompressed content is a file already in the corpus uncompressed are checked
/// once: the bytes are compared, and the hash is not computed twice.
fn dedupe<'a>(shared: &Path, rows: &'a [ManifestRow], dir: &Path) -> Vec<&'a ManifestRow> {
    let mut seen: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut out = Vec::new();
    for r in rows {
        let file = corpus_file(shared, &r.path, dir);
        let bytes = std::fs::read(&file).unwrap();
        if let Some((other, _)) = seen.iter().find(|(_, b)| *b == bytes) {
            eprintln!(
                "{} is byte-identical to {}: checked once",
                r.path,
                other.display()
            );
            continue;
        }
        seen.push((file, bytes));
        out.push(r);
    }
    out
}

const HUGE: u64 = 100 << 30;

#[test]
fn readable_corpus_vhds_convert_to_the_manifest_sha256() {
    let test = "readable_corpus_vhds_convert_to_the_manifest_sha256";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<ManifestRow> = vhd_rows(&shared)
        .into_iter()
        .filter(|r| readable(r) && r.virtual_size.is_some_and(|v| v < HUGE))
        .collect();
    assert!(
        rows.len() >= 8,
        "expected the corpus's VHDs, found {}",
        rows.len()
    );
    for row in dedupe(&shared, &rows, dir.path()) {
        check_row(&shared, row, dir.path());
    }
}

/// The two 127 GiB disks (Hyper-V and Virtual PC, the same geometry read by two size rules)
/// are hashed in full, each in its own test so that they run in parallel.
fn huge(name: &str, test: &str) {
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<ManifestRow> = vhd_rows(&shared)
        .into_iter()
        .filter(|r| readable(r) && r.path.contains(name))
        .collect();
    assert!(!rows.is_empty(), "{name} is not in the corpus manifest");
    for row in dedupe(&shared, &rows, dir.path()) {
        check_row(&shared, row, dir.path());
    }
}

#[test]
fn hyperv_127_gib_dynamic_vhd_matches_the_manifest() {
    huge(
        "hyperv2012r2-dynamic",
        "hyperv_127_gib_dynamic_vhd_matches_the_manifest",
    );
}

#[test]
fn virtual_pc_127_gib_dynamic_vhd_matches_the_manifest() {
    huge(
        "virtualpc-dynamic",
        "virtual_pc_127_gib_dynamic_vhd_matches_the_manifest",
    );
}

#[test]
fn size_rules_follow_the_creator() {
    let Some(shared) = shared_dir("size_rules_follow_the_creator") else {
        return;
    };
    let rule = |rel: &str| -> (u64, String) {
        let p = shared.join("corpus").join(rel);
        let v: serde_json::Value =
            serde_json::from_str(&run_ok(&["info", "--output", "json", p.to_str().unwrap()]))
                .unwrap();
        (
            v["virtual-size"].as_u64().unwrap(),
            v["format-specific"]["data"]["size-rule"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    // Same footer size, two creators: Virtual PC's disk is its CHS size, Hyper-V's its
    // current_size (qemu-img 10 reports the same two sizes).
    assert_eq!(
        rule("qemu-iotests/virtualpc-dynamic.vhd"),
        (136_363_130_880, "chs".into())
    );
    assert_eq!(
        rule("qemu-iotests/hyperv2012r2-dynamic.vhd"),
        (136_365_211_648, "current_size".into())
    );
    assert_eq!(rule("dfvfs/ext2.vhd"), (4_212_736, "chs".into()));
}

#[test]
fn a_differencing_corpus_vhd_without_its_parent_fails_clearly() {
    let Some(shared) = shared_dir("a_differencing_corpus_vhd_without_its_parent_fails_clearly")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let child = shared.join("corpus/dfvfs/fat-differential.vhd");
    let out = dir.path().join("o.raw");
    let line = fails_cleanly(&["convert", child.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(
        line.contains("fat-parent.vhd") && line.contains("not found"),
        "{line}"
    );
    assert!(!out.exists());
    // Its own metadata still reads: Windows wrote the parent's absolute path as its name and
    // both Windows locators.
    let v: serde_json::Value = serde_json::from_str(&run_ok(&[
        "info",
        "--output",
        "json",
        child.to_str().unwrap(),
    ]))
    .unwrap();
    let data = &v["format-specific"]["data"];
    assert_eq!(data["subformat"], "differencing");
    assert_eq!(data["parent-locators"], serde_json::json!(["W2ku", "W2ru"]));
    assert!(
        v["backing-filename"]
            .as_str()
            .unwrap()
            .contains("fat-parent.vhd"),
        "{v}"
    );
    let (code, out, _) = run(&["check", child.to_str().unwrap()]);
    assert_eq!(code, 2, "check reports the missing parent: {out}");
    assert!(out.contains("not found"), "{out}");
}

#[test]
fn malformed_and_fragmentary_corpus_vhds_fail_with_one_clear_line() {
    let Some(shared) = shared_dir("malformed_and_fragmentary_corpus_vhds_fail_with_one_clear_line")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<ManifestRow> = vhd_rows(&shared)
        .into_iter()
        .filter(|r| r.malformed || is_fragment(r))
        .collect();
    assert!(rows.len() >= 5, "found {} malformed rows", rows.len());
    for row in &rows {
        let file = corpus_file(&shared, &row.path, dir.path());
        let f = file.to_str().unwrap();
        let out = dir.path().join("o.raw");
        let line = fails_cleanly(&["convert", "-f", "vhd", f, out.to_str().unwrap()]);
        assert!(
            line.contains(file.file_name().unwrap().to_str().unwrap()),
            "{line}"
        );
        assert!(!out.exists(), "{}: a failed convert left output", row.path);
        let (code, _, err) = run(&["check", "-f", "vhd", f]);
        assert!(
            code == 1 || code == 2,
            "{}: check exit {code}: {err}",
            row.path
        );
        assert!(!err.contains("panicked"), "{err}");
        eprintln!("{}: {line}", row.path);
    }
    // The stale checksums of the hand-edited dfvfs files are named as such.
    let line = fails_cleanly(&[
        "info",
        "-f",
        "vhd",
        shared.join("corpus/dfvfs/image.vhd").to_str().unwrap(),
    ]);
    assert!(line.contains("checksum"), "{line}");
    let afl = corpus_file(&shared, "qemu-iotests/afl5.img", dir.path());
    let line = fails_cleanly(&["info", "-f", "vhd", afl.to_str().unwrap()]);
    assert!(line.contains("afl5.img"), "{line}");
}
