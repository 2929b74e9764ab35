//! Malformed VMDKs made at test time: broken descriptors, tables and grains past the end of
//! the file, grains that inflate beyond a grain, missing extents, damaged stream files. Each
//! gives a clear one-line error (or, for check, the right exit code), never a panic.

mod common;
mod vmdk_build;

use common::*;
use std::path::Path;
use vmdk_build::{RawGrain, stream_vmdk, zlib};

fn convert_err(image: &Path) -> String {
    let out = image.with_extension("out.raw");
    let (code, _, err) = run(&[
        "convert",
        "-O",
        "raw",
        image.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{} converted", image.display());
    assert!(!out.exists(), "a failed convert left its output");
    let line = err.trim_end();
    assert!(!line.contains("panicked"), "{line}");
    assert_eq!(line.lines().count(), 1, "not one line: {line}");
    assert!(line.starts_with("diskferry: "), "{line}");
    line.to_string()
}

fn check_code(image: &Path) -> (i32, String) {
    let (code, out, err) = run(&["check", image.to_str().unwrap()]);
    assert!(!err.contains("panicked"), "{err}");
    (code, format!("{out}{err}"))
}

#[test]
fn broken_descriptors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.bin"), vec![0u8; 4096]).unwrap();
    let cases = [
        ("version=1\nRW many FLAT \"x.bin\" 0\n", "line 2"),
        (
            "version=1\nCID=fffffffff1\nRW 8 FLAT \"x.bin\" 0\n",
            "line 2",
        ),
        (
            "version=1\n\nRW 8 TAPE \"x.bin\"\n",
            "line 3: unknown extent type 'TAPE'",
        ),
        ("version=1\nRW 8 FLAT \"x.bin 0\n", "no closing quote"),
        (
            "version=1\ncreateType=\"monolithicFlat\"\n",
            "lists no extents",
        ),
        ("version=1\nthis is not a setting\n", "line 2: expected"),
        ("version=7\nRW 8 FLAT \"x.bin\" 0\n", "version 7"),
        (
            "version=1\nRW 8 FLAT \"missing.bin\" 0\n",
            "extent file 'missing.bin' (descriptor line 2)",
        ),
        (
            "version=1\nRW 8 SPARSE \"x.bin\"\n",
            "extent 'x.bin': not a sparse extent",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let image = dir.path().join(format!("d{i}.vmdk"));
        std::fs::write(&image, text).unwrap();
        let err = convert_err(&image);
        assert!(err.contains(want), "{text:?}: {err}");
        assert!(
            err.contains(&format!("d{i}.vmdk")) || err.contains("x.bin"),
            "{err}"
        );
    }
}

/// A monolithicSparse made by qemu-img, with data, to damage; None (after a skip line for
/// `test`) without qemu-img.
#[must_use = "None means qemu-img is missing: return"]
fn qemu_sparse(test: &str, dir: &Path) -> Option<std::path::PathBuf> {
    if !have_qemu(test) {
        return None;
    }
    let raw = dir.join("s.raw");
    make_raw(&raw, 4 << 20, &[(0, 256 << 10)]);
    let image = dir.join("s.vmdk");
    qemu_img_ok(&[
        "convert",
        "-O",
        "vmdk",
        raw.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    Some(image)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
}

#[test]
fn tables_and_grains_past_the_end_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = qemu_sparse("tables_and_grains_past_the_end_are_errors", dir.path()) else {
        return;
    };
    let good = std::fs::read(&image).unwrap();
    let gd = u64_at(&good, 56) as usize * 512;
    let rgd = u64_at(&good, 48) as usize * 512;
    let gt = u32::from_le_bytes(good[gd..gd + 4].try_into().unwrap()) as usize * 512;

    // The grain directory points both copies of its table past the end of the file.
    let mut b = good.clone();
    b[gd..gd + 4].copy_from_slice(&0x00ff_0000u32.to_le_bytes());
    b[rgd..rgd + 4].copy_from_slice(&0x00ff_0000u32.to_le_bytes());
    let bad = dir.path().join("gt-past-end.vmdk");
    std::fs::write(&bad, &b).unwrap();
    let err = convert_err(&bad);
    assert!(err.contains("grain table past the end"), "{err}");
    assert_eq!(check_code(&bad).0, 2);

    // A grain table entry points past the end.
    let mut b = good.clone();
    b[gt + 4..gt + 8].copy_from_slice(&0x0100_0000u32.to_le_bytes());
    let bad = dir.path().join("grain-past-end.vmdk");
    std::fs::write(&bad, &b).unwrap();
    let err = convert_err(&bad);
    assert!(
        err.contains("grain 1") && err.contains("past the end"),
        "{err}"
    );
    let (code, out) = check_code(&bad);
    assert_eq!(code, 2, "{out}");
    // qemu-img finds it too (and gives up: its exit status is 1).
    let (qcode, qout, qerr) = qemu_img(&["check", bad.to_str().unwrap()]);
    assert_ne!(qcode, 0);
    assert!(
        format!("{qout}{qerr}").contains("points after"),
        "{qout}{qerr}"
    );

    // The redundant table points an entry at another grain than the primary one: check sees
    // it (qemu-img does not look).
    let mut b = good.clone();
    let rgt = u32::from_le_bytes(good[rgd..rgd + 4].try_into().unwrap()) as usize * 512;
    let other = u32::from_le_bytes(good[rgt + 4..rgt + 8].try_into().unwrap());
    b[rgt + 8..rgt + 12].copy_from_slice(&other.to_le_bytes());
    let bad = dir.path().join("redundant-differs.vmdk");
    std::fs::write(&bad, &b).unwrap();
    let (code, out) = check_code(&bad);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("differs from its redundant copy"), "{out}");

    // An entry on one side only is what a write interrupted between the two tables leaves
    // (the editor links and unlinks grains in the redundant table first): the primary table
    // is read, so it costs space, not data (exit 3, as the kill tests' survivors may be).
    for (name, table) in [("only-primary.vmdk", rgt), ("only-redundant.vmdk", gt)] {
        let mut b = good.clone();
        b[table + 8..table + 12].copy_from_slice(&0u32.to_le_bytes());
        let bad = dir.path().join(name);
        std::fs::write(&bad, &b).unwrap();
        let (code, out) = check_code(&bad);
        assert_eq!(code, 3, "{name}: {out}");
        assert!(out.contains("interrupted"), "{name}: {out}");
    }

    // Truncated in the middle of the grains.
    let bad = dir.path().join("truncated.vmdk");
    std::fs::write(&bad, &good[..good.len() - 100_000]).unwrap();
    let err = convert_err(&bad);
    assert!(err.contains("past the end"), "{err}");

    // A header whose grain directory would need more bytes than the file has (afl9's trap).
    let mut b = good.clone();
    b[12..20].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let bad = dir.path().join("huge-capacity.vmdk");
    std::fs::write(&bad, &b).unwrap();
    let err = convert_err(&bad);
    assert!(
        err.contains("grain directory") && err.contains("past the end"),
        "{err}"
    );

    // A grain's worth of space at the end that no table uses: a leak (exit 3), data intact.
    let mut b = good.clone();
    b.extend(pseudo_random(65536, 3));
    let leak = dir.path().join("leak.vmdk");
    std::fs::write(&leak, &b).unwrap();
    let (code, out) = check_code(&leak);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("1 grains (65536 bytes)"), "{out}");
    let (_, sha) = content_sha256(&leak, None, dir.path());
    assert_eq!(sha, content_sha256(&image, None, dir.path()).1);

    // The original is clean for both checkers.
    assert_eq!(check_code(&image).0, 0);
}

#[test]
fn damaged_stream_optimized_files() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 512; // 256 KiB: four grains
    let grain = |lba: u64, fill: u8| RawGrain {
        lba,
        payload: zlib(&vec![fill; 65536]),
    };

    // Well-formed, to show the builder is right.
    let good = dir.path().join("good.vmdk");
    std::fs::write(&good, stream_vmdk(cap, &[grain(0, 1), grain(256, 3)])).unwrap();
    let (_, sha) = content_sha256(&good, None, dir.path());
    let mut want = vec![1u8; 65536];
    want.extend(vec![0u8; 65536]);
    want.extend(vec![3u8; 65536]);
    want.extend(vec![0u8; 65536]);
    let expect = dir.path().join("want.raw");
    std::fs::write(&expect, &want).unwrap();
    assert_eq!(sha, sha256_file(&expect));
    assert_eq!(check_code(&good).0, 0);
    if have_qemu("damaged_stream_optimized_files") {
        assert!(qemu_compare("raw", &expect, "vmdk", &good));
    }

    // A grain that inflates to two grains.
    let big = dir.path().join("inflates-too-far.vmdk");
    std::fs::write(
        &big,
        stream_vmdk(
            cap,
            &[RawGrain {
                lba: 0,
                payload: zlib(&vec![5u8; 131072]),
            }],
        ),
    )
    .unwrap();
    let err = convert_err(&big);
    assert!(err.contains("more than one grain"), "{err}");
    assert_eq!(check_code(&big).0, 2);

    // A grain that is not zlib.
    let junk = dir.path().join("not-zlib.vmdk");
    std::fs::write(
        &junk,
        stream_vmdk(
            cap,
            &[RawGrain {
                lba: 0,
                payload: vec![0x55; 300],
            }],
        ),
    )
    .unwrap();
    let err = convert_err(&junk);
    assert!(err.contains("not a valid zlib stream"), "{err}");

    // A marker whose LBA disagrees with the grain table: read as the table says, check flags it.
    let mut b = stream_vmdk(cap, &[grain(0, 1)]);
    let first_grain = 3 * 512;
    b[first_grain..first_grain + 8].copy_from_slice(&128u64.to_le_bytes());
    let lba = dir.path().join("wrong-lba.vmdk");
    std::fs::write(&lba, &b).unwrap();
    let (code, out) = check_code(&lba);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("marker names sector 128"), "{out}");

    // A marker announcing an absurd compressed size.
    let mut b = stream_vmdk(cap, &[grain(0, 1)]);
    b[first_grain + 8..first_grain + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let size = dir.path().join("huge-size.vmdk");
    std::fs::write(&size, &b).unwrap();
    let err = convert_err(&size);
    assert!(err.contains("compressed grain size"), "{err}");

    // Footer gone (truncated stream): the grain map is rebuilt from the markers, with a warning.
    let full = stream_vmdk(cap, &[grain(0, 1), grain(256, 3)]);
    let cut = dir.path().join("no-footer.vmdk");
    std::fs::write(&cut, &full[..full.len() - 1536]).unwrap();
    let (_, sha) = content_sha256(&cut, None, dir.path());
    assert_eq!(sha, sha256_file(&expect));
    let info = run_ok(&["info", cut.to_str().unwrap()]);
    assert!(info.contains("rebuilt by scanning the markers"), "{info}");
    let (code, out) = check_code(&cut);
    assert_eq!(code, 2, "{out}");

    // A grain table marker announcing 2^64 sectors (found by the fuzzer: an overflow in check).
    let mut b = stream_vmdk(cap, &[grain(0, 1)]);
    let gt_marker = (0..b.len() / 512)
        .map(|s| s * 512)
        .find(|&o| {
            b[o + 8..o + 16] == [0, 0, 0, 0, 1, 0, 0, 0] && b[o..o + 8] == 4u64.to_le_bytes()
        })
        .unwrap();
    b[gt_marker..gt_marker + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let huge = dir.path().join("huge-marker.vmdk");
    std::fs::write(&huge, &b).unwrap();
    let (code, out) = check_code(&huge);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("runs past the end"), "{out}");

    // A grain marker beyond the disk, in a file whose footer is gone.
    let far = stream_vmdk(cap, &[grain(0, 1)]);
    let mut b = far[..far.len() - 1536].to_vec();
    b[first_grain..first_grain + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
    let bad = dir.path().join("lba-past-end.vmdk");
    std::fs::write(&bad, &b).unwrap();
    let err = convert_err(&bad);
    assert!(err.contains("past the disk's end"), "{err}");
}

#[test]
fn missing_extents_are_named_by_convert_info_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("r.raw");
    make_raw(&raw, 3 << 20, &[(0, 4096)]);
    let image = dir.path().join("split.vmdk");
    run_ok(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        raw.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    std::fs::remove_file(dir.path().join("split-s001.vmdk")).unwrap();
    let err = convert_err(&image);
    assert!(
        err.contains("split-s001.vmdk") && err.contains("No such file"),
        "{err}"
    );
    // A check that cannot open the image's files fails (exit 1), as qemu-img's does, rather
    // than reporting a corruption of the image (exit 2).
    let (code, out) = check_code(&image);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("split-s001.vmdk") && out.contains("No such file"),
        "{out}"
    );
    if have_qemu("missing_extents_are_named_by_convert_info_and_check") {
        assert_eq!(qemu_img(&["check", image.to_str().unwrap()]).0, 1);
    }
}

