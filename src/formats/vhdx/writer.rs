//! Writing VHDX: fixed, dynamic and differencing, to a file, a device or front to back to a
//! stream (see [`super::layout`] for where everything goes).
//!
//! - fixed: every block stored in order (`LeaveBlocksAllocated`); zeros are holes in a new
//!   file. The engine's workers write data at its place.
//! - dynamic: which blocks exist is decided first from the source's allocation map, so every
//!   block has its place from the start: the headers, metadata and BAT go out first, the
//!   engine's workers write data at its place (in any order) in a file or device, a stream
//!   gets the blocks in order; zeros inside a stored block are holes in a new file.
//! - differencing (`create -b`, `convert -B`): a dynamic disk whose absent blocks read from
//!   the parent, the parent named by a locator (`parent_linkage` = the parent's
//!   DataWriteGuid, `relative_path`, and `absolute_win32_path` when the user named the parent
//!   by a Windows path). Its parent must be a VHDX. Zeros over the parent are stored as fully
//!   present blocks that are holes in the file, and every chunk's sector bitmap block is
//!   allocated (all zeros, a hole too), as Hyper-V's own checkpoints have them: the spec's
//!   cheaper zero state and absent bitmap blocks are valid, but libyal reads a zero block
//!   as the parent's data and an absent bitmap block from file offset 0, so they would be
//!   read wrong by forensic tools built on it (`block_state_zero=on` still asks for the zero
//!   state). Its blocks are placed as their data arrives (a block either holds data or not,
//!   which the source map cannot tell apart from zeros over the parent), the BAT written last;
//!   not streamed: a zero over the parent in a block the source map did not foresee could
//!   not be recorded in a BAT already sent.

use super::guid::{Guid, braced};
use super::layout::{
    self, Identity, MIB, Places, REGION_TABLE_OFFSETS, STATE_FULLY_PRESENT, STATE_NOT_PRESENT,
    STATE_SB_PRESENT, STATE_ZERO, bat_entry,
};
use super::reader::VhdxLayer;
use crate::error::{Error, Result};
use crate::options::{OptionKind, OptionSpec};
use crate::sink::{Access, Output, SharedSink, Sink};
use crate::writer::{CreateSpec, DirectWrite, ImageWriter, Piece, for_each_block};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Hyper-V's default block size.
pub const DEFAULT_BLOCK_SIZE: u64 = 32 << 20;
/// The largest virtual disk VHDX holds (64 TiB).
pub const MAX_SIZE: u64 = 64 << 40;

/// `-o` options for VHDX outputs.
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "subformat",
        kind: OptionKind::Choice(&["dynamic", "fixed"]),
        help: "dynamic (default): blocks stored as data arrives; fixed: every block stored, what Hyper-V makes with -Fixed",
    },
    OptionSpec {
        key: "block_size",
        kind: OptionKind::Size,
        help: "payload block size, a power of two from 1M to 256M (default 32M as Hyper-V; 1M is recommended for Linux guests, whose file systems free space in small pieces)",
    },
    OptionSpec {
        key: "log_size",
        kind: OptionKind::Size,
        help: "size of the (empty) log, a multiple of 1M (default 1M)",
    },
    OptionSpec {
        key: "logical_sector_size",
        kind: OptionKind::Choice(&["512", "4096"]),
        help: "the sector size the guest sees: 512 (default) or 4096 (the virtual size is rounded up to it)",
    },
    OptionSpec {
        key: "block_state_zero",
        kind: OptionKind::Flag,
        help: "fixed disks: mark blocks of zeros as zero blocks (space still reserved) instead of fully present, as qemu-img does with on; differencing disks: zeros over the parent as zero blocks rather than stored zeros (holes); off (default) is what Hyper-V writes and every reader reads",
    },
];

/// The choices `-o` makes.
pub(crate) struct Settings {
    pub(crate) fixed: bool,
    pub(crate) block_size: u64,
    pub(crate) log_len: u64,
    pub(crate) sector: u64,
    zero_state: bool,
}

