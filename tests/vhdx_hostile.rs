//! Hostile VHDX files: both headers damaged, region tables and metadata items past their
//! bounds, BAT entries past the end or on top of each other, logs whose entries wrap or lie,
//! a 64 TiB table that is a hole, parent loops, and random damage.
//!
//! Each file is built from MS-VHDX by tests/vhdx_support (independently of diskferry's code),
//! and diskferry runs under a 1 GiB address-space limit with a timeout (tests/hostile_support):
//! it must finish without a signal or panic, and either succeed or exit 1 with one line that
//! names the file and says what is wrong, with the offset.

mod common;
mod hostile_support;
mod vhdx_support;

use hostile_support::{Limits, Run, done, done_or_refused, refused, run_limited, sparse_file};
use std::path::{Path, PathBuf};
use uuid::Uuid;
use vhdx_support as vx;
use vx::{Block, Desc, MIB, Spec};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
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

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("hostile.vhdx");
        Case { dir, img }
    }

    fn write(&self, bytes: &[u8]) -> &Path {
        std::fs::write(&self.img, bytes).unwrap();
        &self.img
    }
}

/// A small dynamic disk with two stored blocks, one zero block.
fn spec() -> Spec {
    let mut spec = Spec::new(5 * MIB + 4096, MIB);
    spec.blocks = vec![
        (0, Block::Full(vec![0x11; MIB as usize])),
        (2, Block::State(2)),
        (3, Block::Full(vec![0x33; MIB as usize])),
    ];
    spec
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

const NAME: &[&str] = &["hostile.vhdx"];

#[test]
fn the_builder_makes_a_readable_file() {
    let c = Case::new();
    let spec = spec();
    let r = convert(c.write(&vx::build(&spec)));
    done(&r);
    assert!(std::fs::read(c.img.with_extension("raw")).unwrap() == spec.content());
}

#[test]
fn bad_checksums_in_both_headers_are_refused_one_is_survived() {
    let c = Case::new();
    let good = vx::build(&spec());
    let mut one = good.clone();
    one[vx::HEADER2 + 200] ^= 1;
    done(&convert(c.write(&one)));
    let mut both = one.clone();
    both[vx::HEADER1 + 200] ^= 1;
    let line = refused(
        &convert(c.write(&both)),
        NAME,
        &["neither VHDX header is valid"],
    );
    assert!(
        line.contains("checksum mismatch") && line.contains("offset 65536"),
        "{line}"
    );
    // A file cut inside its second header: the first one serves, the region tables are gone.
    refused(&convert(c.write(&good[..100_000])), NAME, &["region table"]);
    // Not a VHDX at all behind the signature.
    refused(&convert(c.write(&good[..4096])), NAME, &["header"]);
}

#[test]
fn region_tables_past_the_end_or_unknown_and_required_are_refused() {
    let c = Case::new();
    let good = vx::build(&spec());
    let bat_len = 1 << 20;
    let mut bad = good.clone();
    vx::write_regions(
        &mut bad,
        &[
            (vx::BAT_GUID, 1 << 40, bat_len, true),
            (vx::METADATA_GUID, vx::METADATA_OFFSET, MIB as u32, true),
        ],
    );
    let line = refused(&convert(c.write(&bad)), NAME, &["past the end"]);
    assert!(line.contains("offset"), "{line}");
    // The tables themselves past the end of a short file.
    refused(
        &convert(c.write(&good[..200 << 10])),
        NAME,
        &["region table"],
    );
    // Overlapping regions.
    let mut bad = good.clone();
    vx::write_regions(
        &mut bad,
        &[
            (vx::BAT_GUID, vx::BAT_OFFSET, MIB as u32, true),
            (vx::METADATA_GUID, vx::BAT_OFFSET, MIB as u32, true),
        ],
    );
    refused(&convert(c.write(&bad)), NAME, &["overlaps"]);
    // A required region diskferry does not know; an optional one is skipped.
    let other = Uuid::from_u128(0x0123_4567_89AB);
    for required in [true, false] {
        let mut bad = good.clone();
        vx::write_regions(
            &mut bad,
            &[
                (vx::BAT_GUID, vx::BAT_OFFSET, MIB as u32, true),
                (vx::METADATA_GUID, vx::METADATA_OFFSET, MIB as u32, true),
                (other, vx::LOG_OFFSET, MIB as u32, required),
            ],
        );
        let r = convert(c.write(&bad));
        if required {
            refused(&r, NAME, &["required"]);
        } else {
            done(&r);
        }
    }
}

#[test]
fn bat_entries_past_the_end_or_overlapping_are_refused() {
    let c = Case::new();
    let spec = spec();
    let good = vx::build(&spec);
    let entry0 = Spec::entry_offset(spec.payload_index(0));
    let entry3 = Spec::entry_offset(spec.payload_index(3));
    let block0 = u64::from_le_bytes(good[entry0..entry0 + 8].try_into().unwrap()) & !0xFFFFF;
    let cases: [(usize, u64, &str); 6] = [
        (entry0, (1 << 40) | 6, "past the end"),
        (entry0, good.len() as u64 | 6, "past the end"),
        (entry3, block0 | 6, "overlaps"),
        (entry3, vx::BAT_OFFSET | 6, "overlaps the BAT region"),
        (entry3, vx::LOG_OFFSET | 6, "overlaps the log"),
        (entry0, block0 | 4, "reserved"),
    ];
    for (at, value, word) in cases {
        let mut bad = good.clone();
        put64(&mut bad, at, value);
        let line = refused(&convert(c.write(&bad)), NAME, &[word]);
        assert!(
            line.contains("BAT entry") && line.contains("offset"),
            "{line}"
        );
    }
    // The file cut inside its last block (block 3's).
    let line = refused(
        &convert(c.write(&good[..good.len() - 4096])),
        NAME,
        &["past the end"],
    );
    assert!(line.contains("BAT entry 3 (block 3)"), "{line}");
    // A partially present block in a disk without a parent.
    let mut bad = good.clone();
    put64(&mut bad, entry0, block0 | 7);
    refused(&convert(c.write(&bad)), NAME, &["partially present"]);
}

#[test]
fn metadata_items_past_the_region_or_unknown_and_required_are_refused() {
    let c = Case::new();
    let spec = spec();
    let good = vx::build(&spec);
    let entry = |i: usize| (vx::METADATA_OFFSET as usize) + 32 + 32 * i;
    // Item 1 (virtual disk size) moved to the region's last bytes, then past them.
    let mut bad = good.clone();
    put32(&mut bad, entry(1) + 16, (MIB - 4) as u32);
    let line = refused(
        &convert(c.write(&bad)),
        NAME,
        &["outside the metadata region"],
    );
    assert!(line.contains("offset"), "{line}");
    let mut bad = good.clone();
    put32(&mut bad, entry(1) + 20, 2 << 20);
    refused(&convert(c.write(&bad)), NAME, &["1 MiB"]);
    // A count past the table.
    let mut bad = good.clone();
    bad[vx::METADATA_OFFSET as usize + 10..vx::METADATA_OFFSET as usize + 12]
        .copy_from_slice(&4000u16.to_le_bytes());
    refused(&convert(c.write(&bad)), NAME, &["entries"]);
    // An unknown item marked required.
    let mut items = vx::metadata_items(&spec);
    items.push((Uuid::from_u128(0xABCD), 0x20000, vec![1; 8], 4));
    let mut bad = good.clone();
    vx::write_metadata(&mut bad, &items);
    refused(&convert(c.write(&bad)), NAME, &["required"]);
    // Impossible values: a block size that is not a power of two, a 3000-byte sector.
    let mut bad = good.clone();
    put32(&mut bad, vx::METADATA_OFFSET as usize + 0x10000, 3 << 20);
    refused(&convert(c.write(&bad)), NAME, &["block size"]);
    let mut bad = good.clone();
    put32(&mut bad, vx::METADATA_OFFSET as usize + 0x10020, 3000);
    refused(&convert(c.write(&bad)), NAME, &["sector size"]);
}

/// The sector of the BAT holding block 1's entry, with block 1 made fully present at `at`.
fn bat_update(file: &[u8], spec: &Spec, at: u64) -> (u64, Vec<u8>) {
    let entry = Spec::entry_offset(spec.payload_index(1));
    let start = entry / 4096 * 4096;
    let mut sector = file[start..start + 4096].to_vec();
    put64(&mut sector, entry - start, at | 6);
    (start as u64, sector)
}

#[test]
fn logs_whose_entries_wrap_or_lie_are_refused_and_a_true_wrap_is_replayed() {
    let c = Case::new();
    let spec = spec();
    let mut good = vx::build(&spec);
    let block = good.len() as u64;
    good.extend_from_slice(&vec![0x77; MIB as usize]);
    let len = good.len() as u64;
    let (bat_sector, sector) = bat_update(&good, &spec, block);
    let guid = Uuid::from_u128(0x10C);
    let data = || Desc::Data {
        file_offset: bat_sector,
        sector: sector.clone(),
    };
    let with_log = |entries: &[(u64, Vec<u8>)]| {
        let mut f = good.clone();
        vx::add_log(&mut f, &spec, &guid, entries);
        f
    };
    let mut expected = spec.content();
    expected[MIB as usize..2 * MIB as usize].fill(0x77);
    // Two entries, the second wrapping round the end of the log, its tail at the first.
    let first_at = vx::LOG_LENGTH - 8192;
    let e1 = vx::log_entry(
        40,
        first_at as u32,
        &guid,
        len,
        len,
        &[Desc::Zero {
            file_offset: block,
            length: 4096,
        }],
    );
    let e2 = vx::log_entry(41, first_at as u32, &guid, len, len, &[data()]);
    assert_eq!(e1.len(), 4096);
    let wrapped = with_log(&[(first_at, e1.clone()), (first_at + 4096, e2.clone())]);
    done(&convert(c.write(&wrapped)));
    let mut want = expected.clone();
    want[MIB as usize..MIB as usize + 4096].fill(0);
    assert!(std::fs::read(c.img.with_extension("raw")).unwrap() == want);

    // The newest entry's tail names a sector that holds no entry.
    let e = vx::log_entry(41, 8192, &guid, len, len, &[data()]);
    refused(
        &convert(c.write(&with_log(&[(0, e)]))),
        NAME,
        &["log is damaged"],
    );
    // A sequence with a gap.
    let e2_gap = vx::log_entry(42, first_at as u32, &guid, len, len, &[data()]);
    refused(
        &convert(c.write(&with_log(&[
            (first_at, e1.clone()),
            (first_at + 4096, e2_gap),
        ]))),
        NAME,
        &["broken"],
    );
    // A descriptor of another sequence, sealed (so not a torn write: a lie).
    let mut lie = vx::log_entry(7, 0, &guid, len, len, &[data()]);
    put64(&mut lie, 64 + 24, 8);
    vx::seal(&mut lie, 4);
    let line = refused(
        &convert(c.write(&with_log(&[(0, lie)]))),
        NAME,
        &["log is damaged"],
    );
    assert!(
        line.contains("sequence number 8") && line.contains("offset"),
        "{line}"
    );
    // A write into the headers, and one past the size the log allows.
    for (offset, size) in [(64u64 << 10, len), (len + (8 << 20), len)] {
        let e = vx::log_entry(
            7,
            0,
            &guid,
            len,
            size,
            &[Desc::Data {
                file_offset: offset,
                sector: vec![0; 4096],
            }],
        );
        refused(
            &convert(c.write(&with_log(&[(0, e)]))),
            NAME,
            &["log is damaged"],
        );
    }
    // A log that says the file was longer than it is: truncated.
    let e = vx::log_entry(7, 0, &guid, len + MIB, len + MIB, &[data()]);
    refused(
        &convert(c.write(&with_log(&[(0, e)]))),
        NAME,
        &["truncated"],
    );
    // Zero descriptors larger than memory allows, and a log past the end of the file.
    let e = vx::log_entry(
        7,
        0,
        &guid,
        len,
        1 << 50,
        &[Desc::Zero {
            file_offset: 1 << 40,
            length: 1 << 40,
        }],
    );
    done_or_refused(
        &convert(c.write(&with_log(&[(0, e)]))),
        NAME,
        &["memory", "log"],
    );
    let mut short = with_log(&[(0, vx::log_entry(7, 0, &guid, len, len, &[data()]))]);
    for copy in [1, 2] {
        let at = if copy == 1 { vx::HEADER1 } else { vx::HEADER2 };
        put64(&mut short, at + 72, 1 << 40);
        vx::seal(&mut short[at..at + 4096], 4);
    }
    refused(&convert(c.write(&short)), NAME, &["log"]);
    // One large zero write and twenty thousand small ones beside it: replayed in bounded time
    // and memory (the small writes must not each copy the large one).
    let mut descs = vec![Desc::Zero {
        file_offset: len,
        length: 128 * MIB,
    }];
    for i in 0..20_000u64 {
        descs.push(Desc::Zero {
            file_offset: len + 128 * MIB + i * 4096,
            length: 4096,
        });
    }
    let e = vx::log_entry(7, 0, &guid, len, len + 256 * MIB, &descs);
    let r = convert(c.write(&with_log(&[(0, e)])));
    done_or_refused(&r, NAME, &["memory"]);
    assert!(r.elapsed.as_secs() < 10, "{}", r.describe());
    // Every sector claiming to start a 1 MiB entry: searched in bounded time.
    let mut claims = good.clone();
    for s in 0..(vx::LOG_LENGTH / 4096) {
        let at = (vx::LOG_OFFSET + s * 4096) as usize;
        claims[at..at + 4].copy_from_slice(b"loge");
        put32(&mut claims, at + 8, MIB as u32);
        claims[at + 32..at + 48].copy_from_slice(&guid.to_bytes_le());
    }
    vx::write_header(&mut claims, 1, 1, &spec.data_write_guid, &guid);
    vx::write_header(&mut claims, 2, 2, &spec.data_write_guid, &guid);
    done_or_refused(&convert(c.write(&claims)), NAME, &["log"]);
}

#[test]
fn a_64_tib_disk_whose_table_is_a_hole_maps_in_bounded_memory() {
    let c = Case::new();
    let mut spec = Spec::new(64 << 40, MIB);
    spec.blocks = Vec::new();
    let entries = spec.total_entries();
    let bat_len = (entries * 8).div_ceil(MIB) * MIB;
    // The first 3 MiB as the builder makes them, the BAT a hole but for one entry.
    let mut head = vec![0u8; vx::BAT_OFFSET as usize];
    head[..8].copy_from_slice(b"vhdxfile");
    vx::write_header(&mut head, 1, 1, &spec.data_write_guid, &Uuid::nil());
    vx::write_header(&mut head, 2, 2, &spec.data_write_guid, &Uuid::nil());
    vx::write_regions(
        &mut head,
        &[
            (vx::BAT_GUID, vx::BAT_OFFSET, bat_len as u32, true),
            (vx::METADATA_GUID, vx::METADATA_OFFSET, MIB as u32, true),
        ],
    );
    vx::write_metadata(&mut head, &vx::metadata_items(&spec));
    let block = vx::BAT_OFFSET + bat_len;
    let last = (64u64 << 40) / MIB - 1;
    let idx = spec.payload_index(last);
    let e = (block | 6).to_le_bytes();
    sparse_file(
        &c.img,
        block + MIB,
        &[
            (0, &head[..]),
            (vx::BAT_OFFSET + idx * 8, &e[..]),
            (block, &[0x42u8; 4096][..]),
        ],
    );
    let r = run_limited(&["map", "--output", "json", s(&c.img)], &Limits::default());
    done(&r);
    let out = r.stdout.text();
    assert!(out.matches("\"start\"").count() <= 3, "{out}");
    assert!(out.contains(&format!("\"start\": {}", last * MIB)), "{out}");
}

#[test]
fn parent_loops_are_refused() {
    let c = Case::new();
    let d = c.dir.path();
    let child = |name: &str| {
        let mut spec = Spec::new(4 * MIB, MIB);
        spec.parent = Some(vec![
            (
                "parent_linkage".into(),
                format!("{{{}}}", spec.data_write_guid),
            ),
            ("relative_path".into(), format!(".\\{name}")),
        ]);
        vx::build(&spec)
    };
    c.write(&child("hostile.vhdx"));
    refused(&convert(&c.img), NAME, &["loop"]);
    c.write(&child("b.avhdx"));
    std::fs::write(d.join("b.avhdx"), child("hostile.vhdx")).unwrap();
    refused(&convert(&c.img), NAME, &["loop"]);
}

#[test]
fn random_damage_is_read_or_refused_in_one_line() {
    let c = Case::new();
    let mut spec = spec();
    spec.parent = None;
    let mut good = vx::build(&spec);
    // A log entry to damage too.
    let block = good.len() as u64;
    good.extend_from_slice(&vec![0x77; MIB as usize]);
    let len = good.len() as u64;
    let (bat_sector, sector) = bat_update(&good, &spec, block);
    let guid = Uuid::from_u128(0x10C);
    let e = vx::log_entry(
        9,
        0,
        &guid,
        len,
        len,
        &[Desc::Data {
            file_offset: bat_sector,
            sector,
        }],
    );
    vx::add_log(&mut good, &spec, &guid, &[(0, e)]);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let meta = vx::METADATA_OFFSET;
    let regions = [
        (vx::HEADER1 as u64, 80u64),
        (vx::REGION1 as u64, 80),
        (meta, 32 * 8),
        (meta + 0x10000, 48),
        (vx::BAT_OFFSET, 64),
        (vx::LOG_OFFSET, 8192),
    ];
    for round in 0..150 {
        let mut bad = good.clone();
        for _ in 0..1 + next() % 4 {
            let (start, len) = regions[(next() % regions.len() as u64) as usize];
            let i = (start + next() % len) as usize;
            bad[i] ^= 1 << (next() % 8);
        }
        // Mostly re-sealed, so the damage reaches past the checksums.
        if round % 4 != 0 {
            for at in [vx::HEADER1, vx::HEADER2] {
                vx::seal(&mut bad[at..at + 4096], 4);
            }
            vx::reseal_regions(&mut bad);
            let log = vx::LOG_OFFSET as usize;
            let entry_len = u32::from_le_bytes(bad[log + 8..log + 12].try_into().unwrap()) as usize;
            if (4096..=8192).contains(&entry_len) && entry_len.is_multiple_of(4096) {
                vx::seal(&mut bad[log..log + entry_len], 4);
            }
        }
        done_or_refused(&convert(c.write(&bad)), NAME, &[]);
    }
}

/// In-process fuzz-style regression: the builder's file, with a log and a differencing
/// parent locator, mutated thousands of times (headers, region tables and log entries
/// re-sealed so the damage reaches past their checksums), opened from memory, mapped and
/// read. Nothing may panic, every error names the file, and a map covers what it says.
#[test]
fn mutated_files_fail_cleanly_from_memory() {
    use diskferry::format::{OpenContext, Provenance, Salvage};
    use diskferry::formats::vhdx::VhdxLayer;
    use diskferry::image::{Allocation, Layer};
    use diskferry::storage::Memory;
    use std::sync::Arc;

    let mut spec = Spec::new(5 * MIB + 4096, MIB);
    spec.parent = Some(vec![
        (
            "parent_linkage".into(),
            "{11112222-3333-4444-5555-666677778888}".into(),
        ),
        ("relative_path".into(), ".\\p.vhdx".into()),
    ]);
    let present: Vec<bool> = (0..2048).map(|i| i % 5 == 0).collect();
    spec.blocks = vec![
        (0, Block::Full(vec![0x11; MIB as usize])),
        (1, Block::Partial(vec![0x22; MIB as usize], present)),
        (2, Block::State(2)),
        (5, Block::Full(vec![0x55; 4096])),
    ];
    let mut good = vx::build(&spec);
    // The log makes block 3 fully present in a megabyte appended for it.
    let block = good.len() as u64;
    good.extend_from_slice(&vec![0x33; MIB as usize]);
    let len = good.len() as u64;
    let entry = Spec::entry_offset(spec.payload_index(3));
    let bat_sector = (entry / 4096 * 4096) as u64;
    let mut sector = good[bat_sector as usize..bat_sector as usize + 4096].to_vec();
    put64(&mut sector, entry - bat_sector as usize, block | 6);
    let guid = Uuid::from_u128(0x10C);
    let e = vx::log_entry(
        9,
        0,
        &guid,
        len,
        len,
        &[
            Desc::Data {
                file_offset: bat_sector,
                sector,
            },
            Desc::Zero {
                file_offset: len - 8192,
                length: 4096,
            },
        ],
    );
    let entry_len = e.len();
    vx::add_log(&mut good, &spec, &guid, &[(0, e)]);
    let gate = diskferry::Gate::confined();
    let ctx = OpenContext {
        gate: &gate,
        provenance: Provenance::User,
        salvage: Salvage::Refuse,
        snapshot: None,
        data_files: diskferry::image::DataFilePolicy::Require,
    };
    {
        let layer = VhdxLayer::open(Arc::new(Memory::new("f.vhdx", good.clone())), &ctx).unwrap();
        assert!(layer.replay().is_some());
        let m = layer.map(3 * MIB, MIB).unwrap();
        assert_eq!(m.allocation, Allocation::Data);
    }
    let meta = vx::METADATA_OFFSET as usize;
    let bat = vx::BAT_OFFSET as usize;
    let log = vx::LOG_OFFSET as usize;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut opened = 0;
    for round in 0..3000 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 4 {
            let v = next();
            let big = 1u64 << (next() % 64);
            let value = match next() % 4 {
                0 => v,
                1 => big,
                2 => big.wrapping_sub(1),
                _ => v % 65536,
            };
            let (start, span) = match next() % 8 {
                0 => (vx::HEADER1, 80),
                1 => (vx::REGION1, 80),
                2 => (meta, 32 * 8),
                3 => (meta + 0x10000, 160),
                4 | 5 => (bat, 64),
                6 => (log, entry_len),
                _ => (0, b.len()),
            };
            let at = start + (next() as usize % span);
            let width = [1usize, 2, 4, 8][(next() % 4) as usize];
            let at = at.min(b.len() - width);
            b[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        }
        if round % 8 != 0 {
            for at in [vx::HEADER1, vx::HEADER2] {
                vx::seal(&mut b[at..at + 4096], 4);
            }
            vx::reseal_regions(&mut b);
            vx::seal(&mut b[log..log + entry_len], 4);
        }
        let layer = match VhdxLayer::open(Arc::new(Memory::new("f.vhdx", b)), &ctx) {
            Ok(l) => l,
            Err(e) => {
                assert!(e.to_string().starts_with("f.vhdx: "), "round {round}: {e}");
                continue;
            }
        };
        opened += 1;
        let _ = layer.details();
        let size = layer.virtual_size();
        let mut pos = 0;
        let mut buf = vec![0u8; 64 << 10];
        for _ in 0..256 {
            if pos >= size {
                break;
            }
            let Ok(m) = layer.map(pos, size - pos) else {
                break;
            };
            assert!(
                m.start == pos && m.length > 0 && m.length <= size - pos,
                "round {round}: {m:?} at {pos} of {size}"
            );
            if m.allocation == Allocation::Data {
                let n = m.length.min(buf.len() as u64) as usize;
                let _ = layer.read_data(pos, &mut buf[..n]);
            }
            pos = m.end();
        }
    }
    assert!(opened > 300, "only {opened} of 3000 opened");
}
