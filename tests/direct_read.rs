//! Sources not in the page cache are read around it (host_file/direct.rs): large reads of a
//! cold read-only file go through a second descriptor opened with `O_DIRECT`, reads of what
//! the cache holds stay buffered, and `-T` overrides the choice as qemu-img's source cache
//! mode does.
//!
//! Which path a run took is seen with `strace -e trace=open,openat,pread64`: the reopen of the
//! source as `/proc/self/fd/N` with `O_DIRECT`, and the bytes the preads on that descriptor
//! returned. A file is made cold without privileges by `fdatasync` and
//! `posix_fadvise(DONTNEED)`, which drops its clean pages. Every output is checked against
//! the source with `qemu-img compare` and byte for byte.
//!
//! The files live under the build's target folder, on the same file system as the
//! repository: a tmpfs /tmp reads nothing directly (it reports no direct-I/O alignment).

mod common;
mod gate_support;

use common::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn scratch(test: &str) -> Option<tempfile::TempDir> {
    if !have_qemu(test) || !have_strace(test) {
        return None;
    }
    Some(tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap())
}

/// A 24 MiB raw image whose length is not a multiple of 4 KiB (its last read cannot be
/// direct): data, a hole inside what the engine reads as one range, a long hole, data at the
/// end.
fn source(dir: &Path) -> PathBuf {
    let path = dir.join("src.raw");
    make_raw(
        &path,
        (24 << 20) + 512,
        &[
            (0, 6 << 20),
            ((6 << 20) + (32 << 10), 2 << 20),
            (20 << 20, (4 << 20) + 512),
        ],
    );
    path
}

