//! The VDI pre-header and header (VirtualBox's VDICore.h; there is no other specification).
//!
//! ```text
//! 0x00  64 bytes   text banner ("<<< Oracle VM VirtualBox Disk Image >>>\n"; not relied on)
//! 0x40  u32        signature 0xBEDA107F
//! 0x44  u32        version: major << 16 | minor (1.1 today; 0.x for the oldest images)
//! 0x48  header     version 1: its own size, type, flags, comment, block map and data
//!                  offsets, geometry, disk size, block size, extra bytes per block, block
//!                  counts, four UUIDs (and, when the size says so, the logical geometry);
//!                  version 0: no size, no offsets (they follow from the header's size), no
//!                  extra bytes, three UUIDs.
//! ```
//!
//! Every number is little-endian; UUIDs are stored as RTUUID, whose first three fields are
//! little-endian (as a Windows GUID). The header is checked here, before anything is sized by
//! it: the block map must lie inside the file and the disk must fit in its blocks.

use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};
use uuid::Uuid;

/// The signature at 0x40.
pub const SIGNATURE: u32 = 0xBEDA_107F;
/// Where the signature sits (after the 64-byte banner).
pub const SIGNATURE_OFFSET: u64 = 0x40;
/// Where the header proper starts.
pub const HEADER_OFFSET: u64 = 0x48;
/// The size of a version 1 header without the logical geometry.
pub const HEADER1_LEN: u32 = 0x180;
/// The size of a version 1 header with the logical geometry ("1.1 plus"), what VirtualBox
/// writes.
pub const HEADER1_PLUS_LEN: u32 = 0x190;
/// The size of a version 0 header.
const HEADER0_LEN: u64 = 348;
/// The banner VirtualBox writes.
pub const BANNER: &[u8] = b"<<< Oracle VM VirtualBox Disk Image >>>\n";
/// A block map entry: the block is not in this image (reads from the parent, or zeros).
pub const BLOCK_FREE: u32 = 0xFFFF_FFFF;
/// A block map entry: the block reads as zeros, whatever the parent holds.
pub const BLOCK_ZERO: u32 = 0xFFFF_FFFE;
/// The most blocks a header may declare: 2^25 entries are a 128 MiB block map, 32 TiB of
/// disk in VirtualBox's 1 MiB blocks. The map is read whole, so this bounds memory.
pub const MAX_BLOCKS: u32 = 1 << 25;
/// The largest block size accepted (VirtualBox takes any power of two; qemu only 1 MiB).
pub const MAX_BLOCK_SIZE: u32 = 1 << 30;
/// The smallest block size accepted: one sector.
pub const MIN_BLOCK_SIZE: u32 = 512;

/// The image type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    /// 1: dynamically allocated ("normal").
    Dynamic,
    /// 2: every block allocated when made ("fixed").
    Static,
    /// 3: an undo image (VirtualBox's old immutable-disk changes), read as a differencing one.
    Undo,
    /// 4: differencing (a VirtualBox snapshot's changes over its parent).
    Differencing,
}

impl ImageType {
    fn from_u32(v: u32) -> Option<ImageType> {
        Some(match v {
            1 => ImageType::Dynamic,
            2 => ImageType::Static,
            3 => ImageType::Undo,
            4 => ImageType::Differencing,
            _ => return None,
        })
    }

    /// The field's value.
    pub fn to_u32(self) -> u32 {
        match self {
            ImageType::Dynamic => 1,
            ImageType::Static => 2,
            ImageType::Undo => 3,
            ImageType::Differencing => 4,
        }
    }

    /// The name `info` prints.
    pub fn name(self) -> &'static str {
        match self {
            ImageType::Dynamic => "dynamic",
            ImageType::Static => "static",
            ImageType::Undo => "undo",
            ImageType::Differencing => "differencing",
        }
    }

    /// True for the types whose free blocks read from a parent.
    pub fn has_parent(self) -> bool {
        matches!(self, ImageType::Differencing | ImageType::Undo)
    }
}

