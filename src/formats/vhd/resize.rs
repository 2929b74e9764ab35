//! `resize` of a VHD in place.
//!
//! The footer's `current_size` and geometry change as the specification says they change when
//! a disk is expanded ("Hard Disk Footer Format": *Current Size* "can change depending on
//! whether the hard disk is expanded", *Disk Geometry* follows the CHS algorithm of the
//! appendix). `original_size` follows as well, as VirtualBox writes it when it resizes a VHD:
//! libyal takes the disk's size from that field, so a footer with the two apart reads as the
//! old size there. diskferry keeps the exact size, as
//! qemu-img's `force_size` does; a disk whose creator code makes readers size it by its
//! geometry ("vpc ", "qemu") is marked "qem2" so that they read `current_size` instead.
//!
//! Crash consistency, fixed disks: growing first writes the old footer again at the new end
//! (the disk still reads as before), then zeros where the old footer was, then the new footer
//! over the old copy at the end (one 512-byte sector). Shrinking writes the new footer at the
//! new end, then cuts the file: killed in between, the old footer still ends the file and the
//! old size holds, with the sector at the new end (data the shrink gives up) overwritten.
//!
//! Dynamic and differencing disks: a BAT too short for the new size grows into the space in
//! front of the first block, after moving blocks that stand in the way to the end of the
//! file (copied, flushed, then pointed to); the new entries are written (as unused) before
//! the header's entry count grows. The size changes last: the end footer, a flush, then the
//! copy at offset 0.

use super::bat::{UNUSED, bat_bytes};
use super::dynamic_header::HEADER_SIZE;
use super::edit::{Appender, Opened, Tables, open_for_change, seal_footer};
use super::footer::{FOOTER_SIZE, Geometry, RawFooter};
use super::writer::{CREATOR_APP, MAX_VHD_SIZE};
use crate::edit::{EditContext, GrowPreallocation, ResizeRequest, Shrink};
use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::storage::Storage;
use std::path::Path;
use zerocopy::{FromBytes, IntoBytes};

/// Bytes copied at a time when a block moves.
const COPY_CHUNK: u64 = 1 << 20;

/// Resizes the VHD at `path` as `request` says.
pub fn resize(path: &Path, request: &ResizeRequest, ctx: &EditContext<'_>) -> Result<()> {
    let new_size = request.new_size.div_ceil(512) * 512;
    if new_size > MAX_VHD_SIZE {
        return Err(Error::invalid(format!(
            "a VHD holds at most 2040 GiB ({MAX_VHD_SIZE} bytes); {new_size} bytes is too large (use vhdx)"
        ))
        .with_path(path));
    }
    let mut opened = open_for_change(path, ctx)?;
    if new_size < opened.size && request.shrink == Shrink::Refuse {
        return Err(Error::invalid(
            "Use the --shrink option to perform a shrink operation (data past the new end is lost)",
        )
        .with_path(path));
    }
    let footer = resized_footer(&opened.footer.bytes, new_size);
    match opened.sparse.take() {
        None => resize_fixed(&mut opened, new_size, footer, request.preallocation),
        Some(tables) => {
            if request.preallocation != GrowPreallocation::Off {
                return Err(Error::unsupported(
                    "--preallocation applies to fixed VHDs only: a dynamic or differencing VHD allocates blocks as they are written",
                )
                .with_path(path));
            }
            resize_sparse(&mut opened, tables, new_size, footer)
        }
    }
}

/// The footer of the image at the new size: current size and geometry as Hyper-V writes them.
pub(crate) fn resized_footer(old: &[u8; 512], new_size: u64) -> [u8; 512] {
    let mut raw = RawFooter::read_from_bytes(old).expect("512 bytes make a footer");
    raw.current_size = new_size.into();
    raw.original_size = new_size.into();
    let geometry = Geometry::for_size(new_size);
    raw.cylinders = geometry.cylinders.into();
    raw.heads = geometry.heads;
    raw.sectors_per_track = geometry.sectors_per_track;
    if (&raw.creator_app == b"vpc " || &raw.creator_app == b"qemu")
        && geometry.sectors() * 512 != new_size
    {
        // Readers size such a disk by its geometry, which cannot express this size exactly.
        raw.creator_app = CREATOR_APP;
    }
    let mut bytes = [0u8; 512];
    bytes.copy_from_slice(raw.as_bytes());
    seal_footer(bytes)
}

