//! The QCOW2 header (versions 2 and 3) and its extensions, parsed and validated before
//! anything is sized by them.
//!
//! Layout (big-endian), from qemu's docs/interop/qcow2.txt: a 72-byte version 2 header,
//! extended in version 3 by feature bitmaps, the refcount order and the header length (at
//! least 104 bytes), then optional fields (the compression type at byte 104). Header
//! extensions follow the header up to the backing file name (or the end of cluster 0):
//! backing format, feature name table, external data file name, bitmaps, the full disk
//! encryption pointer, and any number of unknown ones, which are skipped.
//!
//! Every table the header locates (L1, refcount table, snapshot table) is checked here to be
//! cluster-aligned, outside the header cluster and inside the file, and its size is bounded
//! both by a constant (qemu's own limits) and by the bytes the file holds.

use crate::error::{Error, Result};
use crate::format::OpenContext;
use crate::storage::{Storage, StorageExt};

/// `QFI\xfb`.
pub const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Bytes of a version 2 header.
pub const V2_HEADER_BYTES: u32 = 72;
/// Bytes of the fixed part of a version 3 header.
pub const V3_HEADER_BYTES: u32 = 104;
/// The smallest cluster: 512 bytes.
pub const MIN_CLUSTER_BITS: u32 = 9;
/// The largest cluster qemu opens: 2 MiB.
pub const MAX_CLUSTER_BITS: u32 = 21;
/// The largest L1 table qemu opens (32 MiB of entries).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// The largest refcount table qemu opens (8 MiB).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
/// The most snapshots an image may have (qemu's limit).
pub const MAX_SNAPSHOTS: u32 = 65536;
/// The longest backing file name (the specification's limit).
pub const MAX_BACKING_NAME: u32 = 1023;

/// Incompatible feature bit 0: refcounts may be stale (lazy refcounts, not closed cleanly).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: qemu found the metadata inconsistent.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is not deflate.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (32 subclusters per cluster).
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Every incompatible feature diskferry reads.
pub const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTENDED_L2;
/// Compatible feature bit 0: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
/// Autoclear feature bit 0: the bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
/// Autoclear feature bit 1: the external data file is a consistent raw image.
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header extension: end of the extension area.
pub const EXT_END: u32 = 0;
/// Header extension: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: feature name table.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Header extension: bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension: full disk encryption header pointer.
pub const EXT_CRYPTO: u32 = 0x0537_be77;
/// Header extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (RFC 1951, no zlib header), which qemu calls "zlib".
    Deflate,
    /// One zstd frame per cluster.
    Zstd,
}

impl Compression {
    /// The name qemu-img prints.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Deflate => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// The encryption an image declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// None.
    None,
    /// qemu's old AES-CBC scheme (crypt_method 1).
    Aes,
    /// LUKS (crypt_method 2).
    Luks,
}

/// One entry of the feature name table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// 0 incompatible, 1 compatible, 2 autoclear.
    pub kind: u8,
    /// The bit within that bitmap.
    pub bit: u8,
    /// The name (bytes up to the first NUL, as text).
    pub name: String,
}

/// The bitmaps extension: where the bitmap directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapsExtension {
    /// Bitmaps in the directory.
    pub count: u32,
    /// Bytes of the directory.
    pub directory_size: u64,
    /// Where the directory is.
    pub directory_offset: u64,
}

impl BitmapsExtension {
    /// The extension's data as stored: count, 4 reserved bytes, directory size and offset,
    /// big-endian.
    pub fn encode(&self) -> [u8; 24] {
        let mut data = [0u8; 24];
        data[0..4].copy_from_slice(&self.count.to_be_bytes());
        data[8..16].copy_from_slice(&self.directory_size.to_be_bytes());
        data[16..24].copy_from_slice(&self.directory_offset.to_be_bytes());
        data
    }
}

