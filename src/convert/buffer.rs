//! The engine's item buffers: byte buffers whose start is aligned to 4 KiB, so that a
//! source file can read an item straight into one with direct I/O (`O_DIRECT` wants the
//! memory, the offset and the length aligned to the device's block size).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The alignment every buffer's first byte has: the page size of every Linux port that
/// diskferry builds for, and no smaller than any device's direct-I/O memory alignment.
pub const ALIGN: usize = 4096;

/// One aligned block. `repr(C, align(4096))` with exactly 4096 bytes has no padding, so a
/// slice of them is plain bytes (zerocopy checks this at compile time).
#[derive(Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(4096))]
struct Block([u8; ALIGN]);

/// A growable byte buffer whose first byte is aligned to [`ALIGN`].
#[derive(Default)]
pub struct AlignedBuf {
    blocks: Vec<Block>,
    len: usize,
}

impl AlignedBuf {
    /// Makes the buffer `len` bytes long. Bytes kept from before keep their values, new ones
    /// are zero (as `Vec::resize` with 0).
    pub fn resize(&mut self, len: usize) {
        let blocks = len.div_ceil(ALIGN);
        if blocks > self.blocks.len() {
            self.blocks.resize(blocks, Block::new_zeroed());
        }
        let old = self.len;
        self.len = len;
        if len > old {
            self[old..len].fill(0);
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.blocks.as_bytes()[..self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.blocks.as_mut_bytes()[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zero_filled_as_it_grows() {
        let mut buf = AlignedBuf::default();
        assert!(buf.is_empty());
        buf.resize(10_000);
        assert_eq!(buf.len(), 10_000);
        assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
        assert!(buf.iter().all(|&b| b == 0));
        buf.fill(7);
        buf.resize(100);
        assert!(buf.iter().all(|&b| b == 7));
        // Growing again zeroes what lies past the old length, even within the old blocks.
        buf.resize(5000);
        assert!(buf[..100].iter().all(|&b| b == 7));
        assert!(buf[100..].iter().all(|&b| b == 0));
        assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
    }
}
