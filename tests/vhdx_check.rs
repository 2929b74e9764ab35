//! `check` for VHDX, judged against qemu-img: clean images (written by diskferry and by
//! qemu-img, and the corpus) check clean with qemu-img's exit code; damaged copies give one line
//! per finding naming its offset and qemu-img's exit codes; `-r all` replays the corpus's
//! pending logs in place to the bytes qemu-img's own replay gives (MANIFEST.tsv's content), and
//! a repair killed after any number of writes leaves a file that still replays.

mod common;
mod vhdx_support;

use common::*;
use std::path::{Path, PathBuf};
use uuid::Uuid;
use vhdx_support::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 9 MiB raw disk with 6 MiB of data.
fn source(dir: &Path) -> PathBuf {
    let raw = dir.join("src.raw");
    make_raw(&raw, 9 * MIB, &[(0, 3 * MIB), (4 * MIB, 3 * MIB)]);
    raw
}

/// diskferry's check of `image`: (exit code, stdout).
fn check(image: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    args.push(s(image));
    let (code, out, err) = run(&args);
    assert!(!err.contains("panicked"), "{err}");
    (code, format!("{out}{err}"))
}

fn qemu_check(image: &Path, extra: &[&str]) -> i32 {
    let mut args = vec!["check", "-f", "vhdx"];
    args.extend_from_slice(extra);
    args.push(s(image));
    qemu_img(&args).0
}

fn copy(from: &Path, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(from, &p).unwrap();
    p
}

