//! Counting references: everything that points at a cluster of the file (the header, the
//! active and snapshot L1 and L2 tables, data and compressed clusters, the snapshot table, the
//! refcount table and blocks, the bitmap directory and tables) adds one to that cluster's
//! computed refcount. The walk follows qemu's `qcow2_check_refcounts` step for step, with its
//! messages, so that both count the same problems the same way.

use super::Checker;
use super::io::{read_padded, read_u64s};
use super::refcounts::REFT_OFFSET_MASK;
use crate::check::Severity;
use crate::error::Result;
use crate::formats::qcow2::header::MAX_L1_BYTES;
use crate::formats::qcow2::table::{
    L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO,
};

/// Reserved bits of an L1 entry.
const L1E_RESERVED_MASK: u64 = 0x7f00_0000_0000_01ff;
/// Reserved bits of a standard (not compressed) L2 entry.
const L2E_STD_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
/// The allocation half of an extended L2 entry's subcluster bitmap.
const L2_BITMAP_ALL_ALLOC: u64 = 0xffff_ffff;
/// Reserved bits of a bitmap table entry, and its offset bits.
const BME_RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
const BME_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// A bitmap table entry's "all ones" flag.
const BME_ALL_ONES: u64 = 1;

/// What an L2 entry describes, as qemu classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing stored: the backing file or zeros.
    Unallocated,
    /// Zeros, without a cluster.
    ZeroPlain,
    /// Zeros, with a preallocated cluster.
    ZeroAlloc,
    /// Data in a cluster.
    Normal,
    /// A compressed cluster.
    Compressed,
}