/// A parsed and validated header with its extensions.
#[derive(Debug, Clone)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// The virtual disk size in bytes.
    pub size: u64,
    /// Declared encryption.
    pub encryption: Encryption,
    /// Entries of the active L1 table.
    pub l1_size: u32,
    /// Where the active L1 table is.
    pub l1_table_offset: u64,
    /// Where the refcount table is.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Snapshots in the snapshot table.
    pub nb_snapshots: u32,
    /// Where the snapshot table is.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible: u64,
    /// Compatible feature bits.
    pub compatible: u64,
    /// Autoclear feature bits.
    pub autoclear: u64,
    /// log2 of the refcount width in bits (0 to 6).
    pub refcount_order: u32,
    /// Bytes of the header proper.
    pub header_length: u32,
    /// How compressed clusters are compressed.
    pub compression: Compression,
    /// The backing file name, as stored.
    pub backing_file: Option<String>,
    /// The backing format extension.
    pub backing_format: Option<String>,
    /// The feature name table.
    pub feature_names: Vec<FeatureName>,
    /// The external data file name extension.
    pub data_file: Option<String>,
    /// The bitmaps extension (when present and consistent).
    pub bitmaps: Option<BitmapsExtension>,
    /// The types of extensions diskferry does not know, in order.
    pub unknown_extensions: Vec<u32>,
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

    /// True when L2 entries are 128-bit with subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTENDED_L2 != 0
    }

    /// Bytes of one L2 entry.
    pub fn l2_entry_bytes(&self) -> u64 {
        if self.extended_l2() { 16 } else { 8 }
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_bytes()
    }

    /// Virtual bytes one L1 entry covers.
    pub fn l1_span(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// L1 entries needed to cover `size` bytes.
    pub fn l1_entries_for(&self, size: u64) -> u64 {
        size.div_ceil(self.l1_span())
    }

    /// Refcount width in bits.
    pub fn refcount_bits(&self) -> u64 {
        1 << self.refcount_order
    }

    /// True when guest data is in an external data file.
    pub fn has_data_file(&self) -> bool {
        self.incompatible & INCOMPAT_DATA_FILE != 0
    }

    /// True when the external data file is a consistent raw image.
    pub fn data_file_raw(&self) -> bool {
        self.autoclear & AUTOCLEAR_DATA_FILE_RAW != 0
    }

    /// True when refcounts may be stale (the image was left dirty).
    pub fn dirty(&self) -> bool {
        self.incompatible & INCOMPAT_DIRTY != 0
    }

    /// True when qemu marked the image corrupt.
    pub fn corrupt(&self) -> bool {
        self.incompatible & INCOMPAT_CORRUPT != 0
    }

    /// True when lazy refcounts are enabled.
    pub fn lazy_refcounts(&self) -> bool {
        self.compatible & COMPAT_LAZY_REFCOUNTS != 0
    }

    /// The name of the feature bit `bit` of bitmap `kind` in the feature name table.
    pub fn feature_name(&self, kind: u8, bit: u32) -> Option<&str> {
        self.feature_names
            .iter()
            .find(|f| f.kind == kind && u32::from(f.bit) == bit)
            .map(|f| f.name.as_str())
    }

    /// Reads and validates the header of `file`. `ctx` decides whether messages may quote
    /// the file's contents (feature names).
    pub fn read(file: &dyn Storage, ctx: &OpenContext<'_>) -> Result<Header> {
        let len = file.len();
        if len < u64::from(V2_HEADER_BYTES) {
            return Err(Error::corrupt(format!(
                "file of {len} bytes is too short for a qcow2 header ({V2_HEADER_BYTES} bytes)"
            )));
        }
        let mut fixed = [0u8; V3_HEADER_BYTES as usize];
        let fixed_len = file.read_at_most(&mut fixed, 0)?;
        if &fixed[0..4] != MAGIC {
            return Err(Error::corrupt("not a qcow2 image (no QFI\\xfb magic)").at_offset(0));
        }
        let version = be32(&fixed, 4);
        if version != 2 && version != 3 {
            return Err(Error::unsupported(format!(
                "qcow2 version {version} is not supported (versions 2 and 3 are)"
            ))
            .at_offset(4));
        }
        let cluster_bits = be32(&fixed, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::corrupt(format!(
                "cluster_bits {cluster_bits} is out of range (9 to 21: 512 bytes to 2 MiB clusters)"
            ))
            .at_offset(20));
        }
        let cluster_size = 1u64 << cluster_bits;
        let (incompatible, compatible, autoclear, refcount_order, header_length) = if version == 2 {
            (0, 0, 0, 4, V2_HEADER_BYTES)
        } else {
            if fixed_len < V3_HEADER_BYTES as usize {
                return Err(Error::corrupt(format!(
                    "file of {len} bytes is too short for a version 3 header ({V3_HEADER_BYTES} bytes)"
                )));
            }
            (
                be64(&fixed, 72),
                be64(&fixed, 80),
                be64(&fixed, 88),
                be32(&fixed, 96),
                be32(&fixed, 100),
            )
        };
        if version == 3 {
            if header_length < V3_HEADER_BYTES {
                return Err(Error::corrupt(format!(
                    "header_length {header_length} is shorter than a version 3 header ({V3_HEADER_BYTES} bytes)"
                ))
                .at_offset(100));
            }
            if u64::from(header_length) > cluster_size {
                return Err(Error::corrupt(format!(
                    "header_length {header_length} exceeds the cluster size ({cluster_size} bytes)"
                ))
                .at_offset(100));
            }
        }
        // The header cluster: the header, its extensions and the backing file name.
        let head_len = cluster_size.min(len);
        let head = file.read_vec(0, head_len, "header cluster")?;
        if (head.len() as u64) < u64::from(header_length) {
            return Err(Error::corrupt(format!(
                "file of {len} bytes is too short for its {header_length}-byte header"
            )));
        }
        let unknown = incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            // Feature names come from the file: shown only when the user named it.
            let names =
                extension_feature_names(&head, header_length, cluster_size).unwrap_or_default();
            let list: Vec<String> = (0..64)
                .filter(|b| unknown & (1u64 << b) != 0)
                .map(|b| {
                    let name = names
                        .iter()
                        .find(|f| f.kind == 0 && u32::from(f.bit) == b)
                        .map(|f| f.name.as_str());
                    match name {
                        Some(n) if ctx.may_quote() => format!("bit {b} ('{n}')"),
                        _ => format!("bit {b}"),
                    }
                })
                .collect();
            return Err(Error::unsupported(format!(
                "the image uses incompatible qcow2 features diskferry does not know: {} (it cannot be read safely without them)",
                list.join(", ")
            ))
            .at_offset(72));
        }
        if refcount_order > 6 {
            return Err(Error::corrupt(format!(
                "refcount_order {refcount_order} is out of range (0 to 6: 1- to 64-bit refcounts)"
            ))
            .at_offset(96));
        }
        if incompatible & INCOMPAT_EXTENDED_L2 != 0 && cluster_bits < 14 {
            return Err(Error::corrupt(format!(
                "extended L2 entries need clusters of at least 16 KiB, this image has {cluster_size}-byte clusters"
            ))
            .at_offset(20));
        }
        let compression_byte = if header_length > V3_HEADER_BYTES {
            head[V3_HEADER_BYTES as usize]
        } else {
            0
        };
        let compression = match compression_byte {
            0 => Compression::Deflate,
            1 => Compression::Zstd,
            other => {
                return Err(Error::unsupported(format!(
                    "unknown compression type {other} (0 is zlib, 1 is zstd)"
                ))
                .at_offset(u64::from(V3_HEADER_BYTES)));
            }
        };
        let bit_set = incompatible & INCOMPAT_COMPRESSION != 0;
        if bit_set != (compression != Compression::Deflate) {
            return Err(Error::corrupt(if bit_set {
                "the compression type feature bit is set but the compression type is zlib"
                    .to_string()
            } else {
                format!(
                    "the compression type is {} but its incompatible feature bit is not set",
                    compression.name()
                )
            })
            .at_offset(72));
        }
        let encryption = match be32(&head, 32) {
            0 => Encryption::None,
            1 => Encryption::Aes,
            2 => Encryption::Luks,
            other => {
                return Err(Error::unsupported(format!(
                    "unknown encryption method {other} (0 none, 1 AES, 2 LUKS)"
                ))
                .at_offset(32));
            }
        };
        let backing_file_offset = be64(&head, 8);
        let backing_file_size = be32(&head, 16);
        let mut header = Header {
            version,
            cluster_bits,
            size: be64(&head, 24),
            encryption,
            l1_size: be32(&head, 36),
            l1_table_offset: be64(&head, 40),
            refcount_table_offset: be64(&head, 48),
            refcount_table_clusters: be32(&head, 56),
            nb_snapshots: be32(&head, 60),
            snapshots_offset: be64(&head, 64),
            incompatible,
            compatible,
            autoclear,
            refcount_order,
            header_length,
            compression,
            backing_file: None,
            backing_format: None,
            feature_names: Vec::new(),
            data_file: None,
            bitmaps: None,
            unknown_extensions: Vec::new(),
        };
        if header.size > i64::MAX as u64 {
            return Err(Error::corrupt(format!(
                "virtual size {} is larger than any disk",
                header.size
            ))
            .at_offset(24));
        }
        // Where the extensions end: at the backing file name, or the end of cluster 0.
        let ext_end = if backing_file_offset != 0 {
            if backing_file_offset > cluster_size || backing_file_offset < u64::from(header_length)
            {
                return Err(Error::corrupt(format!(
                    "backing file name offset {backing_file_offset} is outside the header cluster (after the {header_length}-byte header, within {cluster_size} bytes)"
                ))
                .at_offset(8));
            }
            backing_file_offset
        } else {
            cluster_size
        };
        header.read_extensions(&head, ext_end)?;
        if backing_file_offset != 0 && backing_file_size > 0 {
            if backing_file_size > MAX_BACKING_NAME
                || backing_file_offset + u64::from(backing_file_size) > cluster_size
            {
                return Err(Error::corrupt(format!(
                    "backing file name of {backing_file_size} bytes is too long (at most {MAX_BACKING_NAME}, within the header cluster)"
                ))
                .at_offset(16));
            }
            let start = backing_file_offset as usize;
            let end = start + backing_file_size as usize;
            if end > head.len() {
                return Err(Error::corrupt(format!(
                    "backing file name runs past the end of the file ({len} bytes)"
                ))
                .at_offset(backing_file_offset));
            }
            header.backing_file = Some(text_field(
                &head[start..end],
                "backing file name",
                backing_file_offset,
            )?);
        }
        header.validate_tables(len)?;
        Ok(header)
    }

    fn read_extensions(&mut self, head: &[u8], ext_end: u64) -> Result<()> {
        let end = ext_end.min(head.len() as u64);
        let mut offset = u64::from(self.header_length);
        let mut seen_feature_table = false;
        while offset < ext_end {
            if offset + 8 > end {
                if ext_end > head.len() as u64 {
                    // The file ends inside the extension area: nothing more to read.
                    break;
                }
                return Err(Error::corrupt(format!(
                    "header extension at offset {offset} runs past the extension area ({ext_end} bytes)"
                ))
                .at_offset(offset));
            }
            let o = offset as usize;
            let kind = be32(head, o);
            let data_len = u64::from(be32(head, o + 4));
            let data_start = offset + 8;
            if kind == EXT_END {
                return Ok(());
            }
            if data_len > end - data_start {
                return Err(Error::corrupt(format!(
                    "header extension {kind:#010x} of {data_len} bytes runs past the extension area ({ext_end} bytes)"
                ))
                .at_offset(offset));
            }
            let data = &head[data_start as usize..(data_start + data_len) as usize];
            match kind {
                EXT_BACKING_FORMAT => {
                    if data_len >= 16 {
                        return Err(Error::corrupt(format!(
                            "backing format name of {data_len} bytes is too long (at most 15)"
                        ))
                        .at_offset(offset));
                    }
                    self.backing_format =
                        Some(text_field(data, "backing format name", data_start)?);
                }
                EXT_FEATURE_TABLE if !seen_feature_table => {
                    seen_feature_table = true;
                    self.feature_names = parse_feature_table(data);
                }
                EXT_DATA_FILE => {
                    self.data_file = Some(text_field(data, "data file name", data_start)?);
                }
                EXT_CRYPTO => {
                    if self.encryption != Encryption::Luks {
                        return Err(Error::corrupt(
                            "encryption header extension in an image that is not LUKS-encrypted",
                        )
                        .at_offset(offset));
                    }
                }
                EXT_BITMAPS => {
                    if data_len != 24 {
                        return Err(Error::corrupt(format!(
                            "bitmaps extension of {data_len} bytes (24 expected)"
                        ))
                        .at_offset(offset));
                    }
                    // Without the autoclear bit, a program that did not know bitmaps wrote
                    // the image: they are stale, and ignored (as qemu does).
                    if self.autoclear & AUTOCLEAR_BITMAPS != 0 {
                        self.bitmaps = Some(BitmapsExtension {
                            count: be32(data, 0),
                            directory_size: be64(data, 8),
                            directory_offset: be64(data, 16),
                        });
                    }
                }
                other => self.unknown_extensions.push(other),
            }
            offset = data_start + data_len.div_ceil(8) * 8;
        }
        Ok(())
    }

    /// Checks that every table the header locates lies inside the file, aligned, outside the
    /// header cluster, and within qemu's limits.
    fn validate_tables(&self, file_len: u64) -> Result<()> {
        let cluster = self.cluster_size();
        let l1_bytes = u64::from(self.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(Error::corrupt(format!(
                "L1 table of {} entries is larger than {} MiB (qemu's limit)",
                self.l1_size,
                MAX_L1_BYTES >> 20
            ))
            .at_offset(36));
        }
        let needed = self.l1_entries_for(self.size);
        if u64::from(self.l1_size) < needed {
            return Err(Error::corrupt(format!(
                "L1 table of {} entries is too small for a virtual size of {} bytes ({needed} entries needed)",
                self.l1_size, self.size
            ))
            .at_offset(36));
        }
        if self.l1_size > 0 {
            check_table(
                "L1 table",
                self.l1_table_offset,
                l1_bytes,
                cluster,
                None,
                40,
            )?;
        }
        let rt_bytes = u64::from(self.refcount_table_clusters) * cluster;
        if rt_bytes > MAX_REFCOUNT_TABLE_BYTES {
            return Err(Error::corrupt(format!(
                "refcount table of {} clusters is larger than {} MiB (qemu's limit)",
                self.refcount_table_clusters,
                MAX_REFCOUNT_TABLE_BYTES >> 20
            ))
            .at_offset(56));
        }
        if rt_bytes > 0 {
            check_table(
                "refcount table",
                self.refcount_table_offset,
                rt_bytes,
                cluster,
                None,
                48,
            )?;
        }
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(Error::corrupt(format!(
                "{} snapshots is more than {MAX_SNAPSHOTS} (qemu's limit)",
                self.nb_snapshots
            ))
            .at_offset(60));
        }
        if self.nb_snapshots > 0 {
            // Each entry is at least 40 bytes.
            check_table(
                "snapshot table",
                self.snapshots_offset,
                u64::from(self.nb_snapshots) * 40,
                cluster,
                Some(file_len),
                64,
            )?;
        }
        if let Some(b) = &self.bitmaps
            && b.directory_size > 0
        {
            check_table(
                "bitmap directory",
                b.directory_offset,
                b.directory_size,
                cluster,
                Some(file_len),
                u64::from(self.header_length),
            )?;
        }
        Ok(())
    }
}

