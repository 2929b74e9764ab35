//! XVA: the VM exports of XenServer, XCP-ng (`xe vm-export`) and Xen Orchestra, read in place
//! and written as a stream ([`mod@write`]).
//!
//! An XVA is a tar whose first member is `ova.xml` (the VM's records, XML-RPC: see
//! [`ova_xml`]), followed by each disk as 1 MiB chunk members with their checksums (see
//! [`disk`]). The whole tar may be gzip- or zstd-compressed; such a file is inflated once into
//! an unnamed temporary file (see [`crate::package::gzip`]) and read from there. The legacy
//! layout of XenSource's first products (`<appliance version="0.1">`, each disk a folder of
//! gzip files) is read too: see [`legacy`].
//!
//! ```no_run
//! use diskferry::xva::XvaPackage;
//! let xva = XvaPackage::open(std::path::Path::new("vm.xva"))?;
//! println!("{} with {} disk(s)", xva.vm().name, xva.disks().len());
//! # Ok::<(), diskferry::Error>(())
//! ```

pub mod disk;
pub mod legacy;
pub mod mapping;
pub mod ova_xml;
pub mod ova_xml_write;
pub mod write;

pub use disk::{ChunkStats, ChunkedDisk};
pub use legacy::LegacyDisk;
pub use ova_xml::{Description, ExportKind, Version, XvaDisk};

use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::image::{Image, OpenOptions};
use crate::ova::open::{PackageDiskInfo, PackageInfo};
use crate::package::{Codec, GzipStorage, MemberKind, TarIndex};
use crate::storage::{Storage, StorageExt};
use crate::vm::Vm;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest `ova.xml` read (XAPI's for a VM with many snapshots is a few MiB).
const MAX_OVA_XML: u64 = 32 << 20;

/// How an XVA is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// A plain tar.
    None,
    /// The whole tar gzip-compressed.
    Gzip,
    /// The whole tar zstd-compressed.
    Zstd,
}

/// True when `head` (at least 512 bytes) is a tar header for a member named `ova.xml`.
fn tar_starts_with_ova_xml(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    let name_field = &head[..100];
    let name_len = name_field.iter().position(|&b| b == 0).unwrap_or(100);
    let name = &name_field[..name_len];
    if name != b"ova.xml" && name != b"./ova.xml" {
        return false;
    }
    // A valid header checksum, so a file that merely begins with those letters is not taken
    // for an XVA.
    header_checksum_ok(head)
}

