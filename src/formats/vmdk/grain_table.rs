//! Grain directory and grain tables: where each grain of a sparse extent is.
//!
//! The directory is small (one entry per 512 grains for hosted extents) and is loaded whole,
//! after its size has been checked against the file; grain tables are read on demand and
//! kept in a bounded cache, so a multi-terabyte disk costs a few MiB of memory.
//!
//! Hosted sparse (KDMV), COWD and SESPARSE extents differ only in how entries are encoded;
//! each table entry is decoded into one `u64` here: [`UNALLOCATED`], [`ZEROED`], or the
//! byte offset of the grain in the extent's file.

use super::sesparse::{self, SeGrain};
use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// A decoded entry: the grain is not allocated (read the parent, or zeros).
pub const UNALLOCATED: u64 = 0;
/// A decoded entry: the grain reads as zeros whatever the parent holds.
pub const ZEROED: u64 = 1;

/// Decoded grain table entries kept in memory at most (8 MiB).
const CACHE_ENTRIES: usize = 1 << 20;

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

enum Source {
    /// Tables read from the file through a directory.
    Directory(Vec<u64>),
    /// Tables rebuilt in memory (a stream-optimized file whose directory is lost), ordered so
    /// that the next present table is found in logarithmic time.
    Rebuilt(BTreeMap<u64, Arc<[u64]>>),
}

#[derive(Default)]
struct Cache {
    tables: HashMap<u64, Arc<[u64]>>,
    order: VecDeque<u64>,
    entries: usize,
}

/// The grain directory of one extent, with its tables cached.
pub struct GrainTables {
    geometry: Geometry,
    source: Source,
    cache: Mutex<Cache>,
}

