//! Writing VHDs: fixed, dynamic and differencing, to a file, a device or front to back to a
//! stream.
//!
//! Layout of a dynamic or differencing file (what Windows, blktap and Xen Orchestra expect):
//! footer copy at 0, header at 512, parent locators, the BAT, the blocks (each a sector
//! bitmap and its data, the data 4 KiB-aligned as Hyper-V aligns it), the footer.
//!
//! Which blocks exist is decided before any data arrives, from the source's allocation map
//! (`CreateSpec::may_have_data`), so every block has its place from the start: the BAT goes
//! out first, the engine's workers write data straight to its place in a random-access output
//! ([`DirectWrite`]), and this writer only writes each block's sector bitmap (which says which
//! sectors hold data) in order. A stream gets each block assembled in memory, bitmap first.

use super::bat::{self, UNUSED};
use super::bitmap::{bitmap_bytes, set_range};
use super::dynamic_header::{HEADER_SIZE, NewHeader};
use super::footer::{DiskType, FOOTER_SIZE, NewFooter, vhd_now};
use super::parent;
use super::reader::VhdLayer;
use crate::convert::range_has_data;
use crate::error::{Error, Result};
use crate::sink::{Access, Output, SharedSink, Sink};
use crate::writer::{CreateSpec, DirectWrite, HostTarget, ImageWriter, Piece};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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

/// The engine's workers write data straight to its virtual offset (fixed disks).
struct AtOffset(Arc<dyn SharedSink>);

impl DirectWrite for AtOffset {
    fn write_data(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.0.write_at(bytes, offset)
    }

    fn host_target(&self, offset: u64, len: u64) -> Option<HostTarget<'_>> {
        let file = self.0.regular_file()?;
        (len > 0).then_some(HostTarget { file, offset, len })
    }
}

/// The validated `-o` choices.
pub(crate) struct Settings {
    /// Fixed, dynamic or differencing.
    pub(crate) disk_type: DiskType,
    /// The block size of a dynamic or differencing disk.
    pub(crate) block_size: u64,
}

fn settings(spec: &CreateSpec) -> Result<Settings> {
    settings_of(&spec.options, spec.backing.is_some())
}

/// The `-o` choices of an image made with `options`, with a backing image or not.
pub(crate) fn settings_of(
    options: &crate::options::FormatOptions,
    has_backing: bool,
) -> Result<Settings> {
    let fixed = options.text("subformat") == Some("fixed");
    if fixed && has_backing {
        return Err(Error::invalid(
            "a fixed VHD cannot have a backing file: differencing VHDs are dynamic (drop subformat=fixed)",
        ));
    }
    if fixed && options.contains("block_size") {
        return Err(Error::invalid(
            "block_size applies to dynamic and differencing VHDs only, not to subformat=fixed",
        ));
    }
    let block_size = options.size("block_size").unwrap_or(DEFAULT_BLOCK_SIZE);
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::invalid(format!(
            "block_size {block_size} is not valid for VHD: give a power of two from 4K to 256M (2M, the default, is what Hyper-V, XenServer and Azure expect)"
        )));
    }
    let disk_type = if fixed {
        DiskType::Fixed
    } else if has_backing {
        DiskType::Differencing
    } else {
        DiskType::Dynamic
    };
    Ok(Settings {
        disk_type,
        block_size,
    })
}

