//! Extents: the pieces a descriptor strings together into one virtual disk. Flat extents are
//! bytes in a file, ZERO extents read as zeros, and sparse extents (hosted KDMV, COWD,
//! SESPARSE) find each grain through their grain tables.

use super::cowd::{self, CowdHeader};
use super::descriptor::ExtentKind;
use super::grain::{self, GrainHead, MARKER_EOS, MARKER_FOOTER, MARKER_GD, Marker};
use super::grain_table::{Budget, EntryFormat, Geometry, GrainEntry, GrainTables};
use super::sesparse::{self, SeSparseHeader};
use super::sparse_header::{self, DirectoryAt, SparseHeader};
use crate::error::{Error, Result};
use crate::format::Salvage;
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
    /// Whether the file holds every grain its map names.
    pub completeness: Completeness,
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
    /// The coding a hosted sparse header describes.
    pub fn of(header: &SparseHeader) -> GrainCoding {
        match (header.compressed, header.markers) {
            (false, _) => GrainCoding::Plain,
            (true, false) => GrainCoding::Compressed,
            (true, true) => GrainCoding::CompressedWithMarkers,
        }
    }

    /// How each compressed grain is introduced; `None` for plain grains.
    pub fn head(self) -> Option<GrainHead> {
        match self {
            GrainCoding::Plain => None,
            GrainCoding::Compressed => Some(GrainHead::Size),
            GrainCoding::CompressedWithMarkers => Some(GrainHead::Marker),
        }
    }

    /// Grains are compressed.
    pub fn compressed(self) -> bool {
        self.head().is_some()
    }

    /// Compressed grains start with a marker holding their LBA.
    pub fn markers(self) -> bool {
        self.head() == Some(GrainHead::Marker)
    }
}

/// Whether a sparse extent's file holds every grain its map names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Every grain is there (a grain that is not is an error when it is read).
    Whole,
    /// The file was cut short and is read anyway (`--salvage`): grains stored at or after
    /// byte `missing_from` are lost, wholly or in part, and read as zeros.
    Truncated {
        /// The first byte of the first lost grain (or the file's length).
        missing_from: u64,
    },
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

/// Bytes of inflated grains that all extents keep for partial reads (one grain each at
/// most): a descriptor of many compressed extents with 8 MiB grains holds no more.
static INFLATED_BUDGET: Budget = Budget::new(64 << 20);

/// How far past a stream-optimized file's end-of-data we look for the footer.
const FOOTER_FROM_END: u64 = 1024;

/// Where the file of a compressed extent was cut short, and what that loses.
struct Cut {
    /// Grains stored at or after this byte are lost (wholly or in part).
    missing_from: u64,
    /// Where the file ends, as a phrase: "inside the compressed grain ...".
    ends: String,
    /// What reads as zeros when the file is salvaged.
    zeros: String,
}

impl Cut {
    /// Refuses a truncated file, or (salvaging) notes a warning and reads what is there.
    fn settle(
        cut: Option<Cut>,
        len: u64,
        salvage: Salvage,
        warnings: &mut Vec<String>,
    ) -> Result<Completeness> {
        let Some(cut) = cut else {
            return Ok(Completeness::Whole);
        };
        match salvage {
            Salvage::Refuse => Err(Error::corrupt(format!(
                "the file is truncated: it ends at byte {len}, {}; --salvage reads the grains that are there and the rest as zeros",
                cut.ends
            ))),
            Salvage::ReadWhatIsThere => {
                warnings.push(format!(
                    "the file is truncated: it ends at byte {len}, {}; reading what is there: {}",
                    cut.ends, cut.zeros
                ));
                Ok(Completeness::Truncated {
                    missing_from: cut.missing_from,
                })
            }
        }
    }
}

