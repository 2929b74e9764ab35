//! Hostile input: small files that claim to be huge, and names that are not what they seem.
//!
//! The rule tested here: every allocation an input can drive is bounded by a constant or by
//! the bytes actually present; refusals name the field and its limit.
//!
//! Each test builds its file at test time (sparse where the trick is a sparse file: a few MB
//! really written, whatever the apparent size) and runs the diskferry binary under
//! `prlimit --as=1 GiB` with a 30 s timeout. A run must end in time, without a signal (an
//! aborted allocation is SIGABRT) and either exit 0 with the right result, or exit 1 with
//! exactly one line on stderr that starts with "diskferry: ", names the file and, where the
//! refusal is about a size, mentions the field. See tests/hostile_support for the building
//! blocks (written from the specifications, independently of diskferry's code).

mod common;
mod hostile_support;

use hostile_support::*;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Nothing in `dir` but `names`: no output, no hidden partial file.
fn assert_only(dir: &Path, names: &[&str]) {
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(names_in(dir), want, "files left in {}", dir.display());
}

/// A JSON map line's "start".
fn map_start(line: &str) -> u64 {
    let at = line.find("\"start\": ").expect("a map line") + 9;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

// ---- a. VHD: the BAT's size comes from the header ----

/// A dynamic VHD of 2040 GiB in 4 KiB blocks: its BAT would be 534 773 760 entries (2 GiB).
/// The file's apparent size holds that table, but it is a hole: a few KB are really there.
/// Reading it must not allocate the table: refuse it (naming the BAT) or read it in bounded
/// memory.
#[test]
fn a_vhd_bat_sized_by_its_header_is_not_allocated_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("bigbat.vhd");
    let size = 2040 * GIB;
    let vhd = DynamicVhd {
        fill_bat: false,
        ..DynamicVhd::dynamic(size, 4096)
    };
    assert_eq!(vhd.entries, 534_773_760);
    vhd.write(&img, &[], &[], None);
    assert!(std::fs::metadata(&img).unwrap().len() > u64::from(vhd.entries) * 4);
    assert!(
        allocated(&img) < MIB,
        "the test file really holds {} bytes",
        allocated(&img)
    );
    let keywords = ["BAT", "block allocation table"];
    let run = run_limited(&["info", "--output", "json", s(&img)], &Limits::default());
    if let Verdict::Done = done_or_refused(&run, &["bigbat.vhd"], &keywords) {
        let v: serde_json::Value = serde_json::from_str(&run.stdout.text()).unwrap();
        assert_eq!(v["virtual-size"], size, "{v}");
    }
    let run = run_limited(&["info", s(&img)], &Limits::default());
    done_or_refused(&run, &["bigbat.vhd"], &keywords);
    let out = d.join("out.raw");
    let run = run_limited(
        &["convert", "-O", "raw", s(&img), s(&out)],
        &Limits::default(),
    );
    match done_or_refused(&run, &["bigbat.vhd"], &keywords) {
        Verdict::Done => assert_eq!(std::fs::metadata(&out).unwrap().len(), size),
        Verdict::Refused(_) => assert_only(d, &["bigbat.vhd"]),
    }
}

// ---- b. VMDK: the grain directory's size comes from the header ----

/// A monolithicSparse extent (embedded descriptor) of 512 TiB in 4 KiB grains: its grain
/// directory is 2^28 entries (1 GiB), a hole in a sparse file. Every grain table is absent, so
/// the disk is all unallocated.
fn huge_directory(path: &Path, capacity: u64, grain_sectors: u64, gtes: u32) -> Kdmv {
    let mut h = Kdmv::sparse(capacity, grain_sectors, gtes);
    h.descriptor_offset = 1;
    h.descriptor_size = 1;
    h.gd_offset = 2;
    h.overhead = 2;
    let mut desc = descriptor(
        "monolithicSparse",
        "ffffffff",
        "",
        &[format!(
            "RW {capacity} SPARSE \"{}\"",
            path.file_name().unwrap().to_string_lossy()
        )],
    )
    .into_bytes();
    assert!(desc.len() <= 512);
    desc.resize(512, 0);
    let gd_bytes = h.gd_entries() * 4;
    sparse_file(
        path,
        2 * SECTOR + gd_bytes,
        &[(0, &h.bytes()), (512, &desc)],
    );
    h
}

