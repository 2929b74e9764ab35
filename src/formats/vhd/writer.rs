//! Writing VHDs: fixed, dynamic and differencing, to a file or front to back to a stream.
//!
//! Layout of a dynamic or differencing file (what Windows, blktap and Xen Orchestra expect):
//! footer copy at 0, header at 512, parent locators, the BAT, the blocks (each a sector
//! bitmap and its data, the data 4 KiB-aligned as Hyper-V aligns it), the footer.
//!
//! Writing a file, a block is allocated only when something must be stored in it, so blocks
//! that turn out to be zeros cost nothing, and the BAT is written last. Writing a stream, the
//! BAT must precede the blocks, so which blocks exist is decided up front from the source's
//! allocation map (`CreateSpec::may_have_data`), and each block is assembled in memory so that
//! its bitmap (which says which sectors were written) can go out before its data.

use super::bat::{self, UNUSED};
use super::bitmap::{bitmap_bytes, set_range};
use super::dynamic_header::{HEADER_SIZE, NewHeader};
use super::footer::{DiskType, FOOTER_SIZE, NewFooter, vhd_now};
use super::parent;
use super::reader::VhdLayer;
use crate::convert::range_has_data;
use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::writer::{CreateSpec, Destination, ImageWriter, Piece};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// The creator application we write: "qem2" is the code qemu (2.6 and later) writes for a
/// disk whose `current_size` is exact, and every reader (qemu of any version since 2.6,
/// Hyper-V, Azure, VirtualBox, blktap, Xen Orchestra, libyal, dissect) takes such a disk's size
/// from `current_size`. A code of our own would make qemu before 10 size the disk by its
/// geometry and silently cut the end off; "win " would claim Microsoft made the file, and
/// "tap" switches blktap to its batmap and legacy-bitmap code paths.
pub const CREATOR_APP: [u8; 4] = *b"qem2";
/// The creator version: diskferry's own (major << 16 | minor), so our files can be told apart
/// from qemu's (which writes 5.3).
pub const CREATOR_VERSION: u32 = 0x0000_0001;
/// The default block size, what Virtual PC, Hyper-V, qemu and XenServer use.
pub const DEFAULT_BLOCK_SIZE: u64 = 2 << 20;
/// The smallest block size we write.
pub const MIN_BLOCK_SIZE: u64 = 4 << 10;
/// The largest block size we write (a block is assembled in memory when streaming).
pub const MAX_BLOCK_SIZE: u64 = 256 << 20;
/// The largest disk a VHD holds: 2040 GiB, the limit of Hyper-V and qemu (0xFF000000 sectors).
pub const MAX_VHD_SIZE: u64 = 0xFF00_0000 * 512;

/// Block data of blocks this large or larger is aligned to 4 KiB (as Hyper-V aligns it);
/// smaller blocks would waste too much space on the padding.
const ALIGN_FROM_BLOCK_SIZE: u64 = 1 << 20;
const DATA_ALIGN: u64 = 4096;

