//! Reading a streamOptimized VMDK from a pipe: header, descriptor, then markers in one
//! forward pass. Grains go to the engine still compressed, and its workers inflate them in
//! parallel ([`GrainDecoder`]); tables, directory and footer are skipped, since the grain
//! markers carry their own LBA.

use super::grain::{GrainDecoder, MARKER_EOS, Marker, max_compressed_size};
use super::sparse_header::{MAGIC, SparseHeader};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::stream::{ChunkDecoder, StreamPayload, StreamRun, StreamSource};
use std::io::{ErrorKind, Read};
use std::sync::Arc;

/// A stream-optimized VMDK read front to back.
pub struct StreamOptimizedSource {
    reader: Box<dyn Read + Send>,
    header: SparseHeader,
    /// Bytes consumed so far.
    pos: u64,
    /// The end of the last run returned.
    last_end: u64,
    decoder: Arc<dyn ChunkDecoder>,
    done: bool,
}

/// Opens a stream-optimized VMDK arriving on `reader` (standard input, a network stream).
pub fn open_stream(reader: Box<dyn Read + Send>) -> Result<Box<dyn StreamSource>> {
    Ok(Box::new(StreamOptimizedSource::new(reader)?))
}

impl StreamOptimizedSource {
    /// Reads the header and skips the metadata in front of the first grain.
    pub fn new(reader: Box<dyn Read + Send>) -> Result<StreamOptimizedSource> {
        let mut s = StreamOptimizedSource {
            reader,
            header: PLACEHOLDER,
            pos: 0,
            last_end: 0,
            decoder: Arc::new(GrainDecoder { grain_bytes: 512 }),
            done: false,
        };
        let mut head = [0u8; 512];
        if s.fill(&mut head)? < head.len() || !head.starts_with(MAGIC) {
            return Err(Error::invalid(
                "the input is not a sparse VMDK: only streamOptimized VMDKs can be read from a pipe",
            ));
        }
        let header = SparseHeader::parse(&head)?;
        if !header.compressed || !header.markers {
            return Err(Error::invalid(
                "this VMDK is not stream-optimized (no compressed grains with markers), so it cannot be read from a pipe; give it as a file",
            ));
        }
        s.header = header;
        s.decoder = Arc::new(GrainDecoder {
            grain_bytes: header.grain_bytes() as usize,
        });
        let first = header.first_data_sector();
        if !s.skip(first.saturating_mul(512) - 512)? {
            return Err(s.truncated("the metadata in front of the first grain"));
        }
        Ok(s)
    }

    /// The stream's header.
    pub fn header(&self) -> &SparseHeader {
        &self.header
    }

    /// Reads until `buf` is full or the stream ends; returns the bytes read. Only a failed
    /// read is an error: what a short count means is the caller's to say.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io("cannot read the input stream", e).at_offset(self.pos));
                }
            }
        }
        Ok(filled)
    }

    /// The error for a stream that ends before what it announced: `inside` says where.
    fn truncated(&self, inside: &str) -> Error {
        Error::corrupt(format!(
            "the stream is truncated: it ends at byte {} inside {inside}",
            self.pos
        ))
        .at_offset(self.pos)
    }

    /// Skips `n` bytes; false when the stream ends first.
    fn skip(&mut self, mut n: u64) -> Result<bool> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            if self.fill(&mut buf[..k])? < k {
                return Ok(false);
            }
            n -= k as u64;
        }
        Ok(true)
    }
}

/// A header to hold the place until the real one is read (never used for anything).
const PLACEHOLDER: SparseHeader = SparseHeader {
    version: 3,
    flags: 0,
    capacity: 0,
    grain_sectors: 1,
    descriptor_offset: 0,
    descriptor_size: 0,
    gtes_per_gt: 512,
    rgd_offset: 0,
    gd_offset: 0,
    overhead: 0,
    dirty: false,
    compressed: true,
    markers: true,
};

impl StreamSource for StreamOptimizedSource {
    fn format(&self) -> Format {
        super::FORMAT
    }

    fn virtual_size(&self) -> u64 {
        self.header.capacity * 512
    }

