//! `check` for VHDX: the file identifier, both headers, both region tables, the metadata, every
//! BAT entry, the log and the parent link, each reported with the offset of what is wrong; and
//! `-r`, which cuts unused space off the end (`leaks`) and, with `all`, also replays a pending
//! log in place and rewrites a damaged header or region table copy from the good one.
//!
//! The reader's functions stop at the first problem, which is right for reading but not for a
//! check: here every structure is walked on its own and findings are collected, and the check
//! goes on wherever what follows does not depend on what was found broken.
//!
//! Replaying the log in place is crash-consistent: every replayed range is written where the
//! log says (writing it twice gives the same bytes), the file is synced, and only then is a
//! header with no log GUID and a higher sequence number written into the slot that is *not*
//! current. Until that header is complete and synced, the current header still names the log,
//! which still replays; a torn new header fails its checksum and the old one stays current.

use super::bat::{Geometry, PayloadState};
use super::guid::{self, Guid, braced, read_guid};
use super::header::{
    FILE_SIGNATURE, HEADER_OFFSETS, HEADER_SECTION, HEADER_SIZE, Header, checksum, le16, le32, le64,
};
use super::log;
use super::metadata::{self, MAX_ITEM};
use super::parent;
use super::reader::VhdxLayer;
use super::region::{MAX_ENTRIES, TABLE_OFFSETS, TABLE_SIZE};
use crate::check::{CheckReport, RepairMode, Severity};
use crate::error::{Error, ErrorKind, Result};
use crate::format::Provenance;
use crate::gate::Gate;
use crate::host_file::HostFile;
use crate::image::{OpenOptions, open_layer};
use crate::storage::{Storage, StorageExt};
use std::path::Path;
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// For tests only: the number of writes (`write`, `set_len` and the header write each count
/// one) `check -r all` makes before it aborts the process, as a `kill -9` would stop it. Crash
/// tests set it to prove that every prefix of a repair leaves a file that still replays.
pub const ABORT_AFTER_ENV: &str = "DISKFERRY_TEST_ABORT_AFTER";

/// Findings of one kind reported one by one before the rest are only counted: a table of
/// garbage has one problem per entry, millions of lines nobody reads.
const MAX_LISTED: usize = 100;

/// Per-entry findings: the first [`MAX_LISTED`], then a count by severity.
struct Listed {
    reported: usize,
    dropped: [u64; 2],
}

impl Listed {
    fn new() -> Listed {
        Listed {
            reported: 0,
            dropped: [0; 2],
        }
    }

    fn add(&mut self, report: &mut CheckReport, severity: Severity, msg: String, at: u64) {
        if self.reported < MAX_LISTED {
            report.add(severity, msg, Some(at));
            self.reported += 1;
        } else if severity == Severity::Warning {
            self.dropped[1] += 1;
        } else {
            self.dropped[0] += 1;
        }
    }

    fn close(self, report: &mut CheckReport) {
        for (n, severity) in [
            (self.dropped[0], Severity::Corruption),
            (self.dropped[1], Severity::Warning),
        ] {
            if n > 0 {
                report.add(
                    severity,
                    format!(
                        "{n} more problems with BAT entries (only the first {MAX_LISTED} are listed)"
                    ),
                    None,
                );
            }
        }
    }
}

/// What occupies an [`Extent`]. Blocks carry only their entry's index, and their words are
/// made when a finding needs them: a large fixed disk has millions of blocks.
#[derive(Debug, Clone)]
enum Occupant {
    /// One of the file's own structures (header section, log, a region), in words.
    Structure(String),
    /// The payload block of BAT entry `i`.
    Block(u64),
    /// The sector bitmap block of BAT entry `i`.
    Bitmap(u64),
}

impl std::fmt::Display for Occupant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Occupant::Structure(s) => f.write_str(s),
            Occupant::Block(i) => write!(f, "the block of BAT entry {i}"),
            Occupant::Bitmap(i) => write!(f, "the sector bitmap of BAT entry {i}"),
        }
    }
}

/// A range of the file something occupies, for the overlap and leak checks.
#[derive(Debug, Clone)]
struct Extent {
    start: u64,
    end: u64,
    what: Occupant,
    /// Where the thing that names it is (a BAT entry, a region table entry), for messages.
    named_at: u64,
}

/// What `-r` would do, each tied to the finding it fixes.
#[derive(Debug)]
enum Fix {
    /// Write the replayed log (ranges of bytes) in place, then grow the file to `len`.
    ReplayLog {
        writes: Vec<(u64, Vec<u8>)>,
        len: u64,
        finding: usize,
    },
    /// A header names a log that holds no entry: a clean header clears it.
    ClearLog { finding: usize },
    /// The non-current header is damaged: a new header in its slot repairs it.
    Header { finding: usize },
    /// Region table copy `to` (0 or 1) is damaged or differs: copy `from` over it.
    RegionTable {
        from: usize,
        to: usize,
        finding: usize,
    },
    /// Space after the last used byte: cut it.
    Truncate { end: u64, finding: usize },
}

