//! Compressing clusters, on the engine's worker threads.
//!
//! - zlib (compression_type 0): raw deflate (no zlib header) whose back-references reach at most
//!   4 KiB back (windowBits -12), as qemu writes it. qemu inflates a whole cluster in one call
//!   and would accept longer references, but readers that inflate in pieces with a 4 KiB
//!   window do not (Python's zlib, and so dissect, inflates 32 KiB at a time): deflating with
//!   a 4 KiB window is what every reader takes. libdeflate has no window setting, so this is
//!   zlib-rs (zlib-ng's algorithms) through flate2.
//! - zstd (compression_type 1): one zstd frame per cluster, its content size in the frame
//!   header.
//!
//! A cluster is compressed whole (the disk's short last cluster padded with zeros), and kept
//! compressed only when that saves at least a byte, as qemu does: the compressed form must be
//! smaller than the cluster.
//!
//! The encoder's output for a granule of one or more clusters is, for each cluster in order, a
//! little-endian u32 followed by that many compressed bytes, or [`STORED`] alone for a cluster
//! kept as it is.

use super::options::Compression;
use crate::error::{Error, Result};
use crate::writer::ChunkEncoder;
use flate2::{Compress, FlushCompress, Status};
use std::cell::RefCell;

/// The tag of a cluster that did not shrink.
pub const STORED: u32 = u32::MAX;

/// zlib level, chosen by measurement on the benchmark's ext4 image (64 KiB clusters, 4 KiB
/// window, one core): zlib-rs level 4 did 108 MiB/s for 37.3% of the input, 5 did 105 MiB/s
/// for 37.0%, 6 did 97 MiB/s for 36.9%; qemu-img (zlib level 6) makes about 35.6% at a third of
/// the speed. Level 5 keeps the file within 4% of qemu-img's.
pub const ZLIB_LEVEL: u32 = 5;
/// zstd level: 1 compresses about half again as fast as zstd's default (3, qemu's) for a file a
/// few percent larger.
pub const ZSTD_LEVEL: i32 = 1;
/// The deflate window qemu uses for compressed clusters: 2^12 = 4 KiB.
pub const ZLIB_WINDOW_BITS: u8 = 12;

