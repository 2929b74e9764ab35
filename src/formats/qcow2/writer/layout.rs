//! Where every cluster of a new image goes, and the tables that say so.
//!
//! Host clusters are handed out front to back from `next_free`: cluster 0 for the header, then
//! data clusters as data arrives, each L2 table right after the data of its range (once the
//! writer has moved past that range), each refcount block soon after the clusters it counts,
//! and at the end the L1 table, the last refcount blocks and the refcount table. Only one L2
//! table, a few refcount blocks and one partly filled cluster of compressed data are held in
//! memory, whatever the size of the disk; the L1 table (at most 32 MiB, qemu's limit) and the
//! refcount table's entries (at most 8 MiB) are held whole.
//!
//! Compressed clusters are packed byte after byte as qemu packs them, sharing host clusters;
//! the host cluster being filled is kept in memory until it is full, so uncompressed clusters
//! and tables placed meanwhile go after it.
//!
//! When the output is a stream the header must come first, so the layout is planned: a dry run
//! over the plan (which clusters may hold data, from the source's map) places everything, the
//! header is written from its result, and the real run hands out the same places in the same
//! order. Planned places are "slots": a slot whose cluster turns out to read as zeros is left
//! free (zeros in the stream, a refcount of 0). Everything that moves `next_free` in a planned
//! run depends on the plan alone: slots in cluster order, a table after the slots of each range
//! that has any, refcount blocks only after a table or at the end.

use super::header::Tables;
use super::options::{Preallocation, Settings};
use super::refcount::RefcountBlock;
use crate::error::{Error, Result};
use crate::sink::Sink;
use std::collections::BTreeMap;

/// Bit 63 of L1 and L2 entries: the cluster's refcount is exactly one.
const COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: a compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// qemu's largest L1 table: 32 MiB.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// qemu's largest refcount table: 8 MiB.
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;

/// The sizes everything is cut by.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// log2 of it.
    pub cluster_bits: u32,
    /// Entries per L2 table.
    pub l2_entries: u64,
    /// Extended L2 entries (16 bytes each, with subcluster bitmaps).
    pub extended: bool,
    /// log2 of the refcount width.
    pub refcount_order: u32,
    /// Entries per refcount block.
    pub refcount_entries: u64,
    /// Guest clusters of the disk.
    pub clusters: u64,
    /// Entries of the L1 table.
    pub l1_size: u64,
}

impl Geometry {
    /// The geometry of a disk of `size` bytes (a multiple of 512) with `settings`.
    pub fn new(settings: &Settings, size: u64) -> Result<Geometry> {
        let cluster_size = settings.cluster_size();
        let entry = if settings.extended_l2 { 16 } else { 8 };
        let l2_entries = cluster_size / entry;
        let clusters = size.div_ceil(cluster_size);
        let l1_size = clusters.div_ceil(l2_entries);
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(Error::invalid(format!(
                "a qcow2 image of {size} bytes with clusters of {cluster_size} bytes needs an L1 table of {} bytes, more than qemu's limit of 32 MiB: give a larger cluster_size",
                l1_size * 8
            )));
        }
        if settings.preallocates() && settings.data_file.is_none() {
            // Every cluster is in this file: the refcount table must reach past all of them.
            let host = clusters + l1_size + clusters.div_ceil(l2_entries) + 1;
            let blocks = host.div_ceil((cluster_size * 8) >> settings.refcount_order);
            let table = (blocks + blocks.div_ceil(64) + 1) * 8;
            if table > MAX_REFCOUNT_TABLE_BYTES {
                return Err(Error::invalid(format!(
                    "preallocating {size} bytes in clusters of {cluster_size} bytes needs a refcount table of about {table} bytes, more than qemu's limit of 8 MiB: give a larger cluster_size"
                )));
            }
        }
        Ok(Geometry {
            cluster_size,
            cluster_bits: settings.cluster_bits,
            l2_entries,
            extended: settings.extended_l2,
            refcount_order: settings.refcount_order,
            refcount_entries: (cluster_size * 8) >> settings.refcount_order,
            clusters,
            l1_size,
        })
    }

    fn entry_bytes(&self) -> usize {
        if self.extended { 16 } else { 8 }
    }
}

