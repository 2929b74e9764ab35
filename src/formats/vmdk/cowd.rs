//! The ESXi sparse extent ("COWD", extent type VMFSSPARSE): the redo log of vmfsSparse
//! snapshots. A 2048-byte header, a grain directory of 32-bit sector numbers, grain tables of
//! 4096 entries, uncompressed grains. No zeroed-grain entries: 0 means "read the parent".

use crate::error::{Error, Result};
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The magic number at offset 0.
pub const MAGIC: &[u8; 4] = b"COWD";
/// Entries per grain table, fixed by the format.
pub const GTES_PER_GT: u32 = 4096;
/// The header's size.
pub const HEADER_BYTES: usize = 2048;

/// The fixed part of the on-disk header (the rest holds geometry or the parent's name,
/// generations, a name and a description, none of which reading needs).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawCowdHeader {
    /// "COWD".
    pub magic: [u8; 4],
    /// 1.
    pub version: U32,
    /// Usually 3.
    pub flags: U32,
    /// Virtual size in sectors.
    pub capacity: U32,
    /// Grain size in sectors.
    pub grain_size: U32,
    /// Grain directory's sector.
    pub gd_offset: U32,
    /// Grain directory entries.
    pub gd_entries: U32,
    /// The next free sector (where the next grain goes).
    pub free_sector: U32,
}

/// A validated COWD header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CowdHeader {
    /// Virtual size in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_sectors: u64,
    /// Grain directory's sector.
    pub gd_offset: u64,
    /// Grain directory entries.
    pub gd_entries: u64,
    /// The next free sector.
    pub free_sector: u64,
}

impl CowdHeader {
    /// Parses and validates the start of a COWD extent.
    pub fn parse(bytes: &[u8]) -> Result<CowdHeader> {
        let (raw, _) = RawCowdHeader::read_from_prefix(bytes)
            .map_err(|_| Error::corrupt("COWD header is truncated"))?;
        if &raw.magic != MAGIC {
            return Err(Error::corrupt("COWD extent has no COWD magic").at_offset(0));
        }
        let version = raw.version.get();
        if version != 1 {
            return Err(Error::unsupported(format!(
                "COWD extent version {version} is not supported (only 1 is)"
            ))
            .at_offset(4));
        }
        let grain_sectors = u64::from(raw.grain_size.get());
        if grain_sectors == 0
            || !grain_sectors.is_power_of_two()
            || grain_sectors > super::sparse_header::MAX_GRAIN_SECTORS
        {
            return Err(Error::corrupt(format!(
                "COWD grain size of {grain_sectors} sectors is invalid"
            ))
            .at_offset(16));
        }
        let gd_offset = u64::from(raw.gd_offset.get());
        if gd_offset == 0 {
            return Err(Error::corrupt("COWD grain directory offset is 0").at_offset(20));
        }
        Ok(CowdHeader {
            capacity: u64::from(raw.capacity.get()),
            grain_sectors,
            gd_offset,
            gd_entries: u64::from(raw.gd_entries.get()),
            free_sector: u64::from(raw.free_sector.get()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let mut b = vec![0u8; HEADER_BYTES];
        b[..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&4096u32.to_le_bytes());
        b[16..20].copy_from_slice(&1u32.to_le_bytes());
        b[20..24].copy_from_slice(&4u32.to_le_bytes());
        b[24..28].copy_from_slice(&1u32.to_le_bytes());
        let h = CowdHeader::parse(&b).unwrap();
        assert_eq!(
            (h.capacity, h.grain_sectors, h.gd_offset, h.gd_entries),
            (4096, 1, 4, 1)
        );
        b[16] = 3;
        assert!(
            CowdHeader::parse(&b)
                .unwrap_err()
                .to_string()
                .contains("grain size")
        );
        assert!(CowdHeader::parse(&b[..10]).is_err());
    }
}
