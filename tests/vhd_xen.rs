//! XenServer and Xen Orchestra: dynamic VHDs with 2 MiB blocks that diskferry writes (to a file
//! and to a pipe) meet each rule of blktap's `vhd-util check` (vhd/lib/vhd-util-check.c,
//! libvhd.c) and of Xen Orchestra's vhd-lib (checkFooter.js, _checkHeader.js, VhdFile.js,
//! parseVhdStream.js, createVhdStreamWithLength.js). One test per rule; the rules are written
//! here from those sources, independently of diskferry's parser. Beyond the rules, Xen
//! Orchestra's own vhd-lib (tests/xo, installed by .ci/run) must accept and read them.

mod common;
mod vhd_support;

use common::*;
use vhd_support::*;

/// Images by how they were written ("file", "pipe").
type Images = Vec<(&'static str, Vec<u8>)>;

/// Dynamic VHDs with 2 MiB blocks from a 21 MiB + 2.5 KiB disk (no multiple of the block
/// size) with data in blocks 0, 1, 4 and the last: written to a file, and through a pipe.
fn images() -> Images {
    images_and_source().0
}

/// [`images`], and the size and sha256 of the disk they hold.
fn images_and_source() -> (Images, (u64, String)) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 21 * MIB + 2560;
    let raw = raw_with(
        d,
        "src.raw",
        size,
        &[
            (0, 4096),
            (2 * MIB - 512, 1024),
            (9 * MIB, 3 * 512),
            (size - 2048, 2048),
        ],
    );
    let file = d.join("file.vhd");
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        "-o",
        "subformat=dynamic,block_size=2M",
        raw.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let piped = diskferry()
        .args(["convert", "-O", "vhd", raw.to_str().unwrap(), "-"])
        .output()
        .unwrap();
    assert!(piped.status.success());
    (
        vec![
            ("file", std::fs::read(&file).unwrap()),
            ("pipe", piped.stdout),
        ],
        (size, sha256_file(&raw)),
    )
}

fn each(rule: impl Fn(&str, &[u8], &Layout)) {
    for (how, bytes) in images() {
        let layout = Layout::read(&bytes);
        rule(how, &bytes, &layout);
    }
}

/// blktap `vhd_end_of_headers`: the end of the header, the BAT (whole sectors) and the
/// parent locators.
fn end_of_headers(l: &Layout) -> u64 {
    let mut end = l.header_at + 1024;
    end = end.max(l.table_offset + (l.entries as u64 * 4).div_ceil(512).max(1) * 512);
    for (_, space, _, off) in l.locators() {
        let size = if space < 512 {
            space as u64 * 512
        } else {
            space as u64
        };
        end = end.max(off + size);
    }
    end
}

#[test]
fn footer_copy_at_offset_0_equals_the_end_footer() {
    // blktap: "primary and backup footers do not match"; vhd-lib: 'footer1 !== footer2'.
    each(|how, _, l| assert_eq!(l.copy, l.footer, "{how}"));
}

#[test]
fn footer_cookie_and_checksum_are_valid() {
    each(|how, _, l| {
        assert_eq!(&l.footer[..8], b"conectix", "{how}");
        assert_eq!(be32(&l.footer, 64), vhd_checksum(&l.footer, 64), "{how}");
    });
}

#[test]
fn footer_features_and_file_format_version() {
    // blktap: the reserved bit set, no bit but temporary and reserved; version 1.0.
    each(|how, _, l| {
        let features = be32(&l.footer, 8);
        assert!(
            features & 2 != 0 && features & !3 == 0,
            "{how}: {features:#x}"
        );
        assert_eq!(be32(&l.footer, 12), 0x0001_0000, "{how}");
    });
}

#[test]
fn footer_data_offset_is_512_and_the_header_follows() {
    // vhd-lib checkFooter: dataOffset === FOOTER_SIZE; it reads the header at 512.
    each(|how, bytes, l| {
        assert_eq!(be64(&l.footer, 16), 512, "{how}");
        assert_eq!(&bytes[512..520], b"cxsparse", "{how}");
    });
}

