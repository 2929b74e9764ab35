//! Writing the metadata log: every change of the BAT, the sector bitmaps, the metadata region
//! or the region table goes through it (MS-VHDX 2.3.3 "Log", "Log Entry", "Data Sector").
//!
//! A session starts with a new header (the two-header update rule: the slot that is not
//! current, a sequence number one above, then a flush) that carries fresh FileWriteGuid,
//! DataWriteGuid (when the virtual disk's content or size will change) and LogGuid. Each change
//! is then made as MS-VHDX 2.3.3 orders it:
//!
//! 1. data the change will point to is already written; flush;
//! 2. a log entry (header, descriptors, data sectors, CRC-32C over all of it) whose tail is
//!    itself, written at the log's head; flush;
//! 3. the sectors written in place; flush;
//!
//! and the session ends with another header whose LogGuid is zero, flushed. A process killed
//! during 1 or 2 leaves the old tables (a torn entry fails its checksum); during 3, a log that
//! replays (diskferry in memory, qemu-img and Hyper-V in place) to the new tables. Each entry
//! is applied before the next is written, so the active sequence of an entry is the entry
//! alone: its tail is its own offset, and when it does not fit before the end of the buffer it
//! goes to the start.

use super::guid::Guid;
use super::header::{HEADER_OFFSETS, HEADER_SIZE, Header, checksum};
use super::log::SECTOR;
use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::storage::Storage;
use std::collections::BTreeMap;

/// Set in a test to make the process abort (as a `kill -9` stops it) right after a log entry
/// is written and flushed, before it is applied: the file then holds a log to replay.
pub const STOP_BEFORE_APPLY_ENV: &str = "DISKFERRY_TEST_VHDX_STOP_BEFORE_APPLY";

/// Sectors of the file to change, by offset (each 4 KiB-aligned), with their new content.
#[derive(Debug, Default)]
pub struct Pending {
    sectors: BTreeMap<u64, Vec<u8>>,
}

impl Pending {
    /// Sectors waiting to be logged.
    pub fn len(&self) -> usize {
        self.sectors.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.sectors.is_empty()
    }

