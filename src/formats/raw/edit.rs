//! raw changed in place: data written where it lies, zeros as holes, the size as the file's
//! length. Every change is one system call on one file, so a kill at any instant leaves a file
//! whose ranges hold the old or the new bytes (per sector, as the kernel writes them).

use crate::edit::{Clear, GrowPreallocation, ImageMut, ResizeRequest, Shrink};
use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::storage::Storage;
use rustix::fs::FallocateFlags;
use std::path::Path;

/// A raw image open for writing in place.
pub struct RawMut {
    file: HostFile,
}

/// Zeros written at a time where a hole cannot be punched.
const ZERO_CHUNK: usize = 1 << 20;

impl RawMut {
    /// Opens the raw image at `path` for reading and writing.
    pub fn open(path: &Path) -> Result<RawMut> {
        Ok(RawMut {
            file: HostFile::open_rw(path)?,
        })
    }
}

/// Writes `len` zero bytes at `offset` (where a hole cannot be punched, and for `full`).
fn write_zero_bytes(file: &mut HostFile, mut offset: u64, len: u64) -> Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK.min(len as usize)];
    let end = offset + len;
    while offset < end {
        let n = (end - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

impl ImageMut for RawMut {
    fn virtual_size(&self) -> u64 {
        self.file.len().div_ceil(512) * 512
    }

    fn allocation_unit(&self) -> u64 {
        512
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= self.virtual_size())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "a write of {} bytes at {offset} runs past the end of the disk ({} bytes)",
                    data.len(),
                    self.virtual_size()
                ))
                .with_path(self.file.path())
            })?;
        // The partial sector past a file that is not whole sectors reads as zeros: writing
        // zeros there would only change the file's length.
        let stored = self.file.len();
        let keep = if end > stored
            && data[(stored.max(offset) - offset) as usize..]
                .iter()
                .all(|&b| b == 0)
        {
            (stored.max(offset) - offset) as usize
        } else {
            data.len()
        };
        if keep == 0 {
            return Ok(());
        }
        self.file.write_all_at(&data[..keep], offset)
    }

    fn clear(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        // raw has no backing file: deallocated reads as zeros too.
        let _ = how;
        let end = offset.saturating_add(len).min(self.file.len());
        if end <= offset {
            return Ok(());
        }
        let len = end - offset;
        match rustix::fs::fallocate(
            self.file.file(),
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            Err(_) => write_zero_bytes(&mut self.file, offset, len),
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.file.sync()
    }
}

/// Changes the size of the raw image at `path`: the file's length is the disk's size, so
/// growing and cutting are one `ftruncate` (or one `fallocate` for `falloc`), which the kernel
/// makes atomic. `full` writes its zeros after the new length is set: they are zeros already,
/// so a kill while writing them leaves the new size reading as it should.
pub fn resize(path: &Path, request: &ResizeRequest) -> Result<()> {
    let mut file = HostFile::open_rw(path)?;
    let old = file.len();
    let new = request.new_size;
    if new < old && request.shrink == Shrink::Refuse {
        return Err(
            Error::invalid("Use the --shrink option to perform a shrink operation").with_path(path),
        );
    }
    if new < old && request.preallocation != GrowPreallocation::Off {
        return Err(
            Error::invalid("Preallocation can only be used for growing images").with_path(path),
        );
    }
    match request.preallocation {
        GrowPreallocation::Off => file.set_len(new)?,
        GrowPreallocation::Metadata => {
            return Err(Error::invalid("Unsupported preallocation mode: metadata").with_path(path));
        }
        GrowPreallocation::Falloc => {
            if new > old {
                rustix::fs::fallocate(file.file(), FallocateFlags::empty(), old, new - old)
                    .map_err(|e| {
                        Error::io("cannot preallocate (falloc)", e.into()).with_path(path)
                    })?;
            }
        }
        GrowPreallocation::Full => {
            file.set_len(new)?;
            if new > old {
                write_zero_bytes(&mut file, old, new - old)?;
            }
        }
    }
    file.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    fn request(new_size: u64, shrink: Shrink, preallocation: GrowPreallocation) -> ResizeRequest {
        ResizeRequest {
            new_size,
            shrink,
            preallocation,
        }
    }

    #[test]
    fn writes_land_in_place_and_clears_read_as_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        std::fs::write(&path, vec![5u8; 8192]).unwrap();
        let mut m = RawMut::open(&path).unwrap();
        m.write_at(100, &[1, 2, 3]).unwrap();
        m.clear(4096, 4096, Clear::Deallocate).unwrap();
        m.flush().unwrap();
        assert!(m.write_at(8190, &[1, 2, 3]).is_err());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 8192);
        assert_eq!(&bytes[99..104], &[5, 1, 2, 3, 5]);
        assert!(bytes[4096..].iter().all(|&b| b == 0));
        let f = HostFile::open(&path).unwrap();
        assert!(f.allocated_bytes() <= 4096 || f.next_hole(0).unwrap() < 8192);
    }

    #[test]
    fn a_partial_last_sector_is_written_only_for_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.raw");
        std::fs::write(&path, vec![5u8; 1000]).unwrap();
        let mut m = RawMut::open(&path).unwrap();
        assert_eq!(m.virtual_size(), 1024);
        m.write_at(990, &[0u8; 34]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1000);
        m.write_at(1020, &[1u8; 4]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024);
    }

    #[test]
    fn resize_grows_cuts_and_refuses_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.raw");
        std::fs::write(&path, vec![5u8; 4096]).unwrap();
        let len = || std::fs::metadata(&path).unwrap().len();
        resize(
            &path,
            &request(8192, Shrink::Refuse, GrowPreallocation::Full),
        )
        .unwrap();
        assert_eq!(len(), 8192);
        assert!(
            std::fs::read(&path).unwrap()[4096..]
                .iter()
                .all(|&b| b == 0)
        );
        resize(
            &path,
            &request(12288, Shrink::Refuse, GrowPreallocation::Falloc),
        )
        .unwrap();
        assert_eq!(len(), 12288);
        assert!(
            resize(
                &path,
                &request(1000, Shrink::Refuse, GrowPreallocation::Off)
            )
            .is_err()
        );
        assert!(
            resize(
                &path,
                &request(1000, Shrink::Allow, GrowPreallocation::Full)
            )
            .is_err()
        );
        assert!(
            resize(
                &path,
                &request(1 << 20, Shrink::Refuse, GrowPreallocation::Metadata)
            )
            .is_err()
        );
        resize(&path, &request(1000, Shrink::Allow, GrowPreallocation::Off)).unwrap();
        assert_eq!(len(), 1000);
        assert_eq!(std::fs::read(&path).unwrap(), vec![5u8; 1000]);
    }
}