/// Checks that a table of `bytes` bytes at `offset` is cluster-aligned and after the header
/// cluster; with `file_len`, that it lies inside a file of that many bytes. Without, only
/// that it ends at a possible offset: the L1 and refcount tables may run past the end of the
/// file, where qemu reads zeros (unallocated entries), and the reader reads and holds only
/// the part present. `field` is where the header stores the table's offset.
pub fn check_table(
    what: &str,
    offset: u64,
    bytes: u64,
    cluster: u64,
    file_len: Option<u64>,
    field: u64,
) -> Result<()> {
    if !offset.is_multiple_of(cluster) {
        return Err(Error::corrupt(format!(
            "{what} offset {offset} is not aligned to a cluster ({cluster} bytes)"
        ))
        .at_offset(field));
    }
    if offset < cluster {
        return Err(Error::corrupt(format!(
            "{what} at offset {offset} lies in the header cluster"
        ))
        .at_offset(field));
    }
    match file_len {
        Some(len) if offset.checked_add(bytes).is_none_or(|end| end > len) => {
            return Err(Error::corrupt(format!(
                "{what} of {bytes} bytes at offset {offset} runs past the end of the file ({len} bytes)"
            ))
            .at_offset(field));
        }
        None if offset
            .checked_add(bytes)
            .is_none_or(|end| end > i64::MAX as u64) =>
        {
            return Err(Error::corrupt(format!(
                "{what} of {bytes} bytes at offset {offset} ends past any possible file"
            ))
            .at_offset(field));
        }
        _ => {}
    }
    Ok(())
}

