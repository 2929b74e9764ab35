//! Compressed grains and markers (stream-optimized extents).
//!
//! A compressed grain is a marker (the grain's first sector as a u64, then the compressed size
//! as a u32) followed by a zlib stream (RFC 1950, despite the specification's word "deflate"),
//! padded to a sector. A marker with size 0 is a metadata marker: its u64 is the number of
//! sectors that follow and a u32 type says what they are.
//!
//! Inflating never produces more than one grain: a stream that would is corrupt, and the
//! buffer it inflates into is allocated from the header's (validated) grain size, never from a
//! size read from the file. libdeflate is used both ways: it compresses two to three times
//! faster than zlib at the same or a better ratio, and as grains are whole buffers its
//! one-shot interface fits exactly.

use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};
use crate::stream::ChunkDecoder;
use crate::writer::ChunkEncoder;
use libdeflater::{CompressionLvl, Compressor, DecompressionError, Decompressor};
use std::cell::RefCell;

/// End-of-stream marker type.
pub const MARKER_EOS: u32 = 0;
/// Grain table marker type.
pub const MARKER_GT: u32 = 1;
/// Grain directory marker type.
pub const MARKER_GD: u32 = 2;
/// Footer marker type.
pub const MARKER_FOOTER: u32 = 3;

/// The libdeflate level for writing: chosen by measurement on an ext4 image (see the
/// stream-optimized writer): about 2.2x faster than zlib level 6 with a slightly smaller file.
pub const COMPRESSION_LEVEL: i32 = 4;

/// One 512-byte marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The grain's LBA (grain markers) or the sectors of metadata that follow (others).
    pub value: u64,
    /// Compressed size; 0 for metadata markers.
    pub size: u32,
    /// Metadata marker type (meaningful when `size` is 0).
    pub kind: u32,
}

impl Marker {
    /// Parses the first 16 bytes of a sector.
    pub fn parse(sector: &[u8]) -> Marker {
        let u32_at = |i: usize| u32::from_le_bytes(sector[i..i + 4].try_into().expect("4 bytes"));
        Marker {
            value: u64::from_le_bytes(sector[0..8].try_into().expect("8 bytes")),
            size: u32_at(8),
            kind: u32_at(12),
        }
    }

    /// A metadata marker sector.
    pub fn metadata(sectors: u64, kind: u32) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0..8].copy_from_slice(&sectors.to_le_bytes());
        s[12..16].copy_from_slice(&kind.to_le_bytes());
        s
    }
}

/// The largest compressed grain we accept: deflate expands incompressible data by well under
/// 1%, so twice the grain is a generous bound that still stops a hostile size field.
pub fn max_compressed_size(grain_bytes: u64) -> u64 {
    grain_bytes * 2 + 4096
}

thread_local! {
    static DECOMPRESSOR: RefCell<Decompressor> = RefCell::new(Decompressor::new());
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Inflates a zlib stream into `out` (one grain), returning the number of bytes produced.
pub fn inflate(data: &[u8], out: &mut [u8]) -> Result<usize> {
    DECOMPRESSOR.with(|d| {
        d.borrow_mut()
            .zlib_decompress(data, out)
            .map_err(|e| match e {
                DecompressionError::InsufficientSpace => Error::corrupt(format!(
                    "compressed grain inflates to more than one grain ({} bytes)",
                    out.len()
                )),
                DecompressionError::BadData => {
                    Error::corrupt("compressed grain is not a valid zlib stream")
                }
            })
    })
}

/// How a compressed grain is introduced in its extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrainHead {
    /// A marker: the grain's LBA and the stream's size (stream-optimized extents).
    Marker,
    /// The stream's size alone.
    Size,
}

impl GrainHead {
    /// Bytes of the head.
    pub fn bytes(self) -> u64 {
        match self {
            GrainHead::Marker => 12,
            GrainHead::Size => 4,
        }
    }
}

/// What precedes a compressed grain's zlib stream: its marker (LBA and size) in an extent
/// with markers, its size alone otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressedHead {
    /// The LBA the marker names (extents with markers).
    pub lba: Option<u64>,
    /// Bytes of the zlib stream.
    pub size: u64,
    /// Bytes of the head itself.
    pub head_len: u64,
}

impl CompressedHead {
    /// The byte after the grain's zlib stream, for a grain whose head is at `offset`.
    pub fn end(&self, offset: u64) -> u64 {
        offset
            .saturating_add(self.head_len)
            .saturating_add(self.size)
    }
}

/// Reads the head of the compressed grain at byte `offset` of `file`; `None` when the file
/// ends inside it.
pub fn read_head(
    file: &dyn Storage,
    offset: u64,
    kind: GrainHead,
) -> Result<Option<CompressedHead>> {
    let head_len = kind.bytes();
    if offset
        .checked_add(head_len)
        .is_none_or(|end| end > file.len())
    {
        return Ok(None);
    }
    let mut head = [0u8; 16];
    file.read_exact_at(&mut head[..head_len as usize], offset)?;
    Ok(Some(match kind {
        GrainHead::Marker => {
            let m = Marker::parse(&head);
            CompressedHead {
                lba: Some(m.value),
                size: u64::from(m.size),
                head_len,
            }
        }
        GrainHead::Size => CompressedHead {
            lba: None,
            size: u64::from(u32::from_le_bytes(head[..4].try_into().expect("4 bytes"))),
            head_len,
        },
    }))
}

