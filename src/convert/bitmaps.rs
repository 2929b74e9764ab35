//! `--bitmaps`: the source's persistent dirty bitmaps go with the conversion (qcow2 to qcow2,
//! as qemu-img allows it), with qemu-img's refusals for the other formats.

use crate::dirty_bitmap::DirtyBitmap;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::image::Image;
use crate::options::FormatOptions;
use std::sync::Arc;

/// Whether the source's persistent dirty bitmaps are copied (`--bitmaps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bitmaps {
    /// Left behind, as by default.
    #[default]
    Leave,
    /// `--bitmaps`: copied into the output; an inconsistent one (saved uncleanly, flagged in
    /// use) refuses the conversion, as qemu-img refuses it.
    Copy,
    /// `--bitmaps --skip-broken-bitmaps`: the consistent ones copied, the others left behind
    /// with a warning.
    CopySkippingBroken,
}

/// Checks `--bitmaps` where qemu-img does, in its order (a source that cannot hold bitmaps,
/// an inconsistent bitmap, a target that cannot hold them), and reads the tables of the
/// bitmaps to copy. `warn` hears of the inconsistent bitmaps skipped.
pub fn check(
    image: &Image,
    policy: Bitmaps,
    target: Format,
    options: &FormatOptions,
    warn: &mut dyn FnMut(&str),
) -> Result<Vec<Arc<dyn DirtyBitmap>>> {
    let top = image.top();
    let Some(listed) = top.dirty_bitmaps() else {
        return Err(Error::unsupported("Source lacks bitmap support"));
    };
    let mut copied = Vec::new();
    for b in listed {
        if !b.in_use {
            copied.push(b);
            continue;
        }
        match policy {
            Bitmaps::CopySkippingBroken => {
                warn(&format!("Skipping inconsistent bitmap '{}'", b.name));
            }
            _ => {
                return Err(Error::invalid(format!(
                    "Cannot copy inconsistent bitmap '{}': try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it",
                    b.name
                ))
                .with_path(top.path()));
            }
        }
    }
    if !target.driver().holds_dirty_bitmaps(options) {
        // qemu names formats by block driver; VHD's is the only one spelled differently.
        let driver = match target.name() {
            "vhd" => "vpc",
            other => other,
        };
        return Err(Error::unsupported(format!(
            "Format driver '{driver}' does not support bitmaps"
        )));
    }
    copied
        .into_iter()
        .map(|b| {
            top.load_dirty_bitmap(&b.name)
                .map_err(|e| e.with_path(top.path()))
        })
        .collect()
}
