//! `check` for VMDK: extents present and as large as the descriptor says; grain directories
//! and tables inside their files and equal to their redundant copies; grains inside the file,
//! outside the metadata, not shared, and (when compressed) well-formed: marker LBA matching
//! the table, inflating to at most one grain; stream markers well-formed. Exit codes as
//! qemu-img: 0 clean, 2 corruptions, 3 leaks only, 1 could not check.

use super::descriptor::{Descriptor, MAX_DESCRIPTOR_BYTES};
use super::extent::{ExtentData, MarkerWalk, SparseExtent, SparseKind};
use super::grain::{self, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT};
use super::grain_table::{GrainEntry, GrainTables};
use super::reader::VmdkLayer;
use super::sparse_header::{self, DirectoryAt, SparseHeader};
use crate::check::{CheckReport, RepairMode, Severity};
use crate::error::Result;
use crate::format::{OpenContext, Provenance, Salvage};
use crate::gate::{Gate, Lookup, Role};
use crate::host_file::HostFile;
use crate::storage::{Storage, StorageExt};
use std::path::Path;
use std::sync::Arc;

/// Findings of one kind reported per extent before the rest are summarised.
const MAX_FINDINGS: usize = 100;

struct Findings<'a> {
    report: &'a mut CheckReport,
    prefix: String,
    counted: usize,
    dropped: usize,
}

impl Findings<'_> {
    fn add(&mut self, severity: Severity, message: String, offset: Option<u64>) {
        if self.counted < MAX_FINDINGS {
            self.report
                .add(severity, format!("{}{message}", self.prefix), offset);
            self.counted += 1;
        } else {
            self.dropped += 1;
        }
    }

    fn close(self) {
        if self.dropped > 0 {
            self.report.add(
                Severity::Corruption,
                format!(
                    "{}{} more problems of the same kinds",
                    self.prefix, self.dropped
                ),
                None,
            );
        }
    }
}

/// Checks the VMDK at `path`; its extents are opened through `gate`.
pub fn check(path: &Path, repair: Option<RepairMode>, gate: &Gate) -> Result<CheckReport> {
    check_storage(Arc::new(HostFile::open(path)?), repair, gate)
}

/// Checks the VMDK in an already-open `storage` (memory, a window into a package; the fuzz
/// targets use it); the extents a descriptor names are opened through `gate`, against the
/// storage's name. VMDKs are never repaired, so `repair` only adds the warning that says so.
pub fn check_storage(
    storage: Arc<dyn Storage>,
    repair: Option<RepairMode>,
    gate: &Gate,
) -> Result<CheckReport> {
    let path = storage.name().to_path_buf();
    let path = path.as_path();
    let mut report = CheckReport::new(path, super::FORMAT);
    if repair.is_some() {
        report.add(
            Severity::Warning,
            "VMDK images are checked but not repaired: nothing was changed",
            None,
        );
    }
    if !missing_extents(storage.as_ref(), &mut report, gate)? {
        return Ok(report);
    }
    let ctx = OpenContext {
        gate,
        provenance: Provenance::User,
        salvage: Salvage::Refuse,
        snapshot: None,
        data_files: crate::image::DataFilePolicy::Require,
    };
    let layer = match VmdkLayer::open(storage, &ctx) {
        Ok(l) => l,
        Err(e) => {
            let message = match e.path() {
                Some(p) if p != path => format!("{}: {}", p.display(), e.message()),
                _ => e.message().to_string(),
            };
            report.add(Severity::Corruption, message, e.offset());
            report.check_errors += 1;
            return Ok(report);
        }
    };
    for w in crate::image::Layer::open_warnings(&layer) {
        let severity = if w.contains("unusable") {
            Severity::Corruption
        } else {
            Severity::Warning
        };
        report.add(severity, w, None);
    }
    let mut total = 0u64;
    let mut allocated = 0u64;
    let many = layer.extents().len() > 1;
    for (i, extent) in layer.extents().iter().enumerate() {
        let prefix = if many {
            format!("extent {i}: ")
        } else {
            String::new()
        };
        match &extent.data {
            ExtentData::Zero => {}
            ExtentData::Flat { file, start } => {
                if file.len() < start + extent.len {
                    report.add(
                        Severity::Corruption,
                        format!(
                            "{prefix}extent file '{}' is {} bytes, but the descriptor needs {}",
                            file.name().display(),
                            file.len(),
                            start + extent.len
                        ),
                        None,
                    );
                }
            }
            ExtentData::Sparse(s) => {
                if s.dirty() {
                    report.add(
                        Severity::Warning,
                        format!("{prefix}the extent was not closed cleanly (dirty flag set)"),
                        None,
                    );
                }
                let mut f = Findings {
                    report: &mut report,
                    prefix,
                    counted: 0,
                    dropped: 0,
                };
                let (t, a) = check_sparse(s, &mut f);
                f.close();
                total += t;
                allocated += a;
            }
        }
    }
    if total > 0 {
        report.total_clusters = Some(total);
        report.allocated_clusters = Some(allocated);
    }
    Ok(report)
}

