//! Writing VDIs: static, dynamic and differencing, as VirtualBox lays them out.
//!
//! ```text
//! 0x0000  pre-header and header (version 1.1 with the logical geometry)
//! 0x1000  the block map: one u32 per block (4 KiB-aligned, as VirtualBox aligns it)
//! ...     the blocks, each `block_size` bytes, from the next 4 KiB boundary
//! ```
//!
//! - static: every block stored, in order; zeros are holes in a new file.
//! - dynamic, to a file or device: a block gets the next place when its data arrives (the
//!   engine's workers write it there themselves, in any order); the header and the block map
//!   are written last.
//! - dynamic, to a stream: which blocks exist is decided first from the source's allocation
//!   map, so the header and map go out first and the blocks follow in order.
//! - differencing (`create -b`, `convert -B`): a dynamic image whose free blocks read from the
//!   parent, zero blocks written as zero entries (VirtualBox's "zero" block), and the parent's
//!   UUIDs as linkage. Its parent must be a VDI. Not streamed: a zero over the parent in a
//!   block the source map did not foresee could not be recorded in a map already sent.

use super::header::{BLOCK_FREE, BLOCK_ZERO, ImageType, MAX_BLOCKS, NewHeader};
use super::reader::VdiLayer;
use crate::error::{Error, Result};
use crate::options::{OptionKind, OptionSpec};
use crate::sink::{Access, Output, SharedSink, Sink};
use crate::writer::{CreateSpec, DirectWrite, ImageWriter, Piece, for_each_block};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// VirtualBox's default block size.
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;
/// The smallest block size we write.
pub const MIN_BLOCK_SIZE: u64 = 4 << 10;
/// The largest block size we write: the engine holds whole blocks in memory.
pub const MAX_BLOCK_SIZE: u64 = 64 << 20;
/// VirtualBox aligns the block map and the data to 4 KiB.
const ALIGN: u64 = 4096;
/// Where the block map goes: the first 4 KiB boundary after the header.
const BLOCKS_OFFSET: u64 = 0x1000;

/// `-o` options for VDI outputs.
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "static",
        kind: OptionKind::Flag,
        help: "on: every block stored when made (VirtualBox's fixed size); off (default): blocks stored as data arrives",
    },
    OptionSpec {
        key: "block_size",
        kind: OptionKind::Size,
        help: "block size, a power of two from 4K to 64M (default 1M, what VirtualBox and qemu use; qemu reads no other)",
    },
];

/// The block map while blocks are placed: entries and the next free place.
struct Table {
    entries: Vec<u32>,
    next: u32,
}

impl Table {
    /// The place of block `index`: its entry when it has one, the next free place when blocks
    /// are placed as they arrive, or `None` (a block the plan left out).
    fn place(&mut self, index: usize, mode: Mode) -> Option<u64> {
        let entry = self.entries[index];
        if entry < BLOCK_ZERO {
            return Some(entry as u64);
        }
        (mode == Mode::OnArrival).then(|| {
            let place = self.next;
            self.entries[index] = place;
            self.next += 1;
            place as u64
        })
    }
}

fn planned_empty(index: u64) -> Error {
    Error::invalid(format!(
        "internal error: block {index} was planned empty from the source's allocation map, but data arrived for it"
    ))
}

/// The engine's workers place each block of data at the next free place (dynamic images to a
/// file) or at its planned place (static images).
struct Placer {
    sink: Arc<dyn SharedSink>,
    table: Arc<Mutex<Table>>,
    block_size: u64,
    data_offset: u64,
    mode: Mode,
}

impl DirectWrite for Placer {
    fn write_data(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        let bs = self.block_size;
        for_each_block(offset, bytes, bs, |pos, part| {
            let index = pos / bs;
            let place = self
                .table
                .lock()
                .expect("table lock")
                .place(index as usize, self.mode)
                .ok_or_else(|| planned_empty(index))?;
            self.sink
                .write_at(part, self.data_offset + place * bs + pos % bs)
        })
    }
}

