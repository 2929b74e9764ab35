//! Writing into an existing VMDK in place ([`open_mut`]): the target of `commit` and the top
//! of a safe `rebase`.
//!
//! Supported: hosted sparse extents that are not compressed (monolithicSparse,
//! twoGbMaxExtentSparse and their delta disks), flat extents (monolithicFlat,
//! twoGbMaxExtentFlat, vmfs) and ZERO extents (zeros only). Refused, with the reason: a
//! streamOptimized or otherwise compressed extent (grains cannot be rewritten in place; qemu
//! refuses too), COWD (vmfsSparse) and SESPARSE extents, raw device mappings, and extents the
//! descriptor marks read-only.
//!
//! Crash order for a new grain: the grain is written past the end of the file (where nothing
//! points), the file is flushed, then the redundant grain table entry is written, then the
//! primary one (the one every reader uses) last, so a reader sees the old or the new grain. A
//! grain table that does not exist yet (grain directory entry 0) is written zeroed past the end,
//! flushed, and then linked from the redundant directory, then the primary one. A grain that
//! already has storage is overwritten where it is. A crash can leave an unreferenced grain at
//! the end of the file, which costs space but reads nothing.
//!
//! `Clear::Deallocate` of a whole grain sets its entry to 0: the grain's bytes stay in the file
//! used by no table (a sparse VMDK has no free list), which `check` reports as a leak.
//!
//! As qemu and VMware do, the first change after opening gives the disk a new content id
//! (CID), so that a delta disk made from the old content no longer opens against it.

use super::descriptor::{Access, ExtentKind};
use super::descriptor_io::{Home, StoredDescriptor, new_cid};
use super::sparse_header::{self, SparseHeader};
use crate::edit::{Clear, EditContext, ImageMut, read_below_top};
use crate::error::{Error, Result};
use crate::gate::{Lookup, Role};
use crate::host_file::HostFile;
use crate::image::{BackingPolicy, Image, OpenOptions};
use crate::storage::{Storage, StorageExt};
use std::path::{Path, PathBuf};

/// The largest grain directory held in memory (64 MiB: a 512 TiB extent with VMware's grain
/// tables); a larger one is refused rather than allocated.
const MAX_DIRECTORY_BYTES: u64 = 64 << 20;
/// Bytes of zeros written at a time when a flat range is cleared.
const ZERO_CHUNK: u64 = 1 << 20;

/// A hosted sparse extent opened for writing.
struct Hosted {
    file: HostFile,
    header: SparseHeader,
    /// Primary grain directory (sector numbers of grain tables; 0: none).
    gd: Vec<u32>,
    /// Redundant grain directory, when the extent keeps one.
    rgd: Option<Vec<u32>>,
    /// The last primary grain table read: (index, entries).
    table: Option<(u64, Vec<u32>)>,
    /// The sector new grains and tables are written at (the end of the file).
    end_sector: u64,
}

/// What a grain table entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Unallocated,
    Zeroed,
    At(u64),
}

impl Hosted {
    fn open(file: HostFile) -> Result<Hosted> {
        let path = file.path().to_path_buf();
        let head = file.read_vec(0, 512.min(file.len()), "header")?;
        let header = SparseHeader::parse(&head).map_err(|e| e.with_path(&path))?;
        if header.compressed || header.markers {
            return Err(Error::unsupported(
                "a streamOptimized (compressed) VMDK cannot be written in place: its grains are compressed and packed; convert it to monolithicSparse first",
            )
            .with_path(&path));
        }
        let gd_sector = match header.directory_at() {
            sparse_header::DirectoryAt::Sector(s) => s,
            _ => {
                return Err(Error::corrupt("sparse extent has no grain directory").with_path(&path));
            }
        };
        let entries = header.gd_entries();
        if entries * 4 > MAX_DIRECTORY_BYTES {
            return Err(Error::unsupported(format!(
                "grain directory of {entries} entries is larger than the {MAX_DIRECTORY_BYTES} bytes diskferry holds to write in place"
            ))
            .with_path(&path));
        }
        let read_dir = |sector: u64, what: &str| -> Result<Vec<u32>> {
            let raw = file
                .read_vec(sector * 512, entries * 4, what)
                .map_err(|e| e.with_path(&path))?;
            Ok(raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect())
        };
        let gd = read_dir(gd_sector, "grain directory")?;
        let rgd = if header.redundant() {
            Some(read_dir(header.rgd_offset, "redundant grain directory")?)
        } else {
            None
        };
        let end_sector = file.len().div_ceil(512).max(header.first_data_sector());
        Ok(Hosted {
            file,
            header,
            gd,
            rgd,
            table: None,
            end_sector,
        })
    }