#[test]
fn a_vmdk_grain_directory_sized_by_its_header_is_not_allocated_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keywords = ["grain directory", "directory", "capacity"];
    // info and map of 512 TiB: the whole map is one unallocated run.
    let img = d.join("hugedir.vmdk");
    let h = huge_directory(&img, 1 << 40, 8, 512);
    assert_eq!(h.gd_entries(), 1 << 28);
    assert!(allocated(&img) < MIB);
    let size = (1u64 << 40) * SECTOR;
    let run = run_limited(&["info", "--output", "json", s(&img)], &Limits::default());
    if let Verdict::Done = done_or_refused(&run, &["hugedir.vmdk"], &keywords) {
        let v: serde_json::Value = serde_json::from_str(&run.stdout.text()).unwrap();
        assert_eq!(v["virtual-size"], size, "{v}");
    }
    let run = run_limited(&["info", s(&img)], &Limits::default());
    done_or_refused(&run, &["hugedir.vmdk"], &keywords);
    for limit in [None, Some("1G")] {
        let mut args = vec!["map", "--output", "json"];
        if let Some(l) = limit {
            args.extend(["-l", l]);
        }
        args.push(s(&img));
        let run = run_limited(&args, &Limits::default());
        if let Verdict::Done = done_or_refused(&run, &["hugedir.vmdk"], &keywords) {
            let text = run.stdout.text();
            let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(v.len(), 1, "{text}");
            assert_eq!(v[0]["data"], false, "{text}");
            let want = if limit.is_some() { GIB } else { size };
            assert_eq!(v[0]["length"], want, "{text}");
        }
    }
    // convert: 128 GiB in 1-sector grains, one entry per table: a 1 GiB directory for an
    // output that is one sparse file.
    let img = d.join("dir128g.vmdk");
    let h = huge_directory(&img, 1 << 28, 1, 1);
    assert_eq!(h.gd_entries(), 1 << 28);
    let out = d.join("out.raw");
    let run = run_limited(
        &["convert", "-O", "raw", s(&img), s(&out)],
        &Limits::default(),
    );
    match done_or_refused(&run, &["dir128g.vmdk"], &keywords) {
        Verdict::Done => {
            assert_eq!(std::fs::metadata(&out).unwrap().len(), 128 * GIB);
            assert!(allocated(&out) < MIB, "an all-unallocated disk became data");
        }
        Verdict::Refused(_) => assert!(!out.exists()),
    }
}

// ---- c. VHD: the sector bitmap cache needs a byte bound ----

/// A dynamic VHD with 256 MiB blocks (64 KiB sector bitmaps) whose 24 000 BAT entries all
/// point at the same block, a partial one: a file of a few hundred KB (the block's data is a
/// hole) that makes a reader caching one bitmap per block hold 1.5 GiB. `map` walks every
/// block's bitmap.
#[test]
fn a_vhd_bitmap_cache_is_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bitmaps.vhd");
    let block = 256 * MIB;
    let blocks = 24_000u32;
    let size = u64::from(blocks) * block;
    let vhd = DynamicVhd::dynamic(size, block as u32);
    // One block right after the BAT; its bitmap (64 KiB) marks the first half stored.
    let bat_end = 1536 + u64::from(blocks) * 4;
    let at = bat_end.div_ceil(4096) * 4096;
    let mut bitmap = vec![0u8; 64 << 10];
    bitmap[..32 << 10].fill(0xFF);
    let bat: Vec<(u32, u32)> = (0..blocks).map(|i| (i, (at / SECTOR) as u32)).collect();
    let layout = vhd.write(&img, &bat, &[(at, &bitmap)], Some(at + (64 << 10) + block));
    assert_eq!(layout.data_start, at);
    assert!(allocated(&img) < 4 * MIB);
    let run = run_limited(&["map", "--output", "json", s(&img)], &Limits::default());
    if let Verdict::Done = done_or_refused(&run, &["bitmaps.vhd"], &[]) {
        // Every block: 128 MiB of data (at the same host offset), then 128 MiB of zeros.
        assert_eq!(
            run.stdout.lines,
            2 * u64::from(blocks),
            "{}",
            run.describe()
        );
        let first = &run.stdout.first_lines(1)[0];
        assert!(
            first.starts_with("[{ \"start\": 0, \"length\": 134217728"),
            "{first}"
        );
        assert!(
            first.contains(&format!("\"offset\": {}", at + (64 << 10))),
            "{first}"
        );
        let last = run.stdout.last_line();
        assert_eq!(map_start(&last), size - block / 2, "{last}");
        assert!(
            last.contains("\"data\": false") && last.ends_with("}]"),
            "{last}"
        );
    }
}

// ---- d. Stream-optimized VMDK: a grain map rebuilt from markers ----