fn round_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Where the bytes go: positional writes to a file, or a stream written strictly in order
/// (gaps filled with zeros).
enum Out {
    File { f: HostFile },
    Stream { w: Box<dyn Write + Send>, pos: u64 },
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl Out {
    fn write_at(&mut self, bytes: &[u8], at: u64) -> Result<()> {
        match self {
            Out::File { f } => f.write_all_at(bytes, at),
            Out::Stream { w, pos } => {
                if at < *pos {
                    return Err(Error::invalid(format!(
                        "internal error: VHD stream writer asked to go back from {pos} to {at}"
                    )));
                }
                let io = |e| Error::io("cannot write to the output stream", e).at_offset(at);
                while *pos < at {
                    let n = (at - *pos).min(ZEROS.len() as u64) as usize;
                    w.write_all(&ZEROS[..n]).map_err(io)?;
                    *pos += n as u64;
                }
                w.write_all(bytes).map_err(io)?;
                *pos += bytes.len() as u64;
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Out::File { mut f } => f.sync(),
            Out::Stream { mut w, .. } => w
                .flush()
                .map_err(|e| Error::io("cannot flush the output stream", e)),
        }
    }
}

fn open_out(dest: Destination<'_>) -> Result<Out> {
    Ok(match dest {
        Destination::Files { staging, path } => Out::File {
            f: staging.create_output(&path)?,
        },
        Destination::Stream(w) => Out::Stream { w, pos: 0 },
    })
}

/// The validated `-o` choices.
struct Settings {
    disk_type: DiskType,
    block_size: u64,
}

fn settings(spec: &CreateSpec) -> Result<Settings> {
    let fixed = spec.options.text("subformat") == Some("fixed");
    if fixed && spec.backing.is_some() {
        return Err(Error::invalid(
            "a fixed VHD cannot have a backing file: differencing VHDs are dynamic (drop subformat=fixed)",
        ));
    }
    if fixed && spec.options.contains("block_size") {
        return Err(Error::invalid(
            "block_size applies to dynamic and differencing VHDs only, not to subformat=fixed",
        ));
    }
    let block_size = spec
        .options
        .size("block_size")
        .unwrap_or(DEFAULT_BLOCK_SIZE);
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::invalid(format!(
            "block_size {block_size} is not valid for VHD: give a power of two from 4K to 256M (2M, the default, is what Hyper-V, XenServer and Azure expect)"
        )));
    }
    let disk_type = if fixed {
        DiskType::Fixed
    } else if spec.backing.is_some() {
        DiskType::Differencing
    } else {
        DiskType::Dynamic
    };
    Ok(Settings {
        disk_type,
        block_size,
    })
}

/// Makes a VHD writer for `spec` at `dest`.
pub fn create_writer(dest: Destination<'_>, spec: &CreateSpec) -> Result<Box<dyn ImageWriter>> {
    let settings = settings(spec)?;
    // VHD sizes are whole sectors; a source of another size gets zeros up to the next one,
    // as qemu-img does.
    let disk_size = round_up(spec.size, 512);
    if disk_size > MAX_VHD_SIZE {
        return Err(Error::invalid(format!(
            "a VHD holds at most 2040 GiB ({MAX_VHD_SIZE} bytes), and this disk has {disk_size}; use vhdx for larger disks"
        )));
    }
    let dest_dir = match &dest {
        Destination::Files { path, .. } => {
            Some(path.parent().unwrap_or(Path::new("")).to_path_buf())
        }
        Destination::Stream(_) => None,
    };
    let footer = NewFooter {
        disk_type: settings.disk_type,
        size: disk_size,
        timestamp: vhd_now(),
        uuid: *uuid::Uuid::new_v4().as_bytes(),
        creator_app: CREATOR_APP,
        creator_version: CREATOR_VERSION,
    }
    .to_bytes();
    let out = open_out(dest)?;
    if settings.disk_type == DiskType::Fixed {
        return Ok(Box::new(FixedWriter {
            out,
            disk_size,
            footer,
        }));
    }
    Ok(Box::new(SparseWriter::new(
        out,
        spec,
        &settings,
        disk_size,
        footer,
        dest_dir.as_deref(),
    )?))
}

/// A fixed VHD: the disk, then the footer.
struct FixedWriter {
    out: Out,
    disk_size: u64,
    footer: [u8; 512],
}

impl ImageWriter for FixedWriter {
    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        match piece {
            Piece::Data { bytes, .. } => self.out.write_at(bytes, offset),
            // A file is sparse where nothing is written; a stream gets the zeros when the next
            // write comes.
            Piece::Zero(_) | Piece::Unallocated(_) => Ok(()),
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let mut this = *self;
        this.out.write_at(&this.footer, this.disk_size)?;
        this.out.finish()
    }
}

/// The parent fields of a differencing child's header.
struct ParentFields {
    uuid: [u8; 16],
    timestamp: u32,
    name: String,
    locators: Vec<([u8; 4], Vec<u8>)>,
}

