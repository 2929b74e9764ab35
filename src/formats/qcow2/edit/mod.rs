//! QCOW2 images changed in place: writes (`open_mut`), `resize`, `rebase -u`, `amend` and
//! `snapshot -c|-a|-d`, all through one `Editor` that holds the image's metadata.
//!
//! - `alloc.rs`: refcounts, cluster allocation (free space first, then the end of the file),
//!   refcount blocks and a refcount table grown as needed.
//! - `tables.rs`: L1 and L2 tables: entries read and written, L2 tables allocated or copied
//!   (when shared with a snapshot) on demand, whole trees of references counted up or down.
//! - `write.rs`: the [`ImageMut`](crate::edit::ImageMut) of `open_mut`.
//! - `resize.rs`, `snapshots.rs`, `amend.rs`, `bitmaps.rs` (`convert -n --bitmaps`),
//!   `bitmap_edit.rs` (`bitmap`): the other operations.
//!
//! Crash consistency (see [`crate::edit`]): every new cluster is counted before anything
//! points at it, new data and tables are written and flushed before the pointer that makes
//! them visible, and a cluster is counted down only once nothing points at it any more. So a
//! `kill -9` (or a power cut, the flushes being real) at any point leaves at worst leaked
//! clusters, which `qemu-img check -r leaks` reclaims. A header field that moves a table (L1,
//! refcount table, snapshot table) is switched with one write of a few contiguous bytes.

mod alloc;
mod amend;
mod bitmap_edit;
mod bitmaps;
mod resize;
mod snapshots;
mod tables;
mod write;

pub use amend::AMEND_OPTIONS;
pub(crate) use amend::{amend, set_backing};
pub(crate) use bitmap_edit::edit_bitmaps;
pub(crate) use bitmaps::{add as add_bitmaps, check as check_add_bitmaps};
pub(crate) use resize::resize;
pub(crate) use snapshots::edit_snapshot;
pub(crate) use write::open_mut;

use super::header::{Encryption, Header, INCOMPAT_DIRTY};
use crate::edit::EditContext;
use crate::error::{Error, Result};
use crate::format::{OpenContext, Provenance, Salvage};
use crate::host_file::HostFile;
use crate::storage::Storage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Test-only: when set to N, the process aborts (as a `kill -9` would stop it) right after
/// the N-th write of an in-place change, so that tests reach every intermediate state.
pub const ABORT_AFTER_ENV: &str = "DISKFERRY_TEST_EDIT_ABORT_AFTER";

/// The most L2 tables or refcount blocks kept in memory at once (each one cluster).
const CACHE_TABLES: usize = 256;

/// Whether [`Editor::open_with`] accepts an image that has persistent dirty bitmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExistingBitmaps {
    /// Refuse it: the change writes guest data, which the editor does not record in the
    /// bitmaps, so they would silently miss writes.
    Refuse,
    /// Keep them: the change leaves the disk's content alone.
    Keep,
}

/// Whether [`Editor::open_with`] accepts an image that keeps its guest data in an external
/// data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExternalData {
    /// Refuse it: the change writes guest data or moves clusters, which the editor would do
    /// in the qcow2 file, never in the data file.
    Refuse,
    /// Accept it: the change rewrites the qcow2 file's header alone (`amend`), and never
    /// opens the data file, so it needs none (a data file that moved can be named anew).
    HeaderOnly,
}

/// An image open for an in-place change: its file, header and the tables in use.
pub(crate) struct Editor {
    file: HostFile,
    path: PathBuf,
    /// The header as it is on disk (kept up to date with every header write).
    h: Header,
    /// Bytes per cluster.
    cs: u64,
    /// The active L1 table (`h.l1_size` entries).
    l1: Vec<u64>,
    /// The refcount table's entries (`h.refcount_table_clusters` clusters of them).
    reftable: Vec<u64>,
    /// Refcount blocks read, by offset.
    blocks: HashMap<u64, Vec<u8>>,
    /// L2 tables read, by offset.
    l2s: HashMap<u64, Vec<u8>>,
    /// The first cluster that may be free.
    free_hint: u64,
    /// The first cluster past everything the file holds or was allocated.
    end: u64,
    /// Writes made (for the test hook).
    writes: u64,
    /// The abort point of the test hook, read once.
    abort_after: Option<u64>,
}