/// The layout of a new VDI, from its `-o` options and size.
pub(crate) struct Settings {
    /// `static=on`.
    pub(crate) fixed: bool,
    /// The block size.
    pub(crate) block_size: u64,
    /// The disk size, whole sectors.
    pub(crate) size: u64,
    /// The number of blocks.
    pub(crate) blocks: u64,
    /// Where the first block goes.
    pub(crate) data_offset: u64,
}

/// The layout of a VDI of `size` bytes made with `options`.
pub(crate) fn settings_of(options: &crate::options::FormatOptions, size: u64) -> Result<Settings> {
    let fixed = options.flag("static").unwrap_or(false);
    let bs = options.size("block_size").unwrap_or(DEFAULT_BLOCK_SIZE);
    if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
        return Err(Error::invalid(format!(
            "block_size={bs}: a VDI block size must be a power of two from 4K to 64M"
        )));
    }
    let size = size.next_multiple_of(512);
    let blocks = size.div_ceil(bs).max(1);
    if blocks > MAX_BLOCKS as u64 {
        return Err(Error::invalid(format!(
            "a VDI of {size} bytes would need {blocks} blocks of {bs} bytes, more than {MAX_BLOCKS}; use a larger block_size"
        )));
    }
    Ok(Settings {
        fixed,
        block_size: bs,
        size,
        blocks,
        data_offset: (BLOCKS_OFFSET + blocks * 4).next_multiple_of(ALIGN),
    })
}

/// Makes a VDI writer for `spec` into `output`.
pub fn create_writer<'a>(
    mut output: Output<'a>,
    spec: &CreateSpec,
) -> Result<Box<dyn ImageWriter + 'a>> {
    let Settings {
        fixed,
        block_size: bs,
        size,
        blocks,
        data_offset,
    } = settings_of(&spec.options, spec.size)?;
    let (image_type, linkage, parent_modify) = match &spec.backing {
        Some(b) => {
            if fixed {
                return Err(Error::invalid(
                    "a static VDI cannot have a backing file: differencing VDIs are dynamic (drop static=on)",
                ));
            }
            let top = b.image.top();
            let Some(parent) = top.as_any().downcast_ref::<VdiLayer>() else {
                return Err(Error::invalid(format!(
                    "the backing file '{}' is {}, but a differencing VDI's parent must be a VDI (VirtualBox links them by UUID)",
                    b.stored_name,
                    top.format()
                )));
            };
            let h = parent.header();
            (ImageType::Differencing, h.uuid_create, h.uuid_modify)
        }
        None if fixed => (ImageType::Static, Uuid::nil(), Uuid::nil()),
        None => (ImageType::Dynamic, Uuid::nil(), Uuid::nil()),
    };
    let mut sink = output.main()?;
    let streaming = sink.access() == Access::Sequential;
    if streaming && image_type == ImageType::Differencing {
        return Err(Error::unsupported(
            "a differencing VDI cannot be written to a stream (its block map goes first, and zeros over the parent are known only as data arrives); write to a file",
        ));
    }
    let mut entries = vec![BLOCK_FREE; blocks as usize];
    let mut next = 0u32;
    let mode = if fixed {
        for (i, e) in entries.iter_mut().enumerate() {
            *e = i as u32;
        }
        next = blocks as u32;
        Mode::Fixed
    } else if streaming {
        for (i, e) in entries.iter_mut().enumerate() {
            let start = i as u64 * bs;
            if spec.may_have_data(start, bs.min(size - start))? {
                *e = next;
                next += 1;
            }
        }
        Mode::Planned
    } else {
        Mode::OnArrival
    };
    let header = NewHeader {
        image_type,
        blocks_offset: BLOCKS_OFFSET,
        data_offset,
        disk_size: size,
        block_size: bs as u32,
        blocks: blocks as u32,
        blocks_allocated: next,
        uuid_create: Uuid::new_v4(),
        uuid_modify: Uuid::new_v4(),
        uuid_linkage: linkage,
        uuid_parent_modify: parent_modify,
    };
    if mode != Mode::OnArrival {
        // Everything in front of the data is known now: write it first.
        sink.set_len(data_offset + next as u64 * bs)?;
        sink.write_at(&header.to_bytes(), 0)?;
        sink.write_at(&encode(&entries), BLOCKS_OFFSET)?;
    }
    let table = Arc::new(Mutex::new(Table { entries, next }));
    let direct = if streaming {
        None
    } else {
        sink.shared().map(|s| {
            Arc::new(Placer {
                sink: s,
                table: Arc::clone(&table),
                block_size: bs,
                data_offset,
                mode,
            }) as Arc<dyn DirectWrite>
        })
    };
    Ok(Box::new(VdiWriter {
        sink,
        header,
        table,
        direct,
        mode,
        block_size: bs,
        differencing: image_type == ImageType::Differencing,
    }))
}

