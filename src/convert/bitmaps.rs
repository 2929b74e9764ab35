//! `--bitmaps`: the source's persistent dirty bitmaps go with the conversion (qcow2 to qcow2,
//! as qemu-img allows it), with qemu-img's refusals for the other formats.

use crate::error::{Error, Result};
use crate::format::Format;
use crate::image::Image;
use crate::options::FormatOptions;

/// Whether the source's persistent dirty bitmaps are copied (`--bitmaps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bitmaps {
    /// Left behind, as by default.
    #[default]
    Leave,
    /// `--bitmaps`: copied into the output.
    Copy,
}

/// The source's bitmaps, as its `info` lists them (qcow2 only; none for other formats).
fn listed(image: &Image) -> usize {
    image
        .top()
        .details()
        .format_specific
        .get("bitmaps")
        .and_then(|b| b.as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Refuses `--bitmaps` where qemu-img does, in its order: a source that cannot hold bitmaps,
/// then a target that cannot. A qcow2 source holding bitmaps is refused too, until they can
/// be written: leaving them behind silently would lose what the user asked to keep.
pub fn check(image: &Image, target: Format, options: &FormatOptions) -> Result<()> {
    let source = image.top().format();
    if source.name() != "qcow2" {
        return Err(Error::unsupported("Source lacks bitmap support"));
    }
    if target.name() != "qcow2"
        || options
            .text("compat")
            .is_some_and(|c| c == "0.10" || c == "v2")
    {
        // qemu names formats by block driver; VHD's is the only one spelled differently.
        let driver = match target.name() {
            "vhd" => "vpc",
            other => other,
        };
        return Err(Error::unsupported(format!(
            "Format driver '{driver}' does not support bitmaps"
        )));
    }
    match listed(image) {
        0 => Ok(()),
        n => Err(Error::unsupported(format!(
            "--bitmaps: copying the source's {n} persistent bitmap(s) is not supported yet; nothing was written (convert without --bitmaps and re-create them with qemu-img bitmap --add)"
        ))),
    }
}
