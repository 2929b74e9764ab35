//! `check` for VHDs: footers and their copy, header, BAT entries (in bounds, not overlapping
//! each other or the metadata), the parent link, space nothing uses; and `-r`, which rewrites
//! a missing or damaged footer and cuts unused space off the end.

use super::bat::{self, Bat};
use super::bitmap::bitmap_bytes;
use super::dynamic_header::{DynamicHeader, HEADER_SIZE, HEADER_VERSION};
use super::footer::{
    DiskType, FEATURE_RESERVED, FEATURE_TEMPORARY, FOOTER_SIZE, FORMAT_VERSION, Footer, Geometry,
    NO_DATA_OFFSET, uuid_text, vhd_now,
};
use super::parent;
use super::reader::{VhdLayer, read_end_footer};
use crate::check::{CheckReport, RepairMode, Severity};
use crate::error::{Error, ErrorKind, Result};
use crate::format::Provenance;
use crate::gate::Gate;
use crate::host_file::HostFile;
use crate::image::{OpenOptions, open_layer};
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

/// blktap allows creation times this far in the future (clock skew with NFS servers).
const TIMESTAMP_SLACK: u32 = 1800;

/// A named byte range of the file, for overlap checks.
#[derive(Debug, Clone)]
struct Region {
    start: u64,
    end: u64,
    what: String,
    /// Reading needs it: damage is a corruption (a parent locator is only one of several
    /// ways to find the parent: damage there is a warning).
    essential: bool,
}

/// Findings about single BAT entries reported before the rest are counted in a summary: a
/// table of garbage has one problem per entry, millions of lines nobody reads.
const MAX_ENTRY_FINDINGS: usize = 100;

/// BAT entry findings: the first [`MAX_ENTRY_FINDINGS`], then counts by severity.
struct EntryFindings<'a> {
    report: &'a mut CheckReport,
    reported: usize,
    dropped_corruptions: u64,
    dropped_warnings: u64,
}

impl<'a> EntryFindings<'a> {
    fn new(report: &'a mut CheckReport) -> Self {
        EntryFindings {
            report,
            reported: 0,
            dropped_corruptions: 0,
            dropped_warnings: 0,
        }
    }

    fn add(&mut self, severity: Severity, message: String, offset: Option<u64>) {
        if self.reported < MAX_ENTRY_FINDINGS {
            self.report.add(severity, message, offset);
            self.reported += 1;
        } else if severity == Severity::Warning {
            self.dropped_warnings += 1;
        } else {
            self.dropped_corruptions += 1;
        }
    }

    fn close(self) {
        if self.dropped_corruptions > 0 {
            self.report.add(
                Severity::Corruption,
                format!(
                    "{} more problems with BAT entries (only the first {MAX_ENTRY_FINDINGS} are listed)",
                    self.dropped_corruptions
                ),
                None,
            );
        }
        if self.dropped_warnings > 0 {
            self.report.add(
                Severity::Warning,
                format!(
                    "{} more BAT entries allocate blocks past the end of the disk (only the first {MAX_ENTRY_FINDINGS} problems are listed)",
                    self.dropped_warnings
                ),
                None,
            );
        }
    }
}

/// What `-r` would do, each tied to the finding it fixes.
enum Fix {
    /// Write the footer copy at 0 again from the end footer.
    CopyAtZero { finding: usize },
    /// Put the footer right after the last used byte and cut the file there.
    EndFooter { findings: Vec<usize>, leak: bool },
}

/// Checks the VHD at `path`; with `repair`, fixes what can be fixed safely. The parent is
/// looked for through `gate`.
pub fn check(path: &Path, repair: Option<RepairMode>, gate: &Gate) -> Result<CheckReport> {
    let file = if repair.is_some() {
        HostFile::open_rw(path)?
    } else {
        HostFile::open(path)?
    };
    check_in(&file, repair, gate)
}

/// Checks the VHD in an already-open `storage` (memory, a window into a package; the fuzz
/// targets use it), reading only. The parent is looked for through `gate`, against the
/// storage's name. Repairs write to a file, so `repair` is refused here: use [`check`].
pub fn check_storage(
    storage: Arc<dyn Storage>,
    repair: Option<RepairMode>,
    gate: &Gate,
) -> Result<CheckReport> {
    if repair.is_some() {
        return Err(
            Error::unsupported("a VHD is repaired only as a file named by its path")
                .with_path(storage.name()),
        );
    }
    check_in(storage.as_ref(), None, gate)
}

