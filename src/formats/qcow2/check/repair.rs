//! Writing repairs so that a crash at any point leaves an image `check -r all` can still
//! repair.
//!
//! - Leaks and too-low refcounts are fixed in place, one refcount block at a time: a crash
//!   leaves some fixed and the rest as they were, which is what a check finds again.
//! - A refcount structure that cannot be fixed in place (a used cluster with refcount 0, a
//!   block that something else also uses) is rebuilt as qemu rebuilds it: new refcount blocks
//!   and table are written to clusters nothing uses, made durable, and only then does the
//!   header point at them (one 12-byte write of offset and size), made durable again. Until
//!   that write the old structure is in force and the new clusters are unused; after it the
//!   old structure is unused space, counted as leaks in the new one and fixed next.
//! - COPIED flags come after the refcounts they follow; the dirty and corrupt bits are
//!   cleared last, and only when nothing is left to repair.
//!
//! Every write goes through [`write()`], which also holds the test hook that kills the process
//! after a given number of writes.

use super::Checker;
use super::io::ImageIo;
use super::refcounts::set_entry;
use crate::error::{Error, Result};
use crate::formats::qcow2::header::{INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use std::sync::atomic::{AtomicU64, Ordering};

/// Test-only: when set to N, the process aborts (as a `kill -9` would stop it) right after
/// the N-th write of a repair, so the tests can check that every such state is repairable.
/// Read only here; it has no effect on anything else.
pub const ABORT_AFTER_ENV: &str = "DISKFERRY_TEST_ABORT_AFTER";

static WRITES: AtomicU64 = AtomicU64::new(0);

/// Writes `buf` at `offset` as one step of a repair.
pub fn write(io: &mut dyn ImageIo, buf: &[u8], offset: u64) -> Result<()> {
    io.write_at(buf, offset)?;
    let done = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
    if let Ok(n) = std::env::var(ABORT_AFTER_ENV)
        && n.parse::<u64>().ok() == Some(done)
    {
        std::process::abort();
    }
    Ok(())
}

impl Checker<'_> {
    /// The first `run` clusters in a row at or after `from` that nothing uses, taken
    /// (counted 1 each).
    fn take(&mut self, from: u64, run: u64) -> u64 {
        let mut start = from;
        while let Some(used) = (start..start + run)
            .rev()
            .find(|&c| self.computed.get(c) != 0)
        {
            start = used + 1;
        }
        for c in start..start + run {
            self.computed.set(c, 1);
        }
        start
    }

    /// Writes a new refcount structure holding the computed refcounts and switches the
    /// header to it.
    pub fn rebuild_refcounts(&mut self) -> Result<()> {
        let bits = self.h.cluster_bits;
        let order = self.h.refcount_order;
        let block_bits = bits + 3 - order;
        let per_block = 1u64 << block_bits;
        let mut blocks: Vec<Option<u64>> = Vec::new();
        let mut free = 0u64;
        let mut table: Option<(u64, u64)> = None;
        loop {
            // A block for every range of clusters with a refcount; taking a cluster for a
            // block may start a range that needs one, hence the loop.
            let mut changed = true;
            while changed {
                changed = false;
                let ranges = self.computed.len().div_ceil(per_block);
                if blocks.len() < ranges as usize {
                    blocks.resize(ranges as usize, None);
                }
                for r in 0..ranges {
                    if blocks[r as usize].is_none()
                        && self
                            .computed
                            .range(r * per_block, per_block)
                            .any(|c| c != 0)
                    {
                        let c = self.take(free, 1);
                        free = c + 1;
                        blocks[r as usize] = Some(c);
                        changed = true;
                    }
                }
            }
            let entries = blocks.len() as u64;
            let clusters = (entries * 8).div_ceil(self.cs).max(1);
            match table {
                Some((_, n)) if n >= clusters => break,
                Some((at, n)) => {
                    for c in at..at + n {
                        self.computed.set(c, 0);
                    }
                }
                None => {}
            }
            if clusters > u64::from(u32::MAX) || clusters * self.cs > (8 << 20) {
                return Err(Error::unsupported(format!(
                    "the rebuilt refcount table would need {clusters} clusters, more than qemu's 8 MiB"
                )));
            }
            let at = self.take(free, clusters);
            table = Some((at, clusters));
        }
        let (table_at, table_clusters) = table.expect("placed");
        // The blocks, then the table, all in clusters nothing uses.
        let mut block = vec![0u8; self.cs as usize];
        let mut reftable = vec![0u8; (table_clusters * self.cs) as usize];
        for (r, at) in blocks.iter().enumerate() {
            let Some(c) = at else { continue };
            block.fill(0);
            let first = r as u64 * per_block;
            for (k, n) in self.computed.range(first, per_block).enumerate() {
                set_entry(&mut block, k as u64, order, n);
            }
            write(self.io, &block, c << bits)?;
            reftable[r * 8..r * 8 + 8].copy_from_slice(&(c << bits).to_be_bytes());
        }
        write(self.io, &reftable, table_at << bits)?;
        self.io.flush()?;
        // The switch: offset (8 bytes at 48) and clusters (4 bytes at 56), in one write.
        let mut field = [0u8; 12];
        field[..8].copy_from_slice(&(table_at << bits).to_be_bytes());
        field[8..].copy_from_slice(&(table_clusters as u32).to_be_bytes());
        write(self.io, &field, 48)?;
        self.io.flush()?;
        self.h.refcount_table_offset = table_at << bits;
        self.h.refcount_table_clusters = table_clusters as u32;
        Ok(())
    }

    /// Clears the dirty and corrupt bits (qemu's `mark_clean` and `mark_consistent`), after
    /// everything else is durable.
    pub fn mark_clean(&mut self) -> Result<()> {
        let bits = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;
        if self.h.version < 3 || self.h.incompatible & bits == 0 {
            return Ok(());
        }
        self.io.flush()?;
        let value = self.h.incompatible & !bits;
        write(self.io, &value.to_be_bytes(), 72)?;
        self.io.flush()?;
        self.h.incompatible = value;
        Ok(())
    }
}
