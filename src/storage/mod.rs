//! Storage: the bytes under a format parser.
//!
//! Every parser reads through [`Storage`] rather than a concrete host file, so one reader works
//! over a file on disk ([`HostFile`](crate::host_file::HostFile)), a [`Window`] into a larger
//! storage (a member of an OVA or XVA tar, read in place), [`Memory`] (fuzzing, tests) and an
//! [`Overlay`] (a log replayed in memory over a file that must not be written).
//!
//! Reads are positional and take `&self`, so the conversion engine's workers share one storage.
//! Every read is bounds-checked and its error names the storage and the offset.

mod concat;
mod memory;
mod overlay;
mod shared;
mod window;

pub use concat::Concat;
pub use memory::Memory;
pub use overlay::Overlay;
pub use shared::SharedReads;
pub use window::Window;

use crate::error::{Error, Result};
use std::fs::File;
use std::path::Path;

/// The identity of a file on a host (device and inode), for loop detection and for refusing a
/// destination that is one of the source's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The device holding the file.
    pub dev: u64,
    /// The file's inode number.
    pub ino: u64,
}

/// Bytes a parser reads: a length, positional reads and, where the storage knows them, its
/// holes (ranges that read as zeros without being stored).
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The name used in messages (a path, or a description such as `disk.ova:disk1.vmdk`).
    fn name(&self) -> &Path;

    /// The number of bytes.
    fn len(&self) -> u64;

    /// True when the storage holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads exactly `buf.len()` bytes at `offset`. A read past the end is an error that says
    /// where the storage ends.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// [`read_exact_at`](Storage::read_exact_at), through the page cache wherever the
    /// storage has one: for a second reader of bytes another one reads at about the same time
    /// (a package's digest, checked by a thread of its own while the disk is converted), so
    /// that the two cost the device one read. Plain reads of a cold file may go around the
    /// cache (host_file/direct.rs), and then each reader would read from the device.
    fn read_exact_at_cached(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_exact_at(buf, offset)
    }

    /// A hint that `[offset, offset + len)` will be read soon. Best effort.
    fn prefetch(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// The first stored byte at or after `offset`, or `None` when only holes (or nothing)
    /// follow. Storages that do not know their holes say that everything is stored.
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        Ok((offset < self.len()).then_some(offset))
    }

    /// The first byte at or after `offset` (a stored byte) that is not stored: the end of the
    /// run of stored bytes that `offset` is in, or the length.
    fn next_hole(&self, offset: u64) -> Result<u64> {
        let _ = offset;
        Ok(self.len())
    }

    /// Bytes the storage occupies on its device (`du`), as qemu-img's `actual-size` counts them.
    fn allocated_bytes(&self) -> u64 {
        self.len()
    }

    /// The host file's identity, for storages that are (or lie in) one.
    fn identity(&self) -> Option<FileId> {
        None
    }

    /// The host file whose bytes these are, unchanged, and where byte 0 of the storage lies in
    /// it: for copies the kernel makes from file to file (`convert -C`, `copy_file_range`).
    /// `None` (the default) where the bytes are not simply a host file's (memory, a log
    /// replayed over a file, chunks joined or decompressed).
    fn host_file(&self) -> Option<(&File, u64)> {
        None
    }
}

/// Reads built on [`Storage::read_exact_at`], for every storage.
pub trait StorageExt: Storage {
    /// Reads `len` bytes at `offset` into a new vector. The length is checked against the
    /// storage's size before anything is allocated, so a corrupt table size cannot make us
    /// reserve memory for bytes that are not there. `what` names the structure for the message.
    fn read_vec(&self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(Error::corrupt(format!(
                "{what} of {len} bytes runs past the end of the file ({} bytes)",
                self.len()
            ))
            .at_offset(offset)
            .with_path(self.name()));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Reads up to `buf.len()` bytes at `offset`, stopping at the end; returns how many.
    fn read_at_most(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let available = self.len().saturating_sub(offset).min(buf.len() as u64) as usize;
        if available > 0 {
            self.read_exact_at(&mut buf[..available], offset)?;
        }
        Ok(available)
    }

    /// True when `[offset, offset + len)` is entirely a hole: it reads as zeros and occupies
    /// nothing. Parsers use it to skip tables that a sparse file leaves out, without reading
    /// (or allocating) them.
    fn is_hole(&self, offset: u64, len: u64) -> Result<bool> {
        let end = offset.saturating_add(len).min(self.len());
        if offset >= end {
            return Ok(true);
        }
        Ok(self.next_data(offset)?.is_none_or(|d| d >= end))
    }
}

impl<T: Storage + ?Sized> StorageExt for T {}

/// A shared storage is a storage: parsers that keep an `Arc` pass it where `&dyn Storage` is
/// wanted.
impl<T: Storage + ?Sized> Storage for std::sync::Arc<T> {
    fn name(&self) -> &Path {
        (**self).name()
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn read_exact_at_cached(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        (**self).read_exact_at_cached(buf, offset)
    }
    fn prefetch(&self, offset: u64, len: u64) {
        (**self).prefetch(offset, len)
    }
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        (**self).next_data(offset)
    }
    fn next_hole(&self, offset: u64) -> Result<u64> {
        (**self).next_hole(offset)
    }
    fn allocated_bytes(&self) -> u64 {
        (**self).allocated_bytes()
    }
    fn identity(&self) -> Option<FileId> {
        (**self).identity()
    }
    fn host_file(&self) -> Option<(&File, u64)> {
        (**self).host_file()
    }
}

/// The error for a read of `len` bytes at `offset` of `storage` that runs past its end.
pub(crate) fn past_end(storage: &(impl Storage + ?Sized), len: usize, offset: u64) -> Error {
    Error::corrupt(format!(
        "read of {len} bytes runs past the end of the file ({} bytes)",
        storage.len()
    ))
    .at_offset(offset)
    .with_path(storage.name())
}

/// True when a read of `len` bytes at `offset` fits in `size` bytes.
pub(crate) fn fits(offset: u64, len: usize, size: u64) -> bool {
    offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reads_are_bounds_checked_with_context() {
        let m = Memory::new("mem", vec![7u8; 100]);
        let mut buf = [0u8; 10];
        m.read_exact_at(&mut buf, 90).unwrap();
        assert_eq!(buf, [7u8; 10]);
        let err = m.read_exact_at(&mut buf, 95).unwrap_err();
        assert!(err.to_string().contains("offset 95"), "{err}");
        assert!(err.to_string().starts_with("mem: "), "{err}");
        assert!(m.read_vec(0, 1 << 40, "table").is_err());
        assert!(m.read_vec(u64::MAX, 2, "table").is_err());
        assert_eq!(m.read_at_most(&mut buf, 95).unwrap(), 5);
    }

    #[test]
    fn a_window_is_a_storage_of_its_own() {
        let base: Arc<dyn Storage> = Arc::new(Memory::new(
            "outer.tar",
            (0..=255u8).cycle().take(4096).collect::<Vec<u8>>(),
        ));
        let w = Window::new(base, 1000, 100, "outer.tar:member").unwrap();
        assert_eq!(w.len(), 100);
        let mut buf = [0u8; 4];
        w.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [232, 233, 234, 235]);
        let err = w.read_exact_at(&mut buf, 98).unwrap_err().to_string();
        assert!(
            err.contains("outer.tar:member") && err.contains("offset 98"),
            "{err}"
        );
        assert!(Window::new(w.inner().clone(), 4000, 200, "x").is_err());
    }
}
