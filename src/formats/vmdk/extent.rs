//! Extents: the pieces a descriptor strings together into one virtual disk. Flat extents are
//! bytes in a file, ZERO extents read as zeros, and sparse extents (hosted KDMV, COWD,
//! SESPARSE) find each grain through their grain tables.

use super::cowd::{self, CowdHeader};
use super::descriptor::ExtentKind;
use super::grain::{self, MARKER_EOS, MARKER_FOOTER, Marker};
use super::grain_table::{EntryFormat, Geometry, GrainTables, UNALLOCATED, ZEROED};
use super::sesparse::{self, SeSparseHeader};
use super::sparse_header::{self, GD_AT_END, SparseHeader};
use crate::error::{Error, Result};
use crate::image::Allocation;
use crate::storage::{Storage, StorageExt};
use std::sync::{Arc, Mutex};

/// The header of a sparse extent, by kind.
#[derive(Debug, Clone, Copy)]
pub enum SparseKind {
    /// Hosted sparse (KDMV), possibly stream-optimized.
    Hosted(SparseHeader),
    /// ESXi sparse (COWD).
    Cowd(CowdHeader),
    /// ESXi space-efficient sparse.
    SeSparse(SeSparseHeader),
}

/// A sparse extent: a file with grain tables.
pub struct SparseExtent {
    /// The extent's file.
    pub file: Arc<dyn Storage>,
    /// Its header.
    pub kind: SparseKind,
    /// Its grain directory and tables.
    pub tables: GrainTables,
    /// Bytes per grain.
    pub grain_bytes: u64,
    /// The extent's capacity in bytes (from its header).
    pub capacity: u64,
    /// How grains are stored.
    pub coding: GrainCoding,
    /// Problems found while opening that did not stop it.
    pub warnings: Vec<String>,
    /// The last grain inflated for a partial read (reads of a few sectors at a time would
    /// otherwise inflate the same grain again and again).
    last_grain: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

/// How a sparse extent stores its grains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrainCoding {
    /// Plain bytes at the offset a grain table entry gives.
    Plain,
    /// Deflate-compressed, each grain prefixed by its LBA and size.
    Compressed,
    /// Compressed, and every grain and table also announced by a marker (stream-optimized).
    CompressedWithMarkers,
}

impl GrainCoding {
    /// The coding a hosted sparse header's flags describe.
    pub fn of(compressed: bool, markers: bool) -> GrainCoding {
        match (compressed, markers) {
            (false, _) => GrainCoding::Plain,
            (true, false) => GrainCoding::Compressed,
            (true, true) => GrainCoding::CompressedWithMarkers,
        }
    }

    /// Grains are compressed.
    pub fn compressed(self) -> bool {
        self != GrainCoding::Plain
    }

    /// Compressed grains start with a marker holding their LBA.
    pub fn markers(self) -> bool {
        self == GrainCoding::CompressedWithMarkers
    }
}

/// How one run of an extent is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentRun {
    /// Length in bytes.
    pub len: u64,
    /// Data, zero or unallocated.
    pub allocation: Allocation,
    /// Byte offset in the extent's file, for uncompressed data stored contiguously.
    pub host: Option<u64>,
    /// The run is stored compressed.
    pub compressed: bool,
}

/// How far past a stream-optimized file's end-of-data we look for the footer.
const FOOTER_FROM_END: u64 = 1024;

impl SparseExtent {
    /// Opens a sparse extent of any kind, recognised by its magic.
    pub fn open(file: Arc<dyn Storage>) -> Result<SparseExtent> {
        let mut head = vec![0u8; file.len().min(cowd::HEADER_BYTES as u64) as usize];
        file.read_exact_at(&mut head, 0)?;
        if head.starts_with(sparse_header::MAGIC) {
            let header = SparseHeader::parse(&head)?;
            Self::open_hosted(file, header)
        } else if head.starts_with(cowd::MAGIC) {
            Self::open_cowd(file, CowdHeader::parse(&head)?)
        } else if sesparse::has_magic(&head) {
            Self::open_sesparse(file, SeSparseHeader::parse(&head)?)
        } else {
            Err(Error::corrupt(
                "not a sparse extent (no KDMV, COWD or SESPARSE magic)",
            ))
        }
    }

