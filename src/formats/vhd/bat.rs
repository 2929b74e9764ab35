//! The block allocation table: one big-endian u32 per block, the sector where the block's
//! bitmap starts, or all ones when the block is not allocated.
//!
//! The table's size comes from the header, so it is read in bounded chunks, each checked to be
//! stored (not a hole of a sparse file) and its entries checked as they arrive: memory grows
//! only with table bytes really present, and never past [`MAX_BAT_ENTRIES`].

use crate::error::{Error, Result};
use crate::storage::Storage;

/// The entry of a block that is not allocated.
pub const UNUSED: u32 = 0xFFFF_FFFF;

/// BAT entries diskferry holds in memory at most: 64 Mi entries (256 MiB), the table of a
/// 2040 GiB disk (the format's largest) in blocks of 32 KiB. Real VHDs use 2 MiB blocks, a
/// table of at most a million entries (4 MiB).
pub const MAX_BAT_ENTRIES: u64 = 64 << 20;

/// Bytes of the table read (and checked for holes) at a time.
const CHUNK_BYTES: usize = 1 << 20;

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
    /// Reads `entries` entries at `offset`, passing each allocated one (index, sector) to
    /// `check` as it arrives, so that a table of garbage is refused at its first bad entry.
    ///
    /// Nothing is reserved from the entry count: the table must fit in the file, hold at most
    /// [`MAX_BAT_ENTRIES`] entries, and every chunk of it must be stored. A chunk that is a
    /// hole of a sparse file reads as zeros, entries that would all point at the footer copy:
    /// the table is missing, and that is refused before its bytes are kept.
    pub fn read(
        file: &dyn Storage,
        offset: u64,
        entries: u64,
        check: &mut dyn FnMut(u64, u32) -> Result<()>,
    ) -> Result<Bat> {
        let len = entries.checked_mul(4);
        if len
            .and_then(|len| offset.checked_add(len))
            .is_none_or(|end| end > file.len())
        {
            return Err(Error::corrupt(format!(
                "block allocation table of {entries} entries ({} bytes) runs past the end of the file ({} bytes)",
                entries.saturating_mul(4),
                file.len()
            ))
            .at_offset(offset)
            .with_path(file.name()));
        }
        if entries > MAX_BAT_ENTRIES {
            return Err(Error::unsupported(format!(
                "block allocation table of {entries} entries is larger than diskferry reads (at most {MAX_BAT_ENTRIES} entries, {} MiB)",
                (MAX_BAT_ENTRIES * 4) >> 20
            ))
            .at_offset(offset)
            .with_path(file.name()));
        }
        let total = entries as usize;
        let mut table: Vec<u32> = Vec::new();
        let mut buf = vec![0u8; CHUNK_BYTES.min(total * 4)];
        // The end of the run of stored bytes the table is in (one query per run, not per chunk).
        let mut stored_until = offset;
        while table.len() < total {
            let n = (total - table.len()).min(CHUNK_BYTES / 4);
            let at = offset + table.len() as u64 * 4;
            let end = at + n as u64 * 4;
            if stored_until < end {
                stored_until = file.next_hole(at)?;
            }
            if stored_until < end {
                let hole = stored_until.max(at);
                return Err(Error::corrupt(format!(
                    "block allocation table is missing: the file has a hole where its entries from {} on should be (a hole reads as zeros, which would put every block on the footer copy)",
                    (hole - offset) / 4
                ))
                .at_offset(hole)
                .with_path(file.name()));
            }
            let bytes = &mut buf[..n * 4];
            file.read_exact_at(bytes, at)?;
            if table.capacity() - table.len() < n {
                // Double as entries arrive (never past the table), rather than reserve the
                // header's count up front.
                let want = table.len().max(n).min(total - table.len());
                table.reserve_exact(want);
            }
            for c in bytes.chunks_exact(4) {
                let entry = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                if entry != UNUSED {
                    check(table.len() as u64, entry)?;
                }
                table.push(entry);
            }
        }
        Ok(Bat { entries: table })
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
    use crate::error::ErrorKind;
    use crate::storage::Memory;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

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

    /// A storage of any apparent size that holds nothing: bytes are made up by `byte`, the
    /// range from `hole_from` on is a hole, and every byte read is counted.
    #[derive(Debug)]
    struct Claimed {
        len: u64,
        hole_from: u64,
        byte: fn(u64) -> u8,
        read: AtomicU64,
    }

    impl Claimed {
        fn new(len: u64, hole_from: u64, byte: fn(u64) -> u8) -> Claimed {
            Claimed {
                len,
                hole_from,
                byte,
                read: AtomicU64::new(0),
            }
        }
    }

    impl Storage for Claimed {
        fn name(&self) -> &Path {
            Path::new("claimed.vhd")
        }
        fn len(&self) -> u64 {
            self.len
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            assert!(offset + buf.len() as u64 <= self.len);
            self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
            for (i, b) in buf.iter_mut().enumerate() {
                let at = offset + i as u64;
                *b = if at >= self.hole_from {
                    0
                } else {
                    (self.byte)(at)
                };
            }
            Ok(())
        }
        fn next_data(&self, offset: u64) -> Result<Option<u64>> {
            Ok((offset < self.hole_from.min(self.len)).then_some(offset))
        }
        fn next_hole(&self, offset: u64) -> Result<u64> {
            Ok(if offset < self.hole_from {
                self.hole_from.min(self.len)
            } else {
                offset.min(self.len)
            })
        }
    }

    fn no_check(_: u64, _: u32) -> Result<()> {
        Ok(())
    }

    #[test]
    fn a_table_is_read_in_chunks_and_each_entry_checked() {
        // 300 000 entries (1.2 MiB: two chunks), allocated ones on both sides of the seam.
        let n = 300_000usize;
        let mut entries = vec![UNUSED; n];
        for i in [0, 262_143, 262_144, n - 1] {
            entries[i] = 8 + i as u32;
        }
        let mut bytes = vec![0u8; 512];
        bytes.extend(encode(&entries));
        let file = Memory::new("t.vhd", bytes);
        let mut seen = Vec::new();
        let bat = Bat::read(&file, 512, n as u64, &mut |i, e| {
            seen.push((i, e));
            Ok(())
        })
        .unwrap();
        assert_eq!(bat.len(), n);
        assert_eq!(
            seen,
            vec![
                (0, 8),
                (262_143, 8 + 262_143),
                (262_144, 8 + 262_144),
                (n as u64 - 1, 8 + n as u32 - 1)
            ]
        );
        assert_eq!(bat.allocated().count(), 4);
        assert_eq!(bat.next_allocated(1), Some(262_143));
        // An empty table reads as nothing.
        assert!(Bat::read(&file, 512, 0, &mut no_check).unwrap().is_empty());
    }

    #[test]
    fn a_table_past_the_end_is_refused_before_reading() {
        let file = Claimed::new(1 << 20, u64::MAX, |_| 0xFF);
        let err = Bat::read(&file, 512, 1 << 20, &mut no_check).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(
            err.to_string()
                .contains("block allocation table of 1048576 entries"),
            "{err}"
        );
        assert!(Bat::read(&file, u64::MAX - 2, 1, &mut no_check).is_err());
        assert!(Bat::read(&file, 512, u64::MAX, &mut no_check).is_err());
        assert_eq!(file.read.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_table_over_the_limit_is_refused_naming_the_limit() {
        let file = Claimed::new(1 << 40, u64::MAX, |_| 0xFF);
        let err = Bat::read(&file, 512, MAX_BAT_ENTRIES + 1, &mut no_check).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        let text = err.to_string();
        assert!(
            text.contains("block allocation table of 67108865 entries")
                && text.contains("at most 67108864 entries, 256 MiB")
                && text.contains("offset 512"),
            "{text}"
        );
        assert_eq!(file.read.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_table_that_is_a_hole_is_refused_at_the_hole() {
        // 50 million entries (200 MiB) claimed; 3 MiB and a bit of them stored, all unused.
        let hole = 512 + (3 << 20) + 4096;
        let file = Claimed::new(1 << 30, hole, |_| 0xFF);
        let err = Bat::read(&file, 512, 50_000_000, &mut no_check).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert_eq!(err.offset(), Some(hole));
        let text = err.to_string();
        assert!(
            text.contains("block allocation table is missing")
                && text.contains("hole")
                && text.contains(&format!("entries from {} on", (hole - 512) / 4)),
            "{text}"
        );
        // Only the stored chunks were read.
        assert!(file.read.load(Ordering::Relaxed) <= 3 << 20);
        // A hole right at the start.
        let file = Claimed::new(1 << 30, 0, |_| 0xFF);
        let err = Bat::read(&file, 1536, 1000, &mut no_check).unwrap_err();
        assert_eq!(err.offset(), Some(1536));
        assert!(err.to_string().contains("entries from 0 on"), "{err}");
        assert_eq!(file.read.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_table_of_garbage_is_refused_at_its_first_bad_entry() {
        let file = Claimed::new(1 << 30, u64::MAX, |at| at as u8);
        let mut checked = 0;
        let err = Bat::read(&file, 512, 60_000_000, &mut |index, entry| {
            checked += 1;
            Err(bad_entry(index, 512, &format!("is garbage ({entry:#x})")))
        })
        .unwrap_err();
        assert_eq!(checked, 1);
        assert_eq!(err.offset(), Some(512));
        assert!(err.to_string().contains("BAT entry 0 is garbage"), "{err}");
        assert!(file.read.load(Ordering::Relaxed) <= 1 << 20);
    }
}
