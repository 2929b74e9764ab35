//! `rebase -u` of a differencing VHD: the parent's UUID, timestamp and unicode name in the
//! dynamic header and the W2ru/W2ku locators, taken from the new parent.
//!
//! Crash consistency: the new locator data goes to fresh space at the end of the file (the
//! footer moved past it first), so the old header's locators stay intact; after a flush, the
//! header is rewritten in one write. The header lies
//! inside the file's first 4 KiB page with the footer copy, so a process killed during the
//! write leaves either the old or the new header.

use super::dynamic_header::{DynamicHeader, NewHeader};
use super::edit::open_for_change;
use super::footer::{DiskType, FOOTER_SIZE};
use super::parent::place_locators;
use super::reader::VhdLayer;
use super::writer::parent_fields_of;
use crate::edit::{EditContext, NewBacking, open_new_parent};
use crate::error::{Error, Result};
use crate::format::{OpenContext, Provenance, Salvage};
use crate::storage::Storage;
use std::path::Path;

/// Records `backing` as the parent of the differencing VHD at `path`.
pub fn set_backing(path: &Path, backing: Option<&NewBacking>, ctx: &EditContext<'_>) -> Result<()> {
    let parent_storage = open_new_parent(path, super::FORMAT, backing, ctx)?;
    let backing = backing.expect("open_new_parent refuses no parent");
    let mut opened = open_for_change(path, ctx)?;
    if opened.footer.disk_type != DiskType::Differencing {
        return Err(Error::unsupported(
            "only a differencing VHD records a parent; this one is not differencing (make a child with 'create -b' instead)",
        )
        .with_path(path));
    }
    let tables = opened
        .sparse
        .take()
        .expect("a differencing disk has tables");
    let parent_path = parent_storage.path().to_path_buf();
    let open_ctx = OpenContext {
        gate: ctx.gate,
        provenance: Provenance::NamedByImage,
        salvage: Salvage::Refuse,
        snapshot: None,
        data_files: crate::image::DataFilePolicy::Require,
    };
    let parent = VhdLayer::open(parent_storage, &open_ctx).map_err(|e| {
        e.context(format!("the new parent '{}'", backing.name))
            .rename_path(path)
    })?;
    let dest_dir = path.parent();
    let fields = parent_fields_of(&parent, &parent_path, &backing.name, dest_dir);
    let file = &mut opened.file;
    // The locator data goes at the end, after the footer has moved past it.
    let start = file.len() - FOOTER_SIZE;
    let (locators, new_end) = place_locators(start, &fields.locators);
    file.write_all_at(&opened.footer.bytes, new_end)?;
    for (entry, (_, data)) in locators.iter().zip(&fields.locators) {
        let mut padded = data.clone();
        padded.resize(entry.data_space as usize, 0);
        file.write_all_at(&padded, entry.data_offset)?;
    }
    file.sync()?;
    let header = NewHeader {
        table_offset: tables.table_offset,
        max_table_entries: tables.max_table_entries as u32,
        block_size: tables.block_size as u32,
        parent_uuid: fields.uuid,
        parent_timestamp: fields.timestamp,
        parent_name: fields.name,
        locators,
    }
    .to_bytes();
    // The header is rebuilt from the fields the old one had; make sure nothing else was lost.
    DynamicHeader::parse(&header)
        .map_err(|e| Error::corrupt(format!("internal error: {e}")).with_path(path))?;
    file.write_all_at(&header[..], tables.header_at)?;
    file.sync()
}
