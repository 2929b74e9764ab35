//! Reading raw images, with the storage's holes as the allocation map.

use crate::error::Result;
use crate::format::Format;
use crate::image::{Allocation, Layer, LayerDetails, Mapping};
use crate::storage::Storage;
use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A raw image: the storage is the disk. A storage whose length is not a whole number of
/// sectors is a disk rounded up to the next sector, its tail reading as zeros (as qemu-img
/// sees it).
#[derive(Debug)]
pub struct RawLayer {
    storage: Arc<dyn Storage>,
    size: u64,
    /// What the last queries learnt of the storage's layout. The planner and every worker ask
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
    /// Data starts here, end not yet known.
    data_at: Option<u64>,
}

impl RawLayer {
    /// A raw layer over `storage`.
    pub fn open(storage: Arc<dyn Storage>) -> RawLayer {
        let size = storage.len().div_ceil(512) * 512;
        RawLayer {
            storage,
            size,
            known: Mutex::new(KnownLayout {
                data: (0, 0),
                data_at: None,
            }),
        }
    }

    /// The storage under the layer.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    fn known(&self) -> KnownLayout {
        *self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn learn(&self, update: impl FnOnce(&mut KnownLayout)) {
        update(&mut self.known.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Layer for RawLayer {
    fn format(&self) -> Format {
        super::FORMAT
    }

    fn path(&self) -> &Path {
        self.storage.name()
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let stored = self.storage.len();
        let end = offset.saturating_add(max_len).min(self.size);
        let data = |until: u64| {
            Ok(Mapping::new(offset, until - offset, Allocation::Data).at_host(0, offset))
        };
        let zero = |until: u64| {
            Ok(Mapping::new(offset, until - offset, Allocation::Zero).at_host(0, offset))
        };
        if offset >= stored {
            // The partial sector past the storage's end.
            return zero(end);
        }
        let end_stored = end.min(stored);
        let known = self.known();
        if (known.data.0..known.data.1).contains(&offset) {
            return data(known.data.1.min(end_stored));
        }
        let next_data = if known.data_at == Some(offset) {
            Some(offset)
        } else {
            self.storage.next_data(offset)?
        };
        match next_data {
            None => zero(end),
            Some(d) if d > offset => {
                self.learn(|k| k.data_at = Some(d));
                zero(d.min(end))
            }
            Some(_) => {
                let hole = self.storage.next_hole(offset)?;
                if hole > offset {
                    self.learn(|k| k.data = (offset, hole));
                    data(hole.min(end_stored))
                } else {
                    // A racing truncate or an odd file system: data is always safe.
                    data(end_stored)
                }
            }
        }
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        // The last partial sector reads as zeros past the storage's end.
        let stored = self.storage.len();
        let inside = stored.saturating_sub(offset).min(buf.len() as u64) as usize;
        self.storage.read_exact_at(&mut buf[..inside], offset)?;
        buf[inside..].fill(0);
        Ok(())
    }

    fn details(&self) -> LayerDetails {
        LayerDetails::default()
    }

    fn storage(&self, index: usize) -> Option<&dyn Storage> {
        (index == 0).then_some(self.storage.as_ref())
    }

    fn prefetch_direct(&self, offset: u64, len: u64) -> bool {
        // The planner's data items hold at most short holes (merged gaps, granularity
        // padding), so reading ahead over them costs little.
        self.storage.prefetch(offset, len);
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_file::HostFile;
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
        RawLayer::open(Arc::new(HostFile::open(path).unwrap()))
    }

    #[test]
    fn a_size_that_is_not_whole_sectors_is_rounded_up_with_zeros() {
        let storage = Arc::new(crate::storage::Memory::new("odd", vec![7u8; 1000]));
        let l = RawLayer::open(storage);
        assert_eq!(l.virtual_size(), 1024);
        let m = l.map(0, 1024).unwrap();
        assert_eq!((m.length, m.allocation), (1000, Allocation::Data));
        let m = l.map(1000, 24).unwrap();
        assert_eq!((m.length, m.allocation), (24, Allocation::Zero));
        let mut buf = vec![1u8; 24];
        l.read_data(1000, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
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
