//! The metadata log, replayed in memory.
//!
//! A writer puts every metadata update (BAT, metadata, region table) in the log first and
//! applies it afterwards; a file left by a crash or an unclean stop can hold updates that were
//! logged but not applied, and reading it without them gives the old, wrong tables. qemu-img
//! refuses to read such a file unless it may write; diskferry replays the log into an
//! [`Overlay`] instead, so the user's file is never written behind their back.
//!
//! The log is a circular buffer of 4 KiB sectors holding entries: a header, descriptors, then
//! one data sector per data descriptor. An entry is *valid* when its signature, its CRC-32C
//! (over the whole entry) and its log GUID (the header's) match. The *active sequence* is the
//! run of valid entries, one after the other in the buffer with sequence numbers one apart,
//! that starts at the newest entry's tail and ends at the newest entry. An entry that passes
//! its checksum but contradicts itself (a descriptor of another sequence, a data sector out of
//! place, a write into the headers) was written that way, so it is not a torn write to skip
//! but a damaged log, and it is refused with the offset of what is wrong.

use super::guid::Guid;
use super::header::{Header, checksum, le32, le64};
use crate::error::{Error, Result};
use crate::storage::{Overlay, Storage, StorageExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes of a log sector.
pub const SECTOR: u64 = 4096;

/// The largest log diskferry reads into memory: Hyper-V and qemu make 1 MiB logs.
pub const MAX_LOG_BYTES: u64 = 256 << 20;

/// The most bytes a replay may hold in memory.
pub const MAX_REPLAY_BYTES: u64 = 256 << 20;

/// Bytes of the header section that a log entry may never write (file identifier, headers:
/// the specification keeps them out of the log).
const PROTECTED: u64 = 192 << 10;

/// What replaying the log did, for `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Entries applied.
    pub entries: usize,
    /// Sequence numbers of the first and last entries applied.
    pub sequence: (u64, u64),
    /// Bytes the replay holds in memory.
    pub bytes: u64,
    /// The file's length after the replay.
    pub file_len: u64,
}

/// One valid entry, as found in the buffer.
#[derive(Debug, Clone)]
struct Entry {
    /// Offset in the log.
    at: u64,
    length: u64,
    tail: u64,
    sequence: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
}

/// The log, read into memory.
struct Log<'a> {
    bytes: Vec<u8>,
    /// File offset of the log, for messages.
    offset: u64,
    guid: Guid,
    file: &'a dyn Storage,
}

impl Log<'_> {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// `len` bytes at `at`, wrapping around the end of the buffer.
    fn circular(&self, at: u64, len: u64) -> Vec<u8> {
        let n = self.len();
        let start = (at % n) as usize;
        let first = (len as usize).min(self.bytes.len() - start);
        let mut out = self.bytes[start..start + first].to_vec();
        out.extend_from_slice(&self.bytes[..len as usize - first]);
        out
    }

    fn error(&self, at: u64, why: String) -> Error {
        Error::corrupt(format!("the VHDX log is damaged: {why}"))
            .at_offset(self.offset + at % self.len())
            .with_path(self.file.name())
    }

    /// CRC-32C of the `len` bytes at `at` (wrapping), the checksum field at `at + 4` read as
    /// zero, without copying them.
    fn checksum_at(&self, at: u64, len: u64) -> u32 {
        let start = at as usize;
        let first = (len as usize).min(self.bytes.len() - start);
        let crc = checksum(&self.bytes[start..start + first], 4);
        crc32c::crc32c_append(crc, &self.bytes[..len as usize - first])
    }

    /// The valid entry at `at`, or `None` when there is none there (no signature, a length
    /// that cannot be, a checksum or log GUID that does not match: old or torn sectors).
    /// `budget` bounds the bytes checksummed over the whole search, so a log of sectors that
    /// each claim to start a huge entry costs a bounded time.
    fn entry_at(&self, at: u64, budget: &mut u64) -> Result<Option<Entry>> {
        let head = &self.bytes[at as usize..at as usize + 64];
        if &head[..4] != b"loge" {
            return Ok(None);
        }
        let length = u64::from(le32(head, 8));
        if length == 0 || length % SECTOR != 0 || length > self.len() {
            return Ok(None);
        }
        if super::guid::read_guid(head, 32) != self.guid {
            return Ok(None);
        }
        if *budget < length {
            return Err(self.error(
                at,
                "too many sectors claim to start log entries to search them all".into(),
            ));
        }
        *budget -= length;
        if le32(head, 4) != self.checksum_at(at, length) {
            return Ok(None);
        }
        Ok(Some(Entry {
            at,
            length,
            tail: u64::from(le32(head, 12)),
            sequence: le64(head, 16),
            flushed_file_offset: le64(head, 48),
            last_file_offset: le64(head, 56),
        }))
    }
}

