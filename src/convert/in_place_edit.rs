//! `-n` into an existing image that allocates as it is written (a dynamic VHD or VHDX, qcow2,
//! a sparse VMDK, a dynamic VDI): the conversion goes through the format's in-place editor
//! ([`crate::edit::ImageMut`]), which allocates units, updates its tables and keeps the image
//! crash-consistent as every other in-place change does. qemu-img writes such destinations
//! through its block layer the same way.
//!
//! Ranges the source holds as zeros are made to read as zeros only where the destination does
//! not already: a fresh dynamic destination stays as sparse as the source.

use crate::edit::{Clear, ImageMut};
use crate::error::Result;
use crate::image::{Allocation, Layer};
use crate::writer::{ImageWriter, Piece};

/// What the conversion's unallocated runs mean for the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unallocated {
    /// Zeros: the conversion has no backing target (`-B`).
    Zeros,
    /// What the destination's backing image holds (`-B` was given).
    Backing,
}

/// Writes the conversion into `image` through its editor; `before` is the destination as it
/// was opened (its top layer alone), which says where it already reads as zeros.
pub struct EditWriter {
    image: Box<dyn ImageMut>,
    before: Box<dyn Layer>,
    unallocated: Unallocated,
}

impl EditWriter {
    /// A writer into `image`, whose content before the conversion `before` reads.
    pub fn new(
        image: Box<dyn ImageMut>,
        before: Box<dyn Layer>,
        unallocated: Unallocated,
    ) -> EditWriter {
        EditWriter {
            image,
            before,
            unallocated,
        }
    }

    /// Makes `[offset, offset + len)` read as zeros, leaving the runs that already do.
    fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        // Without a backing file, a run the destination never allocated reads as zeros; with
        // one, it reads the backing file, which the conversion must hide.
        let own_zeros = self.before.backing().is_none();
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let m = self.before.map(pos, end - pos)?;
            let n = m.length.min(end - pos);
            let reads_zero = match m.allocation {
                Allocation::Zero => true,
                Allocation::Unallocated => own_zeros,
                _ => false,
            };
            if !reads_zero {
                self.image.clear(pos, n, Clear::Zero)?;
            }
            pos += n;
        }
        Ok(())
    }
}

impl ImageWriter for EditWriter {
    fn granularity(&self) -> u64 {
        // Whole units where the source allows: the editor then writes without reading back
        // the part of a unit the piece does not cover.
        self.image.allocation_unit().clamp(512, 2 << 20)
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        match piece {
            Piece::Data { bytes, .. } => self.image.write_at(offset, bytes),
            // Nothing here is written by the workers (no direct writes are offered), and
            // `--target-is-zero` reports the runs it passes over as placed.
            Piece::Placed(_) => Ok(()),
            Piece::Zero(len) => self.zero(offset, len),
            Piece::Unallocated(len) => match self.unallocated {
                Unallocated::Zeros => self.zero(offset, len),
                Unallocated::Backing => self.image.clear(offset, len, Clear::Deallocate),
            },
        }
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.image.flush()
    }
}
