//! An overlay: a base storage with some ranges replaced in memory, so that a log can be
//! replayed for reading without writing to the file the user gave us.

use super::{Storage, fits, past_end};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// A base storage with patches on top. Patches never overlap (a later patch of the same range
/// replaces the earlier one's bytes), and the overlay may be longer or shorter than its base
/// (a log that records the file's size after replay).
#[derive(Debug)]
pub struct Overlay {
    base: Arc<dyn Storage>,
    /// Start offset → bytes, non-overlapping.
    patches: BTreeMap<u64, Vec<u8>>,
    len: u64,
    /// Bytes held in patches, for the caller's memory bound.
    patch_bytes: u64,
}

impl Overlay {
    /// An overlay of `base` with no patches yet.
    pub fn new(base: Arc<dyn Storage>) -> Overlay {
        let len = base.len();
        Overlay {
            base,
            patches: BTreeMap::new(),
            len,
            patch_bytes: 0,
        }
    }

    /// Bytes held in patches.
    pub fn patch_bytes(&self) -> u64 {
        self.patch_bytes
    }

    /// The patches in file order, as (offset, bytes): what writing the overlay back over its
    /// base would write (a VHDX log replayed in place by `check -r all`).
    pub fn patches(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.patches.iter().map(|(at, p)| (*at, p.as_slice()))
    }

    /// Sets the length: bytes past the base's end read as zeros; a shorter length hides the
    /// base's tail.
    pub fn set_len(&mut self, len: u64) {
        self.len = len;
    }

    /// Replaces `[offset, offset + bytes.len())` with `bytes`, growing the overlay if needed.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(bytes.len() as u64)
            .ok_or_else(|| Error::corrupt("overlay write past 2^64").at_offset(offset))?;
        if bytes.is_empty() {
            return Ok(());
        }
        // Merge every patch that touches [offset, end) into one.
        let mut start = offset;
        let mut merged_end = end;
        let touching: Vec<u64> = self
            .patches
            .range(..end)
            .rev()
            .take_while(|(s, p)| **s + p.len() as u64 >= offset)
            .map(|(s, _)| *s)
            .collect();
        for s in &touching {
            let p = &self.patches[s];
            start = start.min(*s);
            merged_end = merged_end.max(*s + p.len() as u64);
        }
        let mut buf = vec![0u8; (merged_end - start) as usize];
        for s in touching {
            let p = self.patches.remove(&s).expect("listed above");
            self.patch_bytes -= p.len() as u64;
            let at = (s - start) as usize;
            buf[at..at + p.len()].copy_from_slice(&p);
        }
        let at = (offset - start) as usize;
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.patch_bytes += buf.len() as u64;
        self.patches.insert(start, buf);
        self.len = self.len.max(end);
        Ok(())
    }
}

impl Storage for Overlay {
    fn name(&self) -> &Path {
        self.base.name()
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if !fits(offset, buf.len(), self.len) {
            return Err(past_end(self, buf.len(), offset));
        }
        let end = offset + buf.len() as u64;
        // The base's bytes first (zeros past its end), then the patches over them.
        let from_base = self.base.len().saturating_sub(offset).min(buf.len() as u64) as usize;
        if from_base > 0 {
            self.base.read_exact_at(&mut buf[..from_base], offset)?;
        }
        buf[from_base..].fill(0);
        let first = self
            .patches
            .range(..=offset)
            .next_back()
            .map_or(offset, |(s, _)| *s);
        for (s, p) in self.patches.range(first..end) {
            let p_end = s + p.len() as u64;
            if p_end <= offset {
                continue;
            }
            let from = offset.max(*s);
            let to = end.min(p_end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&p[(from - s) as usize..(to - s) as usize]);
        }
        Ok(())
    }

    fn prefetch(&self, offset: u64, len: u64) {
        self.base.prefetch(offset, len);
    }

    fn allocated_bytes(&self) -> u64 {
        self.base.allocated_bytes()
    }

    fn identity(&self) -> Option<super::FileId> {
        self.base.identity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;
    use proptest::prelude::*;

    proptest! {
        // The overlay reads what a copy of the base with the same writes applied reads.
        #[test]
        fn reads_what_a_patched_copy_reads(
            base in proptest::collection::vec(any::<u8>(), 0..300),
            writes in proptest::collection::vec((0u64..400, proptest::collection::vec(any::<u8>(), 0..50)), 0..12),
            read_at in 0u64..450,
            read_len in 0usize..100,
        ) {
            let mut model = base.clone();
            let mut o = Overlay::new(Arc::new(Memory::new("b", base)));
            for (at, bytes) in writes.iter().filter(|(_, b)| !b.is_empty()) {
                o.write(*at, bytes).unwrap();
                let end = *at as usize + bytes.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[*at as usize..end].copy_from_slice(bytes);
            }
            prop_assert_eq!(o.len(), model.len() as u64);
            let mut buf = vec![0u8; read_len];
            let got = o.read_exact_at(&mut buf, read_at);
            if read_at as usize + read_len <= model.len() {
                got.unwrap();
                prop_assert_eq!(&buf[..], &model[read_at as usize..read_at as usize + read_len]);
            } else {
                prop_assert!(got.is_err());
            }
        }
    }
}
