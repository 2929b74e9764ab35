//! `measure`: the file size an image of a format needs, for a conversion of a source image or
//! for an empty image of a size. The source's map is walked into the ranges that hold data
//! (zero and unallocated ranges excluded, as qemu-img's measure excludes them) and the target
//! format's driver does the arithmetic.

use crate::edit::{MeasureRequest, Measurement};
use crate::error::Result;
use crate::format::{Capability, Format};
use crate::image::{Allocation, Image};
use crate::options::FormatOptions;
use std::ops::Range;

/// What is measured.
#[derive(Clone, Copy)]
pub enum MeasureSource<'a> {
    /// An empty image of this many bytes (`--size`).
    Size(u64),
    /// A conversion of this image, its whole chain read.
    Image(&'a Image),
}

/// The ranges of `image` (through its chain) that hold data, sorted, disjoint and merged.
pub fn allocated_ranges(image: &Image) -> Result<Vec<Range<u64>>> {
    let size = image.virtual_size();
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut pos = 0;
    while pos < size {
        let status = image.block_status(pos, size - pos)?;
        let end = status.mapping.end();
        if status.mapping.allocation == Allocation::Data {
            match out.last_mut() {
                Some(last) if last.end == pos => last.end = end,
                _ => out.push(pos..end),
            }
        }
        pos = end;
    }
    Ok(out)
}

/// Measures an image of `format` with `options` made from `source`.
pub fn measure(
    format: Format,
    options: &FormatOptions,
    source: MeasureSource<'_>,
) -> Result<Measurement> {
    format.require(Capability::Measure)?;
    let (virtual_size, allocated, bitmaps) = match source {
        MeasureSource::Size(n) => (n, Vec::new(), None),
        MeasureSource::Image(image) => (
            image.virtual_size(),
            allocated_ranges(image)?,
            image.top().dirty_bitmaps(),
        ),
    };
    format.driver().measure(&MeasureRequest {
        virtual_size,
        allocated: &allocated,
        options,
        source_bitmaps: bitmaps.as_deref(),
    })
}