/// A streamOptimized VMDK whose directory is lost (no footer, no tables; the end-of-stream
/// marker is there, so scanning the markers is legitimate): 48 000 tiny compressed grains,
/// each in a grain table of its own (4096 entries, 256 MiB apart). A rebuilt map that
/// allocates a whole table per marker needs 1.5 GiB for a 25 MB file.
#[test]
fn a_rebuilt_stream_grain_map_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("scattered.vmdk");
    let gtes = 4096u32;
    let coverage = u64::from(gtes) * 128; // sectors one table covers
    let grains = 48_000u64;
    let header = Kdmv::stream(grains * coverage, gtes);
    let payload = zlib(&[0xA5u8; 65536]);
    assert!(payload.len() < 500);
    let mut bytes = stream_head(&header);
    for i in 0..grains {
        bytes.extend_from_slice(&grain_marker(i * coverage, &payload));
    }
    bytes.extend_from_slice(&meta_marker(0, 0));
    std::fs::write(&img, &bytes).unwrap();
    let run = run_limited(&["info", s(&img)], &Limits::default());
    done_or_refused(&run, &["scattered.vmdk"], &[]);
    let run = run_limited(&["map", "--output", "json", s(&img)], &Limits::default());
    if let Verdict::Done = done_or_refused(&run, &["scattered.vmdk"], &[]) {
        // A data grain, then the rest of its table's span unallocated, 48 000 times.
        assert_eq!(run.stdout.lines, 2 * grains, "{}", run.describe());
        let first = &run.stdout.first_lines(1)[0];
        assert!(
            first.starts_with("[{ \"start\": 0, \"length\": 65536"),
            "{first}"
        );
        assert!(first.contains("\"data\": true"), "{first}");
        let last = run.stdout.last_line();
        assert_eq!(
            map_start(&last),
            ((grains - 1) * coverage * SECTOR) + 65536,
            "{last}"
        );
    }
}

// ---- e. One grain directory, many extent lines ----

/// A descriptor of 2000 SPARSE extent lines all naming the same extent, whose grain
/// directory is 2 MiB (a hole): memory must not grow with lines × directory (8 GiB if every
/// line loads its own decoded copy).
#[test]
fn extent_lines_naming_one_extent_do_not_multiply_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extent = d.join("shared-extent.vmdk");
    let capacity = 1u64 << 32; // sectors: 2 TiB
    let h = Kdmv::sparse(capacity, 16, 512);
    assert_eq!(h.gd_entries() * 4, 2 * MIB);
    sparse_file(&extent, SECTOR + 2 * MIB, &[(0, &h.bytes())]);
    let lines = 2000;
    let extents: Vec<String> = (0..lines)
        .map(|_| format!("RW {capacity} SPARSE \"shared-extent.vmdk\""))
        .collect();
    let img = d.join("many.vmdk");
    std::fs::write(
        &img,
        descriptor("monolithicSparse", "ffffffff", "", &extents),
    )
    .unwrap();
    let size = lines * capacity * SECTOR;
    let run = run_limited(&["info", "--output", "json", s(&img)], &Limits::default());
    if let Verdict::Done = done_or_refused(&run, &["many.vmdk"], &[]) {
        let v: serde_json::Value = serde_json::from_str(&run.stdout.text()).unwrap();
        assert_eq!(v["virtual-size"], size);
    }
    let run = run_limited(&["map", "--output", "json", s(&img)], &Limits::default());
    if let Verdict::Done = done_or_refused(&run, &["many.vmdk"], &[]) {
        let first = &run.stdout.first_lines(1)[0];
        assert!(first.starts_with("[{ \"start\": 0,"), "{first}");
        assert!(first.contains("\"data\": false"), "{first}");
        assert!(run.stdout.last_line().ends_with("}]"));
    }
}

// ---- f. map streams its output ----