impl Editor {
    /// Opens the image at `path` for a change, refusing what cannot be changed safely.
    pub fn open(path: &Path, what: &str) -> Result<Editor> {
        Self::open_with(path, what, ExistingBitmaps::Refuse, ExternalData::Refuse)
    }

    /// As [`Editor::open`], saying whether an image with persistent dirty bitmaps may be
    /// changed (only by a change that leaves the disk's content alone: `bitmap` itself), and
    /// one with an external data file (only by a change of the header alone: `amend`).
    pub fn open_with(
        path: &Path,
        what: &str,
        bitmaps: ExistingBitmaps,
        data: ExternalData,
    ) -> Result<Editor> {
        Self::open_inner(path, what, bitmaps, data).map_err(|e| e.with_path(path))
    }

    fn open_inner(
        path: &Path,
        what: &str,
        bitmaps: ExistingBitmaps,
        data: ExternalData,
    ) -> Result<Editor> {
        let file = HostFile::open_rw(path)?;
        let gate = crate::gate::Gate::confined();
        let ctx = OpenContext {
            gate: &gate,
            provenance: Provenance::User,
            salvage: Salvage::Refuse,
            snapshot: None,
            data_files: crate::image::DataFilePolicy::Require,
        };
        let h = Header::read(&file, &ctx)?;
        let refuse = |why: &str| Err(Error::unsupported(format!("cannot {what}: {why}")));
        if h.encryption != Encryption::None {
            return refuse("the image is encrypted, which diskferry does not decrypt or encrypt");
        }
        if h.corrupt() {
            return Err(Error::corrupt(format!(
                "cannot {what}: the image is marked corrupt (qemu found its metadata inconsistent); repair it first with 'qemu-img check -r all'"
            ))
            .at_offset(72));
        }
        if h.dirty() {
            return refuse(
                "the image was not closed cleanly (dirty bit set, its refcounts may be stale); repair it first with 'qemu-img check -r all'",
            );
        }
        if h.has_data_file() && data == ExternalData::Refuse {
            return refuse(
                "the image keeps its data in an external data file, which diskferry does not change in place",
            );
        }
        if h.bitmaps.is_some() && bitmaps == ExistingBitmaps::Refuse {
            return refuse(
                "the image has persistent dirty bitmaps, which diskferry does not keep up to date; remove them first ('qemu-img bitmap --remove')",
            );
        }
        let cs = h.cluster_size();
        let l1 = super::table::read_u64_table(&file, h.l1_table_offset, u64::from(h.l1_size))?;
        let mut l1 = l1;
        l1.resize(h.l1_size as usize, 0);
        let rt_entries = u64::from(h.refcount_table_clusters) * cs / 8;
        let mut reftable =
            super::table::read_u64_table(&file, h.refcount_table_offset, rt_entries)?;
        reftable.resize(rt_entries as usize, 0);
        let end = file.len().div_ceil(cs);
        let abort_after = std::env::var(ABORT_AFTER_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        let e = Editor {
            path: path.to_path_buf(),
            file,
            cs,
            l1,
            reftable,
            blocks: HashMap::new(),
            l2s: HashMap::new(),
            free_hint: 0,
            end,
            writes: 0,
            abort_after,
            h,
        };
        e.check_tables()?;
        Ok(e)
    }

    /// Refuses a refcount table that points outside the file (it could not be kept).
    fn check_tables(&self) -> Result<()> {
        let len = self.file.len();
        if self.h.refcount_table_offset + u64::from(self.h.refcount_table_clusters) * self.cs > len
        {
            return Err(Error::corrupt(format!(
                "the refcount table ({} clusters at {:#x}) runs past the end of the file ({len} bytes)",
                self.h.refcount_table_clusters, self.h.refcount_table_offset
            ))
            .at_offset(48));
        }
        for (i, &e) in self.reftable.iter().enumerate() {
            let at = e & super::check::refcounts::REFT_OFFSET_MASK;
            if at != 0 && (!at.is_multiple_of(self.cs) || at + self.cs > len) {
                return Err(Error::corrupt(format!(
                    "refcount table entry {i} points at {at:#x}, outside the file ({len} bytes) or off a cluster boundary"
                ))
                .at_offset(self.h.refcount_table_offset + i as u64 * 8));
            }
        }
        Ok(())
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.h
    }

    /// The path of the image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file (for reads).
    pub fn storage(&self) -> &dyn Storage {
        &self.file
    }

    /// Writes `buf` at `offset`: the one place the image is written.
    fn write(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(buf, offset)?;
        self.end = self.end.max((offset + buf.len() as u64).div_ceil(self.cs));
        self.writes += 1;
        if self.abort_after == Some(self.writes) {
            std::process::abort();
        }
        Ok(())
    }

    /// Makes every write so far durable before any later one: the ordering point.
    fn flush(&mut self) -> Result<()> {
        self.file.sync()
    }

    /// Reads `buf.len()` bytes at `offset`; past the end of the file reads zeros.
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        super::check::io::read_padded(&self.file, buf, offset)
    }

