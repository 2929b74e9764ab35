//! Destinations, behaving as qemu-img's do (cli.md, "Destinations"): a device is written in
//! place and never replaced by a file; `-n` writes into an existing image; a symlink is
//! followed; an existing file keeps its owner and mode; a failed or interrupted convert leaves
//! the destination as it was. Every diskferry run has a deadline.

mod common;
mod gate_support;
mod vmdk_build;

use common::{pseudo_random, sha256_file, skip};
use gate_support::*;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEV_SIZE: u64 = 64 * MIB;

/// Data regions of the sources; everything else is a hole that must read back as zeros.
const REGIONS: [(u64, u64); 3] = [(0, MIB), (10 * MIB + 4096, 3 * MIB), (40 * MIB, 5 * MIB)];

/// A file of `size` bytes of `byte`.
fn filled(path: &Path, size: u64, byte: u8) {
    let mut f = File::create(path).unwrap();
    let chunk = vec![byte; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
}

/// A raw source of `size` bytes with data in REGIONS (those that fit) and holes elsewhere.
fn source(dir: &Path, name: &str, size: u64) -> (PathBuf, Vec<u8>) {
    let regions: Vec<(u64, u64)> = REGIONS
        .iter()
        .copied()
        .filter(|(o, l)| o + l <= size)
        .collect();
    let p = dir.join(name);
    common::make_raw(&p, size, &regions);
    (p, raw_bytes(size, &regions))
}

/// Fails unless `o` is an error: exit 1 and one stderr line starting "diskferry: ".
fn assert_one_line_error(o: &Outcome) {
    assert!(o.code.is_some(), "hung: {}", o.describe());
    assert_eq!(o.code, Some(1), "expected exit 1: {}", o.describe());
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line: {}", o.describe());
    assert!(lines[0].starts_with("diskferry: "), "{}", o.describe());
}

fn assert_same_bytes(path: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap();
    if let Some(p) = content_problem(&got, want) {
        panic!("{what}: {p}");
    }
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// Devices

/// A character device like /dev/null (1:5, /dev/zero: reads zeros, discards writes) made
/// in `dir`, or None when mknod is not permitted.
fn zero_char_device(dir: &Path) -> Option<PathBuf> {
    let p = dir.join("zero-dev");
    let ok = Command::new("mknod")
        .arg(&p)
        .args(["c", "1", "5"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(p)
}

fn is_char_device(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false)
}

/// Converting into a character device writes into it and leaves it a character device.
fn check_char_device(dir: &Path, dev: &Path) {
    let (src, _) = source(dir, "src.raw", DEV_SIZE);
    let o = run(&["convert", "-O", "raw", s(&src), s(dev)]);
    let still = is_char_device(dev);
    o.ok();
    assert!(
        still,
        "{} is no longer a character device after the convert",
        dev.display()
    );
}

#[test]
fn convert_onto_a_block_device_writes_in_place() {
    const TEST: &str = "convert_onto_a_block_device_writes_in_place";
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("loop-backing.img");
    filled(&backing, DEV_SIZE, 0xFF);
    let dev = match LoopDevice::attach(&backing) {
        Ok(d) => d,
        Err(why) => {
            // Fall back to a character device that discards writes.
            match zero_char_device(dir.path()) {
                Some(c) => {
                    eprintln!("{TEST}: no loop device ({why}); using a character device");
                    check_char_device(dir.path(), &c);
                }
                None => skip(TEST, &format!("no loop device ({why}) and mknod fails")),
            }
            return;
        }
    };
    let (src, want) = source(dir.path(), "src.raw", DEV_SIZE);
    let o = run(&["convert", "-O", "raw", s(&src), dev.path()]);
    let still_block = dev.is_block_device();
    o.ok();
    assert!(
        still_block,
        "{} was replaced: it is no longer the block device",
        dev.path()
    );
    // Read it back through the device: the zero ranges must be zeros, not the 0xFF left
    // over in the device.
    assert_same_bytes(&dev.dev, &want, "the device after the convert");
    if common::have_qemu(TEST) {
        assert!(
            common::qemu_compare("raw", &src, "raw", &dev.dev),
            "qemu-img compare: the device differs from the source"
        );
    }
}

#[test]
fn convert_onto_a_character_device_writes_in_place() {
    const TEST: &str = "convert_onto_a_character_device_writes_in_place";
    let dir = tempfile::tempdir().unwrap();
    match zero_char_device(dir.path()) {
        Some(c) => check_char_device(dir.path(), &c),
        None => skip(TEST, "mknod is not permitted"),
    }
}

#[test]
fn a_source_larger_than_the_block_device_fails_before_writing() {
    const TEST: &str = "a_source_larger_than_the_block_device_fails_before_writing";
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("loop-backing.img");
    filled(&backing, DEV_SIZE, 0xFF);
    let dev = match LoopDevice::attach(&backing) {
        Ok(d) => d,
        Err(why) => return skip(TEST, &format!("no loop device: {why}")),
    };
    let before = sha256_file(&dev.dev);
    // One MiB larger than the device, with data from its first byte: any write shows.
    let src = dir.path().join("big.raw");
    common::make_raw(&src, DEV_SIZE + MIB, &[(0, 4 * MIB), (DEV_SIZE, MIB)]);
    let o = run(&["convert", "-O", "raw", s(&src), dev.path()]);
    let still_block = dev.is_block_device();
    assert!(
        still_block,
        "{} was replaced: it is no longer the block device ({})",
        dev.path(),
        o.describe()
    );
    assert_one_line_error(&o);
    assert_eq!(
        sha256_file(&dev.dev),
        before,
        "the device was written before the size was checked"
    );
}

// ---------------------------------------------------------------------------------------
// -n: into an existing image

const N_SIZE: u64 = 48 * MIB;

#[test]
fn convert_n_writes_into_an_existing_file_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (src, want) = source(dir.path(), "src.raw", N_SIZE);
    let dst = dir.path().join("dst.raw");
    // Garbage everywhere, so the source's holes must be zeroed, not skipped.
    filled(&dst, N_SIZE, 0xAB);
    let inode = ino(&dst);
    run(&["convert", "-n", "-O", "raw", s(&src), s(&dst)]).ok();
    assert_eq!(ino(&dst), inode, "-n replaced the destination file");
    assert_same_bytes(&dst, &want, "the destination after convert -n");
}

#[test]
fn convert_n_refuses_a_missing_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = source(dir.path(), "src.raw", N_SIZE);
    let dst = dir.path().join("missing.raw");
    let o = run(&["convert", "-n", "-O", "raw", s(&src), s(&dst)]);
    assert_one_line_error(&o);
    assert!(!dst.exists(), "-n created the destination");
}

#[test]
fn convert_n_refuses_a_smaller_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = source(dir.path(), "src.raw", N_SIZE);
    let dst = dir.path().join("small.raw");
    let old = pseudo_random((8 * MIB) as usize, 99);
    std::fs::write(&dst, &old).unwrap();
    let inode = ino(&dst);
    let o = run(&["convert", "-n", "-O", "raw", s(&src), s(&dst)]);
    assert_one_line_error(&o);
    assert_eq!(ino(&dst), inode, "the destination was replaced");
    assert_same_bytes(&dst, &old, "the smaller destination after a refused -n");
}

