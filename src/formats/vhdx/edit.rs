//! Writing into an existing VHDX in place ([`VhdxMut`]), and the session resize and rebase
//! share with it (`Session`): the file open for writing, its log, and the table changes
//! waiting to go through the log.
//!
//! Crash consistency (MS-VHDX 2.3.3): data goes where nothing points yet (a block allocated at
//! the end of the file, 1 MiB aligned, read as zeros until written) or in place into a block
//! already stored; the BAT entries and sector bitmap bits that make it visible go through the
//! log ([`super::log_write`]) after a flush. A file opened with a pending log has it replayed
//! in place first (as `check -r all` does, crash-consistently), since changes logged over an
//! unreplayed log would be lost at the next replay.
//!
//! Differencing disks follow the partially present rules (MS-VHDX 2.5.1.1 and 2.5.1.2): a
//! first write into a block not present allocates it as partially present, the sectors written
//! (whole logical sectors, the rest of a sector taken from what the disk reads there) marked
//! in the chunk's sector bitmap block, which is allocated on first use.

use super::bat::Geometry;
use super::log_write::{DataChange, LogWriter, Pending};
use super::metadata::Metadata;
use super::reader::VhdxLayer;
use super::region::Regions;
use crate::check::RepairMode;
use crate::edit::{Clear, EditContext, ImageMut, open_backing_chain};
use crate::error::{Error, Result};
use crate::format::{OpenContext, Provenance, Salvage};
use crate::host_file::HostFile;
use crate::image::Image;
use crate::storage::Storage;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// Bytes of data a clear moves at a time.
const CHUNK: u64 = 1 << 20;

/// BAT payload states (MS-VHDX 2.5.1.1).
pub(crate) const NOT_PRESENT: u64 = 0;
/// Stored in the file (for a sector bitmap entry: present).
pub(crate) const FULLY_PRESENT: u64 = 6;
/// Stored, the sector bitmap saying which sectors.
pub(crate) const PARTIALLY_PRESENT: u64 = 7;

/// A VHDX open for changes: the file, its log and the tables as they will be.
pub(crate) struct Session {
    pub(crate) file: HostFile,
    pub(crate) log: LogWriter,
    pub(crate) pending: Pending,
    pub(crate) regions: Regions,
    pub(crate) metadata: Metadata,
    pub(crate) geometry: Geometry,
}

fn open_layer(path: &Path, ctx: &EditContext<'_>) -> Result<VhdxLayer> {
    let storage: Arc<dyn Storage> = Arc::new(HostFile::open(path)?);
    let open_ctx = OpenContext {
        gate: ctx.gate,
        provenance: Provenance::User,
        salvage: Salvage::Refuse,
        snapshot: None,
        data_files: crate::image::DataFilePolicy::Require,
    };
    VhdxLayer::open(storage, &open_ctx)
}

/// Opens the VHDX at `path` for changes, its log replayed in place first if it holds entries.
pub(crate) fn open_session(path: &Path, ctx: &EditContext<'_>) -> Result<Session> {
    let mut layer = open_layer(path, ctx)?;
    if layer.replay().is_some() {
        drop(layer);
        super::check::check(path, Some(RepairMode::All), ctx.gate)?;
        layer = open_layer(path, ctx)?;
        if layer.replay().is_some() {
            return Err(Error::corrupt(
                "the file's log could not be replayed in place; run 'check -r all' and see what it reports",
            )
            .with_path(path));
        }
    }
    let file = HostFile::open_rw(path)?;
    let log = LogWriter::new(&file, layer.header())?;
    Ok(Session {
        file,
        log,
        pending: Pending::default(),
        regions: layer.regions().clone(),
        metadata: layer.metadata().clone(),
        geometry: *layer.bat().geometry(),
    })
}

