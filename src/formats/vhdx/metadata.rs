//! The metadata region: a table of items (file parameters, virtual disk size, page 83 data,
//! sector sizes, parent locator), each located by an offset inside the region.
//!
//! Every item is bounded by the region before it is read, so a hostile table cannot make the
//! reader look outside it or allocate more than an item may hold (1 MiB).

use super::guid::{self, Guid, read_guid};
use super::header::{le16, le32, le64};
use super::region::Region;
use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};

/// Bytes of the metadata table at the start of the region.
pub const TABLE_SIZE: u64 = 64 << 10;

/// The most entries the table may have.
pub const MAX_ENTRIES: u16 = 2047;

/// The largest item the specification allows.
pub const MAX_ITEM: u32 = 1 << 20;

/// The largest virtual disk the specification allows (64 TiB).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// The smallest and largest block sizes.
pub const BLOCK_SIZES: std::ops::RangeInclusive<u64> = (1 << 20)..=(256 << 20);

/// A parent locator: its key-value pairs, as stored (keys such as `parent_linkage`,
/// `relative_path`, `volume_path`, `absolute_win32_path`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentLocator {
    /// The pairs in file order.
    pub entries: Vec<(String, String)>,
    /// Where the locator item starts in the file, for messages.
    pub offset: u64,
}

impl ParentLocator {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The metadata a reader needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Bytes of a payload block: a power of two from 1 MiB to 256 MiB.
    pub block_size: u64,
    /// True for a fixed disk (blocks stay allocated).
    pub leave_blocks_allocated: bool,
    /// True for a differencing disk.
    pub has_parent: bool,
    /// The size of the virtual disk.
    pub virtual_size: u64,
    /// The disk's identity (SCSI page 83).
    pub page83: Guid,
    /// 512 or 4096.
    pub logical_sector_size: u32,
    /// 512 or 4096.
    pub physical_sector_size: u32,
    /// The parent locator (differencing disks).
    pub parent_locator: Option<ParentLocator>,
}

struct Item {
    id: Guid,
    /// File offset of the item.
    at: u64,
    length: u32,
    /// File offset of the table entry, for messages.
    entry_at: u64,
}

/// One entry of the metadata table, as stored (MS-VHDX 2.6.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The item's GUID.
    pub id: Guid,
    /// Where the item starts, from the start of the region.
    pub offset: u32,
    /// Bytes of the item.
    pub length: u32,
    /// IsUser (1), IsVirtualDisk (2), IsRequired (4).
    pub flags: u32,
}

/// The entries of the metadata table in `region`, in table order, for a table [`read`] has
/// accepted (a writer rebuilding the region keeps every item, known or not).
pub fn table_entries(file: &dyn Storage, region: Region) -> Result<Vec<TableEntry>> {
    let table = file.read_vec(region.offset, TABLE_SIZE, "metadata table")?;
    let count = usize::from(le16(&table, 10).min(MAX_ENTRIES));
    Ok((0..count)
        .map(|i| {
            let e = 32 + 32 * i;
            TableEntry {
                id: read_guid(&table, e),
                offset: le32(&table, e + 16),
                length: le32(&table, e + 20),
                flags: le32(&table, e + 24),
            }
        })
        .collect())
}