    fn new(
        file: Arc<dyn Storage>,
        kind: SparseKind,
        tables: GrainTables,
        capacity_sectors: u64,
        coding: GrainCoding,
        warnings: Vec<String>,
    ) -> SparseExtent {
        SparseExtent {
            grain_bytes: tables.geometry().grain_bytes,
            file,
            kind,
            tables,
            capacity: capacity_sectors * 512,
            coding,
            warnings,
            last_grain: Mutex::new(None),
        }
    }

    /// Opens a hosted sparse extent whose header has been parsed.
    pub fn open_hosted(file: Arc<dyn Storage>, header: SparseHeader) -> Result<SparseExtent> {
        let mut warnings = Vec::new();
        let mut header = header;
        if header.gd_offset == GD_AT_END {
            match read_footer(&file, &header) {
                Ok(footer) => header = footer,
                Err(e) if header.markers => {
                    warnings.push(format!(
                        "stream-optimized footer unusable ({}); grain map rebuilt by scanning the markers",
                        e.message()
                    ));
                    return Self::open_by_scan(file, header, warnings);
                }
                Err(e) => return Err(e),
            }
        }
        let geometry = Geometry {
            grain_bytes: header.grain_bytes(),
            gtes_per_gt: u64::from(header.gtes_per_gt),
            grains: header.capacity.div_ceil(header.grain_sectors),
            format: EntryFormat::Hosted {
                zeroed_grain: header.zeroed_grain(),
            },
        };
        let entries = header.gd_entries();
        let load = |sector: u64| -> Result<GrainTables> {
            let offset = sector.checked_mul(512).ok_or_else(|| {
                Error::corrupt(format!("grain directory sector {sector} is out of range"))
            })?;
            GrainTables::load(&file, offset, entries, geometry)
        };
        let primary = if header.gd_offset == 0 {
            Err(Error::corrupt("the header has no grain directory (gdOffset is 0)").at_offset(56))
        } else {
            load(header.gd_offset)
        };
        let tables = match primary {
            Ok(t) => t,
            Err(e) if header.redundant() => match load(header.rgd_offset) {
                Ok(t) => {
                    warnings.push(format!(
                        "primary grain directory unusable ({}); reading the redundant copy",
                        e.message()
                    ));
                    t
                }
                Err(_) => return Err(e),
            },
            Err(e) if header.markers => {
                warnings.push(format!(
                    "grain directory unusable ({}); grain map rebuilt by scanning the markers",
                    e.message()
                ));
                return Self::open_by_scan(file, header, warnings);
            }
            Err(e) => return Err(e),
        };
        let coding = GrainCoding::of(header.compressed, header.markers);
        let capacity = header.capacity;
        Ok(Self::new(
            file,
            SparseKind::Hosted(header),
            tables,
            capacity,
            coding,
            warnings,
        ))
    }

    /// Rebuilds the grain map of a stream-optimized extent by walking its markers from the
    /// first grain to the end-of-stream marker (or the end of the file).
    fn open_by_scan(
        file: Arc<dyn Storage>,
        header: SparseHeader,
        warnings: Vec<String>,
    ) -> Result<SparseExtent> {
        let geometry = Geometry {
            grain_bytes: header.grain_bytes(),
            gtes_per_gt: u64::from(header.gtes_per_gt),
            grains: header.capacity.div_ceil(header.grain_sectors),
            format: EntryFormat::Hosted {
                zeroed_grain: false,
            },
        };
        let mut grains = Vec::new();
        for item in MarkerWalk::new(&file, &header) {
            let (offset, marker) = item?;
            if marker.size == 0 {
                continue;
            }
            let grain = marker.value / header.grain_sectors;
            if grain >= geometry.grains {
                return Err(Error::corrupt(format!(
                    "grain marker names sector {} past the disk's end ({} sectors)",
                    marker.value, header.capacity
                ))
                .at_offset(offset));
            }
            grains.push((grain, offset));
        }
        let tables = GrainTables::rebuilt(geometry, &grains);
        let capacity = header.capacity;
        Ok(Self::new(
            file,
            SparseKind::Hosted(header),
            tables,
            capacity,
            GrainCoding::CompressedWithMarkers,
            warnings,
        ))
    }

    fn open_cowd(file: Arc<dyn Storage>, header: CowdHeader) -> Result<SparseExtent> {
        let geometry = Geometry {
            grain_bytes: header.grain_sectors * 512,
            gtes_per_gt: u64::from(cowd::GTES_PER_GT),
            grains: header.capacity.div_ceil(header.grain_sectors),
            format: EntryFormat::Cowd,
        };
        let tables = GrainTables::load(&file, header.gd_offset * 512, header.gd_entries, geometry)?;
        Ok(Self::new(
            file,
            SparseKind::Cowd(header),
            tables,
            header.capacity,
            GrainCoding::Plain,
            Vec::new(),
        ))
    }

