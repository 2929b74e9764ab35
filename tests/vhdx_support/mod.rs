//! Small VHDX files made by hand from MS-VHDX, for what qemu-img cannot make (4096-byte logical
//! sectors, differencing disks, pending logs) and for damaging on purpose. Written from the
//! specification independently of the reader, so a misreading on one side shows as a failure
//! (and the oracle readers check both sides against a third and fourth implementation).
#![allow(dead_code)]

use uuid::Uuid;

pub const MIB: u64 = 1 << 20;
pub const HEADER1: usize = 64 << 10;
pub const HEADER2: usize = 128 << 10;
pub const REGION1: usize = 192 << 10;
pub const REGION2: usize = 256 << 10;
pub const LOG_OFFSET: u64 = MIB;
pub const LOG_LENGTH: u64 = MIB;
pub const METADATA_OFFSET: u64 = 2 * MIB;
pub const BAT_OFFSET: u64 = 3 * MIB;

pub const BAT_GUID: Uuid = uuid::uuid!("2DC27766-F623-4200-9D64-115E9BFD4A08");
pub const METADATA_GUID: Uuid = uuid::uuid!("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const FILE_PARAMETERS: Uuid = uuid::uuid!("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const VIRTUAL_DISK_SIZE: Uuid = uuid::uuid!("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const PAGE_83: Uuid = uuid::uuid!("BECA12AB-B2E6-4523-93EF-C309E000C746");
const LOGICAL_SECTOR: Uuid = uuid::uuid!("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const PHYSICAL_SECTOR: Uuid = uuid::uuid!("CDA348C7-445D-4471-9CC9-E9885251C556");
const PARENT_LOCATOR: Uuid = uuid::uuid!("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
const LOCATOR_TYPE: Uuid = uuid::uuid!("B04AEFB7-D19E-4A81-B789-25B8E9445913");

/// What one payload block holds.
#[derive(Clone, Debug)]
pub enum Block {
    /// FULLY_PRESENT with these bytes (the block's length, or the disk's tail).
    Full(Vec<u8>),
    /// PARTIALLY_PRESENT: bytes, and which logical sectors are stored.
    Partial(Vec<u8>, Vec<bool>),
    /// A state without data (0, 1, 2, 3).
    State(u64),
}

/// A disk to make.
#[derive(Clone, Debug)]
pub struct Spec {
    pub virtual_size: u64,
    pub block_size: u64,
    pub logical_sector: u32,
    pub physical_sector: u32,
    pub fixed: bool,
    /// Parent locator pairs: a differencing disk when `Some`.
    pub parent: Option<Vec<(String, String)>>,
    pub data_write_guid: Uuid,
    pub blocks: Vec<(u64, Block)>,
}

impl Spec {
    pub fn new(virtual_size: u64, block_size: u64) -> Spec {
        Spec {
            virtual_size,
            block_size,
            logical_sector: 512,
            physical_sector: 4096,
            fixed: false,
            parent: None,
            data_write_guid: Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888),
            blocks: Vec::new(),
        }
    }

    pub fn chunk_ratio(&self) -> u64 {
        (1u64 << 23) * u64::from(self.logical_sector) / self.block_size
    }

    pub fn data_blocks(&self) -> u64 {
        self.virtual_size.div_ceil(self.block_size)
    }

    pub fn total_entries(&self) -> u64 {
        let d = self.data_blocks();
        let cr = self.chunk_ratio();
        if self.parent.is_some() {
            d.div_ceil(cr) * (cr + 1)
        } else if d == 0 {
            0
        } else {
            d + (d - 1) / cr
        }
    }

    /// The file offset of BAT entry `index`.
    pub fn entry_offset(index: u64) -> usize {
        (BAT_OFFSET + index * 8) as usize
    }

    /// The BAT index of payload block `block`.
    pub fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio()
    }

    /// The disk's content as a reader without its parent sees it (absent sectors as zeros).
    pub fn content(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.virtual_size as usize];
        let ss = self.logical_sector as usize;
        for (block, b) in &self.blocks {
            let start = (*block * self.block_size) as usize;
            match b {
                Block::Full(bytes) => out[start..start + bytes.len()].copy_from_slice(bytes),
                Block::Partial(bytes, present) => {
                    for (i, p) in present.iter().enumerate() {
                        let at = i * ss;
                        if *p && at < bytes.len() {
                            out[start + at..start + at + ss].copy_from_slice(&bytes[at..at + ss]);
                        }
                    }
                }
                Block::State(_) => {}
            }
        }
        out
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn put_guid(b: &mut [u8], at: usize, g: &Uuid) {
    b[at..at + 16].copy_from_slice(&g.to_bytes_le());
}

/// CRC-32C of `b` with its checksum field (4 bytes at `field`) zeroed, stored there.
pub fn seal(b: &mut [u8], field: usize) {
    b[field..field + 4].fill(0);
    let sum = crc32c::crc32c(b);
    put32(b, field, sum);
}

/// Writes header `copy` (1 or 2) with sequence number `seq` and log GUID `log_guid`.
pub fn write_header(
    file: &mut [u8],
    copy: usize,
    seq: u64,
    data_write_guid: &Uuid,
    log_guid: &Uuid,
) {
    let at = if copy == 1 { HEADER1 } else { HEADER2 };
    let h = &mut file[at..at + 4096];
    h.fill(0);
    h[..4].copy_from_slice(b"head");
    put64(h, 8, seq);
    put_guid(h, 16, &Uuid::from_u128(0xF11E));
    put_guid(h, 32, data_write_guid);
    put_guid(h, 48, log_guid);
    put16(h, 64, 0);
    put16(h, 66, 1);
    put32(h, 68, LOG_LENGTH as u32);
    put64(h, 72, LOG_OFFSET);
    seal(h, 4);
}

/// Writes both region tables with `entries` (guid, offset, length, required).
pub fn write_regions(file: &mut [u8], entries: &[(Uuid, u64, u32, bool)]) {
    for at in [REGION1, REGION2] {
        let t = &mut file[at..at + (64 << 10)];
        t.fill(0);
        t[..4].copy_from_slice(b"regi");
        put32(t, 8, entries.len() as u32);
        for (i, (g, off, len, req)) in entries.iter().enumerate() {
            let e = 16 + 32 * i;
            put_guid(t, e, g);
            put64(t, e + 16, *off);
            put32(t, e + 24, *len);
            put32(t, e + 28, u32::from(*req));
        }
        seal(t, 4);
    }
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// The metadata table entries written: (guid, offset in region, length, flags).
pub fn metadata_items(spec: &Spec) -> Vec<(Uuid, u32, Vec<u8>, u32)> {
    let mut fp = vec![0u8; 8];
    put32(&mut fp, 0, spec.block_size as u32);
    put32(
        &mut fp,
        4,
        u32::from(spec.fixed) | (u32::from(spec.parent.is_some()) << 1),
    );
    let mut items = vec![
        (FILE_PARAMETERS, fp, 4u32),
        (
            VIRTUAL_DISK_SIZE,
            spec.virtual_size.to_le_bytes().to_vec(),
            6,
        ),
        (PAGE_83, Uuid::from_u128(0x83).to_bytes_le().to_vec(), 6),
        (
            LOGICAL_SECTOR,
            spec.logical_sector.to_le_bytes().to_vec(),
            6,
        ),
        (
            PHYSICAL_SECTOR,
            spec.physical_sector.to_le_bytes().to_vec(),
            6,
        ),
    ];
    if let Some(pairs) = &spec.parent {
        let mut b = vec![0u8; 20 + 12 * pairs.len()];
        put_guid(&mut b, 0, &LOCATOR_TYPE);
        put16(&mut b, 18, pairs.len() as u16);
        for (i, (k, v)) in pairs.iter().enumerate() {
            let (k, v) = (utf16(k), utf16(v));
            let e = 20 + 12 * i;
            let ko = b.len();
            b.extend_from_slice(&k);
            let vo = b.len();
            b.extend_from_slice(&v);
            put32(&mut b, e, ko as u32);
            put32(&mut b, e + 4, vo as u32);
            put16(&mut b, e + 8, k.len() as u16);
            put16(&mut b, e + 10, v.len() as u16);
        }
        items.push((PARENT_LOCATOR, b, 4));
    }
    let mut at = 64u32 << 10;
    items
        .into_iter()
        .map(|(g, b, f)| {
            let o = at;
            at += b.len().div_ceil(8) as u32 * 8;
            (g, o, b, f)
        })
        .collect()
}

/// Writes the metadata region (table and items).
pub fn write_metadata(file: &mut [u8], items: &[(Uuid, u32, Vec<u8>, u32)]) {
    let base = METADATA_OFFSET as usize;
    file[base..base + MIB as usize].fill(0);
    file[base..base + 8].copy_from_slice(b"metadata");
    put16(file, base + 10, items.len() as u16);
    for (i, (g, off, bytes, flags)) in items.iter().enumerate() {
        let e = base + 32 + 32 * i;
        put_guid(file, e, g);
        put32(file, e + 16, *off);
        put32(file, e + 20, bytes.len() as u32);
        put32(file, e + 24, *flags);
        let at = base + *off as usize;
        file[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

/// The whole file for `spec`.
pub fn build(spec: &Spec) -> Vec<u8> {
    let entries = spec.total_entries();
    let bat_len = (entries * 8).div_ceil(MIB).max(1) * MIB;
    let mut end = BAT_OFFSET + bat_len;
    let mut file = vec![0u8; end as usize];
    file[..8].copy_from_slice(b"vhdxfile");
    let creator = utf16("diskferry tests");
    file[8..8 + creator.len()].copy_from_slice(&creator);
    write_header(&mut file, 1, 1, &spec.data_write_guid, &Uuid::nil());
    write_header(&mut file, 2, 2, &spec.data_write_guid, &Uuid::nil());
    write_regions(
        &mut file,
        &[
            (BAT_GUID, BAT_OFFSET, bat_len as u32, true),
            (METADATA_GUID, METADATA_OFFSET, MIB as u32, true),
        ],
    );
    write_metadata(&mut file, &metadata_items(spec));
    let cr = spec.chunk_ratio();
    let ss = spec.logical_sector as usize;
    let spb = (spec.block_size / u64::from(spec.logical_sector)) as usize;
    // Sector bitmaps first (one 1 MiB block per chunk holding a partial block).
    let mut bitmaps: std::collections::BTreeMap<u64, u64> = Default::default();
    for (block, b) in &spec.blocks {
        if let Block::Partial(_, present) = b {
            let chunk = block / cr;
            let at = *bitmaps.entry(chunk).or_insert_with(|| {
                let at = end;
                end += MIB;
                file.resize(end as usize, 0);
                at
            });
            let first = ((block % cr) as usize) * spb;
            for (i, p) in present.iter().enumerate() {
                if *p {
                    let bit = first + i;
                    file[at as usize + bit / 8] |= 1 << (bit % 8);
                }
            }
        }
    }
    for (chunk, at) in &bitmaps {
        let index = chunk * (cr + 1) + cr;
        put64(&mut file, Spec::entry_offset(index), at | 6);
    }
    for (block, b) in &spec.blocks {
        let index = spec.payload_index(*block);
        let entry = match b {
            Block::State(s) => *s,
            Block::Full(bytes) | Block::Partial(bytes, _) => {
                let at = end;
                end += spec.block_size.div_ceil(MIB) * MIB;
                file.resize(end as usize, 0);
                file[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
                if let Block::Partial(_, present) = b {
                    // Sectors not present hold garbage: a reader must not use them.
                    for (i, p) in present.iter().enumerate() {
                        if !*p {
                            file[at as usize + i * ss..at as usize + (i + 1) * ss].fill(0xEE);
                        }
                    }
                }
                at | if matches!(b, Block::Full(_)) { 6 } else { 7 }
            }
        };
        put64(&mut file, Spec::entry_offset(index), entry);
    }
    file
}

/// One log descriptor.
pub enum Desc {
    Data { file_offset: u64, sector: Vec<u8> },
    Zero { file_offset: u64, length: u64 },
}

/// A log entry: header, descriptors, data sectors; sealed with its CRC-32C.
pub fn log_entry(
    seq: u64,
    tail: u32,
    log_guid: &Uuid,
    flushed: u64,
    last: u64,
    descs: &[Desc],
) -> Vec<u8> {
    let desc_sectors = (64 + 32 * descs.len()).div_ceil(4096);
    let data: Vec<&Vec<u8>> = descs
        .iter()
        .filter_map(|d| match d {
            Desc::Data { sector, .. } => Some(sector),
            Desc::Zero { .. } => None,
        })
        .collect();
    let len = (desc_sectors + data.len()) * 4096;
    let mut e = vec![0u8; len];
    e[..4].copy_from_slice(b"loge");
    put32(&mut e, 8, len as u32);
    put32(&mut e, 12, tail);
    put64(&mut e, 16, seq);
    put32(&mut e, 24, descs.len() as u32);
    put_guid(&mut e, 32, log_guid);
    put64(&mut e, 48, flushed);
    put64(&mut e, 56, last);
    let mut sector_at = desc_sectors * 4096;
    for (i, d) in descs.iter().enumerate() {
        let at = 64 + 32 * i;
        match d {
            Desc::Data {
                file_offset,
                sector,
            } => {
                e[at..at + 4].copy_from_slice(b"desc");
                e[at + 4..at + 8].copy_from_slice(&sector[4092..4096]);
                e[at + 8..at + 16].copy_from_slice(&sector[..8]);
                put64(&mut e, at + 16, *file_offset);
                put64(&mut e, at + 24, seq);
                let s = &mut e[sector_at..sector_at + 4096];
                s[..4].copy_from_slice(b"data");
                put32(s, 4, (seq >> 32) as u32);
                s[8..4092].copy_from_slice(&sector[8..4092]);
                put32(s, 4092, seq as u32);
                sector_at += 4096;
            }
            Desc::Zero {
                file_offset,
                length,
            } => {
                e[at..at + 4].copy_from_slice(b"zero");
                put64(&mut e, at + 8, *length);
                put64(&mut e, at + 16, *file_offset);
                put64(&mut e, at + 24, seq);
            }
        }
    }
    seal(&mut e, 4);
    e
}

/// Puts `entries` (offset in the log, bytes) in the log and names the log in both headers.
pub fn add_log(file: &mut [u8], spec: &Spec, log_guid: &Uuid, entries: &[(u64, Vec<u8>)]) {
    for (at, bytes) in entries {
        for (i, b) in bytes.iter().enumerate() {
            let pos = (at + i as u64) % LOG_LENGTH;
            file[(LOG_OFFSET + pos) as usize] = *b;
        }
    }
    write_header(file, 1, 1, &spec.data_write_guid, log_guid);
    write_header(file, 2, 2, &spec.data_write_guid, log_guid);
}

/// Re-seals both region tables after their entries were changed in place.
pub fn reseal_regions(file: &mut [u8]) {
    for at in [REGION1, REGION2] {
        seal(&mut file[at..at + (64 << 10)], 4);
    }
}
