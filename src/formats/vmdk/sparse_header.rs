//! The hosted sparse extent header ("KDMV", versions 1 to 3): monolithicSparse,
//! twoGbMaxExtentSparse extents and streamOptimized files. The same 512 bytes are the footer
//! of a stream-optimized file.

use crate::error::{Error, Result};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The magic number at offset 0.
pub const MAGIC: &[u8; 4] = b"KDMV";
/// `gdOffset` of a stream-optimized header whose grain directory is found through the footer.
pub const GD_AT_END: u64 = u64::MAX;

/// Flag: the four line-end check bytes are valid.
pub const FLAG_NEWLINE_CHECK: u32 = 1 << 0;
/// Flag: a redundant grain directory and redundant grain tables exist.
pub const FLAG_REDUNDANT: u32 = 1 << 1;
/// Flag (version 2+): grain table entry 1 means "this grain reads as zeros".
pub const FLAG_ZEROED_GRAIN: u32 = 1 << 2;
/// Flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag: grains and metadata are preceded by markers (stream-optimized).
pub const FLAG_MARKERS: u32 = 1 << 17;
const KNOWN_INCOMPATIBLE: u32 = FLAG_COMPRESSED | FLAG_MARKERS;

/// `compressAlgorithm` value for deflate (stored with a zlib wrapper, RFC 1950).
pub const COMPRESSION_DEFLATE: u16 = 1;

/// The largest grain we accept, in sectors (8 MiB; every real file uses 128 = 64 KiB). A grain
/// is the unit we inflate into memory, so this bounds the buffer a hostile file can ask for.
pub const MAX_GRAIN_SECTORS: u64 = 1 << 14;
/// The most entries per grain table we accept (the specification fixes 512).
pub const MAX_GTES_PER_GT: u32 = 4096;
/// The largest capacity we accept: 2^32 grains of the largest size would need more grain
/// table entries than a 32-bit sector offset can address anyway.
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 44;

/// Where a hosted extent's grain directory is, as its header's `gdOffset` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryAt {
    /// At this sector.
    Sector(u64),
    /// Named by the footer (a stream-optimized file written front to back: [`GD_AT_END`]).
    Footer,
    /// Nowhere (`gdOffset` is 0).
    Missing,
}

/// The on-disk header, little-endian, 512 bytes.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSparseHeader {
    /// "KDMV".
    pub magic: [u8; 4],
    /// 1, 2 or 3.
    pub version: U32,
    /// FLAG_* bits.
    pub flags: U32,
    /// Virtual size of the extent in sectors.
    pub capacity: U64,
    /// Grain size in sectors.
    pub grain_size: U64,
    /// Embedded descriptor's first sector (0: none).
    pub descriptor_offset: U64,
    /// Embedded descriptor's size in sectors.
    pub descriptor_size: U64,
    /// Entries per grain table (512).
    pub num_gtes_per_gt: U32,
    /// Redundant grain directory's sector.
    pub rgd_offset: U64,
    /// Grain directory's sector, or GD_AT_END.
    pub gd_offset: U64,
    /// Sectors of metadata before the first grain.
    pub overhead: U64,
    /// Nonzero when the extent was not closed cleanly.
    pub unclean_shutdown: u8,
    /// '\n'.
    pub single_end_line: u8,
    /// ' '.
    pub non_end_line: u8,
    /// '\r'.
    pub double_end_line_1: u8,
    /// '\n'.
    pub double_end_line_2: u8,
    /// 0 none, 1 deflate.
    pub compress_algorithm: U16,
    /// Zeros.
    pub pad: [u8; 433],
}

const _: () = assert!(std::mem::size_of::<RawSparseHeader>() == 512);