fn settings(spec: &CreateSpec) -> Result<Settings> {
    settings_of(&spec.options, spec.backing.is_some())
}

/// The choices `-o` makes for an image with a parent or not.
pub(crate) fn settings_of(
    o: &crate::options::FormatOptions,
    has_backing: bool,
) -> Result<Settings> {
    let fixed = o.text("subformat") == Some("fixed");
    let block_size = o.size("block_size").unwrap_or(DEFAULT_BLOCK_SIZE);
    if !block_size.is_power_of_two() || !(MIB..=256 * MIB).contains(&block_size) {
        return Err(Error::invalid(format!(
            "block_size={block_size}: a VHDX block size must be a power of two from 1M to 256M"
        )));
    }
    let log_len = o.size("log_size").unwrap_or(MIB);
    if log_len == 0 || !log_len.is_multiple_of(MIB) || log_len > 256 * MIB {
        return Err(Error::invalid(format!(
            "log_size={log_len}: the VHDX log must be a multiple of 1M, at most 256M"
        )));
    }
    let sector = match o.text("logical_sector_size") {
        Some("4096") => 4096,
        _ => 512,
    };
    if fixed && has_backing {
        return Err(Error::invalid(
            "a fixed VHDX cannot have a parent: differencing VHDX are dynamic (drop subformat=fixed)",
        ));
    }
    let zero_state = o.flag("block_state_zero").unwrap_or(false);
    if zero_state && !fixed && !has_backing {
        return Err(Error::invalid(
            "block_state_zero applies to fixed and differencing disks: a dynamic disk leaves blocks of zeros out",
        ));
    }
    Ok(Settings {
        fixed,
        block_size,
        log_len,
        sector,
        zero_state,
    })
}

/// The shape of the BAT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    block_size: u64,
    pub(crate) blocks: u64,
    chunk_ratio: u64,
    pub(crate) entries: u64,
}

impl Shape {
    pub(crate) fn new(size: u64, block_size: u64, sector: u64, differencing: bool) -> Shape {
        let chunk_ratio = ((1u64 << 23) * sector) / block_size;
        let blocks = size.div_ceil(block_size);
        let entries = if differencing {
            blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else if blocks == 0 {
            0
        } else {
            blocks + (blocks - 1) / chunk_ratio
        };
        Shape {
            block_size,
            blocks,
            chunk_ratio,
            entries,
        }
    }

    /// The BAT index of payload block `block`.
    fn index(&self, block: u64) -> usize {
        (block + block / self.chunk_ratio) as usize
    }

    /// The number of chunks (each with one sector bitmap entry in a differencing disk).
    fn chunks(&self) -> u64 {
        self.blocks.div_ceil(self.chunk_ratio)
    }

    /// The BAT index of chunk `chunk`'s sector bitmap entry.
    fn bitmap_index(&self, chunk: u64) -> usize {
        (chunk * (self.chunk_ratio + 1) + self.chunk_ratio) as usize
    }
}

/// The parent locator pairs for `stored_name` (as the user gave it) of a parent whose data
/// write GUID is `linkage`.
///
/// Hyper-V tries `relative_path` (against the child's folder) before `absolute_win32_path`,
/// so a relative name is stored as given; a Windows absolute name is stored as the absolute
/// path and, for a VM folder moved whole, as the file name beside the child; a host absolute
/// name (`/srv/base.vhdx`) means nothing to Windows, so only its file name is stored, beside
/// the child.
pub(crate) fn locator_pairs(stored_name: &str, linkage: &Guid) -> Vec<(String, String)> {
    let windows = stored_name.replace('/', "\\");
    let mut pairs = vec![("parent_linkage".to_string(), braced(linkage))];
    let file_name = || {
        format!(
            ".\\{}",
            crate::winpath::file_name(&windows).unwrap_or(&windows)
        )
    };
    if crate::winpath::is_absolute(stored_name) {
        pairs.push(("relative_path".to_string(), file_name()));
        pairs.push(("absolute_win32_path".to_string(), windows.clone()));
    } else if Path::new(stored_name).is_absolute() {
        pairs.push(("relative_path".to_string(), file_name()));
    } else {
        let rel = if windows.starts_with('.') {
            windows.clone()
        } else {
            format!(".\\{windows}")
        };
        pairs.push(("relative_path".to_string(), rel));
    }
    pairs
}

/// The BAT while blocks are placed: entries and the next free place.
struct Table {
    entries: Vec<u64>,
    next: u64,
}

/// Places a payload block at the next free place (dynamic disks to a file) or returns its
/// place (fixed disks, planned streams).
struct Placer {
    shape: Shape,
    data: u64,
    table: Mutex<Table>,
    allocate: bool,
}

impl Placer {
    /// The file offset of virtual `pos` if its block has a place.
    fn planned(&self, pos: u64) -> Option<u64> {
        let block = pos / self.shape.block_size;
        let t = self.table.lock().expect("table lock");
        let entry = t.entries[self.shape.index(block)];
        (entry & 7 == STATE_FULLY_PRESENT)
            .then(|| (entry >> 20) * MIB + pos % self.shape.block_size)
    }