/// Reports extent files a text descriptor names that do not exist; false when some are
/// missing (the rest cannot be checked then).
fn missing_extents(file: &dyn Storage, report: &mut CheckReport, gate: &Gate) -> Result<bool> {
    let mut head = [0u8; 8];
    let n = file.read_at_most(&mut head, 0)?;
    let magic = &head[..n];
    if magic.starts_with(sparse_header::MAGIC)
        || magic.starts_with(super::cowd::MAGIC)
        || super::sesparse::has_magic(magic)
        || file.len() > MAX_DESCRIPTOR_BYTES
    {
        return Ok(true);
    }
    let Ok(text) = file.read_vec(0, file.len(), "descriptor") else {
        return Ok(true);
    };
    let Ok(descriptor) = Descriptor::parse(&text) else {
        return Ok(true);
    };
    let mut all_there = true;
    for e in &descriptor.extents {
        let Some(name) = &e.file else { continue };
        let problem = match gate.open(file.name(), &name.replace('\\', "/"), Role::Extent) {
            Ok(Lookup::Opened(_)) => continue,
            Ok(Lookup::Missing(_)) => format!(
                "extent file '{name}' (descriptor line {}) is missing",
                e.line
            ),
            // A name the gate refuses is not damage to report but a file not to open: the
            // check stops with the refusal, as every other command does.
            Err(err) => return Err(err.context(format!("descriptor line {}", e.line))),
        };
        all_there = false;
        report.add(Severity::Corruption, problem, None);
    }
    Ok(all_there)
}

/// Grains whose place in the file is remembered to find overlaps and leaks (16 bytes each):
/// past this many, those two checks are skipped rather than held in memory.
const MAX_TRACKED_GRAINS: usize = 8 << 20;

/// Checks one sparse extent; returns (grains, allocated grains).
fn check_sparse(s: &SparseExtent, f: &mut Findings<'_>) -> (u64, u64) {
    let file = &s.file;
    let geometry = *s.tables.geometry();
    let g = geometry.grain_bytes;
    let metadata_end = match s.kind {
        SparseKind::Hosted(h) => h.overhead.saturating_mul(512),
        SparseKind::Cowd(_) => 2048,
        SparseKind::SeSparse(h) => h.grains_offset.saturating_mul(512),
    };
    let mut grain_offsets: Vec<(u64, u64)> = Vec::new();
    let mut tracked = true;
    let mut allocated = 0u64;
    let head = s.coding.head();
    let mut inflated = vec![0u8; if head.is_some() { g as usize } else { 0 }];
    // Only the tables the directory names: a huge disk with few tables costs few steps.
    let next_present = |from: u64, f: &mut Findings<'_>| match s.tables.next_present(file, from) {
        Ok(n) => n,
        Err(e) => {
            f.add(Severity::Corruption, e.message().to_string(), e.offset());
            geometry.tables()
        }
    };
    let mut next = next_present(0, f);
    while next < geometry.tables() {
        let gt = next;
        next = next_present(gt + 1, f);
        let table = match s.tables.table(file, gt) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                f.add(Severity::Corruption, e.message().to_string(), e.offset());
                continue;
            }
        };
        for (k, &entry) in table.iter().enumerate() {
            let grain = gt * geometry.gtes_per_gt + k as u64;
            let GrainEntry::At(entry) = entry else {
                continue;
            };
            allocated += 1;
            let len = g.min(s.capacity.saturating_sub(grain * g));
            if entry < metadata_end && !s.compressed() {
                f.add(
                    Severity::Corruption,
                    format!("grain {grain} points into the metadata area"),
                    Some(entry),
                );
                continue;
            }
            if let Some(head) = head {
                match grain::read_compressed(file, entry, head, &mut inflated) {
                    Ok((lba, n)) => {
                        if let Some(lba) = lba
                            && lba != grain * (g / 512)
                        {
                            f.add(
                                Severity::Corruption,
                                format!(
                                    "grain {grain}'s marker names sector {lba}, not {}",
                                    grain * (g / 512)
                                ),
                                Some(entry),
                            );
                        }
                        if (n as u64) < len {
                            f.add(
                                Severity::Corruption,
                                format!("compressed grain {grain} inflates to only {n} bytes"),
                                Some(entry),
                            );
                        }
                    }
                    Err(e) => f.add(
                        Severity::Corruption,
                        format!("grain {grain}: {}", e.message()),
                        Some(entry),
                    ),
                }
            } else if entry.checked_add(len).is_none_or(|end| end > file.len()) {
                f.add(
                    Severity::Corruption,
                    format!(
                        "grain {grain} points past the end of the file ({} bytes)",
                        file.len()
                    ),
                    Some(entry),
                );
                continue;
            }
            if !tracked {
                continue;
            }
            if grain_offsets.len() >= MAX_TRACKED_GRAINS {
                // Overlaps among the grains held are still found; the rest go unchecked.
                if !s.compressed() {
                    check_overlaps(&mut grain_offsets, g, f);
                }
                tracked = false;
                grain_offsets = Vec::new();
                f.add(
                    Severity::Warning,
                    format!(
                        "more than {MAX_TRACKED_GRAINS} allocated grains: overlaps past the first {MAX_TRACKED_GRAINS} and leaks are not checked"
                    ),
                    None,
                );
                continue;
            }
            grain_offsets.push((entry, grain));
        }
    }
    if !s.compressed() && tracked {
        check_overlaps(&mut grain_offsets, g, f);
    }
    if let SparseKind::Hosted(h) = s.kind
        && !s.compressed()
        && tracked
    {
        check_leaks(s, &h, &grain_offsets, f);
    }
    if let SparseKind::Hosted(h) = s.kind {
        if h.redundant() && h.directory_at() != DirectoryAt::Footer {
            check_redundant(s, &h, f);
        }
        if h.markers {
            check_markers(s, &h, f);
        }
    }
    (geometry.grains, allocated)
}