#[test]
fn convert_n_into_an_existing_fixed_vhd() {
    const TEST: &str = "convert_n_into_an_existing_fixed_vhd";
    let dir = tempfile::tempdir().unwrap();
    let (src, want) = source(dir.path(), "src.raw", N_SIZE);
    let dst = dir.path().join("dst.vhd");
    run(&[
        "create",
        "-f",
        "vhd",
        "-o",
        "subformat=fixed",
        s(&dst),
        &N_SIZE.to_string(),
    ])
    .ok();
    // Garbage in the data area (the footer stays), so holes must be written as zeros.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&dst).unwrap();
        let chunk = vec![0xCDu8; MIB as usize];
        for i in 0..N_SIZE / MIB {
            f.write_all_at(&chunk, i * MIB).unwrap();
        }
    }
    let inode = ino(&dst);
    run(&["convert", "-n", "-O", "vhd", s(&src), s(&dst)]).ok();
    assert_eq!(ino(&dst), inode, "-n replaced the destination file");
    // Read it back with diskferry itself, then with qemu-img.
    let back = dir.path().join("back.raw");
    run(&["convert", "-f", "vhd", "-O", "raw", s(&dst), s(&back)]).ok();
    assert_same_bytes(&back, &want, "the fixed VHD after convert -n");
    if common::have_qemu(TEST) {
        assert!(
            common::qemu_compare("raw", &src, "vpc", &dst),
            "qemu-img compare: the fixed VHD differs from the source"
        );
    }
}