/// The check of `file`; with `repair`, `file` names the host file the fixes are written to.
fn check_in(file: &dyn Storage, repair: Option<RepairMode>, gate: &Gate) -> Result<CheckReport> {
    let path = file.name();
    let mut report = CheckReport::new(path, super::FORMAT);
    let mut fixes = Vec::new();
    let len = file.len();

    // The footers.
    let end = read_end_footer(file);
    let copy = if len >= FOOTER_SIZE {
        let mut b = [0u8; 512];
        file.read_exact_at(&mut b, 0)?;
        Some(Footer::parse(&b))
    } else {
        None
    };
    let mut end_footer_ok = true;
    let footer = match (end, copy) {
        (Ok(f), copy) => {
            if f.disk_type.is_sparse() {
                match copy {
                    Some(Ok(c)) if c.bytes == f.bytes => {}
                    Some(Ok(c)) => {
                        if same_disk(&c, &f) {
                            report.add(
                                Severity::Corruption,
                                "the footer copy at offset 0 differs from the end footer",
                                Some(0),
                            );
                            fixes.push(Fix::CopyAtZero {
                                finding: report.findings.len() - 1,
                            });
                        } else {
                            report.add(
                                Severity::Corruption,
                                format!(
                                    "the footer copy at offset 0 describes another disk than the end footer (size {} vs {}, UUID {} vs {}); cannot tell which is right, so -r leaves it",
                                    c.current_size,
                                    f.current_size,
                                    uuid_text(&c.uuid),
                                    uuid_text(&f.uuid)
                                ),
                                Some(0),
                            );
                        }
                    }
                    Some(Err(e)) => {
                        report.add(
                            Severity::Corruption,
                            format!("the footer copy at offset 0 is damaged: {e}"),
                            Some(0),
                        );
                        fixes.push(Fix::CopyAtZero {
                            finding: report.findings.len() - 1,
                        });
                    }
                    None => {}
                }
            }
            f
        }
        (Err(e), Some(Ok(c))) if c.disk_type.is_sparse() => {
            end_footer_ok = false;
            report.add(
                Severity::Corruption,
                format!("the end footer is damaged or missing: {e}"),
                Some(len.saturating_sub(FOOTER_SIZE)),
            );
            fixes.push(Fix::EndFooter {
                findings: vec![report.findings.len() - 1],
                leak: false,
            });
            c
        }
        (Err(e), _) => {
            return Err(Error::corrupt(format!("not a usable VHD: {e}"))
                .at_offset(len.saturating_sub(FOOTER_SIZE))
                .with_path(path));
        }
    };
    check_footer_fields(&mut report, &footer);
    let (size, _) = footer.virtual_size();

    if footer.disk_type == DiskType::Fixed {
        let data = len - if len % 512 == 511 { 511 } else { 512 };
        if size > data {
            report.add(
                Severity::Corruption,
                format!(
                    "the fixed VHD is truncated: its size is {size} bytes but the file holds {data} bytes of data"
                ),
                None,
            );
        }
        report.image_end_offset = Some(size + FOOTER_SIZE);
        return Ok(report);
    }

    // The header.
    let header_at = footer.data_offset;
    if header_at.checked_add(HEADER_SIZE).is_none_or(|e| e > len) {
        report.add(
            Severity::Corruption,
            format!("the footer puts the dynamic disk header at {header_at:#x}, past the end of the file"),
            Some(header_at),
        );
        return Ok(report);
    }
    let mut raw = [0u8; 1024];
    file.read_exact_at(&mut raw, header_at)?;
    let header = match DynamicHeader::parse(&raw) {
        Ok(h) => h,
        Err(e) => {
            report.add(Severity::Corruption, e.to_string(), Some(header_at));
            return Ok(report);
        }
    };
    if header_at != FOOTER_SIZE {
        report.add(
            Severity::Warning,
            format!("the dynamic disk header is at {header_at:#x}, not right after the footer copy (Xen Orchestra requires 512)"),
            Some(header_at),
        );
    }
    if header.version != HEADER_VERSION {
        report.add(
            Severity::Warning,
            format!("the header version is {:#x}, not 0x10000", header.version),
            Some(header_at),
        );
    }
    if header.data_offset != u64::MAX {
        report.add(
            Severity::Warning,
            format!(
                "the header's data offset is {:#x}, not all ones",
                header.data_offset
            ),
            Some(header_at),
        );
    }
    if header.reserved_nonzero {
        report.add(
            Severity::Warning,
            "reserved header fields are not zero",
            Some(header_at),
        );
    }

    // The BAT.
    let block_size = u64::from(header.block_size);
    let entries = u64::from(header.max_table_entries);
    let needed = size.div_ceil(block_size);
    report.total_clusters = Some(needed);
    if entries < needed {
        report.add(
            Severity::Corruption,
            format!("the BAT has {entries} entries, too few for a disk of {size} bytes in blocks of {block_size} (needs {needed})"),
            Some(header_at),
        );
    }
    if header.table_offset % 512 != 0 {
        report.add(
            Severity::Warning,
            format!(
                "the BAT offset {:#x} is not a multiple of 512",
                header.table_offset
            ),
            Some(header.table_offset),
        );
    }
    // Every entry is kept, even a bad one: the checks below report them all.
    let table = match Bat::read(file, header.table_offset, entries, &mut |_, _| Ok(())) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::Io => return Err(e),
        Err(e) => {
            let severity = if e.kind() == ErrorKind::Unsupported {
                // Too large to hold, not wrong: the check could not run.
                report.check_errors += 1;
                Severity::Warning
            } else {
                Severity::Corruption
            };
            report.add(
                severity,
                e.message().to_string(),
                e.offset().or(Some(header.table_offset)),
            );
            return Ok(report);
        }
    };

    let mut regions = vec![
        Region {
            start: 0,
            end: FOOTER_SIZE,
            what: "footer copy".into(),
            essential: true,
        },
        Region {
            start: header_at,
            end: header_at + HEADER_SIZE,
            what: "dynamic disk header".into(),
            essential: true,
        },
        Region {
            start: header.table_offset,
            end: header.table_offset + bat::bat_bytes(entries),
            what: "block allocation table".into(),
            essential: true,
        },
    ];
    for l in &header.locators {
        regions.push(Region {
            start: l.data_offset,
            end: l.data_offset.saturating_add(l.reserved_bytes()),
            what: format!("parent locator {} ({})", l.index, parent::code_text(l.code)),
            essential: false,
        });
    }
    if let Some(batmap) = xen_batmap(file, header.table_offset + bat::bat_bytes(entries)) {
        regions.extend(batmap);
    }
    let footer_at = if end_footer_ok {
        len - if len % 512 == 511 { 511 } else { 512 }
    } else {
        len
    };
    let mut truncated = false;
    for r in &regions[1..] {
        if r.end > footer_at {
            let severity = if r.essential {
                truncated = true;
                Severity::Corruption
            } else {
                Severity::Warning
            };
            report.add(
                severity,
                format!("the {} runs past the end of the file", r.what),
                Some(r.start),
            );
        }
    }
    // What lies past the end cannot be used: keep it out of the layout.
    regions.retain(|r| r.essential || r.end <= footer_at);
    let mut data_end = regions.iter().map(|r| r.end).max().unwrap_or(0);

    let stride = bitmap_bytes(header.block_size) + block_size;
    // One finding per bad entry, up to a point: a table of garbage has millions.
    let mut entry_findings = EntryFindings::new(&mut report);
    // Allocated entries by index (4 bytes each), sorted by block below to find overlaps.
    let mut blocks: Vec<u32> = Vec::new();
    let mut allocated = 0u64;
    for (index, host) in table.allocated() {
        let at = Some(header.table_offset + index * 4);
        let block_end = host + stride;
        if index < needed {
            allocated += 1;
        } else {
            entry_findings.add(
                Severity::Warning,
                format!("BAT entry {index} allocates a block past the end of the disk"),
                at,
            );
        }
        if block_end > footer_at {
            entry_findings.add(
                Severity::Corruption,
                format!("BAT entry {index} points past the end of the file (block at {host:#x}, {} bytes of it missing)", block_end - footer_at),
                at,
            );
            truncated = true;
        }
        for r in &regions {
            if host < r.end && r.start < block_end {
                entry_findings.add(
                    Severity::Corruption,
                    format!(
                        "BAT entry {index} (block at {host:#x}) overlaps the {}",
                        r.what
                    ),
                    at,
                );
            }
        }
        // The table holds at most MAX_BAT_ENTRIES (< 2^32) entries.
        blocks.push(index as u32);
        data_end = data_end.max(block_end);
    }
    let host_of = |i: u32| table.block_offset(u64::from(i)).unwrap_or(0);
    blocks.sort_unstable_by_key(|&i| (host_of(i), i));
    for pair in blocks.windows(2) {
        let (ia, ib) = (pair[0], pair[1]);
        let (a, b) = (host_of(ia), host_of(ib));
        if b < a + stride {
            entry_findings.add(
                Severity::Corruption,
                format!("BAT entries {ia} and {ib} overlap (blocks at {a:#x} and {b:#x})"),
                Some(header.table_offset + u64::from(ib) * 4),
            );
        }
    }
    drop(blocks);
    entry_findings.close();
    report.allocated_clusters = Some(allocated);

    // Space nothing uses at the end: a whole block's worth or more is what an interrupted
    // writer leaves behind (qemu moves the footer before it writes the BAT entry); less is
    // alignment padding that real tools leave, not worth a complaint.
    if end_footer_ok && footer_at > data_end && footer_at - data_end >= stride {
        report.add(
            Severity::Leak,
            format!(
                "{} bytes between the last block and the footer are not used by anything",
                footer_at - data_end
            ),
            Some(data_end),
        );
        let finding = report.findings.len() - 1;
        match fixes
            .iter_mut()
            .find(|f| matches!(f, Fix::EndFooter { .. }))
        {
            Some(Fix::EndFooter { findings, .. }) => findings.push(finding),
            _ => fixes.push(Fix::EndFooter {
                findings: vec![finding],
                leak: true,
            }),
        }
    }
    report.image_end_offset = Some(data_end + FOOTER_SIZE);

    // The parent link.
    if footer.disk_type == DiskType::Differencing {
        check_parent(&mut report, file, path, &header, gate);
    } else if header.has_parent_uuid()
        || !header.locators.is_empty()
        || !header.parent_name.is_empty()
    {
        report.add(
            Severity::Warning,
            "a dynamic (not differencing) disk carries parent fields",
            Some(header_at),
        );
    }

    if let Some(mode) = repair {
        apply_fixes(&mut report, fixes, mode, file, &footer, data_end, truncated)?;
    }
    Ok(report)
}

