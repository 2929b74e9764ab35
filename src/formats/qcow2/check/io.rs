//! The bytes `check` reads and `check -r` writes: a host file, or memory (tests, fuzzers).
//!
//! Reads past the end of the image return zeros, because that is what qemu's block layer gives
//! qcow2's checker (a table that runs past the end reads as unallocated entries, not as an
//! error): agreeing with `qemu-img check` means reading what it reads.

use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::storage::{Storage, StorageExt};
use std::path::Path;
use std::sync::Arc;

/// An image `check` can read and, when repairing, write.
pub trait ImageIo: Storage {
    /// Writes all of `buf` at `offset`, growing the image when it ends there.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()>;
    /// Makes everything written so far durable before anything written later: the ordering
    /// point of a crash-consistent repair.
    fn flush(&mut self) -> Result<()>;
}

impl ImageIo for HostFile {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> Result<()> {
        self.sync()
    }
}

/// A storage that is only read (`check` without `-r`): writing to it is a bug, refused.
#[derive(Debug)]
pub struct ReadOnly(pub Arc<dyn Storage>);

impl Storage for ReadOnly {
    fn name(&self) -> &Path {
        self.0.name()
    }
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

impl ImageIo for ReadOnly {
    fn write_at(&mut self, _: &[u8], offset: u64) -> Result<()> {
        Err(Error::invalid("a check without -r may not write the image")
            .at_offset(offset)
            .with_path(self.name()))
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// An image held in memory that repairs may write: for tests, and fuzzers that exercise the
/// repair paths without a file system.
#[derive(Debug, Clone)]
pub struct MemoryImage {
    name: std::path::PathBuf,
    /// The image's bytes.
    pub bytes: Vec<u8>,
}

impl MemoryImage {
    /// An image named `name` (for messages) holding `bytes`.
    pub fn new(name: impl Into<std::path::PathBuf>, bytes: Vec<u8>) -> MemoryImage {
        MemoryImage {
            name: name.into(),
            bytes,
        }
    }
}

impl Storage for MemoryImage {
    fn name(&self) -> &Path {
        &self.name
    }
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len())
            .ok_or_else(|| {
                Error::corrupt("read past the end of the image")
                    .at_offset(offset)
                    .with_path(&self.name)
            })?;
        buf.copy_from_slice(&self.bytes[offset as usize..end as usize]);
        Ok(())
    }
}

impl ImageIo for MemoryImage {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= super::MAX_FILE_BYTES)
            .ok_or_else(|| Error::invalid("write past any image").at_offset(offset))?;
        if end > self.len() {
            self.bytes.resize(end as usize, 0);
        }
        self.bytes[offset as usize..end as usize].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Reads `buf.len()` bytes at `offset`; what lies past the end of the image reads as zeros.
pub fn read_padded(io: &dyn Storage, buf: &mut [u8], offset: u64) -> Result<()> {
    let n = io.read_at_most(buf, offset)?;
    buf[n..].fill(0);
    Ok(())
}

/// Reads up to `entries` big-endian u64 at `offset`: only those the file holds, since the rest
/// read as zeros, which reference nothing. A hostile entry count (a bitmap table of 2^32
/// entries) so costs no more memory than the file's own bytes.
pub fn read_u64s(io: &dyn Storage, offset: u64, entries: u64) -> Result<Vec<u64>> {
    crate::formats::qcow2::table::read_u64_table(io, offset, entries)
}