thread_local! {
    static DEFLATE: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static PADDED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `data` (at most one cluster of `cluster_size` bytes; shorter only at the disk's
/// end) with `method` into `out`, which is cleared. Returns false (and leaves `out` empty) when
/// the cluster does not shrink.
pub fn compress_cluster(
    method: Compression,
    level: i32,
    data: &[u8],
    cluster_size: usize,
    out: &mut Vec<u8>,
) -> Result<bool> {
    out.clear();
    if data.len() < cluster_size {
        return PADDED.with(|p| {
            let mut p = p.borrow_mut();
            p.clear();
            p.extend_from_slice(data);
            p.resize(cluster_size, 0);
            compress_whole(method, level, &p, out)
        });
    }
    compress_whole(method, level, data, out)
}

fn compress_whole(method: Compression, level: i32, data: &[u8], out: &mut Vec<u8>) -> Result<bool> {
    // Room for the whole stream even when it does not shrink: zlib-rs 0.6 overflows its
    // pending buffer (a panic) when a 4 KiB-window stream of incompressible data is cut short
    // by a full output, so every stream is finished and its size judged after.
    let room = data.len() + data.len() / 8 + 256;
    out.resize(room, 0);
    let n = match method {
        Compression::Zlib => DEFLATE.with(|d| {
            let mut slot = d.borrow_mut();
            let level = level.clamp(0, 9) as u32;
            if slot.as_ref().is_none_or(|(l, _)| *l != level) {
                *slot = Some((
                    level,
                    Compress::new_with_window_bits(
                        flate2::Compression::new(level),
                        false,
                        ZLIB_WINDOW_BITS,
                    ),
                ));
            }
            let (_, c) = slot.as_mut().expect("just set");
            c.reset();
            match c.compress(data, out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => Ok(Some(c.total_out() as usize)),
                Ok(_) => Err(Error::invalid(
                    "internal error: deflate did not finish a cluster in its bound",
                )),
                Err(e) => Err(Error::invalid(format!("deflate failed: {e}"))),
            }
        })?,
        Compression::Zstd => ZSTD.with(|z| {
            let mut slot = z.borrow_mut();
            if slot.is_none() {
                *slot = Some(
                    zstd::bulk::Compressor::new(level)
                        .map_err(|e| Error::invalid(format!("zstd setup failed: {e}")))?,
                );
            }
            let c = slot.as_mut().expect("just set");
            c.compress_to_buffer(data, &mut out[..])
                .map(Some)
                .map_err(|e| Error::invalid(format!("zstd failed: {e}")))
        })?,
    };
    match n {
        Some(n) if n < data.len() => {
            out.truncate(n);
            Ok(true)
        }
        _ => {
            out.clear();
            Ok(false)
        }
    }
}

/// Compresses `data`, the one whole cluster at virtual `offset` of a disk of `disk_size` bytes
/// (shorter only where the disk ends) that an in-place compressed write stores, at `method`'s
/// default level: `None` when it does not shrink. Anything but one whole cluster is an internal
/// error (callers write partial clusters plainly).
pub(crate) fn compress_whole_cluster(
    method: Compression,
    data: &[u8],
    cluster_size: u64,
    offset: u64,
    disk_size: u64,
) -> Result<Option<Vec<u8>>> {
    let len = data.len() as u64;
    let whole = len == cluster_size || (len < cluster_size && offset + len == disk_size);
    if !offset.is_multiple_of(cluster_size) || !whole {
        return Err(Error::invalid(format!(
            "internal error: a compressed write must be one whole cluster ({cluster_size} bytes), not {len} bytes at {offset}"
        )));
    }
    let mut packed = Vec::new();
    let level = default_level(method);
    Ok(
        compress_cluster(method, level, data, cluster_size as usize, &mut packed)?
            .then_some(packed),
    )
}

/// The level `method` compresses at.
pub fn default_level(method: Compression) -> i32 {
    match method {
        Compression::Zlib => ZLIB_LEVEL as i32,
        Compression::Zstd => ZSTD_LEVEL,
    }
}

/// The writers' encoder: compresses each cluster of a granule (see the module's framing).
pub struct ClusterEncoder {
    /// How to compress.
    pub method: Compression,
    /// At which level.
    pub level: i32,
    /// Bytes per cluster.
    pub cluster_size: usize,
}

impl ChunkEncoder for ClusterEncoder {
    fn encode(&self, _offset: u64, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut scratch = Vec::new();
        for cluster in data.chunks(self.cluster_size) {
            if compress_cluster(
                self.method,
                self.level,
                cluster,
                self.cluster_size,
                &mut scratch,
            )? {
                out.extend_from_slice(&(scratch.len() as u32).to_le_bytes());
                out.extend_from_slice(&scratch);
            } else {
                out.extend_from_slice(&STORED.to_le_bytes());
            }
        }
        Ok(())
    }
}

/// Walks an encoder's output cluster by cluster: `Some(bytes)` for a compressed cluster,
/// `None` for one kept as it is.
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Frames<'a> {
    /// The frames of `encoded`.
    pub fn new(encoded: &'a [u8]) -> Frames<'a> {
        Frames { rest: encoded }
    }

    /// The next cluster's frame.
    pub fn next_frame(&mut self) -> Result<Option<&'a [u8]>> {
        let bad = || Error::invalid("internal error: malformed encoder output");
        if self.rest.len() < 4 {
            return Err(bad());
        }
        let tag = u32::from_le_bytes(self.rest[..4].try_into().expect("4 bytes"));
        self.rest = &self.rest[4..];
        if tag == STORED {
            return Ok(None);
        }
        let n = tag as usize;
        if n > self.rest.len() {
            return Err(bad());
        }
        let (frame, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn sample(len: usize) -> Vec<u8> {
        // Text-like data with repeats far apart (so a 32 KiB window would find them).
        let mut x = 0x1234_5678u32;
        let words: Vec<Vec<u8>> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (0..(3 + x % 9))
                    .map(|i| b'a' + ((x >> i) % 26) as u8)
                    .collect()
            })
            .collect();
        let mut out = Vec::new();
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.extend_from_slice(&words[(x % 300) as usize]);
            out.push(b' ');
        }
        out.truncate(len);
        out
    }

    /// Inflates with a 4 KiB window, handing out 512 bytes of output at a time, as a reader
    /// that inflates in pieces does: a back-reference further than 4 KiB fails here.
    fn inflate_in_pieces(data: &[u8], len: usize) -> Vec<u8> {
        let mut d = Decompress::new_with_window_bits(false, 12);
        let mut out = Vec::new();
        let mut piece = [0u8; 512];
        while out.len() < len {
            let (i, o) = (d.total_in(), d.total_out());
            let status = d
                .decompress(&data[i as usize..], &mut piece, FlushDecompress::None)
                .expect("inflates with a 4 KiB window");
            out.extend_from_slice(&piece[..(d.total_out() - o) as usize]);
            if status == flate2::Status::StreamEnd {
                break;
            }
        }
        out
    }

    #[test]
    fn zlib_clusters_inflate_with_a_4k_window_in_pieces() {
        for cluster in [512usize, 4096, 65536, 2 << 20] {
            let data = sample(cluster);
            let mut out = Vec::new();
            assert!(
                compress_cluster(
                    Compression::Zlib,
                    ZLIB_LEVEL as i32,
                    &data,
                    cluster,
                    &mut out
                )
                .unwrap()
            );
            assert!(out.len() < cluster);
            assert_eq!(inflate_in_pieces(&out, cluster), data, "cluster {cluster}");
        }
    }

    #[test]
    fn zstd_clusters_round_trip_and_short_clusters_are_padded() {
        let data = sample(10_000);
        let mut out = Vec::new();
        assert!(compress_cluster(Compression::Zstd, ZSTD_LEVEL, &data, 65536, &mut out).unwrap());
        let back = zstd::bulk::decompress(&out, 65536).unwrap();
        assert_eq!(back.len(), 65536);
        assert_eq!(&back[..10_000], &data[..]);
        assert!(back[10_000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn incompressible_clusters_are_stored() {
        let mut x = 99u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for method in [Compression::Zlib, Compression::Zstd] {
            let mut out = Vec::new();
            assert!(
                !compress_cluster(method, default_level(method), &noise, 4096, &mut out).unwrap()
            );
            assert!(out.is_empty());
        }
        let enc = ClusterEncoder {
            method: Compression::Zlib,
            level: ZLIB_LEVEL as i32,
            cluster_size: 4096,
        };
        let mut both = noise.clone();
        both.extend_from_slice(&[0u8; 4096]);
        let mut out = Vec::new();
        enc.encode(0, &both, &mut out).unwrap();
        let mut frames = Frames::new(&out);
        assert_eq!(frames.next_frame().unwrap(), None);
        assert!(frames.next_frame().unwrap().is_some());
    }
}
