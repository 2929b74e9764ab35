//! `-n`: writing into an existing image without creating it.
//!
//! A raw destination (a file or a device) is written by the raw writer through an in-place
//! sink. Any other format is opened with its own reader, and its map says where each byte of
//! the virtual disk lives in its files: an image whose every byte has a fixed place (a fixed
//! VHD, a flat or vmfs VMDK) is written there, metadata untouched. An image that allocates as
//! it goes (a dynamic VHD, a sparse VMDK, qcow2) is written through its format's in-place
//! editor (see `in_place_edit`), as qemu-img writes it through its block layer.

use super::in_place_edit::{EditWriter, Unallocated};
use crate::edit::{EditContext, Force};
use crate::error::{Error, Result};
use crate::format::{Capability, Format};
use crate::host_file::Durability;
use crate::image::{Allocation, BackingPolicy, Image, Layer, OpenOptions};
use crate::sink::{FileSink, Output, SharedSink, Sink};
use crate::writer::{CreateSpec, DirectWrite, HostTarget, ImageWriter, Piece};
use std::path::Path;
use std::sync::Arc;

/// The writer for `-n` into the existing image at `path`.
pub fn writer<'a>(
    path: &Path,
    format: Format,
    spec: &CreateSpec,
    open: &OpenOptions,
    durability: Durability,
) -> Result<Box<dyn ImageWriter + 'a>> {
    if format == crate::formats::raw::FORMAT {
        let sink = FileSink::existing(path, durability)?;
        return format
            .driver()
            .create_writer(Output::single(Box::new(sink)), spec);
    }
    let image = Image::open(
        path,
        &OpenOptions {
            format: Some(format),
            backing: BackingPolicy::Ignore,
            ..open.clone()
        },
    )?;
    let layer = image.into_top();
    let writer = placed_or_edited(path, format, spec, open, layer, durability)?;
    if spec.bitmaps.is_empty() {
        return Ok(writer);
    }
    Ok(Box::new(AddBitmaps {
        inner: writer,
        path: path.to_path_buf(),
        format,
        bitmaps: spec.bitmaps.clone(),
        gate: open.gate,
    }))
}

/// The writer into the existing image `layer` (at `path`): in place where every byte has its
/// place, else through the format's editor. Bitmaps to add are refused here, before any data
/// is written, when the image cannot take them.
fn placed_or_edited<'a>(
    path: &Path,
    format: Format,
    spec: &CreateSpec,
    open: &OpenOptions,
    layer: Box<dyn Layer>,
    durability: Durability,
) -> Result<Box<dyn ImageWriter + 'a>> {
    if !spec.bitmaps.is_empty() {
        format
            .driver()
            .can_add_dirty_bitmaps(layer.as_ref(), spec.size)
            .map_err(|e| e.with_path(path))?;
    }
    if layer.virtual_size() < spec.size {
        return Err(Error::invalid(format!(
            "-n: the existing {format} image holds {} bytes, too few for the source's {}; nothing was written",
            layer.virtual_size(),
            spec.size
        ))
        .with_path(path));
    }
    // An image whose every byte has its place is written there, metadata untouched; one that
    // allocates as it goes is written through its editor.
    let mut pos = 0;
    while pos < spec.size {
        let m = layer.map(pos, spec.size - pos)?;
        if m.host.is_none() || m.compressed || m.allocation == Allocation::Unallocated {
            return through_editor(path, format, spec, open, layer, pos);
        }
        pos = m.end();
    }
    let files = layer.files();
    let mut sinks: Vec<Option<Box<dyn Sink>>> = Vec::new();
    let mut shared: Vec<Option<Arc<dyn SharedSink>>> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        // Only the files that hold data are opened for writing (a descriptor is not).
        let holds_data = layer.storage(i).is_some() && !(i == 0 && files.len() > 1);
        if holds_data {
            let sink = FileSink::existing(f, durability)?;
            shared.push(sink.shared());
            sinks.push(Some(Box::new(sink)));
        } else {
            shared.push(None);
            sinks.push(None);
        }
    }
    let direct = Arc::new(Placed {
        layer: Arc::from(layer),
        shared,
    });
    Ok(Box::new(InPlaceWriter { direct, sinks }))
}

