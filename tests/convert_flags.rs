//! convert's -C, -r, --target-is-zero and --bitmaps, rebase without -F and with -c, and
//! measure's bitmaps size (issue 15): each run with qemu-img 10 and with diskferry linked as
//! `qemu-img` on the same inputs, comparing exit codes, messages, standard output and the
//! images made (byte for byte where both write into the same existing file).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `args` with qemu-img and with `fake`, each with `{}` in an argument replaced by its
/// own output name (`theirs`/`ours` + the suffix), and asserts the same exit code and the same
/// standard error. Returns both outputs' paths.
fn same_outcome(dir: &Path, fake: &Path, args: &[&str], suffix: &str) -> (i32, PathBuf, PathBuf) {
    let theirs = dir.join(format!("theirs{suffix}"));
    let ours = dir.join(format!("ours{suffix}"));
    let with =
        |out: &Path| -> Vec<String> { args.iter().map(|a| a.replace("{}", s(out))).collect() };
    let qa = with(&theirs);
    let da = with(&ours);
    let (qc, qo, qe) = qemu_img(&qa.iter().map(String::as_str).collect::<Vec<_>>());
    let (dc, doo, de) = run_prog(fake, &da.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        (qc, qe.trim()),
        (dc, de.trim()),
        "exit code and message of {args:?}"
    );
    assert_eq!(qo, doo, "standard output of {args:?}");
    (qc, theirs, ours)
}

/// The words of `line`, each that `files` names (`("RAW", path)`) replaced by its path.
fn command<'a>(line: &'a str, files: &[(&str, &'a str)]) -> Vec<&'a str> {
    line.split(' ')
        .map(|w| {
            files
                .iter()
                .find(|(name, _)| *name == w)
                .map_or(w, |&(_, path)| path)
        })
        .collect()
}

/// diskferry under its own name (not linked as `qemu-img`).
fn as_diskferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_diskferry"))
}

/// Runs `args` with `prog` and asserts one of diskferry's own refusals: exit code 1, a message
/// with `says`, and each of `keeps` as it was (a file that was not there still is not).
fn refused(prog: &Path, args: &[&str], says: &str, keeps: &[&Path]) {
    let before: Vec<Option<Vec<u8>>> = keeps.iter().map(|p| std::fs::read(p).ok()).collect();
    let (c, _, e) = run_prog(prog, args);
    assert_eq!(c, 1, "{args:?}: {e}");
    assert!(e.contains(says), "{args:?}: {e}");
    for (path, was) in keeps.iter().zip(before) {
        assert!(
            std::fs::read(path).ok() == was,
            "{args:?} changed {}",
            path.display()
        );
    }
}

/// A qcow2 `name` in `dir` over the qcow2 `backing` (named relative to it).
fn qcow2_over(dir: &Path, name: &str, backing: &str) -> PathBuf {
    let top = dir.join(name);
    let files = [("BACKING", backing), ("TOP", s(&top))];
    let args = command("create -q -f qcow2 -b BACKING -F qcow2 TOP", &files);
    qemu_img_ok(&args);
    top
}

/// A 4 MiB raw image: 64 KiB of data, then 2 MiB of zeros that are allocated (written), then
/// a hole; and 1 MiB of data at 3 MiB.
fn raw_with_written_zeros(dir: &Path) -> PathBuf {
    let path = dir.join("src.raw");
    make_raw(&path, 4 << 20, &[(0, 64 << 10), (3 << 20, 1 << 20)]);
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&vec![0u8; 2 << 20], 64 << 10).unwrap();
    path
}

