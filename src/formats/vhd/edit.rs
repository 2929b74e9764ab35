//! Writing into an existing VHD in place ([`VhdMut`]), and what resize and rebase share with it:
//! opening an image for change and appending a block where the footer was.
//!
//! Crash consistency (see [`crate::edit`]):
//! - A new block goes where the end footer is: the footer is first written again past the new
//!   block (so the file always ends with a valid footer), then the block's data and sector
//!   bitmap, then (after a flush) the one BAT entry that makes the block part of the disk. A
//!   kill before the BAT entry leaves unreferenced space, which reads as nothing.
//! - Sectors written into a block that already exists become visible by their bitmap bit,
//!   which is set only after the data was flushed.
//! - The footer copy at offset 0 never changes while writing data.
//!
//! Fixed disks are written like raw files: there is no metadata to keep in step.

use super::bat::UNUSED;
use super::bitmap::set_range;
use super::footer::{DiskType, FOOTER_SIZE, Footer};
use super::reader::{FooterSource, VhdLayer};
use super::writer::next_place;
use crate::edit::{Clear, EditContext, ImageMut, open_backing_chain};
use crate::error::{Error, Result};
use crate::format::{OpenContext, Provenance, Salvage};
use crate::host_file::HostFile;
use crate::image::{Image, Layer};
use crate::storage::Storage;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of zeros written at a time.
const ZERO_CHUNK: usize = 1 << 20;

/// The bitmaps kept in memory at most before the cache is emptied (a bitmap is 512 bytes for
/// 2 MiB blocks, up to 64 KiB for 256 MiB ones).
const BITMAP_CACHE_ENTRIES: usize = 4096;

/// A VHD opened for change: its footer, and for sparse disks the tables, read and checked as
/// reading checks them.
pub(crate) struct Opened {
    /// The file, open for reading and writing.
    pub(crate) file: HostFile,
    /// The footer in use (from the end of the file).
    pub(crate) footer: Footer,
    /// The virtual size.
    pub(crate) size: u64,
    /// The tables of a dynamic or differencing disk.
    pub(crate) sparse: Option<Tables>,
}

/// What a dynamic or differencing disk's header and BAT say.
pub(crate) struct Tables {
    /// Where the dynamic header is.
    pub(crate) header_at: u64,
    /// Where the BAT is.
    pub(crate) table_offset: u64,
    /// How many entries the BAT has room for.
    pub(crate) max_table_entries: u64,
    /// The block size.
    pub(crate) block_size: u64,
    /// Bytes of each block's sector bitmap.
    pub(crate) bitmap_len: u64,
    /// The entries covering the disk.
    pub(crate) entries: Vec<u32>,
    /// The header as stored.
    pub(crate) header: super::dynamic_header::DynamicHeader,
}

/// Opens the VHD at `path` for change, refusing what cannot be changed safely.
pub(crate) fn open_for_change(path: &Path, ctx: &EditContext<'_>) -> Result<Opened> {
    let reading = Arc::new(HostFile::open(path)?);
    let open_ctx = OpenContext {
        gate: ctx.gate,
        provenance: Provenance::User,
        salvage: Salvage::Refuse,
        snapshot: None,
        data_files: crate::image::DataFilePolicy::Require,
    };
    let layer = VhdLayer::open(reading.clone(), &open_ctx)?;
    if layer.footer_source() == FooterSource::Copy {
        return Err(Error::corrupt(
            "the end footer is damaged; repair the image first ('diskferry check -r all')",
        )
        .with_path(path));
    }
    if !reading.len().is_multiple_of(512) {
        return Err(Error::unsupported(
            "the file does not end on a whole sector (a 511-byte footer of Virtual PC before 2004); convert the image to change it",
        )
        .with_path(path));
    }
    let footer = layer.footer().clone();
    let sparse = layer.header().map(|h| Tables {
        header_at: footer.data_offset,
        table_offset: h.table_offset,
        max_table_entries: u64::from(h.max_table_entries),
        block_size: u64::from(h.block_size),
        bitmap_len: super::bitmap::bitmap_bytes(h.block_size),
        entries: layer.bat_entries().unwrap_or_default(),
        header: h.clone(),
    });
    let size = layer.virtual_size();
    drop(layer);
    drop(reading);
    Ok(Opened {
        file: HostFile::open_rw(path)?,
        footer,
        size,
        sparse,
    })
}