    fn grain_bytes(&self) -> u64 {
        self.header.grain_bytes()
    }

    fn per_gt(&self) -> u64 {
        u64::from(self.header.gtes_per_gt)
    }

    fn gt_sectors(&self) -> u64 {
        (self.per_gt() * 4).div_ceil(512)
    }

    fn path(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }

    /// The primary grain table `gt` (all zeros when the directory has none).
    fn table(&mut self, gt: u64) -> Result<&mut Vec<u32>> {
        if self.table.as_ref().is_none_or(|(i, _)| *i != gt) {
            let sector = u64::from(self.gd[gt as usize]);
            let entries = if sector == 0 {
                vec![0u32; self.per_gt() as usize]
            } else {
                let raw = self
                    .file
                    .read_vec(sector * 512, self.per_gt() * 4, "grain table")
                    .map_err(|e| e.with_path(self.path()))?;
                raw.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect()
            };
            self.table = Some((gt, entries));
        }
        Ok(&mut self.table.as_mut().expect("just loaded").1)
    }

    fn entry(&mut self, grain: u64) -> Result<Entry> {
        let per = self.per_gt();
        let zeroed = self.header.zeroed_grain();
        let grain_bytes = self.grain_bytes();
        let len = self.file.len();
        let raw = self.table(grain / per)?[(grain % per) as usize];
        Ok(match raw {
            0 => Entry::Unallocated,
            1 if zeroed => Entry::Zeroed,
            s => {
                let at = u64::from(s) * 512;
                if at < 512 || at >= len {
                    return Err(Error::corrupt(format!(
                        "grain {grain} is stored at byte {at}, outside the file ({len} bytes; grain {grain_bytes} bytes)"
                    ))
                    .with_path(self.path()));
                }
                Entry::At(at)
            }
        })
    }

    /// Sectors for `count` new grains or tables at the end of the file.
    fn allocate(&mut self, sectors: u64) -> Result<u64> {
        let at = self.end_sector;
        if at + sectors > u64::from(u32::MAX) {
            return Err(Error::unsupported(
                "the sparse extent is full: its grain table entries are 32-bit sector numbers (2 TiB)",
            )
            .with_path(self.path()));
        }
        self.end_sector += sectors;
        Ok(at)
    }

    /// Makes sure grain table `gt` exists (a directory entry of 0 has none): a zeroed table
    /// (and its redundant copy) past the end, flushed, then linked.
    fn ensure_table(&mut self, gt: u64) -> Result<()> {
        if self.gd[gt as usize] != 0 {
            return Ok(());
        }
        let gt_sectors = self.gt_sectors();
        let zeros = vec![0u8; (gt_sectors * 512) as usize];
        let primary = self.allocate(gt_sectors)?;
        self.file.write_all_at(&zeros, primary * 512)?;
        let redundant = match &self.rgd {
            Some(_) => {
                let at = self.allocate(gt_sectors)?;
                self.file.write_all_at(&zeros, at * 512)?;
                Some(at)
            }
            None => None,
        };
        self.file.sync()?;
        if let (Some(at), Some(rgd)) = (redundant, self.rgd.as_mut()) {
            rgd[gt as usize] = at as u32;
            let offset = self.header.rgd_offset * 512 + gt * 4;
            self.file.write_all_at(&(at as u32).to_le_bytes(), offset)?;
        }
        self.gd[gt as usize] = primary as u32;
        let offset = self.header.gd_offset * 512 + gt * 4;
        self.file
            .write_all_at(&(primary as u32).to_le_bytes(), offset)?;
        Ok(())
    }

    /// Sets the entries of grains `first..first + values.len()` (all in one grain table):
    /// the redundant table first, the primary one last.
    fn set_entries(&mut self, first: u64, values: &[u32]) -> Result<()> {
        let per = self.per_gt();
        let gt = first / per;
        debug_assert_eq!((first + values.len() as u64 - 1) / per, gt);
        self.ensure_table(gt)?;
        let within = first % per;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        if let Some(rgd) = &self.rgd {
            let sector = u64::from(rgd[gt as usize]);
            if sector != 0 {
                self.file.write_all_at(&bytes, sector * 512 + within * 4)?;
            }
        }
        let sector = u64::from(self.gd[gt as usize]);
        self.file.write_all_at(&bytes, sector * 512 + within * 4)?;
        let table = self.table(gt)?;
        table[within as usize..within as usize + values.len()].copy_from_slice(values);
        Ok(())
    }

