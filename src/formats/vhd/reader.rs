//! Reading VHDs: the [`Layer`] of a fixed, dynamic or differencing file.

use super::bat::{self, Bat};
use super::bitmap::{SectorBitmap, bitmap_bytes};
use super::dynamic_header::{DynamicHeader, HEADER_SIZE};
use super::footer::{DiskType, FOOTER_SIZE, Footer, FooterError, SizeRule, VHD_EPOCH, uuid_text};
use super::parent::{self, ParentRef};
use crate::error::{Error, Result};
use crate::format::{Format, OpenContext};
use crate::formats::raw::RawLayer;
use crate::image::{Allocation, BackingLink, Layer, LayerDetails, Mapping};
use crate::storage::Storage;
use serde_json::json;
use std::any::Any;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Bytes of sector bitmaps kept in memory at most. A bitmap is 512 bytes for 2 MiB blocks but
/// 64 KiB for 256 MiB ones (and up to 512 KiB for the largest block size a header can give),
/// so the cache is bounded in bytes, not entries: 16 MiB holds every block of a 2 TiB disk in
/// 2 MiB blocks (nearly all "full" or "empty", a few bytes each).
const BITMAP_CACHE_BYTES: usize = 16 << 20;

/// What one cached bitmap costs besides its bits: the hash table slot, the key, the `Arc`'s
/// counts and the allocator's rounding, generously.
const BITMAP_ENTRY_OVERHEAD: usize = 64;

/// Block bitmaps read so far, keyed by block index, at most [`BITMAP_CACHE_BYTES`] of them:
/// when a new one does not fit, everything cached is dropped (a walk moves forward, so what
/// was cached is rarely wanted again).
#[derive(Default)]
struct BitmapCache {
    bitmaps: HashMap<u64, SectorBitmap>,
    bytes: usize,
}

impl BitmapCache {
    fn cost(bitmap: &SectorBitmap) -> usize {
        BITMAP_ENTRY_OVERHEAD
            + match bitmap {
                SectorBitmap::Partial(bits) => bits.len(),
                SectorBitmap::Full | SectorBitmap::Empty => 0,
            }
    }

    fn get(&self, index: u64) -> Option<&SectorBitmap> {
        self.bitmaps.get(&index)
    }

    fn insert(&mut self, index: u64, bitmap: SectorBitmap) {
        let cost = Self::cost(&bitmap);
        if cost > BITMAP_CACHE_BYTES {
            return;
        }
        if self.bytes + cost > BITMAP_CACHE_BYTES {
            // Drop the table's allocation too: its capacity was sized for small entries.
            self.bitmaps = HashMap::new();
            self.bytes = 0;
        }
        if let Some(old) = self.bitmaps.insert(index, bitmap) {
            self.bytes -= Self::cost(&old);
        }
        self.bytes += cost;
    }
}

/// Where the footer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterSource {
    /// The last 512 bytes (or 511: Virtual PC before 2004 wrote short footers).
    End,
    /// The copy at offset 0, because the end footer is damaged or missing.
    Copy,
}

/// The footer of a file, found as the specification and the tools that survive damaged files
/// find it: the end footer, else (dynamic and differencing disks) the copy at offset 0.
pub fn find_footer(file: &dyn Storage) -> Result<(Footer, FooterSource, Vec<String>)> {
    let len = file.len();
    let end_result = read_end_footer(file);
    let mut warnings = Vec::new();
    match end_result {
        Ok(footer) => {
            if footer.disk_type.is_sparse() && len >= 2 * FOOTER_SIZE {
                let mut copy = [0u8; 512];
                file.read_exact_at(&mut copy, 0)?;
                if copy != footer.bytes {
                    warnings.push(match Footer::parse(&copy) {
                        Ok(_) => "the footer copy at offset 0 differs from the end footer; using the end footer".to_string(),
                        Err(e) => format!("the footer copy at offset 0 is damaged ({e}); using the end footer"),
                    });
                }
            }
            Ok((footer, FooterSource::End, warnings))
        }
        Err(end_problem) => {
            if len >= FOOTER_SIZE {
                let mut copy = [0u8; 512];
                file.read_exact_at(&mut copy, 0)?;
                if let Ok(footer) = Footer::parse(&copy)
                    && footer.disk_type.is_sparse()
                {
                    warnings.push(format!(
                        "the end footer is damaged or missing ({end_problem}); using the copy at offset 0 ('diskferry check -r all' rewrites it)"
                    ));
                    return Ok((footer, FooterSource::Copy, warnings));
                }
            }
            Err(Error::corrupt(format!("not a usable VHD: {end_problem}"))
                .at_offset(len.saturating_sub(FOOTER_SIZE))
                .with_path(file.name()))
        }
    }
}