/// Two valid footers that differ only in fields that do not change what the disk is.
fn same_disk(a: &Footer, b: &Footer) -> bool {
    a.disk_type == b.disk_type
        && a.current_size == b.current_size
        && a.geometry == b.geometry
        && a.creator_app == b.creator_app
        && a.data_offset == b.data_offset
        && a.uuid == b.uuid
}

fn check_footer_fields(report: &mut CheckReport, f: &Footer) {
    let mut warn = |m: String| report.add(Severity::Warning, m, None);
    if f.features & FEATURE_RESERVED == 0 {
        warn("the footer's reserved feature bit is not set".into());
    }
    if f.features & !(FEATURE_RESERVED | FEATURE_TEMPORARY) != 0 {
        warn(format!(
            "the footer has unknown feature bits {:#x}",
            f.features
        ));
    }
    if f.format_version != FORMAT_VERSION {
        warn(format!(
            "the file format version is {:#x}, not 0x10000",
            f.format_version
        ));
    }
    if f.disk_type == DiskType::Fixed && f.data_offset != NO_DATA_OFFSET {
        warn(format!(
            "a fixed disk's data offset should be all ones, not {:#x}",
            f.data_offset
        ));
    }
    if f.timestamp > vhd_now().saturating_add(TIMESTAMP_SLACK) {
        warn("the creation time is in the future".into());
    }
    if f.geometry.packed() > Geometry::for_size(f.current_size).packed() {
        warn(format!(
            "the geometry {} is larger than the specification's for the size ({})",
            f.geometry,
            Geometry::for_size(f.current_size)
        ));
    }
    if f.uuid == [0; 16] {
        warn("the disk has no UUID (all zeros)".into());
    }
    if f.saved_state > 1 {
        warn(format!(
            "the saved-state flag is {}, not 0 or 1",
            f.saved_state
        ));
    }
    if f.bytes[85..].iter().any(|&b| b != 0) {
        warn("reserved footer bytes are not zero".into());
    }
    if f.original_size > f.current_size {
        warn("the original size is larger than the current size".into());
    }
}

