//! The structures of a new VHDX file, as bytes: file identifier, both headers, both region
//! tables, the metadata region (with a parent locator for differencing disks) and BAT entries.
//!
//! ```text
//! 0         file identifier ("vhdxfile", creator)
//! 64 KiB    header 1, 128 KiB header 2 (the same content, sequence numbers 0 and 1)
//! 192 KiB   region table 1, 256 KiB region table 2 (identical)
//! 1 MiB     the log (empty: its GUID in the headers is zero, so nothing is replayed)
//! then      the metadata region (1 MiB: table, then items from 64 KiB)
//! then      the BAT region (its entries, rounded up to 1 MiB)
//! then      the payload blocks, each at a multiple of 1 MiB
//! ```
//!
//! Everything is aligned to 1 MiB as MS-VHDX requires of regions and blocks.

use super::guid::{
    FILE_PARAMETERS, Guid, LOCATOR_TYPE_VHDX, LOGICAL_SECTOR_SIZE, PAGE_83_DATA, PARENT_LOCATOR,
    PHYSICAL_SECTOR_SIZE, REGION_BAT, REGION_METADATA, VIRTUAL_DISK_SIZE,
};
use super::header::{HEADER_OFFSETS, HEADER_SIZE, checksum};

/// 1 MiB: the alignment of every region and block.
pub const MIB: u64 = 1 << 20;
/// Where the log starts.
pub const LOG_OFFSET: u64 = MIB;
/// Bytes of the metadata region.
pub const METADATA_LEN: u64 = MIB;
/// Where region table 1 and 2 are.
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// Bytes of a region table.
pub const REGION_TABLE_LEN: usize = 64 << 10;
/// Where metadata items start inside the region (after the table).
const ITEMS_AT: u32 = 64 << 10;

/// A BAT entry's payload states (bits 0-2).
pub const STATE_NOT_PRESENT: u64 = 0;
/// Zeros.
pub const STATE_ZERO: u64 = 2;
/// Stored in the file.
pub const STATE_FULLY_PRESENT: u64 = 6;
/// A sector bitmap block's entry: stored in the file.
pub const STATE_SB_PRESENT: u64 = 6;

/// A BAT entry: `state` at `offset` (a multiple of 1 MiB, or 0).
pub fn bat_entry(state: u64, offset: u64) -> u64 {
    debug_assert_eq!(offset % MIB, 0);
    state | ((offset / MIB) << 20)
}

/// Where everything goes, from the disk's shape.
#[derive(Debug, Clone, Copy)]
pub struct Places {
    /// Bytes of the log.
    pub log_len: u64,
    /// Where the metadata region starts.
    pub metadata: u64,
    /// Where the BAT region starts.
    pub bat: u64,
    /// Bytes of the BAT region.
    pub bat_len: u64,
    /// Where payload block place 0 starts.
    pub data: u64,
}

impl Places {
    /// The places for a log of `log_len` bytes and a BAT of `entries` entries.
    pub fn new(log_len: u64, entries: u64) -> Places {
        let metadata = LOG_OFFSET + log_len;
        let bat = metadata + METADATA_LEN;
        let bat_len = (entries * 8).max(1).next_multiple_of(MIB);
        Places {
            log_len,
            metadata,
            bat,
            bat_len,
            data: bat + bat_len,
        }
    }
}

/// What the headers and metadata say.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Bytes per payload block.
    pub block_size: u32,
    /// The virtual size.
    pub virtual_size: u64,
    /// 512 or 4096.
    pub logical_sector_size: u32,
    /// 512 or 4096.
    pub physical_sector_size: u32,
    /// Fixed disks keep their blocks allocated.
    pub leave_blocks_allocated: bool,
    /// The parent locator's key-value pairs (differencing disks).
    pub parent: Option<Vec<(String, String)>>,
    /// Changed whenever the file is written.
    pub file_write: Guid,
    /// Changed whenever the disk's content changes (a child's parent_linkage names it).
    pub data_write: Guid,
    /// The disk's SCSI identity.
    pub page83: Guid,
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

fn put_guid(b: &mut [u8], at: usize, g: &Guid) {
    b[at..at + 16].copy_from_slice(&g.to_bytes_le());
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|c| c.to_le_bytes()).collect()
}

/// The file identifier (64 KiB): signature and creator.
pub fn file_identifier(creator: &str) -> Vec<u8> {
    let mut b = vec![0u8; 64 << 10];
    b[..8].copy_from_slice(b"vhdxfile");
    let name = utf16(creator);
    let n = name.len().min(510);
    b[8..8 + n].copy_from_slice(&name[..n]);
    b
}

/// Header copy `copy` (0 or 1): the same content, sequence numbers 0 and 1, so the second is
/// current and the first a valid fallback.
pub fn header(id: &Identity, places: &Places, copy: usize) -> (u64, Vec<u8>) {
    let mut b = vec![0u8; HEADER_SIZE];
    b[..4].copy_from_slice(b"head");
    put64(&mut b, 8, copy as u64);
    put_guid(&mut b, 16, &id.file_write);
    put_guid(&mut b, 32, &id.data_write);
    // Log GUID zero: no log entries are valid, nothing to replay.
    put16(&mut b, 64, 0);
    put16(&mut b, 66, 1);
    put32(&mut b, 68, places.log_len as u32);
    put64(&mut b, 72, LOG_OFFSET);
    let crc = checksum(&b, 4);
    put32(&mut b, 4, crc);
    (HEADER_OFFSETS[copy], b)
}

