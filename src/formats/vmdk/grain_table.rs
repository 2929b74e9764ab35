//! Grain directory and grain tables: where each grain of a sparse extent is.
//!
//! Nothing here is sized by a header field alone. The directory is read a page at a time
//! and pages are kept in a cache bounded in bytes; a page that lies in a hole of the file is
//! known to be empty (no tables) without being read or allocated, so a directory of a
//! gigabyte that a sparse file leaves out costs nothing, and [`GrainTables::next_present`]
//! steps over it with one `SEEK_DATA`. Grain tables are read on demand into a cache bounded
//! in bytes too. A map rebuilt from a stream's markers holds one pair per grain found.
//!
//! Hosted sparse (KDMV), COWD and SESPARSE extents differ only in how entries are encoded;
//! each table entry is decoded into a [`GrainEntry`].

use super::sesparse::{self, SeGrain};
use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a grain table says about one grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrainEntry {
    /// Not allocated: read the parent, or zeros.
    Unallocated,
    /// Reads as zeros whatever the parent holds.
    Zeroed,
    /// Stored at this byte offset of the extent's file.
    At(u64),
}

/// Bytes of decoded grain tables one extent keeps in memory at most.
const TABLE_CACHE_BYTES: usize = 16 << 20;
/// Bytes of decoded grain tables all extents keep at most: a descriptor of thousands of
/// extents holds no more than a few of them would.
static TABLE_BUDGET: Budget = Budget::new(64 << 20);
/// Bytes of directory pages all extents keep at most.
static PAGE_BUDGET: Budget = Budget::new(16 << 20);
/// Directory entries per page: the unit the directory is read and cached in.
const PAGE_ENTRIES: u64 = 16 * 1024;
/// Bytes of decoded directory pages kept in memory at most (32 pages: 2^19 tables, which
/// with VMware's geometry covers 16 PiB, so a real directory is read once).
const DIRECTORY_CACHE_BYTES: usize = 4 << 20;
/// What a cached page known to be a hole counts against the directory cache.
const HOLE_PAGE_COST: usize = 64;

/// How the entries of a kind of extent are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryFormat {
    /// KDMV: 32-bit sector numbers; with the zeroed-grain flag, 1 means zeroed.
    Hosted {
        /// Entry 1 means a zeroed grain.
        zeroed_grain: bool,
    },
    /// COWD: 32-bit sector numbers.
    Cowd,
    /// SESPARSE: 64-bit typed entries.
    SeSparse {
        /// Byte offset of grain table 0.
        tables_offset: u64,
        /// Byte offset of grain 0.
        grains_offset: u64,
    },
}

impl EntryFormat {
    fn entry_size(self) -> u64 {
        match self {
            EntryFormat::SeSparse { .. } => 8,
            _ => 4,
        }
    }
}

/// The shape of a grain-table-indexed extent.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Bytes per grain.
    pub grain_bytes: u64,
    /// Entries per grain table.
    pub gtes_per_gt: u64,
    /// Grains in the extent (the last may be partial).
    pub grains: u64,
    /// Entry encoding.
    pub format: EntryFormat,
}

impl Geometry {
    /// Bytes of one full grain table on disk.
    pub fn gt_bytes(&self) -> u64 {
        self.gtes_per_gt * self.format.entry_size()
    }

    /// Number of grain tables the extent needs.
    pub fn tables(&self) -> u64 {
        self.grains.div_ceil(self.gtes_per_gt)
    }
}

/// A grain directory in the extent's file, read a page at a time.
struct Directory {
    /// Byte offset of entry 0.
    offset: u64,
    /// Entries it has.
    entries: u64,
}

/// One page of a directory.
#[derive(Clone)]
enum Page {
    /// The page lies in a hole of the file: every entry is 0 (no table).
    Hole,
    /// The raw entries, widened to 64 bits.
    Entries(Arc<[u64]>),
}

impl Page {
    fn cost(&self) -> usize {
        match self {
            Page::Hole => HOLE_PAGE_COST,
            Page::Entries(e) => e.len() * std::mem::size_of::<u64>(),
        }
    }
}

