//! Writing raw images: data at its own offset, holes (or written zeros, in place) where the
//! disk reads as zeros. Workers write data themselves when the destination allows it.

use crate::error::Result;
use crate::sink::{Access, Output, SharedSink, Sink};
use crate::writer::{CreateSpec, DirectWrite, HostTarget, ImageWriter, Piece};
use std::sync::Arc;

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

/// Writes a raw image from ordered pieces.
pub struct RawWriter<'a> {
    sink: Box<dyn Sink + 'a>,
    preallocation: Preallocation,
    direct: Option<Arc<dyn DirectWrite>>,
}

/// The engine's workers write data straight into the file at its virtual offset.
struct AtOffset(Arc<dyn SharedSink>);

impl DirectWrite for AtOffset {
    fn write_data(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.0.write_at(bytes, offset)
    }

    fn host_target(&self, offset: u64, len: u64) -> Option<HostTarget<'_>> {
        let file = self.0.regular_file()?;
        (len > 0).then_some(HostTarget { file, offset, len })
    }
}

/// Zeros written at a time for full preallocation.
const ZERO_BUF: usize = 1 << 20;

impl<'a> RawWriter<'a> {
    /// Creates the output (sized and, if asked, preallocated).
    pub fn create(mut output: Output<'a>, spec: &CreateSpec) -> Result<RawWriter<'a>> {
        let preallocation = match spec.options.text("preallocation") {
            None | Some("off") => Preallocation::Off,
            Some("falloc") => Preallocation::Falloc,
            Some(_) => Preallocation::Full,
        };
        let mut sink = output.main()?;
        // Sizing first: an existing destination too small for the image is refused before
        // anything is written.
        sink.set_len(spec.size)?;
        if preallocation == Preallocation::Falloc && sink.access() == Access::Random {
            sink.preallocate(spec.size)?;
        }
        let direct = sink
            .shared()
            .map(|s| Arc::new(AtOffset(s)) as Arc<dyn DirectWrite>);
        Ok(RawWriter {
            sink,
            preallocation,
            direct,
        })
    }

    fn write_zero_bytes(&mut self, mut offset: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; ZERO_BUF.min(len as usize)];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(zeros.len() as u64) as usize;
            self.sink.write_at(&zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

impl ImageWriter for RawWriter<'_> {
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.direct.clone()
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        match piece {
            Piece::Data { bytes, .. } => self.sink.write_at(bytes, offset),
            Piece::Placed(_) => Ok(()),
            Piece::Zero(len) | Piece::Unallocated(len) => {
                if self.preallocation == Preallocation::Full {
                    self.write_zero_bytes(offset, len)
                } else {
                    self.sink.write_zeros(offset, len)
                }
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.sink.finish()
    }
}