    /// The file offset of virtual `pos`, placing its block if allowed.
    fn place(&self, pos: u64) -> Result<u64> {
        let block = pos / self.shape.block_size;
        let index = self.shape.index(block);
        let mut t = self.table.lock().expect("table lock");
        let entry = t.entries[index];
        let start = if entry & 7 == STATE_FULLY_PRESENT {
            (entry >> 20) * MIB
        } else if self.allocate {
            let start = self.data + t.next * self.shape.block_size;
            t.next += 1;
            t.entries[index] = bat_entry(STATE_FULLY_PRESENT, start);
            start
        } else {
            return Err(Error::invalid(format!(
                "internal error: block {block} was planned empty from the source's allocation map, but data arrived for it"
            )));
        };
        Ok(start + pos % self.shape.block_size)
    }
}

struct Workers {
    sink: Arc<dyn SharedSink>,
    placer: Arc<Placer>,
}

impl DirectWrite for Workers {
    fn write_data(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        for_each_block(offset, bytes, self.placer.shape.block_size, |pos, part| {
            self.sink.write_at(part, self.placer.place(pos)?)
        })
    }
}

/// Makes a VHDX writer for `spec` into `output`.
pub fn create_writer<'a>(
    mut output: Output<'a>,
    spec: &CreateSpec,
) -> Result<Box<dyn ImageWriter + 'a>> {
    let s = settings(spec)?;
    let size = spec.size.next_multiple_of(s.sector);
    if size > MAX_SIZE {
        return Err(Error::invalid(format!(
            "a VHDX holds at most 64 TiB; {size} bytes asked"
        )));
    }
    let parent = match &spec.backing {
        Some(b) => {
            let top = b.image.top();
            let Some(vhdx) = top.as_any().downcast_ref::<VhdxLayer>() else {
                return Err(Error::invalid(format!(
                    "the backing file '{}' is {}, but diskferry makes differencing VHDX over VHDX parents only",
                    b.stored_name,
                    top.format()
                )));
            };
            Some(locator_pairs(
                &b.stored_name,
                &vhdx.header().data_write_guid,
            ))
        }
        None => None,
    };
    let differencing = parent.is_some();
    let shape = Shape::new(size, s.block_size, s.sector, differencing);
    let places = Places::new(s.log_len, shape.entries);
    let id = Identity {
        block_size: s.block_size as u32,
        virtual_size: size,
        logical_sector_size: s.sector as u32,
        physical_sector_size: 4096,
        leave_blocks_allocated: s.fixed,
        parent,
        file_write: Guid::new_v4(),
        data_write: Guid::new_v4(),
        page83: Guid::new_v4(),
    };
    let mut sink = output.main()?;
    let streaming = sink.access() == Access::Sequential;
    if streaming && differencing {
        return Err(Error::unsupported(
            "a differencing VHDX cannot be written to a stream (its BAT goes first, and zeros over the parent are known only as data arrives); write to a file",
        ));
    }
    if streaming && s.zero_state {
        return Err(Error::unsupported(
            "block_state_zero needs a file or device: a stream's BAT goes out before the zeros are known",
        ));
    }
    let mut entries = vec![0u64; shape.entries as usize];
    let mut next = 0u64;
    let mode = if s.fixed {
        for block in 0..shape.blocks {
            let start = places.data + block * s.block_size;
            entries[shape.index(block)] = bat_entry(STATE_FULLY_PRESENT, start);
        }
        next = shape.blocks;
        Mode::Fixed
    } else if !differencing {
        for block in 0..shape.blocks {
            let start = block * s.block_size;
            if spec.may_have_data(start, s.block_size.min(size - start))? {
                let at = places.data + next * s.block_size;
                entries[shape.index(block)] = bat_entry(STATE_FULLY_PRESENT, at);
                next += 1;
            }
        }
        Mode::Planned
    } else {
        Mode::OnArrival
    };
    // Everything in front of the data is known now except, when blocks are placed as they
    // arrive, the BAT: write the rest first (a stream needs it all, in order).
    sink.write_at(&layout::file_identifier(CREATOR), 0)?;
    for copy in 0..2 {
        let (at, bytes) = layout::header(&id, &places, copy);
        sink.write_at(&bytes, at)?;
    }
    let table = layout::region_table(&places);
    for at in REGION_TABLE_OFFSETS {
        sink.write_at(&table, at)?;
    }
    sink.write_at(&layout::metadata_region(&id), places.metadata)?;
    if mode != Mode::OnArrival {
        sink.write_at(&encode(&entries), places.bat)?;
        sink.set_len(places.data + next * s.block_size)?;
    }
    let placer = Arc::new(Placer {
        shape,
        data: places.data,
        table: Mutex::new(Table { entries, next }),
        allocate: mode == Mode::OnArrival,
    });
    let direct = if streaming {
        None
    } else {
        sink.shared().map(|sink| {
            Arc::new(Workers {
                sink,
                placer: Arc::clone(&placer),
            }) as Arc<dyn DirectWrite>
        })
    };
    Ok(Box::new(VhdxWriter {
        sink,
        placer,
        places,
        direct,
        mode,
        differencing,
        zero_state: s.zero_state,
        size,
    }))
}

