//! VHDX `measure` (qemu-img cannot measure VHDX: "does not support size measurement"), checked
//! against the size of the files diskferry's converter writes, and the in-place operations
//! diskferry does not do yet refused clearly.

mod common;

use common::*;
use diskferry::Capability;
use diskferry::edit::MeasureRequest;
use diskferry::formats::vhdx::FORMAT;
use diskferry::options::FormatOptions;
use std::path::Path;

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn measure_predicts_the_converted_file_size() {
    let test = "measure_predicts_the_converted_file_size";
    let dir = tempfile::tempdir().unwrap();
    let size = 200 * MIB + 512;
    let raw = dir.path().join("m.raw");
    let regions = [(0, 4096), (5 * MIB, 3 * MIB), (199 * MIB, 10)];
    make_raw(&raw, size, &regions);
    let full = dir.path().join("full.raw");
    make_raw(&full, size, &[(0, size)]);
    let allocated: Vec<std::ops::Range<u64>> = regions.iter().map(|&(o, l)| o..o + l).collect();
    for opts in [
        "",
        "block_size=1M",
        "block_size=64M,log_size=4M",
        "subformat=fixed",
        "logical_sector_size=4096",
    ] {
        let options = FormatOptions::parse(FORMAT, FORMAT.driver().create_options(), opts).unwrap();
        let m = FORMAT
            .driver()
            .measure(&MeasureRequest {
                virtual_size: size,
                allocated: &allocated,
                options: &options,
            })
            .unwrap();
        for (src, want) in [(&raw, m.required), (&full, m.fully_allocated)] {
            let out = dir.path().join("m.vhdx");
            let _ = std::fs::remove_file(&out);
            let mut args = vec!["convert", "-O", "vhdx"];
            if !opts.is_empty() {
                args.extend(["-o", opts]);
            }
            args.extend([s(src), s(&out)]);
            run_ok(&args);
            assert_eq!(
                want,
                std::fs::metadata(&out).unwrap().len(),
                "-o {opts} {}",
                src.display()
            );
        }
    }
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
