//! Persistent dirty bitmaps: the bitmap directory, listed by `info` as qemu-img lists it, and
//! each bitmap's table and data, read only for `convert --bitmaps` (reading the disk never
//! needs them).
//!
//! Each directory entry (big-endian): bitmap table offset (8), table size (4), flags (4:
//! bit 0 in use, bit 1 auto), type (1), granularity bits (1), name size (2), extra data size
//! (4), the extra data, the name, padding to a multiple of 8.
//!
//! A bitmap holds one bit per `granularity` bytes of the disk, bit `i` in byte `i / 8` at
//! `1 << (i % 8)`, cut in clusters. Its table has one 8-byte entry per cluster of bits: the
//! offset of a data cluster, or 0 with bit 0 clear for a cluster of zeros, set for ones.

use super::header::BitmapsExtension;
use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};
use serde_json::{Value, json};
use std::sync::Arc;

/// The largest bitmap directory qemu reads (64 MiB).
pub const MAX_DIRECTORY_BYTES: u64 = 64 << 20;
/// The most bitmaps qemu supports.
pub const MAX_BITMAPS: u32 = 65535;
/// The most entries qemu allows in one bitmap table.
pub const MAX_TABLE_ENTRIES: u64 = 0x800_0000;
/// The most bytes of bits one bitmap may hold in qemu (it keeps them in memory).
pub const MAX_BITMAP_BYTES: u64 = 0x2000_0000;
/// The finest granularity qemu allows (512 bytes) and the coarsest (2 GiB), as powers of two.
pub const GRANULARITY_BITS: std::ops::RangeInclusive<u8> = 9..=31;
/// The longest bitmap name.
pub const MAX_NAME_BYTES: usize = 1023;
/// The only bitmap type: dirty tracking.
pub const TYPE_DIRTY_TRACKING: u8 = 1;
/// Directory entry flag bit 0: the bitmap was not saved cleanly (inconsistent).
pub const FLAG_IN_USE: u32 = 1;
/// Directory entry flag bit 1: the bitmap tracks every write (enabled).
pub const FLAG_AUTO: u32 = 2;
/// Bitmap table entry bits that must be clear: 1-8 and 56-63.
const ENTRY_RESERVED: u64 = 0xff00_0000_0000_01fe;
/// Bitmap table entry: the data cluster's offset.
const ENTRY_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
/// Bitmap table entry bit 0 (without an offset): the cluster's bits are all set.
const ENTRY_ALL_ONES: u64 = 1;

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
    /// The flags word as stored (reserved bits included).
    pub flags: u32,
    /// Its type (1, dirty tracking, is the only one).
    pub kind: u8,
    /// log2 of the granularity, as stored.
    pub granularity_bits: u8,
    /// Bytes of extra data in its entry (qemu knows none).
    pub extra_data_size: u32,
    /// Where its directory entry is in the file, for messages.
    pub entry_offset: u64,
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
            flags,
            kind: dir[at + 16],
            granularity_bits: dir[at + 17],
            extra_data_size: extra_len as u32,
            entry_offset: ext.directory_offset + at as u64,
        });
        at = end.div_ceil(8) * 8;
    }
    Ok(out)
}

pub use crate::dirty_bitmap::Tracking;

/// A consistent bitmap whose table has been read and checked: its bits are read from the
/// image's file on demand, so only the table is held in memory.
#[derive(Debug)]
pub struct StoredBitmap {
    /// Its name.
    pub name: String,
    /// log2 of the bytes of the disk one bit covers.
    pub granularity_bits: u8,
    /// Enabled or disabled.
    pub tracking: Tracking,
    /// Bits it holds: one per granularity unit of the disk.
    pub bits: u64,
    file: Arc<dyn Storage>,
    cluster_size: u64,
    /// The table's entries, checked.
    table: Vec<u64>,
}

