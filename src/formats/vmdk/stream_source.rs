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
        if !s.read_full(&mut head)? || !head.starts_with(MAGIC) {
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
        s.skip(first.saturating_mul(512) - 512)?;
        Ok(s)
    }

    /// The stream's header.
    pub fn header(&self) -> &SparseHeader {
        &self.header
    }

    /// Fills `buf`; false at a clean end of stream before the first byte.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(Error::corrupt(format!(
                        "the stream ends in the middle of a sector ({} of {} bytes)",
                        filled,
                        buf.len()
                    ))
                    .at_offset(self.pos));
                }
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
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            if !self.read_full(&mut buf[..k])? {
                return Err(
                    Error::corrupt("the stream ends inside its metadata").at_offset(self.pos)
                );
            }
            n -= k as u64;
        }
        Ok(())
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
            if !self.read_full(&mut sector)? {
                // qemu-img's stream files have no end-of-stream marker: the end of the data is
                // the end of the disk.
                self.done = true;
                break;
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
                self.skip(bytes)?;
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
            let total = (12 + size).div_ceil(512) * 512;
            let mut rest = vec![0u8; (total - 512) as usize];
            if !rest.is_empty() && !self.read_full(&mut rest)? {
                return Err(Error::corrupt("the stream ends inside a grain").at_offset(self.pos));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            let first = (size as usize).min(500);
            bytes.extend_from_slice(&sector[12..12 + first]);
            bytes.extend_from_slice(&rest[..size as usize - first]);
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