/// `-n` into images that allocate as they are written (qemu-img writes them through its block
/// layer; diskferry through each format's in-place editor): the content is the source's by
/// qemu-img compare and by the independent readers, `qemu-img check` finds the image clean,
/// the file is not replaced, and runs of zeros the destination already reads as zeros are not
/// written (the image stays no larger than qemu-img's). Over a backing file, the source's
/// holes must hide the backing file's data.
#[test]
fn convert_n_into_existing_images_that_allocate_as_they_go() {
    const TEST: &str = "convert_n_into_existing_images_that_allocate_as_they_go";
    if !common::have_qemu(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, want) = source(dir.path(), "src.raw", N_SIZE);
    let size = N_SIZE.to_string();
    // (qemu driver, create options, oracle-read format, checked by qemu-img check)
    for (fmt, opts, oracle) in [
        ("qcow2", "", Some("qcow2")),
        ("qcow2", "extended_l2=on", None),
        ("vpc", "force_size=on", Some("vhd")),
        ("vhdx", "", Some("vhdx")),
        ("vmdk", "", Some("vmdk")),
        ("vmdk", "subformat=twoGbMaxExtentSparse", None),
        ("vdi", "", Some("vdi")),
        ("qcow", "", None),
    ] {
        let what = format!("{fmt} {opts}");
        let ours = dir.path().join(format!("ours-{fmt}"));
        let theirs = dir.path().join(format!("theirs-{fmt}"));
        for p in [&ours, &theirs] {
            let mut args = vec!["create", "-q", "-f", fmt];
            if !opts.is_empty() {
                args.extend(["-o", opts]);
            }
            args.extend([s(p), &size]);
            common::qemu_img_ok(&args);
        }
        let inode = ino(&ours);
        run(&["convert", "-n", "-O", fmt, s(&src), s(&ours)]).ok();
        common::qemu_img_ok(&["convert", "-n", "-O", fmt, s(&src), s(&theirs)]);
        if !opts.contains("twoGb") {
            // (A split VMDK's descriptor is a small file of its own, which its editor
            // replaces atomically when the content id changes.)
            assert_eq!(
                ino(&ours),
                inode,
                "{what}: -n replaced the destination file"
            );
        }
        assert!(
            common::qemu_compare("raw", &src, fmt, &ours),
            "{what}: qemu-img compare: the destination differs from the source"
        );
        if !matches!(fmt, "vpc" | "qcow") {
            let (code, out, err) = common::qemu_img(&["check", "-f", fmt, s(&ours)]);
            assert_eq!(code, 0, "{what}: qemu-img check: {out}{err}");
        }
        let used = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
        assert!(
            used(&ours) <= used(&theirs) + 2 * MIB,
            "{what}: diskferry's image uses {} bytes, qemu-img's {}",
            used(&ours),
            used(&theirs)
        );
        if let Some(format) = oracle {
            let Some(readings) = common::oracle_read(TEST, format, &ours) else {
                return;
            };
            let expected = (want.len() as u64, common::sha256_file(&src));
            // (libyal has no VDI reader: it answers n/a.)
            for r in readings.iter().filter(|r| r.result != Err("n/a".into())) {
                assert_eq!(
                    r.result.as_ref().ok(),
                    Some(&expected),
                    "{what}: {} reads otherwise",
                    r.reader
                );
            }
        }
    }
    // Over a backing file full of data: the source's holes read as zeros afterwards.
    let base = dir.path().join("base.raw");
    filled(&base, N_SIZE, 0xEE);
    let top = dir.path().join("top.qcow2");
    common::qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        s(&top),
    ]);
    run(&["convert", "-n", "-O", "qcow2", s(&src), s(&top)]).ok();
    assert!(
        common::qemu_compare("raw", &src, "qcow2", &top),
        "over a backing file: the destination differs from the source"
    );
    let (code, out, err) = common::qemu_img(&["check", "-f", "qcow2", s(&top)]);
    assert_eq!(code, 0, "over a backing file: qemu-img check: {out}{err}");
    // With --target-is-zero (true of a new image) the holes are passed over.
    let trusting = dir.path().join("trusting.qcow2");
    common::qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&trusting), &size]);
    run(&[
        "convert",
        "-n",
        "--target-is-zero",
        "-O",
        "qcow2",
        s(&src),
        s(&trusting),
    ])
    .ok();
    assert!(
        common::qemu_compare("raw", &src, "qcow2", &trusting),
        "--target-is-zero: the destination differs from the source"
    );
    let (code, out, err) = common::qemu_img(&["check", "-f", "qcow2", s(&trusting)]);
    assert_eq!(code, 0, "--target-is-zero: qemu-img check: {out}{err}");
}

