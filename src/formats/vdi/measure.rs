//! `measure` for VDI: the size of the file diskferry's writer makes (qemu-img cannot measure
//! VDI): the header, the block map from 4 KiB to the next 4 KiB boundary, then one block per
//! block that holds data (every block for `static`).

use super::writer::settings_of;
use crate::edit::{MeasureRequest, Measurement};
use crate::error::Result;

/// The file sizes of a VDI made as `request` describes.
pub fn measure(request: &MeasureRequest<'_>) -> Result<Measurement> {
    let settings = settings_of(request.options, request.virtual_size)?;
    let bs = settings.block_size;
    let blocks = request.virtual_size.div_ceil(bs);
    let data_offset = settings.data_offset;
    let full = data_offset + blocks * bs;
    let required = if settings.fixed {
        full
    } else {
        data_offset + request.units_touched(bs).min(blocks) * bs
    };
    Ok(Measurement {
        required,
        fully_allocated: full,
        bitmaps: None,
    })
}
