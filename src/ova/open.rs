//! Opening an OVA or an OVF folder: its descriptor, manifest and certificate, and its disks
//! read in place (a window into the tar, chunked parts joined, gzip inflated once), each
//! verified against the manifest.
//!
//! An OVA is recognized by its content (a tar whose first member is an `.ovf`, as every
//! producer writes it), an OVF descriptor by its XML root. The files an OVF folder names are
//! opened only inside the descriptor's folder (no absolute names, no `..`): a package must
//! not reach outside itself, whatever the gate allows images.

use crate::error::{Error, Result};
use crate::gate::{Gate, Lookup, Role};
use crate::host_file::HostFile;
use crate::image::{Image, OpenOptions};
use crate::ovf::{self, Compression, Descriptor, DiskFormat};
use crate::package::{self, CertNote, Manifest, TarIndex};
use crate::storage::{SharedReads, Storage};
use crate::vm::DiskSource;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest descriptor read (a real one is a few hundred KiB).
const MAX_DESCRIPTOR: u64 = 32 << 20;
/// The largest manifest or certificate read.
const MAX_SMALL: u64 = 4 << 20;

/// What opening a package does about a file its manifest names that the package does not
/// hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingFiles {
    /// Refuse the package: it is damaged or incomplete, and whatever is made from it would be
    /// too (convert, migrate, check).
    Refuse,
    /// Note it among the package's warnings and go on, so that `info` can still show the
    /// machine. virt-v2v reads such packages for conversion with a warning (input_ova.ml,
    /// "manifest has a checksum for non-existent file ... (ignored)", RHBZ#1570407: VMware
    /// exports name files they leave out) and COT's `info` lists them as errors and exits 0.
    Warn,
}

/// How a package is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageKind {
    /// A tar (`.ova`).
    Ova,
    /// A descriptor beside its files (`.ovf` and a folder).
    OvfFolder,
}

/// What the first bytes of a file say it is, if a package.
pub fn probe(storage: &dyn Storage) -> Option<PackageKind> {
    let mut head = [0u8; 512];
    let n = (storage.len() as usize).min(512);
    storage.read_exact_at(&mut head[..n], 0).ok()?;
    // Any tar: one without a descriptor is a broken OVA (said so when opened), far likelier
    // than a disk image that begins with a tar header.
    if n == 512 && &head[257..262] == b"ustar" {
        return Some(PackageKind::Ova);
    }
    // XML (UTF-8 with or without a BOM, or UTF-16 as XenCenter writes) whose root is an OVF
    // Envelope: look for the element name and an OVF namespace in the first bytes.
    let text: String = if head.starts_with(&[0xff, 0xfe]) || head.starts_with(&[0xfe, 0xff]) {
        let le = head[0] == 0xff;
        head[2..n]
            .chunks_exact(2)
            .map(|c| {
                char::from_u32(u32::from(if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }))
                .unwrap_or('?')
            })
            .collect()
    } else {
        String::from_utf8_lossy(&head[..n]).into_owned()
    };
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with('<') && t.contains("Envelope") && t.to_ascii_lowercase().contains("ovf") {
        return Some(PackageKind::OvfFolder);
    }
    None
}

/// A disk of a package, as listed for selection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskEntry {
    /// Its position among the machine's disks (0 first), what `--disk N` selects.
    pub index: usize,
    /// The file's name in the package.
    pub href: String,
    /// The OVF file id.
    pub file_id: Option<String>,
    /// The virtual size the descriptor declares.
    pub capacity: Option<u64>,
}

/// Whether a disk opened from a package has its digest checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verification {
    /// By a thread beside the reads.
    WhileRead,
    /// Not (only headers are read, as `info` does).
    Skip,
}

