//! `convert -C` (copy offloading, issue 15): data stored plainly in a host file (a raw image, a
//! fixed VHD, uncompressed qcow2 clusters, a backing file's) is copied by the kernel with
//! `copy_file_range` into targets written by position (raw, fixed VHD, flat VMDK, `-n` in
//! place), and by read and write where the kernel declines or stops short.
//!
//! The kernel's part is seen with `strace -e trace=copy_file_range` (the bytes its calls
//! returned must be the source's host-file data), and the fallback is forced for real with
//! strace's fault injection (`-e inject=copy_file_range:error=EXDEV`, ...): the call fails in
//! the kernel's stead, whatever the file systems. Every output is checked against the source
//! with `qemu-img compare`, and against `qemu-img convert -C` byte for byte and map for map.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A scratch folder, when qemu-img and strace are both usable.
fn setup(test: &str) -> Option<tempfile::TempDir> {
    if !have_qemu(test) || !have_strace(test) {
        return None;
    }
    Some(tempfile::tempdir().unwrap())
}

/// What the kernel's `copy_file_range` calls did in one run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Calls {
    /// Calls that returned (strace splits a call between threads into two lines).
    returned: usize,
    /// Bytes the successful calls copied.
    copied: u64,
    /// Calls strace failed in the kernel's stead.
    injected: usize,
}

/// Runs diskferry with `args` under strace, with `inject` (strace's `inject=` value for
/// copy_file_range) if given; returns (exit code, stderr, the calls seen).
fn traced(dir: &Path, args: &[&str], inject: Option<&str>) -> (i32, String, Calls) {
    let log = dir.join("strace.log");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", s(&log), "-e", "trace=copy_file_range"]);
    if let Some(inject) = inject {
        cmd.args(["-e", &format!("inject=copy_file_range:{inject}")]);
    }
    cmd.arg(env!("CARGO_BIN_EXE_diskferry")).args(args);
    let (code, _, err) = decode(cmd.output().expect("strace runs"));
    let text = std::fs::read_to_string(&log).unwrap();
    let mut calls = Calls::default();
    for line in text.lines().filter(|l| l.contains("copy_file_range")) {
        // `N copy_file_range(...) = R`, or `N <... copy_file_range resumed>)   = R` (strace
        // pads it) for a call another thread's line interrupted.
        let Some((_, result)) = line.rsplit_once(" = ") else {
            continue; // the first half of a call another thread interrupted
        };
        calls.returned += 1;
        if result.contains("(INJECTED)") {
            calls.injected += 1;
        }
        if let Ok(n) = result
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse::<i64>()
            && n > 0
        {
            calls.copied += n as u64;
        }
    }
    (code, err, calls)
}