/// What one L2 entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Data at this host offset (or data file offset).
    Normal(u64),
    /// Reads as zeros.
    Zero,
    /// Compressed bytes at this host offset.
    Compressed { offset: u64, len: u64 },
    /// A place is reserved, but every subcluster reads from the backing file (extended L2).
    Reserved(u64),
}

/// A run of clusters that holds no new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Reads as zeros, whatever the backing file holds.
    Zero,
    /// Reads from the backing file (zeros without one).
    Unallocated,
}

/// The clusters that have a place from the start, as sorted runs of cluster numbers.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    runs: Vec<(u64, u64)>,
    /// The run holding the next slot not yet handed out.
    run: usize,
    /// The next slot not yet handed out, within `runs[run]`.
    next: u64,
}

impl Plan {
    /// A plan with slots at the clusters of `runs` (sorted, not overlapping, not empty).
    pub fn new(runs: Vec<(u64, u64)>) -> Plan {
        let next = runs.first().map_or(0, |r| r.0);
        Plan { runs, run: 0, next }
    }

    /// The next slot's cluster, if any remain.
    fn peek(&self) -> Option<u64> {
        (self.run < self.runs.len()).then_some(self.next)
    }

    /// Hands out up to `max` slots from the next one, all in one run: returns their count.
    fn take(&mut self, max: u64) -> u64 {
        let Some(&(_, end)) = self.runs.get(self.run) else {
            return 0;
        };
        let n = (end - self.next).min(max);
        self.next += n;
        if self.next == end {
            self.run += 1;
            if let Some(r) = self.runs.get(self.run) {
                self.next = r.0;
            }
        }
        n
    }

    /// The L2 tables (by index) that hold any slot, given `l2_entries` per table.
    fn has_table(&self, index: u64, l2_entries: u64) -> bool {
        let (start, end) = (index * l2_entries, (index + 1) * l2_entries);
        let i = self.runs.partition_point(|r| r.1 <= start);
        self.runs.get(i).is_some_and(|r| r.0 < end)
    }
}

/// Buffers writes that follow each other, so that small clusters cost few system calls.
struct Combiner<'a> {
    sink: Box<dyn Sink + 'a>,
    start: u64,
    buf: Vec<u8>,
}

const COMBINE: usize = 1 << 20;

impl<'a> Combiner<'a> {
    fn new(sink: Box<dyn Sink + 'a>) -> Combiner<'a> {
        Combiner {
            sink,
            start: 0,
            buf: Vec::new(),
        }
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.sink.write_at(&self.buf, self.start)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        if !self.buf.is_empty()
            && offset == self.start + self.buf.len() as u64
            && self.buf.len() + bytes.len() <= COMBINE
        {
            self.buf.extend_from_slice(bytes);
            return Ok(());
        }
        self.flush()?;
        if bytes.len() >= COMBINE {
            return self.sink.write_at(bytes, offset);
        }
        self.start = offset;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Makes `len` bytes at `offset` read as zeros: holes in a new file, zeros elsewhere.
    fn zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        self.flush()?;
        self.sink.write_zeros(offset, len)
    }

    /// Writes zero bytes (preallocation=full).
    fn zero_bytes(&mut self, mut offset: u64, len: u64) -> Result<()> {
        static ZEROS: [u8; COMBINE] = [0; COMBINE];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(COMBINE as u64) as usize;
            self.write(offset, &ZEROS[..n])?;
            offset += n as u64;
        }
        Ok(())
    }

    fn finish(mut self, len: u64, preallocate: bool) -> Result<()> {
        self.flush()?;
        self.sink.set_len(len)?;
        if preallocate {
            self.sink.preallocate(len)?;
        }
        self.sink.finish()
    }
}

/// The host cluster being filled with compressed data.
struct Partial {
    offset: u64,
    fill: usize,
    buf: Vec<u8>,
}

/// The choices the layout needs.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// v3: zero clusters can be flagged.
    pub zero_flag: bool,
    /// The image has a backing file: unallocated clusters read from it.
    pub backing: bool,
    /// Every cluster gets a place.
    pub preallocation: Preallocation,
    /// Guest data goes to an external data file at its guest offset.
    pub data_file: bool,
    /// The data file is a raw image of the whole disk.
    pub data_file_raw: bool,
}

