//! VHDX changed in place, every table change through the metadata log: writes through
//! `open_mut` (dynamic, fixed, differencing with its sector bitmaps, partial sectors and blocks,
//! both kinds of clearing), `resize` (the BAT region moved when it must grow, `--shrink`),
//! `rebase -u` (the parent locator), each checked against qemu-io/qemu-img where qemu can do
//! the same and the independent readers (libyal, dissect) otherwise; a log left unapplied by a
//! process stopped after its flush, replayed by diskferry in memory and by qemu-img in place;
//! kill -9 at random points of each operation; `measure` against the converter.

mod common;
mod edit_support;
mod vhd_support;

use common::*;
use diskferry::Capability;
use diskferry::edit::{Clear, Shrink};
use diskferry::formats::vhdx::FORMAT;
use diskferry::formats::vhdx::log_write::STOP_BEFORE_APPLY_ENV;
use edit_support::*;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// A VHDX of `size` bytes in 1 MiB blocks (so that small tests cross blocks) with data in a
/// few places (`-o extra` added), and the raw file it was made from.
fn vhdx_with_data(dir: &Path, name: &str, size: u64, extra: &str) -> (PathBuf, PathBuf) {
    let opts = if extra.is_empty() {
        "block_size=1M".to_string()
    } else {
        format!("block_size=1M,{extra}")
    };
    image_with_data(dir, name, "vhdx", size, Some(&opts))
}