/// The footer at the end of the file: 512 bytes, or 511 when the file length says so.
pub fn read_end_footer(file: &dyn Storage) -> std::result::Result<Footer, FooterError> {
    let len = file.len();
    if len < FOOTER_SIZE - 1 {
        return Err(FooterError::Cookie);
    }
    let mut buf = [0u8; 512];
    let short = len % 512 == 511;
    let (at, n) = if short {
        (len - 511, 511)
    } else if len >= FOOTER_SIZE {
        (len - FOOTER_SIZE, 512)
    } else {
        return Err(FooterError::Cookie);
    };
    if file.read_exact_at(&mut buf[..n], at).is_err() {
        return Err(FooterError::Cookie);
    }
    Footer::parse(&buf)
}

/// Bytes at the end of the file that belong to the footer.
fn footer_len(file: &dyn Storage) -> u64 {
    if file.len() % 512 == 511 { 511 } else { 512 }
}

/// A dynamic or differencing disk's tables.
struct Sparse {
    file: Arc<dyn Storage>,
    header: DynamicHeader,
    bat: Bat,
    block_size: u64,
    bitmap_bytes: u64,
    /// What a sector not stored here is: Unallocated (the parent's) in a differencing disk,
    /// Zero in a dynamic one.
    not_stored: Allocation,
    bitmaps: Mutex<BitmapCache>,
}

enum Body {
    /// A fixed disk reads like a raw file (holes included) up to its size.
    Fixed(RawLayer),
    Sparse(Box<Sparse>),
}

/// A VHD layer: fixed, dynamic or differencing.
pub struct VhdLayer {
    body: Body,
    footer: Footer,
    footer_source: FooterSource,
    size: u64,
    rule: SizeRule,
    parent: Option<ParentRef>,
    backing: Option<BackingLink>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for VhdLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdLayer")
            .field("path", &self.path())
            .field("type", &self.footer.disk_type)
            .field("size", &self.size)
            .finish()
    }
}