    fn open_sesparse(file: Arc<dyn Storage>, header: SeSparseHeader) -> Result<SparseExtent> {
        let mut volatile = [0u8; 512];
        file.read_exact_at(&mut volatile, header.volatile_offset.saturating_mul(512))?;
        SeSparseHeader::check_volatile(&volatile)
            .map_err(|e| e.at_offset(header.volatile_offset.saturating_mul(512)))?;
        let geometry = Geometry {
            grain_bytes: header.grain_sectors * 512,
            gtes_per_gt: header.gtes_per_gt(),
            grains: header.capacity.div_ceil(header.grain_sectors),
            format: EntryFormat::SeSparse {
                tables_offset: header.tables_offset * 512,
                grains_offset: header.grains_offset * 512,
            },
        };
        let entries = (header.gd_sectors.saturating_mul(512) / 8).min(geometry.tables());
        let tables = GrainTables::load(&file, header.gd_offset * 512, entries, geometry)?;
        Ok(Self::new(
            file,
            SparseKind::SeSparse(header),
            tables,
            header.capacity,
            GrainCoding::Plain,
            Vec::new(),
        ))
    }

    /// Grains are compressed.
    pub fn compressed(&self) -> bool {
        self.coding.compressed()
    }

    /// Compressed grains start with a marker holding their LBA.
    pub fn markers(&self) -> bool {
        self.coding.markers()
    }

    /// The header's unclean-shutdown flag.
    pub fn dirty(&self) -> bool {
        matches!(self.kind, SparseKind::Hosted(h) if h.dirty)
    }

    /// Bytes of grain `grain` that lie inside the capacity.
    fn grain_len(&self, grain: u64) -> u64 {
        self.grain_bytes
            .min(self.capacity.saturating_sub(grain * self.grain_bytes))
    }

    fn check_grain(&self, grain: u64, entry: u64) -> Result<()> {
        let need = if self.coding.compressed() {
            1
        } else {
            self.grain_len(grain)
        };
        if entry
            .checked_add(need)
            .is_none_or(|end| end > self.file.len())
        {
            return Err(Error::corrupt(format!(
                "grain table entry for grain {grain} points past the end of the file ({} bytes)",
                self.file.len()
            ))
            .at_offset(entry));
        }
        Ok(())
    }

    /// Describes the run at `offset` (inside the extent), at most `max_len` long.
    pub fn map(&self, offset: u64, max_len: u64) -> Result<ExtentRun> {
        if offset >= self.capacity {
            // A descriptor may give the extent more sectors than its header: the rest is empty.
            return Ok(ExtentRun {
                len: max_len,
                allocation: Allocation::Unallocated,
                host: None,
                compressed: false,
            });
        }
        let end = offset.saturating_add(max_len).min(self.capacity);
        let g = self.grain_bytes;
        let per_gt = self.tables.geometry().gtes_per_gt;
        let mut pos = offset;
        let mut first: Option<(Allocation, Option<u64>)> = None;
        while pos < end {
            let grain = pos / g;
            let gt = grain / per_gt;
            let table = self.tables.table(&self.file, gt)?;
            let in_grain = pos - grain * g;
            let (alloc, host, next) = match &table {
                None => {
                    // Skip every empty table up to the next one that may hold grains.
                    let next = self.tables.next_present(gt + 1).max(gt + 1);
                    (
                        Allocation::Unallocated,
                        None,
                        next.saturating_mul(per_gt).saturating_mul(g).min(end),
                    )
                }
                Some(t) => {
                    let entry = t
                        .get((grain % per_gt) as usize)
                        .copied()
                        .unwrap_or(UNALLOCATED);
                    let next = ((grain + 1) * g).min(end);
                    match entry {
                        UNALLOCATED => (Allocation::Unallocated, None, next),
                        ZEROED => (Allocation::Zero, None, next),
                        _ => {
                            self.check_grain(grain, entry)?;
                            let host = (!self.coding.compressed()).then_some(entry + in_grain);
                            (Allocation::Data, host, next)
                        }
                    }
                }
            };
            match first {
                None => first = Some((alloc, host)),
                Some((a, h)) => {
                    let contiguous = match (h, host) {
                        (Some(h), Some(now)) => h + (pos - offset) == now,
                        (None, None) => true,
                        _ => false,
                    };
                    if a != alloc || !contiguous {
                        break;
                    }
                }
            }
            pos = next;
        }
        let (allocation, host) = first.expect("the run covers at least one byte");
        let len = pos - offset;
        // The part past the capacity (if the loop reached it) is reported on the next call.
        Ok(ExtentRun {
            len,
            allocation,
            host,
            compressed: allocation == Allocation::Data && self.coding.compressed(),
        })
    }

