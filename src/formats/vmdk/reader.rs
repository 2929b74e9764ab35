//! The VMDK reader: a descriptor (a text file, or embedded in a sparse extent) and its
//! extents, mapped into one virtual disk.

use super::descriptor::{CID_NONE, Descriptor, ExtentKind, MAX_DESCRIPTOR_BYTES};
use super::extent::{Extent, ExtentData, SparseExtent, SparseKind};
use super::sparse_header::SparseHeader;
use super::{cowd, sesparse, sparse_header};
use crate::error::{Error, Result};
use crate::format::{Format, OpenContext, Provenance};
use crate::gate::{Lookup, Role};
use crate::image::{BackingLink, Layer, LayerDetails, Mapping};
use crate::storage::{FileId, Storage, StorageExt};
use serde_json::{Value, json};
use std::any::Any;
use std::collections::HashMap;
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
    /// The text descriptor's own file (descriptor layouts only: file 0).
    descriptor_file: Option<Arc<dyn Storage>>,
    layout: Layout,
    descriptor: Option<Descriptor>,
    extents: Vec<Extent>,
    files: Vec<PathBuf>,
    size: u64,
    backing: Option<BackingLink>,
    warnings: Vec<String>,
}

/// The names a parentFileNameHint may mean, for the gate: as written (Windows separators
/// turned into ours), then just its last component beside the child (a VM folder copied to
/// another host keeps its files together but not its absolute paths).
pub fn parent_names(hint: &str) -> Vec<String> {
    let unix = hint.replace('\\', "/");
    let mut out = vec![unix.clone()];
    if let Some(name) = unix.rsplit('/').next().filter(|n| !n.is_empty())
        && !out.iter().any(|o| o == name)
    {
        out.push(name.to_string());
    }
    out
}

/// An extent file a descriptor names: the open file, and its grain tables once a sparse
/// extent line has loaded them.
type OpenedExtentFile = (Arc<dyn Storage>, Option<Arc<SparseExtent>>);

/// Parses a descriptor; when another image named the file, the error keeps its kind and line
/// but quotes nothing of the file (the user may not be allowed to read it).
fn parse_descriptor(text: &[u8], ctx: &OpenContext<'_>) -> Result<Descriptor> {
    Descriptor::parse(text).map_err(|e| match ctx.provenance {
        Provenance::User => e,
        Provenance::NamedByImage => Error::corrupt(
            "not a usable VMDK descriptor (its text is not shown: another image named this file, not you)",
        ),
    })
}

impl VmdkLayer {
    /// Opens a VMDK: a text descriptor, a sparse extent with an embedded descriptor, or a bare
    /// sparse extent.
    pub fn open(file: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<VmdkLayer> {
        let path = file.name().to_path_buf();
        let mut head = vec![0u8; file.len().min(cowd::HEADER_BYTES as u64) as usize];
        file.read_exact_at(&mut head, 0)?;
        if head.starts_with(sparse_header::MAGIC) {
            Self::open_hosted(file, &head, ctx)
        } else if head.starts_with(cowd::MAGIC) || sesparse::has_magic(&head) {
            let kind = if head.starts_with(cowd::MAGIC) {
                ExtentKind::VmfsSparse
            } else {
                ExtentKind::SeSparse
            };
            let extent = SparseExtent::open(file, ctx.salvage)?;
            Ok(Self::single(path, Layout::BareExtent, None, extent, kind))
        } else {
            Self::open_descriptor(file, ctx)
        }
    }

    fn open_hosted(
        file: Arc<dyn Storage>,
        head: &[u8],
        ctx: &OpenContext<'_>,
    ) -> Result<VmdkLayer> {
        let path = file.name().to_path_buf();
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
            Some(
                parse_descriptor(&bytes, ctx)
                    .map_err(|e| e.context("embedded descriptor").at_offset(offset))?,
            )
        } else {
            None
        };
        let layout = if descriptor.is_some() {
            Layout::Embedded
        } else {
            Layout::BareExtent
        };
        let extent = SparseExtent::open_hosted(file, header, ctx.salvage)?;
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
        let backing = descriptor.as_ref().and_then(backing_link);
        VmdkLayer {
            files: vec![path.clone()],
            descriptor_file: None,
            path,
            layout,
            descriptor,
            extents: vec![Extent {
                start: 0,
                len: size,
                kind,
                file_index: Some(0),
                data: ExtentData::Sparse(Arc::new(extent)),
            }],
            size,
            backing,
            warnings,
        }
    }