    /// Sets grain entries given as (grain, value) pairs in ascending grain order, one write
    /// per run of consecutive grains in one table.
    fn set_many(&mut self, pairs: &[(u64, u32)]) -> Result<()> {
        let per = self.per_gt();
        let mut i = 0;
        while i < pairs.len() {
            let mut j = i + 1;
            while j < pairs.len()
                && pairs[j].0 == pairs[j - 1].0 + 1
                && pairs[j].0 / per == pairs[i].0 / per
            {
                j += 1;
            }
            let values: Vec<u32> = pairs[i..j].iter().map(|p| p.1).collect();
            self.set_entries(pairs[i].0, &values)?;
            i = j;
        }
        Ok(())
    }
}

/// How one extent of the disk is written.
enum Target {
    /// Reads as zeros; can hold nothing else.
    Zero,
    /// Raw bytes in `files[file]` from byte `start`.
    Flat { file: usize, start: u64 },
    /// A hosted sparse extent.
    Sparse(Box<Hosted>),
}

struct MutExtent {
    start: u64,
    len: u64,
    target: Target,
}

/// A VMDK opened for writing in place.
pub struct VmdkMut {
    stored: StoredDescriptor,
    cid_changed: bool,
    extents: Vec<MutExtent>,
    flat_files: Vec<HostFile>,
    size: u64,
    unit: u64,
    /// The image with its backing chain (delta disks): the layers below the top fill the
    /// rest of a partially written grain.
    chain: Option<Image>,
}

/// Opens the VMDK at `path` for writing in place; extents and the parent are opened through
/// `ctx.gate`.
pub fn open_mut(path: &Path, ctx: &EditContext<'_>) -> Result<VmdkMut> {
    let stored = StoredDescriptor::load(path)?;
    let d = &stored.descriptor;
    if d.create_type.eq_ignore_ascii_case("streamOptimized") {
        return Err(Error::unsupported(
            "a streamOptimized VMDK cannot be written in place (its grains are compressed and packed; qemu refuses too); convert it to monolithicSparse first",
        )
        .with_path(path));
    }
    let mut extents = Vec::new();
    let mut flat_files: Vec<HostFile> = Vec::new();
    let mut flat_names: Vec<PathBuf> = Vec::new();
    let mut start = 0u64;
    let mut unit = 512;
    if let Home::Embedded { .. } = stored.home {
        // The file is the disk, whatever its extent lines say (as the reader opens it).
        let hosted = Hosted::open(HostFile::open_rw(path)?)?;
        unit = hosted.grain_bytes();
        start = hosted.header.capacity * 512;
        extents.push(MutExtent {
            start: 0,
            len: start,
            target: Target::Sparse(Box::new(hosted)),
        });
    } else {
        if d.extents.is_empty() {
            return Err(Error::corrupt("descriptor lists no extents").with_path(path));
        }
        for line in &d.extents {
            let len = line.sectors * 512;
            if line.access != Access::ReadWrite {
                return Err(Error::unsupported(format!(
                    "extent on descriptor line {} is {}: the disk cannot be written",
                    line.line,
                    line.access.word()
                ))
                .with_path(path));
            }
            let target = match (line.kind, &line.file) {
                (ExtentKind::Zero, _) => Target::Zero,
                (kind, Some(name)) => {
                    let resolved = match ctx.gate.open(path, &name.replace('\\', "/"), Role::Extent)
                    {
                        Ok(Lookup::Opened(f)) => f.name().to_path_buf(),
                        Ok(Lookup::Missing(p)) => {
                            return Err(Error::invalid(format!(
                                "extent file '{name}' (descriptor line {}) cannot be opened: No such file or directory (looked for {})",
                                line.line,
                                p.display()
                            ))
                            .with_path(path));
                        }
                        Err(e) => return Err(e.context(format!("descriptor line {}", line.line))),
                    };
                    match kind {
                        ExtentKind::Flat | ExtentKind::Vmfs => {
                            let index = match flat_names.iter().position(|p| *p == resolved) {
                                Some(i) => i,
                                None => {
                                    flat_files.push(HostFile::open_rw(&resolved)?);
                                    flat_names.push(resolved);
                                    flat_files.len() - 1
                                }
                            };
                            Target::Flat {
                                file: index,
                                start: line.offset * 512,
                            }
                        }
                        ExtentKind::Sparse => {
                            let hosted = Hosted::open(HostFile::open_rw(&resolved)?)
                                .map_err(|e| e.context(format!("extent '{name}'")))?;
                            if hosted.header.capacity * 512 < len {
                                return Err(Error::corrupt(format!(
                                    "extent '{name}' holds {} sectors, fewer than the {} its descriptor line {} gives it",
                                    hosted.header.capacity, line.sectors, line.line
                                ))
                                .with_path(path));
                            }
                            unit = unit.max(hosted.grain_bytes());
                            Target::Sparse(Box::new(hosted))
                        }
                        other => {
                            return Err(Error::unsupported(format!(
                                "{} extents (descriptor line {}) cannot be written in place by diskferry yet; convert the disk to monolithicSparse",
                                other.word(),
                                line.line
                            ))
                            .with_path(path));
                        }
                    }
                }
                (kind, None) => {
                    return Err(Error::corrupt(format!(
                        "{} extent names no file (descriptor line {})",
                        kind.word(),
                        line.line
                    ))
                    .with_path(path));
                }
            };
            if len > 0 {
                extents.push(MutExtent { start, len, target });
            }
            start += len;
        }
    }
    let chain = if stored.descriptor.parent_hint.is_some() {
        let options = OpenOptions {
            format: Some(super::FORMAT),
            backing: BackingPolicy::Follow,
            gate: *ctx.gate,
            ..OpenOptions::default()
        };
        Some(Image::open(path, &options)?)
    } else {
        None
    };
    Ok(VmdkMut {
        stored,
        cid_changed: false,
        extents,
        flat_files,
        size: start,
        unit,
        chain,
    })
}

