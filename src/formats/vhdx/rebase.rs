//! `rebase -u` of a differencing VHDX: the parent locator (MS-VHDX 2.6.2.6) rewritten with the
//! new parent's `parent_linkage` (its DataWriteGuid) and paths, through the log.
//!
//! The metadata region is rebuilt in memory with every item kept, in table order, the locator
//! replaced, and only the 4 KiB sectors that differ go into one log entry: a process killed at
//! any point leaves the old locator or (after a replay) the new one, never a mix.

use super::edit::open_session;
use super::guid::PARENT_LOCATOR;
use super::layout::locator;
use super::log::SECTOR;
use super::log_write::DataChange;
use super::metadata::{TABLE_SIZE, table_entries};
use super::reader::VhdxLayer;
use super::writer::locator_pairs;
use crate::edit::{EditContext, NewBacking, open_new_parent};
use crate::error::{Error, Result};
use crate::format::{OpenContext, Provenance, Salvage};
use crate::storage::StorageExt;
use std::path::Path;

/// Records `backing` as the parent of the differencing VHDX at `path`.
pub fn set_backing(path: &Path, backing: Option<&NewBacking>, ctx: &EditContext<'_>) -> Result<()> {
    let parent_storage = open_new_parent(path, super::FORMAT, backing, ctx)?;
    let backing = backing.expect("open_new_parent refuses no parent");
    let mut s = open_session(path, ctx)?;
    if !s.metadata.has_parent {
        return Err(Error::unsupported(
            "only a differencing VHDX records a parent; this one is not differencing (make a child with 'create -b' instead)",
        )
        .with_path(path));
    }
    let open_ctx = OpenContext {
        gate: ctx.gate,
        provenance: Provenance::NamedByImage,
        salvage: Salvage::Refuse,
        snapshot: None,
        data_files: crate::image::DataFilePolicy::Require,
    };
    let parent = VhdxLayer::open(parent_storage, &open_ctx).map_err(|e| {
        e.context(format!("the new parent '{}'", backing.name))
            .rename_path(path)
    })?;
    let pairs = locator_pairs(&backing.name, &parent.header().data_write_guid);
    let region = s.metadata_region_with_locator(&locator(&pairs))?;
    let old = s
        .file
        .read_vec(s.regions.metadata.offset, region.len() as u64, "metadata")?;
    let changed: Vec<usize> = (0..region.len() / SECTOR as usize)
        .filter(|&i| {
            let r = i * SECTOR as usize..(i + 1) * SECTOR as usize;
            region[r.clone()] != old[r]
        })
        .collect();
    if changed.len() > s.log.capacity() {
        return Err(Error::unsupported(
            "the new parent locator changes more of the metadata region than one log entry holds",
        )
        .with_path(path));
    }
    let run = |s: &mut super::edit::Session| -> Result<()> {
        s.log.begin(&mut s.file, DataChange::No)?;
        for i in changed {
            let at = i * SECTOR as usize;
            s.pending.write(
                &s.file,
                s.regions.metadata.offset + at as u64,
                &region[at..at + SECTOR as usize],
            )?;
        }
        s.finish()
    };
    run(&mut s).map_err(|e| e.with_path(path))
}

impl super::edit::Session {
    /// The bytes of the metadata region with the parent locator item replaced by `item`:
    /// the table's entries in their order, items laid out again from 64 KiB, 8-byte aligned.
    fn metadata_region_with_locator(&self, item: &[u8]) -> Result<Vec<u8>> {
        let region = self.regions.metadata;
        let entries = table_entries(&self.file, region)?;
        // Hyper-V and qemu make 1 MiB regions; a larger one is rebuilt over its first 16 MiB.
        let mut out = vec![0u8; region.length.min(16 * 1024 * 1024) as usize];
        out[..32].copy_from_slice(&self.file.read_vec(region.offset, 32, "metadata")?);
        let mut at = TABLE_SIZE as usize;
        for (i, e) in entries.iter().enumerate() {
            let data = if e.id == PARENT_LOCATOR {
                item.to_vec()
            } else {
                self.file.read_vec(
                    region.offset + u64::from(e.offset),
                    u64::from(e.length),
                    "item",
                )?
            };
            if at + data.len() > out.len() {
                return Err(Error::unsupported(
                    "the metadata items with the new parent locator do not fit in the metadata region",
                )
                .at_offset(region.offset));
            }
            let t = 32 + 32 * i;
            out[t..t + 16].copy_from_slice(&e.id.to_bytes_le());
            let offset = if data.is_empty() { 0 } else { at as u32 };
            out[t + 16..t + 20].copy_from_slice(&offset.to_le_bytes());
            out[t + 20..t + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
            out[t + 24..t + 28].copy_from_slice(&e.flags.to_le_bytes());
            out[at..at + data.len()].copy_from_slice(&data);
            at += data.len().next_multiple_of(8);
        }
        Ok(out)
    }
}
