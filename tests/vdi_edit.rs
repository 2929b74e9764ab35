//! VDI changed in place: writes through `open_mut` (dynamic, static, differencing with whole
//! blocks filled from the parent), `resize` (grow into the block map's room and past it, on
//! images diskferry and qemu-img made; shrink refused), `set_backing` and `measure`, checked against qemu-io/qemu-img where
//! qemu can do the same (it cannot resize, measure or read differencing VDIs), the independent
//! readers otherwise, and killed at random points.

mod common;
mod edit_support;

use common::*;
use diskferry::edit::{Clear, NewBacking, Shrink};
use diskferry::formats::vdi::FORMAT;
use diskferry::gate::Gate;
use edit_support::*;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn vdi_with_data(dir: &Path, name: &str, size: u64, fixed: bool) -> (PathBuf, PathBuf) {
    image_with_data(dir, name, "vdi", size, fixed.then_some("static=on"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

fn all_read(test: &str, image: &Path, expected: &Path, qemu_reads: bool) {
    let ours = edit_support::to_raw(image, "vdi");
    assert!(
        same_file(&ours, expected),
        "{test}: diskferry reads other content"
    );
    if qemu_reads && have_qemu(test) {
        assert!(
            qemu_compare("vdi", image, "raw", expected),
            "{test}: qemu-img differs"
        );
        let (code, out, err) = qemu_img(&["check", "-f", "vdi", s(image)]);
        assert_eq!(code, 0, "{test}: qemu-img check: {out}{err}");
    }
    let want = (
        std::fs::metadata(expected).unwrap().len(),
        sha256_file(expected),
    );
    // A differencing VDI names its parent by UUID only: no independent reader follows it
    // (qemu-img refuses it, dissect reads no parent, libyal has no VDI library), so only
    // diskferry's reader and check see it.
    if !qemu_reads {
        return check_clean(test, image);
    }
    if let Some(readings) = oracle_read(test, "vdi", image) {
        for r in readings {
            if r.reader == "libyal" && r.result.is_err() {
                continue;
            }
            assert_eq!(
                r.result.as_ref().ok(),
                Some(&want),
                "{test}: {} reads otherwise",
                r.reader
            );
        }
    }
    check_clean(test, image);
}

fn check_clean(test: &str, image: &Path) {
    let (code, out, err) = run(&["check", "-f", "vdi", s(image)]);
    assert_eq!(code, 0, "{test}: check: {out}{err}");
}

#[test]
fn writes_into_dynamic_and_static_vdis_match_qemu_io() {
    let test = "writes_into_dynamic_and_static_vdis_match_qemu_io";
    let dir = tempfile::tempdir().unwrap();
    for fixed in [false, true] {
        let (ours, raw) = vdi_with_data(dir.path(), if fixed { "s" } else { "d" }, 12 * MIB, fixed);
        let mut ops = writes(12 * MIB, 24, 7);
        ops.push(Op::Clear {
            offset: 3 * MIB + 77,
            len: 2 * MIB,
            how: Clear::Zero,
        });
        ops.push(Op::Clear {
            offset: 9 * MIB,
            len: 700_000,
            how: Clear::Deallocate,
        });
        let theirs = apply_keeping_copy(FORMAT, &ours, &raw, &ops);
        all_read(test, &ours, &raw, true);
        qemu_io_agrees(test, "vdi", &ours, &theirs, &ops);
    }
}

#[test]
fn writes_into_a_differencing_vdi_fill_blocks_from_the_parent() {
    let test = "writes_into_a_differencing_vdi_fill_blocks_from_the_parent";
    let dir = tempfile::tempdir().unwrap();
    let (base, raw) = vdi_with_data(dir.path(), "base", 12 * MIB, false);
    let child = dir.path().join("child.vdi");
    create_child("vdi", &child, s(&base), None);
    let mut ops = writes(12 * MIB, 20, 3);
    ops.push(Op::Clear {
        offset: 100,
        len: 3000,
        how: Clear::Zero,
    });
    ops.push(Op::Clear {
        offset: 10 * MIB,
        len: MIB,
        how: Clear::Zero,
    });
    ops.push(Op::Clear {
        offset: 7 * MIB + 1,
        len: 3 * MIB,
        how: Clear::Deallocate,
    });
    apply_mut(FORMAT, &child, &ops);
    let model = child_model(test, &raw, &ops, 3);
    all_read(test, &child, &model, false);
    assert!(same_file(&edit_support::to_raw(&base, "vdi"), &raw));
}

fn resize(image: &Path, new_size: u64, shrink: Shrink) -> diskferry::Result<()> {
    resize_with(FORMAT, image, new_size, shrink)
}

/// Resizes the raw model `raw` as qemu-img resizes a raw file (a plain cut or extension
/// when qemu-img is missing).
fn grow_raw(test: &str, raw: &Path, size: u64) {
    if have_qemu(test) {
        qemu_img_ok(&["resize", "-f", "raw", s(raw), &size.to_string()]);
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .open(raw)
            .unwrap()
            .set_len(size)
            .unwrap();
    }
}

/// The header fields a resize must keep: the UUIDs (create, modify, linkage, parent) and
/// what precedes the map offsets (signature, version, type, flags, comment).
fn identity(image: &Path) -> Vec<u8> {
    let bytes = std::fs::read(image).unwrap();
    [&bytes[..0x154], &bytes[0x188..0x1C8]].concat()
}

/// The cheaper half of `all_read`, for images too large for every reader to hash (and for
/// the steps between two full reads): qemu-img compares it with the model, both checks pass,
/// and diskferry's `compare` agrees.
fn large_reads_as(test: &str, image: &Path, raw: &Path) {
    let (code, out, err) = run(&["compare", "-f", "vdi", "-F", "raw", s(image), s(raw)]);
    assert_eq!(code, 0, "{test}: compare: {out}{err}");
    check_clean(test, image);
    if have_qemu(test) {
        assert!(
            qemu_compare("vdi", image, "raw", raw),
            "{test}: qemu-img differs"
        );
        let (code, out, err) = qemu_img(&["check", "-f", "vdi", s(image)]);
        assert_eq!(code, 0, "{test}: qemu-img check: {out}{err}");
    }
}

#[test]
fn resize_grows_into_the_maps_room_and_past_it() {
    let test = "resize_grows_into_the_maps_room_and_past_it";
    let dir = tempfile::tempdir().unwrap();
    for fixed in [false, true] {
        let (vdi, raw) = vdi_with_data(dir.path(), if fixed { "s" } else { "d" }, 10 * MIB, fixed);
        let kept = identity(&vdi);
        // qemu-img cannot resize VDI ("does not support resize"): the result is compared with
        // qemu-img resizing the raw data, and read by every reader.
        resize(&vdi, 300 * MIB + 4096, Shrink::Refuse).unwrap();
        grow_raw(test, &raw, 300 * MIB + 4096);
        all_read(test, &vdi, &raw, true);
        // Writes after the resize land in the new range too.
        let ops = writes(300 * MIB, 10, 17);
        apply_mut(FORMAT, &vdi, &ops);
        apply_raw(&raw, &ops, None);
        all_read(test, &vdi, &raw, true);
        let before = std::fs::read(&vdi).unwrap();
        let err = resize(&vdi, MIB, Shrink::Allow).unwrap_err();
        assert!(err.to_string().contains("cannot shrink"), "{err}");
        assert_eq!(before, std::fs::read(&vdi).unwrap());
        // diskferry's map has room for 1024 blocks of 1 MiB: past it the map moves (for a
        // dynamic image here; a static one past the room is qemu-img's in the next test).
        if fixed {
            continue;
        }
        let big = 1100 * MIB + 512;
        resize(&vdi, big, Shrink::Refuse).unwrap();
        grow_raw(test, &raw, big);
        large_reads_as(test, &vdi, &raw);
        let ops = [
            Op::Write {
                offset: 0,
                len: 3 * MIB + 5,
                byte: 0x61,
            },
            Op::Write {
                offset: big - 2 * MIB - 7,
                len: 2 * MIB + 7,
                byte: 0x62,
            },
        ];
        apply_mut(FORMAT, &vdi, &ops);
        apply_raw(&raw, &ops, None);
        large_reads_as(test, &vdi, &raw);
        assert_eq!(
            identity(&vdi),
            kept,
            "{test}: the header's identity changed"
        );
    }
    if have_qemu(test) {
        let (code, _, _) = qemu_img(&["resize", "-f", "vdi", s(&dir.path().join("d.vdi")), "+1M"]);
        assert_ne!(
            code, 0,
            "qemu-img learnt to resize VDI: compare with it directly"
        );
    }
}

#[test]
fn resize_past_the_room_qemu_img_leaves() {
    let test = "resize_past_the_room_qemu_img_leaves";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for fixed in [false, true] {
        let raw = dir.path().join("q.raw");
        make_raw(&raw, 10 * MIB, &[(0, 3 * MIB + 17), (8 * MIB, 100)]);
        let vdi = dir.path().join(if fixed { "qs.vdi" } else { "qd.vdi" });
        let opts = if fixed { "static=on" } else { "static=off" };
        qemu_img_ok(&["convert", "-O", "vdi", "-o", opts, s(&raw), s(&vdi)]);
        let kept = identity(&vdi);
        // qemu-img's map ends at the next sector: room for 128 blocks (128 MiB) only.
        resize(&vdi, 150 * MIB, Shrink::Refuse).unwrap();
        grow_raw(test, &raw, 150 * MIB);
        large_reads_as(test, &vdi, &raw);
        assert_eq!(
            identity(&vdi),
            kept,
            "{test}: the header's identity changed"
        );
        let ops = writes(150 * MIB, 8, 23);
        apply_mut(FORMAT, &vdi, &ops);
        apply_raw(&raw, &ops, None);
        large_reads_as(test, &vdi, &raw);
        // qemu-io writes into the moved map's image as into any other; every reader reads
        // the result.
        let more = writes(150 * MIB, 3, 31);
        edit_support::qemu_io("vdi", &vdi, &more);
        apply_raw(&raw, &more, None);
        all_read(test, &vdi, &raw, true);
    }
}

#[test]
fn set_backing_links_a_child_to_another_parent() {
    let test = "set_backing_links_a_child_to_another_parent";
    let dir = tempfile::tempdir().unwrap();
    let (base, raw) = vdi_with_data(dir.path(), "base", 12 * MIB, false);
    let child = dir.path().join("child.vdi");
    create_child("vdi", &child, s(&base), None);
    let ops = writes(12 * MIB, 6, 5);
    apply_mut(FORMAT, &child, &ops);
    let base2 = dir.path().join("base2.vdi");
    run_ok(&["convert", "-f", "vdi", "-O", "vdi", s(&base), s(&base2)]);
    let gate = Gate::anywhere();
    FORMAT
        .driver()
        .set_backing(
            &child,
            Some(&NewBacking {
                name: "base2.vdi".into(),
                format: Some(FORMAT),
            }),
            &ctx(&gate),
        )
        .unwrap();
    std::fs::remove_file(&base).unwrap();
    let info = run_ok(&["info", s(&child)]);
    assert!(info.contains("base2.vdi"), "{info}");
    let model = dir.path().join("model.raw");
    std::fs::copy(&raw, &model).unwrap();
    apply_raw(&model, &ops, None);
    all_read(test, &child, &model, false);
    let err = FORMAT
        .driver()
        .set_backing(&child, None, &ctx(&gate))
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot stand without its parent"),
        "{err}"
    );
}

#[test]
fn measure_predicts_the_converted_file_size() {
    let dir = tempfile::tempdir().unwrap();
    assert_measure_matches_conversion(
        FORMAT,
        dir.path(),
        &["", "block_size=64K", "static=on"],
        50 * MIB + 512,
        &[(0, 4096), (5 * MIB, 3 * MIB), (49 * MIB, 10)],
    );
}

#[test]
fn zz_kill_helper() {
    let Some(job) = helper_job() else { return };
    let parts: Vec<&str> = job.split('|').collect();
    let image = Path::new(parts[1]);
    match parts[0] {
        "writes" => apply_mut(FORMAT, image, &killed_writes()),
        "resize" => {
            for i in 1..=400u64 {
                resize(image, 16 * MIB + i * MIB, Shrink::Refuse).unwrap();
            }
        }
        "resize_past_room" => resize(image, 1 << 30, Shrink::Refuse).unwrap(),
        "rebase" => rebase_in_turn(FORMAT, image, ["b2.vdi", "b1.vdi"], 1000, None),
        other => panic!("unknown job {other}"),
    }
}

fn content(image: &Path) -> Vec<u8> {
    std::fs::read(edit_support::to_raw(image, "vdi")).unwrap()
}

/// The kill rounds of a VDI `job`: qemu-img opens every survivor but a rebased child
/// (qemu-img does not read differencing VDIs) and an image of 4 KiB blocks (it reads
/// 1 MiB blocks only).
fn killed_rounds(test: &str, job: &str, template: &Path, max_ms: u64, verify: &dyn Fn(u64, &Path)) {
    let qemu = if job == "rebase" || job == "resize_past_room" {
        QemuOpens::No
    } else {
        QemuOpens::As("vdi")
    };
    KillRounds {
        test,
        format: "vdi",
        survivor: Survivor::ChecksClean(qemu),
        job,
        max_ms,
    }
    .on_copies_of(template, verify);
}

#[test]
fn killed_writes_leave_old_or_new_content() {
    let test = "killed_writes_leave_old_or_new_content";
    let dir = tempfile::tempdir().unwrap();
    let (template, raw) = vdi_with_data(dir.path(), "k", 16 * MIB, false);
    let old = std::fs::read(&raw).unwrap();
    let ops = killed_writes();
    killed_rounds(test, "writes", &template, 400, &|i, image| {
        each_write_old_or_new(&content(image), &old, &ops)
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
    });
}

#[test]
fn killed_resizes_leave_a_whole_size() {
    let test = "killed_resizes_leave_a_whole_size";
    let dir = tempfile::tempdir().unwrap();
    let (template, raw) = vdi_with_data(dir.path(), "r", 16 * MIB, false);
    let old = std::fs::read(&raw).unwrap();
    killed_rounds(test, "resize", &template, 400, &|i, image| {
        let c = content(image);
        assert!(
            (c.len() as u64).is_multiple_of(MIB) && c.len() >= old.len(),
            "round {i}: {} bytes",
            c.len()
        );
        assert_eq!(&c[..old.len()], &old[..], "round {i}");
        assert!(c[old.len()..].iter().all(|&b| b == 0), "round {i}");
    });
}

#[test]
fn killed_resizes_moving_the_map_leave_the_old_or_new_size() {
    let test = "killed_resizes_moving_the_map_leave_the_old_or_new_size";
    let dir = tempfile::tempdir().unwrap();
    // Blocks of 4 KiB: growing 16 MiB to 1 GiB moves the first 256 blocks one at a time to
    // make room for a map of 1 MiB, which gives the kills time to land in the middle.
    let (template, raw) =
        image_with_data(dir.path(), "m", "vdi", 16 * MIB, Some("block_size=4096"));
    let old = std::fs::read(&raw).unwrap();
    killed_rounds(test, "resize_past_room", &template, 1500, &|i, image| {
        // The moved blocks all lie in the old 16 MiB; past them the disk reads as zeros.
        let (size, c) = read_image_head(image, 32 * MIB);
        assert!(
            size == 16 * MIB || size == 1 << 30,
            "round {i}: {size} bytes"
        );
        assert_eq!(&c[..old.len()], &old[..], "round {i}");
        assert!(c[old.len()..].iter().all(|&b| b == 0), "round {i}");
    });
}

#[test]
fn killed_rebase_leaves_one_parent_or_the_other() {
    let test = "killed_rebase_leaves_one_parent_or_the_other";
    let dir = tempfile::tempdir().unwrap();
    let (b1, raw) = vdi_with_data(dir.path(), "b1", 12 * MIB, false);
    let b2 = dir.path().join("b2.vdi");
    run_ok(&["convert", "-f", "vdi", "-O", "vdi", s(&b1), s(&b2)]);
    let template = dir.path().join("c.vdi");
    create_child("vdi", &template, "b1.vdi", None);
    let old = std::fs::read(&raw).unwrap();
    killed_rounds(test, "rebase", &template, 300, &|i, image| {
        assert_eq!(content(image), old, "round {i}");
    });
}