impl Session {
    /// BAT entry `index` as it will be.
    pub(crate) fn entry(&self, index: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.pending
            .read(&self.file, self.regions.bat.offset + index * 8, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Sets BAT entry `index` (through the log).
    pub(crate) fn set_entry(&mut self, index: u64, raw: u64) -> Result<()> {
        self.pending.write(
            &self.file,
            self.regions.bat.offset + index * 8,
            &raw.to_le_bytes(),
        )
    }

    /// Room for `len` bytes at the end of the file, 1 MiB aligned, reading as zeros.
    pub(crate) fn allocate(&mut self, len: u64) -> Result<u64> {
        let host = self.file.len().next_multiple_of(MIB);
        self.file.set_len(host + len.next_multiple_of(MIB))?;
        Ok(host)
    }

    /// Logs and applies what is pending.
    pub(crate) fn commit(&mut self) -> Result<()> {
        self.log.commit(&mut self.file, &mut self.pending)
    }

    /// Commits, then ends the session (the log empty, its GUID cleared) and flushes.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.commit()?;
        self.log.end(&mut self.file)?;
        self.file.sync()
    }

    /// Clears the sector bitmap bits of block `block` of a differencing disk, where its chunk
    /// has a bitmap block: libyal reads the bits of a block whose entry says not present too,
    /// so a block handed back to the parent must leave none set.
    pub(crate) fn clear_block_bits(&mut self, block: u64) -> Result<()> {
        let g = self.geometry;
        let (state, base) = decode(self.entry(g.bitmap_index(block / g.chunk_ratio))?);
        if state != FULLY_PRESENT {
            return Ok(());
        }
        let (at, sectors) = bits_of(&g, base, block);
        let zeros = vec![0u8; (sectors / 8) as usize];
        self.pending.write(&self.file, at, &zeros)
    }

    /// The file offset of metadata item `id`.
    pub(crate) fn item_offset(&self, id: &super::guid::Guid) -> Result<u64> {
        let table = super::metadata::table_entries(&self.file, self.regions.metadata)?;
        table
            .iter()
            .find(|e| e.id == *id)
            .map(|e| self.regions.metadata.offset + u64::from(e.offset))
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "the metadata table has no item {}",
                    super::guid::braced(id)
                ))
                .at_offset(self.regions.metadata.offset)
                .with_path(self.file.path())
            })
    }
}

/// A payload entry's state and file offset.
pub(crate) fn decode(raw: u64) -> (u64, u64) {
    (raw & 7, (raw >> 20) << 20)
}

/// A VHDX open for writing in place.
pub struct VhdxMut {
    s: Session,
    /// The chain below a differencing disk, for the sectors a write does not cover.
    parent: Option<Image>,
    path: PathBuf,
}

/// Opens the VHDX at `path` for writing; a differencing disk's parent chain is opened through
/// `ctx.gate`.
pub fn open_mut(path: &Path, ctx: &EditContext<'_>) -> Result<Box<dyn ImageMut>> {
    let s = open_session(path, ctx)?;
    let parent = if s.metadata.has_parent {
        Some(
            open_backing_chain(path, super::FORMAT, ctx)?.ok_or_else(|| {
                Error::invalid("the differencing disk's parent cannot be opened").with_path(path)
            })?,
        )
    } else {
        None
    };
    Ok(Box::new(VhdxMut {
        s,
        parent,
        path: path.to_path_buf(),
    }))
}

/// Reads the parent chain's content at `offset` (zeros past its end or without a parent).
fn read_parent(parent: Option<&Image>, offset: u64, buf: &mut [u8]) -> Result<()> {
    buf.fill(0);
    let Some(parent) = parent else {
        return Ok(());
    };
    let size = parent.virtual_size();
    if offset >= size {
        return Ok(());
    }
    let n = ((size - offset) as usize).min(buf.len());
    parent.read_at(offset, &mut buf[..n])
}

/// Where block `block`'s bits are in its chunk's sector bitmap block at `base`, and how many
/// sectors it has.
fn bits_of(g: &Geometry, base: u64, block: u64) -> (u64, u64) {
    let sectors = g.block_size / g.sector_size;
    (base + (block % g.chunk_ratio) * sectors / 8, sectors)
}