/// A 2.25 GiB dynamic VHD whose 1152 blocks (2 MiB) each store every other sector: 4.7
/// million map entries (4096 per block). `map` must write them as it finds them, in constant
/// memory, not gather ~600 MB of text first. The long file name makes each human line long.
#[test]
fn map_of_a_fragmented_image_streams_in_constant_memory() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}.vhd", "m".repeat(200));
    let img = dir.path().join(&name);
    let block = 2 * MIB;
    let blocks = 1152u32;
    let size = u64::from(blocks) * block;
    let vhd = DynamicVhd::dynamic(size, block as u32);
    let start = (1536 + u64::from(blocks) * 4).div_ceil(4096) * 4096;
    let stride = block + SECTOR;
    let bitmap = [0xAAu8; 512];
    let bat: Vec<(u32, u32)> = (0..blocks)
        .map(|i| (i, ((start + u64::from(i) * stride) / SECTOR) as u32))
        .collect();
    let pieces: Vec<(u64, &[u8])> = (0..blocks)
        .map(|i| (start + u64::from(i) * stride, &bitmap[..]))
        .collect();
    vhd.write(
        &img,
        &bat,
        &pieces,
        Some(start + u64::from(blocks) * stride),
    );
    assert!(allocated(&img) < 16 * MIB);
    let sectors = u64::from(blocks) * (block / SECTOR);
    let last_data = start + u64::from(blocks - 1) * stride + SECTOR + (block - 2 * SECTOR);

    let run = run_limited(&["map", "--output", "json", s(&img)], &Limits::default());
    done(&run);
    assert_eq!(run.stdout.lines, sectors, "{}", run.describe());
    let first = run.stdout.first_lines(2);
    assert_eq!(
        first[0],
        format!(
            "[{{ \"start\": 0, \"length\": 512, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": {}}},",
            start + SECTOR
        )
    );
    assert!(
        first[1].starts_with("{ \"start\": 512, \"length\": 512,"),
        "{}",
        first[1]
    );
    let last = run.stdout.last_line();
    assert_eq!(map_start(&last), size - SECTOR, "{last}");
    assert!(last.ends_with("}]"), "{last}");

    let run = run_limited(&["map", s(&img)], &Limits::default());
    done(&run);
    // A header, then one line per stored sector.
    assert_eq!(run.stdout.lines, 1 + sectors / 2, "{}", run.describe());
    let first = run.stdout.first_lines(2);
    assert!(
        first[0].starts_with("Offset          Length          Mapped to"),
        "{}",
        first[0]
    );
    let want = format!(
        "{:<16}{:<16}{:<16}",
        "0",
        "0x200",
        format!("{:#x}", start + SECTOR)
    );
    assert!(first[1].starts_with(&want), "{}", first[1]);
    let last = run.stdout.last_line();
    let want = format!(
        "{:<16}{:<16}{:<16}",
        format!("{:#x}", size - 2 * SECTOR),
        "0x200",
        format!("{last_data:#x}")
    );
    assert!(last.starts_with(&want), "{last}");
    assert!(last.ends_with(&name), "{last}");
}

// ---- g. -S sizes buffers ----

/// `-S` above 16 MiB is refused, as qemu-img refuses it: the zero-detection granularity sizes
/// buffers, so `-S 8G` must not make diskferry ask for gigabytes.
#[test]
fn sparse_size_above_16_mib_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.raw");
    common::make_raw(&src, 64 * MIB, &[(0, 5 * MIB), (40 * MIB, 100_000)]);
    let out = d.join("dst.raw");
    for big in ["8G", "17M", "16777728"] {
        let run = run_limited(
            &["convert", "-S", big, s(&src), s(&out)],
            &Limits::default(),
        );
        refused(&run, &["-S"], &["16 MiB", "16M", "16777216"]);
        assert_only(d, &["src.raw"]);
    }
    let run = run_limited(
        &["convert", "-S", "16M", s(&src), s(&out)],
        &Limits::default(),
    );
    done(&run);
    assert_eq!(common::sha256_file(&out), common::sha256_file(&src));
}

// ---- h. A truncated stream-optimized VMDK ----

/// Offsets of the grain markers of a stream-optimized file (walking from `first` sector).
fn grain_offsets(bytes: &[u8], first: u64) -> Vec<usize> {
    let mut pos = (first * SECTOR) as usize;
    let mut out = Vec::new();
    while pos + 512 <= bytes.len() {
        let value = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap());
        let size = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as u64;
        let kind = u32::from_le_bytes(bytes[pos + 12..pos + 16].try_into().unwrap());
        if size > 0 {
            out.push(pos);
            pos += ((12 + size).div_ceil(SECTOR) * SECTOR) as usize;
        } else if kind == 0 && value == 0 {
            break;
        } else {
            pos += ((1 + value) * SECTOR) as usize;
        }
    }
    out
}

