//! The 512-byte hard disk footer: its on-disk layout, checksum, the CHS geometry algorithm of
//! the specification, and the rule that turns a footer into a virtual size.

use std::fmt;
use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes in a footer (and in the copy at the start of dynamic and differencing files).
pub const FOOTER_SIZE: u64 = 512;
/// The footer's magic.
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// `data_offset` of a fixed disk: there is no next structure.
pub const NO_DATA_OFFSET: u64 = u64::MAX;
/// Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC).
pub const VHD_EPOCH: u64 = 946_684_800;
/// The "reserved" feature bit, which the specification says is always set.
pub const FEATURE_RESERVED: u32 = 0x2;
/// The "temporary" feature bit.
pub const FEATURE_TEMPORARY: u32 = 0x1;
/// The only file format version there is (1.0).
pub const FORMAT_VERSION: u32 = 0x0001_0000;
/// The largest geometry CHS can express, 65535 × 16 × 255 sectors. qemu takes a footer with
/// this geometry as a sign that the creator stored the real size in `current_size`.
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// The footer as stored: big-endian fields at fixed offsets.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawFooter {
    /// "conectix".
    pub cookie: [u8; 8],
    /// Feature flags (bit 1 always set).
    pub features: U32,
    /// 0x00010000.
    pub format_version: U32,
    /// Absolute offset of the dynamic header; all ones for fixed disks.
    pub data_offset: U64,
    /// Creation time, seconds since the VHD epoch.
    pub timestamp: U32,
    /// Which program made the file ("vpc ", "win ", "qemu", "tap\0" ...).
    pub creator_app: [u8; 4],
    /// That program's version (major << 16 | minor).
    pub creator_version: U32,
    /// The host OS ("Wi2k", "Mac ").
    pub creator_os: [u8; 4],
    /// The size when created.
    pub original_size: U64,
    /// The size now.
    pub current_size: U64,
    /// Geometry: cylinders.
    pub cylinders: U16,
    /// Geometry: heads.
    pub heads: u8,
    /// Geometry: sectors per track.
    pub sectors_per_track: u8,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: U32,
    /// One's complement of the byte sum of the footer with this field zeroed.
    pub checksum: U32,
    /// The disk's identity (a differencing child names its parent by it).
    pub uuid: [u8; 16],
    /// 1 while the VM's saved state refers to the disk.
    pub saved_state: u8,
    /// Zeros.
    pub reserved: [u8; 427],
}

const _: () = assert!(std::mem::size_of::<RawFooter>() == FOOTER_SIZE as usize);

/// Byte range of the checksum field inside a footer.
const CHECKSUM_RANGE: std::ops::Range<usize> = 64..68;

/// The VHD checksum: one's complement of the sum of every byte, with the checksum field
/// (`skip`) counted as zeros.
pub fn checksum(bytes: &[u8], skip: std::ops::Range<usize>) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// The kind of disk a footer describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// The data, then the footer.
    Fixed,
    /// A header, a BAT and blocks allocated on demand.
    Dynamic,
    /// A dynamic disk whose unwritten sectors come from a parent.
    Differencing,
}

impl DiskType {
    fn from_code(code: u32) -> Option<DiskType> {
        match code {
            2 => Some(DiskType::Fixed),
            3 => Some(DiskType::Dynamic),
            4 => Some(DiskType::Differencing),
            _ => None,
        }
    }

    /// The on-disk code.
    pub fn code(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }

    /// The name `info` prints.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }

    /// True for the two types that have a header and a BAT.
    pub fn is_sparse(self) -> bool {
        self != DiskType::Fixed
    }
}

/// Cylinders, heads and sectors per track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders (up to 65535).
    pub cylinders: u16,
    /// Heads (up to 16).
    pub heads: u8,
    /// Sectors per track (up to 255).
    pub sectors_per_track: u8,
}

/// The size qemu-img gives a VHD of `size` bytes without `force_size`: the smallest whole
/// geometry (by the specification's algorithm) holding every sector, so that readers that
/// size a disk by its geometry see all of it. Past the largest geometry the size stays exact.
pub fn chs_rounded_size(size: u64) -> u64 {
    let sectors = size.div_ceil(512);
    if sectors >= MAX_CHS_SECTORS {
        return sectors * 512;
    }
    // Each step adds one sector to what the algorithm is asked to cover; its result grows
    // by whole cylinders, so the loop ends within one cylinder's worth of steps.
    let mut asked = sectors;
    loop {
        let covered = Geometry::for_size(asked * 512).sectors();
        if covered >= sectors {
            return if covered == MAX_CHS_SECTORS {
                sectors * 512
            } else {
                covered * 512
            };
        }
        asked += 1;
    }
}

