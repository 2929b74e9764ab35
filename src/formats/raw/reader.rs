//! Reading raw images, with the host file's holes as the allocation map.

use crate::error::{Error, Result};
use crate::format::Format;
use crate::host_file::HostFile;
use crate::image::{Allocation, Layer, LayerDetails, Mapping};
use rustix::fs::SeekFrom;
use rustix::io::Errno;
use std::any::Any;
use std::path::Path;

/// A raw image: the file is the disk.
#[derive(Debug)]
pub struct RawLayer {
    file: HostFile,
}

impl RawLayer {
    /// Opens a raw layer on an open file.
    pub fn open(file: HostFile) -> Result<RawLayer> {
        Ok(RawLayer { file })
    }

    /// Where the next data or hole starts at or after `offset`; `None` when the file system
    /// cannot say (then the whole file counts as data) or there is none before the end.
    fn seek(&self, whence: SeekFrom) -> std::result::Result<Option<u64>, Errno> {
        match rustix::fs::seek(self.file.file(), whence) {
            Ok(pos) => Ok(Some(pos)),
            Err(Errno::NXIO) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Layer for RawLayer {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn path(&self) -> &Path {
        self.file.path()
    }

    fn virtual_size(&self) -> u64 {
        self.file.len()
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let end = offset.saturating_add(max_len).min(self.file.len());
        let data = |until: u64| {
            Ok(Mapping::new(offset, until - offset, Allocation::Data).at_host(0, offset))
        };
        let zero = |until: u64| {
            Ok(Mapping::new(offset, until - offset, Allocation::Zero).at_host(0, offset))
        };
        match self.seek(SeekFrom::Data(offset)) {
            // SEEK_DATA unsupported (some file systems, block devices): all of it is data.
            Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => data(end),
            Err(e) => Err(Error::io("cannot query allocation (SEEK_DATA)", e.into())
                .at_offset(offset)
                .with_path(self.file.path())),
            Ok(None) => zero(end),
            Ok(Some(next_data)) if next_data > offset => zero(next_data.min(end)),
            Ok(Some(_)) => match self.seek(SeekFrom::Hole(offset)) {
                Ok(Some(hole)) if hole > offset => data(hole.min(end)),
                // A racing truncate or an odd file system: fall back to data, which is always safe.
                _ => data(end),
            },
        }
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn details(&self) -> LayerDetails {
        LayerDetails::default()
    }

    fn host_file(&self, index: usize) -> Option<&HostFile> {
        (index == 0).then_some(&self.file)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