/// Makes a VHD writer for `spec` into `output`.
pub fn create_writer<'a>(
    mut output: Output<'a>,
    spec: &CreateSpec,
) -> Result<Box<dyn ImageWriter + 'a>> {
    let settings = settings(spec)?;
    // VHD sizes are whole sectors; a source of another size gets zeros up to the next one,
    // as qemu-img does. `force_size=off` asks for qemu-img's default: up to whole geometry.
    let disk_size = if spec.options.flag("force_size") == Some(false) {
        super::footer::chs_rounded_size(spec.size)
    } else {
        round_up(spec.size, 512)
    };
    if disk_size > MAX_VHD_SIZE {
        return Err(Error::invalid(format!(
            "a VHD holds at most 2040 GiB ({MAX_VHD_SIZE} bytes), and this disk has {disk_size}; use vhdx for larger disks"
        )));
    }
    let blocks = disk_size.div_ceil(settings.block_size);
    if settings.disk_type != DiskType::Fixed && blocks > bat::MAX_BAT_ENTRIES {
        // The table is held in memory here, and the reader refuses one this large.
        let smallest = disk_size
            .div_ceil(bat::MAX_BAT_ENTRIES)
            .next_power_of_two()
            .max(MIN_BLOCK_SIZE);
        return Err(Error::invalid(format!(
            "a VHD of {disk_size} bytes in blocks of {} needs {blocks} BAT entries, more than diskferry handles (at most {}); give block_size={}K or larger",
            settings.block_size,
            bat::MAX_BAT_ENTRIES,
            smallest >> 10
        )));
    }
    let dest_dir = output.folder();
    let footer = NewFooter {
        disk_type: settings.disk_type,
        size: disk_size,
        timestamp: vhd_now(),
        uuid: *uuid::Uuid::new_v4().as_bytes(),
        creator_app: CREATOR_APP,
        creator_version: CREATOR_VERSION,
    }
    .to_bytes();
    let mut sink = output.main()?;
    if settings.disk_type == DiskType::Fixed {
        // Sized first: a destination too small is refused before anything is written.
        sink.set_len(disk_size + FOOTER_SIZE)?;
        let direct = sink
            .shared()
            .map(|s| Arc::new(AtOffset(s)) as Arc<dyn DirectWrite>);
        return Ok(Box::new(FixedWriter {
            sink,
            disk_size,
            footer,
            direct,
        }));
    }
    Ok(Box::new(SparseWriter::new(
        sink,
        spec,
        &settings,
        disk_size,
        footer,
        dest_dir.as_deref(),
    )?))
}

/// A fixed VHD: the disk, then the footer.
struct FixedWriter<'a> {
    sink: Box<dyn Sink + 'a>,
    disk_size: u64,
    footer: [u8; 512],
    direct: Option<Arc<dyn DirectWrite>>,
}

impl ImageWriter for FixedWriter<'_> {
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.direct.clone()
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        match piece {
            Piece::Data { bytes, .. } => self.sink.write_at(bytes, offset),
            Piece::Placed(_) => Ok(()),
            // Holes in a new file; zeros written or discarded in place; a stream gets them.
            Piece::Zero(len) | Piece::Unallocated(len) => self.sink.write_zeros(offset, len),
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let mut this = *self;
        this.sink.write_at(&this.footer, this.disk_size)?;
        this.sink.finish()
    }
}

/// The parent fields of a differencing child's header.
pub(crate) struct ParentFields {
    pub(crate) uuid: [u8; 16],
    pub(crate) timestamp: u32,
    pub(crate) name: String,
    pub(crate) locators: Vec<([u8; 4], Vec<u8>)>,
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
    Ok(Some(parent_fields_of(
        vhd,
        &backing.path,
        &backing.stored_name,
        dest_dir,
    )))
}

/// The parent fields naming `vhd` (found at `path`, recorded as `stored_name`) in a child
/// that lives in `dest_dir`.
pub(crate) fn parent_fields_of(
    vhd: &VhdLayer,
    path: &Path,
    stored_name: &str,
    dest_dir: Option<&Path>,
) -> ParentFields {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let stored = Path::new(stored_name);
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
    ParentFields {
        uuid: vhd.footer().uuid,
        // The parent's own creation stamp, which survives copying the file (its mtime would
        // not), so that the link can be checked later.
        timestamp: vhd.footer().timestamp,
        name,
        locators: parent::new_locator_data(&relative, &absolute),
    }
}

/// The block being assembled.
struct Block {
    index: u64,
    /// The sector bitmap, padded to whole sectors.
    bits: Vec<u8>,
}

/// How blocks get their place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allocation {
    /// A stream: every block's place was decided from the source's map before the BAT went
    /// out; a block outside the plan is an error.
    Planned,
    /// A random-access output: a block gets the next place when something is first stored in
    /// it (by a worker placing data, or by the writer), and the BAT is written last.
    OnFirstWrite,
}

/// The BAT as it stands and where the next block goes.
struct Table {
    entries: Vec<u32>,
    next: u64,
    /// One past the last byte of metadata or block data: where the footer goes.
    data_end: u64,
}