/// XenServer's batmap after the BAT ("tdbatmap" header, then the map): its regions, so that
/// they count as metadata.
fn xen_batmap(file: &dyn Storage, at: u64) -> Option<Vec<Region>> {
    let mut h = [0u8; 24];
    file.read_exact_at(&mut h, at).ok()?;
    if &h[..8] != b"tdbatmap" {
        return None;
    }
    let offset = u64::from_be_bytes(h[8..16].try_into().ok()?);
    let sectors = u64::from(u32::from_be_bytes(h[16..20].try_into().ok()?));
    Some(vec![
        Region {
            start: at,
            end: at + 512,
            what: "XenServer batmap header".into(),
            essential: false,
        },
        Region {
            start: offset,
            end: offset.saturating_add(sectors * 512),
            what: "XenServer batmap".into(),
            essential: false,
        },
    ])
}

fn check_parent(
    report: &mut CheckReport,
    file: &dyn Storage,
    path: &Path,
    header: &DynamicHeader,
    gate: &Gate,
) {
    let found = parent::locate(file, header, Provenance::User);
    for p in &found.problems {
        report.add(Severity::Warning, p.clone(), None);
    }
    let Some(parent_file) =
        crate::check::find_parent(report, gate, path, &found.stored_name, &found.names, None)
    else {
        return;
    };
    let parent_path = parent_file.name().to_path_buf();
    if !header.has_parent_uuid() {
        report.add(
            Severity::Warning,
            "no parent UUID is recorded, so the parent cannot be verified",
            None,
        );
        return;
    }
    let options = OpenOptions {
        format: Some(super::FORMAT),
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
            None,
        ),
        Ok((layer, _)) => match layer.as_any().downcast_ref::<VhdLayer>() {
            None => report.add(
                Severity::Corruption,
                format!(
                    "the parent '{}' is a {} image, not a VHD",
                    parent_path.display(),
                    layer.format()
                ),
                None,
            ),
            Some(vhd) if vhd.footer().uuid != header.parent_uuid => report.add(
                Severity::Corruption,
                format!(
                    "the parent '{}' has UUID {}, but this disk was made against {}",
                    parent_path.display(),
                    uuid_text(&vhd.footer().uuid),
                    uuid_text(&header.parent_uuid)
                ),
                None,
            ),
            Some(vhd) => {
                let stamp = header.parent_timestamp;
                if stamp != 0 && stamp != vhd.footer().timestamp {
                    report.add(
                        Severity::Warning,
                        format!(
                            "the parent's timestamp is {} but this disk recorded {stamp}",
                            vhd.footer().timestamp
                        ),
                        None,
                    );
                }
            }
        },
    }
}