impl Geometry {
    /// The number of sectors the geometry describes.
    pub fn sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// The geometry the specification's algorithm (appendix "CHS calculation") gives a disk of
    /// `size` bytes. It may describe fewer sectors than the disk has: that is what the
    /// algorithm does, and what Hyper-V and blktap write (blktap's check refuses a geometry
    /// larger than this one).
    pub fn for_size(size: u64) -> Geometry {
        let total = size.div_ceil(512).min(MAX_CHS_SECTORS);
        let (sectors_per_track, heads, cylinders_times_heads);
        if total >= 65535 * 16 * 63 {
            sectors_per_track = 255;
            heads = 16;
            cylinders_times_heads = total / sectors_per_track;
        } else {
            let mut spt = 17;
            let mut cth = total / spt;
            let mut h = cth.div_ceil(1024).max(4);
            if cth >= h * 1024 || h > 16 {
                spt = 31;
                h = 16;
                cth = total / spt;
            }
            if cth >= h * 1024 {
                spt = 63;
                h = 16;
                cth = total / spt;
            }
            sectors_per_track = spt;
            heads = h;
            cylinders_times_heads = cth;
        }
        Geometry {
            cylinders: (cylinders_times_heads / heads) as u16,
            heads: heads as u8,
            sectors_per_track: sectors_per_track as u8,
        }
    }

    /// The geometry packed as blktap compares it (cylinders << 16 | heads << 8 | sectors).
    pub fn packed(self) -> u32 {
        (u32::from(self.cylinders) << 16)
            | (u32::from(self.heads) << 8)
            | u32::from(self.sectors_per_track)
    }
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.cylinders, self.heads, self.sectors_per_track
        )
    }
}

/// Which size a footer's virtual disk has, following qemu-img 10 (block/vpc.c): Virtual PC
/// ("vpc ") and old qemu ("qemu") sized disks by their geometry, so their CHS product is the
/// size, unless the geometry is the maximum (then the creator had to store the real size in
/// `current_size`); every other creator's `current_size` is authoritative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRule {
    /// cylinders × heads × sectors × 512.
    Chs,
    /// `current_size` (truncated to whole sectors).
    CurrentSize,
    /// `current_size`, because the geometry is the maximum although the creator sizes by CHS.
    CurrentSizeMaxChs,
}

impl SizeRule {
    /// How `info` names the rule.
    pub fn describe(self) -> &'static str {
        match self {
            SizeRule::Chs => "chs (creator sizes disks by geometry, as qemu-img does)",
            SizeRule::CurrentSize => "current_size",
            SizeRule::CurrentSizeMaxChs => "current_size (geometry is the CHS maximum)",
        }
    }

    /// A short key for JSON.
    pub fn key(self) -> &'static str {
        match self {
            SizeRule::Chs => "chs",
            SizeRule::CurrentSize => "current_size",
            SizeRule::CurrentSizeMaxChs => "current_size-max-chs",
        }
    }
}

/// Why 512 bytes are not a usable footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterError {
    /// No "conectix" cookie.
    Cookie,
    /// The checksum does not match the bytes.
    Checksum {
        /// The stored value.
        stored: u32,
        /// The value the bytes give.
        computed: u32,
    },
    /// A disk type other than 2, 3 or 4.
    DiskType(u32),
}

impl fmt::Display for FooterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FooterError::Cookie => {
                f.write_str("no VHD footer (the \"conectix\" cookie is missing)")
            }
            FooterError::Checksum { stored, computed } => write!(
                f,
                "footer checksum is wrong (stored {stored:#010x}, computed {computed:#010x})"
            ),
            FooterError::DiskType(t) => write!(f, "footer has an unknown disk type {t}"),
        }
    }
}

