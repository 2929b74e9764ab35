//! monolithicFlat, twoGbMaxExtentFlat and vmfs: a text descriptor and raw extent files. The
//! extents are sized up front and left sparse, so zeros cost nothing.

use super::descriptor_out::DiskSettings;
use super::{SPLIT_EXTENT_BYTES, Subformat, beside, stem};
use crate::error::Result;
use crate::formats::vmdk::descriptor::ExtentKind;
use crate::host_file::HostFile;
use crate::staging::Staging;
use crate::writer::{CreateSpec, ImageWriter, Piece};
use std::path::Path;

/// Writes flat VMDKs.
pub struct FlatWriter {
    descriptor: HostFile,
    text: String,
    /// The extent files and their sizes in bytes, in disk order.
    extents: Vec<(HostFile, u64)>,
}

impl FlatWriter {
    /// Creates the descriptor and every extent file through `staging`.
    pub fn create(
        staging: &mut Staging,
        path: &Path,
        _spec: &CreateSpec,
        settings: DiskSettings,
        subformat: Subformat,
    ) -> Result<FlatWriter> {
        let total = settings.sectors * 512;
        let stem = stem(path);
        let (names, sizes): (Vec<String>, Vec<u64>) = match subformat {
            Subformat::TwoGbMaxExtentFlat => {
                let count = total.div_ceil(SPLIT_EXTENT_BYTES).max(1);
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
        let descriptor = staging.create_output(path)?;
        let mut extents = Vec::new();
        for (name, &size) in names.iter().zip(&sizes) {
            let p = beside(path, name);
            let mut f = staging.create_output(&p)?;
            f.set_len(size)?;
            extents.push((f, size));
        }
        Ok(FlatWriter {
            descriptor,
            text,
            extents,
        })
    }
}

impl ImageWriter for FlatWriter {
    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        let Piece::Data { bytes, .. } = piece else {
            // The extents were sized up front: what is not written is a hole of zeros.
            return Ok(());
        };
        let mut pos = offset;
        let mut rest = bytes;
        let mut start = 0u64;
        for (file, size) in &mut self.extents {
            let end = start + *size;
            if pos < end && !rest.is_empty() {
                let n = ((end - pos) as usize).min(rest.len());
                file.write_all_at(&rest[..n], pos - start)?;
                pos += n as u64;
                rest = &rest[n..];
            }
            start = end;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.descriptor.write_all_at(self.text.as_bytes(), 0)?;
        self.descriptor.sync()?;
        for (f, _) in &mut self.extents {
            f.sync()?;
        }
        Ok(())
    }
}