// ---------------------------------------------------------------------------------------
// Symlinks, owner and mode

#[test]
fn a_symlinked_destination_stays_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let (src, want) = source(dir.path(), "src.raw", N_SIZE);
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let target = other.join("target.raw");
    std::fs::write(&target, pseudo_random(MIB as usize, 5)).unwrap();
    let link = dir.path().join("dst.raw");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    run(&["convert", "-O", "raw", s(&src), s(&link)]).ok();
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "the symlink was replaced by a file"
    );
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    assert_same_bytes(&target, &want, "the symlink's target after the convert");
}

#[test]
fn a_symlink_to_a_missing_file_creates_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let (src, want) = source(dir.path(), "src.raw", N_SIZE);
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let target = other.join("new.raw");
    let link = dir.path().join("dst.raw");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    run(&["convert", "-O", "raw", s(&src), s(&link)]).ok();
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "the symlink was replaced by a file"
    );
    assert!(target.is_file(), "the symlink's target was not created");
    assert_same_bytes(&target, &want, "the new target");
}

#[test]
fn an_existing_destination_keeps_its_mode_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (src, want) = source(dir.path(), "src.raw", N_SIZE);
    let dst = dir.path().join("dst.raw");
    std::fs::write(&dst, pseudo_random(MIB as usize, 5)).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o640)).unwrap();
    let root = is_root();
    if root {
        std::os::unix::fs::chown(&dst, Some(1234), Some(5678)).unwrap();
    } else {
        eprintln!("not root: checking the mode only");
    }
    let before = std::fs::metadata(&dst).unwrap();
    run(&["convert", "-O", "raw", s(&src), s(&dst)]).ok();
    let after = std::fs::metadata(&dst).unwrap();
    assert_eq!(
        after.permissions().mode() & 0o7777,
        0o640,
        "the mode changed (was 0640)"
    );
    assert_eq!(
        (after.uid(), after.gid()),
        (before.uid(), before.gid()),
        "the owner changed"
    );
    assert_same_bytes(&dst, &want, "the destination after the convert");
}

// ---------------------------------------------------------------------------------------
// Failed and interrupted converts

/// A dynamic VHD of the source whose first allocated BAT entry points far past the end of
/// the file (footer and header intact).
fn vhd_with_bat_past_eof(dir: &Path, src: &Path) -> PathBuf {
    let p = dir.join("bat-past-eof.vhd");
    run(&["convert", "-O", "vhd", s(src), s(&p)]).ok();
    let mut b = std::fs::read(&p).unwrap();
    let header_at = be64(&b, 16) as usize;
    let table = be64(&b, header_at + 16) as usize;
    let first = (0..)
        .map(|i| table + 4 * i)
        .find(|&at| be32(&b, at) != u32::MAX)
        .unwrap();
    put32(&mut b, first, 0x7FFF_FFF0);
    std::fs::write(&p, b).unwrap();
    p
}

/// A fixed VHD of the source that lost the second half of its data (footer kept).
fn truncated_fixed_vhd(dir: &Path, src: &Path) -> PathBuf {
    let p = dir.join("truncated-fixed.vhd");
    run(&[
        "convert",
        "-O",
        "vhd",
        "-o",
        "subformat=fixed",
        s(src),
        s(&p),
    ])
    .ok();
    let b = std::fs::read(&p).unwrap();
    let footer = &b[b.len() - 512..];
    let mut cut = b[..(b.len() - 512) / 2].to_vec();
    cut.extend_from_slice(footer);
    std::fs::write(&p, cut).unwrap();
    p
}