impl VhdxMut {
    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.s.metadata.virtual_size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(format!(
                "{len} bytes at {offset} run past the end of the virtual disk ({size} bytes)"
            ))
            .with_path(&self.path));
        }
        Ok(())
    }

    /// Commits when the next block's changes might not fit in one log entry with the rest,
    /// so that one block's changes (bitmap block, bits, entry) are always logged together.
    fn maybe_commit(&mut self) -> Result<()> {
        // A block changes at most two BAT sectors and its bitmap twice over (64 KiB each).
        if self.s.pending.len() + 40 > self.s.log.capacity() {
            self.s.commit()?;
        }
        Ok(())
    }

    /// The sector bitmap block of chunk `chunk`, allocated (all clear) if it has none.
    fn bitmap_block(&mut self, chunk: u64) -> Result<u64> {
        let index = self.s.geometry.bitmap_index(chunk);
        let (state, host) = decode(self.s.entry(index)?);
        if state == FULLY_PRESENT {
            return Ok(host);
        }
        let host = self.s.allocate(MIB)?;
        self.s.set_entry(index, host | FULLY_PRESENT)?;
        Ok(host)
    }

    /// Sets (or clears) the bits of sectors `[first, last)` of block `block`.
    fn mark(&mut self, block: u64, first: u64, last: u64, set: bool) -> Result<()> {
        if first >= last {
            return Ok(());
        }
        let g = self.s.geometry;
        let base = self.bitmap_block(block / g.chunk_ratio)?;
        let (at, _) = bits_of(&g, base, block);
        let lo = first / 8;
        let hi = (last - 1) / 8 + 1;
        let mut bytes = vec![0u8; (hi - lo) as usize];
        self.s.pending.read(&self.s.file, at + lo, &mut bytes)?;
        for sector in first..last {
            let (byte, bit) = ((sector / 8 - lo) as usize, sector % 8);
            if set {
                bytes[byte] |= 1 << bit;
            } else {
                bytes[byte] &= !(1 << bit);
            }
        }
        self.s.pending.write(&self.s.file, at + lo, &bytes)
    }

    /// True when sector `sector` of partially present block `block` is stored.
    fn stored(&self, block: u64, sector: u64) -> Result<bool> {
        let g = self.s.geometry;
        let (state, base) = decode(self.s.entry(g.bitmap_index(block / g.chunk_ratio))?);
        if state != FULLY_PRESENT {
            return Ok(false);
        }
        let (at, _) = bits_of(&g, base, block);
        let mut b = [0u8; 1];
        self.s.pending.read(&self.s.file, at + sector / 8, &mut b)?;
        Ok(b[0] >> (sector % 8) & 1 != 0)
    }

    /// The disk's current content of whole logical sectors at `offset` of partially present
    /// block `block` stored at `host`.
    fn read_sectors(&self, block: u64, host: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let g = self.s.geometry;
        let ss = g.sector_size as usize;
        for (i, sector) in buf.chunks_mut(ss).enumerate() {
            let at = offset + (i * ss) as u64;
            let in_block = at - block * g.block_size;
            if self.stored(block, in_block / g.sector_size)? {
                self.s.file.read_exact_at(sector, host + in_block)?;
            } else {
                read_parent(self.parent.as_ref(), at, sector)?;
            }
        }
        Ok(())
    }

    /// The unit bits are set and cleared in: one byte of the bitmap (eight logical sectors).
    /// libyal reads a bitmap byte with any bit set as eight stored sectors, so a byte that
    /// mixed set and clear bits would read otherwise there.
    fn unit(&self) -> u64 {
        self.s.geometry.sector_size * 8
    }

    /// Writes `data` at `offset` of partially present block `block` stored at `host`: whole
    /// units (bitmap bytes), the rest of the first and last taken from what they read now,
    /// then their bits set.
    fn write_partial(&mut self, block: u64, host: u64, offset: u64, data: &[u8]) -> Result<()> {
        let g = self.s.geometry;
        let ss = g.sector_size;
        let unit = self.unit();
        let block_start = block * g.block_size;
        let start = offset / unit * unit;
        let end = (offset + data.len() as u64).div_ceil(unit) * unit;
        let mut buf;
        let bytes = if start == offset && end == offset + data.len() as u64 {
            data
        } else {
            buf = vec![0u8; (end - start) as usize];
            let u = unit as usize;
            self.read_sectors(block, host, start, &mut buf[..u])?;
            if end - start > unit {
                let tail = buf.len() - u;
                self.read_sectors(block, host, end - unit, &mut buf[tail..])?;
            }
            let head = (offset - start) as usize;
            buf[head..head + data.len()].copy_from_slice(data);
            &buf
        };
        self.s
            .file
            .write_all_at(bytes, host + (start - block_start))?;
        self.mark(
            block,
            (start - block_start) / ss,
            (end - block_start) / ss,
            true,
        )
    }

    /// Writes `data` at `offset`, inside one block.
    fn write_piece(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let g = self.s.geometry;
        let block = offset / g.block_size;
        let index = g.payload_index(block);
        let (state, host) = decode(self.s.entry(index)?);
        match state {
            FULLY_PRESENT => self.s.file.write_all_at(data, host + offset % g.block_size),
            PARTIALLY_PRESENT => self.write_partial(block, host, offset, data),
            NOT_PRESENT if g.has_parent => {
                let host = self.s.allocate(g.block_size)?;
                // Bits left by a block once here and since deallocated are cleared.
                let sectors = g.block_size / g.sector_size;
                self.mark(block, 0, sectors, false)?;
                self.s.set_entry(index, host | PARTIALLY_PRESENT)?;
                self.write_partial(block, host, offset, data)
            }
            _ => {
                // Reads as zeros now: a new block of zeros with the data in it.
                let host = self.s.allocate(g.block_size)?;
                self.s
                    .file
                    .write_all_at(data, host + offset % g.block_size)?;
                self.s.set_entry(index, host | FULLY_PRESENT)
            }
        }
    }

    /// Writes `data` at `offset`, block by block.
    fn write_all(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let bs = self.s.geometry.block_size;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let n = ((bs - pos % bs) as usize).min(data.len() - done);
            self.write_piece(pos, &data[done..done + n])?;
            self.maybe_commit()?;
            done += n;
        }
        Ok(())
    }

    /// Writes what the parent holds over `[offset, offset + len)`.
    fn write_parent(&mut self, offset: u64, len: u64) -> Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let mut buf = vec![0u8; n as usize];
            read_parent(self.parent.as_ref(), offset + done, &mut buf)?;
            self.write_all(offset + done, &buf)?;
            done += n;
        }
        Ok(())
    }

    /// Writes zeros over `[offset, offset + len)`.
    fn write_zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; len.min(CHUNK) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            self.write_all(offset + done, &zeros[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// Clears `[offset, offset + len)` inside one block of a differencing disk.
    fn clear_differencing(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        let g = self.s.geometry;
        let block = offset / g.block_size;
        let block_start = block * g.block_size;
        let index = g.payload_index(block);
        let raw = self.s.entry(index)?;
        let (state, _) = decode(raw);
        if how == Clear::Deallocate && offset == block_start && len == g.used(block) {
            // The whole block goes back to the parent: its entry says it (the block's space
            // is left unused).
            if raw != NOT_PRESENT {
                self.s.set_entry(index, NOT_PRESENT)?;
            }
            return self.s.clear_block_bits(block);
        }
        match (how, state) {
            (Clear::Deallocate, NOT_PRESENT) => Ok(()),
            (Clear::Deallocate, PARTIALLY_PRESENT) => {
                // Whole units go back to the parent (their bits cleared); the parts of units
                // at the ends are the parent's bytes written.
                let ss = g.sector_size;
                let unit = self.unit();
                let end = offset + len;
                let first = offset.div_ceil(unit) * unit;
                let last = end / unit * unit;
                if first >= last {
                    return self.write_parent(offset, len);
                }
                self.mark(
                    block,
                    (first - block_start) / ss,
                    (last - block_start) / ss,
                    false,
                )?;
                self.write_parent(offset, first - offset)?;
                self.write_parent(last, end - last)
            }
            (Clear::Deallocate, _) => self.write_parent(offset, len),
            // Zeros are stored as data: libyal reads a zero block of a differencing disk as
            // the parent's, and Hyper-V writes zeros over a parent as data too.
            (Clear::Zero, _) => self.write_zeros(offset, len),
        }
    }
}

impl ImageMut for VhdxMut {
    fn virtual_size(&self) -> u64 {
        self.s.metadata.virtual_size
    }

    fn allocation_unit(&self) -> u64 {
        if self.s.metadata.leave_blocks_allocated {
            self.s.geometry.sector_size
        } else {
            self.s.geometry.block_size
        }
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        let path = self.path.clone();
        let run = |m: &mut Self| -> Result<()> {
            m.s.log.begin(&mut m.s.file, DataChange::Yes)?;
            m.write_all(offset, data)?;
            m.s.commit()
        };
        run(self).map_err(|e| e.with_path(&path))
    }

    fn clear(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        self.check_range(offset, len)?;
        let path = self.path.clone();
        let run = |m: &mut Self| -> Result<()> {
            m.s.log.begin(&mut m.s.file, DataChange::Yes)?;
            let g = m.s.geometry;
            let end = offset + len;
            let mut pos = offset;
            while pos < end {
                let block = pos / g.block_size;
                let piece_end = ((block + 1) * g.block_size).min(end);
                if g.has_parent {
                    m.clear_differencing(pos, piece_end - pos, how)?;
                } else {
                    // No parent: both kinds read as zeros; a block not stored already does.
                    let (state, host) = decode(m.s.entry(g.payload_index(block))?);
                    if state == FULLY_PRESENT {
                        m.s.file
                            .write_zeros(host + pos % g.block_size, piece_end - pos)?;
                    }
                }
                m.maybe_commit()?;
                pos = piece_end;
            }
            m.s.commit()
        };
        run(self).map_err(|e| e.with_path(&path))
    }

    fn flush(&mut self) -> Result<()> {
        let path = self.path.clone();
        self.s.finish().map_err(|e| e.with_path(&path))
    }
}
