//! `resize` for VMDK (qemu-img refuses to resize any VMDK; vmware-vdiskmanager -x grows).
//!
//! - monolithicFlat and vmfs (one flat extent): the flat file is grown (a hole, fallocated or
//!   zeros, as `--preallocation` says) and flushed, then the descriptor is replaced with the
//!   new extent size and geometry; shrinking replaces the descriptor first and cuts the file
//!   after. A crash in between leaves a longer file than the descriptor needs: the old size.
//! - monolithicSparse (and a delta disk in one file): grows only. When the grain directory's
//!   sectors have room for the new capacity, its spare entries (which must be 0) serve; else a
//!   new directory and redundant directory are written past the end and flushed. Then the
//!   header (one sector: the switch) gets the new capacity and directory, then the embedded
//!   descriptor its extent size and geometry. Grain tables for the new range are made when a
//!   grain is first written there. Shrinking a sparse disk is refused: its tables would keep
//!   grains past the new end that a later grow would bring back.
//! - twoGbMaxExtentSparse and twoGbMaxExtentFlat: see `resize_split.rs`.
//! - streamOptimized, ESXi deltas: refused, saying so.

use super::descriptor::ExtentKind;
use super::descriptor_io::{Home, StoredDescriptor, update_geometry};
use super::sparse_header::{DirectoryAt, MAX_CAPACITY_SECTORS, SparseHeader};
use crate::edit::{GrowPreallocation, ResizeRequest, Shrink};
use crate::error::{Error, Result};
use crate::gate::{Lookup, Role};
use crate::host_file::HostFile;
use crate::storage::{Storage, StorageExt};
use std::path::Path;

/// Resizes the VMDK at `path` as `request` says.
pub fn resize(path: &Path, request: &ResizeRequest, gate: &crate::gate::Gate) -> Result<()> {
    let stored = StoredDescriptor::load(path)?;
    let d = &stored.descriptor;
    let sectors = request.new_size.div_ceil(512);
    if sectors == 0 {
        return Err(Error::invalid("a VMDK cannot be resized to 0 bytes").with_path(path));
    }
    if sectors > MAX_CAPACITY_SECTORS {
        return Err(Error::invalid(format!(
            "{} bytes is larger than the largest VMDK ({} bytes)",
            request.new_size,
            MAX_CAPACITY_SECTORS * 512
        ))
        .with_path(path));
    }
    let old = d.total_bytes().map_err(|e| e.with_path(path))? / 512;
    if sectors < old && request.shrink == Shrink::Refuse {
        return Err(Error::invalid(
            "Use the --shrink option to perform a shrink operation (data past the new end is lost)",
        )
        .with_path(path));
    }
    match &stored.home {
        Home::Embedded { header, .. } => {
            if d.create_type.eq_ignore_ascii_case("streamOptimized") || header.compressed {
                return Err(refuse(
                    path,
                    "streamOptimized",
                    "it is compressed and packed",
                ));
            }
            grow_sparse(path, stored.clone(), *header, sectors, request)
        }
        Home::File if super::resize_split::is_split(&d.create_type) => {
            super::resize_split::resize(path, stored.clone(), sectors, request, gate)
        }
        Home::File => {
            let single_flat = d.extents.len() == 1
                && matches!(d.extents[0].kind, ExtentKind::Flat | ExtentKind::Vmfs);
            if !single_flat {
                return Err(refuse(
                    path,
                    &d.create_type,
                    "only monolithicFlat, vmfs, twoGbMaxExtent* and monolithicSparse disks can be resized in place",
                ));
            }
            resize_flat(path, stored.clone(), sectors, request, gate)
        }
    }
}

fn refuse(path: &Path, create_type: &str, why: &str) -> Error {
    Error::unsupported(format!(
        "resizing a {create_type} VMDK is not supported: {why}; convert it (to monolithicSparse or monolithicFlat) first"
    ))
    .with_path(path)
}

fn resize_flat(
    path: &Path,
    mut stored: StoredDescriptor,
    sectors: u64,
    request: &ResizeRequest,
    gate: &crate::gate::Gate,
) -> Result<()> {
    let line = stored.descriptor.extents[0].clone();
    let name = line.file.clone().unwrap_or_default();
    let flat = match gate.open(path, &name.replace('\\', "/"), Role::Extent)? {
        Lookup::Opened(f) => f.name().to_path_buf(),
        Lookup::Missing(p) => {
            return Err(Error::invalid(format!(
                "extent file '{name}' not found (looked for {})",
                p.display()
            ))
            .with_path(path));
        }
    };
    let mut file = HostFile::open_rw(&flat)?;
    let start = line.offset * 512;
    let old_end = start + line.sectors * 512;
    let new_end = start + sectors * 512;
    let mut d = stored.descriptor.clone();
    d.extents[0].sectors = sectors;
    update_geometry(&mut d, sectors);
    if new_end >= old_end {
        if file.len() < new_end {
            let from = file.len();
            reserve(&mut file, from, new_end, request.preallocation)?;
        }
        file.sync()?;
        stored.store(d)?;
    } else {
        stored.store(d)?;
        // The file is cut only when the extent ends it (another extent line could share it).
        if file.len() <= old_end && file.len() > new_end {
            file.set_len(new_end)?;
            file.sync()?;
        }
    }
    Ok(())
}

