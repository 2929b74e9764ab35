//! The block allocation table: one 64-bit entry per payload block, with one sector-bitmap
//! entry after every `chunk_ratio` payload entries (a sector bitmap block covers 2^23 sectors).
//!
//! The table is read once at open in bounded chunks and every entry is checked as it arrives:
//! its state must be one the disk type allows, a stored block must lie inside the file, and no
//! two stored blocks (nor a block and the file's own structures) may overlap. Only payload
//! entries are kept, in pages of [`PAGE_ENTRIES`]; a page whose entries are all zero (not
//! present, what a sparse table reads as) costs nothing, so memory follows the blocks really
//! stored, never the virtual size.

use super::metadata::Metadata;
use super::region::Region;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Payload entries per page.
pub const PAGE_ENTRIES: usize = 4096;

/// Bytes of pages diskferry holds at most: 256 MiB, the table of a 32 TiB disk stored in
/// 1 MiB blocks, every block written. Hyper-V's default 32 MiB blocks need 64 times less.
pub const MAX_TABLE_BYTES: u64 = 256 << 20;

/// Bytes of the table read at a time.
const CHUNK_BYTES: usize = 1 << 20;

const MIB: u64 = 1 << 20;

/// The state of a payload block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadState {
    /// 0: not in the file: zeros in a fixed or dynamic disk, the parent's in a differencing one.
    NotPresent,
    /// 1: contents undefined (read as zeros).
    Undefined,
    /// 2: zeros.
    Zero,
    /// 3: unmapped by the guest (read as zeros).
    Unmapped,
    /// 6: stored in the file.
    FullyPresent,
    /// 7: partly stored; the sector bitmap says which sectors (differencing disks only).
    PartiallyPresent,
}

impl PayloadState {
    /// The state of entry bits 0-2, if it is one.
    fn from_bits(bits: u64) -> Option<PayloadState> {
        Some(match bits {
            0 => PayloadState::NotPresent,
            1 => PayloadState::Undefined,
            2 => PayloadState::Zero,
            3 => PayloadState::Unmapped,
            6 => PayloadState::FullyPresent,
            7 => PayloadState::PartiallyPresent,
            _ => return None,
        })
    }

    /// True when the block has bytes in the file.
    pub fn is_stored(self) -> bool {
        matches!(
            self,
            PayloadState::FullyPresent | PayloadState::PartiallyPresent
        )
    }
}

/// The shape of the table, derived from the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of a payload block.
    pub block_size: u64,
    /// Bytes of a logical sector (one bit of a sector bitmap).
    pub sector_size: u64,
    /// Payload blocks per sector bitmap block.
    pub chunk_ratio: u64,
    /// Payload blocks covering the virtual disk.
    pub data_blocks: u64,
    /// Entries the table holds.
    pub total_entries: u64,
    /// The virtual size.
    pub virtual_size: u64,
    /// True for a differencing disk.
    pub has_parent: bool,
}

impl Geometry {
    /// The geometry of a disk with metadata `m` (already validated: sizes in range).
    pub fn new(m: &Metadata) -> Geometry {
        let sector_size = u64::from(m.logical_sector_size);
        let chunk_ratio = ((1u64 << 23) * sector_size) / m.block_size;
        let data_blocks = m.virtual_size.div_ceil(m.block_size);
        let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
        let total_entries = if m.has_parent {
            bitmap_blocks * (chunk_ratio + 1)
        } else if data_blocks == 0 {
            0
        } else {
            data_blocks + (data_blocks - 1) / chunk_ratio
        };
        Geometry {
            block_size: m.block_size,
            sector_size,
            chunk_ratio,
            data_blocks,
            total_entries,
            virtual_size: m.virtual_size,
            has_parent: m.has_parent,
        }
    }

    /// The table index of payload block `block`.
    pub fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    /// The table index of the sector bitmap entry of chunk `chunk`.
    pub fn bitmap_index(&self, chunk: u64) -> u64 {
        chunk * (self.chunk_ratio + 1) + self.chunk_ratio
    }

    /// Bytes of block `block` inside the virtual disk (the last block may be short).
    pub fn used(&self, block: u64) -> u64 {
        self.block_size
            .min(self.virtual_size.saturating_sub(block * self.block_size))
    }
}

/// A range of the file that something occupies, for the overlap check.
struct Extent {
    start: u64,
    end: u64,
    /// Table index of the entry, or `None` for the file's own structures.
    entry: Option<u64>,
    what: &'static str,
}

/// The validated table.
#[derive(Debug)]
pub struct Bat {
    geometry: Geometry,
    /// Payload entries by block, in pages; `None` is a page of zero entries.
    pages: Vec<Option<Box<[u64]>>>,
    /// Sector bitmap entries by chunk.
    bitmaps: Vec<u64>,
    /// Blocks with bytes in the file.
    stored_blocks: u64,
}

/// The error for entry `index` of a table at `region`.
pub fn bad_entry(region: Region, index: u64, what: &str) -> Error {
    Error::corrupt(format!("BAT entry {index} {what}")).at_offset(region.offset + index * 8)
}

