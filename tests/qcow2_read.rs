//! QCOW2 and QCOW images made at test time by qemu-img and qemu-io with every option a user
//! meets, each read by diskferry and compared with qemu-img's own reading: content (sha256 of
//! the raw conversion), `map` output, `info` facts, snapshots, backing chains, external data
//! files, and the refusals (encryption, unknown features).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs qemu-io on a qcow2 image with each command; fails the test unless it succeeds.
fn qemu_io(image: &Path, format: &str, commands: &[&str]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", format]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd
        .arg(image)
        .current_dir(image.parent().unwrap())
        .output()
        .expect("qemu-io runs");
    assert!(
        out.status.success(),
        "qemu-io {commands:?} {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw source of `size` bytes with data in a few places (one region unaligned, one at
/// the very end).
fn source(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("source.raw");
    make_raw(
        &p,
        size,
        &[
            (0, 300_000),
            (2 * MIB + 1234, 777_777),
            (5 * MIB, MIB),
            (size - 5000, 5000),
        ],
    );
    p
}

/// Runs qemu-img in `dir` (qemu opens a relative external data file name from its current
/// folder, diskferry from the image's, as it does backing files); fails unless it succeeds.
fn qemu_img_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sha256 of what qemu-img reads (`extra` before the image: -l ...), and of what
/// diskferry reads; the test fails unless they are equal.
fn assert_reads_like_qemu(image: &Path, format: &str, extra: &[&str], dir: &Path) {
    let q = dir.join("qemu.raw");
    let d = dir.join("diskferry.raw");
    let _ = std::fs::remove_file(&q);
    let _ = std::fs::remove_file(&d);
    let mut args = vec!["convert", "-f", format, "-O", "raw"];
    args.extend_from_slice(extra);
    args.extend([s(image), s(&q)]);
    qemu_img_in(dir, &args);
    let mut args = vec!["convert", "-O", "raw"];
    args.extend_from_slice(extra);
    args.extend([s(image), s(&d)]);
    let (code, _, err) = run(&args);
    assert_eq!(code, 0, "diskferry {args:?}: {err}");
    assert!(!err.contains("warning"), "unexpected warning: {err}");
    assert_eq!(
        sha256_file(&d),
        sha256_file(&q),
        "{} {extra:?}: diskferry reads other bytes than qemu-img",
        image.display()
    );
}

fn assert_map_like_qemu(image: &Path) {
    let ours = run_ok(&["map", "--output", "json", s(image)]);
    let theirs = qemu_img_in(
        image.parent().unwrap(),
        &["map", "--output", "json", s(image)],
    );
    assert_eq!(ours, theirs, "{}: map differs", image.display());
}

/// Writes of different kinds over an image: partial clusters (subclusters), zeros over
/// data, data past a hole, a discard.
const WRITES: [&str; 4] = [
    "write -P 9 100k 3k",
    "write -z 1M 64k",
    "write -P 5 6M 4k",
    "discard 5M 128k",
];

#[test]
fn every_option_combination_reads_as_qemu_img_reads_it() {
    let test = "every_option_combination_reads_as_qemu_img_reads_it";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), 8 * MIB);
    let options = [
        "compat=0.10",
        "compat=1.1",
        "cluster_size=512",
        "cluster_size=4k",
        "cluster_size=2M",
        "refcount_bits=1",
        "refcount_bits=2,cluster_size=1k",
        "refcount_bits=4",
        "refcount_bits=8",
        "refcount_bits=32",
        "refcount_bits=64",
        "lazy_refcounts=on",
        "extended_l2=on",
        "extended_l2=on,cluster_size=16k",
        "extended_l2=on,cluster_size=2M",
        "compression_type=zstd",
        "compression_type=zstd,cluster_size=512",
        "compat=0.10,cluster_size=2M",
        "preallocation=metadata",
        "preallocation=falloc",
        "preallocation=full",
    ];
    let img = dir.path().join("t.qcow2");
    let mut checked = 0;
    for opts in options {
        for compress in [false, true] {
            if compress && opts.starts_with("preallocation") {
                continue; // qemu-img cannot compress into a preallocated image
            }
            let _ = std::fs::remove_file(&img);
            let mut args = vec!["convert", "-O", "qcow2", "-o", opts];
            if compress {
                args.push("-c");
            }
            args.extend([s(&src), s(&img)]);
            qemu_img_ok(&args);
            assert_reads_like_qemu(&img, "qcow2", &[], dir.path());
            qemu_io(&img, "qcow2", &WRITES);
            assert_reads_like_qemu(&img, "qcow2", &[], dir.path());
            checked += 1;
        }
    }
    eprintln!("{checked} qcow2 variants read as qemu-img reads them");
}

