//! Writing raw images: data at its own offset, holes where the disk reads as zeros.

use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::writer::{CreateSpec, Destination, ImageWriter, Piece};
use std::io::Write;

/// How much of a raw output's space is reserved up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// A sparse file: zeros are holes.
    Off,
    /// Space reserved with fallocate, nothing written.
    Falloc,
    /// Zeros written everywhere the disk has no data.
    Full,
}

enum Output {
    File(HostFile),
    Stream(Box<dyn Write + Send>),
}

/// Writes a raw image from ordered pieces.
pub struct RawWriter {
    out: Output,
    preallocation: Preallocation,
}

/// Zeros written at a time for full preallocation and streams.
const ZERO_BUF: usize = 1 << 20;

impl RawWriter {
    /// Creates the output (sized and, if asked, preallocated) at `dest`.
    pub fn create(dest: Destination<'_>, spec: &CreateSpec) -> Result<RawWriter> {
        let preallocation = match spec.options.text("preallocation") {
            None | Some("off") => Preallocation::Off,
            Some("falloc") => Preallocation::Falloc,
            Some(_) => Preallocation::Full,
        };
        let out = match dest {
            Destination::Files { staging, path } => {
                let mut host = staging.create_output(&path)?;
                if preallocation == Preallocation::Falloc && spec.size > 0 {
                    rustix::fs::fallocate(
                        host.file(),
                        rustix::fs::FallocateFlags::empty(),
                        0,
                        spec.size,
                    )
                    .map_err(|e| {
                        Error::io("cannot preallocate (falloc)", e.into()).with_path(&path)
                    })?;
                }
                host.set_len(spec.size)?;
                Output::File(host)
            }
            Destination::Stream(w) => Output::Stream(w),
        };
        Ok(RawWriter { out, preallocation })
    }

    fn write_zeros(&mut self, mut offset: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; ZERO_BUF.min(len as usize)];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            self.write_bytes(offset, &zeros[..n])?;
            offset += n as u64;
            left -= n as u64;
        }
        Ok(())
    }

    fn write_bytes(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        match &mut self.out {
            Output::File(f) => f.write_all_at(bytes, offset),
            Output::Stream(w) => w
                .write_all(bytes)
                .map_err(|e| Error::io("cannot write to the output stream", e).at_offset(offset)),
        }
    }
}

impl ImageWriter for RawWriter {
    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        match piece {
            Piece::Data { bytes, .. } => self.write_bytes(offset, bytes),
            Piece::Zero(len) | Piece::Unallocated(len) => {
                let must_write = match self.out {
                    Output::Stream(_) => true,
                    Output::File(_) => self.preallocation == Preallocation::Full,
                };
                if must_write {
                    self.write_zeros(offset, len)
                } else {
                    // The file was sized up front: an unwritten range is already a hole.
                    Ok(())
                }
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        match self.out {
            Output::File(mut f) => f.sync(),
            Output::Stream(mut w) => w
                .flush()
                .map_err(|e| Error::io("cannot flush the output stream", e)),
        }
    }
}
