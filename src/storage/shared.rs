//! A storage whose every read goes through the page cache: for bytes that two readers read at
//! about the same time, such as a package's disk converted by one thread while another checks
//! its digest (`ova/open.rs`). Read around the cache (host_file/direct.rs), each reader would
//! fetch the bytes from the device; through it, the second finds them there.

use super::{FileId, Storage};
use crate::error::Result;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// `inner`, with every read made through the page cache.
#[derive(Debug)]
pub struct SharedReads(Arc<dyn Storage>);

impl SharedReads {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> SharedReads {
        SharedReads(inner)
    }
}

impl Storage for SharedReads {
    fn name(&self) -> &Path {
        self.0.name()
    }
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0.read_exact_at_cached(buf, offset)
    }
    fn read_exact_at_cached(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.0.read_exact_at_cached(buf, offset)
    }
    fn prefetch(&self, offset: u64, len: u64) {
        self.0.prefetch(offset, len)
    }
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        self.0.next_data(offset)
    }
    fn next_hole(&self, offset: u64) -> Result<u64> {
        self.0.next_hole(offset)
    }
    fn allocated_bytes(&self) -> u64 {
        self.0.allocated_bytes()
    }
    fn identity(&self) -> Option<FileId> {
        self.0.identity()
    }
    fn host_file(&self) -> Option<(&File, u64)> {
        self.0.host_file()
    }
}