impl VhdLayer {
    /// Opens a VHD, checking everything reading needs: footer, header, BAT bounds.
    pub fn open(file: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<VhdLayer> {
        let path = file.name().to_path_buf();
        let (footer, footer_source, mut warnings) = find_footer(file.as_ref())?;
        let (size, rule) = footer.virtual_size();
        let body = match footer.disk_type {
            DiskType::Fixed => {
                let data = file.len() - footer_len(file.as_ref());
                if size > data {
                    return Err(Error::corrupt(format!(
                        "fixed VHD is truncated: its footer gives a size of {size} bytes but the file holds {data} bytes of data"
                    ))
                    .with_path(&path));
                }
                Body::Fixed(RawLayer::open(file))
            }
            DiskType::Dynamic | DiskType::Differencing => {
                Body::Sparse(Box::new(open_sparse(file, &footer, size)?))
            }
        };
        let (parent, backing) = match (&body, footer.disk_type) {
            (Body::Sparse(s), DiskType::Differencing) => {
                let p = parent::locate(s.file.as_ref(), &s.header, ctx.provenance);
                warnings.extend(p.problems.iter().cloned());
                let link = BackingLink {
                    stored_name: if p.stored_name.is_empty() {
                        "(unnamed parent)".to_string()
                    } else {
                        p.stored_name.clone()
                    },
                    names: p.names.clone(),
                    // A VHD's parent is a VHD: a name that leads elsewhere is refused rather
                    // than read as some other format.
                    format: Some(super::FORMAT),
                    searched: None,
                };
                (Some(p), Some(link))
            }
            _ => (None, None),
        };
        Ok(VhdLayer {
            body,
            footer,
            footer_source,
            size,
            rule,
            parent,
            backing,
            warnings,
        })
    }

    /// The footer in use.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The dynamic header (dynamic and differencing disks).
    pub fn header(&self) -> Option<&DynamicHeader> {
        match &self.body {
            Body::Sparse(s) => Some(&s.header),
            Body::Fixed(_) => None,
        }
    }

    /// Where the footer in use was found.
    pub fn footer_source(&self) -> FooterSource {
        self.footer_source
    }

    /// The size rule that gave the virtual size.
    pub fn size_rule(&self) -> SizeRule {
        self.rule
    }

    /// The BAT entries covering the disk (dynamic and differencing disks), as stored.
    pub fn bat_entries(&self) -> Option<Vec<u32>> {
        match &self.body {
            Body::Sparse(s) => Some(
                (0..s.bat.len() as u64)
                    .map(|i| s.bat.entry(i).unwrap_or(bat::UNUSED))
                    .collect(),
            ),
            Body::Fixed(_) => None,
        }
    }
}

fn open_sparse(file: Arc<dyn Storage>, footer: &Footer, size: u64) -> Result<Sparse> {
    let path = file.name().to_path_buf();
    let header_at = footer.data_offset;
    if header_at
        .checked_add(HEADER_SIZE)
        .is_none_or(|end| end > file.len())
    {
        return Err(Error::corrupt(format!(
            "the footer puts the dynamic disk header at {header_at:#x}, past the end of the file ({} bytes)",
            file.len()
        ))
        .at_offset(header_at)
        .with_path(&path));
    }
    let mut raw = [0u8; 1024];
    file.read_exact_at(&mut raw, header_at)?;
    let header = DynamicHeader::parse(&raw).map_err(|e| {
        Error::corrupt(e.to_string())
            .at_offset(header_at)
            .with_path(&path)
    })?;
    let block_size = u64::from(header.block_size);
    let needed = size.div_ceil(block_size);
    if needed > u64::from(header.max_table_entries) {
        return Err(Error::corrupt(format!(
            "the block allocation table has {} entries of {block_size} bytes, too few for a disk of {size} bytes (needs {needed})",
            header.max_table_entries
        ))
        .at_offset(header_at)
        .with_path(&path));
    }
    // Only the entries that cover the disk matter (blktap preallocates larger tables). Each
    // is checked as it is read: a block must lie in the file and clear of the metadata a
    // reader relies on (a table of zeros, what a hole reads as, puts every block on the footer
    // copy).
    let bitmap_len = bitmap_bytes(header.block_size);
    let len = file.len();
    let metadata = [
        (0, FOOTER_SIZE, "footer copy"),
        (header_at, header_at + HEADER_SIZE, "dynamic disk header"),
        (
            header.table_offset,
            header.table_offset.saturating_add(needed * 4),
            "block allocation table",
        ),
    ];
    let table_offset = header.table_offset;
    let mut check_entry = |index: u64, sector: u32| -> Result<()> {
        let offset = u64::from(sector) * 512;
        let used = block_size.min(size - index * block_size);
        let end = offset + bitmap_len + used;
        if end > len {
            return Err(bat::bad_entry(
                index,
                table_offset,
                &format!(
                    "points past the end of the file (block at {offset:#x}, file is {len} bytes): the file is truncated or the table is damaged"
                ),
            ));
        }
        if let Some((_, _, what)) = metadata
            .iter()
            .find(|(start, stop, _)| offset < *stop && *start < end)
        {
            return Err(bat::bad_entry(
                index,
                table_offset,
                &format!("(block at {offset:#x}) overlaps the {what}: the table is damaged"),
            ));
        }
        Ok(())
    };
    let bat = Bat::read(file.as_ref(), table_offset, needed, &mut check_entry)
        .map_err(|e| e.with_path(&path))?;
    let not_stored = if footer.disk_type == DiskType::Differencing {
        Allocation::Unallocated
    } else {
        Allocation::Zero
    };
    Ok(Sparse {
        file,
        header,
        bat,
        block_size,
        bitmap_bytes: bitmap_len,
        not_stored,
        bitmaps: Mutex::new(BitmapCache::default()),
    })
}

impl Sparse {
    fn sectors_per_block(&self) -> u32 {
        (self.block_size / 512) as u32
    }

