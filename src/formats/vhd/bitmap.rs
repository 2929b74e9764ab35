//! Sector bitmaps: in front of every block, one bit per sector, most significant bit first.
//! A set bit means the sector is stored in the block; a clear bit means "read the parent" in a
//! differencing disk and "zeros" in a dynamic disk.

use std::sync::Arc;

/// Bytes of the bitmap in front of a block of `block_size` bytes: one bit per sector, padded
/// to whole sectors (at least one).
pub fn bitmap_bytes(block_size: u32) -> u64 {
    (u64::from(block_size) / 512)
        .div_ceil(8)
        .div_ceil(512)
        .max(1)
        * 512
}

/// A block's bitmap, kept compactly when it is all ones or all zeros (nearly always).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectorBitmap {
    /// Every sector is stored.
    Full,
    /// No sector is stored.
    Empty,
    /// Some are: the bits, `sectors / 8` bytes rounded up.
    Partial(Arc<[u8]>),
}

impl SectorBitmap {
    /// Classifies the first bits of `bytes` for a block of `sectors` sectors.
    pub fn from_bytes(bytes: &[u8], sectors: u32) -> SectorBitmap {
        let sectors = sectors as usize;
        let used = &bytes[..sectors.div_ceil(8).min(bytes.len())];
        let full_bytes = sectors / 8;
        let tail_bits = sectors % 8;
        let tail_mask = if tail_bits == 0 {
            0
        } else {
            0xFFu8 << (8 - tail_bits)
        };
        let all = |v: u8| {
            used[..full_bytes.min(used.len())].iter().all(|&b| b == v)
                && (tail_bits == 0
                    || used
                        .get(full_bytes)
                        .is_some_and(|&b| b & tail_mask == v & tail_mask))
        };
        if used.len() * 8 >= sectors && all(0xFF) {
            SectorBitmap::Full
        } else if all(0x00) {
            SectorBitmap::Empty
        } else {
            SectorBitmap::Partial(Arc::from(used))
        }
    }

    /// True when sector `n` of the block is stored.
    pub fn is_set(&self, n: u32) -> bool {
        match self {
            SectorBitmap::Full => true,
            SectorBitmap::Empty => false,
            SectorBitmap::Partial(bits) => test(bits, n),
        }
    }

    /// The value of sector `from` and how many sectors from it (up to `limit`) share it.
    pub fn run_from(&self, from: u32, limit: u32) -> (bool, u32) {
        let value = self.is_set(from);
        let SectorBitmap::Partial(bits) = self else {
            return (value, limit.saturating_sub(from));
        };
        let mut n = from + 1;
        while n < limit {
            // Skip whole bytes that match, bit by bit otherwise.
            if n.is_multiple_of(8) && n + 8 <= limit {
                let byte = bits.get((n / 8) as usize).copied().unwrap_or(0);
                if byte == if value { 0xFF } else { 0x00 } {
                    n += 8;
                    continue;
                }
            }
            if test(bits, n) != value {
                break;
            }
            n += 1;
        }
        (value, n - from)
    }
}

fn test(bits: &[u8], n: u32) -> bool {
    bits.get((n / 8) as usize)
        .is_some_and(|&b| b & (0x80 >> (n % 8)) != 0)
}

/// Sets the bits of sectors `start..end`.
pub fn set_range(bits: &mut [u8], start: u32, end: u32) {
    let mut n = start;
    while n < end {
        if n.is_multiple_of(8) && n + 8 <= end {
            bits[(n / 8) as usize] = 0xFF;
            n += 8;
        } else {
            bits[(n / 8) as usize] |= 0x80 >> (n % 8);
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bitmap_bytes(2 << 20), 512);
        assert_eq!(bitmap_bytes(512), 512);
        assert_eq!(bitmap_bytes(16 << 20), 4096);
    }

    #[test]
    fn runs_and_classes() {
        let mut bits = vec![0u8; 512];
        assert_eq!(SectorBitmap::from_bytes(&bits, 4096), SectorBitmap::Empty);
        set_range(&mut bits, 0, 4096);
        assert_eq!(SectorBitmap::from_bytes(&bits, 4096), SectorBitmap::Full);
        let mut bits = vec![0u8; 512];
        set_range(&mut bits, 3, 21);
        let map = SectorBitmap::from_bytes(&bits, 4096);
        assert_eq!(map.run_from(0, 4096), (false, 3));
        assert_eq!(map.run_from(3, 4096), (true, 18));
        assert_eq!(map.run_from(21, 4096), (false, 4096 - 21));
        assert_eq!(map.run_from(5, 10), (true, 5));
        assert!(map.is_set(20) && !map.is_set(21) && !map.is_set(2));
        // A block of 12 sectors: only the first 12 bits count.
        let bits = [0xFF, 0xF0, 0x00];
        assert_eq!(SectorBitmap::from_bytes(&bits, 12), SectorBitmap::Full);
    }
}