impl StoredBitmap {
    /// Reads and checks the table of `b`, a bitmap of the image in `file` (clusters of
    /// `cluster_size` bytes, a disk of `virtual_size` bytes), as qemu checks it before it
    /// loads a bitmap. An inconsistent (in use) bitmap has no usable bits and is refused.
    pub fn load(
        file: Arc<dyn Storage>,
        b: &Bitmap,
        cluster_size: u64,
        virtual_size: u64,
    ) -> Result<StoredBitmap> {
        let bad = |what: String| {
            Error::corrupt(format!("bitmap '{}': {what}", b.name))
                .at_offset(b.entry_offset)
                .with_path(file.name())
        };
        if b.flags & FLAG_IN_USE != 0 {
            return Err(bad(
                "it is inconsistent (in use), its bits cannot be used".into()
            ));
        }
        if b.flags & !(FLAG_IN_USE | FLAG_AUTO) != 0 {
            return Err(bad(format!("reserved flags {:#x} are set", b.flags)));
        }
        if b.kind != TYPE_DIRTY_TRACKING {
            return Err(bad(format!("type {} is not dirty tracking (1)", b.kind)));
        }
        if b.extra_data_size != 0 {
            return Err(bad(format!(
                "{} bytes of extra data, which no known version defines",
                b.extra_data_size
            )));
        }
        if !GRANULARITY_BITS.contains(&b.granularity_bits) {
            return Err(bad(format!(
                "granularity of 2^{} bytes is outside 512 bytes to 2 GiB",
                b.granularity_bits
            )));
        }
        if b.name.len() > MAX_NAME_BYTES {
            return Err(bad(format!(
                "name of {} bytes is longer than 1023",
                b.name.len()
            )));
        }
        let bits = virtual_size.div_ceil(1 << b.granularity_bits);
        let bytes = bits.div_ceil(8);
        let expected = bytes.div_ceil(cluster_size);
        if bytes > MAX_BITMAP_BYTES || expected > MAX_TABLE_ENTRIES {
            return Err(bad(format!(
                "{bytes} bytes of bits are more than qemu's limit of 512 MiB"
            )));
        }
        if u64::from(b.table_size) != expected {
            return Err(bad(format!(
                "its table has {} entries where the disk's size and the granularity need {expected}",
                b.table_size
            )));
        }
        if b.table_offset == 0 || !b.table_offset.is_multiple_of(cluster_size) {
            return Err(bad(format!(
                "its table offset {:#x} is not a cluster boundary",
                b.table_offset
            )));
        }
        let raw = file
            .read_vec(b.table_offset, expected * 8, "bitmap table")
            .map_err(|e| e.context(format_args!("bitmap '{}'", b.name)))?;
        let len = file.len();
        let mut table = Vec::with_capacity(expected as usize);
        for (i, e) in raw.chunks_exact(8).enumerate() {
            let entry = u64::from_be_bytes(e.try_into().expect("8 bytes"));
            let data = entry & ENTRY_OFFSET;
            let at = b.table_offset + i as u64 * 8;
            let wrong = if entry & ENTRY_RESERVED != 0 {
                Some("has reserved bits set")
            } else if data != 0 && entry & ENTRY_ALL_ONES != 0 {
                Some("has both an offset and the all-ones bit")
            } else if data != 0 && !data.is_multiple_of(cluster_size) {
                Some("is not a cluster boundary")
            } else if data != 0 && data.saturating_add(cluster_size) > len {
                Some("points past the end of the file")
            } else {
                None
            };
            if let Some(wrong) = wrong {
                return Err(Error::corrupt(format!(
                    "bitmap '{}': table entry {i} ({entry:#x}) {wrong}",
                    b.name
                ))
                .at_offset(at)
                .with_path(file.name()));
            }
            table.push(entry);
        }
        Ok(StoredBitmap {
            name: b.name.clone(),
            granularity_bits: b.granularity_bits,
            tracking: if b.flags & FLAG_AUTO != 0 {
                Tracking::Enabled
            } else {
                Tracking::Disabled
            },
            bits,
            file,
            cluster_size,
            table,
        })
    }

    /// Bytes of bits.
    pub fn byte_len(&self) -> u64 {
        self.bits.div_ceil(8)
    }