fn encode(entries: &[u32]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every block in place, in order.
    Fixed,
    /// Blocks placed as data arrives; header and map written at the end.
    OnArrival,
    /// Blocks placed from the source's map before any data; header and map already written.
    Planned,
}

struct VdiWriter<'a> {
    sink: Box<dyn Sink + 'a>,
    header: NewHeader,
    table: Arc<Mutex<Table>>,
    direct: Option<Arc<dyn DirectWrite>>,
    mode: Mode,
    block_size: u64,
    differencing: bool,
}

impl VdiWriter<'_> {
    /// Where the data at virtual `pos` goes, placing its block if it has no place yet.
    fn place(&mut self, pos: u64) -> Result<u64> {
        let bs = self.block_size;
        let index = (pos / bs) as usize;
        let place = self
            .table
            .lock()
            .expect("table lock")
            .place(index, self.mode)
            .ok_or_else(|| planned_empty(index as u64))?;
        Ok(self.header.data_offset + place * bs + pos % bs)
    }

    /// Marks the blocks of `[offset, offset + len)` that have no place as `entry` (whole blocks
    /// only: the engine's pieces are whole blocks, but for the disk's end).
    fn mark(&mut self, offset: u64, len: u64, entry: u32) {
        let bs = self.block_size;
        let mut t = self.table.lock().expect("table lock");
        let first = offset / bs;
        let last = (offset + len).div_ceil(bs);
        for index in first..last {
            let e = &mut t.entries[index as usize];
            if *e >= BLOCK_ZERO {
                *e = entry;
            }
        }
    }
}

impl ImageWriter for VdiWriter<'_> {
    fn granularity(&self) -> u64 {
        self.block_size
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.direct.clone()
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        let bs = self.block_size;
        match piece {
            Piece::Data { bytes, .. } => for_each_block(offset, bytes, bs, |pos, part| {
                let at = self.place(pos)?;
                self.sink.write_at(part, at)
            }),
            Piece::Placed(_) => Ok(()),
            Piece::Zero(len) => match self.mode {
                Mode::Fixed => {
                    let at = self.header.data_offset + offset;
                    self.sink.write_zeros(at, len)
                }
                Mode::Planned => {
                    // A planned block that turned out to hold zeros: its place is in the
                    // stream already, so it is written as zeros (the sink fills the gap).
                    Ok(())
                }
                Mode::OnArrival => {
                    let entry = if self.differencing {
                        BLOCK_ZERO
                    } else {
                        BLOCK_FREE
                    };
                    self.mark(offset, len, entry);
                    Ok(())
                }
            },
            Piece::Unallocated(len) => {
                if self.mode == Mode::Fixed {
                    let at = self.header.data_offset + offset;
                    return self.sink.write_zeros(at, len);
                }
                Ok(())
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        if self.mode == Mode::OnArrival {
            let t = self.table.lock().expect("table lock");
            self.header.blocks_allocated = t.next;
            let map = encode(&t.entries);
            let end = self.header.data_offset + t.next as u64 * self.block_size;
            drop(t);
            // Whole blocks, as VirtualBox sizes the file (the disk's last block too).
            self.sink.set_len(end)?;
            self.sink.write_at(&map, BLOCKS_OFFSET)?;
            let header = self.header.to_bytes();
            self.sink.write_at(&header, 0)?;
        }
        self.sink.finish()
    }
}