/// The blocks' places, shared by the writer and the workers that place data.
struct Blocks {
    block_size: u64,
    bitmap_len: u64,
    allocation: Allocation,
    table: std::sync::Mutex<Table>,
}

impl Blocks {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host offset of block `index`'s bitmap, if it has a place.
    fn place(&self, index: u64) -> Option<u64> {
        let e = *self.table().entries.get(index as usize)?;
        (e != UNUSED).then(|| u64::from(e) * 512)
    }

    /// The host offset of block `index`'s bitmap, giving it the next place if it has none.
    fn place_or_allocate(&self, index: u64) -> Result<u64> {
        let mut t = self.table();
        let Some(&e) = t.entries.get(index as usize) else {
            return Err(Error::invalid(format!(
                "internal error: block {index} is past the end of the disk"
            )));
        };
        if e != UNUSED {
            return Ok(u64::from(e) * 512);
        }
        if self.allocation == Allocation::Planned {
            return Err(Error::invalid(format!(
                "internal error: block {index} was planned empty from the source's allocation map, but data arrived for it"
            )));
        }
        let host = t.next;
        if host / 512 >= u64::from(UNUSED) {
            return Err(Error::invalid(
                "the VHD would grow past the 2 TiB a BAT entry can address",
            ));
        }
        let end = host + self.bitmap_len + self.block_size;
        t.entries[index as usize] = (host / 512) as u32;
        t.data_end = end;
        t.next = next_place(end, self.block_size, self.bitmap_len);
        Ok(host)
    }
}

/// Workers place data in the blocks of a dynamic or differencing disk, giving blocks their
/// places as data first arrives for them.
struct PlacedBlocks {
    sink: Arc<dyn SharedSink>,
    blocks: Arc<Blocks>,
}

impl DirectWrite for PlacedBlocks {
    fn write_data(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        let bs = self.blocks.block_size;
        let mut done = 0usize;
        while done < bytes.len() {
            let pos = offset + done as u64;
            let n = ((bs - pos % bs) as usize).min(bytes.len() - done);
            let host = self.blocks.place_or_allocate(pos / bs)?;
            self.sink.write_at(
                &bytes[done..done + n],
                host + self.blocks.bitmap_len + pos % bs,
            )?;
            done += n;
        }
        Ok(())
    }
}

/// A dynamic or differencing VHD.
struct SparseWriter<'a> {
    sink: Box<dyn Sink + 'a>,
    block_size: u64,
    bitmap_len: u64,
    disk_size: u64,
    differencing: bool,
    blocks: Arc<Blocks>,
    table_offset: u64,
    /// Sequential sinks only: the bitmap and data of the current block, in file order.
    buffer: Vec<u8>,
    current: Option<Block>,
    /// Every block before this one is complete.
    closed: u64,
    footer: [u8; 512],
    direct: Option<Arc<dyn DirectWrite>>,
}