#[test]
fn refusals_and_their_messages_are_qemu_imgs() {
    let Some((d, fake)) = qemu_img_scratch("refusals_and_their_messages_are_qemu_imgs") else {
        return;
    };
    let dir = d.path();
    let raw = dir.join("a.raw");
    make_raw(&raw, 1 << 20, &[(0, 4096)]);
    let q = dir.join("a.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&q), "1M"]);
    let existing = dir.join("existing.raw");
    make_raw(&existing, 1 << 20, &[]);
    let files = [("RAW", s(&raw)), ("Q", s(&q)), ("EX", s(&existing))];
    // One case a row: the words of the command, RAW, Q and EX standing for the files above.
    for (words, code) in [
        ("convert -C -c -O qcow2 RAW {}", 1),
        ("convert -C -S 4k RAW {}", 1),
        ("convert -C -S 0 RAW {}", 1),
        ("convert -C --salvage RAW {}", 1),
        ("convert --target-is-zero RAW {}", 1),
        ("convert -r 1X RAW {}", 1),
        ("convert -r 0.5 RAW {}", 1),
        ("convert -r 1kB RAW {}", 1),
        ("convert -r 8E RAW {}", 1),
        ("convert -r -1 RAW {}", 1),
        ("commit -r 1X Q", 1),
        ("convert --bitmaps -O qcow2 RAW {}", 1),
        ("convert --bitmaps -O vmdk Q {}", 1),
        ("convert --bitmaps -O qcow2 -o compat=0.10 Q {}", 1),
        // qemu-img 10 says so, writes nothing, and exits with 0.
        ("convert -n --target-is-zero -B Q -F qcow2 -O raw RAW EX", 0),
    ] {
        let args = command(words, &files);
        let before = std::fs::read(&existing).unwrap();
        let (c, theirs, ours) = same_outcome(dir, &fake, &args, ".out");
        assert_eq!(c, code, "{args:?}");
        // qemu-img creates the output before some refusals (--bitmaps into vmdk); diskferry
        // never leaves one behind.
        assert!(!ours.exists(), "{args:?} wrote an output");
        let _ = std::fs::remove_file(&theirs);
        assert_eq!(std::fs::read(&existing).unwrap(), before, "{args:?}");
    }
    // As diskferry, the refusal that qemu-img reports with 0 fails.
    let args = command("convert -n --target-is-zero -B Q -O raw RAW EX", &files);
    refused(as_diskferry(), &args, "--target-is-zero", &[&existing]);
}

#[test]
fn copy_offloading_copies_data_ranges_whole_as_qemu_img() {
    let Some((d, fake)) = qemu_img_scratch("copy_offloading_copies_data_ranges_whole_as_qemu_img")
    else {
        return;
    };
    let dir = d.path();
    let src = raw_with_written_zeros(dir);
    for fmt in ["raw", "qcow2"] {
        let (c, theirs, ours) = same_outcome(
            dir,
            &fake,
            &["convert", "-C", "-f", "raw", "-O", fmt, s(&src), "{}"],
            &format!(".{fmt}"),
        );
        assert_eq!(c, 0);
        assert!(qemu_compare("raw", &src, fmt, &ours));
        // The written zeros are data to -C, as to qemu-img: allocated in both outputs.
        let map = |p: &Path| {
            let out = qemu_img_ok(&["map", "--output=json", "-f", fmt, s(p)]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .filter(|e| e["data"] == true)
                .map(|e| e["length"].as_u64().unwrap())
                .sum::<u64>()
        };
        assert_eq!(map(&ours), map(&theirs), "{fmt}: data bytes");
        assert!(map(&ours) >= (2 << 20) + (64 << 10), "{fmt}");
    }
    // Without -C the written zeros become a hole.
    let plain = dir.join("plain.raw");
    run_ok(&["convert", "-O", "raw", s(&src), s(&plain)]);
    assert!(disk_usage(&plain) < disk_usage(&dir.join("ours.raw")));
}

#[test]
fn target_is_zero_leaves_the_existing_targets_zeros_unwritten() {
    let Some((d, fake)) =
        qemu_img_scratch("target_is_zero_leaves_the_existing_targets_zeros_unwritten")
    else {
        return;
    };
    let dir = d.path();
    let src = dir.join("src.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&src), "4M"]);
    qemu_io(
        "qcow2",
        &src,
        &[
            "write -P 0x11 0 64k",
            "write -P 0x22 1M 512k",
            "write -z 2M 1M",
        ],
    );
    // Targets that do not read as zeros show what was written and what was passed over:
    // qemu-img's and ours must be the same bytes.
    for flags in [
        vec!["-n", "--target-is-zero"],
        vec!["-n", "--target-is-zero", "-C"],
        vec!["-n"],
    ] {
        for name in ["theirs.raw", "ours.raw"] {
            std::fs::write(dir.join(name), vec![0xffu8; 4 << 20]).unwrap();
        }
        let mut args = vec!["convert"];
        args.extend(&flags);
        args.extend(["-O", "raw", s(&src), "{}"]);
        let (c, theirs, ours) = same_outcome(dir, &fake, &args, ".raw");
        assert_eq!(c, 0);
        let ours = std::fs::read(&ours).unwrap();
        assert_eq!(ours, std::fs::read(&theirs).unwrap(), "{flags:?}");
        let skipped = flags.contains(&"--target-is-zero");
        assert_eq!(ours[2 << 20], if skipped { 0xff } else { 0 }, "{flags:?}");
    }
    // Into a fixed VHD (written in place by its map), as diskferry: the data lands, the
    // zeros are left as the new (zeroed) image holds them.
    let vhd = dir.join("fixed.vhd");
    run_ok(&[
        "create",
        "-f",
        "vhd",
        "-o",
        "subformat=fixed",
        s(&vhd),
        "4M",
    ]);
    run_ok(&[
        "convert",
        "-n",
        "--target-is-zero",
        "-O",
        "vhd",
        s(&src),
        s(&vhd),
    ]);
    assert!(qemu_compare("qcow2", &src, "vpc", &vhd));
}

#[test]
fn rate_limits_hold_reads_back_as_qemu_imgs() {
    let Some((d, fake)) = qemu_img_scratch("rate_limits_hold_reads_back_as_qemu_imgs") else {
        return;
    };
    let dir = d.path();
    // 4 MiB of data in a 16 MiB disk: at 4 MiB/s the first 2 MiB go at once, as qemu's
    // first request does, and the rest takes half a second; the holes cost nothing.
    let src = dir.join("src.raw");
    make_raw(&src, 16 << 20, &[(0, 4 << 20)]);
    let start = Instant::now();
    let (c, _, ours) = same_outcome(
        dir,
        &fake,
        &["convert", "-r", "4M", "-O", "qcow2", s(&src), "{}"],
        ".qcow2",
    );
    assert_eq!(c, 0);
    assert!(start.elapsed() >= Duration::from_millis(900), "both runs");
    assert!(qemu_compare("raw", &src, "qcow2", &ours));
    let ours_alone = dir.join("alone.raw");
    let t = Instant::now();
    run_ok(&["convert", "-r", "4M", s(&src), s(&ours_alone)]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // 0 is no limit, for convert and commit alike, as qemu-img reads it.
    let t = Instant::now();
    run_ok(&["convert", "-r", "0", s(&src), s(&ours_alone)]);
    assert!(t.elapsed() < Duration::from_millis(450));
    let base = dir.join("base.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&base), "1M"]);
    let top = qcow2_over(dir, "top.qcow2", "base.qcow2");
    let (c, out, e) = run_prog(&fake, &["commit", "-r", "0", s(&top)]);
    assert_eq!((c, out.as_str()), (0, "Image committed.\n"), "{e}");
}

/// A 64 MiB qcow2 with three persistent bitmaps (one of 128 KiB granularity, one disabled)
/// and data written while they were enabled.
fn qcow2_with_bitmaps(dir: &Path) -> PathBuf {
    let img = dir.join("bm.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&img), "64M"]);
    qemu_img_ok(&["bitmap", "--add", s(&img), "b0"]);
    qemu_img_ok(&["bitmap", "--add", "-g", "128k", s(&img), "bitmap-one"]);
    qemu_img_ok(&["bitmap", "--add", "--disable", s(&img), "b2"]);
    qemu_io("qcow2", &img, &["write -P 3 0 2M"]);
    img
}

#[test]
fn measure_reports_qemu_imgs_bitmaps_size() {
    let Some((d, fake)) = qemu_img_scratch("measure_reports_qemu_imgs_bitmaps_size") else {
        return;
    };
    let dir = d.path();
    let img = qcow2_with_bitmaps(dir);
    let img = s(&img);
    for extra in [
        vec![],
        vec!["--output=json"],
        vec!["-o", "cluster_size=4k"],
        vec!["-o", "cluster_size=2M", "--output=json"],
        vec!["-o", "compat=0.10"],
        vec!["-O", "raw"],
    ] {
        let mut args = vec!["measure"];
        if !extra.contains(&"-O") {
            args.extend(["-O", "qcow2"]);
        }
        args.extend(&extra);
        args.push(img);
        let (c, out, _) = qemu_img(&args);
        let (dc, dout, de) = run_prog(&fake, &args);
        assert_eq!((c, &out), (dc, &dout), "{extra:?}: {de}");
        assert_eq!(c, 0);
    }
    let out = qemu_img_ok(&["measure", "-O", "qcow2", img]);
    assert!(out.contains("bitmaps size: 458752\n"), "{out}");
}

#[test]
fn bitmaps_of_a_qcow2_source_are_not_lost_silently() {
    let Some((d, fake)) = qemu_img_scratch("bitmaps_of_a_qcow2_source_are_not_lost_silently")
    else {
        return;
    };
    let dir = d.path();
    // Without bitmaps, --bitmaps converts as qemu-img does.
    let plain = dir.join("plain.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&plain), "4M"]);
    qemu_io("qcow2", &plain, &["write -P 5 64k 64k"]);
    let (c, theirs, ours) = same_outcome(
        dir,
        &fake,
        &["convert", "--bitmaps", "-O", "qcow2", s(&plain), "{}"],
        ".qcow2",
    );
    assert_eq!(c, 0);
    assert!(qemu_compare("qcow2", &theirs, "qcow2", &ours));
    qemu_img_ok(&["check", s(&ours)]);
}

#[test]
fn rebase_without_backing_format_as_qemu_img_and_as_diskferry() {
    let Some((d, fake)) =
        qemu_img_scratch("rebase_without_backing_format_as_qemu_img_and_as_diskferry")
    else {
        return;
    };
    let dir = d.path();
    let base = dir.join("base.qcow2");
    let new = dir.join("new.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&base), "4M"]);
    qemu_io("qcow2", &base, &["write -P 1 0 1M"]);
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&new), "4M"]);
    qemu_io("qcow2", &new, &["write -P 7 512k 1M"]);
    let make_top = |name: &str| {
        let top = qcow2_over(dir, name, "base.qcow2");
        qemu_io("qcow2", &top, &["write -P 2 3M 64k"]);
        top
    };
    let reference = dir.join("reference.raw");
    let theirs = make_top("theirs.qcow2");
    let ours = make_top("ours.qcow2");
    qemu_img_ok(&["convert", "-O", "raw", s(&theirs), s(&reference)]);
    for unsafe_flag in [false, true] {
        let mut args = vec!["rebase"];
        if unsafe_flag {
            args.push("-u");
        }
        args.extend(["-b", "new.qcow2"]);
        let (qc, qo, qe) = qemu_img(&[args.clone(), vec![s(&theirs)]].concat());
        let (dc, doo, de) = run_prog(&fake, &[args.clone(), vec![s(&ours)]].concat());
        assert_eq!((qc, qo, qe.trim()), (dc, doo, de.trim()), "{args:?}");
        assert_eq!(qc, 1);
        for top in [&theirs, &ours] {
            let info = qemu_img_ok(&["info", "-U", s(top)]);
            assert!(info.contains("backing file: base.qcow2"), "{info}");
        }
    }
    // As diskferry the new backing image's format is detected (through the open gate).
    run_ok(&["rebase", "-b", "new.qcow2", s(&ours)]);
    let info = qemu_img_ok(&["info", s(&ours)]);
    assert!(info.contains("backing file: new.qcow2"), "{info}");
    assert!(info.contains("backing file format: qcow2\n"), "{info}");
    qemu_img_ok(&["check", s(&ours)]);
    assert!(qemu_compare("raw", &reference, "qcow2", &ours));
    // -c with -u writes nothing to compress: accepted as qemu-img accepts it.
    let (c, _, e) = run_prog(
        &fake,
        &[
            "rebase",
            "-u",
            "-c",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            s(&ours),
        ],
    );
    assert_eq!(c, 0, "{e}");
}

/// `-S` larger than 4 KiB is the shortest zero run left out of the data; the source's
/// unallocated ranges are never written, whatever its size, as qemu-img leaves them (before,
/// a data run was widened to whole -S granules, so -S 16M wrote 16 MiB around 64 KiB of data).
#[test]
fn a_large_min_sparse_writes_no_more_than_the_data() {
    let test = "a_large_min_sparse_writes_no_more_than_the_data";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("a.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&src), "64M"]);
    let ok = std::process::Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0xab 1M 64k",
            "-c",
            "write -P 0x11 63M 1M",
        ])
        .arg(&src)
        .output()
        .unwrap();
    assert!(ok.status.success());
    for (fmt, sparse) in [("raw", "16M"), ("qcow2", "1M"), ("vpc", "8M")] {
        let ours = d.join(format!("ours.{fmt}"));
        let theirs = d.join(format!("theirs.{fmt}"));
        run_ok(&["convert", "-O", fmt, "-S", sparse, s(&src), s(&ours)]);
        qemu_img_ok(&["convert", "-O", fmt, "-S", sparse, s(&src), s(&theirs)]);
        assert!(qemu_compare(fmt, &ours, fmt, &theirs), "{fmt} -S {sparse}");
        let data = |p: &Path| -> u64 {
            let map: serde_json::Value =
                serde_json::from_str(&qemu_img_ok(&["map", "--output=json", "-f", fmt, s(p)]))
                    .unwrap();
            map.as_array()
                .unwrap()
                .iter()
                .filter(|r| r["data"] == true)
                .map(|r| r["length"].as_u64().unwrap())
                .sum()
        };
        // qemu-img's raw output also allocates its first 4 KiB (its alignment probe writes
        // there): ours may be smaller, never larger, and holds the source's data.
        let (o, t) = (data(&ours), data(&theirs));
        assert!(
            o <= t && o >= (1 << 20) + (64 << 10),
            "{fmt} -S {sparse}: {o} bytes of data mapped against qemu-img's {t}"
        );
    }
}