    fn open_descriptor(file: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<VmdkLayer> {
        let path = file.name().to_path_buf();
        if file.len() > MAX_DESCRIPTOR_BYTES {
            return Err(Error::corrupt(format!(
                "not a VMDK: no sparse extent magic, and at {} bytes too large to be a text descriptor",
                file.len()
            )));
        }
        let text = file.read_vec(0, file.len(), "descriptor")?;
        let descriptor = parse_descriptor(&text, ctx)?;
        if descriptor.extents.is_empty() {
            return Err(Error::corrupt("descriptor lists no extents"));
        }
        descriptor.total_bytes()?;
        let mut files = vec![path.clone()];
        // One open file (and one set of grain tables) per extent file, however many extent
        // lines name it and however they spell it ("a.vmdk", "./a.vmdk", a link): found by
        // name, then by the file's identity.
        let mut opened: Vec<OpenedExtentFile> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut by_identity: HashMap<FileId, usize> = HashMap::new();
        let mut extents = Vec::with_capacity(descriptor.extents.len());
        let mut warnings = Vec::new();
        let mut start = 0u64;
        for line in &descriptor.extents {
            let len = line.sectors * 512;
            let (data, file_index) = match &line.file {
                None => (ExtentData::Zero, None),
                Some(name) => {
                    let unix_name = name.replace('\\', "/");
                    let known = by_name.get(&unix_name).copied();
                    let slot = match known {
                        Some(i) => i,
                        None => {
                            let host = match ctx.gate.open(&path, &unix_name, Role::Extent) {
                                Ok(Lookup::Opened(f)) => f as Arc<dyn Storage>,
                                Ok(Lookup::Missing(p)) => {
                                    return Err(Error::invalid(format!(
                                        "extent file '{name}' (descriptor line {}) cannot be opened: No such file or directory (looked for {})",
                                        line.line,
                                        p.display()
                                    )));
                                }
                                Err(e) => {
                                    return Err(e.context(format!("descriptor line {}", line.line)));
                                }
                            };
                            let identity = host.identity();
                            let slot = match identity.and_then(|id| by_identity.get(&id)) {
                                Some(&i) => i,
                                None => {
                                    files.push(host.name().to_path_buf());
                                    opened.push((host, None));
                                    if let Some(id) = identity {
                                        by_identity.insert(id, opened.len() - 1);
                                    }
                                    opened.len() - 1
                                }
                            };
                            by_name.insert(unix_name, slot);
                            slot
                        }
                    };
                    let index = slot + 1;
                    let host = Arc::clone(&opened[slot].0);
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
                        let sparse = match &opened[slot].1 {
                            Some(s) => Arc::clone(s),
                            None => {
                                let extent_path = host.name().to_path_buf();
                                let sparse =
                                    SparseExtent::open(host, ctx.salvage).map_err(|e| {
                                        e.context(format!("extent '{name}'"))
                                            .with_path(&extent_path)
                                    })?;
                                for w in &sparse.warnings {
                                    warnings.push(format!("extent '{name}': {w}"));
                                }
                                let sparse = Arc::new(sparse);
                                opened[slot].1 = Some(Arc::clone(&sparse));
                                sparse
                            }
                        };
                        ExtentData::Sparse(sparse)
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
        let backing = backing_link(&descriptor);
        Ok(VmdkLayer {
            path,
            descriptor_file: Some(file),
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

fn backing_link(d: &Descriptor) -> Option<BackingLink> {
    let hint = d.parent_hint.as_ref()?;
    Some(BackingLink {
        stored_name: hint.clone(),
        names: parent_names(hint),
        format: Some(super::FORMAT),
        searched: None,
    })
}

impl Layer for VmdkLayer {
    fn format(&self) -> Format {
        super::FORMAT
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
        // qemu-img's keys first, in its order (cid, parent cid, create type, extents), so
        // that JSON readers comparing the block and people diffing the human lines see
        // qemu-img's; diskferry's further facts follow.
        let create_type = self.create_type();
        let fs = &mut d.format_specific;
        if let Some(desc) = &self.descriptor {
            fs.insert("cid".into(), json!(desc.cid));
            fs.insert("parent-cid".into(), json!(desc.parent_cid));
            // Decimal, as qemu-img prints them (the descriptor spells them in hex).
            d.human.push(("cid".into(), desc.cid.to_string()));
            d.human
                .push(("parent cid".into(), desc.parent_cid.to_string()));
        }
        fs.insert("create-type".into(), json!(create_type));
        d.human.push(("create type".into(), create_type));
        let mut extents = Vec::new();
        let mut details = Vec::new();
        d.human.push(("extents:".into(), String::new()));
        for (i, e) in self.extents.iter().enumerate() {
            let file = e
                .file_index
                .and_then(|i| self.files.get(i))
                .map(|p| p.display().to_string());
            let sparse = match &e.data {
                ExtentData::Sparse(s) => Some(s),
                _ => None,
            };
            // qemu-img names the extent's type as a separate descriptor spells it, and
            // leaves it empty when the descriptor is embedded in the sparse extent itself.
            let word = if self.descriptor_file.is_some() {
                e.kind.word()
            } else {
                ""
            };
            let mut obj = serde_json::Map::new();
            d.human.push((format!("    [{i}]:"), String::new()));
            let mut line = |obj: &mut serde_json::Map<String, Value>, key: &str, v: Value| {
                let text = match &v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                d.human
                    .push((format!("        {}", key.replace('-', " ")), text));
                obj.insert(key.into(), v);
            };
            if sparse.is_some_and(|s| s.compressed()) {
                line(&mut obj, "compressed", json!(true));
            }
            line(&mut obj, "virtual-size", json!(e.len));
            if let Some(f) = &file {
                line(&mut obj, "filename", json!(f));
            }
            if let Some(s) = sparse {
                line(&mut obj, "cluster-size", json!(s.grain_bytes));
            }
            line(&mut obj, "format", json!(word));
            extents.push(Value::Object(obj));
            let mut extra = format!(
                "{} {} bytes{}",
                e.kind.word(),
                e.len,
                file.as_deref()
                    .map(|f| format!(" in {f}"))
                    .unwrap_or_default()
            );
            if let Some(s) = sparse {
                if let SparseKind::Hosted(h) = s.kind {
                    extra.push_str(&format!(", sparse version {}", h.version));
                }
                extra.push_str(&format!(", grain {} bytes", s.grain_bytes));
                if s.compressed() {
                    extra.push_str(", compressed");
                }
            }
            d.human_extra.push((format!("extent {i}"), extra));
            // qemu-img's extent objects leave the type empty for an embedded descriptor;
            // diskferry's own list names it (dropped when invoked as qemu-img).
            let mut detail = serde_json::Map::new();
            detail.insert("type".into(), json!(e.kind.word()));
            if let Some(s) = sparse {
                if let SparseKind::Hosted(h) = s.kind {
                    detail.insert("version".into(), json!(h.version));
                }
                detail.insert("compressed".into(), json!(s.compressed()));
            }
            details.push(Value::Object(detail));
        }
        fs.insert("extents".into(), Value::Array(extents));
        fs.insert("extent-details".into(), Value::Array(details));
        if let Some(desc) = &self.descriptor {
            if let Some(hint) = &desc.parent_hint {
                fs.insert("parent-file-name-hint".into(), json!(hint));
                d.human_extra.push(("parent".into(), hint.clone()));
            }
            for (key, label, json_key) in [
                ("ddb.adapterType", "adapter type", "adapter-type"),
                ("ddb.virtualHWVersion", "hardware version", "hwversion"),
                ("ddb.toolsVersion", "tools version", "tools-version"),
            ] {
                if let Some(v) = desc.ddb_value(key) {
                    fs.insert(json_key.into(), json!(v));
                    d.human_extra.push((label.into(), v.to_string()));
                }
            }
        }
        let compressed = self.first_sparse().is_some_and(|s| s.compressed());
        fs.insert("compressed".into(), json!(compressed));
        d
    }

    fn files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }

    fn open_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn storage(&self, index: usize) -> Option<&dyn Storage> {
        if index == 0
            && let Some(d) = &self.descriptor_file
        {
            return Some(d.as_ref());
        }
        let extent = self.extents.iter().find(|e| e.file_index == Some(index))?;
        match &extent.data {
            ExtentData::Flat { file, .. } => Some(file.as_ref()),
            ExtentData::Sparse(s) => Some(s.file.as_ref()),
            ExtentData::Zero => None,
        }
    }

    fn host_ranges_map_as_data(&self) -> bool {
        // qemu's VMDK driver calls every range of a flat extent data (at its offset), holes
        // in the extent file included, which it reports as zero as well; a run with a host
        // offset can only be such a range (sparse zero grains have none).
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
