//! The image abstraction: a [`Layer`] is one file format's view of one image file (or one
//! descriptor and its extents); an [`Image`] is a chain of layers, the top one first, each
//! falling through to the next where it holds nothing.
//!
//! Mapping, not bytes, is the core interface: [`Layer::map`] says for any range whether the
//! bytes are stored here, read as zeros, or are not allocated (and so come from the backing
//! image). Convert, compare, map and the allocation figures of info are all "walk the extents,
//! skip what is zero, copy what is data", so sparse images cost nothing.
//!
//! A layer never opens its backing file on its own: it names it in [`Layer::backing`] and the
//! caller ([`Image::open`]) decides whether to follow it, bounding the depth and detecting loops.

use crate::dirty_bitmap::{BitmapEntry, DirtyBitmap};
use crate::error::{Error, ErrorKind, Result};
use crate::format::{Capability, Format, OpenContext, Provenance, Salvage};
use crate::gate::{Gate, Lookup, Role};
use crate::host_file::HostFile;
use crate::registry::Registry;
use crate::storage::{FileId, Storage};
use std::any::Any;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How deep a backing chain may be before we call it an error (a loop that escaped detection
/// through hard links, or a hostile image).
pub const MAX_CHAIN_DEPTH: usize = 256;

/// How one layer stores a range of its virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// The bytes are stored in this layer.
    Data,
    /// This layer defines the range as zeros (a zero flag, a hole in a raw file): it reads as
    /// zeros whatever the backing image holds.
    Zero,
    /// This layer holds nothing for the range: it reads from the backing image, or as zeros
    /// when there is none.
    Unallocated,
}

/// Where mapped bytes live in a host file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLocation {
    /// Index into [`Layer::files`] (0 for single-file formats).
    pub file: usize,
    /// Byte offset in that file.
    pub offset: u64,
}

/// One run of a layer's virtual disk with a single [`Allocation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First virtual byte of the run.
    pub start: u64,
    /// Length of the run in bytes (never 0).
    pub length: u64,
    /// How the run is stored.
    pub allocation: Allocation,
    /// Where the bytes are in a host file, when they are stored there contiguously and
    /// uncompressed (qemu-img map's `offset`).
    pub host: Option<HostLocation>,
    /// True when the run is stored compressed.
    pub compressed: bool,
}

impl Mapping {
    /// A run with no host location, not compressed.
    pub fn new(start: u64, length: u64, allocation: Allocation) -> Mapping {
        Mapping {
            start,
            length,
            allocation,
            host: None,
            compressed: false,
        }
    }

    /// The same run stored at `offset` of host file `file`.
    pub fn at_host(mut self, file: usize, offset: u64) -> Mapping {
        self.host = Some(HostLocation { file, offset });
        self
    }

    /// One past the last byte of the run.
    pub fn end(&self) -> u64 {
        self.start + self.length
    }
}

/// How a layer names its backing (parent) image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingLink {
    /// The reference as stored in the image (for info's `backing-filename`).
    pub stored_name: String,
    /// Names to try, in order, with `/` separators: relative ones are relative to the layer's
    /// own folder. They are opened through the [`Gate`], never directly.
    pub names: Vec<String>,
    /// The parent's format when the image says (qcow2's backing format); otherwise detected.
    pub format: Option<Format>,
    /// For parents found by a search rather than a stored name (a VDI's, by UUID): where it
    /// was looked for, for the message when nothing is found.
    pub searched: Option<String>,
}

impl BackingLink {
    /// The paths the names mean for the layer at `child`, for messages.
    pub fn candidates(&self, child: &Path) -> Vec<PathBuf> {
        self.names.iter().map(|n| Gate::resolve(child, n)).collect()
    }
}

