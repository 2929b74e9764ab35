//! What format probes look at: the first and last bytes of a file. Detection itself walks the
//! registry's drivers ([`crate::registry::Registry::detect`]); never the file name.

use crate::error::Result;
use crate::storage::Storage;

/// How many bytes of the start of a file the probes see (enough for a VMDK text descriptor's
/// first lines and every binary header we know).
pub const HEAD_LEN: usize = 64 * 1024;
/// How many bytes of the end of a file the probes see (a VHD footer, with room for the
/// 511-byte footers of old Virtual PC versions).
pub const TAIL_LEN: usize = 1024;

/// The bytes a probe looks at.
#[derive(Debug, Clone, Default)]
pub struct ProbeData {
    /// The first bytes of the file (up to [`HEAD_LEN`]).
    pub head: Vec<u8>,
    /// The last bytes of the file (up to [`TAIL_LEN`]); overlaps `head` in small files. Empty
    /// for a stream, whose end is not known yet.
    pub tail: Vec<u8>,
    /// The file's length (`u64::MAX` for a stream).
    pub file_len: u64,
}

impl ProbeData {
    /// Reads the head and tail of `storage`.
    pub fn read(storage: &dyn Storage) -> Result<ProbeData> {
        let len = storage.len();
        let mut head = vec![0u8; (len.min(HEAD_LEN as u64)) as usize];
        storage.read_exact_at(&mut head, 0)?;
        let tail_len = len.min(TAIL_LEN as u64);
        let mut tail = vec![0u8; tail_len as usize];
        storage.read_exact_at(&mut tail, len - tail_len)?;
        Ok(ProbeData {
            head,
            tail,
            file_len: len,
        })
    }

    /// The first bytes of a stream (no tail: its end has not arrived).
    pub fn stream_head(head: Vec<u8>) -> ProbeData {
        ProbeData {
            head,
            tail: Vec::new(),
            file_len: u64::MAX,
        }
    }

    /// No bytes at all: what a probe sees of an empty file.
    pub fn empty() -> ProbeData {
        ProbeData::default()
    }

    /// The head bytes `range`, or `None` when the file is shorter.
    pub fn head_at(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.head.get(offset..offset.checked_add(len)?)
    }
}

/// A kind of file that content detection recognises but no driver reads: other hypervisors'
/// disk formats, encrypted volumes, archives. Without `-f`, such a file would otherwise be
/// taken as a raw disk by elimination and its header bytes converted as disk data; qemu-img
/// reads several of these itself, so a user migrating one must hear that diskferry does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Foreign {
    /// What the file is, as the refusal says it ("a Parallels disk").
    pub what: &'static str,
    /// What the user can do instead.
    pub hint: &'static str,
}

const QEMU_FIRST: &str = "diskferry does not read it; convert it to qcow2 with qemu-img first";
const APPLE_FIRST: &str =
    "diskferry does not read it; convert it to a raw image with hdiutil first";
const UNPACK_FIRST: &str = "diskferry does not read archives; unpack it and give the disk inside";

const DECOMPRESS_FIRST: &str = "diskferry reads no compressed files; decompress it first";

/// Kinds told by magic bytes at a fixed offset: (offset, magic, what, hint).
const MAGICS: &[(usize, &[u8], &str, &str)] = &[
    // Parallels Desktop (qemu's block/parallels.c magics, old and extended).
    (
        0,
        b"WithoutFreeSpace",
        "a Parallels disk (qemu's 'parallels')",
        QEMU_FIRST,
    ),
    (
        0,
        b"WithouFreSpacExt",
        "a Parallels disk (qemu's 'parallels')",
        QEMU_FIRST,
    ),
    (
        0,
        b"Bochs Virtual HD Image\0",
        "a Bochs disk image (qemu's 'bochs')",
        QEMU_FIRST,
    ),
    (
        0,
        b"LUKS\xba\xbe",
        "a LUKS encrypted volume (qemu's 'luks')",
        "diskferry does not decrypt it; open it with cryptsetup and give the opened device",
    ),
    (0, b"QED\0", "a QED image (qemu's 'qed')", QEMU_FIRST),
    (0, b"sprs", "an Apple sparse image", APPLE_FIRST),
    (0, b"shdw", "an Apple sparse image (ASIF)", APPLE_FIRST),
    (
        0,
        b"\x1f\x8b\x08",
        "a gzip-compressed file",
        DECOMPRESS_FIRST,
    ),
    (0, b"\xfd7zXZ\0", "an xz-compressed file", DECOMPRESS_FIRST),
    (
        0,
        b"\x28\xb5\x2f\xfd",
        "a zstd-compressed file",
        DECOMPRESS_FIRST,
    ),
    (0, b"PK\x03\x04", "a zip archive", UNPACK_FIRST),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", UNPACK_FIRST),
    // A tar where an image is wanted: a package given to a command that changes an image in
    // place (packages are read by `Image::open`, which takes them before detection), or a
    // cloud image's disk.raw in a tar.
    (
        257,
        b"ustar",
        "a tar archive",
        "a package's disks (OVA, XVA) are read by info, convert and migrate but not changed in place; unpack it to work on a disk",
    ),
];

/// Recognises a file that is one of the [`Foreign`] kinds by its magic bytes.
pub fn foreign(probe: &ProbeData) -> Option<Foreign> {
    let head = |offset: usize, magic: &[u8]| probe.head_at(offset, magic.len()) == Some(magic);
    let found = |what, hint| Some(Foreign { what, hint });
    if let Some(&(_, _, what, hint)) = MAGICS.iter().find(|(at, magic, ..)| head(*at, magic)) {
        return found(what, hint);
    }
    // cloop: a shell script header that names its version.
    if head(0, b"#!/bin/sh\n#V")
        && probe
            .head_at(12, 16)
            .is_some_and(|v| v.windows(7).any(|w| w == b" Format"))
    {
        return found("a cloop compressed image (qemu's 'cloop')", QEMU_FIRST);
    }
    // Apple UDIF (.dmg): a 512-byte "koly" trailer.
    if probe.file_len != u64::MAX && probe.tail.len() >= 512 {
        let trailer = &probe.tail[probe.tail.len() - 512..];
        if trailer.starts_with(b"koly") {
            return found("an Apple disk image (DMG, qemu's 'dmg')", QEMU_FIRST);
        }
    }
    // bzip2: "BZh", the block size digit, then the first block's magic (BCD pi).
    if head(0, b"BZh") && head(4, b"\x31\x41\x59\x26\x53\x59") {
        return found("a bzip2-compressed file", DECOMPRESS_FIRST);
    }
    None
}