impl VmdkMut {
    /// Gives the disk a new CID before its first change (see the module doc).
    fn touch(&mut self) -> Result<()> {
        if self.cid_changed {
            return Ok(());
        }
        let mut d = self.stored.descriptor.clone();
        d.cid = new_cid(d.cid);
        self.stored.store(d)?;
        self.cid_changed = true;
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(Error::invalid(format!(
                "write of {len} bytes at {offset} runs past the end of the disk ({} bytes)",
                self.size
            ))
            .with_path(&self.stored.path));
        }
        Ok(())
    }

    /// Applies `f` to each extent piece of `[offset, offset + len)`: (extent index, offset in
    /// the extent, offset in the request, length).
    fn pieces(&self, offset: u64, len: u64) -> Vec<(usize, u64, u64, u64)> {
        let mut out = Vec::new();
        for (i, e) in self.extents.iter().enumerate() {
            let s = offset.max(e.start);
            let end = (offset + len).min(e.start + e.len);
            if s < end {
                out.push((i, s - e.start, s - offset, end - s));
            }
        }
        out
    }

    /// Fills `buf` with what the parent chain holds at virtual `offset` (zeros without one).
    fn below(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &self.chain {
            Some(image) => read_below_top(image, offset, buf),
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    fn write_sparse(&mut self, index: usize, offset: u64, data: &[u8]) -> Result<()> {
        let base = self.extents[index].start;
        let extent_len = self.extents[index].len;
        let Target::Sparse(hosted) = &mut self.extents[index].target else {
            unreachable!("a sparse extent")
        };
        let grain = hosted.grain_bytes();
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut pos = offset;
        let end = offset + data.len() as u64;
        while pos < end {
            let g = pos / grain;
            let g_start = g * grain;
            let within = pos - g_start;
            let n = (grain - within).min(end - pos);
            let src = &data[(pos - offset) as usize..(pos - offset + n) as usize];
            match hosted.entry(g)? {
                Entry::At(host) => hosted.file.write_all_at(src, host + within)?,
                state => pending.push((g, {
                    let mut buf = vec![0u8; grain as usize];
                    if n < grain && state == Entry::Unallocated {
                        let valid = grain.min(extent_len - g_start) as usize;
                        pending_fill(&self.chain, base + g_start, &mut buf[..valid])?;
                    }
                    buf[within as usize..(within + n) as usize].copy_from_slice(src);
                    buf
                })),
            }
            pos += n;
        }
        if pending.is_empty() {
            return Ok(());
        }
        let grain_sectors = grain / 512;
        let mut entries = Vec::with_capacity(pending.len());
        for (g, buf) in &pending {
            let at = hosted.allocate(grain_sectors)?;
            hosted.file.write_all_at(buf, at * 512)?;
            entries.push((*g, at as u32));
        }
        hosted.file.sync()?;
        hosted.set_many(&entries)
    }

    fn clear_sparse(&mut self, index: usize, offset: u64, len: u64, how: Clear) -> Result<()> {
        let base = self.extents[index].start;
        let has_parent = self.chain.is_some();
        let (grain, zeroed_flag) = match &self.extents[index].target {
            Target::Sparse(h) => (h.grain_bytes(), h.header.zeroed_grain()),
            _ => unreachable!("a sparse extent"),
        };
        let end = offset + len;
        let mut pos = offset;
        let mut entries: Vec<(u64, u32)> = Vec::new();
        while pos < end {
            let g = pos / grain;
            let g_start = g * grain;
            let n = (g_start + grain).min(end) - pos;
            let whole = pos == g_start && n == grain;
            let state = match &mut self.extents[index].target {
                Target::Sparse(h) => h.entry(g)?,
                _ => unreachable!("a sparse extent"),
            };
            // What the range must read as afterwards, and whether a table entry does it.
            let wanted_entry = match (how, whole) {
                (Clear::Zero, true) if zeroed_flag => Some(1),
                (Clear::Zero, true) if !has_parent && state == Entry::Unallocated => None,
                (Clear::Deallocate, true) => Some(0),
                _ => None,
            };
            match wanted_entry {
                Some(v) => {
                    let current = match state {
                        Entry::Unallocated => 0,
                        Entry::Zeroed => 1,
                        Entry::At(_) => 2,
                    };
                    if current != v {
                        entries.push((g, v));
                    }
                }
                None => {
                    let bytes = match how {
                        Clear::Zero if state == Entry::Zeroed => None,
                        Clear::Zero if state == Entry::Unallocated && !has_parent => None,
                        Clear::Zero => Some(vec![0u8; n as usize]),
                        Clear::Deallocate if state == Entry::Unallocated => None,
                        Clear::Deallocate if state == Entry::Zeroed && !has_parent => None,
                        Clear::Deallocate => {
                            let mut b = vec![0u8; n as usize];
                            self.below(base + pos, &mut b)?;
                            Some(b)
                        }
                    };
                    if let Some(b) = bytes {
                        self.write_sparse(index, pos, &b)?;
                    }
                }
            }
            pos += n;
        }
        if let Target::Sparse(h) = &mut self.extents[index].target {
            h.set_many(&entries)?;
        }
        Ok(())
    }

    fn zero_flat(&mut self, file: usize, at: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZERO_CHUNK);
            self.flat_files[file].write_all_at(&zeros[..n as usize], at + done)?;
            done += n;
        }
        Ok(())
    }
}