#[test]
fn map_matches_qemu_img() {
    let test = "map_matches_qemu_img";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), 8 * MIB);
    let img = dir.path().join("m.qcow2");
    for (opts, compress) in [
        ("compat=1.1", false),
        ("compat=0.10", false),
        ("cluster_size=512", false),
        ("compat=1.1", true),
        ("extended_l2=on", false),
        ("extended_l2=on,cluster_size=2M", true),
        ("compression_type=zstd", true),
    ] {
        let _ = std::fs::remove_file(&img);
        let mut args = vec!["convert", "-O", "qcow2", "-o", opts];
        if compress {
            args.push("-c");
        }
        args.extend([s(&src), s(&img)]);
        qemu_img_ok(&args);
        qemu_io(&img, "qcow2", &WRITES);
        assert_map_like_qemu(&img);
    }
    // An overlay larger than its backing file (grown with resize): past the backing's end,
    // unallocated ranges are at the overlay's depth, as qemu-img reports them.
    let base = dir.path().join("short-base.qcow2");
    let top = dir.path().join("long-top.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&base), "1M"]);
    qemu_io(&base, "qcow2", &["write -P 1 0 64k", "write -P 2 960k 64k"]);
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "qcow2",
        s(&top),
        "4M",
    ]);
    qemu_io(&top, "qcow2", &["write -P 3 2M 64k"]);
    assert_map_like_qemu(&top);
    let human = run_ok(&["map", s(&top)]);
    let theirs = qemu_img_in(dir.path(), &["map", s(&top)]);
    assert_eq!(human, theirs);
}

#[test]
fn a_terabyte_sparse_image_maps_in_a_few_runs() {
    let test = "a_terabyte_sparse_image_maps_in_a_few_runs";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.qcow2");
    qemu_img_ok(&["create", "-f", "qcow2", s(&img), "1T"]);
    qemu_io(
        &img,
        "qcow2",
        &[
            "write -P 1 0 1M",
            "write -P 2 300G 64k",
            "write -P 3 1023G 1M",
        ],
    );
    let start = std::time::Instant::now();
    let ours = run_ok(&["map", "--output", "json", s(&img)]);
    assert!(
        start.elapsed().as_secs() < 10,
        "map took {:?}",
        start.elapsed()
    );
    assert_eq!(ours.lines().count(), 6, "{ours}");
    assert_eq!(ours, qemu_img_ok(&["map", "--output", "json", s(&img)]));
}

