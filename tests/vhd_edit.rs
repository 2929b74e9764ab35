//! VHD changed in place: writes through `open_mut` (dynamic, fixed, differencing, partial
//! sectors and blocks, both kinds of clearing), `resize` (fixed and dynamic, the BAT grown by
//! moving blocks), `set_backing` and `measure`, each checked against qemu-io/qemu-img where
//! qemu can do the same, the independent readers otherwise, and killed at random points.

mod common;
mod edit_support;
mod vhd_support;

use common::*;
use diskferry::edit::{Clear, NewBacking, Shrink};
use diskferry::formats::vhd::FORMAT;
use diskferry::formats::vhd::footer::{Footer, Geometry};
use diskferry::gate::Gate;
use edit_support::*;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A dynamic (or, with `fixed`, fixed) VHD of `size` bytes with data in a few places, and
/// the raw file it was made from.
fn vhd_with_data(dir: &Path, name: &str, size: u64, fixed: bool) -> (PathBuf, PathBuf) {
    image_with_data(dir, name, "vhd", size, fixed.then_some("subformat=fixed"))
}

fn end_footer(path: &Path) -> Footer {
    let bytes = std::fs::read(path).unwrap();
    let tail: [u8; 512] = bytes[bytes.len() - 512..].try_into().unwrap();
    Footer::parse(&tail).unwrap()
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// Every reader agrees the image holds `expected` (raw): diskferry, qemu-img, libyal and
/// dissect through oracle-read; a differencing image (`parents` not empty) is read by
/// diskferry and by libyal given the chain (qemu-img ignores a VHD's parent, dissect cannot be
/// given one).
fn all_read(test: &str, image: &Path, expected: &Path, parents: &[&Path]) {
    let ours = edit_support::to_raw(image, "vhd");
    assert!(
        same_file(&ours, expected),
        "{test}: diskferry reads other content"
    );
    let want = (
        std::fs::metadata(expected).unwrap().len(),
        sha256_file(expected),
    );
    if parents.is_empty() {
        if have_qemu(test) {
            assert!(
                qemu_compare("vpc", image, "raw", expected),
                "{test}: qemu-img differs"
            );
        }
        if let Some(readings) = oracle_read(test, "vhd", image) {
            for r in readings {
                assert_eq!(
                    r.result.as_ref().ok(),
                    Some(&want),
                    "{test}: {} reads otherwise",
                    r.reader
                );
            }
        }
    } else {
        let mut chain = vec![image];
        chain.extend_from_slice(parents);
        if let Some(got) = vhd_support::libyal_chain_sha(test, &chain) {
            assert_eq!(got, want, "{test}: libyal reading the chain");
        }
    }
    opens_and_checks(image, "vhd").unwrap();
    let (code, out, err) = run(&["check", "-f", "vhd", s(image)]);
    assert_eq!(code, 0, "{test}: check: {out}{err}");
}

#[test]
fn writes_into_a_dynamic_vhd_match_qemu_io() {
    let test = "writes_into_a_dynamic_vhd_match_qemu_io";
    let dir = tempfile::tempdir().unwrap();
    let (ours, raw) = vhd_with_data(dir.path(), "d", 12 * MIB, false);
    let mut ops = writes(12 * MIB, 24, 7);
    ops.push(Op::Clear {
        offset: 3 * MIB + 77,
        len: 2 * MIB,
        how: Clear::Zero,
    });
    ops.push(Op::Clear {
        offset: 7 * MIB,
        len: 700_000,
        how: Clear::Deallocate,
    });
    let theirs = apply_keeping_copy(FORMAT, &ours, &raw, &ops);
    all_read(test, &ours, &raw, &[]);
    qemu_io_agrees(test, "vpc", &ours, &theirs, &ops);
}

#[test]
fn writes_into_a_fixed_vhd_match_qemu_io() {
    let test = "writes_into_a_fixed_vhd_match_qemu_io";
    let dir = tempfile::tempdir().unwrap();
    let (ours, raw) = vhd_with_data(dir.path(), "f", 10 * MIB, true);
    let mut ops = writes(10 * MIB, 12, 11);
    ops.push(Op::Clear {
        offset: 5,
        len: MIB,
        how: Clear::Deallocate,
    });
    let theirs = apply_keeping_copy(FORMAT, &ours, &raw, &ops);
    all_read(test, &ours, &raw, &[]);
    qemu_io_agrees(test, "vpc", &ours, &theirs, &ops);
}

/// A child of a base with data: writes cut sectors (so parts come from the parent), clears
/// both ways. qemu does not read differencing VHDs, so the same writes go through qemu-io
/// into a raw copy of the base, which every reader must then agree with.
#[test]
fn writes_into_a_differencing_vhd_fill_from_the_parent() {
    let test = "writes_into_a_differencing_vhd_fill_from_the_parent";
    let dir = tempfile::tempdir().unwrap();
    let (base, raw) = vhd_with_data(dir.path(), "base", 12 * MIB, false);
    let child = dir.path().join("child.vhd");
    create_child("vhd", &child, s(&base), None);
    let mut ops = writes(12 * MIB, 20, 3);
    ops.push(Op::Clear {
        offset: 100,
        len: 3000,
        how: Clear::Zero,
    });
    ops.push(Op::Clear {
        offset: 7 * MIB + 1,
        len: 3 * MIB,
        how: Clear::Deallocate,
    });
    ops.push(Op::Write {
        offset: 65536 - 7,
        len: 20,
        byte: 0xEE,
    });
    apply_mut(FORMAT, &child, &ops);
    let model = child_model(test, &raw, &ops, 3);
    all_read(test, &child, &model, &[&base]);
    // The base is untouched.
    assert!(same_file(&edit_support::to_raw(&base, "vhd"), &raw));
}

fn resize(image: &Path, new_size: u64, shrink: Shrink) -> diskferry::Result<()> {
    resize_with(FORMAT, image, new_size, shrink)
}

/// The footer after a resize, as Hyper-V and VirtualBox write it (VHD specification, "Hard
/// Disk Footer Format": Current Size is the size now; Disk Geometry from the appendix's CHS
/// algorithm for the size). Original Size follows too, since libyal takes the disk's size
/// from it.
fn assert_footer_as_hyper_v(image: &Path, size: u64) {
    let f = end_footer(image);
    assert_eq!(f.current_size, size);
    assert_eq!(f.original_size, size);
    assert_eq!(f.geometry, Geometry::for_size(size));
    let bytes = std::fs::read(image).unwrap();
    if f.disk_type.is_sparse() {
        assert_eq!(&bytes[..512], &f.bytes[..], "the footer copy at 0 differs");
    }
}

#[test]
fn resize_grows_and_shrinks_fixed_and_dynamic() {
    let test = "resize_grows_and_shrinks_fixed_and_dynamic";
    let dir = tempfile::tempdir().unwrap();
    for fixed in [true, false] {
        let name = if fixed { "fixed" } else { "dyn" };
        let (vhd, raw) = vhd_with_data(dir.path(), name, 10 * MIB, fixed);
        // Grow (a dynamic disk's BAT then needs more entries than it has room for: the first
        // blocks move), then shrink into the middle of a block, then grow again over it.
        for (size, shrink) in [
            (300 * MIB + 4096, Shrink::Refuse),
            (7 * MIB + 512, Shrink::Allow),
            (20 * MIB, Shrink::Refuse),
        ] {
            resize(&vhd, size, shrink).unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
            f.set_len(size.min(std::fs::metadata(&raw).unwrap().len()))
                .unwrap();
            f.set_len(size).unwrap();
            assert_footer_as_hyper_v(&vhd, size);
            all_read(test, &vhd, &raw, &[]);
        }
        // Smaller without --shrink is refused, and changes nothing.
        let before = std::fs::read(&vhd).unwrap();
        let err = resize(&vhd, MIB, Shrink::Refuse).unwrap_err();
        assert!(err.to_string().contains("--shrink"), "{err}");
        assert_eq!(before, std::fs::read(&vhd).unwrap());
    }
}

/// The CLI's `resize` on a fixed VHD gives what `qemu-img resize -f vpc` gives... qemu-img
/// cannot resize VHD at all ("does not support resize"), so the fixed disk is compared with
/// qemu-img resizing the raw data it holds.
#[test]
fn cli_resize_matches_qemu_img_on_the_raw_data() {
    let test = "cli_resize_matches_qemu_img_on_the_raw_data";
    let dir = tempfile::tempdir().unwrap();
    let (vhd, raw) = vhd_with_data(dir.path(), "c", 10 * MIB, false);
    run_ok(&["resize", "-f", "vhd", s(&vhd), "+5M"]);
    if have_qemu(test) {
        qemu_img_ok(&["resize", "-f", "raw", s(&raw), "+5M"]);
        assert!(qemu_compare("vpc", &vhd, "raw", &raw));
        let (code, _, err) = qemu_img(&["resize", "-f", "vpc", s(&vhd), "+1M"]);
        assert_ne!(
            code, 0,
            "qemu-img learnt to resize VHD: compare with it directly: {err}"
        );
    }
}

#[test]
fn set_backing_points_a_child_at_a_copy_of_its_parent() {
    let test = "set_backing_points_a_child_at_a_copy_of_its_parent";
    let dir = tempfile::tempdir().unwrap();
    let (base, raw) = vhd_with_data(dir.path(), "base", 12 * MIB, false);
    let child = dir.path().join("child.vhd");
    create_child("vhd", &child, "base.vhd", None);
    let ops = writes(12 * MIB, 6, 5);
    apply_mut(FORMAT, &child, &ops);
    // The new parent: the same content in a file of its own (a new UUID).
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let base2 = sub.join("base2.vhd");
    run_ok(&["convert", "-f", "vhd", "-O", "vhd", s(&base), s(&base2)]);
    let gate = Gate::anywhere();
    FORMAT
        .driver()
        .set_backing(
            &child,
            Some(&NewBacking {
                name: "sub/base2.vhd".into(),
                format: Some(FORMAT),
            }),
            &ctx(&gate),
        )
        .unwrap();
    std::fs::remove_file(&base).unwrap();
    let info = run_ok(&["info", "--output=json", s(&child)]);
    assert!(info.contains("base2.vhd"), "{info}");
    let model = dir.path().join("model.raw");
    std::fs::copy(&raw, &model).unwrap();
    apply_raw(&model, &ops, None);
    all_read(test, &child, &model, &[&base2]);
    // Removing the parent is refused, naming why.
    let err = FORMAT
        .driver()
        .set_backing(&child, None, &ctx(&gate))
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot stand without its parent"),
        "{err}"
    );
    // A parent that is not this child's content is still recorded (rebase -u is unsafe by
    // design), but a parent that is not a VHD is refused.
    let not_vhd = dir.path().join("x.raw");
    std::fs::write(&not_vhd, vec![0u8; 4096]).unwrap();
    let err = FORMAT
        .driver()
        .set_backing(
            &child,
            Some(&NewBacking {
                name: "x.raw".into(),
                format: None,
            }),
            &ctx(&gate),
        )
        .unwrap_err();
    assert!(err.to_string().contains("new parent"), "{err}");
}