impl GrainTables {
    /// Loads the directory of `entries` raw entries at byte `offset` of `file`. The size is
    /// checked against the file before anything is allocated.
    pub fn load(file: &dyn Storage, offset: u64, entries: u64, geometry: Geometry) -> Result<Self> {
        let size = geometry.format.entry_size();
        let bytes = entries.checked_mul(size).ok_or_else(|| {
            Error::corrupt(format!("grain directory of {entries} entries is too large"))
        })?;
        let raw = file.read_vec(offset, bytes, "grain directory")?;
        let gd = if size == 8 {
            raw.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        } else {
            raw.chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes"))))
                .collect()
        };
        Ok(GrainTables {
            geometry,
            source: Source::Directory(gd),
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Tables rebuilt in memory from (grain index, decoded entry) pairs.
    pub fn rebuilt(geometry: Geometry, grains: &[(u64, u64)]) -> GrainTables {
        let mut tables: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for &(grain, entry) in grains {
            let gt = grain / geometry.gtes_per_gt;
            let table = tables
                .entry(gt)
                .or_insert_with(|| vec![UNALLOCATED; geometry.gtes_per_gt as usize]);
            table[(grain % geometry.gtes_per_gt) as usize] = entry;
        }
        GrainTables {
            geometry,
            source: Source::Rebuilt(tables.into_iter().map(|(k, v)| (k, v.into())).collect()),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The extent's shape.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The raw directory entries (empty for rebuilt tables).
    pub fn directory(&self) -> &[u64] {
        match &self.source {
            Source::Directory(gd) => gd,
            Source::Rebuilt(_) => &[],
        }
    }

    /// The first grain table at or after `index` that may be allocated (`tables()` when
    /// none is), so that a map skips an empty stretch of a huge disk in one step.
    pub fn next_present(&self, index: u64) -> u64 {
        let none = self.geometry.tables();
        match &self.source {
            Source::Directory(gd) => gd
                .get(index as usize..)
                .and_then(|rest| rest.iter().position(|&e| e != 0))
                .map_or(none, |i| index + i as u64),
            Source::Rebuilt(tables) => tables.range(index..).next().map_or(none, |(&k, _)| k),
        }
    }

    /// Where grain table `index` is in the file, or `None` when it is not allocated.
    pub fn table_offset(&self, index: u64) -> Result<Option<u64>> {
        let Source::Directory(gd) = &self.source else {
            return Ok(None);
        };
        // A directory shorter than the capacity needs (seen in COWD files): the rest is empty.
        let Some(&entry) = gd.get(index as usize) else {
            return Ok(None);
        };
        let offset = match self.geometry.format {
            EntryFormat::SeSparse { tables_offset, .. } => match sesparse::decode_gde(entry)
                .map_err(|e| {
                    Error::corrupt(format!("grain directory entry {index}: {}", e.message()))
                })? {
                None => return Ok(None),
                Some(i) => i
                    .checked_mul(self.geometry.gt_bytes())
                    .and_then(|o| o.checked_add(tables_offset))
                    .ok_or_else(|| {
                        Error::corrupt(format!("grain directory entry {index} is out of range"))
                    })?,
            },
            _ if entry == 0 => return Ok(None),
            _ => entry * 512,
        };
        Ok(Some(offset))
    }

    /// Grain table `index`, decoded, or `None` when the directory has no table for it.
    pub fn table(&self, file: &dyn Storage, index: u64) -> Result<Option<Arc<[u64]>>> {
        if let Source::Rebuilt(tables) = &self.source {
            return Ok(tables.get(&index).cloned());
        }
        if let Some(t) = self.lock().tables.get(&index) {
            return Ok(Some(Arc::clone(t)));
        }
        let Some(offset) = self.table_offset(index)? else {
            return Ok(None);
        };
        let g = &self.geometry;
        let first = index * g.gtes_per_gt;
        let count = g.gtes_per_gt.min(g.grains.saturating_sub(first));
        let bytes = count * g.format.entry_size();
        if offset.checked_add(bytes).is_none_or(|end| end > file.len()) {
            return Err(Error::corrupt(format!(
                "grain directory entry {index} points to a grain table past the end of the file ({} bytes)",
                file.len()
            ))
            .at_offset(offset));
        }
        let raw = file.read_vec(offset, bytes, "grain table")?;
        let table: Arc<[u64]> = self.decode(&raw, index, offset)?.into();
        let mut cache = self.lock();
        while cache.entries + table.len() > CACHE_ENTRIES {
            let Some(old) = cache.order.pop_front() else {
                break;
            };
            if let Some(t) = cache.tables.remove(&old) {
                cache.entries -= t.len();
            }
        }
        if cache.tables.insert(index, Arc::clone(&table)).is_none() {
            cache.order.push_back(index);
            cache.entries += table.len();
        }
        Ok(Some(table))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic elsewhere cannot leave the cache inconsistent: every update is one insert.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decode(&self, raw: &[u8], index: u64, offset: u64) -> Result<Vec<u64>> {
        match self.geometry.format {
            EntryFormat::Hosted { zeroed_grain } => Ok(raw
                .chunks_exact(4)
                .map(|c| {
                    let e = u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes")));
                    match e {
                        0 => UNALLOCATED,
                        1 if zeroed_grain => ZEROED,
                        _ => e * 512,
                    }
                })
                .collect()),
            EntryFormat::Cowd => Ok(raw
                .chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes"))) * 512)
                .collect()),
            EntryFormat::SeSparse { grains_offset, .. } => raw
                .chunks_exact(8)
                .enumerate()
                .map(|(i, c)| {
                    let e = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                    match sesparse::decode_gte(e) {
                        Ok(SeGrain::Unallocated) => Ok(UNALLOCATED),
                        Ok(SeGrain::Zero) => Ok(ZEROED),
                        Ok(SeGrain::Allocated(n)) => n
                            .checked_mul(self.geometry.grain_bytes)
                            .and_then(|o| o.checked_add(grains_offset))
                            .ok_or_else(|| Error::corrupt("SESPARSE grain index overflows")),
                        Err(e) => Err(e),
                    }
                    .map_err(|e| {
                        Error::corrupt(format!("grain table {index} entry {i}: {}", e.message()))
                            .at_offset(offset + i as u64 * 8)
                    })
                })
                .collect(),
        }
    }

    /// The decoded entry of `grain`.
    pub fn lookup(&self, file: &dyn Storage, grain: u64) -> Result<u64> {
        let g = self.geometry.gtes_per_gt;
        Ok(match self.table(file, grain / g)? {
            Some(t) => t.get((grain % g) as usize).copied().unwrap_or(UNALLOCATED),
            None => UNALLOCATED,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;

    fn file_with(bytes: &[u8]) -> ((), Memory) {
        ((), Memory::new("mem.vmdk", bytes.to_vec()))
    }

    #[test]
    fn hosted_tables_decode_zeroed_and_offsets() {
        // Directory at sector 1 -> table at sector 2 with entries [0, 1, 10, 11].
        let mut b = vec![0u8; 1536];
        b[512..516].copy_from_slice(&2u32.to_le_bytes());
        for (i, v) in [0u32, 1, 10, 11].iter().enumerate() {
            b[1024 + i * 4..1028 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        let (_t, f) = file_with(&b);
        let geometry = Geometry {
            grain_bytes: 4096,
            gtes_per_gt: 4,
            grains: 4,
            format: EntryFormat::Hosted { zeroed_grain: true },
        };
        let gt = GrainTables::load(&f, 512, 1, geometry).unwrap();
        let got: Vec<u64> = (0..4).map(|g| gt.lookup(&f, g).unwrap()).collect();
        assert_eq!(got, vec![UNALLOCATED, ZEROED, 10 * 512, 11 * 512]);
        // Without the flag, entry 1 is sector 1.
        let geometry = Geometry {
            format: EntryFormat::Hosted {
                zeroed_grain: false,
            },
            ..geometry
        };
        let gt = GrainTables::load(&f, 512, 1, geometry).unwrap();
        assert_eq!(gt.lookup(&f, 1).unwrap(), 512);
    }

    #[test]
    fn oversized_directories_and_tables_past_the_end_are_errors() {
        let mut b = vec![0u8; 1024];
        b[512..516].copy_from_slice(&100u32.to_le_bytes());
        let (_t, f) = file_with(&b);
        let geometry = Geometry {
            grain_bytes: 65536,
            gtes_per_gt: 512,
            grains: 1 << 30,
            format: EntryFormat::Hosted {
                zeroed_grain: false,
            },
        };
        let err = GrainTables::load(&f, 512, 1 << 21, geometry).err().unwrap();
        assert!(err.to_string().contains("past the end"), "{err}");
        let gt = GrainTables::load(&f, 512, 1, geometry).unwrap();
        let err = gt.lookup(&f, 0).unwrap_err().to_string();
        assert!(err.contains("grain table past the end"), "{err}");
    }
}