/// Grains (file offset, grain) of `g` bytes that share bytes of the file; sorts `grains`.
fn check_overlaps(grains: &mut [(u64, u64)], g: u64, f: &mut Findings<'_>) {
    grains.sort_unstable();
    for w in grains.windows(2) {
        if w[1].0 < w[0].0 + g {
            f.add(
                Severity::Corruption,
                format!("grains {} and {} overlap in the file", w[0].1, w[1].1),
                Some(w[1].0),
            );
        }
    }
}

/// The directory at `sector` of a hosted extent, for walking its entries (read a page at a
/// time, holes skipped).
fn directory_at(s: &SparseExtent, sector: u64, h: &SparseHeader) -> Result<GrainTables> {
    GrainTables::load(
        s.file.as_ref(),
        sector.saturating_mul(512),
        h.gd_entries(),
        *s.tables.geometry(),
    )
}

/// Whole grains of the file's grain area (from the overhead on, where VMware and qemu put
/// grains one after the other) that no grain table uses and that hold no table either: space
/// a crashed writer allocated and never linked, as qemu-img counts leaked clusters. `used`
/// holds (file offset, grain) of every grain the tables use, sorted by offset. Only stored
/// bytes are walked: a hole of the file leaks nothing.
fn check_leaks(s: &SparseExtent, h: &SparseHeader, used: &[(u64, u64)], f: &mut Findings<'_>) {
    let g = s.grain_bytes;
    let start = h.overhead.saturating_mul(512);
    let file = s.file.as_ref();
    let file_len = file.len();
    // Grains off the grain lattice mean a layout we do not know: do not guess at leaks.
    if used
        .iter()
        .any(|&(o, _)| o < start || !(o - start).is_multiple_of(g))
    {
        return;
    }
    let mut metadata: Vec<(u64, u64)> = Vec::new();
    let gt_bytes = u64::from(h.gtes_per_gt) * 4;
    let gd_bytes = h.gd_entries() * 4;
    // A redundant directory's space is metadata even when the flag does not announce it.
    let redundant = (h.rgd_offset != 0).then_some(h.rgd_offset);
    let primary = match h.directory_at() {
        DirectoryAt::Sector(s) => Some(s),
        DirectoryAt::Footer | DirectoryAt::Missing => None,
    };
    for dir in [primary, redundant].into_iter().flatten() {
        let at = dir.saturating_mul(512);
        metadata.push((at, at.saturating_add(gd_bytes)));
        let Ok(d) = directory_at(s, dir, h) else {
            continue;
        };
        let tables = d.geometry().tables();
        let mut i = d.next_present(file, 0).unwrap_or(tables);
        while i < tables {
            if let Ok(Some(t)) = d.table_offset(file, i) {
                metadata.push((t, t.saturating_add(gt_bytes)));
            }
            i = d.next_present(file, i + 1).unwrap_or(tables);
        }
    }
    // Sorted and merged, so that one binary search per grain finds any overlap.
    metadata.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(metadata.len());
    for (a, b) in metadata {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut leaked = 0u64;
    let mut first = None;
    let mut from = start;
    while let Ok(Some(data)) = file.next_data(from) {
        let hole = file.next_hole(data).unwrap_or(file_len).max(data + 1);
        let mut at = start + (data - start) / g * g;
        while at < hole && at.saturating_add(g) <= file_len {
            let referenced = used.binary_search_by(|&(o, _)| o.cmp(&at)).is_ok();
            let i = merged.partition_point(|&(a, _)| a < at + g);
            let holds_table = i > 0 && merged[i - 1].1 > at;
            if !referenced && !holds_table {
                leaked += 1;
                first.get_or_insert(at);
            }
            at += g;
        }
        if at.saturating_add(g) > file_len {
            break;
        }
        from = at;
    }
    if leaked > 0 {
        f.add(
            Severity::Leak,
            format!(
                "{leaked} grains ({} bytes) of the file are used by no grain table",
                leaked * g
            ),
            first,
        );
    }
}

/// The redundant directory and tables must hold the same grain pointers as the primary ones.
fn check_redundant(s: &SparseExtent, h: &SparseHeader, f: &mut Findings<'_>) {
    let file = s.file.as_ref();
    let (Ok(primary), Ok(redundant)) = (
        directory_at(s, h.gd_offset, h),
        directory_at(s, h.rgd_offset, h),
    ) else {
        f.add(
            Severity::Corruption,
            "the redundant grain directory runs past the end of the file".to_string(),
            Some(h.rgd_offset.saturating_mul(512)),
        );
        return;
    };
    let gt_bytes = u64::from(h.gtes_per_gt) * 4;
    let tables = primary.geometry().tables();
    // Only entries present in either directory: both holes agree without being read.
    let next = |from: u64| {
        primary
            .next_present(file, from)
            .unwrap_or(tables)
            .min(redundant.next_present(file, from).unwrap_or(tables))
    };
    let mut i = next(0);
    while i < tables {
        let entry_at = h
            .rgd_offset
            .saturating_mul(512)
            .saturating_add(i.saturating_mul(4));
        let (p, r) = match (
            primary.table_offset(file, i),
            redundant.table_offset(file, i),
        ) {
            (Ok(p), Ok(r)) => (p, r),
            _ => {
                i = next(i + 1);
                continue;
            }
        };
        match (p, r) {
            (Some(p), Some(r)) => {
                let (Ok(pt), Ok(rt)) = (
                    file.read_vec(p, gt_bytes, "grain table"),
                    file.read_vec(r, gt_bytes, "grain table"),
                ) else {
                    f.add(
                        Severity::Corruption,
                        format!("redundant grain table {i} runs past the end of the file"),
                        Some(r),
                    );
                    i = next(i + 1);
                    continue;
                };
                let entry = |t: &[u8], k: usize| {
                    u32::from_le_bytes(t[k * 4..k * 4 + 4].try_into().expect("4 bytes"))
                };
                let differing: Vec<usize> = (0..pt.len() / 4)
                    .filter(|&k| entry(&pt, k) != entry(&rt, k))
                    .collect();
                // A grain is linked (or unlinked) in the redundant table first and the primary
                // one last (edit.rs), so a write interrupted between the two leaves an entry
                // that is unallocated or zeroed (0 or 1) on one side only. Readers use the
                // primary table, so that costs a grain of space, not data. Two different
                // grains for one entry are a corruption.
                let in_flight = |k: &usize| entry(&pt, *k) <= 1 || entry(&rt, *k) <= 1;
                if let Some(&k) = differing.iter().find(|k| !in_flight(k)) {
                    f.add(
                        Severity::Corruption,
                        format!("grain table {i} differs from its redundant copy at entry {k}"),
                        Some(r + k as u64 * 4),
                    );
                } else if let Some(&k) = differing.first() {
                    f.add(
                        Severity::Leak,
                        format!(
                            "grain table {i}'s redundant copy differs at entry {k}, as a write interrupted between the two tables leaves it (the primary table is the one read)"
                        ),
                        Some(r + k as u64 * 4),
                    );
                }
            }
            (None, None) => {}
            // A new table is linked from the redundant directory first (edit.rs): a primary
            // entry still 0 is an interrupted link, whose table is read by no one.
            (None, Some(_)) => f.add(
                Severity::Leak,
                format!(
                    "grain directory entry {i} is only in the redundant copy, as a write interrupted between the two directories leaves it (the primary directory is the one read)"
                ),
                Some(entry_at),
            ),
            (Some(_), _) => f.add(
                Severity::Corruption,
                format!("grain directory entry {i} differs from its redundant copy"),
                Some(entry_at),
            ),
        }
        i = next(i + 1);
    }
}

/// Walks a stream-optimized extent's markers.
fn check_markers(s: &SparseExtent, h: &SparseHeader, f: &mut Findings<'_>) {
    let max = grain::max_compressed_size(s.grain_bytes);
    let mut saw_eos = false;
    let mut saw_footer = false;
    for item in MarkerWalk::new(&s.file, h) {
        let (at, m) = match item {
            Ok(x) => x,
            Err(e) => {
                f.add(Severity::Corruption, e.message().to_string(), e.offset());
                return;
            }
        };
        if m.size > 0 {
            if u64::from(m.size) > max || at + 12 + u64::from(m.size) > s.file.len() {
                f.add(
                    Severity::Corruption,
                    format!("grain marker has an invalid size {}", m.size),
                    Some(at),
                );
                return;
            }
            if m.value >= s.capacity / 512 || m.value % (s.grain_bytes / 512) != 0 {
                f.add(
                    Severity::Corruption,
                    format!(
                        "grain marker names sector {}, not a grain of the disk",
                        m.value
                    ),
                    Some(at),
                );
            }
            continue;
        }
        match m.kind {
            MARKER_EOS => saw_eos = true,
            MARKER_GT | MARKER_GD => {}
            MARKER_FOOTER => saw_footer = true,
            other => f.add(
                Severity::Warning,
                format!("unknown marker type {other}"),
                Some(at),
            ),
        }
        if m.kind != MARKER_EOS
            && (at + 512).saturating_add(m.value.saturating_mul(512)) > s.file.len()
        {
            f.add(
                Severity::Corruption,
                format!("marker of type {} runs past the end of the file", m.kind),
                Some(at),
            );
            return;
        }
    }
    let deferred = h.directory_at() == DirectoryAt::Footer;
    if deferred && !saw_footer {
        f.add(
            Severity::Corruption,
            "the header defers the grain directory to the footer, but there is no footer"
                .to_string(),
            None,
        );
    }
    if !saw_eos && deferred {
        f.add(
            Severity::Warning,
            "no end-of-stream marker".to_string(),
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::FormatOptions;
    use crate::sink::Output;
    use crate::staging::Staging;
    use crate::storage::Memory;
    use crate::writer::{CreateSpec, Piece};

    /// A 1 MiB monolithicSparse VMDK with 64 KiB of data at 0, in `dir`.
    fn make(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("t.vmdk");
        let mut staging = Staging::new();
        let spec = CreateSpec::new(1 << 20, FormatOptions::empty(super::super::FORMAT));
        let mut w =
            super::super::create_writer(Output::new_files(&mut staging, path.clone()), &spec)
                .unwrap();
        let bytes = vec![0x5Au8; 64 << 10];
        w.write(
            0,
            Piece::Data {
                bytes: &bytes,
                encoded: None,
            },
        )
        .unwrap();
        w.write(64 << 10, Piece::Zero((1 << 20) - (64 << 10)))
            .unwrap();
        w.finish().unwrap();
        staging.commit().unwrap();
        path
    }

    #[test]
    fn a_storage_in_memory_is_checked_as_its_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        let gate = Gate::confined();
        let from_file = check(&path, None, &gate).unwrap();
        let memory = Arc::new(Memory::new(path.clone(), bytes));
        let from_memory = check_storage(memory, None, &gate).unwrap();
        assert_eq!(
            serde_json::to_string(&from_memory).unwrap(),
            serde_json::to_string(&from_file).unwrap()
        );
        assert_eq!(from_memory.exit_code(), 0, "{:?}", from_memory.findings);
        assert!(from_memory.allocated_clusters.is_some_and(|n| n > 0));
    }

    #[test]
    fn extents_named_by_a_descriptor_in_memory_are_looked_for_beside_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let text = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                    createType=\"monolithicFlat\"\nRW 2048 FLAT \"gone-flat.vmdk\" 0\n";
        let memory = Arc::new(Memory::new(dir.path().join("d.vmdk"), text.as_bytes()));
        let report = check_storage(memory, None, &Gate::confined()).unwrap();
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.severity == Severity::Corruption
                    && f.message == "extent file 'gone-flat.vmdk' (descriptor line 6) is missing"),
            "{:?}",
            report.findings
        );
    }
}