impl Checker<'_> {
    /// The kind of L2 entry `entry` (the zero flag means nothing with extended L2 entries;
    /// with an external data file, offset 0 marked COPIED is a real cluster).
    pub fn kind(&self, entry: u64) -> Kind {
        if entry & OFLAG_COMPRESSED != 0 {
            Kind::Compressed
        } else if entry & OFLAG_ZERO != 0 && !self.h.extended_l2() {
            if entry & L2E_OFFSET_MASK != 0 {
                Kind::ZeroAlloc
            } else {
                Kind::ZeroPlain
            }
        } else if entry & L2E_OFFSET_MASK == 0 {
            if self.h.has_data_file() && entry & OFLAG_COPIED != 0 {
                Kind::Normal
            } else {
                Kind::Unallocated
            }
        } else {
            Kind::Normal
        }
    }

    /// Adds a reference to every cluster `[offset, offset + size)` touches. A range that
    /// runs a whole cluster or more past the end of the file is a corruption and counts
    /// nothing (the last cluster may be partly written, so less is fine).
    pub fn inc(&mut self, offset: u64, size: u64) {
        if size == 0 {
            return;
        }
        let len = i128::from(self.io.len());
        if i128::from(offset) + i128::from(size) - len >= i128::from(self.cs) {
            self.out.corruption(format!(
                "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x{offset:x} size 0x{size:x}"
            ));
            return;
        }
        let first = offset >> self.h.cluster_bits;
        let last = (offset + size - 1) >> self.h.cluster_bits;
        for k in first..=last {
            if !self.computed.inc(k) {
                self.out.corruption(format!(
                    "ERROR: overflow cluster offset=0x{:x}",
                    k << self.h.cluster_bits
                ));
                self.out.corruption_line(
                    "Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing".into(),
                );
            }
        }
    }

    /// Counts everything: the computed refcounts, and the allocation figures of the active
    /// L1 table.
    pub fn calculate(&mut self) -> Result<()> {
        self.inc(0, self.cs);
        let (l1_offset, l1_size) = (self.h.l1_table_offset, self.h.l1_size);
        self.walk_l1(l1_offset, l1_size, true)?;
        if self.h.has_data_file() && !self.snapshots.is_empty() {
            self.out.corruption(format!(
                "ERROR {} snapshots in image with data file",
                self.snapshots.len()
            ));
        }
        for i in 0..self.snapshots.len() {
            let s = &self.snapshots[i];
            let (offset, size) = (s.l1_table_offset, s.l1_size);
            if offset & (self.cs - 1) != 0 {
                let m = format!(
                    "ERROR snapshot {} ({}) l1_offset={offset:#x}: L1 table is not cluster aligned; snapshot table entry corrupted",
                    s.id, s.name
                );
                self.out.corruption(m);
                continue;
            }
            if u64::from(size) > MAX_L1_BYTES / 8 {
                let m = format!(
                    "ERROR snapshot {} ({}) l1_size={size:#x}: L1 table is too large; snapshot table entry corrupted",
                    s.id, s.name
                );
                self.out.corruption(m);
                continue;
            }
            self.walk_l1(offset, size, false)?;
        }
        self.inc(self.h.snapshots_offset, self.snapshots_size);
        self.inc(
            self.h.refcount_table_offset,
            u64::from(self.h.refcount_table_clusters) * self.cs,
        );
        self.count_bitmaps()?;
        self.count_refblocks()
    }

    /// An L1 table and the L2 tables it points at. `active`: the image's current L1 table,
    /// whose entries give the allocation figures.
    fn walk_l1(&mut self, offset: u64, entries: u32, active: bool) -> Result<()> {
        if entries == 0 {
            return Ok(());
        }
        self.inc(offset, u64::from(entries) * 8);
        let table = read_u64s(&*self.io, offset, u64::from(entries))?;
        for entry in table {
            if entry == 0 {
                continue;
            }
            if entry & L1E_RESERVED_MASK != 0 {
                self.out.corruption(format!(
                    "ERROR found L1 entry with reserved bits set: {entry:x}"
                ));
            }
            let l2 = entry & L1E_OFFSET_MASK;
            self.inc(l2, self.cs);
            if l2 & (self.cs - 1) != 0 {
                self.out.corruption(format!(
                    "ERROR l2_offset={l2:x}: Table is not cluster aligned; L1 entry corrupted"
                ));
            }
            if !self.spend_l2() {
                return Ok(());
            }
            self.walk_l2(l2, active)?;
        }
        Ok(())
    }

    /// Takes one L2 table read from the budget; false (and the check stopped) when it is
    /// spent.
    pub fn spend_l2(&mut self) -> bool {
        if self.l2_budget == 0 {
            self.stopped.get_or_insert_with(|| {
                "the L1 tables point at more L2 tables than the file can hold (the same tables again and again?)".into()
            });
            return false;
        }
        self.l2_budget -= 1;
        true
    }

    /// Reads the L2 table at `offset` (zeros past the end of the file): (entry, subcluster
    /// bitmap) pairs.
    pub fn read_l2(&self, offset: u64) -> Result<Vec<(u64, u64)>> {
        let mut bytes = vec![0u8; self.cs as usize];
        read_padded(&*self.io, &mut bytes, offset)?;
        let be = |c: &[u8]| u64::from_be_bytes(c.try_into().expect("8 bytes"));
        Ok(if self.h.extended_l2() {
            bytes
                .chunks_exact(16)
                .map(|c| (be(&c[..8]), be(&c[8..])))
                .collect()
        } else {
            bytes.chunks_exact(8).map(|c| (be(c), 0)).collect()
        })
    }

    /// A compressed cluster descriptor's host offset and length in bytes.
    pub fn compressed_extent(&self, entry: u64) -> (u64, u64) {
        let shift = 62 - (self.h.cluster_bits - 8);
        let offset = entry & ((1u64 << shift) - 1);
        let sectors = ((entry >> shift) & ((1u64 << (self.h.cluster_bits - 8)) - 1)) + 1;
        (offset, sectors * 512 - (offset & 511))
    }

    fn walk_l2(&mut self, offset: u64, active: bool) -> Result<()> {
        let table = self.read_l2(offset)?;
        let mut next_contiguous = 0u64;
        for (i, &(entry, bitmap)) in table.iter().enumerate() {
            let mut entry = entry;
            let kind = self.kind(entry);
            if kind != Kind::Compressed && entry & L2E_STD_RESERVED_MASK != 0 {
                self.out.corruption(format!(
                    "ERROR found l2 entry with reserved bits set: {entry:x}"
                ));
            }
            match kind {
                Kind::Compressed => {
                    let (coffset, csize) = self.compressed_extent(entry & !OFLAG_COPIED);
                    if entry & OFLAG_COPIED != 0 {
                        self.out.corruption(format!(
                            "ERROR: coffset=0x{coffset:x}: copied flag must never be set for compressed clusters"
                        ));
                        entry &= !OFLAG_COPIED;
                    }
                    if self.h.has_data_file() {
                        self.out.corruption(format!(
                            "ERROR compressed cluster {i} with data file, entry=0x{entry:x}"
                        ));
                        continue;
                    }
                    if bitmap != 0 {
                        self.out.corruption(format!(
                            "ERROR compressed cluster {i} with non-zero subcluster allocation bitmap, entry=0x{entry:x}"
                        ));
                        continue;
                    }
                    self.inc(coffset, csize);
                    if active {
                        self.stats.allocated += 1;
                        self.stats.compressed += 1;
                        // Compressed clusters are fragmented by nature, to qemu.
                        self.stats.fragmented += 1;
                    }
                }
                Kind::ZeroAlloc | Kind::Normal => {
                    let data = entry & L2E_OFFSET_MASK;
                    if (bitmap >> 32) & bitmap != 0 {
                        self.out.corruption(format!(
                            "ERROR offset={data:x}: Allocated cluster has corrupted subcluster allocation bitmap"
                        ));
                    }
                    if data & (self.cs - 1) != 0 {
                        let holds_data = if self.h.extended_l2() {
                            bitmap & L2_BITMAP_ALL_ALLOC != 0
                        } else {
                            entry & OFLAG_ZERO == 0
                        };
                        if holds_data {
                            self.out.corruption(format!(
                                "ERROR offset={data:x}: Data cluster is not properly aligned; L2 entry corrupted."
                            ));
                        } else if self.fix.errors {
                            // Zeros either way: the entry becomes a plain zero entry, and the
                            // misaligned cluster is no longer counted.
                            self.out.tally.corruptions += 1;
                            self.out.repaired_line(
                                Severity::Corruption,
                                format!(
                                    "Repairing offset={data:x}: Preallocated cluster is not properly aligned; L2 entry corrupted."
                                ),
                            );
                            if self.zero_entry(offset, i as u64, bitmap)? {
                                continue;
                            }
                        } else {
                            self.out.corruption(format!(
                                "ERROR offset={data:x}: Preallocated cluster is not properly aligned; L2 entry corrupted."
                            ));
                        }
                    }
                    if active {
                        self.stats.allocated += 1;
                        if next_contiguous != 0 && data != next_contiguous {
                            self.stats.fragmented += 1;
                        }
                        next_contiguous = data + self.cs;
                    }
                    if !self.h.has_data_file() {
                        self.inc(data, self.cs);
                    }
                }
                Kind::ZeroPlain => {}
                Kind::Unallocated => {
                    if bitmap & L2_BITMAP_ALL_ALLOC != 0 {
                        self.out.corruption(
                            "ERROR: Unallocated cluster has non-zero subcluster allocation map"
                                .into(),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes entry `index` of the L2 table at `l2` read as zeros without a cluster (qemu's
    /// repair of a misaligned preallocated entry); false when the table itself is not where
    /// a write could safely go (not cluster-aligned, or past the end of the file).
    fn zero_entry(&mut self, l2: u64, index: u64, bitmap: u64) -> Result<bool> {
        if l2 & (self.cs - 1) != 0 || l2 == 0 || l2 + self.cs > self.io.len() {
            self.out.check_error("ERROR: Overlap check failed".into());
            return Ok(false);
        }
        let mut bytes = Vec::with_capacity(16);
        if self.h.extended_l2() {
            // Allocated subclusters become zero ones.
            let zeros = (bitmap | (bitmap << 32)) & !L2_BITMAP_ALL_ALLOC;
            bytes.extend_from_slice(&0u64.to_be_bytes());
            bytes.extend_from_slice(&zeros.to_be_bytes());
        } else {
            bytes.extend_from_slice(&OFLAG_ZERO.to_be_bytes());
        }
        let at = l2 + index * bytes.len() as u64;
        super::repair::write(self.io, &bytes, at)?;
        self.io.flush()?;
        self.out.tally.corruptions -= 1;
        self.out.tally.corruptions_fixed += 1;
        Ok(true)
    }

    /// The bitmap directory, each bitmap's table and the clusters the tables point at.
    fn count_bitmaps(&mut self) -> Result<()> {
        let Some(ext) = self.h.bitmaps else {
            return Ok(());
        };
        if ext.count == 0 {
            return Ok(());
        }
        self.inc(ext.directory_offset, ext.directory_size);
        let list = match crate::formats::qcow2::bitmaps::read_directory(&*self.io, &ext) {
            Ok(list) => list,
            Err(e) => {
                // qemu counts a corruption and gives the check up.
                self.out.tally.corruptions += 1;
                self.stopped = Some(format!(
                    "the bitmap directory cannot be read: {}",
                    e.message()
                ));
                return Ok(());
            }
        };
        // Sound bitmap tables are distinct parts of the file: more entries than the file
        // holds words means tables repeated to make a small file cost hours.
        let mut budget = self.io.len() / 8 + 1;
        for bm in list {
            self.inc(bm.table_offset, u64::from(bm.table_size) * 8);
            let present = self.io.len().saturating_sub(bm.table_offset) / 8;
            let entries = u64::from(bm.table_size).min(present);
            if entries > budget {
                self.stopped = Some(
                    "the bitmap tables hold more entries than the file can (the same tables again and again?)"
                        .into(),
                );
                return Ok(());
            }
            budget -= entries;
            let table = read_u64s(&*self.io, bm.table_offset, u64::from(bm.table_size))?;
            for entry in table {
                let offset = entry & BME_OFFSET_MASK;
                let bad = entry & BME_RESERVED_MASK != 0
                    || (offset != 0 && (entry & BME_ALL_ONES != 0 || offset & (self.cs - 1) != 0));
                if bad {
                    self.out.tally.corruptions += 1;
                    continue;
                }
                if offset != 0 {
                    self.inc(offset, self.cs);
                }
            }
        }
        Ok(())
    }

    /// The refcount blocks: each counted once, each checked to be referenced exactly once
    /// (a block that something else also uses, or that lies outside the image, means the
    /// refcount structure must be rebuilt).
    fn count_refblocks(&mut self) -> Result<()> {
        let table = self.stored.table.clone();
        for (i, entry) in table.into_iter().enumerate() {
            let offset = entry & REFT_OFFSET_MASK;
            let cluster = offset >> self.h.cluster_bits;
            if entry & !REFT_OFFSET_MASK != 0 {
                self.out.corruption(format!(
                    "ERROR refcount table entry {i} has reserved bits set"
                ));
                self.rebuild = true;
                continue;
            }
            if offset & (self.cs - 1) != 0 {
                self.out.corruption(format!(
                    "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
                ));
                self.rebuild = true;
                continue;
            }
            if cluster >= self.computed.len() {
                // qemu grows the file to hold such a block when repairing; a rebuild puts
                // the refcounts in the file instead of stretching it to a bogus offset.
                self.out
                    .corruption(format!("ERROR refcount block {i} is outside image"));
                self.rebuild |= self.fix.errors;
                continue;
            }
            if offset != 0 {
                self.inc(offset, self.cs);
                let n = self.computed.get(cluster);
                if n != 1 {
                    self.out
                        .corruption(format!("ERROR refcount block {i} refcount={n}"));
                    self.rebuild = true;
                }
            }
        }
        Ok(())
    }
}