fn resize_fixed(
    opened: &mut Opened,
    new_size: u64,
    footer: [u8; 512],
    preallocation: GrowPreallocation,
) -> Result<()> {
    let file = &mut opened.file;
    let old_size = file.len() - FOOTER_SIZE;
    if new_size == old_size {
        file.write_all_at(&footer, old_size)?;
        return file.sync();
    }
    if new_size < old_size {
        file.write_all_at(&footer, new_size)?;
        file.sync()?;
        file.set_len(new_size + FOOTER_SIZE)?;
        return file.sync();
    }
    // The old footer at the new end first: the disk reads as before while the rest changes.
    file.write_all_at(&opened.footer.bytes, new_size)?;
    file.sync()?;
    match preallocation {
        GrowPreallocation::Off | GrowPreallocation::Metadata => {
            file.write_zeros(old_size, FOOTER_SIZE)?;
        }
        GrowPreallocation::Falloc => {
            file.write_zeros(old_size, FOOTER_SIZE)?;
            rustix::fs::fallocate(
                file.file(),
                rustix::fs::FallocateFlags::KEEP_SIZE,
                old_size,
                new_size - old_size,
            )
            .map_err(|e| Error::io("cannot reserve space", e.into()).with_path(file.path()))?;
        }
        GrowPreallocation::Full => file.write_zeros(old_size, new_size - old_size)?,
    }
    file.sync()?;
    file.write_all_at(&footer, new_size)?;
    file.sync()
}

fn resize_sparse(
    opened: &mut Opened,
    tables: Tables,
    new_size: u64,
    footer: [u8; 512],
) -> Result<()> {
    let file = &mut opened.file;
    let old_size = opened.size;
    let bs = tables.block_size;
    let old_blocks = old_size.div_ceil(bs);
    let new_blocks = new_size.div_ceil(bs);
    if new_blocks > super::bat::MAX_BAT_ENTRIES {
        return Err(Error::unsupported(format!(
            "a size of {new_size} bytes in blocks of {bs} needs {new_blocks} BAT entries, more than diskferry handles"
        ))
        .with_path(file.path()));
    }
    let mut entries = tables.entries.clone();
    let mut appender = Appender {
        end: file.len() - FOOTER_SIZE,
        footer: opened.footer.bytes,
    };
    if new_size > old_size {
        // What lies past the old end in its last block (left by an earlier shrink, or never
        // cleared by another tool) must read as zeros once it becomes part of the disk.
        scrub_tail(file, &tables, &entries, old_size)?;
        // Entries past the old end within the table must be unused for the same reason.
        let keep = old_blocks.min(tables.max_table_entries);
        let stop = new_blocks.min(tables.max_table_entries);
        if keep < stop {
            let unused = vec![0xFFu8; ((stop - keep) * 4) as usize];
            file.write_all_at(&unused, tables.table_offset + keep * 4)?;
        }
        if new_blocks > tables.max_table_entries {
            grow_table(file, &tables, &mut entries, &mut appender, new_blocks)?;
        }
        file.sync()?;
    }
    // The size: the end footer, a flush, then the copy at offset 0.
    file.write_all_at(&footer, appender.end)?;
    file.sync()?;
    file.write_all_at(&footer, 0)?;
    file.sync()?;
    if new_size < old_size {
        // Data past the new end is given up: the blocks wholly past it are dropped from the
        // table (their space stays, unreferenced), the last block's tail reads as nothing.
        let stop = old_blocks.min(entries.len() as u64);
        if new_blocks < stop {
            let unused = vec![0xFFu8; ((stop - new_blocks) * 4) as usize];
            file.write_all_at(&unused, tables.table_offset + new_blocks * 4)?;
            for e in &mut entries[new_blocks as usize..stop as usize] {
                *e = UNUSED;
            }
        }
        scrub_tail(file, &tables, &entries, new_size)?;
        file.sync()?;
    }
    Ok(())
}

