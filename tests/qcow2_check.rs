//! `check` and `check -r` of QCOW2 images, judged against `qemu-img check` on the same files:
//! the same JSON (every figure), the same exit codes, clean and identical content after our
//! repair, repairable after a repair killed at any write, no panic on the corpus or on
//! damaged bytes.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// A 6 MiB raw source: text that compresses, data that does not, holes between.
fn source(dir: &Path) -> PathBuf {
    let raw = dir.join("src.raw");
    make_raw(&raw, 6 * MIB, &[]);
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    let text: Vec<u8> = b"a line of text that compresses well, again and again; "
        .iter()
        .cycle()
        .take(700_000)
        .copied()
        .collect();
    f.write_all_at(&text, 0).unwrap();
    f.write_all_at(&pseudo_random(300_000, 3), 2 * MIB + 512)
        .unwrap();
    f.write_all_at(&text[..100_000], 5 * MIB).unwrap();
    raw
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (exit code, JSON, stderr) of `diskferry check --output=json` with `extra` arguments.
fn df_check(image: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["check", "--output=json"];
    args.extend_from_slice(extra);
    args.push(s(image));
    let (code, out, err) = run(&args);
    assert!(
        !err.contains("panicked"),
        "diskferry panicked on {}: {err}",
        image.display()
    );
    let json = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code, json, err)
}

