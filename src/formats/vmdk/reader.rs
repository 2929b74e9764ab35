//! The VMDK reader: a descriptor (a text file, or embedded in a sparse extent) and its
//! extents, mapped into one virtual disk.

use super::descriptor::{CID_NONE, Descriptor, ExtentKind, MAX_DESCRIPTOR_BYTES};
use super::extent::{Extent, ExtentData, SparseExtent, SparseKind};
use super::sparse_header::SparseHeader;
use super::{cowd, sesparse, sparse_header};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::host_file::HostFile;
use crate::image::{BackingLink, Layer, LayerDetails, Mapping};
use serde_json::{Value, json};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the layer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A text descriptor naming extent files.
    Descriptor,
    /// A sparse extent with its descriptor inside (monolithicSparse, streamOptimized).
    Embedded,
    /// A sparse extent opened on its own, with no descriptor (one extent of a split disk, or a
    /// COWD/SESPARSE file).
    BareExtent,
}

/// A VMDK layer: descriptor + extents.
pub struct VmdkLayer {
    path: PathBuf,
    layout: Layout,
    descriptor: Option<Descriptor>,
    extents: Vec<Extent>,
    files: Vec<PathBuf>,
    size: u64,
    backing: Option<BackingLink>,
    warnings: Vec<String>,
}

