//! A host file (the storage of an image the user or the gate opened) with bounds-checked
//! positional I/O whose errors name the file and the offset.
//!
//! All image I/O goes through positional reads and writes (`pread`/`pwrite`), never the shared
//! file cursor, so one open file serves many worker threads at once without locks.

mod direct;

pub use direct::{SourceReads, set_source_reads, source_reads};

use crate::error::{Error, Result};
use crate::storage::{FileId, Storage, fits, past_end};
use rustix::io::Errno;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Whether finished outputs are flushed to stable storage before they are renamed into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flush before the rename, so that a completed output survives a crash (the default).
    Flush,
    /// Leave the data to the kernel's writeback, as qemu-img's default `-t unsafe` does.
    Unsafe,
}

/// An open file of an image: the file, its path (for messages) and its length when opened.
pub struct HostFile {
    file: File,
    path: PathBuf,
    len: u64,
    /// Large reads of what the page cache does not hold (read-only files only).
    direct: direct::Direct,
}

impl std::fmt::Debug for HostFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

impl HostFile {
    /// Opens `path` read-only. Directories are refused with a clear message (Linux lets one
    /// open them for reading and fails only at the first read).
    pub fn open(path: &Path) -> Result<HostFile> {
        Self::open_with(path, OpenOptions::new().read(true))
    }

    /// Opens `path` for reading and writing (repairs, in-place updates).
    pub fn open_rw(path: &Path) -> Result<HostFile> {
        Self::open_with(path, OpenOptions::new().read(true).write(true))
    }

    fn open_with(path: &Path, options: &OpenOptions) -> Result<HostFile> {
        let meta =
            std::fs::metadata(path).map_err(|e| Error::io("cannot open", e).with_path(path))?;
        if meta.is_dir() {
            return Err(Error::invalid("is a directory, not a disk image").with_path(path));
        }
        let file = options
            .open(path)
            .map_err(|e| Error::io("cannot open", e).with_path(path))?;
        Self::from_file(file, path)
    }

    /// Wraps an already open file (a temporary output, a file the caller created).
    pub fn from_file(mut file: File, path: &Path) -> Result<HostFile> {
        // Seeking to the end measures block devices too, where metadata reports 0.
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("cannot measure", e).with_path(path))?;
        Ok(HostFile {
            file,
            path: path.to_path_buf(),
            len,
            direct: direct::Direct::default(),
        })
    }

    /// The path the file was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Writes all of `buf` at `offset`, growing the recorded length when the write extends the file.
    pub fn write_all_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| {
            Error::io("write failed", e)
                .at_offset(offset)
                .with_path(&self.path)
        })?;
        self.len = self.len.max(offset + buf.len() as u64);
        Ok(())
    }

    /// Writes `len` zeros at `offset` (in place: a change that must read as zeros at once,
    /// which a hole punched behind a cached page does not promise everywhere).
    pub fn write_zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64);
            self.write_all_at(&zeros[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }

    /// Copies `len` bytes from `from` to `to` in this file, a bounded piece at a time (the
    /// ranges must not overlap): how in-place changes move a block out of a table's way.
    pub fn copy_within(&mut self, from: u64, to: u64, len: u64) -> Result<()> {
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            self.read_exact_at(&mut buf[..n], from + done)?;
            self.write_all_at(&buf[..n], to + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Sets the file's length (truncating or extending with a hole).
    pub fn set_len(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("cannot set length", e).with_path(&self.path))?;
        self.len = len;
        Ok(())
    }

    /// Flushes the data (and the length) to stable storage.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("cannot flush", e).with_path(&self.path))
    }
}

impl HostFile {
    /// A bounds-checked read through the page cache.
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if !fits(offset, buf.len(), self.len) {
            return Err(past_end(self, buf.len(), offset));
        }
        self.file.read_exact_at(buf, offset).map_err(|e| {
            let err = if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::corrupt("file is shorter than expected (truncated while reading?)")
            } else {
                Error::io("read failed", e)
            };
            err.at_offset(offset).with_path(&self.path)
        })
    }
}

impl Storage for HostFile {
    fn name(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if fits(offset, buf.len(), self.len) && self.direct.read(&self.file, buf, offset) {
            return Ok(());
        }
        self.read_cached(buf, offset)
    }

    fn read_exact_at_cached(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_cached(buf, offset)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        let _ = rustix::fs::fadvise(
            &self.file,
            offset,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::WillNeed,
        );
    }

    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        if offset >= self.len {
            return Ok(None);
        }
        match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Data(offset)) {
            Ok(pos) => Ok((pos < self.len).then_some(pos)),
            Err(Errno::NXIO) => Ok(None),
            // Not supported here (some file systems, devices): everything counts as stored,
            // which is always safe.
            Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => Ok(Some(offset)),
            Err(e) => Err(Error::io("cannot query allocation (SEEK_DATA)", e.into())
                .at_offset(offset)
                .with_path(&self.path)),
        }
    }

    fn next_hole(&self, offset: u64) -> Result<u64> {
        if offset >= self.len {
            return Ok(self.len);
        }
        match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Hole(offset)) {
            Ok(pos) => Ok(pos.clamp(offset, self.len)),
            Err(Errno::NXIO) | Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => Ok(self.len),
            Err(e) => Err(Error::io("cannot query allocation (SEEK_HOLE)", e.into())
                .at_offset(offset)
                .with_path(&self.path)),
        }
    }

    fn allocated_bytes(&self) -> u64 {
        self.file.metadata().map(|m| m.blocks() * 512).unwrap_or(0)
    }

    fn identity(&self) -> Option<FileId> {
        self.file.metadata().ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    fn host_file(&self) -> Option<(&File, u64)> {
        Some((&self.file, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageExt;
    use std::io::Write;

    #[test]
    fn reads_are_bounds_checked_with_context() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&[7u8; 100]).unwrap();
        let f = HostFile::open(tmp.path()).unwrap();
        let mut buf = [0u8; 10];
        f.read_exact_at(&mut buf, 90).unwrap();
        assert_eq!(buf, [7u8; 10]);
        let err = f.read_exact_at(&mut buf, 95).unwrap_err();
        assert!(err.to_string().contains("offset 95"), "{err}");
        assert!(f.read_vec(0, 1 << 40, "table").is_err());
        assert!(f.read_vec(u64::MAX, 2, "table").is_err());
        assert_eq!(f.read_at_most(&mut buf, 95).unwrap(), 5);
    }

    #[test]
    fn directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = HostFile::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
}