/// The bytes `qemu-img map` reports as data stored at a host offset (what the kernel can copy).
fn host_data_bytes(fmt: &str, image: &Path) -> u64 {
    let out = qemu_img_ok(&["map", "--output=json", "-f", fmt, s(image)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true && e["offset"].is_u64() && e["compressed"] != true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum()
}

/// `qemu-img map --output=json` of a raw image: where it holds data and where holes.
fn raw_map(image: &Path) -> String {
    qemu_img_ok(&["map", "--output=json", "-f", "raw", s(image)])
}

/// A 24 MiB raw image: data not aligned to the engine's 2 MiB items, two pieces of data with
/// a 32 KiB hole between them (which the engine reads as one range), a long hole, and data
/// at the end.
fn source_raw(dir: &Path) -> PathBuf {
    let path = dir.join("src.raw");
    make_raw(
        &path,
        24 << 20,
        &[
            (0, (3 << 20) + 4096),
            (5 << 20, 64 << 10),
            ((5 << 20) + (96 << 10), 32 << 10),
            (20 << 20, 4 << 20),
        ],
    );
    path
}

/// A scratch folder (when qemu-img and strace are usable) holding [`source_raw`].
fn start(test: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let d = setup(test)?;
    let raw = source_raw(d.path());
    Some((d, raw))
}

/// Runs `convert -C FLAGS -f FMT -O raw SOURCE ours.raw` with diskferry under strace (failing
/// calls as `inject` says) and the same into `theirs.raw` with qemu-img, in `dir`; asserts that
/// both succeed, that ours reads as the source (`qemu-img compare`) and holds qemu-img's bytes,
/// with holes in the same places (for `-n`, the caller makes both outputs beforehand).
/// Returns diskferry's calls.
fn like_qemu_img(
    dir: &Path,
    flags: &[&str],
    (fmt, source): (&str, &Path),
    inject: Option<&str>,
) -> Calls {
    let (ours, theirs) = (dir.join("ours.raw"), dir.join("theirs.raw"));
    let args = |out: &Path| -> Vec<String> {
        [
            &["convert", "-C"],
            flags,
            &["-f", fmt, "-O", "raw", s(source), s(out)],
        ]
        .concat()
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let what = format!("{fmt} {flags:?} {inject:?}");
    let ours_args = args(&ours);
    let ours_args: Vec<&str> = ours_args.iter().map(String::as_str).collect();
    let (code, err, calls) = traced(dir, &ours_args, inject);
    assert_eq!(code, 0, "{what}: {err}");
    qemu_img_ok(&args(&theirs).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(qemu_compare(fmt, source, "raw", &ours), "{what}: content");
    assert!(
        std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
        "{what}: not qemu-img's bytes"
    );
    // Holes where qemu-img leaves holes (the 32 KiB between two data runs too), data where it
    // writes data.
    assert_eq!(raw_map(&ours), raw_map(&theirs), "{what}: allocation");
    for p in [&ours, &theirs] {
        std::fs::remove_file(p).unwrap();
    }
    calls
}

#[test]
fn the_kernel_copies_raw_fixed_vhd_and_qcow2_data_as_qemu_img_does() {
    let Some((d, raw)) = start("the_kernel_copies_raw_fixed_vhd_and_qcow2_data_as_qemu_img_does")
    else {
        return;
    };
    let dir = d.path();
    let vhd = dir.join("src.vhd");
    let opts = "subformat=fixed,force_size=on";
    qemu_img_ok(&["convert", "-O", "vpc", "-o", opts, s(&raw), s(&vhd)]);
    let qcow2 = dir.join("src.qcow2");
    qemu_img_ok(&["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&qcow2)]);
    for (fmt, src) in [("raw", &raw), ("vpc", &vhd), ("qcow2", &qcow2)] {
        let calls = like_qemu_img(dir, &[], (fmt, src), None);
        // Every byte of data stored at a host offset, and nothing else, went through the
        // kernel's copy. qemu-img made the fixed VHD with holes where the raw image has them,
        // which its vpc driver maps as data all the same: its data is the raw image's.
        let expected = match fmt {
            "vpc" => host_data_bytes("raw", &raw),
            _ => host_data_bytes(fmt, src),
        };
        assert!(expected >= (7 << 20), "{fmt}: {expected}");
        assert_eq!(calls.copied, expected, "{fmt}: {calls:?}");
        assert_eq!(calls.injected, 0);
    }
}

#[test]
fn declined_and_short_kernel_copies_fall_back_to_read_and_write() {
    let Some((d, raw)) = start("declined_and_short_kernel_copies_fall_back_to_read_and_write")
    else {
        return;
    };
    // What the kernel answers where it cannot copy between two files (another file system,
    // a file system or kernel without the call), and a copy that stops at once (retval=0:
    // the call returns 0 bytes, as at the source's end).
    for inject in [
        "error=EXDEV",
        "error=EOPNOTSUPP",
        "error=EINVAL",
        "error=ENOSYS",
        "retval=0",
    ] {
        let calls = like_qemu_img(d.path(), &[], ("raw", &raw), Some(inject));
        assert!(
            calls.injected >= 1,
            "{inject}: the kernel was not asked: {calls:?}"
        );
        assert_eq!(calls.copied, 0, "{inject}");
        if inject.starts_with("error") {
            // The kernel said no for good: it is not asked again for every range.
            assert!(calls.injected <= 2, "{inject}: {calls:?}");
        }
    }
}

#[test]
fn after_a_declined_copy_zeros_in_the_data_are_found_as_qemu_img_finds_them() {
    let test = "after_a_declined_copy_zeros_in_the_data_are_found_as_qemu_img_finds_them";
    let Some((d, raw)) = start(test) else {
        return;
    };
    let dir = d.path();
    // Zeros written inside the data (allocated, so the map calls them data): -C copies them
    // as they are; once the kernel has declined, both tools look for zeros again and leave
    // them out. qemu-img is refused the same calls, under the same strace injection.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.write_all_at(&vec![0u8; 256 << 10], 1 << 20).unwrap();
        f.write_all_at(&vec![0u8; 64 << 10], 21 << 20).unwrap();
    }
    let (ours, theirs) = (dir.join("ours.raw"), dir.join("theirs.raw"));
    let (code, err, calls) = traced(
        dir,
        &["convert", "-C", "-f", "raw", "-O", "raw", s(&raw), s(&ours)],
        Some("error=EXDEV"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(calls.injected >= 1, "{calls:?}");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=copy_file_range",
        ])
        .args(["-e", "inject=copy_file_range:error=EXDEV", "qemu-img"])
        .args([
            "convert",
            "-C",
            "-f",
            "raw",
            "-O",
            "raw",
            s(&raw),
            s(&theirs),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(qemu_compare("raw", &raw, "raw", &ours));
    let map = raw_map(&ours);
    assert_eq!(map, raw_map(&theirs), "allocation");
    // The zeros are holes in both (the same map would also hold if neither found them).
    assert!(disk_usage(&ours) < disk_usage(&raw), "{map}");
}

#[test]
fn a_failing_kernel_copy_is_one_error_naming_the_output_and_leaves_nothing() {
    let test = "a_failing_kernel_copy_is_one_error_naming_the_output_and_leaves_nothing";
    let Some((d, raw)) = start(test) else {
        return;
    };
    let dir = d.path();
    let out = dir.join("out.raw");
    let before = dir_names(dir);
    let (code, err, calls) = traced(
        dir,
        &["convert", "-C", "-O", "raw", s(&raw), s(&out)],
        Some("error=EIO"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(calls.injected >= 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(s(&out)), "{err}");
    assert!(lines[0].contains("copy_file_range"), "{err}");
    let mut after = dir_names(dir);
    after.retain(|n| n != "strace.log");
    assert_eq!(after, before, "a failed conversion left files behind");
}

#[test]
fn in_place_fixed_vhd_flat_vmdk_and_backing_files_are_copied_by_the_kernel() {
    let test = "in_place_fixed_vhd_flat_vmdk_and_backing_files_are_copied_by_the_kernel";
    let Some((d, raw)) = start(test) else {
        return;
    };
    let dir = d.path();
    let data = host_data_bytes("raw", &raw);

    // New fixed VHD and monolithicFlat VMDK targets: data at known offsets of their files.
    for (fmt, opts, name) in [
        ("vpc", "subformat=fixed,force_size=on", "out.vhd"),
        ("vmdk", "subformat=monolithicFlat", "out.vmdk"),
    ] {
        let out = dir.join(name);
        let args = ["convert", "-C", "-O", fmt, "-o", opts, s(&raw), s(&out)];
        let (code, err, calls) = traced(dir, &args, None);
        assert_eq!(code, 0, "{fmt}: {err}");
        assert!(qemu_compare("raw", &raw, fmt, &out), "{fmt}: content");
        assert_eq!(calls.copied, data, "{fmt}: {calls:?}");
    }

    // -n into an existing raw file full of 0xff: data copied by the kernel, the source's
    // zeros written over the old bytes, as qemu-img does.
    for name in ["ours.raw", "theirs.raw"] {
        std::fs::write(dir.join(name), vec![0xffu8; 24 << 20]).unwrap();
    }
    let calls = like_qemu_img(dir, &["-n"], ("raw", &raw), None);
    assert_eq!(calls.copied, data, "-n: {calls:?}");

    // A qcow2 overlay whose clusters are partly its own, partly its raw backing file's: both
    // files' data go through the kernel.
    let top = dir.join("top.qcow2");
    let backing = ["-b", "src.raw", "-F", "raw"];
    qemu_img_ok(&[&["create", "-q", "-f", "qcow2"], &backing[..], &[s(&top)]].concat());
    let writes = ["write -P 0x5a 1M 1M", "write -P 0x6b 21M 512k"];
    qemu_io("qcow2", &top, &writes);
    let calls = like_qemu_img(dir, &[], ("qcow2", &top), None);
    assert_eq!(
        calls.copied,
        host_data_bytes("qcow2", &top),
        "chain: {calls:?}"
    );
}