/// Makes the flat file `file` `to` bytes long, the bytes from `from` (its old end) reserved as
/// `preallocation` says.
pub(super) fn reserve(
    file: &mut HostFile,
    from: u64,
    to: u64,
    preallocation: GrowPreallocation,
) -> Result<()> {
    file.set_len(to)?;
    match preallocation {
        GrowPreallocation::Off | GrowPreallocation::Metadata => Ok(()),
        GrowPreallocation::Falloc => rustix::fs::fallocate(
            file.file(),
            rustix::fs::FallocateFlags::empty(),
            from,
            to - from,
        )
        .map_err(|e| {
            Error::io("cannot reserve space (fallocate)", e.into()).with_path(file.path())
        }),
        GrowPreallocation::Full => file.write_zeros(from, to - from),
    }
}

fn grow_sparse(
    path: &Path,
    mut stored: StoredDescriptor,
    header: SparseHeader,
    sectors: u64,
    request: &ResizeRequest,
) -> Result<()> {
    if sectors < header.capacity {
        return Err(refuse(
            path,
            &stored.descriptor.create_type,
            "a sparse VMDK can grow but not shrink",
        ));
    }
    if !matches!(request.preallocation, GrowPreallocation::Off) {
        return Err(Error::unsupported(
            "--preallocation is not supported when growing a sparse VMDK (grains are allocated as they are written)",
        )
        .with_path(path));
    }
    grow_sparse_extent(path, header, sectors)?;
    let mut d = stored.descriptor.clone();
    if let Some(e) = d.extents.first_mut() {
        e.sectors = sectors;
    }
    update_geometry(&mut d, sectors);
    stored.store(d)
}

/// Grows the sparse extent at `path` (whose header is `header`) to `sectors`: grain tables for
/// the new range and, where the directory's sectors lack room, new directories past the end,
/// all flushed before the header (one sector) switches to them.
pub(super) fn grow_sparse_extent(path: &Path, header: SparseHeader, sectors: u64) -> Result<()> {
    let DirectoryAt::Sector(gd_sector) = header.directory_at() else {
        return Err(Error::corrupt("sparse extent has no grain directory").with_path(path));
    };
    let mut file = HostFile::open_rw(path)?;
    let old_entries = header.gd_entries();
    let mut new_header = header;
    new_header.capacity = sectors;
    let new_entries = new_header.gd_entries();
    if new_entries > u64::from(u32::MAX) {
        return Err(Error::invalid("the new size needs too many grain tables").with_path(path));
    }
    // qemu (and VMware) expect every grain table to exist, so the tables of the new range
    // are made now: past the end of the file, as a hole that reads as zeroed tables.
    let added = new_entries - old_entries;
    let gt_sectors = (u64::from(header.gtes_per_gt) * 4).div_ceil(512);
    let mut dirs = vec![gd_sector];
    if header.redundant() {
        dirs.push(header.rgd_offset);
    }
    let mut at = file.len().div_ceil(512);
    let mut tables = Vec::new();
    for _ in &dirs {
        tables.push(at);
        at += added * gt_sectors;
    }
    // Entries the directories' whole sectors hold; the spare ones must read 0.
    let room = (old_entries * 4).div_ceil(512) * 512 / 4;
    let mut spare_is_empty = new_entries <= room;
    if spare_is_empty {
        for &dir in &dirs {
            let spare = file.read_vec(dir * 512 + old_entries * 4, added * 4, "grain directory")?;
            spare_is_empty &= spare.iter().all(|&b| b == 0);
        }
    }
    let dir_bytes = (new_entries * 4).div_ceil(512) * 512;
    let end = at
        + if spare_is_empty {
            0
        } else {
            dirs.len() as u64 * dir_bytes / 512
        };
    if end > u64::from(u32::MAX) {
        return Err(Error::unsupported(
            "the sparse extent cannot grow that far: its metadata would lie past 2 TiB, which its 32-bit sector numbers cannot address",
        )
        .with_path(path));
    }
    file.set_len(at * 512)?;
    let new_values = |base: u64| -> Vec<u8> {
        (0..added)
            .flat_map(|i| ((base + i * gt_sectors) as u32).to_le_bytes())
            .collect()
    };
    if spare_is_empty {
        for (&dir, &base) in dirs.iter().zip(&tables) {
            file.write_all_at(&new_values(base), dir * 512 + old_entries * 4)?;
        }
    } else {
        let mut new_dirs = Vec::new();
        for (&dir, &base) in dirs.iter().zip(&tables) {
            let mut entries = file.read_vec(dir * 512, old_entries * 4, "grain directory")?;
            entries.extend_from_slice(&new_values(base));
            entries.resize(dir_bytes as usize, 0);
            file.write_all_at(&entries, at * 512)?;
            new_dirs.push(at);
            at += dir_bytes / 512;
        }
        new_header.gd_offset = new_dirs[0];
        if header.redundant() {
            new_header.rgd_offset = new_dirs[1];
        }
    }
    file.sync()?;
    file.write_all_at(&new_header.to_bytes(), 0)?;
    file.sync()
}