/// The creator string in the file identifier.
const CREATOR: &str = concat!("diskferry ", env!("CARGO_PKG_VERSION"));

fn encode(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every block in place, in order.
    Fixed,
    /// Blocks placed as data arrives; the BAT written at the end.
    OnArrival,
    /// Blocks placed from the source's map before any data; the BAT already written.
    Planned,
}

struct VhdxWriter<'a> {
    sink: Box<dyn Sink + 'a>,
    placer: Arc<Placer>,
    places: Places,
    direct: Option<Arc<dyn DirectWrite>>,
    mode: Mode,
    differencing: bool,
    zero_state: bool,
    /// The virtual size.
    size: u64,
}

impl VhdxWriter<'_> {
    /// Sets the state of the blocks of `[offset, offset + len)` that hold no data.
    fn mark(&self, offset: u64, len: u64, state: u64) {
        let shape = self.placer.shape;
        let mut t = self.placer.table.lock().expect("table lock");
        let first = offset / shape.block_size;
        let last = (offset + len).div_ceil(shape.block_size);
        for block in first..last {
            let e = &mut t.entries[shape.index(block)];
            if *e & 7 != STATE_FULLY_PRESENT {
                *e = state;
            }
        }
    }
}

impl VhdxWriter<'_> {
    /// block_state_zero: the fixed disk's blocks of `[offset, offset + len)` keep their place
    /// but say they read as zeros.
    fn mark_fixed_zero(&self, offset: u64, len: u64) {
        let shape = self.placer.shape;
        let bs = shape.block_size;
        let mut t = self.placer.table.lock().expect("table lock");
        // Only blocks the piece covers whole (the disk's last block up to the disk's end).
        for block in offset.div_ceil(bs)..(offset + len).div_ceil(bs) {
            let end = ((block + 1) * bs).min(self.size);
            if end > offset + len {
                break;
            }
            let e = &mut t.entries[shape.index(block)];
            *e = (*e & !7) | STATE_ZERO;
        }
    }
}

