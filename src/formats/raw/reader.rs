//! Reading raw images, with the host file's holes as the allocation map.

use crate::error::{Error, Result};
use crate::format::Format;
use crate::host_file::HostFile;
use crate::image::{Allocation, Layer, LayerDetails, Mapping};
use rustix::fs::SeekFrom;
use rustix::io::Errno;
use std::any::Any;
use std::path::Path;
use std::sync::Mutex;

/// A raw image: the file is the disk.
#[derive(Debug)]
pub struct RawLayer {
    file: HostFile,
    /// What the last queries learnt of the file's layout. The planner and every worker ask
    /// about the same extents in turn, and each `SEEK_DATA`/`SEEK_HOLE` costs up to a
    /// millisecond on tmpfs; remembering the answers makes that two calls per extent rather
    /// than two per query. Only data is remembered, so a stale answer can only make a hole
    /// be read, never data be skipped.
    known: Mutex<KnownLayout>,
}

#[derive(Debug, Clone, Copy)]
struct KnownLayout {
    /// `[start, end)` is data (empty when nothing is known).
    data: (u64, u64),
    /// Data starts here, end not yet known (`u64::MAX`: nowhere known).
    data_at: u64,
}

impl RawLayer {
    /// Opens a raw layer on an open file.
    pub fn open(file: HostFile) -> Result<RawLayer> {
        Ok(RawLayer {
            file,
            known: Mutex::new(KnownLayout {
                data: (0, 0),
                data_at: u64::MAX,
            }),
        })
    }

    fn known(&self) -> KnownLayout {
        *self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn learn(&self, update: impl FnOnce(&mut KnownLayout)) {
        update(&mut self.known.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Where the next data or hole starts at or after `offset`; `None` when the file system
    /// cannot say (then the whole file counts as data) or there is none before the end.
    fn seek(&self, whence: SeekFrom) -> std::result::Result<Option<u64>, Errno> {
        match rustix::fs::seek(self.file.file(), whence) {
            Ok(pos) => Ok(Some(pos)),
            Err(Errno::NXIO) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Layer for RawLayer {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn path(&self) -> &Path {
        self.file.path()
    }

    fn virtual_size(&self) -> u64 {
        self.file.len()
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let end = offset.saturating_add(max_len).min(self.file.len());
        let data = |until: u64| {
            Ok(Mapping::new(offset, until - offset, Allocation::Data).at_host(0, offset))
        };
        let zero = |until: u64| {
            Ok(Mapping::new(offset, until - offset, Allocation::Zero).at_host(0, offset))
        };
        let known = self.known();
        if (known.data.0..known.data.1).contains(&offset) {
            return data(known.data.1.min(end));
        }
        let data_here = if known.data_at == offset {
            Ok(Some(offset))
        } else {
            self.seek(SeekFrom::Data(offset))
        };
        match data_here {
            // SEEK_DATA unsupported (some file systems, block devices): all of it is data.
            Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => data(end),
            Err(e) => Err(Error::io("cannot query allocation (SEEK_DATA)", e.into())
                .at_offset(offset)
                .with_path(self.file.path())),
            Ok(None) => zero(end),
            Ok(Some(next_data)) if next_data > offset => {
                self.learn(|k| k.data_at = next_data);
                zero(next_data.min(end))
            }
            Ok(Some(_)) => match self.seek(SeekFrom::Hole(offset)) {
                Ok(Some(hole)) if hole > offset => {
                    self.learn(|k| k.data = (offset, hole));
                    data(hole.min(end))
                }
                // A racing truncate or an odd file system: fall back to data, which is always safe.
                _ => data(end),
            },
        }
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn details(&self) -> LayerDetails {
        LayerDetails::default()
    }

    fn host_file(&self, index: usize) -> Option<&HostFile> {
        (index == 0).then_some(&self.file)
    }

    fn prefetch_direct(&self, offset: u64, len: u64) -> bool {
        // The planner's data items hold at most short holes (merged gaps, granularity
        // padding), so reading ahead over them costs little.
        self.file.prefetch(offset, len);
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::FileExt;

    const BLOCK: u64 = 64 * 1024;

    /// A file of `blocks` 64 KiB blocks where `data[i]` says whether block `i` is written.
    fn sparse_file(dir: &Path, data: &[bool]) -> std::path::PathBuf {
        let path = dir.join("layout.raw");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(data.len() as u64 * BLOCK).unwrap();
        for (i, _) in data.iter().enumerate().filter(|(_, d)| **d) {
            file.write_all_at(&[0xa5; BLOCK as usize], i as u64 * BLOCK)
                .unwrap();
        }
        path
    }

    fn layer(path: &Path) -> RawLayer {
        RawLayer::open(HostFile::open(path).unwrap()).unwrap()
    }

    proptest! {
        // The remembered layout must never change an answer: queries in any order on one
        // layer give what a fresh layer (which has to ask the file system) gives.
        #[test]
        fn remembered_layout_gives_the_same_answers(
            data in proptest::collection::vec(any::<bool>(), 1..24),
            queries in proptest::collection::vec((0u64..24 * BLOCK, 1u64..8 * BLOCK), 1..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = sparse_file(dir.path(), &data);
            let size = data.len() as u64 * BLOCK;
            let warm = layer(&path);
            for (offset, len) in queries {
                let offset = offset % size;
                let fresh = layer(&path).map(offset, len).unwrap();
                let remembered = warm.map(offset, len).unwrap();
                prop_assert_eq!(
                    (remembered.start, remembered.length, remembered.allocation),
                    (fresh.start, fresh.length, fresh.allocation)
                );
            }
        }
    }
}