/// What `info` shows of a package.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PackageInfo {
    /// The package's path.
    pub filename: String,
    /// `ova`, `ovf` or `xva`.
    pub format: &'static str,
    /// The OVF version (for an XVA, its `export_vsn`).
    pub ovf_version: String,
    /// The producer's dialect (for an XVA, the exporting product and version).
    pub dialect: String,
    /// The virtual hardware family, when given (for an XVA, the exporter's xapi version).
    pub system_type: Option<String>,
    /// The deployment configuration read, when there are several.
    pub configuration: Option<String>,
    /// The machine.
    pub vm: crate::vm::Vm,
    /// Its disks.
    pub disks: Vec<PackageDiskInfo>,
    /// The manifest, when there is one.
    pub manifest: Option<ManifestInfo>,
    /// The certificate, when the package is signed.
    pub certificate: Option<String>,
    /// Facts about the package that are not the machine's.
    pub notes: Vec<String>,
    /// What is wrong with the package itself (a file its manifest names that it does not
    /// hold), when it was opened to be shown only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A disk as `info` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PackageDiskInfo {
    /// What `--disk` selects it by.
    pub index: usize,
    /// Its file in the package.
    pub file: String,
    /// Its image format (absent when it could not be opened).
    pub format: Option<String>,
    /// Its virtual size.
    pub virtual_size: Option<u64>,
    /// Its size in the package (absent when the file is missing).
    pub file_size: Option<u64>,
    /// Its controller and address.
    pub controller: Option<String>,
    /// Why it could not be opened, when it could not.
    pub error: Option<String>,
}

/// A manifest as `info` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ManifestInfo {
    /// The files it lists.
    pub files: usize,
    /// Its digest algorithms.
    pub algorithms: Vec<String>,
    /// True when it lists the descriptor, whose digest was checked on opening (disks are
    /// checked when read).
    pub descriptor_verified: bool,
}

/// An opened OVA or OVF folder.
pub struct Package {
    path: PathBuf,
    kind: PackageKind,
    descriptor_name: String,
    descriptor: Descriptor,
    manifest: Option<Manifest>,
    certificate: Option<CertNote>,
    index: Option<TarIndex>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .finish()
    }
}

