//! Where an image's descriptor lives, and how an in-place change writes it back.
//!
//! A text descriptor of its own (twoGbMaxExtent*, monolithicFlat, vmfs, delta descriptors) is
//! replaced whole: the new text goes to a hidden file beside it, is flushed, and is renamed
//! over the old one, so a crash leaves the old or the new descriptor, never a mix.
//!
//! A descriptor embedded in a sparse extent (monolithicSparse) has a fixed area after the
//! header (20 sectors as VMware, qemu and diskferry write it) and every tool (qemu's CID update,
//! VirtualBox, VMware) rewrites it there, at the offset the header gives; moving it elsewhere
//! would break qemu, which writes 20 sectors at that offset. So it is rewritten in place, with
//! one write of the whole area, NUL-padded: a killed process leaves the old or the new text
//! (one `pwrite` into one page of the page cache), and a text that does not fit is refused.

use super::descriptor::{Descriptor, MAX_DESCRIPTOR_BYTES};
use super::sparse_header::{self, SparseHeader};
use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::staging::Staging;
use crate::storage::{Storage, StorageExt};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a descriptor is stored.
#[derive(Debug, Clone)]
pub enum Home {
    /// Its own text file.
    File,
    /// Inside the sparse extent at the same path, in `sectors` sectors from sector `first`.
    Embedded {
        /// The extent's header.
        header: SparseHeader,
        /// The area's first sector.
        first: u64,
        /// The area's length in sectors.
        sectors: u64,
    },
}

/// A descriptor read from an image, and where to write it back.
#[derive(Debug, Clone)]
pub struct StoredDescriptor {
    /// The image's path (the descriptor file, or the sparse extent holding it).
    pub path: PathBuf,
    /// The parsed descriptor.
    pub descriptor: Descriptor,
    /// Where it is stored.
    pub home: Home,
}

impl StoredDescriptor {
    /// Reads the descriptor of the image at `path`. A bare extent (one with no descriptor:
    /// COWD, SESPARSE, a sparse extent of a split disk) is refused: the change belongs in the
    /// descriptor that names it.
    pub fn load(path: &Path) -> Result<StoredDescriptor> {
        let file = HostFile::open(path)?;
        let head = file.read_vec(0, file.len().min(512), "header")?;
        if head.starts_with(sparse_header::MAGIC) {
            let header = SparseHeader::parse(&head).map_err(|e| e.with_path(path))?;
            if header.descriptor_offset == 0 || header.descriptor_size == 0 {
                return Err(Error::unsupported(
                    "this sparse extent has no descriptor of its own (it is one extent of a split disk): change the descriptor that names it",
                )
                .with_path(path));
            }
            let len = (header.descriptor_size * 512).min(MAX_DESCRIPTOR_BYTES);
            let bytes = file
                .read_vec(header.descriptor_offset * 512, len, "embedded descriptor")
                .map_err(|e| e.with_path(path))?;
            let descriptor = Descriptor::parse(&bytes).map_err(|e| {
                e.context("embedded descriptor")
                    .at_offset(header.descriptor_offset * 512)
                    .with_path(path)
            })?;
            return Ok(StoredDescriptor {
                path: path.to_path_buf(),
                descriptor,
                home: Home::Embedded {
                    first: header.descriptor_offset,
                    sectors: header.descriptor_size,
                    header,
                },
            });
        }
        if head.starts_with(super::cowd::MAGIC) || super::sesparse::has_magic(&head) {
            return Err(Error::unsupported(
                "this is a bare ESXi sparse extent with no descriptor: change the descriptor (the small .vmdk) that names it",
            )
            .with_path(path));
        }
        if file.len() > MAX_DESCRIPTOR_BYTES {
            return Err(Error::corrupt(format!(
                "not a VMDK: no sparse extent magic, and at {} bytes too large to be a text descriptor",
                file.len()
            ))
            .with_path(path));
        }
        let text = file.read_vec(0, file.len(), "descriptor")?;
        let descriptor = Descriptor::parse(&text).map_err(|e| e.with_path(path))?;
        Ok(StoredDescriptor {
            path: path.to_path_buf(),
            descriptor,
            home: Home::File,
        })
    }

    /// Writes `descriptor` where this one was read from (see the module doc for how a crash
    /// is survived), and makes it durable.
    pub fn store(&mut self, descriptor: Descriptor) -> Result<()> {
        let text = descriptor.to_text();
        match &self.home {
            Home::File => replace_file(&self.path, text.as_bytes())?,
            Home::Embedded { first, sectors, .. } => {
                let area = (sectors * 512) as usize;
                // One NUL at least, so readers that stop at the first NUL stop inside it.
                if text.len() >= area {
                    return Err(Error::unsupported(format!(
                        "the new descriptor is {} bytes, more than the {} bytes this file reserves for it (in sectors {first} to {}); convert the image to change it",
                        text.len(),
                        area - 1,
                        first + sectors - 1
                    ))
                    .with_path(&self.path));
                }
                let mut bytes = text.into_bytes();
                bytes.resize(area, 0);
                let mut file = HostFile::open_rw(&self.path)?;
                file.write_all_at(&bytes, first * 512)?;
                file.sync()?;
            }
        }
        self.descriptor = descriptor;
        Ok(())
    }
}

/// Replaces the file at `path` by `bytes`: a hidden file beside it, flushed, then renamed over
/// it (keeping its owner and mode).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut staging = Staging::new();
    let file = staging.create(path)?;
    (&*file)
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("cannot write the new descriptor", e).with_path(path))?;
    staging.commit()
}

/// A new content id: random, never one of the two values that mean "none".
pub fn new_cid(old: u32) -> u32 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let cid = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if cid >= 0xffff_fffe || cid == old {
        cid.wrapping_add(0x1357_9bdf) & 0x7fff_ffff
    } else {
        cid
    }
}

/// The `(cylinders, heads, sectors)` geometry diskferry's writer (and qemu) give a disk of
/// `sectors` sectors on `adapter` (IDE: 16 heads; SCSI: 255).
pub fn geometry(sectors: u64, adapter: &str) -> (u64, u64, u64) {
    let (heads, max_cylinders) = if adapter.eq_ignore_ascii_case("ide") {
        (16, 16383)
    } else {
        (255, 65535)
    };
    ((sectors / (heads * 63)).clamp(1, max_cylinders), heads, 63)
}

/// Sets `ddb.key` to `value`, keeping its place (and its spelling) when present.
pub fn set_ddb(descriptor: &mut Descriptor, key: &str, value: &str) {
    match descriptor
        .ddb
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
    {
        Some((_, v)) => *v = value.to_string(),
        None => descriptor.ddb.push((key.to_string(), value.to_string())),
    }
}

/// Rewrites the ddb geometry for a disk of `sectors` sectors, for the adapter the
/// descriptor names, when the descriptor records a geometry at all.
pub fn update_geometry(descriptor: &mut Descriptor, sectors: u64) {
    if descriptor.ddb_value("ddb.geometry.cylinders").is_none() {
        return;
    }
    let adapter = descriptor
        .ddb_value("ddb.adapterType")
        .unwrap_or("lsilogic")
        .to_string();
    let (c, h, s) = geometry(sectors, &adapter);
    set_ddb(descriptor, "ddb.geometry.cylinders", &c.to_string());
    set_ddb(descriptor, "ddb.geometry.heads", &h.to_string());
    set_ddb(descriptor, "ddb.geometry.sectors", &s.to_string());
}