impl<'a> SparseWriter<'a> {
    fn new(
        mut sink: Box<dyn Sink + 'a>,
        spec: &CreateSpec,
        settings: &Settings,
        disk_size: u64,
        footer: [u8; 512],
        dest_dir: Option<&Path>,
    ) -> Result<SparseWriter<'a>> {
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
        let header = NewHeader {
            table_offset,
            max_table_entries: blocks as u32,
            block_size: block_size as u32,
            parent_uuid: parent.as_ref().map_or([0; 16], |p| p.uuid),
            parent_timestamp: parent.as_ref().map_or(0, |p| p.timestamp),
            parent_name: parent.as_ref().map_or(String::new(), |p| p.name.clone()),
            locators,
        };
        let streaming = sink.access() == Access::Sequential;
        let (allocation, table) = if streaming {
            // The BAT precedes the blocks in a stream: decide now which blocks exist.
            let planned = plan(spec, block_size, disk_size, blocks)?;
            let (entries, data_end, next) = place(&planned, block_size, bitmap_len, table_end)?;
            (
                Allocation::Planned,
                Table {
                    entries,
                    next,
                    data_end,
                },
            )
        } else {
            (
                Allocation::OnFirstWrite,
                Table {
                    entries: vec![UNUSED; blocks as usize],
                    next: next_place(table_end, block_size, bitmap_len),
                    data_end: table_end,
                },
            )
        };
        let blocks = Arc::new(Blocks {
            block_size,
            bitmap_len,
            allocation,
            table: std::sync::Mutex::new(table),
        });
        let direct = sink.shared().map(|s| {
            Arc::new(PlacedBlocks {
                sink: s,
                blocks: Arc::clone(&blocks),
            }) as Arc<dyn DirectWrite>
        });
        if streaming {
            sink.set_len(blocks.table().data_end + FOOTER_SIZE)?;
        }
        sink.write_at(&footer, 0)?;
        sink.write_at(&header.to_bytes()[..], FOOTER_SIZE)?;
        if let Some(p) = &parent {
            for (entry, (_, data)) in header.locators.iter().zip(&p.locators) {
                sink.write_at(data, entry.data_offset)?;
            }
        }
        if streaming {
            let table = bat::encode(&blocks.table().entries);
            sink.write_at(&table, table_offset)?;
        }
        Ok(SparseWriter {
            sink,
            block_size,
            bitmap_len,
            disk_size,
            differencing: parent.is_some(),
            blocks,
            table_offset,
            buffer: Vec::new(),
            current: None,
            closed: 0,
            footer,
            direct,
        })
    }

    fn streaming(&self) -> bool {
        self.sink.access() == Access::Sequential
    }

    fn block_len(&self) -> usize {
        (self.bitmap_len + self.block_size) as usize
    }

    /// The block `index`, started if it is not the current one.
    fn block(&mut self, index: u64) -> Result<&mut Block> {
        if self.current.as_ref().is_none_or(|b| b.index != index) {
            self.close_until(index)?;
            if self.streaming() {
                let len = self.block_len();
                self.buffer.clear();
                self.buffer.resize(len, 0);
            }
            self.current = Some(Block {
                index,
                bits: vec![0u8; self.bitmap_len as usize],
            });
        }
        Ok(self.current.as_mut().expect("just set"))
    }

    /// Completes every block before `index`.
    fn close_until(&mut self, index: u64) -> Result<()> {
        while self.closed < index {
            let closing = self.closed;
            let current = self.current.take_if(|b| b.index == closing);
            match current {
                Some(block) => self.close(block)?,
                // A block the plan promised but nothing was stored in: a stream still owes
                // its bytes, its bitmap saying so.
                None if self.blocks.place(closing).is_some() => self.close(Block {
                    index: closing,
                    bits: vec![0u8; self.bitmap_len as usize],
                })?,
                None => {}
            }
            self.closed += 1;
        }
        Ok(())
    }

    fn close(&mut self, block: Block) -> Result<()> {
        let Some(host) = self.blocks.place(block.index) else {
            return Ok(());
        };
        if self.streaming() {
            if self.buffer.len() != self.block_len() {
                self.buffer.clear();
                self.buffer.resize(self.block_len(), 0);
            }
            self.buffer[..self.bitmap_len as usize].copy_from_slice(&block.bits);
            let buffer = std::mem::take(&mut self.buffer);
            let result = self.sink.write_at(&buffer, host);
            self.buffer = buffer;
            self.buffer.clear();
            result
        } else {
            self.sink.write_at(&block.bits, host)
        }
    }

    /// Applies one part of a piece that lies inside block `index`.
    fn apply(&mut self, index: u64, in_block: u64, part: Part<'_>) -> Result<()> {
        let stores = match part {
            Part::Data(_) | Part::Placed(_) => true,
            // A differencing disk must store zeros to hide what the parent holds there; a
            // dynamic disk reads zeros wherever nothing is stored.
            Part::Zero(_) => self.differencing,
            Part::Unallocated(_) => false,
        };
        if !stores {
            return Ok(());
        }
        let host = self.blocks.place_or_allocate(index)?;
        let streaming = self.streaming();
        let bitmap_len = self.bitmap_len;
        let len = part.len();
        let block = self.block(index)?;
        let first = (in_block / 512) as u32;
        let last = (in_block + len).div_ceil(512) as u32;
        set_range(&mut block.bits, first, last);
        let at = bitmap_len + in_block;
        match part {
            Part::Data(bytes) if streaming => {
                self.buffer[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
            }
            Part::Data(bytes) => self.sink.write_at(bytes, host + at)?,
            // The stream's block buffer starts as zeros; a file must read zeros there.
            Part::Zero(n) if !streaming => self.sink.write_zeros(host + at, n)?,
            _ => {}
        }
        Ok(())
    }
}

