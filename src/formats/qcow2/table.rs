//! L1 and L2 tables: where each guest cluster is.
//!
//! The L1 table (at most 32 MiB, checked against the file before it is read) is held whole,
//! read in pieces that skip what a sparse file leaves out. L2 tables are one cluster each and
//! are read on demand into a cache bounded in bytes, per image and across every open image,
//! whatever the virtual size.
//!
//! An L2 entry is decoded into a [`ClusterState`]: the whole cluster one way (standard
//! entries, compressed clusters) or 32 subclusters each their own way (extended L2 entries),
//! and [`ClusterState::piece`] answers for one position what it is and how far that lasts.

use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Bits 9-55 of an L1 entry: the L2 table's offset.
pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits 9-55 of a standard L2 entry: the host cluster's offset.
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bit 62: compressed cluster.
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 63: refcount exactly one (with a data file: allocated at offset 0).
pub const OFLAG_COPIED: u64 = 1 << 63;
/// Standard cluster descriptor bit 0: reads as zeros.
pub const OFLAG_ZERO: u64 = 1;

/// Bytes of L2 tables one image keeps in memory at most.
pub const L2_CACHE_BYTES: usize = 32 << 20;
/// Bytes of L2 tables all open images keep at most (a backing chain of many images holds no
/// more than a few would).
static L2_BUDGET: AtomicUsize = AtomicUsize::new(0);
const L2_BUDGET_LIMIT: usize = 96 << 20;
/// The L1 table is read in pieces of this many bytes; a piece in a hole of the file is zeros.
const L1_PIECE: u64 = 1 << 20;

/// Reads a table of `entries` big-endian u64 at `offset`, skipping pieces that lie in holes
/// of the file. Only the entries the file holds are read and returned (bounding what is
/// allocated by the bytes present): the rest, past the end of the file, read as zeros to
/// qemu, and callers treat entries past the returned ones as 0.
pub fn read_u64_table(file: &dyn Storage, offset: u64, entries: u64) -> Result<Vec<u64>> {
    let present = file.len().saturating_sub(offset) / 8;
    let entries = entries.min(present);
    let bytes = entries * 8;
    let mut out = vec![0u64; entries as usize];
    let mut done = 0u64;
    let mut buf = Vec::new();
    while done < bytes {
        let n = (bytes - done).min(L1_PIECE);
        if !file.is_hole(offset + done, n)? {
            buf.resize(n as usize, 0);
            file.read_exact_at(&mut buf, offset + done)?;
            let first = (done / 8) as usize;
            for (i, c) in buf.chunks_exact(8).enumerate() {
                out[first + i] = u64::from_be_bytes(c.try_into().expect("8 bytes"));
            }
        }
        done += n;
    }
    Ok(out)
}

/// What one range within a cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Not allocated here: the backing image's, or zeros. `host` is the place of a
    /// subcluster whose cluster is allocated (qemu-img map shows it).
    Unallocated {
        /// The host offset of the range's first byte, when its cluster has one.
        host: Option<u64>,
    },
    /// Reads as zeros; `host` is the preallocated place, when there is one.
    Zero {
        /// The host offset of the range's first byte, when preallocated.
        host: Option<u64>,
    },
    /// Stored plainly at `host` (the range's first byte).
    Data {
        /// Host offset of the range's first byte.
        host: u64,
    },
    /// The whole cluster, compressed at `offset` in at most `size` bytes.
    Compressed {
        /// Host offset of the compressed data.
        offset: u64,
        /// Bytes the descriptor gives it (whole sectors, less the offset's place in its first).
        size: u64,
    },
}

/// What an L2 entry says about its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// The whole cluster is one run.
    Whole(Run),
    /// 32 subclusters (extended L2), each allocated (at `host` + its place), zero or not
    /// allocated, by the two bitmaps.
    Sub {
        /// The host cluster, when the entry has one.
        host: Option<u64>,
        /// Bit i: subcluster i is allocated.
        alloc: u32,
        /// Bit i: subcluster i reads as zeros.
        zero: u32,
    },
}