/// A validated sparse extent header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseHeader {
    /// Header version (1 to 3).
    pub version: u32,
    /// Raw flags.
    pub flags: u32,
    /// Virtual size in sectors.
    pub capacity: u64,
    /// Grain size in sectors (a power of two).
    pub grain_sectors: u64,
    /// Embedded descriptor's first sector (0: none).
    pub descriptor_offset: u64,
    /// Embedded descriptor's size in sectors.
    pub descriptor_size: u64,
    /// Entries per grain table.
    pub gtes_per_gt: u32,
    /// Redundant grain directory's sector (0: none).
    pub rgd_offset: u64,
    /// Grain directory's sector, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    /// The extent was not closed cleanly.
    pub dirty: bool,
    /// Grains are deflate-compressed.
    pub compressed: bool,
    /// Grains carry markers with their LBA (stream-optimized).
    pub markers: bool,
}

impl SparseHeader {
    /// Parses and validates the first 512 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<SparseHeader> {
        Self::parse_at(bytes, 0)
    }

    /// Parses and validates a header copy read from byte `at` of its file (a stream's
    /// footer): errors name the offset of the field in the file.
    pub fn parse_at(bytes: &[u8], at: u64) -> Result<SparseHeader> {
        let (raw, _) = RawSparseHeader::read_from_prefix(bytes)
            .map_err(|_| Error::corrupt("sparse extent header is shorter than 512 bytes"))?;
        if &raw.magic != MAGIC {
            return Err(Error::corrupt("sparse extent header has no KDMV magic").at_offset(at));
        }
        let version = raw.version.get();
        if !(1..=3).contains(&version) {
            return Err(Error::unsupported(format!(
                "sparse extent version {version} is not supported (1 to 3 are)"
            ))
            .at_offset(at + 4));
        }
        let flags = raw.flags.get();
        let unknown = flags & 0xffff_0000 & !KNOWN_INCOMPATIBLE;
        if unknown != 0 {
            return Err(Error::unsupported(format!(
                "sparse extent uses unknown incompatible flags {unknown:#x}"
            ))
            .at_offset(at + 8));
        }
        if flags & FLAG_NEWLINE_CHECK != 0
            && (
                raw.single_end_line,
                raw.non_end_line,
                raw.double_end_line_1,
                raw.double_end_line_2,
            ) != (b'\n', b' ', b'\r', b'\n')
        {
            return Err(Error::corrupt(
                "sparse extent header's line-end check bytes are damaged (was the file copied in text mode?)",
            )
            .at_offset(at + 73));
        }
        let grain_sectors = raw.grain_size.get();
        if grain_sectors == 0
            || !grain_sectors.is_power_of_two()
            || grain_sectors > MAX_GRAIN_SECTORS
        {
            return Err(Error::corrupt(format!(
                "grain size of {grain_sectors} sectors is invalid (a power of two up to {MAX_GRAIN_SECTORS})"
            ))
            .at_offset(at + 20));
        }
        let gtes_per_gt = raw.num_gtes_per_gt.get();
        if gtes_per_gt == 0 || gtes_per_gt > MAX_GTES_PER_GT {
            return Err(Error::corrupt(format!(
                "{gtes_per_gt} entries per grain table is invalid (1 to {MAX_GTES_PER_GT}; VMware uses 512)"
            ))
            .at_offset(at + 44));
        }
        let capacity = raw.capacity.get();
        if capacity > MAX_CAPACITY_SECTORS {
            return Err(Error::corrupt(format!(
                "capacity of {capacity} sectors is larger than any VMDK can be"
            ))
            .at_offset(at + 12));
        }
        let compress = raw.compress_algorithm.get();
        if compress > COMPRESSION_DEFLATE {
            return Err(Error::unsupported(format!(
                "compression algorithm {compress} is not supported (only deflate is)"
            ))
            .at_offset(at + 77));
        }
        Ok(SparseHeader {
            version,
            flags,
            capacity,
            grain_sectors,
            descriptor_offset: raw.descriptor_offset.get(),
            descriptor_size: raw.descriptor_size.get(),
            gtes_per_gt,
            rgd_offset: raw.rgd_offset.get(),
            gd_offset: raw.gd_offset.get(),
            overhead: raw.overhead.get(),
            dirty: raw.unclean_shutdown != 0,
            // As qemu and VMware do: the algorithm field says whether grains are compressed.
            compressed: compress == COMPRESSION_DEFLATE,
            markers: flags & FLAG_MARKERS != 0,
        })
    }

    /// Where the grain directory is.
    pub fn directory_at(&self) -> DirectoryAt {
        match self.gd_offset {
            0 => DirectoryAt::Missing,
            GD_AT_END => DirectoryAt::Footer,
            sector => DirectoryAt::Sector(sector),
        }
    }

    /// True when grain table entry 1 means a zeroed grain.
    pub fn zeroed_grain(&self) -> bool {
        self.version >= 2 && self.flags & FLAG_ZEROED_GRAIN != 0
    }

    /// True when the extent keeps a redundant grain directory.
    pub fn redundant(&self) -> bool {
        self.flags & FLAG_REDUNDANT != 0 && self.rgd_offset != 0
    }

    /// The first sector after the header's metadata (overhead, embedded descriptor), where
    /// every writer starts its grains and markers.
    pub fn first_data_sector(&self) -> u64 {
        self.overhead
            .max(self.descriptor_offset.saturating_add(self.descriptor_size))
            .max(1)
    }

    /// Bytes per grain.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_sectors * 512
    }

    /// Number of grain directory entries the capacity needs.
    pub fn gd_entries(&self) -> u64 {
        let per_gt = self.grain_sectors * u64::from(self.gtes_per_gt);
        self.capacity.div_ceil(per_gt)
    }

    /// The on-disk form of this header.
    pub fn to_bytes(&self) -> [u8; 512] {
        let raw = RawSparseHeader {
            magic: *MAGIC,
            version: U32::new(self.version),
            flags: U32::new(self.flags),
            capacity: U64::new(self.capacity),
            grain_size: U64::new(self.grain_sectors),
            descriptor_offset: U64::new(self.descriptor_offset),
            descriptor_size: U64::new(self.descriptor_size),
            num_gtes_per_gt: U32::new(self.gtes_per_gt),
            rgd_offset: U64::new(self.rgd_offset),
            gd_offset: U64::new(self.gd_offset),
            overhead: U64::new(self.overhead),
            unclean_shutdown: u8::from(self.dirty),
            single_end_line: b'\n',
            non_end_line: b' ',
            double_end_line_1: b'\r',
            double_end_line_2: b'\n',
            compress_algorithm: U16::new(if self.compressed {
                COMPRESSION_DEFLATE
            } else {
                0
            }),
            pad: [0; 433],
        };
        let mut out = [0u8; 512];
        out.copy_from_slice(raw.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SparseHeader {
        SparseHeader {
            version: 3,
            flags: FLAG_NEWLINE_CHECK | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: 20480,
            grain_sectors: 128,
            descriptor_offset: 1,
            descriptor_size: 20,
            gtes_per_gt: 512,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 128,
            dirty: false,
            compressed: true,
            markers: true,
        }
    }

    #[test]
    fn round_trips() {
        let h = sample();
        let bytes = h.to_bytes();
        assert_eq!(&bytes[..4], b"KDMV");
        assert_eq!(SparseHeader::parse(&bytes).unwrap(), h);
        assert_eq!(h.gd_entries(), 1);
    }

    #[test]
    fn rejects_bad_fields_with_offsets() {
        let good = sample().to_bytes();
        let cases: [(usize, &[u8], &str); 6] = [
            (0, b"KDMX", "magic"),
            (4, &[9, 0, 0, 0], "version 9"),
            (20, &[3, 0, 0, 0, 0, 0, 0, 0], "grain size"),
            (44, &[0, 0, 0, 0], "entries per grain table"),
            (75, b"\n", "line-end"),
            (10, &[0x40, 0], "incompatible flags"),
        ];
        for (offset, patch, want) in cases {
            let mut b = good;
            b[offset..offset + patch.len()].copy_from_slice(patch);
            let err = SparseHeader::parse(&b).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        assert!(SparseHeader::parse(&good[..100]).is_err());
    }
}