#[test]
fn backing_chains_read_as_qemu_img_reads_them() {
    let test = "backing_chains_read_as_qemu_img_reads_them";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = source(d, 8 * MIB);
    let base = d.join("base.qcow2");
    qemu_img_ok(&["convert", "-O", "qcow2", s(&src), s(&base)]);
    let mid = d.join("mid.qcow2");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&mid),
    ]);
    qemu_io(&mid, "qcow2", &["write -P 7 1M 100k", "write -z 0 64k"]);
    // A version 2 top: zero writes allocate zeros instead of a zero flag.
    let top = d.join("top.qcow2");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    qemu_io(&top, "qcow2", &["write -P 8 3M 5k", "write -z 5M 64k"]);
    assert_reads_like_qemu(&top, "qcow2", &[], d);
    assert_map_like_qemu(&top);
    // A raw base named with its format, and one without (detected).
    let raw_top = d.join("rawtop.qcow2");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "source.raw",
        "-F",
        "raw",
        s(&raw_top),
    ]);
    qemu_io(&raw_top, "qcow2", &["write -P 4 2M 64k"]);
    assert_reads_like_qemu(&raw_top, "qcow2", &[], d);
    let info: Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&raw_top)])).unwrap();
    assert_eq!(info["backing-filename"], "source.raw");
    assert_eq!(info["backing-filename-format"], "raw");
    // --no-backing: what the top leaves to its parent reads as zeros.
    let out = d.join("alone.raw");
    run_ok(&["convert", "--no-backing", s(&top), s(&out)]);
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes[..MIB as usize].iter().all(|&b| b == 0));
    assert!(
        bytes[3 * MIB as usize..3 * MIB as usize + 5120]
            .iter()
            .all(|&b| b == 8)
    );
}