/// A footer whose cookie, checksum and disk type were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Feature flags.
    pub features: u32,
    /// File format version.
    pub format_version: u32,
    /// Where the dynamic header is ([`NO_DATA_OFFSET`] for fixed disks).
    pub data_offset: u64,
    /// Creation time, seconds since the VHD epoch.
    pub timestamp: u32,
    /// The creator application code.
    pub creator_app: [u8; 4],
    /// The creator's version.
    pub creator_version: u32,
    /// The creator's host OS code.
    pub creator_os: [u8; 4],
    /// Size when created.
    pub original_size: u64,
    /// Size now.
    pub current_size: u64,
    /// The stored geometry.
    pub geometry: Geometry,
    /// The disk type.
    pub disk_type: DiskType,
    /// The disk's UUID.
    pub uuid: [u8; 16],
    /// The saved-state flag.
    pub saved_state: u8,
    /// The 512 bytes as read (for comparing the two copies).
    pub bytes: [u8; 512],
}

impl Footer {
    /// Parses and checks 512 bytes.
    pub fn parse(bytes: &[u8; 512]) -> Result<Footer, FooterError> {
        let raw = RawFooter::read_from_bytes(bytes).expect("512 bytes make a footer");
        if &raw.cookie != FOOTER_COOKIE {
            return Err(FooterError::Cookie);
        }
        let stored = raw.checksum.get();
        let computed = checksum(bytes, CHECKSUM_RANGE);
        if stored != computed {
            return Err(FooterError::Checksum { stored, computed });
        }
        let disk_type = DiskType::from_code(raw.disk_type.get())
            .ok_or(FooterError::DiskType(raw.disk_type.get()))?;
        Ok(Footer {
            features: raw.features.get(),
            format_version: raw.format_version.get(),
            data_offset: raw.data_offset.get(),
            timestamp: raw.timestamp.get(),
            creator_app: raw.creator_app,
            creator_version: raw.creator_version.get(),
            creator_os: raw.creator_os,
            original_size: raw.original_size.get(),
            current_size: raw.current_size.get(),
            geometry: Geometry {
                cylinders: raw.cylinders.get(),
                heads: raw.heads,
                sectors_per_track: raw.sectors_per_track,
            },
            disk_type,
            uuid: raw.uuid,
            saved_state: raw.saved_state,
            bytes: *bytes,
        })
    }

    /// The virtual size and the rule that gave it (see [`SizeRule`]).
    pub fn virtual_size(&self) -> (u64, SizeRule) {
        let chs = self.geometry.sectors();
        let sizes_by_chs = &self.creator_app == b"vpc " || &self.creator_app == b"qemu";
        if !sizes_by_chs {
            (self.current_size / 512 * 512, SizeRule::CurrentSize)
        } else if chs == MAX_CHS_SECTORS {
            (self.current_size / 512 * 512, SizeRule::CurrentSizeMaxChs)
        } else {
            (chs * 512, SizeRule::Chs)
        }
    }

    /// The creator application as text (NULs and trailing spaces dropped).
    pub fn creator_app_text(&self) -> String {
        fourcc_text(&self.creator_app)
    }

    /// The creator OS as text.
    pub fn creator_os_text(&self) -> String {
        fourcc_text(&self.creator_os)
    }
}

/// A four-character code as printable text: spaces kept, NUL shown as `\0` ("d2v\0").
pub fn fourcc_text(code: &[u8; 4]) -> String {
    code.iter()
        .map(|&b| match b {
            0 => "\\0".to_string(),
            b if b.is_ascii_graphic() || b == b' ' => (b as char).to_string(),
            b => format!("\\x{b:02x}"),
        })
        .collect()
}

/// What a writer puts in a new footer.
#[derive(Debug, Clone)]
pub struct NewFooter {
    /// The disk type.
    pub disk_type: DiskType,
    /// The size (original and current; a multiple of 512).
    pub size: u64,
    /// Creation time, seconds since the VHD epoch.
    pub timestamp: u32,
    /// The disk's UUID.
    pub uuid: [u8; 16],
    /// The creator application code.
    pub creator_app: [u8; 4],
    /// The creator version.
    pub creator_version: u32,
}