/// Fills a new grain's buffer from the parent chain (zeros without one).
fn pending_fill(chain: &Option<Image>, offset: u64, buf: &mut [u8]) -> Result<()> {
    match chain {
        Some(image) => read_below_top(image, offset, buf),
        None => Ok(()),
    }
}

impl ImageMut for VmdkMut {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn allocation_unit(&self) -> u64 {
        self.unit
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        self.touch()?;
        for (i, inside, from, n) in self.pieces(offset, data.len() as u64) {
            let src = &data[from as usize..(from + n) as usize];
            match &self.extents[i].target {
                Target::Zero => {
                    if src.iter().any(|&b| b != 0) {
                        return Err(Error::invalid(format!(
                            "data at {} falls in a ZERO extent, which holds no data",
                            offset + from
                        ))
                        .with_path(&self.stored.path));
                    }
                }
                Target::Flat { file, start } => {
                    let (file, start) = (*file, *start);
                    self.flat_files[file].write_all_at(src, start + inside)?;
                }
                Target::Sparse(_) => self.write_sparse(i, inside, src)?,
            }
        }
        Ok(())
    }

    fn clear(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.touch()?;
        for (i, inside, _, n) in self.pieces(offset, len) {
            match &self.extents[i].target {
                Target::Zero => {}
                Target::Flat { file, start } => {
                    let (file, start) = (*file, *start);
                    self.zero_flat(file, start + inside, n)?;
                }
                Target::Sparse(_) => self.clear_sparse(i, inside, n, how)?,
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for f in &mut self.flat_files {
            f.sync()?;
        }
        for e in &mut self.extents {
            if let Target::Sparse(h) = &mut e.target {
                h.file.sync()?;
            }
        }
        Ok(())
    }
}