#[test]
fn external_data_files_are_read_through_the_gate() {
    let test = "external_data_files_are_read_through_the_gate";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, opts) in [
        ("plain", "data_file=plain.bin"),
        ("raw", "data_file=raw.bin,data_file_raw=on"),
        ("ext", "data_file=ext.bin,extended_l2=on"),
    ] {
        let img = d.join(format!("{name}.qcow2"));
        qemu_img_in(d, &["create", "-f", "qcow2", "-o", opts, s(&img), "8M"]);
        qemu_io(&img, "qcow2", &WRITES);
        qemu_io(&img, "qcow2", &["write -P 3 7M 1M"]);
        assert_reads_like_qemu(&img, "qcow2", &[], d);
        assert_map_like_qemu(&img);
        let info: Value =
            serde_json::from_str(&run_ok(&["info", "--output", "json", s(&img)])).unwrap();
        assert_eq!(
            info["format-specific"]["data"]["data-file"],
            format!("{name}.bin")
        );
        assert!(
            info["opened-files"][1]
                .as_str()
                .unwrap()
                .ends_with(&format!("{name}.bin")),
            "{info}"
        );
    }
    // A data file and a backing file together: what the image leaves unallocated comes
    // from the backing file.
    let base = d.join("dbase.qcow2");
    qemu_img_ok(&["create", "-f", "qcow2", s(&base), "4M"]);
    qemu_io(&base, "qcow2", &["write -P 1 0 1M"]);
    let top = d.join("dtop.qcow2");
    qemu_img_in(
        d,
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "data_file=dtop.bin",
            "-b",
            "dbase.qcow2",
            "-F",
            "qcow2",
            s(&top),
        ],
    );
    qemu_io(&top, "qcow2", &["write -P 2 512k 64k"]);
    assert_reads_like_qemu(&top, "qcow2", &[], d);
    assert_map_like_qemu(&top);
    // An absolute data file name is refused under --confine, named in one line.
    let abs = d.join("abs.bin");
    let img = d.join("abs.qcow2");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", abs.display()),
        s(&img),
        "1M",
    ]);
    let (code, _, err) = run(&["convert", "--confine", s(&img), s(&d.join("x.raw"))]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("data file") && err.contains("refused"),
        "{err}"
    );
    // A missing data file is named.
    std::fs::remove_file(&abs).unwrap();
    let (code, _, err) = run(&["convert", s(&img), s(&d.join("x.raw"))]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("abs.bin") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn metadata_alone_opens_without_the_data_file_and_never_reads_the_image_file_in_its_place() {
    let test =
        "metadata_alone_opens_without_the_data_file_and_never_reads_the_image_file_in_its_place";
    if !have_qemu(test) {
        return;
    }
    use diskferry::image::{DataFilePolicy, Image, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("meta.qcow2");
    qemu_img_in(
        d,
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "data_file=meta.bin",
            s(&img),
            "4M",
        ],
    );
    qemu_io(&img, "qcow2", &["write -P 5 0 64k"]);
    std::fs::remove_file(d.join("meta.bin")).unwrap();
    // The library's default needs the data file.
    let err = Image::open(&img, &OpenOptions::default()).unwrap_err();
    assert!(err.to_string().contains("'meta.bin' not found"), "{err}");
    // info's policy opens the metadata, names the absent file, and refuses to read guest
    // data rather than read the qcow2 file's own bytes at the data file's offsets.
    let options = OpenOptions {
        data_files: DataFilePolicy::MetadataSuffices,
        ..OpenOptions::default()
    };
    let image = Image::open(&img, &options).unwrap();
    assert_eq!(image.virtual_size(), 4 << 20);
    let absent = image.top().absent_files();
    assert_eq!(absent.len(), 1);
    assert_eq!(absent[0].name, "meta.bin");
    assert!(absent[0].reason.contains("looked for"), "{:?}", absent[0]);
    assert_eq!(image.top().files(), vec![img.clone()]);
    let mut buf = vec![0u8; 4096];
    let err = image.read_at(0, &mut buf).unwrap_err();
    assert!(err.to_string().contains("meta.bin"), "{err}");
}

#[test]
fn three_snapshots_each_read_as_qemu_img_reads_them() {
    let test = "three_snapshots_each_read_as_qemu_img_reads_them";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("snap.qcow2");
    qemu_img_ok(&["create", "-f", "qcow2", s(&img), "8M"]);
    for (i, name) in ["first", "second one", "third"].iter().enumerate() {
        let pattern = format!("write -P {} {}k 300k", i + 1, i * 200);
        qemu_io(&img, "qcow2", &[&pattern, "write -P 77 7M 4k"]);
        qemu_img_ok(&["snapshot", "-c", name, s(&img)]);
    }
    // The current state moves on, and the disk grows after the snapshots.
    qemu_io(&img, "qcow2", &["write -P 9 0 1M", "write -z 7M 64k"]);
    qemu_img_ok(&["resize", s(&img), "12M"]);
    qemu_io(&img, "qcow2", &["write -P 10 11M 64k"]);
    assert_reads_like_qemu(&img, "qcow2", &[], d);
    for sel in [
        "1",
        "2",
        "3",
        "first",
        "second one",
        "third",
        "snapshot.id=2",
        "snapshot.name=third",
        "snapshot.id=1,snapshot.name=first",
    ] {
        assert_reads_like_qemu(&img, "qcow2", &["-l", sel], d);
    }
    assert_eq!(
        run_ok(&["snapshot", "-l", s(&img)]),
        qemu_img_ok(&["snapshot", "-l", s(&img)])
    );
    let (code, _, err) = run(&["convert", "-l", "fourth", s(&img), s(&d.join("x.raw"))]);
    assert_eq!(code, 1);
    assert!(
        err.contains("'fourth' not found") && err.contains("second one"),
        "{err}"
    );
    let info: Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&img)])).unwrap();
    let theirs: Value =
        serde_json::from_str(&qemu_img_ok(&["info", "--output", "json", s(&img)])).unwrap();
    // The list is top-level, as qemu-img has it, and the human table is qemu-img's too.
    assert_eq!(info["snapshots"], theirs["snapshots"]);
    let human = run_ok(&["info", s(&img)]);
    let listed = run_ok(&["snapshot", "-l", s(&img)]);
    assert!(human.contains(&listed), "{human}\n---\n{listed}");
    // -l on an image that is not qcow2.
    let raw = d.join("plain.raw");
    make_raw(&raw, MIB, &[]);
    let (code, _, err) = run(&["convert", "-l", "1", s(&raw), s(&d.join("x.raw"))]);
    assert_eq!(code, 1);
    assert!(err.contains("no internal snapshots"), "{err}");
}