/// The same from qemu-img.
fn qemu_check(image: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["check", "--output=json"];
    args.extend_from_slice(extra);
    args.push(s(image));
    let (code, out, err) = qemu_img(&args);
    (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

/// Asserts that both checkers print the same JSON (text and key order included) and exit
/// the same; returns the exit code.
fn assert_agree(image: &Path, what: &str) -> i32 {
    let (dc, dj, de) = df_check(image, &[]);
    let (qc, qj, qe) = qemu_check(image, &[]);
    assert_eq!(
        (dc, to_text(&dj), lines(&de)),
        (qc, to_text(&qj), lines(&qe)),
        "{what}: diskferry and qemu-img check disagree\n--- diskferry stderr:\n{de}\n--- qemu-img stderr:\n{qe}"
    );
    dc
}

/// A checker's stderr without its own error lines (`qemu-img: Check failed...`,
/// `diskferry: ...`), which name the program: the rest must match line for line.
fn lines(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("qemu-img: ") && !l.starts_with("diskferry: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn to_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

/// The JSON of a check of another copy of the image: everything but the file name.
fn figures(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("filename");
    }
    to_text(&v)
}

/// A parsed QCOW2 header, enough to find the structures a test damages.
struct Layout {
    cluster_bits: u32,
    l1_offset: u64,
    reftable_offset: u64,
    refcount_order: u32,
}

fn be64(f: &std::fs::File, at: u64) -> u64 {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, at).unwrap();
    u64::from_be_bytes(b)
}

fn be32(f: &std::fs::File, at: u64) -> u32 {
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, at).unwrap();
    u32::from_be_bytes(b)
}

impl Layout {
    fn read(f: &std::fs::File) -> Layout {
        let version = be32(f, 4);
        Layout {
            cluster_bits: be32(f, 20),
            l1_offset: be64(f, 40),
            reftable_offset: be64(f, 48),
            refcount_order: if version >= 3 { be32(f, 96) } else { 4 },
        }
    }

    /// Where the 16-bit refcount of `cluster` is stored.
    fn refcount_at(&self, f: &std::fs::File, cluster: u64) -> u64 {
        assert_eq!(self.refcount_order, 4, "tests damage 16-bit refcounts");
        let per_block = 1u64 << (self.cluster_bits - 1);
        let block = be64(f, self.reftable_offset + 8 * (cluster / per_block)) & !0x1ff;
        block + 2 * (cluster % per_block)
    }

    fn l2_of(&self, f: &std::fs::File, l1_index: u64) -> u64 {
        be64(f, self.l1_offset + 8 * l1_index) & 0x00ff_ffff_ffff_fe00
    }
}

fn set16(f: &std::fs::File, at: u64, v: u16) {
    f.write_all_at(&v.to_be_bytes(), at).unwrap();
}

fn get16(f: &std::fs::File, at: u64) -> u16 {
    let mut b = [0u8; 2];
    f.read_exact_at(&mut b, at).unwrap();
    u16::from_be_bytes(b)
}

fn open_rw(p: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap()
}

fn copy(from: &Path, to: &Path) -> PathBuf {
    std::fs::copy(from, to).unwrap();
    to.to_path_buf()
}

fn have_qemu_io() -> bool {
    std::process::Command::new("qemu-io")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn qemu_io(image: &Path, cmds: &[&str]) {
    let mut c = std::process::Command::new("qemu-io");
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(image).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmds:?}: {out:?}");
}

/// Images qemu-img makes with every option that shapes metadata, and diskferry's own.
fn clean_images(dir: &Path, raw: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut opts: Vec<(String, Vec<String>)> = Vec::new();
    for cs in ["512", "4k", "64k", "2M"] {
        opts.push((format!("cs{cs}"), vec![format!("cluster_size={cs}")]));
        opts.push((
            format!("cs{cs}-c"),
            vec![format!("cluster_size={cs}"), "-c".into()],
        ));
    }
    for bits in [1, 2, 4, 8, 16, 32, 64] {
        opts.push((
            format!("rb{bits}"),
            vec![format!("refcount_bits={bits},cluster_size=4k")],
        ));
    }
    opts.push((
        "ext-l2".into(),
        vec!["extended_l2=on,cluster_size=64k".into()],
    ));
    opts.push((
        "ext-l2-c".into(),
        vec!["extended_l2=on,cluster_size=128k".into(), "-c".into()],
    ));
    opts.push(("v2".into(), vec!["compat=0.10".into()]));
    opts.push((
        "zstd-c".into(),
        vec!["compression_type=zstd".into(), "-c".into()],
    ));
    opts.push(("meta".into(), vec!["preallocation=metadata".into()]));
    for (tool, maker) in [("qemu", true), ("diskferry", false)] {
        for (name, o) in &opts {
            let img = dir.join(format!("{tool}-{name}.qcow2"));
            let mut args: Vec<&str> = vec!["convert", "-O", "qcow2"];
            let mut joined = Vec::new();
            for a in o {
                if a == "-c" {
                    args.push("-c");
                } else {
                    joined.push(a.as_str());
                }
            }
            let joined = joined.join(",");
            if !joined.is_empty() {
                args.extend(["-o", &joined]);
            }
            args.extend([s(raw), s(&img)]);
            if maker {
                qemu_img_ok(&args);
            } else {
                run_ok(&args);
            }
            out.push((format!("{tool} {name}"), img));
        }
    }
    out
}

#[test]
fn clean_images_give_qemu_img_s_figures() {
    let t = "clean_images_give_qemu_img_s_figures";
    if !have_qemu(t) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = source(dir.path());
    for (what, img) in clean_images(dir.path(), &raw) {
        assert_eq!(assert_agree(&img, &what), 0, "{what} is not clean");
    }
}

#[test]
fn snapshots_bitmaps_and_rewrites_give_qemu_img_s_figures() {
    let t = "snapshots_bitmaps_and_rewrites_give_qemu_img_s_figures";
    if !have_qemu(t) {
        return;
    }
    if !have_qemu_io() {
        skip(t, "qemu-io is not installed (qemu-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = source(dir.path());
    for opts in [
        "cluster_size=64k",
        "cluster_size=4k,refcount_bits=8",
        "extended_l2=on",
    ] {
        let img = dir.path().join("snap.qcow2");
        qemu_img_ok(&["convert", "-O", "qcow2", "-o", opts, s(&raw), s(&img)]);
        qemu_img_ok(&["snapshot", "-c", "one", s(&img)]);
        qemu_io(&img, &["write -P 7 64k 256k", "write -P 9 3M 64k"]);
        qemu_img_ok(&["snapshot", "-c", "two", s(&img)]);
        qemu_io(&img, &["write -P 8 0 8k", "discard 5M 64k"]);
        qemu_img_ok(&["bitmap", "--add", s(&img), "b0"]);
        qemu_img_ok(&["bitmap", "--add", "-g", "512k", s(&img), "b1"]);
        qemu_io(&img, &["write -P 4 1M 512k"]);
        assert_eq!(assert_agree(&img, opts), 0, "{opts}");
        // Deleting a snapshot leaves refcounts of 1 where they were 2.
        qemu_img_ok(&["snapshot", "-d", "one", s(&img)]);
        assert_eq!(assert_agree(&img, opts), 0, "{opts}, one snapshot deleted");
        // The human output is qemu-img's too, line for line.
        let (_, dh, _) = run(&["check", s(&img)]);
        let (_, qh, _) = qemu_img(&["check", s(&img)]);
        assert_eq!(dh, qh, "{opts}");
    }
}

/// The ways a test damages an image.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// A data cluster's refcount one too high.
    Leak,
    /// A data cluster's refcount zeroed.
    ZeroRefcount,
    /// A data cluster's refcount one too low (2 → 1 behind a snapshot).
    LowRefcount,
    /// COPIED cleared on an L2 entry with refcount 1.
    CopiedCleared,
    /// COPIED set on an L2 entry shared with a snapshot.
    CopiedSet,
    /// An L2 entry pointing past the end of the file.
    PastEnd,
    /// The active L1 table's first entry pointing at the refcount block.
    L2OnRefblock,
    /// Several leaks and a zeroed refcount at once.
    Mixed,
    /// A zero entry with a preallocated cluster at an offset not on a cluster boundary.
    MisalignedZero,
}

const DAMAGES: [Damage; 9] = [
    Damage::Leak,
    Damage::ZeroRefcount,
    Damage::LowRefcount,
    Damage::CopiedCleared,
    Damage::CopiedSet,
    Damage::PastEnd,
    Damage::L2OnRefblock,
    Damage::Mixed,
    Damage::MisalignedZero,
];

/// A 64 KiB-cluster image with data, a snapshot and data rewritten after it (so that some
/// clusters have refcount 2 and some 1).
fn base_image(dir: &Path) -> PathBuf {
    let raw = source(dir);
    let img = dir.join("base.qcow2");
    qemu_img_ok(&["convert", "-O", "qcow2", s(&raw), s(&img)]);
    qemu_img_ok(&["snapshot", "-c", "snap", s(&img)]);
    if have_qemu_io() {
        qemu_io(&img, &["write -P 7 0 128k"]);
    } else {
        // Without qemu-io, rewrite through a convert of the same content (no COPIED mix).
        note_weaker(
            "base_image",
            "qemu-io missing: no cluster shared with the snapshot is rewritten",
        );
    }
    img
}

/// The first entries of the active L2 table: (offset of the entry, entry).
fn l2_entries(f: &std::fs::File, l: &Layout) -> Vec<(u64, u64)> {
    let l2 = l.l2_of(f, 0);
    (0..64).map(|i| (l2 + 8 * i, be64(f, l2 + 8 * i))).collect()
}

fn damage(img: &Path, d: Damage) {
    let f = open_rw(img);
    let l = Layout::read(&f);
    let entries = l2_entries(&f, &l);
    let copied = 1u64 << 63;
    let data = |e: u64| (e & 0x00ff_ffff_ffff_fe00) >> l.cluster_bits;
    // An entry with refcount 1 (rewritten after the snapshot), one shared with the snapshot.
    let own = entries
        .iter()
        .find(|(_, e)| e & copied != 0)
        .copied()
        .unwrap();
    let shared = entries
        .iter()
        .find(|(_, e)| *e != 0 && e & copied == 0)
        .copied();
    match d {
        Damage::Leak => {
            let at = l.refcount_at(&f, data(own.1));
            set16(&f, at, get16(&f, at) + 1);
        }
        Damage::ZeroRefcount => set16(&f, l.refcount_at(&f, data(own.1)), 0),
        Damage::LowRefcount => {
            let (_, e) = shared.expect("a cluster shared with the snapshot");
            let at = l.refcount_at(&f, data(e));
            set16(&f, at, get16(&f, at) - 1);
        }
        Damage::CopiedCleared => f
            .write_all_at(&(own.1 & !copied).to_be_bytes(), own.0)
            .unwrap(),
        Damage::CopiedSet => {
            let (at, e) = shared.expect("a cluster shared with the snapshot");
            f.write_all_at(&(e | copied).to_be_bytes(), at).unwrap();
        }
        Damage::PastEnd => {
            let len = f.metadata().unwrap().len();
            let past = (len + (8 << l.cluster_bits)) & !((1 << l.cluster_bits) - 1);
            f.write_all_at(&(copied | past).to_be_bytes(), own.0)
                .unwrap();
        }
        Damage::L2OnRefblock => {
            let block = be64(&f, l.reftable_offset) & !0x1ff;
            f.write_all_at(&(copied | block).to_be_bytes(), l.l1_offset)
                .unwrap();
        }
        Damage::MisalignedZero => {
            let e = (own.1 + 0x200) | 1;
            f.write_all_at(&e.to_be_bytes(), own.0).unwrap();
        }
        Damage::Mixed => {
            for (_, e) in entries.iter().filter(|(_, e)| *e != 0).skip(2).take(3) {
                let at = l.refcount_at(&f, data(*e));
                set16(&f, at, get16(&f, at) + 2);
            }
            set16(&f, l.refcount_at(&f, data(own.1)), 0);
        }
    }
}

#[test]
fn damaged_images_give_qemu_img_s_counts_and_exit_codes() {
    let t = "damaged_images_give_qemu_img_s_counts_and_exit_codes";
    if !have_qemu(t) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = base_image(dir.path());
    for d in DAMAGES {
        let img = copy(&base, &dir.path().join("damaged.qcow2"));
        damage(&img, d);
        let code = assert_agree(&img, &format!("{d:?}"));
        assert_ne!(code, 0, "{d:?} went unnoticed");
    }
}

#[test]
fn repairs_leave_a_clean_image_with_the_same_content() {
    let t = "repairs_leave_a_clean_image_with_the_same_content";
    if !have_qemu(t) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = base_image(dir.path());
    for d in DAMAGES {
        for mode in ["leaks", "all"] {
            let what = format!("{d:?} -r {mode}");
            let ours = copy(&base, &dir.path().join("ours.qcow2"));
            let theirs = copy(&base, &dir.path().join("theirs.qcow2"));
            damage(&ours, d);
            damage(&theirs, d);
            let (dc, dj, de) = df_check(&ours, &["-r", mode]);
            let (qc, qj, qe) = qemu_check(&theirs, &["-r", mode]);
            assert_eq!(
                (dc, figures(&dj), lines(&de)),
                (qc, figures(&qj), lines(&qe)),
                "{what}: repairs differ\n--- diskferry:\n{de}\n--- qemu-img:\n{qe}"
            );
            // What qemu-img finds after our repair is what it finds after its own.
            let (ac, aj, _) = qemu_check(&ours, &[]);
            let (bc, bj, _) = qemu_check(&theirs, &[]);
            assert_eq!(
                (ac, figures(&aj)),
                (bc, figures(&bj)),
                "{what}: after repair"
            );
            let repairable = matches!(
                d,
                Damage::Leak
                    | Damage::ZeroRefcount
                    | Damage::LowRefcount
                    | Damage::CopiedCleared
                    | Damage::CopiedSet
                    | Damage::Mixed
            );
            if mode == "all" && repairable {
                assert_eq!(ac, 0, "{what}: not clean after repair");
                assert!(
                    qemu_compare("qcow2", &ours, "qcow2", &base),
                    "{what}: content changed"
                );
            }
        }
    }
}

/// Runs `diskferry check -r all` killed after each write in turn; each leftover image must
/// be repaired by `qemu-img check -r all` to a clean image with the original content.
#[test]
fn a_repair_killed_at_any_write_leaves_a_repairable_image() {
    let t = "a_repair_killed_at_any_write_leaves_a_repairable_image";
    if !have_qemu(t) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = base_image(dir.path());
    for d in [Damage::Mixed, Damage::CopiedCleared, Damage::LowRefcount] {
        let mut n = 1;
        loop {
            let img = copy(&base, &dir.path().join("killed.qcow2"));
            damage(&img, d);
            let out = diskferry()
                .args(["check", "-r", "all", s(&img)])
                .env("DISKFERRY_TEST_ABORT_AFTER", n.to_string())
                .output()
                .unwrap();
            let (code, _, err) = decode(out);
            assert!(!err.contains("panicked"), "{err}");
            if code == 0 {
                break; // The repair finished before the n-th write.
            }
            assert_eq!(
                code, -1,
                "{d:?}: killed after write {n}: not by the abort ({err})"
            );
            for repairer in ["qemu-img", "diskferry"] {
                let again = copy(&img, &dir.path().join("again.qcow2"));
                if repairer == "qemu-img" {
                    let (c, _, e) = qemu_check(&again, &["-r", "all"]);
                    assert_eq!(
                        c, 0,
                        "{d:?}: qemu-img could not repair after write {n}: {e}"
                    );
                } else {
                    let (c, _, e) = df_check(&again, &["-r", "all"]);
                    assert_eq!(
                        c, 0,
                        "{d:?}: diskferry could not repair after write {n}: {e}"
                    );
                }
                let (c, _, e) = qemu_check(&again, &[]);
                assert_eq!(
                    c, 0,
                    "{d:?}: not clean after write {n} and {repairer}'s repair: {e}"
                );
                assert!(
                    qemu_compare("qcow2", &again, "qcow2", &base),
                    "{d:?}: content changed after write {n} and {repairer}'s repair"
                );
            }
            n += 1;
            assert!(n < 200, "{d:?}: the repair never finished");
        }
        assert!(n > 1, "{d:?}: the repair wrote nothing");
    }
}

/// Every QCOW2 of the corpus: no panic, and qemu-img's exit code and JSON where qemu-img
/// reads it.
#[test]
fn corpus_images_check_as_qemu_img_checks_them() {
    let t = "corpus_images_check_as_qemu_img_checks_them";
    let Some(shared) = shared_dir(t) else {
        return;
    };
    let qemu = have_qemu(t);
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for row in manifest(&shared) {
        if !row.format.to_ascii_uppercase().starts_with("QCOW") {
            continue;
        }
        let img = corpus_file(&shared, &row.path, dir.path());
        let (dc, dj, de) = df_check(&img, &[]);
        assert!((0..=3).contains(&dc), "{}: exit {dc}: {de}", row.path);
        if qemu {
            let (qc, qj, qe) = qemu_check(&img, &["-f", "qcow2"]);
            if (0..=3).contains(&qc) && qj != Value::Null {
                assert_eq!(
                    (dc, to_text(&dj)),
                    (qc, to_text(&qj)),
                    "{}: diskferry and qemu-img check disagree\n{de}\n{qe}",
                    row.path
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 0, "no QCOW2 in the corpus");
}

/// Damaged bytes in memory never make the checker panic, and a repair in memory of what it
/// finds is clean when checked again.
#[test]
fn damaged_bytes_never_panic_the_checker() {
    use diskferry::check::RepairMode;
    use diskferry::formats::qcow2::check::{check_image, check_storage, io::MemoryImage};
    use diskferry::storage::Memory;
    let dir = tempfile::tempdir().unwrap();
    let raw = source(dir.path());
    let img = dir.path().join("small.qcow2");
    run_ok(&[
        "convert",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&raw),
        s(&img),
    ]);
    let bytes = std::fs::read(&img).unwrap();
    let clean = check_storage(Arc::new(Memory::new("small.qcow2", bytes.clone()))).unwrap();
    assert_eq!(clean.exit_code(), 0);
    // The metadata is in the first clusters and after the data: damage both, byte by byte.
    let len = bytes.len();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..400 {
        let mut b = bytes.clone();
        for _ in 0..1 + round % 8 {
            let r = next();
            let region = if r & 1 == 0 {
                0..16384.min(len)
            } else {
                len.saturating_sub(16384)..len
            };
            let at = region.start + (next() as usize) % (region.end - region.start);
            b[at] = next() as u8;
        }
        let _ = check_storage(Arc::new(Memory::new("x.qcow2", b.clone())));
        let mut m = MemoryImage::new("x.qcow2", b);
        if let Ok(r) = check_image(&mut m, Path::new("x.qcow2"), Some(RepairMode::All))
            && r.exit_code() == 0
        {
            let again = check_storage(Arc::new(Memory::new("x.qcow2", m.bytes.clone()))).unwrap();
            assert_eq!(again.exit_code(), 0, "round {round}: {:?}", again.findings);
        }
    }
}

/// An L1 table whose every entry names the same L2 table: a small file that would make the
/// walk read that table millions of times stops with a check error, promptly.
#[test]
fn an_l1_table_repeating_one_l2_table_stops_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("repeat.qcow2");
    run_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512",
        s(&img),
        "64G",
    ]);
    let f = open_rw(&img);
    let l = Layout::read(&f);
    let entries = (64u64 << 30) / (512 * 64);
    // One L2 table after the L1 table, and every L1 entry pointing at it.
    let len = f.metadata().unwrap().len().next_multiple_of(512);
    let l2 = len.max(l.l1_offset + entries * 8).next_multiple_of(512);
    f.set_len(l2 + 512).unwrap();
    let entry = ((1u64 << 63) | l2).to_be_bytes();
    let table: Vec<u8> = entry
        .iter()
        .copied()
        .cycle()
        .take((entries * 8) as usize)
        .collect();
    f.write_all_at(&table, l.l1_offset).unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = run(&["check", s(&img)]);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("Check failed"), "{err}");
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
}

