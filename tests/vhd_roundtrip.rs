//! VHDs diskferry writes (fixed and dynamic, several sizes and block sizes, to files and to
//! pipes) are identical to their source for qemu-img, libyal and dissect; VHDs qemu makes read
//! back as qemu reads them.

mod common;
mod vhd_support;

use common::*;
use std::path::Path;
use std::process::Stdio;
use vhd_support::*;

/// Regions of data for a disk of `size`: the start, a run crossing a 2 MiB block boundary,
/// single sectors, and the very end.
fn regions(size: u64) -> Vec<(u64, u64)> {
    let mut r = vec![(0, 4096.min(size))];
    for &(off, len) in &[
        (2 * MIB - 1536, 8192),
        (3 * MIB + 512, 512),
        (5 * MIB + 4096, 64 << 10),
        (40 * MIB, 3 * MIB),
    ] {
        if off + len <= size {
            r.push((off, len));
        }
    }
    if size > 8192 {
        r.push((size - 1024, 1024));
    }
    r
}

/// Every reader agrees with the source. libyal is asked block by block when blocks are
/// smaller than 2 MiB (see `libyal_chain_sha_in`). False when the readers could not run (a
/// skip line was printed).
#[must_use = "false means the independent readers did not run"]
fn assert_readers(test: &str, image: &Path, size: u64, sha: &str, block_size: Option<u64>) -> bool {
    match block_size {
        Some(bs) if bs < 2 * MIB => {
            if !assert_oracles_but(test, image, size, sha, &["libyal"]) {
                return false;
            }
            let Some(got) = libyal_chain_sha_in(test, &[image], bs) else {
                return false;
            };
            assert_eq!(got, (size, sha.to_string()), "libyal block by block");
            true
        }
        _ => assert_oracles(test, image, size, sha),
    }
}

/// Converts a source to VHD with `options`, to a file and to a pipe, and checks both with every
/// reader. False when the independent readers could not run.
#[must_use = "false means the independent readers did not run"]
fn round_trip(test: &str, dir: &Path, size: u64, options: &str) -> bool {
    let block_size = options
        .split(',')
        .find_map(|o| o.strip_prefix("block_size="))
        .map(|v| diskferry::size::parse_size(v).unwrap());
    let raw = raw_with(dir, "src.raw", size, &regions(size));
    let sha = padded_sha256(&raw, size);
    let vhd = dir.join("out.vhd");
    let _ = std::fs::remove_file(&vhd);
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        "-o",
        options,
        raw.to_str().unwrap(),
        vhd.to_str().unwrap(),
    ]);
    assert!(
        qemu_compare("raw", &raw, "vpc", &vhd),
        "qemu-img compare: {options} size {size} differs"
    );
    assert_eq!(
        diskferry_sha(&vhd, None, dir),
        (size, sha.clone()),
        "diskferry reads back {options} size {size} differently"
    );
    let file_read = assert_readers(test, &vhd, size, &sha, block_size);
    let (code, out, err) = run(&["check", vhd.to_str().unwrap()]);
    assert_eq!(code, 0, "check of {options} size {size}: {out}{err}");

    // The same through a pipe: front to back, identical content.
    let piped = dir.join("piped.vhd");
    let out = diskferry()
        .args([
            "convert",
            "-O",
            "vhd",
            "-o",
            options,
            raw.to_str().unwrap(),
            "-",
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&piped, &out.stdout).unwrap();
    assert!(
        qemu_compare("raw", &raw, "vpc", &piped),
        "piped {options} size {size} differs"
    );
    let piped_read = assert_readers(test, &piped, size, &sha, block_size);
    let (code, out, err) = run(&["check", piped.to_str().unwrap()]);
    assert_eq!(code, 0, "check of piped {options} size {size}: {out}{err}");
    file_read && piped_read
}

#[test]
fn fixed_and_dynamic_round_trips_are_identical_for_every_reader() {
    let test = "fixed_and_dynamic_round_trips_are_identical_for_every_reader";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Whole blocks, a block and a sector, sizes that are no multiple of the block size.
    let sizes = [
        MIB,
        4 * MIB,
        3 * MIB + 512,
        5 * MIB + 3584,
        45 * MIB + 7 * 512,
    ];
    let mut unread = 0;
    for &size in &sizes {
        for options in ["subformat=fixed", "subformat=dynamic"] {
            if !round_trip(test, dir.path(), size, options) {
                unread += 1;
            }
        }
    }
    for bs in ["512K", "1M", "16M"] {
        if !round_trip(
            test,
            dir.path(),
            45 * MIB + 7 * 512,
            &format!("subformat=dynamic,block_size={bs}"),
        ) {
            unread += 1;
        }
    }
    if unread > 0 {
        skip(
            test,
            &format!(
                "the independent readers checked none of {unread} round trips (only qemu-img and diskferry did)"
            ),
        );
    }
}

#[test]
fn a_size_that_is_not_whole_sectors_is_rounded_up_with_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_with(dir.path(), "odd.raw", 1000, &[(0, 1000)]);
    let vhd = dir.path().join("odd.vhd");
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        raw.to_str().unwrap(),
        vhd.to_str().unwrap(),
    ]);
    let (size, sha) = diskferry_sha(&vhd, None, dir.path());
    assert_eq!((size, sha), (1024, padded_sha256(&raw, 1024)));
}