/// What the inspection found.
struct Inspection {
    report: CheckReport,
    fixes: Vec<Fix>,
    /// The current header, when one is valid.
    current: Option<Header>,
    /// Sequence numbers of the valid headers.
    sequences: Vec<u64>,
    /// True when the log could not be replayed: the file must not be changed, since any
    /// change could break what a later, better replay needs.
    log_broken: bool,
}

/// Checks (and with `repair`, repairs) the VHDX at `path`; the parent of a differencing disk
/// is looked for through `gate`.
pub fn check(path: &Path, repair: Option<RepairMode>, gate: &Gate) -> Result<CheckReport> {
    let file: Arc<dyn Storage> = Arc::new(HostFile::open(path)?);
    let found = inspect(file, path, Some(gate))?;
    match repair {
        None => Ok(found.report),
        Some(mode) => apply(found, path, mode),
    }
}

/// Checks the VHDX in `file` without changing it and without looking for its parent (for
/// fuzzing and for storages that are not files).
pub fn check_storage(file: Arc<dyn Storage>, path: &Path) -> Result<CheckReport> {
    Ok(inspect(file, path, None)?.report)
}

/// Cuts the space past the last used byte, as `check -r leaks` would, when that is all the
/// inspection finds to repair. For an in-place change that hands space back at the end of the
/// file (a shrink), once its log is empty: the cut space is then garbage no replay needs, and
/// leaving it would make every later `check` report a leak. A file with anything else to
/// repair is left as it is, for `check` to report.
pub(crate) fn cut_unused_tail(path: &Path) -> Result<()> {
    let file: Arc<dyn Storage> = Arc::new(HostFile::open(path)?);
    let found = inspect(file, path, None)?;
    let only_tail = !found.fixes.is_empty()
        && !found.log_broken
        && found
            .fixes
            .iter()
            .all(|f| matches!(f, Fix::Truncate { .. }));
    if only_tail {
        apply(found, path, RepairMode::Leaks)?;
    }
    Ok(())
}

/// The two headers: findings for each, and the current one.
fn check_headers(
    file: &dyn Storage,
    report: &mut CheckReport,
    fixes: &mut Vec<Fix>,
) -> Result<(Header, Vec<u64>)> {
    let len = file.len();
    let mut valid: Vec<(Header, [u8; HEADER_SIZE])> = Vec::new();
    let mut bad: Vec<(usize, String)> = Vec::new();
    for (i, &at) in HEADER_OFFSETS.iter().enumerate() {
        if at + HEADER_SIZE as u64 > len {
            bad.push((i, format!("it lies past the end of the file ({len} bytes)")));
            continue;
        }
        let mut b = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut b, at)?;
        match Header::parse(&b, i + 1) {
            Ok(h) => valid.push((h, b)),
            Err(why) => bad.push((i, why)),
        }
    }
    let describe = |i: usize, why: &str| {
        format!(
            "header {} at {:#x} is not valid: {why}",
            i + 1,
            HEADER_OFFSETS[i]
        )
    };
    if valid.is_empty() {
        return Err(Error::corrupt(format!(
            "neither VHDX header is valid: {}; {}",
            describe(bad[0].0, &bad[0].1),
            describe(bad[1].0, &bad[1].1)
        ))
        .at_offset(HEADER_OFFSETS[0])
        .with_path(file.name()));
    }
    // The newer valid one; the first on a tie, as the reader does.
    let current = if valid.len() == 2 && valid[1].0.sequence_number > valid[0].0.sequence_number {
        1
    } else {
        0
    };
    if let Some((i, why)) = bad.first() {
        // A crash while a writer updates its headers leaves one torn: the other is the
        // truth, and a new header in the damaged slot restores the spare.
        report.add(
            Severity::Warning,
            format!(
                "{}; header {} is used",
                describe(*i, why),
                valid[current].0.copy
            ),
            Some(HEADER_OFFSETS[*i]),
        );
        fixes.push(Fix::Header {
            finding: report.findings.len() - 1,
        });
    } else if valid[0].0.sequence_number == valid[1].0.sequence_number && valid[0].1 != valid[1].1 {
        report.add(
            Severity::Warning,
            format!(
                "both headers carry sequence number {} but differ: header 1 is used",
                valid[0].0.sequence_number
            ),
            Some(HEADER_OFFSETS[1] + 8),
        );
    }
    let h = valid[current].0.clone();
    if h.version != 1 {
        return Err(Error::unsupported(format!(
            "VHDX header {} has version {}; diskferry checks version 1",
            h.copy, h.version
        ))
        .at_offset(h.offset + 66)
        .with_path(file.name()));
    }
    if h.log_version != 0 {
        report.add(
            Severity::Corruption,
            format!("header {} has log version {}, not 0", h.copy, h.log_version),
            Some(h.offset + 64),
        );
    }
    let sequences = valid.iter().map(|(h, _)| h.sequence_number).collect();
    Ok((h, sequences))
}

