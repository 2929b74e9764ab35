//! `convert --bitmaps`: the source's persistent dirty bitmaps, stored once all the data is in,
//! as qemu stores them when it closes an image: for each bitmap its data clusters and then
//! its table, and last the directory, all counted in the refcounts. A cluster of bits that
//! are all clear gets no data cluster (table entry 0), as qemu writes it; every other cluster,
//! all ones included, is stored (qemu does not write the all-ones entry either).

use super::layout::Layout;
use crate::dirty_bitmap::DirtyBitmap;
use crate::error::{Error, Result};
use crate::formats::qcow2::bitmaps::{MAX_BITMAPS, MAX_DIRECTORY_BYTES, push_entry};
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
    let mut buf = vec![0u8; cluster_size as usize];
    for b in bitmaps {
        let entries = b.byte_len().div_ceil(cluster_size);
        if entries == 0 {
            return Err(Error::invalid(format!(
                "bitmap '{}' covers an empty disk, which a qcow2 bitmap table cannot describe",
                b.name()
            )));
        }
        let mut table = Vec::with_capacity(entries as usize * 8);
        for i in 0..entries {
            b.read(i * cluster_size, &mut buf)?;
            let entry = if buf.iter().all(|&x| x == 0) {
                0
            } else {
                layout.append(&buf)?
            };
            table.extend_from_slice(&entry.to_be_bytes());
        }
        let table_offset = layout.append(&table)?;
        push_entry(&mut directory, b.as_ref(), table_offset, entries as u32);
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
