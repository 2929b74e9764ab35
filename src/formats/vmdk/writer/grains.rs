//! Cutting the engine's ordered pieces into grains. The engine sends data on grain
//! boundaries (the sparse writers' granularity is one grain), so whole grains pass straight
//! through; a piece that starts or ends inside a grain (a library caller with other habits)
//! is assembled in a one-grain buffer first.

use crate::error::{Error, Result};
use crate::writer::Piece;

/// Receives whole grains, in order.
pub trait GrainSink {
    /// Grains `first..` hold `bytes` (whole grains; the last may be short at the disk's end).
    /// `encoded` is the engine's encoding of `bytes` when they are exactly one granule.
    fn data(&mut self, first: u64, bytes: &[u8], encoded: Option<&[u8]>) -> Result<()>;
    /// `count` grains from `first` read as zeros.
    fn zero(&mut self, first: u64, count: u64) -> Result<()>;
    /// `count` grains from `first` come from the backing image.
    fn unallocated(&mut self, first: u64, count: u64) -> Result<()>;
}

struct Pending {
    grain: u64,
    buf: Vec<u8>,
    filled: usize,
    data: bool,
    zero: bool,
    unallocated: bool,
}

/// Cuts pieces into grains for a [`GrainSink`].
pub struct GrainCutter {
    grain: u64,
    size: u64,
    pending: Option<Pending>,
}

impl GrainCutter {
    /// A cutter for a disk of `size` bytes with grains of `grain` bytes.
    pub fn new(grain: u64, size: u64) -> GrainCutter {
        GrainCutter {
            grain,
            size,
            pending: None,
        }
    }

    /// Hands the piece at `offset` to `sink` as grains.
    pub fn feed(&mut self, offset: u64, piece: Piece<'_>, sink: &mut dyn GrainSink) -> Result<()> {
        let end = offset + piece.len();
        if end > self.size {
            return Err(Error::invalid(format!(
                "piece {offset}+{} runs past the disk's end ({} bytes)",
                piece.len(),
                self.size
            )));
        }
        let g = self.grain;
        let mut pos = offset;
        while pos < end {
            let gi = pos / g;
            let gstart = gi * g;
            let gend = (gstart + g).min(self.size);
            if pos == gstart && end >= gend && self.pending.is_none() {
                let run_end = if end == self.size { end } else { end / g * g };
                let count = (run_end - pos).div_ceil(g);
                match piece {
                    Piece::Data { bytes, encoded } => {
                        let whole = pos == offset && run_end == end;
                        sink.data(
                            gi,
                            &bytes[(pos - offset) as usize..(run_end - offset) as usize],
                            if whole { encoded } else { None },
                        )?;
                    }
                    Piece::Zero(_) => sink.zero(gi, count)?,
                    Piece::Unallocated(_) => sink.unallocated(gi, count)?,
                    Piece::Placed(_) => return Err(placed_here(pos)),
                }
                pos = run_end;
                continue;
            }
            let p = self.pending.get_or_insert_with(|| Pending {
                grain: gi,
                buf: vec![0u8; (gend - gstart) as usize],
                filled: 0,
                data: false,
                zero: false,
                unallocated: false,
            });
            if p.grain != gi || gstart + p.filled as u64 != pos {
                return Err(Error::invalid(format!("pieces out of order at byte {pos}")));
            }
            let n = (end.min(gend) - pos) as usize;
            match piece {
                Piece::Data { bytes, .. } => {
                    let from = (pos - offset) as usize;
                    p.buf[p.filled..p.filled + n].copy_from_slice(&bytes[from..from + n]);
                    p.data = true;
                }
                Piece::Zero(_) => p.zero = true,
                Piece::Unallocated(_) => p.unallocated = true,
                Piece::Placed(_) => return Err(placed_here(pos)),
            }
            p.filled += n;
            pos += n as u64;
            if p.filled == p.buf.len() {
                let p = self.pending.take().expect("pending grain");
                if p.unallocated && (p.data || p.zero) {
                    return Err(Error::invalid(format!(
                        "grain {} mixes bytes of the backing image with new content; pieces must not split grains over a backing image",
                        p.grain
                    )));
                }
                if p.data {
                    sink.data(p.grain, &p.buf, None)?;
                } else if p.unallocated {
                    sink.unallocated(p.grain, 1)?;
                } else {
                    sink.zero(p.grain, 1)?;
                }
            }
        }
        Ok(())
    }

    /// Fails if a grain was left incomplete.
    pub fn finish(&self) -> Result<()> {
        match &self.pending {
            Some(p) => Err(Error::invalid(format!(
                "the disk ended inside grain {}",
                p.grain
            ))),
            None => Ok(()),
        }
    }
}

/// Grain writers place no data through workers; a placed piece here is a bug in the engine.
fn placed_here(pos: u64) -> Error {
    Error::invalid(format!(
        "internal error: data at byte {pos} was placed by a worker, but this writer places none"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);

    impl GrainSink for Log {
        fn data(&mut self, first: u64, bytes: &[u8], encoded: Option<&[u8]>) -> Result<()> {
            self.0.push(format!(
                "D{first}:{}:{}:{}",
                bytes.len(),
                bytes[0],
                encoded.is_some()
            ));
            Ok(())
        }
        fn zero(&mut self, first: u64, count: u64) -> Result<()> {
            self.0.push(format!("Z{first}x{count}"));
            Ok(())
        }
        fn unallocated(&mut self, first: u64, count: u64) -> Result<()> {
            self.0.push(format!("U{first}x{count}"));
            Ok(())
        }
    }

    #[test]
    fn whole_grains_pass_and_partial_ones_are_assembled() {
        let mut c = GrainCutter::new(8, 36);
        let mut log = Log::default();
        let data = [5u8; 16];
        c.feed(
            0,
            Piece::Data {
                bytes: &data,
                encoded: Some(b"x"),
            },
            &mut log,
        )
        .unwrap();
        c.feed(16, Piece::Zero(12), &mut log).unwrap();
        c.feed(
            28,
            Piece::Data {
                bytes: &[9u8; 8],
                encoded: None,
            },
            &mut log,
        )
        .unwrap();
        c.finish().unwrap();
        assert_eq!(
            log.0,
            vec!["D0:16:5:true", "Z2x1", "D3:8:0:false", "D4:4:9:false"]
        );
    }

    #[test]
    fn backing_bytes_cannot_share_a_grain_with_new_ones() {
        let mut c = GrainCutter::new(8, 16);
        let mut log = Log::default();
        c.feed(0, Piece::Unallocated(4), &mut log).unwrap();
        assert!(c.feed(4, Piece::Zero(4), &mut log).is_err());
        let mut c = GrainCutter::new(8, 16);
        c.feed(0, Piece::Unallocated(12), &mut log).unwrap();
        assert!(c.finish().is_err());
    }
}
