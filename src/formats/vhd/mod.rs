//! VHD (Microsoft Virtual Hard Disk): fixed, dynamic and differencing.

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

/// `-o` options for VHD outputs.
pub const CREATE_OPTIONS: &[OptionSpec] = &[];

/// True when the file starts with a VHD footer copy (dynamic, differencing) or ends with a
/// VHD footer (fixed; qemu-img misses these and calls them raw).
pub fn probe(probe: &ProbeData) -> bool {
    if probe.head_at(0, 8) == Some(b"conectix") {
        return true;
    }
    let tail = &probe.tail;
    tail.len() >= 512 && &tail[tail.len() - 512..tail.len() - 504] == b"conectix"
}

/// A VHD layer.
pub struct VhdLayer {
    file: HostFile,
}

impl VhdLayer {
    /// Opens a VHD.
    pub fn open(file: HostFile) -> Result<VhdLayer> {
        Err(Error::unsupported("reading VHD images is not implemented yet").with_path(file.path()))
    }
}

impl Layer for VhdLayer {
    fn format(&self) -> Format {
        Format::Vhd
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

/// Makes a VHD writer.
pub fn create_writer(_dest: Destination<'_>, _spec: &CreateSpec) -> Result<Box<dyn ImageWriter>> {
    Err(Error::unsupported(
        "writing VHD images is not implemented yet",
    ))
}

/// Checks a VHD.
pub fn check(_path: &Path, _repair: Option<RepairMode>) -> Result<CheckReport> {
    Err(Error::unsupported(
        "checking VHD images is not implemented yet",
    ))
}