/// Where a descriptor's relative file names are resolved: the descriptor's folder.
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The paths a parentFileNameHint may mean: as written (Windows separators turned into
/// ours), relative to the child's folder, then just its last component beside the child (a
/// VM folder copied to another host keeps its files together but not its absolute paths).
pub fn parent_candidates(child: &Path, hint: &str) -> Vec<PathBuf> {
    let folder = folder_of(child);
    let unix = hint.replace('\\', "/");
    let mut out = Vec::new();
    let as_path = Path::new(&unix);
    out.push(if as_path.is_absolute() {
        as_path.to_path_buf()
    } else {
        folder.join(as_path)
    });
    if let Some(name) = unix.rsplit('/').next().filter(|n| !n.is_empty()) {
        let beside = folder.join(name);
        if !out.contains(&beside) {
            out.push(beside);
        }
    }
    out
}

impl VmdkLayer {
    /// Opens a VMDK: a text descriptor, a sparse extent with an embedded descriptor, or a bare
    /// sparse extent.
    pub fn open(file: HostFile) -> Result<VmdkLayer> {
        let path = file.path().to_path_buf();
        let mut head = vec![0u8; file.len().min(cowd::HEADER_BYTES as u64) as usize];
        file.read_exact_at(&mut head, 0)?;
        if head.starts_with(sparse_header::MAGIC) {
            Self::open_hosted(file, &head)
        } else if head.starts_with(cowd::MAGIC) || sesparse::has_magic(&head) {
            let kind = if head.starts_with(cowd::MAGIC) {
                ExtentKind::VmfsSparse
            } else {
                ExtentKind::SeSparse
            };
            let extent = SparseExtent::open(Arc::new(file))?;
            Ok(Self::single(path, Layout::BareExtent, None, extent, kind))
        } else {
            Self::open_descriptor(file)
        }
    }

    fn open_hosted(file: HostFile, head: &[u8]) -> Result<VmdkLayer> {
        let path = file.path().to_path_buf();
        let header = SparseHeader::parse(head)?;
        let descriptor = if header.descriptor_offset > 0 && header.descriptor_size > 0 {
            let len = header
                .descriptor_size
                .checked_mul(512)
                .filter(|&l| l <= MAX_DESCRIPTOR_BYTES)
                .ok_or_else(|| {
                    Error::corrupt(format!(
                        "embedded descriptor of {} sectors is larger than {MAX_DESCRIPTOR_BYTES} bytes",
                        header.descriptor_size
                    ))
                    .at_offset(36)
                })?;
            let offset = header.descriptor_offset.checked_mul(512).ok_or_else(|| {
                Error::corrupt("embedded descriptor offset is out of range").at_offset(28)
            })?;
            let bytes = file.read_vec(offset, len, "embedded descriptor")?;
            Some(Descriptor::parse(&bytes).map_err(|e| {
                Error::corrupt(format!("embedded descriptor: {}", e.message())).at_offset(offset)
            })?)
        } else {
            None
        };
        let layout = if descriptor.is_some() {
            Layout::Embedded
        } else {
            Layout::BareExtent
        };
        let extent = SparseExtent::open_hosted(Arc::new(file), header)?;
        Ok(Self::single(
            path,
            layout,
            descriptor,
            extent,
            ExtentKind::Sparse,
        ))
    }

    /// A layer of one sparse extent that is the opened file itself. Its embedded descriptor's
    /// extent lines are not followed: like VMware and qemu, the file is the disk (stream files
    /// name an extent that never existed, such as "generated-stream.vmdk").
    fn single(
        path: PathBuf,
        layout: Layout,
        descriptor: Option<Descriptor>,
        extent: SparseExtent,
        kind: ExtentKind,
    ) -> VmdkLayer {
        let size = extent.capacity;
        let warnings = extent.warnings.clone();
        let backing = descriptor.as_ref().and_then(|d| backing_link(&path, d));
        VmdkLayer {
            files: vec![path.clone()],
            path,
            layout,
            descriptor,
            extents: vec![Extent {
                start: 0,
                len: size,
                kind,
                file_index: Some(0),
                data: ExtentData::Sparse(Box::new(extent)),
            }],
            size,
            backing,
            warnings,
        }
    }

    fn open_descriptor(file: HostFile) -> Result<VmdkLayer> {
        let path = file.path().to_path_buf();
        if file.len() > MAX_DESCRIPTOR_BYTES {
            return Err(Error::corrupt(format!(
                "not a VMDK: no sparse extent magic, and at {} bytes too large to be a text descriptor",
                file.len()
            )));
        }
        let text = file.read_vec(0, file.len(), "descriptor")?;
        let descriptor = Descriptor::parse(&text)?;
        if descriptor.extents.is_empty() {
            return Err(Error::corrupt("descriptor lists no extents"));
        }
        descriptor.total_bytes()?;
        let folder = folder_of(&path);
        let mut files = vec![path.clone()];
        let mut extents = Vec::with_capacity(descriptor.extents.len());
        let mut warnings = Vec::new();
        let mut start = 0u64;
        for line in &descriptor.extents {
            let len = line.sectors * 512;
            let (data, file_index) = match &line.file {
                None => (ExtentData::Zero, None),
                Some(name) => {
                    let extent_path = folder.join(name.replace('\\', "/"));
                    let host = HostFile::open(&extent_path).map_err(|e| {
                        Error::invalid(format!(
                            "extent file '{name}' (descriptor line {}) cannot be opened: {}",
                            line.line,
                            e.source_text()
                        ))
                    })?;
                    let index = match files.iter().position(|f| *f == extent_path) {
                        Some(i) => i,
                        None => {
                            files.push(extent_path.clone());
                            files.len() - 1
                        }
                    };
                    let host = Arc::new(host);
                    let data = if line.kind.is_flat() {
                        let offset = line.offset * 512;
                        if offset.saturating_add(len) > host.len() {
                            warnings.push(format!(
                                "extent '{name}' is {} bytes, shorter than the {} the descriptor gives it; the rest reads as zeros",
                                host.len(),
                                offset.saturating_add(len)
                            ));
                        }
                        ExtentData::Flat {
                            file: host,
                            start: offset,
                        }
                    } else {
                        let sparse = SparseExtent::open(host).map_err(|e| {
                            let msg = format!("extent '{name}': {}", e.message());
                            let err = Error::corrupt(msg).with_path(&extent_path);
                            match e.offset() {
                                Some(o) => err.at_offset(o),
                                None => err,
                            }
                        })?;
                        for w in &sparse.warnings {
                            warnings.push(format!("extent '{name}': {w}"));
                        }
                        ExtentData::Sparse(Box::new(sparse))
                    };
                    (data, Some(index))
                }
            };
            if len > 0 {
                extents.push(Extent {
                    start,
                    len,
                    kind: line.kind,
                    file_index,
                    data,
                });
            }
            start += len;
        }
        let backing = backing_link(&path, &descriptor);
        Ok(VmdkLayer {
            path,
            layout: Layout::Descriptor,
            descriptor: Some(descriptor),
            extents,
            files,
            size: start,
            backing,
            warnings,
        })
    }

    /// The descriptor (none for a bare extent).
    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.descriptor.as_ref()
    }

    /// The content id (CID) of this disk, as a delta child records it in its parentCID.
    pub fn cid(&self) -> u32 {
        self.descriptor.as_ref().map_or(CID_NONE, |d| d.cid)
    }

    /// How the layer was found.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The extents, in disk order.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// The create type: the descriptor's, or what a bare extent is.
    pub fn create_type(&self) -> String {
        match &self.descriptor {
            Some(d) if !d.create_type.is_empty() => d.create_type.clone(),
            _ => match self.extents.first().map(|e| &e.data) {
                Some(ExtentData::Sparse(s)) => match s.kind {
                    SparseKind::Hosted(h) if h.markers => "streamOptimized".to_string(),
                    SparseKind::Hosted(_) => "sparse extent".to_string(),
                    SparseKind::Cowd(_) => "vmfsSparse extent".to_string(),
                    SparseKind::SeSparse(_) => "seSparse extent".to_string(),
                },
                _ => "unknown".to_string(),
            },
        }
    }

    fn extent_at(&self, offset: u64) -> Result<&Extent> {
        let i = self.extents.partition_point(|e| e.start + e.len <= offset);
        self.extents
            .get(i)
            .filter(|e| e.start <= offset)
            .ok_or_else(|| Error::invalid(format!("offset {offset} is past the end of the disk")))
    }

    fn first_sparse(&self) -> Option<&SparseExtent> {
        self.extents.iter().find_map(|e| match &e.data {
            ExtentData::Sparse(s) => Some(s.as_ref()),
            _ => None,
        })
    }
}