fn apply_fixes(
    report: &mut CheckReport,
    fixes: Vec<Fix>,
    mode: RepairMode,
    file: &dyn Storage,
    footer: &Footer,
    data_end: u64,
    truncated: bool,
) -> Result<()> {
    // Repairs write through a second handle: the checked one may be read-only in spirit.
    let mut out = HostFile::open_rw(file.name())?;
    for fix in fixes {
        match fix {
            Fix::CopyAtZero { finding } if mode == RepairMode::All => {
                out.write_all_at(&footer.bytes, 0)?;
                report.findings[finding].repaired = true;
            }
            Fix::EndFooter { findings, leak } => {
                // Only a leak may be fixed in leaks mode; never move the footer over blocks
                // that run past the end (that would hide the missing data behind zeros).
                if (mode == RepairMode::Leaks && !leak) || truncated {
                    continue;
                }
                out.write_all_at(&footer.bytes, data_end)?;
                out.set_len(data_end + FOOTER_SIZE)?;
                for f in findings {
                    report.findings[f].repaired = true;
                }
            }
            Fix::CopyAtZero { .. } => {}
        }
    }
    out.sync()
}

#[cfg(test)]
mod tests {
    use super::super::footer::checksum;
    use super::super::reader::tests::make_with;
    use super::*;
    use std::os::unix::fs::FileExt;

    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// A 4 MiB dynamic VHD in 4 KiB blocks (1024 entries) with its first block stored:
    /// (path, bytes, table offset).
    fn small(dir: &Path) -> (std::path::PathBuf, Vec<u8>, usize) {
        let path = make_with(dir, "block_size=4K", 4 << 20, &[0]);
        let bytes = std::fs::read(&path).unwrap();
        let table = DynamicHeader::parse(bytes[512..1536].try_into().unwrap())
            .unwrap()
            .table_offset as usize;
        (path, bytes, table)
    }