impl ClusterState {
    /// The run at byte `within` of the cluster and where (within the cluster) it ends.
    pub fn piece(&self, within: u64, cluster: u64) -> (Run, u64) {
        match *self {
            ClusterState::Whole(run) => {
                let run = match run {
                    Run::Data { host } => Run::Data {
                        host: host + within,
                    },
                    Run::Zero { host } => Run::Zero {
                        host: host.map(|h| h + within),
                    },
                    other => other,
                };
                (run, cluster)
            }
            ClusterState::Sub { host, alloc, zero } => {
                let sub = cluster / 32;
                let first = (within / sub) as u32;
                let class = |i: u32| (alloc >> i & 1, zero >> i & 1);
                let c = class(first);
                let mut last = first;
                while last + 1 < 32 && class(last + 1) == c {
                    last += 1;
                }
                let at = host.map(|h| h + within);
                let run = match c {
                    (1, _) => Run::Data {
                        host: at.expect("decode checks allocated subclusters have a host"),
                    },
                    (0, 1) => Run::Zero { host: at },
                    _ => Run::Unallocated { host: at },
                };
                (run, u64::from(last + 1) * sub)
            }
        }
    }
}

/// The geometry an L2 entry is decoded with.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Extended L2 entries.
    pub extended: bool,
    /// Guest data is in an external data file (host offset = guest offset).
    pub data_file: bool,
}

impl Decoder {
    /// Decodes the L2 entry (`entry`, and `bitmap` for extended entries) of the guest
    /// cluster at `guest`; `at` is where the entry lies in the file, for messages.
    pub fn decode(&self, entry: u64, bitmap: u64, guest: u64, at: u64) -> Result<ClusterState> {
        let cluster = 1u64 << self.cluster_bits;
        if entry & OFLAG_COMPRESSED != 0 {
            if self.data_file {
                return Err(Error::corrupt(
                    "L2 entry describes a compressed cluster, which images with an external data file cannot have",
                )
                .at_offset(at));
            }
            if self.extended && bitmap != 0 {
                return Err(Error::corrupt(format!(
                    "L2 entry of a compressed cluster has a subcluster bitmap ({bitmap:#x}), which must be 0"
                ))
                .at_offset(at));
            }
            let shift = 62 - (self.cluster_bits - 8);
            let offset = entry & ((1u64 << shift) - 1);
            let sectors = ((entry >> shift) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
            let size = sectors * 512 - (offset & 511);
            if offset < cluster {
                return Err(Error::corrupt(format!(
                    "L2 entry points compressed data into the header cluster (host offset {offset})"
                ))
                .at_offset(at));
            }
            return Ok(ClusterState::Whole(Run::Compressed { offset, size }));
        }
        let host_bits = entry & L2E_OFFSET_MASK;
        let allocated = host_bits != 0 || (self.data_file && entry & OFLAG_COPIED != 0);
        let host = allocated.then_some(host_bits);
        if let Some(h) = host {
            if !h.is_multiple_of(cluster) {
                return Err(Error::corrupt(format!(
                    "L2 entry's host cluster offset {h:#x} is not aligned to a cluster ({cluster} bytes)"
                ))
                .at_offset(at));
            }
            if self.data_file && h != guest {
                return Err(Error::corrupt(format!(
                    "L2 entry places guest cluster {guest:#x} at {h:#x} of the external data file, where it must be at its own offset"
                ))
                .at_offset(at));
            }
        }
        if self.extended {
            let alloc = bitmap as u32;
            let zero = (bitmap >> 32) as u32;
            if alloc & zero != 0 {
                return Err(Error::corrupt(format!(
                    "L2 entry marks subclusters both allocated and zero (bitmap {bitmap:#018x})"
                ))
                .at_offset(at));
            }
            if host.is_none() && alloc != 0 {
                return Err(Error::corrupt(format!(
                    "L2 entry marks subclusters allocated but has no host cluster (bitmap {bitmap:#018x})"
                ))
                .at_offset(at));
            }
            return Ok(ClusterState::Sub { host, alloc, zero });
        }
        Ok(ClusterState::Whole(if entry & OFLAG_ZERO != 0 {
            Run::Zero { host }
        } else {
            match host {
                Some(host) => Run::Data { host },
                None => Run::Unallocated { host: None },
            }
        }))
    }
}

/// A cache of L2 tables (their entries as u64, big-endian decoded), keyed by their offset,
/// bounded in bytes; the oldest goes first.
pub struct L2Cache {
    inner: Mutex<CacheInner>,
    limit: usize,
}

#[derive(Default)]
struct CacheInner {
    tables: HashMap<u64, Arc<[u64]>>,
    order: VecDeque<u64>,
    held: usize,
}

impl L2Cache {
    /// A cache of at most `limit` bytes.
    pub fn new(limit: usize) -> L2Cache {
        L2Cache {
            inner: Mutex::new(CacheInner::default()),
            limit,
        }
    }