impl Bat {
    /// Reads and checks the table in `region` of `file`. `reserved` lists the file's own
    /// structures (header section, log, regions) that no block may overlap.
    pub fn read(
        file: &dyn Storage,
        region: Region,
        geometry: Geometry,
        reserved: &[(u64, u64, &'static str)],
    ) -> Result<Bat> {
        let name = file.name().to_path_buf();
        let g = geometry;
        if g.total_entries.saturating_mul(8) > region.length {
            return Err(Error::corrupt(format!(
                "the BAT region ({} bytes) is too small for the {} entries a disk of {} bytes in {} byte blocks needs",
                region.length, g.total_entries, g.virtual_size, g.block_size
            ))
            .at_offset(region.offset)
            .with_path(&name));
        }
        let file_len = file.len();
        let page_count = g.data_blocks.div_ceil(PAGE_ENTRIES as u64) as usize;
        let mut pages: Vec<Option<Box<[u64]>>> = Vec::new();
        pages.resize_with(page_count, || None);
        let mut bitmaps: Vec<u64> = Vec::new();
        let mut extents: Vec<Extent> = reserved
            .iter()
            .map(|&(start, end, what)| Extent {
                start,
                end,
                entry: None,
                what,
            })
            .collect();
        let mut partial_chunks: Vec<u64> = Vec::new();
        let mut stored_blocks = 0u64;
        let mut held = 0u64;
        let mut buf = vec![0u8; CHUNK_BYTES.min(g.total_entries as usize * 8)];
        let mut index = 0u64;
        while index < g.total_entries {
            let n = ((g.total_entries - index) as usize).min(CHUNK_BYTES / 8);
            let bytes = &mut buf[..n * 8];
            file.read_exact_at(bytes, region.offset + index * 8)
                .map_err(|e| e.with_path(&name))?;
            for c in bytes.chunks_exact(8) {
                let raw = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                let bad = |what: String| bad_entry(region, index, &what).with_path(&name);
                let state_bits = raw & 7;
                let offset = (raw >> 20) << 20;
                if (index + 1).is_multiple_of(g.chunk_ratio + 1) {
                    // A sector bitmap entry: not present (0) or present (6).
                    let chunk = index / (g.chunk_ratio + 1);
                    match state_bits {
                        0 => {}
                        6 => {
                            if offset < MIB || offset.saturating_add(MIB) > file_len {
                                return Err(bad(format!(
                                    "(sector bitmap of chunk {chunk}) points at {offset:#x}, outside the file ({file_len} bytes)"
                                )));
                            }
                            extents.push(Extent {
                                start: offset,
                                end: offset + MIB,
                                entry: Some(index),
                                what: "sector bitmap block",
                            });
                        }
                        s => {
                            return Err(bad(format!(
                                "(sector bitmap of chunk {chunk}) has state {s}, which is not a sector bitmap state"
                            )));
                        }
                    }
                    bitmaps.push(raw);
                } else {
                    let block = index - index / (g.chunk_ratio + 1);
                    if block >= g.data_blocks {
                        // Past the disk in the last chunk of a differencing table: unused.
                        index += 1;
                        continue;
                    }
                    let Some(state) = PayloadState::from_bits(state_bits) else {
                        return Err(bad(format!(
                            "(block {block}) has state {state_bits}, which is reserved"
                        )));
                    };
                    if state == PayloadState::PartiallyPresent && !g.has_parent {
                        return Err(bad(format!(
                            "(block {block}) is partially present, which only a differencing disk may be"
                        )));
                    }
                    if state.is_stored() {
                        let used = g.used(block);
                        if offset < MIB || offset.checked_add(used).is_none_or(|e| e > file_len) {
                            return Err(bad(format!(
                                "(block {block}) points at {offset:#x}, past the end of the file ({file_len} bytes) or into its header: the file is truncated or the table is damaged"
                            )));
                        }
                        extents.push(Extent {
                            start: offset,
                            end: offset + used.div_ceil(MIB) * MIB,
                            entry: Some(index),
                            what: "payload block",
                        });
                        stored_blocks += 1;
                        if state == PayloadState::PartiallyPresent {
                            let chunk = block / g.chunk_ratio;
                            if partial_chunks.last() != Some(&chunk) {
                                partial_chunks.push(chunk);
                            }
                        }
                    }
                    if raw != 0 {
                        let page = &mut pages[block as usize / PAGE_ENTRIES];
                        if page.is_none() {
                            held += (PAGE_ENTRIES * 8) as u64;
                            if held > MAX_TABLE_BYTES {
                                return Err(Error::unsupported(format!(
                                    "the block allocation table holds more entries than diskferry keeps in memory ({} MiB)",
                                    MAX_TABLE_BYTES >> 20
                                ))
                                .at_offset(region.offset + index * 8)
                                .with_path(&name));
                            }
                            *page = Some(vec![0u64; PAGE_ENTRIES].into_boxed_slice());
                        }
                        page.as_mut().expect("made above")[block as usize % PAGE_ENTRIES] = raw;
                    }
                }
                index += 1;
            }
        }
        for chunk in partial_chunks {
            if bitmaps.get(chunk as usize).is_none_or(|e| e & 7 != 6) {
                return Err(bad_entry(
                    region,
                    g.bitmap_index(chunk),
                    &format!(
                        "(sector bitmap of chunk {chunk}) is not present, but blocks of its chunk are partially present"
                    ),
                )
                .with_path(&name));
            }
        }
        check_overlaps(&mut extents, region).map_err(|e| e.with_path(&name))?;
        Ok(Bat {
            geometry,
            pages,
            bitmaps,
            stored_blocks,
        })
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Blocks with bytes in the file.
    pub fn stored_blocks(&self) -> u64 {
        self.stored_blocks
    }

    fn raw(&self, block: u64) -> u64 {
        self.pages
            .get((block / PAGE_ENTRIES as u64) as usize)
            .and_then(|p| p.as_ref())
            .map_or(0, |p| p[(block % PAGE_ENTRIES as u64) as usize])
    }

    /// The state of payload block `block` and, when stored, its file offset.
    pub fn payload(&self, block: u64) -> (PayloadState, u64) {
        let raw = self.raw(block);
        // Entries were checked at open: every state kept is a known one.
        let state = PayloadState::from_bits(raw & 7).unwrap_or(PayloadState::NotPresent);
        (state, (raw >> 20) << 20)
    }

    /// The file offset of chunk `chunk`'s sector bitmap block, when present.
    pub fn bitmap(&self, chunk: u64) -> Option<u64> {
        self.bitmaps
            .get(chunk as usize)
            .filter(|e| *e & 7 == 6)
            .map(|e| (e >> 20) << 20)
    }

    /// The first block at or after `block` (and before `limit`) whose state fails `same`:
    /// a run of blocks alike. Pages of zero entries are skipped whole.
    pub fn run_end(&self, mut block: u64, limit: u64, same: impl Fn(PayloadState) -> bool) -> u64 {
        let not_present_same = same(PayloadState::NotPresent);
        while block < limit {
            let page = (block / PAGE_ENTRIES as u64) as usize;
            if not_present_same && self.pages.get(page).is_some_and(|p| p.is_none()) {
                block = (page as u64 + 1) * PAGE_ENTRIES as u64;
                continue;
            }
            if !same(self.payload(block).0) {
                return block;
            }
            block += 1;
        }
        limit
    }
}

/// Refuses any two extents that overlap, naming the BAT entry involved.
fn check_overlaps(extents: &mut [Extent], region: Region) -> Result<()> {
    extents.sort_by_key(|e| (e.start, e.end));
    for pair in extents.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.start < a.end {
            // Name a table entry: the later one if both are entries.
            let (entry, other) = match (b.entry, a.entry) {
                (Some(i), _) => (i, a),
                (None, Some(i)) => (i, b),
                (None, None) => continue,
            };
            let mine = if entry == b.entry.unwrap_or(u64::MAX) {
                b
            } else {
                a
            };
            let whose = match other.entry {
                Some(j) => format!("the {} of BAT entry {j}", other.what),
                None => format!("the {}", other.what),
            };
            return Err(bad_entry(
                region,
                entry,
                &format!(
                    "({} at {:#x}) overlaps {whose} (at {:#x}): the table is damaged",
                    mine.what, mine.start, other.start
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64, block: u64, sector: u32, parent: bool) -> Metadata {
        Metadata {
            block_size: block,
            leave_blocks_allocated: false,
            has_parent: parent,
            virtual_size: size,
            page83: Default::default(),
            logical_sector_size: sector,
            physical_sector_size: 4096,
            parent_locator: None,
        }
    }

    #[test]
    fn geometry_follows_the_specification() {
        // 512-byte sectors, 1 MiB blocks: 4096 blocks per chunk.
        let g = Geometry::new(&meta(10 << 30, 1 << 20, 512, false));
        assert_eq!((g.chunk_ratio, g.data_blocks), (4096, 10240));
        assert_eq!(g.total_entries, 10240 + 2);
        assert_eq!(g.payload_index(4096), 4097);
        assert_eq!(g.bitmap_index(0), 4096);
        // Differencing: whole chunks.
        let g = Geometry::new(&meta(10 << 30, 1 << 20, 512, true));
        assert_eq!(g.total_entries, 3 * 4097);
        // 4096-byte sectors, 256 MiB blocks: 128 blocks per chunk.
        let g = Geometry::new(&meta(1 << 30, 256 << 20, 4096, false));
        assert_eq!((g.chunk_ratio, g.data_blocks, g.total_entries), (128, 4, 4));
        assert_eq!(g.used(3), 256 << 20);
        let g = Geometry::new(&meta((1 << 30) - 512, 256 << 20, 512, false));
        assert_eq!(g.used(3), (256 << 20) - 512);
    }
}