/// One write an entry asks for.
enum Write {
    Data { file_offset: u64, sector: Vec<u8> },
    Zero { file_offset: u64, length: u64 },
}

/// Decodes the writes of a valid entry (`bytes`), checking that it agrees with itself.
fn writes(log: &Log<'_>, e: &Entry, bytes: &[u8]) -> Result<Vec<Write>> {
    let count = u64::from(le32(bytes, 24));
    let descriptor_sectors = (64 + 32 * count).div_ceil(SECTOR);
    if descriptor_sectors > e.length / SECTOR {
        return Err(log.error(
            e.at + 24,
            format!(
                "entry {} claims {count} descriptors, more than its {} bytes hold",
                e.sequence, e.length
            ),
        ));
    }
    let mut out = Vec::new();
    let mut data_sector = descriptor_sectors;
    for i in 0..count {
        let d = (64 + 32 * i) as usize;
        let at = e.at + d as u64;
        let sequence = le64(bytes, d + 24);
        if sequence != e.sequence {
            return Err(log.error(
                at,
                format!(
                    "descriptor {i} of entry {} carries sequence number {sequence}",
                    e.sequence
                ),
            ));
        }
        let file_offset = le64(bytes, d + 16);
        match &bytes[d..d + 4] {
            b"desc" => {
                if data_sector >= e.length / SECTOR {
                    return Err(log.error(
                        at,
                        format!(
                            "data descriptor {i} of entry {} has no data sector (the entry is {} bytes)",
                            e.sequence, e.length
                        ),
                    ));
                }
                let s = (data_sector * SECTOR) as usize;
                let sector = &bytes[s..s + SECTOR as usize];
                let high = u64::from(le32(sector, 4));
                let low = u64::from(le32(sector, 4092));
                if &sector[..4] != b"data" || (high << 32 | low) != e.sequence {
                    return Err(log.error(
                        e.at + s as u64,
                        format!(
                            "data sector {} of entry {} is not a data sector of that entry",
                            data_sector - descriptor_sectors,
                            e.sequence
                        ),
                    ));
                }
                let mut full = Vec::with_capacity(SECTOR as usize);
                full.extend_from_slice(&bytes[d + 8..d + 16]); // leading bytes
                full.extend_from_slice(&sector[8..4092]);
                full.extend_from_slice(&bytes[d + 4..d + 8]); // trailing bytes
                out.push(Write::Data {
                    file_offset,
                    sector: full,
                });
                data_sector += 1;
            }
            b"zero" => {
                let length = le64(bytes, d + 8);
                if !length.is_multiple_of(SECTOR) {
                    return Err(log.error(
                        at,
                        format!("zero descriptor {i} of entry {} has length {length}, not a multiple of 4 KiB", e.sequence),
                    ));
                }
                out.push(Write::Zero {
                    file_offset,
                    length,
                });
            }
            _ => {
                return Err(log.error(
                    at,
                    format!(
                        "descriptor {i} of entry {} has no known signature",
                        e.sequence
                    ),
                ));
            }
        }
        if !file_offset.is_multiple_of(SECTOR) {
            return Err(log.error(
                at,
                format!(
                    "descriptor {i} of entry {} writes at {file_offset:#x}, not a multiple of 4 KiB",
                    e.sequence
                ),
            ));
        }
    }
    if data_sector != e.length / SECTOR {
        return Err(log.error(
            e.at + 8,
            format!(
                "entry {} is {} bytes but its descriptors account for {} sectors",
                e.sequence, e.length, data_sector
            ),
        ));
    }
    Ok(out)
}

