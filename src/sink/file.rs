//! Files and devices as sinks: a new file (staged), or an existing file or device written in
//! place.

use super::{Access, SharedSink, Sink};
use crate::error::{Error, Result};
use crate::host_file::Durability;
use rustix::fs::{FallocateFlags, FileType};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What is in the sink's ranges before the writer writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A new, empty file: unwritten ranges read as zeros (holes).
    New,
    /// An existing regular file written in place: old bytes stay until overwritten.
    ExistingFile,
    /// A block device: old bytes stay; never truncated; its size is its capacity.
    BlockDevice,
    /// A character device: written front to back as the writer goes; its size is unknown.
    CharacterDevice,
}

/// A file or device: positional writes from the writer and, through [`Sink::shared`], from
/// the engine's workers.
pub struct FileSink {
    file: Arc<File>,
    name: PathBuf,
    placement: Placement,
    /// For existing files and block devices, what they hold: the image must fit.
    capacity: Option<u64>,
    durability: Durability,
    write_behind: WriteBehind,
}

impl FileSink {
    /// A new file `file`, to appear as `name` (its messages name it so, never by a temporary
    /// name).
    pub fn new_file(file: Arc<File>, name: &Path, durability: Durability) -> FileSink {
        FileSink {
            file,
            name: name.to_path_buf(),
            placement: Placement::New,
            capacity: None,
            durability,
            write_behind: WriteBehind::default(),
        }
    }

    /// Opens the existing file or device at `path` for writing in place: never created,
    /// truncated or replaced.
    pub fn existing(path: &Path, durability: Durability) -> Result<FileSink> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("cannot open the destination for writing", e).with_path(path))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("cannot inspect the destination", e).with_path(path))?;
        let (placement, capacity) = match FileType::from_raw_mode(meta.mode()) {
            FileType::RegularFile => (Placement::ExistingFile, Some(meta.len())),
            FileType::BlockDevice => {
                let size = rustix::fs::seek(&file, rustix::fs::SeekFrom::End(0)).map_err(|e| {
                    Error::io("cannot measure the destination device", e.into()).with_path(path)
                })?;
                (Placement::BlockDevice, Some(size))
            }
            FileType::CharacterDevice => (Placement::CharacterDevice, None),
            _ => {
                return Err(Error::invalid(
                    "the destination is neither a regular file nor a device",
                )
                .with_path(path));
            }
        };
        Ok(FileSink {
            file: Arc::new(file),
            name: path.to_path_buf(),
            placement,
            capacity,
            durability,
            write_behind: WriteBehind::default(),
        })
    }

    /// What the sink writes into.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// For existing files and block devices, the bytes they hold.
    pub fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    fn check_fits(&self, end: u64) -> Result<()> {
        match (self.placement, self.capacity) {
            (Placement::BlockDevice, Some(cap)) if end > cap => Err(Error::invalid(format!(
                "the destination device holds {cap} bytes, too few for the image (at least {end} bytes)"
            ))
            .with_path(&self.name)),
            _ => Ok(()),
        }
    }

    fn write_zero_bytes(&self, mut offset: u64, len: u64) -> Result<()> {
        static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(ZEROS.len() as u64) as usize;
            write_all_at(&self.file, &self.name, &ZEROS[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

/// The most one `pwrite` call writes.
///
/// The page cache sizes the folio it allocates for a buffered write by the write's length and
/// alignment: a 2 MiB write at a 2 MiB offset gets one 2 MiB folio, which must come from a
/// whole free 2 MiB block. On a VM whose balloon hands free memory back to its host (free
/// page reporting, on by default in Firecracker and common in clouds), whole free blocks are
/// exactly the memory handed back, and each of its pages faults in from the host as the copy
/// first touches it. Measured on such a VM with the page cache dropped (raw to raw, 659 MiB
/// of data): 2 MiB writes made 640 huge folios and took 4-5 s of system time; qemu-img, whose
/// writes are smaller, made about 300 (the input's) and took 0.5 s. Writes of this size take
/// order-6 folios, which the allocator finds in memory the VM still holds, and on any machine
/// cost a few more system calls per MiB.
const WRITE_PIECE: usize = 256 << 10;

fn write_all_at(file: &File, name: &Path, buf: &[u8], offset: u64) -> Result<()> {
    let mut at = offset;
    for piece in buf.chunks(WRITE_PIECE) {
        file.write_all_at(piece, at)
            .map_err(|e| Error::io("write failed", e).at_offset(at).with_path(name))?;
        at += piece.len() as u64;
    }
    Ok(())
}

impl Sink for FileSink {
    fn name(&self) -> &Path {
        &self.name
    }

    fn access(&self) -> Access {
        Access::Random
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        self.check_fits(end)?;
        write_all_at(&self.file, &self.name, buf, offset)?;
        if self.durability == Durability::Flush {
            self.write_behind.wrote(&self.file, end);
        }
        Ok(())
    }

    fn write_zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = offset.saturating_add(len);
        self.check_fits(end)?;
        let flags = match self.placement {
            Placement::New => return Ok(()),
            Placement::CharacterDevice => return self.write_zero_bytes(offset, len),
            // Punching a hole leaves the file's size alone and frees the space.
            Placement::ExistingFile => FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            // The block layer turns this into WRITE ZEROES or a discard that guarantees zeros,
            // and writes zeros itself where the device has neither.
            Placement::BlockDevice => FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
        };
        if let Some(cap) = self.capacity
            && self.placement == Placement::ExistingFile
            && offset >= cap
        {
            // Past the end of an existing file nothing needs zeroing: it will be extended.
            return Ok(());
        }
        match rustix::fs::fallocate(&*self.file, flags, offset, len) {
            Ok(()) => Ok(()),
            Err(_) => self.write_zero_bytes(offset, len),
        }
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        match self.placement {
            Placement::New => self
                .file
                .set_len(len)
                .map_err(|e| Error::io("cannot set the length", e).with_path(&self.name)),
            Placement::ExistingFile | Placement::BlockDevice => match self.capacity {
                Some(cap) if cap < len => Err(Error::invalid(format!(
                    "the destination holds {cap} bytes, too few for the image ({len} bytes); nothing was written"
                ))
                .with_path(&self.name)),
                _ => Ok(()),
            },
            Placement::CharacterDevice => Ok(()),
        }
    }

    fn preallocate(&mut self, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        rustix::fs::fallocate(&*self.file, FallocateFlags::empty(), 0, len)
            .map_err(|e| Error::io("cannot preallocate (falloc)", e.into()).with_path(&self.name))
    }

    fn shared(&self) -> Option<Arc<dyn SharedSink>> {
        if self.placement == Placement::CharacterDevice {
            // A character device may care about order (a tape, a serial line): the writer
            // writes it alone.
            return None;
        }
        Some(Arc::new(SharedFile {
            file: Arc::clone(&self.file),
            name: self.name.clone(),
            capacity: match self.placement {
                Placement::BlockDevice => self.capacity,
                _ => None,
            },
            regular: matches!(self.placement, Placement::New | Placement::ExistingFile),
        }))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        if self.durability == Durability::Unsafe {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| Error::io("cannot flush", e).with_path(&self.name))
    }
}

/// A file shared with the engine's workers.
struct SharedFile {
    file: Arc<File>,
    name: PathBuf,
    capacity: Option<u64>,
    /// A regular file (not a device), which `copy_file_range` may write.
    regular: bool,
}

impl SharedSink for SharedFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        if let Some(cap) = self.capacity
            && end > cap
        {
            return Err(Error::invalid(format!(
                "the destination device holds {cap} bytes, too few for the image (at least {end} bytes)"
            ))
            .with_path(&self.name));
        }
        write_all_at(&self.file, &self.name, buf, offset)
    }

    fn regular_file(&self) -> Option<&File> {
        self.regular.then_some(&*self.file)
    }
}