/// The header fields of `image` as `info` prints them: (DataWriteGuid, header sequence).
fn header_of(image: &Path) -> (String, u64) {
    let out = run_ok(&["info", "--output=json", "-f", "vhdx", s(image)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let spec = &v["format-specific"]["data"];
    (
        spec["data-write-guid"].as_str().unwrap().to_string(),
        spec["header"]["sequence-number"].as_u64().unwrap(),
    )
}

/// Every reader agrees `image` (standalone) holds `expected`: diskferry, qemu-img (compare
/// and a clean check), libyal and dissect through oracle-read.
fn all_read(test: &str, image: &Path, expected: &Path) {
    let ours = to_raw(image, "vhdx");
    assert!(
        same_file(&ours, expected),
        "{test}: diskferry reads other content"
    );
    if have_qemu(test) {
        let (code, out, err) = qemu_img(&["check", "-f", "vhdx", s(image)]);
        assert_eq!(code, 0, "{test}: qemu-img check: {out}{err}");
        assert!(
            qemu_compare("vhdx", image, "raw", expected),
            "{test}: qemu-img reads other content"
        );
    }
    let want = (
        std::fs::metadata(expected).unwrap().len(),
        sha256_file(expected),
    );
    if let Some(readings) = oracle_read(test, "vhdx", image) {
        for r in readings {
            assert_eq!(
                r.result.as_ref().ok(),
                Some(&want),
                "{test}: {} reads otherwise",
                r.reader
            );
        }
    }
    let (code, out, err) = run(&["check", "-f", "vhdx", s(image)]);
    assert_eq!(code, 0, "{test}: check: {out}{err}");
}

/// A differencing VHDX `name` in `dir` over the `base.vhdx` there (`-o opts` when given).
fn child_of_base(dir: &Path, name: &str, opts: Option<&str>) -> PathBuf {
    let child = dir.join(name);
    create_child("vhdx", &child, "base.vhdx", opts);
    child
}

/// In `dir`: `base.vhdx` of 8 MiB with data, the raw file it was made from, `other.vhdx`
/// converted from it, and a child `name` over the base.
fn base_other_and_child(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let (base, base_raw) = vhdx_with_data(dir, "base", 8 * MIB, "");
    let other = dir.join("other.vhdx");
    run_ok(&["convert", "-O", "vhdx", s(&base), s(&other)]);
    (base, base_raw, other, child_of_base(dir, name, None))
}

/// Writes `ops` into the differencing `child` through `open_mut`, and returns a raw model of
/// what it then reads (`model.raw` beside it): `base_raw` with `ops` applied.
fn write_child(child: &Path, base_raw: &Path, ops: &[Op]) -> PathBuf {
    apply_mut(FORMAT, child, ops);
    let model = child.with_file_name("model.raw");
    std::fs::copy(base_raw, &model).unwrap();
    apply_raw(&model, ops, Some(base_raw));
    model
}

/// libyal, given the chain (child first), reads `expected` (raw).
fn libyal_reads_chain(test: &str, chain: &[&Path], expected: &Path) {
    let want = (
        std::fs::metadata(expected).unwrap().len(),
        sha256_file(expected),
    );
    if let Some(got) = vhd_support::libyal_chain_sha_in(test, chain, MIB) {
        assert_eq!(got, want, "{test}: libyal reading the chain");
    }
}

#[test]
fn writes_into_a_dynamic_vhdx_match_qemu_io() {
    let test = "writes_into_a_dynamic_vhdx_match_qemu_io";
    let dir = tempfile::tempdir().unwrap();
    let (img, raw) = vhdx_with_data(dir.path(), "d", 16 * MIB, "");
    let before = header_of(&img);
    let mut ops = writes(16 * MIB, 12, 7);
    ops.push(Op::Write {
        offset: 5 * MIB + 3,
        len: 10,
        byte: 0xEE,
    });
    ops.push(Op::Clear {
        offset: 7 * MIB + 4096,
        len: MIB + 512,
        how: Clear::Zero,
    });
    ops.push(Op::Clear {
        offset: 0,
        len: 2 * MIB,
        how: Clear::Deallocate,
    });
    let theirs = apply_keeping_copy(FORMAT, &img, &raw, &ops);
    all_read(test, &img, &raw);
    // MS-VHDX 2.2.2.1: the DataWriteGuid changes before the first change of the disk's data,
    // and a header update writes the other copy with a higher sequence number.
    let after = header_of(&img);
    assert_ne!(after.0, before.0, "{test}: DataWriteGuid kept");
    assert!(after.1 > before.1, "{test}: header sequence not advanced");
    qemu_io_agrees(test, "vhdx", &img, &theirs, &ops);
}

#[test]
fn writes_into_a_fixed_vhdx_stay_in_place() {
    let test = "writes_into_a_fixed_vhdx_stay_in_place";
    let dir = tempfile::tempdir().unwrap();
    let (img, raw) = vhdx_with_data(dir.path(), "f", 8 * MIB, "subformat=fixed");
    let len = std::fs::metadata(&img).unwrap().len();
    let ops = writes(8 * MIB, 8, 11);
    apply_mut(FORMAT, &img, &ops);
    apply_raw(&raw, &ops, None);
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        len,
        "{test}: a fixed disk grew"
    );
    all_read(test, &img, &raw);
}

#[test]
fn writes_into_a_differencing_vhdx_follow_its_sector_bitmaps() {
    let test = "writes_into_a_differencing_vhdx_follow_its_sector_bitmaps";
    let dir = tempfile::tempdir().unwrap();
    let (base, base_raw) = vhdx_with_data(dir.path(), "base", 8 * MIB, "");
    let child = child_of_base(dir.path(), "child.vhdx", Some("block_size=1M"));
    let mut ops = writes(8 * MIB, 8, 5);
    // A partial sector in a block not present (the rest of the sector is the parent's), a
    // whole block zeroed, parts given back to the parent.
    ops.push(Op::Write {
        offset: 3 * MIB + 100,
        len: 7,
        byte: 0xA5,
    });
    ops.push(Op::Clear {
        offset: 6 * MIB,
        len: MIB,
        how: Clear::Zero,
    });
    ops.push(Op::Clear {
        offset: 2 * MIB + 1000,
        len: 70_000,
        how: Clear::Deallocate,
    });
    ops.push(Op::Clear {
        offset: 4 * MIB,
        len: MIB,
        how: Clear::Deallocate,
    });
    let model = write_child(&child, &base_raw, &ops);
    let ours = to_raw(&child, "vhdx");
    assert!(
        same_file(&ours, &model),
        "{test}: diskferry reads other content"
    );
    libyal_reads_chain(test, &[&child, &base], &model);
    let (code, out, err) = run(&["check", "-f", "vhdx", s(&child)]);
    assert_eq!(code, 0, "{test}: check: {out}{err}");
}

/// `commit` into a VHDX base changes the base's DataWriteGuid (as every write must), which the
/// top names as its parent_linkage: the top is re-linked, so both `commit` (emptying the top)
/// and `commit -d` leave a chain that opens and reads the committed content.
#[test]
fn commit_into_a_vhdx_base_keeps_the_chain_linked() {
    let test = "commit_into_a_vhdx_base_keeps_the_chain_linked";
    for keep in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (base, base_raw) = vhdx_with_data(dir.path(), "base", 8 * MIB, "");
        let child = child_of_base(dir.path(), "child.vhdx", Some("block_size=1M"));
        let model = write_child(&child, &base_raw, &writes(8 * MIB, 6, 11));
        let mut args = vec!["commit", "-f", "vhdx"];
        if keep {
            args.push("-d");
        }
        args.push(s(&child));
        run_ok(&args);
        // The base alone now holds the committed disk.
        all_read(test, &base, &model);
        // The child still opens over it, checks clean and reads the same.
        // Emptied, the child's blocks are given back but its file is not shortened: check
        // reports that space as leaked (exit 3), which is waste, not damage.
        let (code, out, err) = run(&["check", "-f", "vhdx", s(&child)]);
        let leaks_only = !keep && code == 3 && out.contains("Leaked");
        assert!(
            code == 0 || leaks_only,
            "{test} (keep {keep}): check of the child: {out}{err}"
        );
        assert!(
            same_file(&to_raw(&child, "vhdx"), &model),
            "{test} (keep {keep}): the child reads other content"
        );
        libyal_reads_chain(test, &[&child, &base], &model);
    }
}