/// qemu-img's `format-specific.data`, cluster size, size and dirty flag, as diskferry's info
/// gives them (diskferry adds the snapshot list to the format-specific data).
#[test]
fn info_reports_what_qemu_img_reports() {
    let test = "info_reports_what_qemu_img_reports";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, opts) in [
        "compat=0.10",
        "compat=1.1,lazy_refcounts=on",
        "refcount_bits=1,cluster_size=4k",
        "extended_l2=on,compression_type=zstd",
        "data_file=d.bin,data_file_raw=on",
    ]
    .iter()
    .enumerate()
    {
        let img = d.join(format!("i{i}.qcow2"));
        qemu_img_in(d, &["create", "-f", "qcow2", "-o", opts, s(&img), "5M"]);
        let ours: Value =
            serde_json::from_str(&run_ok(&["info", "--output", "json", s(&img)])).unwrap();
        let theirs: Value =
            serde_json::from_str(&qemu_img_in(d, &["info", "--output", "json", s(&img)])).unwrap();
        for key in ["virtual-size", "cluster-size", "dirty-flag", "format"] {
            assert_eq!(ours[key], theirs[key], "{opts}: {key}");
        }
        assert_eq!(
            ours["format-specific"], theirs["format-specific"],
            "{opts}: format-specific"
        );
        let human = run_ok(&["info", s(&img)]);
        let qhuman = qemu_img_in(d, &["info", s(&img)]);
        let section = |t: &str| -> String {
            t.lines()
                .skip_while(|l| !l.starts_with("Format specific information:"))
                .skip(1)
                .take_while(|l| l.starts_with("    "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(section(&human), section(&qhuman), "{opts}: human");
    }
}

#[test]
fn images_left_dirty_or_marked_corrupt_are_readable() {
    let test = "images_left_dirty_or_marked_corrupt_are_readable";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("dirty.qcow2");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on",
        s(&img),
        "4M",
    ]);
    // qemu-io's abort leaves the dirty bit set and the refcounts stale.
    let _ = Command::new("qemu-io")
        .args(["-c", "write -P 1 0 192k", "-c", "abort", s(&img)])
        .output()
        .unwrap();
    let info: Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&img)])).unwrap();
    assert_eq!(info["dirty-flag"], true);
    assert_reads_like_qemu(&img, "qcow2", &[], d);

    let img = d.join("corrupt.qcow2");
    let src = source(d, 4 * MIB);
    qemu_img_ok(&["convert", "-O", "qcow2", s(&src), s(&img)]);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[79] |= 2; // incompatible feature bit 1: corrupt
    std::fs::write(&img, &bytes).unwrap();
    let out = d.join("c.raw");
    let (code, _, err) = run(&["convert", s(&img), s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning") && err.contains("corrupt"), "{err}");
    assert_eq!(sha256_file(&out), sha256_file(&src));
    let info: Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&img)])).unwrap();
    assert_eq!(info["format-specific"]["data"]["corrupt"], true);
}

