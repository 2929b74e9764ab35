//! Writing into an existing VDI in place ([`VdiMut`]).
//!
//! A VDI block is stored whole or not at all (there is no sector bitmap), so a write into a
//! block not yet stored fills the rest of the block first: from the parent chain in a
//! differencing image, with zeros in a dynamic one.
//!
//! Crash consistency: a new block is written whole at the place the allocated-block count
//! gives (past every stored block), flushed; then the count grows (so that a later
//! allocation never reuses the place), then the block map entry points to it. Killed between
//! the two, the count is one ahead of the map: a block of unreferenced space, which reads as
//! nothing: `check` reports it as a leak (`qemu-img check` as an error) until the next opening
//! for change takes the place again. Opening places the next block right after the highest
//! stored one, whatever the count says, so a count behind the map can never make a later
//! write overwrite a stored block.

use super::header::{BLOCK_FREE, BLOCK_ZERO, Header};
use crate::edit::{Clear, EditContext, ImageMut, open_backing_chain};
use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::image::Image;
use std::path::Path;

/// Header offsets (VDICore.h, VDIHEADER1 after the 0x48-byte pre-header).
pub(crate) const DISK_SIZE_AT: u64 = 0x170;
/// `cBlocksAllocated`.
pub(crate) const ALLOCATED_AT: u64 = 0x184;
/// `uuidLinkage` (the parent's `uuidCreate`).
pub(crate) const LINKAGE_AT: u64 = 0x1A8;

/// A VDI opened for change: its header, block map and file.
pub(crate) struct Opened {
    /// The file, open for reading and writing.
    pub(crate) file: HostFile,
    /// The header as read.
    pub(crate) header: Header,
    /// The block map.
    pub(crate) map: Vec<u32>,
    /// Where the next block goes, as an index of the data area.
    pub(crate) next: u32,
}

/// Opens the VDI at `path` for change, refusing the oldest header version (whose layout
/// diskferry does not write).
pub(crate) fn open_for_change(path: &Path) -> Result<Opened> {
    let mut file = HostFile::open_rw(path)?;
    let header = Header::read(&file).map_err(|e| e.with_path(path))?;
    if header.version >> 16 != 1 {
        return Err(Error::unsupported(format!(
            "VDI header version {} is not changed in place; convert the image first",
            header.version_text()
        ))
        .with_path(path));
    }
    let map = header.read_map(&file).map_err(|e| e.with_path(path))?;
    // The next block goes right after the highest stored one. Places between it and the count
    // (an allocation killed between its count and its map entry) hold nothing anything points
    // to, so they are taken again; a count behind the map (another tool) would place a block
    // over a stored one. Either way the count is set to what the map says before anything is
    // placed by it.
    let highest = map.iter().filter(|&&e| e < BLOCK_ZERO).max().copied();
    let next = highest.map_or(0, |h| h.saturating_add(1));
    if next != header.blocks_allocated {
        file.write_all_at(&next.to_le_bytes(), ALLOCATED_AT)?;
        file.sync()?;
    }
    Ok(Opened {
        file,
        header,
        map,
        next,
    })
}

impl Opened {
    /// Makes block `index` the one stored at `next`, whose bytes are already written and
    /// flushed: the count first (so that no later allocation takes the place), then the map
    /// entry, one 4-byte write.
    pub(crate) fn point_at_next(&mut self, index: u64) -> Result<()> {
        let place = self.next;
        self.next = place + 1;
        self.file
            .write_all_at(&self.next.to_le_bytes(), ALLOCATED_AT)?;
        self.file.sync()?;
        self.file
            .write_all_at(&place.to_le_bytes(), self.header.blocks_offset + index * 4)?;
        self.map[index as usize] = place;
        Ok(())
    }
}

/// A VDI open for writing in place.
pub struct VdiMut {
    opened: Opened,
    parent: Option<Image>,
}

/// Opens the VDI at `path` for writing; a differencing image's parent chain is opened
/// through `ctx.gate`.
pub fn open_mut(path: &Path, ctx: &EditContext<'_>) -> Result<Box<dyn ImageMut>> {
    let opened = open_for_change(path)?;
    let parent = if opened.header.image_type.has_parent() {
        Some(
            open_backing_chain(path, super::FORMAT, ctx)?.ok_or_else(|| {
                Error::invalid("the differencing image's parent cannot be opened").with_path(path)
            })?,
        )
    } else {
        None
    };
    Ok(Box::new(VdiMut { opened, parent }))
}

