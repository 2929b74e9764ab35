//! The format drivers and the one place that dispatches to them: opening a layer, making a
//! writer, checking, and each format's `-o` options. Each format lives in its own folder.

pub mod raw;
pub mod vhd;
pub mod vmdk;

use crate::check::{CheckReport, RepairMode};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::host_file::HostFile;
use crate::image::Layer;
use crate::options::OptionSpec;
use crate::stream::StreamSource;
use crate::writer::{CreateSpec, Destination, ImageWriter};
use std::io::Read;
use std::path::Path;

fn not_supported(format: Format, what: &str) -> Error {
    Error::unsupported(format!(
        "{what} {format} images is not supported by diskferry yet"
    ))
}

/// Opens one layer of `format` on an open file.
pub fn open(format: Format, file: HostFile) -> Result<Box<dyn Layer>> {
    Ok(match format {
        Format::Raw => Box::new(raw::RawLayer::open(file)?),
        Format::Vhd => Box::new(vhd::VhdLayer::open(file)?),
        Format::Vmdk => Box::new(vmdk::VmdkLayer::open(file)?),
        Format::Vhdx | Format::Qcow2 | Format::Qcow | Format::Vdi => {
            return Err(not_supported(format, "reading"));
        }
    })
}

/// Opens an image that can only be read front to back (standard input).
pub fn open_stream(format: Format, reader: Box<dyn Read + Send>) -> Result<Box<dyn StreamSource>> {
    match format {
        Format::Vmdk => vmdk::open_stream(reader),
        _ => Err(Error::unsupported(format!(
            "{format} images cannot be read from a pipe; only stream-optimized VMDK can"
        ))),
    }
}

/// The `-o` options `format` accepts when written.
pub fn create_options(format: Format) -> &'static [OptionSpec] {
    match format {
        Format::Raw => raw::CREATE_OPTIONS,
        Format::Vhd => vhd::CREATE_OPTIONS,
        Format::Vmdk => vmdk::CREATE_OPTIONS,
        Format::Vhdx | Format::Qcow2 | Format::Qcow | Format::Vdi => &[],
    }
}

/// True when diskferry can write `format`.
pub fn can_write(format: Format) -> bool {
    matches!(format, Format::Raw | Format::Vhd | Format::Vmdk)
}

/// Makes a writer for a new image of `format` at `dest`.
pub fn create_writer(
    format: Format,
    dest: Destination<'_>,
    spec: &CreateSpec,
) -> Result<Box<dyn ImageWriter>> {
    if spec.compress && format != Format::Vmdk {
        return Err(Error::invalid(format!(
            "-c: {format} images cannot be compressed (VMDK can, as streamOptimized)"
        )));
    }
    if spec.backing.is_some() && format == Format::Raw {
        return Err(Error::invalid(
            "raw images cannot have a backing file; choose a format that can (vhd, vmdk)",
        ));
    }
    Ok(match format {
        Format::Raw => Box::new(raw::RawWriter::create(dest, spec)?),
        Format::Vhd => vhd::create_writer(dest, spec)?,
        Format::Vmdk => vmdk::create_writer(dest, spec)?,
        Format::Vhdx | Format::Qcow2 | Format::Qcow | Format::Vdi => {
            return Err(not_supported(format, "writing"));
        }
    })
}

/// Checks the metadata of the image at `path` and, with `repair`, fixes what can be fixed safely.
pub fn check(format: Format, path: &Path, repair: Option<RepairMode>) -> Result<CheckReport> {
    match format {
        Format::Raw => Ok(CheckReport::nothing_to_check(path, format)),
        Format::Vhd => vhd::check(path, repair),
        Format::Vmdk => vmdk::check(path, repair),
        Format::Vhdx | Format::Qcow2 | Format::Qcow | Format::Vdi => {
            Err(not_supported(format, "checking"))
        }
    }
}