impl Rules {
    /// The rules of `settings`.
    pub fn of(settings: &Settings) -> Rules {
        Rules {
            zero_flag: settings.version >= 3,
            backing: settings.backing.is_some(),
            preallocation: settings.preallocation,
            data_file: settings.data_file.is_some(),
            data_file_raw: settings.data_file_raw,
        }
    }

    fn allocates_all(&self) -> bool {
        self.preallocation != Preallocation::Off || self.data_file_raw
    }
}

/// Places clusters and tables and writes them (or, planning, only places them).
pub struct Layout<'a> {
    g: Geometry,
    rules: Rules,
    /// The image file; `None` in a dry run.
    out: Option<Combiner<'a>>,
    /// The external data file, if any (`None` in a dry run too).
    data_out: Option<Combiner<'a>>,
    /// The first host byte not handed out (cluster-aligned).
    next_free: u64,
    l1: Vec<u64>,
    /// The L2 table being filled: its index and bytes, and whether any entry is set.
    l2: Option<(u64, Vec<u8>, bool)>,
    partial: Option<Partial>,
    /// Refcount blocks of the windows not yet written, by window index.
    windows: BTreeMap<u64, RefcountBlock>,
    /// Windows below this one have their block written.
    first_open: u64,
    /// Where each written window's block is.
    blocks: Vec<u64>,
    plan: Option<Plan>,
    scratch: Vec<u8>,
}

