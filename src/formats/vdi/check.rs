//! `check` for VDI: the header (checked as the reader checks it), every block map entry in
//! bounds and used once, the allocated block count, space past the last stored block.
//!
//! `-r leaks` cuts the file after the last stored block, and lowers an allocated block count
//! that is ahead of the block map (an allocation cut short). `-r all` also corrects a count
//! behind the map and frees entries that point past the file or past the block count
//! (their data is not there to read; a differencing image then reads its parent there). Blocks
//! sharing a place are reported, never repaired: which of them owns the data cannot be told.

use super::header::{BLOCK_ZERO, Header};
use crate::check::{CheckReport, RepairMode, Severity};
use crate::error::Result;
use crate::host_file::HostFile;
use crate::storage::Storage;
use std::path::Path;

/// Checks (and with `repair`, repairs) the VDI at `path`.
pub fn check(path: &Path, repair: Option<RepairMode>) -> Result<CheckReport> {
    let mut file = if repair.is_some() {
        HostFile::open_rw(path)?
    } else {
        HostFile::open(path)?
    };
    let found = inspect(&file, path)?;
    let mut report = found.report;
    let Some(mode) = repair else {
        return Ok(report);
    };
    let h = &found.header;
    let mut map = found.map;
    let mut map_changed = false;
    let mut count = None;
    for fix in &found.fixes {
        match *fix {
            Fix::Free { block, finding } if mode == RepairMode::All => {
                map[block] = super::header::BLOCK_FREE;
                map_changed = true;
                report.findings[finding].repaired = true;
            }
            Fix::Count {
                value,
                finding,
                leak,
            } if mode == RepairMode::All || leak => {
                count = Some(value);
                report.findings[finding].repaired = true;
            }
            Fix::Truncate { end, finding } => {
                file.set_len(end)?;
                report.findings[finding].repaired = true;
            }
            _ => {}
        }
    }
    if map_changed {
        let bytes: Vec<u8> = map.iter().flat_map(|e| e.to_le_bytes()).collect();
        file.write_all_at(&bytes, h.blocks_offset)?;
    }
    if let Some(value) = count {
        // The count follows the block count in both header versions.
        let at = if h.version >> 16 == 0 { 0x170 } else { 0x184 };
        file.write_all_at(&value.to_le_bytes(), at)?;
    }
    file.sync()?;
    Ok(report)
}

enum Fix {
    Free {
        block: usize,
        finding: usize,
    },
    Count {
        value: u32,
        finding: usize,
        leak: bool,
    },
    Truncate {
        end: u64,
        finding: usize,
    },
}

struct Inspection {
    header: Header,
    map: Vec<u32>,
    report: CheckReport,
    fixes: Vec<Fix>,
}

/// Checks the VDI in `file` without changing it.
pub fn check_storage(file: &dyn Storage, path: &Path) -> Result<CheckReport> {
    Ok(inspect(file, path)?.report)
}

fn inspect(file: &dyn Storage, path: &Path) -> Result<Inspection> {
    let header = Header::read(file)?;
    let map = header.read_map(file)?;
    let mut report = CheckReport::new(path, super::FORMAT);
    let mut fixes = Vec::new();
    let len = file.len();
    let bs = header.block_size as u64;
    // Which block owns each place, for duplicates: places are bounded by the block count.
    let mut owner: Vec<u32> = vec![u32::MAX; header.blocks as usize];
    let mut stored = 0u32;
    let mut last_place: Option<u32> = None;
    for (block, &entry) in map.iter().enumerate() {
        if entry >= BLOCK_ZERO {
            continue;
        }
        let at = header.blocks_offset + block as u64 * 4;
        if entry >= header.blocks {
            report.add(
                Severity::Corruption,
                format!(
                    "block {block} is stored at place {entry}, beyond the image's {} blocks",
                    header.blocks
                ),
                Some(at),
            );
            fixes.push(Fix::Free {
                block,
                finding: report.findings.len() - 1,
            });
            continue;
        }
        let data = header.block_data_at(entry);
        // A block past the disk's end (the map may hold more blocks than the disk needs) is
        // never read: none of its bytes need to be in the file.
        let used = header.disk_size.saturating_sub(block as u64 * bs).min(bs);
        if used > 0 && data.saturating_add(used) > len {
            report.add(
                Severity::Corruption,
                format!(
                    "block {block} is stored at {data:#x}, past the end of the file ({len} bytes)"
                ),
                Some(at),
            );
            fixes.push(Fix::Free {
                block,
                finding: report.findings.len() - 1,
            });
            continue;
        }
        let slot = &mut owner[entry as usize];
        if *slot != u32::MAX {
            report.add(
                Severity::Corruption,
                format!(
                    "blocks {} and {block} are both stored at place {entry} ({data:#x}); -r cannot tell which owns it",
                    *slot
                ),
                Some(at),
            );
            // Still an allocated entry, as the header counts them.
            stored += 1;
            continue;
        }
        *slot = block as u32;
        stored += 1;
        last_place = Some(last_place.map_or(entry, |p| p.max(entry)));
    }
    let count_at = if header.version >> 16 == 0 {
        0x170
    } else {
        0x184
    };
    let should_be = stored;
    // A count ahead of dense places is what an allocation killed between its count and its map
    // entry leaves (see `edit`): the counted places hold nothing anything points to, and the
    // next block goes after them, so nothing is at risk. A count behind would place the next
    // block over a stored one.
    let dense = last_place.map_or(0, |p| p + 1) == stored;
    let severity = if header.blocks_allocated > should_be && dense {
        Severity::Leak
    } else {
        Severity::Corruption
    };
    if header.blocks_allocated != should_be {
        report.add(
            severity,
            format!(
                "the header counts {} allocated blocks, the block map {should_be}",
                header.blocks_allocated
            ),
            Some(count_at),
        );
        fixes.push(Fix::Count {
            value: should_be,
            finding: report.findings.len() - 1,
            leak: severity == Severity::Leak,
        });
    }
    let end = header.data_offset + last_place.map_or(0, |p| p as u64 + 1) * header.block_stride();
    if len > end {
        let unused = (len - end).div_ceil(header.block_stride());
        report.add(
            Severity::Leak,
            format!(
                "{} bytes after the last stored block ({unused} block(s) of space) belong to no block",
                len - end
            ),
            Some(end),
        );
        fixes.push(Fix::Truncate {
            end,
            finding: report.findings.len() - 1,
        });
    }
    report.image_end_offset = Some(end.min(len).max(header.data_offset.min(len)));
    report.total_clusters = Some(header.blocks as u64);
    report.allocated_clusters = Some(stored as u64);
    Ok(Inspection {
        header,
        map,
        report,
        fixes,
    })
}