/// A region table (both copies are identical): the BAT and the metadata, both required.
pub fn region_table(places: &Places) -> Vec<u8> {
    let mut b = vec![0u8; REGION_TABLE_LEN];
    b[..4].copy_from_slice(b"regi");
    put32(&mut b, 8, 2);
    for (i, (guid, offset, len)) in [
        (REGION_BAT, places.bat, places.bat_len),
        (REGION_METADATA, places.metadata, METADATA_LEN),
    ]
    .iter()
    .enumerate()
    {
        let at = 16 + i * 32;
        put_guid(&mut b, at, guid);
        put64(&mut b, at + 16, *offset);
        put32(&mut b, at + 24, *len as u32);
        put32(&mut b, at + 28, 1);
    }
    let crc = checksum(&b, 4);
    put32(&mut b, 4, crc);
    b
}

/// Metadata entry flags.
const IS_VIRTUAL_DISK: u32 = 2;
const IS_REQUIRED: u32 = 4;

/// The parent locator item: a header and UTF-16 keys and values.
pub(crate) fn locator(pairs: &[(String, String)]) -> Vec<u8> {
    let head = 20 + pairs.len() * 12;
    let mut b = vec![0u8; head];
    put_guid(&mut b, 0, &LOCATOR_TYPE_VHDX);
    put16(&mut b, 18, pairs.len() as u16);
    for (i, (k, v)) in pairs.iter().enumerate() {
        let key = utf16(k);
        let value = utf16(v);
        let at = 20 + i * 12;
        let key_at = b.len() as u32;
        b.extend_from_slice(&key);
        let value_at = b.len() as u32;
        b.extend_from_slice(&value);
        put32(&mut b, at, key_at);
        put32(&mut b, at + 4, value_at);
        put16(&mut b, at + 8, key.len() as u16);
        put16(&mut b, at + 10, value.len() as u16);
    }
    b
}

/// The metadata region (1 MiB): the table and its items.
pub fn metadata_region(id: &Identity) -> Vec<u8> {
    let mut params = vec![0u8; 8];
    put32(&mut params, 0, id.block_size);
    let flags = u32::from(id.leave_blocks_allocated) | (u32::from(id.parent.is_some()) << 1);
    put32(&mut params, 4, flags);
    let mut items: Vec<(Guid, u32, Vec<u8>)> = vec![
        (FILE_PARAMETERS, IS_REQUIRED, params),
        (
            VIRTUAL_DISK_SIZE,
            IS_VIRTUAL_DISK | IS_REQUIRED,
            id.virtual_size.to_le_bytes().to_vec(),
        ),
        (
            PAGE_83_DATA,
            IS_VIRTUAL_DISK | IS_REQUIRED,
            id.page83.to_bytes_le().to_vec(),
        ),
        (
            LOGICAL_SECTOR_SIZE,
            IS_VIRTUAL_DISK | IS_REQUIRED,
            id.logical_sector_size.to_le_bytes().to_vec(),
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            IS_VIRTUAL_DISK | IS_REQUIRED,
            id.physical_sector_size.to_le_bytes().to_vec(),
        ),
    ];
    if let Some(pairs) = &id.parent {
        items.push((PARENT_LOCATOR, IS_REQUIRED, locator(pairs)));
    }
    let mut b = vec![0u8; METADATA_LEN as usize];
    b[..8].copy_from_slice(b"metadata");
    put16(&mut b, 10, items.len() as u16);
    let mut at = ITEMS_AT;
    for (i, (guid, flags, data)) in items.iter().enumerate() {
        let e = 32 + i * 32;
        put_guid(&mut b, e, guid);
        put32(&mut b, e + 16, at);
        put32(&mut b, e + 20, data.len() as u32);
        put32(&mut b, e + 24, *flags);
        b[at as usize..at as usize + data.len()].copy_from_slice(data);
        // Items 8-byte aligned, as Hyper-V places them.
        at += (data.len() as u32).next_multiple_of(8);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_region_tables_carry_valid_checksums() {
        let id = Identity {
            block_size: 32 << 20,
            virtual_size: 1 << 30,
            logical_sector_size: 512,
            physical_sector_size: 4096,
            leave_blocks_allocated: false,
            parent: None,
            file_write: Guid::from_u128(1),
            data_write: Guid::from_u128(2),
            page83: Guid::from_u128(3),
        };
        let places = Places::new(MIB, 32);
        let (at, h) = header(&id, &places, 1);
        assert_eq!(at, 128 << 10);
        assert_eq!(
            checksum(&h, 4),
            u32::from_le_bytes(h[4..8].try_into().unwrap())
        );
        let r = region_table(&places);
        assert_eq!(
            checksum(&r, 4),
            u32::from_le_bytes(r[4..8].try_into().unwrap())
        );
        assert_eq!(places.metadata, 2 * MIB);
        assert_eq!(places.bat, 3 * MIB);
        assert_eq!(places.data, 4 * MIB);
    }

    #[test]
    fn bat_entries_hold_the_offset_in_mib() {
        assert_eq!(bat_entry(STATE_FULLY_PRESENT, 5 * MIB), 6 | (5 << 20));
    }
}