    /// The table of `words` u64 at `offset` of `file`, from the cache or read. The caller has
    /// checked that the table starts inside the file; a table the file ends inside reads as
    /// zeros past the end.
    pub fn get(&self, file: &dyn Storage, offset: u64, words: usize) -> Result<Arc<[u64]>> {
        if let Some(t) = self.lock().tables.get(&offset) {
            return Ok(Arc::clone(t));
        }
        let mut bytes = vec![0u8; words * 8];
        file.read_at_most(&mut bytes, offset)?;
        let table: Arc<[u64]> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let cost = words * 8;
        let mut inner = self.lock();
        if inner.tables.contains_key(&offset) {
            return Ok(table);
        }
        while inner.held + cost > self.limit || !take_budget(cost) {
            let Some(old) = inner.order.pop_front() else {
                // Nothing of ours to give back: use the table uncached.
                return Ok(table);
            };
            if inner.tables.remove(&old).is_some() {
                inner.held -= cost_of(words);
                L2_BUDGET.fetch_sub(cost_of(words), Ordering::AcqRel);
            }
        }
        inner.held += cost;
        inner.order.push_back(offset);
        inner.tables.insert(offset, Arc::clone(&table));
        Ok(table)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every table of one image has the same size.
fn cost_of(words: usize) -> usize {
    words * 8
}

fn take_budget(n: usize) -> bool {
    L2_BUDGET
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
            h.checked_add(n).filter(|&t| t <= L2_BUDGET_LIMIT)
        })
        .is_ok()
}

impl Drop for L2Cache {
    fn drop(&mut self) {
        let held = self.lock().held;
        L2_BUDGET.fetch_sub(held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;

    const D: Decoder = Decoder {
        cluster_bits: 16,
        extended: false,
        data_file: false,
    };

    #[test]
    fn standard_entries_decode() {
        assert_eq!(
            D.decode(0, 0, 0, 0).unwrap(),
            ClusterState::Whole(Run::Unallocated { host: None })
        );
        assert_eq!(
            D.decode(OFLAG_COPIED | 0x30000, 0, 0, 0).unwrap(),
            ClusterState::Whole(Run::Data { host: 0x30000 })
        );
        assert_eq!(
            D.decode(1, 0, 0, 0).unwrap(),
            ClusterState::Whole(Run::Zero { host: None })
        );
        assert_eq!(
            D.decode(0x50001, 0, 0, 0).unwrap(),
            ClusterState::Whole(Run::Zero {
                host: Some(0x50000)
            })
        );
        assert!(D.decode(0x30200, 0, 0, 0).is_err());
        // Compressed: 64 KiB clusters leave 54 bits of offset, 8 of sector count.
        let e = OFLAG_COMPRESSED | (3u64 << 54) | 0x12345;
        assert_eq!(
            D.decode(e, 0, 0, 0).unwrap(),
            ClusterState::Whole(Run::Compressed {
                offset: 0x12345,
                size: 4 * 512 - 0x145
            })
        );
        assert!(D.decode(OFLAG_COMPRESSED | 0x100, 0, 0, 0).is_err());
    }

    #[test]
    fn subclusters_split_a_cluster() {
        let d = Decoder {
            extended: true,
            ..D
        };
        let s = d.decode(0x40000, 0b0011 | (0b1100u64 << 32), 0, 0).unwrap();
        let c = 65536;
        assert_eq!(s.piece(0, c), (Run::Data { host: 0x40000 }, 4096));
        assert_eq!(
            s.piece(3000, c),
            (
                Run::Data {
                    host: 0x40000 + 3000
                },
                4096
            )
        );
        assert_eq!(
            s.piece(4096, c),
            (
                Run::Zero {
                    host: Some(0x41000)
                },
                8192
            )
        );
        assert_eq!(
            s.piece(8192, c),
            (
                Run::Unallocated {
                    host: Some(0x42000)
                },
                c
            )
        );
        assert!(d.decode(0x40000, 1 | (1u64 << 32), 0, 0).is_err());
        assert!(d.decode(0, 1, 0, 0).is_err());
    }

    #[test]
    fn the_cache_stays_within_its_limit() {
        let m = Memory::new("m", vec![1u8; 1 << 20]);
        let cache = L2Cache::new(3 * 8192);
        for i in 0..10 {
            cache.get(&m, i * 8192, 1024).unwrap();
        }
        assert!(cache.lock().held <= 3 * 8192);
        assert_eq!(cache.lock().tables.len(), 3);
    }
}