/// Cuts `image` inside its last grain (losing what follows it: tables, footer, end-of-stream
/// marker, where there are any) and checks: convert fails in one line that says the file is
/// truncated; convert --salvage succeeds with a warning and the data that is there; info does
/// not panic.
fn check_truncated_stream(dir: &Path, image: &Path, raw: &Path, first_sector: u64) {
    let bytes = std::fs::read(image).unwrap();
    let grains = grain_offsets(&bytes, first_sector);
    assert!(grains.len() >= 8, "{} grains", grains.len());
    let cut = grains[grains.len() - 1] + 1024;
    let name = format!("cut-{}", image.file_name().unwrap().to_string_lossy());
    let cut_image = dir.join(&name);
    std::fs::write(&cut_image, &bytes[..cut]).unwrap();
    let out = dir.join(format!("{name}.raw"));

    let run = run_limited(
        &["convert", "-O", "raw", s(&cut_image), s(&out)],
        &Limits::default(),
    );
    refused(&run, &[&name], &["truncat"]);
    assert!(!out.exists());

    let run = run_limited(
        &["convert", "--salvage", "-O", "raw", s(&cut_image), s(&out)],
        &Limits::default(),
    );
    done(&run);
    let err = run.stderr_text();
    assert!(
        err.lines().any(|l| l.starts_with("diskferry: warning: ")),
        "--salvage gave no warning: {}",
        run.describe()
    );
    let want = std::fs::read(raw).unwrap();
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), want.len(), "salvaged disk size");
    // Every grain but the cut one is whole: the disk up to that grain is the source's.
    let whole = want.len() - 65536;
    assert!(
        got[..whole] == want[..whole],
        "salvaged data differs from the source"
    );

    let run = run_limited(&["info", s(&cut_image)], &Limits::default());
    assert!(
        !run.timed_out && run.status.code().is_some(),
        "{}",
        run.describe()
    );
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "{}",
        run.describe()
    );
    assert!(
        !run.stderr_text().contains("panicked"),
        "{}",
        run.describe()
    );
    assert!(run.stderr_text().lines().count() <= 2, "{}", run.describe());
}

#[test]
fn a_truncated_stream_vmdk_made_by_qemu_img_is_an_error_unless_salvaging() {
    let test = "a_truncated_stream_vmdk_made_by_qemu_img_is_an_error_unless_salvaging";
    if !common::have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("src.raw");
    std::fs::write(&raw, common::pseudo_random(4 << 20, 11)).unwrap();
    let image = d.join("qemu.vmdk");
    common::qemu_img_ok(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&raw),
        s(&image),
    ]);
    let bytes = std::fs::read(&image).unwrap();
    let overhead = u64::from_le_bytes(bytes[64..72].try_into().unwrap());
    check_truncated_stream(d, &image, &raw, overhead);
}

#[test]
fn a_truncated_stream_vmdk_laid_out_by_the_specification_is_an_error_unless_salvaging() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("src.raw");
    let data = common::pseudo_random(2 << 20, 12);
    std::fs::write(&raw, &data).unwrap();
    // Header, grains, a grain table, the directory, footer, end-of-stream marker.
    let grains: Vec<(u64, Vec<u8>)> = data
        .chunks(65536)
        .enumerate()
        .map(|(i, g)| (i as u64 * 128, zlib(g)))
        .collect();
    let bytes = spec_stream(4096, &grains);
    let image = d.join("spec.vmdk");
    std::fs::write(&image, &bytes).unwrap();
    // The whole file reads back as the source, to show the builder is right.
    let whole = d.join("whole.raw");
    done(&run_limited(
        &["convert", s(&image), s(&whole)],
        &Limits::default(),
    ));
    assert!(std::fs::read(&whole).unwrap() == data);
    std::fs::remove_file(&whole).unwrap();
    check_truncated_stream(d, &image, &raw, 3);
}

// ---- i. create of an impossible size ----

#[test]
fn creating_an_impossible_size_fails_quickly_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (format, options, name) in [
        ("vmdk", None, "x.vmdk"),
        ("vhd", None, "x.vhd"),
        ("vmdk", Some("subformat=twoGbMaxExtentSparse"), "y.vmdk"),
        ("vmdk", Some("subformat=twoGbMaxExtentFlat"), "z.vmdk"),
        ("vmdk", Some("subformat=streamOptimized"), "w.vmdk"),
    ] {
        let path = d.join(name);
        let mut args = vec!["create", "-f", format];
        if let Some(o) = options {
            args.extend(["-o", o]);
        }
        args.extend([s(&path), "8000000T"]);
        let run = run_limited(&args, &Limits::default());
        refused(
            &run,
            &[name],
            &["at most", "limit", "maximum", "larger than", "too large"],
        );
        assert!(run.elapsed.as_secs() < 5, "{}", run.describe());
        assert_only(d, &[]);
    }
}

// ---- j. A Mac OS X locator with '%' before a multi-byte character ----

