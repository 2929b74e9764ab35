//! A byte stream as a sink: standard output, a socket, anything `Write`.

use super::{Access, Sink};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Writes strictly front to back into a byte stream, filling gaps with zeros.
pub struct PipeSink<'a> {
    out: Box<dyn Write + Send + 'a>,
    name: PathBuf,
    pos: u64,
    len: Option<u64>,
}

impl<'a> PipeSink<'a> {
    /// A sink over `out`, named `name` in messages.
    pub fn new(out: Box<dyn Write + Send + 'a>, name: impl Into<PathBuf>) -> PipeSink<'a> {
        PipeSink {
            out,
            name: name.into(),
            pos: 0,
            len: None,
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::io("cannot write to the output stream", e)
            .at_offset(self.pos)
            .with_path(&self.name)
    }

    fn pad_to(&mut self, offset: u64) -> Result<()> {
        while self.pos < offset {
            let n = (offset - self.pos).min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..n]).map_err(|e| self.io(e))?;
            self.pos += n as u64;
        }
        Ok(())
    }
}

impl Sink for PipeSink<'_> {
    fn name(&self) -> &Path {
        &self.name
    }

    fn access(&self) -> Access {
        Access::Sequential
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if offset < self.pos {
            return Err(Error::invalid(format!(
                "internal error: a stream cannot go back from byte {} to {offset}",
                self.pos
            ))
            .with_path(&self.name));
        }
        self.pad_to(offset)?;
        self.out.write_all(buf).map_err(|e| self.io(e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn write_zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if offset < self.pos {
            return Err(Error::invalid(format!(
                "internal error: a stream cannot go back from byte {} to {offset}",
                self.pos
            ))
            .with_path(&self.name));
        }
        self.pad_to(offset.saturating_add(len))
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        self.len = Some(len);
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        if let Some(len) = self.len {
            self.pad_to(len)?;
        }
        self.out.flush().map_err(|e| self.io(e))
    }
}