#[test]
fn resize_grows_moves_the_bat_and_shrinks() {
    let test = "resize_grows_moves_the_bat_and_shrinks";
    let dir = tempfile::tempdir().unwrap();
    let (img, raw) = vhdx_with_data(dir.path(), "r", 10 * MIB + 512, "");
    if have_qemu(test) {
        // qemu-img cannot resize a VHDX: the sizes are compared with qemu-img's resize of
        // the raw model instead.
        let (code, _, err) = qemu_img(&["resize", "-f", "vhdx", s(&img), "+1M"]);
        assert_ne!(
            code, 0,
            "qemu-img learnt to resize VHDX: compare with it: {err}"
        );
    }
    // 1 MiB blocks: 200 GiB needs 204800 entries (1.6 MiB), more than the 1 MiB BAT region.
    for (size, shrink) in [
        ("+5M", Shrink::Refuse),
        ("200G", Shrink::Refuse),
        ("7340544", Shrink::Allow),
        ("12M", Shrink::Refuse),
    ] {
        let mut args = vec!["resize", "-f", "vhdx"];
        if shrink == Shrink::Allow {
            args.push("--shrink");
        }
        args.extend([s(&img), size]);
        run_ok(&args);
        let mut qargs = vec!["resize", "-f", "raw"];
        if shrink == Shrink::Allow {
            qargs.push("--shrink");
        }
        qargs.extend([s(&raw), size]);
        if have_qemu(test) {
            qemu_img_ok(&qargs);
        } else {
            run_ok(&qargs);
        }
        if size == "200G" {
            // Reading 200 GiB through every reader costs minutes: the size, a clean check,
            // and the data once shrunk back below.
            let (virtual_size, _) = read_image_head(&img, 0);
            assert_eq!(virtual_size, 200 << 30, "{test}");
            if have_qemu(test) {
                let (code, out, err) = qemu_img(&["check", "-f", "vhdx", s(&img)]);
                assert_eq!(code, 0, "{test}: qemu-img check: {out}{err}");
            }
            continue;
        }
        all_read(test, &img, &raw);
    }
    let (code, _, err) = run(&["resize", "-f", "vhdx", s(&img), "1M"]);
    assert_ne!(code, 0);
    assert!(err.contains("--shrink"), "{err}");
}

#[test]
fn resize_of_a_fixed_vhdx_preallocates() {
    let test = "resize_of_a_fixed_vhdx_preallocates";
    let dir = tempfile::tempdir().unwrap();
    let (img, raw) = vhdx_with_data(dir.path(), "fx", 8 * MIB, "subformat=fixed");
    let used = disk_usage(&img);
    run_ok(&[
        "resize",
        "--preallocation=full",
        "-f",
        "vhdx",
        s(&img),
        "+3M",
    ]);
    run_ok(&["resize", "-f", "raw", s(&raw), "+3M"]);
    all_read(test, &img, &raw);
    let out = run_ok(&["info", "--output=json", "-f", "vhdx", s(&img)]);
    assert!(out.contains("\"fixed\""), "{test}: {out}");
    // Written zeros: the file holds the new blocks.
    assert!(disk_usage(&img) >= used + 3 * MIB, "{test}");
}

