//! The ESXi space-efficient sparse extent (SESPARSE, seSparse snapshots on VMFS 6): a
//! constant header of 64-bit fields, a volatile header, a journal, a grain directory and grain
//! tables of 64-bit entries whose top nibble gives the grain's state.

use crate::error::{Error, Result};
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The constant header's magic (a little-endian u64 at offset 0).
pub const CONST_MAGIC: u64 = 0xcafe_babe;
/// The volatile header's magic.
pub const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
/// The only version ESXi writes.
pub const VERSION: u64 = 0x0000_0002_0000_0001;

/// The constant header (512 bytes).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawConstHeader {
    /// [`CONST_MAGIC`].
    pub magic: U64,
    /// [`VERSION`].
    pub version: U64,
    /// Virtual size in sectors.
    pub capacity: U64,
    /// Grain size in sectors (8).
    pub grain_size: U64,
    /// Grain table size in sectors (64).
    pub grain_table_size: U64,
    /// 0.
    pub flags: U64,
    /// Zeros.
    pub reserved: [U64; 4],
    /// Volatile header's sector.
    pub volatile_header_offset: U64,
    /// Volatile header's size in sectors.
    pub volatile_header_size: U64,
    /// Journal header's sector.
    pub journal_header_offset: U64,
    /// Journal header's size.
    pub journal_header_size: U64,
    /// Journal's sector.
    pub journal_offset: U64,
    /// Journal's size.
    pub journal_size: U64,
    /// Grain directory's sector.
    pub grain_dir_offset: U64,
    /// Grain directory's size in sectors.
    pub grain_dir_size: U64,
    /// First grain table's sector.
    pub grain_tables_offset: U64,
    /// Grain table area's size in sectors.
    pub grain_tables_size: U64,
    /// Free bitmap's sector.
    pub free_bitmap_offset: U64,
    /// Free bitmap's size.
    pub free_bitmap_size: U64,
    /// Back map's sector.
    pub backmap_offset: U64,
    /// Back map's size.
    pub backmap_size: U64,
    /// First grain's sector.
    pub grains_offset: U64,
    /// Grain area's size in sectors.
    pub grains_size: U64,
    /// Zeros.
    pub pad: [u8; 304],
}

const _: () = assert!(std::mem::size_of::<RawConstHeader>() == 512);

/// The volatile header's fixed part.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawVolatileHeader {
    /// [`VOLATILE_MAGIC`].
    pub magic: U64,
    /// The next free grain table.
    pub free_gt_number: U64,
    /// The next journal transaction.
    pub next_txn_seq_number: U64,
    /// Nonzero when the journal must be replayed before the tables can be trusted.
    pub replay_journal: U64,
}

/// A validated SESPARSE header: what reading needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeSparseHeader {
    /// Virtual size in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_sectors: u64,
    /// Grain table size in sectors.
    pub gt_sectors: u64,
    /// Grain directory's sector.
    pub gd_offset: u64,
    /// Grain directory's size in sectors.
    pub gd_sectors: u64,
    /// First grain table's sector.
    pub tables_offset: u64,
    /// Grain table area's size in sectors.
    pub tables_sectors: u64,
    /// First grain's sector.
    pub grains_offset: u64,
    /// Grain area's size in sectors.
    pub grains_sectors: u64,
    /// Volatile header's sector.
    pub volatile_offset: u64,
}

/// True when `head` starts with the SESPARSE constant header magic.
pub fn has_magic(head: &[u8]) -> bool {
    head.len() >= 8 && u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) == CONST_MAGIC
}

