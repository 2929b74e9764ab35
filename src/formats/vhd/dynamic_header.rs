//! The 1024-byte dynamic disk header of dynamic and differencing VHDs: where the BAT is, the
//! block size, and (for differencing disks) the parent's identity and locators.

use super::footer::checksum;
use std::fmt;
use zerocopy::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes in the header.
pub const HEADER_SIZE: u64 = 1024;
/// The header's magic.
pub const HEADER_COOKIE: &[u8; 8] = b"cxsparse";
/// The only header version there is (1.0).
pub const HEADER_VERSION: u32 = 0x0001_0000;
/// Parent locator entries in a header.
pub const LOCATOR_COUNT: usize = 8;
/// The smallest block size a reader accepts (one sector), as qemu does.
pub const MIN_BLOCK_SIZE: u32 = 512;

/// One parent locator entry as stored.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawLocator {
    /// Platform code ("W2ku", "W2ru", "Mac X" = "MacX", ...), zero when unused.
    pub code: [u8; 4],
    /// Space reserved for the locator data (sectors per the specification; Windows and
    /// blktap store bytes).
    pub data_space: U32,
    /// Length of the locator data in bytes.
    pub data_length: U32,
    /// Zeros.
    pub reserved: U32,
    /// Absolute offset of the locator data.
    pub data_offset: U64,
}

/// The header as stored.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawHeader {
    /// "cxsparse".
    pub cookie: [u8; 8],
    /// Unused: all ones.
    pub data_offset: U64,
    /// Absolute offset of the BAT.
    pub table_offset: U64,
    /// 0x00010000.
    pub version: U32,
    /// BAT entries.
    pub max_table_entries: U32,
    /// Bytes of data per block (a power of two).
    pub block_size: U32,
    /// One's complement of the byte sum with this field zeroed.
    pub checksum: U32,
    /// The parent's footer UUID (differencing disks).
    pub parent_uuid: [u8; 16],
    /// The parent's modification time, seconds since the VHD epoch.
    pub parent_timestamp: U32,
    /// Zeros.
    pub reserved1: U32,
    /// The parent's name, UTF-16BE.
    pub parent_name: [u8; 512],
    /// Where to find the parent.
    pub locators: [RawLocator; LOCATOR_COUNT],
    /// Zeros.
    pub reserved2: [u8; 256],
}

const _: () = assert!(std::mem::size_of::<RawHeader>() == HEADER_SIZE as usize);

const CHECKSUM_RANGE: std::ops::Range<usize> = 36..40;

/// Platform codes of parent locators.
pub mod platform {
    /// Windows, absolute path, UTF-16LE.
    pub const W2KU: [u8; 4] = *b"W2ku";
    /// Windows, relative path, UTF-16LE.
    pub const W2RU: [u8; 4] = *b"W2ru";
    /// Windows (deprecated), relative path, ANSI.
    pub const WI2R: [u8; 4] = *b"Wi2r";
    /// Windows (deprecated), absolute path, ANSI.
    pub const WI2K: [u8; 4] = *b"Wi2k";
    /// Mac OS X, a file:// URL in UTF-8.
    pub const MACX: [u8; 4] = *b"MacX";
    /// Classic Mac OS alias blob.
    pub const MAC: [u8; 4] = *b"Mac ";
}

/// A parent locator entry in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locator {
    /// Its index in the header (0..8).
    pub index: usize,
    /// The platform code.
    pub code: [u8; 4],
    /// Reserved space as stored.
    pub data_space: u32,
    /// Data length in bytes.
    pub data_length: u32,
    /// Absolute offset of the data.
    pub data_offset: u64,
}

impl Locator {
    /// Bytes the locator reserves in the file: `data_space` is sectors per the specification,
    /// but Windows and blktap write bytes; like blktap, read a value below 512 as sectors and
    /// a multiple of 512 as bytes.
    pub fn reserved_bytes(&self) -> u64 {
        let space = u64::from(self.data_space);
        if space < 512 { space * 512 } else { space }.max(u64::from(self.data_length))
    }
}