/// What `info` shows about a layer beyond its size and format.
#[derive(Debug, Clone, Default)]
pub struct LayerDetails {
    /// The allocation unit (VHD block, VMDK grain, qcow2 cluster), as qemu-img's `cluster-size`.
    pub cluster_size: Option<u64>,
    /// True when the image was not closed cleanly.
    pub dirty: bool,
    /// Format-specific facts, shown as qemu-img's `format-specific.data` in JSON.
    pub format_specific: serde_json::Map<String, serde_json::Value>,
    /// The facts qemu-img prints, as human-readable lines ("create type", "streamOptimized"),
    /// in qemu-img's order and nesting. A key ending in `:` heads a nested block (its value
    /// is not printed); the keys inside carry their own indentation.
    pub human: Vec<(String, String)>,
    /// diskferry's further facts, printed after everything qemu-img prints, so that scripts
    /// reading qemu-img's layout line by line are not misled.
    pub human_extra: Vec<(String, String)>,
}

/// One format's reader of one image.
///
/// Reads take `&self` and use positional I/O, so the conversion engine's workers share one
/// open layer. Implementations keep mutable caches behind a lock.
pub trait Layer: Send + Sync + Any {
    /// The format of this layer.
    fn format(&self) -> Format;

    /// The path the layer was opened by.
    fn path(&self) -> &Path;

    /// The size of the virtual disk in bytes.
    fn virtual_size(&self) -> u64;

    /// Describes the run starting at `offset` (< virtual size), at most `max_len` (> 0) long.
    /// Implementations coalesce neighbouring units with the same allocation, so that a sparse
    /// terabyte costs a handful of calls.
    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping>;

    /// Reads bytes of a range that [`Layer::map`] reported as [`Allocation::Data`]. Callers never
    /// ask for a range that spans more than one mapping.
    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The backing image this layer names, if any.
    fn backing(&self) -> Option<&BackingLink> {
        None
    }

    /// Checks that `parent` is the image this layer was made against (UUIDs, content ids).
    /// Returns warnings for mismatches that are suspicious but readable (timestamps); fails
    /// for mismatches that would silently give wrong data.
    fn verify_backing(&self, parent: &dyn Layer) -> Result<Vec<String>> {
        let _ = parent;
        Ok(Vec::new())
    }

    /// The image's internal snapshots (formats that hold them).
    fn snapshots(&self) -> Vec<crate::snapshot::SnapshotInfo> {
        Vec::new()
    }

    /// Facts for `info`.
    fn details(&self) -> LayerDetails {
        LayerDetails::default()
    }

    /// Every file this layer reads (descriptor first), for `actual-size` and messages.
    fn files(&self) -> Vec<PathBuf> {
        vec![self.path().to_path_buf()]
    }

    /// The storage with index `index` in [`Layer::files`], for read-ahead of the ranges
    /// [`Mapping::host`] names, `actual-size` and identity checks. `None` where the layer does
    /// not keep it open.
    fn storage(&self, index: usize) -> Option<&dyn Storage> {
        let _ = index;
        None
    }

    /// Starts read-ahead of the host bytes behind `[offset, offset + len)` of this layer where
    /// it can do so without asking its map (a raw file, whose host offsets are its virtual
    /// ones: asking would cost two `lseek`s the planner has just made). Returns false where it
    /// cannot, and [`Image::prefetch`] walks the map instead.
    fn prefetch_direct(&self, offset: u64, len: u64) -> bool {
        let _ = (offset, len);
        false
    }

    /// Problems found while opening that did not stop the open (a damaged footer read from
    /// its backup copy, say).
    fn open_warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// The files the layer names but was opened without, which
    /// [`DataFilePolicy::MetadataSuffices`] allows (a qcow2's missing external data file):
    /// its metadata is all there, its guest data cannot be read.
    fn absent_files(&self) -> Vec<AbsentFile> {
        Vec::new()
    }

    /// The persistent dirty bitmaps the layer lists, in order; `None` where its format holds
    /// none (`convert --bitmaps` then refuses, as qemu-img does).
    fn dirty_bitmaps(&self) -> Option<Vec<BitmapEntry>> {
        None
    }

    /// Loads the bitmap `name`, one [`Self::dirty_bitmaps`] lists as not in use, for copying:
    /// its table read and checked, its bits read on demand.
    fn load_dirty_bitmap(&self, name: &str) -> Result<Arc<dyn DirtyBitmap>> {
        Err(Error::unsupported(format!("no bitmap '{name}' here")).with_path(self.path()))
    }