#[test]
fn a_percent_before_a_multibyte_character_in_a_mac_locator_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, url) in [
        "file://%é/x.vhd",
        "file://%€/x.vhd",
        "file://%aé/x.vhd",
        "file://%a€",
        "file://x/%\u{1F600}.vhd",
        "file://%",
        "file://%4",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("child{i}.vhd");
        let img = d.join(&name);
        let vhd = DynamicVhd {
            disk_type: VHD_DIFFERENCING,
            parent_uuid: [0x22; 16],
            parent_name: "x.vhd",
            locators: vec![(*b"MacX", url.as_bytes().to_vec())],
            ..DynamicVhd::dynamic(MIB, 2 << 20)
        };
        vhd.write(&img, &[], &[], None);
        for args in [
            vec!["info", s(&img)],
            vec!["info", "--output", "json", s(&img)],
            vec!["info", "--backing-chain", s(&img)],
        ] {
            let run = run_limited(&args, &Limits::default());
            if let Verdict::Done = done_or_refused(&run, &[&name], &[]) {
                assert!(
                    run.stderr_text().lines().count() <= 1,
                    "{url}: {}",
                    run.describe()
                );
            }
        }
    }
}

// ---- k. Control characters from image metadata ----

/// No byte of metadata reaches the terminal raw: control characters (ESC, BEL, CR, ...) in
/// names an image holds are shown escaped, in `info` and in errors alike.
fn assert_no_control(run: &Run) {
    assert!(!run.timed_out, "{}", run.describe());
    assert!(
        !run.stderr_text().contains("panicked"),
        "{}",
        run.describe()
    );
    assert_eq!(
        run.stdout.control_bytes,
        0,
        "raw control bytes on stdout: {:?}",
        String::from_utf8_lossy(&run.stdout.head)
    );
    let err = run.stderr_text();
    let bad: Vec<char> = err
        .chars()
        .filter(|&c| c.is_control() && c != '\n' && c != '\t')
        .collect();
    assert!(
        bad.is_empty(),
        "raw control characters {bad:?} on stderr: {err:?}"
    );
    let out = String::from_utf8_lossy(&run.stdout.head);
    let bad: Vec<char> = out
        .chars()
        .filter(|&c| ('\u{80}'..='\u{9f}').contains(&c))
        .collect();
    assert!(
        bad.is_empty(),
        "C1 control characters {bad:?} on stdout: {out:?}"
    );
}

#[test]
fn control_characters_in_image_metadata_never_reach_the_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A descriptor whose extent file name and parent hint hold escape sequences; the extent
    // exists under that name.
    let extent = "\x1b[31mext\x07.raw";
    common::make_raw(&d.join(extent), MIB, &[(0, 4096)]);
    let hint = "parentFileNameHint=\"\x1b[2J\x1b[31mparent\x08.vmdk\"";
    let desc = descriptor(
        "monolithicFlat",
        "abcdef01",
        hint,
        &[format!("RW 2048 FLAT \"{extent}\" 0")],
    );
    let img = d.join("colour.vmdk");
    std::fs::write(&img, desc).unwrap();
    for args in [
        vec!["info", s(&img)],
        vec!["info", "--output", "json", s(&img)],
        vec!["info", "--backing-chain", s(&img)],
        vec!["map", s(&img)],
        vec!["check", s(&img)],
    ] {
        let run = run_limited(&args, &Limits::default());
        assert_no_control(&run);
    }
    let out = d.join("o.raw");
    let run = run_limited(&["convert", s(&img), s(&out)], &Limits::default());
    assert_no_control(&run);

    // An extent that is missing: its name is in the error line.
    let desc = descriptor(
        "monolithicFlat",
        "ffffffff",
        "",
        &["RW 2048 FLAT \"\x1b]0;owned\x07gone\x1b[8m.raw\" 0".to_string()],
    );
    let img = d.join("gone.vmdk");
    std::fs::write(&img, desc).unwrap();
    for args in [vec!["info", s(&img)], vec!["convert", s(&img), s(&out)]] {
        let run = run_limited(&args, &Limits::default());
        let line = refused(&run, &["gone"], &[]);
        assert_no_control(&run);
        assert!(line.contains("owned"), "{line}");
    }

    // A differencing VHD whose parent's unicode name holds escape sequences.
    let vhd = DynamicVhd {
        disk_type: VHD_DIFFERENCING,
        parent_uuid: [0x22; 16],
        parent_name: "\x1b[31mparent\x1b[0m\u{9b}2J.vhd",
        ..DynamicVhd::dynamic(MIB, 2 << 20)
    };
    let img = d.join("child.vhd");
    vhd.write(&img, &[], &[], None);
    for args in [
        vec!["info", s(&img)],
        vec!["info", "--backing-chain", s(&img)],
        vec!["convert", s(&img), s(&out)],
        vec!["check", s(&img)],
    ] {
        let run = run_limited(&args, &Limits::default());
        assert_no_control(&run);
    }
}

