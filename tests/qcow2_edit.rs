//! QCOW2 images changed in place (resize, snapshot -c|-a|-d, rebase -u, amend, writes through
//! `open_mut`, measure), each judged against qemu-img (or qemu-io) doing the same on a copy of
//! the same image: the same content (`qemu-img compare`), `qemu-img check` clean, the same
//! virtual size and snapshot list. Every in-place operation is also killed at many points
//! (the test hook aborts the process after its N-th write, as a kill -9 would stop it): the
//! image must still open with diskferry and qemu-img and `qemu-img check -r all` must leave it
//! clean, with the old or the new content.

mod common;

use common::*;
use diskferry::Gate;
use diskferry::edit::{Clear, EditContext, Force, MeasureRequest, NewBacking};
use diskferry::formats::qcow2::FORMAT;
use diskferry::options::FormatOptions;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The test hook of src/formats/qcow2/edit: abort after the N-th write.
const ABORT_AFTER: &str = "DISKFERRY_TEST_EDIT_ABORT_AFTER";
/// Set in the child that `writes_killed_at_any_point_leave_a_repairable_image` runs.
const CHILD_ENV: &str = "QCOW2_EDIT_CHILD_IMAGE";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs qemu-io on a qcow2 image with each of `cmds`.
fn qio(image: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(image).output().expect("qemu-io runs");
    let err = String::from_utf8_lossy(&out.stderr);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !so.contains("error") && !err.contains("error"),
        "qemu-io {cmds:?} failed: {so}{err}"
    );
}

/// A qcow2 image of `size` with `opts`, data written by qemu-io.
fn make(dir: &Path, name: &str, size: &str, opts: &str, writes: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([s(&p), size]);
    qemu_img_ok(&args);
    if !writes.is_empty() {
        qio(&p, writes);
    }
    p
}

fn copy(a: &Path, name: &str) -> PathBuf {
    let b = a.with_file_name(name);
    std::fs::copy(a, &b).unwrap();
    b
}

/// `qemu-img check` finds nothing wrong (no corruption, no leak).
fn assert_clean(image: &Path) {
    let (code, out, err) = qemu_img(&["check", "--output=json", s(image)]);
    assert_eq!(code, 0, "qemu-img check {}: {out}{err}", image.display());
    let v: Value = serde_json::from_str(&out).unwrap();
    for key in ["corruptions", "leaks", "check-errors"] {
        assert_eq!(
            v.get(key).and_then(Value::as_u64).unwrap_or(0),
            0,
            "{key} in {}: {out}",
            image.display()
        );
    }
}

fn info(image: &Path) -> Value {
    serde_json::from_str(&qemu_img_ok(&["info", "--output=json", "-U", s(image)])).unwrap()
}

fn vsize(image: &Path) -> u64 {
    info(image)["virtual-size"].as_u64().unwrap()
}

/// Same content and size, both clean.
fn assert_same(ours: &Path, theirs: &Path) {
    assert_clean(ours);
    assert_clean(theirs);
    assert_eq!(vsize(ours), vsize(theirs), "virtual sizes differ");
    assert!(
        qemu_compare("qcow2", ours, "qcow2", theirs),
        "{} and {} differ",
        ours.display(),
        theirs.display()
    );
}

/// (ID, TAG) of each snapshot `qemu-img snapshot -l` lists.
fn snapshot_list(image: &Path) -> Vec<(String, String)> {
    qemu_img_ok(&["snapshot", "-l", s(image)])
        .lines()
        .skip(2)
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().into(), w.next().unwrap().into())
        })
        .collect()
}

fn ctx(gate: &Gate) -> EditContext<'_> {
    EditContext {
        gate,
        force: Force::No,
    }
}

#[test]
fn resize_matches_qemu_img() {
    if !have_qemu("resize_matches_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let writes = [
        "write -P 0x11 0 100k",
        "write -P 0x22 700k 5k",
        "write -z 300k 64k",
    ];
    // Small clusters: growing relocates the L1 table and grows the refcount table.
    let small = make(d, "small.qcow2", "1M", "cluster_size=512", &writes);
    let base = make(d, "base.qcow2", "1M", "", &writes);
    let v2 = make(d, "v2.qcow2", "1M", "compat=0.10", &writes);
    let cases: &[(&Path, &[&str])] = &[
        (&small, &["64M"]),
        (&small, &["+3M", "--preallocation=metadata"]),
        (&base, &["3M", "--preallocation=full"]),
        (&base, &["+1M", "--preallocation=falloc"]),
        (&base, &["1536K", "--preallocation=metadata"]),
        (&v2, &["5G"]),
        (&small, &["--shrink", "600K"]),
        (&base, &["--shrink", "300K"]),
    ];
    for (i, (image, args)) in cases.iter().enumerate() {
        let ours = copy(image, &format!("ours{i}.qcow2"));
        let theirs = copy(image, &format!("theirs{i}.qcow2"));
        let mut a = vec!["resize", "-f", "qcow2"];
        let (opts, size): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| a.starts_with("--"));
        a.extend(opts.iter());
        a.push(s(&ours));
        a.extend(size.iter());
        let out = run_ok(&a);
        assert_eq!(out, "Image resized.\n");
        let mut q = vec!["resize", "-q", "-f", "qcow2"];
        q.extend(opts.iter());
        q.push(s(&theirs));
        q.extend(size.iter());
        qemu_img_ok(&q);
        assert_same(&ours, &theirs);
        // And then written by qemu, the resized image keeps working.
        qio(&ours, &["write -P 0x5a 0 1k"]);
        assert_clean(&ours);
    }
    // A backing file longer than the old size must not show through the grown range.
    let long = make(d, "long.qcow2", "4M", "", &["write -P 0x77 0 4M"]);
    let top = make(
        d,
        "top.qcow2",
        "1M",
        "backing_file=long.qcow2,backing_fmt=qcow2",
        &[],
    );
    qio(&top, &["write -P 0x33 4k 3k"]);
    let theirs = copy(&top, "top-theirs.qcow2");
    run_ok(&["resize", s(&top), "3M"]);
    qemu_img_ok(&["resize", "-q", s(&theirs), "3M"]);
    assert_same(&top, &theirs);
    let _ = long;
    // Without --shrink, a smaller size is refused and nothing changes.
    let (code, _, err) = run(&["resize", s(&base), "512K"]);
    assert_ne!(code, 0);
    assert!(err.contains("--shrink"), "{err}");
    assert_eq!(vsize(&base), MIB);
}

