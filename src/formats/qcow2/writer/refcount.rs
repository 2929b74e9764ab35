//! Refcount blocks of any width (1 to 64 bits), held encoded: one cluster of memory per block
//! whatever the width.
//!
//! Entries narrower than a byte are packed from each byte's least significant bit (entry 0 of a
//! 1-bit block is bit 0 of byte 0); entries of 8 bits and more are big-endian.

/// One refcount block being filled.
#[derive(Debug, Clone)]
pub struct RefcountBlock {
    bytes: Vec<u8>,
    order: u32,
}

impl RefcountBlock {
    /// An all-zero block of `cluster_size` bytes with entries of `1 << order` bits.
    pub fn new(cluster_size: usize, order: u32) -> RefcountBlock {
        RefcountBlock {
            bytes: vec![0u8; cluster_size],
            order,
        }
    }

    /// The largest count an entry holds.
    pub fn max(order: u32) -> u64 {
        match 1u32 << order {
            64 => u64::MAX,
            bits => (1u64 << bits) - 1,
        }
    }

    /// Entry `index`.
    pub fn get(&self, index: usize) -> u64 {
        let bits = 1usize << self.order;
        if bits < 8 {
            let per = 8 / bits;
            let shift = (index % per) * bits;
            u64::from(self.bytes[index / per] >> shift) & ((1 << bits) - 1)
        } else {
            let n = bits / 8;
            let at = index * n;
            self.bytes[at..at + n]
                .iter()
                .fold(0u64, |v, b| (v << 8) | u64::from(*b))
        }
    }

    /// Sets entry `index` to `value` (which fits).
    pub fn set(&mut self, index: usize, value: u64) {
        let bits = 1usize << self.order;
        debug_assert!(value <= Self::max(self.order));
        if bits < 8 {
            let per = 8 / bits;
            let shift = (index % per) * bits;
            let mask = (((1u16 << bits) - 1) as u8) << shift;
            let b = &mut self.bytes[index / per];
            *b = (*b & !mask) | (((value as u8) << shift) & mask);
        } else {
            let n = bits / 8;
            let at = index * n;
            self.bytes[at..at + n].copy_from_slice(&value.to_be_bytes()[8 - n..]);
        }
    }

    /// The encoded block.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_round_trips_and_packs_as_qemu_does() {
        for order in 0..=6 {
            let mut b = RefcountBlock::new(512, order);
            let entries = (512 * 8) >> order;
            let max = RefcountBlock::max(order);
            for i in 0..entries {
                b.set(i, (i as u64 * 7) % (max.min(1000) + 1));
            }
            for i in 0..entries {
                assert_eq!(
                    b.get(i),
                    (i as u64 * 7) % (max.min(1000) + 1),
                    "order {order} entry {i}"
                );
            }
        }
        let mut one = RefcountBlock::new(512, 0);
        one.set(1, 1);
        assert_eq!(one.bytes()[0], 0b10);
        let mut four = RefcountBlock::new(512, 2);
        four.set(1, 3);
        assert_eq!(four.bytes()[0], 0x30);
        let mut sixteen = RefcountBlock::new(512, 4);
        sixteen.set(1, 0x0102);
        assert_eq!(&sixteen.bytes()[2..4], &[1, 2]);
    }
}
