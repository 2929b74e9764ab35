//! `convert -n --bitmaps`: the source's persistent dirty bitmaps added to an existing image
//! once its data is written, as qemu-img adds them when it closes the target.
//!
//! Each bitmap's data clusters (none for a cluster of clear bits), then its table, then the
//! directory are written to newly counted clusters; the header cluster, with the bitmaps
//! extension and its autoclear bit, is written last, once all of that is durable. A crash
//! before that write leaves the image as it was plus leaked clusters.
//!
//! The image must be version 3 and hold no bitmap yet: the editor does not keep existing
//! bitmaps up to date as it writes (see [`super::Editor::open`]), so `convert` refuses such a
//! target before it writes anything (see [`check`]). As in qemu-img, a bitmap is only copied
//! into an image of the source's size.

use super::Editor;
use super::amend::HeaderImage;
use crate::dirty_bitmap::DirtyBitmap;
use crate::edit::EditContext;
use crate::error::{Error, Result};
use crate::formats::qcow2::bitmaps::{MAX_DIRECTORY_BYTES, store};
use crate::formats::qcow2::header::{AUTOCLEAR_BITMAPS, BitmapsExtension, EXT_BITMAPS, Header};
use std::path::Path;
use std::sync::Arc;

/// qemu-img's refusal for an image that cannot hold bitmaps.
fn unsupported() -> Error {
    Error::unsupported("Format driver 'qcow2' does not support bitmaps")
}

/// Whether bitmaps of a `size`-byte source can be added to the image whose header is `h`.
pub(crate) fn check(h: &Header, size: u64) -> Result<()> {
    if h.version < 3 {
        return Err(unsupported());
    }
    if h.bitmaps.is_some() {
        return Err(Error::unsupported(
            "-n --bitmaps: the existing image already has persistent dirty bitmaps, which diskferry does not keep up to date as it writes; remove them first ('qemu-img bitmap --remove') or convert to a new file; nothing was written",
        ));
    }
    if h.size != size {
        return Err(Error::invalid(format!(
            "Bitmaps are of different sizes (destination size is {}, source size is {size}) and can't be merged; nothing was written",
            h.size
        )));
    }
    Ok(())
}

/// Adds `bitmaps` to the image at `path`.
pub(crate) fn add(
    path: &Path,
    bitmaps: &[Arc<dyn DirtyBitmap>],
    ctx: &EditContext<'_>,
) -> Result<()> {
    let _ = ctx;
    if bitmaps.is_empty() {
        return Ok(());
    }
    let mut ed = Editor::open(path, "add persistent dirty bitmaps")?;
    add_inner(&mut ed, bitmaps).map_err(|e| e.with_path(path))
}

fn add_inner(ed: &mut Editor, bitmaps: &[Arc<dyn DirtyBitmap>]) -> Result<()> {
    let cs = ed.cs;
    let size = ed.h.size;
    if ed.h.version < 3 {
        return Err(unsupported());
    }
    let mut directory = Vec::new();
    for b in bitmaps {
        let bits = size.div_ceil(1 << b.granularity_bits());
        if b.bits() != bits {
            return Err(Error::invalid(format!(
                "bitmap '{}' holds {} bits where the image's size needs {bits}",
                b.name(),
                b.bits()
            )));
        }
        store(b.as_ref(), cs, &mut directory, &mut |bytes| {
            ed.write_new(bytes)
        })?;
    }
    if directory.len() as u64 > MAX_DIRECTORY_BYTES {
        return Err(Error::invalid(format!(
            "the bitmap directory would take {} bytes, more than qemu's limit of 64 MiB",
            directory.len()
        )));
    }
    let directory_offset = ed.write_new(&directory)?;
    let extension = BitmapsExtension {
        count: bitmaps.len() as u32,
        directory_size: directory.len() as u64,
        directory_offset,
    };
    let mut header = HeaderImage::read(ed)?;
    header.extensions.retain(|(kind, _)| *kind != EXT_BITMAPS);
    header
        .extensions
        .push((EXT_BITMAPS, extension.encode().to_vec()));
    // Without the autoclear bit a reader takes the extension for one left stale by a
    // program that does not know bitmaps, and drops them.
    header.autoclear |= AUTOCLEAR_BITMAPS;
    header.write(ed)
}