#[test]
fn measure_predicts_the_converted_file_size() {
    let dir = tempfile::tempdir().unwrap();
    assert_measure_matches_conversion(
        FORMAT,
        dir.path(),
        &["", "block_size=512K", "block_size=4M", "subformat=fixed"],
        50 * MIB + 512,
        &[(0, 4096), (5 * MIB, 3 * MIB), (49 * MIB, 10)],
    );
}

/// The helper process of the kill tests (does nothing unless started as one).
#[test]
fn zz_kill_helper() {
    let Some(job) = helper_job() else { return };
    let parts: Vec<&str> = job.split('|').collect();
    let image = Path::new(parts[1]);
    match parts[0] {
        "writes" => apply_mut(FORMAT, image, &killed_writes()),
        "resize" => resize_with(FORMAT, image, KILLED_RESIZE_TO, Shrink::Refuse).unwrap(),
        "rebase" => rebase_in_turn(FORMAT, image, ["b2.vhd", "b1.vhd"], 1000, None),
        other => panic!("unknown job {other}"),
    }
}

fn content(image: &Path) -> Vec<u8> {
    std::fs::read(edit_support::to_raw(image, "vhd")).unwrap()
}

/// The kill rounds of a VHD `job`: every survivor opens with qemu-img (as vpc).
fn kill_rounds<'a>(test: &'a str, job: &'a str, max_ms: u64) -> KillRounds<'a> {
    KillRounds {
        test,
        format: "vhd",
        survivor: Survivor::ChecksClean(QemuOpens::As("vpc")),
        job,
        max_ms,
    }
}