/// Reads the compressed grain whose head (of `kind`) is at byte `offset` of `file` and
/// inflates it into `out` (exactly one grain long). Returns the LBA its marker names (when
/// it has one) and the number of bytes inflated.
pub fn read_compressed(
    file: &dyn Storage,
    offset: u64,
    kind: GrainHead,
    out: &mut [u8],
) -> Result<(Option<u64>, usize)> {
    let head = read_head(file, offset, kind)?.ok_or_else(|| {
        Error::corrupt(format!(
            "compressed grain's header runs past the end of the file ({} bytes)",
            file.len()
        ))
        .at_offset(offset)
    })?;
    let grain_bytes = out.len() as u64;
    let size = head.size;
    if size == 0 || size > max_compressed_size(grain_bytes) {
        return Err(Error::corrupt(format!(
            "compressed grain size {size} is invalid for a grain of {grain_bytes} bytes"
        ))
        .at_offset(offset));
    }
    let data = file.read_vec(offset + head.head_len, size, "compressed grain")?;
    let n = inflate(&data, out).map_err(|e| e.at_offset(offset))?;
    Ok((head.lba, n))
}

/// Compresses one grain at virtual byte `offset` into `out`: marker, zlib stream, zero padding
/// to a whole sector. A short last grain is padded with zeros to a whole grain first, so that
/// every reader sees full grains.
pub fn deflate_grain(
    offset: u64,
    data: &[u8],
    grain_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let padded;
    let input: &[u8] = if data.len() < grain_bytes {
        let mut p = vec![0u8; grain_bytes];
        p[..data.len()].copy_from_slice(data);
        padded = p;
        &padded
    } else {
        data
    };
    COMPRESSOR.with(|c| {
        let mut slot = c.borrow_mut();
        let compressor = slot.get_or_insert_with(|| {
            Compressor::new(CompressionLvl::new(COMPRESSION_LEVEL).expect("a valid level"))
        });
        let bound = compressor.zlib_compress_bound(input.len());
        out.clear();
        out.resize(12 + bound, 0);
        let n = compressor
            .zlib_compress(input, &mut out[12..])
            .map_err(|e| Error::invalid(format!("compression failed: {e:?}")))?;
        out[0..8].copy_from_slice(&(offset / 512).to_le_bytes());
        out[8..12].copy_from_slice(&(n as u32).to_le_bytes());
        let total = (12 + n).div_ceil(512) * 512;
        out.truncate(12 + n);
        out.resize(total, 0);
        Ok(())
    })
}

/// The stream-optimized writer's encoder: each data granule (one grain) becomes a marker and
/// its compressed bytes, ready to append. Runs on the engine's worker threads.
pub struct GrainEncoder {
    /// Bytes per grain.
    pub grain_bytes: usize,
}

impl ChunkEncoder for GrainEncoder {
    fn encode(&self, offset: u64, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        deflate_grain(offset, data, self.grain_bytes, out)
    }
}

/// Inflates grains read from a stream, on the engine's worker threads.
pub struct GrainDecoder {
    /// Bytes per grain.
    pub grain_bytes: usize,
}

impl ChunkDecoder for GrainDecoder {
    fn decode(&self, encoded: &[u8], out: &mut [u8]) -> Result<()> {
        SCRATCH.with(|s| {
            let mut scratch = s.borrow_mut();
            scratch.resize(self.grain_bytes, 0);
            let n = inflate(encoded, &mut scratch)?;
            if n < out.len() {
                return Err(Error::corrupt(format!(
                    "compressed grain inflates to {n} bytes, {} expected",
                    out.len()
                )));
            }
            out.copy_from_slice(&scratch[..out.len()]);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_then_inflate_round_trips_with_marker() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        deflate_grain(128 * 512, &data, 65536, &mut out).unwrap();
        assert_eq!(out.len() % 512, 0);
        let m = Marker::parse(&out[..16]);
        assert_eq!(m.value, 128);
        let mut back = vec![0u8; 65536];
        let n = inflate(&out[12..12 + m.size as usize], &mut back).unwrap();
        assert_eq!((n, &back[..]), (65536, &data[..]));
        // A short last grain is padded to a full one.
        deflate_grain(0, &data[..1000], 65536, &mut out).unwrap();
        let m = Marker::parse(&out[..16]);
        inflate(&out[12..12 + m.size as usize], &mut back).unwrap();
        assert_eq!(&back[..1000], &data[..1000]);
        assert!(back[1000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_grain_that_inflates_past_one_grain_is_corrupt() {
        let mut out = Vec::new();
        deflate_grain(0, &[7u8; 8192], 8192, &mut out).unwrap();
        let m = Marker::parse(&out[..16]);
        let mut small = vec![0u8; 4096];
        let err = inflate(&out[12..12 + m.size as usize], &mut small).unwrap_err();
        assert!(err.to_string().contains("more than one grain"), "{err}");
        let err = inflate(b"not zlib at all", &mut small).unwrap_err();
        assert!(err.to_string().contains("not a valid zlib"), "{err}");
        let dec = GrainDecoder { grain_bytes: 4096 };
        let mut two = vec![0u8; 2];
        assert!(
            dec.decode(&out[12..12 + m.size as usize], &mut two)
                .is_err()
        );
    }
}
