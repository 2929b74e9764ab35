//! `measure` for VHD: the size of the file diskferry's writer makes (qemu-img cannot measure
//! VHD). The layout is the writer's: footer copy, header, BAT, then each block that holds data
//! (sector bitmap and data, the data 4 KiB-aligned for blocks of 1 MiB and more), the footer.

use super::bat::bat_bytes;
use super::bitmap::bitmap_bytes;
use super::dynamic_header::HEADER_SIZE;
use super::footer::{DiskType, FOOTER_SIZE};
use super::writer::{MAX_VHD_SIZE, next_place, settings_of};
use crate::edit::{MeasureRequest, Measurement};
use crate::error::{Error, Result};

/// The file sizes of a VHD made as `request` describes.
pub fn measure(request: &MeasureRequest<'_>) -> Result<Measurement> {
    let settings = settings_of(request.options, false)?;
    let size = request.virtual_size.div_ceil(512) * 512;
    if size > MAX_VHD_SIZE {
        return Err(Error::invalid(format!(
            "a VHD holds at most 2040 GiB ({MAX_VHD_SIZE} bytes), and this disk has {size}"
        )));
    }
    if settings.disk_type == DiskType::Fixed {
        let total = size + FOOTER_SIZE;
        return Ok(Measurement {
            required: total,
            fully_allocated: total,
            bitmaps: None,
        });
    }
    let bs = settings.block_size;
    let blocks = size.div_ceil(bs);
    let bitmap_len = bitmap_bytes(bs as u32);
    let table_end = FOOTER_SIZE + HEADER_SIZE + bat_bytes(blocks);
    let file_size = |n: u64| -> u64 {
        if n == 0 {
            return table_end + FOOTER_SIZE;
        }
        let first = next_place(table_end, bs, bitmap_len);
        // Every block after the first starts the same distance after the one before it.
        let stride = next_place(first + bitmap_len + bs, bs, bitmap_len) - first;
        first + (n - 1) * stride + bitmap_len + bs + FOOTER_SIZE
    };
    Ok(Measurement {
        required: file_size(request.units_touched(bs).min(blocks)),
        fully_allocated: file_size(blocks),
        bitmaps: None,
    })
}
