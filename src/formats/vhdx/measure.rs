//! `measure` for VHDX: the size of the file diskferry's writer makes (qemu-img cannot measure
//! VHDX): headers, region tables and log in the first MiBs, the metadata region, the BAT
//! rounded up to 1 MiB, then one payload block per block that holds data (every block for
//! `subformat=fixed`).

use super::layout::Places;
use super::writer::{MAX_SIZE, Shape, settings_of};
use crate::edit::{MeasureRequest, Measurement};
use crate::error::{Error, Result};

/// The file sizes of a VHDX made as `request` describes.
pub fn measure(request: &MeasureRequest<'_>) -> Result<Measurement> {
    let s = settings_of(request.options, false)?;
    let size = request.virtual_size.next_multiple_of(s.sector);
    if size > MAX_SIZE {
        return Err(Error::invalid(format!(
            "a VHDX holds at most 64 TiB; {size} bytes asked"
        )));
    }
    let shape = Shape::new(size, s.block_size, s.sector, false);
    let places = Places::new(s.log_len, shape.entries);
    let full = places.data + shape.blocks * s.block_size;
    let required = if s.fixed {
        full
    } else {
        places.data + request.units_touched(s.block_size).min(shape.blocks) * s.block_size
    };
    Ok(Measurement {
        required,
        fully_allocated: full,
        bitmaps: None,
    })
}