fn read_all(storage: &dyn Storage, limit: u64, what: &str) -> Result<Vec<u8>> {
    if storage.len() > limit {
        return Err(Error::invalid(format!(
            "the {what} is {} bytes, more than the {limit} diskferry reads",
            storage.len()
        ))
        .with_path(storage.name()));
    }
    let mut bytes = vec![0u8; storage.len() as usize];
    storage.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

impl Package {
    /// Opens the package at `path` (a file the user chose), refusing it when its manifest
    /// names a file it does not hold.
    pub fn open(path: &Path) -> Result<Package> {
        Package::open_with(path, MissingFiles::Refuse)
    }

    /// Opens the package at `path`, doing what `missing` says about a file its manifest names
    /// that it does not hold (see [`Package::warnings`]).
    pub fn open_with(path: &Path, missing: MissingFiles) -> Result<Package> {
        let file: Arc<dyn Storage> = Arc::new(HostFile::open(path)?);
        match probe(file.as_ref()) {
            Some(PackageKind::Ova) => Package::open_ova(path, file, missing),
            Some(PackageKind::OvfFolder) => Package::open_ovf(path, file, missing),
            None => Err(Error::invalid("not an OVA or OVF package").with_path(path)),
        }
    }

    fn open_ova(path: &Path, file: Arc<dyn Storage>, missing: MissingFiles) -> Result<Package> {
        let index = TarIndex::read(file)?;
        // The descriptor comes first in every OVA producers write; a tar with it elsewhere is
        // read too.
        let descriptor_name = index
            .members()
            .iter()
            .find(|m| m.name.to_ascii_lowercase().ends_with(".ovf") && !m.name.contains('/'))
            .map(|m| m.name.clone())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "a tar without an OVF descriptor (.ovf), so not an OVA; it holds: {}",
                    index
                        .members()
                        .iter()
                        .take(8)
                        .map(|m| format!("'{}'", m.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .with_path(path)
            })?;
        let ovf_storage = index.open(&descriptor_name)?;
        let bytes = read_all(&ovf_storage, MAX_DESCRIPTOR, "descriptor")?;
        let descriptor = ovf::parse(
            &bytes,
            &index.member_label(&descriptor_name).to_string_lossy(),
        )?;
        let stem = descriptor_name
            .strip_suffix(".ovf")
            .or_else(|| descriptor_name.strip_suffix(".OVF"))
            .unwrap_or(&descriptor_name)
            .to_string();
        let find = |ext: &str| {
            index
                .members()
                .iter()
                .find(|m| m.name.eq_ignore_ascii_case(&format!("{stem}.{ext}")))
                .map(|m| m.name.clone())
        };
        let manifest = match find("mf") {
            Some(name) => {
                let s = index.open(&name)?;
                Some(Manifest::parse(
                    index.member_label(&name),
                    &read_all(&s, MAX_SMALL, "manifest")?,
                )?)
            }
            None => None,
        };
        let certificate = match find("cert") {
            Some(name) => {
                let s = index.open(&name)?;
                Some(package::manifest::parse_cert(
                    index.member_label(&name),
                    &read_all(&s, MAX_SMALL, "certificate")?,
                )?)
            }
            None => None,
        };
        let mut warnings = Vec::new();
        if let Some(m) = &manifest {
            for e in &m.entries {
                if index.member(&e.file).is_none() {
                    let error = Error::corrupt(format!(
                        "the manifest names '{}' (line {}), which the package does not hold",
                        e.file, e.line
                    ))
                    .with_path(&m.name);
                    warnings.push(missing_file(error, missing)?);
                }
            }
        }
        let package = Package {
            path: path.to_path_buf(),
            kind: PackageKind::Ova,
            descriptor_name,
            descriptor,
            manifest,
            certificate,
            index: Some(index),
            warnings,
        };
        package.verify_descriptor(&bytes)?;
        Ok(package)
    }

    fn open_ovf(path: &Path, file: Arc<dyn Storage>, missing: MissingFiles) -> Result<Package> {
        let bytes = read_all(file.as_ref(), MAX_DESCRIPTOR, "descriptor")?;
        let descriptor = ovf::parse(&bytes, &path.to_string_lossy())?;
        let stem = path.with_extension("");
        let sibling = |ext: &str| -> Option<PathBuf> {
            let p = stem.with_extension(ext);
            p.is_file().then_some(p)
        };
        let manifest = match sibling("mf") {
            Some(p) => {
                let s = HostFile::open(&p)?;
                Some(Manifest::parse(&p, &read_all(&s, MAX_SMALL, "manifest")?)?)
            }
            None => None,
        };
        let certificate = match sibling("cert") {
            Some(p) => {
                let s = HostFile::open(&p)?;
                Some(package::manifest::parse_cert(
                    &p,
                    &read_all(&s, MAX_SMALL, "certificate")?,
                )?)
            }
            None => None,
        };
        let mut warnings = Vec::new();
        if let Some(m) = &manifest {
            let folder = crate::gate::folder_of(path);
            for e in &m.entries {
                let p = Path::new(&e.file);
                let inside = !p.is_absolute()
                    && p.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                let error = Error::corrupt(format!(
                    "the manifest names '{}' (line {}), which is not in the package's folder",
                    e.file, e.line
                ))
                .with_path(&m.name);
                // A name leading out of the folder is no missing file but a package reaching
                // outside itself: refused even when only shown.
                if !inside {
                    return Err(error);
                }
                if !folder.join(p).is_file() {
                    warnings.push(missing_file(error, missing)?);
                }
            }
        }
        let package = Package {
            path: path.to_path_buf(),
            kind: PackageKind::OvfFolder,
            descriptor_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            descriptor,
            manifest,
            certificate,
            index: None,
            warnings,
        };
        package.verify_descriptor(&bytes)?;
        Ok(package)
    }

    /// The descriptor's own digest, when the manifest lists it.
    fn verify_descriptor(&self, bytes: &[u8]) -> Result<()> {
        if let Some(m) = &self.manifest {
            let mem = crate::storage::Memory::new(self.descriptor_name.clone(), bytes.to_vec());
            if m.entries_for(&self.descriptor_name).next().is_some() {
                m.verify(&self.descriptor_name, &mem)?;
            }
        }
        Ok(())
    }

    /// Where the package is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// OVA or OVF folder.
    pub fn kind(&self) -> PackageKind {
        self.kind
    }

    /// The parsed descriptor (and its VM).
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// The descriptor's file name.
    pub fn descriptor_name(&self) -> &str {
        &self.descriptor_name
    }

    /// The manifest, when the package has one.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The certificate note, when the package is signed.
    pub fn certificate(&self) -> Option<&CertNote> {
        self.certificate.as_ref()
    }

    /// What is wrong with the package that [`MissingFiles::Warn`] let through (always empty
    /// for [`Package::open`]).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The machine's disks that have content in the package, in the machine's order.
    pub fn disks(&self) -> Vec<DiskEntry> {
        let mut out = Vec::new();
        for (index, d) in self.descriptor.vm.disks.iter().enumerate() {
            if let DiskSource::PackageFile { id, href } = &d.source {
                out.push(DiskEntry {
                    index,
                    href: href.clone(),
                    file_id: id.clone(),
                    capacity: d.capacity_bytes,
                });
            }
        }
        // A descriptor whose hardware attaches no disk (a bare DiskSection) still has them.
        if out.is_empty() {
            for (index, d) in self.descriptor.disks.iter().enumerate() {
                if let Some(f) = d
                    .file_ref
                    .as_ref()
                    .and_then(|id| self.descriptor.files.iter().find(|f| &f.id == id))
                {
                    out.push(DiskEntry {
                        index,
                        href: f.href.clone(),
                        file_id: Some(f.id.clone()),
                        capacity: d.capacity,
                    });
                }
            }
        }
        out
    }

    /// The disk `which` selects: an index (`0`, `1` ...) or a file name; `None` when the
    /// package has exactly one. An error lists the disks.
    pub fn select(&self, which: Option<&str>) -> Result<DiskEntry> {
        let disks = self.disks();
        let list = || {
            disks
                .iter()
                .map(|d| format!("{} '{}'", d.index, d.href))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match which {
            None => match disks.len() {
                1 => Ok(disks[0].clone()),
                0 => Err(Error::invalid("the package holds no disk").with_path(&self.path)),
                _ => Err(Error::invalid(format!(
                    "the package holds {} disks; choose one with --disk: {}",
                    disks.len(),
                    list()
                ))
                .with_path(&self.path)),
            },
            Some(w) => {
                // `index=N` and `file=NAME` say which is meant when a file is named by a
                // number that is another disk's index.
                let (index, file) = match (w.strip_prefix("index="), w.strip_prefix("file=")) {
                    (Some(n), _) => (n.parse::<usize>().ok(), None),
                    (_, Some(f)) => (None, Some(f)),
                    _ => (w.parse::<usize>().ok(), Some(w)),
                };
                let by_index = index.and_then(|i| disks.iter().find(|d| d.index == i));
                let by_file = file.and_then(|f| disks.iter().find(|d| d.href == f));
                match (by_index, by_file) {
                    (Some(a), Some(b)) if a.index != b.index => Err(Error::invalid(format!(
                        "--disk {w} is disk {} by index and disk {} by file name; say --disk index={w} or --disk file={w}",
                        a.index, b.index
                    ))
                    .with_path(&self.path)),
                    (Some(d), _) | (None, Some(d)) => Ok(d.clone()),
                    (None, None) => Err(Error::invalid(format!(
                        "no disk '{w}' in the package; its disks: {}",
                        list()
                    ))
                    .with_path(&self.path)),
                }
            }
        }
    }

    /// The bytes of the file `href` (read in place).
    pub fn file_storage(&self, href: &str) -> Result<Arc<dyn Storage>> {
        let file = self
            .descriptor
            .files
            .iter()
            .find(|f| f.href == href)
            .ok_or_else(|| {
                Error::invalid(format!("the descriptor names no file '{href}'"))
                    .with_path(&self.path)
            })?;
        let compression = file.compression.map(|c| match c {
            Compression::Gzip => "gzip",
        });
        // A gzip file inflates to at most its disk's capacity plus the format's metadata.
        let capacity = self
            .descriptor
            .disks
            .iter()
            .find(|d| d.file_ref.as_deref() == Some(file.id.as_str()))
            .and_then(|d| d.capacity);
        let limit = capacity.map(|c| c.saturating_add(c / 8).saturating_add(64 << 20));
        match &self.index {
            Some(index) => package::open_file(
                index,
                &package::FileRef {
                    href: &file.href,
                    chunk_size: file.chunk_size,
                    compression,
                    inflate_limit: limit,
                },
                None,
            ),
            None => {
                if file.chunk_size.is_some() || compression.is_some() {
                    return Err(Error::unsupported(format!(
                        "'{href}' is chunked or compressed; diskferry reads those inside an OVA, not from an OVF folder"
                    ))
                    .with_path(&self.path));
                }
                match Gate::confined().open(&self.path, &file.href, Role::PackageMember)? {
                    Lookup::Opened(f) => Ok(f as Arc<dyn Storage>),
                    Lookup::Missing(p) => Err(Error::invalid(format!(
                        "the descriptor names '{}', which is not there ({})",
                        file.href,
                        p.display()
                    ))
                    .with_path(&self.path)),
                }
            }
        }
    }

    /// The descriptor declares each disk's format: a file of no known format where it
    /// declares an image format is an error (reading it as raw bytes would give a wrong disk).
    fn check_declared_format(&self, href: &str, image: &Image, len: u64) -> Result<()> {
        let d = &self.descriptor;
        let declared = d
            .files
            .iter()
            .find(|f| f.href == href)
            .and_then(|f| {
                d.disks
                    .iter()
                    .find(|x| x.file_ref.as_deref() == Some(f.id.as_str()))
            })
            .map(|x| &x.format);
        let expected = match declared {
            Some(DiskFormat::StreamOptimizedVmdk) => "stream-optimized VMDK",
            Some(DiskFormat::MonolithicSparseVmdk) => "sparse VMDK",
            Some(DiskFormat::Vhd) => "VHD",
            Some(DiskFormat::Vhdx) => "VHDX",
            Some(DiskFormat::Qcow2) => "QCOW2",
            _ => return Ok(()),
        };
        if image.format_guessed() {
            return Err(Error::corrupt(format!(
                "the descriptor declares '{href}' a {expected} image, but its {len} bytes are no image format diskferry knows"
            ))
            .with_path(&self.path));
        }
        Ok(())
    }

    /// Checks `href`'s digest against the manifest (a no-op without a manifest or entry).
    pub fn verify_file(&self, href: &str, storage: &dyn Storage) -> Result<()> {
        match &self.manifest {
            Some(m) if m.entries_for(href).next().is_some() => m.verify(href, storage),
            _ => Ok(()),
        }
    }

    /// Opens disk `entry` as an image, its manifest digest checked by a thread of its own
    /// while it is read (see [`Image::finish_checks`]).
    pub fn open_disk(&self, entry: &DiskEntry, options: &OpenOptions) -> Result<Image> {
        let stored = self.file_storage(&entry.href)?;
        self.open_disk_checked(entry, stored, options, Verification::WhileRead)
    }

    /// What `info` shows: the machine, its disks (each opened for its format and size, not
    /// hashed), the manifest and the certificate.
    pub fn info(&self, options: &OpenOptions) -> Result<PackageInfo> {
        let mut disks = Vec::new();
        for entry in self.disks() {
            let vm_disk = self.descriptor.vm.disks.get(entry.index);
            let mut info = PackageDiskInfo {
                index: entry.index,
                file: entry.href.clone(),
                format: None,
                virtual_size: None,
                file_size: None,
                controller: vm_disk
                    .map(|d| format!("{} {}:{}", d.controller.kind, d.controller.index, d.unit)),
                error: None,
            };
            // A damaged disk does not hide the machine: its error is shown in its place.
            match self.file_storage(&entry.href).and_then(|stored| {
                info.file_size = Some(stored.len());
                self.open_disk_checked(&entry, stored, options, Verification::Skip)
            }) {
                Ok(image) => {
                    info.format = Some(image.top().format().name().to_string());
                    info.virtual_size = Some(image.virtual_size());
                }
                Err(e) => info.error = Some(e.to_string()),
            }
            disks.push(info);
        }
        let d = &self.descriptor;
        Ok(PackageInfo {
            filename: self.path.display().to_string(),
            format: match self.kind {
                PackageKind::Ova => "ova",
                PackageKind::OvfFolder => "ovf",
            },
            ovf_version: d.version.to_string(),
            dialect: d.dialect.to_string(),
            system_type: d.system_type.clone(),
            configuration: d.configuration.clone(),
            vm: d.vm.clone(),
            disks,
            manifest: self.manifest.as_ref().map(|m| ManifestInfo {
                files: m.entries.len(),
                algorithms: {
                    let mut a: Vec<String> = m
                        .entries
                        .iter()
                        .map(|e| e.algorithm.name().to_string())
                        .collect();
                    a.dedup();
                    a
                },
                descriptor_verified: m.entries_for(&self.descriptor_name).next().is_some(),
            }),
            certificate: self.certificate.as_ref().map(|c| {
                format!(
                    "{} signature of {} with {} certificate(s), not verified",
                    c.algorithm.name(),
                    c.signed_file,
                    c.certificates
                )
            }),
            notes: d.notes.clone(),
            warnings: self.warnings.clone(),
        })
    }

    fn open_disk_checked(
        &self,
        entry: &DiskEntry,
        stored: Arc<dyn Storage>,
        options: &OpenOptions,
        verification: Verification,
    ) -> Result<Image> {
        // What is inside a package reads nothing outside it: no parent, and files a disk
        // names (a VMDK's extents) only from the package's own folder.
        let inner = OpenOptions {
            backing: crate::image::BackingPolicy::Ignore,
            gate: Gate::confined(),
            ..options.clone()
        };
        // The members a thread of its own hashes while the disk is read, if any.
        let check = match &self.manifest {
            Some(m) if verification == Verification::WhileRead => {
                let members = self.stored_members(&entry.href)?;
                members
                    .iter()
                    .any(|(name, _)| m.entries_for(name).next().is_some())
                    .then(|| (m.clone(), members))
            }
            _ => None,
        };
        // Both read the same bytes at about the same time: through the page cache, the device
        // is read once.
        let read = match check {
            Some(_) => Arc::new(SharedReads::new(Arc::clone(&stored))) as Arc<dyn Storage>,
            None => Arc::clone(&stored),
        };
        let mut image = Image::open_storage(read, &inner)?;
        // A package carries whole disks: a differencing one would read as zeros wherever its
        // parent holds the data.
        if let Some(link) = image.top().backing() {
            return Err(Error::unsupported(format!(
                "disk '{}' is a differencing image of '{}', and a package's disks must be whole",
                entry.href,
                crate::info::printable(&link.stored_name)
            ))
            .with_path(&self.path));
        }
        self.check_declared_format(&entry.href, &image, stored.len())?;
        if let Some((m, members)) = check {
            image.add_check(std::thread::spawn(move || {
                for (name, member) in &members {
                    if m.entries_for(name).next().is_some() {
                        m.verify(name, member.as_ref())?;
                    }
                }
                Ok(())
            }));
        }
        Ok(image)
    }

    /// The members that hold file `href` as stored, which the manifest's digests are of: the
    /// member itself (compressed, for a gzip file), or each part of a chunked file.
    fn stored_members(&self, href: &str) -> Result<Vec<(String, Arc<dyn Storage>)>> {
        let file = self.descriptor.files.iter().find(|f| f.href == href);
        match (&self.index, file.and_then(|f| f.chunk_size)) {
            (Some(index), Some(_)) => {
                let prefix = format!("{}.", href.trim_start_matches("./"));
                index
                    .members()
                    .iter()
                    .filter(|m| {
                        m.name
                            .strip_prefix(&prefix)
                            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .map(|m| {
                        Ok((
                            m.name.clone(),
                            Arc::new(index.window(m)?) as Arc<dyn Storage>,
                        ))
                    })
                    .collect()
            }
            (Some(index), None) => Ok(vec![(
                href.to_string(),
                Arc::new(index.open(href)?) as Arc<dyn Storage>,
            )]),
            // An OVF folder's files are neither chunked nor compressed (file_storage refuses).
            (None, _) => Ok(vec![(href.to_string(), self.file_storage(href)?)]),
        }
    }
}

/// The warning for a file the manifest names that the package does not hold, or `error`
/// itself when such a package is refused.
fn missing_file(error: Error, missing: MissingFiles) -> Result<String> {
    match missing {
        MissingFiles::Refuse => Err(error),
        MissingFiles::Warn => Ok(format!(
            "{error}: the package is incomplete (convert, migrate and check refuse it)"
        )),
    }
}

/// Opens the disk `which` of the package at `path` (the image API's entry for packages).
pub fn open_image(path: &Path, which: Option<&str>, options: &OpenOptions) -> Result<Image> {
    let package = Package::open(path)?;
    let entry = package.select(which)?;
    package.open_disk(&entry, options)
}
