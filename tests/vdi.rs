//! VDI (VirtualBox) images, judged by peers: what qemu-img writes, diskferry reads bit-exact;
//! what diskferry writes is identical to its source by `qemu-img compare`, clean by `qemu-img
//! check` and read the same by dissect; differencing images (VirtualBox snapshots) find their
//! parents by UUID, as VirtualBox does, and refuse the wrong one.

mod common;

use common::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Not a whole number of blocks, nor of sectors.
const SIZE: u64 = (9 << 20) + 4321;

/// A sparse source: data across block boundaries, a zero block between data, data in the
/// odd tail.
fn source(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let raw = dir.join(name);
    make_raw(&raw, SIZE, &[]);
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.write_all_at(&pseudo_random(300_000, seed), 1_000_000)
        .unwrap();
    f.write_all_at(&pseudo_random(2 << 20, seed + 1), 4 << 20)
        .unwrap();
    f.write_all_at(&pseudo_random(3000, seed + 2), SIZE - 3000)
        .unwrap();
    raw
}

/// The sha256 of `raw` padded to whole sectors, as every VDI holds it.
fn padded_sha(raw: &Path) -> (u64, String) {
    use sha2::{Digest, Sha256};
    let mut bytes = std::fs::read(raw).unwrap();
    bytes.resize(bytes.len().next_multiple_of(512), 0);
    (bytes.len() as u64, hex::encode(Sha256::digest(&bytes)))
}

fn to_raw(image: &Path, out: &Path, extra: &[&str]) -> (i32, String) {
    let _ = std::fs::remove_file(out);
    let mut args = vec!["convert"];
    args.extend_from_slice(extra);
    args.extend(["-O", "raw", s(image), s(out)]);
    let (code, _, err) = run(&args);
    (code, err)
}

