//! `resize` of a VHDX in place: the VirtualDiskSize metadata item (MS-VHDX 2.6.2.2) and the
//! BAT, all through the log.
//!
//! Growing: the part of the old last block past the old end is made zeros first (it is
//! outside the disk until the size changes, so nothing reads it yet); BAT entries of the new
//! range that are not zero (left by an earlier shrink) are cleared. A BAT region too small for
//! the new size moves, as Hyper-V moves it: a new region at the end of the file holds a copy
//! of the old entries (written and flushed while nothing points to it), then one log entry
//! changes both region table copies and the size together. A fixed disk gets its new blocks
//! allocated (reserved or written as `--preallocation` says) and their entries set before the
//! size changes, entries past the disk's end being ignored until then.
//!
//! Shrinking (`--shrink`): the size changes first, then the entries past the new end are
//! cleared; once the log is empty, unused space at the end of the file is cut (space of
//! blocks elsewhere in the file stays unused; `check` does not count it).

use super::edit::{FULLY_PRESENT, PARTIALLY_PRESENT, Session, decode, open_session};
use super::guid::{REGION_BAT, VIRTUAL_DISK_SIZE, read_guid};
use super::header::checksum;
use super::log_write::DataChange;
use super::metadata::Metadata;
use super::region::{Region, TABLE_OFFSETS, TABLE_SIZE};
use super::writer::MAX_SIZE;
use crate::edit::{EditContext, GrowPreallocation, ResizeRequest, Shrink};
use crate::error::{Error, Result};
use crate::storage::Storage;
use std::path::Path;

use super::bat::Geometry;

const MIB: u64 = 1 << 20;

/// Resizes the VHDX at `path` as `request` says.
pub fn resize(path: &Path, request: &ResizeRequest, ctx: &EditContext<'_>) -> Result<()> {
    let mut s = open_session(path, ctx)?;
    let sector = u64::from(s.metadata.logical_sector_size);
    // The size is a multiple of the logical sector size (MS-VHDX 2.6.2.2).
    let new_size = request.new_size.div_ceil(sector) * sector;
    if new_size > MAX_SIZE {
        return Err(Error::invalid(format!(
            "a VHDX holds at most 64 TiB; {new_size} bytes asked"
        ))
        .with_path(path));
    }
    let old_size = s.metadata.virtual_size;
    if new_size < old_size && request.shrink == Shrink::Refuse {
        return Err(Error::invalid(
            "Use the --shrink option to perform a shrink operation (data past the new end is lost)",
        )
        .with_path(path));
    }
    let fixed = s.metadata.leave_blocks_allocated;
    if !fixed && request.preallocation != GrowPreallocation::Off {
        return Err(Error::unsupported(
            "--preallocation applies to fixed VHDXs only: a dynamic or differencing VHDX allocates blocks as they are written",
        )
        .with_path(path));
    }
    if new_size == old_size {
        return Ok(());
    }
    let new_geometry = Geometry::new(&Metadata {
        virtual_size: new_size,
        ..s.metadata.clone()
    });
    s.log.begin(&mut s.file, DataChange::Yes)?;
    let size_at = s.item_offset(&VIRTUAL_DISK_SIZE)?;
    let run = |s: &mut Session| -> Result<()> {
        if new_size > old_size {
            grow(s, new_geometry, request.preallocation)?;
            s.pending.write(&s.file, size_at, &new_size.to_le_bytes())?;
            s.commit()?;
        } else {
            s.pending.write(&s.file, size_at, &new_size.to_le_bytes())?;
            s.commit()?;
            clear_entries(s, new_geometry.total_entries, s.geometry.total_entries)?;
            if s.metadata.has_parent {
                // Blocks past the end leave no bits that a later grow would show (libyal
                // reads the bits of blocks not present).
                for block in new_geometry.data_blocks..s.geometry.data_blocks {
                    s.clear_block_bits(block)?;
                    if s.pending.len() + 20 > s.log.capacity() {
                        s.commit()?;
                    }
                }
            }
            s.commit()?;
        }
        s.finish()
    };
    run(&mut s).map_err(|e| e.with_path(path))?;
    drop(s);
    if new_size < old_size {
        // The blocks past the new end lie at the end of the file when they were the last
        // written (as in a disk filled in order); their space goes back to the file system.
        super::check::cut_unused_tail(path).map_err(|e| e.with_path(path))?;
    }
    Ok(())
}

/// Clears (through the log) the entries `[from, to)` that are not zero.
fn clear_entries(s: &mut Session, from: u64, to: u64) -> Result<()> {
    for index in from..to {
        if s.entry(index)? != 0 {
            s.set_entry(index, 0)?;
        }
    }
    Ok(())
}