/// A stream-optimized VMDK whose early grains are fine and whose last grain is not zlib
/// data: the convert fails midway, after writing has begun.
fn stream_vmdk_bad_late_grain(dir: &Path) -> PathBuf {
    let capacity = N_SIZE / 512;
    let mut grains: Vec<vmdk_build::RawGrain> = (0..64u64)
        .map(|i| vmdk_build::RawGrain {
            lba: i * 128,
            payload: vmdk_build::zlib(&pseudo_random(65536, 1000 + i)),
        })
        .collect();
    grains.push(vmdk_build::RawGrain {
        lba: capacity - 128,
        payload: pseudo_random(4000, 7),
    });
    let p = dir.join("bad-grain.vmdk");
    std::fs::write(&p, vmdk_build::stream_vmdk(capacity, &grains)).unwrap();
    p
}

#[test]
fn a_failed_convert_leaves_the_destination_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let outdir = dir.path().join("out");
    std::fs::create_dir(&work).unwrap();
    std::fs::create_dir(&outdir).unwrap();
    let (src, _) = source(&work, "src.raw", N_SIZE);
    let dst = outdir.join("dst.raw");
    let old = pseudo_random((4 * MIB) as usize, 99);
    let sources = [
        ("vhd", vhd_with_bat_past_eof(&work, &src)),
        ("vhd", truncated_fixed_vhd(&work, &src)),
        ("vmdk", stream_vmdk_bad_late_grain(&work)),
    ];
    let mut problems = Vec::new();
    for (fmt, bad) in &sources {
        std::fs::write(&dst, &old).unwrap();
        let inode = ino(&dst);
        let o = run(&["convert", "-f", fmt, "-O", "raw", s(bad), s(&dst)]);
        let name = bad.file_name().unwrap().to_string_lossy();
        if o.code != Some(1) {
            problems.push(format!("{name}: expected exit 1: {}", o.describe()));
        }
        if ino(&dst) != inode {
            problems.push(format!("{name}: the destination was replaced"));
        }
        if let Some(p) = content_problem(&std::fs::read(&dst).unwrap(), &old) {
            problems.push(format!("{name}: the destination changed: {p}"));
        }
        if names(&outdir) != ["dst.raw"] {
            problems.push(format!("{name}: left behind {:?}", names(&outdir)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Bytes the process has written so far (/proc/PID/io wchar).
fn wchar(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn an_interrupted_convert_leaves_the_destination_as_it_was() {
    const TEST: &str = "an_interrupted_convert_leaves_the_destination_as_it_was";
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.raw");
    {
        let mut f = File::create(&src).unwrap();
        for i in 0..1024u64 {
            f.write_all(&pseudo_random(MIB as usize, 5000 + i)).unwrap();
        }
    }
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let dst = outdir.join("dst.raw");
    let old = pseudo_random((4 * MIB) as usize, 99);
    std::fs::write(&dst, &old).unwrap();
    let inode = ino(&dst);
    let args = ["convert", "-O", "raw", s(&src), s(&dst)];
    let child = Command::new(env!("CARGO_BIN_EXE_diskferry"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let mut reached = false;
    while start.elapsed() < Duration::from_secs(60) {
        match wchar(pid) {
            Some(n) if n >= 64 * MIB => {
                reached = true;
                break;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(1)),
            None => break, // the process is gone
        }
    }
    if reached {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
    }
    let o = wait_deadline(
        child,
        DEADLINE,
        args.iter().map(|a| a.to_string()).collect(),
    );
    if !reached {
        if o.code == Some(0) {
            return skip(TEST, "the convert finished before 64 MiB were seen written");
        }
        panic!(
            "the convert never wrote 64 MiB (within 60 s): {}",
            o.describe()
        );
    }
    assert!(
        o.code.is_some(),
        "did not stop on SIGTERM: {}",
        o.describe()
    );
    if o.code == Some(0) {
        return skip(TEST, "the convert finished before the signal arrived");
    }
    assert_eq!(ino(&dst), inode, "the destination was replaced");
    assert_same_bytes(&dst, &old, "the destination after an interrupted convert");
    assert_eq!(
        names(&outdir),
        ["dst.raw"],
        "the interrupted convert left files behind"
    );
}
