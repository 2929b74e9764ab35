//! A buffered, front-to-back `Write` over a sink, for writers that emit many small pieces
//! (markers, headers) in order.

use super::Sink;
use crate::error::Result;
use std::io::Write;

/// Buffers writes and hands them to a sink at increasing offsets.
pub struct SequentialWriter<'a> {
    sink: Box<dyn Sink + 'a>,
    /// Where `buf` starts in the sink.
    start: u64,
    buf: Vec<u8>,
}

const CAPACITY: usize = 1 << 20;

impl<'a> SequentialWriter<'a> {
    /// A writer starting at byte 0 of `sink`.
    pub fn new(sink: Box<dyn Sink + 'a>) -> SequentialWriter<'a> {
        SequentialWriter {
            sink,
            start: 0,
            buf: Vec::with_capacity(CAPACITY),
        }
    }

    /// Bytes written so far (buffered ones included).
    pub fn position(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Hands the buffered bytes to the sink.
    pub fn flush_buffer(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.sink.write_at(&self.buf, self.start)?;
            self.start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends `bytes`.
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + bytes.len() > CAPACITY {
            self.flush_buffer()?;
        }
        if bytes.len() >= CAPACITY {
            self.sink.write_at(bytes, self.start)?;
            self.start += bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Flushes the buffer and finishes the sink.
    pub fn finish(mut self) -> Result<()> {
        self.flush_buffer()?;
        self.sink.finish()
    }
}

impl Write for SequentialWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_buffer().map_err(std::io::Error::other)
    }
}