/// The footer's 512 bytes with a new checksum.
pub(crate) fn seal_footer(mut bytes: [u8; 512]) -> [u8; 512] {
    bytes[64..68].fill(0);
    let sum = super::footer::checksum(&bytes, 64..68);
    bytes[64..68].copy_from_slice(&sum.to_be_bytes());
    bytes
}

/// Where the blocks end and the footer is in a sparse disk, and how a new block is placed.
pub(crate) struct Appender {
    /// The offset of the end footer (the end of the data).
    pub(crate) end: u64,
    /// The footer's bytes.
    pub(crate) footer: [u8; 512],
}

impl Appender {
    /// Makes room for a block of `block_len` bytes (bitmap and data) at the end of the file,
    /// placed as the writer places blocks, and returns its offset. The footer is written past
    /// the new block first, so that the file ends with a valid footer at every instant; the
    /// caller then fills the block and points to it.
    pub(crate) fn append(
        &mut self,
        file: &mut HostFile,
        block_size: u64,
        bitmap_len: u64,
    ) -> Result<u64> {
        let host = next_place(self.end, block_size, bitmap_len);
        if host / 512 >= u64::from(UNUSED) {
            return Err(Error::unsupported(
                "the VHD would grow past the 2 TiB a BAT entry can address",
            )
            .with_path(file.path()));
        }
        let new_end = host + bitmap_len + block_size;
        file.write_all_at(&self.footer, new_end)?;
        self.end = new_end;
        Ok(host)
    }
}

/// A VHD open for writing in place.
pub struct VhdMut {
    file: HostFile,
    size: u64,
    sparse: Option<SparseMut>,
}

/// The state of a dynamic or differencing disk being written.
struct SparseMut {
    differencing: bool,
    block_size: u64,
    bitmap_len: u64,
    table_offset: u64,
    entries: Vec<u32>,
    appender: Appender,
    /// The chain below a differencing disk, for the parts of sectors a write does not cover.
    parent: Option<Image>,
    /// Bitmaps read or changed, by block.
    bitmaps: BTreeMap<u64, Vec<u8>>,
    /// Blocks appended since the last commit: their bitmaps and BAT entries are still to write.
    new_blocks: BTreeSet<u64>,
    /// Existing blocks whose bitmap changed since the last commit.
    changed_bitmaps: BTreeSet<u64>,
}

/// Opens the VHD at `path` for writing; a differencing disk's parent chain is opened through
/// `ctx.gate`.
pub fn open_mut(path: &Path, ctx: &EditContext<'_>) -> Result<Box<dyn ImageMut>> {
    let opened = open_for_change(path, ctx)?;
    let sparse = match opened.sparse {
        None => None,
        Some(t) => {
            let differencing = opened.footer.disk_type == DiskType::Differencing;
            let parent = if differencing {
                Some(
                    open_backing_chain(path, super::FORMAT, ctx)?.ok_or_else(|| {
                        Error::invalid("the differencing disk's parent cannot be opened")
                            .with_path(path)
                    })?,
                )
            } else {
                None
            };
            Some(SparseMut {
                differencing,
                block_size: t.block_size,
                bitmap_len: t.bitmap_len,
                table_offset: t.table_offset,
                entries: t.entries,
                appender: Appender {
                    end: opened.file.len() - FOOTER_SIZE,
                    footer: opened.footer.bytes,
                },
                parent,
                bitmaps: BTreeMap::new(),
                new_blocks: BTreeSet::new(),
                changed_bitmaps: BTreeSet::new(),
            })
        }
    };
    Ok(Box::new(VhdMut {
        file: opened.file,
        size: opened.size,
        sparse,
    }))
}

impl VhdMut {
    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(Error::invalid(format!(
                "{len} bytes at {offset} run past the end of the virtual disk ({} bytes)",
                self.size
            ))
            .with_path(self.file.path()));
        }
        Ok(())
    }

    fn path(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }
}

impl SparseMut {
    fn host(&self, index: u64) -> Option<u64> {
        match self.entries.get(index as usize) {
            Some(&e) if e != UNUSED => Some(u64::from(e) * 512),
            _ => None,
        }
    }

