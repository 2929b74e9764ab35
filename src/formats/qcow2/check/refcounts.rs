//! Refcounts two ways: as the image stores them (the refcount table and its blocks, read and,
//! when repairing, written one block at a time) and as `check` computes them from everything
//! that references a cluster (one counter per cluster of the file, in memory).

use super::io::{ImageIo, read_padded, read_u64s};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// The offset bits of a refcount table entry; the low 9 bits are reserved.
pub const REFT_OFFSET_MASK: u64 = !0x1ff;

/// The value of entry `index` of a refcount block of `1 << order`-bit entries. Entries narrower
/// than a byte fill each byte from its least significant bit, as qemu packs them.
pub fn get_entry(block: &[u8], index: u64, order: u32) -> u64 {
    let bits = 1u64 << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let byte = block[(index / per_byte) as usize];
        let shift = (index % per_byte) * bits;
        (u64::from(byte) >> shift) & ((1 << bits) - 1)
    } else {
        let width = (bits / 8) as usize;
        let at = index as usize * width;
        block[at..at + width]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
}

/// Sets entry `index` of a refcount block to `value` (cut to the entry's width).
pub fn set_entry(block: &mut [u8], index: u64, order: u32, value: u64) {
    let bits = 1u64 << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let at = (index / per_byte) as usize;
        let shift = (index % per_byte) * bits;
        let mask = ((1u64 << bits) - 1) << shift;
        let byte = (u64::from(block[at]) & !mask) | ((value << shift) & mask);
        block[at] = byte as u8;
    } else {
        let width = (bits / 8) as usize;
        let at = index as usize * width;
        let bytes = value.to_be_bytes();
        block[at..at + width].copy_from_slice(&bytes[8 - width..]);
    }
}