/// Decides which blocks exist before any data arrives: where the source may hold data, and
/// (differencing) where the parent holds data the source may overwrite with zeros.
fn plan(spec: &CreateSpec, block_size: u64, disk_size: u64, blocks: u64) -> Result<Vec<bool>> {
    let mut planned = vec![false; blocks as usize];
    let parent_image = spec
        .backing
        .as_ref()
        .filter(|_| spec.source_map.is_some())
        .map(|b| b.image.clone());
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
    // Halve ranges that may hold data down to single blocks: a sparse disk costs a handful of
    // queries, a full one about two per block.
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
    Ok(planned)
}

/// Where the block after one ending at `end` starts: its data 4 KiB-aligned for large blocks
/// (as Hyper-V aligns it).
pub(crate) fn next_place(end: u64, block_size: u64, bitmap_len: u64) -> u64 {
    if block_size >= ALIGN_FROM_BLOCK_SIZE {
        round_up(end + bitmap_len, DATA_ALIGN) - bitmap_len
    } else {
        end
    }
}

/// Gives each planned block its place after the table; returns the BAT entries, the end of
/// the last block and where a further block would go.
fn place(
    planned: &[bool],
    block_size: u64,
    bitmap_len: u64,
    table_end: u64,
) -> Result<(Vec<u32>, u64, u64)> {
    let mut next = next_place(table_end, block_size, bitmap_len);
    let mut end = table_end;
    let mut entries = vec![UNUSED; planned.len()];
    for (index, p) in planned.iter().enumerate() {
        if !*p {
            continue;
        }
        if next / 512 >= u64::from(UNUSED) {
            return Err(Error::invalid(
                "the VHD would grow past the 2 TiB a BAT entry can address",
            ));
        }
        entries[index] = (next / 512) as u32;
        end = next + bitmap_len + block_size;
        next = next_place(end, block_size, bitmap_len);
    }
    Ok((entries, end, next))
}

/// A piece cut to one block.
#[derive(Clone, Copy)]
enum Part<'a> {
    Data(&'a [u8]),
    Placed(u64),
    Zero(u64),
    Unallocated(u64),
}

impl Part<'_> {
    fn len(&self) -> u64 {
        match self {
            Part::Data(b) => b.len() as u64,
            Part::Placed(n) | Part::Zero(n) | Part::Unallocated(n) => *n,
        }
    }
}

impl ImageWriter for SparseWriter<'_> {
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.direct.clone()
    }

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
                Piece::Placed(_) => Part::Placed(n),
                Piece::Zero(_) => Part::Zero(n),
                Piece::Unallocated(_) if self.differencing => Part::Unallocated(n),
                // Without a parent, "unallocated" reads as zeros.
                Piece::Unallocated(_) => Part::Zero(n),
            };
            if index >= self.disk_size.div_ceil(self.block_size) {
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
        let blocks = this.disk_size.div_ceil(this.block_size);
        this.close_until(blocks)?;
        let (table, data_end) = {
            let t = this.blocks.table();
            (bat::encode(&t.entries), t.data_end)
        };
        if !this.streaming() {
            this.sink.write_at(&table, this.table_offset)?;
        }
        let footer = this.footer;
        this.sink.write_at(&footer, data_end)?;
        this.sink.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::FormatOptions;
    use crate::staging::Staging;

    #[test]
    fn a_table_larger_than_the_reader_takes_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.vhd");
        let format = super::super::FORMAT;
        let options =
            FormatOptions::parse(format, super::super::CREATE_OPTIONS, "block_size=4K").unwrap();
        let mut staging = Staging::new();
        let spec = CreateSpec::new(MAX_VHD_SIZE, options);
        let err = match create_writer(Output::new_files(&mut staging, path.clone()), &spec) {
            Ok(_) => panic!("a 2040 GiB VHD in 4 KiB blocks was accepted"),
            Err(e) => e,
        };
        assert_eq!(
            err.to_string(),
            "a VHD of 2190433320960 bytes in blocks of 4096 needs 534773760 BAT entries, more than diskferry handles (at most 67108864); give block_size=32K or larger"
        );
        drop(staging);
        assert!(!path.exists());
    }
}