/// The writer for `-n` into an image that allocates as it is written (byte `unplaced` has no
/// place yet), through the format's editor.
fn through_editor<'a>(
    path: &Path,
    format: Format,
    spec: &CreateSpec,
    open: &OpenOptions,
    before: Box<dyn Layer>,
    unplaced: u64,
) -> Result<Box<dyn ImageWriter + 'a>> {
    if !format.can(Capability::WriteInPlace) {
        return Err(Error::unsupported(format!(
            "-n: this {format} image allocates its data as it is written (byte {unplaced} has no place yet), and diskferry cannot write a {format} image in place; convert to a new file instead"
        ))
        .with_path(path));
    }
    if spec.compress {
        return Err(Error::unsupported(
            "-n with -c: compressed writes into an existing image are not supported; convert to a new file instead",
        )
        .with_path(path));
    }
    let ctx = EditContext {
        gate: &open.gate,
        force: Force::No,
    };
    let image = format.driver().open_mut(path, &ctx)?;
    let unallocated = match spec.backing {
        Some(_) => Unallocated::Backing,
        None => Unallocated::Zeros,
    };
    Ok(Box::new(EditWriter::new(image, before, unallocated)))
}

/// Data goes where the existing image's map says.
struct Placed {
    layer: Arc<dyn Layer>,
    shared: Vec<Option<Arc<dyn SharedSink>>>,
}

impl Placed {
    /// Calls `f(file, host offset, virtual offset, length)` for each piece of the range.
    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(usize, u64, u64, u64) -> Result<()>,
    ) -> Result<()> {
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let m = self.layer.map(pos, end - pos)?;
            let host = m.host.ok_or_else(|| {
                Error::invalid(format!(
                    "internal error: byte {pos} of the existing image has no place"
                ))
            })?;
            f(host.file, host.offset, pos, m.length)?;
            pos = m.end();
        }
        Ok(())
    }
}

impl DirectWrite for Placed {
    fn write_data(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.walk(offset, bytes.len() as u64, |file, host, pos, n| {
            let sink = self
                .shared
                .get(file)
                .and_then(|s| s.as_ref())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "internal error: file {file} of the image is not open"
                    ))
                })?;
            let at = (pos - offset) as usize;
            sink.write_at(&bytes[at..at + n as usize], host)
        })
    }

    fn host_target(&self, offset: u64, len: u64) -> Option<HostTarget<'_>> {
        // An error here is found again, and reported, by the write that replaces the copy.
        let m = self.layer.map(offset, len).ok()?;
        let host = m.host?;
        let file = self.shared.get(host.file)?.as_ref()?.regular_file()?;
        Some(HostTarget {
            file,
            offset: host.offset,
            len: m.length,
        })
    }
}

/// `-n --bitmaps`: once the data is in, the source's bitmaps are added by the format's editor.
struct AddBitmaps<'a> {
    inner: Box<dyn ImageWriter + 'a>,
    path: std::path::PathBuf,
    format: Format,
    bitmaps: Vec<Arc<dyn crate::dirty_bitmap::DirtyBitmap>>,
    gate: crate::gate::Gate,
}

impl ImageWriter for AddBitmaps<'_> {
    fn granularity(&self) -> u64 {
        self.inner.granularity()
    }

    fn encoder(&self) -> Option<Arc<dyn crate::writer::ChunkEncoder>> {
        self.inner.encoder()
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.inner.direct()
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        self.inner.write(offset, piece)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let AddBitmaps {
            inner,
            path,
            format,
            bitmaps,
            gate,
        } = *self;
        inner.finish()?;
        let ctx = EditContext {
            gate: &gate,
            force: Force::No,
        };
        format.driver().add_dirty_bitmaps(&path, &bitmaps, &ctx)
    }
}

struct InPlaceWriter {
    direct: Arc<Placed>,
    sinks: Vec<Option<Box<dyn Sink>>>,
}

impl InPlaceWriter {
    fn sink(&mut self, file: usize) -> Result<&mut Box<dyn Sink>> {
        self.sinks
            .get_mut(file)
            .and_then(|s| s.as_mut())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "internal error: file {file} of the image is not open"
                ))
            })
    }
}

impl ImageWriter for InPlaceWriter {
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        Some(self.direct.clone())
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        let direct = Arc::clone(&self.direct);
        match piece {
            Piece::Data { bytes, .. } => direct.write_data(offset, bytes),
            Piece::Placed(_) => Ok(()),
            Piece::Zero(len) | Piece::Unallocated(len) => {
                direct.walk(offset, len, |file, host, _, n| {
                    self.sink(file)?.write_zeros(host, n)
                })
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        for sink in self.sinks.into_iter().flatten() {
            sink.finish()?;
        }
        Ok(())
    }
}
