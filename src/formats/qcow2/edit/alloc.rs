//! Refcounts and cluster allocation.
//!
//! A new cluster is the first free one (refcount 0) from the lowest place a cluster was freed,
//! else past the end of the file. A range of clusters without a refcount block gets one placed
//! in that range itself (so it counts itself); a refcount table too short for a block grows:
//! the new table and the blocks for the clusters it takes are written past the end of the file,
//! each counting the others, flushed, and then the header is switched to the new table in one
//! write; the old table is freed last. Refcount entries are written one at a time (the bytes of
//! the entry), so that a crash leaves each count either old or new.

use super::{CACHE_TABLES, Editor};
use crate::error::{Error, Result};
use crate::formats::qcow2::check::refcounts::{
    REFT_OFFSET_MASK, get_entry, refcount_max, set_entry,
};
use crate::formats::qcow2::header::MAX_REFCOUNT_TABLE_BYTES;

impl Editor {
    /// log2 of the refcounts one block holds.
    fn block_bits(&self) -> u32 {
        self.h.cluster_bits + 3 - self.h.refcount_order
    }

    /// The refcount block holding `cluster`'s count, if there is one.
    fn block_of(&self, cluster: u64) -> Option<u64> {
        let r = cluster >> self.block_bits();
        let e = *self.reftable.get(usize::try_from(r).ok()?)? & REFT_OFFSET_MASK;
        (e != 0).then_some(e)
    }

    fn load_block(&mut self, at: u64) -> Result<()> {
        if !self.blocks.contains_key(&at) {
            if self.blocks.len() >= CACHE_TABLES {
                self.blocks.clear();
            }
            let mut b = vec![0u8; self.cs as usize];
            self.read(&mut b, at)?;
            self.blocks.insert(at, b);
        }
        Ok(())
    }

    /// The stored refcount of `cluster` (0 where no block counts it).
    pub(super) fn refcount(&mut self, cluster: u64) -> Result<u64> {
        let Some(at) = self.block_of(cluster) else {
            return Ok(0);
        };
        self.load_block(at)?;
        let index = cluster & ((1 << self.block_bits()) - 1);
        Ok(get_entry(&self.blocks[&at], index, self.h.refcount_order))
    }

    /// Sets the refcount of `cluster`, whose block exists, writing the entry at once.
    fn set_refcount(&mut self, cluster: u64, value: u64) -> Result<()> {
        let at = self
            .block_of(cluster)
            .ok_or_else(|| Error::corrupt(format!("no refcount block counts cluster {cluster}")))?;
        self.load_block(at)?;
        let order = self.h.refcount_order;
        let index = cluster & ((1 << self.block_bits()) - 1);
        let block = self.blocks.get_mut(&at).expect("loaded");
        set_entry(block, index, order, value);
        // The bytes holding the entry: one byte for narrow entries.
        let (from, len) = if order < 3 {
            ((index >> (3 - order)) as usize, 1)
        } else {
            let w = 1usize << (order - 3);
            (index as usize * w, w)
        };
        let bytes = block[from..from + len].to_vec();
        self.write(&bytes, at + from as u64)
    }

    /// Adds `delta` to the refcount of `cluster`; a count that reaches 0 frees the cluster.
    pub(super) fn add_ref(&mut self, cluster: u64, delta: i64) -> Result<()> {
        let now = self.refcount(cluster)?;
        let max = refcount_max(self.h.refcount_order);
        let new = if delta >= 0 {
            now.checked_add(delta as u64).filter(|&n| n <= max).ok_or_else(|| {
                Error::unsupported(format!(
                    "cluster {cluster} is referenced more often than {}-bit refcounts can count",
                    self.h.refcount_bits()
                ))
            })?
        } else {
            now.checked_sub(delta.unsigned_abs()).ok_or_else(|| {
                Error::corrupt(format!(
                    "cluster {cluster}'s refcount {now} would fall below zero (run 'qemu-img check')"
                ))
            })?
        };
        if new == now {
            return Ok(());
        }
        if now == 0 && self.block_of(cluster).is_none() {
            return Err(Error::corrupt(format!(
                "cluster {cluster} is in use but no refcount block counts it (run 'qemu-img check -r all')"
            )));
        }
        self.set_refcount(cluster, new)?;
        if new == 0 {
            self.free_hint = self.free_hint.min(cluster);
        }
        Ok(())
    }

    /// Adds `delta` to the refcount of each host cluster `[offset, offset + len)` touches.
    pub(super) fn add_ref_bytes(&mut self, offset: u64, len: u64, delta: i64) -> Result<()> {
        let first = offset / self.cs;
        let last = (offset + len.max(1) - 1) / self.cs;
        for c in first..=last {
            self.add_ref(c, delta)?;
        }
        Ok(())
    }