/// Everything a grow changes but the size: the old last block's tail, the BAT's room, the
/// entries of the new range.
fn grow(s: &mut Session, new: Geometry, preallocation: GrowPreallocation) -> Result<()> {
    let old = s.geometry;
    let bs = old.block_size;
    let tail = old.virtual_size % bs;
    if tail != 0 {
        let block = old.virtual_size / bs;
        let (state, host) = decode(s.entry(old.payload_index(block))?);
        let end = bs.min(new.virtual_size - block * bs);
        match state {
            FULLY_PRESENT => s.file.write_zeros(host + tail, end - tail)?,
            PARTIALLY_PRESENT => {
                // The sectors past the old end read from the parent, as a new range does.
                let (state, base) = decode(s.entry(old.bitmap_index(block / old.chunk_ratio))?);
                if state == FULLY_PRESENT {
                    let sectors = bs / old.sector_size;
                    let at = base + (block % old.chunk_ratio) * sectors / 8;
                    for sector in tail / old.sector_size..sectors {
                        let mut b = [0u8; 1];
                        s.pending.read(&s.file, at + sector / 8, &mut b)?;
                        b[0] &= !(1 << (sector % 8));
                        s.pending.write(&s.file, at + sector / 8, &b)?;
                    }
                }
            }
            _ => {}
        }
    }
    let needed = new.total_entries * 8;
    if needed > s.regions.bat.length {
        move_bat(s, needed.next_multiple_of(MIB))?;
    } else {
        clear_entries(s, old.total_entries, new.total_entries)?;
    }
    if s.metadata.leave_blocks_allocated {
        let first = old.data_blocks;
        let count = new.data_blocks.saturating_sub(first);
        if count > 0 {
            let host = s.allocate(count * bs)?;
            reserve(s, host, count * bs, preallocation)?;
            for i in 0..count {
                s.set_entry(
                    new.payload_index(first + i),
                    (host + i * bs) | FULLY_PRESENT,
                )?;
            }
        }
    }
    s.geometry = new;
    Ok(())
}

/// Reserves `[host, host + len)` of the file as `preallocation` says (it reads as zeros).
fn reserve(s: &mut Session, host: u64, len: u64, preallocation: GrowPreallocation) -> Result<()> {
    match preallocation {
        GrowPreallocation::Off | GrowPreallocation::Metadata => Ok(()),
        GrowPreallocation::Falloc => rustix::fs::fallocate(
            s.file.file(),
            rustix::fs::FallocateFlags::KEEP_SIZE,
            host,
            len,
        )
        .map_err(|e| Error::io("cannot reserve space", e.into()).with_path(s.file.path())),
        GrowPreallocation::Full => s.file.write_zeros(host, len),
    }
}

/// Moves the BAT to a new region of `len` bytes at the end of the file: the old entries
/// copied and flushed there, then both region table copies changed through the log.
fn move_bat(s: &mut Session, len: u64) -> Result<()> {
    // Entries still pending belong to the old region: applied before it is copied.
    s.commit()?;
    let old = s.regions.bat;
    let host = s.allocate(len)?;
    let used = s.geometry.total_entries * 8;
    let mut done = 0;
    while done < used {
        let n = (used - done).min(MIB);
        let mut buf = vec![0u8; n as usize];
        s.file.read_exact_at(&mut buf, old.offset + done)?;
        s.file.write_all_at(&buf, host + done)?;
        done += n;
    }
    let new = Region {
        offset: host,
        length: len,
    };
    let mut table = vec![0u8; TABLE_SIZE];
    s.file
        .read_exact_at(&mut table, TABLE_OFFSETS[s.regions.copy - 1])?;
    let count = u32::from_le_bytes(table[8..12].try_into().expect("4 bytes")) as usize;
    let entry = (0..count)
        .map(|i| 16 + 32 * i)
        .find(|&e| read_guid(&table, e) == REGION_BAT)
        .ok_or_else(|| {
            Error::corrupt("the region table has no BAT region").at_offset(TABLE_OFFSETS[0])
        })?;
    table[entry + 16..entry + 24].copy_from_slice(&new.offset.to_le_bytes());
    let length = u32::try_from(new.length).map_err(|_| {
        Error::unsupported(format!(
            "the BAT would need {} bytes, more than a region table entry can describe",
            new.length
        ))
    })?;
    table[entry + 24..entry + 28].copy_from_slice(&length.to_le_bytes());
    table[4..8].fill(0);
    let sum = checksum(&table, 4);
    table[4..8].copy_from_slice(&sum.to_le_bytes());
    for at in TABLE_OFFSETS {
        s.pending.write(&s.file, at, &table)?;
    }
    s.regions.bat = new;
    Ok(())
}