/// Why 1024 bytes are not a usable header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// No "cxsparse" cookie.
    Cookie,
    /// The checksum does not match.
    Checksum {
        /// The stored value.
        stored: u32,
        /// The value the bytes give.
        computed: u32,
    },
    /// The block size is not a power of two of at least 512 bytes.
    BlockSize(u32),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Cookie => {
                f.write_str("no dynamic disk header (the \"cxsparse\" cookie is missing)")
            }
            HeaderError::Checksum { stored, computed } => write!(
                f,
                "dynamic disk header checksum is wrong (stored {stored:#010x}, computed {computed:#010x})"
            ),
            HeaderError::BlockSize(b) => write!(
                f,
                "dynamic disk header has an invalid block size {b} (must be a power of two of at least 512)"
            ),
        }
    }
}

/// A checked header.
#[derive(Debug, Clone)]
pub struct DynamicHeader {
    /// The unused data offset (all ones in a well-formed file).
    pub data_offset: u64,
    /// Absolute offset of the BAT.
    pub table_offset: u64,
    /// Header version.
    pub version: u32,
    /// BAT entries.
    pub max_table_entries: u32,
    /// Bytes of data per block.
    pub block_size: u32,
    /// The parent's UUID (all zeros when none).
    pub parent_uuid: [u8; 16],
    /// The parent's timestamp.
    pub parent_timestamp: u32,
    /// The parent's name, decoded from UTF-16BE (lossily), NULs dropped.
    pub parent_name: String,
    /// The locator entries in use (code not zero).
    pub locators: Vec<Locator>,
    /// True when any reserved field holds something other than zeros.
    pub reserved_nonzero: bool,
    /// The 1024 bytes as read.
    pub bytes: Box<[u8; 1024]>,
}

impl DynamicHeader {
    /// Parses and checks 1024 bytes.
    pub fn parse(bytes: &[u8; 1024]) -> Result<DynamicHeader, HeaderError> {
        let raw = RawHeader::read_from_bytes(bytes).expect("1024 bytes make a header");
        if &raw.cookie != HEADER_COOKIE {
            return Err(HeaderError::Cookie);
        }
        let stored = raw.checksum.get();
        let computed = checksum(bytes, CHECKSUM_RANGE);
        if stored != computed {
            return Err(HeaderError::Checksum { stored, computed });
        }
        let block_size = raw.block_size.get();
        if !block_size.is_power_of_two() || block_size < MIN_BLOCK_SIZE {
            return Err(HeaderError::BlockSize(block_size));
        }
        let locators = raw
            .locators
            .iter()
            .enumerate()
            .filter(|(_, l)| l.code != [0; 4])
            .map(|(index, l)| Locator {
                index,
                code: l.code,
                data_space: l.data_space.get(),
                data_length: l.data_length.get(),
                data_offset: l.data_offset.get(),
            })
            .collect();
        Ok(DynamicHeader {
            data_offset: raw.data_offset.get(),
            table_offset: raw.table_offset.get(),
            version: raw.version.get(),
            max_table_entries: raw.max_table_entries.get(),
            block_size,
            parent_uuid: raw.parent_uuid,
            parent_timestamp: raw.parent_timestamp.get(),
            parent_name: decode_utf16be(&raw.parent_name),
            locators,
            reserved_nonzero: raw.reserved1.get() != 0
                || raw.reserved2.iter().any(|&b| b != 0)
                || raw.locators.iter().any(|l| l.reserved.get() != 0),
            bytes: Box::new(*bytes),
        })
    }

    /// True when the header names a parent UUID (blktap leaves it zero for a raw parent).
    pub fn has_parent_uuid(&self) -> bool {
        self.parent_uuid != [0; 16]
    }
}