    /// The name qemu-img's `info` gives the node of the layer's file `index` (1 and up: the
    /// files after its own) in `children`: `extents.N` (VMDK's extent files) unless the
    /// format names it otherwise.
    fn child_node_name(&self, index: usize) -> String {
        format!("extents.{}", index.saturating_sub(1))
    }

    /// Whether `map` reports every range stored at a host offset as data, holes of the host
    /// file included, as qemu's driver for the format does (VMDK's flat extents).
    fn host_ranges_map_as_data(&self) -> bool {
        false
    }

    /// For formats that need to look at a parent's format-specific identity.
    fn as_any(&self) -> &dyn Any;
}

/// Whether [`Image::open`] follows backing links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingPolicy {
    /// Open the whole chain.
    Follow,
    /// Open the top layer only; unallocated ranges read as zeros. For `info` without
    /// `--backing-chain`, and for untrusted images.
    Ignore,
}

/// Whether [`Image::open`] needs the external data files images keep their guest data in (a
/// qcow2's `data_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFilePolicy {
    /// Open them: an image whose data file is missing or refused by the gate fails to open.
    /// For every command that reads the disk (convert, compare, map, check...).
    Require,
    /// Open them where they can be opened; otherwise open the image's metadata alone, the data
    /// file listed in [`Layer::absent_files`], and every read of guest data fails. For `info`,
    /// which reads no guest data: qemu-img 10's info never opens the data file (the fix for
    /// CVE-2024-4467), so an image whose data file is elsewhere must still be shown.
    MetadataSuffices,
}

/// A file an image names but was opened without (see [`DataFilePolicy::MetadataSuffices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsentFile {
    /// What the file is to the image.
    pub role: Role,
    /// The name as the image stores it.
    pub name: String,
    /// Why it was not opened: where it was looked for, or why the gate refused it.
    pub reason: String,
}

/// How to open an image.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The format, or `None` to detect it from the content.
    pub format: Option<Format>,
    /// Whether to open the backing chain.
    pub backing: BackingPolicy,
    /// Whether an external data file must be opened too.
    pub data_files: DataFilePolicy,
    /// The deepest chain accepted.
    pub max_depth: usize,
    /// The policy for every file the image names (extents, parents). The library's default
    /// is confined to the image's folder; the command line's follows regular files anywhere.
    pub gate: Gate,
    /// The formats known, for detection.
    pub registry: Registry,
    /// Whether to read around damage that loses data (`--salvage`).
    pub salvage: Salvage,
    /// An internal snapshot of the top image to read instead of its current state
    /// (`convert -l`), for formats that hold them.
    pub snapshot: Option<crate::snapshot::Selector>,
    /// The top image's parent, named by the user (`--parent`): opened instead of what the
    /// image names (a user's choice, so not through the gate), and still verified against the
    /// image's record of its parent.
    pub parent: Option<PathBuf>,
    /// In a package (OVA, OVF), the disk to open: its index (`0` first) or file name; `None`
    /// when the package has one disk.
    pub package_disk: Option<String>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            format: None,
            backing: BackingPolicy::Follow,
            data_files: DataFilePolicy::Require,
            max_depth: MAX_CHAIN_DEPTH,
            gate: Gate::confined(),
            registry: Registry::builtin(),
            salvage: Salvage::Refuse,
            snapshot: None,
            parent: None,
            package_disk: None,
        }
    }
}

impl OpenOptions {
    /// Options with an explicit format (`-f`), or detection when `None`.
    pub fn with_format(format: Option<Format>) -> OpenOptions {
        OpenOptions {
            format,
            ..OpenOptions::default()
        }
    }
}

/// The status of a range of a whole chain, as qemu-img map reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainMapping {
    /// The run, as the layer at `depth` mapped it (clipped to what the layers above leave open).
    pub mapping: Mapping,
    /// Which layer answered: 0 is the top. For ranges no layer holds, the last layer asked.
    pub depth: usize,
}

impl ChainMapping {
    /// True when some layer defines the range (qemu-img map's `present`).
    pub fn present(&self) -> bool {
        self.mapping.allocation != Allocation::Unallocated
    }