    /// Reads `buf.len()` bytes at `offset` inside the extent.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let g = self.grain_bytes;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            if pos >= self.capacity {
                buf[done..].fill(0);
                return Ok(());
            }
            let grain = pos / g;
            let in_grain = pos - grain * g;
            let n = ((g - in_grain) as usize).min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            let entry = self.tables.lookup(&self.file, grain)?;
            match entry {
                UNALLOCATED | ZEROED => chunk.fill(0),
                _ => {
                    self.check_grain(grain, entry)?;
                    if self.coding.compressed() && n as u64 == g {
                        // A whole grain (the common case: sequential reads) inflates straight
                        // into the caller's buffer, which is exactly the one-grain bound.
                        let (_, got) = grain::read_compressed(
                            &self.file,
                            entry,
                            self.coding.markers(),
                            chunk,
                        )?;
                        if (got as u64) < self.grain_len(grain) {
                            return Err(Error::corrupt(format!(
                                "compressed grain {grain} inflates to {got} bytes, {} expected",
                                self.grain_len(grain)
                            ))
                            .at_offset(entry));
                        }
                        chunk[got..].fill(0);
                    } else if self.coding.compressed() {
                        let data = self.inflate(grain, entry)?;
                        chunk.copy_from_slice(&data[in_grain as usize..in_grain as usize + n]);
                    } else {
                        self.file.read_exact_at(chunk, entry + in_grain)?;
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    /// The grain whose marker is at `entry`, inflated (a whole grain, zero-padded).
    fn inflate(&self, grain: u64, entry: u64) -> Result<Arc<Vec<u8>>> {
        let cached = self.last_grain.lock().ok().and_then(|c| {
            c.as_ref()
                .filter(|(e, _)| *e == entry)
                .map(|(_, d)| Arc::clone(d))
        });
        if let Some(d) = cached {
            return Ok(d);
        }
        let mut data = vec![0u8; self.grain_bytes as usize];
        let (_, n) = grain::read_compressed(&self.file, entry, self.coding.markers(), &mut data)?;
        let need = self.grain_len(grain) as usize;
        if n < need {
            return Err(Error::corrupt(format!(
                "compressed grain {grain} inflates to {n} bytes, {need} expected"
            ))
            .at_offset(entry));
        }
        let data = Arc::new(data);
        if let Ok(mut c) = self.last_grain.lock() {
            *c = Some((entry, Arc::clone(&data)));
        }
        Ok(data)
    }
}

/// Reads and validates a stream-optimized footer: the header copy in the second-to-last sector,
/// after a footer marker (when the extent has markers).
fn read_footer(file: &dyn Storage, header: &SparseHeader) -> Result<SparseHeader> {
    let len = file.len();
    if len < FOOTER_FROM_END + 512 {
        return Err(Error::corrupt("file is too short to hold a footer"));
    }
    let at = len - FOOTER_FROM_END;
    if header.markers {
        let mut m = [0u8; 512];
        file.read_exact_at(&mut m, at - 512)?;
        let marker = Marker::parse(&m);
        if marker.size != 0 || marker.kind != MARKER_FOOTER {
            return Err(Error::corrupt("no footer marker before the footer").at_offset(at - 512));
        }
    }
    let mut b = [0u8; 512];
    file.read_exact_at(&mut b, at)?;
    let footer = SparseHeader::parse(&b)
        .map_err(|e| Error::corrupt(format!("footer: {}", e.message())).at_offset(at))?;
    if footer.gd_offset == GD_AT_END || footer.gd_offset == 0 {
        return Err(Error::corrupt("footer has no grain directory offset").at_offset(at + 56));
    }
    if footer.capacity != header.capacity || footer.grain_sectors != header.grain_sectors {
        return Err(Error::corrupt("footer does not match the header").at_offset(at));
    }
    Ok(footer)
}

/// Walks the markers of a stream-optimized extent from its first grain: yields (byte offset,
/// marker) for every marker, stops after the end-of-stream marker or at the end of the file.
pub struct MarkerWalk<'a> {
    file: &'a dyn Storage,
    pos: u64,
    done: bool,
}

impl<'a> MarkerWalk<'a> {
    /// Starts after the header's metadata (the overhead), as every writer lays it out.
    pub fn new(file: &'a dyn Storage, header: &SparseHeader) -> MarkerWalk<'a> {
        let start = header.first_data_sector();
        MarkerWalk {
            file,
            pos: start.saturating_mul(512),
            done: false,
        }
    }
}

impl Iterator for MarkerWalk<'_> {
    type Item = Result<(u64, Marker)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos.saturating_add(512) > self.file.len() {
            return None;
        }
        let mut s = [0u8; 512];
        if let Err(e) = self.file.read_exact_at(&mut s, self.pos) {
            self.done = true;
            return Some(Err(e));
        }
        let at = self.pos;
        let marker = Marker::parse(&s);
        let sectors = if marker.size > 0 {
            (12 + u64::from(marker.size)).div_ceil(512)
        } else {
            if marker.kind == MARKER_EOS {
                self.done = true;
            }
            1u64.saturating_add(marker.value)
        };
        self.pos = self.pos.saturating_add(sectors.saturating_mul(512));
        Some(Ok((at, marker)))
    }
}