/// One region table entry.
#[derive(Debug, Clone)]
struct RegionEntry {
    id: Guid,
    offset: u64,
    length: u64,
    required: bool,
    entry_at: u64,
}

/// Both region tables: findings for each, and the entries of the one used.
fn check_region_tables(
    file: &dyn Storage,
    report: &mut CheckReport,
    fixes: &mut Vec<Fix>,
) -> Result<Option<Vec<RegionEntry>>> {
    let len = file.len();
    let mut copies: Vec<Option<Vec<u8>>> = Vec::new();
    let mut bad_finding: [Option<usize>; 2] = [None; 2];
    for (i, &at) in TABLE_OFFSETS.iter().enumerate() {
        let why = if at + TABLE_SIZE as u64 > len {
            Some((
                format!("it runs past the end of the file ({len} bytes)"),
                at,
            ))
        } else {
            let b = file.read_vec(at, TABLE_SIZE as u64, "region table")?;
            let stored = le32(&b, 4);
            let computed = checksum(&b, 4);
            if &b[..4] != b"regi" {
                Some(("it has no 'regi' signature".to_string(), at))
            } else if stored != computed {
                Some((
                    format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
                    at + 4,
                ))
            } else if le32(&b, 8) > MAX_ENTRIES {
                Some((
                    format!(
                        "it claims {} entries, more than the {MAX_ENTRIES} that fit",
                        le32(&b, 8)
                    ),
                    at + 8,
                ))
            } else {
                copies.push(Some(b));
                None
            }
        };
        if let Some((why, offset)) = why {
            report.add(
                Severity::Corruption,
                format!("region table {} at {at:#x} is not valid: {why}", i + 1),
                Some(offset),
            );
            copies.push(None);
            bad_finding[i] = Some(report.findings.len() - 1);
        }
    }
    let used = match (&copies[0], &copies[1]) {
        (Some(a), Some(b)) => {
            if a != b {
                report.add(
                    Severity::Corruption,
                    "the two region tables differ; table 1 is used",
                    Some(TABLE_OFFSETS[1]),
                );
                bad_finding[1] = Some(report.findings.len() - 1);
            }
            0
        }
        (Some(_), None) => 0,
        (None, Some(_)) => 1,
        (None, None) => return Ok(None),
    };
    // The copy not used is rewritten from the one used.
    if let Some(finding) = bad_finding[1 - used] {
        fixes.push(Fix::RegionTable {
            from: used,
            to: 1 - used,
            finding,
        });
    }
    let b = copies[used].as_ref().expect("chosen above");
    let at = TABLE_OFFSETS[used];
    let entries = (0..le32(b, 8) as usize)
        .map(|i| {
            let e = 16 + 32 * i;
            RegionEntry {
                id: read_guid(b, e),
                offset: le64(b, e + 16),
                length: u64::from(le32(b, e + 24)),
                required: le32(b, e + 28) & 1 != 0,
                entry_at: at + e as u64,
            }
        })
        .collect();
    Ok(Some(entries))
}

fn region_name(id: &Guid) -> String {
    match *id {
        guid::REGION_BAT => "BAT region".into(),
        guid::REGION_METADATA => "metadata region".into(),
        _ => format!("region {}", braced(id)),
    }
}

