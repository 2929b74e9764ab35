//! VMDK (VMware virtual disk).

use crate::check::{CheckReport, RepairMode};
use crate::detect::ProbeData;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::host_file::HostFile;
use crate::image::{Layer, Mapping};
use crate::options::OptionSpec;
use crate::writer::{CreateSpec, Destination, ImageWriter};
use std::any::Any;
use std::path::Path;

/// `-o` options for VMDK outputs.
pub const CREATE_OPTIONS: &[OptionSpec] = &[];

/// True for a VMDK sparse extent ("KDMV"), a VMFS sparse extent ("COWD") or a text
/// descriptor: comment and blank lines, then `version=N` as the first setting.
pub fn probe(probe: &ProbeData) -> bool {
    let head = &probe.head;
    if head.starts_with(b"KDMV") || head.starts_with(b"COWD") {
        return true;
    }
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let Some(rest) = trimmed.strip_prefix(b"version") else {
            return false;
        };
        let rest = rest.trim_ascii_start();
        return rest.first() == Some(&b'=')
            && rest[1..].trim_ascii().iter().all(u8::is_ascii_digit)
            && !rest[1..].trim_ascii().is_empty();
    }
    false
}

/// A VMDK layer.
pub struct VmdkLayer {
    file: HostFile,
}

impl VmdkLayer {
    /// Opens a VMDK.
    pub fn open(file: HostFile) -> Result<VmdkLayer> {
        Err(Error::unsupported("reading VMDK images is not implemented yet").with_path(file.path()))
    }
}

impl Layer for VmdkLayer {
    fn format(&self) -> Format {
        Format::Vmdk
    }
    fn path(&self) -> &Path {
        self.file.path()
    }
    fn virtual_size(&self) -> u64 {
        0
    }
    fn map(&self, _offset: u64, _max_len: u64) -> Result<Mapping> {
        Err(Error::unsupported("not implemented"))
    }
    fn read_data(&self, _offset: u64, _buf: &mut [u8]) -> Result<()> {
        Err(Error::unsupported("not implemented"))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Makes a VMDK writer.
pub fn create_writer(_dest: Destination<'_>, _spec: &CreateSpec) -> Result<Box<dyn ImageWriter>> {
    Err(Error::unsupported(
        "writing VMDK images is not implemented yet",
    ))
}

/// Opens a stream-optimized VMDK arriving on a pipe.
pub fn open_stream(
    _reader: Box<dyn std::io::Read + Send>,
) -> Result<Box<dyn crate::stream::StreamSource>> {
    Err(Error::unsupported(
        "reading VMDK images from a pipe is not implemented yet",
    ))
}

/// Checks a VMDK.
pub fn check(_path: &Path, _repair: Option<RepairMode>) -> Result<CheckReport> {
    Err(Error::unsupported(
        "checking VMDK images is not implemented yet",
    ))
}