/// The run of a flat extent at byte `at` of its file. Holes of a sparse host file (a thin
/// vmfs or monolithicFlat disk) read as zeros without being read, as a raw image's do; so does
/// everything past the end of a file shorter than its extent.
fn flat_run(file: &dyn Storage, at: u64, max_len: u64) -> Result<ExtentRun> {
    // Holes inside the file have their place too (a write in place fills them).
    let run = |len: u64, allocation| ExtentRun {
        len,
        allocation,
        host: Some(at),
        compressed: false,
    };
    if at >= file.len() {
        return Ok(ExtentRun {
            host: None,
            ..run(max_len, Allocation::Zero)
        });
    }
    let in_file = max_len.min(file.len() - at);
    match file.next_data(at)? {
        None => Ok(run(in_file, Allocation::Zero)),
        Some(data) if data > at => Ok(run((data - at).min(in_file), Allocation::Zero)),
        Some(_) => {
            let hole = file.next_hole(at)?;
            if hole > at {
                Ok(run((hole - at).min(in_file), Allocation::Data))
            } else {
                Ok(run(in_file, Allocation::Data))
            }
        }
    }
}

/// Where an extent's bytes come from.
pub enum ExtentData {
    /// Raw bytes at a byte offset of a file.
    Flat {
        /// The file.
        file: Arc<dyn Storage>,
        /// Where the extent starts in it.
        start: u64,
    },
    /// Zeros.
    Zero,
    /// A sparse extent (shared by every descriptor line that names its file).
    Sparse(Arc<SparseExtent>),
}

/// One extent of the virtual disk.
pub struct Extent {
    /// First virtual byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The type the descriptor gives (or the one the file's magic implies).
    pub kind: ExtentKind,
    /// Index of its file in the layer's file list.
    pub file_index: Option<usize>,
    /// Its bytes.
    pub data: ExtentData,
}

impl Extent {
    /// Describes the run at `offset` (inside the extent), at most `max_len` long.
    pub fn map(&self, offset: u64, max_len: u64) -> Result<ExtentRun> {
        let max_len = max_len.min(self.len - offset);
        Ok(match &self.data {
            ExtentData::Zero => ExtentRun {
                len: max_len,
                allocation: Allocation::Zero,
                host: None,
                compressed: false,
            },
            ExtentData::Flat { file, start } => flat_run(file, start + offset, max_len)?,
            ExtentData::Sparse(s) => {
                let mut run = s.map(offset, max_len)?;
                run.len = run.len.min(max_len);
                run
            }
        })
    }

    /// Reads bytes at `offset` inside the extent.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &self.data {
            ExtentData::Zero => {
                buf.fill(0);
                Ok(())
            }
            ExtentData::Flat { file, start } => {
                let n = file.read_at_most(buf, start + offset)?;
                buf[n..].fill(0);
                Ok(())
            }
            ExtentData::Sparse(s) => s.read(offset, buf),
        }
    }

    /// The extent's file, if it has one.
    pub fn file(&self) -> Option<&Arc<dyn Storage>> {
        match &self.data {
            ExtentData::Flat { file, .. } => Some(file),
            ExtentData::Sparse(s) => Some(&s.file),
            ExtentData::Zero => None,
        }
    }
}