/// A parsed, checked VDI header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The version field (major << 16 | minor).
    pub version: u32,
    /// The header's own size (version 1), or 0 for version 0.
    pub header_len: u32,
    /// The image type.
    pub image_type: ImageType,
    /// The flags field (VirtualBox's "zero expand" bit, tolerated).
    pub flags: u32,
    /// The comment, up to its first NUL.
    pub comment: String,
    /// Where the block map starts.
    pub blocks_offset: u64,
    /// Where block 0's data starts.
    pub data_offset: u64,
    /// The virtual disk size in bytes.
    pub disk_size: u64,
    /// Bytes of data per block (a power of two).
    pub block_size: u32,
    /// Bytes in front of each block's data, private to the image (0 in practice).
    pub block_extra: u32,
    /// Entries in the block map.
    pub blocks: u32,
    /// Blocks the header says are allocated.
    pub blocks_allocated: u32,
    /// The image's UUID (what a child's linkage names).
    pub uuid_create: Uuid,
    /// Changed on every modification.
    pub uuid_modify: Uuid,
    /// The parent's creation UUID (differencing images).
    pub uuid_linkage: Uuid,
    /// The parent's modification UUID when the child was made (version 1 only).
    pub uuid_parent_modify: Uuid,
    /// The logical (BIOS) geometry, cylinders, heads, sectors, when the header has it.
    pub lchs: Option<(u32, u32, u32)>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn uuid_at(b: &[u8], at: usize) -> Uuid {
    Uuid::from_bytes_le(b[at..at + 16].try_into().expect("16 bytes"))
}

/// True when the probe bytes (at least 0x48 of them) carry the VDI signature.
pub fn has_signature(head: &[u8]) -> bool {
    head.len() >= 0x48 && u32_at(head, 0x40) == SIGNATURE
}

impl Header {
    /// Reads and checks the header of the image in `file`.
    pub fn read(file: &dyn Storage) -> Result<Header> {
        let len = file.len();
        if len < HEADER_OFFSET {
            return Err(Error::corrupt(format!(
                "the file has {len} bytes, too few for a VDI header"
            )));
        }
        // 0x48 + 0x190 bytes cover every header version; a short file gives zeros past its end
        // and is caught by the offset checks below.
        let mut b = vec![0u8; (HEADER_OFFSET + HEADER1_PLUS_LEN as u64) as usize];
        let n = (len.min(b.len() as u64)) as usize;
        file.read_exact_at(&mut b[..n], 0)?;
        if u32_at(&b, 0x40) != SIGNATURE {
            return Err(Error::corrupt(format!(
                "no VDI signature (found {:#010x}, expected {SIGNATURE:#010x})",
                u32_at(&b, 0x40)
            ))
            .at_offset(SIGNATURE_OFFSET));
        }
        let version = u32_at(&b, 0x44);
        let needed = if version >> 16 == 0 {
            HEADER_OFFSET + HEADER0_LEN
        } else {
            HEADER_OFFSET + HEADER1_LEN as u64
        };
        if len < needed {
            return Err(Error::corrupt(format!(
                "the file ends at {len:#x}, inside the VDI header ({needed:#x} bytes)"
            ))
            .at_offset(len));
        }
        let h = match version >> 16 {
            1 => Self::parse_v1(&b, version)?,
            0 => Self::parse_v0(&b, version)?,
            major => {
                return Err(Error::unsupported(format!(
                    "VDI header version {major}.{} is not one VirtualBox writes (1.1, or 0.x for the oldest images)",
                    version & 0xffff
                ))
                .at_offset(0x44));
            }
        };
        h.validate(len)?;
        Ok(h)
    }

    fn parse_v1(b: &[u8], version: u32) -> Result<Header> {
        let header_len = u32_at(b, 0x48);
        if header_len < HEADER1_LEN {
            return Err(Error::corrupt(format!(
                "the VDI header says it is {header_len} bytes, fewer than the {HEADER1_LEN} of a version 1 header"
            ))
            .at_offset(0x48));
        }
        let type_raw = u32_at(b, 0x4C);
        let image_type = ImageType::from_u32(type_raw).ok_or_else(|| {
            Error::corrupt(format!(
                "unknown VDI image type {type_raw} (1 dynamic, 2 static, 3 undo, 4 differencing)"
            ))
            .at_offset(0x4C)
        })?;
        let lchs = (header_len >= HEADER1_PLUS_LEN)
            .then(|| (u32_at(b, 0x1C8), u32_at(b, 0x1CC), u32_at(b, 0x1D0)));
        Ok(Header {
            version,
            header_len,
            image_type,
            flags: u32_at(b, 0x50),
            comment: comment(&b[0x54..0x154]),
            blocks_offset: u32_at(b, 0x154) as u64,
            data_offset: u32_at(b, 0x158) as u64,
            disk_size: u64_at(b, 0x170),
            block_size: u32_at(b, 0x178),
            block_extra: u32_at(b, 0x17C),
            blocks: u32_at(b, 0x180),
            blocks_allocated: u32_at(b, 0x184),
            uuid_create: uuid_at(b, 0x188),
            uuid_modify: uuid_at(b, 0x198),
            uuid_linkage: uuid_at(b, 0x1A8),
            uuid_parent_modify: uuid_at(b, 0x1B8),
            lchs,
        })
    }