    /// The bitmap of allocated block `index` (bitmap at `host`).
    fn bitmap(&self, index: u64, host: u64) -> Result<SectorBitmap> {
        if let Some(b) = self.lock().get(index) {
            return Ok(b.clone());
        }
        let sectors = self.sectors_per_block();
        let mut bytes = vec![0u8; (sectors as usize).div_ceil(8)];
        self.file.read_exact_at(&mut bytes, host)?;
        let bitmap = SectorBitmap::from_bytes(&bytes, sectors);
        self.lock().insert(index, bitmap.clone());
        Ok(bitmap)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BitmapCache> {
        match self.bitmaps.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// How far from `pos` (a block boundary) sectors stay "not stored", up to `end`.
    fn extend_not_stored(&self, mut pos: u64, end: u64) -> Result<u64> {
        while pos < end {
            let index = pos / self.block_size;
            match self.bat.block_offset(index) {
                None => {
                    // Jump over the whole run of unallocated entries at once.
                    let next = self
                        .bat
                        .next_allocated(index)
                        .map_or(u64::MAX, |n| n.saturating_mul(self.block_size));
                    pos = next.min(end);
                }
                Some(host) => {
                    let sectors = self.sectors_per_block();
                    let (set, n) = self.bitmap(index, host)?.run_from(0, sectors);
                    if set {
                        break;
                    }
                    pos += u64::from(n) * 512;
                    if n < sectors {
                        break;
                    }
                }
            }
        }
        Ok(pos.min(end))
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let end = offset + max_len;
        let index = offset / self.block_size;
        let block_start = index * self.block_size;
        let in_block = offset - block_start;
        let Some(host) = self.bat.block_offset(index) else {
            let run_end = self.extend_not_stored(block_start + self.block_size, end)?;
            return Ok(Mapping::new(offset, run_end - offset, self.not_stored));
        };
        let sector = (in_block / 512) as u32;
        let (set, n) = self
            .bitmap(index, host)?
            .run_from(sector, self.sectors_per_block());
        let mut run_end = (block_start + (u64::from(sector) + u64::from(n)) * 512).min(end);
        if set {
            let at = host + self.bitmap_bytes + in_block;
            return Ok(Mapping::new(offset, run_end - offset, Allocation::Data).at_host(0, at));
        }
        if run_end == block_start + self.block_size {
            run_end = self.extend_not_stored(run_end, end)?;
        }
        Ok(Mapping::new(offset, run_end - offset, self.not_stored))
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / self.block_size;
            let in_block = pos % self.block_size;
            let n = ((self.block_size - in_block) as usize).min(buf.len() - done);
            let host = self.bat.block_offset(index).ok_or_else(|| {
                Error::invalid(format!(
                    "read of unallocated block {index} at virtual offset {pos}"
                ))
            })?;
            self.file.read_exact_at(
                &mut buf[done..done + n],
                host + self.bitmap_bytes + in_block,
            )?;
            done += n;
        }
        Ok(())
    }
}

impl Layer for VhdLayer {
    fn format(&self) -> Format {
        super::FORMAT
    }

    fn path(&self) -> &Path {
        match &self.body {
            Body::Fixed(raw) => raw.path(),
            Body::Sparse(s) => s.file.name(),
        }
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let max_len = max_len.min(self.size.saturating_sub(offset));
        if max_len == 0 {
            return Err(Error::invalid(format!(
                "map at {offset} outside the virtual disk ({} bytes)",
                self.size
            )));
        }
        match &self.body {
            Body::Fixed(raw) => raw.map(offset, max_len),
            Body::Sparse(s) => s.map(offset, max_len),
        }
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &self.body {
            Body::Fixed(raw) => raw.read_data(offset, buf),
            Body::Sparse(s) => s.read_data(offset, buf),
        }
    }

    fn backing(&self) -> Option<&BackingLink> {
        self.backing.as_ref()
    }

