//! `resize` of twoGbMaxExtentSparse and twoGbMaxExtentFlat disks: a descriptor naming extent
//! files of at most 2 GB each, as `vmware-vdiskmanager -x` grows them.
//!
//! Growing fills the last extent up to the split size (2047 MiB as VMware and diskferry split,
//! or the largest existing extent's size when that is larger, as qemu-img's 2 GiB extents),
//! then adds extent files named as VMware names them (`NAME-s00N.vmdk`, `NAME-f00N.vmdk`).
//! The descriptor is the switch: it is replaced (written beside, flushed, renamed over, with
//! its owner and mode) only after every file it will name exists and is flushed, so a kill
//! leaves the old descriptor over extents that are at least as large as it says, or the new
//! one. Before that rename:
//!
//! - the last flat extent's file is lengthened, which nothing reads past its old end;
//! - the last sparse extent gets its grain tables (and, when needed, directories) for the new
//!   capacity and then its header's capacity (see `grow_sparse_extent` in `resize.rs`). VMware, VirtualBox
//!   and diskferry take an extent's length from the descriptor; qemu takes a sparse extent's
//!   from its own header, so until the rename it sees that extent already grown (reading
//!   zeros there) and the disk that much larger;
//! - new extent files are made under hidden names and renamed into place, each replacing any
//!   file of that name: the extent files of an interrupted grow (which no descriptor names)
//!   are thereby reused, made again from scratch, by the next grow.
//!
//! Shrinking a twoGbMaxExtentFlat disk replaces the descriptor first, then cuts the extent the
//! new end falls in and removes the files of the extents past it (a kill in between leaves
//! files no descriptor names, which the next grow replaces). Shrinking a sparse one is
//! refused, as VMware refuses it: its grain tables keep what lies past the new end.

use super::descriptor::{Descriptor, ExtentKind, ExtentLine, MAX_EXTENTS};
use super::descriptor_io::{StoredDescriptor, update_geometry};
use super::resize::{grow_sparse_extent, reserve};
use super::sparse_header::SparseHeader;
use super::writer::{SPLIT_EXTENT_BYTES, stem};
use crate::edit::{GrowPreallocation, ResizeRequest};
use crate::error::{Error, Result};
use crate::gate::{Gate, Lookup, Role};
use crate::host_file::HostFile;
use crate::staging::Staging;
use crate::storage::{Storage, StorageExt};
use std::path::{Path, PathBuf};

/// Whether the disk's extents are sparse or flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Sparse,
    Flat,
}

/// True when `create_type` is one of the split subformats this module resizes.
pub fn is_split(create_type: &str) -> bool {
    create_type.eq_ignore_ascii_case("twoGbMaxExtentSparse")
        || create_type.eq_ignore_ascii_case("twoGbMaxExtentFlat")
}

/// Resizes the split disk whose descriptor is `stored` (at `path`) to `sectors`.
pub fn resize(
    path: &Path,
    stored: StoredDescriptor,
    sectors: u64,
    request: &ResizeRequest,
    gate: &Gate,
) -> Result<()> {
    let d = &stored.descriptor;
    let split = if d.extents.iter().all(|e| e.kind == ExtentKind::Sparse) {
        Split::Sparse
    } else if d
        .extents
        .iter()
        .all(|e| e.kind == ExtentKind::Flat && e.offset == 0)
    {
        Split::Flat
    } else {
        return Err(Error::unsupported(format!(
            "resizing a {} VMDK whose extents are not all sparse or all flat files from their start is not supported; convert it first",
            d.create_type
        ))
        .with_path(path));
    };
    if d.extents.is_empty() || d.extents.iter().any(|e| e.file.is_none()) {
        return Err(Error::unsupported(
            "resizing a split VMDK with a ZERO extent or none at all is not supported; convert it first",
        )
        .with_path(path));
    }
    let old: u64 = d.extents.iter().map(|e| e.sectors).sum();
    if sectors < old {
        return match split {
            Split::Flat => shrink_flat(path, stored, sectors, gate),
            Split::Sparse => Err(Error::unsupported(format!(
                "a {} VMDK can grow but not shrink (VMware refuses it too: its grain tables would keep data past the new end); convert it to a smaller image instead",
                d.create_type
            ))
            .with_path(path)),
        };
    }
    if split == Split::Sparse && request.preallocation != GrowPreallocation::Off {
        return Err(Error::unsupported(
            "--preallocation is not supported when growing a sparse VMDK (grains are allocated as they are written)",
        )
        .with_path(path));
    }
    grow(path, stored, sectors, split, request.preallocation, gate)
}

