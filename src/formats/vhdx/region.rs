//! The region table (two copies, at 192 KiB and 256 KiB): where the BAT and the metadata are.
//!
//! A region the reader does not know may be skipped unless it is marked required: then the
//! file holds something that changes how it must be read, and reading it anyway could give
//! wrong data, so it is refused.

use super::guid::{self, Guid, read_guid};
use super::header::{HEADER_SECTION, checksum, le32, le64};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Where the two copies of the region table are.
pub const TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];

/// Bytes of a region table, all covered by its checksum.
pub const TABLE_SIZE: usize = 64 << 10;

/// The most entries a table may have (what fits in 64 KiB after its header).
pub const MAX_ENTRIES: u32 = 2047;

const ALIGN: u64 = 1 << 20;

/// One region: a range of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub length: u64,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// The regions a reader needs.
#[derive(Debug, Clone)]
pub struct Regions {
    /// The block allocation table.
    pub bat: Region,
    /// The metadata table and its items.
    pub metadata: Region,
    /// Which copy was used (1 or 2).
    pub copy: usize,
    /// A damaged copy, for `info`.
    pub warning: Option<String>,
}

/// Why a table copy is unusable, and where.
struct Bad {
    why: String,
    offset: u64,
    unsupported: bool,
}

fn parse(b: &[u8], at: u64, file_len: u64) -> std::result::Result<(Region, Region), Bad> {
    let bad = |why: String, offset: u64| Bad {
        why,
        offset,
        unsupported: false,
    };
    if &b[..4] != b"regi" {
        return Err(bad("no 'regi' signature".into(), at));
    }
    let stored = le32(b, 4);
    let computed = checksum(b, 4);
    if stored != computed {
        return Err(bad(
            format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
            at + 4,
        ));
    }
    let count = le32(b, 8);
    if count > MAX_ENTRIES {
        return Err(bad(
            format!("it claims {count} entries, more than the {MAX_ENTRIES} that fit"),
            at + 8,
        ));
    }
    let mut bat = None;
    let mut metadata = None;
    let mut seen: Vec<(Guid, Region)> = Vec::new();
    for i in 0..count as usize {
        let e = 16 + 32 * i;
        let entry_at = at + e as u64;
        let id = read_guid(b, e);
        let region = Region {
            offset: le64(b, e + 16),
            length: u64::from(le32(b, e + 24)),
        };
        let required = le32(b, e + 28) & 1 != 0;
        let name = match id {
            guid::REGION_BAT => "BAT",
            guid::REGION_METADATA => "metadata",
            _ if required => {
                return Err(Bad {
                    why: format!(
                        "region {} is marked required but is unknown to diskferry, which cannot read the file without it",
                        guid::braced(&id)
                    ),
                    offset: entry_at,
                    unsupported: true,
                });
            }
            _ => "unknown",
        };
        if !region.offset.is_multiple_of(ALIGN)
            || !region.length.is_multiple_of(ALIGN)
            || region.length == 0
        {
            return Err(bad(
                format!(
                    "{name} region ({:#x}, {} bytes) is not a non-empty range aligned to 1 MiB",
                    region.offset, region.length
                ),
                entry_at,
            ));
        }
        if region.offset < HEADER_SECTION {
            return Err(bad(
                format!(
                    "{name} region at {:#x} lies in the header section (the first MiB)",
                    region.offset
                ),
                entry_at,
            ));
        }
        if region
            .offset
            .checked_add(region.length)
            .is_none_or(|e| e > file_len)
        {
            return Err(bad(
                format!(
                    "{name} region ({:#x}, {} bytes) runs past the end of the file ({file_len} bytes)",
                    region.offset, region.length
                ),
                entry_at,
            ));
        }
        if let Some((other, _)) = seen
            .iter()
            .find(|(_, r)| r.offset < region.end() && region.offset < r.end())
        {
            return Err(bad(
                format!("{name} region overlaps region {}", guid::braced(other)),
                entry_at,
            ));
        }
        seen.push((id, region));
        let slot = match id {
            guid::REGION_BAT => &mut bat,
            guid::REGION_METADATA => &mut metadata,
            _ => continue,
        };
        if slot.replace(region).is_some() {
            return Err(bad(format!("the {name} region is listed twice"), entry_at));
        }
    }
    match (bat, metadata) {
        (Some(b), Some(m)) => Ok((b, m)),
        (None, _) => Err(bad("it has no BAT region".into(), at + 8)),
        (_, None) => Err(bad("it has no metadata region".into(), at + 8)),
    }
}

/// Reads the region table: the first valid copy (a writer keeps both identical).
pub fn read(file: &dyn Storage) -> Result<Regions> {
    let mut problems = Vec::new();
    for (i, &at) in TABLE_OFFSETS.iter().enumerate() {
        if at + TABLE_SIZE as u64 > file.len() {
            problems.push(Bad {
                why: format!("it runs past the end of the file ({} bytes)", file.len()),
                offset: at,
                unsupported: false,
            });
            continue;
        }
        let mut b = vec![0u8; TABLE_SIZE];
        file.read_exact_at(&mut b, at)?;
        match parse(&b, at, file.len()) {
            Ok((bat, metadata)) => {
                let warning = problems.first().map(|p: &Bad| {
                    format!(
                        "region table 1 at {:#x} is not valid: {}",
                        TABLE_OFFSETS[0], p.why
                    )
                });
                return Ok(Regions {
                    bat,
                    metadata,
                    copy: i + 1,
                    warning,
                });
            }
            // A required region we do not know is the file's choice, not damage: the other
            // copy says the same, so say it now.
            Err(b) if b.unsupported => {
                return Err(
                    Error::unsupported(format!("region table {}: {}", i + 1, b.why))
                        .at_offset(b.offset)
                        .with_path(file.name()),
                );
            }
            Err(b) => problems.push(b),
        }
    }
    let first = &problems[0];
    Err(Error::corrupt(format!(
        "neither VHDX region table is valid: table 1 at {:#x}: {}; table 2 at {:#x}: {}",
        TABLE_OFFSETS[0], first.why, TABLE_OFFSETS[1], problems[1].why
    ))
    .at_offset(first.offset)
    .with_path(file.name()))
}
