//! Hand-built VMDK files for tests, made from the layouts in the specification (and libyal's
//! notes for COWD) with their own code, so that our reader is not checked against our writer
//! alone: stream-optimized files with chosen (possibly broken) grains, and COWD extents.
#![allow(dead_code)]

use flate2::Compression;
use flate2::write::ZlibEncoder;
use std::io::Write;

pub const SECTOR: usize = 512;

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A stream-optimized KDMV header: version 3, 64 KiB grains, a 2-sector descriptor at
/// sector 1, grains from sector 3, deflate.
pub fn kdmv_header(flags: u32, capacity: u64, gd: u64) -> Vec<u8> {
    let mut h = vec![0u8; SECTOR];
    h[0..4].copy_from_slice(b"KDMV");
    put_u32(&mut h, 4, 3);
    put_u32(&mut h, 8, flags);
    put_u64(&mut h, 12, capacity);
    put_u64(&mut h, 20, 128);
    put_u64(&mut h, 28, 1);
    put_u64(&mut h, 36, 2);
    put_u32(&mut h, 44, 512);
    put_u64(&mut h, 56, gd);
    put_u64(&mut h, 64, 3);
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&1u16.to_le_bytes());
    h
}

fn marker(value: u64, size: u32, kind: u32) -> Vec<u8> {
    let mut m = vec![0u8; SECTOR];
    put_u64(&mut m, 0, value);
    put_u32(&mut m, 8, size);
    put_u32(&mut m, 12, kind);
    m
}

fn pad(v: &mut Vec<u8>) {
    let n = v.len().div_ceil(SECTOR) * SECTOR;
    v.resize(n, 0);
}

/// One grain of a hand-built stream file: its LBA (sectors) and the zlib payload to store.
pub struct RawGrain {
    pub lba: u64,
    pub payload: Vec<u8>,
}

/// A stream-optimized VMDK with 64 KiB grains laid out as the specification says: header
/// (GD_AT_END), descriptor, grains, one grain table per 512 grains after its grains, grain
/// directory, footer, end-of-stream marker.
pub fn stream_vmdk(capacity_sectors: u64, grains: &[RawGrain]) -> Vec<u8> {
    let grain_sectors = 128u64;
    let flags: u32 = 1 | 0x10000 | 0x20000;
    let mut out = kdmv_header(flags, capacity_sectors, u64::MAX);
    let mut desc = format!(
        "# Disk DescriptorFile\nversion=1\nCID=01020304\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\nRW {capacity_sectors} SPARSE \"x.vmdk\"\n"
    )
    .into_bytes();
    desc.resize(2 * SECTOR, 0);
    out.extend_from_slice(&desc);
    let n_grains = capacity_sectors.div_ceil(grain_sectors);
    let n_gts = n_grains.div_ceil(512) as usize;
    let mut gts = vec![vec![0u32; 512]; n_gts];
    for g in grains {
        let sector = (out.len() / SECTOR) as u32;
        let mut m = marker(g.lba, g.payload.len() as u32, 0);
        m.truncate(12);
        m.extend_from_slice(&g.payload);
        pad(&mut m);
        out.extend_from_slice(&m);
        let gi = (g.lba / grain_sectors) as usize;
        gts[gi / 512][gi % 512] = sector;
    }
    let mut gd = vec![0u32; n_gts];
    for (i, gt) in gts.iter().enumerate() {
        if gt.iter().all(|&e| e == 0) {
            continue;
        }
        out.extend_from_slice(&marker(4, 0, 1));
        gd[i] = (out.len() / SECTOR) as u32;
        out.extend(gt.iter().flat_map(|e| e.to_le_bytes()));
    }
    let gd_sectors = (n_gts * 4).div_ceil(SECTOR) as u64;
    out.extend_from_slice(&marker(gd_sectors, 0, 2));
    let gd_offset = (out.len() / SECTOR) as u64;
    out.extend(gd.iter().flat_map(|e| e.to_le_bytes()));
    pad(&mut out);
    out.extend_from_slice(&marker(1, 0, 3));
    out.extend_from_slice(&kdmv_header(flags, capacity_sectors, gd_offset));
    out.extend_from_slice(&marker(0, 0, 0));
    out
}

/// A COWD extent (grains of `grain_sectors`, 4096-entry grain tables) holding `grains`:
/// (grain index, bytes of one grain).
pub fn cowd_extent(
    capacity_sectors: u32,
    grain_sectors: u32,
    grains: &[(u64, Vec<u8>)],
) -> Vec<u8> {
    let per_gt = 4096u64;
    let n_grains = u64::from(capacity_sectors.div_ceil(grain_sectors));
    let n_gts = n_grains.div_ceil(per_gt);
    let gd_offset = 4u64; // sectors, right after the 2048-byte header
    let gd_sectors = (n_gts * 4).div_ceil(512);
    let gt_sectors = per_gt * 4 / 512;
    let first_gt = gd_offset + gd_sectors;
    let mut next = first_gt + n_gts * gt_sectors;
    let mut gts = vec![vec![0u32; per_gt as usize]; n_gts as usize];
    let mut data = Vec::new();
    for (gi, bytes) in grains {
        assert_eq!(bytes.len(), grain_sectors as usize * SECTOR);
        gts[(gi / per_gt) as usize][(gi % per_gt) as usize] = next as u32;
        data.extend_from_slice(bytes);
        next += u64::from(grain_sectors);
    }
    let mut out = vec![0u8; 2048];
    out[0..4].copy_from_slice(b"COWD");
    put_u32(&mut out, 4, 1);
    put_u32(&mut out, 8, 3);
    put_u32(&mut out, 12, capacity_sectors);
    put_u32(&mut out, 16, grain_sectors);
    put_u32(&mut out, 20, gd_offset as u32);
    put_u32(&mut out, 24, n_gts as u32);
    put_u32(&mut out, 28, next as u32);
    let mut gd: Vec<u8> = (0..n_gts)
        .flat_map(|i| ((first_gt + i * gt_sectors) as u32).to_le_bytes())
        .collect();
    gd.resize((gd_sectors * 512) as usize, 0);
    out.extend_from_slice(&gd);
    for gt in &gts {
        out.extend(gt.iter().flat_map(|e| e.to_le_bytes()));
    }
    out.extend_from_slice(&data);
    out
}