// ---- l. Errors reading standard input name it ----

#[test]
fn an_error_reading_a_piped_source_names_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let header = Kdmv::stream(2048, 512);
    let mut bytes = stream_head(&header);
    bytes.extend_from_slice(&grain_marker(0, &zlib(&[7u8; 65536])));
    bytes.extend_from_slice(&grain_marker(128, &[0x55u8; 300]));
    bytes.extend_from_slice(&meta_marker(0, 0));
    let src = d.join("garbage-stream.vmdk");
    std::fs::write(&src, &bytes).unwrap();
    let out = d.join("destination-file.raw");
    let run = run_limited(
        &["convert", "-", s(&out)],
        &Limits {
            stdin: Some(src.clone()),
            ..Limits::default()
        },
    );
    let line = refused(&run, &[], &["stdin"]);
    assert!(
        !line.contains("destination-file"),
        "the error blames the destination: {line}"
    );
    assert_only(d, &["garbage-stream.vmdk"]);
}

// ---- m. Split outputs: errors name the destination, never a hidden temporary ----

fn assert_no_hidden_name(line: &str, dir: &Path) {
    assert!(
        !line.contains("diskferry-partial"),
        "the error names a temporary file: {line}"
    );
    assert!(
        !line.contains(&format!("{}/.", dir.display())),
        "the error names a hidden file: {line}"
    );
}

/// Converts `src` to the split VMDK `out` (`subformat`) with `limits`. When that works, the
/// output must read as the source (its files are then removed); when it fails, the one line
/// must name `names_one_of` (any) and no hidden temporary file.
fn split_convert(src: &Path, out: &Path, subformat: &str, limits: &Limits, names_one_of: &[&str]) {
    let run = run_limited(
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={subformat}"),
            s(src),
            s(out),
        ],
        limits,
    );
    let dir = out.parent().unwrap();
    match done_or_refused(&run, &[], &[]) {
        Verdict::Done => {
            let (code, msg, err) = common::run(&["compare", s(src), s(out)]);
            assert_eq!(code, 0, "{subformat}: {msg}{err}");
            let stem = out.file_stem().unwrap().to_string_lossy().into_owned();
            for f in names_in(dir) {
                if f.starts_with(&stem) {
                    std::fs::remove_file(dir.join(f)).unwrap();
                }
            }
        }
        Verdict::Refused(line) => {
            assert_no_hidden_name(&line, dir);
            assert!(
                names_one_of.iter().any(|n| line.contains(n)),
                "{subformat}: the error names none of {names_one_of:?}: {line}"
            );
        }
    }
}

/// A source that fails midway (a well-formed stream file whose second grain is not zlib):
/// the error names the source (or the destination), never a temporary file.
#[test]
fn a_source_error_during_a_split_convert_names_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bytes = spec_stream(
        16384,
        &[
            (0, zlib(&common::pseudo_random(65536, 5))),
            (8192, vec![0x55u8; 300]),
        ],
    );
    let src = d.join("broken.vmdk");
    std::fs::write(&src, &bytes).unwrap();
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let out = d.join(format!("{sub}.vmdk"));
        let run = run_limited(
            &[
                "convert",
                "-O",
                "vmdk",
                "-o",
                &format!("subformat={sub}"),
                s(&src),
                s(&out),
            ],
            &Limits::default(),
        );
        let line = refused(&run, &[], &[]);
        assert_no_hidden_name(&line, d);
        assert!(
            line.contains("broken.vmdk") || line.contains(sub),
            "the error names neither the source nor the destination: {line}"
        );
        assert_only(d, &["broken.vmdk"]);
    }
}

/// A destination name so long (240 bytes, extents 245) that a longer hidden name beside it
/// cannot exist: the convert works, or fails naming the destination.
#[test]
fn a_split_convert_to_a_long_name_never_names_a_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("small.raw");
    common::make_raw(&src, 3 << 20, &[(0, 4096), (2 << 20, 4096)]);
    let stem = "n".repeat(235);
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let out = d.join(format!("{stem}.vmdk"));
        split_convert(&src, &out, sub, &Limits::default(), &[&stem]);
        assert_only(d, &["small.raw"]);
    }
}

/// Too few file descriptors for 100 extents: the convert works, or fails naming the
/// destination, never a hidden temporary file.
#[test]
fn a_split_convert_out_of_file_descriptors_never_names_a_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("wide.raw");
    common::make_raw(&src, 200 * GIB, &[(0, 4096), (150 * GIB, 4096)]);
    // Two limits, so that the descriptors run out at either step of creating an extent.
    for nofile in [40, 41] {
        for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
            let out = d.join("wide.vmdk");
            let limits = Limits {
                nofile: Some(nofile),
                ..Limits::default()
            };
            split_convert(&src, &out, sub, &limits, &["wide.vmdk", "wide-"]);
            assert_only(d, &["wide.raw"]);
        }
    }
}

