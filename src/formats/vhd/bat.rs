//! The block allocation table: one big-endian u32 per block, the sector where the block's
//! bitmap starts, or all ones when the block is not allocated.

use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};

/// The entry of a block that is not allocated.
pub const UNUSED: u32 = 0xFFFF_FFFF;

/// Bytes the BAT of `entries` entries occupies: whole sectors, at least one (as blktap and Xen
/// Orchestra compute it).
pub fn bat_bytes(entries: u64) -> u64 {
    (entries * 4).div_ceil(512).max(1) * 512
}

/// A BAT read from a file.
#[derive(Debug, Clone)]
pub struct Bat {
    entries: Vec<u32>,
}

impl Bat {
    /// Reads `entries` entries at `offset`. The size is checked against the file before
    /// anything is allocated, so a corrupt entry count cannot make us reserve gigabytes.
    pub fn read(file: &dyn Storage, offset: u64, entries: u64) -> Result<Bat> {
        let bytes = file.read_vec(offset, entries * 4, "block allocation table")?;
        Ok(Bat {
            entries: bytes
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }

    /// A BAT from entries in memory.
    pub fn from_entries(entries: Vec<u32>) -> Bat {
        Bat { entries }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the BAT has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw entry of block `index`, or `None` past the table.
    pub fn entry(&self, index: u64) -> Option<u32> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .copied()
    }

    /// The byte offset of block `index`'s bitmap, or `None` when the block is not allocated
    /// (or lies past the table).
    pub fn block_offset(&self, index: u64) -> Option<u64> {
        match self.entry(index) {
            Some(UNUSED) | None => None,
            Some(sector) => Some(u64::from(sector) * 512),
        }
    }

    /// Every allocated block as (index, byte offset of its bitmap).
    pub fn allocated(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| **e != UNUSED)
            .map(|(i, e)| (i as u64, u64::from(*e) * 512))
    }

    /// The first allocated block at or after `from`, if any.
    pub fn next_allocated(&self, from: u64) -> Option<u64> {
        let start = usize::try_from(from).ok()?;
        self.entries
            .get(start..)?
            .iter()
            .position(|&e| e != UNUSED)
            .map(|p| (start + p) as u64)
    }
}

/// The BAT's bytes as stored: big-endian entries, padded to whole sectors with all ones.
pub fn encode(entries: &[u32]) -> Vec<u8> {
    let mut out = vec![0xFFu8; bat_bytes(entries.len() as u64) as usize];
    for (chunk, e) in out.chunks_exact_mut(4).zip(entries) {
        chunk.copy_from_slice(&e.to_be_bytes());
    }
    out
}

/// The error for a BAT entry that points somewhere impossible.
pub fn bad_entry(index: u64, table_offset: u64, what: &str) -> Error {
    Error::corrupt(format!("BAT entry {index} {what}")).at_offset(table_offset + index * 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_encoding() {
        assert_eq!(bat_bytes(0), 512);
        assert_eq!(bat_bytes(128), 512);
        assert_eq!(bat_bytes(129), 1024);
        let bytes = encode(&[4, UNUSED, 0x1234]);
        assert_eq!(bytes.len(), 512);
        assert_eq!(&bytes[..4], &[0, 0, 0, 4]);
        assert_eq!(&bytes[8..12], &[0, 0, 0x12, 0x34]);
        assert!(bytes[12..].iter().all(|&b| b == 0xFF));
        let bat = Bat::from_entries(vec![UNUSED, 8, UNUSED]);
        assert_eq!(bat.block_offset(1), Some(4096));
        assert_eq!(bat.block_offset(0), None);
        assert_eq!(bat.block_offset(7), None);
        assert_eq!(bat.next_allocated(0), Some(1));
        assert_eq!(bat.next_allocated(2), None);
    }
}