#[test]
fn disk_type_is_dynamic_and_original_size_not_above_current() {
    // vhd-lib checkFooter.
    each(|how, _, l| {
        assert_eq!(be32(&l.footer, 60), 3, "{how}");
        assert!(be64(&l.footer, 40) <= be64(&l.footer, 48), "{how}");
        assert_eq!(l.current_size(), 21 * MIB + 2560, "{how}: exact size");
    });
}

#[test]
fn creation_time_is_not_in_the_future() {
    // blktap: timestamp <= now + 1800 ("creation time in future").
    each(|how, _, l| {
        let ts = be32(&l.footer, 24);
        assert!(
            ts <= vhd_now() + 1800 && ts + 3600 > vhd_now(),
            "{how}: {ts}"
        );
    });
}

#[test]
fn geometry_is_not_larger_than_the_specification_gives() {
    // blktap: vhd_chs(curr_size) < geometry is "geometry too large".
    each(|how, _, l| {
        let geometry = be32(&l.footer, 56);
        assert!(
            geometry <= spec_chs(l.current_size()),
            "{how}: {geometry:#x}"
        );
        assert_eq!(
            geometry,
            spec_chs(l.current_size()),
            "{how}: the spec's own geometry"
        );
    });
}

#[test]
fn uuid_is_set_and_flags_and_reserved_bytes_are_clean() {
    // blktap: "invalid (NULL) uuid", saved and hidden 0 or 1, reserved bytes zero.
    each(|how, _, l| {
        assert_ne!(&l.footer[68..84], &[0u8; 16], "{how}");
        assert!(l.footer[84] <= 1 && l.footer[85] <= 1, "{how}");
        assert!(l.footer[86..].iter().all(|&b| b == 0), "{how}");
    });
}

#[test]
fn creator_is_not_tap_so_no_batmap_is_expected_and_none_is_written() {
    // libvhd vhd_has_batmap: only creators starting with "tap" have a batmap.
    each(|how, bytes, l| {
        assert_ne!(&l.footer[28..31], b"tap", "{how}");
        let after_bat = (l.table_offset + (l.entries as u64 * 4).div_ceil(512) * 512) as usize;
        assert_ne!(&bytes[after_bat..after_bat + 8], b"tdbatmap", "{how}");
    });
}

#[test]
fn header_cookie_checksum_version_and_data_offset() {
    // blktap validate_header; vhd-lib checkHeader (dataOffset all ones = undefined).
    each(|how, _, l| {
        assert_eq!(&l.header[..8], b"cxsparse", "{how}");
        assert_eq!(be32(&l.header, 36), vhd_checksum(&l.header, 36), "{how}");
        assert_eq!(be32(&l.header, 24), 0x0001_0000, "{how}");
        assert_eq!(be64(&l.header, 8), u64::MAX, "{how}");
    });
}

#[test]
fn bat_offset_is_sector_aligned_and_inside_the_file() {
    // blktap: table_offset > 0, % 512 == 0, table_offset + entries * 4 <= eof - footer.
    each(|how, _, l| {
        assert!(l.table_offset > 0 && l.table_offset % 512 == 0, "{how}");
        assert!(
            l.table_offset + l.entries as u64 * 4 <= l.len - 512,
            "{how}"
        );
    });
}

#[test]
fn block_size_is_2_mib() {
    // XenServer imports 2 MiB blocks only (blktap's VHD_BLOCK_SHIFT is 21); a power of two.
    each(|how, _, l| assert_eq!(l.block_size, 2 * MIB, "{how}"));
}

#[test]
fn header_reserved_fields_are_zero() {
    // blktap: res1 and res2 ("invalid reserved bits").
    each(|how, _, l| {
        assert_eq!(be32(&l.header, 60), 0, "{how}");
        assert!(l.header[768..].iter().all(|&b| b == 0), "{how}");
    });
}

#[test]
fn a_dynamic_disk_has_no_parent_fields() {
    // blktap: non-null parent name, locators, uuid or timestamp in a dynamic disk are invalid.
    each(|how, _, l| {
        assert!(
            l.header[40..60].iter().all(|&b| b == 0),
            "{how}: uuid and timestamp"
        );
        assert!(
            l.header[64..768].iter().all(|&b| b == 0),
            "{how}: name and locators"
        );
    });
}