enum Source {
    /// Tables read from the file through a directory.
    Directory(Directory),
    /// A map rebuilt from a stream's markers (its directory is lost): (grain, byte offset)
    /// of every grain found, sorted by grain, one pair per grain.
    Rebuilt(Vec<(u64, u64)>),
}

/// Bytes that the caches of every open extent share, so that the sum of their caches is
/// bounded whatever the number of extents a descriptor lists.
pub(crate) struct Budget {
    held: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) const fn new(limit: usize) -> Budget {
        Budget {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `n` bytes; false (nothing taken) when that would exceed the limit.
    pub(crate) fn take(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                h.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken before.
    pub(crate) fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A cache of values keyed by index, bounded by what its values cost, both on its own and
/// within a budget shared with other caches; the oldest entry goes first.
struct Bounded<T> {
    items: HashMap<u64, T>,
    order: VecDeque<u64>,
    held: usize,
    limit: usize,
    budget: &'static Budget,
    cost: fn(&T) -> usize,
}

impl<T: Clone> Bounded<T> {
    fn new(limit: usize, budget: &'static Budget, cost: fn(&T) -> usize) -> Self {
        Bounded {
            items: HashMap::new(),
            order: VecDeque::new(),
            held: 0,
            limit,
            budget,
            cost,
        }
    }

    fn get(&self, key: u64) -> Option<T> {
        self.items.get(&key).cloned()
    }

    /// Drops the oldest entry; false when there is none.
    fn evict(&mut self) -> bool {
        let Some(old) = self.order.pop_front() else {
            return false;
        };
        if let Some(v) = self.items.remove(&old) {
            let c = (self.cost)(&v);
            self.held -= c;
            self.budget.give_back(c);
        }
        true
    }

    /// Keeps `value` if it fits (evicting older entries); when even an empty cache has no
    /// room in the shared budget, the value is simply not kept.
    fn insert(&mut self, key: u64, value: T) {
        if self.items.contains_key(&key) {
            return;
        }
        let c = (self.cost)(&value);
        while self.held + c > self.limit {
            if !self.evict() {
                return;
            }
        }
        while !self.budget.take(c) {
            if !self.evict() {
                return;
            }
        }
        self.items.insert(key, value);
        self.order.push_back(key);
        self.held += c;
    }
}

impl<T> Drop for Bounded<T> {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

/// The grain directory of one extent, with its pages and tables cached.
pub struct GrainTables {
    geometry: Geometry,
    source: Source,
    pages: Mutex<Bounded<Page>>,
    tables: Mutex<Bounded<Arc<[GrainEntry]>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave a cache inconsistent: every update is one insert.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn table_cost(t: &Arc<[GrainEntry]>) -> usize {
    t.len() * std::mem::size_of::<GrainEntry>()
}

impl GrainTables {
    fn with_source(geometry: Geometry, source: Source) -> GrainTables {
        GrainTables {
            geometry,
            source,
            pages: Mutex::new(Bounded::new(
                DIRECTORY_CACHE_BYTES,
                &PAGE_BUDGET,
                Page::cost,
            )),
            tables: Mutex::new(Bounded::new(TABLE_CACHE_BYTES, &TABLE_BUDGET, table_cost)),
        }
    }

    /// The directory of `entries` raw entries at byte `offset` of `file`. Its extent is
    /// checked against the file; nothing of it is read (or allocated) until it is used.
    pub fn load(file: &dyn Storage, offset: u64, entries: u64, geometry: Geometry) -> Result<Self> {
        let size = geometry.format.entry_size();
        let bytes = entries.checked_mul(size).ok_or_else(|| {
            Error::corrupt(format!("grain directory of {entries} entries is too large"))
        })?;
        if offset.checked_add(bytes).is_none_or(|end| end > file.len()) {
            return Err(Error::corrupt(format!(
                "grain directory of {bytes} bytes runs past the end of the file ({} bytes)",
                file.len()
            ))
            .at_offset(offset));
        }
        Ok(Self::with_source(
            geometry,
            Source::Directory(Directory { offset, entries }),
        ))
    }

    /// A map rebuilt from (grain index, byte offset) pairs, in the order they were found:
    /// where a grain appears twice, the later one wins (as a stream writer's later copy
    /// does). Memory is one pair per grain.
    pub fn rebuilt(geometry: Geometry, mut grains: Vec<(u64, u64)>) -> GrainTables {
        // Newest first, then a stable sort: the first of each grain's run is the newest.
        grains.reverse();
        grains.sort_by_key(|&(g, _)| g);
        grains.dedup_by_key(|&mut (g, _)| g);
        grains.shrink_to_fit();
        Self::with_source(geometry, Source::Rebuilt(grains))
    }

    /// The extent's shape.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Directory page `p`: read (or found to be a hole) on first use.
    fn page(&self, file: &dyn Storage, dir: &Directory, p: u64) -> Result<Page> {
        if let Some(page) = lock(&self.pages).get(p) {
            return Ok(page);
        }
        let size = self.geometry.format.entry_size();
        let first = p * PAGE_ENTRIES;
        let count = PAGE_ENTRIES.min(dir.entries.saturating_sub(first));
        let at = dir.offset + first * size;
        let page = if file.is_hole(at, count * size)? {
            Page::Hole
        } else {
            let raw = file.read_vec(at, count * size, "grain directory")?;
            Page::Entries(if size == 8 {
                raw.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect()
            } else {
                raw.chunks_exact(4)
                    .map(|c| u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes"))))
                    .collect()
            })
        };
        lock(&self.pages).insert(p, page.clone());
        Ok(page)
    }

    /// The raw directory entry `index` (0 past the directory's end: a directory shorter than
    /// the capacity needs, seen in COWD files, leaves the rest empty).
    fn directory_entry(&self, file: &dyn Storage, dir: &Directory, index: u64) -> Result<u64> {
        if index >= dir.entries {
            return Ok(0);
        }
        let p = index / PAGE_ENTRIES;
        Ok(match self.page(file, dir, p)? {
            Page::Hole => 0,
            Page::Entries(e) => e[(index - p * PAGE_ENTRIES) as usize],
        })
    }

    /// The first grain table at or after `index` that may be allocated (`tables()` when
    /// none is), so that a map skips an empty stretch of a huge disk in one step: pages in a
    /// hole of the file are stepped over without being read.
    pub fn next_present(&self, file: &dyn Storage, index: u64) -> Result<u64> {
        let none = self.geometry.tables();
        let dir = match &self.source {
            Source::Rebuilt(grains) => {
                let first = index.saturating_mul(self.geometry.gtes_per_gt);
                let i = grains.partition_point(|&(g, _)| g < first);
                return Ok(grains
                    .get(i)
                    .map_or(none, |&(g, _)| g / self.geometry.gtes_per_gt));
            }
            Source::Directory(dir) => dir,
        };
        let size = self.geometry.format.entry_size();
        let end = dir.entries.min(none);
        let mut i = index;
        while i < end {
            let p = i / PAGE_ENTRIES;
            let page_start = p * PAGE_ENTRIES;
            match self.page(file, dir, p)? {
                Page::Entries(e) => {
                    let from = (i - page_start) as usize;
                    let upto = ((end - page_start) as usize).min(e.len());
                    if let Some(k) = e[from..upto].iter().position(|&x| x != 0) {
                        return Ok(i + k as u64);
                    }
                    i = page_start + PAGE_ENTRIES;
                }
                Page::Hole => match file.next_data(dir.offset + i * size)? {
                    None => return Ok(none),
                    Some(d) => {
                        let at = (d.saturating_sub(dir.offset)) / size;
                        i = at.max(page_start + PAGE_ENTRIES);
                    }
                },
            }
        }
        Ok(none)
    }

    /// Where grain table `index` is in the file, or `None` when it is not allocated.
    pub fn table_offset(&self, file: &dyn Storage, index: u64) -> Result<Option<u64>> {
        let Source::Directory(dir) = &self.source else {
            return Ok(None);
        };
        let entry = self.directory_entry(file, dir, index)?;
        let offset = match self.geometry.format {
            EntryFormat::SeSparse { tables_offset, .. } => match sesparse::decode_gde(entry)
                .map_err(|e| {
                    e.context(format!("grain directory entry {index}"))
                        .at_offset(dir.offset + index * 8)
                })? {
                None => return Ok(None),
                Some(i) => i
                    .checked_mul(self.geometry.gt_bytes())
                    .and_then(|o| o.checked_add(tables_offset))
                    .ok_or_else(|| {
                        Error::corrupt(format!("grain directory entry {index} is out of range"))
                            .at_offset(dir.offset + index * 8)
                    })?,
            },
            _ if entry == 0 => return Ok(None),
            _ => entry * 512,
        };
        Ok(Some(offset))
    }

    /// Grain table `index`, decoded, or `None` when there is no table for it.
    pub fn table(&self, file: &dyn Storage, index: u64) -> Result<Option<Arc<[GrainEntry]>>> {
        let g = &self.geometry;
        let first = index.saturating_mul(g.gtes_per_gt);
        let count = g.gtes_per_gt.min(g.grains.saturating_sub(first));
        if let Source::Rebuilt(grains) = &self.source {
            // Built when asked (check walks each table once; map and read use lookups).
            let lo = grains.partition_point(|&(k, _)| k < first);
            let hi = grains.partition_point(|&(k, _)| k < first + count);
            if lo == hi {
                return Ok(None);
            }
            let mut table = vec![GrainEntry::Unallocated; count as usize];
            for &(k, at) in &grains[lo..hi] {
                table[(k - first) as usize] = GrainEntry::At(at);
            }
            return Ok(Some(table.into()));
        }
        if let Some(t) = lock(&self.tables).get(index) {
            return Ok(Some(t));
        }
        let Some(offset) = self.table_offset(file, index)? else {
            return Ok(None);
        };
        let bytes = count * g.format.entry_size();
        if offset.checked_add(bytes).is_none_or(|end| end > file.len()) {
            return Err(Error::corrupt(format!(
                "grain directory entry {index} points to a grain table past the end of the file ({} bytes)",
                file.len()
            ))
            .at_offset(offset));
        }
        let raw = file.read_vec(offset, bytes, "grain table")?;
        let table: Arc<[GrainEntry]> = self.decode(&raw, index, offset)?.into();
        lock(&self.tables).insert(index, Arc::clone(&table));
        Ok(Some(table))
    }

    fn decode(&self, raw: &[u8], index: u64, offset: u64) -> Result<Vec<GrainEntry>> {
        let sector = |c: &[u8]| u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes")));
        match self.geometry.format {
            EntryFormat::Hosted { zeroed_grain } => Ok(raw
                .chunks_exact(4)
                .map(|c| match sector(c) {
                    0 => GrainEntry::Unallocated,
                    1 if zeroed_grain => GrainEntry::Zeroed,
                    e => GrainEntry::At(e * 512),
                })
                .collect()),
            EntryFormat::Cowd => Ok(raw
                .chunks_exact(4)
                .map(|c| match sector(c) {
                    0 => GrainEntry::Unallocated,
                    e => GrainEntry::At(e * 512),
                })
                .collect()),
            EntryFormat::SeSparse { grains_offset, .. } => raw
                .chunks_exact(8)
                .enumerate()
                .map(|(i, c)| {
                    let e = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                    match sesparse::decode_gte(e) {
                        Ok(SeGrain::Unallocated) => Ok(GrainEntry::Unallocated),
                        Ok(SeGrain::Zero) => Ok(GrainEntry::Zeroed),
                        Ok(SeGrain::Allocated(n)) => n
                            .checked_mul(self.geometry.grain_bytes)
                            .and_then(|o| o.checked_add(grains_offset))
                            .map(GrainEntry::At)
                            .ok_or_else(|| Error::corrupt("SESPARSE grain index overflows")),
                        Err(e) => Err(e),
                    }
                    .map_err(|e| {
                        e.context(format!("grain table {index} entry {i}"))
                            .at_offset(offset + i as u64 * 8)
                    })
                })
                .collect(),
        }
    }

    /// The entry of `grain`.
    pub fn lookup(&self, file: &dyn Storage, grain: u64) -> Result<GrainEntry> {
        Ok(self.lookup_run(file, grain)?.0)
    }

    /// The entry of `grain`, and the first grain after it whose entry may differ: the grains
    /// in between read the same way (unallocated or zeroed). A map steps over a stretch of
    /// empty tables, or an empty stretch of a rebuilt map, in one step this way.
    pub fn lookup_run(&self, file: &dyn Storage, grain: u64) -> Result<(GrainEntry, u64)> {
        let per_gt = self.geometry.gtes_per_gt;
        if let Source::Rebuilt(grains) = &self.source {
            let i = grains.partition_point(|&(g, _)| g < grain);
            return Ok(match grains.get(i) {
                Some(&(g, at)) if g == grain => (GrainEntry::At(at), grain + 1),
                Some(&(g, _)) => (GrainEntry::Unallocated, g),
                None => (GrainEntry::Unallocated, self.geometry.grains.max(grain + 1)),
            });
        }
        let gt = grain / per_gt;
        let Some(table) = self.table(file, gt)? else {
            let next = self.next_present(file, gt + 1)?.max(gt + 1);
            return Ok((GrainEntry::Unallocated, next.saturating_mul(per_gt)));
        };
        let first = gt * per_gt;
        let k = (grain - first) as usize;
        let Some(&entry) = table.get(k) else {
            return Ok((GrainEntry::Unallocated, grain + 1));
        };
        let run = match entry {
            GrainEntry::At(_) => 1,
            _ => table[k..].iter().take_while(|&&e| e == entry).count(),
        };
        Ok((entry, grain + run as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;

    fn hosted(zeroed_grain: bool, grains: u64, gtes_per_gt: u64) -> Geometry {
        Geometry {
            grain_bytes: 4096,
            gtes_per_gt,
            grains,
            format: EntryFormat::Hosted { zeroed_grain },
        }
    }

    #[test]
    fn hosted_tables_decode_zeroed_and_offsets() {
        // Directory at sector 1 -> table at sector 2 with entries [0, 1, 10, 11].
        let mut b = vec![0u8; 1536];
        b[512..516].copy_from_slice(&2u32.to_le_bytes());
        for (i, v) in [0u32, 1, 10, 11].iter().enumerate() {
            b[1024 + i * 4..1028 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        let f = Memory::new("mem.vmdk", b);
        let gt = GrainTables::load(&f, 512, 1, hosted(true, 4, 4)).unwrap();
        let got: Vec<GrainEntry> = (0..4).map(|g| gt.lookup(&f, g).unwrap()).collect();
        use GrainEntry::*;
        assert_eq!(got, vec![Unallocated, Zeroed, At(10 * 512), At(11 * 512)]);
        // Without the flag, entry 1 is sector 1.
        let gt = GrainTables::load(&f, 512, 1, hosted(false, 4, 4)).unwrap();
        assert_eq!(gt.lookup(&f, 1).unwrap(), At(512));
    }

    #[test]
    fn oversized_directories_and_tables_past_the_end_are_errors() {
        let mut b = vec![0u8; 1024];
        b[512..516].copy_from_slice(&100u32.to_le_bytes());
        let f = Memory::new("mem.vmdk", b);
        let geometry = Geometry {
            grain_bytes: 65536,
            ..hosted(false, 1 << 30, 512)
        };
        let err = GrainTables::load(&f, 512, 1 << 21, geometry).err().unwrap();
        assert!(err.to_string().contains("past the end"), "{err}");
        let gt = GrainTables::load(&f, 512, 1, geometry).unwrap();
        let err = gt.lookup(&f, 0).unwrap_err().to_string();
        assert!(err.contains("grain table past the end"), "{err}");
    }

    #[test]
    fn a_directory_in_a_hole_is_stepped_over_without_being_held() {
        // A 64 MiB directory (2^24 entries), all a hole but for one entry near its end that
        // names a table of 4 entries right after the directory.
        let file = tempfile::tempfile().unwrap();
        let entries = 1u64 << 24;
        let gd = 4096u64;
        let table = gd + entries * 4;
        let present = entries - 5;
        file.set_len(table + 16).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(&((table / 512) as u32).to_le_bytes(), gd + present * 4)
            .unwrap();
        file.write_all_at(&[0, 0, 0, 0, 9, 0, 0, 0], table).unwrap();
        let f = crate::host_file::HostFile::from_file(file, "holes.vmdk".as_ref()).unwrap();
        let gt = GrainTables::load(&f, gd, entries, hosted(false, entries * 4, 4)).unwrap();
        assert_eq!(gt.next_present(&f, 0).unwrap(), present);
        assert_eq!(gt.next_present(&f, present + 1).unwrap(), entries);
        assert_eq!(
            gt.lookup_run(&f, 0).unwrap(),
            (GrainEntry::Unallocated, present * 4)
        );
        assert_eq!(
            gt.lookup(&f, present * 4 + 1).unwrap(),
            GrainEntry::At(9 * 512)
        );
        // Only the one data page was read and kept.
        let held = lock(&gt.pages).held;
        assert!(held <= DIRECTORY_CACHE_BYTES, "{held}");
    }

    #[test]
    fn a_rebuilt_map_is_one_pair_per_grain_and_the_later_copy_wins() {
        let geometry = hosted(false, 1 << 20, 4096);
        let f = Memory::new("mem.vmdk", Vec::new());
        let gt = GrainTables::rebuilt(geometry, vec![(5000, 512), (3, 1024), (5000, 2048)]);
        assert_eq!(gt.lookup(&f, 3).unwrap(), GrainEntry::At(1024));
        assert_eq!(gt.lookup(&f, 5000).unwrap(), GrainEntry::At(2048));
        assert_eq!(
            gt.lookup_run(&f, 4).unwrap(),
            (GrainEntry::Unallocated, 5000)
        );
        assert_eq!(
            gt.lookup_run(&f, 5001).unwrap(),
            (GrainEntry::Unallocated, 1 << 20)
        );
        assert_eq!(gt.next_present(&f, 0).unwrap(), 0);
        assert_eq!(gt.next_present(&f, 1).unwrap(), 1);
        assert_eq!(gt.next_present(&f, 2).unwrap(), 256);
        let t = gt.table(&f, 1).unwrap().unwrap();
        assert_eq!(t[5000 - 4096], GrainEntry::At(2048));
        assert!(gt.table(&f, 2).unwrap().is_none());
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    static SMALL: Budget = Budget::new(100);

    fn cost(v: &Arc<[u8]>) -> usize {
        v.len()
    }

    #[test]
    fn caches_share_one_budget_and_give_it_back() {
        let mut a = Bounded::new(80, &SMALL, cost);
        let mut b = Bounded::new(80, &SMALL, cost);
        a.insert(1, Arc::from(vec![0u8; 60]));
        // b cannot take 60 more from the shared 100, and has nothing of its own to evict.
        b.insert(1, Arc::from(vec![0u8; 60]));
        assert!(b.get(1).is_none());
        b.insert(2, Arc::from(vec![0u8; 30]));
        assert!(b.get(2).is_some());
        // a's own limit evicts its oldest entry.
        a.insert(2, Arc::from(vec![0u8; 40]));
        assert!(a.get(1).is_none() && a.get(2).is_some());
        drop(a);
        b.insert(3, Arc::from(vec![0u8; 50]));
        assert!(b.get(3).is_some());
        drop(b);
        assert_eq!(SMALL.held.load(Ordering::Acquire), 0);
    }
}
