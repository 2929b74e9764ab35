//! `convert --bitmaps` (issue 15): a qcow2 source's persistent dirty bitmaps copied into the
//! qcow2 output, judged against qemu-img 10 converting the same source. Both outputs must list
//! the same bitmaps (`qemu-img info`), and qemu itself must find the same bits in them: the
//! bitmaps are loaded by qemu-storage-daemon (qemu-utils), whose QMP `query-named-block-nodes`
//! gives each bitmap's dirty byte count and `x-debug-block-dirty-bitmap-sha256` a digest of
//! its bits. Ours must also be clean by `qemu-img check` and hold the same disk content.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The bitmaps extension's type.
const EXT_BITMAPS: u32 = 0x2385_2875;

/// Converts `src` with `--bitmaps` and `extra` options by qemu-img and by diskferry; checks
/// ours as the module says and returns both outputs' bitmaps as qemu loads them.
fn convert_both(dir: &Path, src: &Path, tag: &str, extra: &[&str]) -> Vec<Loaded> {
    let theirs = dir.join(format!("{tag}.qemu.qcow2"));
    let ours = dir.join(format!("{tag}.ours.qcow2"));
    let args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = ["convert", "--bitmaps", "-O", "qcow2"]
            .iter()
            .chain(extra)
            .map(|x| x.to_string())
            .collect();
        a.push(s(src).into());
        a.push(s(out).into());
        a
    };
    let q = args(&theirs);
    qemu_img_ok(&q.iter().map(String::as_str).collect::<Vec<_>>());
    let d = args(&ours);
    run_ok(&d.iter().map(String::as_str).collect::<Vec<_>>());
    let check = qemu_img_ok(&["check", s(&ours)]);
    assert!(check.contains("No errors were found"), "{tag}: {check}");
    assert!(
        qemu_compare("qcow2", &theirs, "qcow2", &ours),
        "{tag}: content"
    );
    let head = std::fs::read(&ours).unwrap();
    let autoclear = u64::from_be_bytes(head[88..96].try_into().unwrap());
    assert_eq!(autoclear & 1, 1, "{tag}: autoclear bit 0");
    assert!(directory(&ours).is_some(), "{tag}: no bitmaps extension");
    assert_eq!(info_bitmaps(&theirs), info_bitmaps(&ours), "{tag}: info");
    let (a, b) = (loaded_bitmaps(&theirs), loaded_bitmaps(&ours));
    assert_eq!(a, b, "{tag}: bits");
    b
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Where the bitmaps extension says the directory is, and its size.
fn directory(img: &Path) -> Option<(u64, u64)> {
    let head = std::fs::read(img).unwrap();
    let mut at = be32(&head, 100) as usize;
    loop {
        let (kind, len) = (be32(&head, at), be32(&head, at + 4) as usize);
        if kind == 0 {
            return None;
        }
        if kind == EXT_BITMAPS {
            return Some((be64(&head, at + 24), be64(&head, at + 16)));
        }
        at += 8 + len.next_multiple_of(8);
    }
}

/// The file offset of bitmap `name`'s directory entry.
fn entry_offset(img: &Path, name: &str) -> u64 {
    let (offset, size) = directory(img).expect("a bitmaps extension");
    let bytes = std::fs::read(img).unwrap();
    let dir = &bytes[offset as usize..(offset + size) as usize];
    let mut at = 0usize;
    while at < dir.len() {
        let name_len = usize::from(u16::from_be_bytes([dir[at + 18], dir[at + 19]]));
        let extra = be32(dir, at + 20) as usize;
        let start = at + 24 + extra;
        if &dir[start..start + name_len] == name.as_bytes() {
            return offset + at as u64;
        }
        at = (start + name_len).next_multiple_of(8);
    }
    panic!("no bitmap {name} in {}", img.display());
}

/// Overwrites bytes of `img` at `offset`.
fn patch(img: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Makes the qcow2 `img` of `size` with qemu-img create's `options`.
fn create(img: &Path, options: &[&str], size: &str) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend(options);
    args.extend([s(img), size]);
    qemu_img_ok(&args);
}