/// Random damage to real files never panics (a cheap, deterministic cousin of the fuzzers).
#[test]
fn random_damage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("r.raw");
    make_raw(&raw, 2 << 20, &[(0, 300_000), (1 << 20, 70_000)]);
    for sf in ["monolithicSparse", "streamOptimized"] {
        let image = dir.path().join(format!("{sf}.vmdk"));
        run_ok(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sf}"),
            raw.to_str().unwrap(),
            image.to_str().unwrap(),
        ]);
        let good = std::fs::read(&image).unwrap();
        let noise = pseudo_random(4096, 5);
        for i in 0..40 {
            let mut b = good.clone();
            // Damage the metadata area most of the time, the grains sometimes.
            let span = if i % 4 == 0 { b.len() } else { 12 * 1024 };
            for k in 0..8 {
                let at =
                    (noise[i * 8 + k] as usize * 131 + noise[i * 8 + k + 1] as usize * 7919) % span;
                b[at] ^= noise[(i * 8 + k + 2) % noise.len()] | 1;
            }
            let bad = dir.path().join(format!("{sf}-{i}.vmdk"));
            std::fs::write(&bad, &b).unwrap();
            let out = bad.with_extension("raw");
            let (code, _, err) = run(&[
                "convert",
                "-O",
                "raw",
                bad.to_str().unwrap(),
                out.to_str().unwrap(),
            ]);
            assert!(!err.contains("panicked"), "{sf} #{i}: {err}");
            if code != 0 {
                assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            }
            let (_, out, err) = run(&["check", bad.to_str().unwrap()]);
            assert!(
                !err.contains("panicked") && !out.contains("panicked"),
                "{sf} #{i}: {err}"
            );
        }
    }
}