/// Checks the used region table's entries; returns the BAT and metadata regions when both are
/// usable.
fn check_regions(
    entries: &[RegionEntry],
    len: u64,
    report: &mut CheckReport,
    extents: &mut Vec<Extent>,
) -> Option<(super::region::Region, super::region::Region)> {
    let mut bat = None;
    let mut meta = None;
    let mut usable = true;
    for e in entries {
        let name = region_name(&e.id);
        let known = matches!(e.id, guid::REGION_BAT | guid::REGION_METADATA);
        if !known && e.required {
            // The file's choice, not damage: diskferry cannot judge what it does not know.
            report.check_errors += 1;
            report.add(
                Severity::Warning,
                format!("{name} is marked required but is unknown to diskferry, which cannot check the file without it"),
                Some(e.entry_at),
            );
            usable = false;
        }
        let mut ok = true;
        let mut bad = |why: String| {
            report.add(
                Severity::Corruption,
                format!("{name} ({:#x}, {} bytes) {why}", e.offset, e.length),
                Some(e.entry_at),
            );
            ok = false;
        };
        if e.length == 0 || !e.offset.is_multiple_of(MIB) || !e.length.is_multiple_of(MIB) {
            bad("is not a non-empty range aligned to 1 MiB".into());
        } else if e.offset < HEADER_SECTION {
            bad("lies in the header section (the first MiB)".into());
        } else if e.offset.checked_add(e.length).is_none_or(|end| end > len) {
            bad(format!("runs past the end of the file ({len} bytes)"));
        }
        let slot = match e.id {
            guid::REGION_BAT => Some(&mut bat),
            guid::REGION_METADATA => Some(&mut meta),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_some() {
                report.add(
                    Severity::Corruption,
                    format!("the {name} is listed twice"),
                    Some(e.entry_at),
                );
                usable = false;
            } else if ok {
                *slot = Some(super::region::Region {
                    offset: e.offset,
                    length: e.length,
                });
            } else {
                usable = false;
            }
        }
        if ok {
            extents.push(Extent {
                start: e.offset,
                end: e.offset + e.length,
                what: Occupant::Structure(format!("the {name}")),
                named_at: e.entry_at,
            });
        }
    }
    let table = TABLE_OFFSETS[0];
    if bat.is_none() && usable {
        report.add(
            Severity::Corruption,
            "the region table has no BAT region",
            Some(table + 8),
        );
    }
    if meta.is_none() && usable {
        report.add(
            Severity::Corruption,
            "the region table has no metadata region",
            Some(table + 8),
        );
    }
    match (bat, meta) {
        (Some(b), Some(m)) if usable => Some((b, m)),
        _ => None,
    }
}

/// Walks the metadata table, reporting every entry's problems; then reads the values with the
/// reader's own validation. `None` when the BAT cannot be checked without them.
fn check_metadata(
    file: &dyn Storage,
    region: super::region::Region,
    report: &mut CheckReport,
) -> Result<Option<metadata::Metadata>> {
    let before = report.findings.len();
    if region.length >= metadata::TABLE_SIZE {
        let t = file.read_vec(region.offset, metadata::TABLE_SIZE, "metadata table")?;
        if &t[..8] != b"metadata" {
            report.add(
                Severity::Corruption,
                "the metadata table has no 'metadata' signature",
                Some(region.offset),
            );
        } else if le16(&t, 10) > metadata::MAX_ENTRIES {
            report.add(
                Severity::Corruption,
                format!(
                    "the metadata table claims {} entries, more than the {} that fit",
                    le16(&t, 10),
                    metadata::MAX_ENTRIES
                ),
                Some(region.offset + 10),
            );
        } else {
            let known = [
                guid::FILE_PARAMETERS,
                guid::VIRTUAL_DISK_SIZE,
                guid::PAGE_83_DATA,
                guid::LOGICAL_SECTOR_SIZE,
                guid::PHYSICAL_SECTOR_SIZE,
                guid::PARENT_LOCATOR,
            ];
            let mut seen: Vec<(Guid, u64, u64)> = Vec::new();
            for i in 0..usize::from(le16(&t, 10)) {
                let e = 32 + 32 * i;
                let at = region.offset + e as u64;
                let id = read_guid(&t, e);
                let (offset, length) = (u64::from(le32(&t, e + 16)), u64::from(le32(&t, e + 20)));
                let required = le32(&t, e + 24) & 4 != 0;
                let name = format!("metadata item {}", braced(&id));
                if !known.contains(&id) && required {
                    report.check_errors += 1;
                    report.add(
                        Severity::Warning,
                        format!("{name} is marked required but is unknown to diskferry, which cannot check the disk without it"),
                        Some(at),
                    );
                }
                if length > u64::from(MAX_ITEM) {
                    report.add(
                        Severity::Corruption,
                        format!("{name} is {length} bytes, more than the 1 MiB an item may hold"),
                        Some(at + 20),
                    );
                } else if length > 0
                    && (offset < metadata::TABLE_SIZE || offset + length > region.length)
                {
                    report.add(
                        Severity::Corruption,
                        format!("{name} ({length} bytes at {offset:#x} in the region) lies outside the metadata region ({} bytes after its table)", region.length),
                        Some(at + 16),
                    );
                } else if let Some((other, ..)) = seen
                    .iter()
                    .find(|(_, o, l)| length > 0 && *o < offset + length && offset < o + l)
                {
                    report.add(
                        Severity::Corruption,
                        format!("{name} overlaps metadata item {}", braced(other)),
                        Some(at + 16),
                    );
                }
                if seen.iter().any(|(g, ..)| *g == id) {
                    report.add(
                        Severity::Corruption,
                        format!("{name} is listed twice"),
                        Some(at),
                    );
                }
                seen.push((id, offset, length));
            }
        }
    }
    match metadata::read(file, region) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == ErrorKind::Io => Err(e),
        Err(e) => {
            // The walk above may have said it already; the reader's message adds the value
            // that is wrong (a block size, a sector size, a missing item).
            let said = report.findings[before..]
                .iter()
                .any(|f| f.severity == Severity::Corruption);
            if !said && e.kind() != ErrorKind::Unsupported {
                report.add(
                    Severity::Corruption,
                    e.message().to_string(),
                    e.offset().or(Some(region.offset)),
                );
            } else if e.kind() == ErrorKind::Unsupported && report.check_errors == 0 {
                report.check_errors += 1;
                report.add(
                    Severity::Warning,
                    e.message().to_string(),
                    e.offset().or(Some(region.offset)),
                );
            }
            Ok(None)
        }
    }
}

