//! `--target-is-zero`: the existing destination already reads as zeros, so the runs of zeros
//! (and of nothing) are passed over instead of written, as qemu-img does. On a thin device or
//! a freshly discarded LUN that saves writing, and allocating, the whole disk.

use crate::error::Result;
use crate::writer::{ChunkEncoder, DirectWrite, ImageWriter, Piece};
use std::sync::Arc;

/// Forwards everything but zeros to the destination's own writer.
pub struct SkipZeros<'a> {
    inner: Box<dyn ImageWriter + 'a>,
}

impl<'a> SkipZeros<'a> {
    /// Wraps the writer of an existing destination that the user says reads as zeros.
    pub fn new(inner: Box<dyn ImageWriter + 'a>) -> SkipZeros<'a> {
        SkipZeros { inner }
    }
}

impl ImageWriter for SkipZeros<'_> {
    fn granularity(&self) -> u64 {
        self.inner.granularity()
    }

    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        self.inner.encoder()
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.inner.direct()
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        match piece {
            // The destination's writers for -n place data at fixed offsets, so a range left
            // alone is one reported as already in place.
            Piece::Zero(len) | Piece::Unallocated(len) => {
                self.inner.write(offset, Piece::Placed(len))
            }
            other => self.inner.write(offset, other),
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.inner.finish()
    }
}