#[test]
fn snapshots_match_qemu_img() {
    if !have_qemu("snapshots_match_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = make(
        d,
        "a.qcow2",
        "4M",
        "cluster_size=4k",
        &[
            "write -P 0x11 0 1M",
            "write -P 0x12 2M 10k",
            "write -z 1M 8k",
        ],
    );
    let before = d.join("before.raw");
    qemu_img_ok(&["convert", "-O", "raw", s(&a), s(&before)]);
    // Taken by diskferry: listed and read by qemu-img, IDs numbered as qemu numbers them.
    run_ok(&["snapshot", "-c", "first", s(&a)]);
    run_ok(&["snapshot", "-c", "second", s(&a)]);
    run_ok(&["snapshot", "-c", "first", s(&a)]);
    assert_clean(&a);
    let r2 = make(d, "r2.qcow2", "4M", "cluster_size=4k", &[]);
    for n in ["first", "second", "first"] {
        qemu_img_ok(&["snapshot", "-c", n, s(&r2)]);
    }
    assert_eq!(snapshot_list(&a), snapshot_list(&r2));
    let snap = d.join("snap.raw");
    qemu_img_ok(&[
        "convert",
        "-l",
        "snapshot.id=2",
        "-O",
        "raw",
        s(&a),
        s(&snap),
    ]);
    assert!(qemu_compare("raw", &snap, "raw", &before));
    // The active state changes (in place, so shared clusters are copied first), the
    // snapshots do not.
    qio(
        &a,
        &[
            "write -P 0x44 4k 20k",
            "write -P 0x45 3M 1M",
            "discard 0 4k",
        ],
    );
    assert_clean(&a);
    std::fs::remove_file(&snap).unwrap();
    qemu_img_ok(&["convert", "-l", "second", "-O", "raw", s(&a), s(&snap)]);
    assert!(qemu_compare("raw", &snap, "raw", &before));
    // Applied by diskferry and by qemu-img: the same.
    let theirs = copy(&a, "a-theirs.qcow2");
    run_ok(&["snapshot", "-a", "second", s(&a)]);
    qemu_img_ok(&["snapshot", "-a", "second", s(&theirs)]);
    assert_same(&a, &theirs);
    assert!(qemu_compare("qcow2", &a, "raw", &before));
    // Deleted by diskferry and by qemu-img (by ID, then by name).
    // qemu-img deletes by name only; the first of two of the same name goes first.
    for key in ["first", "second"] {
        run_ok(&["snapshot", "-d", key, s(&a)]);
        qemu_img_ok(&["snapshot", "-d", key, s(&theirs)]);
        assert_same(&a, &theirs);
        assert_eq!(snapshot_list(&a), snapshot_list(&theirs));
    }
    // Snapshots qemu-img took, applied and deleted by diskferry; a snapshot of another size.
    let q = make(d, "q.qcow2", "2M", "", &["write -P 0x61 0 300k"]);
    qemu_img_ok(&["snapshot", "-c", "small", s(&q)]);
    qemu_img_ok(&["resize", "-q", s(&q), "6M"]);
    qio(&q, &["write -P 0x62 64k 5M"]);
    qemu_img_ok(&["snapshot", "-c", "big", s(&q)]);
    let qt = copy(&q, "q-theirs.qcow2");
    run_ok(&["snapshot", "-a", "small", s(&q)]);
    qemu_img_ok(&["snapshot", "-a", "small", s(&qt)]);
    assert_same(&q, &qt);
    assert_eq!(vsize(&q), 2 * MIB);
    run_ok(&["snapshot", "-d", "big", s(&q)]);
    qemu_img_ok(&["snapshot", "-d", "big", s(&qt)]);
    assert_same(&q, &qt);
    assert_eq!(snapshot_list(&q), snapshot_list(&qt));
    // Unknown snapshots: qemu-img's messages.
    let (code, _, err) = run(&["snapshot", "-a", "nope", s(&q)]);
    assert_ne!(code, 0);
    assert!(err.contains("Could not apply snapshot 'nope'"), "{err}");
    let (code, _, err) = run(&["snapshot", "-d", "nope", s(&q)]);
    assert_ne!(code, 0);
    assert!(err.contains("Could not delete snapshot 'nope'"), "{err}");
}