/// The largest refcount an entry of `1 << order` bits holds.
pub fn refcount_max(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

/// The refcount structure the image stores, located by the header's refcount table.
#[derive(Debug)]
pub struct Stored {
    cluster_bits: u32,
    order: u32,
    /// The refcount table's entries (reserved bits included).
    pub table: Vec<u64>,
    /// The refcount block last read: its offset, bytes, and whether it was changed.
    block: Option<(u64, Vec<u8>, bool)>,
}

/// Why a stored refcount cannot be read: the refcount table entry does not point at a
/// cluster boundary (qemu reports an I/O error for the cluster and moves on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

impl Stored {
    /// Reads the refcount table of `clusters` clusters at `offset` (zeros past the end).
    pub fn read(
        io: &dyn Storage,
        cluster_bits: u32,
        order: u32,
        offset: u64,
        clusters: u32,
    ) -> Result<Stored> {
        let entries = (u64::from(clusters) << cluster_bits) / 8;
        Ok(Stored {
            cluster_bits,
            order,
            table: read_u64s(io, offset, entries)?,
            block: None,
        })
    }

    /// log2 of the refcounts one block holds.
    pub fn block_bits(&self) -> u32 {
        self.cluster_bits + 3 - self.order
    }

    fn load(&mut self, io: &mut dyn ImageIo, at: u64) -> Result<()> {
        if self.block.as_ref().is_some_and(|(o, _, _)| *o == at) {
            return Ok(());
        }
        self.write_back(io)?;
        let mut bytes = vec![0u8; 1 << self.cluster_bits];
        read_padded(&*io, &mut bytes, at)?;
        self.block = Some((at, bytes, false));
        Ok(())
    }

    /// Where the block holding `cluster`'s refcount is, `None` when there is none.
    fn block_of(&self, cluster: u64) -> std::result::Result<Option<u64>, Unreadable> {
        let index = cluster >> self.block_bits();
        let Some(&entry) = usize::try_from(index).ok().and_then(|i| self.table.get(i)) else {
            return Ok(None);
        };
        let at = entry & REFT_OFFSET_MASK;
        if at == 0 {
            Ok(None)
        } else if at & ((1 << self.cluster_bits) - 1) != 0 {
            Err(Unreadable)
        } else {
            Ok(Some(at))
        }
    }

    /// The stored refcount of `cluster`.
    pub fn get(
        &mut self,
        io: &mut dyn ImageIo,
        cluster: u64,
    ) -> Result<std::result::Result<u64, Unreadable>> {
        let at = match self.block_of(cluster) {
            Ok(Some(at)) => at,
            Ok(None) => return Ok(Ok(0)),
            Err(e) => return Ok(Err(e)),
        };
        self.load(io, at)?;
        let (_, bytes, _) = self.block.as_ref().expect("loaded");
        let index = cluster & ((1 << self.block_bits()) - 1);
        Ok(Ok(get_entry(bytes, index, self.order)))
    }

    /// Sets the stored refcount of `cluster`, whose block exists. The block is written when
    /// another is needed or at [`Stored::write_back`].
    pub fn set(&mut self, io: &mut dyn ImageIo, cluster: u64, value: u64) -> Result<()> {
        let Ok(Some(at)) = self.block_of(cluster) else {
            return Err(Error::invalid(format!(
                "no refcount block holds cluster {cluster}"
            )));
        };
        self.load(io, at)?;
        let index = cluster & ((1 << self.block_bits()) - 1);
        let order = self.order;
        let (_, bytes, dirty) = self.block.as_mut().expect("loaded");
        set_entry(bytes, index, order, value);
        *dirty = true;
        Ok(())
    }

    /// Writes the block in memory if it was changed.
    pub fn write_back(&mut self, io: &mut dyn ImageIo) -> Result<()> {
        if let Some((at, bytes, dirty)) = self.block.as_mut()
            && *dirty
        {
            super::repair::write(io, bytes, *at)?;
            *dirty = false;
        }
        Ok(())
    }
}

/// Refcounts computed from the references `check` finds: one 16-bit counter per cluster of
/// the file (not of the virtual disk, which may be far larger), which bounds memory by the
/// file's size. A count never passes the smaller of the image's refcount maximum and 65535.
#[derive(Debug, Clone)]
pub struct Computed {
    counts: Vec<u16>,
    max: u64,
}

impl Computed {
    /// Counters for `clusters` clusters, all zero, saturating at `max`.
    pub fn new(clusters: u64, max: u64) -> Computed {
        Computed {
            counts: vec![0; clusters as usize],
            max: max.min(u64::from(u16::MAX)),
        }
    }

    /// Clusters counted (the file's, and one more when a reference runs past its end).
    pub fn len(&self) -> u64 {
        self.counts.len() as u64
    }

    /// True when no cluster is counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The count of `cluster` (0 past the counted ones).
    pub fn get(&self, cluster: u64) -> u64 {
        usize::try_from(cluster)
            .ok()
            .and_then(|i| self.counts.get(i))
            .map_or(0, |&c| u64::from(c))
    }

    /// Adds one reference to `cluster`, growing the counters to reach it; false when the
    /// count is already at its maximum (an overflow, which qemu reports and does not count).
    pub fn inc(&mut self, cluster: u64) -> bool {
        let i = cluster as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        if u64::from(self.counts[i]) >= self.max {
            return false;
        }
        self.counts[i] += 1;
        true
    }

    /// Sets the count of `cluster`, growing the counters to reach it.
    pub fn set(&mut self, cluster: u64, value: u16) {
        let i = cluster as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] = value;
    }

    /// The counts of clusters `[first, first + n)` (zeros past the counted ones).
    pub fn range(&self, first: u64, n: u64) -> impl Iterator<Item = u64> + '_ {
        (first..first + n).map(|c| self.get(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_every_width_round_trip_and_pack_as_qemu_does() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 512];
            let max = refcount_max(order);
            let entries = (512 * 8) >> order;
            for i in 0..entries {
                set_entry(&mut block, i, order, (i * 7) & max);
            }
            for i in 0..entries {
                assert_eq!(get_entry(&block, i, order), (i * 7) & max, "order {order}");
            }
        }
        // 1-bit refcounts: entry 0 is the lowest bit of byte 0.
        let mut b = vec![0u8; 2];
        set_entry(&mut b, 0, 0, 1);
        set_entry(&mut b, 9, 0, 1);
        assert_eq!(b, [0x01, 0x02]);
        // 16-bit refcounts are big-endian.
        let mut b = vec![0u8; 4];
        set_entry(&mut b, 1, 4, 0x0102);
        assert_eq!(b, [0, 0, 1, 2]);
    }

    #[test]
    fn computed_counts_saturate_at_the_refcount_width() {
        let mut c = Computed::new(2, refcount_max(0));
        assert!(c.inc(1));
        assert!(!c.inc(1));
        assert!(c.inc(5));
        assert_eq!((c.get(1), c.get(5), c.len()), (1, 1, 6));
        let mut c = Computed::new(1, refcount_max(6));
        for _ in 0..65535 {
            assert!(c.inc(0));
        }
        assert!(!c.inc(0));
    }
}