/// True when a tar header's checksum field matches its bytes (their sum with the field read
/// as spaces).
fn header_checksum_ok(head: &[u8]) -> bool {
    let field = &head[148..156];
    let text: String = field.iter().map(|&b| char::from(b)).collect();
    let Ok(stored) = u32::from_str_radix(text.trim_matches(['\0', ' ']), 8) else {
        return false;
    };
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

/// True when `head` is a tar header for a member named like an XVA chunk (`Ref:3/00000000`):
/// an XVA whose ova.xml is missing or misplaced, which should be told so rather than be read
/// as an OVA without a descriptor.
fn tar_starts_with_chunk(head: &[u8]) -> bool {
    if head.len() < 512 || !header_checksum_ok(head) {
        return false;
    }
    let len = head[..100].iter().position(|&b| b == 0).unwrap_or(100);
    let Ok(name) = std::str::from_utf8(&head[..len]) else {
        return false;
    };
    name.split_once('/').is_some_and(|(folder, n)| {
        folder.starts_with("Ref:") && n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// What the first bytes of `storage` say: an XVA (and how it is compressed), or `None`. A
/// compressed file is recognised by decompressing its first header only.
pub fn probe(storage: &dyn Storage) -> Option<Compression> {
    let mut head = [0u8; 512];
    let n = storage.read_at_most(&mut head, 0).ok()?;
    // A legacy export's ova.xml stands for the folder it heads.
    if tar_starts_with_ova_xml(&head[..n])
        || tar_starts_with_chunk(&head[..n])
        || legacy::is_appliance(&head[..n])
    {
        return Some(Compression::None);
    }
    let codec = Codec::sniff(&head[..n])?;
    let mut decoder = codec.decoder(storage).ok()?.take(512);
    let mut inner = Vec::with_capacity(512);
    decoder.read_to_end(&mut inner).ok()?;
    tar_starts_with_ova_xml(&inner).then_some(match codec {
        Codec::Gzip => Compression::Gzip,
        Codec::Zstd => Compression::Zstd,
    })
}

/// A disk of an XVA, as listed for selection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskEntry {
    /// Its position among the VM's disks (0 first), what `--disk N` selects.
    pub index: usize,
    /// What `ova.xml` says of it.
    pub disk: XvaDisk,
}

/// An opened XVA.
pub struct XvaPackage {
    path: PathBuf,
    compression: Compression,
    description: Description,
    chunks: Chunks,
    notes: Vec<String>,
}

/// Where the disks' chunks are.
enum Chunks {
    /// Members of the export's tar: each VDI's chunk members (indices into the index), in
    /// archive order.
    Tar {
        index: Arc<TarIndex>,
        members: HashMap<String, Vec<usize>>,
    },
    /// A legacy export as a folder: each disk folder's gzip files (relative to the ova.xml at
    /// `ova_xml`) and their sizes, in name order.
    Folder {
        ova_xml: PathBuf,
        files: HashMap<String, Vec<(String, u64)>>,
    },
}

impl Chunks {
    /// True when the disk whose chunks are under `vdi` has any in the export.
    fn has(&self, vdi: &str) -> bool {
        match self {
            Chunks::Tar { members, .. } => members.contains_key(vdi),
            Chunks::Folder { files, .. } => files.get(vdi).is_some_and(|f| !f.is_empty()),
        }
    }
}

impl std::fmt::Debug for XvaPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XvaPackage")
            .field("path", &self.path)
            .field("compression", &self.compression)
            .finish()
    }
}

impl XvaPackage {
    /// Opens the XVA at `path` (a file the user chose); a compressed one is inflated into the
    /// temporary folder first.
    pub fn open(path: &Path) -> Result<XvaPackage> {
        if let Some(ova_xml) = legacy_descriptor(path) {
            return XvaPackage::from_folder(path, &ova_xml);
        }
        let file: Arc<dyn Storage> = Arc::new(HostFile::open(path)?);
        let compression = match probe(file.as_ref()) {
            Some(c) => c,
            None => {
                return Err(Error::invalid(
                    "not an XVA: a tar whose first member is ova.xml (plain, gzip or zstd)",
                )
                .with_path(path));
            }
        };
        let storage: Arc<dyn Storage> = match compression {
            Compression::None => file,
            Compression::Gzip | Compression::Zstd => {
                let codec = if compression == Compression::Gzip {
                    Codec::Gzip
                } else {
                    Codec::Zstd
                };
                Arc::new(GzipStorage::inflate_with(
                    codec,
                    file.as_ref(),
                    None,
                    None,
                    path,
                )?)
            }
        };
        XvaPackage::from_storage(path, compression, storage)
    }

    /// Reads a legacy export kept as a folder (the format's own form: ova.xml beside a folder
    /// of gzip files per disk); `ova_xml` is its descriptor, `path` what the user named.
    pub fn from_folder(path: &Path, ova_xml: &Path) -> Result<XvaPackage> {
        let bytes = read_ova_xml(&HostFile::open(ova_xml)?, ova_xml)?;
        let description = ova_xml::parse(&bytes, &ova_xml.to_string_lossy())?;
        if description.kind != ExportKind::Legacy {
            return Err(Error::invalid(
                "an XVA of today's layout is a tar, not a folder: its ova.xml is read from the .xva file",
            )
            .with_path(ova_xml));
        }
        let files =
            legacy::list_folders(ova_xml, description.disks.iter().map(|d| d.vdi.as_str()))?;
        Ok(XvaPackage {
            path: path.to_path_buf(),
            compression: Compression::None,
            description,
            chunks: Chunks::Folder {
                ova_xml: ova_xml.to_path_buf(),
                files,
            },
            notes: vec![
                "a legacy XVA kept as a folder: ova.xml and a folder of gzip files per disk".into(),
            ],
        })
    }

    /// Reads the XVA tar held in `storage` (already decompressed); `path` names it.
    pub fn from_storage(
        path: &Path,
        compression: Compression,
        storage: Arc<dyn Storage>,
    ) -> Result<XvaPackage> {
        let index = Arc::new(TarIndex::read(storage)?);
        let first = index.members().first().map(|m| m.name.as_str());
        if first != Some("ova.xml") {
            return Err(Error::invalid(format!(
                "not an XVA: its first member is {}, not ova.xml",
                first.map_or("missing (an empty tar)".to_string(), |f| format!("'{f}'"))
            ))
            .with_path(path));
        }
        let bytes = read_ova_xml(&index.open("ova.xml")?, path)?;
        let description = ova_xml::parse(&bytes, &index.member_label("ova.xml").to_string_lossy())?;
        let wanted: HashMap<&str, ()> = description
            .disks
            .iter()
            .map(|d| (d.vdi.as_str(), ()))
            .collect();
        let mut members: HashMap<String, Vec<usize>> = HashMap::new();
        let mut ignored = Vec::new();
        for (i, m) in index.members().iter().enumerate().skip(1) {
            let disk = match description.kind {
                // `Ref:3/00000000` and its checksum member.
                ExportKind::Chunked => m
                    .name
                    .split_once('/')
                    .map(|(f, _)| f)
                    .filter(|f| wanted.contains_key(f)),
                // Any file in the folder the VDI's source names (`xvda/chunk-000000000.gz`).
                ExportKind::Legacy => m.name.rsplit_once('/').and_then(|(f, file)| {
                    (m.kind == MemberKind::File && !file.is_empty() && wanted.contains_key(f))
                        .then_some(f)
                }),
            };
            match disk {
                Some(f) => members.entry(f.to_string()).or_default().push(i),
                None if m.kind == MemberKind::Directory => {}
                None => ignored.push(m.name.clone()),
            }
        }
        let mut notes = Vec::new();
        if !ignored.is_empty() {
            notes.push(format!(
                "{} member(s) belong to no disk of the VM and are ignored (the first: '{}')",
                ignored.len(),
                ignored[0]
            ));
        }
        Ok(XvaPackage {
            path: path.to_path_buf(),
            compression,
            description,
            chunks: Chunks::Tar { index, members },
            notes,
        })
    }

    /// Where the package is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How it is compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// What `ova.xml` says.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.description.vm
    }

    /// The VM's disks that have content in the package (a metadata-only export has none), in
    /// the VM's order.
    pub fn disks(&self) -> Vec<DiskEntry> {
        self.description
            .disks
            .iter()
            .enumerate()
            .filter(|(_, d)| self.chunks.has(&d.vdi) || d.virtual_size == 0)
            .map(|(index, d)| DiskEntry {
                index,
                disk: d.clone(),
            })
            .collect()
    }

    /// The disk `which` selects: its index (`0`, `1` ...), its VBD's userdevice
    /// (`userdevice=1`), its VDI id (`Ref:3`), its device (`xvdb`) or its VDI's name; `None`
    /// when the package holds exactly one. An error lists the disks.
    pub fn select(&self, which: Option<&str>) -> Result<DiskEntry> {
        let disks = self.disks();
        let list = || {
            disks
                .iter()
                .map(|d| {
                    format!(
                        "{} ({}, userdevice {}{})",
                        d.index,
                        d.disk.vdi,
                        d.disk.userdevice,
                        d.disk
                            .device
                            .as_deref()
                            .map(|x| format!(", {x}"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match which {
            None => match disks.len() {
                1 => Ok(disks[0].clone()),
                0 => Err(Error::invalid("the XVA holds no disk").with_path(&self.path)),
                n => Err(Error::invalid(format!(
                    "the XVA holds {n} disks; choose one with --disk: {}",
                    list()
                ))
                .with_path(&self.path)),
            },
            Some(w) => disks
                .iter()
                .find(|d| w.parse::<usize>().ok() == Some(d.index))
                .or_else(|| {
                    let ud = w.strip_prefix("userdevice=")?.parse::<u32>().ok()?;
                    disks.iter().find(|d| d.disk.userdevice == ud)
                })
                .or_else(|| {
                    disks.iter().find(|d| {
                        d.disk.vdi == w
                            || d.disk.device.as_deref() == Some(w)
                            || d.disk.name.as_deref() == Some(w)
                    })
                })
                .cloned()
                .ok_or_else(|| {
                    Error::invalid(format!("no disk '{w}' in the XVA; its disks: {}", list()))
                        .with_path(&self.path)
                }),
        }
    }

    /// The layout of the export.
    pub fn kind(&self) -> ExportKind {
        self.description.kind
    }

    /// The bytes of disk `entry`, assembled from its chunks (see [`ChunkedDisk`]). A legacy
    /// export's disks have no such index: see [`XvaPackage::legacy_disk`].
    pub fn disk_storage(&self, entry: &DiskEntry) -> Result<ChunkedDisk> {
        let Chunks::Tar { index, members } = &self.chunks else {
            return Err(legacy_only(&self.path));
        };
        if self.description.kind == ExportKind::Legacy {
            return Err(legacy_only(&self.path));
        }
        let empty = Vec::new();
        let members = members.get(&entry.disk.vdi).unwrap_or(&empty);
        ChunkedDisk::new(
            Arc::clone(index),
            &entry.disk.vdi,
            members,
            entry.disk.virtual_size,
            crate::package::tar_index::label(&self.path, &entry.disk.vdi),
        )
    }

    /// The gzip chunks of disk `entry` of a legacy export (see [`legacy`]).
    pub fn legacy_disk(&self, entry: &DiskEntry) -> Result<LegacyDisk> {
        let name = crate::package::tar_index::label(&self.path, &entry.disk.vdi);
        let (source, chunks) = match &self.chunks {
            Chunks::Tar { index, members } => (
                legacy::ChunkSource::Tar(Arc::clone(index)),
                members
                    .get(&entry.disk.vdi)
                    .map(|m| {
                        m.iter()
                            .map(|&i| {
                                let m = &index.members()[i];
                                (m.name.clone(), m.size)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Chunks::Folder { ova_xml, files } => (
                legacy::ChunkSource::Folder(ova_xml.clone()),
                files.get(&entry.disk.vdi).cloned().unwrap_or_default(),
            ),
        };
        LegacyDisk::new(source, &entry.disk, chunks, name)
    }

    /// Opens disk `entry` as a raw image; each chunk's checksum is verified when it is first
    /// read, so a damaged chunk fails the read that reaches it. A legacy export's disk is
    /// inflated into the temporary folder first.
    pub fn open_disk(&self, entry: &DiskEntry, options: &OpenOptions) -> Result<Image> {
        let storage: Arc<dyn Storage> = match self.description.kind {
            ExportKind::Chunked => Arc::new(self.disk_storage(entry)?),
            ExportKind::Legacy => Arc::new(self.legacy_disk(entry)?.inflate()?),
        };
        // The chunks are the disk's bytes: nothing inside is an image format to detect, and
        // nothing outside the package is read.
        let inner = OpenOptions {
            format: Some(crate::formats::raw::FORMAT),
            backing: crate::image::BackingPolicy::Ignore,
            package_disk: None,
            ..options.clone()
        };
        Image::open_storage(storage, &inner)
    }

    /// What `info` shows: the VM and its disks (their chunks indexed, not hashed).
    pub fn info(&self) -> PackageInfo {
        let v = &self.description.version;
        let mut disks = Vec::new();
        let mut sha1 = 0;
        let mut xxh = 0;
        let mut empty = 0;
        let mut gzip_chunks = 0;
        for entry in self.disks() {
            let vm_disk = self.description.vm.disks.get(entry.index);
            let mut info = PackageDiskInfo {
                index: entry.index,
                file: entry.disk.vdi.clone(),
                format: None,
                virtual_size: None,
                file_size: None,
                controller: vm_disk
                    .map(|d| format!("{} {}:{}", d.controller.kind, d.controller.index, d.unit)),
                error: None,
            };
            match self.description.kind {
                ExportKind::Chunked => match self.disk_storage(&entry) {
                    Ok(d) => {
                        let s = d.stats();
                        sha1 += s.sha1;
                        xxh += s.xxh64;
                        empty += s.empty_chunks;
                        info.format = Some("raw".into());
                        info.virtual_size = Some(d.len());
                        info.file_size = Some(s.stored_bytes);
                    }
                    Err(e) => info.error = Some(e.to_string()),
                },
                ExportKind::Legacy => match self.legacy_disk(&entry) {
                    Ok(d) => {
                        gzip_chunks += d.chunks();
                        info.format = Some("raw".into());
                        info.virtual_size = Some(d.virtual_size());
                        info.file_size = Some(d.stored_bytes());
                    }
                    Err(e) => info.error = Some(e.to_string()),
                },
            }
            disks.push(info);
        }
        let mut notes = self.notes.clone();
        for (i, d) in self.description.disks.iter().enumerate() {
            if !disks.iter().any(|x| x.index == i) {
                notes.push(format!(
                    "disk {i} ({}, {} bytes) has no chunks in the export (a metadata-only export?)",
                    d.vdi, d.virtual_size
                ));
            }
        }
        match self.description.kind {
            ExportKind::Chunked => notes.push(format!(
                "chunk checksums: {sha1} SHA-1 (.checksum), {xxh} XXH64 (.xxhash){}; verified when read",
                if empty > 0 {
                    format!(", {empty} empty keep-alive chunk(s)")
                } else {
                    String::new()
                }
            )),
            ExportKind::Legacy => notes.push(format!(
                "the legacy layout (appliance 0.1): {gzip_chunks} gzip chunk(s) without checksums; a disk is inflated into the temporary folder when read"
            )),
        }
        if self.compression != Compression::None {
            notes.push(format!(
                "the XVA is {}-compressed: it was inflated into the temporary folder to be read",
                match self.compression {
                    Compression::Gzip => "gzip",
                    _ => "zstd",
                }
            ));
        }
        let product = [v.product_brand.as_deref(), v.product_version.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        PackageInfo {
            filename: self.path.display().to_string(),
            format: "xva",
            ovf_version: match self.description.kind {
                ExportKind::Chunked => v.export_vsn.to_string(),
                ExportKind::Legacy => "0.1".into(),
            },
            dialect: if self.description.kind == ExportKind::Legacy {
                "legacy XVA (XenSource, before XenServer 4)".into()
            } else if product.is_empty() {
                "unknown exporter".into()
            } else {
                product
            },
            system_type: match (v.xapi_major, v.xapi_minor) {
                (Some(a), Some(b)) => Some(format!("xapi {a}.{b}")),
                _ => None,
            },
            configuration: None,
            vm: self.description.vm.clone(),
            disks,
            manifest: None,
            certificate: None,
            notes,
            warnings: Vec::new(),
        }
    }
}

/// The bytes of ova.xml held in `xml`, bounded by [`MAX_OVA_XML`]; `path` names the export.
fn read_ova_xml(xml: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    if xml.len() > MAX_OVA_XML {
        return Err(Error::unsupported(format!(
            "ova.xml is {} bytes, more than the {MAX_OVA_XML} diskferry reads",
            xml.len()
        ))
        .with_path(path));
    }
    xml.read_vec(0, xml.len(), "ova.xml")
}

/// The error for asking a legacy export's disk for an index of chunks it does not have.
fn legacy_only(path: &Path) -> Error {
    Error::unsupported("a legacy XVA's disk is a run of gzip files, not of indexed chunks")
        .with_path(path)
}

/// The ova.xml of a legacy XVA kept as a folder, when `path` is one: the folder itself (holding
/// an ova.xml whose root is `<appliance>`) or that ova.xml.
pub fn legacy_descriptor(path: &Path) -> Option<PathBuf> {
    let candidate = if path.is_dir() {
        path.join("ova.xml")
    } else {
        path.to_path_buf()
    };
    let file = HostFile::open(&candidate).ok()?;
    let mut head = [0u8; 512];
    let n = file.read_at_most(&mut head, 0).ok()?;
    legacy::is_appliance(&head[..n]).then_some(candidate)
}

/// Opens the disk `which` of the XVA at `path` (the image API's entry for XVAs).
pub fn open_image(path: &Path, which: Option<&str>, options: &OpenOptions) -> Result<Image> {
    let package = XvaPackage::open(path)?;
    let entry = package.select(which)?;
    package.open_disk(&entry, options)
}
