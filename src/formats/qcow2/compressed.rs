//! Compressed clusters: raw deflate (qemu's "zlib": no zlib header, a 4 KiB window) or one
//! zstd frame, inflated into exactly one cluster.
//!
//! The compressed bytes are read from the descriptor's offset for its size (whole 512-byte
//! sectors less the offset's place in the first, so at most two clusters: bounded by the
//! cluster size, never by a field alone). A cluster that inflates to more or less than one
//! cluster is corrupt. Decompression runs in [`Layer::read_data`](crate::image::Layer), that
//! is on the conversion engine's worker threads; each thread keeps the last cluster it
//! inflated, so that small reads of one cluster inflate it once.

use super::header::Compression;
use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};
use libdeflater::{DecompressionError, Decompressor};
use std::cell::RefCell;

thread_local! {
    static DEFLATE: RefCell<Decompressor> = RefCell::new(Decompressor::new());
    static ZSTD: RefCell<Option<zstd::stream::raw::Decoder<'static>>> = const { RefCell::new(None) };
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// (layer id, host offset) of the cluster in the buffer.
    static LAST: RefCell<(u64, u64, Vec<u8>)> = const { RefCell::new((u64::MAX, u64::MAX, Vec::new())) };
}

/// Inflates raw deflate `data` into `out` (one cluster).
pub fn inflate_deflate(data: &[u8], out: &mut [u8]) -> Result<()> {
    let n = DEFLATE.with(|d| {
        d.borrow_mut()
            .deflate_decompress(data, out)
            .map_err(|e| match e {
                DecompressionError::InsufficientSpace => Error::corrupt(format!(
                    "compressed cluster inflates to more than one cluster ({} bytes)",
                    out.len()
                )),
                DecompressionError::BadData => {
                    Error::corrupt("compressed cluster is not valid deflate data")
                }
            })
    })?;
    if n != out.len() {
        return Err(Error::corrupt(format!(
            "compressed cluster inflates to {n} bytes, not a whole cluster ({} bytes)",
            out.len()
        )));
    }
    Ok(())
}

/// Decompresses one zstd frame from `data` (which may be followed by padding) into `out`
/// (one cluster).
pub fn inflate_zstd(data: &[u8], out: &mut [u8]) -> Result<()> {
    use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
    let bad = |e: std::io::Error| {
        Error::corrupt(format!("compressed cluster is not valid zstd data ({e})"))
    };
    ZSTD.with(|slot| {
        let mut slot = slot.borrow_mut();
        let decoder = match slot.as_mut() {
            Some(d) => {
                d.reinit().map_err(bad)?;
                d
            }
            None => slot.insert(
                zstd::stream::raw::Decoder::new()
                    .map_err(|e| Error::invalid(format!("cannot start a zstd decoder: {e}")))?,
            ),
        };
        let mut input = InBuffer::around(data);
        let mut output = OutBuffer::around(&mut *out);
        let mut frame_done = false;
        while output.pos() < output.capacity() {
            let before = (input.pos, output.pos());
            let hint = decoder.run(&mut input, &mut output).map_err(bad)?;
            if hint == 0 {
                frame_done = true;
                break;
            }
            if (input.pos, output.pos()) == before {
                break;
            }
        }
        let produced = output.pos();
        if produced < out.len() {
            return Err(Error::corrupt(format!(
                "compressed cluster inflates to {produced} bytes, not a whole cluster ({} bytes)",
                out.len()
            )));
        }
        if !frame_done {
            // The cluster is full: the frame must end here, with nothing more to produce.
            let mut extra = [0u8; 1];
            let mut more = OutBuffer::around(&mut extra[..]);
            let hint = decoder.run(&mut input, &mut more).map_err(bad)?;
            if more.pos() > 0 {
                return Err(Error::corrupt(format!(
                    "compressed cluster inflates to more than one cluster ({} bytes)",
                    out.len()
                )));
            }
            if hint != 0 {
                return Err(Error::corrupt(
                    "compressed cluster's zstd frame is cut short",
                ));
            }
        }
        Ok(())
    })
}

