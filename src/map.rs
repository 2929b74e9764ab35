//! The allocation map of a whole image chain, as `qemu-img map` reports it.

use crate::error::Result;
use crate::image::{Allocation, Image};
use serde::Serialize;
use std::path::PathBuf;

/// One run of the map: qemu-img map's JSON object, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapEntry {
    /// First virtual byte.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// The layer that provides the run (0 = top); for runs no layer holds, the last layer.
    pub depth: usize,
    /// Some layer defines the run (allocated, or an explicit zero).
    pub present: bool,
    /// The run reads as zeros.
    pub zero: bool,
    /// The run is read from a file.
    pub data: bool,
    /// The run is stored compressed.
    pub compressed: bool,
    /// Where the run is in its host file, when stored there plainly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The host file holding the run (not in qemu-img's JSON; for the human listing).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl MapEntry {
    /// True when `next` continues this run with the same attributes and a contiguous host offset.
    fn continues_with(&self, next: &MapEntry) -> bool {
        self.start + self.length == next.start
            && self.depth == next.depth
            && self.present == next.present
            && self.zero == next.zero
            && self.data == next.data
            && self.compressed == next.compressed
            && self.file == next.file
            && match (self.offset, next.offset) {
                (Some(a), Some(b)) => a + self.length == b,
                (None, None) => true,
                _ => false,
            }
    }
}

/// Walks `[start, end)` of the image (clipped to its size) and calls `emit` with each run,
/// neighbours with the same attributes merged.
pub fn map_image(
    image: &Image,
    start: u64,
    end: u64,
    mut emit: impl FnMut(&MapEntry) -> Result<()>,
) -> Result<()> {
    let size = end.min(image.virtual_size());
    let mut pending: Option<MapEntry> = None;
    let mut pos = start;
    while pos < size {
        let status = image.block_status(pos, size - pos)?;
        let m = status.mapping;
        let layer = &image.layers()[status.depth];
        // Past the end of a backing file shorter than its overlay, nothing below is looked at:
        // qemu-img reports the range at the depth of the last layer that reaches it.
        let depth = if m.allocation == Allocation::Unallocated {
            (1..=status.depth)
                .find(|&d| m.start >= image.layers()[d].virtual_size())
                .map_or(status.depth, |d| d - 1)
        } else {
            status.depth
        };
        let entry = MapEntry {
            start: m.start,
            length: m.length,
            depth,
            present: status.present(),
            zero: status.zero(),
            data: m.allocation == Allocation::Data
                || (m.host.is_some() && layer.host_ranges_map_as_data()),
            compressed: m.compressed,
            offset: m.host.map(|h| h.offset),
            file: m.host.and_then(|h| layer.files().get(h.file).cloned()),
        };
        pos = m.end();
        match &mut pending {
            Some(p) if p.continues_with(&entry) => p.length += entry.length,
            _ => {
                if let Some(p) = pending.replace(entry) {
                    emit(&p)?;
                }
            }
        }
    }
    if let Some(p) = pending {
        emit(&p)?;
    }
    Ok(())
}