/// Every BAT entry: states, places in bounds; stored blocks and bitmaps added to `extents`.
/// Returns the blocks stored.
fn check_bat(
    file: &dyn Storage,
    region: super::region::Region,
    g: &Geometry,
    report: &mut CheckReport,
    extents: &mut Vec<Extent>,
    listed: &mut Listed,
    block_end: &mut u64,
) -> Result<u64> {
    let len = file.len();
    let mut entries = g.total_entries;
    if entries.saturating_mul(8) > region.length {
        report.add(
            Severity::Corruption,
            format!(
                "the BAT region ({} bytes) is too small for the {entries} entries a disk of {} bytes in {} byte blocks needs; only the entries it holds are checked",
                region.length, g.virtual_size, g.block_size
            ),
            Some(region.offset),
        );
        entries = region.length / 8;
    }
    let mut stored = 0u64;
    // Chunks holding partially present blocks, and which chunks have a bitmap.
    let mut partial: Vec<(u64, u64)> = Vec::new();
    let mut bitmap_present: Vec<bool> = Vec::new();
    let chunk_entries = (MIB / 8) as usize;
    let mut buf = vec![0u8; chunk_entries.min(entries as usize) * 8];
    let mut index = 0u64;
    while index < entries {
        let n = ((entries - index) as usize).min(chunk_entries);
        let bytes = &mut buf[..n * 8];
        file.read_exact_at(bytes, region.offset + index * 8)?;
        for c in bytes.chunks_exact(8) {
            let raw = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            let at = region.offset + index * 8;
            let i = index;
            index += 1;
            let state = raw & 7;
            let offset = (raw >> 20) << 20;
            if (raw >> 3) & 0x1_FFFF != 0 {
                listed.add(
                    report,
                    Severity::Warning,
                    format!("BAT entry {i} has reserved bits set ({raw:#x})"),
                    at,
                );
            }
            if (i + 1).is_multiple_of(g.chunk_ratio + 1) {
                let chunk = i / (g.chunk_ratio + 1);
                match state {
                    0 => bitmap_present.push(false),
                    6 => {
                        bitmap_present.push(true);
                        if !g.has_parent {
                            listed.add(report, Severity::Warning, format!("BAT entry {i} (sector bitmap of chunk {chunk}) is present, but only a differencing disk uses sector bitmaps"), at);
                        }
                        if offset < HEADER_SECTION || offset.saturating_add(MIB) > len {
                            listed.add(report, Severity::Corruption, format!("BAT entry {i} (sector bitmap of chunk {chunk}) points at {offset:#x}, outside the file ({len} bytes) or into its header section"), at);
                        } else {
                            extents.push(Extent {
                                start: offset,
                                end: offset + MIB,
                                what: Occupant::Bitmap(i),
                                named_at: at,
                            });
                        }
                    }
                    s => {
                        bitmap_present.push(false);
                        listed.add(report, Severity::Corruption, format!("BAT entry {i} (sector bitmap of chunk {chunk}) has state {s}, which is not a sector bitmap state"), at);
                    }
                }
                continue;
            }
            let block = i - i / (g.chunk_ratio + 1);
            if block >= g.data_blocks {
                // Past the disk in the last chunk of a differencing table: unused.
                continue;
            }
            let Some(st) = payload_state(state) else {
                listed.add(
                    report,
                    Severity::Corruption,
                    format!("BAT entry {i} (block {block}) has state {state}, which is reserved"),
                    at,
                );
                continue;
            };
            if !st.is_stored() {
                continue;
            }
            if st == PayloadState::PartiallyPresent {
                if g.has_parent {
                    partial.push((block / g.chunk_ratio, at));
                } else {
                    listed.add(report, Severity::Corruption, format!("BAT entry {i} (block {block}) is partially present, which only a differencing disk may be"), at);
                }
            }
            stored += 1;
            let used = g.used(block);
            if offset < HEADER_SECTION {
                listed.add(report, Severity::Corruption, format!("BAT entry {i} (block {block}) points at {offset:#x}, into the header section"), at);
            } else if offset.saturating_add(used) > len {
                listed.add(report, Severity::Corruption, format!("BAT entry {i} (block {block}) points at {offset:#x}, past the end of the file ({len} bytes): the file is truncated or the table is damaged"), at);
            } else {
                extents.push(Extent {
                    start: offset,
                    end: offset + used.div_ceil(MIB) * MIB,
                    what: Occupant::Block(i),
                    named_at: at,
                });
                // Hyper-V gives the last block its full size even when the disk ends inside
                // it: that space is the block's, not a leak.
                *block_end = (*block_end).max((offset + g.block_size).min(len));
            }
        }
    }
    for (chunk, at) in partial {
        if !bitmap_present.get(chunk as usize).copied().unwrap_or(false) {
            listed.add(report, Severity::Corruption, format!("a block of chunk {chunk} is partially present, but the chunk's sector bitmap (BAT entry {}) is not", g.bitmap_index(chunk)), at);
        }
    }
    Ok(stored)
}