// ---- n. Split outputs need one file descriptor per extent at most ----

/// 1 TiB in 2 GiB extents is 512 extent files: the convert must succeed with 600 file
/// descriptors (one per extent and a few more).
fn split_terabyte_in_600_descriptors(sub: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("tb.raw");
    common::make_raw(
        &src,
        TIB,
        &[(0, 65536), (700 * GIB, 65536), (TIB - 4096, 4096)],
    );
    let out = d.join("disk.vmdk");
    let run = run_limited(
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&src),
            s(&out),
        ],
        &Limits {
            nofile: Some(600),
            ..Limits::default()
        },
    );
    done(&run);
    let files = names_in(d).len() - 1;
    assert!(
        files >= 513,
        "{sub}: {files} files, a descriptor and 512 extents at least"
    );
    let (code, msg, err) = common::run(&["compare", s(&src), s(&out)]);
    assert_eq!(code, 0, "{sub}: {msg}{err}");
}

#[test]
fn a_flat_split_terabyte_fits_in_600_file_descriptors() {
    split_terabyte_in_600_descriptors("twoGbMaxExtentFlat");
}

#[test]
fn a_sparse_split_terabyte_fits_in_600_file_descriptors() {
    split_terabyte_in_600_descriptors("twoGbMaxExtentSparse");
}

// ---- o. A differencing VHD's parent must be a VHD ----

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

#[test]
fn a_differencing_vhd_without_parent_uuid_refuses_a_parent_that_is_not_a_vhd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::make_raw(&d.join("parent.raw"), MIB, &[(0, MIB)]);
    let other = d.join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    common::make_raw(&other.join("disk.img"), MIB, &[(0, MIB)]);
    let absolute = format!("C:{}", other.join("disk.img").display()).replace('/', "\\");
    for (name, parent_name, locators) in [
        (
            "rel.vhd",
            "parent.raw",
            vec![(*b"W2ru", utf16le(".\\parent.raw"))],
        ),
        ("named.vhd", "parent.raw", vec![]),
        ("abs.vhd", "disk.img", vec![(*b"W2ku", utf16le(&absolute))]),
    ] {
        let img = d.join(name);
        let vhd = DynamicVhd {
            disk_type: VHD_DIFFERENCING,
            parent_uuid: [0; 16],
            parent_name,
            locators,
            ..DynamicVhd::dynamic(MIB, 2 << 20)
        };
        vhd.write(&img, &[], &[], None);
        let out = d.join("out.raw");
        for args in [
            vec!["info", "--backing-chain", s(&img)],
            vec!["convert", s(&img), s(&out)],
        ] {
            let run = run_limited(&args, &Limits::default());
            let line = refused(&run, &[], &["parent"]);
            assert!(
                line.contains(name) || line.contains(parent_name),
                "the error names neither the child nor the parent: {line}"
            );
        }
        assert!(!out.exists());
    }
}

// ---- p. A FIFO named as an extent ----

#[test]
fn an_extent_that_is_a_fifo_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("extent.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let mut images: Vec<PathBuf> = Vec::new();
    for (name, create_type, line) in [
        (
            "flat.vmdk",
            "monolithicFlat",
            "RW 2048 FLAT \"extent.fifo\" 0",
        ),
        (
            "sparse.vmdk",
            "monolithicSparse",
            "RW 2048 SPARSE \"extent.fifo\"",
        ),
    ] {
        let img = d.join(name);
        std::fs::write(
            &img,
            descriptor(create_type, "ffffffff", "", &[line.to_string()]),
        )
        .unwrap();
        images.push(img);
    }
    let out = d.join("out.raw");
    // The runs go side by side: a hang costs one timeout, not one per run.
    let runs: Vec<_> = images
        .iter()
        .flat_map(|img| {
            [
                vec!["info".to_string(), s(img).to_string()],
                vec![
                    "convert".to_string(),
                    s(img).to_string(),
                    s(&out).to_string(),
                ],
            ]
        })
        .map(|args| std::thread::spawn(move || run_limited(&args, &Limits::default())))
        .collect();
    for r in runs {
        let run = r.join().unwrap();
        refused(&run, &["extent.fifo"], &[]);
        assert!(run.elapsed.as_secs() < 5, "{}", run.describe());
    }
    assert!(!out.exists());
}
