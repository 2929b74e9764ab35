//! `resize` of a VDI in place: `cbDisk` and `cBlocks` (VDICore.h), with a block map that
//! grows into the room between it and the first block, or moves when that room is too small.
//!
//! Every change ends with one write of the header's 52 bytes from `offBlocks` to
//! `cBlocksAllocated` (one sector: a kill either lands all of it or none), after everything
//! it makes visible is written and flushed:
//!
//! - When the map has room, the new entries are written past the old ones (free, or for a
//!   static image the places of new zero blocks, stored before), then the header switches.
//! - When it has not, VirtualBox (VDI.cpp, vdiResize) moves the first data blocks to the end
//!   and `offData` past them, which renumbers every map entry and rewrites the map in place:
//!   several writes, so a kill in between leaves entries that point at the wrong blocks.
//!   diskferry instead moves the first `k` blocks one at a time as a write does (copied to
//!   the end, flushed, then the count and the block's 4-byte map entry), so that nothing
//!   points into the first `k` places; then writes the whole new map, renumbered for
//!   `offData` moved `k` blocks on, into those places, which the live header does not use;
//!   flushes; and switches with the header write, which moves `offBlocks` onto the new map
//!   and `offData` past it together with the size and counts. Killed before the switch, the
//!   image is the old one with some blocks moved (each entry points at a whole copy, old or
//!   new) and the places they left unused: space `check` reports as leaked (`qemu-img check`
//!   as a count mismatch) and that the next resize past the room covers with its map. The
//!   old map's bytes become unused space before the new map.
//!
//! Shrinking is refused, as VirtualBox refuses it: the blocks past the end would stay counted.

use super::edit::{DISK_SIZE_AT, Opened, open_for_change};
use super::header::{BLOCK_FREE, BLOCK_ZERO, ImageType, MAX_BLOCKS};
use crate::edit::{EditContext, GrowPreallocation, ResizeRequest};
use crate::error::{Error, Result};
use crate::storage::Storage;
use std::path::Path;

/// `offBlocks`: the first byte of the header's fields one resize switches.
const OFF_BLOCKS_AT: u64 = 0x154;
/// `offBlocks` through `cBlocksAllocated` (VDIHEADER1): 0x154..0x188.
const SWITCH_LEN: usize = 0x34;

/// Resizes the VDI at `path` as `request` says.
pub fn resize(path: &Path, request: &ResizeRequest, ctx: &EditContext<'_>) -> Result<()> {
    let _ = ctx;
    let mut o = open_for_change(path)?;
    let h = &o.header;
    let new_size = request.new_size.div_ceil(512) * 512;
    if new_size < h.disk_size {
        return Err(Error::unsupported(
            "a VDI cannot shrink in place (VirtualBox refuses it too: the blocks past the new end would stay allocated); convert it to a smaller image instead",
        )
        .with_path(path));
    }
    let bs = u64::from(h.block_size);
    let old_blocks = u64::from(h.blocks);
    let new_blocks = new_size.div_ceil(bs);
    if new_blocks > u64::from(MAX_BLOCKS) {
        return Err(Error::unsupported(format!(
            "{new_size} bytes need {new_blocks} blocks, more than a VDI holds ({MAX_BLOCKS})"
        ))
        .with_path(path));
    }
    let static_image = h.image_type == ImageType::Static;
    if !static_image && request.preallocation != GrowPreallocation::Off {
        return Err(Error::unsupported(
            "--preallocation applies to static VDIs only: a dynamic one stores blocks as they are written",
        )
        .with_path(path));
    }
    let stride = h.block_stride();
    let room = (h.data_offset - h.blocks_offset) / 4;
    // How many places the map takes from the data area when it must move: enough for every
    // new entry, in whole sectors.
    let shift = if new_blocks > room {
        (new_blocks * 4).div_ceil(512) * 512
    } else {
        0
    }
    .div_ceil(stride);
    let data_offset = h.data_offset + shift * stride;
    if data_offset > u64::from(u32::MAX) {
        return Err(Error::unsupported(format!(
            "the block map would have to move past its 32-bit offset to hold {new_blocks} blocks; convert the image to a larger one instead"
        ))
        .with_path(path));
    }
    if shift > 0 {
        free_first_places(&mut o, shift)?;
    }
    let old_data_offset = o.header.data_offset;
    let first_new = o.next;
    let added = new_blocks - old_blocks;
    if static_image && added > 0 {
        // A static image stores every block: the new ones as zeros (a hole reads as zeros).
        let end = u64::from(first_new) + added;
        if end >= u64::from(BLOCK_ZERO) {
            return Err(Error::unsupported("the VDI has no block numbers left").with_path(path));
        }
        o.file.set_len(old_data_offset + end * stride)?;
        if request.preallocation == GrowPreallocation::Full {
            let start = old_data_offset + u64::from(first_new) * stride;
            o.file.write_zeros(start, added * stride)?;
        }
        o.next = end as u32;
    }
    let k = shift as u32;
    let new_entries = (0..added as u32).map(|i| {
        if static_image {
            first_new + i - k
        } else {
            BLOCK_FREE
        }
    });
    let (map_at, bytes): (u64, Vec<u8>) = if shift == 0 {
        let bytes = new_entries.flat_map(u32::to_le_bytes).collect();
        (o.header.blocks_offset + old_blocks * 4, bytes)
    } else {
        // Every stored block now lies at place `k` or later.
        let old = o
            .map
            .iter()
            .map(|&e| if e < BLOCK_ZERO { e - k } else { e });
        let mut bytes: Vec<u8> = old.chain(new_entries).flat_map(u32::to_le_bytes).collect();
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        (old_data_offset, bytes)
    };
    o.file.write_all_at(&bytes, map_at)?;
    o.file.sync()?;
    let mut fields = [0u8; SWITCH_LEN];
    o.file.read_exact_at(&mut fields, OFF_BLOCKS_AT)?;
    let blocks_offset = if shift == 0 {
        o.header.blocks_offset
    } else {
        old_data_offset
    };
    let mut put = |at: u64, value: &[u8]| {
        let at = (at - OFF_BLOCKS_AT) as usize;
        fields[at..at + value.len()].copy_from_slice(value);
    };
    put(0x154, &(blocks_offset as u32).to_le_bytes());
    put(0x158, &(data_offset as u32).to_le_bytes());
    put(DISK_SIZE_AT, &new_size.to_le_bytes());
    put(0x180, &(new_blocks as u32).to_le_bytes());
    put(0x184, &(o.next - k).to_le_bytes());
    o.file.write_all_at(&fields, OFF_BLOCKS_AT)?;
    o.file.sync()
}

/// Moves every block stored in the first `count` places of the data area to the end, one at a
/// time, each as a write stores a block (see the module doc of `edit`), so that nothing
/// points there any more.
fn free_first_places(o: &mut Opened, count: u64) -> Result<()> {
    let stride = o.header.block_stride();
    for index in 0..o.map.len() {
        let entry = o.map[index];
        if entry >= BLOCK_ZERO || u64::from(entry) >= count {
            continue;
        }
        if o.next >= BLOCK_ZERO {
            return Err(
                Error::unsupported("the VDI has no block numbers left").with_path(o.file.path())
            );
        }
        // The block's extra bytes move with it.
        let from = o.header.data_offset + u64::from(entry) * stride;
        let to = o.header.data_offset + u64::from(o.next) * stride;
        o.file.copy_within(from, to, stride)?;
        o.file.sync()?;
        o.point_at_next(index as u64)?;
    }
    // The moved entries must be durable before their old places are overwritten.
    o.file.sync()
}