/// Reads the compressed cluster at `offset` (`size` bytes by its descriptor) of `file` and
/// inflates it into `out` (one cluster). The descriptor's last sector may run past the end of
/// the file (qemu does not pad the file's last compressed cluster): that part reads as zeros.
pub fn read_cluster(
    file: &dyn Storage,
    offset: u64,
    size: u64,
    compression: Compression,
    out: &mut [u8],
) -> Result<()> {
    if offset >= file.len() {
        return Err(Error::corrupt(format!(
            "compressed cluster at host offset {offset} lies past the end of the file ({} bytes)",
            file.len()
        )));
    }
    INPUT.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        buf.resize(size as usize, 0);
        let n = file.read_at_most(&mut buf, offset)?;
        let data = &buf[..n];
        match compression {
            Compression::Deflate => inflate_deflate(data, out),
            Compression::Zstd => inflate_zstd(data, out),
        }
        .map_err(|e| e.at_offset(offset))
    })
}

/// Copies `dest.len()` bytes from byte `within` of the compressed cluster at `offset`, which
/// this thread inflates unless it did so last (`layer` tells the images apart).
#[allow(clippy::too_many_arguments)]
pub fn copy_from_cluster(
    layer: u64,
    file: &dyn Storage,
    offset: u64,
    size: u64,
    compression: Compression,
    cluster: usize,
    within: usize,
    dest: &mut [u8],
) -> Result<()> {
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let (id, at, data) = &mut *last;
        if *id != layer || *at != offset || data.len() != cluster {
            *id = u64::MAX;
            data.resize(cluster, 0);
            read_cluster(file, offset, size, compression, data)?;
            *id = layer;
            *at = offset;
        }
        dest.copy_from_slice(&data[within..within + dest.len()]);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut out = vec![0u8; c.deflate_compress_bound(data.len())];
        let n = c.deflate_compress(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn deflate_clusters_must_fill_exactly_one_cluster() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 13) as u8).collect();
        let mut packed = raw_deflate(&data);
        packed.extend_from_slice(&[0xAB; 300]); // the rest of the last sector
        let mut out = vec![0u8; 4096];
        inflate_deflate(&packed, &mut out).unwrap();
        assert_eq!(out, data);
        let mut small = vec![0u8; 2048];
        let e = inflate_deflate(&packed, &mut small).unwrap_err();
        assert!(e.to_string().contains("more than one cluster"), "{e}");
        let mut big = vec![0u8; 8192];
        let e = inflate_deflate(&packed, &mut big).unwrap_err();
        assert!(e.to_string().contains("4096 bytes"), "{e}");
        assert!(inflate_deflate(b"\xff\xff\xff garbage", &mut out).is_err());
    }

    #[test]
    fn zstd_clusters_must_fill_exactly_one_cluster() {
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 7) as u8).collect();
        let mut packed = zstd::bulk::compress(&data, 3).unwrap();
        packed.extend_from_slice(&[0u8; 100]);
        let mut out = vec![0u8; 8192];
        inflate_zstd(&packed, &mut out).unwrap();
        assert_eq!(out, data);
        let mut small = vec![0u8; 4096];
        let e = inflate_zstd(&packed, &mut small).unwrap_err();
        assert!(e.to_string().contains("more than one cluster"), "{e}");
        let mut big = vec![0u8; 16384];
        assert!(inflate_zstd(&packed, &mut big).is_err());
        assert!(inflate_zstd(&packed[..packed.len() - 110], &mut out).is_err());
        // The decoder is reused: a good frame still reads after bad ones.
        inflate_zstd(&packed, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn compressed_data_past_the_end_is_refused() {
        let m = Memory::new("m", vec![0u8; 1024]);
        let mut out = vec![0u8; 512];
        let e = read_cluster(&m, 2048, 512, Compression::Deflate, &mut out).unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
    }
}
