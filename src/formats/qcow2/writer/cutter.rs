//! Cutting the engine's ordered pieces into clusters. The engine sends data on cluster
//! boundaries (the writer's granularity is one cluster), so whole clusters pass straight
//! through with their compressed form; a piece that starts or ends inside a cluster (a library
//! caller with other habits) is assembled in a one-cluster buffer first, the parts left to
//! the backing image read from it, and stored as data.

use super::compress::Frames;
use super::layout::RunKind;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::writer::Piece;
use std::sync::Arc;

/// What the engine's encoder made of one cluster.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    /// Not encoded: compress here if compressing.
    Plain,
    /// Encoded, and it did not shrink: store as it is.
    Stored,
    /// Encoded to these bytes.
    Compressed(&'a [u8]),
}

/// Receives whole clusters, in order.
pub trait ClusterSink {
    /// Guest cluster `cluster` holds `bytes` (shorter than a cluster only at the disk's end).
    fn data(&mut self, cluster: u64, bytes: &[u8], frame: Frame<'_>) -> Result<()>;
    /// Guest clusters from `first` hold `bytes` (whole clusters, the last shorter only at the
    /// disk's end), not encoded.
    fn data_run(&mut self, first: u64, bytes: &[u8], cluster_size: u64) -> Result<()> {
        for (i, chunk) in bytes.chunks(cluster_size as usize).enumerate() {
            self.data(first + i as u64, chunk, Frame::Plain)?;
        }
        Ok(())
    }
    /// `count` clusters from `first` hold no new data.
    fn run(&mut self, first: u64, count: u64, kind: RunKind) -> Result<()>;
}

struct Pending {
    cluster: u64,
    buf: Vec<u8>,
    filled: usize,
    data: bool,
    zero: bool,
    /// Byte ranges (within the cluster) left to the backing image.
    unallocated: Vec<(usize, usize)>,
}

/// Cuts pieces into clusters for a [`ClusterSink`].
pub struct Cutter {
    cluster: u64,
    size: u64,
    pending: Option<Pending>,
    backing: Option<Arc<Image>>,
}

impl Cutter {
    /// A cutter for a disk of `size` bytes in clusters of `cluster` bytes; `backing` is read
    /// for the parts of a partly new cluster that are left to it.
    pub fn new(cluster: u64, size: u64, backing: Option<Arc<Image>>) -> Cutter {
        Cutter {
            cluster,
            size,
            pending: None,
            backing,
        }
    }

    /// Hands the piece at `offset` to `sink` as clusters.
    pub fn feed(
        &mut self,
        offset: u64,
        piece: Piece<'_>,
        sink: &mut dyn ClusterSink,
    ) -> Result<()> {
        let end = offset + piece.len();
        if end > self.size {
            return Err(Error::invalid(format!(
                "internal error: piece {offset}+{} runs past the disk's end ({} bytes)",
                piece.len(),
                self.size
            )));
        }
        let cs = self.cluster;
        let mut pos = offset;
        while pos < end {
            let ci = pos / cs;
            let cstart = ci * cs;
            let cend = (cstart + cs).min(self.size);
            if pos == cstart && end >= cend && self.pending.is_none() {
                let run_end = if end == self.size { end } else { end / cs * cs };
                let count = (run_end - pos).div_ceil(cs);
                match piece {
                    Piece::Data { bytes, encoded } => {
                        let whole = pos == offset;
                        let mut frames = encoded.filter(|_| whole).map(Frames::new);
                        if frames.is_none() {
                            let from = (pos - offset) as usize;
                            let to = (run_end - offset) as usize;
                            sink.data_run(ci, &bytes[from..to], cs)?;
                            pos = run_end;
                            continue;
                        }
                        let mut at = pos;
                        while at < run_end {
                            let n = (run_end - at).min(cs);
                            let from = (at - offset) as usize;
                            let frame = match &mut frames {
                                Some(f) => match f.next_frame()? {
                                    Some(c) => Frame::Compressed(c),
                                    None => Frame::Stored,
                                },
                                None => Frame::Plain,
                            };
                            sink.data(at / cs, &bytes[from..from + n as usize], frame)?;
                            at += n;
                        }
                    }
                    Piece::Zero(_) => sink.run(ci, count, RunKind::Zero)?,
                    Piece::Unallocated(_) => sink.run(ci, count, RunKind::Unallocated)?,
                    Piece::Placed(_) => return Err(placed_here(pos)),
                }
                pos = run_end;
                continue;
            }
            let p = self.pending.get_or_insert_with(|| Pending {
                cluster: ci,
                buf: vec![0u8; (cend - cstart) as usize],
                filled: 0,
                data: false,
                zero: false,
                unallocated: Vec::new(),
            });
            if p.cluster != ci || cstart + p.filled as u64 != pos {
                return Err(Error::invalid(format!(
                    "internal error: pieces out of order at byte {pos}"
                )));
            }
            let n = (end.min(cend) - pos) as usize;
            match piece {
                Piece::Data { bytes, .. } => {
                    let from = (pos - offset) as usize;
                    p.buf[p.filled..p.filled + n].copy_from_slice(&bytes[from..from + n]);
                    p.data = true;
                }
                Piece::Zero(_) => p.zero = true,
                Piece::Unallocated(_) => p.unallocated.push((p.filled, n)),
                Piece::Placed(_) => return Err(placed_here(pos)),
            }
            p.filled += n;
            pos += n as u64;
            if p.filled == p.buf.len() {
                let mut p = self.pending.take().expect("a pending cluster");
                let unallocated = !p.unallocated.is_empty();
                let mixed = p.zero && unallocated;
                if !p.data && !mixed {
                    let kind = if unallocated {
                        RunKind::Unallocated
                    } else {
                        RunKind::Zero
                    };
                    sink.run(p.cluster, 1, kind)?;
                    continue;
                }
                if let Some(backing) = &self.backing {
                    let base = p.cluster * cs;
                    for &(start, len) in &p.unallocated {
                        read_clipped(backing, base + start as u64, &mut p.buf[start..start + len])?;
                    }
                }
                sink.data(p.cluster, &p.buf, Frame::Plain)?;
            }
        }
        Ok(())
    }

    /// Fails if a cluster was left incomplete.
    pub fn finish(&self) -> Result<()> {
        match &self.pending {
            Some(p) => Err(Error::invalid(format!(
                "internal error: cluster {} was left incomplete",
                p.cluster
            ))),
            None => Ok(()),
        }
    }
}

fn placed_here(pos: u64) -> Error {
    Error::invalid(format!(
        "internal error: data at {pos} was placed by a worker, but this writer places its own data"
    ))
}

/// Reads `buf.len()` bytes at `offset`, with zeros past the image's end.
fn read_clipped(image: &Image, offset: u64, buf: &mut [u8]) -> Result<()> {
    let size = image.virtual_size();
    let inside = size.saturating_sub(offset).min(buf.len() as u64) as usize;
    if inside > 0 {
        image.read_at(offset, &mut buf[..inside])?;
    }
    buf[inside..].fill(0);
    Ok(())
}