/// The size the killed resize grows a 200 MiB VHD to.
const KILLED_RESIZE_TO: u64 = 512 << 30;

#[test]
fn killed_writes_leave_old_or_new_content() {
    let test = "killed_writes_leave_old_or_new_content";
    let dir = tempfile::tempdir().unwrap();
    let (template, raw) = vhd_with_data(dir.path(), "k", 16 * MIB, false);
    let old = std::fs::read(&raw).unwrap();
    let ops = killed_writes();
    kill_rounds(test, "writes", 400).on_copies_of(&template, &|i, image| {
        each_write_old_or_new(&content(image), &old, &ops)
            .unwrap_or_else(|e| panic!("round {i}: {e}"))
    });
}

#[test]
fn killed_resize_leaves_old_or_new_disk() {
    let test = "killed_resize_leaves_old_or_new_disk";
    let dir = tempfile::tempdir().unwrap();
    // Small blocks right after the BAT: growing to 512 GiB needs a 32 MiB table, so the
    // first 512 blocks move one by one before it grows.
    let raw = dir.path().join("r.raw");
    make_raw(&raw, 200 * MIB, &[(0, 200 * MIB)]);
    let template = dir.path().join("r.vhd");
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        "-o",
        "block_size=64K",
        s(&raw),
        s(&template),
    ]);
    let old = std::fs::read(&raw).unwrap();
    let new_size = KILLED_RESIZE_TO;
    kill_rounds(test, "resize", 1500).on_copies_of(&template, &|i, image| {
        let f = end_footer(image);
        assert!(
            f.current_size == 200 * MIB || f.current_size == new_size,
            "round {i}"
        );
        // The data is intact whatever the size; compare its first 200 MiB (the rest reads
        // as zeros, checked by reading a sample past the old end).
        if f.current_size == 200 * MIB {
            assert_eq!(content(image), old, "round {i}");
        } else {
            let options = diskferry::OpenOptions {
                gate: Gate::anywhere(),
                ..Default::default()
            };
            let img = diskferry::Image::open(image, &options).unwrap();
            let mut buf = vec![0u8; old.len()];
            img.read_at(0, &mut buf).unwrap();
            assert_eq!(buf, old, "round {i}");
            let mut tail = vec![1u8; 4 * MIB as usize];
            img.read_at(200 * MIB, &mut tail).unwrap();
            assert!(tail.iter().all(|&b| b == 0), "round {i}");
        }
    });
}

#[test]
fn killed_rebase_leaves_one_parent_or_the_other() {
    let test = "killed_rebase_leaves_one_parent_or_the_other";
    let dir = tempfile::tempdir().unwrap();
    let (b1, raw) = vhd_with_data(dir.path(), "b1", 12 * MIB, false);
    let b2 = dir.path().join("b2.vhd");
    run_ok(&["convert", "-f", "vhd", "-O", "vhd", s(&b1), s(&b2)]);
    let template = dir.path().join("c.vhd");
    create_child("vhd", &template, "b1.vhd", None);
    let old = std::fs::read(&raw).unwrap();
    kill_rounds(test, "rebase", 300).on_copies_of(&template, &|i, image| {
        assert_eq!(content(image), old, "round {i}")
    });
}