#[test]
fn bat_has_exactly_one_entry_per_block_of_the_disk() {
    // vhd-lib: maxTableEntries >= currentSize / blockSize; blktap: curr_size >> 21 <= entries;
    // qemu bug LP 1870098: Azure and others want exactly ceil(size / block).
    each(|how, _, l| {
        assert_eq!(
            l.entries as u64,
            l.current_size().div_ceil(l.block_size),
            "{how}"
        );
    });
}

#[test]
fn blocks_lie_between_the_headers_and_the_footer() {
    // blktap check_bat: "clobbers headers" / "clobbers footer"; vhd-lib parseVhdStream:
    // every block at or after the end of the BAT.
    each(|how, _, l| {
        let eoh = end_of_headers(l);
        let full = l.bitmap_bytes() + l.block_size;
        let blocks = l.blocks();
        assert_eq!(blocks.len(), 4, "{how}: blocks 0, 1, 4 and the last");
        for (i, off) in blocks {
            assert!(off >= eoh, "{how}: block {i} at {off:#x} before {eoh:#x}");
            assert!(
                off + full <= l.len - 512,
                "{how}: block {i} runs into the footer"
            );
            assert_eq!(off % 512, 0, "{how}");
        }
    });
}

#[test]
fn blocks_do_not_overlap() {
    // blktap check_bat: "block %d clobbers block %d".
    each(|how, _, l| {
        let full = l.bitmap_bytes() + l.block_size;
        let blocks = l.blocks();
        for w in blocks.windows(2) {
            assert!(w[0].1 + full <= w[1].1, "{how}: {w:?}");
        }
    });
}

#[test]
fn sectors_whose_bitmap_bit_is_clear_hold_zeros() {
    // blktap check -b: "sector of block has data where bitmap is clear".
    each(|how, bytes, l| {
        let spb = (l.block_size / 512) as usize;
        for (i, off) in l.blocks() {
            let bitmap = &bytes[off as usize..off as usize + l.bitmap_bytes() as usize];
            let data = off as usize + l.bitmap_bytes() as usize;
            for s in 0..spb {
                if bitmap[s / 8] & (0x80 >> (s % 8)) == 0 {
                    let sector = &bytes[data + s * 512..data + (s + 1) * 512];
                    assert!(
                        sector.iter().all(|&b| b == 0),
                        "{how}: block {i} sector {s}"
                    );
                }
            }
        }
    });
}

#[test]
fn a_forward_only_reader_parses_it_as_xen_orchestra_does() {
    // vhd-lib parseVhdStream: footer at 0, header at 512, then parent locators and the BAT in
    // offset order, then blocks in offset order, never going back; the last 512 bytes equal
    // the first footer.
    each(|how, bytes, l| {
        let mut read = 0u64;
        let mut take = |off: u64, size: u64| {
            assert!(
                read <= off,
                "{how}: offset {off} is before what was read ({read})"
            );
            read = off + size;
        };
        take(0, 512);
        take(512, 1024);
        let bat_size = (l.entries as u64 * 4).div_ceil(512).max(1) * 512;
        let mut items: Vec<(u64, u64)> = l
            .locators()
            .iter()
            .filter(|loc| loc.1 != 0)
            .map(|loc| (loc.3, loc.2 as u64))
            .collect();
        items.push((l.table_offset, bat_size));
        items.sort();
        for (off, size) in items {
            take(off, size);
        }
        let full = l.bitmap_bytes() + l.block_size;
        for (_, off) in l.blocks() {
            assert!(off >= l.table_offset + bat_size, "{how}");
            take(off, full);
        }
        assert!(read <= l.len - 512, "{how}");
        assert_eq!(&bytes[bytes.len() - 512..], &bytes[..512], "{how}");
    });
}

#[test]
fn the_footer_follows_the_last_block_where_xen_orchestra_puts_it() {
    // vhd-lib createVhdStreamWithLength: the stream ends with the footer right after the
    // block with the highest sector (bitmap + block size); it cuts anything in between.
    each(|how, _, l| {
        let last = l.blocks().iter().map(|b| b.1).max().unwrap();
        let footer_offset = last + l.bitmap_bytes() + l.block_size;
        assert_eq!(footer_offset + 512, l.len, "{how}");
    });
}