/// UTF-16BE text up to the first NUL, invalid units replaced.
fn decode_utf16be(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// A locator a writer stores.
#[derive(Debug, Clone)]
pub struct NewLocator {
    /// Platform code.
    pub code: [u8; 4],
    /// Where its data goes.
    pub data_offset: u64,
    /// Bytes reserved (a multiple of 512; written in bytes, as Windows does).
    pub data_space: u32,
    /// The data's length.
    pub data_length: u32,
}

/// What a writer puts in a new header.
#[derive(Debug, Clone)]
pub struct NewHeader {
    /// Absolute offset of the BAT.
    pub table_offset: u64,
    /// BAT entries.
    pub max_table_entries: u32,
    /// Block size.
    pub block_size: u32,
    /// The parent's UUID (zeros for a dynamic disk).
    pub parent_uuid: [u8; 16],
    /// The parent's timestamp.
    pub parent_timestamp: u32,
    /// The parent's name.
    pub parent_name: String,
    /// The parent locators.
    pub locators: Vec<NewLocator>,
}

impl NewHeader {
    /// The header's 1024 bytes, checksum included. A name longer than the 256 UTF-16 units
    /// the field holds is cut (locators carry the full path).
    pub fn to_bytes(&self) -> Box<[u8; 1024]> {
        let mut name = [0u8; 512];
        for (i, unit) in self.parent_name.encode_utf16().take(256).enumerate() {
            name[2 * i..2 * i + 2].copy_from_slice(&unit.to_be_bytes());
        }
        let empty = RawLocator {
            code: [0; 4],
            data_space: 0.into(),
            data_length: 0.into(),
            reserved: 0.into(),
            data_offset: 0.into(),
        };
        let mut locators = [empty; LOCATOR_COUNT];
        for (slot, l) in locators.iter_mut().zip(&self.locators) {
            *slot = RawLocator {
                code: l.code,
                data_space: l.data_space.into(),
                data_length: l.data_length.into(),
                reserved: 0.into(),
                data_offset: l.data_offset.into(),
            };
        }
        let raw = RawHeader {
            cookie: *HEADER_COOKIE,
            // The specification says 0xFFFFFFFF, but every tool writes (and blktap and Xen
            // Orchestra require) all 64 bits set.
            data_offset: u64::MAX.into(),
            table_offset: self.table_offset.into(),
            version: HEADER_VERSION.into(),
            max_table_entries: self.max_table_entries.into(),
            block_size: self.block_size.into(),
            checksum: 0.into(),
            parent_uuid: self.parent_uuid,
            parent_timestamp: self.parent_timestamp.into(),
            reserved1: 0.into(),
            parent_name: name,
            locators,
            reserved2: [0; 256],
        };
        let mut bytes = Box::new([0u8; 1024]);
        bytes.copy_from_slice(raw.as_bytes());
        let sum = checksum(&bytes[..], CHECKSUM_RANGE);
        bytes[CHECKSUM_RANGE].copy_from_slice(&sum.to_be_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_locators() {
        let new = NewHeader {
            table_offset: 0x2000,
            max_table_entries: 5,
            block_size: 2 << 20,
            parent_uuid: [9; 16],
            parent_timestamp: 77,
            parent_name: "base.vhd".into(),
            locators: vec![NewLocator {
                code: platform::W2RU,
                data_offset: 1536,
                data_space: 512,
                data_length: 24,
            }],
        };
        let h = DynamicHeader::parse(&new.to_bytes()).unwrap();
        assert_eq!(h.parent_name, "base.vhd");
        assert_eq!(h.data_offset, u64::MAX);
        assert_eq!(h.locators.len(), 1);
        assert_eq!(h.locators[0].reserved_bytes(), 512);
        assert!(!h.reserved_nonzero);
        let mut bad = *new.to_bytes();
        bad[40] ^= 1;
        assert!(matches!(
            DynamicHeader::parse(&bad),
            Err(HeaderError::Checksum { .. })
        ));
    }

    #[test]
    fn data_space_in_sectors_or_bytes() {
        let l = |space| Locator {
            index: 0,
            code: platform::W2KU,
            data_space: space,
            data_length: 84,
            data_offset: 0,
        };
        assert_eq!(l(1).reserved_bytes(), 512);
        assert_eq!(l(4096).reserved_bytes(), 4096);
    }
}