    fn verify_backing(&self, parent: &dyn Layer) -> Result<Vec<String>> {
        let Some(header) = self.header() else {
            return Ok(Vec::new());
        };
        if !header.has_parent_uuid() {
            // blktap's convention for a parent that is not a VHD: no identity to check.
            return Ok(vec![
                "this differencing VHD records no parent UUID, so its parent cannot be verified"
                    .to_string(),
            ]);
        }
        let Some(vhd) = parent.as_any().downcast_ref::<VhdLayer>() else {
            return Err(Error::invalid(format!(
                "the parent '{}' is a {} image, but a differencing VHD's parent must be a VHD",
                parent.path().display(),
                parent.format()
            )));
        };
        if vhd.footer.uuid != header.parent_uuid {
            return Err(Error::corrupt(format!(
                "parent '{}' has UUID {} but this differencing VHD was made against UUID {}; refusing to read through the wrong parent",
                parent.path().display(),
                uuid_text(&vhd.footer.uuid),
                uuid_text(&header.parent_uuid)
            )));
        }
        let mut warnings = Vec::new();
        let stamp = header.parent_timestamp;
        if stamp != 0 && stamp != vhd.footer.timestamp {
            let mtime = std::fs::metadata(parent.path())
                .ok()
                .map(|m| (m.mtime() as u64).saturating_sub(VHD_EPOCH) as u32);
            if mtime != Some(stamp) {
                warnings.push(format!(
                    "parent '{}' has timestamp {} but this differencing VHD recorded {stamp}; it may have changed since the child was made",
                    parent.path().display(),
                    vhd.footer.timestamp
                ));
            }
        }
        Ok(warnings)
    }

    fn details(&self) -> LayerDetails {
        let f = &self.footer;
        let mut data = serde_json::Map::new();
        let mut human = Vec::new();
        let version = format!("{}.{}", f.creator_version >> 16, f.creator_version & 0xFFFF);
        data.insert("subformat".into(), json!(f.disk_type.name()));
        data.insert("creator-app".into(), json!(f.creator_app_text()));
        data.insert("creator-version".into(), json!(version));
        data.insert("creator-os".into(), json!(f.creator_os_text()));
        data.insert("uuid".into(), json!(uuid_text(&f.uuid)));
        data.insert("size-rule".into(), json!(self.rule.key()));
        data.insert("current-size".into(), json!(f.current_size));
        data.insert("geometry".into(), json!(f.geometry.to_string()));
        human.push(("subformat".into(), f.disk_type.name().to_string()));
        human.push((
            "creator".into(),
            format!(
                "'{}' version {version} on '{}'",
                f.creator_app_text(),
                f.creator_os_text()
            ),
        ));
        human.push(("uuid".into(), uuid_text(&f.uuid)));
        human.push((
            "size rule".into(),
            format!(
                "{} (current_size {}, geometry {} = {} bytes)",
                self.rule.describe(),
                f.current_size,
                f.geometry,
                f.geometry.sectors() * 512
            ),
        ));
        let mut cluster_size = None;
        if let Body::Sparse(s) = &self.body {
            cluster_size = Some(s.block_size);
            data.insert("block-size".into(), json!(s.block_size));
            data.insert("allocated-blocks".into(), json!(s.bat.allocated().count()));
            human.push(("block size".into(), s.block_size.to_string()));
            if f.disk_type == DiskType::Differencing {
                let h = &s.header;
                data.insert("parent-uuid".into(), json!(uuid_text(&h.parent_uuid)));
                data.insert("parent-name".into(), json!(h.parent_name));
                data.insert("parent-timestamp".into(), json!(h.parent_timestamp));
                let locators: Vec<String> = h
                    .locators
                    .iter()
                    .map(|l| parent::code_text(l.code))
                    .collect();
                data.insert("parent-locators".into(), json!(locators));
                human.push(("parent uuid".into(), uuid_text(&h.parent_uuid)));
                human.push(("parent name".into(), h.parent_name.clone()));
                human.push(("parent locators".into(), locators.join(", ")));
            }
        }
        if f.saved_state != 0 {
            data.insert("saved-state".into(), json!(true));
            human.push(("saved state".into(), "yes".into()));
        }
        if self.footer_source == FooterSource::Copy {
            data.insert(
                "footer".into(),
                json!("copy at offset 0 (end footer damaged)"),
            );
        }
        if let Some(p) = &self.parent {
            let tried: Vec<String> = p
                .names
                .iter()
                .map(|n| {
                    crate::gate::Gate::resolve(self.path(), n)
                        .display()
                        .to_string()
                })
                .collect();
            data.insert("parent-candidates".into(), json!(tried));
        }
        LayerDetails {
            cluster_size,
            dirty: false,
            format_specific: data,
            // qemu-img prints no format-specific block for VHD: all of these are ours.
            human: Vec::new(),
            human_extra: human,
        }
    }

    fn open_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn prefetch_direct(&self, offset: u64, len: u64) -> bool {
        match &self.body {
            Body::Fixed(raw) => raw.prefetch_direct(offset, len),
            Body::Sparse(_) => false,
        }
    }