/// Replays the log named by `header` over `file` in memory. Returns `None` when there is
/// nothing to replay (no log GUID, or no valid entry carries it).
pub fn replay(file: Arc<dyn Storage>, header: &Header) -> Result<Option<(Overlay, Replay)>> {
    if !header.has_log() {
        return Ok(None);
    }
    let name = file.name().to_path_buf();
    let offset = header.log_offset;
    let length = u64::from(header.log_length);
    let log_err = |why: String| {
        Error::corrupt(why)
            .at_offset(header.offset + 68)
            .with_path(&name)
    };
    if length == 0 || length % (1 << 20) != 0 || !offset.is_multiple_of(1 << 20) || offset < 1 << 20
    {
        return Err(log_err(format!(
            "the header names a log of {length} bytes at {offset:#x}, which is not a range aligned to 1 MiB after the header section"
        )));
    }
    if offset.checked_add(length).is_none_or(|e| e > file.len()) {
        return Err(log_err(format!(
            "the header names a log of {length} bytes at {offset:#x}, past the end of the file ({} bytes)",
            file.len()
        )));
    }
    if length > MAX_LOG_BYTES {
        return Err(Error::unsupported(format!(
            "the log is {length} bytes, more than diskferry replays in memory ({} MiB)",
            MAX_LOG_BYTES >> 20
        ))
        .at_offset(offset)
        .with_path(&name));
    }
    let log = Log {
        bytes: file.read_vec(offset, length, "log")?,
        offset,
        guid: header.log_guid,
        file: file.as_ref(),
    };
    // Every valid entry, by offset. The sectors of a valid entry are its own, so the search
    // goes on after it.
    let mut found: BTreeMap<u64, Entry> = BTreeMap::new();
    // Enough to search a 1 MiB log whose every sector claims a 1 MiB entry (a few tenths of
    // a second of CRC-32C), and larger logs eight times over.
    let mut budget = length.saturating_mul(8).max(1 << 30);
    let mut at = 0;
    while at < length {
        match log.entry_at(at, &mut budget)? {
            Some(e) => {
                at += e.length;
                found.insert(e.at, e);
            }
            None => at += SECTOR,
        }
    }
    let Some(newest) = found.values().max_by_key(|e| e.sequence) else {
        return Ok(None);
    };
    let newest = newest.clone();
    // Walk from the newest entry's tail to it.
    if newest.tail % SECTOR != 0 || newest.tail >= length {
        return Err(log.error(
            newest.at + 12,
            format!(
                "the newest entry (sequence {}) names its tail at {:#x}, outside the log",
                newest.sequence, newest.tail
            ),
        ));
    }
    let mut chain: Vec<&Entry> = Vec::new();
    let mut pos = newest.tail;
    loop {
        let Some(item) = found.get(&pos) else {
            return Err(log.error(
                pos,
                format!(
                    "the newest entry (sequence {}) has its sequence start at {:#x}, but no valid entry is there (entries that wrap or lie)",
                    newest.sequence, newest.tail
                ),
            ));
        };
        if let Some(prev) = chain.last()
            && item.sequence != prev.sequence.wrapping_add(1)
        {
            return Err(log.error(
                pos,
                format!(
                    "the entry after sequence {} has sequence {}: the log's sequence from {:#x} to the newest entry (sequence {}) is broken",
                    prev.sequence, item.sequence, newest.tail, newest.sequence
                ),
            ));
        }
        chain.push(item);
        if item.at == newest.at {
            break;
        }
        if chain.len() > found.len() {
            return Err(log.error(
                newest.at,
                format!(
                    "the log's sequence ending at sequence {} goes round the buffer without reaching it",
                    newest.sequence
                ),
            ));
        }
        pos = (pos + item.length) % length;
    }
    let file_len = file.len();
    if newest.flushed_file_offset > file_len {
        return Err(log.error(
            newest.at + 48,
            format!(
                "the file is {file_len} bytes but the log says it was at least {} bytes when it was written: the file is truncated",
                newest.flushed_file_offset
            ),
        ));
    }
    let limit = newest.last_file_offset.max(file_len);
    let log_range = (offset, offset + length);
    let mut overlay = Overlay::new(file.clone());
    for e in &chain {
        let bytes = log.circular(e.at, e.length);
        for w in writes(&log, e, &bytes)? {
            let (start, len) = match &w {
                Write::Data { file_offset, .. } => (*file_offset, SECTOR),
                Write::Zero {
                    file_offset,
                    length,
                } => (*file_offset, *length),
            };
            let end = start.saturating_add(len);
            if start < PROTECTED || end > limit || (start < log_range.1 && log_range.0 < end) {
                return Err(log.error(
                    e.at,
                    format!(
                        "entry {} writes {len} bytes at {start:#x}, into the headers, the log itself or past the file's size ({limit} bytes)",
                        e.sequence
                    ),
                ));
            }
            if overlay.patch_bytes() + len > MAX_REPLAY_BYTES {
                return Err(Error::unsupported(format!(
                    "replaying the log needs more than {} MiB of memory; replay it on a copy with 'qemu-img check -r all'",
                    MAX_REPLAY_BYTES >> 20
                ))
                .at_offset(offset + e.at)
                .with_path(&name));
            }
            match w {
                Write::Data {
                    file_offset,
                    sector,
                } => overlay.write(file_offset, &sector)?,
                Write::Zero {
                    file_offset,
                    length,
                } => overlay.write(file_offset, &vec![0u8; length as usize])?,
            }
        }
    }
    // The file grows to hold what the log's writer had allocated.
    let new_len = newest.last_file_offset.max(file_len);
    overlay.set_len(new_len.max(overlay.len()));
    let summary = Replay {
        entries: chain.len(),
        sequence: (chain[0].sequence, newest.sequence),
        bytes: overlay.patch_bytes(),
        file_len: overlay.len(),
    };
    Ok(Some((overlay, summary)))
}
