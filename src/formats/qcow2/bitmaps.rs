//! The bitmap directory (persistent dirty bitmaps), read only to list the bitmaps in `info`
//! as qemu-img does: reading the disk never needs them.
//!
//! Each directory entry (big-endian): bitmap table offset (8), table size (4), flags (4:
//! bit 0 in use, bit 1 auto), type (1), granularity bits (1), name size (2), extra data size
//! (4), the extra data, the name, padding to a multiple of 8.

use super::header::BitmapsExtension;
use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};
use serde_json::{Value, json};

/// The largest bitmap directory qemu reads (64 MiB).
pub const MAX_DIRECTORY_BYTES: u64 = 64 << 20;
/// The most bitmaps qemu supports.
pub const MAX_BITMAPS: u32 = 65535;

/// One bitmap, as info lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// Its name.
    pub name: String,
    /// Bytes of the disk one bit covers.
    pub granularity: u64,
    /// Not saved cleanly.
    pub in_use: bool,
    /// Tracks every write.
    pub auto: bool,
    /// Where its bitmap table is (`check` counts its clusters).
    pub table_offset: u64,
    /// Entries of its bitmap table.
    pub table_size: u32,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads the directory the extension locates (checked by the header to lie inside the file).
pub fn read_directory(file: &dyn Storage, ext: &BitmapsExtension) -> Result<Vec<Bitmap>> {
    if ext.directory_size > MAX_DIRECTORY_BYTES || ext.count > MAX_BITMAPS {
        return Err(Error::corrupt(format!(
            "bitmap directory of {} bytes and {} bitmaps is larger than qemu's limits (64 MiB, 65535)",
            ext.directory_size, ext.count
        ))
        .at_offset(ext.directory_offset));
    }
    let dir = file.read_vec(ext.directory_offset, ext.directory_size, "bitmap directory")?;
    let mut out = Vec::new();
    let mut at = 0usize;
    for i in 0..ext.count {
        let bad = || {
            Error::corrupt(format!(
                "bitmap directory entry {i} runs past the directory ({} bytes)",
                dir.len()
            ))
            .at_offset(ext.directory_offset + at as u64)
        };
        if at + 24 > dir.len() {
            return Err(bad());
        }
        let flags = be32(&dir, at + 12);
        let granularity_bits = u32::from(dir[at + 17]);
        let name_len = usize::from(be16(&dir, at + 18));
        let extra_len = be32(&dir, at + 20) as usize;
        let name_start = at + 24 + extra_len;
        let end = name_start.checked_add(name_len).ok_or_else(bad)?;
        if end > dir.len() || granularity_bits > 63 {
            return Err(bad());
        }
        out.push(Bitmap {
            name: String::from_utf8_lossy(&dir[name_start..end]).into_owned(),
            granularity: 1 << granularity_bits,
            in_use: flags & 1 != 0,
            auto: flags & 2 != 0,
            table_offset: u64::from_be_bytes(dir[at..at + 8].try_into().expect("8 bytes")),
            table_size: be32(&dir, at + 8),
        });
        at = end.div_ceil(8) * 8;
    }
    Ok(out)
}

/// The bitmap as qemu-img's JSON lists it.
pub fn to_json(b: &Bitmap) -> Value {
    let mut flags = Vec::new();
    if b.in_use {
        flags.push("in-use");
    }
    if b.auto {
        flags.push("auto");
    }
    json!({"flags": flags, "name": b.name, "granularity": b.granularity})
}

/// Bytes a directory entry for a bitmap named with `name_len` bytes takes (no extra data):
/// the 24-byte fixed part and the name, padded to a multiple of 8.
pub fn entry_size(name_len: usize) -> u64 {
    (24 + name_len as u64).next_multiple_of(8)
}

/// The `bitmaps size` qemu-img measure reports for copying these bitmaps (name length,
/// granularity) of a disk of `virtual_size` bytes into a qcow2 image of `cluster`-byte
/// clusters: each bitmap as if wholly allocated, its bitmap table in whole clusters, and the
/// directory in whole clusters — qemu's own estimate, so that the figures agree.
pub fn measured_size(bitmaps: &[(usize, u64)], virtual_size: u64, cluster: u64) -> u64 {
    let mut total = 0u64;
    let mut directory = 0u64;
    for &(name_len, granularity) in bitmaps {
        let bits = virtual_size.div_ceil(granularity.max(1));
        let clusters = bits.div_ceil(8).div_ceil(cluster);
        total += clusters * cluster;
        total += (clusters * 8).next_multiple_of(cluster);
        directory += entry_size(name_len);
    }
    total + directory.next_multiple_of(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_measure_as_qemu_img_measures_them() {
        // qemu-img 10 measure -O qcow2 of a 64 MiB qcow2 holding b0 and b2 (64 KiB
        // granularity) and b1 (128 KiB): 458752 with 64 KiB clusters, 28672 with 4 KiB.
        let bitmaps = [(2, 65536), (2, 131072), (2, 65536)];
        assert_eq!(measured_size(&bitmaps, 64 << 20, 65536), 458752);
        assert_eq!(measured_size(&bitmaps, 64 << 20, 4096), 28672);
        assert_eq!(measured_size(&[], 64 << 20, 65536), 0);
    }
}