#[test]
fn rebase_unsafe_matches_qemu_img() {
    if !have_qemu("rebase_unsafe_matches_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make(d, "base1.qcow2", "2M", "", &["write -P 0x01 0 2M"]);
    let b2 = make(d, "base2.qcow2", "2M", "", &["write -P 0x02 0 2M"]);
    qemu_img_ok(&["convert", "-O", "raw", s(&b2), s(&d.join("base2.raw"))]);
    let top = make(
        d,
        "top.qcow2",
        "2M",
        "backing_file=base1.qcow2,backing_fmt=qcow2",
        &[],
    );
    qio(&top, &["write -P 0x03 64k 64k"]);
    let gate = Gate::anywhere();
    let cases: Vec<Option<NewBacking>> = vec![
        Some(NewBacking {
            name: "base2.qcow2".into(),
            format: Some(FORMAT),
        }),
        Some(NewBacking {
            name: "base2.raw".into(),
            format: Some(diskferry::formats::raw::FORMAT),
        }),
        None,
    ];
    for (i, case) in cases.iter().enumerate() {
        let ours = copy(&top, &format!("ours{i}.qcow2"));
        let theirs = copy(&top, &format!("theirs{i}.qcow2"));
        FORMAT
            .driver()
            .set_backing(&ours, case.as_ref(), &ctx(&gate))
            .unwrap();
        let mut q = vec!["rebase", "-u", "-f", "qcow2"];
        match case {
            Some(b) => {
                q.extend(["-b", b.name.as_str()]);
                if let Some(f) = b.format {
                    q.extend(["-F", f.name()]);
                }
            }
            None => q.extend(["-b", ""]),
        }
        q.push(s(&theirs));
        qemu_img_ok(&q);
        let (a, b) = (info(&ours), info(&theirs));
        for key in ["backing-filename", "backing-filename-format"] {
            assert_eq!(a.get(key), b.get(key), "{key} of case {i}");
        }
        assert_same(&ours, &theirs);
    }
    // A name too long for the header cluster is refused, the image unchanged.
    let small = make(d, "small.qcow2", "1M", "cluster_size=512", &[]);
    let long = NewBacking {
        name: "x".repeat(600),
        format: None,
    };
    let e = FORMAT
        .driver()
        .set_backing(&small, Some(&long), &ctx(&gate))
        .unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    assert_clean(&small);
    assert!(info(&small).get("backing-filename").is_none());
}

#[test]
fn amend_matches_qemu_img() {
    if !have_qemu("amend_matches_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make(d, "base.qcow2", "2M", "", &["write -P 0x01 0 2M"]);
    let v3 = make(
        d,
        "v3.qcow2",
        "2M",
        "backing_file=base.qcow2,backing_fmt=qcow2",
        &[],
    );
    // Zero clusters over the backing file: a downgrade must keep them reading as zeros.
    qio(
        &v3,
        &[
            "write -P 0x11 0 100k",
            "write -z 128k 128k",
            "write -z 1M 64k",
        ],
    );
    qemu_img_ok(&["snapshot", "-c", "s", s(&v3)]);
    qio(&v3, &["write -z 512k 64k"]);
    let plain = make(
        d,
        "plain.qcow2",
        "2M",
        "",
        &["write -z 0 64k", "write -P 1 64k 4k"],
    );
    let v2 = make(d, "v2.qcow2", "2M", "compat=0.10", &["write -P 2 0 10k"]);
    let cases: &[(&Path, &str)] = &[
        (&v3, "compat=0.10"),
        (&plain, "compat=0.10"),
        (&v2, "compat=1.1"),
        (&v2, "compat=1.1,lazy_refcounts=on"),
        (&plain, "lazy_refcounts=on"),
        (&v3, "backing_file=base.qcow2,backing_fmt=qcow2"),
    ];
    for (i, (image, opts)) in cases.iter().enumerate() {
        let ours = copy(image, &format!("ours{i}.qcow2"));
        let theirs = copy(image, &format!("theirs{i}.qcow2"));
        run_ok(&["amend", "-o", opts, s(&ours)]);
        qemu_img_ok(&["amend", "-o", opts, s(&theirs)]);
        let (a, b) = (info(&ours), info(&theirs));
        assert_eq!(
            a["format-specific"]["data"], b["format-specific"]["data"],
            "case {i}: {opts}"
        );
        assert_eq!(
            a.get("backing-filename-format"),
            b.get("backing-filename-format")
        );
        assert_same(&ours, &theirs);
        if opts.contains("0.10") {
            // Snapshots keep their content across the downgrade.
            assert_eq!(snapshot_list(&ours), snapshot_list(&theirs));
        }
    }
    // Changing the backing file (qemu-img amend refuses and points at rebase -u, diskferry
    // does what rebase -u does).
    let ours = copy(&v3, "ours-b.qcow2");
    let theirs = copy(&v3, "theirs-b.qcow2");
    run_ok(&["amend", "-o", "backing_fmt=raw", s(&ours)]);
    qemu_img_ok(&["rebase", "-u", "-F", "raw", "-b", "base.qcow2", s(&theirs)]);
    assert_eq!(info(&ours)["backing-filename-format"], "raw");
    assert_same(&ours, &theirs);
    // Refusals: one clear line naming the option.
    let refusals: &[(&Path, &str, &str)] = &[
        (&plain, "cluster_size=4k", "cluster_size"),
        (&plain, "refcount_bits=8", "refcount_bits"),
        (&plain, "compat=0.10,lazy_refcounts=on", "Lazy refcounts"),
        (&plain, "preallocation=full", "preallocation"),
    ];
    for (image, opts, word) in refusals {
        let (code, _, err) = run(&["amend", "-o", opts, s(image)]);
        assert_ne!(code, 0, "{opts}");
        assert!(err.contains(word), "{opts}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let l2 = make(d, "l2.qcow2", "1M", "extended_l2=on", &[]);
    let (code, _, err) = run(&["amend", "-o", "compat=0.10", s(&l2)]);
    assert_ne!(code, 0);
    assert!(err.contains("Cannot downgrade"), "{err}");
    assert_clean(&l2);
    let help = run_ok(&["amend", "-f", "qcow2", "-o", "help", s(&plain)]);
    for key in [
        "compat",
        "lazy_refcounts",
        "backing_file",
        "backing_fmt",
        "refcount_bits",
    ] {
        assert!(help.contains(key), "{help}");
    }
}

#[test]
fn amend_downgrades_zstd_images_as_qemu_img_10_does() {
    let test = "amend_downgrades_zstd_images_as_qemu_img_10_does";
    let Some((dir, fake)) = qemu_img_scratch(test) else {
        return;
    };
    let d = dir.path();
    // No compressed cluster: qemu-img 10 downgrades, and the image becomes zlib (version 2
    // has no other compression type).
    let plain = make(
        d,
        "plain.qcow2",
        "2M",
        "compression_type=zstd",
        &["write -P 0x11 0 100k", "write -z 1M 64k"],
    );
    let ours = copy(&plain, "ours.qcow2");
    let theirs = copy(&plain, "theirs.qcow2");
    let (code, _, err) = run_prog(&fake, &["amend", "-o", "compat=0.10", s(&ours)]);
    assert_eq!(code, 0, "{err}");
    qemu_img_ok(&["amend", "-o", "compat=0.10", s(&theirs)]);
    let (a, b) = (info(&ours), info(&theirs));
    assert_eq!(a["format-specific"]["data"], b["format-specific"]["data"]);
    assert_eq!(b["format-specific"]["data"]["compat"], "0.10");
    assert_same(&ours, &theirs);
    // A compressed cluster: both refuse with qemu-img's words and leave the image as it was.
    let packed = make(
        d,
        "packed.qcow2",
        "2M",
        "compression_type=zstd",
        &["write -c -P 0x22 0 64k"],
    );
    let ours = copy(&packed, "ours-c.qcow2");
    let theirs = copy(&packed, "theirs-c.qcow2");
    let args = |p: &Path| {
        vec![
            "amend".to_string(),
            "-o".into(),
            "compat=0.10".into(),
            s(p).into(),
        ]
    };
    let (qc, _, qerr) = qemu_img(&args(&theirs).iter().map(String::as_str).collect::<Vec<_>>());
    let (dc, _, derr) = run_prog(
        &fake,
        &args(&ours).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!((dc, derr.as_str()), (qc, qerr.as_str()));
    assert_eq!(
        qerr,
        "qemu-img: Cannot downgrade an image with zstd compression type and existing compressed clusters\n"
    );
    assert_eq!(
        std::fs::read(&ours).unwrap(),
        std::fs::read(&packed).unwrap()
    );
    // Under its own name diskferry names the image.
    let (code, _, err) = run(&["amend", "-o", "compat=0.10", s(&ours)]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("diskferry: {}: Cannot downgrade", s(&ours))),
        "{err}"
    );
    // Compressed clusters only a snapshot holds: qemu-img 10 looks at the active table alone
    // and downgrades, after which the snapshot no longer reads; diskferry refuses.
    let snap = copy(&packed, "snap.qcow2");
    qemu_img_ok(&["snapshot", "-c", "s1", s(&snap)]);
    qio(&snap, &["write -P 0x33 0 64k"]);
    let before = std::fs::read(&snap).unwrap();
    let (code, _, err) = run_prog(&fake, &["amend", "-o", "compat=0.10", s(&snap)]);
    assert_eq!(code, 1);
    assert!(err.contains("existing compressed clusters"), "{err}");
    assert_eq!(std::fs::read(&snap).unwrap(), before);
}

/// Random writes and clears of one seed, through open_mut and as qemu-io commands.
fn series(seed: u64, size: u64, count: usize) -> Vec<(u64, u64, u8)> {
    let mut x = seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| {
            let kind = (next() % 4) as u8;
            let len = 1 + next() % (200 * KIB);
            let len = len.next_multiple_of(512);
            let off = (next() % (size - len)) / 512 * 512;
            (off, len, kind)
        })
        .collect()
}

/// Applies `series` through open_mut: kind 0 and 1 write a pattern, 2 clears to zeros, 3
/// deallocates.
fn apply_ours(image: &Path, list: &[(u64, u64, u8)]) {
    let gate = Gate::anywhere();
    let mut w = FORMAT.driver().open_mut(image, &ctx(&gate)).unwrap();
    for (i, &(off, len, kind)) in list.iter().enumerate() {
        match kind {
            0 | 1 => w
                .write_at(off, &vec![0x40 + (i % 64) as u8; len as usize])
                .unwrap(),
            2 => w.clear(off, len, Clear::Zero).unwrap(),
            _ => w.clear(off, len, Clear::Deallocate).unwrap(),
        }
    }
    w.flush().unwrap();
}

fn apply_theirs(image: &Path, list: &[(u64, u64, u8)]) {
    let cmds: Vec<String> = list
        .iter()
        .enumerate()
        .map(|(i, &(off, len, kind))| match kind {
            0 | 1 => format!("write -P {} {off} {len}", 0x40 + (i % 64)),
            2 => format!("write -z {off} {len}"),
            // What a deallocated range reads as: the backing file's bytes, written.
            _ => format!("discard {off} {len}"),
        })
        .collect();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qio(image, &refs);
}

#[test]
fn writes_through_open_mut_match_qemu_io() {
    if !have_qemu("writes_through_open_mut_match_qemu_io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 4 * MIB;
    make(
        d,
        "base.qcow2",
        "4M",
        "",
        &["write -P 0x01 0 3M", "write -P 0x02 3M 500k"],
    );
    for (i, opts) in [
        "",
        "cluster_size=4k",
        "extended_l2=on",
        "compat=0.10",
        "cluster_size=512,refcount_bits=1",
    ]
    .iter()
    .enumerate()
    {
        let mut o = String::from("backing_file=base.qcow2,backing_fmt=qcow2");
        if !opts.is_empty() {
            o = format!("{o},{opts}");
        }
        let top = make(
            d,
            &format!("top{i}.qcow2"),
            "4M",
            &o,
            &["write -P 0x09 100k 100k"],
        );
        let theirs = copy(&top, &format!("theirs{i}.qcow2"));
        // Writes and zeroing (deallocation is compared separately: qemu-io's discard of a
        // partial cluster leaves it alone, ours reads through to the backing file).
        let list: Vec<_> = series(7 + i as u64, size, 60)
            .into_iter()
            .filter(|e| e.2 != 3)
            .collect();
        apply_ours(&top, &list);
        apply_theirs(&theirs, &list);
        assert_same(&top, &theirs);
    }
    // Writing into an image with snapshots: shared clusters are copied, the snapshot keeps its
    // content.
    let snap = make(
        d,
        "snap.qcow2",
        "4M",
        "cluster_size=4k",
        &["write -P 0x21 0 2M"],
    );
    qemu_img_ok(&["snapshot", "-c", "s", s(&snap)]);
    let theirs = copy(&snap, "snap-theirs.qcow2");
    let list: Vec<_> = series(99, size, 40)
        .into_iter()
        .filter(|e| e.2 != 3)
        .collect();
    apply_ours(&snap, &list);
    apply_theirs(&theirs, &list);
    assert_same(&snap, &theirs);
    let (a, b) = (d.join("s-ours.raw"), d.join("s-theirs.raw"));
    qemu_img_ok(&["convert", "-l", "s", "-O", "raw", s(&snap), s(&a)]);
    qemu_img_ok(&["convert", "-l", "s", "-O", "raw", s(&theirs), s(&b)]);
    assert!(qemu_compare("raw", &a, "raw", &b));
    // Deallocation of whole clusters: the backing file shows through again, as after
    // qemu-io's discard; of partial clusters, the backing file's bytes are written.
    let top = make(
        d,
        "dealloc.qcow2",
        "4M",
        "backing_file=base.qcow2,backing_fmt=qcow2",
        &[],
    );
    qio(&top, &["write -P 0x31 0 1M"]);
    let theirs = copy(&top, "dealloc-theirs.qcow2");
    let gate = Gate::anywhere();
    {
        let mut w = FORMAT.driver().open_mut(&top, &ctx(&gate)).unwrap();
        w.clear(128 * KIB, 256 * KIB, Clear::Deallocate).unwrap();
        w.clear(600 * KIB + 512, 3 * KIB, Clear::Deallocate)
            .unwrap();
        w.flush().unwrap();
    }
    // qemu-io's discard makes clusters read as zeros; what is expected is the backing file.
    qio(&theirs, &["write -P 1 128k 256k"]);
    let mut part = vec![0u8; 3 * KIB as usize];
    let base = diskferry::Image::open(&d.join("base.qcow2"), &Default::default()).unwrap();
    base.read_at(600 * KIB + 512, &mut part).unwrap();
    let patt = part[0];
    assert!(part.iter().all(|&b| b == patt));
    qio(
        &theirs,
        &[&format!("write -P {patt} {} {}", 600 * KIB + 512, 3 * KIB)],
    );
    assert_same(&top, &theirs);
    let map: Value =
        serde_json::from_str(&qemu_img_ok(&["map", "--output=json", s(&top)])).unwrap();
    assert!(
        map.as_array()
            .unwrap()
            .iter()
            .any(|m| m["start"] == 128 * KIB && m["length"] == 256 * KIB && m["depth"] == 1),
        "the deallocated range is not the backing file's: {map}"
    );
    // Past the end: refused.
    let mut w = FORMAT.driver().open_mut(&top, &ctx(&gate)).unwrap();
    assert!(w.write_at(size - 512, &[0u8; 1024]).is_err());
}

/// The ranges of `image` that hold data, as qemu-img map reports them.
fn data_ranges(image: &Path) -> Vec<std::ops::Range<u64>> {
    let v: Value = serde_json::from_str(&qemu_img_ok(&["map", "--output=json", s(image)])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|m| m["data"] == true && m["zero"] == false)
        .map(|m| {
            let start = m["start"].as_u64().unwrap();
            start..start + m["length"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn measure_matches_qemu_img() {
    if !have_qemu("measure_matches_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = make(
        d,
        "src.qcow2",
        "100M",
        "cluster_size=4k",
        &[
            "write -P 1 0 1k",
            "write -P 2 70k 200k",
            "write -z 1M 1M",
            "write -P 3 99M 1M",
        ],
    );
    let ranges = data_ranges(&src);
    let options = [
        "",
        "cluster_size=512",
        "cluster_size=2M",
        "refcount_bits=1",
        "refcount_bits=64,cluster_size=4k",
        "extended_l2=on",
        "extended_l2=on,cluster_size=16k",
        "preallocation=metadata",
        "preallocation=full",
        "preallocation=falloc,cluster_size=8k",
        "compat=0.10",
        "lazy_refcounts=on",
        "backing_file=x.qcow2,backing_fmt=qcow2",
    ];
    for o in options {
        let opts = FormatOptions::parse(FORMAT, FORMAT.driver().create_options(), o).unwrap();
        for size in [0, 512, 100 * MIB, 5 << 30, 1 << 40] {
            let req = MeasureRequest {
                virtual_size: size,
                allocated: &[],
                options: &opts,
                source_bitmaps: None,
            };
            let m = FORMAT.driver().measure(&req);
            let mut q = vec!["measure", "--output=json", "-O", "qcow2"];
            if !o.is_empty() {
                q.extend(["-o", o]);
            }
            let size_text = size.to_string();
            q.extend(["--size", &size_text]);
            let (code, out, err) = qemu_img(&q);
            if code != 0 {
                assert!(
                    m.is_err(),
                    "qemu-img refuses -o {o} --size {size} ({err}), we do not"
                );
                continue;
            }
            let m = m.unwrap();
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                (m.required, m.fully_allocated),
                (
                    v["required"].as_u64().unwrap(),
                    v["fully-allocated"].as_u64().unwrap()
                ),
                "-o {o} --size {size}"
            );
        }
        let req = MeasureRequest {
            virtual_size: 100 * MIB,
            allocated: &ranges,
            options: &opts,
            source_bitmaps: None,
        };
        let m = FORMAT.driver().measure(&req).unwrap();
        let mut q = vec!["measure", "--output=json", "-O", "qcow2"];
        if !o.is_empty() {
            q.extend(["-o", o]);
        }
        q.push(s(&src));
        let v: Value = serde_json::from_str(&qemu_img_ok(&q)).unwrap();
        assert_eq!(
            (m.required, m.fully_allocated),
            (
                v["required"].as_u64().unwrap(),
                v["fully-allocated"].as_u64().unwrap()
            ),
            "-o {o} from {}",
            src.display()
        );
    }
    let opts =
        FormatOptions::parse(FORMAT, FORMAT.driver().create_options(), "cluster_size=512").unwrap();
    let req = MeasureRequest {
        virtual_size: 1 << 50,
        allocated: &[],
        options: &opts,
        source_bitmaps: None,
    };
    assert!(FORMAT.driver().measure(&req).is_err());
}

#[test]
fn amend_of_an_image_with_a_data_file_killed_at_any_write_leaves_the_old_or_the_new_header() {
    if !have_qemu(
        "amend_of_an_image_with_a_data_file_killed_at_any_write_leaves_the_old_or_the_new_header",
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data.raw");
    let content = d.path().join("content.raw");
    make_raw(&content, 4 << 20, &[(4096, 100_000), (3 << 20, 65536)]);
    for (create, amend) in [
        ("", "lazy_refcounts=on,data_file=DIR/moved.raw"),
        (",data_file_raw=on", "data_file_raw=off"),
    ] {
        let img = d.path().join("img.qcow2");
        let _ = std::fs::remove_file(&data);
        let opts = format!("data_file={}{create}", s(&data));
        qemu_img_ok(&["create", "-q", "-f", "qcow2", "-o", &opts, s(&img), "4M"]);
        qemu_img_ok(&[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&content),
            s(&img),
        ]);
        let amend = amend.replace("DIR", d.path().to_str().unwrap());
        let before = std::fs::read(&img).unwrap();
        let tried = abort_points(|n| {
            let copy = d.path().join("copy.qcow2");
            std::fs::write(&copy, &before).unwrap();
            let done = run_aborted(&["amend", "-o", &amend, s(&copy)], n);
            // The header is switched in one write: the old image or the new, both of which
            // qemu-img reads as the same disk once the data file is where the header says.
            let now = std::fs::read(&copy).unwrap();
            if now != before {
                let _ = std::fs::hard_link(&data, d.path().join("moved.raw"));
            }
            qemu_img_ok(&["info", s(&copy)]);
            let (code, out, err) = qemu_img(&["check", s(&copy)]);
            assert_eq!(code, 0, "-o {amend}, abort after write {n}: {out}{err}");
            assert!(
                qemu_compare("qcow2", &copy, "raw", &content),
                "-o {amend}, write {n}"
            );
            done
        });
        assert!(tried >= 2, "{tried}");
    }
}

/// Runs `args` with the process aborted after write `n`; true when it finished first (an
/// error other than the abort fails the test).
fn run_aborted(args: &[&str], n: u64) -> bool {
    let out = diskferry()
        .args(args)
        .env(ABORT_AFTER, n.to_string())
        .output()
        .unwrap();
    finished(&out, args)
}

/// True when the process finished well, false when it was aborted; fails on an error.
fn finished(out: &std::process::Output, what: &[&str]) -> bool {
    if out.status.code().is_none() {
        return false;
    }
    assert!(
        out.status.success(),
        "{what:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// After a crash: diskferry and qemu-img open the image, `check -r all` leaves it clean.
fn assert_recoverable(image: &Path) {
    let (code, _, err) = run(&["info", s(image)]);
    assert_eq!(code, 0, "diskferry cannot open the crashed image: {err}");
    qemu_img_ok(&["info", s(image)]);
    let (code, out, err) = qemu_img(&["check", "-r", "all", s(image)]);
    assert!(code == 0, "check -r all left problems: {out}{err}");
    assert_clean(image);
    let (code, _, err) = run(&["check", s(image)]);
    assert_eq!(code, 0, "diskferry check after the repair: {err}");
}

/// Write counts to abort after: every one at first, then spread out, until the operation
/// finishes unharmed (about 20 points for the longer operations).
fn abort_points(mut each: impl FnMut(u64) -> bool) -> usize {
    let mut n = 1u64;
    let mut tried = 0;
    loop {
        tried += 1;
        if each(n) {
            return tried;
        }
        n = if n < 6 { n + 1 } else { n * 4 / 3 };
        assert!(tried < 200, "the operation never finished");
    }
}

#[test]
fn operations_killed_at_any_point_leave_a_repairable_image() {
    if !have_qemu("operations_killed_at_any_point_leave_a_repairable_image") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make(d, "base.qcow2", "8M", "", &["write -P 0x01 0 8M"]);
    let orig = make(
        d,
        "orig.qcow2",
        "4M",
        "backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=512",
        &[],
    );
    qio(
        &orig,
        &[
            "write -P 0x11 0 1M",
            "write -z 1M 512k",
            "write -P 0x12 2M 100k",
        ],
    );
    qemu_img_ok(&["snapshot", "-c", "s0", s(&orig)]);
    qio(&orig, &["write -P 0x13 512k 1M"]);
    let orig_raw = d.join("orig.raw");
    qemu_img_ok(&["convert", "-O", "raw", s(&orig), s(&orig_raw)]);
    let s0_raw = d.join("s0.raw");
    qemu_img_ok(&["convert", "-l", "s0", "-O", "raw", s(&orig), s(&s0_raw)]);
    type Op<'a> = (&'a str, Vec<&'a str>, &'a Path);
    let ops: Vec<Op> = vec![
        ("resize", vec!["resize", "-f", "qcow2"], &orig_raw),
        ("snapshot -c", vec!["snapshot", "-c", "new"], &orig_raw),
        ("snapshot -a", vec!["snapshot", "-a", "s0"], &s0_raw),
        ("snapshot -d", vec!["snapshot", "-d", "s0"], &orig_raw),
        ("amend", vec!["amend", "-o", "compat=0.10"], &orig_raw),
        ("amend", vec!["amend", "-o", "lazy_refcounts=on"], &orig_raw),
    ];
    for (name, args, after) in ops {
        let tried = abort_points(|n| {
            let img = d.join("crash.qcow2");
            std::fs::copy(&orig, &img).unwrap();
            let mut a = args.clone();
            a.push(s(&img));
            if name == "resize" {
                a.push("6M");
            }
            let finished = run_aborted(&a, n);
            assert_recoverable(&img);
            // The old content or the new one, nothing else.
            let now = d.join("now.raw");
            let _ = std::fs::remove_file(&now);
            qemu_img_ok(&["convert", "-O", "raw", s(&img), s(&now)]);
            let same_as = |p: &Path| qemu_compare("raw", &now, "raw", p);
            assert!(
                same_as(&orig_raw) || same_as(after),
                "{name} aborted after write {n}: content is neither the old nor the new"
            );
            if finished {
                assert!(same_as(after), "{name} finished with the wrong content");
            }
            finished
        });
        eprintln!("{name}: aborted at {tried} points");
    }
}

/// The child of `writes_killed_at_any_point_leave_a_repairable_image`: a long series of
/// writes into the image named by the environment (does nothing when run by itself).
#[test]
fn child_writer() {
    let Some(image) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    apply_ours(Path::new(&image), &series(5, 4 * MIB, 80));
}

#[test]
fn writes_killed_at_any_point_leave_a_repairable_image() {
    if !have_qemu("writes_killed_at_any_point_leave_a_repairable_image") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make(d, "base.qcow2", "4M", "", &["write -P 0x01 0 4M"]);
    let orig = make(
        d,
        "orig.qcow2",
        "4M",
        "backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=4k,lazy_refcounts=on",
        &[],
    );
    qio(&orig, &["write -P 0x11 0 1M"]);
    qemu_img_ok(&["snapshot", "-c", "s0", s(&orig)]);
    let s0 = d.join("s0.raw");
    qemu_img_ok(&["convert", "-l", "s0", "-O", "raw", s(&orig), s(&s0)]);
    let me = std::env::current_exe().unwrap();
    let tried = abort_points(|n| {
        let img = d.join("crash.qcow2");
        std::fs::copy(&orig, &img).unwrap();
        let out = Command::new(&me)
            .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &img)
            .env(ABORT_AFTER, n.to_string())
            .current_dir(d)
            .output()
            .unwrap();
        assert_recoverable(&img);
        // Both readers read the same disk, and the snapshot is untouched.
        let (a, b) = (d.join("a.raw"), d.join("b.raw"));
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&b);
        run_ok(&["convert", "-O", "raw", s(&img), s(&a)]);
        qemu_img_ok(&["convert", "-O", "raw", s(&img), s(&b)]);
        assert!(qemu_compare("raw", &a, "raw", &b));
        let _ = std::fs::remove_file(&b);
        qemu_img_ok(&["convert", "-l", "s0", "-O", "raw", s(&img), s(&b)]);
        assert!(qemu_compare("raw", &b, "raw", &s0));
        finished(&out, &["child_writer"])
    });
    eprintln!("writes: aborted at {tried} points");
    assert!(tried >= 15, "only {tried} abort points");
}

#[test]
fn malformed_images_give_one_clear_error() {
    if !have_qemu("malformed_images_give_one_clear_error") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let patch = |name: &str, at: u64, bytes: &[u8], snapshot: bool| -> PathBuf {
        let p = make(d, name, "1M", "", &["write -P 1 0 100k"]);
        if snapshot {
            qemu_img_ok(&["snapshot", "-c", "s", s(&p)]);
        }
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(bytes, at).unwrap();
        p
    };
    let corrupt = patch("corrupt.qcow2", 72, &2u64.to_be_bytes(), false);
    let reftable = patch("reftable.qcow2", 48, &(1u64 << 40).to_be_bytes(), false);
    let snaps = patch("snaps.qcow2", 60, &5000u32.to_be_bytes(), true);
    let cases: &[(&Path, &str)] = &[
        (&corrupt, "corrupt"),
        (&reftable, "refcount table"),
        (&snaps, "snapshot table"),
    ];
    for (image, word) in cases {
        let before = std::fs::read(image).unwrap();
        for args in [
            vec!["resize", "-f", "qcow2", s(image), "2M"],
            vec!["snapshot", "-f", "qcow2", "-c", "x", s(image)],
            vec!["amend", "-f", "qcow2", "-o", "lazy_refcounts=on", s(image)],
        ] {
            let (code, _, err) = run(&args);
            assert_ne!(code, 0, "{args:?}");
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
            assert!(err.contains(word), "{args:?}: {err}");
            assert!(err.contains(s(image)), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
        assert_eq!(
            std::fs::read(image).unwrap(),
            before,
            "the image was changed"
        );
        let gate = Gate::anywhere();
        assert!(FORMAT.driver().open_mut(image, &ctx(&gate)).is_err());
    }
}

/// An L1 table as long as a refcount block's range or longer (512-byte clusters from 511 MiB,
/// 4 KiB clusters at 2 TiB; a snapshot's copy of the L1 alike) is allocated at once, as
/// qemu-img allocates it: before, each refcount block placed inside the run pushed the run
/// on into the next range without a block, and the file grew until the disk was full.
#[test]
fn an_l1_longer_than_a_refcount_block_range_is_allocated_at_once() {
    let test = "an_l1_longer_than_a_refcount_block_range_is_allocated_at_once";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (opts, from, to) in [
        ("cluster_size=512", "1M", "511M"),
        ("cluster_size=512", "1M", "2G"),
        ("cluster_size=4096", "1G", "2T"),
    ] {
        let ours = make(d, "ours.qcow2", from, opts, &["write -P 0x5a 0 64k"]);
        let theirs = copy(&ours, "theirs.qcow2");
        let mut child = diskferry().args(["resize", s(&ours), to]).spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{opts}: resize {from} -> {to} did not finish in 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(status.success(), "{opts} {to}");
        qemu_img_ok(&["resize", s(&theirs), to]);
        assert_same(&ours, &theirs);
        let ours_len = std::fs::metadata(&ours).unwrap().len();
        let theirs_len = std::fs::metadata(&theirs).unwrap().len();
        assert!(
            ours_len <= theirs_len + (1 << 20),
            "{opts} {to}: {ours_len} bytes against qemu-img's {theirs_len}"
        );
    }
    // A snapshot copies the L1: 1 GiB of 512-byte clusters has a 256 KiB one.
    let ours = make(
        d,
        "snap.qcow2",
        "1G",
        "cluster_size=512",
        &["write -P 7 0 1M"],
    );
    run_ok(&["snapshot", "-c", "a", s(&ours)]);
    assert_clean(&ours);
    assert_eq!(snapshot_list(&ours), [("1".to_string(), "a".to_string())]);
    assert!(std::fs::metadata(&ours).unwrap().len() < 8 << 20);
}
