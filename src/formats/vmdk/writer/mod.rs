//! Writing VMDK: every subformat VMware's tools make.
//!
//! - `sparse.rs`: monolithicSparse and twoGbMaxExtentSparse (hosted sparse extents, grain
//!   tables preallocated in front of the grains, redundant copies, delta disks).
//! - `flat.rs`: monolithicFlat, twoGbMaxExtentFlat and vmfs (a descriptor and raw extents).
//! - `stream.rs`: streamOptimized (compressed grains with markers, tables after their grains,
//!   footer, end-of-stream marker), front to back, to a file or a pipe.
//! - `descriptor_out.rs`: the descriptor and disk database every subformat writes.
//! - `grains.rs`: cutting the ordered pieces into grains for the sparse writers.

mod descriptor_out;
mod flat;
mod grains;
mod sparse;
mod stream;

use crate::error::{Error, Result};
use crate::formats::vmdk::descriptor::MAX_EXTENTS;
use crate::formats::vmdk::sparse_header::MAX_CAPACITY_SECTORS;
use crate::sink::Output;
use crate::writer::{CreateSpec, ImageWriter};
use std::path::Path;

pub use descriptor_out::DiskSettings;

/// Bytes per grain in everything we write (VMware's and qemu's choice).
pub const GRAIN_BYTES: u64 = 64 * 1024;
/// Entries per grain table (fixed by the specification).
pub const GTES_PER_GT: u32 = 512;
/// The size of each extent of a twoGbMaxExtent disk, as VMware splits them (2047 MiB, a
/// whole number of grains and of grain tables' coverage).
pub const SPLIT_EXTENT_BYTES: u64 = 2047 << 20;
/// Sectors reserved for an embedded descriptor: VMware's 20, which leaves room for tools
/// (VirtualBox among them) that rewrite the descriptor in place.
pub const EMBEDDED_DESCRIPTOR_SECTORS: u64 = 20;

/// The layout of a VMDK to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subformat {
    /// One sparse file with an embedded descriptor.
    MonolithicSparse,
    /// A descriptor and one flat extent.
    MonolithicFlat,
    /// A descriptor and sparse extents of at most 2 GiB.
    TwoGbMaxExtentSparse,
    /// A descriptor and flat extents of at most 2 GiB.
    TwoGbMaxExtentFlat,
    /// One compressed sparse file written front to back.
    StreamOptimized,
    /// A descriptor and one VMFS (flat) extent, as ESXi keeps disks.
    Vmfs,
}

impl Subformat {
    /// Parses the `subformat` option (default monolithicSparse, as qemu-img).
    pub fn from_option(value: Option<&str>) -> Subformat {
        match value {
            Some("monolithicFlat") => Subformat::MonolithicFlat,
            Some("twoGbMaxExtentSparse") => Subformat::TwoGbMaxExtentSparse,
            Some("twoGbMaxExtentFlat") => Subformat::TwoGbMaxExtentFlat,
            Some("streamOptimized") => Subformat::StreamOptimized,
            Some("vmfs") => Subformat::Vmfs,
            _ => Subformat::MonolithicSparse,
        }
    }

    /// The descriptor's createType.
    pub fn create_type(self) -> &'static str {
        match self {
            Subformat::MonolithicSparse => "monolithicSparse",
            Subformat::MonolithicFlat => "monolithicFlat",
            Subformat::TwoGbMaxExtentSparse => "twoGbMaxExtentSparse",
            Subformat::TwoGbMaxExtentFlat => "twoGbMaxExtentFlat",
            Subformat::StreamOptimized => "streamOptimized",
            Subformat::Vmfs => "vmfs",
        }
    }

    fn is_sparse(self) -> bool {
        matches!(
            self,
            Subformat::MonolithicSparse | Subformat::TwoGbMaxExtentSparse
        )
    }
}

/// Refuses a disk of `bytes` that no VMDK we write can hold, before anything is sized by
/// it: a capacity above what a sparse extent header may hold (and what readers accept), or
/// a split disk needing more extent files than a descriptor may list.
fn check_size(subformat: Subformat, bytes: u64) -> Result<()> {
    let max = MAX_CAPACITY_SECTORS * 512;
    if bytes > max {
        return Err(Error::invalid(format!(
            "a VMDK of {bytes} bytes is larger than the maximum of {max} bytes (8 PiB, 2^44 sectors: the largest capacity a VMDK extent header holds)"
        )));
    }
    split_extents(subformat, bytes).map(|_| ())
}