fn parent_fields(spec: &CreateSpec, dest_dir: Option<&Path>) -> Result<Option<ParentFields>> {
    let Some(backing) = &spec.backing else {
        return Ok(None);
    };
    let top = backing.image.top();
    let Some(vhd) = top.as_any().downcast_ref::<VhdLayer>() else {
        return Err(Error::invalid(format!(
            "the backing image '{}' is {}, but the parent of a differencing VHD must be a VHD",
            backing.path.display(),
            top.format()
        )));
    };
    let absolute = std::fs::canonicalize(&backing.path).unwrap_or_else(|_| backing.path.clone());
    let stored = Path::new(&backing.stored_name);
    let relative: PathBuf = if stored.is_relative() {
        stored
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect()
    } else {
        match dest_dir.map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        }) {
            Some(dir) => match std::fs::canonicalize(dir) {
                Ok(dir) => parent::relative_path(&dir, &absolute),
                Err(_) => absolute.clone(),
            },
            None => absolute.clone(),
        }
    };
    let name = absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Some(ParentFields {
        uuid: vhd.footer().uuid,
        // The parent's own creation stamp, which survives copying the file (its mtime would
        // not), so that the link can be checked later.
        timestamp: vhd.footer().timestamp,
        name,
        locators: parent::new_locator_data(&relative, &absolute),
    }))
}

/// The block being assembled.
struct Block {
    index: u64,
    /// The sector bitmap, padded to whole sectors.
    bits: Vec<u8>,
    /// Where the block's bitmap goes (assigned once something must be stored).
    host: Option<u64>,
}

/// A dynamic or differencing VHD.
struct SparseWriter {
    out: Out,
    block_size: u64,
    bitmap_len: u64,
    disk_size: u64,
    differencing: bool,
    table_offset: u64,
    entries: Vec<u32>,
    /// Streams only: which blocks the BAT already promised.
    planned: Option<Vec<bool>>,
    /// Streams only: the bitmap and data of the current block, in file order.
    buffer: Vec<u8>,
    /// Where the next block's bitmap goes.
    next_block: u64,
    /// One past the last byte of metadata or block data: where the footer goes.
    data_end: u64,
    current: Option<Block>,
    /// Every block before this one is complete.
    closed: u64,
    footer: [u8; 512],
}

impl SparseWriter {
    fn new(
        out: Out,
        spec: &CreateSpec,
        settings: &Settings,
        disk_size: u64,
        footer: [u8; 512],
        dest_dir: Option<&Path>,
    ) -> Result<SparseWriter> {
        let block_size = settings.block_size;
        let blocks = disk_size.div_ceil(block_size);
        let parent = parent_fields(spec, dest_dir)?;
        let locator_start = FOOTER_SIZE + HEADER_SIZE;
        let (locators, table_offset) = match &parent {
            Some(p) => parent::place_locators(locator_start, &p.locators),
            None => (Vec::new(), locator_start),
        };
        let table_end = table_offset + bat::bat_bytes(blocks);
        let bitmap_len = bitmap_bytes(block_size as u32);
        let first_block = if block_size >= ALIGN_FROM_BLOCK_SIZE {
            round_up(table_end + bitmap_len, DATA_ALIGN) - bitmap_len
        } else {
            table_end
        };
        let header = NewHeader {
            table_offset,
            max_table_entries: blocks as u32,
            block_size: block_size as u32,
            parent_uuid: parent.as_ref().map_or([0; 16], |p| p.uuid),
            parent_timestamp: parent.as_ref().map_or(0, |p| p.timestamp),
            parent_name: parent.as_ref().map_or(String::new(), |p| p.name.clone()),
            locators,
        };
        let mut w = SparseWriter {
            out,
            block_size,
            bitmap_len,
            disk_size,
            differencing: parent.is_some(),
            table_offset,
            entries: vec![UNUSED; blocks as usize],
            planned: None,
            buffer: Vec::new(),
            next_block: first_block,
            data_end: table_end,
            current: None,
            closed: 0,
            footer,
        };
        if matches!(w.out, Out::Stream { .. }) {
            w.plan(spec)?;
        }
        w.out.write_at(&w.footer.clone(), 0)?;
        w.out.write_at(&header.to_bytes()[..], FOOTER_SIZE)?;
        if let Some(p) = &parent {
            for (entry, (_, data)) in header.locators.iter().zip(&p.locators) {
                w.out.write_at(data, entry.data_offset)?;
            }
        }
        if w.planned.is_some() {
            let table = bat::encode(&w.entries);
            w.out.write_at(&table, table_offset)?;
        }
        Ok(w)
    }