#[test]
fn what_qemu_img_writes_reads_bit_exact() {
    let test = "what_qemu_img_writes_reads_bit_exact";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = source(d, "src.raw", 1);
    for opts in ["static=off", "static=on"] {
        let img = d.join(format!("{opts}.vdi"));
        qemu_img_ok(&["convert", "-O", "vdi", "-o", opts, s(&raw), s(&img)]);
        let ours = d.join("ours.raw");
        let theirs = d.join("theirs.raw");
        assert_eq!(to_raw(&img, &ours, &[]).0, 0);
        qemu_img_ok(&["convert", "-O", "raw", s(&img), s(&theirs)]);
        assert_eq!(sha256_file(&ours), sha256_file(&theirs), "{opts}");
        // Allocation agrees with qemu-img's map: the zero block between the data is free.
        let map = run_ok(&["map", "--output", "json", s(&img)]);
        let theirs: serde_json::Value =
            serde_json::from_str(&qemu_img_ok(&["map", "--output=json", s(&img)])).unwrap();
        let ours: serde_json::Value = serde_json::from_str(&map).unwrap();
        let data = |v: &serde_json::Value| -> u64 {
            v.as_array()
                .unwrap()
                .iter()
                .filter(|m| m["data"] == true)
                .map(|m| m["length"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(data(&ours), data(&theirs), "{opts}: data bytes in the map");
        if opts == "static=off" {
            // Free blocks of a VDI without a parent are present zeros to qemu-img (compare -s
            // and map read them so), not ranges left to a backing file.
            assert_eq!(ours, theirs, "{opts}: map");
        }
    }
}

#[test]
fn what_diskferry_writes_is_identical_clean_and_read_alike() {
    let test = "what_diskferry_writes_is_identical_clean_and_read_alike";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = source(d, "src.raw", 2);
    let want = padded_sha(&raw);
    for (name, opts, to_stdout) in [
        ("dynamic", "", false),
        ("static", "static=on", false),
        ("stream", "", true),
        ("stream-static", "static=on", true),
    ] {
        let out = d.join(format!("{name}.vdi"));
        let mut args = vec!["convert", "-O", "vdi"];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        args.push(s(&raw));
        if to_stdout {
            args.push("-");
            let o = diskferry().args(&args).output().unwrap();
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::fs::write(&out, &o.stdout).unwrap();
        } else {
            args.push(s(&out));
            run_ok(&args);
        }
        assert!(
            qemu_compare("raw", &raw, "vdi", &out),
            "{name}: content differs"
        );
        let (code, o, e) = qemu_img(&["check", "-f", "vdi", s(&out)]);
        assert_eq!(code, 0, "{name}: qemu-img check: {o}{e}");
        let info: serde_json::Value =
            serde_json::from_str(&qemu_img_ok(&["info", "--output=json", s(&out)])).unwrap();
        assert_eq!(info["virtual-size"], want.0, "{name}");
        let Some(readings) = oracle_read(test, "vdi", &out) else {
            return;
        };
        for r in &readings {
            match (r.reader.as_str(), &r.result) {
                (_, Ok(got)) => assert_eq!(got, &want, "{name}: {} read otherwise", r.reader),
                // libyal has no VDI reader.
                ("libyal", Err(e)) if e == "n/a" => {}
                (reader, Err(e)) => panic!("{name}: {reader} could not read it: {e}"),
            }
        }
        assert!(
            readings
                .iter()
                .any(|r| r.reader == "dissect" && r.result.is_ok())
        );
    }
}

/// qemu reads 1 MiB blocks only; other block sizes are read back by diskferry and dissect.
#[test]
fn every_block_size_reads_back() {
    let test = "every_block_size_reads_back";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = source(d, "src.raw", 3);
    let want = padded_sha(&raw);
    for bs in ["4K", "64K", "512K", "2M", "8M", "64M"] {
        let out = d.join(format!("{bs}.vdi"));
        run_ok(&[
            "convert",
            "-O",
            "vdi",
            "-o",
            &format!("block_size={bs}"),
            s(&raw),
            s(&out),
        ]);
        let back = d.join("back.raw");
        assert_eq!(to_raw(&out, &back, &[]).0, 0);
        assert_eq!(padded_sha(&back), want, "block_size={bs}");
        // The smallest and largest are enough for the independent reader (each run of it
        // costs seconds).
        if !matches!(bs, "4K" | "64M") {
            continue;
        }
        let Some(readings) = oracle_read(test, "vdi", &out) else {
            continue;
        };
        for r in readings.iter().filter(|r| r.reader == "dissect") {
            assert_eq!(
                r.result.as_ref().ok(),
                Some(&want),
                "block_size={bs}: dissect"
            );
        }
    }
    let (code, _, err) = run(&[
        "create",
        "-f",
        "vdi",
        "-o",
        "block_size=3M",
        s(&d.join("x.vdi")),
        "1G",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("power of two"), "{err}");
}

/// A VirtualBox machine folder: `vm.vbox` naming the base disk and its snapshot chain in
/// `Snapshots/`, as VirtualBox lays them out.
struct Machine {
    folder: PathBuf,
    base: PathBuf,
    snaps: Vec<PathBuf>,
    raws: Vec<PathBuf>,
}

fn uuid_of(image: &Path) -> String {
    let info: serde_json::Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(image)])).unwrap();
    info["format-specific"]["data"]["uuid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn machine(dir: &Path) -> Machine {
    let folder = dir.join("vm");
    std::fs::create_dir_all(folder.join("Snapshots")).unwrap();
    let base_raw = source(dir, "base.raw", 10);
    let base = folder.join("vm.vdi");
    run_ok(&["convert", "-O", "vdi", s(&base_raw), s(&base)]);
    // Each snapshot changes a block, zeroes one the parent has, and leaves the rest.
    let mut raws = vec![base_raw.clone()];
    let mut snaps = Vec::new();
    let mut parent = base.clone();
    for i in 0..2u64 {
        let raw = dir.join(format!("snap{i}.raw"));
        std::fs::copy(raws.last().unwrap(), &raw).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.write_all_at(&pseudo_random(100_000, 20 + i), (2 << 20) + i * 300_000)
            .unwrap();
        f.write_all_at(&vec![0u8; 1 << 20], (4 + i) << 20).unwrap();
        let tmp = dir.join(format!("snap{i}.vdi"));
        // Made beside its parent (the backing name is resolved there), then moved to
        // Snapshots/ under its UUID as VirtualBox names it.
        let beside = parent.parent().unwrap().join("new.vdi");
        run_ok(&[
            "convert",
            "-O",
            "vdi",
            "-B",
            s(&parent),
            "-F",
            "vdi",
            s(&raw),
            s(&beside),
        ]);
        std::fs::rename(&beside, &tmp).unwrap();
        let uuid = uuid_of(&tmp);
        let snap = folder.join("Snapshots").join(format!("{{{uuid}}}.vdi"));
        std::fs::rename(&tmp, &snap).unwrap();
        raws.push(raw);
        snaps.push(snap.clone());
        parent = snap;
    }
    let base_uuid = uuid_of(&base);
    let s0 = uuid_of(&snaps[0]);
    let s1 = uuid_of(&snaps[1]);
    let vbox = format!(
        r#"<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{{0b1c2d3e-0000-4000-8000-000000000001}}" name="vm" OSType="Ubuntu_64" snapshotFolder="Snapshots">
    <MediaRegistry>
      <HardDisks>
        <HardDisk uuid="{{{base_uuid}}}" location="vm.vdi" format="VDI" type="Normal">
          <HardDisk uuid="{{{s0}}}" location="Snapshots/{{{s0}}}.vdi" format="VDI">
            <HardDisk uuid="{{{s1}}}" location="Snapshots/{{{s1}}}.vdi" format="VDI"/>
          </HardDisk>
        </HardDisk>
      </HardDisks>
    </MediaRegistry>
  </Machine>
</VirtualBox>
"#
    );
    std::fs::write(folder.join("vm.vbox"), vbox).unwrap();
    Machine {
        folder,
        base,
        snaps,
        raws,
    }
}

#[test]
fn snapshots_read_through_their_parents_found_by_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = machine(d);
    for (i, snap) in m.snaps.iter().enumerate() {
        let out = d.join("out.raw");
        let (code, err) = to_raw(snap, &out, &[]);
        assert_eq!(code, 0, "snapshot {i}: {err}");
        assert_eq!(padded_sha(&out), padded_sha(&m.raws[i + 1]), "snapshot {i}");
    }
    // The chain is listed as the machine file gives it.
    let info = run_ok(&["info", "--backing-chain", s(&m.snaps[1])]);
    assert!(info.contains("image type: differencing"), "{info}");
    assert!(info.contains("vm.vdi"), "{info}");
    // Without the machine file, the parent is still found by scanning the VDIs around.
    std::fs::remove_file(m.folder.join("vm.vbox")).unwrap();
    let out = d.join("out.raw");
    let (code, err) = to_raw(&m.snaps[1], &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(padded_sha(&out), padded_sha(&m.raws[2]));
    // Confined to the image's folder (the library's default, --confine), a parent in the
    // folder above is not looked for, and the error says where it looked.
    let (code, err) = to_raw(&m.snaps[0], &out, &["--confine"]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not found") && err.contains("'.'"), "{err}");
}

#[test]
fn differencing_images_match_qemu_img_with_the_parent_given() {
    let test = "differencing_images_match_qemu_img_with_the_parent_given";
    if !have_qemu(test) {
        return;
    }
    // qemu-img cannot read differencing VDIs; the child's content is the source it was made
    // from, compared by qemu-img against that raw source after diskferry flattens it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = machine(d);
    let flat = d.join("flat.vdi");
    run_ok(&["convert", "-O", "vdi", s(&m.snaps[1]), s(&flat)]);
    assert!(qemu_compare("raw", &m.raws[2], "vdi", &flat));
    let (code, o, e) = qemu_img(&["check", "-f", "vdi", s(&flat)]);
    assert_eq!(code, 0, "{o}{e}");
    let _ = m.base;
}

/// Rewrites 16 bytes of a VDI header.
fn poke(image: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn the_wrong_parent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = machine(d);
    let out = d.join("out.raw");
    // The parent modified after the snapshot was taken (its modification UUID changed):
    // refused, and read with --salvage, with a warning.
    poke(&m.base, 0x198, &[0x42; 16]);
    let (code, err) = to_raw(&m.snaps[0], &out, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("modified after"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = run(&["convert", "--salvage", "-O", "raw", s(&m.snaps[0]), s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("modified after"), "{err}");
    // A VDI whose linkage names no file around it: not found, one line.
    poke(&m.snaps[0], 0x1A8, &[0x17; 16]);
    let (code, err) = to_raw(&m.snaps[0], &out, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_parent_loop_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = source(d, "src.raw", 4);
    let a = d.join("a.vdi");
    run_ok(&["convert", "-O", "vdi", s(&raw), s(&a)]);
    let b = d.join("b.vdi");
    run_ok(&[
        "convert",
        "-O",
        "vdi",
        "-B",
        "a.vdi",
        "-F",
        "vdi",
        s(&raw),
        s(&b),
    ]);
    // Make a a differencing image of b: a -> b -> a.
    let b_uuid = std::fs::read(&b).unwrap()[0x188..0x198].to_vec();
    let b_modify = std::fs::read(&b).unwrap()[0x198..0x1A8].to_vec();
    poke(&a, 0x4C, &4u32.to_le_bytes());
    poke(&a, 0x1A8, &b_uuid);
    poke(&a, 0x1B8, &b_modify);
    let (code, err) = to_raw(&b, &d.join("out.raw"), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("loop"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_version_0_image_reads() {
    // The oldest header (innotek VirtualBox): no header size, no offsets (the block map follows
    // the 348-byte header), three UUIDs. Made by hand: 2 blocks of 1 MiB, the second stored.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v0.vdi");
    let mut b = vec![0u8; 0x48 + 348];
    b[..38].copy_from_slice(b"<<< innotek VirtualBox Disk Image >>>\n");
    b[0x40..0x44].copy_from_slice(&0xBEDA_107Fu32.to_le_bytes());
    b[0x44..0x48].copy_from_slice(&0x0000_0002u32.to_le_bytes());
    b[0x48..0x4C].copy_from_slice(&1u32.to_le_bytes());
    b[0x160..0x168].copy_from_slice(&(2u64 << 20).to_le_bytes());
    b[0x168..0x16C].copy_from_slice(&(1u32 << 20).to_le_bytes());
    b[0x16C..0x170].copy_from_slice(&2u32.to_le_bytes());
    b[0x170..0x174].copy_from_slice(&1u32.to_le_bytes());
    b[0x174..0x184].copy_from_slice(&[9u8; 16]);
    b[0x184..0x194].copy_from_slice(&[8u8; 16]);
    b.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    let data = pseudo_random(1 << 20, 5);
    b.extend_from_slice(&data);
    std::fs::write(&img, &b).unwrap();
    let out = dir.path().join("out.raw");
    let (code, err) = to_raw(&img, &out, &[]);
    assert_eq!(code, 0, "{err}");
    let got = std::fs::read(&out).unwrap();
    assert!(got[..1 << 20].iter().all(|&x| x == 0));
    assert_eq!(&got[1 << 20..], &data[..]);
    let info = run_ok(&["info", s(&img)]);
    assert!(info.contains("version: 0.2"), "{info}");
}

#[test]
fn corpus_vdis_convert_to_the_manifest_sha256() {
    let test = "corpus_vdis_convert_to_the_manifest_sha256";
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut checked = 0;
    for row in manifest(&shared) {
        if !row.format.starts_with("VDI") {
            continue;
        }
        let Some(want) = &row.raw_sha256 else {
            continue;
        };
        let image = corpus_file(&shared, &row.path, d);
        let out = d.join("out.raw");
        let (code, err) = to_raw(&image, &out, &[]);
        assert_eq!(code, 0, "{}: {err}", row.path);
        assert_eq!(&sha256_file(&out), want, "{}: wrong content", row.path);
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} corpus VDIs were checked");
}

/// A change to an image's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn damaged_headers_and_maps_give_one_line_naming_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = source(d, "src.raw", 6);
    let good = d.join("good.vdi");
    run_ok(&["convert", "-O", "vdi", s(&raw), s(&good)]);
    let bytes = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Damage, &str)> = vec![
        ("truncated header", Box::new(|b| b.truncate(0x100)), "0x100"),
        (
            "block size 3000",
            Box::new(|b| b[0x178..0x17C].copy_from_slice(&3000u32.to_le_bytes())),
            "0x178",
        ),
        (
            "huge block count",
            Box::new(|b| b[0x180..0x184].copy_from_slice(&u32::MAX.to_le_bytes())),
            "0x180",
        ),
        (
            "disk past its blocks",
            Box::new(|b| b[0x170..0x178].copy_from_slice(&(1u64 << 50).to_le_bytes())),
            "0x170",
        ),
        (
            "map over the header",
            Box::new(|b| b[0x154..0x158].copy_from_slice(&0x40u32.to_le_bytes())),
            "0x154",
        ),
        (
            "data over the map",
            Box::new(|b| b[0x158..0x15C].copy_from_slice(&0x1000u32.to_le_bytes())),
            "0x158",
        ),
        (
            "unknown type",
            Box::new(|b| b[0x4C..0x50].copy_from_slice(&9u32.to_le_bytes())),
            "0x4c",
        ),
        (
            "version 7",
            Box::new(|b| b[0x44..0x48].copy_from_slice(&0x0007_0001u32.to_le_bytes())),
            "0x44",
        ),
        (
            "block past the end",
            Box::new(|b| b[0x1000..0x1004].copy_from_slice(&100_000u32.to_le_bytes())),
            "0x1000",
        ),
    ];
    for (what, damage, offset) in cases {
        let mut b = bytes.clone();
        // The first block holds data in this source.
        assert_ne!(
            u32::from_le_bytes(b[0x1000..0x1004].try_into().unwrap()),
            u32::MAX
        );
        damage(&mut b);
        let img = d.join("bad.vdi");
        std::fs::write(&img, &b).unwrap();
        let (code, err) = to_raw(&img, &d.join("out.raw"), &["-f", "vdi"]);
        assert_eq!(code, 1, "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(err.contains("bad.vdi"), "{what}: {err}");
        assert!(
            err.to_lowercase().contains(offset),
            "{what}: no offset {offset}: {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

#[test]
fn check_finds_what_qemu_img_finds_and_repairs_what_is_safe() {
    let test = "check_finds_what_qemu_img_finds_and_repairs_what_is_safe";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = source(d, "src.raw", 7);
    let good = d.join("good.vdi");
    run_ok(&["convert", "-O", "vdi", s(&raw), s(&good)]);
    let (code, out, _) = run(&["check", s(&good)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No errors were found"), "{out}");
    let fresh = |name: &str| {
        let p = d.join(name);
        std::fs::copy(&good, &p).unwrap();
        p
    };
    // A wrong allocated count: a corruption for both tools (exit 2), repaired by -r all.
    let count = fresh("count.vdi");
    poke(&count, 0x184, &1u32.to_le_bytes());
    let (ours, _, _) = run(&["check", s(&count)]);
    let (theirs, _, _) = qemu_img(&["check", s(&count)]);
    assert_eq!((ours, theirs), (2, 2));
    let (code, out, err) = run(&["check", "-r", "all", s(&count)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(qemu_img(&["check", s(&count)]).0, 0);
    assert!(qemu_compare("raw", &raw, "vdi", &count));
    // Two blocks at one place: a corruption for both; -r all leaves it (exit 2).
    let dup = fresh("dup.vdi");
    let first = std::fs::read(&dup).unwrap()[0x1000..0x1004].to_vec();
    let entries = std::fs::read(&dup).unwrap()[0x1000..0x1000 + 40].to_vec();
    let second = entries
        .chunks(4)
        .skip(1)
        .position(|e| e != [0xff; 4])
        .unwrap()
        + 1;
    poke(&dup, 0x1000 + second as u64 * 4, &first);
    assert_eq!(run(&["check", s(&dup)]).0, 2);
    assert_eq!(qemu_img(&["check", s(&dup)]).0, 2);
    assert_eq!(run(&["check", "-r", "all", s(&dup)]).0, 2);
    // Space after the last block: a leak (exit 3), cut by -r leaks.
    let tail = fresh("tail.vdi");
    let len = std::fs::metadata(&tail).unwrap().len();
    poke(&tail, len + (3 << 20) - 1, &[0]);
    assert_eq!(run(&["check", s(&tail)]).0, 3);
    let (code, out, err) = run(&["check", "-r", "leaks", s(&tail)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::metadata(&tail).unwrap().len(), len);
    assert!(qemu_compare("raw", &raw, "vdi", &tail));
    // A block past the end: a corruption; -r all frees it and the rest reads as before.
    let past = fresh("past.vdi");
    poke(&past, 0x1000, &15u32.to_le_bytes());
    let (code, out, _) = run(&["check", "--output", "json", s(&past)]);
    assert_eq!(code, 2, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["corruptions"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(run(&["check", "-r", "all", s(&past)]).0, 0);
    assert_eq!(qemu_img(&["check", s(&past)]).0, 0);
}

/// dissect's VDI reader takes a differencing image's parent as an open stream: the chain is
/// handed to it explicitly, base first, and it must read what diskferry reads.
fn dissect_chain_sha(test: &str, chain: &[PathBuf]) -> Option<(u64, String)> {
    let shared = shared_dir(test)?;
    let env = std::process::Command::new(shared.join("tools/oracle-env"))
        .output()
        .ok()?;
    if !env.status.success() {
        skip(test, "oracle-env could not set up dissect");
        return None;
    }
    let python = String::from_utf8_lossy(&env.stdout).trim().to_string();
    let script = r#"
import hashlib, sys
from dissect.hypervisor.disk import vdi
stream = None
for path in sys.argv[1:]:
    d = vdi.VDI(open(path, "rb"), parent=stream)
    stream = d.open()
h = hashlib.sha256()
pos = 0
while pos < d.size:
    n = min(d.block_size - pos % d.block_size, d.size - pos)
    stream.seek(pos)
    b = stream.read(n)
    assert len(b) == n, (pos, len(b))
    h.update(b)
    pos += n
print(d.size, h.hexdigest())
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(chain)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dissect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let size = parts.next().unwrap().parse().unwrap();
    Some((size, parts.next().unwrap().to_string()))
}

#[test]
fn dissect_reads_snapshot_chains_as_diskferry_does() {
    let test = "dissect_reads_snapshot_chains_as_diskferry_does";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = machine(d);
    let mut chain = vec![m.base.clone()];
    for (i, snap) in m.snaps.iter().enumerate() {
        chain.push(snap.clone());
        let Some(theirs) = dissect_chain_sha(test, &chain) else {
            return;
        };
        let out = d.join("out.raw");
        assert_eq!(to_raw(snap, &out, &[]).0, 0);
        assert_eq!(padded_sha(&out), theirs, "snapshot {i}");
    }
}

#[test]
fn a_parent_named_by_the_user_is_read_and_still_verified() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = machine(d);
    // Moved away from its machine folder, the snapshot's parent cannot be found...
    let lone = d.join("elsewhere");
    std::fs::create_dir_all(lone.join("deeper")).unwrap();
    let snap = lone.join("deeper/snap.vdi");
    std::fs::copy(&m.snaps[0], &snap).unwrap();
    let out = d.join("out.raw");
    assert_ne!(to_raw(&snap, &out, &[]).0, 0);
    // ...until the user names it.
    let (code, err) = to_raw(&snap, &out, &["--parent", s(&m.base)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(padded_sha(&out), padded_sha(&m.raws[1]));
    // The wrong parent is refused all the same.
    let (code, err) = to_raw(&snap, &out, &["--parent", s(&m.snaps[1])]);
    assert_ne!(code, 0);
    assert!(err.contains("wrong parent"), "{err}");
    // A base image has no parent to name.
    let (code, err) = to_raw(&m.base, &out, &["--parent", s(&m.snaps[1])]);
    assert_ne!(code, 0);
    assert!(err.contains("no parent"), "{err}");
}

/// Found by fuzzing (vdi_parse): a block map longer than the disk needs, with an entry for a
/// block past the disk's end that points past the file. VirtualBox never reads such a block,
/// so check must not count its bytes as missing (it did, through an unsigned underflow).
#[test]
fn a_stored_block_past_the_disk_end_is_not_missing_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("small.raw");
    make_raw(&raw, 3 << 19, &[(0, 4096)]);
    let img = d.join("long-map.vdi");
    run_ok(&["convert", "-O", "vdi", s(&raw), s(&img)]);
    let mut b = std::fs::read(&img).unwrap();
    // Three blocks for a 1.5 MiB disk; the third, wholly past the disk's end, stored at place
    // 1, past the file.
    b[0x180..0x184].copy_from_slice(&3u32.to_le_bytes());
    b[0x1008..0x100C].copy_from_slice(&1u32.to_le_bytes());
    b[0x184..0x188].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    let (code, out, err) = run(&["check", "--output", "json", s(&img)]);
    assert_eq!(code, 0, "{out}{err}");
    let out_raw = d.join("out.raw");
    assert_eq!(to_raw(&img, &out_raw, &[]).0, 0);
    assert_eq!(padded_sha(&out_raw), padded_sha(&raw));
}