#[test]
fn qemu_made_vhds_read_as_qemu_reads_them() {
    let test = "qemu_made_vhds_read_as_qemu_reads_them";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    // qemu-img create + qemu-io writes, dynamic and fixed.
    for sub in ["dynamic", "fixed"] {
        let img = p(&format!("qemu-{sub}.vhd"));
        qemu_img_ok(&[
            "create",
            "-f",
            "vpc",
            "-o",
            &format!("subformat={sub}"),
            &img,
            "20M",
        ]);
        let out = std::process::Command::new("qemu-io")
            .args([
                "-f",
                "vpc",
                "-c",
                "write -P 0x5a 0 64k",
                "-c",
                "write -P 0xa5 3M 1M",
            ])
            .args(["-c", "write -P 0x11 19M 512", &img])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let q = p(&format!("qemu-{sub}.raw"));
        qemu_img_ok(&["convert", "-f", "vpc", "-O", "raw", &img, &q]);
        let want = sparse_sha256(Path::new(&q));
        assert_eq!(
            diskferry_sha(Path::new(&img), Some("vhd"), d),
            want,
            "{sub}"
        );
        // Fixed VHDs are detected from their footer (qemu-img would call them raw).
        assert_eq!(
            diskferry_sha(Path::new(&img), None, d),
            want,
            "{sub} detected"
        );
        let info = run_ok(&["info", "--output", "json", &img]);
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(v["format"], "vhd");
        assert_eq!(v["format-specific"]["data"]["subformat"], sub);
        assert_eq!(v["format-specific"]["data"]["creator-app"], "qemu");
        // qemu sized the disk by CHS; the size is the CHS product, as qemu reports it.
        assert_eq!(v["format-specific"]["data"]["size-rule"], "chs");
        let qinfo = qemu_img_ok(&["info", "-f", "vpc", "--output", "json", &img]);
        let qv: serde_json::Value = serde_json::from_str(&qinfo).unwrap();
        assert_eq!(v["virtual-size"], qv["virtual-size"]);
    }
    // qemu-img convert to both subformats.
    let raw = raw_with(d, "src.raw", 7 * MIB, &regions(7 * MIB));
    for sub in ["dynamic", "fixed"] {
        let img = p(&format!("conv-{sub}.vhd"));
        qemu_img_ok(&[
            "convert",
            "-O",
            "vpc",
            "-o",
            &format!("subformat={sub},force_size=on"),
            raw.to_str().unwrap(),
            &img,
        ]);
        assert_eq!(
            diskferry_sha(Path::new(&img), None, d),
            sparse_sha256(&raw),
            "qemu-img convert -O vpc subformat={sub}"
        );
    }
}

#[test]
fn info_shows_subformat_creator_block_size_and_size_rule() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.vhd");
    run_ok(&[
        "create",
        "-f",
        "vhd",
        "-o",
        "block_size=1M",
        img.to_str().unwrap(),
        "10M",
    ]);
    let v: serde_json::Value = serde_json::from_str(&run_ok(&[
        "info",
        "--output",
        "json",
        img.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(v["virtual-size"], 10 * MIB);
    assert_eq!(v["cluster-size"], MIB);
    let data = &v["format-specific"]["data"];
    assert_eq!(data["subformat"], "dynamic");
    assert_eq!(data["creator-app"], "qem2");
    assert_eq!(data["size-rule"], "current_size");
    assert_eq!(data["block-size"], MIB);
    let human = run_ok(&["info", img.to_str().unwrap()]);
    for want in [
        "subformat: dynamic",
        "creator: 'qem2'",
        "size rule: current_size",
        "block size: 1048576",
    ] {
        assert!(human.contains(want), "{want} missing from:\n{human}");
    }
}

#[test]
fn block_size_and_size_limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.vhd");
    let img = img.to_str().unwrap();
    for bad in ["block_size=3M", "block_size=1K", "block_size=512M"] {
        let line = vhd_support::fails_cleanly(&["create", "-f", "vhd", "-o", bad, img, "10M"]);
        assert!(line.contains("block_size"), "{line}");
    }
    let line = vhd_support::fails_cleanly(&[
        "create",
        "-f",
        "vhd",
        "-o",
        "subformat=fixed,block_size=2M",
        img,
        "10M",
    ]);
    assert!(line.contains("fixed"), "{line}");
    let line = vhd_support::fails_cleanly(&["create", "-f", "vhd", img, "2041G"]);
    assert!(line.contains("2040 GiB"), "{line}");
    assert!(!Path::new(img).exists(), "a refused create left a file");
    // force_size is accepted (exact sizes are the default).
    run_ok(&["create", "-f", "vhd", "-o", "force_size=on", img, "10M"]);
}

#[test]
fn sparse_disks_stay_small_and_map_in_few_runs() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64u64 << 30;
    let raw = raw_with(
        dir.path(),
        "big.raw",
        size,
        &[(0, MIB), (40 << 30, 3 * MIB)],
    );
    let vhd = dir.path().join("big.vhd");
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        raw.to_str().unwrap(),
        vhd.to_str().unwrap(),
    ]);
    let len = std::fs::metadata(&vhd).unwrap().len();
    // Three blocks of data (one for the first MiB, two for the run at 40 GiB) plus tables.
    assert!(len < 8 * MIB + 512 * 1024, "sparse output is {len} bytes");
    let map = run_ok(&["map", "--output", "json", vhd.to_str().unwrap()]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&map).unwrap();
    assert!(
        entries.len() <= 6,
        "map has {} entries: {map}",
        entries.len()
    );
    if have_qemu("sparse_disks_stay_small_and_map_in_few_runs") {
        assert!(
            qemu_compare("raw", &raw, "vpc", &vhd),
            "content of the sparse disk"
        );
    }
}