/// The number of extent files of a disk of `bytes`: one per [`SPLIT_EXTENT_BYTES`] for the
/// twoGbMaxExtent subformats (at least one), at most [`MAX_EXTENTS`], which is all a
/// descriptor may list.
fn split_extents(subformat: Subformat, bytes: u64) -> Result<u64> {
    if !matches!(
        subformat,
        Subformat::TwoGbMaxExtentSparse | Subformat::TwoGbMaxExtentFlat
    ) {
        return Ok(1);
    }
    let count = bytes.div_ceil(SPLIT_EXTENT_BYTES).max(1);
    let limit = MAX_EXTENTS as u64;
    if count > limit {
        return Err(Error::invalid(format!(
            "a {} VMDK of {bytes} bytes would need {count} extent files of {SPLIT_EXTENT_BYTES} bytes, more than the limit of {limit} a descriptor may list (at most {} bytes)",
            subformat.create_type(),
            limit * SPLIT_EXTENT_BYTES
        )));
    }
    Ok(count)
}

/// The main file's name without its `.vmdk` suffix, for naming extents beside it.
pub(crate) fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".to_string());
    match name.len().checked_sub(5) {
        Some(i) if name.is_char_boundary(i) && name[i..].eq_ignore_ascii_case(".vmdk") => {
            name[..i].to_string()
        }
        _ => name,
    }
}

/// Makes a writer for `spec` into `output`.
pub fn create_writer<'a>(
    output: Output<'a>,
    spec: &CreateSpec,
) -> Result<Box<dyn ImageWriter + 'a>> {
    // -c asks for compression, which in VMDK only streamOptimized has: it is the subformat
    // when none is named, and naming another one with -c is a contradiction.
    let subformat = match spec.options.text("subformat") {
        None if spec.compress => Subformat::StreamOptimized,
        named => Subformat::from_option(named),
    };
    if spec.compress && subformat != Subformat::StreamOptimized {
        return Err(Error::invalid(format!(
            "-c: only streamOptimized VMDKs are compressed, not {}; drop -c or use -o subformat=streamOptimized",
            subformat.create_type()
        )));
    }
    if spec.backing.is_some() && !subformat.is_sparse() {
        return Err(Error::invalid(format!(
            "a VMDK with a backing file (a delta disk) must be monolithicSparse or twoGbMaxExtentSparse, not {}",
            subformat.create_type()
        )));
    }
    check_size(subformat, spec.size)?;
    let settings = DiskSettings::from_spec(spec, subformat)?;
    match subformat {
        Subformat::StreamOptimized => Ok(Box::new(stream::StreamWriter::create(
            output, spec, settings,
        )?)),
        _ if output.access() == crate::sink::Access::Sequential => Err(Error::invalid(format!(
            "a {} VMDK is several files or is written out of order and cannot go to a pipe; use -o subformat=streamOptimized",
            subformat.create_type()
        ))),
        Subformat::MonolithicSparse | Subformat::TwoGbMaxExtentSparse => Ok(Box::new(
            sparse::SparseWriter::create(output, spec, settings, subformat)?,
        )),
        _ => Ok(Box::new(flat::FlatWriter::create(
            output, spec, settings, subformat,
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_refused_naming_the_limit() {
        let huge = 8_000_000u64 << 40;
        for sub in [
            Subformat::MonolithicSparse,
            Subformat::MonolithicFlat,
            Subformat::StreamOptimized,
            Subformat::Vmfs,
        ] {
            let err = check_size(sub, huge).unwrap_err().to_string();
            assert!(err.contains("maximum"), "{err}");
        }
        for sub in [
            Subformat::TwoGbMaxExtentSparse,
            Subformat::TwoGbMaxExtentFlat,
        ] {
            let err = check_size(sub, 200 << 40).unwrap_err().to_string();
            assert!(err.contains("limit of 65536"), "{err}");
            assert_eq!(split_extents(sub, 1 << 40).unwrap(), 513);
            assert_eq!(split_extents(sub, 0).unwrap(), 1);
        }
        assert!(check_size(Subformat::MonolithicSparse, MAX_CAPACITY_SECTORS * 512).is_ok());
    }
}