/// Makes the sectors from `from` to the end of its block read as nothing: zeros stored (qemu
/// reads an allocated block whole) and the bits cleared.
fn scrub_tail(file: &mut HostFile, tables: &Tables, entries: &[u32], from: u64) -> Result<()> {
    let bs = tables.block_size;
    if from.is_multiple_of(bs) {
        return Ok(());
    }
    let index = from / bs;
    let Some(&entry) = entries.get(index as usize) else {
        return Ok(());
    };
    if entry == UNUSED {
        return Ok(());
    }
    let host = u64::from(entry) * 512;
    let in_block = from % bs;
    file.write_zeros(host + tables.bitmap_len + in_block, bs - in_block)?;
    let mut bits = vec![0u8; tables.bitmap_len as usize];
    file.read_exact_at(&mut bits, host)?;
    for n in (in_block / 512) as u32..(bs / 512) as u32 {
        bits[(n / 8) as usize] &= !(0x80 >> (n % 8));
    }
    file.sync()?;
    file.write_all_at(&bits, host)
}

/// Grows the BAT to `needed` entries in place, moving the blocks in front of which it must
/// grow to the end of the file first.
fn grow_table(
    file: &mut HostFile,
    tables: &Tables,
    entries: &mut [u32],
    appender: &mut Appender,
    needed: u64,
) -> Result<()> {
    let path = file.path().to_path_buf();
    let table_end = tables.table_offset + bat_bytes(needed);
    if tables.table_offset < tables.header_at + HEADER_SIZE {
        return Err(Error::unsupported(
            "the BAT lies in front of the dynamic header, so it cannot grow in place; convert the image to a larger one",
        )
        .with_path(&path));
    }
    // Parent locator data behind the table would have to move with its header entry: refused
    // rather than half done.
    if let Some(l) = tables.header.locators.iter().find(|l| {
        l.data_offset >= tables.table_offset && l.data_offset < table_end && l.data_length > 0
    }) {
        return Err(Error::unsupported(format!(
            "the BAT must grow to {table_end:#x} bytes, but parent locator data lies behind it at {:#x}; rebase the image first (which moves the locators) or convert it",
            l.data_offset
        ))
        .with_path(&path));
    }
    // Move the blocks that stand where the table grows, lowest first.
    let stride = tables.bitmap_len + tables.block_size;
    let mut in_the_way: Vec<(u64, u64)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| **e != UNUSED)
        .map(|(i, e)| (u64::from(*e) * 512, i as u64))
        .filter(|(host, _)| *host < table_end)
        .collect();
    in_the_way.sort_unstable();
    for (old_host, index) in in_the_way {
        let new_host = appender.append(file, tables.block_size, tables.bitmap_len)?;
        let mut buf = vec![0u8; COPY_CHUNK.min(stride) as usize];
        let mut done = 0;
        while done < stride {
            let n = (stride - done).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], old_host + done)?;
            file.write_all_at(&buf[..n], new_host + done)?;
            done += n as u64;
        }
        file.sync()?;
        let entry = (new_host / 512) as u32;
        file.write_all_at(&entry.to_be_bytes(), tables.table_offset + index * 4)?;
        entries[index as usize] = entry;
        file.sync()?;
    }
    // The footer, if the table reaches it, moves past the table first.
    if appender.end < table_end {
        file.write_all_at(&appender.footer, table_end)?;
        appender.end = table_end;
        file.sync()?;
    }
    // The new entries (unused) where the table grows, then the count in the header (its first
    // sector, one write).
    let old_end = tables.table_offset + tables.max_table_entries * 4;
    let unused = vec![0xFFu8; (table_end - old_end) as usize];
    file.write_all_at(&unused, old_end)?;
    file.sync()?;
    let mut header = [0u8; 1024];
    file.read_exact_at(&mut header, tables.header_at)?;
    header[28..32].copy_from_slice(&(needed as u32).to_be_bytes());
    header[36..40].fill(0);
    let sum = super::footer::checksum(&header, 36..40);
    header[36..40].copy_from_slice(&sum.to_be_bytes());
    file.write_all_at(&header[..512], tables.header_at)?;
    file.sync()
}