    fn bitmap(&mut self, file: &HostFile, index: u64) -> Result<&mut Vec<u8>> {
        if !self.bitmaps.contains_key(&index) {
            let mut bits = vec![0u8; self.bitmap_len as usize];
            if let Some(host) = self.host(index)
                && !self.new_blocks.contains(&index)
            {
                file.read_exact_at(&mut bits, host)?;
            }
            if self.bitmaps.len() >= BITMAP_CACHE_ENTRIES
                && self.new_blocks.is_empty()
                && self.changed_bitmaps.is_empty()
            {
                self.bitmaps.clear();
            }
            self.bitmaps.insert(index, bits);
        }
        Ok(self.bitmaps.get_mut(&index).expect("just inserted"))
    }

    /// Reads the disk's current content of whole sectors at `offset` (inside one block).
    fn read_current(&mut self, file: &HostFile, offset: u64, buf: &mut [u8]) -> Result<()> {
        let index = offset / self.block_size;
        let in_block = offset % self.block_size;
        let host = self.host(index);
        let bits = match host {
            Some(_) => Some(self.bitmap(file, index)?.clone()),
            None => None,
        };
        for (i, sector) in buf.chunks_mut(512).enumerate() {
            let at = in_block + i as u64 * 512;
            let n = (at / 512) as usize;
            let stored = bits
                .as_ref()
                .is_some_and(|b| b[n / 8] & (0x80 >> (n % 8)) != 0);
            if let (true, Some(host)) = (stored, host) {
                file.read_exact_at(sector, host + self.bitmap_len + at)?;
            } else {
                read_parent(self.parent.as_ref(), offset + i as u64 * 512, sector)?;
            }
        }
        Ok(())
    }

    /// Writes whole sectors `data` at `offset` (inside one block), allocating the block.
    fn write_sectors(&mut self, file: &mut HostFile, offset: u64, data: &[u8]) -> Result<()> {
        let index = offset / self.block_size;
        let in_block = offset % self.block_size;
        let host = match self.host(index) {
            Some(h) => h,
            None => {
                let host = self
                    .appender
                    .append(file, self.block_size, self.bitmap_len)?;
                self.entries[index as usize] = (host / 512) as u32;
                self.new_blocks.insert(index);
                self.bitmaps
                    .insert(index, vec![0u8; self.bitmap_len as usize]);
                host
            }
        };
        file.write_all_at(data, host + self.bitmap_len + in_block)?;
        let first = (in_block / 512) as u32;
        let last = first + (data.len() / 512) as u32;
        let is_new = self.new_blocks.contains(&index);
        let bits = self.bitmap(file, index)?;
        let before = bits.clone();
        set_range(bits, first, last);
        if *bits != before && !is_new {
            self.changed_bitmaps.insert(index);
        }
        Ok(())
    }

    /// The unit bits are set and cleared in: one byte of the bitmap (4 KiB, eight sectors), as
    /// Hyper-V's 4 KiB-aligned writes leave them. libyal reads a bitmap byte with any bit set
    /// as eight stored sectors, so a byte that mixes set and clear bits would read otherwise
    /// there.
    fn unit(&self) -> u64 {
        self.block_size.min(4096)
    }

    /// Writes `data` at `offset` (inside one block), filling the rest of the units it touches
    /// from what the disk holds there now (the parent's data in a differencing disk).
    fn write_piece(&mut self, file: &mut HostFile, offset: u64, data: &[u8]) -> Result<()> {
        let unit = self.unit();
        let start = offset / unit * unit;
        let end = (offset + data.len() as u64).div_ceil(unit) * unit;
        if start == offset && end == offset + data.len() as u64 {
            return self.write_sectors(file, offset, data);
        }
        let u = unit as usize;
        let mut buf = vec![0u8; (end - start) as usize];
        let head = (offset - start) as usize;
        self.read_current(file, start, &mut buf[..u])?;
        let tail_at = buf.len() - u;
        if tail_at > 0 {
            let mut tail = vec![0u8; u];
            self.read_current(file, end - unit, &mut tail)?;
            buf[tail_at..].copy_from_slice(&tail);
        }
        buf[head..head + data.len()].copy_from_slice(data);
        self.write_sectors(file, start, &buf)
    }