#[test]
fn rebase_unsafe_rewrites_the_parent_locator() {
    let test = "rebase_unsafe_rewrites_the_parent_locator";
    let dir = tempfile::tempdir().unwrap();
    let (base, base_raw, other, child) = base_other_and_child(dir.path(), "c.vhdx");
    let model = write_child(&child, &base_raw, &writes(8 * MIB, 4, 3));
    let before = header_of(&child);
    let rebase_to_other = |image: &Path| {
        run(&[
            "rebase",
            "-u",
            "-f",
            "vhdx",
            "-b",
            "other.vhdx",
            "-F",
            "vhdx",
            s(image),
        ])
    };
    let (code, _, err) = rebase_to_other(&child);
    assert_eq!(code, 0, "{test}: {err}");
    let out = run_ok(&["info", "--output=json", "-f", "vhdx", s(&child)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let locator = &v["format-specific"]["data"]["parent-locator"];
    assert_eq!(locator["relative_path"], ".\\other.vhdx", "{test}: {out}");
    let (other_guid, _) = header_of(&other);
    assert_eq!(locator["parent_linkage"], other_guid.as_str(), "{test}");
    // MS-VHDX 2.2.2.1: the locator is the file's, not the disk's data: DataWriteGuid kept.
    assert_eq!(header_of(&child).0, before.0, "{test}");
    std::fs::remove_file(&base).unwrap();
    assert!(same_file(&to_raw(&child, "vhdx"), &model), "{test}");
    libyal_reads_chain(test, &[&child, &other], &model);
    let (code, out, err) = run(&["check", "-f", "vhdx", s(&child)]);
    assert_eq!(code, 0, "{test}: check: {out}{err}");
    // A standalone disk records no parent.
    let (code, _, err) = rebase_to_other(&other);
    assert_ne!(code, 0);
    assert!(err.contains("not differencing"), "{err}");
}

/// The write of `a_log_left_unapplied_is_replayed_by_every_reader`, into a block not present:
/// its data lands, its BAT entry only in the log.
const LOGGED_WRITE: Op = Op::Write {
    offset: 5 * MIB + 4096,
    len: 3 * 4096 + 7,
    byte: 0x5A,
};

/// MS-VHDX 2.3.3: a log entry written and flushed but not applied is replayed by whoever opens
/// the file next. The helper stops (abort, as a kill -9) right after the flush.
#[test]
fn a_log_left_unapplied_is_replayed_by_every_reader() {
    let test = "a_log_left_unapplied_is_replayed_by_every_reader";
    let dir = tempfile::tempdir().unwrap();
    let (img, raw) = vhdx_with_data(dir.path(), "l", 8 * MIB, "");
    let ops = [LOGGED_WRITE];
    let status = helper_command("one", &img)
        .env(STOP_BEFORE_APPLY_ENV, "1")
        .status()
        .unwrap();
    assert!(!status.success(), "{test}: the helper was not stopped");
    let mut model = raw.clone();
    model.set_extension("new.raw");
    std::fs::copy(&raw, &model).unwrap();
    apply_raw(&model, &ops, None);
    // diskferry replays it in memory and says so.
    let out = run_ok(&["info", "-f", "vhdx", s(&img)]);
    assert!(out.contains("replayed in memory"), "{test}: {out}");
    let ours = std::fs::read(to_raw(&img, "vhdx")).unwrap();
    assert_eq!(ours, std::fs::read(&model).unwrap(), "{test}: diskferry");
    if have_qemu(test) {
        // qemu-img opens it read-only only after the log is replayed in place.
        let copy = dir.path().join("q.vhdx");
        std::fs::copy(&img, &copy).unwrap();
        let (code, _, _) = qemu_img(&["info", "-f", "vhdx", s(&copy)]);
        assert_ne!(
            code, 0,
            "{test}: qemu-img opened a file with a log read-only"
        );
        let (code, out, err) = qemu_img(&["check", "-r", "all", "-f", "vhdx", s(&copy)]);
        assert_eq!(code, 0, "{test}: qemu-img check -r all: {out}{err}");
        all_read(test, &copy, &model);
    }
    // A new change over a pending log replays it in place first.
    let more = [Op::Write {
        offset: 100,
        len: 10,
        byte: 0x33,
    }];
    apply_mut(FORMAT, &img, &more);
    apply_raw(&model, &more, None);
    all_read(test, &img, &model);
}

#[test]
fn in_place_operations_are_listed_and_amend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.vhdx");
    run_ok(&["create", "-f", "vhdx", s(&img), "10M"]);
    for cap in [
        Capability::Measure,
        Capability::WriteInPlace,
        Capability::Resize,
        Capability::Rebase,
    ] {
        assert!(FORMAT.can(cap), "{cap:?} is not listed");
    }
    // Nothing of a VHDX is an option that can change in place (qemu-img: "does not support
    // option amendment").
    assert!(!FORMAT.can(Capability::Amend));
    let (code, _, err) = run(&["amend", "-f", "vhdx", "-o", "block_size=1M", s(&img)]);
    assert_ne!(code, 0);
    assert!(err.contains("vhdx"), "{err}");
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

/// The kill rounds of a VHDX `job`. A survivor may hold a log (a session in progress,
/// MS-VHDX 2.3.3): such a file is a crash state the format expects, not corruption, but
/// `check` reports a pending log (as qemu-img does, which opens it read-write only). So each
/// survivor must open with diskferry as it is (the log replayed in memory), then a copy
/// replayed in place by diskferry's `check -r all` must check clean, and (every fourth round,
/// when `qemu` opens it) another replayed by qemu-img's must read as diskferry reads the
/// survivor; `verify` judges the content.
fn vhdx_kill_rounds(
    test: &str,
    job: &str,
    template: &Path,
    qemu: QemuOpens,
    max_ms: u64,
    verify: &dyn Fn(u64, &Path),
) {
    let rounds = KillRounds {
        test,
        format: "vhdx",
        survivor: Survivor::JudgedByVerify,
        job,
        max_ms,
    };
    rounds.on_copies_of(template, &|i, image| {
        run_ok(&["info", "-f", "vhdx", s(image)]);
        let ours = image.with_extension("ours.vhdx");
        std::fs::copy(image, &ours).unwrap();
        let (code, out, err) = run(&["check", "-r", "all", "-f", "vhdx", s(&ours)]);
        assert!(
            code == 0 || code == 3,
            "round {i}: check -r all: {out}{err}"
        );
        opens_and_checks(&ours, "vhdx").unwrap_or_else(|e| panic!("round {i}: {e}"));
        verify(i, image);
        // qemu-img every fourth round: its replay is the same code each time, and the
        // rounds' budget is the test suite's.
        if let QemuOpens::As(_) = qemu
            && i % 4 == 0
            && have_qemu(test)
        {
            let theirs = image.with_extension("theirs.vhdx");
            std::fs::copy(image, &theirs).unwrap();
            let (code, out, err) = qemu_img(&["check", "-r", "all", "-f", "vhdx", s(&theirs)]);
            assert_eq!(code, 0, "round {i}: qemu-img check -r all: {out}{err}");
            let read = to_raw(image, "vhdx");
            assert!(
                qemu_compare("vhdx", &theirs, "raw", &read),
                "round {i}: qemu-img reads otherwise after its replay"
            );
        }
    });
}

#[test]
fn killed_writes_leave_each_write_old_or_new() {
    let test = "killed_writes_leave_each_write_old_or_new";
    let dir = tempfile::tempdir().unwrap();
    let (template, raw) = vhdx_with_data(dir.path(), "t", 16 * MIB, "");
    let old = std::fs::read(&raw).unwrap();
    let ops = killed_writes();
    vhdx_kill_rounds(
        test,
        "writes",
        &template,
        QemuOpens::As("vhdx"),
        400,
        &|i, image| {
            let content = std::fs::read(to_raw(image, "vhdx")).unwrap();
            each_write_old_or_new(&content, &old, &ops)
                .unwrap_or_else(|e| panic!("round {i}: {e}"));
        },
    );
}

#[test]
fn killed_resizes_leave_one_of_the_sizes() {
    let test = "killed_resizes_leave_one_of_the_sizes";
    let dir = tempfile::tempdir().unwrap();
    let (template, raw) = vhdx_with_data(dir.path(), "t", 10 * MIB, "");
    let old = std::fs::read(&raw).unwrap();
    vhdx_kill_rounds(
        test,
        "resize",
        &template,
        QemuOpens::As("vhdx"),
        120,
        &|i, image| {
            let (size, head) = read_image_head(image, 10 * MIB);
            assert!(
                [10 * MIB, 30 * MIB, 100 << 30, 4 * MIB].contains(&size),
                "round {i}: size {size}"
            );
            // The first 4 MiB survive every step; the rest of the old data is there until
            // the shrink, zeros after it.
            assert_eq!(
                head[..4 * MIB as usize],
                old[..4 * MIB as usize],
                "round {i}"
            );
            if size > 4 * MIB {
                let rest = &head[4 * MIB as usize..];
                assert!(
                    rest == &old[4 * MIB as usize..] || rest.iter().all(|&b| b == 0),
                    "round {i}: the data past 4 MiB is neither the old nor zeros"
                );
            }
        },
    );
}

#[test]
fn killed_rebases_leave_a_parent() {
    let test = "killed_rebases_leave_a_parent";
    let dir = tempfile::tempdir().unwrap();
    let (_, base_raw, _, template) = base_other_and_child(dir.path(), "t.vhdx");
    let old = std::fs::read(&base_raw).unwrap();
    vhdx_kill_rounds(
        test,
        "rebase",
        &template,
        // qemu-img does not open differencing VHDX.
        QemuOpens::No,
        150,
        &|i, image| {
            let content = std::fs::read(to_raw(image, "vhdx")).unwrap();
            assert!(content == old, "round {i}: the content changed");
        },
    );
}

/// The work of the kill tests' helper processes (a no-op as an ordinary test).
#[test]
fn zz_kill_helper() {
    let Some(job) = helper_job() else { return };
    let parts: Vec<&str> = job.split('|').collect();
    let image = Path::new(parts[1]);
    match parts[0] {
        "writes" => apply_mut(FORMAT, image, &killed_writes()),
        "one" => apply_mut(FORMAT, image, &[LOGGED_WRITE]),
        "resize" => {
            for (size, shrink) in [
                (30 * MIB, Shrink::Refuse),
                (100 << 30, Shrink::Refuse),
                (4 * MIB, Shrink::Allow),
                (30 * MIB, Shrink::Refuse),
            ] {
                resize_with(FORMAT, image, size, shrink).unwrap();
            }
        }
        "rebase" => {
            rebase_in_turn(FORMAT, image, ["other.vhdx", "base.vhdx"], 24, Some(FORMAT));
        }
        other => panic!("unknown job {other}"),
    }
}

/// A shrink hands the blocks past the new end back: where they were the last in the file,
/// the file is cut after them, so `check` finds no leak (it reported the space before).
#[test]
fn shrink_cuts_the_space_it_hands_back_at_the_end() {
    let test = "shrink_cuts_the_space_it_hands_back_at_the_end";
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("cut.vhdx");
    let raw = dir.path().join("cut.raw");
    // Written in order, so that the last blocks are the last in the file.
    let full = dir.path().join("full.raw");
    std::fs::write(&full, vec![0x5a; (24 * MIB) as usize]).unwrap();
    run_ok(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vhdx",
        "-o",
        "block_size=1M",
        s(&full),
        s(&img),
    ]);
    std::fs::copy(&full, &raw).unwrap();
    let before = std::fs::metadata(&img).unwrap().len();
    run_ok(&["resize", "-f", "vhdx", "--shrink", s(&img), "8M"]);
    run_ok(&["resize", "-f", "raw", "--shrink", s(&raw), "8M"]);
    let after = std::fs::metadata(&img).unwrap().len();
    assert!(
        after + 16 * MIB <= before,
        "{test}: the file kept the space of the blocks past the end ({before} -> {after} bytes)"
    );
    let (code, out, err) = run(&["check", "-f", "vhdx", "--output=json", s(&img)]);
    assert_eq!(
        code, 0,
        "{test}: diskferry check after the shrink: {out}{err}"
    );
    all_read(test, &img, &raw);
}