    fn next_run(&mut self) -> Result<Option<StreamRun>> {
        let grain_bytes = self.header.grain_bytes();
        let capacity = self.virtual_size();
        while !self.done {
            let at = self.pos;
            let mut sector = [0u8; 512];
            match self.fill(&mut sector)? {
                // qemu-img's stream files have no end-of-stream marker: the end of the data is
                // the end of the disk.
                0 => {
                    self.done = true;
                    break;
                }
                512 => {}
                _ => return Err(self.truncated(&format!("the marker at byte {at}"))),
            }
            let marker = Marker::parse(&sector);
            if marker.size == 0 {
                if marker.kind == MARKER_EOS {
                    self.done = true;
                    break;
                }
                // Grain table, directory, footer (or a type we do not know): skip its sectors.
                let bytes = marker.value.checked_mul(512).ok_or_else(|| {
                    Error::corrupt("metadata marker's length is out of range").at_offset(at)
                })?;
                if !self.skip(bytes)? {
                    return Err(self.truncated(&format!("the metadata announced at byte {at}")));
                }
                continue;
            }
            let size = u64::from(marker.size);
            if size > max_compressed_size(grain_bytes) {
                return Err(Error::corrupt(format!(
                    "compressed grain size {size} is invalid for a grain of {grain_bytes} bytes"
                ))
                .at_offset(at));
            }
            let offset = marker
                .value
                .checked_mul(512)
                .filter(|&o| o < capacity)
                .ok_or_else(|| {
                    Error::corrupt(format!(
                        "grain marker names sector {} past the disk's end ({} sectors)",
                        marker.value, self.header.capacity
                    ))
                    .at_offset(at)
                })?;
            if offset < self.last_end {
                return Err(Error::unsupported(format!(
                    "grains are out of order (sector {} after byte {}): this VMDK must be read as a file, not from a pipe",
                    marker.value, self.last_end
                ))
                .at_offset(at));
            }
            // The grain's bytes go straight into the payload (its size is bounded above by
            // one grain's worth), then the sector padding is skipped.
            let total = (12 + size).div_ceil(512) * 512;
            let first = (size as usize).min(500);
            let mut bytes = vec![0u8; size as usize];
            bytes[..first].copy_from_slice(&sector[12..12 + first]);
            let padding = total - 512 - (size - first as u64);
            if self.fill(&mut bytes[first..])? < size as usize - first || !self.skip(padding)? {
                return Err(self.truncated(&format!("the grain whose marker is at byte {at}")));
            }
            let len = grain_bytes.min(capacity - offset);
            self.last_end = offset + len;
            return Ok(Some(StreamRun {
                offset,
                len,
                payload: StreamPayload::Encoded {
                    bytes,
                    decoder: Arc::clone(&self.decoder),
                },
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::vmdk::grain::deflate_grain;
    use crate::formats::vmdk::sparse_header::{
        FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_CHECK, GD_AT_END,
    };

    fn stream(grains: &[u8]) -> Vec<u8> {
        let header = SparseHeader {
            version: 3,
            flags: FLAG_NEWLINE_CHECK | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: 64,
            grain_sectors: 8,
            overhead: 1,
            gd_offset: GD_AT_END,
            ..PLACEHOLDER
        };
        let mut b = header.to_bytes().to_vec();
        for &g in grains {
            // Noise, so that the grain takes several sectors.
            let mut x = u32::from(g) + 1;
            let data: Vec<u8> = (0..4096)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let mut enc = Vec::new();
            deflate_grain(u64::from(g) * 4096, &data, 4096, &mut enc).unwrap();
            b.extend_from_slice(&enc);
        }
        b
    }

    fn runs(bytes: Vec<u8>) -> Result<usize> {
        let mut s = StreamOptimizedSource::new(Box::new(std::io::Cursor::new(bytes)))?;
        let mut n = 0;
        while s.next_run()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn a_stream_cut_short_is_truncated_and_a_whole_one_is_not() {
        let whole = stream(&[0, 3]);
        assert_eq!(runs(whole.clone()).unwrap(), 2);
        // Inside the second grain's data, inside its marker sector, inside the header.
        let second = stream(&[0]).len();
        for cut in [second + 600, second + 100, 300] {
            let err = runs(whole[..cut].to_vec()).unwrap_err().to_string();
            let want = if cut == 300 {
                "not a sparse VMDK"
            } else {
                "truncated"
            };
            assert!(err.contains(want), "cut at {cut}: {err}");
        }
    }
}