/// The host path of extent `name`, which must exist.
fn extent_path(path: &Path, name: &str, gate: &Gate) -> Result<PathBuf> {
    match gate.open(path, &name.replace('\\', "/"), Role::Extent)? {
        Lookup::Opened(f) => Ok(f.name().to_path_buf()),
        Lookup::Missing(p) => Err(Error::invalid(format!(
            "extent file '{name}' not found (looked for {})",
            p.display()
        ))
        .with_path(path)),
    }
}

fn grow(
    path: &Path,
    mut stored: StoredDescriptor,
    sectors: u64,
    split: Split,
    preallocation: GrowPreallocation,
    gate: &Gate,
) -> Result<()> {
    let mut d = stored.descriptor.clone();
    let old: u64 = d.extents.iter().map(|e| e.sectors).sum();
    let biggest = d.extents.iter().map(|e| e.sectors).max().unwrap_or(0);
    let limit = (SPLIT_EXTENT_BYTES / 512).max(biggest);
    let last = d.extents.len() - 1;
    // The last sparse extent's header, which new sparse extents copy.
    let mut template = None;
    let last_name = d.extents[last].file.clone().unwrap_or_default();
    let last_path = extent_path(path, &last_name, gate)?;
    let fill = (limit - d.extents[last].sectors).min(sectors - old);
    let mut rest = sectors - old - fill;
    let added = rest.div_ceil(limit);
    if d.extents.len() as u64 + added > MAX_EXTENTS as u64 {
        return Err(Error::unsupported(format!(
            "{} bytes would need {} extent files, more than the {MAX_EXTENTS} a descriptor may list",
            sectors * 512,
            d.extents.len() as u64 + added
        ))
        .with_path(path));
    }
    let new_last = d.extents[last].sectors + fill;
    let letter = match split {
        Split::Sparse => 's',
        Split::Flat => 'f',
    };
    match split {
        Split::Sparse => {
            let file = HostFile::open(&last_path)?;
            let head = file.read_vec(0, 512, "sparse extent header")?;
            drop(file);
            let header = SparseHeader::parse(&head).map_err(|e| e.with_path(&last_path))?;
            template_check(&last_path, &header)?;
            // A grow killed after this step left the header larger already: it serves.
            if header.capacity < new_last {
                grow_sparse_extent(&last_path, header, new_last)?;
            }
            template = Some(header);
        }
        Split::Flat => {
            let mut file = HostFile::open_rw(&last_path)?;
            let end = d.extents[last].offset * 512 + new_last * 512;
            if file.len() < end {
                let from = file.len();
                reserve(&mut file, from, end, preallocation)?;
            }
            file.sync()?;
        }
    }
    let mut staging = Staging::new();
    let mut index = d.extents.len();
    while rest > 0 {
        let n = rest.min(limit);
        index += 1;
        let name = new_name(path, &d, index, letter)?;
        let target = extent_path_beside(path, &last_path, &name);
        let file = staging.create(&target)?;
        match &template {
            Some(header) => {
                write_sparse_extent(&file, header, n).map_err(|e| e.with_path(&target))?
            }
            None => {
                let clone = file.try_clone().map_err(|e| {
                    Error::io("cannot write the new extent file", e).with_path(&target)
                })?;
                let mut host = HostFile::from_file(clone, &target)?;
                reserve(&mut host, 0, n * 512, preallocation)?;
                host.sync()?;
            }
        }
        d.extents.push(line_like(&d.extents[last], n, name));
        rest -= n;
    }
    staging.commit()?;
    d.extents[last].sectors = new_last;
    update_geometry(&mut d, sectors);
    stored.store(d)
}

/// Refuses a last extent that is no hosted sparse extent (a stream's compressed one, say):
/// new extents are made like it.
fn template_check(path: &Path, header: &SparseHeader) -> Result<()> {
    if header.compressed || header.markers {
        return Err(Error::unsupported(
            "the last extent is compressed: it is no twoGbMaxExtentSparse extent, and new extents cannot be made like it",
        )
        .with_path(path));
    }
    Ok(())
}

/// An extent line for a new file of `sectors`, with the access of `like`.
fn line_like(like: &ExtentLine, sectors: u64, name: String) -> ExtentLine {
    ExtentLine {
        access: like.access,
        sectors,
        kind: like.kind,
        file: Some(name),
        offset: 0,
        line: 0,
    }
}

