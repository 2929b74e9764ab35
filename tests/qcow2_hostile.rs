//! Hostile QCOW2 and QCOW files: sizes that claim gigabytes, entries that point into the
//! header or past the end, compressed clusters that inflate past their cluster, snapshot
//! tables out of bounds, backing loops, and random damage.
//!
//! Each file is built here byte by byte from qemu's docs/interop/qcow2.txt (independently of
//! diskferry's code) and diskferry runs under `prlimit --as=1 GiB` with a timeout (see
//! tests/hostile_support): it must finish without a signal or panic, and either succeed or
//! exit 1 with one line that names the file and says what is wrong.

mod common;
mod hostile_support;

use hostile_support::*;
use std::io::Write;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const C: u64 = 65536;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;

/// The header fields a test sets; the layout of a small image: header in cluster 0, refcount
/// table in 1, L1 table in 3, the first L2 table in 4, data from 5 on.
#[derive(Clone)]
struct Qcow2 {
    version: u32,
    cluster_bits: u32,
    size: u64,
    l1_size: u32,
    l1_offset: u64,
    rt_offset: u64,
    rt_clusters: u32,
    nb_snapshots: u32,
    snapshots_offset: u64,
    incompatible: u64,
    compression: u8,
    extensions: Vec<(u32, Vec<u8>)>,
    backing: Option<String>,
}

impl Qcow2 {
    fn new(size: u64) -> Qcow2 {
        Qcow2 {
            version: 3,
            cluster_bits: 16,
            size,
            l1_size: size.div_ceil(C * (C / 8)) as u32,
            l1_offset: 3 * C,
            rt_offset: C,
            rt_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible: 0,
            compression: 0,
            extensions: Vec::new(),
            backing: None,
        }
    }

