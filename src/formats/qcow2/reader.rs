//! The QCOW2 reader: a [`Layer`] over the active L1 table or one snapshot's.

use super::compressed;
use super::header::{Encryption, Header, check_table};
use super::snapshot::{self, Snapshot};
use super::table::{ClusterState, Decoder, L1E_OFFSET_MASK, L2_CACHE_BYTES, L2Cache, Run};
use crate::dirty_bitmap::{BitmapEntry, DirtyBitmap};
use crate::error::{Error, Result};
use crate::format::{Format, OpenContext, Salvage};
use crate::gate::{Lookup, Role};
use crate::image::{
    AbsentFile, Allocation, BackingLink, DataFilePolicy, Layer, LayerDetails, Mapping,
};
use crate::registry::Registry;
use crate::storage::Storage;
use serde_json::{Value, json};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells open layers apart in the per-thread cache of the last inflated cluster.
static NEXT_LAYER_ID: AtomicU64 = AtomicU64::new(1);

/// Where a layer's guest data lives.
enum DataStore {
    /// In the image file itself.
    Internal,
    /// In the external data file, opened.
    External(Arc<dyn Storage>),
    /// In an external data file that was not opened ([`DataFilePolicy::MetadataSuffices`]):
    /// the metadata is readable, the guest data is not.
    Absent(AbsentFile),
}

/// A QCOW2 layer.
pub struct Qcow2Layer {
    path: PathBuf,
    file: Arc<dyn Storage>,
    /// Where the guest data is: the image file, or its external data file.
    data: DataStore,
    header: Header,
    l1: Vec<u64>,
    cache: L2Cache,
    decoder: Decoder,
    snapshots: Vec<Snapshot>,
    bitmaps: Vec<super::bitmaps::Bitmap>,
    /// The snapshot read instead of the active state.
    snapshot: Option<usize>,
    backing: Option<BackingLink>,
    warnings: Vec<String>,
    salvage: bool,
    id: u64,
}