    /// Clears whole units `[offset, offset + len)` (inside one block) as `how` says.
    fn clear_sectors(
        &mut self,
        file: &mut HostFile,
        offset: u64,
        len: u64,
        how: Clear,
    ) -> Result<()> {
        let index = offset / self.block_size;
        let in_block = offset % self.block_size;
        if self.differencing && how == Clear::Zero {
            // A differencing disk has no zero flag: zeros are stored as data, hiding the parent.
            let zeros = vec![0u8; ZERO_CHUNK.min(len as usize)];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeros.len() as u64);
                self.write_sectors(file, offset + done, &zeros[..n as usize])?;
                done += n;
            }
            return Ok(());
        }
        let Some(host) = self.host(index) else {
            // Nothing stored: the range already reads as zeros (dynamic) or the parent.
            return Ok(());
        };
        if !self.differencing {
            // A dynamic disk has no zero flag either, and qemu reads an allocated block without
            // looking at its bitmap: the data itself becomes zeros, then the bits are cleared
            // (either alone reads as zeros through every reader that honours the bitmap).
            file.write_zeros(host + self.bitmap_len + in_block, len)?;
        }
        // Differencing `Deallocate`: clearing the bits hands the sectors back to the parent.
        let first = (in_block / 512) as u32;
        let last = first + (len / 512) as u32;
        let is_new = self.new_blocks.contains(&index);
        let bits = self.bitmap(file, index)?;
        let before = bits.clone();
        for n in first..last {
            bits[(n / 8) as usize] &= !(0x80 >> (n % 8));
        }
        if *bits != before && !is_new {
            self.changed_bitmaps.insert(index);
        }
        Ok(())
    }

    /// Makes what was written visible: the bitmaps of new blocks go out with their data, a
    /// flush, then the pointers (BAT entries of new blocks, bits of existing ones).
    fn commit(&mut self, file: &mut HostFile) -> Result<()> {
        if self.new_blocks.is_empty() && self.changed_bitmaps.is_empty() {
            return Ok(());
        }
        for index in &self.new_blocks {
            let host = self.host(*index).expect("a new block has a place");
            file.write_all_at(&self.bitmaps[index], host)?;
        }
        file.sync()?;
        for index in std::mem::take(&mut self.changed_bitmaps) {
            let host = self.host(index).expect("a changed block has a place");
            file.write_all_at(&self.bitmaps[&index], host)?;
        }
        for index in std::mem::take(&mut self.new_blocks) {
            let entry = self.entries[index as usize];
            file.write_all_at(&entry.to_be_bytes(), self.table_offset + index * 4)?;
        }
        Ok(())
    }
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

impl ImageMut for VhdMut {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn allocation_unit(&self) -> u64 {
        self.sparse.as_ref().map_or(512, |s| s.block_size)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        let path = self.path();
        let Some(sparse) = self.sparse.as_mut() else {
            return self.file.write_all_at(data, offset);
        };
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let n = ((sparse.block_size - pos % sparse.block_size) as usize).min(data.len() - done);
            sparse
                .write_piece(&mut self.file, pos, &data[done..done + n])
                .map_err(|e| e.with_path(&path))?;
            done += n;
        }
        sparse.commit(&mut self.file)
    }

    fn clear(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        self.check_range(offset, len)?;
        let Some(sparse) = self.sparse.as_mut() else {
            // A fixed disk has no parent and no zero flag: both kinds of clearing are zeros.
            return self.file.write_zeros(offset, len);
        };
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let block_end = (pos / sparse.block_size + 1) * sparse.block_size;
            let piece_end = block_end.min(end);
            let unit = sparse.unit();
            let whole_start = pos.div_ceil(unit) * unit;
            let whole_end = (piece_end / unit * unit).max(whole_start);
            // Parts of units are rewritten with what they must read as.
            for (a, b) in [(pos, whole_start.min(piece_end)), (whole_end, piece_end)] {
                if a < b {
                    let mut fill = vec![0u8; (b - a) as usize];
                    if how == Clear::Deallocate {
                        read_parent(sparse.parent.as_ref(), a, &mut fill)?;
                    }
                    sparse.write_piece(&mut self.file, a, &fill)?;
                }
            }
            if whole_start < whole_end {
                sparse.clear_sectors(&mut self.file, whole_start, whole_end - whole_start, how)?;
            }
            pos = piece_end;
        }
        sparse.commit(&mut self.file)
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(sparse) = self.sparse.as_mut() {
            sparse.commit(&mut self.file)?;
        }
        self.file.sync()
    }
}
