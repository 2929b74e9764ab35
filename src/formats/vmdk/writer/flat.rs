//! monolithicFlat, twoGbMaxExtentFlat and vmfs: a text descriptor and raw extent files. The
//! extents are sized up front and left sparse, so zeros cost nothing, and the engine's workers
//! write data into them at its place.

use super::descriptor_out::DiskSettings;
use super::{SPLIT_EXTENT_BYTES, Subformat, split_extents, stem};
use crate::error::{Error, Result};
use crate::formats::vmdk::descriptor::ExtentKind;
use crate::sink::{Output, SharedSink, Sink};
use crate::writer::{CreateSpec, DirectWrite, HostTarget, ImageWriter, Piece};
use std::sync::Arc;

/// Writes flat VMDKs.
pub struct FlatWriter<'a> {
    descriptor: Box<dyn Sink + 'a>,
    text: String,
    /// The extent files and their sizes in bytes, in disk order.
    extents: Vec<(Box<dyn Sink + 'a>, u64)>,
    direct: Option<Arc<dyn DirectWrite>>,
}

/// The extents' shared handles, for the workers.
struct Extents(Vec<(Arc<dyn SharedSink>, u64)>);

impl DirectWrite for Extents {
    fn write_data(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        for_each_extent(
            self.0.iter().map(|(s, size)| (s, *size)),
            offset,
            bytes,
            |s, b, at| s.write_at(b, at),
        )
    }

    fn host_target(&self, offset: u64, len: u64) -> Option<HostTarget<'_>> {
        let mut start = 0u64;
        for (sink, size) in &self.0 {
            let end = start + size;
            if offset < end {
                let len = len.min(end - offset);
                let file = sink.regular_file()?;
                return (len > 0).then_some(HostTarget {
                    file,
                    offset: offset - start,
                    len,
                });
            }
            start = end;
        }
        None
    }
}

/// Cuts `bytes` at virtual `offset` by extent, calling `write` with each extent's part and its
/// offset inside the extent.
fn for_each_extent<T>(
    extents: impl Iterator<Item = (T, u64)>,
    offset: u64,
    bytes: &[u8],
    mut write: impl FnMut(T, &[u8], u64) -> Result<()>,
) -> Result<()> {
    let mut pos = offset;
    let mut rest = bytes;
    let mut start = 0u64;
    for (target, size) in extents {
        let end = start + size;
        if pos < end && !rest.is_empty() {
            let n = ((end - pos) as usize).min(rest.len());
            write(target, &rest[..n], pos - start)?;
            pos += n as u64;
            rest = &rest[n..];
        }
        start = end;
    }
    if !rest.is_empty() {
        return Err(Error::invalid(format!(
            "internal error: data at {pos} lies past the last extent"
        )));
    }
    Ok(())
}

impl<'a> FlatWriter<'a> {
    /// Creates the descriptor and every extent file in `output`.
    pub fn create(
        mut output: Output<'a>,
        _spec: &CreateSpec,
        settings: DiskSettings,
        subformat: Subformat,
    ) -> Result<FlatWriter<'a>> {
        if !output.can_add_files() {
            return Err(Error::invalid(format!(
                "a {} VMDK is a descriptor and extent files, and cannot be written to {}",
                subformat.create_type(),
                output.describe()
            )));
        }
        let path = output.path().to_path_buf();
        let total = settings.sectors * 512;
        let stem = stem(&path);
        let (names, sizes): (Vec<String>, Vec<u64>) = match subformat {
            Subformat::TwoGbMaxExtentFlat => {
                let count = split_extents(subformat, total)?;
                (1..=count)
                    .map(|i| {
                        let start = (i - 1) * SPLIT_EXTENT_BYTES;
                        (
                            format!("{stem}-f{i:03}.vmdk"),
                            (total - start.min(total)).min(SPLIT_EXTENT_BYTES),
                        )
                    })
                    .unzip()
            }
            _ => (vec![format!("{stem}-flat.vmdk")], vec![total]),
        };
        let kind = if subformat == Subformat::Vmfs {
            ExtentKind::Vmfs
        } else {
            ExtentKind::Flat
        };
        let lines: Vec<(Option<String>, u64, ExtentKind)> = names
            .iter()
            .zip(&sizes)
            .map(|(n, s)| (Some(n.clone()), s / 512, kind))
            .collect();
        let text = settings.descriptor(subformat, &lines).to_text();
        // The descriptor first: staging renames it into place last.
        let descriptor = output.main()?;
        let mut extents = Vec::new();
        let mut shared = Vec::new();
        for (name, &size) in names.iter().zip(&sizes) {
            let mut f = output.beside(name)?;
            f.set_len(size)?;
            if let Some(s) = f.shared() {
                shared.push((s, size));
            }
            extents.push((f, size));
        }
        let direct = (shared.len() == extents.len())
            .then(|| Arc::new(Extents(shared)) as Arc<dyn DirectWrite>);
        Ok(FlatWriter {
            descriptor,
            text,
            extents,
            direct,
        })
    }
}

impl ImageWriter for FlatWriter<'_> {
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.direct.clone()
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        match piece {
            Piece::Data { bytes, .. } => for_each_extent(
                self.extents.iter_mut().map(|(f, size)| (f, *size)),
                offset,
                bytes,
                |f, b, at| f.write_at(b, at),
            ),
            Piece::Placed(_) => Ok(()),
            // The extents were sized up front: what is not written is a hole of zeros.
            Piece::Zero(len) | Piece::Unallocated(len) => {
                let mut pos = offset;
                let end = offset + len;
                let mut start = 0u64;
                for (f, size) in &mut self.extents {
                    let e_end = start + *size;
                    if pos < e_end && pos < end {
                        let n = (e_end - pos).min(end - pos);
                        f.write_zeros(pos - start, n)?;
                        pos += n;
                    }
                    start = e_end;
                }
                Ok(())
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let this = *self;
        let mut descriptor = this.descriptor;
        descriptor.set_len(this.text.len() as u64)?;
        descriptor.write_at(this.text.as_bytes(), 0)?;
        descriptor.finish()?;
        for (f, _) in this.extents {
            f.finish()?;
        }
        Ok(())
    }
}
