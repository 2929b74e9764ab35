//! `resize` of a VDI in place: `cbDisk` and `cBlocks` (VDICore.h), the block map grown into
//! the room between it and the first block.
//!
//! Growing writes the new map entries first (free, or for a static image the places of new
//! zero blocks, written and flushed before), then the header's size, block count and
//! allocated count in one write of 24 contiguous bytes: killed before it, the image is as it
//! was. Moving the first data blocks to make more room would change `offData` and every map
//! entry at once, which no single write does, so a map without room is refused (as is
//! shrinking, which VirtualBox refuses too: the blocks past the end would stay counted).

use super::edit::{DISK_SIZE_AT, open_for_change};
use super::header::{BLOCK_FREE, ImageType, MAX_BLOCKS};
use crate::edit::{EditContext, GrowPreallocation, ResizeRequest};
use crate::error::{Error, Result};
use std::path::Path;

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
    let room = (h.data_offset - h.blocks_offset) / 4;
    if new_blocks > room {
        return Err(Error::unsupported(format!(
            "the block map has room for {room} blocks of {bs} bytes ({} bytes of disk) before the first block, and growing it further would renumber every block; convert the image to a larger one instead",
            room * bs
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
    let data_offset = h.data_offset;
    let blocks_offset = h.blocks_offset;
    let mut entries = Vec::with_capacity((new_blocks - old_blocks) as usize);
    let mut next = o.next;
    for _ in old_blocks..new_blocks {
        if static_image {
            entries.push(next);
            next += 1;
        } else {
            entries.push(BLOCK_FREE);
        }
    }
    if static_image && next > o.next {
        // A static image stores every block: the new ones as zeros (a hole reads as zeros).
        o.file.set_len(data_offset + u64::from(next) * stride)?;
        if request.preallocation == GrowPreallocation::Full {
            let start = data_offset + u64::from(o.next) * stride;
            let end = data_offset + u64::from(next) * stride;
            o.file.write_zeros(start, end - start)?;
        }
    }
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    o.file
        .write_all_at(&bytes, blocks_offset + old_blocks * 4)?;
    o.file.sync()?;
    // cbDisk (8), cbBlock, cbBlockExtra, cBlocks, cBlocksAllocated: one write.
    let mut fields = [0u8; 24];
    fields[..8].copy_from_slice(&new_size.to_le_bytes());
    fields[8..12].copy_from_slice(&o.header.block_size.to_le_bytes());
    fields[12..16].copy_from_slice(&o.header.block_extra.to_le_bytes());
    fields[16..20].copy_from_slice(&(new_blocks as u32).to_le_bytes());
    fields[20..24].copy_from_slice(&next.to_le_bytes());
    o.file.write_all_at(&fields, DISK_SIZE_AT)?;
    o.file.sync()
}