    /// Cluster 0: the header, its extensions, the backing file name.
    fn header(&self) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[0..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&self.version.to_be_bytes());
        h[20..24].copy_from_slice(&self.cluster_bits.to_be_bytes());
        h[24..32].copy_from_slice(&self.size.to_be_bytes());
        h[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        h[40..48].copy_from_slice(&self.l1_offset.to_be_bytes());
        h[48..56].copy_from_slice(&self.rt_offset.to_be_bytes());
        h[56..60].copy_from_slice(&self.rt_clusters.to_be_bytes());
        h[60..64].copy_from_slice(&self.nb_snapshots.to_be_bytes());
        h[64..72].copy_from_slice(&self.snapshots_offset.to_be_bytes());
        h[72..80].copy_from_slice(&self.incompatible.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        let header_len: u32 = if self.compression != 0 { 112 } else { 104 };
        h[100..104].copy_from_slice(&header_len.to_be_bytes());
        h[104] = self.compression;
        let mut at = header_len as usize;
        for (kind, data) in &self.extensions {
            h[at..at + 4].copy_from_slice(&kind.to_be_bytes());
            h[at + 4..at + 8].copy_from_slice(&(data.len() as u32).to_be_bytes());
            let n = data.len().min(h.len() - at - 8);
            h[at + 8..at + 8 + n].copy_from_slice(&data[..n]);
            at += 8 + data.len().div_ceil(8) * 8;
            at = at.min(h.len() - 8);
        }
        at += 8; // end of extensions (zeros)
        if let Some(name) = &self.backing {
            h[8..16].copy_from_slice(&(at as u64).to_be_bytes());
            h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            h[at..at + name.len()].copy_from_slice(name.as_bytes());
        }
        h
    }

    /// Writes the image: the header, an L1 table whose entry 0 is `l1e0` (0: none), an L2
    /// table of `l2` entries at cluster 4, `pieces`, and the file's length.
    fn write(
        &self,
        path: &Path,
        l1e0: u64,
        l2: &[(u64, u64)],
        pieces: &[(u64, Vec<u8>)],
        len: u64,
    ) {
        let mut all: Vec<(u64, Vec<u8>)> = vec![(0, self.header())];
        if l1e0 != 0 {
            all.push((self.l1_offset, l1e0.to_be_bytes().to_vec()));
        }
        for (i, e) in l2 {
            all.push((4 * C + i * 8, e.to_be_bytes().to_vec()));
        }
        all.extend(pieces.iter().cloned());
        let borrowed: Vec<(u64, &[u8])> = all.iter().map(|(o, b)| (*o, b.as_slice())).collect();
        sparse_file(path, len, &borrowed);
    }
}

/// Raw deflate of `data` (qemu's qcow2 "zlib").
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A compressed cluster descriptor (64 KiB clusters) for `len` bytes at `offset`.
fn compressed_entry(offset: u64, len: u64) -> u64 {
    let sectors = (offset + len).div_ceil(512) - offset / 512;
    COMPRESSED | ((sectors - 1) << 54) | offset
}

fn convert(img: &Path) -> Run {
    let out = img.with_extension("raw");
    run_limited(
        &["convert", "-O", "raw", s(img), s(&out)],
        &Limits::default(),
    )
}

struct Case {
    dir: tempfile::TempDir,
    img: PathBuf,
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("hostile.qcow2");
    Case { dir, img }
}

#[test]
fn a_valid_crafted_image_reads() {
    // The builder itself: a plain cluster and a compressed one read back.
    let c = case();
    let q = Qcow2::new(4 * C);
    let data = vec![0x5Au8; C as usize];
    let packed = deflate(&[0xA5u8; C as usize]);
    let at = 6 * C + 100;
    q.write(
        &c.img,
        (4 * C) | COPIED,
        &[
            (0, (5 * C) | COPIED),
            (2, compressed_entry(at, packed.len() as u64)),
        ],
        &[(5 * C, data.clone()), (at, packed.clone())],
        at + packed.len() as u64,
    );
    let r = convert(&c.img);
    done(&r);
    let out = std::fs::read(c.img.with_extension("raw")).unwrap();
    assert_eq!(out.len() as u64, 4 * C);
    assert_eq!(&out[..C as usize], &data[..]);
    assert!(out[C as usize..2 * C as usize].iter().all(|&b| b == 0));
    assert!(
        out[2 * C as usize..3 * C as usize]
            .iter()
            .all(|&b| b == 0xA5)
    );
    let _ = c.dir;
}

#[test]
fn an_l1_table_larger_than_qemus_limit_is_refused() {
    let c = case();
    let mut q = Qcow2::new(1 << 40);
    q.l1_size = u32::MAX;
    q.write(&c.img, 0, &[], &[], 8 * C);
    refused(&convert(&c.img), &["hostile.qcow2"], &["L1 table"]);
}

#[test]
fn the_largest_l1_table_in_a_sparse_file_maps_in_bounded_memory() {
    // 4 Mi entries (32 MiB) covering 2 PiB, in a file that holds a few clusters: the table
    // is read where the file has bytes, and the map walks the rest in one step.
    let c = case();
    let entries: u64 = 4 << 20;
    let mut q = Qcow2::new(entries * C * (C / 8));
    q.l1_size = entries as u32;
    q.l1_offset = 8 * C; // after the L2 table and the data cluster
    let len = q.l1_offset + entries * 8;
    q.write(
        &c.img,
        (4 * C) | COPIED,
        &[(3, (5 * C) | COPIED)],
        &[(5 * C, vec![1u8; C as usize])],
        len,
    );
    let r = run_limited(&["map", "--output", "json", s(&c.img)], &Limits::default());
    done(&r);
    assert_eq!(r.stdout.lines, 3, "{}", r.stdout.text());
    assert!(r.elapsed.as_secs() < 20, "{}", r.describe());
}

#[test]
fn a_refcount_table_larger_than_qemus_limit_is_refused() {
    let c = case();
    let mut q = Qcow2::new(4 * C);
    q.rt_clusters = u32::MAX;
    q.write(&c.img, 0, &[], &[], 8 * C);
    refused(&convert(&c.img), &["hostile.qcow2"], &["refcount table"]);
}

#[test]
fn tables_in_the_header_or_unaligned_are_refused() {
    let c = case();
    for (field, what) in [("l1", "L1 table"), ("rt", "refcount table")] {
        for offset in [0, 3 * C + 8] {
            let mut q = Qcow2::new(4 * C);
            match field {
                "l1" => q.l1_offset = offset,
                _ => q.rt_offset = offset,
            }
            q.write(&c.img, 0, &[], &[], 8 * C);
            refused(&convert(&c.img), &["hostile.qcow2"], &[what]);
        }
    }
}

#[test]
fn an_l2_table_past_the_end_or_unaligned_is_refused() {
    let c = case();
    let q = Qcow2::new(4 * C);
    q.write(&c.img, (100 * C) | COPIED, &[], &[], 8 * C);
    refused(
        &convert(&c.img),
        &["hostile.qcow2", "L1 entry 0"],
        &["past the end"],
    );
    q.write(&c.img, 4 * C + 512, &[], &[], 8 * C);
    refused(
        &convert(&c.img),
        &["hostile.qcow2", "L1 entry 0"],
        &["aligned"],
    );
}

#[test]
fn data_clusters_past_the_end_are_refused_or_salvaged() {
    let c = case();
    let q = Qcow2::new(4 * C);
    q.write(
        &c.img,
        (4 * C) | COPIED,
        &[(1, (1000 * C) | COPIED)],
        &[],
        8 * C,
    );
    refused(
        &convert(&c.img),
        &["hostile.qcow2", "L2 entry 1"],
        &["past the end"],
    );
    let out = c.img.with_extension("raw");
    done(&run_limited(
        &["convert", "--salvage", "-O", "raw", s(&c.img), s(&out)],
        &Limits::default(),
    ));
    assert!(std::fs::read(&out).unwrap().iter().all(|&b| b == 0));
    // Unaligned host offsets are refused too.
    q.write(&c.img, (4 * C) | COPIED, &[(1, 5 * C + 512)], &[], 8 * C);
    refused(
        &convert(&c.img),
        &["hostile.qcow2", "L2 entry 1"],
        &["aligned"],
    );
}

#[test]
fn compressed_descriptors_into_the_header_or_past_the_end_are_refused() {
    let c = case();
    let q = Qcow2::new(4 * C);
    q.write(
        &c.img,
        (4 * C) | COPIED,
        &[(0, compressed_entry(100, 600))],
        &[],
        8 * C,
    );
    refused(&convert(&c.img), &["hostile.qcow2"], &["header"]);
    q.write(
        &c.img,
        (4 * C) | COPIED,
        &[(0, compressed_entry(50 * C, 600))],
        &[],
        8 * C,
    );
    refused(&convert(&c.img), &["hostile.qcow2"], &["past the end"]);
}

#[test]
fn compressed_clusters_that_inflate_past_their_cluster_or_short_are_refused() {
    let c = case();
    let q = Qcow2::new(4 * C);
    for (data, word) in [
        (vec![7u8; 3 * C as usize], "more than one cluster"),
        (vec![7u8; C as usize / 2], "not a whole cluster"),
        (b"not deflate at all, just text".repeat(10), "deflate"),
    ] {
        let packed = if data.starts_with(b"not deflate") {
            data
        } else {
            deflate(&data)
        };
        let at = 5 * C + 24;
        q.write(
            &c.img,
            (4 * C) | COPIED,
            &[(0, compressed_entry(at, packed.len() as u64))],
            &[(at, packed.clone())],
            6 * C,
        );
        refused(&convert(&c.img), &["hostile.qcow2"], &[word]);
    }
    // zstd: a frame of two clusters.
    let mut q = Qcow2::new(4 * C);
    q.compression = 1;
    q.incompatible = 1 << 3;
    let packed = zstd::bulk::compress(&vec![3u8; 2 * C as usize], 3).unwrap();
    let at = 5 * C + 8;
    q.write(
        &c.img,
        (4 * C) | COPIED,
        &[(0, compressed_entry(at, packed.len() as u64))],
        &[(at, packed)],
        6 * C,
    );
    refused(
        &convert(&c.img),
        &["hostile.qcow2"],
        &["more than one cluster"],
    );
}

#[test]
fn snapshot_tables_out_of_bounds_are_refused() {
    let c = case();
    let mut q = Qcow2::new(4 * C);
    q.nb_snapshots = 3;
    q.snapshots_offset = 1000 * C;
    q.write(&c.img, 0, &[], &[], 8 * C);
    refused(&convert(&c.img), &["hostile.qcow2"], &["snapshot table"]);
    // An entry whose extra data runs out of the file.
    q.snapshots_offset = 6 * C;
    let mut entry = vec![0u8; 40];
    entry[36..40].copy_from_slice(&1000u32.to_be_bytes());
    q.write(&c.img, 0, &[], &[(6 * C, entry.clone())], 6 * C + 512);
    refused(&convert(&c.img), &["hostile.qcow2"], &["snapshot"]);
    // More extra data than qemu allows.
    entry[36..40].copy_from_slice(&100_000u32.to_be_bytes());
    q.write(&c.img, 0, &[], &[(6 * C, entry.clone())], 8 * C);
    refused(&convert(&c.img), &["hostile.qcow2"], &["extra data"]);
    // A snapshot whose L1 table is larger than any: refused when it is read.
    q.nb_snapshots = 1;
    let mut entry = vec![0u8; 48];
    entry[0..8].copy_from_slice(&(5 * C).to_be_bytes());
    entry[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    entry[12..14].copy_from_slice(&1u16.to_be_bytes());
    entry[40] = b'1';
    q.write(&c.img, 0, &[], &[(6 * C, entry)], 8 * C);
    done(&convert(&c.img));
    let out = c.img.with_extension("raw");
    refused(
        &run_limited(
            &["convert", "-l", "1", "-O", "raw", s(&c.img), s(&out)],
            &Limits::default(),
        ),
        &["hostile.qcow2"],
        &["L1 table"],
    );
}

#[test]
fn header_extensions_that_overrun_are_refused_unknown_ones_skipped() {
    let c = case();
    let mut q = Qcow2::new(4 * C);
    q.extensions = vec![(0x1234_5678, vec![1u8; 24]), (0xe279_2aca, b"raw".to_vec())];
    q.write(&c.img, 0, &[], &[], 8 * C);
    done(&convert(&c.img));
    let mut q = Qcow2::new(4 * C);
    q.extensions = vec![(0x1234_5678, vec![1u8; 8])];
    let mut h = q.header();
    h[108..112].copy_from_slice(&(1u32 << 20).to_be_bytes());
    sparse_file(&c.img, 8 * C, &[(0, &h)]);
    refused(&convert(&c.img), &["hostile.qcow2"], &["header extension"]);
}

#[test]
fn impossible_header_fields_are_refused() {
    let c = case();
    let mut cases: Vec<(Qcow2, &str)> = Vec::new();
    let mut q = Qcow2::new(4 * C);
    q.cluster_bits = 31;
    cases.push((q, "cluster_bits"));
    let mut q = Qcow2::new(4 * C);
    q.version = 4;
    cases.push((q, "version"));
    let mut q = Qcow2::new(1 << 40);
    q.l1_size = 1;
    cases.push((q, "too small"));
    let mut q = Qcow2::new(4 * C);
    q.compression = 7;
    q.incompatible = 1 << 3;
    cases.push((q, "compression type"));
    let mut q = Qcow2::new(4 * C);
    q.incompatible = 1 << 2; // a data file, unnamed
    cases.push((q, "data file"));
    for (q, word) in cases {
        q.write(&c.img, 0, &[], &[], 8 * C);
        refused(&convert(&c.img), &["hostile.qcow2"], &[word]);
    }
}

#[test]
fn backing_loops_are_refused() {
    let c = case();
    let d = c.dir.path();
    // An image that is its own backing file, and two that name each other.
    let mut q = Qcow2::new(4 * C);
    q.backing = Some("hostile.qcow2".into());
    q.write(&c.img, 0, &[], &[], 8 * C);
    refused(&convert(&c.img), &["hostile.qcow2"], &["loop"]);
    q.backing = Some("b.qcow2".into());
    q.write(&c.img, 0, &[], &[], 8 * C);
    q.backing = Some("hostile.qcow2".into());
    q.write(&d.join("b.qcow2"), 0, &[], &[], 8 * C);
    refused(&convert(&c.img), &["hostile.qcow2"], &["loop"]);
}

#[test]
fn random_damage_is_read_or_refused_in_one_line() {
    // A valid crafted image with plain, compressed and zero clusters, damaged a few bytes at
    // a time in its metadata.
    let c = case();
    let q = Qcow2::new(8 * C);
    let packed = deflate(&[0x33u8; C as usize]);
    let at = 6 * C + 40;
    q.write(
        &c.img,
        (4 * C) | COPIED,
        &[
            (0, (5 * C) | COPIED),
            (1, compressed_entry(at, packed.len() as u64)),
            (2, 1),
        ],
        &[(5 * C, vec![0x11u8; C as usize]), (at, packed.clone())],
        7 * C,
    );
    let good = std::fs::read(&c.img).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let regions = [(0u64, 112u64), (3 * C, 16), (4 * C, 24), (at, 64)];
    for _ in 0..120 {
        let mut bad = good.clone();
        for _ in 0..1 + next() % 4 {
            let (start, len) = regions[(next() % regions.len() as u64) as usize];
            let i = (start + next() % len) as usize;
            bad[i] ^= 1 << (next() % 8);
        }
        std::fs::write(&c.img, &bad).unwrap();
        done_or_refused(&convert(&c.img), &["hostile.qcow2"], &[]);
    }
}

// ---- QCOW version 1 ----

fn qcow1(size: u64, cluster_bits: u8, l2_bits: u8, l1_offset: u64) -> Vec<u8> {
    let mut h = vec![0u8; 48];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&1u32.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    h[32] = cluster_bits;
    h[33] = l2_bits;
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    h
}

#[test]
fn hostile_qcow_version_1_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("old.qcow");
    // A size whose L1 table would be larger than 32 MiB.
    sparse_file(&img, 4096, &[(0, &qcow1(1 << 62, 9, 6, 512))]);
    refused(&convert(&img), &["old.qcow"], &["L1 table"]);
    // An L2 table past the end of the file.
    let l1 = (1u64 << 40).to_be_bytes();
    sparse_file(&img, 4096, &[(0, &qcow1(1 << 20, 12, 9, 512)), (512, &l1)]);
    refused(&convert(&img), &["old.qcow", "L1 entry 0"], &["outside"]);
    // A cluster past the end.
    let l1 = 1024u64.to_be_bytes();
    let l2 = (1u64 << 40).to_be_bytes();
    sparse_file(
        &img,
        8192,
        &[(0, &qcow1(1 << 20, 12, 9, 512)), (512, &l1), (1024, &l2)],
    );
    refused(&convert(&img), &["old.qcow", "L2 entry 0"], &["outside"]);
    // Impossible cluster bits.
    sparse_file(&img, 4096, &[(0, &qcow1(1 << 20, 40, 9, 512))]);
    refused(&convert(&img), &["old.qcow"], &["cluster_bits"]);
}

/// qemu-made images with compressed clusters, subclusters, snapshots, a bitmap and a backing
/// format, damaged a few bits at a time in their header, extensions, L1 and L2 tables and
/// snapshot table: each run reads or refuses in one line, never panics or runs away.
#[test]
fn random_damage_to_qemu_made_images_is_read_or_refused_in_one_line() {
    let test = "random_damage_to_qemu_made_images_is_read_or_refused_in_one_line";
    if !common::have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.raw");
    common::make_raw(&src, 4 << 20, &[(0, 200_000), (3 << 20, 300_000)]);
    let base = d.join("base.raw");
    common::make_raw(&base, 4 << 20, &[(1 << 20, 100_000)]);
    let img = d.join("damaged.qcow2");
    for (opts, compress) in [
        ("compat=1.1", true),
        ("extended_l2=on,cluster_size=16k", false),
    ] {
        let _ = std::fs::remove_file(&img);
        let mut args = vec!["convert", "-O", "qcow2", "-o", opts];
        if compress {
            args.push("-c");
        }
        args.extend([s(&src), s(&img)]);
        common::qemu_img_ok(&args);
        common::qemu_img_ok(&["snapshot", "-c", "one", s(&img)]);
        common::qemu_img_ok(&["snapshot", "-c", "two", s(&img)]);
        common::qemu_img_ok(&["bitmap", "--add", s(&img), "bm"]);
        common::qemu_img_ok(&["rebase", "-u", "-b", "base.raw", "-F", "raw", s(&img)]);
        let good = std::fs::read(&img).unwrap();
        let be64 = |at: usize| u64::from_be_bytes(good[at..at + 8].try_into().unwrap());
        let l1 = be64(40) as usize;
        let snapshots = be64(64) as usize;
        let first_l2 = (be64(l1) & 0x00ff_ffff_ffff_fe00) as usize;
        let regions = [
            (0usize, 1024usize),
            (l1, 64),
            (first_l2, 512),
            (snapshots, 256),
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..80 {
            let mut bad = good.clone();
            for _ in 0..1 + next() % 3 {
                let (start, len) = regions[(next() % regions.len() as u64) as usize];
                let i = (start + (next() % len as u64) as usize).min(bad.len() - 1);
                bad[i] ^= 1 << (next() % 8);
            }
            std::fs::write(&img, &bad).unwrap();
            let out = d.join("out.raw");
            done_or_refused(
                &run_limited(
                    &["convert", "-O", "raw", s(&img), s(&out)],
                    &Limits::default(),
                ),
                &["damaged.qcow2"],
                &[],
            );
            if round % 4 == 0 {
                for args in [
                    vec!["info", "--output", "json", s(&img)],
                    vec!["convert", "-l", "one", "-O", "raw", s(&img), s(&out)],
                ] {
                    done_or_refused(
                        &run_limited(&args, &Limits::default()),
                        &["damaged.qcow2"],
                        &[],
                    );
                }
            }
        }
    }
}
