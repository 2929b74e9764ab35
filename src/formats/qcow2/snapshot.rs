//! Internal snapshots: the snapshot table (choosing and listing them is format-independent:
//! [`crate::snapshot`]).
//!
//! Each table entry (big-endian) is 40 bytes (the snapshot's L1 table offset and size, the
//! lengths of its ID and name, date, VM clock, 32-bit VM state size, extra data size), then
//! the extra data (64-bit VM state size, virtual disk size, icount), the ID and the name, padded
//! to a multiple of 8. Reading a snapshot is reading the image with the snapshot's L1 table
//! instead of the active one, at the image's current virtual size (as qemu-img does).

use crate::error::{Error, Result};
use crate::snapshot::SnapshotInfo;
use crate::storage::{Storage, StorageExt};

/// The largest snapshot table qemu reads (64 MiB).
pub const MAX_TABLE_BYTES: u64 = 64 << 20;
/// The most extra data one entry may have (qemu's limit).
pub const MAX_EXTRA_BYTES: u32 = 1024;

/// One internal snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Where its L1 table is.
    pub l1_table_offset: u64,
    /// Entries of its L1 table.
    pub l1_size: u32,
    /// Its unique ID.
    pub id: String,
    /// Its name (tag).
    pub name: String,
    /// When it was taken: seconds since the epoch.
    pub date_sec: u32,
    /// And nanoseconds.
    pub date_nsec: u32,
    /// The guest's clock then, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Bytes of saved VM state.
    pub vm_state_size: u64,
    /// The virtual disk size then, when recorded.
    pub disk_size: Option<u64>,
    /// The record/replay instruction count, when recorded.
    pub icount: Option<u64>,
    /// Where its entry is in the file.
    pub entry_offset: u64,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the `count` entries of the snapshot table at `offset` (checked to start inside the
/// file). Every entry must lie inside the file, and the table within [`MAX_TABLE_BYTES`].
pub fn read_table(file: &dyn Storage, offset: u64, count: u32) -> Result<Vec<Snapshot>> {
    read_table_sized(file, offset, count).map(|(table, _)| table)
}

/// [`read_table`], and the bytes the table occupies (each entry padded to 8 bytes): `check`
/// counts the clusters of exactly those bytes, as qemu does.
pub fn read_table_sized(
    file: &dyn Storage,
    offset: u64,
    count: u32,
) -> Result<(Vec<Snapshot>, u64)> {
    let mut out = Vec::with_capacity(count.min(1024) as usize);
    let mut at = offset;
    for i in 0..count {
        let used = at - offset;
        if used + 40 > MAX_TABLE_BYTES {
            return Err(Error::corrupt(format!(
                "snapshot table is larger than {} MiB (qemu's limit) at entry {i}",
                MAX_TABLE_BYTES >> 20
            ))
            .at_offset(at));
        }
        let fixed = file
            .read_vec(at, 40, "snapshot table entry")
            .map_err(|e| e.context(format!("snapshot {i}")))?;
        let id_len = u64::from(be16(&fixed, 12));
        let name_len = u64::from(be16(&fixed, 14));
        let extra_len = be32(&fixed, 36);
        if extra_len > MAX_EXTRA_BYTES {
            return Err(Error::corrupt(format!(
                "snapshot {i} has {extra_len} bytes of extra data (at most {MAX_EXTRA_BYTES})"
            ))
            .at_offset(at + 36));
        }
        let rest_len = u64::from(extra_len) + id_len + name_len;
        let rest = file
            .read_vec(at + 40, rest_len, "snapshot table entry")
            .map_err(|e| e.context(format!("snapshot {i}")))?;
        let extra = &rest[..extra_len as usize];
        let id = &rest[extra_len as usize..(u64::from(extra_len) + id_len) as usize];
        let name = &rest[(u64::from(extra_len) + id_len) as usize..];
        let vm_state_size = if extra.len() >= 8 {
            be64(extra, 0)
        } else {
            u64::from(be32(&fixed, 32))
        };
        out.push(Snapshot {
            l1_table_offset: be64(&fixed, 0),
            l1_size: be32(&fixed, 8),
            id: String::from_utf8_lossy(id).into_owned(),
            name: String::from_utf8_lossy(name).into_owned(),
            date_sec: be32(&fixed, 16),
            date_nsec: be32(&fixed, 20),
            vm_clock_nsec: be64(&fixed, 24),
            vm_state_size,
            disk_size: (extra.len() >= 16).then(|| be64(extra, 8)),
            icount: (extra.len() >= 24)
                .then(|| be64(extra, 16))
                .filter(|&c| c != u64::MAX),
            entry_offset: at,
        });
        at += (40 + rest_len).div_ceil(8) * 8;
    }
    if at - offset > MAX_TABLE_BYTES {
        return Err(Error::corrupt(format!(
            "snapshot table is larger than {} MiB (qemu's limit)",
            MAX_TABLE_BYTES >> 20
        ))
        .at_offset(offset));
    }
    Ok((out, at - offset))
}

impl Snapshot {
    /// The snapshot as every format describes one (for `info`, `snapshot -l`, `convert -l`).
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            vm_state_size: self.vm_state_size,
            date_sec: u64::from(self.date_sec),
            date_nsec: self.date_nsec,
            vm_clock_nsec: self.vm_clock_nsec,
            icount: self.icount,
        }
    }
}