    /// The sector at `at` (4 KiB-aligned) as it will be: pending, or read from `file`.
    fn sector(&mut self, file: &HostFile, at: u64) -> Result<&mut Vec<u8>> {
        match self.sectors.entry(at) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mut b = vec![0u8; SECTOR as usize];
                // A sector past the end of the file reads as zeros (a region just allocated).
                let len = file.len();
                if at < len {
                    let n = (len - at).min(SECTOR) as usize;
                    file.read_exact_at(&mut b[..n], at)?;
                }
                Ok(e.insert(b))
            }
        }
    }

    /// Reads `buf.len()` bytes at file offset `at` as they will be once applied.
    pub fn read(&self, file: &HostFile, at: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = at + done as u64;
            let base = pos / SECTOR * SECTOR;
            let inner = (pos - base) as usize;
            let n = (SECTOR as usize - inner).min(buf.len() - done);
            match self.sectors.get(&base) {
                Some(s) => buf[done..done + n].copy_from_slice(&s[inner..inner + n]),
                None => {
                    let len = file.len();
                    let chunk = &mut buf[done..done + n];
                    if pos >= len {
                        chunk.fill(0);
                    } else {
                        let m = ((len - pos) as usize).min(n);
                        file.read_exact_at(&mut chunk[..m], pos)?;
                        chunk[m..].fill(0);
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Changes `bytes.len()` bytes at file offset `at` (through the log, at the next commit).
    pub fn write(&mut self, file: &HostFile, at: u64, bytes: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < bytes.len() {
            let pos = at + done as u64;
            let base = pos / SECTOR * SECTOR;
            let inner = (pos - base) as usize;
            let n = (SECTOR as usize - inner).min(bytes.len() - done);
            let s = self.sector(file, base)?;
            s[inner..inner + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

/// Bytes of a log entry holding `count` data sectors.
pub fn entry_len(count: u64) -> u64 {
    (64 + 32 * count).div_ceil(SECTOR) * SECTOR + count * SECTOR
}

/// The identity of one log entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryHead {
    /// The header's LogGuid.
    pub guid: Guid,
    /// The entry's sequence number (never zero).
    pub sequence: u64,
    /// Offset in the log of the first entry of the active sequence.
    pub tail: u64,
    /// The file's size, all of it flushed, when the entry is written.
    pub flushed_file_offset: u64,
    /// The file's size the entry's changes need.
    pub last_file_offset: u64,
}

/// The bytes of a log entry writing `sectors` (file offset, 4 KiB of content): the header
/// and data descriptors (MS-VHDX 2.3.1.1, 2.3.1.3), then one data sector each (2.3.1.4),
/// the CRC-32C of the whole entry in the header.
pub fn entry_bytes(head: &EntryHead, sectors: &[(u64, &[u8])]) -> Vec<u8> {
    let count = sectors.len() as u64;
    let len = entry_len(count);
    let mut b = vec![0u8; len as usize];
    b[..4].copy_from_slice(b"loge");
    b[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    b[12..16].copy_from_slice(&(head.tail as u32).to_le_bytes());
    b[16..24].copy_from_slice(&head.sequence.to_le_bytes());
    b[24..28].copy_from_slice(&(count as u32).to_le_bytes());
    b[32..48].copy_from_slice(&head.guid.to_bytes_le());
    b[48..56].copy_from_slice(&head.flushed_file_offset.to_le_bytes());
    b[56..64].copy_from_slice(&head.last_file_offset.to_le_bytes());
    let data_at = (64 + 32 * count).div_ceil(SECTOR) as usize * SECTOR as usize;
    for (i, (offset, content)) in sectors.iter().enumerate() {
        let d = 64 + 32 * i;
        b[d..d + 4].copy_from_slice(b"desc");
        // The first 8 and last 4 bytes of the sector travel in the descriptor: the data
        // sector's own signature and sequence halves take their place.
        b[d + 4..d + 8].copy_from_slice(&content[4092..4096]);
        b[d + 8..d + 16].copy_from_slice(&content[..8]);
        b[d + 16..d + 24].copy_from_slice(&offset.to_le_bytes());
        b[d + 24..d + 32].copy_from_slice(&head.sequence.to_le_bytes());
        let s = data_at + i * SECTOR as usize;
        b[s..s + 4].copy_from_slice(b"data");
        b[s + 4..s + 8].copy_from_slice(&((head.sequence >> 32) as u32).to_le_bytes());
        b[s + 8..s + 4092].copy_from_slice(&content[8..4092]);
        b[s + 4092..s + 4096].copy_from_slice(&(head.sequence as u32).to_le_bytes());
    }
    let crc = checksum(&b, 4);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Whether the virtual disk's data (or size) changes in a session: MS-VHDX 2.2.2 has the
/// DataWriteGuid changed before the first such change, which a child's `parent_linkage` then
/// no longer matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataChange {
    /// Data or size change: a new DataWriteGuid.
    Yes,
    /// Only the file's own structures change (the parent locator): DataWriteGuid kept.
    No,
}

/// The log of a file open for writing, and its headers.
#[derive(Debug)]
pub struct LogWriter {
    log_offset: u64,
    log_len: u64,
    /// The current header's bytes and slot (0 or 1).
    header: Vec<u8>,
    slot: usize,
    /// The session's LogGuid, once started.
    guid: Option<Guid>,
    head: u64,
    sequence: u64,
    stop_before_apply: bool,
}

impl LogWriter {
    /// The log of the file whose current header is `header` (read again from `file`, so that
    /// the new headers keep every field). The file's log must be empty (replayed).
    pub fn new(file: &HostFile, header: &Header) -> Result<LogWriter> {
        let mut bytes = vec![0u8; HEADER_SIZE];
        file.read_exact_at(&mut bytes, header.offset)?;
        let log_len = u64::from(header.log_length);
        if log_len < 1 << 20 || header.log_offset < 1 << 20 {
            return Err(Error::corrupt(format!(
                "the header names a log of {log_len} bytes at {:#x}, too small to write changes through",
                header.log_offset
            ))
            .at_offset(header.offset + 68)
            .with_path(file.path()));
        }
        Ok(LogWriter {
            log_offset: header.log_offset,
            log_len,
            header: bytes,
            slot: header.copy - 1,
            guid: None,
            head: 0,
            sequence: 0,
            stop_before_apply: std::env::var_os(STOP_BEFORE_APPLY_ENV).is_some(),
        })
    }

    /// Data sectors one entry holds at most.
    pub fn capacity(&self) -> usize {
        let sectors = self.log_len / SECTOR;
        // One descriptor sector holds 126 descriptors after the header, 128 after that.
        (sectors - sectors.div_ceil(128) - 1) as usize
    }

    /// True when a session has started (the header carries a LogGuid).
    pub fn started(&self) -> bool {
        self.guid.is_some()
    }

    /// Writes the next header into the slot that is not current, with a sequence number one
    /// above, and flushes: a torn header fails its checksum and the current one stays.
    fn write_header(&mut self, file: &mut HostFile, edit: impl FnOnce(&mut [u8])) -> Result<()> {
        let mut b = self.header.clone();
        let seq = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")).wrapping_add(1);
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        edit(&mut b);
        let sum = checksum(&b, 4);
        b[4..8].copy_from_slice(&sum.to_le_bytes());
        let slot = 1 - self.slot;
        file.write_all_at(&b, HEADER_OFFSETS[slot])?;
        file.sync()?;
        self.header = b;
        self.slot = slot;
        Ok(())
    }

    /// Starts a session, before the first change: new FileWriteGuid, a new DataWriteGuid when
    /// `data` says so, and a LogGuid (no entry carries it yet, so there is nothing to replay).
    pub fn begin(&mut self, file: &mut HostFile, data: DataChange) -> Result<()> {
        if self.guid.is_some() {
            return Ok(());
        }
        let guid = uuid::Uuid::new_v4();
        self.write_header(file, |b| {
            b[16..32].copy_from_slice(&uuid::Uuid::new_v4().to_bytes_le());
            if data == DataChange::Yes {
                b[32..48].copy_from_slice(&uuid::Uuid::new_v4().to_bytes_le());
            }
            b[48..64].copy_from_slice(&guid.to_bytes_le());
        })?;
        self.guid = Some(guid);
        self.head = 0;
        self.sequence = 1;
        Ok(())
    }

    /// The current header's DataWriteGuid.
    pub fn data_write_guid(&self) -> Guid {
        super::guid::read_guid(&self.header, 32)
    }

    /// Logs and applies `pending` (one entry, or several in file order when it does not fit
    /// in one: callers that need changes applied together keep them under
    /// [`LogWriter::capacity`]). Data the changes point to must already be written; it is
    /// flushed first. The session must have begun.
    pub fn commit(&mut self, file: &mut HostFile, pending: &mut Pending) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let Some(guid) = self.guid else {
            return Err(Error::invalid(
                "internal error: a VHDX change logged before its session began",
            )
            .with_path(file.path()));
        };
        file.sync()?;
        let sectors: Vec<(u64, Vec<u8>)> =
            std::mem::take(&mut pending.sectors).into_iter().collect();
        for group in sectors.chunks(self.capacity()) {
            let len = entry_len(group.len() as u64);
            if self.head + len > self.log_len {
                self.head = 0;
            }
            let head = EntryHead {
                guid,
                sequence: self.sequence,
                tail: self.head,
                flushed_file_offset: file.len(),
                last_file_offset: file.len(),
            };
            let refs: Vec<(u64, &[u8])> = group.iter().map(|(o, s)| (*o, s.as_slice())).collect();
            let entry = entry_bytes(&head, &refs);
            file.write_all_at(&entry, self.log_offset + self.head)?;
            file.sync()?;
            if self.stop_before_apply {
                // As a kill -9 after the log's flush: nothing applied.
                std::process::abort();
            }
            for (at, content) in group {
                file.write_all_at(content, *at)?;
            }
            file.sync()?;
            self.head += len;
            self.sequence += 1;
        }
        Ok(())
    }

    /// Ends the session: a header whose LogGuid is zero (the log is empty), flushed.
    pub fn end(&mut self, file: &mut HostFile) -> Result<()> {
        if self.guid.take().is_none() {
            return Ok(());
        }
        file.sync()?;
        self.write_header(file, |b| b[48..64].fill(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Memory, StorageExt};
    use std::sync::Arc;

    /// A file of `len` bytes with both headers naming a 1 MiB log at 1 MiB and `guid`.
    fn file_with_log(len: usize, guid: Guid) -> Vec<u8> {
        let mut file = vec![0u8; len];
        file[..8].copy_from_slice(super::super::header::FILE_SIGNATURE);
        for (i, at) in HEADER_OFFSETS.iter().enumerate() {
            let mut h = super::super::header::tests::header_bytes(i as u64);
            h[48..64].copy_from_slice(&guid.to_bytes_le());
            h[4..8].fill(0);
            let sum = checksum(&h, 4);
            h[4..8].copy_from_slice(&sum.to_le_bytes());
            file[*at as usize..*at as usize + HEADER_SIZE].copy_from_slice(&h);
        }
        file
    }

    /// MS-VHDX 2.3.1: an entry is a header, descriptors and data sectors, each data sector's
    /// first 8 and last 4 bytes carried by its descriptor; diskferry's replay (written from
    /// the specification's reading side) must give back exactly the sectors written.
    #[test]
    fn an_entry_replays_to_the_sectors_it_logs() {
        let guid = Guid::from_u128(0x1234);
        let mut file = file_with_log(4 << 20, guid);
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        for (i, x) in a.iter_mut().enumerate() {
            *x = (i % 251) as u8;
        }
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i % 13) as u8 + 7;
        }
        let head = EntryHead {
            guid,
            sequence: (5 << 32) | 9,
            tail: 4096,
            flushed_file_offset: 4 << 20,
            last_file_offset: 4 << 20,
        };
        let entry = entry_bytes(&head, &[(2 << 20, &a), (3 << 20, &b)]);
        assert_eq!(entry.len(), 3 * 4096);
        file[(1 << 20) + 4096..(1 << 20) + 4096 + entry.len()].copy_from_slice(&entry);
        let storage: Arc<dyn Storage> = Arc::new(Memory::new("l.vhdx", file));
        let (header, _) = super::super::header::read_current(storage.as_ref()).unwrap();
        let (overlay, summary) = super::super::log::replay(storage, &header)
            .unwrap()
            .expect("an entry to replay");
        assert_eq!(summary.entries, 1);
        assert_eq!(summary.sequence, (head.sequence, head.sequence));
        assert_eq!(overlay.read_vec(2 << 20, 4096, "a").unwrap(), a);
        assert_eq!(overlay.read_vec(3 << 20, 4096, "b").unwrap(), b);
    }

    /// MS-VHDX 2.3.1.1: the checksum covers the whole entry; one flipped bit anywhere makes
    /// the entry invalid (a torn write), so nothing is replayed.
    #[test]
    fn a_torn_entry_is_not_replayed() {
        let guid = Guid::from_u128(0x77);
        let mut file = file_with_log(4 << 20, guid);
        let content = vec![0xAB; 4096];
        let head = EntryHead {
            guid,
            sequence: 1,
            tail: 0,
            flushed_file_offset: 4 << 20,
            last_file_offset: 4 << 20,
        };
        let mut entry = entry_bytes(&head, &[(2 << 20, &content)]);
        entry[4096 + 100] ^= 1;
        file[1 << 20..(1 << 20) + entry.len()].copy_from_slice(&entry);
        let storage: Arc<dyn Storage> = Arc::new(Memory::new("t.vhdx", file));
        let (header, _) = super::super::header::read_current(storage.as_ref()).unwrap();
        assert!(
            super::super::log::replay(storage, &header)
                .unwrap()
                .is_none()
        );
    }

    /// MS-VHDX 2.3.1.1: DescriptorCount descriptors of 32 bytes follow the 64-byte header in
    /// whole 4 KiB sectors, so 126 fit with the header in the first sector.
    #[test]
    fn descriptors_take_whole_sectors() {
        assert_eq!(entry_len(1), 2 * 4096);
        assert_eq!(entry_len(126), 127 * 4096);
        assert_eq!(entry_len(127), 129 * 4096);
    }
}