impl ImageWriter for VhdxWriter<'_> {
    /// A differencing disk's blocks arrive whole: a block holding data is stored whole, so the
    /// parts of it the source leaves to the parent must arrive as data too. Other disks take
    /// the engine's default: zeros inside a stored block are holes in a new file.
    fn granularity(&self) -> u64 {
        if self.differencing {
            self.placer.shape.block_size
        } else {
            512
        }
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.direct.clone()
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        let bs = self.placer.shape.block_size;
        match piece {
            Piece::Data { bytes, .. } => {
                let placer = &self.placer;
                let sink = &mut self.sink;
                for_each_block(offset, bytes, bs, |pos, part| {
                    sink.write_at(part, placer.place(pos)?)
                })
            }
            Piece::Placed(_) => Ok(()),
            Piece::Zero(len) => match self.mode {
                // A fixed disk's blocks are holes in a new file; an existing file or device
                // gets its zeros written.
                Mode::Fixed => {
                    if self.zero_state {
                        // Pieces are whole blocks (the granularity), but for the disk's end.
                        self.mark_fixed_zero(offset, len);
                    }
                    self.sink.write_zeros(self.places.data + offset, len)
                }
                // Zeros inside a planned block: nothing to write in a new file (a hole) or a
                // stream (the gap), zeros written over a device or an existing file.
                Mode::Planned => {
                    let mut done = 0;
                    while done < len {
                        let pos = offset + done;
                        let n = (bs - pos % bs).min(len - done);
                        if let Some(at) = self.placer.planned(pos) {
                            self.sink.write_zeros(at, n)?;
                        }
                        done += n;
                    }
                    Ok(())
                }
                Mode::OnArrival if self.differencing && !self.zero_state => {
                    // Zeros over the parent: a stored block, a hole in a new file.
                    let mut done = 0;
                    while done < len {
                        let pos = offset + done;
                        let n = (bs - pos % bs).min(len - done);
                        let at = self.placer.place(pos)?;
                        self.sink.write_zeros(at, n)?;
                        done += n;
                    }
                    Ok(())
                }
                Mode::OnArrival => {
                    let state = if self.differencing {
                        STATE_ZERO
                    } else {
                        STATE_NOT_PRESENT
                    };
                    self.mark(offset, len, state);
                    Ok(())
                }
            },
            Piece::Unallocated(len) => {
                if self.mode == Mode::Fixed {
                    return self.sink.write_zeros(self.places.data + offset, len);
                }
                Ok(())
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let shape = self.placer.shape;
        let mut t = self.placer.table.lock().expect("table lock");
        let mut end = self.places.data + t.next * shape.block_size;
        if self.differencing {
            // Every chunk's sector bitmap block, all zeros (nothing partially present), after
            // the payload.
            for chunk in 0..shape.chunks() {
                t.entries[shape.bitmap_index(chunk)] = bat_entry(STATE_SB_PRESENT, end);
                self.sink.write_zeros(end, MIB)?;
                end += MIB;
            }
        }
        let bat = encode(&t.entries);
        drop(t);
        if self.mode == Mode::OnArrival || self.zero_state {
            // Every entry of a dynamic disk, or a fixed disk's zero states.
            self.sink.write_at(&bat, self.places.bat)?;
        }
        // Whole blocks, as Hyper-V sizes the file (the disk's last block too).
        self.sink.set_len(end)?;
        self.sink.finish()
    }
}
