//! `convert --bitmaps`: the source's persistent dirty bitmaps, stored once all the data is in,
//! as qemu stores them when it closes an image: for each bitmap its data clusters and then
//! its table ([`store`]), and last the directory, all counted in the refcounts.

use super::layout::Layout;
use crate::dirty_bitmap::DirtyBitmap;
use crate::error::{Error, Result};
use crate::formats::qcow2::bitmaps::{MAX_BITMAPS, MAX_DIRECTORY_BYTES, store};
use crate::formats::qcow2::header::BitmapsExtension;
use std::sync::Arc;

/// Writes `bitmaps` through `layout` in clusters of `cluster_size` bytes; returns where the
/// directory is, for the header's bitmaps extension (none without bitmaps).
pub fn write(
    layout: &mut Layout<'_>,
    bitmaps: &[Arc<dyn DirtyBitmap>],
    cluster_size: u64,
) -> Result<Option<BitmapsExtension>> {
    if bitmaps.is_empty() {
        return Ok(None);
    }
    if bitmaps.len() > MAX_BITMAPS as usize {
        return Err(Error::invalid(format!(
            "{} persistent bitmaps are more than qemu's limit of {MAX_BITMAPS}",
            bitmaps.len()
        )));
    }
    let mut directory = Vec::new();
    for b in bitmaps {
        store(b.as_ref(), cluster_size, &mut directory, &mut |bytes| {
            layout.append(bytes)
        })?;
    }
    if directory.len() as u64 > MAX_DIRECTORY_BYTES {
        return Err(Error::invalid(format!(
            "the bitmap directory would take {} bytes, more than qemu's limit of 64 MiB",
            directory.len()
        )));
    }
    let directory_offset = layout.append(&directory)?;
    Ok(Some(BitmapsExtension {
        count: bitmaps.len() as u32,
        directory_size: directory.len() as u64,
        directory_offset,
    }))
}