    /// Fills `buf` with the bitmap's bytes from byte `offset` (zeros past its end, and for
    /// the bits past its last one, whatever the file holds there).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        let end = (offset + buf.len() as u64).min(self.byte_len());
        let mut pos = offset;
        while pos < end {
            let index = pos / self.cluster_size;
            let within = pos % self.cluster_size;
            let n = (self.cluster_size - within).min(end - pos);
            let part = &mut buf[(pos - offset) as usize..(pos - offset + n) as usize];
            let entry = self.table[index as usize];
            match entry & ENTRY_OFFSET {
                0 if entry & ENTRY_ALL_ONES != 0 => part.fill(0xff),
                0 => {}
                data => self.file.read_exact_at(part, data + within)?,
            }
            pos += n;
        }
        // Bits past the last one are not part of the bitmap.
        let tail_bits = self.bits % 8;
        if tail_bits != 0 && (offset..offset + buf.len() as u64).contains(&(self.byte_len() - 1)) {
            buf[(self.byte_len() - 1 - offset) as usize] &= (1u8 << tail_bits) - 1;
        }
        Ok(())
    }
}

impl crate::dirty_bitmap::DirtyBitmap for StoredBitmap {
    fn name(&self) -> &str {
        &self.name
    }
    fn granularity_bits(&self) -> u8 {
        self.granularity_bits
    }
    fn tracking(&self) -> Tracking {
        self.tracking
    }
    fn bits(&self) -> u64 {
        self.bits
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        StoredBitmap::read(self, offset, buf)
    }
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

/// Appends to `directory` the entry of `bitmap`, whose table of `entries` entries is at
/// `table_offset`: consistent (not in use), dirty tracking, no extra data, its name, padded
/// to a multiple of 8.
pub fn push_entry(
    directory: &mut Vec<u8>,
    bitmap: &dyn crate::dirty_bitmap::DirtyBitmap,
    table_offset: u64,
    entries: u32,
) {
    let flags = match bitmap.tracking() {
        Tracking::Enabled => FLAG_AUTO,
        Tracking::Disabled => 0,
    };
    directory.extend_from_slice(&table_offset.to_be_bytes());
    directory.extend_from_slice(&entries.to_be_bytes());
    directory.extend_from_slice(&flags.to_be_bytes());
    directory.push(TYPE_DIRTY_TRACKING);
    directory.push(bitmap.granularity_bits());
    directory.extend_from_slice(&(bitmap.name().len() as u16).to_be_bytes());
    directory.extend_from_slice(&0u32.to_be_bytes());
    directory.extend_from_slice(bitmap.name().as_bytes());
    directory.resize(directory.len().next_multiple_of(8), 0);
}

/// Stores `bitmap` in an image of `cluster`-byte clusters: each cluster of its bits through
/// `store` (which writes bytes into newly counted clusters and returns where), then its
/// table, and appends its directory entry to `directory`. A cluster of clear bits gets no
/// data cluster (table entry 0), as qemu writes it; every other cluster, all ones included,
/// is stored (qemu does not write the all-ones entry either).
pub fn store(
    bitmap: &dyn crate::dirty_bitmap::DirtyBitmap,
    cluster: u64,
    directory: &mut Vec<u8>,
    store: &mut dyn FnMut(&[u8]) -> Result<u64>,
) -> Result<()> {
    let entries = bitmap.byte_len().div_ceil(cluster);
    if entries == 0 {
        return Err(Error::invalid(format!(
            "bitmap '{}' covers an empty disk, which a qcow2 bitmap table cannot describe",
            bitmap.name()
        )));
    }
    let mut buf = vec![0u8; cluster as usize];
    let mut table = Vec::with_capacity(entries as usize * 8);
    for i in 0..entries {
        bitmap.read(i * cluster, &mut buf)?;
        let entry = if buf.iter().all(|&x| x == 0) {
            0
        } else {
            store(&buf)?
        };
        table.extend_from_slice(&entry.to_be_bytes());
    }
    let table_offset = store(&table)?;
    push_entry(directory, bitmap, table_offset, entries as u32);
    Ok(())
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