/// The name VMware gives extent `index` (1-based) of the disk at `path`: `STEM-s00N.vmdk`
/// or `STEM-f00N.vmdk`; refused when the descriptor already names it.
fn new_name(path: &Path, d: &Descriptor, index: usize, letter: char) -> Result<String> {
    let name = format!("{}-{letter}{index:03}.vmdk", stem(path));
    if d.extents.iter().any(|e| e.file.as_deref() == Some(&name)) {
        return Err(Error::unsupported(format!(
            "the descriptor already names an extent '{name}' out of order; convert the disk to resize it"
        ))
        .with_path(path));
    }
    Ok(name)
}

/// Where a new extent named `name` goes: beside the last extent (the descriptor names files
/// relative to its own folder, where the extents of a disk we grow live).
fn extent_path_beside(path: &Path, last: &Path, name: &str) -> PathBuf {
    last.parent()
        .or_else(|| path.parent())
        .map_or_else(|| PathBuf::from(name), |p| p.join(name))
}

/// Writes a new sparse extent of `sectors` into the empty `file`, laid out as `like` (grain
/// size, table size, flags, version): header, redundant directory and tables, directory and
/// tables, with every table present and empty (a hole) as VMware and qemu expect. It has no
/// descriptor area (qemu reserves an empty one in each extent; VMware does not).
fn write_sparse_extent(file: &std::fs::File, like: &SparseHeader, sectors: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut header = *like;
    header.capacity = sectors;
    header.descriptor_offset = 0;
    header.descriptor_size = 0;
    let gd_entries = header.gd_entries();
    let gd_sectors = (gd_entries * 4).div_ceil(512);
    let gt_sectors = (u64::from(header.gtes_per_gt) * 4).div_ceil(512);
    let mut at = 1;
    let mut dirs = Vec::new();
    if like.redundant() {
        header.rgd_offset = at;
        dirs.push((at, at + gd_sectors));
        at += gd_sectors + gd_entries * gt_sectors;
    } else {
        header.rgd_offset = 0;
    }
    header.gd_offset = at;
    dirs.push((at, at + gd_sectors));
    at += gd_sectors + gd_entries * gt_sectors;
    header.overhead = at.div_ceil(header.grain_sectors) * header.grain_sectors;
    header.dirty = false;
    if header.overhead > u64::from(u32::MAX) {
        return Err(Error::unsupported(
            "the new extent's grain tables would lie past what its 32-bit sector numbers address",
        ));
    }
    let io = |e: std::io::Error| Error::io("cannot write the new extent", e);
    file.set_len(header.overhead * 512).map_err(io)?;
    for (dir, tables) in dirs {
        let entries: Vec<u8> = (0..gd_entries)
            .flat_map(|i| ((tables + i * gt_sectors) as u32).to_le_bytes())
            .collect();
        file.write_all_at(&entries, dir * 512).map_err(io)?;
    }
    file.write_all_at(&header.to_bytes(), 0).map_err(io)?;
    file.sync_all().map_err(io)
}

fn shrink_flat(path: &Path, mut stored: StoredDescriptor, sectors: u64, gate: &Gate) -> Result<()> {
    let mut d = stored.descriptor.clone();
    let mut start = 0u64;
    let mut keep = 0usize;
    let mut cut: Option<(String, u64)> = None;
    for (i, e) in d.extents.iter_mut().enumerate() {
        if start < sectors {
            keep = i + 1;
            if start + e.sectors > sectors {
                e.sectors = sectors - start;
                cut = Some((
                    e.file.clone().unwrap_or_default(),
                    (e.offset + e.sectors) * 512,
                ));
            }
        }
        start += e.sectors;
    }
    let dropped: Vec<ExtentLine> = d.extents.split_off(keep);
    let kept_names: Vec<String> = d.extents.iter().filter_map(|e| e.file.clone()).collect();
    let mut dropped_paths = Vec::new();
    for e in &dropped {
        let name = e.file.clone().unwrap_or_default();
        if !kept_names.contains(&name) {
            dropped_paths.push(extent_path(path, &name, gate)?);
        }
    }
    // The file is cut only when no other kept extent line names it.
    let cut_path = match &cut {
        Some((name, _)) if kept_names.iter().filter(|n| *n == name).count() == 1 => {
            Some(extent_path(path, name, gate)?)
        }
        _ => None,
    };
    update_geometry(&mut d, sectors);
    stored.store(d)?;
    if let (Some(p), Some((_, end))) = (cut_path, cut) {
        let mut file = HostFile::open_rw(&p)?;
        if file.len() > end {
            file.set_len(end)?;
            file.sync()?;
        }
    }
    for p in dropped_paths {
        std::fs::remove_file(&p)
            .map_err(|e| Error::io("cannot remove the extent past the new end", e).with_path(&p))?;
    }
    Ok(())
}