impl NewFooter {
    /// The footer's 512 bytes, checksum included. Dynamic and differencing disks have their
    /// header right after the footer copy, at 512, as Xen Orchestra requires.
    pub fn to_bytes(&self) -> [u8; 512] {
        let geometry = Geometry::for_size(self.size);
        let raw = RawFooter {
            cookie: *FOOTER_COOKIE,
            features: FEATURE_RESERVED.into(),
            format_version: FORMAT_VERSION.into(),
            data_offset: if self.disk_type.is_sparse() {
                FOOTER_SIZE
            } else {
                NO_DATA_OFFSET
            }
            .into(),
            timestamp: self.timestamp.into(),
            creator_app: self.creator_app,
            creator_version: self.creator_version.into(),
            creator_os: *b"Wi2k",
            original_size: self.size.into(),
            current_size: self.size.into(),
            cylinders: geometry.cylinders.into(),
            heads: geometry.heads,
            sectors_per_track: geometry.sectors_per_track,
            disk_type: self.disk_type.code().into(),
            checksum: 0.into(),
            uuid: self.uuid,
            saved_state: 0,
            reserved: [0; 427],
        };
        let mut bytes = [0u8; 512];
        bytes.copy_from_slice(raw.as_bytes());
        let sum = checksum(&bytes, CHECKSUM_RANGE);
        bytes[CHECKSUM_RANGE].copy_from_slice(&sum.to_be_bytes());
        bytes
    }
}

/// Seconds since the VHD epoch, now (0 if the clock is before 2000).
pub fn vhd_now() -> u32 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    unix.saturating_sub(VHD_EPOCH).min(u64::from(u32::MAX)) as u32
}

/// A UUID in the usual 8-4-4-4-12 form, bytes in stored order.
pub fn uuid_text(uuid: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*uuid).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(app: &[u8; 4], size: u64) -> Footer {
        let bytes = NewFooter {
            disk_type: DiskType::Dynamic,
            size,
            timestamp: 1,
            uuid: [7; 16],
            creator_app: *app,
            creator_version: 0x0005_0003,
        }
        .to_bytes();
        Footer::parse(&bytes).unwrap()
    }

    #[test]
    fn chs_rounding_matches_qemu_img() {
        // `qemu-img create -f vpc IMG SIZE` (qemu 10.0.2): the virtual size qemu-img info prints.
        for (size, qemu) in [
            (1000u64 << 20, 1_048_707_072u64),
            (1 << 30, 1_073_995_776),
            (10 << 20, 10_514_432),
            (1 << 20, 1_079_296),
            (3 << 20, 3_168_256),
            (100 << 30, 107_374_632_960),
            (2000 << 30, 2_147_483_648_000),
        ] {
            assert_eq!(chs_rounded_size(size), qemu, "{size}");
        }
    }

    #[test]
    fn geometry_follows_the_specification() {
        // Values computed by hand from the specification's algorithm (and what qemu and
        // Windows store for these sizes in the corpus).
        assert_eq!(Geometry::for_size(10 << 20).to_string(), "301/4/17");
        assert_eq!(Geometry::for_size(4 << 20).to_string(), "120/4/17");
        assert_eq!(Geometry::for_size(512 << 20).to_string(), "1040/16/63");
        assert_eq!(Geometry::for_size(2 << 30).to_string(), "4161/16/63");
        assert_eq!(
            Geometry::for_size(136_365_211_648).to_string(),
            "65278/16/255"
        );
        assert_eq!(Geometry::for_size(3 << 40).sectors(), MAX_CHS_SECTORS);
    }

    #[test]
    fn checksum_and_round_trip() {
        let f = sample(b"qem2", 3 << 20);
        assert_eq!(f.current_size, 3 << 20);
        assert_eq!(f.data_offset, 512);
        let mut bad = f.bytes;
        bad[100] ^= 1;
        assert!(matches!(
            Footer::parse(&bad),
            Err(FooterError::Checksum { .. })
        ));
        bad = f.bytes;
        bad[0] = b'C';
        assert_eq!(Footer::parse(&bad), Err(FooterError::Cookie));
    }

    #[test]
    fn size_rule_is_qemu_10s() {
        // 10 MiB: CHS 301/4/17 describes 10479616 bytes, less than the size.
        assert_eq!(
            sample(b"win ", 10 << 20).virtual_size(),
            (10 << 20, SizeRule::CurrentSize)
        );
        assert_eq!(
            sample(b"vpc ", 10 << 20).virtual_size(),
            (10_479_616, SizeRule::Chs)
        );
        assert_eq!(
            sample(b"qemu", 10 << 20).virtual_size(),
            (10_479_616, SizeRule::Chs)
        );
        assert_eq!(
            sample(b"tap\0", 10 << 20).virtual_size().1,
            SizeRule::CurrentSize
        );
        // The maximum geometry means "believe current_size", whoever made the file.
        assert_eq!(
            sample(b"vpc ", 3 << 40).virtual_size(),
            (3 << 40, SizeRule::CurrentSizeMaxChs)
        );
    }
}