impl VdiMut {
    fn block_size(&self) -> u64 {
        u64::from(self.opened.header.block_size)
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.opened.header.disk_size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(format!(
                "{len} bytes at {offset} run past the end of the virtual disk ({size} bytes)"
            ))
            .with_path(self.opened.file.path()));
        }
        Ok(())
    }

    /// What a block not stored reads as: the parent's data, or zeros.
    fn unstored(&self, index: u64, entry: u32) -> Result<Vec<u8>> {
        let bs = self.block_size();
        let mut buf = vec![0u8; bs as usize];
        if entry == BLOCK_FREE
            && let Some(parent) = &self.parent
        {
            let start = index * bs;
            let size = parent.virtual_size();
            if start < size {
                let n = ((size - start).min(bs)) as usize;
                parent.read_at(start, &mut buf[..n])?;
            }
        }
        Ok(buf)
    }

    /// Stores block `index` whole with `data`, then points the map at it.
    fn store_block(&mut self, index: u64, data: &[u8]) -> Result<()> {
        let o = &mut self.opened;
        let place = o.next;
        if place >= BLOCK_ZERO {
            return Err(
                Error::unsupported("the VDI has no block numbers left").with_path(o.file.path())
            );
        }
        let at = o.header.data_offset + u64::from(place) * o.header.block_stride();
        if o.header.block_extra > 0 {
            o.file.write_zeros(
                at - u64::from(o.header.block_extra),
                u64::from(o.header.block_extra),
            )?;
        }
        o.file.write_all_at(data, at)?;
        o.file.sync()?;
        o.point_at_next(index)
    }

    /// Writes `data` at `in_block` of block `index`.
    fn write_in_block(&mut self, index: u64, in_block: u64, data: &[u8]) -> Result<()> {
        let entry = self.opened.map[index as usize];
        if entry < BLOCK_ZERO {
            let at = self.opened.header.block_data_at(entry) + in_block;
            return self.opened.file.write_all_at(data, at);
        }
        let mut block = self.unstored(index, entry)?;
        block[in_block as usize..in_block as usize + data.len()].copy_from_slice(data);
        self.store_block(index, &block)
    }

    /// Sets the map entry of a block that is not stored.
    fn set_entry(&mut self, index: u64, entry: u32) -> Result<()> {
        let o = &mut self.opened;
        o.file
            .write_all_at(&entry.to_le_bytes(), o.header.blocks_offset + index * 4)?;
        o.map[index as usize] = entry;
        Ok(())
    }
}

impl ImageMut for VdiMut {
    fn virtual_size(&self) -> u64 {
        self.opened.header.disk_size
    }

    fn allocation_unit(&self) -> u64 {
        self.block_size()
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        let bs = self.block_size();
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let n = ((bs - pos % bs) as usize).min(data.len() - done);
            self.write_in_block(pos / bs, pos % bs, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn clear(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        self.check_range(offset, len)?;
        let bs = self.block_size();
        let differencing = self.opened.header.image_type.has_parent();
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let index = pos / bs;
            let in_block = pos % bs;
            let n = (bs - in_block).min(end - pos);
            let whole = in_block == 0 && n == bs;
            let entry = self.opened.map[index as usize];
            let stored = entry < BLOCK_ZERO;
            match (how, stored) {
                // A block not stored already reads as zeros without a parent, or as the
                // parent's data, which is what deallocating asks for.
                (Clear::Deallocate, false) => {}
                (Clear::Zero, false) if !differencing || entry == BLOCK_ZERO => {}
                // VDI's zero entry (0xFFFFFFFE) hides the parent without storing anything.
                (Clear::Zero, false) if whole => self.set_entry(index, BLOCK_ZERO)?,
                (Clear::Zero, _) => {
                    // A stored block keeps its place: freeing it would leave space the
                    // allocated-block count still counts (VDI reclaims space only by compaction).
                    let zeros = vec![0u8; n as usize];
                    self.write_in_block(index, in_block, &zeros)?;
                }
                (Clear::Deallocate, true) => {
                    // Freeing a stored block would leave a hole in the numbering that only
                    // compaction closes: the range takes what the parent (or nothing) holds.
                    let fill = self.unstored(index, BLOCK_FREE)?;
                    let part = &fill[in_block as usize..(in_block + n) as usize];
                    let part = part.to_vec();
                    self.write_in_block(index, in_block, &part)?;
                }
            }
            pos += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.opened.file.sync()
    }
}
