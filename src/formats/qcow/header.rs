//! The QCOW version 1 header (48 bytes, big-endian), from the layout qemu's block/qcow.c
//! reads: magic, version, backing file name offset and length, mtime, size, cluster and L2
//! table bits, encryption method, L1 table offset.

use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};

/// Bytes of the header.
pub const HEADER_BYTES: u64 = 48;
/// The longest backing file name qemu reads.
pub const MAX_BACKING_NAME: u32 = 1023;
/// The largest L1 table read (entries of 8 bytes): 32 MiB, as for QCOW2.
pub const MAX_L1_BYTES: u64 = 32 << 20;

/// A parsed and validated QCOW header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The size field, in bytes.
    pub size: u64,
    /// log2 of the cluster size (9 to 16).
    pub cluster_bits: u32,
    /// log2 of the entries per L2 table (6 to 13: tables of 512 bytes to 64 KiB).
    pub l2_bits: u32,
    /// 0 none, 1 AES.
    pub crypt_method: u32,
    /// Where the L1 table is.
    pub l1_table_offset: u64,
    /// Entries of the L1 table (from the size).
    pub l1_size: u64,
    /// The backing file name.
    pub backing_file: Option<String>,
    /// Modification time of the backing file, as recorded.
    pub mtime: u32,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Virtual bytes one L2 table covers.
    pub fn l2_span(&self) -> u64 {
        1 << (self.cluster_bits + self.l2_bits)
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        1 << self.l2_bits
    }

    /// Reads and validates the header of `file`.
    pub fn read(file: &dyn Storage) -> Result<Header> {
        if file.len() < HEADER_BYTES {
            return Err(Error::corrupt(format!(
                "file of {} bytes is too short for a qcow header ({HEADER_BYTES} bytes)",
                file.len()
            )));
        }
        let h = file.read_vec(0, HEADER_BYTES, "header")?;
        if &h[0..4] != b"QFI\xfb" || be32(&h, 4) != 1 {
            return Err(Error::corrupt("not a qcow version 1 image").at_offset(0));
        }
        let size = be64(&h, 24);
        let cluster_bits = u32::from(h[32]);
        let l2_bits = u32::from(h[33]);
        if size <= 1 {
            return Err(Error::corrupt(format!(
                "virtual size {size} is too small (at least 2 bytes)"
            ))
            .at_offset(24));
        }
        if !(9..=16).contains(&cluster_bits) {
            return Err(Error::corrupt(format!(
                "cluster_bits {cluster_bits} is out of range (9 to 16: 512 bytes to 64 KiB clusters)"
            ))
            .at_offset(32));
        }
        if !(6..=13).contains(&l2_bits) {
            return Err(Error::corrupt(format!(
                "l2_bits {l2_bits} is out of range (6 to 13: L2 tables of 512 bytes to 64 KiB)"
            ))
            .at_offset(33));
        }
        let crypt_method = be32(&h, 36);
        if crypt_method > 1 {
            return Err(Error::corrupt(format!(
                "unknown encryption method {crypt_method} (0 none, 1 AES)"
            ))
            .at_offset(36));
        }
        let shift = cluster_bits + l2_bits;
        let l1_size = size.div_ceil(1u64 << shift);
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(Error::corrupt(format!(
                "virtual size {size} needs an L1 table of {l1_size} entries, larger than {} MiB",
                MAX_L1_BYTES >> 20
            ))
            .at_offset(24));
        }
        let l1_table_offset = be64(&h, 40);
        if l1_size > 0 && l1_table_offset < HEADER_BYTES {
            return Err(Error::corrupt(format!(
                "L1 table offset {l1_table_offset} lies in the header"
            ))
            .at_offset(40));
        }
        if l1_table_offset
            .checked_add(l1_size * 8)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(Error::corrupt(format!(
                "L1 table offset {l1_table_offset} is out of range"
            ))
            .at_offset(40));
        }
        let backing_offset = be64(&h, 8);
        let backing_len = be32(&h, 16);
        let backing_file = if backing_offset != 0 && backing_len > 0 {
            if backing_len > MAX_BACKING_NAME {
                return Err(Error::corrupt(format!(
                    "backing file name of {backing_len} bytes is too long (at most {MAX_BACKING_NAME})"
                ))
                .at_offset(16));
            }
            let bytes =
                file.read_vec(backing_offset, u64::from(backing_len), "backing file name")?;
            Some(String::from_utf8(bytes).map_err(|_| {
                Error::corrupt("backing file name is not valid UTF-8").at_offset(backing_offset)
            })?)
        } else {
            None
        };
        Ok(Header {
            size,
            cluster_bits,
            l2_bits,
            crypt_method,
            l1_table_offset,
            l1_size,
            backing_file,
            mtime: be32(&h, 20),
        })
    }
}