impl SeSparseHeader {
    /// Parses and validates the constant header.
    pub fn parse(bytes: &[u8]) -> Result<SeSparseHeader> {
        let (raw, _) = RawConstHeader::read_from_prefix(bytes)
            .map_err(|_| Error::corrupt("SESPARSE header is shorter than 512 bytes"))?;
        if raw.magic.get() != CONST_MAGIC {
            return Err(Error::corrupt("SESPARSE extent has no CAFEBABE magic").at_offset(0));
        }
        if raw.version.get() != VERSION {
            return Err(Error::unsupported(format!(
                "SESPARSE version {:#x} is not supported (only {VERSION:#x} is)",
                raw.version.get()
            ))
            .at_offset(8));
        }
        // ESXi only writes 4 KiB grains and 32 KiB grain tables; qemu accepts nothing else.
        if raw.grain_size.get() != 8 {
            return Err(Error::unsupported(format!(
                "SESPARSE grain size of {} sectors is not supported (only 8 is)",
                raw.grain_size.get()
            ))
            .at_offset(24));
        }
        if raw.grain_table_size.get() != 64 {
            return Err(Error::unsupported(format!(
                "SESPARSE grain table size of {} sectors is not supported (only 64 is)",
                raw.grain_table_size.get()
            ))
            .at_offset(32));
        }
        if raw.flags.get() != 0 {
            return Err(Error::unsupported(format!(
                "SESPARSE flags {:#x} are not supported",
                raw.flags.get()
            ))
            .at_offset(40));
        }
        let h = SeSparseHeader {
            capacity: raw.capacity.get(),
            grain_sectors: 8,
            gt_sectors: 64,
            gd_offset: raw.grain_dir_offset.get(),
            gd_sectors: raw.grain_dir_size.get(),
            tables_offset: raw.grain_tables_offset.get(),
            tables_sectors: raw.grain_tables_size.get(),
            grains_offset: raw.grains_offset.get(),
            grains_sectors: raw.grains_size.get(),
            volatile_offset: raw.volatile_header_offset.get(),
        };
        if h.capacity > super::sparse_header::MAX_CAPACITY_SECTORS {
            return Err(Error::corrupt(format!(
                "SESPARSE capacity of {} sectors is larger than any VMDK can be",
                h.capacity
            ))
            .at_offset(16));
        }
        for (name, v) in [
            ("grain directory", h.gd_offset),
            ("grain tables", h.tables_offset),
            ("grains", h.grains_offset),
        ] {
            if v == 0 || v.checked_mul(512).is_none() {
                return Err(Error::corrupt(format!(
                    "SESPARSE {name} offset {v} is invalid"
                )));
            }
        }
        Ok(h)
    }

    /// Checks the volatile header (read from `volatile_offset`): an extent whose journal must
    /// be replayed cannot be read safely.
    pub fn check_volatile(bytes: &[u8]) -> Result<()> {
        let (raw, _) = RawVolatileHeader::read_from_prefix(bytes)
            .map_err(|_| Error::corrupt("SESPARSE volatile header is truncated"))?;
        if raw.magic.get() != VOLATILE_MAGIC {
            return Err(Error::corrupt(
                "SESPARSE volatile header has no CAFECAFE magic",
            ));
        }
        if raw.replay_journal.get() != 0 {
            return Err(Error::unsupported(
                "SESPARSE extent's journal needs replaying (the snapshot was not closed cleanly); open it in ESXi first",
            ));
        }
        Ok(())
    }

    /// Entries per grain table.
    pub fn gtes_per_gt(&self) -> u64 {
        self.gt_sectors * 512 / 8
    }
}

/// What a 64-bit grain table entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeGrain {
    /// Not allocated: read the parent.
    Unallocated,
    /// Zeroed, or unmapped by the guest (which reads as zeros, as qemu reads it).
    Zero,
    /// Allocated: the grain's index in the grain area.
    Allocated(u64),
}

/// Decodes a grain table entry.
pub fn decode_gte(entry: u64) -> Result<SeGrain> {
    match entry >> 60 {
        0 if entry == 0 => Ok(SeGrain::Unallocated),
        1 | 2 => Ok(SeGrain::Zero),
        3 => Ok(SeGrain::Allocated(
            ((entry & 0x0fff_0000_0000_0000) >> 48) | ((entry & 0x0000_ffff_ffff_ffff) << 12),
        )),
        _ => Err(Error::corrupt(format!(
            "SESPARSE grain table entry {entry:#018x} has an unknown type"
        ))),
    }
}

/// Decodes a grain directory entry into the grain table's index, or `None` when the table is
/// not allocated.
pub fn decode_gde(entry: u64) -> Result<Option<u64>> {
    if entry == 0 {
        return Ok(None);
    }
    // Allocated tables have 0x1 in the top nibble and a table index below 2^32.
    if entry & 0xffff_ffff_0000_0000 != 0x1000_0000_0000_0000 {
        return Err(Error::corrupt(format!(
            "SESPARSE grain directory entry {entry:#018x} is invalid"
        )));
    }
    Ok(Some(entry & 0xffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_entries() {
        assert_eq!(decode_gte(0).unwrap(), SeGrain::Unallocated);
        assert_eq!(decode_gte(0x1000_0000_0000_0000).unwrap(), SeGrain::Zero);
        assert_eq!(decode_gte(0x2000_0000_0000_0000).unwrap(), SeGrain::Zero);
        assert_eq!(
            decode_gte(0x3001_0000_0000_0002).unwrap(),
            SeGrain::Allocated((2 << 12) | 1)
        );
        assert!(decode_gte(0x4000_0000_0000_0000).is_err());
        assert!(decode_gte(0x0000_0000_0000_0005).is_err());
        assert_eq!(decode_gde(0).unwrap(), None);
        assert_eq!(decode_gde(0x1000_0000_0000_0007).unwrap(), Some(7));
        assert!(decode_gde(0x2000_0000_0000_0007).is_err());
    }
}