    fn storage(&self, index: usize) -> Option<&dyn Storage> {
        if index != 0 {
            return None;
        }
        match &self.body {
            Body::Fixed(raw) => raw.storage(0),
            Body::Sparse(s) => Some(s.file.as_ref()),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::host_file::HostFile;
    use crate::options::FormatOptions;
    use crate::sink::Output;
    use crate::staging::Staging;
    use crate::writer::{CreateSpec, Piece};

    /// A dynamic VHD of `size` bytes with 4 KiB of 0xAB at each of `data`.
    fn make(dir: &Path, size: u64, data: &[u64]) -> std::path::PathBuf {
        make_with(dir, "", size, data)
    }

    /// [`make`] with creation options (`block_size=4K`).
    pub(in crate::formats::vhd) fn make_with(
        dir: &Path,
        options: &str,
        size: u64,
        data: &[u64],
    ) -> std::path::PathBuf {
        let path = dir.join("t.vhd");
        let mut staging = Staging::new();
        let format = super::super::FORMAT;
        let options = if options.is_empty() {
            FormatOptions::empty(format)
        } else {
            FormatOptions::parse(format, super::super::CREATE_OPTIONS, options).unwrap()
        };
        let spec = CreateSpec::new(size, options);
        let mut w =
            super::super::create_writer(Output::new_files(&mut staging, path.clone()), &spec)
                .unwrap();
        let bytes = vec![0xABu8; 4096];
        let mut pos = 0;
        for &at in data {
            if at > pos {
                w.write(pos, Piece::Zero(at - pos)).unwrap();
            }
            w.write(
                at,
                Piece::Data {
                    bytes: &bytes,
                    encoded: None,
                },
            )
            .unwrap();
            pos = at + 4096;
        }
        w.write(pos, Piece::Zero(size - pos)).unwrap();
        w.finish().unwrap();
        staging.commit().unwrap();
        path
    }

    #[test]
    fn a_sparse_2040_gib_disk_maps_in_a_handful_of_calls() {
        let dir = tempfile::tempdir().unwrap();
        let size = 2040u64 << 30;
        let path = make(dir.path(), size, &[0, 1 << 40, size - 4096]);
        let gate = crate::gate::Gate::confined();
        let ctx = OpenContext {
            gate: &gate,
            provenance: crate::format::Provenance::User,
            salvage: crate::format::Salvage::Refuse,
            snapshot: None,
            data_files: crate::image::DataFilePolicy::Require,
        };
        let layer = VhdLayer::open(Arc::new(HostFile::open(&path).unwrap()), &ctx).unwrap();
        let mut pos = 0;
        let mut runs = Vec::new();
        while pos < size {
            let m = layer.map(pos, size - pos).unwrap();
            runs.push((m.start, m.length, m.allocation));
            pos = m.end();
        }
        use Allocation::*;
        assert_eq!(
            runs,
            vec![
                (0, 4096, Data),
                (4096, (1 << 40) - 4096, Zero),
                (1 << 40, 4096, Data),
                ((1 << 40) + 4096, size - 4096 - (1 << 40) - 4096, Zero),
                (size - 4096, 4096, Data),
            ]
        );
        let mut buf = vec![0u8; 4096];
        layer.read_data(1 << 40, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0xAB));
    }

    fn context(gate: &crate::gate::Gate) -> OpenContext<'_> {
        OpenContext {
            gate,
            provenance: crate::format::Provenance::User,
            salvage: crate::format::Salvage::Refuse,
            snapshot: None,
            data_files: crate::image::DataFilePolicy::Require,
        }
    }

    fn open_bytes(bytes: Vec<u8>) -> Result<VhdLayer> {
        let gate = crate::gate::Gate::confined();
        VhdLayer::open(
            Arc::new(crate::storage::Memory::new("m.vhd", bytes)),
            &context(&gate),
        )
    }

    /// The table offset of the VHD in `bytes`.
    fn table_offset(bytes: &[u8]) -> usize {
        DynamicHeader::parse(bytes[512..1536].try_into().unwrap())
            .unwrap()
            .table_offset as usize
    }

