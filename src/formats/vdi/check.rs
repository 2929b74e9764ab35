//! `check` for VDI: the header (checked as the reader checks it), every block map entry in
//! bounds and used once, the allocated block count, places no block uses before the last
//! stored one and space past it.
//!
//! `-r leaks` cuts the file after the last stored block, lowers an allocated block count
//! that is ahead of the block map's last stored place (an allocation cut short) to it, and
//! closes places no block uses by moving the last blocks into them. `-r all` also corrects a count
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
    // Places no block uses below the last stored one (left by a killed resize, or by entries
    // freed just above) are closed by moving the last blocks into them, so that the count can
    // equal the stored blocks, as qemu-img's check wants, without the next block landing on a
    // stored one. `-r leaks` does it only when that is what it found and no entry it leaves
    // alone points where no block is.
    let bad_entries_stay = found.fixes.iter().any(|f| matches!(f, Fix::Free { .. }));
    if mode == RepairMode::All || (found.holes.is_some() && !bad_entries_stay) {
        let moved = compact(&mut file, h, &mut map)?;
        if let Some(used) = moved {
            map_changed = true;
            count = Some(used);
            file.set_len(h.data_offset + u64::from(used) * h.block_stride())?;
            if let Some(finding) = found.holes {
                report.findings[finding].repaired = true;
            }
            for fix in &found.fixes {
                if let Fix::Count { finding, .. } = *fix {
                    report.findings[finding].repaired = true;
                }
            }
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

/// Moves the blocks stored last into the places below them that no block uses, until the
/// stored places are dense; returns how many there are, or `None` when nothing moved (or
/// blocks share a place, which must stay reported). Each copy is flushed before `map` (which
/// the caller writes) points at it.
fn compact(file: &mut HostFile, h: &Header, map: &mut [u32]) -> Result<Option<u32>> {
    let mut by_place = std::collections::BTreeMap::new();
    for (block, &entry) in map.iter().enumerate() {
        if entry < BLOCK_ZERO && by_place.insert(entry, block).is_some() {
            return Ok(None);
        }
    }
    let stride = h.block_stride();
    let mut hole = 0u32;
    let mut moved = false;
    loop {
        while by_place.contains_key(&hole) {
            hole += 1;
        }
        let Some((&last, &block)) = by_place.last_key_value() else {
            break;
        };
        if last < hole {
            break;
        }
        file.copy_within(
            h.data_offset + u64::from(last) * stride,
            h.data_offset + u64::from(hole) * stride,
            stride,
        )?;
        by_place.remove(&last);
        by_place.insert(hole, block);
        map[block] = hole;
        moved = true;
    }
    if !moved {
        return Ok(None);
    }
    file.sync()?;
    Ok(Some(by_place.len() as u32))
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
    /// The finding of places no block uses below the last stored one, if any.
    holes: Option<usize>,
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
    // The count the map needs: one past the last stored place, where the next block goes.
    let needed = last_place.map_or(0, |p| p + 1);
    // A count ahead of it is what an allocation killed between its count and its map entry
    // leaves (see `edit`): the counted places hold nothing anything points to, and the next
    // block goes after them, so nothing is at risk. A count behind would place the next block
    // over a stored one.
    let severity = if header.blocks_allocated > needed {
        Severity::Leak
    } else {
        Severity::Corruption
    };
    if header.blocks_allocated != needed {
        report.add(
            severity,
            format!(
                "the header counts {} allocated blocks, the block map {needed}",
                header.blocks_allocated
            ),
            Some(count_at),
        );
        fixes.push(Fix::Count {
            value: needed,
            finding: report.findings.len() - 1,
            leak: severity == Severity::Leak,
        });
    }
    // Places below the last stored one that no block uses: what a resize killed while moving
    // blocks out of the map's way leaves (see `resize`), until the next resize finishes the
    // move. Space only, which compacting (converting) the image reclaims.
    let used = owner.iter().filter(|&&o| o != u32::MAX).count() as u64;
    let mut holes = None;
    if u64::from(needed) > used {
        let unused = u64::from(needed) - used;
        report.add(
            Severity::Leak,
            format!(
                "{unused} place(s) before the last stored block hold no block ({} bytes of unused space)",
                unused * header.block_stride()
            ),
            Some(header.data_offset),
        );
        holes = Some(report.findings.len() - 1);
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
        holes,
    })
}