/// Drops the clean pages of `path` from the page cache, so that the next read of it is cold.
fn make_cold(path: &Path) {
    let file = std::fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

/// Reads all of `path` through the page cache, so that the next read of it is warm.
fn make_warm(path: &Path) {
    let file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while let Ok(n) = file.read_at(&mut buf, off) {
        if n == 0 {
            break;
        }
        off += n as u64;
    }
}

/// What one traced run read directly.
#[derive(Debug, Default)]
struct Direct {
    /// The source was reopened with O_DIRECT.
    reopened: bool,
    /// Bytes the preads on that descriptor returned.
    bytes: u64,
}

/// Runs diskferry with `args` under strace; returns its exit code and what it read directly.
/// `-ff` writes one log per thread, so that no call is split by another thread's line.
fn traced(dir: &Path, args: &[&str]) -> (i32, Direct) {
    let logs = dir.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir(&logs).unwrap();
    let out = Command::new("strace")
        .args([
            "-ff",
            "-qq",
            "-o",
            s(&logs.join("t")),
            "-e",
            "trace=open,openat,pread64",
        ])
        .arg(env!("CARGO_BIN_EXE_diskferry"))
        .args(args)
        .output()
        .expect("strace runs");
    let (code, _, err) = decode(out);
    assert_eq!(code, 0, "{err}");
    let text: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let lines = || text.iter().flat_map(|t| t.lines());
    let result = |line: &str| {
        line.rsplit_once(" = ")
            .and_then(|(_, r)| r.split_whitespace().next()?.parse::<i64>().ok())
    };
    let mut direct = Direct::default();
    let fd = lines()
        .find(|l| l.contains("/proc/self/fd/") && l.contains("O_DIRECT"))
        .and_then(result);
    if let Some(fd) = fd {
        direct.reopened = true;
        let call = format!("pread64({fd}, ");
        direct.bytes = lines()
            .filter(|l| l.starts_with(&call))
            .filter_map(result)
            .filter(|&n| n > 0)
            .map(|n| n as u64)
            .sum();
    }
    (code, direct)
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn a_cold_source_is_read_directly() {
    let Some(dir) = scratch("a_cold_source_is_read_directly") else {
        return;
    };
    let src = source(dir.path());
    let out = dir.path().join("out.raw");
    make_cold(&src);
    let (_, direct) = traced(dir.path(), &["convert", "-O", "raw", s(&src), s(&out)]);
    assert!(
        direct.reopened,
        "the cold source was not reopened with O_DIRECT"
    );
    // Whole 2 MiB items of data (the first 6 MiB, the range holding the small hole) are read
    // directly; the last item, whose length is not a multiple of the block size, is not.
    assert!(
        direct.bytes >= 8 << 20,
        "only {} bytes were read directly",
        direct.bytes
    );
    assert!(qemu_compare("raw", &src, "raw", &out));
    assert!(same_bytes(&src, &out));
}

#[test]
fn a_warm_source_is_read_from_the_page_cache() {
    let Some(dir) = scratch("a_warm_source_is_read_from_the_page_cache") else {
        return;
    };
    let src = source(dir.path());
    let out = dir.path().join("out.raw");
    make_warm(&src);
    let (_, direct) = traced(dir.path(), &["convert", "-O", "raw", s(&src), s(&out)]);
    assert_eq!(direct.bytes, 0, "{direct:?}");
    assert!(same_bytes(&src, &out));
}

#[test]
fn source_cache_modes_choose_the_path() {
    let Some(dir) = scratch("source_cache_modes_choose_the_path") else {
        return;
    };
    let src = source(dir.path());
    let out = dir.path().join("out.raw");
    // writeback (and writethrough, unsafe): always the page cache, even when cold.
    for mode in ["writeback", "writethrough", "unsafe"] {
        make_cold(&src);
        let (_, direct) = traced(
            dir.path(),
            &["convert", "-T", mode, "-O", "raw", s(&src), s(&out)],
        );
        assert!(!direct.reopened, "-T {mode}: {direct:?}");
        assert!(same_bytes(&src, &out), "-T {mode}");
    }
    // none (and directsync): directly, even when warm.
    for mode in ["none", "directsync"] {
        make_warm(&src);
        let (_, direct) = traced(
            dir.path(),
            &["convert", "-T", mode, "-O", "raw", s(&src), s(&out)],
        );
        assert!(direct.bytes >= 8 << 20, "-T {mode}: {direct:?}");
        assert!(same_bytes(&src, &out), "-T {mode}");
    }
    let (code, _, err) = run(&["convert", "-T", "bogus", "-O", "raw", s(&src), s(&out)]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown cache mode 'bogus' for -T"), "{err}");
}

#[test]
fn formats_read_directly_give_the_same_disk() {
    // A dynamic VHD's blocks start one sector after their bitmap, at offsets aligned to 512
    // bytes only: read directly where the file system allows that alignment, and in every
    // case the same disk.
    let Some(dir) = scratch("formats_read_directly_give_the_same_disk") else {
        return;
    };
    let src = source(dir.path());
    for (fmt, qfmt) in [("vhd", "vpc"), ("qcow2", "qcow2"), ("vdi", "vdi")] {
        let img = dir.path().join(format!("src.{fmt}"));
        qemu_img_ok(&["convert", "-O", qfmt, s(&src), s(&img)]);
        for mode in [None, Some("none")] {
            let out = dir.path().join("out.raw");
            make_cold(&img);
            let mut args = vec!["convert"];
            if let Some(mode) = mode {
                args.extend(["-T", mode]);
            }
            args.extend(["-O", "raw", s(&img), s(&out)]);
            let (_, direct) = traced(dir.path(), &args);
            assert!(direct.reopened, "{fmt} {mode:?}: not reopened");
            assert!(
                qemu_compare(qfmt, &img, "raw", &out),
                "{fmt} {mode:?}: differs"
            );
        }
    }
}

#[test]
fn a_package_disk_checked_while_read_shares_the_page_cache() {
    // A disk whose manifest digest a thread of its own checks while the disk is converted:
    // both read through the page cache, so the cold package is read from the device once,
    // not once directly and once more for the digest.
    let Some(dir) = scratch("a_package_disk_checked_while_read_shares_the_page_cache") else {
        return;
    };
    let src = source(dir.path());
    let ova = dir.path().join("vm.ova");
    run_ok(&[
        "migrate",
        "--to",
        "xenserver",
        "--name",
        "t",
        "--cpus",
        "1",
        "--memory",
        "1G",
        s(&src),
        s(&ova),
    ]);
    let out = dir.path().join("out.raw");
    make_cold(&ova);
    let (_, direct) = traced(dir.path(), &["convert", "-O", "raw", s(&ova), s(&out)]);
    assert!(!direct.reopened, "{direct:?}");
    assert!(qemu_compare("raw", &src, "raw", &out));
}

#[test]
fn a_cold_block_device_is_read_directly() {
    // A block device as the source (an LVM volume, a disk): a loop device over the image,
    // its page cache dropped, read directly as a file is.
    let test = "a_cold_block_device_is_read_directly";
    let Some(dir) = scratch(test) else {
        return;
    };
    let src = source(dir.path());
    let dev = match gate_support::LoopDevice::attach(&src) {
        Ok(dev) => dev,
        Err(why) => {
            skip(test, &format!("no loop device: {why}"));
            return;
        }
    };
    let out = dir.path().join("out.raw");
    make_cold(&dev.dev);
    let (_, direct) = traced(dir.path(), &["convert", "-O", "raw", dev.path(), s(&out)]);
    assert!(direct.reopened, "{direct:?}");
    assert!(direct.bytes >= 8 << 20, "{direct:?}");
    assert!(qemu_compare("raw", &src, "raw", &out));
}