/// Starts the kernel's writeback of what a writer left well behind it, for outputs that will
/// be flushed.
///
/// Without it, the final flush waits for the whole image to reach the disk after the copy
/// (measured: 187 ms of a 430 ms conversion of 512 MiB). Advising `DONTNEED` on the range
/// behind the write position makes the kernel write it back while the conversion goes on, so
/// the final flush waits for the tail only (about 11 ms). Best effort: failures are ignored,
/// and the final flush catches anything rewritten behind the mark (tables written last).
#[derive(Debug, Default)]
struct WriteBehind {
    started: u64,
}

impl WriteBehind {
    /// Data this far behind the furthest write is handed to writeback, in steps this large.
    const LAG: u64 = 16 << 20;

    fn wrote(&mut self, file: &File, end: u64) {
        if end >= self.started + 2 * Self::LAG {
            let upto = end - Self::LAG;
            let _ = rustix::fs::fadvise(
                file,
                self.started,
                std::num::NonZeroU64::new(upto - self.started),
                rustix::fs::Advice::DontNeed,
            );
            self.started = upto;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_is_zeroed_in_place_and_never_shrunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.img");
        std::fs::write(&path, vec![0xEEu8; 8192]).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        let mut sink: Box<dyn Sink> =
            Box::new(FileSink::existing(&path, Durability::Unsafe).unwrap());
        assert!(sink.set_len(8193).is_err());
        sink.set_len(4096).unwrap();
        sink.write_at(b"new", 0).unwrap();
        sink.write_zeros(512, 1024).unwrap();
        sink.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 8192);
        assert_eq!(&bytes[..3], b"new");
        assert!(bytes[3..512].iter().all(|&b| b == 0xEE));
        assert!(bytes[512..1536].iter().all(|&b| b == 0));
        assert!(bytes[1536..].iter().all(|&b| b == 0xEE));
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    }
}