fn assert_one_line_refusal(args: &[&str], words: &[&str]) -> String {
    let (code, _, err) = run(args);
    assert_eq!(code, 1, "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("diskferry: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in words {
        assert!(err.contains(w), "{err} does not say {w:?}");
    }
    err
}

#[test]
fn encrypted_images_are_refused_clearly() {
    let test = "encrypted_images_are_refused_clearly";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("x.raw");
    for (format, scheme) in [("qcow2", "luks"), ("qcow2", "aes"), ("qcow", "aes")] {
        let img = d.join(format!("{scheme}.{format}"));
        qemu_img_ok(&[
            "create",
            "--object",
            "secret,id=s0,data=password",
            "-f",
            format,
            "-o",
            &format!("encrypt.format={scheme},encrypt.key-secret=s0"),
            s(&img),
            "1M",
        ]);
        assert_one_line_refusal(&["convert", s(&img), s(&out)], &["encrypted"]);
        assert!(!out.exists());
    }
}

/// Sets incompatible feature bit 9 and names it in the feature name table qemu writes.
fn with_unknown_feature(img: &Path) {
    let mut b = std::fs::read(img).unwrap();
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let mut at = be32(&b, 100) as usize;
    loop {
        let (kind, len) = (be32(&b, at), be32(&b, at + 4) as usize);
        assert_ne!(kind, 0, "no feature name table");
        if kind == 0x6803_f857 {
            b[at + 8] = 0;
            b[at + 9] = 9;
            b[at + 10..at + 56].fill(0);
            b[at + 10..at + 20].copy_from_slice(b"frobnicate");
            break;
        }
        at += 8 + len.div_ceil(8) * 8;
    }
    b[78] |= 2; // bit 9 of the big-endian u64 at 72
    std::fs::write(img, &b).unwrap();
}

#[test]
fn unknown_incompatible_features_are_refused_by_name() {
    let test = "unknown_incompatible_features_are_refused_by_name";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("future.qcow2");
    qemu_img_ok(&["create", "-f", "qcow2", s(&img), "1M"]);
    with_unknown_feature(&img);
    let out = d.join("x.raw");
    assert_one_line_refusal(
        &["convert", s(&img), s(&out)],
        &["future.qcow2", "bit 9", "frobnicate"],
    );
    // Named by another image, its feature names are not quoted.
    let child = d.join("child.qcow2");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "future.qcow2",
        "-F",
        "qcow2",
        s(&child),
        "1M",
    ]);
    let err = assert_one_line_refusal(&["convert", s(&child), s(&out)], &["bit 9"]);
    assert!(!err.contains("frobnicate"), "{err}");
}

#[test]
fn qcow_version_1_reads_as_qemu_img_reads_it() {
    let test = "qcow_version_1_reads_as_qemu_img_reads_it";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = source(d, 8 * MIB);
    let plain = d.join("plain.qcow");
    qemu_img_ok(&["convert", "-O", "qcow", s(&src), s(&plain)]);
    assert_reads_like_qemu(&plain, "qcow", &[], d);
    assert_map_like_qemu(&plain);
    // qemu-img 10 exits 1 after writing a compressed qcow (its last partial cluster), with
    // the image complete: what matters is that both read it alike.
    let packed = d.join("packed.qcow");
    let _ = qemu_img(&["convert", "-c", "-O", "qcow", s(&src), s(&packed)]);
    assert_reads_like_qemu(&packed, "qcow", &[], d);
    let top = d.join("top.qcow");
    qemu_img_ok(&[
        "create",
        "-f",
        "qcow",
        "-b",
        "packed.qcow",
        "-F",
        "qcow",
        s(&top),
    ]);
    qemu_io(&top, "qcow", &["write -P 3 1M 100k", "write -P 4 8000k 4k"]);
    assert_reads_like_qemu(&top, "qcow", &[], d);
    let info = run_ok(&["info", s(&top)]);
    assert!(info.contains("file format: qcow\n"), "{info}");
    assert!(info.contains("backing file: packed.qcow"), "{info}");
}