    fn parse_v0(b: &[u8], version: u32) -> Result<Header> {
        let blocks = u32_at(b, 0x16C);
        let blocks_offset = HEADER_OFFSET + HEADER0_LEN;
        let type_raw = u32_at(b, 0x48);
        let image_type = ImageType::from_u32(type_raw).ok_or_else(|| {
            Error::corrupt(format!(
                "unknown VDI image type {type_raw} (1 dynamic, 2 static, 3 undo, 4 differencing)"
            ))
            .at_offset(0x48)
        })?;
        Ok(Header {
            version,
            header_len: 0,
            image_type,
            flags: u32_at(b, 0x4C),
            comment: comment(&b[0x50..0x150]),
            blocks_offset,
            data_offset: blocks_offset + blocks as u64 * 4,
            disk_size: u64_at(b, 0x160),
            block_size: u32_at(b, 0x168),
            block_extra: 0,
            blocks,
            blocks_allocated: u32_at(b, 0x170),
            uuid_create: uuid_at(b, 0x174),
            uuid_modify: uuid_at(b, 0x184),
            uuid_linkage: uuid_at(b, 0x194),
            uuid_parent_modify: Uuid::nil(),
            lchs: None,
        })
    }

    /// Where each field lives, for messages: (disk size, block size, blocks).
    fn field_offsets(&self) -> (u64, u64, u64) {
        if self.version >> 16 == 0 {
            (0x160, 0x168, 0x16C)
        } else {
            (0x170, 0x178, 0x180)
        }
    }

    fn validate(&self, file_len: u64) -> Result<()> {
        let (size_at, block_at, blocks_at) = self.field_offsets();
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(Error::corrupt(format!(
                "VDI block size {bs} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
            ))
            .at_offset(block_at));
        }
        if self.block_extra != 0 && !self.block_extra.is_power_of_two() {
            return Err(Error::corrupt(format!(
                "VDI extra bytes per block ({}) is not a power of two",
                self.block_extra
            ))
            .at_offset(block_at + 4));
        }
        if self.blocks > MAX_BLOCKS {
            return Err(Error::unsupported(format!(
                "the VDI header declares {} blocks, more than the {MAX_BLOCKS} diskferry reads",
                self.blocks
            ))
            .at_offset(blocks_at));
        }
        let capacity = self.blocks as u64 * bs as u64;
        if capacity < self.disk_size {
            return Err(Error::corrupt(format!(
                "the VDI's {} blocks of {bs} bytes hold {capacity} bytes, fewer than its disk size of {}",
                self.blocks, self.disk_size
            ))
            .at_offset(size_at));
        }
        let min_blocks_offset = if self.version >> 16 == 0 {
            HEADER_OFFSET + HEADER0_LEN
        } else {
            HEADER_OFFSET + HEADER1_LEN as u64
        };
        if self.blocks_offset < min_blocks_offset {
            return Err(Error::corrupt(format!(
                "the VDI block map at {:#x} overlaps the header (it must start at {min_blocks_offset:#x} or later)",
                self.blocks_offset
            ))
            .at_offset(0x154));
        }
        let map_end = self.blocks_offset + self.blocks as u64 * 4;
        if map_end > file_len {
            return Err(Error::corrupt(format!(
                "the VDI block map ({} entries at {:#x}) runs past the end of the file ({file_len} bytes)",
                self.blocks, self.blocks_offset
            ))
            .at_offset(self.blocks_offset));
        }
        if self.data_offset < map_end {
            return Err(Error::corrupt(format!(
                "the VDI data area at {:#x} overlaps the block map, which ends at {map_end:#x}",
                self.data_offset
            ))
            .at_offset(0x158));
        }
        if self.blocks_allocated > self.blocks {
            return Err(Error::corrupt(format!(
                "the VDI header says {} blocks are allocated, more than its {} blocks",
                self.blocks_allocated, self.blocks
            ))
            .at_offset(blocks_at + 4));
        }
        Ok(())
    }

    /// Bytes each block occupies in the file: its extra bytes and its data.
    pub fn block_stride(&self) -> u64 {
        self.block_extra as u64 + self.block_size as u64
    }

    /// Where the data of the block stored at index `entry` starts.
    pub fn block_data_at(&self, entry: u32) -> u64 {
        self.data_offset + entry as u64 * self.block_stride() + self.block_extra as u64
    }

    /// Reads the block map (its size was checked against the file by [`Header::read`]).
    pub fn read_map(&self, file: &dyn Storage) -> Result<Vec<u32>> {
        let raw = file.read_vec(self.blocks_offset, self.blocks as u64 * 4, "VDI block map")?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }

    /// The version as `info` prints it ("1.1").
    pub fn version_text(&self) -> String {
        format!("{}.{}", self.version >> 16, self.version & 0xffff)
    }
}