    /// Writes the 8-byte big-endian `value` at header offset `at`.
    fn write_header_u64(&mut self, at: u64, value: u64) -> Result<()> {
        self.write(&value.to_be_bytes(), at)
    }

    /// Sets or clears the dirty bit (version 3 only), durable before what follows.
    fn set_dirty(&mut self, dirty: bool) -> Result<()> {
        if self.h.version < 3 || self.h.dirty() == dirty {
            return Ok(());
        }
        let value = if dirty {
            self.h.incompatible | INCOMPAT_DIRTY
        } else {
            self.h.incompatible & !INCOMPAT_DIRTY
        };
        self.flush()?;
        self.write_header_u64(72, value)?;
        self.flush()?;
        self.h.incompatible = value;
        Ok(())
    }

    /// Opens the backing chain (not the image itself) for reading, when there is one.
    fn open_backing(&self, ctx: &EditContext<'_>) -> Result<Option<Backing>> {
        if self.h.backing_file.as_deref().is_none_or(str::is_empty) {
            return Ok(None);
        }
        let options = crate::image::OpenOptions {
            format: Some(super::FORMAT),
            gate: *ctx.gate,
            ..Default::default()
        };
        let image = crate::image::Image::open(&self.path, &options)?;
        Ok((image.layers().len() > 1).then_some(Backing { image }))
    }
}

/// The backing chain of an image being changed: read beneath the image's own layer.
pub(crate) struct Backing {
    /// The image opened with its chain; only layers after the first are read (the first is
    /// the image being changed, whose state the editor owns).
    image: crate::image::Image,
}

impl Backing {
    /// Reads `buf.len()` bytes at `offset` as the backing chain shows them (zeros past its end).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        use crate::image::Allocation;
        let layers = &self.image.layers()[1..];
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let want = (buf.len() - done) as u64;
            let mut len = want;
            let mut found = None;
            for layer in layers {
                let size = layer.virtual_size();
                if pos >= size {
                    len = len.min(want);
                    break;
                }
                let m = layer
                    .map(pos, len.min(size - pos))
                    .map_err(|e| e.with_path(layer.path()))?;
                if m.start != pos || m.length == 0 {
                    return Err(
                        Error::corrupt("internal mapping error in the backing chain")
                            .with_path(layer.path()),
                    );
                }
                len = m.length.min(len);
                if m.allocation != Allocation::Unallocated {
                    found = Some((layer, m.allocation));
                    break;
                }
            }
            let chunk = &mut buf[done..done + len as usize];
            match found {
                Some((layer, Allocation::Data)) => layer
                    .read_data(pos, chunk)
                    .map_err(|e| e.with_path(layer.path()))?,
                _ => chunk.fill(0),
            }
            done += len as usize;
        }
        Ok(())
    }

    /// The virtual size of the backing image.
    pub fn size(&self) -> u64 {
        self.image.layers()[1].virtual_size()
    }
}