#[test]
fn corpus_qcow2_images_convert_to_the_manifest_sha256() {
    let test = "corpus_qcow2_images_convert_to_the_manifest_sha256";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // data-file.qcow2 names data-file.bin, which the corpus holds only compressed: both go
    // into the temporary folder.
    corpus_file(&shared, "dissect.hypervisor/qcow2/data-file.bin.gz", d);
    let rows = manifest(&shared);
    // Compressed members of a backing chain find their parents unpacked beside them.
    for row in rows.iter().filter(|r| r.format.starts_with("QCOW")) {
        corpus_file(&shared, &row.path, d);
    }
    let mut checked = 0;
    for row in rows {
        if !row.format.starts_with("QCOW") {
            continue;
        }
        let Some(want) = &row.raw_sha256 else {
            continue;
        };
        let mut image = corpus_file(&shared, &row.path, d);
        if row.path.ends_with("data-file.qcow2") {
            let copy = d.join("data-file.qcow2");
            std::fs::copy(&image, &copy).unwrap();
            image = copy;
        }
        let out = d.join("out.raw");
        let _ = std::fs::remove_file(&out);
        let (code, _, err) = run(&["convert", "-O", "raw", s(&image), s(&out)]);
        assert_eq!(code, 0, "{}: {err}", row.path);
        assert_eq!(&sha256_file(&out), want, "{}: wrong content", row.path);
        checked += 1;
    }
    // 23 rows in MANIFEST.tsv, data-file.bin.gz is raw.
    assert!(
        checked >= 21,
        "only {checked} corpus qcow2 images were checked"
    );
    eprintln!("{checked} corpus qcow2 images match MANIFEST.tsv");
}

#[test]
fn bitmaps_are_listed_as_qemu_img_lists_them() {
    let test = "bitmaps_are_listed_as_qemu_img_lists_them";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bm.qcow2");
    qemu_img_ok(&["create", "-f", "qcow2", s(&img), "10M"]);
    qemu_img_ok(&["bitmap", "--add", s(&img), "first"]);
    qemu_img_ok(&[
        "bitmap",
        "--add",
        "-g",
        "1M",
        "--disable",
        s(&img),
        "second one",
    ]);
    qemu_io(&img, "qcow2", &["write -P 1 0 1M"]);
    let ours: Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&img)])).unwrap();
    let theirs: Value =
        serde_json::from_str(&qemu_img_ok(&["info", "--output", "json", s(&img)])).unwrap();
    assert_eq!(ours["format-specific"], theirs["format-specific"]);
    // The human "Format specific information" block, line for line as qemu-img prints it.
    let block = |text: &str| -> String {
        text.lines()
            .skip_while(|l| !l.starts_with("Format specific information:"))
            .take_while(|l| l.starts_with("Format specific") || l.starts_with("    "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let human = run_ok(&["info", s(&img)]);
    let theirs_human = qemu_img_ok(&["info", s(&img)]);
    assert_eq!(block(&human), block(&theirs_human));
    assert!(human.contains("name: second one"), "{human}");
    assert_reads_like_qemu(&img, "qcow2", &[], dir.path());
}

/// The independent readers (qemu-img, libyal, dissect) agree with diskferry on images made
/// with zstd, extended L2 and small clusters: every reader that reads an image reads what
/// diskferry reads (libyal reads no zstd, neither libyal nor dissect extended L2).
#[test]
fn independent_readers_agree() {
    let test = "independent_readers_agree";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = source(d, 8 * MIB);
    for (i, (opts, compress)) in [
        ("compression_type=zstd", true),
        ("compat=1.1", true),
        ("extended_l2=on", false),
        ("cluster_size=512,compat=0.10", false),
    ]
    .into_iter()
    .enumerate()
    {
        let img = d.join(format!("o{i}.qcow2"));
        let mut args = vec!["convert", "-O", "qcow2", "-o", opts];
        if compress {
            args.push("-c");
        }
        args.extend([s(&src), s(&img)]);
        qemu_img_ok(&args);
        qemu_io(&img, "qcow2", &WRITES);
        let Some(readings) = oracle_read(test, "qcow2", &img) else {
            return;
        };
        let ours = content_sha256(&img, None, d);
        let mut agreeing = 0;
        for r in &readings {
            if let Ok(theirs) = &r.result {
                assert_eq!(&ours, theirs, "{opts}: {} disagrees", r.reader);
                agreeing += 1;
            }
        }
        assert!(
            agreeing >= 1,
            "{opts}: only {agreeing} readers read it: {readings:?}"
        );
    }
}
