//! `rebase -u` of a differencing VDI. A VDI names its parent by UUID only: `uuidLinkage` takes
//! the new parent's `uuidCreate` and `uuidParentModify` its `uuidModify` (VDICore.h), in one
//! write of 32 contiguous bytes, so a kill leaves the old link or the new one. The parent is
//! then found as reading finds it (VirtualBox machine files and VDIs beside the image).

use super::edit::{LINKAGE_AT, open_for_change};
use super::header::Header;
use crate::edit::{EditContext, NewBacking, open_new_parent};
use crate::error::{Error, Result};
use std::path::Path;

/// Records `backing` as the parent of the differencing VDI at `path`.
pub fn set_backing(path: &Path, backing: Option<&NewBacking>, ctx: &EditContext<'_>) -> Result<()> {
    let mut o = open_for_change(path)?;
    if !o.header.image_type.has_parent() {
        return Err(Error::unsupported(format!(
            "only a differencing VDI records a parent; this one is {}",
            o.header.image_type.name()
        ))
        .with_path(path));
    }
    let parent = open_new_parent(path, super::FORMAT, backing, ctx)?;
    let backing = backing.expect("open_new_parent refuses no parent");
    let ph = Header::read(parent.as_ref()).map_err(|e| {
        e.context(format!("the new parent '{}'", backing.name))
            .rename_path(path)
    })?;
    if ph.disk_size > o.header.disk_size {
        return Err(Error::invalid(format!(
            "the new parent '{}' ({} bytes) is larger than the image ({} bytes)",
            backing.name, ph.disk_size, o.header.disk_size
        ))
        .with_path(path));
    }
    let mut fields = [0u8; 32];
    fields[..16].copy_from_slice(&ph.uuid_create.to_bytes_le());
    fields[16..].copy_from_slice(&ph.uuid_modify.to_bytes_le());
    o.file.write_all_at(&fields, LINKAGE_AT)?;
    o.file.sync()
}