    /// Allocates `n` contiguous clusters (counted 1 each, written nowhere yet) and returns the
    /// host offset of the first.
    pub(super) fn alloc(&mut self, n: u64) -> Result<u64> {
        if n >= 1 << self.block_bits() {
            return self.alloc_at_end(n);
        }
        loop {
            let start = self.find_free(n)?;
            // Each range the run touches needs a block; a new block goes in the run itself,
            // and the search starts again around it.
            let mut placed = false;
            for c in start..start + n {
                if self.block_of(c).is_none() {
                    self.ensure_block(c)?;
                    placed = true;
                    break;
                }
            }
            if placed {
                continue;
            }
            for c in start..start + n {
                self.set_refcount(c, 1)?;
            }
            self.end = self.end.max(start + n);
            if start == self.free_hint {
                self.free_hint = start + n;
            }
            return Ok(start * self.cs);
        }
    }

    /// Allocates a run of `n` clusters that is at least one refcount block's range long (a
    /// large L1 table): at the end of the file, after new refcount blocks for the ranges that
    /// the blocks and the run take, each block counting its range's new clusters. Placing a
    /// block inside the run, as [`Editor::alloc`] does for short runs, would only push such a
    /// run on into the next range without a block, and the next, for ever.
    fn alloc_at_end(&mut self, n: u64) -> Result<u64> {
        let cs = self.cs;
        let bb = self.block_bits();
        let order = self.h.refcount_order;
        loop {
            let start = self.end.max(1);
            // Blocks placed in front of the run may take ranges of their own: grow the count
            // until it covers every range without a block (it only grows, and is bounded).
            let mut k = 0u64;
            let ranges = loop {
                let area_end = start + k + n;
                let ranges: Vec<u64> = ((start >> bb)..=((area_end - 1) >> bb))
                    .filter(|&r| {
                        self.reftable
                            .get(r as usize)
                            .is_none_or(|e| e & REFT_OFFSET_MASK == 0)
                    })
                    .collect();
                if ranges.len() as u64 == k {
                    break ranges;
                }
                k = ranges.len() as u64;
            };
            let area = start..start + k + n;
            if ((area.end - 1) >> bb) as usize >= self.reftable.len() {
                // The table grows at the end of the file; the run then goes after it.
                self.grow_reftable(((area.end - 1) >> bb) + 1)?;
                continue;
            }
            for (i, &r) in ranges.iter().enumerate() {
                let mut block = vec![0u8; cs as usize];
                for c in area.clone().filter(|c| c >> bb == r) {
                    set_entry(&mut block, c & ((1 << bb) - 1), order, 1);
                }
                let at = (start + i as u64) * cs;
                self.write(&block, at)?;
                self.blocks.insert(at, block);
            }
            // The blocks are on disk before the table points at them.
            self.flush()?;
            for (i, &r) in ranges.iter().enumerate() {
                let at = (start + i as u64) * cs;
                self.write(&at.to_be_bytes(), self.h.refcount_table_offset + r * 8)?;
                self.reftable[r as usize] = at;
            }
            // Clusters of the area in ranges that had a block are counted there.
            for c in area.clone() {
                if !ranges.contains(&(c >> bb)) {
                    self.set_refcount(c, 1)?;
                }
            }
            self.end = self.end.max(area.end);
            return Ok((start + k) * cs);
        }
    }

    /// The first run of `n` free clusters at or after the free hint (cluster 0 is the
    /// header's); the hint moves past the used clusters found before the first free one.
    fn find_free(&mut self, n: u64) -> Result<u64> {
        let mut start = self.free_hint.max(1);
        let mut c = start;
        let mut hint_moves = true;
        while c < start + n {
            if c >= self.end {
                return Ok(start);
            }
            if self.refcount(c)? == 0 {
                hint_moves = false;
            } else {
                start = c + 1;
                if hint_moves {
                    self.free_hint = start;
                }
            }
            c += 1;
        }
        Ok(start)
    }

