//! Every VMDK of ../shared/corpus: the ones qemu-img reads convert to raw with the sha256 in
//! MANIFEST.tsv; incomplete sets and malformed files fail with a clear one-line error.

mod common;

use common::*;
use std::path::Path;

fn convert_sha(image: &Path, dir: &Path) -> Result<String, String> {
    let out = dir.join("out.raw");
    let _ = std::fs::remove_file(&out);
    let (code, _, err) = run(&[
        "convert",
        "-O",
        "raw",
        image.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(!err.contains("panicked"), "{}: {err}", image.display());
    if code != 0 {
        assert!(!out.exists(), "a failed convert left {}", out.display());
        return Err(err);
    }
    Ok(sha256_file(&out))
}

/// A clear error: one line, naming the file, no panic.
fn assert_clear_error(what: &str, err: &str, names: &str) {
    let text = err.trim_end();
    assert!(!text.is_empty(), "{what}: no error message");
    assert_eq!(
        text.lines().count(),
        1,
        "{what}: error is not one line: {text}"
    );
    assert!(text.starts_with("diskferry: "), "{what}: {text}");
    assert!(
        text.contains(names),
        "{what}: error does not name {names}: {text}"
    );
}

#[test]
fn corpus_vmdks_convert_to_the_manifest_sha256() {
    let test = "corpus_vmdks_convert_to_the_manifest_sha256";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for row in manifest(&shared) {
        if !row.format.starts_with("VMDK") {
            continue;
        }
        let Some(want) = &row.raw_sha256 else {
            continue;
        };
        let image = corpus_file(&shared, &row.path, dir.path());
        let got = convert_sha(&image, dir.path())
            .unwrap_or_else(|e| panic!("{}: diskferry failed: {e}", row.path));
        assert_eq!(&got, want, "{}: wrong content", row.path);
        checked += 1;
    }
    // The manifest lists 20 VMDK rows with a sha256 (the .bz2 copies included).
    assert!(checked >= 20, "only {checked} corpus VMDKs were checked");
    eprintln!("{checked} corpus VMDKs match MANIFEST.tsv");
}

#[test]
fn malformed_and_incomplete_corpus_vmdks_fail_clearly() {
    let test = "malformed_and_incomplete_corpus_vmdks_fail_clearly";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("qemu-iotests/afl9.vmdk", "afl9.vmdk"),
        ("qemu-iotests/afl9-orig2015.vmdk", "afl9-orig2015.vmdk"),
        ("qemu-iotests/bz2/afl9.vmdk.bz2", "afl9.vmdk"),
        (
            "qemu-iotests/bz2/afl9-orig2015.vmdk.bz2",
            "afl9-orig2015.vmdk",
        ),
        ("go-vmdk-parser/vmdk-invalid.img", "descriptor"),
        // Incomplete sets: the error names the missing extent.
        ("vmdk-descriptors/ms3-win.vmdk", "disk-s001.vmdk"),
        (
            "vmdk-rs/vmfs_thick-000001.vmdk",
            "vmfs_thick-000001-delta.vmdk",
        ),
        ("libyal/libvmdk/descriptor_file.1", "test1.vmdk"),
    ];
    for (rel, names) in cases {
        let image = corpus_file(&shared, rel, dir.path());
        let err = convert_sha(&image, dir.path()).expect_err(rel);
        assert_clear_error(rel, &err, names);
        let (code, _, err) = run(&["info", image.to_str().unwrap()]);
        assert_ne!(code, 0, "{rel}: info succeeded");
        assert_clear_error(rel, &err, names);
    }
}

#[test]
fn a_bare_sparse_extent_reads_as_its_own_disk() {
    let test = "a_bare_sparse_extent_reads_as_its_own_disk";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    // The only extent of vmdk-rs/twoGbMaxExtentSparse.vmdk, opened without its descriptor,
    // holds the same 10 MiB disk.
    let dir = tempfile::tempdir().unwrap();
    let bare = shared.join("corpus/vmdk-rs/twoGbMaxExtentSparse-s001.vmdk");
    let whole = shared.join("corpus/vmdk-rs/twoGbMaxExtentSparse.vmdk");
    assert_eq!(
        convert_sha(&bare, dir.path()).unwrap(),
        convert_sha(&whole, dir.path()).unwrap()
    );
}

/// The corpus's SESPARSE extent comes without its descriptor. qemu-img reads such extents
/// only through a descriptor, so we give it one; qemu-img (through the descriptor), dissect
/// (on the bare extent) and diskferry (both ways) must agree.
#[test]
fn sesparse_extent_reads_like_qemu_and_dissect() {
    let test = "sesparse_extent_reads_like_qemu_and_dissect";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let extent = corpus_file(
        &shared,
        "dissect.hypervisor/vmdk/sesparse.vmdk.gz",
        dir.path(),
    );
    let descriptor = dir.path().join("se-desc.vmdk");
    std::fs::write(
        &descriptor,
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"seSparse\"\n\n# Extent description\nRW 1048576 SESPARSE \"sesparse.vmdk\"\n",
    )
    .unwrap();
    let qraw = dir.path().join("q.raw");
    qemu_img_ok(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        descriptor.to_str().unwrap(),
        qraw.to_str().unwrap(),
    ]);
    let want = sha256_file(&qraw);
    assert_eq!(convert_sha(&descriptor, dir.path()).unwrap(), want);
    assert_eq!(convert_sha(&extent, dir.path()).unwrap(), want);
    if let Some(readings) = oracle_read(test, "vmdk", &extent) {
        let dissect = readings.iter().find(|r| r.reader == "dissect").unwrap();
        assert_eq!(
            dissect.result.as_ref().map(|(_, s)| s.clone()),
            Ok(want.clone()),
            "dissect"
        );
    }
    // Data really is there (the test would be weak on an all-zero disk).
    assert_ne!(
        want,
        "9acca8e8c22201155389f65abbf6bc9723edc7384ead80503839f49dcc56d767"
    );
    let out = run_ok(&["info", "--output", "json", extent.to_str().unwrap()]);
    assert!(
        out.contains("SESPARSE") && out.contains("536870912"),
        "{out}"
    );
}