    /// True when the range reads as zeros.
    pub fn zero(&self) -> bool {
        self.mapping.allocation != Allocation::Data
    }
}

/// An opened image: its layers, top first.
pub struct Image {
    layers: Vec<Box<dyn Layer>>,
    format_guessed: bool,
    warnings: Vec<String>,
    /// Checks running beside the reads (a package member's manifest digest), joined by
    /// [`Image::finish_checks`].
    checks: std::sync::Mutex<Vec<std::thread::JoinHandle<Result<()>>>>,
    /// The gate the image was opened with: names it holds that are only shown (a parent
    /// `info` does not follow) must still not lead to a look at a file the gate refuses.
    gate: Gate,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.top().path())
            .field("format", &self.top().format())
            .field("depth", &self.layers.len())
            .finish()
    }
}

/// The identity of a file on disk, for loop detection and "destination is the source".
pub fn file_identity(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// The identities of every file a layer reads.
fn layer_identities(layer: &dyn Layer) -> Vec<FileId> {
    (0..layer.files().len())
        .filter_map(|i| layer.storage(i).and_then(|s| s.identity()))
        .collect()
}

impl Image {
    /// Opens the image at `path` (a file the user chose) and, by default, its backing chain.
    ///
    /// A package (an OVA, or an OVF descriptor) opens the disk `options.package_disk` names,
    /// read in place; its manifest digest is checked while it is read (see
    /// [`Image::finish_checks`]). An XVA's disk is assembled from its chunks, each verified
    /// against its checksum when first read.
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Image> {
        // A legacy XVA may be a folder, which has no bytes to probe. (Its ova.xml, named as a
        // file, is told by the XVA probe below; opening every source twice to ask would also
        // make the kernel read ahead a cold source's start through the page cache.)
        if options.format.is_none()
            && path.is_dir()
            && crate::xva::legacy_descriptor(path).is_some()
        {
            return crate::xva::open_image(path, options.package_disk.as_deref(), options);
        }
        let file = HostFile::open(path)?;
        // An XVA is a tar too: it is told apart (by ova.xml first) before the OVA probe.
        if options.format.is_none() && crate::xva::probe(&file).is_some() {
            return crate::xva::open_image(path, options.package_disk.as_deref(), options);
        }
        if options.format.is_none() && crate::ova::open::probe(&file).is_some() {
            return crate::ova::open::open_image(path, options.package_disk.as_deref(), options);
        }
        Image::open_storage(Arc::new(file), options)
    }

    /// Adds a check that runs beside the reads; [`Image::finish_checks`] reports its result.
    pub fn add_check(&mut self, check: std::thread::JoinHandle<Result<()>>) {
        self.checks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push(check);
    }

    /// Waits for the checks that run beside the reads (a package member's digest) and returns
    /// the first failure: a command that read the image calls it before it commits its output,
    /// so that a tampered or damaged package leaves nothing.
    pub fn finish_checks(&self) -> Result<()> {
        let checks: Vec<_> = self
            .checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        let mut first = Ok(());
        for c in checks {
            let result = c
                .join()
                .unwrap_or_else(|_| Err(Error::invalid("internal error: a check panicked")));
            if first.is_ok() {
                first = result;
            }
        }
        first
    }

    /// Opens the image in `storage` (a file, a window into a package, memory) and, by
    /// default, its backing chain, whose names are resolved against the storage's name.
    pub fn open_storage(storage: Arc<dyn Storage>, options: &OpenOptions) -> Result<Image> {
        let (top, guessed) = open_layer(storage, options, Provenance::User)?;
        let mut image = Image {
            layers: vec![top],
            format_guessed: guessed,
            warnings: Vec::new(),
            checks: Default::default(),
            gate: options.gate,
        };
        image.collect_warnings(0);
        if options.backing == BackingPolicy::Follow {
            image.open_backing_chain(options)?;
        }
        Ok(image)
    }

    /// Wraps a single already-opened layer (tests, in-memory images).
    pub fn from_layer(layer: Box<dyn Layer>) -> Image {
        let mut image = Image {
            layers: vec![layer],
            format_guessed: false,
            warnings: Vec::new(),
            checks: Default::default(),
            gate: Gate::default(),
        };
        image.collect_warnings(0);
        image
    }

    /// The gate the image's named files pass (the library's default for
    /// [`Image::from_layer`]).
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    fn collect_warnings(&mut self, index: usize) {
        let layer = &self.layers[index];
        for w in layer.open_warnings() {
            self.warnings
                .push(format!("{}: {w}", layer.path().display()));
        }
    }

    fn open_backing_chain(&mut self, options: &OpenOptions) -> Result<()> {
        let max_depth = options.max_depth;
        let mut seen: HashSet<FileId> = HashSet::new();
        seen.extend(layer_identities(self.layers[0].as_ref()));
        if let Some(parent) = &options.parent
            && self.layers[0].backing().is_none()
        {
            return Err(Error::invalid(format!(
                "--parent '{}' was given, but this image has no parent (it is not a differencing image)",
                parent.display()
            ))
            .with_path(self.layers[0].path()));
        }
        loop {
            let child = self.layers.last().expect("an image has a layer");
            let Some(link) = child.backing().cloned() else {
                return Ok(());
            };
            let child_path = child.path().to_path_buf();
            if self.layers.len() >= max_depth {
                return Err(Error::unsupported(format!(
                    "backing chain is deeper than {max_depth} images"
                ))
                .with_path(&child_path));
            }
            let storage: Arc<dyn Storage> = match (&options.parent, self.layers.len()) {
                (Some(parent), 1) => Arc::new(HostFile::open(parent)?),
                _ => open_named_backing(&options.gate, &child_path, &link)?,
            };
            if let Some(id) = storage.identity()
                && !seen.insert(id)
            {
                return Err(Error::corrupt(format!(
                    "backing chain loops: '{}' is already in the chain",
                    storage.name().display()
                ))
                .with_path(&child_path));
            }
            let parent_options = OpenOptions {
                format: link.format,
                ..options.clone()
            };
            // The error names the image the user gave (the child), and the parent in its text.
            let parent_name = storage.name().to_path_buf();
            let (parent, _) = open_layer(storage, &parent_options, Provenance::NamedByImage)
                .map_err(|e| {
                    let inner = match e.path() {
                        Some(p) if p != parent_name => format!(" in '{}'", p.display()),
                        _ => String::new(),
                    };
                    e.context(format!(
                        "parent (backing file) '{}' ({}){inner}",
                        link.stored_name,
                        parent_name.display()
                    ))
                    .rename_path(&child_path)
                })?;
            for id in layer_identities(parent.as_ref()).into_iter().skip(1) {
                seen.insert(id);
            }
            let warnings = child
                .verify_backing(parent.as_ref())
                .map_err(|e| e.with_path(&child_path))?;
            for w in warnings {
                self.warnings.push(format!("{}: {w}", child_path.display()));
            }
            self.layers.push(parent);
            self.collect_warnings(self.layers.len() - 1);
        }
    }

    /// Every file the image's layers read, top layer first (what `info` lists as opened).
    pub fn opened_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for layer in &self.layers {
            for f in layer.files() {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        out
    }

    /// The layers, top first.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The top layer alone, the rest of the chain closed.
    pub fn into_top(mut self) -> Box<dyn Layer> {
        self.layers.truncate(1);
        self.layers.pop().expect("an image has a layer")
    }

    /// The top layer: the image the user named.
    pub fn top(&self) -> &dyn Layer {
        self.layers[0].as_ref()
    }

    /// The size of the virtual disk.
    pub fn virtual_size(&self) -> u64 {
        self.top().virtual_size()
    }

    /// True when the format was not recognised and raw was assumed.
    pub fn format_guessed(&self) -> bool {
        self.format_guessed
    }

    /// Problems found while opening that did not stop the open.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The status of the run starting at `offset` through the whole chain: which layer
    /// provides it and how. `max_len` bounds the run; the result may be shorter.
    pub fn block_status(&self, offset: u64, max_len: u64) -> Result<ChainMapping> {
        let size = self.virtual_size();
        if offset >= size || max_len == 0 {
            return Err(Error::invalid(format!(
                "block status query at {offset} (+{max_len}) outside the virtual disk ({size} bytes)"
            ))
            .with_path(self.top().path()));
        }
        let mut len = max_len.min(size - offset);
        let mut depth = 0;
        loop {
            let layer = &self.layers[depth];
            let layer_size = layer.virtual_size();
            let mapping = if offset >= layer_size {
                // A parent smaller than its child reads as zeros past its end.
                Mapping::new(offset, len, Allocation::Unallocated)
            } else {
                let m = layer
                    .map(offset, len.min(layer_size - offset))
                    .map_err(|e| e.with_path(layer.path()))?;
                check_mapping(layer.as_ref(), offset, len, &m)?;
                m
            };
            len = mapping.length;
            if mapping.allocation != Allocation::Unallocated || depth + 1 == self.layers.len() {
                return Ok(ChainMapping { mapping, depth });
            }
            depth += 1;
        }
    }

    /// Asks the kernel to read ahead the host bytes behind `[offset, offset + len)` of the
    /// virtual disk, so that workers reading it later find it in the page cache. The engine's
    /// planner calls this as it hands out work: it keeps many reads in flight on the storage
    /// (which matters from disk, where one reader at a time leaves it idle) without more
    /// threads or buffers. Best effort: errors are ignored.
    pub fn prefetch(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.virtual_size());
        if end <= offset || (self.layers.len() == 1 && self.top().prefetch_direct(offset, len)) {
            return;
        }
        let mut pos = offset;
        while pos < end {
            let Ok(status) = self.block_status(pos, end - pos) else {
                return;
            };
            let m = status.mapping;
            if m.allocation == Allocation::Data
                && let Some(host) = m.host
                && let Some(file) = self.layers[status.depth].storage(host.file)
            {
                file.prefetch(host.offset, m.length);
            }
            pos = m.end();
        }
    }

    /// Reads `buf.len()` bytes of the virtual disk at `offset`, through the chain.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let size = self.virtual_size();
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > size)
        {
            return Err(Error::invalid(format!(
                "read of {} bytes at {offset} runs past the end of the virtual disk ({size} bytes)",
                buf.len()
            ))
            .with_path(self.top().path()));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let status = self.block_status(pos, (buf.len() - done) as u64)?;
            let n = status.mapping.length as usize;
            let chunk = &mut buf[done..done + n];
            if status.mapping.allocation == Allocation::Data {
                let layer = &self.layers[status.depth];
                layer
                    .read_data(pos, chunk)
                    .map_err(|e| e.with_path(layer.path()))?;
            } else {
                chunk.fill(0);
            }
            done += n;
        }
        Ok(())
    }
}

