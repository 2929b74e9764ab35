//! `measure` for QCOW outputs, from the layout diskferry's writer makes (qemu-img 10 cannot
//! measure qcow): the 48-byte header and the L1 table, rounded up to a cluster; then for every
//! 2 MiB range holding data, its 4 KiB data clusters and one 4 KiB L2 table. Uncompressed:
//! `-c` output depends on the data. Zeros count as data, as qemu-img measure counts them.

use super::writer::{CLUSTER_BITS, L2_BITS};
use crate::edit::{MeasureRequest, Measurement};
use crate::error::Result;

/// Predicts the file size of a QCOW image made as `request` says (no backing file name).
pub fn measure(request: &MeasureRequest<'_>) -> Result<Measurement> {
    let cs = 1u64 << CLUSTER_BITS;
    let span = cs << L2_BITS;
    let size = request.virtual_size.next_multiple_of(512);
    let l1_size = size.div_ceil(span);
    let data_start = (48 + l1_size * 8).next_multiple_of(cs);
    let required = data_start + (request.units_touched(cs) + request.units_touched(span)) * cs;
    let fully_allocated = data_start + (size.div_ceil(cs) + l1_size) * cs;
    Ok(Measurement {
        required,
        fully_allocated,
        bitmaps: None,
    })
}