impl Qcow2Layer {
    /// Opens the image in `file`: its active state, or the snapshot `selector` chooses.
    pub fn open(file: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<Qcow2Layer> {
        let path = file.name().to_path_buf();
        let header = Header::read(file.as_ref(), ctx)?;
        match header.encryption {
            Encryption::None => {}
            Encryption::Aes => {
                return Err(Error::unsupported(
                    "the image is encrypted with qemu's old AES scheme, which diskferry does not decrypt (qemu-img convert --object secret,... can)",
                )
                .at_offset(32));
            }
            Encryption::Luks => {
                return Err(Error::unsupported(
                    "the image is LUKS-encrypted, which diskferry does not decrypt (qemu-img convert --object secret,... can)",
                )
                .at_offset(32));
            }
        }
        let mut warnings = Vec::new();
        if header.corrupt() {
            warnings.push(
                "the image is marked corrupt (qemu found its metadata inconsistent); reading it anyway, check it with 'qemu-img check'".to_string(),
            );
        }
        let data = if header.has_data_file() {
            let Some(name) = header.data_file.clone() else {
                return Err(Error::unsupported(
                    "the image keeps its data in an external data file but does not name it",
                ));
            };
            let missing = |p: &Path| {
                Error::invalid(format!(
                    "external data file '{name}' not found (looked for {})",
                    p.display()
                ))
            };
            match (ctx.gate.open(&path, &name, Role::DataFile), ctx.data_files) {
                (Ok(Lookup::Opened(f)), _) => DataStore::External(f as Arc<dyn Storage>),
                (Ok(Lookup::Missing(p)), DataFilePolicy::Require) => return Err(missing(&p)),
                (Err(e), DataFilePolicy::Require) => return Err(e),
                // The metadata is all in the image file: info shows it, as qemu-img 10's
                // info does without ever opening the data file.
                (Ok(Lookup::Missing(p)), DataFilePolicy::MetadataSuffices) => {
                    DataStore::Absent(AbsentFile {
                        role: Role::DataFile,
                        reason: missing(&p).message().to_string(),
                        name,
                    })
                }
                (Err(e), DataFilePolicy::MetadataSuffices) => DataStore::Absent(AbsentFile {
                    role: Role::DataFile,
                    reason: e.message().to_string(),
                    name,
                }),
            }
        } else {
            DataStore::Internal
        };
        let snapshots = if header.nb_snapshots > 0 {
            snapshot::read_table(file.as_ref(), header.snapshots_offset, header.nb_snapshots)?
        } else {
            Vec::new()
        };
        let bitmaps = match &header.bitmaps {
            Some(ext) => super::bitmaps::read_directory(file.as_ref(), ext)?,
            None => Vec::new(),
        };
        let cluster = header.cluster_size();
        let (l1_offset, l1_size, chosen) = match ctx.snapshot {
            None => (header.l1_table_offset, header.l1_size, None),
            Some(sel) => {
                let infos: Vec<_> = snapshots.iter().map(Snapshot::info).collect();
                let Some(i) = sel.find(&infos) else {
                    let known: Vec<String> = snapshots
                        .iter()
                        .map(|s| format!("{} '{}'", s.id, s.name))
                        .collect();
                    return Err(Error::invalid(format!(
                        "snapshot {} not found ({})",
                        sel.describe(),
                        if known.is_empty() {
                            "the image has no snapshots".to_string()
                        } else {
                            format!("it has: {}", known.join(", "))
                        }
                    )));
                };
                let s = &snapshots[i];
                if u64::from(s.l1_size) * 8 > super::header::MAX_L1_BYTES {
                    return Err(Error::corrupt(format!(
                        "snapshot {}'s L1 table of {} entries is larger than {} MiB",
                        s.id,
                        s.l1_size,
                        super::header::MAX_L1_BYTES >> 20
                    ))
                    .at_offset(s.entry_offset + 8));
                }
                if s.l1_size > 0 {
                    check_table(
                        "snapshot L1 table",
                        s.l1_table_offset,
                        u64::from(s.l1_size) * 8,
                        cluster,
                        None,
                        s.entry_offset,
                    )?;
                }
                (s.l1_table_offset, s.l1_size, Some(i))
            }
        };
        let l1 = if l1_size > 0 {
            super::table::read_u64_table(file.as_ref(), l1_offset, u64::from(l1_size))?
        } else {
            Vec::new()
        };
        // A raw external data file is the whole disk: no backing file shows through it.
        let backing = match (&header.backing_file, header.data_file_raw()) {
            (Some(name), false) if !name.is_empty() => Some(BackingLink {
                stored_name: name.clone(),
                names: vec![name.clone()],
                format: header
                    .backing_format
                    .as_deref()
                    .and_then(|f| Registry::builtin().find(f).ok()),
                searched: None,
            }),
            _ => None,
        };
        let decoder = Decoder {
            cluster_bits: header.cluster_bits,
            extended: header.extended_l2(),
            data_file: header.has_data_file(),
        };
        Ok(Qcow2Layer {
            path,
            file,
            data,
            header,
            l1,
            cache: L2Cache::new(L2_CACHE_BYTES),
            decoder,
            snapshots,
            bitmaps,
            snapshot: chosen,
            backing,
            warnings,
            salvage: ctx.salvage == Salvage::ReadWhatIsThere,
            id: NEXT_LAYER_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The internal snapshots.
    pub fn snapshots(&self) -> &[Snapshot] {
        &self.snapshots
    }

    /// The persistent dirty bitmaps the directory lists, in its order.
    pub fn bitmaps(&self) -> &[super::bitmaps::Bitmap] {
        &self.bitmaps
    }

    /// Reads and checks the table of `bitmap` (one of [`Self::bitmaps`]) for copying it.
    pub fn load_bitmap(
        &self,
        bitmap: &super::bitmaps::Bitmap,
    ) -> Result<super::bitmaps::StoredBitmap> {
        super::bitmaps::StoredBitmap::load(
            Arc::clone(&self.file),
            bitmap,
            self.cluster(),
            self.header.size,
        )
    }

    /// The snapshot being read, if not the active state.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.map(|i| &self.snapshots[i])
    }

    fn cluster(&self) -> u64 {
        self.header.cluster_size()
    }

    /// The storage guest data lives in; an error when it is an external data file that was
    /// not opened (never the image file in its place).
    fn data_file(&self) -> Result<&dyn Storage> {
        match &self.data {
            DataStore::Internal => Ok(self.file.as_ref()),
            DataStore::External(d) => Ok(d.as_ref()),
            DataStore::Absent(a) => Err(Error::invalid(format!(
                "cannot read the guest data: {}",
                a.reason
            ))
            .with_path(&self.path)),
        }
    }

    /// Whether guest data lives in an external data file.
    fn external(&self) -> bool {
        !matches!(self.data, DataStore::Internal)
    }

    /// The run at guest offset `pos` and the guest offset where it ends (the end of its
    /// subcluster run, its cluster, or a stretch of L1 entries with no L2 table).
    fn piece_at(&self, pos: u64) -> Result<(Run, u64)> {
        let span = self.header.l1_span();
        let l1_index = (pos / span) as usize;
        if l1_index >= self.l1.len() {
            // Past a (snapshot's) shorter L1 table: nothing allocated to the end.
            return Ok((Run::Unallocated { host: None }, u64::MAX));
        }
        let l2_offset = self.l1[l1_index] & L1E_OFFSET_MASK;
        if l2_offset == 0 {
            let mut next = l1_index + 1;
            while next < self.l1.len() && self.l1[next] & L1E_OFFSET_MASK == 0 {
                next += 1;
            }
            let end = if next == self.l1.len() {
                u64::MAX
            } else {
                next as u64 * span
            };
            return Ok((Run::Unallocated { host: None }, end));
        }
        let cluster = self.cluster();
        let entry_at = self.header.l1_table_offset_for(self.snapshot()) + l1_index as u64 * 8;
        if !l2_offset.is_multiple_of(cluster) {
            return Err(Error::corrupt(format!(
                "L1 entry {l1_index}: L2 table offset {l2_offset:#x} is not aligned to a cluster ({cluster} bytes)"
            ))
            .at_offset(entry_at));
        }
        if l2_offset >= self.file.len() {
            if self.salvage {
                return Ok((Run::Zero { host: None }, (l1_index as u64 + 1) * span));
            }
            return Err(Error::corrupt(format!(
                "L1 entry {l1_index}: L2 table at {l2_offset:#x} lies past the end of the file ({} bytes)",
                self.file.len()
            ))
            .at_offset(entry_at));
        }
        let words = (cluster / 8) as usize;
        let table = self.cache.get(self.file.as_ref(), l2_offset, words)?;
        let entries = self.header.l2_entries();
        let l2_index = (pos / cluster) % entries;
        let width = self.header.l2_entry_bytes() / 8;
        let w = (l2_index * width) as usize;
        let (entry, bitmap) = (table[w], if width == 2 { table[w + 1] } else { 0 });
        let guest_cluster = pos / cluster * cluster;
        let at = l2_offset + l2_index * self.header.l2_entry_bytes();
        let state = self
            .decoder
            .decode(entry, bitmap, guest_cluster, at)
            .map_err(|e| e.context(format!("L2 entry {l2_index} of L1 entry {l1_index}")))?;
        let (run, end_within) = state.piece(pos - guest_cluster, cluster);
        let run = self.check_host(run, state, at, l1_index, l2_index)?;
        Ok((run, guest_cluster + end_within))
    }

    /// Refuses data said to lie past the end of its file (reads it as zeros when salvaging).
    fn check_host(
        &self,
        run: Run,
        state: ClusterState,
        at: u64,
        l1_index: usize,
        l2_index: u64,
    ) -> Result<Run> {
        let (start, file_len) = match (run, state) {
            (Run::Data { .. }, ClusterState::Whole(Run::Data { host }))
            | (
                Run::Data { .. },
                ClusterState::Sub {
                    host: Some(host), ..
                },
            ) => (host, self.data_file()?.len()),
            (Run::Compressed { offset, .. }, _) => (offset, self.file.len()),
            _ => return Ok(run),
        };
        if start < file_len {
            return Ok(run);
        }
        if self.salvage {
            return Ok(Run::Zero { host: None });
        }
        let what = if matches!(run, Run::Compressed { .. }) {
            "compressed data"
        } else {
            "its cluster"
        };
        Err(Error::corrupt(format!(
            "L2 entry {l2_index} of L1 entry {l1_index} places {what} at {start:#x}, past the end of the {}file ({file_len} bytes)",
            if self.external() && !matches!(run, Run::Compressed { .. }) {
                "external data "
            } else {
                ""
            }
        ))
        .at_offset(at))
    }
}

impl Header {
    /// Where the L1 table being read is (the active one or a snapshot's), for messages.
    fn l1_table_offset_for(&self, snapshot: Option<&Snapshot>) -> u64 {
        snapshot.map_or(self.l1_table_offset, |s| s.l1_table_offset)
    }
}

/// True when `next`, at guest offset `pos`, continues `first` (which starts at `start`) as
/// one mapping: the same allocation, host offsets contiguous.
fn continues(first: Run, start: u64, next: Run, pos: u64) -> bool {
    let delta = pos - start;
    match (first, next) {
        (Run::Unallocated { host: None }, Run::Unallocated { host: None }) => true,
        (Run::Unallocated { host: Some(a) }, Run::Unallocated { host: Some(b) }) => a + delta == b,
        (Run::Compressed { .. }, Run::Compressed { .. }) => true,
        (Run::Zero { host: None }, Run::Zero { host: None }) => true,
        (Run::Zero { host: Some(a) }, Run::Zero { host: Some(b) }) => a + delta == b,
        (Run::Data { host: a }, Run::Data { host: b }) => a + delta == b,
        _ => false,
    }
}

impl Layer for Qcow2Layer {
    fn format(&self) -> Format {
        super::FORMAT
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn virtual_size(&self) -> u64 {
        // qemu counts whole sectors.
        self.header.size / 512 * 512
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let limit = offset.saturating_add(max_len).min(self.header.size);
        if offset >= limit {
            return Err(Error::invalid(format!(
                "map at {offset} is outside the virtual disk ({} bytes)",
                self.header.size
            )));
        }
        let (first, mut end) = self.piece_at(offset)?;
        while end < limit {
            let (next, next_end) = self.piece_at(end)?;
            if !continues(first, offset, next, end) {
                break;
            }
            end = next_end;
        }
        let len = end.min(limit) - offset;
        let file_index = usize::from(self.external());
        let m = match first {
            Run::Unallocated { host: None } => Mapping::new(offset, len, Allocation::Unallocated),
            Run::Unallocated { host: Some(h) } => {
                Mapping::new(offset, len, Allocation::Unallocated).at_host(file_index, h)
            }
            Run::Zero { host: None } => Mapping::new(offset, len, Allocation::Zero),
            Run::Zero { host: Some(h) } => {
                Mapping::new(offset, len, Allocation::Zero).at_host(file_index, h)
            }
            Run::Data { host } => {
                Mapping::new(offset, len, Allocation::Data).at_host(file_index, host)
            }
            Run::Compressed { .. } => {
                let mut m = Mapping::new(offset, len, Allocation::Data);
                m.compressed = true;
                m
            }
        };
        Ok(m)
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let cluster = self.cluster();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (run, mut end) = self.piece_at(pos)?;
            let want_end = pos + (buf.len() - done) as u64;
            if let Run::Data { .. } = run {
                // One read for a stretch of contiguous clusters.
                while end < want_end {
                    let (next, next_end) = self.piece_at(end)?;
                    if !continues(run, pos, next, end) {
                        break;
                    }
                    end = next_end;
                }
            }
            let n = (end.min(want_end) - pos) as usize;
            let dest = &mut buf[done..done + n];
            match run {
                Run::Data { host } => {
                    let file = self.data_file()?;
                    let available = file.len().saturating_sub(host).min(n as u64) as usize;
                    file.read_exact_at(&mut dest[..available], host)?;
                    dest[available..].fill(0);
                }
                Run::Compressed { offset: at, size } => {
                    compressed::copy_from_cluster(
                        self.id,
                        self.file.as_ref(),
                        at,
                        size,
                        self.header.compression,
                        cluster as usize,
                        (pos % cluster) as usize,
                        dest,
                    )?;
                }
                Run::Zero { .. } | Run::Unallocated { .. } => dest.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn backing(&self) -> Option<&BackingLink> {
        self.backing.as_ref()
    }

    fn details(&self) -> LayerDetails {
        let h = &self.header;
        let mut d = LayerDetails {
            cluster_size: Some(h.cluster_size()),
            dirty: h.dirty(),
            ..LayerDetails::default()
        };
        let fs = &mut d.format_specific;
        let human = &mut d.human;
        let compat = if h.version == 2 { "0.10" } else { "1.1" };
        fs.insert("compat".into(), json!(compat));
        human.push(("compat".into(), compat.into()));
        fs.insert("compression-type".into(), json!(h.compression.name()));
        human.push(("compression type".into(), h.compression.name().into()));
        if h.version >= 3 {
            fs.insert("lazy-refcounts".into(), json!(h.lazy_refcounts()));
            human.push(("lazy refcounts".into(), h.lazy_refcounts().to_string()));
        }
        if !self.bitmaps.is_empty() {
            fs.insert(
                "bitmaps".into(),
                Value::Array(self.bitmaps.iter().map(super::bitmaps::to_json).collect()),
            );
            // Nested as qemu-img prints its bitmap list.
            human.push(("bitmaps:".into(), String::new()));
            for (i, b) in self.bitmaps.iter().enumerate() {
                human.push((format!("    [{i}]:"), String::new()));
                human.push(("        flags:".into(), String::new()));
                let flags = [(b.in_use, "in-use"), (b.auto, "auto")];
                for (n, (_, flag)) in flags.iter().filter(|(set, _)| *set).enumerate() {
                    human.push((format!("            [{n}]"), (*flag).into()));
                }
                human.push(("        name".into(), b.name.clone()));
                human.push(("        granularity".into(), b.granularity.to_string()));
            }
        }
        fs.insert("refcount-bits".into(), json!(h.refcount_bits()));
        human.push(("refcount bits".into(), h.refcount_bits().to_string()));
        if h.has_data_file() {
            let name = h.data_file.clone().unwrap_or_default();
            fs.insert("data-file".into(), json!(name));
            fs.insert("data-file-raw".into(), json!(h.data_file_raw()));
            human.push(("data file".into(), name));
            human.push(("data file raw".into(), h.data_file_raw().to_string()));
        }
        if h.version >= 3 {
            fs.insert("corrupt".into(), json!(h.corrupt()));
            human.push(("corrupt".into(), h.corrupt().to_string()));
            fs.insert("extended-l2".into(), json!(h.extended_l2()));
            human.push(("extended l2".into(), h.extended_l2().to_string()));
        }
        // The snapshot list is info's own (top-level `snapshots`, a "Snapshot list:" table), as
        // qemu-img prints it: see Layer::snapshots.
        if let Some(s) = self.snapshot() {
            fs.insert("reading-snapshot".into(), json!(s.id));
            human.push(("reading snapshot".into(), format!("{} '{}'", s.id, s.name)));
        }
        d
    }

    fn snapshots(&self) -> Vec<crate::snapshot::SnapshotInfo> {
        self.snapshots.iter().map(Snapshot::info).collect()
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.path.clone()];
        if let DataStore::External(d) = &self.data {
            out.push(d.name().to_path_buf());
        }
        out
    }

    fn storage(&self, index: usize) -> Option<&dyn Storage> {
        match index {
            0 => Some(self.file.as_ref()),
            1 => match &self.data {
                DataStore::External(d) => Some(d.as_ref()),
                DataStore::Internal | DataStore::Absent(_) => None,
            },
            _ => None,
        }
    }

    fn open_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn absent_files(&self) -> Vec<AbsentFile> {
        match &self.data {
            DataStore::Absent(a) => vec![a.clone()],
            DataStore::Internal | DataStore::External(_) => Vec::new(),
        }
    }

    fn dirty_bitmaps(&self) -> Option<Vec<BitmapEntry>> {
        Some(
            self.bitmaps
                .iter()
                .map(|b| BitmapEntry {
                    name: b.name.clone(),
                    in_use: b.in_use,
                    granularity: b.granularity,
                })
                .collect(),
        )
    }

    fn load_dirty_bitmap(&self, name: &str) -> Result<Arc<dyn DirtyBitmap>> {
        let bitmap = self
            .bitmaps
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| Error::invalid(format!("no bitmap '{name}'")).with_path(self.path()))?;
        Ok(Arc::new(self.load_bitmap(bitmap)?))
    }

    fn child_node_name(&self, index: usize) -> String {
        // A qcow2 layer's only other file is its external data file.
        let _ = index;
        "data-file".to_string()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