/// A 64 MiB qcow2 with bitmaps of 64 KiB (b0, the default), 4 KiB (fine) and 1 MiB (coarse)
/// granularity, one disabled between two writes (frozen), one added after them (empty).
fn several(dir: &Path) -> PathBuf {
    let img = dir.join("several.qcow2");
    create(&img, &[], "64M");
    qemu_img_ok(&["bitmap", "--add", s(&img), "b0"]);
    qemu_img_ok(&["bitmap", "--add", "-g", "4k", s(&img), "fine"]);
    qemu_img_ok(&["bitmap", "--add", "-g", "1M", s(&img), "coarse"]);
    qemu_img_ok(&["bitmap", "--add", s(&img), "frozen"]);
    qemu_io("qcow2", &img, &["write -P 1 0 1M", "write -P 2 10M 4k"]);
    qemu_img_ok(&["bitmap", "--disable", s(&img), "frozen"]);
    qemu_io("qcow2", &img, &["write -P 3 33M 3M", "write -P 4 63M 512"]);
    qemu_img_ok(&["bitmap", "--add", s(&img), "empty"]);
    img
}

#[test]
fn several_bitmaps_are_copied_as_qemu_img_copies_them() {
    let test = "several_bitmaps_are_copied_as_qemu_img_copies_them";
    if !peers(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = several(d.path());
    let source = loaded_bitmaps(&src);
    for (tag, extra) in [
        ("default", &[][..]),
        ("small-clusters", &["-o", "cluster_size=4k"][..]),
        ("compressed", &["-c"][..]),
    ] {
        let got = convert_both(d.path(), &src, tag, extra);
        // The same bits as the source's, whatever the output's cluster size.
        assert_eq!(got, source, "{tag}");
    }
    // What qemu-img measure predicts for the data and for the bitmaps bounds what we wrote.
    let m: Value = serde_json::from_str(&qemu_img_ok(&[
        "measure",
        "--output=json",
        "-O",
        "qcow2",
        s(&src),
    ]))
    .unwrap();
    let predicted = m["required"].as_u64().unwrap() + m["bitmaps"].as_u64().unwrap();
    let written = std::fs::metadata(d.path().join("default.ours.qcow2"))
        .unwrap()
        .len();
    assert!(written <= predicted, "{written} > {predicted}");
    // The figures qemu finds are the writes' (a check that the comparison sees bits at all).
    let count = |name: &str| source.iter().find(|b| b.name == name).unwrap().count;
    assert_eq!(count("b0"), (1 << 20) + (64 << 10) + (3 << 20) + (64 << 10));
    assert_eq!(count("fine"), (1 << 20) + (4 << 10) + (3 << 20) + (4 << 10));
    assert_eq!(count("frozen"), (1 << 20) + (64 << 10));
    assert_eq!(count("empty"), 0);
    let frozen = source.iter().find(|b| b.name == "frozen").unwrap();
    assert!(!frozen.recording);
    assert_eq!(
        source
            .iter()
            .find(|b| b.name == "coarse")
            .unwrap()
            .granularity,
        1 << 20
    );
}

/// A 1 GiB qcow2 of 512-byte clusters with a bitmap of 512-byte granularity: 256 KiB of bits
/// in 512 bitmap clusters, so its table takes eight clusters. One cluster of bits (2 MiB of
/// disk) is written whole (all ones, stored as data by qemu), and one entry that held zeros
/// is made the all-ones entry (1), which qemu reads but never writes.
#[test]
fn a_multi_cluster_table_and_all_ones_clusters_are_copied() {
    let test = "a_multi_cluster_table_and_all_ones_clusters_are_copied";
    if !peers(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("fine.qcow2");
    create(&src, &["-o", "cluster_size=512"], "1G");
    qemu_img_ok(&["bitmap", "--add", "-g", "512", s(&src), "tiny"]);
    qemu_io("qcow2", &src, &["write -P 9 4M 2M", "write -P 8 700M 1536"]);
    let entry = entry_offset(&src, "tiny");
    let bytes = std::fs::read(&src).unwrap();
    let table = be64(&bytes, entry as usize);
    let entries = be32(&bytes, entry as usize + 8);
    assert_eq!(entries, 512);
    // Entry 100 covers disk bytes 200 MiB to 202 MiB, which nothing wrote.
    assert_eq!(be64(&bytes, (table + 100 * 8) as usize), 0);
    patch(&src, table + 100 * 8, &1u64.to_be_bytes());
    drop(bytes);
    let source = loaded_bitmaps(&src);
    assert_eq!(source[0].count, (2 << 20) + 1536 + (2 << 20));
    let got = convert_both(d.path(), &src, "default", &[]);
    assert_eq!(got, source);
    let got = convert_both(d.path(), &src, "512", &["-o", "cluster_size=512"]);
    assert_eq!(got, source);
    // Ours stores the all-zero clusters as entry 0: 3 clusters of bits hold anything.
    let ours = d.path().join("512.ours.qcow2");
    let bytes = std::fs::read(&ours).unwrap();
    let entry = entry_offset(&ours, "tiny") as usize;
    let table = be64(&bytes, entry) as usize;
    assert_eq!(be32(&bytes, entry + 8), 512);
    let stored = (0..512)
        .filter(|i| be64(&bytes, table + i * 8) != 0)
        .count();
    assert_eq!(stored, 3);
}

#[test]
fn bitmaps_of_an_image_with_a_backing_file_are_copied() {
    let test = "bitmaps_of_an_image_with_a_backing_file_are_copied";
    if !peers(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.qcow2");
    let top = d.path().join("top.qcow2");
    create(&base, &[], "32M");
    qemu_io("qcow2", &base, &["write -P 5 0 8M"]);
    create(&top, &["-b", "base.qcow2", "-F", "qcow2"], "32M");
    qemu_img_ok(&["bitmap", "--add", "-g", "128k", s(&top), "since-base"]);
    qemu_io("qcow2", &top, &["write -P 6 1M 1M", "write -z 20M 1M"]);
    let source = loaded_bitmaps(&top);
    assert_eq!(source[0].count, 2 << 20);
    assert_eq!(convert_both(d.path(), &top, "flat", &[]), source);
}

#[test]
fn inconsistent_bitmaps_are_refused_or_skipped_as_by_qemu_img() {
    let test = "inconsistent_bitmaps_are_refused_or_skipped_as_by_qemu_img";
    if !peers(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = several(d.path());
    // The in-use flag: the bitmap was not saved when its image was last closed.
    patch(&src, entry_offset(&src, "fine") + 12, &3u32.to_be_bytes());
    let out = d.path().join("out.qcow2");
    let (c, _, e) = qemu_img(&["convert", "--bitmaps", "-O", "qcow2", s(&src), s(&out)]);
    assert_eq!(c, 1);
    assert!(e.contains("Cannot copy inconsistent bitmap 'fine'"), "{e}");
    assert!(!out.exists());
    let (c, _, e) = run(&["convert", "--bitmaps", "-O", "qcow2", s(&src), s(&out)]);
    assert_eq!(c, 1);
    assert!(e.contains("Cannot copy inconsistent bitmap 'fine'"), "{e}");
    assert!(e.contains("several.qcow2"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(!out.exists());
    // --skip-broken-bitmaps leaves it behind with a warning, and copies the others.
    let got = convert_both(d.path(), &src, "skip", &["--skip-broken-bitmaps"]);
    let names: Vec<&str> = got.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["b0", "coarse", "empty", "frozen"]);
    let (c, _, e) = run(&["convert", "--skip-broken-bitmaps", s(&src), s(&out)]);
    assert_eq!(c, 1);
    assert!(e.contains("requires --bitmaps"), "{e}");
}

#[test]
fn a_bitmap_table_past_the_end_is_one_clear_error() {
    let test = "a_bitmap_table_past_the_end_is_one_clear_error";
    if !peers(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = several(d.path());
    let entry = entry_offset(&src, "coarse");
    let len = std::fs::metadata(&src).unwrap().len();
    let past = (len + (1 << 30)).next_multiple_of(65536);
    patch(&src, entry, &past.to_be_bytes());
    let out = d.path().join("out.qcow2");
    let (c, _, e) = run(&["convert", "--bitmaps", "-O", "qcow2", s(&src), s(&out)]);
    assert_eq!(c, 1, "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("several.qcow2"), "{e}");
    assert!(e.contains("bitmap table"), "{e}");
    assert!(
        e.contains(&past.to_string()) || e.contains(&format!("{past:#x}")),
        "{e}"
    );
    assert!(!out.exists());
    // Without --bitmaps the disk converts: the bitmaps are not needed to read it.
    run_ok(&["convert", "-O", "qcow2", s(&src), s(&out)]);
}

#[test]
fn bitmaps_into_an_existing_image_are_added_as_qemu_img_adds_them() {
    // `convert -n --bitmaps`: qemu-img writes the data into the existing image and then adds
    // the source's bitmaps; so does diskferry, through the image's editor (no preallocation,
    // 4 KiB clusters) or in place (metadata and full preallocation).
    let test = "bitmaps_into_an_existing_image_are_added_as_qemu_img_adds_them";
    if !peers(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = several(d.path());
    let source = loaded_bitmaps(&src);
    for (tag, options) in [
        ("off", &[][..]),
        ("small-clusters", &["-o", "cluster_size=4k"][..]),
        ("metadata", &["-o", "preallocation=metadata"][..]),
        ("full", &["-o", "preallocation=full"][..]),
    ] {
        let ours = d.path().join(format!("{tag}.ours.qcow2"));
        let theirs = d.path().join(format!("{tag}.qemu.qcow2"));
        create(&ours, options, "64M");
        create(&theirs, options, "64M");
        let args = |out: &Path| {
            vec!["convert", "-n", "--bitmaps", "-O", "qcow2", s(&src), s(out)]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        qemu_img_ok(&args(&theirs).iter().map(String::as_str).collect::<Vec<_>>());
        run_ok(&args(&ours).iter().map(String::as_str).collect::<Vec<_>>());
        let check = qemu_img_ok(&["check", s(&ours)]);
        assert!(check.contains("No errors were found"), "{tag}: {check}");
        assert!(
            qemu_compare("qcow2", &src, "qcow2", &ours),
            "{tag}: content"
        );
        assert_eq!(info_bitmaps(&theirs), info_bitmaps(&ours), "{tag}: info");
        let head = std::fs::read(&ours).unwrap();
        let autoclear = u64::from_be_bytes(head[88..96].try_into().unwrap());
        assert_eq!(autoclear & 1, 1, "{tag}: autoclear bit 0");
        let got = loaded_bitmaps(&ours);
        assert_eq!(got, loaded_bitmaps(&theirs), "{tag}: bits");
        assert_eq!(got, source, "{tag}: the source's bits");
    }
}

#[test]
fn bitmaps_into_an_existing_image_that_cannot_take_them_are_refused_before_writing() {
    let test = "bitmaps_into_an_existing_image_that_cannot_take_them_are_refused_before_writing";
    if !peers(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = several(d.path());
    let existing = d.path().join("existing.qcow2");
    // (how the existing image is made, what the refusal says)
    let cases: [(&[&str], &str, Option<&str>, &str); 4] = [
        // qemu-img's own messages for a version 2 image and for another size.
        (
            &["-o", "compat=0.10"],
            "64M",
            None,
            "Format driver 'qcow2' does not support bitmaps",
        ),
        (
            &[],
            "100M",
            None,
            "Bitmaps are of different sizes (destination size is 104857600, source size is 67108864)",
        ),
        (
            &["-o", "preallocation=metadata"],
            "32M",
            None,
            "Bitmaps are of different sizes",
        ),
        // An image that has bitmaps of its own, which diskferry's editor does not keep up to
        // date (qemu-img adds to them).
        (
            &[],
            "64M",
            Some("mine"),
            "already has persistent dirty bitmaps",
        ),
    ];
    for (options, size, bitmap, says) in cases {
        let _ = std::fs::remove_file(&existing);
        create(&existing, options, size);
        if let Some(name) = bitmap {
            qemu_img_ok(&["bitmap", "--add", s(&existing), name]);
        }
        let before = std::fs::read(&existing).unwrap();
        let (c, _, e) = run(&[
            "convert",
            "-n",
            "--bitmaps",
            "-O",
            "qcow2",
            s(&src),
            s(&existing),
        ]);
        assert_eq!(c, 1, "{options:?} {size}");
        assert!(e.contains(says), "{options:?} {size}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert_eq!(
            std::fs::read(&existing).unwrap(),
            before,
            "{options:?} {size}"
        );
    }
}
