//! `bitmap` on images whose bitmap directory entries are damaged or unusual: the editor must
//! refuse or leak, never allocate what a damaged field asks for, and must keep every entry it
//! does not change as it is stored. The images are made by diskferry itself (`create`,
//! `bitmap --add`), so no qemu is needed; the entries are then changed byte by byte.

mod common;

use common::*;
use std::path::Path;

/// The bitmaps extension's type.
const EXT_BITMAPS: u32 = 0x2385_2875;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The offset of directory entry `index` of the qcow2 image `b`.
fn entry_offset(b: &[u8], index: usize) -> usize {
    let mut at = be32(b, 100) as usize;
    let directory = loop {
        let (kind, len) = (be32(b, at), be32(b, at + 4) as usize);
        assert_ne!(kind, 0, "no bitmaps extension");
        if kind == EXT_BITMAPS {
            break u64::from_be_bytes(b[at + 24..at + 32].try_into().unwrap()) as usize;
        }
        at += 8 + len.next_multiple_of(8);
    };
    let mut e = directory;
    for _ in 0..index {
        let name = usize::from(u16::from_be_bytes([b[e + 18], b[e + 19]]));
        e += (24 + be32(b, e + 20) as usize + name).next_multiple_of(8);
    }
    e
}

/// Writes `value` over `width` bytes at `field` of directory entry `index` of `img`.
fn patch_entry(img: &Path, index: usize, field: usize, value: &[u8]) {
    let mut b = std::fs::read(img).unwrap();
    let at = entry_offset(&b, index) + field;
    b[at..at + value.len()].copy_from_slice(value);
    std::fs::write(img, b).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 1 MiB qcow2 image of 4 KiB clusters with bitmaps `b0` (4 KiB) and `b1` (64 KiB).
fn small_image(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("img.qcow2");
    run_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        s(&img),
        "1M",
    ]);
    run_ok(&["bitmap", "--add", s(&img), "b0"]);
    run_ok(&["bitmap", "--add", "-g", "64K", s(&img), "b1"]);
    img
}

#[test]
fn removing_a_bitmap_whose_table_size_is_damaged_leaks_rather_than_allocating_it() {
    // b1's table is one entry; its entry claims 2^32 - 1 (32 GiB of table). Removing it read
    // that many bytes into memory to free what they name, and aborted on the allocation
    // (after the header was switched). The table is freed only when its size is the one the
    // granularity and the disk need; otherwise it is left as a leak.
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path());
    patch_entry(&img, 1, 8, &u32::MAX.to_be_bytes());
    let (code, _, err) = run(&["bitmap", "--remove", s(&img), "b1"]);
    assert_eq!(code, 0, "{err}");
    let info = run_ok(&["info", "--output=json", s(&img)]);
    assert!(
        info.contains("\"b0\"") && !info.contains("\"b1\""),
        "{info}"
    );
    let (code, out, err) = run(&["check", s(&img)]);
    assert!(matches!(code, 0 | 3), "check exit {code}: {out}{err}");
}

#[test]
fn clearing_a_bitmap_outside_qemus_constraints_is_refused_before_its_bits_are_allocated() {
    // A 128 PiB disk of 2 MiB clusters with a 2 GiB-granularity bitmap (8 MiB of bits),
    // whose granularity is then changed to 512 bytes: clearing it allocated the 32 TiB of
    // bits that granularity needs and aborted. It is now checked as merge checks the bitmaps
    // it loads (granularity, qemu's 512 MiB limit, the table's size), and refused with the
    // image unchanged.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("huge.qcow2");
    run_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=2M",
        s(&img),
        "128P",
    ]);
    run_ok(&["bitmap", "--add", "-g", "2G", s(&img), "b0"]);
    patch_entry(&img, 0, 17, &[9]);
    let before = std::fs::read(&img).unwrap();
    let (code, _, err) = run(&["bitmap", "--clear", s(&img), "b0"]);
    assert_ne!(code, 0);
    assert!(err.contains("b0") && err.contains("512 MiB"), "{err}");
    assert!(std::fs::read(&img).unwrap() == before, "the image changed");

    // A granularity of 2^0 bytes, outside qemu's 512 bytes to 2 GiB, is refused the same way
    // (it was cleared and written back with that granularity, which qemu cannot open).
    let img = small_image(dir.path());
    patch_entry(&img, 0, 17, &[0]);
    let before = std::fs::read(&img).unwrap();
    let (code, _, err) = run(&["bitmap", "--clear", s(&img), "b0"]);
    assert_ne!(code, 0);
    assert!(err.contains("granularity"), "{err}");
    assert!(std::fs::read(&img).unwrap() == before, "the image changed");
}

#[test]
fn a_bitmap_named_with_bytes_that_are_not_utf8_is_kept_whole_when_another_changes() {
    // qemu takes any bytes as a bitmap's name. An entry kept as stored was copied with the
    // length of its name read as UTF-8 (U+FFFD, three bytes, for each bad byte): for an
    // 8-byte name with one such byte, 8 bytes too many, the next entry's first ones, so
    // every entry after it was misplaced and qemu could no longer open the image.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img.qcow2");
    run_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        s(&img),
        "1M",
    ]);
    run_ok(&["bitmap", "--add", s(&img), "abcdefgh"]);
    run_ok(&["bitmap", "--add", s(&img), "second"]);
    patch_entry(&img, 0, 24, &[0xff]);
    let entry = |b: &[u8], i: usize| {
        let e = entry_offset(b, i);
        let name = usize::from(u16::from_be_bytes([b[e + 18], b[e + 19]]));
        (
            b[e + 16..e + 18].to_vec(),
            b[e + 24..e + 24 + name].to_vec(),
        )
    };
    let before = entry(&std::fs::read(&img).unwrap(), 0);
    run_ok(&["bitmap", "--disable", s(&img), "second"]);
    let after = std::fs::read(&img).unwrap();
    assert_eq!(entry(&after, 0), before);
    assert_eq!(entry(&after, 1).1, b"second");
    let info = run_ok(&["info", "--output=json", s(&img)]);
    assert!(info.contains("\"second\""), "{info}");
    let (code, out, err) = run(&["check", s(&img)]);
    assert_eq!(code, 0, "{out}{err}");
}