impl<'a> Layout<'a> {
    /// A layout writing to `out` (and `data_out`), or a dry run when `out` is `None`. Cluster
    /// 0 (the header) is taken.
    pub fn new(
        g: Geometry,
        rules: Rules,
        out: Option<Box<dyn Sink + 'a>>,
        data_out: Option<Box<dyn Sink + 'a>>,
        plan: Option<Plan>,
    ) -> Result<Layout<'a>> {
        let mut layout = Layout {
            g,
            rules,
            out: out.map(Combiner::new),
            data_out: data_out.map(Combiner::new),
            next_free: 0,
            l1: vec![0; g.l1_size as usize],
            l2: None,
            partial: None,
            windows: BTreeMap::new(),
            first_open: 0,
            blocks: Vec::new(),
            plan,
            scratch: Vec::new(),
        };
        layout.alloc(1)?;
        Ok(layout)
    }

    /// Places everything a run over `plan` would place, writing nothing; returns the tables.
    pub fn dry_run(g: Geometry, rules: Rules, plan: Plan) -> Result<Tables> {
        let runs = plan.runs.clone();
        let mut layout = Layout::new(g, rules, None, None, Some(plan))?;
        for (start, end) in runs {
            layout.run(start, end - start, RunKind::Zero, true)?;
        }
        Ok(layout.finish_tables()?.0)
    }

    /// Writes `bytes` at `offset` of the image file (cluster 0 is written by the caller).
    pub fn write_main(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        match &mut self.out {
            Some(o) => o.write(offset, bytes),
            None => Ok(()),
        }
    }

    fn cs(&self) -> u64 {
        self.g.cluster_size
    }

    /// Hands out `n` clusters at `next_free`, each counted once.
    fn alloc(&mut self, n: u64) -> Result<u64> {
        let at = self.next_free;
        self.next_free += n * self.cs();
        for c in at / self.cs()..at / self.cs() + n {
            self.count(c)?;
        }
        Ok(at)
    }

    /// Adds one reference to host cluster `cluster`.
    fn count(&mut self, cluster: u64) -> Result<()> {
        let window = cluster / self.g.refcount_entries;
        if window < self.first_open {
            return Err(Error::invalid(format!(
                "internal error: cluster {cluster} counted after its refcount block was written"
            )));
        }
        let (cs, order) = (self.cs() as usize, self.g.refcount_order);
        let block = self
            .windows
            .entry(window)
            .or_insert_with(|| RefcountBlock::new(cs, order));
        let i = (cluster % self.g.refcount_entries) as usize;
        let v = block.get(i) + 1;
        if v > RefcountBlock::max(order) {
            return Err(Error::invalid(format!(
                "internal error: refcount of cluster {cluster} overflows"
            )));
        }
        block.set(i, v);
        Ok(())
    }

    fn refcount(&self, cluster: u64) -> u64 {
        let window = cluster / self.g.refcount_entries;
        self.windows
            .get(&window)
            .map_or(0, |b| b.get((cluster % self.g.refcount_entries) as usize))
    }

    /// Makes the L2 table of guest cluster `cluster` the current one, placing the previous.
    fn enter(&mut self, cluster: u64) -> Result<()> {
        let index = cluster / self.g.l2_entries;
        if self.l2.as_ref().is_some_and(|(i, _, _)| *i == index) {
            return Ok(());
        }
        self.close_table()?;
        self.l2 = Some((index, vec![0u8; self.cs() as usize], false));
        Ok(())
    }

    fn set(&mut self, cluster: u64, entry: Entry) {
        let g = self.g;
        let (index, table, used) = self.l2.as_mut().expect("entered");
        debug_assert_eq!(*index, cluster / g.l2_entries);
        let (word, bitmap): (u64, u64) = match entry {
            Entry::Normal(h) => (h | COPIED, if g.extended { 0xFFFF_FFFF } else { 0 }),
            Entry::Zero if g.extended => (0, 0xFFFF_FFFF << 32),
            Entry::Zero => (1, 0),
            Entry::Compressed { offset, len } => {
                let shift = 62 - (g.cluster_bits - 8);
                let sectors = ((offset + len - 1) >> 9) - (offset >> 9);
                (COMPRESSED | (sectors << shift) | offset, 0)
            }
            Entry::Reserved(h) => (h | COPIED, 0),
        };
        let at = (cluster % g.l2_entries) as usize * g.entry_bytes();
        table[at..at + 8].copy_from_slice(&word.to_be_bytes());
        if g.extended {
            table[at + 8..at + 16].copy_from_slice(&bitmap.to_be_bytes());
        }
        *used = true;
    }

    /// Writes the current L2 table, if it is to be written, after everything placed so far.
    fn close_table(&mut self) -> Result<()> {
        let Some((index, table, used)) = self.l2.take() else {
            return Ok(());
        };
        let place = match &self.plan {
            Some(plan) => plan.has_table(index, self.g.l2_entries),
            None => used,
        };
        if !place {
            // Planned: a table the plan has no slot in holds at most zero flags, over a range
            // where the backing file holds nothing either; unallocated reads the same.
            return Ok(());
        }
        let at = self.alloc(1)?;
        self.write_main(at, &table)?;
        self.l1[index as usize] = at | COPIED;
        self.close_windows()
    }

    /// Writes the refcount block of every window that nothing more will be counted in.
    fn close_windows(&mut self) -> Result<()> {
        loop {
            let w = self.first_open;
            let end = (w + 1) * self.g.refcount_entries * self.cs();
            if self.next_free < end || self.partial.as_ref().is_some_and(|p| p.offset < end) {
                return Ok(());
            }
            let at = self.alloc(1)?;
            let block = self
                .windows
                .remove(&w)
                .unwrap_or_else(|| RefcountBlock::new(self.cs() as usize, self.g.refcount_order));
            self.write_main(at, block.bytes())?;
            self.blocks.push(at);
            self.first_open += 1;
        }
    }

    /// A place for guest cluster `cluster`'s data: in the data file at its guest offset, the
    /// next slot when planned, else the next free cluster. Counted (except in a data file).
    fn data_place(&mut self, cluster: u64) -> Result<u64> {
        if self.rules.data_file {
            return Ok(cluster * self.cs());
        }
        if let Some(plan) = &mut self.plan {
            if plan.peek() != Some(cluster) {
                return Err(Error::invalid(format!(
                    "internal error: data arrived for cluster {cluster}, where the source's allocation map said there was none"
                )));
            }
            plan.take(1);
        }
        self.alloc(1)
    }

    /// Planned: hands out the slots of clusters `[first, first + count)` (the current table's
    /// range) as free places.
    fn skip_slots(&mut self, first: u64, count: u64) -> Result<()> {
        let Some(plan) = &mut self.plan else {
            return Ok(());
        };
        let end = first + count;
        let mut skipped = 0;
        while let Some(c) = plan.peek() {
            if c >= end {
                break;
            }
            if c < first {
                return Err(Error::invalid(format!(
                    "internal error: the slot of cluster {c} was passed over"
                )));
            }
            skipped += plan.take(end - c);
        }
        self.next_free += skipped * self.cs();
        Ok(())
    }

    fn data_out(&mut self) -> Option<&mut Combiner<'a>> {
        if self.rules.data_file {
            self.data_out.as_mut()
        } else {
            self.out.as_mut()
        }
    }

    /// Stores guest cluster `cluster` uncompressed (`bytes` is shorter than a cluster only at
    /// the disk's end).
    pub fn normal(&mut self, cluster: u64, bytes: &[u8]) -> Result<()> {
        self.enter(cluster)?;
        let at = self.data_place(cluster)?;
        let cs = self.cs() as usize;
        let mut full = std::mem::take(&mut self.scratch);
        let data: &[u8] = if bytes.len() == cs {
            bytes
        } else {
            full.clear();
            full.extend_from_slice(bytes);
            full.resize(cs, 0);
            &full
        };
        let written = match self.data_out() {
            Some(out) => out.write(at, data),
            None => Ok(()),
        };
        self.scratch = full;
        written?;
        self.set(cluster, Entry::Normal(at));
        Ok(())
    }

    /// Stores the guest clusters from `first` uncompressed: `bytes` holds whole clusters (the
    /// last shorter only at the disk's end). Runs within an L2 range get consecutive places
    /// and go out in one write, without a copy.
    pub fn normal_run(&mut self, first: u64, bytes: &[u8]) -> Result<()> {
        let cs = self.cs() as usize;
        let whole = bytes.len() / cs * cs;
        let (aligned, tail) = bytes.split_at(whole);
        let mut c = first;
        let mut rest = aligned;
        while !rest.is_empty() {
            if self.plan.is_some() {
                // Slots are handed out one by one.
                let (one, later) = rest.split_at(cs);
                self.normal(c, one)?;
                c += 1;
                rest = later;
                continue;
            }
            let index = c / self.g.l2_entries;
            let n = ((index + 1) * self.g.l2_entries - c).min((rest.len() / cs) as u64);
            self.enter(c)?;
            let at = if self.rules.data_file {
                c * cs as u64
            } else {
                self.alloc(n)?
            };
            let (now, later) = rest.split_at(n as usize * cs);
            if let Some(out) = self.data_out() {
                out.write(at, now)?;
            }
            for i in 0..n {
                self.set(c + i, Entry::Normal(at + i * cs as u64));
            }
            c += n;
            rest = later;
        }
        if !tail.is_empty() {
            self.normal(c, tail)?;
        }
        Ok(())
    }

    /// Stores guest cluster `cluster` as compressed `bytes` (smaller than a cluster).
    pub fn compressed(&mut self, cluster: u64, bytes: &[u8]) -> Result<()> {
        self.enter(cluster)?;
        if self.plan.is_some() || self.rules.data_file {
            return Err(Error::invalid(
                "internal error: compressed clusters in a planned layout or a data file",
            ));
        }
        let cs = self.cs() as usize;
        let len = bytes.len();
        let max = RefcountBlock::max(self.g.refcount_order);
        let shares = self.partial.as_ref().is_some_and(|p| {
            let fits = p.fill + len <= cs;
            let follows = p.offset + cs as u64 == self.next_free;
            (fits || follows) && self.refcount(p.offset / cs as u64) < max
        });
        if !shares {
            self.flush_partial()?;
            let at = self.next_free;
            self.next_free += cs as u64;
            self.partial = Some(Partial {
                offset: at,
                fill: 0,
                buf: vec![0u8; cs],
            });
        }
        let start = {
            let p = self.partial.as_ref().expect("a partial cluster");
            p.offset + p.fill as u64
        };
        let mut rest = bytes;
        loop {
            let p = self.partial.as_mut().expect("a partial cluster");
            let n = rest.len().min(cs - p.fill);
            p.buf[p.fill..p.fill + n].copy_from_slice(&rest[..n]);
            p.fill += n;
            let cluster_no = p.offset / cs as u64;
            let full = p.fill == cs;
            rest = &rest[n..];
            self.count(cluster_no)?;
            if full {
                self.flush_partial()?;
            }
            if rest.is_empty() {
                break;
            }
            // The rest spills into the next cluster, which is free (checked above).
            let at = self.next_free;
            self.next_free += cs as u64;
            self.partial = Some(Partial {
                offset: at,
                fill: 0,
                buf: vec![0u8; cs],
            });
        }
        self.set(
            cluster,
            Entry::Compressed {
                offset: start,
                len: len as u64,
            },
        );
        Ok(())
    }

    /// Writes the cluster being filled with compressed data (zero-padded) and forgets it.
    fn flush_partial(&mut self) -> Result<()> {
        if let Some(p) = self.partial.take() {
            let used = (p.fill.div_ceil(512) * 512).min(p.buf.len());
            self.write_main(p.offset, &p.buf[..used])?;
        }
        Ok(())
    }

    /// Appends `bytes` in whole clusters (the last padded with zeros) after everything
    /// placed so far, counted: metadata made once all the data is in (persistent bitmaps).
    /// Returns where they start.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        if self.plan.is_some() {
            return Err(Error::invalid(
                "internal error: clusters appended to a planned layout",
            ));
        }
        self.close_table()?;
        self.flush_partial()?;
        let cs = self.cs();
        let clusters = (bytes.len() as u64).div_ceil(cs).max(1);
        let at = self.alloc(clusters)?;
        if bytes.len() as u64 == clusters * cs {
            self.write_main(at, bytes)?;
        } else {
            let mut padded = bytes.to_vec();
            padded.resize((clusters * cs) as usize, 0);
            self.write_main(at, &padded)?;
        }
        self.close_windows()?;
        Ok(at)
    }

    /// Clusters `[first, first + count)` hold no new data; `stores` says (for dry runs) that
    /// they are planned slots to hand out as data.
    pub fn run(&mut self, first: u64, count: u64, kind: RunKind, stores: bool) -> Result<()> {
        let end = first + count;
        let mut c = first;
        while c < end {
            let index = c / self.g.l2_entries;
            let stop = ((index + 1) * self.g.l2_entries).min(end);
            self.run_in_table(c, stop - c, kind, stores)?;
            c = stop;
        }
        Ok(())
    }

    fn run_in_table(&mut self, first: u64, count: u64, kind: RunKind, stores: bool) -> Result<()> {
        let rules = self.rules;
        let cs = self.cs();
        if stores {
            // A dry run: every planned slot as data.
            self.enter(first)?;
            for c in first..first + count {
                let at = self.data_place(c)?;
                self.set(c, Entry::Normal(at));
            }
            return Ok(());
        }
        let unallocated = kind == RunKind::Unallocated && rules.backing;
        if rules.allocates_all() {
            self.enter(first)?;
            for c in first..first + count {
                let at = self.data_place(c)?;
                if unallocated {
                    self.set(c, Entry::Reserved(at));
                    continue;
                }
                let full = rules.preallocation == Preallocation::Full;
                if let Some(out) = self.data_out() {
                    if full {
                        out.zero_bytes(at, cs)?;
                    } else {
                        out.zeros(at, cs)?;
                    }
                }
                self.set(c, Entry::Normal(at));
            }
            return Ok(());
        }
        if unallocated || !rules.backing {
            // Nothing stored: reads from the backing file, or zeros without one.
            return self.skip_within(first, count);
        }
        // Zeros over a backing file.
        self.enter(first)?;
        if rules.zero_flag {
            self.skip_slots(first, count)?;
            for c in first..first + count {
                self.set(c, Entry::Zero);
            }
            return Ok(());
        }
        for c in first..first + count {
            if self.plan.as_ref().is_some_and(|p| p.peek() != Some(c)) {
                // Planned without a slot: the backing file holds nothing here either.
                continue;
            }
            let at = self.data_place(c)?;
            if let Some(out) = self.data_out() {
                out.zeros(at, cs)?;
            }
            self.set(c, Entry::Normal(at));
        }
        Ok(())
    }

    /// Nothing is stored for `[first, first + count)`; planned slots there are left free.
    fn skip_within(&mut self, first: u64, count: u64) -> Result<()> {
        let has_slots = self
            .plan
            .as_ref()
            .is_some_and(|p| p.peek().is_some_and(|c| c < first + count));
        if has_slots {
            self.enter(first)?;
            self.skip_slots(first, count)?;
        }
        Ok(())
    }

    /// Places the last L2 table, the L1 table, the last refcount blocks and the refcount
    /// table; writes them; returns where the tables are and the file's length.
    fn finish_tables(&mut self) -> Result<(Tables, u64)> {
        self.close_table()?;
        self.flush_partial()?;
        if let Some(plan) = &self.plan
            && let Some(c) = plan.peek()
        {
            return Err(Error::invalid(format!(
                "internal error: the slot of cluster {c} was never handed out"
            )));
        }
        let cs = self.cs();
        // An empty disk has an empty L1 table, which takes no cluster (one would leak).
        let l1_clusters = (self.g.l1_size * 8).div_ceil(cs);
        let l1_offset = self.alloc(l1_clusters)?;
        let mut l1 = vec![0u8; (l1_clusters * cs) as usize];
        for (i, e) in self.l1.iter().enumerate() {
            l1[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        self.write_main(l1_offset, &l1)?;
        drop(l1);

        // The refcount blocks of the open windows and the refcount table go last; they count
        // themselves, so their number is found by iterating to a fixed point.
        let e = self.g.refcount_entries;
        let s = self.next_free / cs;
        let w0 = self.first_open;
        let (mut blocks, mut table) = (1u64, 1u64);
        loop {
            let end = s + blocks + table;
            let last = (end - 1) / e;
            let need_blocks = last + 1 - w0;
            let need_table = ((last + 1) * 8).div_ceil(cs);
            if need_blocks <= blocks && need_table <= table {
                break;
            }
            blocks = blocks.max(need_blocks);
            table = table.max(need_table);
        }
        if table * cs > MAX_REFCOUNT_TABLE_BYTES {
            return Err(Error::invalid(format!(
                "the image would need a refcount table of {} bytes, more than qemu's limit of 8 MiB: give a larger cluster_size",
                table * cs
            )));
        }
        let blocks_at = self.next_free;
        let table_at = blocks_at + blocks * cs;
        // Count the tail before writing any block of it.
        self.next_free += (blocks + table) * cs;
        for c in s..s + blocks + table {
            self.count(c)?;
        }
        for i in 0..blocks {
            let w = w0 + i;
            let block = self
                .windows
                .remove(&w)
                .unwrap_or_else(|| RefcountBlock::new(cs as usize, self.g.refcount_order));
            let at = blocks_at + i * cs;
            self.write_main(at, block.bytes())?;
            self.blocks.push(at);
        }
        self.first_open = w0 + blocks;
        let mut rt = vec![0u8; (table * cs) as usize];
        for (i, b) in self.blocks.iter().enumerate() {
            rt[i * 8..i * 8 + 8].copy_from_slice(&b.to_be_bytes());
        }
        self.write_main(table_at, &rt)?;
        Ok((
            Tables {
                l1_size: self.g.l1_size as u32,
                l1_offset,
                refcount_table_offset: table_at,
                refcount_table_clusters: table as u32,
                bitmaps: None,
            },
            self.next_free,
        ))
    }

    /// Finishes the image: tables, then `header` (cluster 0) unless it was written first,
    /// then the files' lengths. Returns the tables placed.
    pub fn finish(
        mut self,
        header: impl FnOnce(&Tables) -> Result<Option<Vec<u8>>>,
        data_len: u64,
    ) -> Result<Tables> {
        let (tables, len) = self.finish_tables()?;
        if let Some(bytes) = header(&tables)? {
            self.write_main(0, &bytes)?;
        }
        let preallocate = self.rules.preallocation == Preallocation::Falloc;
        if let Some(data) = self.data_out.take() {
            data.finish(data_len, preallocate)?;
        }
        if let Some(out) = self.out.take() {
            out.finish(len, preallocate && !self.rules.data_file)?;
        }
        Ok(tables)
    }
}