    /// Streams: decides which blocks exist before any data arrives, and gives each its place.
    /// A block exists where the source may hold data, and (differencing) where the parent
    /// holds data the source may overwrite with zeros.
    fn plan(&mut self, spec: &CreateSpec) -> Result<()> {
        let blocks = self.entries.len() as u64;
        let mut planned = vec![false; blocks as usize];
        let parent_image = spec
            .backing
            .as_ref()
            .filter(|_| spec.source_map.is_some())
            .map(|b| b.image.clone());
        let block_size = self.block_size;
        let disk_size = self.disk_size;
        let needs_block = |first: u64, last: u64| -> Result<bool> {
            let start = first * block_size;
            let end = ((last + 1) * block_size).min(disk_size);
            if spec.may_have_data(start, end - start)? {
                return Ok(true);
            }
            match &parent_image {
                Some(img) => range_has_data(img, start, end),
                None => Ok(false),
            }
        };
        // Halve ranges that may hold data down to single blocks: a sparse disk costs a
        // handful of queries, a full one about two per block.
        let mut stack = vec![(0u64, blocks.saturating_sub(1))];
        while let Some((first, last)) = stack.pop() {
            if blocks == 0 || !needs_block(first, last)? {
                continue;
            }
            if first == last {
                planned[first as usize] = true;
            } else {
                let mid = first + (last - first) / 2;
                stack.push((mid + 1, last));
                stack.push((first, mid));
            }
        }
        for (index, p) in planned.iter().enumerate() {
            if *p {
                let host = self.allocate()?;
                self.entries[index] = (host / 512) as u32;
            }
        }
        self.planned = Some(planned);
        Ok(())
    }

    /// The place of the next block's bitmap.
    fn allocate(&mut self) -> Result<u64> {
        let host = self.next_block;
        let end = host + self.bitmap_len + self.block_size;
        if (host / 512) >= u64::from(UNUSED) {
            return Err(Error::invalid(
                "the VHD would grow past the 2 TiB a BAT entry can address",
            ));
        }
        self.next_block = if self.block_size >= ALIGN_FROM_BLOCK_SIZE {
            round_up(end + self.bitmap_len, DATA_ALIGN) - self.bitmap_len
        } else {
            end
        };
        self.data_end = end;
        Ok(host)
    }

    fn block_len(&self) -> usize {
        (self.bitmap_len + self.block_size) as usize
    }

    /// The block `index`, started if it is not the current one.
    fn block(&mut self, index: u64) -> Result<&mut Block> {
        if self.current.as_ref().is_none_or(|b| b.index != index) {
            self.close_until(index)?;
            let host = match &self.planned {
                Some(planned) if planned[index as usize] => {
                    let len = self.block_len();
                    self.buffer.clear();
                    self.buffer.resize(len, 0);
                    Some(u64::from(self.entries[index as usize]) * 512)
                }
                _ => None,
            };
            self.current = Some(Block {
                index,
                bits: vec![0u8; self.bitmap_len as usize],
                host,
            });
        }
        Ok(self.current.as_mut().expect("just set"))
    }

    /// Completes every block before `index`.
    fn close_until(&mut self, index: u64) -> Result<()> {
        while self.closed < index {
            let current = self.current.take_if(|b| b.index == self.closed);
            match current {
                Some(block) => self.close(block)?,
                None => {
                    // A block nothing was stored in: a stream still owes it if the BAT
                    // promised it.
                    if self
                        .planned
                        .as_ref()
                        .is_some_and(|p| p[self.closed as usize])
                    {
                        let len = self.block_len();
                        self.buffer.clear();
                        self.buffer.resize(len, 0);
                        let host = u64::from(self.entries[self.closed as usize]) * 512;
                        self.out.write_at(&self.buffer, host)?;
                    }
                }
            }
            self.closed += 1;
        }
        Ok(())
    }

