//! The first cluster of a new image: the header, its extensions and the backing file name.

use super::options::{Compression, Settings};
use crate::error::{Error, Result};
use crate::formats::qcow2::header::{AUTOCLEAR_BITMAPS, BitmapsExtension, EXT_BITMAPS};

/// Header extension: the backing file's format.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: names of the feature bits.
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Header extension: the external data file's name.
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Incompatible feature bit: an external data file holds the guest data.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit: compression_type is not zlib.
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit: extended L2 entries.
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
/// Compatible feature bit: lazy refcounts.
const COMPAT_LAZY_REFCOUNTS: u64 = 1;
/// Autoclear feature bit: the data file is a raw image of the whole disk.
const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Bytes of a version 2 header.
const V2_HEADER_LEN: usize = 72;
/// Bytes of the version 3 header we write: through compression_type, padded to 8.
const V3_HEADER_LEN: usize = 112;

/// The names qemu gives the feature bits (type, bit, name), for readers that do not know one.
const FEATURE_NAMES: &[(u8, u8, &str)] = &[
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
];

/// Where the tables of a finished image are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tables {
    /// Entries of the L1 table.
    pub l1_size: u32,
    /// Where the L1 table starts.
    pub l1_offset: u64,
    /// Where the refcount table starts.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// The bitmap directory (`convert --bitmaps`), named by the bitmaps extension.
    pub bitmaps: Option<BitmapsExtension>,
}

/// Encodes cluster 0 for an image of `size` bytes with `settings` and `tables`.
pub fn encode(settings: &Settings, size: u64, tables: &Tables) -> Result<Vec<u8>> {
    let cluster = settings.cluster_size() as usize;
    let v3 = settings.version >= 3;
    let header_len = if v3 { V3_HEADER_LEN } else { V2_HEADER_LEN };

    let mut extensions = Vec::new();
    if let Some(format) = settings.backing.as_ref().and_then(|b| b.format.as_deref()) {
        push_extension(&mut extensions, EXT_BACKING_FORMAT, format.as_bytes());
    }
    if let Some(name) = &settings.data_file {
        push_extension(&mut extensions, EXT_DATA_FILE, name.as_bytes());
    }
    if let Some(b) = &tables.bitmaps {
        if !v3 {
            return Err(Error::invalid(
                "persistent bitmaps need a version 3 image (compat=1.1)",
            ));
        }
        push_extension(&mut extensions, EXT_BITMAPS, &b.encode());
    }
    let backing_name = settings
        .backing
        .as_ref()
        .map_or(&[][..], |b| b.name.as_bytes());
    let mut table = Vec::new();
    if v3 {
        push_extension(&mut table, EXT_FEATURE_TABLE, &feature_names());
    }
    // The feature name table is optional: left out when the backing name needs its room.
    let with_table = header_len + extensions.len() + table.len() + 8 + backing_name.len();
    if with_table <= cluster {
        extensions.extend_from_slice(&table);
    }
    extensions.extend_from_slice(&[0u8; 8]);
    let backing_offset = header_len + extensions.len();
    if backing_offset + backing_name.len() > cluster {
        return Err(Error::invalid(format!(
            "the header, its extensions and the backing file name take {} bytes, more than one cluster ({cluster} bytes): give a larger cluster_size or a shorter name",
            backing_offset + backing_name.len()
        )));
    }

    let mut out = vec![0u8; cluster];
    let put32 =
        |out: &mut [u8], at: usize, v: u32| out[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let put64 =
        |out: &mut [u8], at: usize, v: u64| out[at..at + 8].copy_from_slice(&v.to_be_bytes());
    out[0..4].copy_from_slice(b"QFI\xfb");
    put32(&mut out, 4, settings.version);
    if settings.backing.is_some() {
        put64(&mut out, 8, backing_offset as u64);
        put32(&mut out, 16, backing_name.len() as u32);
    }
    put32(&mut out, 20, settings.cluster_bits);
    put64(&mut out, 24, size);
    put32(&mut out, 36, tables.l1_size);
    put64(&mut out, 40, tables.l1_offset);
    put64(&mut out, 48, tables.refcount_table_offset);
    put32(&mut out, 56, tables.refcount_table_clusters);
    if v3 {
        let mut incompatible = 0;
        if settings.data_file.is_some() {
            incompatible |= INCOMPAT_DATA_FILE;
        }
        if settings.compression == Compression::Zstd {
            incompatible |= INCOMPAT_COMPRESSION;
        }
        if settings.extended_l2 {
            incompatible |= INCOMPAT_EXTENDED_L2;
        }
        put64(&mut out, 72, incompatible);
        put64(
            &mut out,
            80,
            if settings.lazy_refcounts {
                COMPAT_LAZY_REFCOUNTS
            } else {
                0
            },
        );
        let mut autoclear = 0;
        if settings.data_file_raw {
            autoclear |= AUTOCLEAR_DATA_FILE_RAW;
        }
        if tables.bitmaps.is_some() {
            // Without it, a reader would take the extension for one left by a program that
            // did not keep it up to date, and drop the bitmaps.
            autoclear |= AUTOCLEAR_BITMAPS;
        }
        put64(&mut out, 88, autoclear);
        put32(&mut out, 96, settings.refcount_order);
        put32(&mut out, 100, header_len as u32);
        out[104] = match settings.compression {
            Compression::Zlib => 0,
            Compression::Zstd => 1,
        };
    }
    out[header_len..header_len + extensions.len()].copy_from_slice(&extensions);
    out[backing_offset..backing_offset + backing_name.len()].copy_from_slice(backing_name);
    Ok(out)
}

/// The feature name table's data: qemu's names of the feature bits, 48 bytes each.
pub(crate) fn feature_names() -> Vec<u8> {
    let mut entries = Vec::new();
    for &(kind, bit, name) in FEATURE_NAMES {
        let mut e = [0u8; 48];
        e[0] = kind;
        e[1] = bit;
        e[2..2 + name.len()].copy_from_slice(name.as_bytes());
        entries.extend_from_slice(&e);
    }
    entries
}

/// Appends a header extension (type, length, data padded to 8 bytes) to `out`.
pub(crate) fn push_extension(out: &mut Vec<u8>, kind: u32, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(8), 0);
}
