//! The file identifier at offset 0 and the two headers at 64 KiB and 128 KiB.
//!
//! Headers are never updated through the log, so a writer keeps two and updates them in turn:
//! the valid one (signature and CRC-32C) with the higher sequence number is the current one.
//! A header torn by a crash fails its checksum and the other one is used.

use super::guid::{Guid, read_guid};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// The file identifier's signature.
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";

/// Where the two headers are.
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];

/// Bytes of a header covered by its checksum.
pub const HEADER_SIZE: usize = 4096;

/// Bytes of the header section (file identifier, headers, region tables, reserved): nothing
/// else may lie there.
pub const HEADER_SECTION: u64 = 1 << 20;

const HEADER_SIGNATURE: &[u8; 4] = b"head";

/// CRC-32C of `buf` with the four bytes at `field` read as zeros, as every VHDX checksum is
/// computed (the checksum field itself taking the value zero).
pub fn checksum(buf: &[u8], field: usize) -> u32 {
    let crc = crc32c::crc32c(&buf[..field]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &buf[field + 4..])
}

/// The little-endian u16/u32/u64 at `at` of `b` (callers pass slices long enough).
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// See [`le16`].
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// See [`le16`].
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One parsed, checksum-verified header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Which copy: 1 (at 64 KiB) or 2 (at 128 KiB).
    pub copy: usize,
    /// Where it was read.
    pub offset: u64,
    /// Higher is newer.
    pub sequence_number: u64,
    /// Changed by a writer on its first write to the file.
    pub file_write_guid: Guid,
    /// Changed by a writer on its first write to the virtual disk's data: what a differencing
    /// child's `parent_linkage` records of its parent.
    pub data_write_guid: Guid,
    /// The log's identity; zero when the log is empty, otherwise only entries carrying it are
    /// valid.
    pub log_guid: Guid,
    /// The log format's version (0).
    pub log_version: u16,
    /// The file format's version (1).
    pub version: u16,
    /// Bytes of the log.
    pub log_length: u32,
    /// Where the log is.
    pub log_offset: u64,
}

impl Header {
    /// Parses and verifies a header; `Err` says why it is not valid.
    pub fn parse(b: &[u8; HEADER_SIZE], copy: usize) -> std::result::Result<Header, String> {
        if &b[..4] != HEADER_SIGNATURE {
            return Err("no 'head' signature".into());
        }
        let stored = le32(b, 4);
        let computed = checksum(b, 4);
        if stored != computed {
            return Err(format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        Ok(Header {
            copy,
            offset: HEADER_OFFSETS[copy - 1],
            sequence_number: le64(b, 8),
            file_write_guid: read_guid(b, 16),
            data_write_guid: read_guid(b, 32),
            log_guid: read_guid(b, 48),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
        })
    }

    /// True when the header names a log that may hold entries to replay.
    pub fn has_log(&self) -> bool {
        !self.log_guid.is_nil()
    }
}

/// The file identifier's creator string (UTF-16LE, up to 256 units), for `info`.
pub fn read_creator(file: &dyn Storage) -> Result<String> {
    let mut b = [0u8; 520];
    file.read_exact_at(&mut b, 0)?;
    if &b[..8] != FILE_SIGNATURE {
        return Err(Error::corrupt("not a VHDX file: no 'vhdxfile' signature")
            .at_offset(0)
            .with_path(file.name()));
    }
    let units: Vec<u16> = b[8..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    Ok(String::from_utf16_lossy(&units))
}

/// The current header: the valid one, or of two valid ones the one with the higher sequence
/// number (the first on a tie: Disk2VHD writes two identical headers). Also returns a warning
/// when one copy is damaged, so `info` can say so.
pub fn read_current(file: &dyn Storage) -> Result<(Header, Option<String>)> {
    let mut found: Vec<std::result::Result<Header, String>> = Vec::new();
    for (i, &at) in HEADER_OFFSETS.iter().enumerate() {
        let mut b = [0u8; HEADER_SIZE];
        let parsed = if at + HEADER_SIZE as u64 > file.len() {
            Err(format!("past the end of the file ({} bytes)", file.len()))
        } else {
            file.read_exact_at(&mut b, at)?;
            Header::parse(&b, i + 1)
        };
        found.push(parsed);
    }
    let describe = |i: usize, why: &String| {
        format!(
            "header {} at {:#x} is not valid: {why}",
            i + 1,
            HEADER_OFFSETS[i]
        )
    };
    let (header, warning) = match (&found[0], &found[1]) {
        (Ok(a), Ok(b)) => (
            if b.sequence_number > a.sequence_number {
                b
            } else {
                a
            },
            None,
        ),
        (Ok(a), Err(why)) => (a, Some(describe(1, why))),
        (Err(why), Ok(b)) => (b, Some(describe(0, why))),
        (Err(w1), Err(w2)) => {
            return Err(Error::corrupt(format!(
                "neither VHDX header is valid: {}; {}",
                describe(0, w1),
                describe(1, w2)
            ))
            .at_offset(HEADER_OFFSETS[0])
            .with_path(file.name()));
        }
    };
    if header.version != 1 {
        return Err(Error::unsupported(format!(
            "VHDX header {} has version {}; diskferry reads version 1",
            header.copy, header.version
        ))
        .at_offset(header.offset + 66)
        .with_path(file.name()));
    }
    Ok((header.clone(), warning))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid header with `seq`, checksummed.
    pub(crate) fn header_bytes(seq: u64) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..4].copy_from_slice(b"head");
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[66..68].copy_from_slice(&1u16.to_le_bytes());
        b[68..72].copy_from_slice(&(1u32 << 20).to_le_bytes());
        b[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes());
        let sum = checksum(&b, 4);
        b[4..8].copy_from_slice(&sum.to_le_bytes());
        b
    }

    #[test]
    fn crc32c_matches_the_known_check_value() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720's check value).
        let mut b = b"1234\0\0\0\x0056789".to_vec();
        b.drain(4..8);
        assert_eq!(crc32c::crc32c(&b), 0xE306_9283);
        let mut with_field = b"xxxxABCD".to_vec();
        let sum = checksum(&with_field, 4);
        with_field[4..].fill(0);
        assert_eq!(sum, crc32c::crc32c(&with_field));
    }

    #[test]
    fn the_newer_valid_header_wins_and_a_damaged_one_is_named() {
        use crate::storage::Memory;
        let mut file = vec![0u8; 1 << 20];
        file[..8].copy_from_slice(FILE_SIGNATURE);
        file[64 << 10..(64 << 10) + HEADER_SIZE].copy_from_slice(&header_bytes(5));
        file[128 << 10..(128 << 10) + HEADER_SIZE].copy_from_slice(&header_bytes(6));
        let (h, w) = read_current(&Memory::new("h.vhdx", file.clone())).unwrap();
        assert_eq!((h.copy, h.sequence_number, w), (2, 6, None));
        file[(128 << 10) + 100] ^= 1;
        let (h, w) = read_current(&Memory::new("h.vhdx", file.clone())).unwrap();
        assert_eq!(h.copy, 1);
        assert!(w.unwrap().contains("header 2 at 0x20000"));
        file[(64 << 10) + 100] ^= 1;
        let e = read_current(&Memory::new("h.vhdx", file)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("h.vhdx: neither VHDX header is valid: header 1 at 0x10000"),
            "{e}"
        );
        assert_eq!(e.offset(), Some(64 << 10));
    }
}