fn backing_link(path: &Path, d: &Descriptor) -> Option<BackingLink> {
    let hint = d.parent_hint.as_ref()?;
    Some(BackingLink {
        stored_name: hint.clone(),
        candidates: parent_candidates(path, hint),
        format: Some(Format::Vmdk),
    })
}

/// The message of an I/O error without the path (which the caller names itself).
trait SourceText {
    fn source_text(&self) -> String;
}

impl SourceText for Error {
    fn source_text(&self) -> String {
        use std::error::Error as _;
        match self.source() {
            Some(s) => {
                let t = s.to_string();
                t.split(" (os error").next().unwrap_or(&t).to_string()
            }
            None => self.message().to_string(),
        }
    }
}

impl Layer for VmdkLayer {
    fn format(&self) -> Format {
        Format::Vmdk
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let extent = self.extent_at(offset)?;
        let run = extent.map(offset - extent.start, max_len)?;
        let mut m = Mapping::new(offset, run.len, run.allocation);
        if let (Some(host), Some(file)) = (run.host, extent.file_index) {
            m = m.at_host(file, host);
        }
        m.compressed = run.compressed;
        Ok(m)
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let extent = self.extent_at(pos)?;
            let inside = pos - extent.start;
            let n = ((extent.len - inside) as usize).min(buf.len() - done);
            extent.read(inside, &mut buf[done..done + n]).map_err(|e| {
                match extent.file_index.and_then(|i| self.files.get(i)) {
                    Some(p) => e.with_path(p),
                    None => e,
                }
            })?;
            done += n;
        }
        Ok(())
    }

    fn backing(&self) -> Option<&BackingLink> {
        self.backing.as_ref()
    }

    fn verify_backing(&self, parent: &dyn Layer) -> Result<Vec<String>> {
        let Some(p) = parent.as_any().downcast_ref::<VmdkLayer>() else {
            return Err(Error::invalid(format!(
                "the parent of a VMDK delta disk must be a VMDK, but '{}' is {}",
                parent.path().display(),
                parent.format()
            )));
        };
        let Some(d) = &self.descriptor else {
            return Ok(Vec::new());
        };
        if d.parent_cid == CID_NONE {
            return Ok(vec![
                "the descriptor names a parent but its parentCID is ffffffff; the parent's identity cannot be checked".to_string(),
            ]);
        }
        if p.cid() != d.parent_cid {
            return Err(Error::corrupt(format!(
                "parent CID mismatch: this delta disk was made against content id {:08x}, but '{}' has {:08x} (the parent was changed after the delta was made, so the delta's data would read wrongly)",
                d.parent_cid,
                p.path().display(),
                p.cid()
            )));
        }
        let mut warnings = Vec::new();
        if p.virtual_size() != self.size {
            warnings.push(format!(
                "parent '{}' is {} bytes, this delta {} bytes",
                p.path().display(),
                p.virtual_size(),
                self.size
            ));
        }
        Ok(warnings)
    }

    fn details(&self) -> LayerDetails {
        let mut d = LayerDetails {
            cluster_size: self.first_sparse().map(|s| s.grain_bytes),
            dirty: self.extents.iter().any(|e| match &e.data {
                ExtentData::Sparse(s) => s.dirty(),
                _ => false,
            }),
            ..LayerDetails::default()
        };
        let create_type = self.create_type();
        let fs = &mut d.format_specific;
        fs.insert("create-type".into(), json!(create_type));
        d.human.push(("create type".into(), create_type));
        if let Some(desc) = &self.descriptor {
            fs.insert("cid".into(), json!(desc.cid));
            fs.insert("parent-cid".into(), json!(desc.parent_cid));
            d.human.push(("cid".into(), format!("{:08x}", desc.cid)));
            d.human
                .push(("parent cid".into(), format!("{:08x}", desc.parent_cid)));
            if let Some(hint) = &desc.parent_hint {
                fs.insert("parent-file-name-hint".into(), json!(hint));
                d.human.push(("parent".into(), hint.clone()));
            }
            for (key, label, json_key) in [
                ("ddb.adapterType", "adapter type", "adapter-type"),
                ("ddb.virtualHWVersion", "hardware version", "hwversion"),
                ("ddb.toolsVersion", "tools version", "tools-version"),
            ] {
                if let Some(v) = desc.ddb_value(key) {
                    fs.insert(json_key.into(), json!(v));
                    d.human.push((label.into(), v.to_string()));
                }
            }
        }
        let mut extents = Vec::new();
        for (i, e) in self.extents.iter().enumerate() {
            let file = e
                .file_index
                .and_then(|i| self.files.get(i))
                .map(|p| p.display().to_string());
            let mut obj = serde_json::Map::new();
            if let Some(f) = &file {
                obj.insert("filename".into(), json!(f));
            }
            obj.insert("format".into(), json!(e.kind.word()));
            obj.insert("virtual-size".into(), json!(e.len));
            let mut human = format!(
                "{} {} bytes{}",
                e.kind.word(),
                e.len,
                file.as_deref()
                    .map(|f| format!(" in {f}"))
                    .unwrap_or_default()
            );
            if let ExtentData::Sparse(s) = &e.data {
                obj.insert("cluster-size".into(), json!(s.grain_bytes));
                obj.insert("compressed".into(), json!(s.compressed));
                if let SparseKind::Hosted(h) = s.kind {
                    obj.insert("version".into(), json!(h.version));
                    human.push_str(&format!(", sparse version {}", h.version));
                }
                human.push_str(&format!(", grain {} bytes", s.grain_bytes));
                if s.compressed {
                    human.push_str(", compressed");
                }
            }
            extents.push(Value::Object(obj));
            d.human.push((format!("extent {i}"), human));
        }
        let compressed = self.first_sparse().is_some_and(|s| s.compressed);
        fs.insert("compressed".into(), json!(compressed));
        fs.insert("extents".into(), Value::Array(extents));
        d
    }

    fn files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }

    fn open_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn host_file(&self, index: usize) -> Option<&HostFile> {
        let extent = self.extents.iter().find(|e| e.file_index == Some(index))?;
        match &extent.data {
            ExtentData::Flat { file, .. } => Some(file),
            ExtentData::Sparse(s) => Some(&s.file),
            ExtentData::Zero => None,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
