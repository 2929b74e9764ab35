//! VHDX reading: images made at test time by qemu-img with the options a user meets, read by
//! diskferry and compared with qemu-img's own reading (content, compare, map); every VHDX of
//! the corpus against MANIFEST.tsv (the two with a pending log as qemu-img reads them after
//! replaying on a copy, the originals left unchanged); 4096-byte sectors, a pending log and a
//! differencing pair made by hand from the specification, checked against libyal and dissect.

mod common;
mod vhdx_support;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use uuid::Uuid;
use vhdx_support::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qemu_io(image: &Path, commands: &[&str]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "vhdx"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.arg(image).output().expect("qemu-io runs");
    assert!(
        out.status.success(),
        "qemu-io {commands:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sha256 of qemu-img's and of diskferry's raw conversions of `image`; the test fails
/// unless they are equal. Also `compare` both ways against qemu-img's raw.
fn assert_reads_like_qemu(image: &Path, dir: &Path) {
    let q = dir.join("qemu.raw");
    let d = dir.join("diskferry.raw");
    let _ = std::fs::remove_file(&q);
    let _ = std::fs::remove_file(&d);
    qemu_img_ok(&["convert", "-f", "vhdx", "-O", "raw", s(image), s(&q)]);
    run_ok(&["convert", "-f", "vhdx", "-O", "raw", s(image), s(&d)]);
    assert_eq!(
        sha256_file(&q),
        sha256_file(&d),
        "{}: diskferry reads other bytes than qemu-img",
        image.display()
    );
    let (code, out, err) = run(&["compare", "-f", "vhdx", "-F", "raw", s(image), s(&q)]);
    assert_eq!(code, 0, "diskferry compare: {out}{err}");
    assert!(qemu_compare("vhdx", image, "raw", &d));
}

/// qemu-img's VHDX driver reports no block status (everything is data); ours must agree on
/// what is present and never call data what qemu-img calls zero. Our own map must also say
/// where data is: the runs it calls data read as non-zero somewhere, zero runs as zeros.
fn assert_map_agrees(image: &Path) {
    let parse = |text: String| -> Vec<(u64, u64, bool, bool)> {
        let v: Value = serde_json::from_str(&text).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["start"].as_u64().unwrap(),
                    m["length"].as_u64().unwrap(),
                    m["present"].as_bool().unwrap(),
                    m["data"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let ours = parse(run_ok(&["map", "--output", "json", s(image)]));
    let theirs = parse(qemu_img_ok(&[
        "map",
        "--output",
        "json",
        "-f",
        "vhdx",
        s(image),
    ]));
    let covers = |runs: &[(u64, u64, bool, bool)], at: u64| {
        *runs.iter().find(|r| r.0 <= at && at < r.0 + r.1).unwrap()
    };
    let mut pos = 0;
    let end = ours.iter().map(|r| r.0 + r.1).max().unwrap();
    assert_eq!(end, theirs.iter().map(|r| r.0 + r.1).max().unwrap());
    while pos < end {
        let (a, b) = (covers(&ours, pos), covers(&theirs, pos));
        assert_eq!(a.2, b.2, "present differs at {pos}");
        assert!(
            !a.3 || b.3,
            "we call data what qemu-img calls zero at {pos}"
        );
        pos = (a.0 + a.1).min(b.0 + b.1);
    }
}

/// Every subformat and block size qemu-img makes, sizes not a multiple of the block size,
/// data from a raw source and from qemu-io (patterns and zero writes, block_state_zero both
/// ways), several log sizes.
#[test]
fn qemu_img_made_images_read_as_qemu_img_reads_them() {
    let test = "qemu_img_made_images_read_as_qemu_img_reads_them";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 37 * MIB + 512 * 3;
    let raw = dir.path().join("source.raw");
    make_raw(
        &raw,
        size,
        &[
            (0, 300_000),
            (2 * MIB + 1234, 777_777),
            (9 * MIB, MIB + 4096),
            (size - 5000, 5000),
        ],
    );
    let cases: &[&str] = &[
        "subformat=dynamic,block_size=1M",
        "subformat=dynamic,block_size=8M,log_size=4M",
        "subformat=dynamic,block_size=32M",
        "subformat=dynamic,block_size=256M,log_size=1M",
        "subformat=fixed,block_size=1M",
        "subformat=fixed,block_size=32M,log_size=2M",
    ];
    for options in cases {
        let img = dir.path().join("t.vhdx");
        let _ = std::fs::remove_file(&img);
        qemu_img_ok(&["convert", "-O", "vhdx", "-o", options, s(&raw), s(&img)]);
        assert_reads_like_qemu(&img, dir.path());
        assert_map_agrees(&img);
        let info: Value =
            serde_json::from_str(&run_ok(&["info", "--output", "json", s(&img)])).unwrap();
        let data = &info["format-specific"]["data"];
        let sub = if options.contains("fixed") {
            "fixed"
        } else {
            "dynamic"
        };
        assert_eq!(data["subformat"], sub, "{options}");
        assert_eq!(data["log"], "clean");
        assert_eq!(info["virtual-size"], size);
    }
    // qemu-io writes into created images, with zero writes (ZERO blocks) both ways.
    for zero in ["on", "off"] {
        for block in ["1M", "8M"] {
            let img = dir.path().join("w.vhdx");
            let _ = std::fs::remove_file(&img);
            let options = format!("subformat=dynamic,block_size={block},block_state_zero={zero}");
            qemu_img_ok(&["create", "-f", "vhdx", "-o", &options, s(&img), "21M"]);
            qemu_io(
                &img,
                &[
                    "write -P 0x5a 0 3M",
                    "write -P 0x17 5M 512",
                    "write -z 1M 1M",
                    "write -P 0x33 16M 5M",
                    "write -z 8M 8M",
                ],
            );
            assert_reads_like_qemu(&img, dir.path());
            assert_map_agrees(&img);
        }
    }
}

#[test]
fn corpus_vhdx_images_convert_to_the_manifest_sha256() {
    let test = "corpus_vhdx_images_convert_to_the_manifest_sha256";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<ManifestRow> = manifest(&shared)
        .into_iter()
        .filter(|r| r.format == "VHDX")
        .collect();
    assert!(rows.len() >= 12, "only {} VHDX rows", rows.len());
    let mut checked = 0;
    for row in rows {
        let file = corpus_file(&shared, &row.path, dir.path());
        let before = sha256_file(&file);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if row.path.ends_with(".avhdx.gz") {
            // Its parent is not in the corpus: a clear error naming the locator's path.
            let (code, _, err) = run(&[
                "convert",
                "-O",
                "raw",
                s(&file),
                s(&dir.path().join("x.raw")),
            ]);
            assert_ne!(code, 0);
            assert!(
                err.contains("not found")
                    && err.contains("Generation 1_49C4BAF3")
                    && err.contains(&name),
                "{err}"
            );
            // Alone, it reads (what it leaves to its parent as zeros), and maps as a child.
            let out = dir.path().join("alone.raw");
            run_ok(&["convert", "--no-backing", "-O", "raw", s(&file), s(&out)]);
            assert_eq!(std::fs::metadata(&out).unwrap().len(), 8 << 30);
            std::fs::remove_file(&out).unwrap();
            let info: Value = serde_json::from_str(&run_ok(&[
                "info",
                "--output",
                "json",
                "--no-backing",
                s(&file),
            ]))
            .unwrap();
            assert_eq!(info["format-specific"]["data"]["subformat"], "differencing");
            assert_eq!(
                info["format-specific"]["data"]["parent-locator"]["parent_linkage"],
                "{ff34003b-11ed-4cf8-a166-b2be05e20b80}"
            );
            // The oracle readers cannot read it without its parent either.
            if let Some(readings) = oracle_read(test, "vhdx", &file) {
                assert!(readings.iter().all(|r| r.result.is_err()), "{readings:?}");
            }
            checked += 1;
            continue;
        }
        let Some(sha) = row.raw_sha256.clone() else {
            // A fragment qemu-img cannot read: one clear error, no panic.
            let (code, _, err) = run(&["info", s(&file)]);
            assert_ne!(code, 0, "{}", row.path);
            assert!(err.contains(&name) && !err.contains("panicked"), "{err}");
            checked += 1;
            continue;
        };
        let (size, got) = content_sha256(&file, None, dir.path());
        assert_eq!(got, sha, "{}", row.path);
        assert_eq!(Some(size), row.virtual_size, "{}", row.path);
        assert_eq!(
            sha256_file(&file),
            before,
            "{}: the file was changed",
            row.path
        );
        if row.qemu_result.contains("needs replay") {
            let info: Value =
                serde_json::from_str(&run_ok(&["info", "--output", "json", s(&file)])).unwrap();
            assert_eq!(info["format-specific"]["data"]["log"], "replayed in memory");
            assert_eq!(info["dirty-flag"], true);
            assert_eq!(sha256_file(&file), before);
            // qemu-img reads it only after replaying on a copy: the same bytes.
            if have_qemu(test) {
                let copy = dir.path().join("copy.vhdx");
                std::fs::copy(&file, &copy).unwrap();
                let (code, out, err) = qemu_img(&["check", "-r", "all", "-f", "vhdx", s(&copy)]);
                assert_eq!(code, 0, "{out}{err}");
                let q = dir.path().join("q.raw");
                qemu_img_ok(&["convert", "-f", "vhdx", "-O", "raw", s(&copy), s(&q)]);
                assert_eq!(sha256_file(&q), sha, "{}", row.path);
                std::fs::remove_file(&q).unwrap();
                std::fs::remove_file(&copy).unwrap();
            }
        }
        std::fs::remove_file(&file).unwrap();
        checked += 1;
    }
    assert!(checked >= 12);
}

/// Block contents: pseudo-random bytes of `len`.
fn bytes(len: u64, seed: u64) -> Vec<u8> {
    pseudo_random(len as usize, seed)
}

/// Checks diskferry's reading of `image` is `expected`, and, with `oracles`, that the oracle
/// readers that can read it agree (libyal and dissect read hand-made files as independent
/// implementations; neither replays a log nor looks for a moved parent beside its child).
fn assert_reads(test: &str, image: &Path, expected: &[u8], dir: &Path, oracles: bool) {
    let out = dir.join("hand.raw");
    let _ = std::fs::remove_file(&out);
    run_ok(&["convert", "-O", "raw", s(image), s(&out)]);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "{}: content differs", image.display());
    let want = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(expected))
    };
    if !oracles {
        return;
    }
    if let Some(readings) = oracle_read(test, "vhdx", image) {
        let agreeing: Vec<&OracleReading> = readings
            .iter()
            .filter(|r| r.result.as_ref().is_ok_and(|(_, sha)| *sha == want))
            .collect();
        for r in &readings {
            if let Ok((_, sha)) = &r.result {
                assert_eq!(
                    *sha,
                    want,
                    "{} reads {} differently",
                    r.reader,
                    image.display()
                );
            }
        }
        assert!(
            !agreeing.is_empty(),
            "no oracle reader read {}: {readings:?}",
            image.display()
        );
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn four_kib_logical_sectors_and_every_block_state() {
    let test = "four_kib_logical_sectors_and_every_block_state";
    let dir = tempfile::tempdir().unwrap();
    for sector in [512u32, 4096] {
        let mut spec = Spec::new(9 * MIB + 8192, MIB);
        spec.logical_sector = sector;
        spec.blocks = vec![
            (0, Block::Full(bytes(MIB, 1))),
            (1, Block::State(2)),
            (2, Block::State(1)),
            (3, Block::State(3)),
            (4, Block::Full(bytes(MIB, 4))),
            (5, Block::State(0)),
            (9, Block::Full(bytes(8192, 9))),
        ];
        let img = write(dir.path(), &format!("s{sector}.vhdx"), &build(&spec));
        assert_reads(test, &img, &spec.content(), dir.path(), true);
        let info: Value =
            serde_json::from_str(&run_ok(&["info", "--output", "json", s(&img)])).unwrap();
        assert_eq!(
            info["format-specific"]["data"]["logical-sector-size"],
            sector
        );
        // qemu-img reads 512-byte logical sectors only.
        if sector == 512 && have_qemu(test) {
            assert_reads_like_qemu(&img, dir.path());
        }
    }
}

/// A dynamic disk whose BAT update is only in its log: block 2's entry says "not present" in
/// the table and "stored at 5 MiB" in a log entry, with the block's bytes already in place.
fn pending_log(dir: &Path) -> (PathBuf, Spec, Vec<u8>) {
    let mut spec = Spec::new(4 * MIB, MIB);
    spec.blocks = vec![(0, Block::Full(bytes(MIB, 1)))];
    let mut file = build(&spec);
    let block_at = file.len() as u64;
    let data = bytes(MIB, 2);
    file.extend_from_slice(&data);
    let entry_at = Spec::entry_offset(spec.payload_index(2));
    let sector_start = entry_at / 4096 * 4096;
    let mut sector = file[sector_start..sector_start + 4096].to_vec();
    let e = entry_at - sector_start;
    sector[e..e + 8].copy_from_slice(&(block_at | 6).to_le_bytes());
    let guid = Uuid::from_u128(0x106);
    let len = file.len() as u64;
    let entry = log_entry(
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
    add_log(&mut file, &spec, &guid, &[(0, entry)]);
    let mut expected = spec.content();
    expected[2 * MIB as usize..3 * MIB as usize].copy_from_slice(&data);
    let z = (2 * MIB + MIB / 2) as usize;
    expected[z..z + 8192].fill(0);
    (write(dir, "log.vhdx", &file), spec, expected)
}

#[test]
fn a_pending_log_is_replayed_in_memory_and_the_file_left_alone() {
    let test = "a_pending_log_is_replayed_in_memory_and_the_file_left_alone";
    let dir = tempfile::tempdir().unwrap();
    let (img, _, expected) = pending_log(dir.path());
    let before = sha256_file(&img);
    // libyal and dissect read the table as it stands, without the log: qemu-img is the peer.
    assert_reads(test, &img, &expected, dir.path(), false);
    let info: Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&img)])).unwrap();
    assert_eq!(info["format-specific"]["data"]["log"], "replayed in memory");
    assert_eq!(info["format-specific"]["data"]["log-replay"]["entries"], 1);
    assert_eq!(sha256_file(&img), before, "reading wrote the file");
    // qemu-img replays the same log in place, on a copy, to the same bytes.
    if have_qemu(test) {
        let copy = dir.path().join("copy.vhdx");
        std::fs::copy(&img, &copy).unwrap();
        let (code, out, err) = qemu_img(&["check", "-r", "all", "-f", "vhdx", s(&copy)]);
        assert_eq!(code, 0, "{out}{err}");
        let q = dir.path().join("q.raw");
        qemu_img_ok(&["convert", "-f", "vhdx", "-O", "raw", s(&copy), s(&q)]);
        assert!(
            std::fs::read(&q).unwrap() == expected,
            "qemu-img replays differently"
        );
    }
    // A torn entry (its checksum fails) was never committed: nothing to replay, the table
    // as it stands is the truth.
    let mut torn = std::fs::read(&img).unwrap();
    torn[(LOG_OFFSET + 4096 + 100) as usize] ^= 0xFF;
    let torn = write(dir.path(), "torn.vhdx", &torn);
    let out = dir.path().join("torn.raw");
    run_ok(&["convert", "-O", "raw", s(&torn), s(&out)]);
    let got = std::fs::read(&out).unwrap();
    assert!(
        got[2 * MIB as usize..3 * MIB as usize]
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(&got[..MIB as usize], &expected[..MIB as usize]);
}

/// A differencing child of a dynamic parent, made by hand: partially present (sector bitmap),
/// fully present, zero and not present blocks.
fn differencing_pair(dir: &Path, sector: u32) -> (PathBuf, PathBuf, Spec, Vec<u8>) {
    differencing_pair_named(dir, sector, "base.vhdx")
}

/// [`differencing_pair`] whose locator names the parent `name` (the parent is still written
/// as base.vhdx).
fn differencing_pair_named(
    dir: &Path,
    sector: u32,
    name: &str,
) -> (PathBuf, PathBuf, Spec, Vec<u8>) {
    let size = 6 * MIB + 4096;
    let mut parent = Spec::new(size, MIB);
    parent.logical_sector = sector;
    parent.data_write_guid = Uuid::from_u128(0xDA7A_0001);
    parent.blocks = (0..7)
        .map(|b| (b, Block::Full(bytes(parent.used(b), 100 + b))))
        .collect();
    let parent_path = write(dir, "base.vhdx", &build(&parent));
    let mut child = Spec::new(size, MIB);
    child.logical_sector = sector;
    child.data_write_guid = Uuid::from_u128(0xC41D);
    child.parent = Some(vec![
        (
            "parent_linkage".into(),
            "{00000000-0000-0000-0000-0000da7a0001}".into(),
        ),
        ("relative_path".into(), format!(".\\{name}")),
        (
            "volume_path".into(),
            format!("\\\\?\\Volume{{26a21bda-a627-11d7-9931-806e6f6e6963}}\\VMs\\{name}"),
        ),
        ("absolute_win32_path".into(), format!("D:\\VMs\\{name}")),
    ]);
    let spb = (MIB / u64::from(sector)) as usize;
    let present: Vec<bool> = (0..spb).map(|i| i % 3 == 0 || i < 5).collect();
    child.blocks = vec![
        (0, Block::Partial(bytes(MIB, 1), present.clone())),
        (1, Block::Full(bytes(MIB, 2))),
        (2, Block::State(2)),
        (
            4,
            Block::Partial(bytes(MIB, 4), present.iter().map(|p| !p).collect()),
        ),
        (6, Block::Full(bytes(4096, 6))),
    ];
    let child_path = write(dir, "child.avhdx", &build(&child));
    // Through the parent: child's sectors where present, zeros for the zero block, the
    // parent's elsewhere.
    let mut expected = parent.content();
    let own = child.content();
    let ss = sector as usize;
    for (block, b) in &child.blocks {
        let start = (*block * MIB) as usize;
        let end = (start + MIB as usize).min(size as usize);
        match b {
            Block::Full(_) | Block::State(2) => {
                expected[start..end].copy_from_slice(&own[start..end])
            }
            Block::Partial(_, present) => {
                for (i, p) in present.iter().enumerate() {
                    if *p {
                        let at = start + i * ss;
                        expected[at..at + ss].copy_from_slice(&own[at..at + ss]);
                    }
                }
            }
            Block::State(_) => {}
        }
    }
    (parent_path, child_path, child, expected)
}

trait Used {
    fn used(&self, block: u64) -> u64;
}

impl Used for Spec {
    fn used(&self, block: u64) -> u64 {
        self.block_size
            .min(self.virtual_size - block * self.block_size)
    }
}

#[test]
fn a_differencing_pair_reads_through_its_checked_parent() {
    let test = "a_differencing_pair_reads_through_its_checked_parent";
    for sector in [512u32, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let (parent, child, spec, expected) = differencing_pair(dir.path(), sector);
        assert_reads(test, &child, &expected, dir.path(), true);
        // Alone, what it leaves to its parent reads as zeros.
        let out = dir.path().join("alone.raw");
        run_ok(&["convert", "--no-backing", "-O", "raw", s(&child), s(&out)]);
        assert!(std::fs::read(&out).unwrap() == spec.content());
        // The chain as info shows it.
        let info = run_ok(&["info", "--backing-chain", s(&child)]);
        assert!(
            info.contains("subformat: differencing") && info.contains("base.vhdx"),
            "{info}"
        );
        // Moved with the parent's absolute paths meaningless: found beside the child by its
        // file name, even when the relative path names a folder that is gone.
        let moved = dir.path().join("moved");
        std::fs::create_dir(&moved).unwrap();
        std::fs::copy(&parent, moved.join("base.vhdx")).unwrap();
        let mut bytes = std::fs::read(&child).unwrap();
        let from: Vec<u8> = ".\\base.vhdx"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let to: Vec<u8> = "x\\base.vhdx"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
        bytes[at..at + to.len()].copy_from_slice(&to);
        let moved_child = write(&moved, "child.avhdx", &bytes);
        assert_reads(test, &moved_child, &expected, dir.path(), false);
        // Another parent (or the parent changed since): its DataWriteGuid differs, refused.
        let mut other = std::fs::read(&parent).unwrap();
        write_header(&mut other, 1, 1, &Uuid::from_u128(0xBAD), &Uuid::nil());
        write_header(&mut other, 2, 2, &Uuid::from_u128(0xBAD), &Uuid::nil());
        std::fs::write(&parent, &other).unwrap();
        let (code, _, err) = run(&["convert", "-O", "raw", s(&child), s(&out)]);
        assert_ne!(code, 0);
        assert!(
            err.contains("child.avhdx")
                && err.contains("parent_linkage")
                && err.contains("{00000000-0000-0000-0000-0000da7a0001}"),
            "{err}"
        );
        // Missing: a clear error naming what the locator says and where it looked.
        std::fs::remove_file(&parent).unwrap();
        let (code, _, err) = run(&["convert", "-O", "raw", s(&child), s(&out)]);
        assert_ne!(code, 0);
        assert!(
            err.contains("not found")
                && err.contains(".\\base.vhdx")
                && err.contains("child.avhdx"),
            "{err}"
        );
    }
}

/// Hyper-V also chains a VHDX to a VHD parent: read through it, with a warning that a VHD has
/// no DataWriteGuid to check the linkage against.
#[test]
fn a_vhd_parent_is_read_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (parent, child, _, expected) = differencing_pair_named(dir.path(), 512, "base.vhd");
    let vhd = dir.path().join("base.vhd");
    run_ok(&["convert", "-O", "vhd", s(&parent), s(&vhd)]);
    std::fs::remove_file(&parent).unwrap();
    let out = dir.path().join("through.raw");
    let (code, _, err) = run(&["convert", "-O", "raw", s(&child), s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("is a VHD") && err.contains("cannot be checked"),
        "{err}"
    );
    assert!(std::fs::read(&out).unwrap() == expected);
}