#[test]
fn the_largest_disk_is_2040_gib() {
    // qemu's and Hyper-V's VHD_MAX_SECTORS (0xFF000000); XenServer's ~2 TiB limit.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("max.vhd");
    run_ok(&["create", "-f", "vhd", img.to_str().unwrap(), "2040G"]);
    let bytes = std::fs::read(&img).unwrap();
    let l = Layout::read(&bytes);
    assert_eq!(l.current_size(), 2040 << 30);
    assert_eq!(l.entries as u64, (2040u64 << 30) / (2 * MIB));
    assert_eq!(run(&["check", img.to_str().unwrap()]).0, 0);
    if have_qemu("the_largest_disk_is_2040_gib") {
        let info = qemu_img_ok(&[
            "info",
            "-f",
            "vpc",
            "--output",
            "json",
            img.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(v["virtual-size"], 2040u64 << 30);
    }
}

#[test]
fn a_xenserver_batmap_is_tolerated() {
    // blktap ("tap" creator, version 1.2 and later) keeps a batmap after the BAT: a
    // "tdbatmap" header sector, then one bit per block. Readers ignore it; check counts it as
    // metadata (a block over it is an overlap, it is no leak).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = raw_with(d, "r.raw", 6 * MIB, &[(0, 4096), (4 * MIB, 4096)]);
    let vhd = d.join("plain.vhd");
    run_ok(&[
        "convert",
        "-O",
        "vhd",
        raw.to_str().unwrap(),
        vhd.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&vhd).unwrap();
    let l = Layout::read(&bytes);
    let n = bytes.len();
    let mut tap = bytes.clone();
    for at in [0, n - 512] {
        tap[at + 28..at + 32].copy_from_slice(b"tap\0");
        put32(&mut tap, at + 32, 0x0001_0003);
        fix_footer(&mut tap[at..at + 512]);
    }
    // Our BAT ends at table_offset + 512; the first block's bitmap starts later (data is
    // 4 KiB-aligned), so the batmap fits in between: header sector, then the map sector.
    let hdr = (l.table_offset + 512) as usize;
    let map = hdr + 512;
    assert!(
        ((map + 512) as u64) <= l.blocks()[0].1,
        "room for the batmap"
    );
    tap[hdr..hdr + 8].copy_from_slice(b"tdbatmap");
    put64(&mut tap, hdr + 8, map as u64);
    put32(&mut tap, hdr + 16, 1);
    put32(&mut tap, hdr + 20, 0x0001_0002);
    tap[map] = 0b1010_0000; // blocks 0 and 2 full
    let sum = !tap[map..map + 512]
        .iter()
        .fold(0u32, |a, &b| a.wrapping_add(b as u32));
    put32(&mut tap, hdr + 24, sum);
    let p = d.join("tap.vhd");
    std::fs::write(&p, &tap).unwrap();
    assert_eq!(diskferry_sha(&p, None, d), sparse_sha256(&raw));
    let (code, out, _) = run(&["check", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", p.to_str().unwrap()])).unwrap();
    assert_eq!(v["format-specific"]["data"]["creator-app"], "tap\\0");
}

/// Xen Orchestra's own reader (vhd-lib from npm, tests/xo) accepts both images (checksums,
/// equal footer copies, its header rules) and reads the disk's exact content from them.
#[test]
fn xen_orchestra_vhd_lib_reads_the_same_bytes() {
    let test = "xen_orchestra_vhd_lib_reads_the_same_bytes";
    let xo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/xo");
    if !xo.join("node_modules/vhd-lib").is_dir() {
        skip(
            test,
            "vhd-lib is not installed (npm ci --prefix tests/xo, as .ci/run does)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (images, (size, sha)) = images_and_source();
    for (how, bytes) in images {
        let image = dir.path().join(format!("{how}.vhd"));
        std::fs::write(&image, bytes).unwrap();
        let out = match std::process::Command::new("node")
            .arg(xo.join("read-vhd.js"))
            .arg(&image)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                skip(test, &format!("cannot run node: {e}"));
                return;
            }
        };
        assert!(
            out.status.success(),
            "{how}: vhd-lib refused it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            format!("{{\"size\":{size},\"sha256\":\"{sha}\"}}"),
            "{how}"
        );
    }
}
