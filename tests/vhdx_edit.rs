//! VHDX `measure` (qemu-img cannot measure VHDX: "does not support size measurement"), checked
//! against the size of the files diskferry's converter writes, and the in-place operations
//! diskferry does not do yet refused clearly.

mod common;
mod edit_support;

use common::*;
use diskferry::Capability;
use diskferry::formats::vhdx::FORMAT;
use edit_support::assert_measure_matches_conversion;
use std::path::Path;

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn measure_predicts_the_converted_file_size() {
    let test = "measure_predicts_the_converted_file_size";
    let dir = tempfile::tempdir().unwrap();
    assert_measure_matches_conversion(
        FORMAT,
        dir.path(),
        &[
            "",
            "block_size=1M",
            "block_size=64M,log_size=4M",
            "subformat=fixed",
            "logical_sector_size=4096",
        ],
        200 * MIB + 512,
        &[(0, 4096), (5 * MIB, 3 * MIB), (199 * MIB, 10)],
    );
    if have_qemu(test) {
        let (code, _, err) = qemu_img(&["measure", "-O", "vhdx", "--size", "10M"]);
        assert_ne!(
            code, 0,
            "qemu-img learnt to measure VHDX: compare with it directly: {err}"
        );
    }
}

#[test]
fn in_place_changes_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.vhdx");
    run_ok(&["create", "-f", "vhdx", s(&img), "10M"]);
    assert!(FORMAT.can(Capability::Measure));
    for cap in [
        Capability::WriteInPlace,
        Capability::Resize,
        Capability::Rebase,
    ] {
        assert!(!FORMAT.can(cap), "{cap:?} is listed: test it");
    }
    let (code, _, err) = run(&["resize", "-f", "vhdx", s(&img), "20M"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("resizing vhdx images is not supported"),
        "{err}"
    );
}