fn payload_state(bits: u64) -> Option<PayloadState> {
    Some(match bits {
        0 => PayloadState::NotPresent,
        1 => PayloadState::Undefined,
        2 => PayloadState::Zero,
        3 => PayloadState::Unmapped,
        6 => PayloadState::FullyPresent,
        7 => PayloadState::PartiallyPresent,
        _ => return None,
    })
}

/// Reports every extent that overlaps one before it (sorted by start).
fn check_overlaps(extents: &mut [Extent], report: &mut CheckReport, listed: &mut Listed) {
    // At one start, the file's own structures first, so that a finding names the entry.
    extents.sort_by_key(|e| (e.start, !matches!(e.what, Occupant::Structure(_)), e.end));
    let mut reach: Option<usize> = None;
    for i in 0..extents.len() {
        if let Some(r) = reach {
            let (a, b) = (&extents[r], &extents[i]);
            if b.start < a.end {
                let msg = format!(
                    "{} (at {:#x}) overlaps {} (at {:#x})",
                    capitalised(&b.what.to_string()),
                    b.start,
                    a.what,
                    a.start
                );
                listed.add(report, Severity::Corruption, msg, b.named_at);
            }
            if extents[i].end <= extents[r].end {
                continue;
            }
        }
        reach = Some(i);
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn inspect(file: Arc<dyn Storage>, path: &Path, gate: Option<&Gate>) -> Result<Inspection> {
    let mut report = CheckReport::new(path, super::FORMAT);
    let mut fixes = Vec::new();
    let mut sig = [0u8; 8];
    if file.len() < 8 || {
        file.read_exact_at(&mut sig, 0)?;
        &sig != FILE_SIGNATURE
    } {
        report.add(
            Severity::Corruption,
            "the file identifier has no 'vhdxfile' signature",
            Some(0),
        );
    }
    let (header, sequences) = check_headers(file.as_ref(), &mut report, &mut fixes)?;
    let mut inspection = Inspection {
        report,
        fixes,
        current: Some(header.clone()),
        sequences,
        log_broken: false,
    };
    let report = &mut inspection.report;
    let fixes = &mut inspection.fixes;
    let len = file.len();
    let mut extents = vec![Extent {
        start: 0,
        end: HEADER_SECTION,
        what: Occupant::Structure("the header section".into()),
        named_at: 0,
    }];

    // The log: where it is, then whether it holds entries to replay.
    let (log_offset, log_length) = (header.log_offset, u64::from(header.log_length));
    let log_field = header.offset + 68;
    if log_length > 0 {
        if !log_length.is_multiple_of(MIB)
            || !log_offset.is_multiple_of(MIB)
            || log_offset < HEADER_SECTION
        {
            report.add(Severity::Corruption, format!("header {} names a log of {log_length} bytes at {log_offset:#x}, which is not a range aligned to 1 MiB after the header section", header.copy), Some(log_field));
        } else if log_offset.checked_add(log_length).is_none_or(|e| e > len) {
            report.add(
                Severity::Corruption,
                format!("header {} names a log of {log_length} bytes at {log_offset:#x}, past the end of the file ({len} bytes)", header.copy),
                Some(log_field),
            );
        } else {
            extents.push(Extent {
                start: log_offset,
                end: log_offset + log_length,
                what: Occupant::Structure("the log".into()),
                named_at: log_field,
            });
        }
    }
    let mut view = file.clone();
    if header.has_log() {
        match log::replay(file.clone(), &header) {
            Ok(Some((overlay, summary))) => {
                report.add(
                    Severity::Corruption,
                    format!(
                        "the log holds {} entries (sequence {} to {}) that were not applied: the file was not closed cleanly and needs its log replayed ('-r all' replays it in place); the rest is checked as replayed",
                        summary.entries, summary.sequence.0, summary.sequence.1
                    ),
                    Some(log_offset),
                );
                let writes = overlay.patches().map(|(at, b)| (at, b.to_vec())).collect();
                fixes.push(Fix::ReplayLog {
                    writes,
                    len: summary.file_len,
                    finding: report.findings.len() - 1,
                });
                view = Arc::new(overlay);
            }
            Ok(None) => {
                report.add(
                    Severity::Warning,
                    format!("header {} names a log (GUID {}) that holds no entry: there is nothing to replay", header.copy, braced(&header.log_guid)),
                    Some(header.offset + 48),
                );
                fixes.push(Fix::ClearLog {
                    finding: report.findings.len() - 1,
                });
            }
            Err(e) if e.kind() == ErrorKind::Io => return Err(e),
            Err(e) => {
                inspection.log_broken = true;
                if e.kind() == ErrorKind::Unsupported {
                    report.check_errors += 1;
                }
                report.add(
                    Severity::Corruption,
                    format!("{}; the rest is checked without the log", e.message()),
                    e.offset().or(Some(log_offset)),
                );
            }
        }
    }
    let file = view;
    let len = file.len();

    let Some(entries) = check_region_tables(file.as_ref(), report, fixes)? else {
        return Err(Error::corrupt(
            "neither VHDX region table is valid, so nothing past them can be checked",
        )
        .at_offset(TABLE_OFFSETS[0])
        .with_path(path));
    };
    let Some((bat_region, meta_region)) = check_regions(&entries, len, report, &mut extents) else {
        check_overlaps(&mut extents, report, &mut Listed::new());
        return Ok(inspection);
    };
    let Some(meta) = check_metadata(file.as_ref(), meta_region, report)? else {
        check_overlaps(&mut extents, report, &mut Listed::new());
        return Ok(inspection);
    };
    let g = Geometry::new(&meta);
    let mut listed = Listed::new();
    let mut block_end = 0;
    let stored = check_bat(
        file.as_ref(),
        bat_region,
        &g,
        report,
        &mut extents,
        &mut listed,
        &mut block_end,
    )?;
    check_overlaps(&mut extents, report, &mut listed);
    listed.close(report);
    report.total_clusters = Some(g.data_blocks);
    report.allocated_clusters = Some(stored);

    // Space nothing uses at the end of the file.
    let data_end = extents
        .iter()
        .map(|e| e.end)
        .max()
        .unwrap_or(0)
        .max(block_end);
    report.image_end_offset = Some(data_end);
    // Less than a MiB is padding (Disk2VHD leaves 512 bytes): VHDX allocates in MiBs, so
    // only a whole MiB or more is space a writer allocated and lost.
    if len >= data_end + MIB {
        report.add(
            Severity::Leak,
            format!(
                "{} bytes after the last used byte are not used by anything",
                len - data_end
            ),
            Some(data_end),
        );
        fixes.push(Fix::Truncate {
            end: data_end,
            finding: report.findings.len() - 1,
        });
    }

    // The parent.
    if let Some(locator) = &meta.parent_locator {
        match gate {
            Some(gate) => check_parent(report, path, locator, gate),
            None => report.add(
                Severity::Warning,
                "the parent was not looked for (no gate)",
                Some(locator.offset),
            ),
        }
    }
    Ok(inspection)
}

fn check_parent(
    report: &mut CheckReport,
    path: &Path,
    locator: &metadata::ParentLocator,
    gate: &Gate,
) {
    // The user named this file: its locator's values may be quoted.
    let p = parent::locate(locator, true);
    for problem in &p.problems {
        report.add(Severity::Warning, problem.clone(), Some(locator.offset));
    }
    let Some(parent_file) = crate::check::find_parent(
        report,
        gate,
        path,
        &p.stored_name,
        &p.names,
        Some(locator.offset),
    ) else {
        return;
    };
    let parent_path = parent_file.name().to_path_buf();
    let options = OpenOptions {
        gate: *gate,
        ..OpenOptions::default()
    };
    match open_layer(parent_file, &options, Provenance::NamedByImage) {
        Err(e) => report.add(
            Severity::Corruption,
            format!(
                "the parent '{}' cannot be opened: {e}",
                parent_path.display()
            ),
            Some(locator.offset),
        ),
        Ok((layer, _)) => {
            if let Some(vhdx) = layer.as_any().downcast_ref::<VhdxLayer>() {
                if let Err(why) = parent::check_linkage(&p, &vhdx.header().data_write_guid) {
                    report.add(
                        Severity::Corruption,
                        format!("the parent '{}': {why}", parent_path.display()),
                        Some(locator.offset),
                    );
                }
            } else if layer.format() == crate::formats::vhd::FORMAT {
                report.add(
                    Severity::Warning,
                    format!("the parent '{}' is a VHD, which has no DataWriteGuid: the parent linkage cannot be checked", parent_path.display()),
                    Some(locator.offset),
                );
            } else {
                report.add(
                    Severity::Corruption,
                    format!(
                        "the parent '{}' is a {} image, but a differencing VHDX's parent must be a VHDX or a VHD",
                        parent_path.display(),
                        layer.format()
                    ),
                    Some(locator.offset),
                );
            }
        }
    }
}

/// The repair's writes, counted for the crash tests' abort hook ([`ABORT_AFTER_ENV`]).
struct Out {
    file: HostFile,
    done: u64,
    abort_after: Option<u64>,
}

impl Out {
    fn step(&mut self) {
        if self.abort_after == Some(self.done) {
            // As a `kill -9` would stop it: no unwinding, nothing more written.
            std::process::abort();
        }
        self.done += 1;
    }

    fn write(&mut self, bytes: &[u8], at: u64) -> Result<()> {
        self.step();
        self.file.write_all_at(bytes, at)
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        self.step();
        self.file.set_len(len)
    }

    fn sync(&mut self) -> Result<()> {
        self.file.sync()
    }
}

/// A header to write into the slot that is not `current`'s: a copy of it with a sequence
/// number above both, a fresh FileWriteGuid (this is a new writer) and, when `clear_log`, no
/// log GUID (the log is applied).
fn next_header(
    file: &HostFile,
    current: &Header,
    sequences: &[u64],
    clear_log: bool,
) -> Result<(Vec<u8>, u64)> {
    let mut b = vec![0u8; HEADER_SIZE];
    file.read_exact_at(&mut b, current.offset)?;
    let seq = sequences.iter().copied().max().unwrap_or(0).wrapping_add(1);
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..32].copy_from_slice(&uuid::Uuid::new_v4().to_bytes_le());
    if clear_log {
        b[48..64].fill(0);
    }
    let sum = checksum(&b, 4);
    b[4..8].copy_from_slice(&sum.to_le_bytes());
    Ok((b, HEADER_OFFSETS[2 - current.copy]))
}

fn apply(found: Inspection, path: &Path, mode: RepairMode) -> Result<CheckReport> {
    let Inspection {
        mut report,
        fixes,
        current,
        sequences,
        log_broken,
    } = found;
    let abort_after = std::env::var(ABORT_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let mut out = Out {
        file: HostFile::open_rw(path)?,
        done: 0,
        abort_after,
    };
    let all = mode == RepairMode::All;
    let pending = fixes.iter().any(|f| matches!(f, Fix::ReplayLog { .. }));
    // A pending log can only be repaired by replaying it; until then the file is what the log
    // was written against, and nothing else may change it.
    let may_write = !log_broken && (all || !pending);
    if !may_write {
        return Ok(report);
    }
    let mut header = None;
    // 1. The log's writes, in place, then the file's length; synced before the header.
    for fix in &fixes {
        if let Fix::ReplayLog {
            writes,
            len,
            finding,
        } = fix
        {
            for (at, bytes) in writes {
                out.write(bytes, *at)?;
            }
            if *len > out.file.len() {
                out.set_len(*len)?;
            }
            out.sync()?;
            report.findings[*finding].repaired = true;
            header = Some(true);
        }
    }
    // 2. Region table copies, from the good one.
    if all {
        for fix in &fixes {
            if let Fix::RegionTable { from, to, finding } = fix {
                let b =
                    out.file
                        .read_vec(TABLE_OFFSETS[*from], TABLE_SIZE as u64, "region table")?;
                out.write(&b, TABLE_OFFSETS[*to])?;
                report.findings[*finding].repaired = true;
            }
        }
        for fix in &fixes {
            match fix {
                Fix::ClearLog { finding } => {
                    header = Some(true);
                    report.findings[*finding].repaired = true;
                }
                Fix::Header { finding } => {
                    header.get_or_insert(false);
                    report.findings[*finding].repaired = true;
                }
                _ => {}
            }
        }
    }
    // 3. The new header, in the slot that is not current, after everything it vouches for.
    if let (Some(clear_log), Some(current)) = (header, &current) {
        out.sync()?;
        let (b, at) = next_header(&out.file, current, &sequences, clear_log)?;
        out.write(&b, at)?;
        out.sync()?;
    }
    // 4. Unused space, once no log can need the file's old length.
    for fix in &fixes {
        if let Fix::Truncate { end, finding } = fix {
            out.set_len(*end)?;
            report.findings[*finding].repaired = true;
        }
    }
    out.sync()?;
    Ok(report)
}