/// A name stored in the image as bytes: UTF-8 (qemu writes what it was given), never quoted
/// back when it is not.
fn text_field(bytes: &[u8], what: &str, offset: u64) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::corrupt(format!("{what} is not valid UTF-8")).at_offset(offset))
}

fn parse_feature_table(data: &[u8]) -> Vec<FeatureName> {
    data.chunks_exact(48)
        .map(|e| {
            let raw = &e[2..48];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            FeatureName {
                kind: e[0],
                bit: e[1],
                name: String::from_utf8_lossy(&raw[..end]).into_owned(),
            }
        })
        .collect()
}

/// The feature name table alone, for the message about unknown features (read before the
/// rest of the extensions are validated).
fn extension_feature_names(
    head: &[u8],
    header_length: u32,
    cluster: u64,
) -> Option<Vec<FeatureName>> {
    let end = (head.len() as u64).min(cluster);
    let mut offset = u64::from(header_length);
    while offset + 8 <= end {
        let o = offset as usize;
        let kind = be32(head, o);
        let data_len = u64::from(be32(head, o + 4));
        if kind == EXT_END || data_len > end - offset - 8 {
            return None;
        }
        if kind == EXT_FEATURE_TABLE {
            return Some(parse_feature_table(&head[o + 8..o + 8 + data_len as usize]));
        }
        offset += 8 + data_len.div_ceil(8) * 8;
    }
    None
}