fn comment(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// What a new image's header holds (always version 1.1 with the logical geometry, as
/// VirtualBox writes it).
#[derive(Debug, Clone)]
pub struct NewHeader {
    /// The image type.
    pub image_type: ImageType,
    /// Where the block map goes.
    pub blocks_offset: u64,
    /// Where block 0's data goes.
    pub data_offset: u64,
    /// The virtual size.
    pub disk_size: u64,
    /// The block size.
    pub block_size: u32,
    /// Entries in the block map.
    pub blocks: u32,
    /// Blocks stored.
    pub blocks_allocated: u32,
    /// The new image's UUID.
    pub uuid_create: Uuid,
    /// Its modification UUID.
    pub uuid_modify: Uuid,
    /// The parent's creation UUID (nil without one).
    pub uuid_linkage: Uuid,
    /// The parent's modification UUID (nil without one).
    pub uuid_parent_modify: Uuid,
}

impl NewHeader {
    /// The pre-header and header, 0x48 + 0x190 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; (HEADER_OFFSET + HEADER1_PLUS_LEN as u64) as usize];
        b[..BANNER.len()].copy_from_slice(BANNER);
        let put32 =
            |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(&mut b, 0x40, SIGNATURE);
        put32(&mut b, 0x44, 0x0001_0001);
        put32(&mut b, 0x48, HEADER1_PLUS_LEN);
        put32(&mut b, 0x4C, self.image_type.to_u32());
        put32(&mut b, 0x154, self.blocks_offset as u32);
        put32(&mut b, 0x158, self.data_offset as u32);
        // Legacy geometry "not calculated" with 512-byte sectors, as VirtualBox writes it.
        put32(&mut b, 0x168, 512);
        b[0x170..0x178].copy_from_slice(&self.disk_size.to_le_bytes());
        put32(&mut b, 0x178, self.block_size);
        put32(&mut b, 0x180, self.blocks);
        put32(&mut b, 0x184, self.blocks_allocated);
        b[0x188..0x198].copy_from_slice(&self.uuid_create.to_bytes_le());
        b[0x198..0x1A8].copy_from_slice(&self.uuid_modify.to_bytes_le());
        b[0x1A8..0x1B8].copy_from_slice(&self.uuid_linkage.to_bytes_le());
        b[0x1B8..0x1C8].copy_from_slice(&self.uuid_parent_modify.to_bytes_le());
        put32(&mut b, 0x1D4, 512);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;

    fn sample() -> NewHeader {
        NewHeader {
            image_type: ImageType::Dynamic,
            blocks_offset: 0x1000,
            data_offset: 0x2000,
            disk_size: 10 << 20,
            block_size: 1 << 20,
            blocks: 10,
            blocks_allocated: 0,
            uuid_create: Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            uuid_modify: Uuid::from_u128(7),
            uuid_linkage: Uuid::nil(),
            uuid_parent_modify: Uuid::nil(),
        }
    }

    #[test]
    fn a_written_header_reads_back() {
        let mut bytes = sample().to_bytes();
        bytes.resize(0x2000, 0);
        let h = Header::read(&Memory::new("t.vdi", bytes)).unwrap();
        assert_eq!(h.image_type, ImageType::Dynamic);
        assert_eq!(h.disk_size, 10 << 20);
        assert_eq!(h.blocks, 10);
        assert_eq!(h.data_offset, 0x2000);
        assert_eq!(h.uuid_create, sample().uuid_create);
        assert_eq!(h.lchs, Some((0, 0, 0)));
        assert_eq!(h.version_text(), "1.1");
    }

    #[test]
    fn uuids_are_stored_as_guids() {
        let b = sample().to_bytes();
        // RTUUID's first field is little-endian: 01020304 is stored 04 03 02 01.
        assert_eq!(&b[0x188..0x18C], &[4, 3, 2, 1]);
    }

    #[test]
    fn a_block_map_past_the_end_is_refused_with_its_offset() {
        let mut h = sample();
        h.blocks = 1 << 20;
        h.disk_size = 1 << 40;
        let mut bytes = h.to_bytes();
        bytes.resize(0x2000, 0);
        let e = Header::read(&Memory::new("t.vdi", bytes)).unwrap_err();
        assert!(e.to_string().contains("block map"), "{e}");
        assert_eq!(e.offset(), Some(0x1000));
    }

    #[test]
    fn a_disk_larger_than_its_blocks_is_refused() {
        let mut h = sample();
        h.disk_size = 11 << 20;
        let mut bytes = h.to_bytes();
        bytes.resize(0x2000, 0);
        let e = Header::read(&Memory::new("t.vdi", bytes)).unwrap_err();
        assert!(e.to_string().contains("fewer than its disk size"), "{e}");
    }
}