    fn close(&mut self, block: Block) -> Result<()> {
        let Some(host) = block.host else {
            return Ok(());
        };
        match &self.out {
            Out::Stream { .. } => {
                self.buffer[..self.bitmap_len as usize].copy_from_slice(&block.bits);
                let buffer = std::mem::take(&mut self.buffer);
                let result = self.out.write_at(&buffer, host);
                self.buffer = buffer;
                result
            }
            Out::File { .. } => self.out.write_at(&block.bits, host),
        }
    }

    /// Applies one part of a piece that lies inside block `index`.
    fn apply(&mut self, index: u64, in_block: u64, part: Part<'_>) -> Result<()> {
        let stores = match part {
            Part::Data(_) => true,
            // A differencing disk must store zeros to hide what the parent holds there; a
            // dynamic disk reads zeros wherever nothing is stored.
            Part::Zero(_) => self.differencing,
            Part::Unallocated(_) => false,
        };
        if !stores {
            // Streams write the blocks the BAT promised when they are closed, whether or not
            // anything was stored in them.
            return Ok(());
        }
        let streaming = self.planned.is_some();
        let bitmap_len = self.bitmap_len;
        let len = part.len();
        let block = self.block(index)?;
        let first = (in_block / 512) as u32;
        let last = (in_block + len).div_ceil(512) as u32;
        set_range(&mut block.bits, first, last);
        let host = match block.host {
            Some(h) => h,
            None if streaming => {
                return Err(Error::invalid(format!(
                    "internal error: block {index} was planned empty from the source's allocation map, but data arrived for it"
                )));
            }
            None => {
                let h = self.allocate()?;
                self.entries[index as usize] = (h / 512) as u32;
                self.current.as_mut().expect("current block").host = Some(h);
                h
            }
        };
        if let Part::Data(bytes) = part {
            if streaming {
                let at = (bitmap_len + in_block) as usize;
                self.buffer[at..at + bytes.len()].copy_from_slice(bytes);
            } else {
                self.out.write_at(bytes, host + bitmap_len + in_block)?;
            }
        }
        Ok(())
    }
}

/// A piece cut to one block.
#[derive(Clone, Copy)]
enum Part<'a> {
    Data(&'a [u8]),
    Zero(u64),
    Unallocated(u64),
}

impl Part<'_> {
    fn len(&self) -> u64 {
        match self {
            Part::Data(b) => b.len() as u64,
            Part::Zero(n) | Part::Unallocated(n) => *n,
        }
    }
}

impl ImageWriter for SparseWriter {
    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        let len = piece.len();
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let index = pos / self.block_size;
            let in_block = pos % self.block_size;
            let n = (self.block_size - in_block).min(len - done);
            let part = match piece {
                Piece::Data { bytes, .. } => Part::Data(&bytes[done as usize..(done + n) as usize]),
                Piece::Zero(_) => Part::Zero(n),
                Piece::Unallocated(_) if self.differencing => Part::Unallocated(n),
                // Without a parent, "unallocated" reads as zeros.
                Piece::Unallocated(_) => Part::Zero(n),
            };
            if index as usize >= self.entries.len() {
                return Err(Error::invalid(format!(
                    "internal error: piece at {pos} is past the end of the disk ({} bytes)",
                    self.disk_size
                )));
            }
            self.apply(index, in_block, part)?;
            if in_block + n == self.block_size {
                self.close_until(index + 1)?;
            }
            done += n;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let mut this = *self;
        let blocks = this.entries.len() as u64;
        this.close_until(blocks)?;
        if !matches!(this.out, Out::Stream { .. }) {
            let table = bat::encode(&this.entries);
            this.out.write_at(&table, this.table_offset)?;
        }
        let footer = this.footer;
        this.out.write_at(&footer, this.data_end)?;
        this.out.finish()
    }
}
