//! What a raw image made from a source needs: its whole virtual size, whatever the source
//! holds, since unallocated sectors count towards a raw file's size (qemu-img's answer too).

use crate::edit::{MeasureRequest, Measurement};

/// The measurement of a raw image of `request.virtual_size` bytes (rounded up to whole
/// sectors, as qemu-img rounds a `--size`).
pub fn measure(request: &MeasureRequest<'_>) -> Measurement {
    let size = request.virtual_size.div_ceil(512) * 512;
    Measurement {
        required: size,
        fully_allocated: size,
        bitmaps: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::FormatOptions;

    #[test]
    fn a_raw_image_needs_its_whole_size() {
        let opts = FormatOptions::empty(super::super::FORMAT);
        let ranges = [0..4096, 8192..8704];
        let m = measure(&MeasureRequest {
            virtual_size: 1000,
            allocated: &ranges,
            options: &opts,
            source_bitmaps: None,
        });
        assert_eq!(
            (m.required, m.fully_allocated, m.bitmaps),
            (1024, 1024, None)
        );
    }
}