    /// Makes sure a refcount block counts `cluster`, whose count is 0: a new block is placed
    /// at `cluster` itself when its range has none (the caller found `cluster` free), else the
    /// table grows first.
    fn ensure_block(&mut self, cluster: u64) -> Result<()> {
        if self.block_of(cluster).is_some() {
            return Ok(());
        }
        let r = cluster >> self.block_bits();
        if r as usize >= self.reftable.len() {
            self.grow_reftable(r + 1)?;
            if self.block_of(cluster).is_some() {
                return Ok(());
            }
        }
        // The block counts itself; the caller looks for another free cluster.
        let mut block = vec![0u8; self.cs as usize];
        let index = cluster & ((1 << self.block_bits()) - 1);
        set_entry(&mut block, index, self.h.refcount_order, 1);
        let at = cluster * self.cs;
        self.write(&block, at)?;
        self.flush()?;
        let entry_at = self.h.refcount_table_offset + r * 8;
        self.write(&at.to_be_bytes(), entry_at)?;
        self.reftable[r as usize] = at;
        self.blocks.insert(at, block);
        Ok(())
    }

    /// Grows the refcount table to at least `entries` entries, in a new place.
    fn grow_reftable(&mut self, entries: u64) -> Result<()> {
        let cs = self.cs;
        let bb = self.block_bits();
        let old_entries = self.reftable.len() as u64;
        let mut want = entries.max(old_entries + old_entries / 2 + 1);
        let start = self.end;
        let mut blocks = 0u64;
        let (table_clusters, new_ranges) = loop {
            let tc = (want * 8).div_ceil(cs);
            let area_end = start + blocks + tc;
            let last_range = (area_end - 1) >> bb;
            if last_range >= want {
                want = last_range + 1;
                continue;
            }
            let ranges: Vec<u64> = ((start >> bb)..=last_range)
                .filter(|&r| {
                    self.reftable
                        .get(r as usize)
                        .is_none_or(|e| e & REFT_OFFSET_MASK == 0)
                })
                .collect();
            if ranges.len() as u64 == blocks {
                break (tc, ranges);
            }
            blocks = ranges.len() as u64;
        };
        let table_bytes = table_clusters * cs;
        if table_bytes > MAX_REFCOUNT_TABLE_BYTES {
            return Err(Error::unsupported(format!(
                "the refcount table would need {table_bytes} bytes, more than qemu's 8 MiB"
            )));
        }
        let table_at = (start + blocks) * cs;
        let mut table = self.reftable.clone();
        table.resize((table_bytes / 8) as usize, 0);
        // The new blocks, each counting the area clusters of its range.
        let area = start..start + blocks + table_clusters;
        for (i, &r) in new_ranges.iter().enumerate() {
            let mut block = vec![0u8; cs as usize];
            for c in area.clone().filter(|c| c >> bb == r) {
                set_entry(&mut block, c & ((1 << bb) - 1), self.h.refcount_order, 1);
            }
            let at = (start + i as u64) * cs;
            self.write(&block, at)?;
            table[r as usize] = at;
            self.blocks.insert(at, block);
        }
        // Area clusters in ranges that already have a block are counted there.
        for c in area.clone() {
            if self.block_of(c).is_some() {
                self.set_refcount(c, 1)?;
            }
        }
        let mut bytes = Vec::with_capacity(table_bytes as usize);
        for e in &table {
            bytes.extend_from_slice(&e.to_be_bytes());
        }
        self.write(&bytes, table_at)?;
        self.flush()?;
        // The switch: offset and clusters in one write.
        let mut field = [0u8; 12];
        field[..8].copy_from_slice(&table_at.to_be_bytes());
        field[8..].copy_from_slice(&(table_clusters as u32).to_be_bytes());
        self.write(&field, 48)?;
        self.flush()?;
        let old_at = self.h.refcount_table_offset;
        let old_clusters = u64::from(self.h.refcount_table_clusters);
        self.h.refcount_table_offset = table_at;
        self.h.refcount_table_clusters = table_clusters as u32;
        self.reftable = table;
        self.end = self.end.max(area.end);
        for c in 0..old_clusters {
            self.add_ref(old_at / cs + c, -1)?;
        }
        Ok(())
    }

    /// Counts down the clusters of a table of `bytes` bytes at `offset` (freed).
    pub(super) fn free_bytes(&mut self, offset: u64, bytes: u64) -> Result<()> {
        if offset == 0 || bytes == 0 {
            return Ok(());
        }
        let clusters = bytes.div_ceil(self.cs);
        for c in 0..clusters {
            self.add_ref(offset / self.cs + c, -1)?;
        }
        Ok(())
    }

    /// Writes `bytes` into newly allocated clusters and returns where.
    pub(super) fn write_new(&mut self, bytes: &[u8]) -> Result<u64> {
        let clusters = (bytes.len() as u64).div_ceil(self.cs).max(1);
        let at = self.alloc(clusters)?;
        let mut padded = bytes.to_vec();
        padded.resize((clusters * self.cs) as usize, 0);
        self.write(&padded, at)?;
        Ok(at)
    }
}
