//! `measure` for VMDK outputs: the bytes of every file diskferry's own writer makes for each
//! subformat (qemu-img 10 cannot measure VMDK at all).
//!
//! - Sparse (monolithicSparse, and each extent of twoGbMaxExtentSparse): the header, the
//!   embedded descriptor (monolithic only), the grain directory and its redundant copy, every
//!   grain table twice, rounded up to a grain; then one 64 KiB grain per grain that holds data.
//! - Flat (monolithicFlat, twoGbMaxExtentFlat, vmfs): the flat files are as long as the disk
//!   (holes are left in them, but their size is the disk's), as qemu measures raw.
//! - Descriptor files count too: their text is made exactly as the writer makes it, for an
//!   output named `disk.vmdk` (names longer or shorter change it by a few bytes).
//! - streamOptimized is refused: its size depends on how well the data compresses.

use super::descriptor::ExtentKind;
use super::writer::{
    DiskSettings, EMBEDDED_DESCRIPTOR_SECTORS, GRAIN_BYTES, GTES_PER_GT, SPLIT_EXTENT_BYTES,
    Subformat,
};
use crate::edit::{MeasureRequest, Measurement};
use crate::error::{Error, Result};
use crate::writer::CreateSpec;

/// The bytes of the sparse extent file of `sectors` sectors holding `grains` grains of data.
fn sparse_file(sectors: u64, grains: u64, embedded: bool) -> u64 {
    let grain_sectors = GRAIN_BYTES / 512;
    let gt_count = sectors
        .div_ceil(grain_sectors)
        .div_ceil(u64::from(GTES_PER_GT));
    let gt_sectors = u64::from(GTES_PER_GT) * 4 / 512;
    let gd_sectors = (gt_count * 4).div_ceil(512);
    let head = 1 + if embedded {
        EMBEDDED_DESCRIPTOR_SECTORS
    } else {
        0
    };
    let metadata = head + 2 * (gd_sectors + gt_count * gt_sectors);
    metadata.div_ceil(grain_sectors) * GRAIN_BYTES + grains * GRAIN_BYTES
}

/// Predicts the bytes of the files a VMDK made as `request` says takes.
pub fn measure(request: &MeasureRequest<'_>) -> Result<Measurement> {
    let subformat = Subformat::from_option(request.options.text("subformat"));
    if subformat == Subformat::StreamOptimized {
        return Err(Error::unsupported(
            "a streamOptimized VMDK cannot be measured: its size depends on how well the data compresses",
        ));
    }
    let size = request.virtual_size;
    let sectors = size.div_ceil(512);
    let spec = CreateSpec::new(size, request.options.clone());
    let settings = DiskSettings::from_spec(&spec, subformat)?;
    let split = matches!(
        subformat,
        Subformat::TwoGbMaxExtentSparse | Subformat::TwoGbMaxExtentFlat
    );
    let extent_sectors: Vec<u64> = if split {
        let per = SPLIT_EXTENT_BYTES / 512;
        (0..sectors.div_ceil(per).max(1))
            .map(|i| (sectors - (i * per).min(sectors)).min(per))
            .collect()
    } else {
        vec![sectors]
    };
    let (kind, suffix) = match subformat {
        Subformat::MonolithicSparse | Subformat::TwoGbMaxExtentSparse => (ExtentKind::Sparse, 's'),
        Subformat::Vmfs => (ExtentKind::Vmfs, 'f'),
        _ => (ExtentKind::Flat, 'f'),
    };
    let names: Vec<String> = match subformat {
        Subformat::MonolithicSparse => vec!["disk.vmdk".into()],
        Subformat::MonolithicFlat | Subformat::Vmfs => vec!["disk-flat.vmdk".into()],
        _ => (1..=extent_sectors.len())
            .map(|i| format!("disk-{suffix}{i:03}.vmdk"))
            .collect(),
    };
    let lines: Vec<(Option<String>, u64, ExtentKind)> = names
        .into_iter()
        .zip(&extent_sectors)
        .map(|(n, &s)| (Some(n), s, kind))
        .collect();
    let descriptor = settings.descriptor(subformat, &lines).to_text().len() as u64;
    let grain_sectors = GRAIN_BYTES / 512;
    match subformat {
        Subformat::MonolithicSparse => {
            let used = request.units_touched(GRAIN_BYTES);
            Ok(Measurement {
                required: sparse_file(sectors, used, true),
                fully_allocated: sparse_file(sectors, sectors.div_ceil(grain_sectors), true),
                bitmaps: None,
            })
        }
        Subformat::TwoGbMaxExtentSparse => {
            let mut required = descriptor;
            let mut full = descriptor;
            let mut start = 0u64;
            for &s in &extent_sectors {
                let range = start * 512..(start + s) * 512;
                let clipped: Vec<std::ops::Range<u64>> = request
                    .allocated
                    .iter()
                    .filter(|r| r.start < range.end && r.end > range.start)
                    .map(|r| {
                        r.start.max(range.start) - range.start..r.end.min(range.end) - range.start
                    })
                    .collect();
                let sub = MeasureRequest {
                    virtual_size: s * 512,
                    allocated: &clipped,
                    options: request.options,
                    source_bitmaps: None,
                };
                required += sparse_file(s, sub.units_touched(GRAIN_BYTES), false);
                full += sparse_file(s, s.div_ceil(grain_sectors), false);
                start += s;
            }
            Ok(Measurement {
                required,
                fully_allocated: full,
                bitmaps: None,
            })
        }
        _ => {
            let total = descriptor + sectors * 512;
            Ok(Measurement {
                required: total,
                fully_allocated: total,
                bitmaps: None,
            })
        }
    }
}