/// Reads and validates the metadata in `region`.
pub fn read(file: &dyn Storage, region: Region) -> Result<Metadata> {
    let name = file.name().to_path_buf();
    let corrupt = |why: String, at: u64| Error::corrupt(why).at_offset(at).with_path(&name);
    if region.length < TABLE_SIZE {
        return Err(corrupt(
            format!(
                "the metadata region ({} bytes) is smaller than its 64 KiB table",
                region.length
            ),
            region.offset,
        ));
    }
    let table = file.read_vec(region.offset, TABLE_SIZE, "metadata table")?;
    if &table[..8] != b"metadata" {
        return Err(corrupt(
            "the metadata table has no 'metadata' signature".into(),
            region.offset,
        ));
    }
    let count = le16(&table, 10);
    if count > MAX_ENTRIES {
        return Err(corrupt(
            format!(
                "the metadata table claims {count} entries, more than the {MAX_ENTRIES} that fit"
            ),
            region.offset + 10,
        ));
    }
    let mut items: Vec<Item> = Vec::new();
    for i in 0..usize::from(count) {
        let e = 32 + 32 * i;
        let entry_at = region.offset + e as u64;
        let id = read_guid(&table, e);
        let offset = le32(&table, e + 16);
        let length = le32(&table, e + 20);
        let flags = le32(&table, e + 24);
        let required = flags & 4 != 0;
        let known = [
            guid::FILE_PARAMETERS,
            guid::VIRTUAL_DISK_SIZE,
            guid::PAGE_83_DATA,
            guid::LOGICAL_SECTOR_SIZE,
            guid::PHYSICAL_SECTOR_SIZE,
            guid::PARENT_LOCATOR,
        ]
        .contains(&id);
        if !known && required {
            return Err(Error::unsupported(format!(
                "metadata item {} is marked required but is unknown to diskferry, which cannot read the disk without it",
                guid::braced(&id)
            ))
            .at_offset(entry_at)
            .with_path(&name));
        }
        if length > MAX_ITEM {
            return Err(corrupt(
                format!(
                    "metadata item {} is {length} bytes, more than the 1 MiB an item may hold",
                    guid::braced(&id)
                ),
                entry_at + 20,
            ));
        }
        if length > 0
            && (u64::from(offset) < TABLE_SIZE
                || u64::from(offset) + u64::from(length) > region.length)
        {
            return Err(corrupt(
                format!(
                    "metadata item {} ({length} bytes at {offset:#x} in the region) lies outside the metadata region ({} bytes after its table)",
                    guid::braced(&id),
                    region.length
                ),
                entry_at + 16,
            ));
        }
        if items.iter().any(|it| it.id == id) {
            return Err(corrupt(
                format!("metadata item {} is listed twice", guid::braced(&id)),
                entry_at,
            ));
        }
        if known {
            items.push(Item {
                id,
                at: region.offset + u64::from(offset),
                length,
                entry_at,
            });
        }
    }
    let find = |id: Guid, what: &str, min: u32| -> Result<Option<Vec<u8>>> {
        let Some(item) = items.iter().find(|it| it.id == id) else {
            return Ok(None);
        };
        if item.length < min {
            return Err(corrupt(
                format!(
                    "the {what} metadata item is {} bytes, too short (at least {min})",
                    item.length
                ),
                item.entry_at + 20,
            ));
        }
        file.read_vec(item.at, u64::from(item.length), what)
            .map(Some)
    };
    let need = |v: Option<Vec<u8>>, what: &str| {
        v.ok_or_else(|| {
            corrupt(
                format!("the required {what} metadata item is missing"),
                region.offset,
            )
        })
    };
    let item_at = |id: Guid| items.iter().find(|it| it.id == id).map_or(0, |it| it.at);

    let params = need(
        find(guid::FILE_PARAMETERS, "file parameters", 8)?,
        "file parameters",
    )?;
    let block_size = u64::from(le32(&params, 0));
    let flags = le32(&params, 4);
    if !block_size.is_power_of_two() || !BLOCK_SIZES.contains(&block_size) {
        return Err(corrupt(
            format!("block size {block_size} is not a power of two from 1 MiB to 256 MiB"),
            item_at(guid::FILE_PARAMETERS),
        ));
    }
    let size = need(
        find(guid::VIRTUAL_DISK_SIZE, "virtual disk size", 8)?,
        "virtual disk size",
    )?;
    let virtual_size = le64(&size, 0);
    if virtual_size > MAX_VIRTUAL_SIZE {
        return Err(corrupt(
            format!("virtual disk size {virtual_size} is larger than VHDX allows (64 TiB)"),
            item_at(guid::VIRTUAL_DISK_SIZE),
        ));
    }
    let page83 = need(
        find(guid::PAGE_83_DATA, "page 83 data", 16)?,
        "page 83 data",
    )?;
    let sector = |id: Guid, what: &str| -> Result<u32> {
        let b = need(find(id, what, 4)?, what)?;
        match le32(&b, 0) {
            v @ (512 | 4096) => Ok(v),
            v => Err(corrupt(
                format!("{what} {v} is neither 512 nor 4096"),
                item_at(id),
            )),
        }
    };
    let logical_sector_size = sector(guid::LOGICAL_SECTOR_SIZE, "logical sector size")?;
    let physical_sector_size = sector(guid::PHYSICAL_SECTOR_SIZE, "physical sector size")?;
    let has_parent = flags & 2 != 0;
    let parent_locator = if has_parent {
        let b = need(
            find(guid::PARENT_LOCATOR, "parent locator", 20)?,
            "parent locator",
        )?;
        Some(parse_locator(&b, item_at(guid::PARENT_LOCATOR)).map_err(|e| e.with_path(&name))?)
    } else {
        None
    };
    Ok(Metadata {
        block_size,
        leave_blocks_allocated: flags & 1 != 0,
        has_parent,
        virtual_size,
        page83: read_guid(&page83, 0),
        logical_sector_size,
        physical_sector_size,
        parent_locator,
    })
}

/// Parses a parent locator item (`b`, which starts at file offset `at`): a type GUID, then
/// key-value entries whose UTF-16LE strings lie inside the item.
pub fn parse_locator(b: &[u8], at: u64) -> Result<ParentLocator> {
    let locator_type = read_guid(b, 0);
    if locator_type != guid::LOCATOR_TYPE_VHDX {
        return Err(Error::unsupported(format!(
            "parent locator type {} is not the VHDX one; diskferry cannot find this parent",
            guid::braced(&locator_type)
        ))
        .at_offset(at));
    }
    let count = usize::from(le16(b, 18));
    if 20 + 12 * count > b.len() {
        return Err(Error::corrupt(format!(
            "parent locator claims {count} entries, more than its {} bytes hold",
            b.len()
        ))
        .at_offset(at + 18));
    }
    let text = |offset: u32, length: u16, entry: usize, what: &str| -> Result<String> {
        let (start, len) = (offset as usize, usize::from(length));
        if start.checked_add(len).is_none_or(|end| end > b.len()) || len % 2 != 0 {
            return Err(Error::corrupt(format!(
                "parent locator entry {entry}: its {what} ({len} bytes at {start:#x}) lies outside the locator ({} bytes) or is not UTF-16",
                b.len()
            ))
            .at_offset(at + 20 + 12 * entry as u64));
        }
        let units: Vec<u16> = b[start..start + len]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).map_err(|_| {
            Error::corrupt(format!(
                "parent locator entry {entry}: its {what} is not valid UTF-16"
            ))
            .at_offset(at + start as u64)
        })
    };
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let e = 20 + 12 * i;
        let key = text(le32(b, e), le16(b, e + 8), i, "key")?;
        let value = text(le32(b, e + 4), le16(b, e + 10), i, "value")?;
        entries.push((key, value));
    }
    Ok(ParentLocator {
        entries,
        offset: at,
    })
}