/// A layer that answers outside the range it was asked about would send every caller into an
/// endless loop or a wrong read; treat it as the corruption it is.
fn check_mapping(layer: &dyn Layer, offset: u64, max_len: u64, m: &Mapping) -> Result<()> {
    if m.start != offset || m.length == 0 || m.length > max_len {
        return Err(Error::corrupt(format!(
            "internal mapping error: asked for {offset}+{max_len}, got {}+{}",
            m.start, m.length
        ))
        .with_path(layer.path()));
    }
    Ok(())
}

/// Opens the first of a link's names that the gate lets through and that exists.
fn open_named_backing(gate: &Gate, child: &Path, link: &BackingLink) -> Result<Arc<dyn Storage>> {
    let mut refusal: Option<Error> = None;
    let mut tried = Vec::new();
    for name in &link.names {
        match gate.open(child, name, Role::Backing) {
            Ok(Lookup::Opened(file)) => return Ok(file),
            Ok(Lookup::Missing(path)) => tried.push(path.display().to_string()),
            Err(e) if e.kind() == ErrorKind::Refused => {
                refusal.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = refusal {
        return Err(e);
    }
    let tried = if tried.is_empty() {
        "nothing".to_string()
    } else {
        tried.join(", ")
    };
    let message = match &link.searched {
        Some(searched) => format!(
            "backing image '{}' not found (looked for in {searched}; tried: {tried})",
            link.stored_name
        ),
        None => format!(
            "backing image '{}' not found (tried: {tried})",
            link.stored_name
        ),
    };
    Err(Error::invalid(message).with_path(child))
}

/// Opens one layer over `storage`: detects the format unless given, then hands the storage to
/// its driver. Returns the layer and whether its format was guessed (raw by elimination).
pub fn open_layer(
    storage: Arc<dyn Storage>,
    options: &OpenOptions,
    provenance: Provenance,
) -> Result<(Box<dyn Layer>, bool)> {
    let name = storage.name().to_path_buf();
    let (format, guessed) = match options.format {
        Some(f) => (f, false),
        None => {
            let detected = options.registry.detect(storage.as_ref())?;
            (detected.format, detected.guessed)
        }
    };
    options
        .registry
        .require(format, Capability::Read)
        .map_err(|e| e.with_path(&name))?;
    let snapshot = match provenance {
        Provenance::User => options.snapshot.as_ref(),
        Provenance::NamedByImage => None,
    };
    if snapshot.is_some() {
        options
            .registry
            .require(format, Capability::Snapshots)
            .map_err(|e| e.context("-l").with_path(&name))?;
    }
    let ctx = OpenContext {
        gate: &options.gate,
        provenance,
        salvage: options.salvage,
        snapshot,
        data_files: options.data_files,
    };
    let layer = format
        .driver()
        .open(storage, &ctx)
        .map_err(|e| e.with_path(&name))?;
    Ok((layer, guessed))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An in-memory layer with an explicit allocation list, for chain tests.
    pub(crate) struct MemLayer {
        pub path: PathBuf,
        pub data: Vec<u8>,
        /// (start, len, allocation) covering the whole disk in order.
        pub runs: Vec<(u64, u64, Allocation)>,
    }

    impl Layer for MemLayer {
        fn format(&self) -> Format {
            crate::formats::raw::FORMAT
        }
        fn path(&self) -> &Path {
            &self.path
        }
        fn virtual_size(&self) -> u64 {
            self.data.len() as u64
        }
        fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
            let (s, l, a) = *self
                .runs
                .iter()
                .find(|(s, l, _)| offset >= *s && offset < s + l)
                .unwrap();
            Ok(Mapping::new(offset, (s + l - offset).min(max_len), a))
        }
        fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            buf.copy_from_slice(&self.data[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn mem(name: &str, fill: u8, runs: Vec<(u64, u64, Allocation)>) -> Box<dyn Layer> {
        let size = runs.iter().map(|r| r.0 + r.1).max().unwrap();
        Box::new(MemLayer {
            path: PathBuf::from(name),
            data: vec![fill; size as usize],
            runs,
        })
    }

    #[test]
    fn chain_reads_fall_through_unallocated_but_not_zero() {
        use Allocation::*;
        let top = mem(
            "top",
            1,
            vec![(0, 10, Data), (10, 10, Unallocated), (20, 10, Zero)],
        );
        let base = mem("base", 2, vec![(0, 30, Data)]);
        let image = Image {
            layers: vec![top, base],
            format_guessed: false,
            warnings: vec![],
            checks: Default::default(),
            gate: Gate::default(),
        };
        let mut buf = vec![9u8; 30];
        image.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..10], &[1; 10]);
        assert_eq!(&buf[10..20], &[2; 10]);
        assert_eq!(&buf[20..], &[0; 10]);
        let s = image.block_status(12, 100).unwrap();
        assert_eq!((s.depth, s.mapping.start, s.mapping.length), (1, 12, 8));
        assert!(image.read_at(25, &mut buf).is_err());
    }

    #[test]
    fn smaller_parent_reads_as_zeros_past_its_end() {
        use Allocation::*;
        let top = mem("top", 1, vec![(0, 40, Unallocated)]);
        let base = mem("base", 2, vec![(0, 20, Data)]);
        let image = Image {
            layers: vec![top, base],
            format_guessed: false,
            warnings: vec![],
            checks: Default::default(),
            gate: Gate::default(),
        };
        let mut buf = vec![9u8; 40];
        image.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..20], &[2; 20]);
        assert_eq!(&buf[20..], &[0; 20]);
        let s = image.block_status(20, 100).unwrap();
        assert!(!s.present() && s.zero());
    }
}