    #[test]
    fn a_table_of_bad_entries_is_summarised_past_a_hundred_findings() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut bytes, table) = small(dir.path());
        // Every entry on the first block: 1023 overlapping pairs.
        let first = u32::from_be_bytes(bytes[table..table + 4].try_into().unwrap());
        for i in 0..1024 {
            put32(&mut bytes, table + 4 * i, first);
        }
        std::fs::write(&path, &bytes).unwrap();
        let report = check(&path, None, &Gate::confined()).unwrap();
        let overlaps = report
            .findings
            .iter()
            .filter(|f| f.message.contains("overlap"))
            .count();
        assert_eq!(overlaps, MAX_ENTRY_FINDINGS, "{:?}", report.findings);
        let last = report.findings.last().unwrap();
        assert_eq!(
            last.message,
            "923 more problems with BAT entries (only the first 100 are listed)"
        );
        assert_eq!(report.exit_code(), 2);
        assert_eq!(report.allocated_clusters, Some(1024));
    }

    #[test]
    fn a_table_that_is_a_hole_is_a_corruption_at_the_hole() {
        let dir = tempfile::tempdir().unwrap();
        // 64 GiB in 2 MiB blocks: a 128 KiB table, left out of the file.
        let path = make_with(dir.path(), "", 64 << 30, &[0]);
        let bytes = std::fs::read(&path).unwrap();
        let table = DynamicHeader::parse(bytes[512..1536].try_into().unwrap())
            .unwrap()
            .table_offset as usize;
        let table_end = table + 32768 * 4;
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(bytes.len() as u64).unwrap();
        f.write_all_at(&bytes[..table], 0).unwrap();
        f.write_all_at(&bytes[table_end..], table_end as u64)
            .unwrap();
        let hole = HostFile::open(&path)
            .unwrap()
            .next_hole(table as u64)
            .unwrap();
        if hole >= table_end as u64 {
            return; // A file system that does not report holes.
        }
        let report = check(&path, None, &Gate::confined()).unwrap();
        let f = report.findings.last().unwrap();
        assert!(
            f.severity == Severity::Corruption
                && f.message.starts_with("block allocation table is missing")
                && f.offset == Some(hole),
            "{:?}",
            report.findings
        );
        assert_eq!(report.exit_code(), 2);
    }

    #[test]
    fn a_table_over_the_limit_is_not_checked_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut bytes, _) = small(dir.path());
        // 70 million entries claimed (280 MiB), in a sparse file large enough to hold them.
        put32(&mut bytes, 512 + 28, 70_000_000);
        let sum = checksum(&bytes[512..1536], 36..40);
        put32(&mut bytes, 512 + 36, sum);
        let n = bytes.len();
        let len = 300u64 << 20;
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(len).unwrap();
        f.write_all_at(&bytes[..n - 512], 0).unwrap();
        f.write_all_at(&bytes[n - 512..], len - 512).unwrap();
        let report = check(&path, None, &Gate::confined()).unwrap();
        let f = report.findings.last().unwrap();
        assert!(
            f.severity == Severity::Warning
                && f.message.contains("at most 67108864 entries, 256 MiB"),
            "{:?}",
            report.findings
        );
        assert_eq!(report.exit_code(), 1);
    }

    #[test]
    fn a_storage_in_memory_is_checked_as_its_file_is_but_not_repaired() {
        use crate::storage::Memory;
        let dir = tempfile::tempdir().unwrap();
        let (path, mut bytes, table) = small(dir.path());
        // Entry 1 points past the end of the file: one corruption to find both ways.
        put32(&mut bytes, table + 4, 0x0100_0000);
        std::fs::write(&path, &bytes).unwrap();
        let gate = Gate::confined();
        let from_file = check(&path, None, &gate).unwrap();
        let memory = Arc::new(Memory::new(path.clone(), bytes));
        let from_memory = check_storage(memory.clone(), None, &gate).unwrap();
        assert_eq!(
            serde_json::to_string(&from_memory).unwrap(),
            serde_json::to_string(&from_file).unwrap()
        );
        assert_eq!(from_memory.exit_code(), 2, "{:?}", from_memory.findings);
        let refused = check_storage(memory, Some(RepairMode::All), &gate).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Unsupported);
    }
}