fn poke(image: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// The BAT region's offset, from region table 1.
fn bat_offset(image: &Path) -> u64 {
    let b = std::fs::read(image).unwrap();
    let t = &b[REGION1..REGION1 + (64 << 10)];
    let n = u32::from_le_bytes(t[8..12].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| 16 + 32 * i)
        .find(|&e| Uuid::from_bytes_le(t[e..e + 16].try_into().unwrap()) == BAT_GUID)
        .map(|e| u64::from_le_bytes(t[e + 16..e + 24].try_into().unwrap()))
        .expect("a BAT region")
}

fn entry(image: &Path, at: u64) -> u64 {
    let b = std::fs::read(image).unwrap();
    u64::from_le_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

/// The size MANIFEST.tsv's notes give a compressed file once unpacked ("decompresses to
/// x.vhdx (N bytes)"), or 0.
fn unpacked_size(notes: &str) -> u64 {
    notes
        .split_once("decompresses to ")
        .and_then(|(_, rest)| rest.split_once('(')?.1.split_once(" bytes)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn clean_images_check_clean_as_qemu_img_finds_them() {
    let test = "clean_images_check_clean_as_qemu_img_finds_them";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = source(d);
    let qemu = have_qemu(test);
    let mut images = Vec::new();
    for (name, opts) in [
        ("dynamic.vhdx", "block_size=1M"),
        ("dynamic32.vhdx", "subformat=dynamic"),
        ("fixed.vhdx", "subformat=fixed"),
        ("sectors4k.vhdx", "logical_sector_size=4096,block_size=2M"),
    ] {
        let out = d.join(name);
        run_ok(&["convert", "-O", "vhdx", "-o", opts, s(&raw), s(&out)]);
        images.push(out);
    }
    if qemu {
        for (name, opts) in [
            ("q-dynamic.vhdx", "subformat=dynamic"),
            ("q-fixed.vhdx", "subformat=fixed"),
            ("q-small-blocks.vhdx", "block_size=1M,log_size=1M"),
        ] {
            let out = d.join(name);
            qemu_img_ok(&["convert", "-O", "vhdx", "-o", opts, s(&raw), s(&out)]);
            images.push(out);
        }
    }
    for image in &images {
        let (code, out) = check(image, &[]);
        assert_eq!(code, 0, "{}: {out}", image.display());
        assert!(out.contains("No errors were found"), "{out}");
        // qemu-img reads only 512-byte logical sectors.
        if qemu && !image.ends_with("sectors4k.vhdx") {
            assert_eq!(qemu_check(image, &[]), 0, "{}", image.display());
        }
    }
    // A differencing child made by diskferry (qemu-img cannot open these), its parent found
    // and its linkage right; then a different parent under the same name is a corruption.
    let base = d.join("base.vhdx");
    run_ok(&[
        "convert",
        "-O",
        "vhdx",
        "-o",
        "block_size=1M",
        s(&raw),
        s(&base),
    ]);
    let child = d.join("child.avhdx");
    run_ok(&[
        "convert",
        "-O",
        "vhdx",
        "-o",
        "block_size=1M",
        "-B",
        "base.vhdx",
        "-F",
        "vhdx",
        s(&raw),
        s(&child),
    ]);
    let (code, out) = check(&child, &[]);
    assert_eq!(code, 0, "{out}");
    std::fs::remove_file(&base).unwrap();
    run_ok(&[
        "convert",
        "-O",
        "vhdx",
        "-o",
        "block_size=1M",
        s(&raw),
        s(&base),
    ]);
    let (code, out) = check(&child, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("parent_linkage"), "{out}");
    std::fs::remove_file(&base).unwrap();
    let (code, out) = check(&child, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("was not found"), "{out}");

    // Every readable VHDX of the corpus: clean, as qemu-img finds it. The two that unpack to
    // over 300 MB (seconds of gzip each) are left to the reader's corpus test.
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let mut checked = 0;
    for row in manifest(&shared) {
        if row.format != "VHDX"
            || row.malformed
            || row.raw_sha256.is_none()
            || row.qemu_result.contains("log needs replay")
            || unpacked_size(&row.notes) > 300_000_000
        {
            continue;
        }
        let file = corpus_file(&shared, &row.path, d);
        let (code, out) = check(&file, &[]);
        assert_eq!(code, 0, "{}: {out}", row.path);
        if qemu {
            assert_eq!(qemu_check(&file, &[]), 0, "{}", row.path);
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} corpus VDHXs were checked");
}

#[test]
fn damaged_copies_give_one_line_per_finding_and_qemu_img_exit_codes() {
    let test = "damaged_copies_give_one_line_per_finding_and_qemu_img_exit_codes";
    let qemu = have_qemu(test);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = source(d);
    let good = d.join("good.vhdx");
    run_ok(&[
        "convert",
        "-O",
        "vhdx",
        "-o",
        "block_size=1M",
        s(&raw),
        s(&good),
    ]);
    let bat = bat_offset(&good);
    let first = entry(&good, bat);
    assert_eq!(first & 7, 6, "block 0 is stored");

    // One header damaged: still read, reported as a warning (exit 0, as qemu-img); -r all
    // writes a new header there.
    let h1 = copy(&good, d, "h1.vhdx");
    poke(&h1, HEADER1 as u64 + 200, b"x");
    let (code, out) = check(&h1, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Warning: header 1 at 0x10000 is not valid: checksum mismatch")
            && out.contains("(offset 65536 = 0x10000)"),
        "{out}"
    );
    let back = d.join("h1.raw");
    run_ok(&["convert", "-O", "raw", s(&h1), s(&back)]);
    assert_eq!(sha256_file(&back), sha256_file(&raw));
    let (code, out) = check(&h1, &["-r", "all"]);
    assert!(code == 0 && out.contains("Repaired: header 1"), "{out}");
    let (code, out) = check(&h1, &[]);
    assert!(code == 0 && !out.contains("Warning"), "{out}");
    if qemu {
        assert_eq!(qemu_check(&h1, &[]), 0);
    }

    // Both headers damaged: the check cannot run (exit 1, as qemu-img), one line naming both.
    let h2 = copy(&good, d, "h2.vhdx");
    poke(&h2, HEADER1 as u64 + 200, b"x");
    poke(&h2, HEADER2 as u64 + 200, b"x");
    let (code, out) = check(&h2, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("neither VHDX header is valid") && out.contains("0x20000"),
        "{out}"
    );
    if qemu {
        assert_eq!(qemu_check(&h2, &[]), 1);
    }

    // A BAT entry past the end: a corruption at the entry (exit 2, as qemu-img).
    let past = copy(&good, d, "past.vhdx");
    poke(&past, bat, &((64 * MIB) | 6).to_le_bytes());
    let (code, out) = check(&past, &[]);
    assert_eq!(code, 2, "{out}");
    let line = format!("(offset {bat} = {bat:#x})");
    assert_eq!(out.matches("ERROR").count(), 1, "{out}");
    assert!(
        out.contains("ERROR: BAT entry 0 (block 0) points at 0x4000000, past the end of the file")
            && out.contains(&line),
        "{out}"
    );
    if qemu {
        assert_eq!(qemu_check(&past, &[]), 2);
    }

    // Two entries on one block: a corruption naming the second entry (qemu-img does not
    // look for this; its check says 0).
    let over = copy(&good, d, "over.vhdx");
    poke(&over, bat + 8, &first.to_le_bytes());
    let (code, out) = check(&over, &[]);
    assert_eq!(code, 2, "{out}");
    let at = bat + 8;
    assert!(
        out.contains("ERROR: The block of BAT entry 1")
            && out.contains("overlaps the block of BAT entry 0")
            && out.contains(&format!("(offset {at} = {at:#x})")),
        "{out}"
    );
    // A block over the BAT region itself.
    let on_bat = copy(&good, d, "on-bat.vhdx");
    poke(&on_bat, bat + 8, &(bat | 6).to_le_bytes());
    let (code, out) = check(&on_bat, &[]);
    assert!(
        code == 2
            && out.contains(&format!(
                "ERROR: The block of BAT entry 1 (at {bat:#x}) overlaps the BAT region"
            )),
        "{out}"
    );

    // Trailing garbage: a leak (exit 3); -r leaks cuts it and the content is unchanged.
    let tail = copy(&good, d, "tail.vhdx");
    let len = std::fs::metadata(&tail).unwrap().len();
    poke(&tail, len, &vec![0xAB; 3 * MIB as usize]);
    let (code, out) = check(&tail, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "Leaked: {} bytes after the last used byte are not used by anything (offset {len} = {len:#x})",
            3 * MIB
        )),
        "{out}"
    );
    let (code, out) = check(&tail, &["-r", "leaks"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::metadata(&tail).unwrap().len(), len);
    if qemu {
        assert_eq!(qemu_check(&tail, &[]), 0);
        assert!(qemu_compare("raw", &raw, "vhdx", &tail));
    }

    // A damaged region table copy: a corruption, rewritten from the good copy by -r all.
    let region = copy(&good, d, "region.vhdx");
    poke(&region, REGION2 as u64 + 100, b"x");
    let (code, out) = check(&region, &[]);
    assert!(
        code == 2 && out.contains("region table 2 at 0x40000 is not valid"),
        "{out}"
    );
    let (code, out) = check(&region, &["-r", "all"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(check(&region, &[]).0, 0);
}

/// Copies of the corpus's two files with a pending log: `-r all` replays them in place to the
/// bytes qemu-img's own `check -r all` gives (every byte the same but the headers, which each
/// tool writes its own way), which then check clean by both tools; the content is MANIFEST's.
#[test]
fn pending_logs_in_the_corpus_replay_in_place_as_qemu_img_replays_them() {
    let test = "pending_logs_in_the_corpus_replay_in_place_as_qemu_img_replays_them";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let qemu = have_qemu(test);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: Vec<ManifestRow> = manifest(&shared)
        .into_iter()
        .filter(|r| r.format == "VHDX" && r.qemu_result.contains("log needs replay"))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        let original = corpus_file(&shared, &row.path, d);
        let before = sha256_file(&original);
        let (code, out) = check(&original, &[]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("needs its log replayed"), "{out}");
        // Leaks alone cannot be repaired while the log is pending: nothing is written.
        let (code, _) = check(&original, &["-r", "leaks"]);
        assert_eq!(code, 2);
        assert_eq!(sha256_file(&original), before, "{}", row.path);

        let ours = copy(&original, d, "ours.vhdx");
        let (code, out) = check(&ours, &["-r", "all"]);
        assert_eq!(code, 0, "{}: {out}", row.path);
        assert!(out.contains("Repaired: the log holds"), "{out}");
        let (code, out) = check(&ours, &[]);
        assert_eq!(code, 0, "{}: {out}", row.path);
        // What the in-memory replay reads is what is now in the file.
        run_ok(&["compare", s(&original), s(&ours)]);
        if qemu {
            assert_eq!(qemu_check(&ours, &[]), 0, "{}", row.path);
            let theirs = copy(&original, d, "theirs.vhdx");
            assert_eq!(qemu_check(&theirs, &["-r", "all"]), 0);
            let (a, b) = (
                std::fs::read(&ours).unwrap(),
                std::fs::read(&theirs).unwrap(),
            );
            assert_eq!(a.len(), b.len(), "{}", row.path);
            let headers = HEADER1..REGION1;
            let differ = a
                .iter()
                .zip(&b)
                .enumerate()
                .find(|(i, (x, y))| x != y && !headers.contains(i));
            assert!(differ.is_none(), "{}: {differ:?}", row.path);
        }
        // The 1 GiB one is hashed whole against MANIFEST.tsv; the 10 GiB one is the same
        // bytes as the in-memory replay (compared above), which the reader's tests hash.
        if row.virtual_size.is_some_and(|v| v <= 1 << 30) {
            let (_, sha) = content_sha256(&ours, None, d);
            assert_eq!(Some(sha), row.raw_sha256, "{}", row.path);
        }
        std::fs::remove_file(&ours).unwrap();
        let _ = std::fs::remove_file(d.join("theirs.vhdx"));
    }
}

/// A dynamic disk whose BAT update is only in its log (two entries): block 2's entry says
/// "not present" in the table and "stored at the end" in the log, with the block's bytes in
/// place, and part of block 0 zeroed by the second entry. Returns (file, content expected).
fn pending_log(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut spec = Spec::new(4 * MIB, MIB);
    spec.blocks = vec![(0, Block::Full(pseudo_random(MIB as usize, 1)))];
    let mut file = build(&spec);
    let block_at = file.len() as u64;
    let data = pseudo_random(MIB as usize, 2);
    file.extend_from_slice(&data);
    let entry_at = Spec::entry_offset(spec.payload_index(2));
    let sector_start = entry_at / 4096 * 4096;
    let mut sector = file[sector_start..sector_start + 4096].to_vec();
    let e = entry_at - sector_start;
    sector[e..e + 8].copy_from_slice(&(block_at | 6).to_le_bytes());
    let guid = Uuid::from_u128(0x106);
    let len = file.len() as u64;
    let first = log_entry(
        7,
        0,
        &guid,
        len,
        len,
        &[
            Desc::Data {
                file_offset: sector_start as u64,
                sector,
            },
            Desc::Zero {
                file_offset: block_at + MIB / 2,
                length: 8192,
            },
        ],
    );
    let first_len = first.len() as u64;
    let block0_at = u64::from_le_bytes(
        file[Spec::entry_offset(0)..Spec::entry_offset(0) + 8]
            .try_into()
            .unwrap(),
    ) >> 20
        << 20;
    let second = log_entry(
        8,
        0,
        &guid,
        len,
        len + MIB,
        &[Desc::Zero {
            file_offset: block0_at + 4096,
            length: 3 * 4096,
        }],
    );
    add_log(&mut file, &spec, &guid, &[(0, first), (first_len, second)]);
    let mut expected = spec.content();
    expected[2 * MIB as usize..3 * MIB as usize].copy_from_slice(&data);
    let z = (2 * MIB + MIB / 2) as usize;
    expected[z..z + 8192].fill(0);
    expected[4096..4 * 4096].fill(0);
    let p = dir.join("log.vhdx");
    std::fs::write(&p, &file).unwrap();
    (p, expected)
}

fn content(image: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join("content.raw");
    let _ = std::fs::remove_file(&out);
    run_ok(&["convert", "-O", "raw", s(image), s(&out)]);
    std::fs::read(&out).unwrap()
}

/// `-r all` killed after every number of writes in turn: the file left behind either still
/// holds its log (which our replay and qemu-img's both apply to the expected content) or is
/// already clean with that content.
#[test]
fn a_repair_killed_after_any_write_leaves_a_file_that_still_replays() {
    let test = "a_repair_killed_after_any_write_leaves_a_file_that_still_replays";
    let qemu = have_qemu(test);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (img, expected) = pending_log(d);
    assert!(content(&img, d) == expected, "the in-memory replay");
    let mut n = 0;
    loop {
        let victim = copy(&img, d, "victim.vhdx");
        let out = diskferry()
            .args(["check", "-r", "all", s(&victim)])
            .env("DISKFERRY_TEST_ABORT_AFTER", n.to_string())
            .output()
            .unwrap();
        let finished = out.status.code().is_some();
        // What is left reads as the replay, whatever it is.
        assert!(content(&victim, d) == expected, "after {n} writes: read");
        // 2 while the log is pending, 3 once it is applied and only the space it grew the
        // file by is left to cut, 0 when done.
        let (code, text) = check(&victim, &[]);
        assert!([0, 2, 3].contains(&code), "after {n} writes: {text}");
        if qemu {
            let theirs = copy(&victim, d, "theirs.vhdx");
            assert_eq!(qemu_check(&theirs, &["-r", "all"]), 0, "after {n} writes");
            let q = d.join("q.raw");
            let _ = std::fs::remove_file(&q);
            qemu_img_ok(&["convert", "-f", "vhdx", "-O", "raw", s(&theirs), s(&q)]);
            assert!(
                std::fs::read(&q).unwrap() == expected,
                "after {n}: qemu-img"
            );
        }
        let (code, text) = check(&victim, &["-r", "all"]);
        assert_eq!(code, 0, "after {n} writes: {text}");
        assert!(
            content(&victim, d) == expected,
            "after {n} writes: repaired"
        );
        if finished {
            assert_eq!(out.status.code(), Some(0));
            assert!(n >= 4, "the repair made only {n} writes");
            break;
        }
        n += 1;
        assert!(n < 50, "the repair never finished");
    }
}

/// A differencing child (its parent absent) with a partially present block: the chunk's sector
/// bitmap entry cleared is a corruption named at the block's entry.
#[test]
fn a_partial_block_without_its_sector_bitmap_is_a_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut spec = Spec::new(8 * MIB, MIB);
    spec.parent = Some(vec![
        (
            "parent_linkage".into(),
            "{83ade3c6-9a3c-4a49-a6b6-0dba4d3e1b40}".into(),
        ),
        ("relative_path".into(), ".\\missing.vhdx".into()),
    ]);
    let present: Vec<bool> = (0..2048).map(|i| i % 3 == 0).collect();
    spec.blocks = vec![
        (1, Block::Partial(pseudo_random(MIB as usize, 3), present)),
        (2, Block::Full(pseudo_random(MIB as usize, 4))),
    ];
    let file = build(&spec);
    let image = d.join("child.avhdx");
    std::fs::write(&image, &file).unwrap();
    let (code, out) = check(&image, &[]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        out.matches("ERROR").count(),
        1,
        "only the parent is missing: {out}"
    );
    assert!(out.contains("'.\\missing.vhdx' was not found"), "{out}");
    // The bitmap entry of chunk 0 cleared.
    let bitmap_entry = BAT_OFFSET + spec.chunk_ratio() * 8;
    poke(&image, bitmap_entry, &0u64.to_le_bytes());
    let (code, out) = check(&image, &[]);
    assert_eq!(code, 2, "{out}");
    let at = Spec::entry_offset(spec.payload_index(1));
    assert!(
        out.contains(&format!(
            "ERROR: a block of chunk 0 is partially present, but the chunk's sector bitmap (BAT entry {}) is not (offset {at} = {at:#x})",
            spec.chunk_ratio()
        )),
        "{out}"
    );
}

/// A metadata item marked required that diskferry does not know: the check cannot judge the
/// disk (exit 1, as qemu-img, which refuses to open it).
#[test]
fn an_unknown_required_metadata_item_stops_the_check() {
    let test = "an_unknown_required_metadata_item_stops_the_check";
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(4 * MIB, MIB);
    spec.blocks = vec![(0, Block::Full(pseudo_random(MIB as usize, 5)))];
    let mut file = build(&spec);
    let mut items = metadata_items(&spec);
    let next = items
        .iter()
        .map(|(_, o, b, _)| o + b.len() as u32)
        .max()
        .unwrap()
        .next_multiple_of(8);
    let unknown = Uuid::from_u128(0x5eed);
    items.push((unknown, next, vec![1, 2, 3, 4], 4));
    write_metadata(&mut file, &items);
    let image = dir.path().join("unknown.vhdx");
    std::fs::write(&image, &file).unwrap();
    let (code, out) = check(&image, &[]);
    assert_eq!(code, 1, "{out}");
    let at = METADATA_OFFSET + 32 + 32 * 5;
    assert!(
        out.contains("is marked required but is unknown to diskferry")
            && out.contains(&format!("(offset {at} = {at:#x})")),
        "{out}"
    );
    if have_qemu(test) {
        assert_eq!(qemu_check(&image, &[]), 1);
    }
}

/// `check_storage` (the fuzzing entry, over memory) on a file with a log, a sector bitmap and a
/// locator, damaged one byte at a time where its structures are (header fields and region
/// tables resealed so the damage gets past their checksums): it reports or refuses, never
/// panics, and stays quick.
#[test]
fn check_storage_survives_damage_anywhere_in_the_structures() {
    use diskferry::formats::vhdx::check::check_storage;
    use diskferry::storage::Memory;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = pending_log(dir.path());
    let mut base = std::fs::read(&img).unwrap();
    // Room past the end, to be cut at random.
    let spare = base.len() as u64;
    base.resize(base.len() + MIB as usize, 0);
    let places: Vec<(usize, usize)> = vec![
        (0, 16),
        (HEADER1, 80),
        (HEADER2, 80),
        (REGION1, 80),
        (REGION2, 80),
        (LOG_OFFSET as usize, 128),
        (LOG_OFFSET as usize + 4096, 64),
        (METADATA_OFFSET as usize, 256),
        (METADATA_OFFSET as usize + (64 << 10), 64),
        (BAT_OFFSET as usize, 48),
    ];
    let start = std::time::Instant::now();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..600 {
        let mut b = base.clone();
        for _ in 0..=(round % 3) {
            let (at, len) = places[(next() % places.len() as u64) as usize];
            let i = at + (next() % len as u64) as usize;
            b[i] ^= (next() % 255 + 1) as u8;
        }
        if round % 2 == 0 {
            for h in [HEADER1, HEADER2] {
                seal(&mut b[h..h + 4096], 4);
            }
            reseal_regions(&mut b);
        }
        if round % 5 == 0 {
            b.truncate((spare + (next() % MIB)) as usize);
        }
        let storage = Arc::new(Memory::new("m.vhdx", b));
        let _ = check_storage(storage, Path::new("m.vhdx"));
    }
    assert!(
        start.elapsed().as_secs() < 20,
        "600 checks took {:?}",
        start.elapsed()
    );
}
