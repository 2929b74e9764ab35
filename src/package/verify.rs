//! `check` of a package (an OVA, an OVF descriptor with its folder, an XVA): every disk with
//! content is read to its end through the package's own checks (an OVA member's manifest
//! digest, an XVA chunk's checksum, a stream-optimized disk's markers), so that a package
//! can be vouched for before it is imported, as `check` vouches for an image.

use crate::error::Result;
use crate::host_file::HostFile;
use crate::image::{Allocation, Image, OpenOptions};
use std::path::Path;

/// What kind of package a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageKind {
    /// An OVA (a tar) or an OVF descriptor beside its files.
    Ovf,
    /// An XVA, or a legacy XVA's folder.
    Xva,
}

/// One disk of a package, as `check` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageDisk {
    /// What `--disk` selects it by (its index among the VM's disks).
    pub index: usize,
    /// Its file in the package (an OVA), or its VDI's name (an XVA).
    pub name: String,
}

/// The kind of package `path` is and its disks with content, or `None` when it is not a
/// package (the same tests [`Image::open`] makes, in the same order).
pub fn package_disks(path: &Path) -> Result<Option<(PackageKind, Vec<PackageDisk>)>> {
    let xva = |path: &Path| -> Result<Option<(PackageKind, Vec<PackageDisk>)>> {
        let package = crate::xva::XvaPackage::open(path)?;
        let disks = package
            .disks()
            .into_iter()
            .map(|d| PackageDisk {
                index: d.index,
                name: d.disk.name.clone().unwrap_or_else(|| d.disk.vdi.clone()),
            })
            .collect();
        Ok(Some((PackageKind::Xva, disks)))
    };
    if path.is_dir() {
        return match crate::xva::legacy_descriptor(path) {
            Some(_) => xva(path),
            None => Ok(None),
        };
    }
    let file = HostFile::open(path)?;
    if crate::xva::probe(&file).is_some() {
        return xva(path);
    }
    if crate::ova::open::probe(&file).is_some() {
        let package = crate::ova::open::Package::open(path)?;
        let disks = package
            .disks()
            .into_iter()
            .map(|d| PackageDisk {
                index: d.index,
                name: d.href,
            })
            .collect();
        return Ok(Some((PackageKind::Ovf, disks)));
    }
    Ok(None)
}

/// Reads disk `disk` of the package at `path` to its end (the data ranges its map gives) and
/// waits for the checks beside the reads: the first failure, else the disk's virtual size.
pub fn verify_disk(path: &Path, disk: &PackageDisk, options: &OpenOptions) -> Result<u64> {
    let mut options = options.clone();
    options.package_disk = Some(disk.index.to_string());
    options.format = None;
    let image = Image::open(path, &options)?;
    let size = image.virtual_size();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < size {
        let status = image.block_status(pos, size - pos)?;
        let m = status.mapping;
        if m.allocation == Allocation::Data {
            let mut at = m.start;
            while at < m.end() {
                let n = (m.end() - at).min(buf.len() as u64) as usize;
                image.read_at(at, &mut buf[..n])?;
                at += n as u64;
            }
        }
        pos = m.end();
    }
    image.finish_checks()?;
    Ok(size)
}