impl SparseExtent {
    /// Opens a sparse extent of any kind, recognised by its magic. `salvage` says whether a
    /// truncated file is an error or is read as far as it goes.
    pub fn open(file: Arc<dyn Storage>, salvage: Salvage) -> Result<SparseExtent> {
        let mut head = vec![0u8; file.len().min(cowd::HEADER_BYTES as u64) as usize];
        file.read_exact_at(&mut head, 0)?;
        if head.starts_with(sparse_header::MAGIC) {
            let header = SparseHeader::parse(&head)?;
            Self::open_hosted(file, header, salvage)
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
        completeness: Completeness,
        warnings: Vec<String>,
    ) -> SparseExtent {
        SparseExtent {
            grain_bytes: tables.geometry().grain_bytes,
            file,
            kind,
            tables,
            capacity: capacity_sectors * 512,
            coding,
            completeness,
            warnings,
            last_grain: Mutex::new(None),
        }
    }

    fn hosted_geometry(header: &SparseHeader) -> Geometry {
        Geometry {
            grain_bytes: header.grain_bytes(),
            gtes_per_gt: u64::from(header.gtes_per_gt),
            grains: header.capacity.div_ceil(header.grain_sectors),
            format: EntryFormat::Hosted {
                zeroed_grain: header.zeroed_grain(),
            },
        }
    }

    /// Opens a hosted sparse extent whose header has been parsed.
    pub fn open_hosted(
        file: Arc<dyn Storage>,
        header: SparseHeader,
        salvage: Salvage,
    ) -> Result<SparseExtent> {
        let mut warnings = Vec::new();
        // A footer in its place at the end shows that the file was not cut short.
        let (header, footer_found) = if header.directory_at() == DirectoryAt::Footer {
            match read_footer(&file, &header) {
                Ok(footer) => (footer, true),
                Err(e) if header.markers => {
                    return Self::open_by_scan(
                        file,
                        header,
                        "stream-optimized footer",
                        &e,
                        salvage,
                    );
                }
                Err(e) => return Err(e),
            }
        } else {
            (header, false)
        };
        let geometry = Self::hosted_geometry(&header);
        let entries = header.gd_entries();
        let load = |sector: u64| -> Result<GrainTables> {
            let offset = sector.checked_mul(512).ok_or_else(|| {
                Error::corrupt(format!("grain directory sector {sector} is out of range"))
            })?;
            GrainTables::load(&file, offset, entries, geometry)
        };
        let primary = match header.directory_at() {
            DirectoryAt::Sector(sector) => load(sector),
            // A footer's own gdOffset was checked when it was read.
            DirectoryAt::Missing | DirectoryAt::Footer => Err(Error::corrupt(
                "the header has no grain directory (gdOffset is 0)",
            )
            .at_offset(56)),
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
                return Self::open_by_scan(file, header, "grain directory", &e, salvage);
            }
            Err(e) => return Err(e),
        };
        let coding = GrainCoding::of(&header);
        // Compressed grains are appended as they come: a file cut short loses the last ones
        // while its tables (written first, as qemu-img does) still name them.
        let cut = match coding.head() {
            Some(head) if !footer_found => find_cut(file.as_ref(), &tables, head)?,
            _ => None,
        };
        let completeness = Cut::settle(cut, file.len(), salvage, &mut warnings)?;
        let capacity = header.capacity;
        Ok(Self::new(
            file,
            SparseKind::Hosted(header),
            tables,
            capacity,
            coding,
            completeness,
            warnings,
        ))
    }

