//! Zero detection.

/// True when every byte of `buf` is zero. Word-wise OR over 64-byte blocks, which the compiler
/// turns into vector loads; this is on the hot path of every conversion.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(64);
    for block in &mut blocks {
        let mut acc = 0u64;
        for word in block.chunks_exact(8) {
            acc |= u64::from_ne_bytes(word.try_into().expect("8 bytes"));
        }
        if acc != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_any_non_zero_byte() {
        assert!(is_zero(&[]));
        for len in [1usize, 7, 63, 64, 65, 4096, 4099] {
            let mut buf = vec![0u8; len];
            assert!(is_zero(&buf));
            for i in [0, len / 2, len - 1] {
                buf[i] = 1;
                assert!(!is_zero(&buf), "len {len} byte {i}");
                buf[i] = 0;
            }
        }
    }
}