/// Sets the refcount of `cluster` in an image of any refcount width (entries narrower than a
/// byte fill it from its least significant bit).
fn set_refcount(f: &std::fs::File, l: &Layout, cluster: u64, value: u64) {
    let bits = 1u64 << l.refcount_order;
    let per_block = (8u64 << l.cluster_bits) / bits;
    let block = be64(f, l.reftable_offset + 8 * (cluster / per_block)) & !0x1ff;
    let bit = (cluster % per_block) * bits;
    if bits < 8 {
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, block + bit / 8).unwrap();
        let shift = bit % 8;
        let mask = (((1u16 << bits) - 1) << shift) as u8;
        b[0] = (b[0] & !mask) | (((value << shift) as u8) & mask);
        f.write_all_at(&b, block + bit / 8).unwrap();
    } else {
        let width = (bits / 8) as usize;
        let bytes = value.to_be_bytes();
        f.write_all_at(&bytes[8 - width..], block + bit / 8)
            .unwrap();
    }
}

/// Refcounts of every width, damaged both ways, checked and repaired as qemu-img does.
#[test]
fn every_refcount_width_is_checked_and_repaired_as_qemu_img_does() {
    let t = "every_refcount_width_is_checked_and_repaired_as_qemu_img_does";
    if !have_qemu(t) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = source(dir.path());
    for bits in [1u32, 2, 4, 8, 16, 32, 64] {
        let base = dir.path().join(format!("rb{bits}.qcow2"));
        let opts = format!("refcount_bits={bits},cluster_size=4k");
        qemu_img_ok(&["convert", "-O", "qcow2", "-o", &opts, s(&raw), s(&base)]);
        let f = std::fs::File::open(&base).unwrap();
        let l = Layout::read(&f);
        let l2 = l.l2_of(&f, 0);
        let data = (be64(&f, l2) & 0x00ff_ffff_ffff_fe00) >> l.cluster_bits;
        let max = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        // Zeroed (a rebuild) and, where the width allows, one too many (a leak).
        let mut damages = vec![("zeroed", 0u64)];
        if max > 1 {
            damages.push(("leak", 2));
        }
        for (what, value) in damages {
            let what = format!("refcount_bits={bits} {what}");
            let ours = copy(&base, &dir.path().join("ours.qcow2"));
            let theirs = copy(&base, &dir.path().join("theirs.qcow2"));
            for img in [&ours, &theirs] {
                set_refcount(&open_rw(img), &l, data, value);
            }
            assert_ne!(assert_agree(&ours, &what), 0, "{what} went unnoticed");
            let (dc, dj, de) = df_check(&ours, &["-r", "all"]);
            let (qc, qj, qe) = qemu_check(&theirs, &["-r", "all"]);
            assert_eq!(
                (dc, figures(&dj), lines(&de)),
                (qc, figures(&qj), lines(&qe)),
                "{what}: repairs differ"
            );
            assert_eq!(
                qemu_check(&ours, &[]).0,
                0,
                "{what}: not clean after repair"
            );
            assert!(
                qemu_compare("qcow2", &ours, "qcow2", &base),
                "{what}: content changed"
            );
        }
    }
}

/// A file of more clusters than the check counts in memory is refused with a clear error,
/// not a slow walk or an allocation of gigabytes.
#[test]
fn a_file_too_large_to_count_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("huge.qcow2");
    run_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512",
        s(&img),
        "1G",
    ]);
    // 2^28 clusters of 512 bytes, and one more: a sparse file of 128 GiB.
    open_rw(&img).set_len((1u64 << 37) + 512).unwrap();
    let (code, out, err) = run(&["check", s(&img)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("more than the 268435456"), "{err}");
}