    #[test]
    fn a_bat_that_is_a_hole_of_a_sparse_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // 64 GiB in 2 MiB blocks: 32768 entries, a 128 KiB table.
        let good = make(dir.path(), 64 << 30, &[0]);
        let bytes = std::fs::read(&good).unwrap();
        let table = table_offset(&bytes);
        let table_end = table + 32768 * 4;
        // The same file with the table left out: a hole where it was.
        let path = dir.path().join("holed.vhd");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(bytes.len() as u64).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&bytes[..table], 0).unwrap();
        f.write_all_at(&bytes[table_end..], table_end as u64)
            .unwrap();
        drop(f);
        let file = HostFile::open(&path).unwrap();
        let hole = file.next_hole(table as u64).unwrap();
        let gate = crate::gate::Gate::confined();
        let err = VhdLayer::open(Arc::new(file), &context(&gate)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("holed.vhd"), "{text}");
        if hole < table_end as u64 {
            assert_eq!(err.offset(), Some(hole), "{text}");
            assert!(
                text.contains("block allocation table is missing") && text.contains("hole"),
                "{text}"
            );
        } else {
            // A file system that does not report holes: the zeros are refused as entries.
            assert!(text.contains("overlaps the footer copy"), "{text}");
        }
    }

    #[test]
    fn bat_entries_on_the_metadata_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(make(dir.path(), 8 << 20, &[0, 6 << 20])).unwrap();
        let table = table_offset(&good);
        open_bytes(good.clone()).unwrap();
        for (sector, what) in [
            (0u32, "footer copy"),
            (1, "dynamic disk header"),
            ((table / 512) as u32, "block allocation table"),
        ] {
            let mut bytes = good.clone();
            bytes[table + 4..table + 8].copy_from_slice(&sector.to_be_bytes());
            let err = open_bytes(bytes).unwrap_err();
            assert_eq!(err.offset(), Some(table as u64 + 4), "{err}");
            assert!(
                err.to_string().starts_with("m.vhd: BAT entry 1 (block at ")
                    && err.to_string().contains(&format!("overlaps the {what}")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_bitmap_cache_is_bounded_in_bytes() {
        let mut cache = BitmapCache::default();
        let partial = SectorBitmap::Partial(Arc::from(vec![0x0Fu8; 64 << 10]));
        for index in 0..10_000 {
            cache.insert(index, partial.clone());
            assert!(cache.bytes <= BITMAP_CACHE_BYTES);
            assert!(cache.bitmaps.len() * (64 << 10) <= BITMAP_CACHE_BYTES);
        }
        assert!(cache.get(9_999).is_some());
        // Replacing an entry does not count it twice.
        let before = cache.bytes;
        cache.insert(9_999, SectorBitmap::Full);
        assert_eq!(cache.bytes, before - (64 << 10));
        // Small entries: many fit, still bounded.
        let mut cache = BitmapCache::default();
        for index in 0..1_000_000 {
            cache.insert(index, SectorBitmap::Full);
        }
        assert!(cache.bytes <= BITMAP_CACHE_BYTES);
        assert!(cache.bitmaps.len() >= 65536);
        // One bitmap larger than the whole budget is not kept.
        let mut cache = BitmapCache::default();
        cache.insert(
            0,
            SectorBitmap::Partial(Arc::from(vec![1u8; BITMAP_CACHE_BYTES])),
        );
        assert!(cache.bitmaps.is_empty() && cache.bytes == 0);
    }

    /// A small PRNG (xorshift64*), so the fuzz-style test is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Fuzz-style regression: a small dynamic VHD with its footer, header, locators, BAT and
    /// bitmaps mutated (checksums fixed up, so the mutations reach past them), opened, mapped
    /// and read; every 16th also checked. Nothing may panic, a map must cover what it says,
    /// the table is no larger than the file and the bitmap cache stays in its budget.
    #[test]
    fn mutated_vhds_fail_cleanly_in_bounded_memory() {
        use super::super::footer::checksum;
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB in 4 KiB blocks: 16 entries, blocks 0, 5 and 15 stored.
        let base = std::fs::read(make_with(
            dir.path(),
            "block_size=4K",
            64 << 10,
            &[0, 5 << 12, 15 << 12],
        ))
        .unwrap();
        let table = table_offset(&base);
        let first_block = (table + 512).div_ceil(512) * 512;
        let gate = crate::gate::Gate::confined();
        let check_path = dir.path().join("c.vhd");
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut opened = 0;
        for round in 0..3000 {
            let mut b = base.clone();
            let n = b.len();
            let put32 = |b: &mut Vec<u8>, at: usize, v: u32| {
                b[at..at + 4].copy_from_slice(&v.to_be_bytes())
            };
            let put64 = |b: &mut Vec<u8>, at: usize, v: u64| {
                b[at..at + 8].copy_from_slice(&v.to_be_bytes())
            };
            for _ in 0..1 + rng.below(4) {
                let big = 1u64 << rng.below(64);
                let v = match rng.below(4) {
                    0 => rng.next(),
                    1 => big,
                    2 => big.wrapping_sub(1),
                    _ => rng.below(1 << 16),
                };
                match rng.below(12) {
                    // Footer: disk type, size, header offset.
                    0 => put32(&mut b, 60, [2, 3, 4, v as u32][rng.below(4) as usize]),
                    1 => put64(&mut b, 48, v),
                    2 => put64(&mut b, 16, [512, v][rng.below(2) as usize]),
                    // Header: table offset, entries, block size, parent name.
                    3 => put64(&mut b, 512 + 16, v),
                    4 => put32(&mut b, 512 + 28, v as u32),
                    5 => put32(&mut b, 512 + 32, 1u32 << rng.below(32)),
                    6 => b[512 + 64 + rng.below(512) as usize] = v as u8,
                    // A locator: code, space, length, offset.
                    7 => {
                        let at = 512 + 576 + 24 * rng.below(8) as usize;
                        let codes = [*b"W2ku", *b"W2ru", *b"MacX", *b"Wi2k", *b"Mac ", [0; 4]];
                        b[at..at + 4].copy_from_slice(&codes[rng.below(6) as usize]);
                        put32(&mut b, at + 4, rng.next() as u32);
                        put32(&mut b, at + 8, v as u32);
                        put64(&mut b, at + 16, [1536, v][rng.below(2) as usize]);
                    }
                    // BAT entries: anything, unused, zero, a real block, one near the end.
                    8 | 9 => {
                        let at = table + 4 * rng.below(16) as usize;
                        let sector = [
                            v as u32,
                            bat::UNUSED,
                            0,
                            (first_block / 512) as u32,
                            ((n as u64 - 4096) / 512) as u32,
                        ][rng.below(5) as usize];
                        put32(&mut b, at, sector);
                    }
                    // Bitmap bits, and any byte at all.
                    10 => b[first_block + rng.below(512) as usize] = v as u8,
                    _ => {
                        let at = rng.below(n as u64) as usize;
                        b[at] = v as u8;
                    }
                }
            }
            if rng.below(10) != 0 {
                let sum = checksum(&b[512..1536], 36..40);
                put32(&mut b, 512 + 36, sum);
                let sum = checksum(&b[..512], 64..68);
                put32(&mut b, 64, sum);
                let footer: Vec<u8> = b[..512].to_vec();
                b[n - 512..].copy_from_slice(&footer);
            }
            if round % 16 == 0 {
                std::fs::write(&check_path, &b).unwrap();
                let _ = super::super::check(&check_path, None, &gate);
            }
            let layer = match VhdLayer::open(
                Arc::new(crate::storage::Memory::new("f.vhd", b)),
                &context(&gate),
            ) {
                Ok(l) => l,
                Err(e) => {
                    assert!(e.to_string().starts_with("f.vhd: "), "{e}");
                    continue;
                }
            };
            opened += 1;
            let _ = layer.details();
            let size = layer.virtual_size();
            let mut pos = 0;
            let mut buf = vec![0u8; 64 << 10];
            for _ in 0..512 {
                if pos >= size {
                    break;
                }
                let Ok(m) = layer.map(pos, size - pos) else {
                    break;
                };
                assert!(
                    m.start == pos && m.length > 0 && m.length <= size - pos,
                    "round {round}: {m:?} at {pos} of {size}"
                );
                if m.allocation == Allocation::Data {
                    let n = m.length.min(buf.len() as u64) as usize;
                    let _ = layer.read_data(pos, &mut buf[..n]);
                }
                pos = m.end();
            }
            if let Body::Sparse(s) = &layer.body {
                // Memory follows the bytes present: the table is no larger than the file.
                assert!(s.bat.len() as u64 * 4 <= s.file.len());
                assert!(s.lock().bytes <= BITMAP_CACHE_BYTES);
            }
        }
        // The mutations leave enough files readable for the walk to be exercised.
        assert!(opened > 300, "only {opened} of 3000 opened");
    }
}