    /// Rebuilds the grain map of a stream-optimized extent whose `lost` structure is unusable
    /// (`reason`) by walking its markers from the first grain. The walk must reach the
    /// grain directory or the end-of-stream marker (both follow every grain); a file that
    /// ends first was cut short, which is an error unless salvaging. The map holds one pair
    /// per grain found.
    fn open_by_scan(
        file: Arc<dyn Storage>,
        header: SparseHeader,
        lost: &str,
        reason: &Error,
        salvage: Salvage,
    ) -> Result<SparseExtent> {
        let geometry = Geometry {
            format: EntryFormat::Hosted {
                zeroed_grain: false,
            },
            ..Self::hosted_geometry(&header)
        };
        let len = file.len();
        let max_size = grain::max_compressed_size(geometry.grain_bytes);
        let mut grains = Vec::new();
        let mut complete = false;
        let mut cut = None;
        for item in MarkerWalk::new(file.as_ref(), &header) {
            let (at, marker) = item?;
            if marker.size > 0 {
                let size = u64::from(marker.size);
                if size > max_size {
                    return Err(Error::corrupt(format!(
                        "compressed grain size {size} is invalid for a grain of {} bytes",
                        geometry.grain_bytes
                    ))
                    .at_offset(at));
                }
                let grain = marker.value / header.grain_sectors;
                if grain >= geometry.grains {
                    return Err(Error::corrupt(format!(
                        "grain marker names sector {} past the disk's end ({} sectors)",
                        marker.value, header.capacity
                    ))
                    .at_offset(at));
                }
                if at + 12 + size > len {
                    cut = Some(Cut {
                        missing_from: at,
                        ends: format!(
                            "inside the compressed grain of disk sector {} (at byte {at}), without its grain tables, footer and end-of-stream marker",
                            marker.value
                        ),
                        zeros: String::new(),
                    });
                    break;
                }
                grains.push((grain, at));
                continue;
            }
            match marker.kind {
                MARKER_EOS => complete = true,
                _ if (at + 512).saturating_add(marker.value.saturating_mul(512)) > len => {
                    cut = Some(Cut {
                        missing_from: len,
                        ends: format!(
                            "inside the metadata announced at byte {at}, without its footer and end-of-stream marker"
                        ),
                        zeros: String::new(),
                    });
                    break;
                }
                // The directory is written after every grain: what follows it is not data.
                MARKER_GD => complete = true,
                _ => {}
            }
        }
        let found = grains.len();
        let cut = if complete {
            None
        } else {
            let mut cut = cut.unwrap_or_else(|| Cut {
                missing_from: len,
                ends: "without its grain directory, footer and end-of-stream marker".to_string(),
                zeros: String::new(),
            });
            cut.zeros = format!(
                "{} found whole before the cut, every other grain reads as zeros (the grain map was rebuilt by scanning the markers)",
                count(found as u64, "grain")
            );
            Some(cut)
        };
        let mut warnings = Vec::new();
        if cut.is_none() {
            warnings.push(format!(
                "{lost} unusable ({}); grain map rebuilt by scanning the markers",
                reason.message()
            ));
        }
        let completeness = Cut::settle(cut, len, salvage, &mut warnings)?;
        let tables = GrainTables::rebuilt(geometry, grains);
        let capacity = header.capacity;
        Ok(Self::new(
            file,
            SparseKind::Hosted(header),
            tables,
            capacity,
            GrainCoding::CompressedWithMarkers,
            completeness,
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
            Completeness::Whole,
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
            Completeness::Whole,
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

    /// What grain `grain` holds, as read: an entry stored where a salvaged file was cut
    /// short reads as zeros; any other stored grain must lie inside the file.
    fn resolve(&self, grain: u64, entry: GrainEntry) -> Result<GrainEntry> {
        let GrainEntry::At(at) = entry else {
            return Ok(entry);
        };
        if let Completeness::Truncated { missing_from } = self.completeness
            && at >= missing_from
        {
            return Ok(GrainEntry::Zeroed);
        }
        let need = if self.coding.compressed() {
            1
        } else {
            self.grain_len(grain)
        };
        if at.checked_add(need).is_none_or(|end| end > self.file.len()) {
            return Err(Error::corrupt(format!(
                "grain table entry for grain {grain} points past the end of the file ({} bytes)",
                self.file.len()
            ))
            .at_offset(at));
        }
        Ok(entry)
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
        let mut pos = offset;
        let mut first: Option<(Allocation, Option<u64>)> = None;
        while pos < end {
            let grain = pos / g;
            let in_grain = pos - grain * g;
            // Grains up to `until` read as this one does (whole empty tables, empty stretches
            // of a rebuilt map): one step for all of them.
            let (entry, until) = self.tables.lookup_run(&self.file, grain)?;
            let next = until.max(grain + 1).saturating_mul(g).min(end);
            let (alloc, host) = match self.resolve(grain, entry)? {
                GrainEntry::Unallocated => (Allocation::Unallocated, None),
                GrainEntry::Zeroed => (Allocation::Zero, None),
                GrainEntry::At(at) => (
                    Allocation::Data,
                    (!self.coding.compressed()).then_some(at + in_grain),
                ),
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
            match self.resolve(grain, entry)? {
                GrainEntry::Unallocated | GrainEntry::Zeroed => chunk.fill(0),
                GrainEntry::At(at) => match self.coding.head() {
                    None => self.file.read_exact_at(chunk, at + in_grain)?,
                    Some(head) if n as u64 == g => {
                        // A whole grain (the common case: sequential reads) inflates straight
                        // into the caller's buffer, which is exactly the one-grain bound.
                        let (_, got) = grain::read_compressed(&self.file, at, head, chunk)?;
                        if (got as u64) < self.grain_len(grain) {
                            return Err(Error::corrupt(format!(
                                "compressed grain {grain} inflates to {got} bytes, {} expected",
                                self.grain_len(grain)
                            ))
                            .at_offset(at));
                        }
                        chunk[got..].fill(0);
                    }
                    Some(head) => {
                        let data = self.inflate(grain, at, head)?;
                        chunk.copy_from_slice(&data[in_grain as usize..in_grain as usize + n]);
                    }
                },
            }
            done += n;
        }
        Ok(())
    }

    /// The grain whose marker is at `entry`, inflated (a whole grain, zero-padded).
    fn inflate(&self, grain: u64, entry: u64, head: GrainHead) -> Result<Arc<Vec<u8>>> {
        let cached = self.last_grain.lock().ok().and_then(|c| {
            c.as_ref()
                .filter(|(e, _)| *e == entry)
                .map(|(_, d)| Arc::clone(d))
        });
        if let Some(d) = cached {
            return Ok(d);
        }
        let mut data = vec![0u8; self.grain_bytes as usize];
        let (_, n) = grain::read_compressed(&self.file, entry, head, &mut data)?;
        let need = self.grain_len(grain) as usize;
        if n < need {
            return Err(Error::corrupt(format!(
                "compressed grain {grain} inflates to {n} bytes, {need} expected"
            ))
            .at_offset(entry));
        }
        let data = Arc::new(data);
        if let Ok(mut c) = self.last_grain.lock() {
            if c.take().is_some() {
                INFLATED_BUDGET.give_back(self.grain_bytes as usize);
            }
            if INFLATED_BUDGET.take(self.grain_bytes as usize) {
                *c = Some((entry, Arc::clone(&data)));
            }
        }
        Ok(data)
    }
}

impl Drop for SparseExtent {
    fn drop(&mut self) {
        let kept = self.last_grain.get_mut().is_ok_and(|c| c.is_some());
        if kept {
            INFLATED_BUDGET.give_back(self.grain_bytes as usize);
        }
    }
}

/// Looks for the end of a compressed extent whose tables come first (as qemu-img lays out
/// stream-optimized files): a file cut short still has its tables, which name grains that
/// lie past its end, or a last grain that runs past it. Reads every table once (a few MiB
/// for a disk of terabytes), holding one at a time.
fn find_cut(file: &dyn Storage, tables: &GrainTables, head: GrainHead) -> Result<Option<Cut>> {
    let len = file.len();
    let geometry = *tables.geometry();
    // The grain stored last inside the file, and how many grains lie wholly past its end.
    let mut last: Option<(u64, u64)> = None;
    let mut past = 0u64;
    let mut gt = tables.next_present(file, 0)?;
    while gt < geometry.tables() {
        if let Some(t) = tables.table(file, gt)? {
            for (k, entry) in t.iter().enumerate() {
                let GrainEntry::At(at) = *entry else {
                    continue;
                };
                if at >= len {
                    past += 1;
                } else if last.is_none_or(|(_, a)| at > a) {
                    last = Some((gt * geometry.gtes_per_gt + k as u64, at));
                }
            }
        }
        gt = tables.next_present(file, gt + 1)?;
    }
    let max_size = grain::max_compressed_size(geometry.grain_bytes);
    // A size that is no grain's is damage, not truncation: reading the grain says so.
    let straddling = match last {
        Some((g, at)) => match grain::read_head(file, at, head)? {
            None => Some((g, at)),
            Some(h) if h.size > 0 && h.size <= max_size && h.end(at) > len => Some((g, at)),
            Some(_) => None,
        },
        None => None,
    };
    let more = if past > 0 {
        format!(
            ", and {} its grain tables name {} past that end",
            count(past, "grain"),
            if past == 1 { "lies" } else { "lie" }
        )
    } else {
        String::new()
    };
    Ok(match straddling {
        Some((g, at)) => Some(Cut {
            missing_from: at,
            ends: format!("inside compressed grain {g} (stored at byte {at}){more}"),
            zeros: not_there(past + 1),
        }),
        None if past > 0 => Some(Cut {
            missing_from: len,
            ends: format!(
                "but {} its grain tables name {} past that end",
                count(past, "grain"),
                if past == 1 { "lies" } else { "lie" }
            ),
            zeros: not_there(past),
        }),
        None => None,
    })
}

/// "1 grain", "2 grains".
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// What reads as zeros when `n` grains are (partly) missing.
fn not_there(n: u64) -> String {
    if n == 1 {
        "the grain not wholly in the file reads as zeros".to_string()
    } else {
        format!("the {n} grains not wholly in the file read as zeros")
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
    let footer = SparseHeader::parse_at(&b, at).map_err(|e| e.context("footer"))?;
    if !matches!(footer.directory_at(), DirectoryAt::Sector(_)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::vmdk::sparse_header::{
        FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_CHECK, GD_AT_END,
    };
    use crate::storage::Memory;

    const GRAIN: usize = 4096;

    fn header(gd_offset: u64, overhead: u64) -> SparseHeader {
        SparseHeader {
            version: 3,
            flags: FLAG_NEWLINE_CHECK | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: 32,
            grain_sectors: 8,
            descriptor_offset: 0,
            descriptor_size: 0,
            gtes_per_gt: 512,
            rgd_offset: 0,
            gd_offset,
            overhead,
            dirty: false,
            compressed: true,
            markers: true,
        }
    }

    fn grain_data(fill: u8) -> Vec<u8> {
        (0..GRAIN).map(|i| fill ^ (i % 7) as u8).collect()
    }

    /// Grains 0 and 2 as markers + zlib from byte `at`: (bytes, offset of each grain).
    fn grains(at: usize) -> (Vec<u8>, [usize; 2]) {
        let mut out = Vec::new();
        let mut offsets = [0; 2];
        for (i, g) in [0u64, 2].into_iter().enumerate() {
            offsets[i] = at + out.len();
            let mut enc = Vec::new();
            grain::deflate_grain(g * GRAIN as u64, &grain_data(g as u8 + 1), GRAIN, &mut enc)
                .unwrap();
            out.extend_from_slice(&enc);
        }
        (out, offsets)
    }

    /// A stream whose footer is lost: header (directory at the end), grains, then `tail`.
    fn scanned(tail: &[u8]) -> (Vec<u8>, [usize; 2]) {
        let mut b = header(GD_AT_END, 1).to_bytes().to_vec();
        let (g, offsets) = grains(512);
        b.extend_from_slice(&g);
        b.extend_from_slice(tail);
        (b, offsets)
    }

    /// qemu-img's layout: directory and table first, then the grains.
    fn tables_first() -> (Vec<u8>, [usize; 2]) {
        let mut b = header(1, 6).to_bytes().to_vec();
        b.resize(6 * 512, 0);
        b[512..516].copy_from_slice(&2u32.to_le_bytes());
        let (g, offsets) = grains(6 * 512);
        for (slot, at) in [0usize, 2].into_iter().zip(offsets) {
            let e = 1024 + slot * 4;
            b[e..e + 4].copy_from_slice(&((at / 512) as u32).to_le_bytes());
        }
        b.extend_from_slice(&g);
        (b, offsets)
    }

    fn open(bytes: Vec<u8>, salvage: Salvage) -> Result<SparseExtent> {
        SparseExtent::open(Arc::new(Memory::new("cut.vmdk", bytes)), salvage)
    }

    fn read_all(e: &SparseExtent) -> Vec<u8> {
        let mut buf = vec![0u8; 4 * GRAIN];
        e.read(0, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_lost_footer_with_the_end_of_stream_marker_is_rebuilt_by_scanning() {
        let (b, _) = scanned(&Marker::metadata(0, MARKER_EOS));
        let e = open(b, Salvage::Refuse).unwrap();
        assert_eq!(e.completeness, Completeness::Whole);
        assert!(
            e.warnings[0].contains("rebuilt by scanning"),
            "{:?}",
            e.warnings
        );
        let got = read_all(&e);
        assert_eq!(got[..GRAIN], grain_data(1)[..]);
        assert_eq!(got[2 * GRAIN..3 * GRAIN], grain_data(3)[..]);
    }

    #[test]
    fn a_stream_cut_inside_a_grain_is_an_error_unless_salvaging() {
        let (full, offsets) = scanned(&[]);
        let cut = full[..offsets[1] + 100].to_vec();
        let err = open(cut.clone(), Salvage::Refuse)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("truncated") && err.contains("--salvage"),
            "{err}"
        );
        let e = open(cut, Salvage::ReadWhatIsThere).unwrap();
        assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
        assert!(e.warnings[0].contains("truncated"), "{:?}", e.warnings);
        let got = read_all(&e);
        assert_eq!(got[..GRAIN], grain_data(1)[..]);
        assert!(got[GRAIN..].iter().all(|&b| b == 0));
        // Whole grains, and nothing past the cut, in the map.
        let run = e.map(2 * GRAIN as u64, 2 * GRAIN as u64).unwrap();
        assert_eq!(run.allocation, Allocation::Unallocated);

        // Cut right after a whole grain: no end-of-stream marker, so still truncated.
        let err = open(full, Salvage::Refuse).err().unwrap().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn tables_naming_grains_past_the_end_are_a_truncation() {
        let (full, offsets) = tables_first();
        let e = open(full.clone(), Salvage::Refuse).unwrap();
        assert_eq!(e.completeness, Completeness::Whole);
        assert!(e.warnings.is_empty());
        // Cut inside the last grain, then before it.
        for len in [offsets[1] + 20, offsets[1]] {
            let cut = full[..len].to_vec();
            let err = open(cut.clone(), Salvage::Refuse)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("truncated"), "{err}");
            let e = open(cut, Salvage::ReadWhatIsThere).unwrap();
            assert!(e.warnings[0].contains("reads as zeros"), "{:?}", e.warnings);
            let got = read_all(&e);
            assert_eq!(got[..GRAIN], grain_data(1)[..]);
            assert!(got[GRAIN..].iter().all(|&b| b == 0));
            let run = e.map(2 * GRAIN as u64, GRAIN as u64).unwrap();
            assert_eq!(run.allocation, Allocation::Zero);
        }
    }
}
