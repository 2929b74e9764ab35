//! A window into a larger storage: a member of a tar (OVA, XVA) read in place.

use super::{Storage, fits, past_end};
use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[start, start + len)` of another storage, seen as a storage of its own.
#[derive(Debug, Clone)]
pub struct Window {
    inner: Arc<dyn Storage>,
    start: u64,
    len: u64,
    name: PathBuf,
}

impl Window {
    /// The window of `len` bytes at `start` of `inner`, named `name` in messages. Fails when
    /// the window does not lie inside `inner`.
    pub fn new(
        inner: Arc<dyn Storage>,
        start: u64,
        len: u64,
        name: impl Into<PathBuf>,
    ) -> Result<Window> {
        if start.checked_add(len).is_none_or(|end| end > inner.len()) {
            return Err(Error::corrupt(format!(
                "a member of {len} bytes at {start} runs past the end of the file ({} bytes)",
                inner.len()
            ))
            .at_offset(start)
            .with_path(inner.name()));
        }
        Ok(Window {
            inner,
            start,
            len,
            name: name.into(),
        })
    }

    /// The storage the window looks into.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    /// Where the window starts in the inner storage.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Reads `buf` at `offset` of the window with `read` on the inner storage, bounds checked
    /// and with errors placed in the window.
    fn read_inner(
        &self,
        buf: &mut [u8],
        offset: u64,
        read: impl Fn(&dyn Storage, &mut [u8], u64) -> Result<()>,
    ) -> Result<()> {
        if !fits(offset, buf.len(), self.len) {
            return Err(past_end(self, buf.len(), offset));
        }
        read(self.inner.as_ref(), buf, self.start + offset)
            .map_err(|e| e.relocate(self.name(), self.start))
    }
}

impl Storage for Window {
    fn name(&self) -> &Path {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_inner(buf, offset, |inner, buf, at| inner.read_exact_at(buf, at))
    }

    fn read_exact_at_cached(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_inner(buf, offset, |inner, buf, at| {
            inner.read_exact_at_cached(buf, at)
        })
    }

    fn prefetch(&self, offset: u64, len: u64) {
        let len = len.min(self.len.saturating_sub(offset));
        if len > 0 {
            self.inner.prefetch(self.start + offset, len);
        }
    }

    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        if offset >= self.len {
            return Ok(None);
        }
        Ok(self
            .inner
            .next_data(self.start + offset)?
            .map(|d| d - self.start)
            .filter(|&d| d < self.len))
    }

    fn next_hole(&self, offset: u64) -> Result<u64> {
        if offset >= self.len {
            return Ok(self.len);
        }
        Ok(self
            .inner
            .next_hole(self.start + offset)?
            .saturating_sub(self.start)
            .min(self.len))
    }

    fn allocated_bytes(&self) -> u64 {
        self.len
    }

    fn host_file(&self) -> Option<(&File, u64)> {
        let (file, base) = self.inner.host_file()?;
        Some((file, base.checked_add(self.start)?))
    }
}
