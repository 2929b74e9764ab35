//! `amend` and `rebase -u`: options and the backing file changed in place.
//!
//! The backing file name and format live in the header cluster, as do the version 3 fields
//! that `compat` adds or removes: these changes rebuild the header cluster in memory (the
//! header, the extensions diskferry knows and those it does not, in their order, then the
//! backing file name) and write it last, in one write, once everything it points at is durable.
//! Like qemu, the header must stay within the first cluster; a name that does not fit is
//! refused.
//!
//! Downgrading to compat=0.10 (which has no zero flag) first turns zero clusters into
//! unallocated ones (no backing file) or into clusters of written zeros, in every L1 table.
//! A zstd image (version 2 knows only zlib) is downgraded while it holds no compressed
//! cluster, and becomes zlib.
//!
//! An image with an external data file takes what qemu-img 10's amend takes and touches the
//! header alone: `lazy_refcounts`, `compat=1.1`, `data_file=NAME` (the data file renamed or
//! moved), `data_file_raw=off` and the backing file; the data file is never opened, so an
//! image whose data file moved can be pointed at it again (qemu-img opens it, and fails).
//! Refused in qemu-img's words: `compat=0.10` and `data_file_raw=on` on an image that is not
//! raw. `data_file=` (empty), which qemu-img takes and which leaves an image that needs a
//! data file and names none, is refused.

use super::{Editor, ExistingBitmaps, ExternalData};
use crate::edit::{EditContext, NewBacking};
use crate::error::{Error, Result};
use crate::formats::qcow2::header::{
    AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_END,
    EXT_FEATURE_TABLE, INCOMPAT_COMPRESSION, INCOMPAT_DIRTY, V2_HEADER_BYTES,
};
use crate::formats::qcow2::table::{
    L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO,
};
use crate::formats::qcow2::writer::header::{feature_names, push_extension};
use crate::formats::qcow2::writer::options::qemu_format_name;
use crate::options::{FormatOptions, OptionKind, OptionSpec};
use std::collections::HashSet;
use std::path::Path;

/// The options `amend` takes for qcow2 (qemu-img's).
pub const AMEND_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "compat",
        kind: OptionKind::Choice(&["0.10", "1.1", "v2", "v3"]),
        help: "Compatibility level (v2 [0.10] or v3 [1.1])",
    },
    OptionSpec {
        key: "lazy_refcounts",
        kind: OptionKind::Flag,
        help: "Postpone refcount updates (compat 1.1)",
    },
    OptionSpec {
        key: "backing_file",
        kind: OptionKind::Text,
        help: "File name of a base image (the same as rebase -u -b)",
    },
    OptionSpec {
        key: "backing_fmt",
        kind: OptionKind::Text,
        help: "Image format of the base image (the same as rebase -u -F)",
    },
    OptionSpec {
        key: "data_file",
        kind: OptionKind::Text,
        help: "File name of the external data file (only for an image that has one)",
    },
    OptionSpec {
        key: "data_file_raw",
        kind: OptionKind::Flag,
        help: "off: the external data file no longer holds the raw disk (on cannot be set)",
    },
    OptionSpec {
        key: "refcount_bits",
        kind: OptionKind::Number,
        help: "Width of a reference count entry in bits (diskferry cannot change it yet)",
    },
    OptionSpec {
        key: "size",
        kind: OptionKind::Size,
        help: "Virtual disk size (the same as resize)",
    },
    OptionSpec {
        key: "cluster_size",
        kind: OptionKind::Size,
        help: "only for image creation: cannot be amended",
    },
    OptionSpec {
        key: "preallocation",
        kind: OptionKind::Text,
        help: "only for image creation: cannot be amended",
    },
    OptionSpec {
        key: "extended_l2",
        kind: OptionKind::Text,
        help: "only for image creation: cannot be amended",
    },
    OptionSpec {
        key: "compression_type",
        kind: OptionKind::Text,
        help: "only for image creation: cannot be amended",
    },
    OptionSpec {
        key: "encryption",
        kind: OptionKind::Text,
        help: "only for image creation: cannot be amended",
    },
];

/// The options that only image creation takes.
const CREATION_ONLY: &[&str] = &[
    "cluster_size",
    "preallocation",
    "extended_l2",
    "compression_type",
    "encryption",
];

/// Changes the options of the image at `path`.
pub(crate) fn amend(path: &Path, options: &FormatOptions, ctx: &EditContext<'_>) -> Result<()> {
    for key in CREATION_ONLY {
        if options.contains(key) {
            return Err(Error::invalid(format!(
                "Invalid parameter '{key}': this option is only supported for image creation"
            ))
            .with_path(path));
        }
    }
    // Every change amend makes to an image with a data file is to the header alone (a
    // downgrade, which would rewrite zero clusters, is refused for those images below).
    let mut ed = Editor::open_with(
        path,
        "amend the image",
        ExistingBitmaps::Refuse,
        ExternalData::HeaderOnly,
    )?;
    amend_inner(&mut ed, options, ctx).map_err(|e| e.with_path(path))
}

fn amend_inner(ed: &mut Editor, options: &FormatOptions, ctx: &EditContext<'_>) -> Result<()> {
    // qemu checks the data file options as it reads them, before the others.
    let data_file = options.text("data_file");
    if data_file.is_some() && !ed.h.has_data_file() {
        return Err(Error::invalid(
            "data-file can only be set for images that use an external data file",
        ));
    }
    if data_file == Some("") {
        // qemu-img 10 drops the name and keeps the incompatible bit: the image then opens only
        // with the data file given on the command line (--image-opts data-file=...).
        return Err(Error::invalid(
            "data_file= would remove the data file's name but not the image's need for one (qemu-img then cannot open it without --image-opts); name the data file instead",
        ));
    }
    let data_file_raw = options.flag("data_file_raw");
    if data_file_raw == Some(true) && !ed.h.data_file_raw() {
        return Err(Error::invalid(
            "data-file-raw cannot be set on existing images",
        ));
    }
    let target = match options.text("compat") {
        Some("0.10") | Some("v2") => 2,
        Some(_) => 3,
        None => ed.h.version,
    };
    let lazy = options.flag("lazy_refcounts");
    if lazy == Some(true) && target < 3 {
        return Err(Error::invalid(
            "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
        ));
    }
    if let Some(bits) = options.number("refcount_bits") {
        if target < 3 && bits != 16 {
            return Err(Error::invalid(
                "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)",
            ));
        }
        if bits != ed.h.refcount_bits() {
            return Err(Error::unsupported(format!(
                "changing refcount_bits (from {} to {bits}) is not supported by diskferry; qemu-img amend can",
                ed.h.refcount_bits()
            )));
        }
    }
    if let Some(size) = options.size("size")
        && size != ed.h.size
    {
        return Err(Error::unsupported(
            "amend -o size is not supported by diskferry: use resize",
        ));
    }
    if target < 3 && ed.h.version >= 3 {
        downgrade_check(ed)?;
    }
    // Data first: zero clusters expanded before a version that cannot describe them.
    if target < 3 && ed.h.version >= 3 {
        expand_zero_clusters(ed, ctx)?;
    }
    let mut header = HeaderImage::read(ed)?;
    header.version = target;
    if let Some(l) = lazy {
        header.compatible = if l {
            header.compatible | COMPAT_LAZY_REFCOUNTS
        } else {
            header.compatible & !COMPAT_LAZY_REFCOUNTS
        };
    }
    if target < 3 {
        header.compatible = 0;
        header.autoclear = 0;
        header.incompatible = 0;
    }
    if let Some(name) = data_file {
        for (kind, data) in header.extensions.iter_mut() {
            if *kind == EXT_DATA_FILE {
                *data = name.as_bytes().to_vec();
            }
        }
    }
    if data_file_raw == Some(false) {
        header.autoclear &= !AUTOCLEAR_DATA_FILE_RAW;
    }
    let file = options.text("backing_file");
    let fmt = options.text("backing_fmt");
    if file.is_some() || fmt.is_some() {
        let name = file
            .map(str::to_string)
            .or_else(|| ed.h.backing_file.clone())
            .ok_or_else(|| Error::invalid("backing_fmt needs a backing file (backing_file=...)"))?;
        header.backing = Some(name);
        if let Some(f) = fmt {
            header.backing_format = Some(f.to_string());
        }
        // A raw data file is the whole disk: nothing would show through from a backing file.
        if header.autoclear & AUTOCLEAR_DATA_FILE_RAW != 0 {
            return Err(Error::invalid(
                "a backing file cannot be used with data_file_raw (the data file must hold the whole disk); set data_file_raw=off first",
            ));
        }
    }
    header.write(ed)
}

/// qemu's refusals of a downgrade that would lose information.
fn downgrade_check(ed: &mut Editor) -> Result<()> {
    if ed.h.refcount_order != 4 {
        return Err(Error::unsupported(
            "compat=0.10 requires refcount_bits=16 (the image has other refcounts)",
        ));
    }
    // Version 2 has no external data file (qemu's words).
    if ed.h.has_data_file() {
        return Err(Error::unsupported(
            "Cannot downgrade an image with a data file",
        ));
    }
    // The compression type is the one incompatible feature a downgrade can drop: version 2
    // has only zlib, so qemu-img 10 downgrades a zstd image while no cluster is compressed.
    let incompatible = ed.h.incompatible & !(INCOMPAT_DIRTY | INCOMPAT_COMPRESSION);
    if incompatible != 0 {
        return Err(Error::unsupported(format!(
            "Cannot downgrade an image with incompatible features {incompatible:#x} set"
        )));
    }
    if ed.h.incompatible & INCOMPAT_COMPRESSION != 0 && has_compressed_clusters(ed)? {
        return Err(Error::unsupported(
            "Cannot downgrade an image with zstd compression type and existing compressed clusters",
        ));
    }
    Ok(())
}

/// Whether any L2 table, the snapshots' included, holds a compressed cluster. qemu-img 10
/// looks at the active table only, and so downgrades an image whose zstd clusters only a
/// snapshot holds, leaving that snapshot unreadable; diskferry refuses that one too.
fn has_compressed_clusters(ed: &mut Editor) -> Result<bool> {
    let per = ed.h.l2_entries();
    let mut seen = HashSet::new();
    for l1 in l1_tables(ed)? {
        for e in l1 {
            let at = e & L1E_OFFSET_MASK;
            if at == 0 || !seen.insert(at) {
                continue;
            }
            for k in 0..per {
                if ed.l2_entry(at, k)?.0 & OFLAG_COMPRESSED != 0 {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// The active L1 table, then each snapshot's.
fn l1_tables(ed: &Editor) -> Result<Vec<Vec<u64>>> {
    let mut l1s = vec![ed.l1().to_vec()];
    if ed.h.nb_snapshots > 0 {
        let list = crate::formats::qcow2::snapshot::read_table(
            ed.storage(),
            ed.h.snapshots_offset,
            ed.h.nb_snapshots,
        )?;
        for s in list {
            l1s.push(crate::formats::qcow2::table::read_u64_table(
                ed.storage(),
                s.l1_table_offset,
                u64::from(s.l1_size),
            )?);
        }
    }
    Ok(l1s)
}

/// Turns every zero cluster (in the active and the snapshot L1 tables) into what compat=0.10
/// can describe: unallocated without a backing file, else a cluster of written zeros.
fn expand_zero_clusters(ed: &mut Editor, ctx: &EditContext<'_>) -> Result<()> {
    let _ = ctx;
    let has_backing = ed.h.backing_file.as_deref().is_some_and(|n| !n.is_empty());
    let l1s = l1_tables(ed)?;
    let per = ed.h.l2_entries();
    let zeros = vec![0u8; ed.cs as usize];
    let mut seen = HashSet::new();
    for l1 in l1s {
        for e in l1 {
            let at = e & L1E_OFFSET_MASK;
            if at == 0 || !seen.insert(at) {
                continue;
            }
            let table_refs = ed.refcount(at / ed.cs)?;
            for k in 0..per {
                let (entry, _) = ed.l2_entry(at, k)?;
                if entry & OFLAG_ZERO == 0 || entry & OFLAG_COMPRESSED != 0 {
                    continue;
                }
                let host = entry & L2E_OFFSET_MASK;
                if host != 0 {
                    // A preallocated zero cluster: its bytes become the zeros.
                    ed.write(&zeros, host)?;
                    ed.flush()?;
                    ed.set_l2_entry(at, k, entry & !OFLAG_ZERO, 0)?;
                } else if !has_backing {
                    ed.set_l2_entry(at, k, 0, 0)?;
                } else {
                    let new = ed.alloc(1)?;
                    // Referenced once per L1 table that references this L2 table.
                    for _ in 1..table_refs {
                        ed.add_ref(new / ed.cs, 1)?;
                    }
                    ed.write(&zeros, new)?;
                    ed.flush()?;
                    let copied = if table_refs == 1 { OFLAG_COPIED } else { 0 };
                    ed.set_l2_entry(at, k, new | copied, 0)?;
                }
            }
        }
    }
    ed.flush()
}

/// Records `backing` (or none) in the image at `path`.
pub(crate) fn set_backing(
    path: &Path,
    backing: Option<&NewBacking>,
    ctx: &EditContext<'_>,
) -> Result<()> {
    let _ = ctx;
    let mut ed = Editor::open(path, "change the backing file")?;
    let run = |ed: &mut Editor| -> Result<()> {
        let mut header = HeaderImage::read(ed)?;
        header.backing = backing.map(|b| b.name.clone());
        header.backing_format = backing
            .and_then(|b| b.format)
            .map(|f| qemu_format_name(f.name()).to_string());
        header.write(ed)
    };
    run(&mut ed).map_err(|e| e.with_path(path))
}

/// The header cluster, taken apart into what a rewrite changes and what it keeps.
pub(super) struct HeaderImage {
    version: u32,
    /// Bytes 8..72 of the header as stored (backing name place rewritten on encoding).
    fixed: Vec<u8>,
    incompatible: u64,
    compatible: u64,
    pub(super) autoclear: u64,
    refcount_order: u32,
    /// The optional fields after byte 104 (compression type...), version 3 only.
    tail: Vec<u8>,
    /// The extensions other than the backing format and the end, as stored (type, data).
    pub(super) extensions: Vec<(u32, Vec<u8>)>,
    backing: Option<String>,
    backing_format: Option<String>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl HeaderImage {
    pub(super) fn read(ed: &Editor) -> Result<HeaderImage> {
        let h = &ed.h;
        let mut head = vec![0u8; ed.cs as usize];
        ed.read(&mut head, 0)?;
        let backing_offset = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
        let ext_end = if backing_offset != 0 {
            backing_offset as usize
        } else {
            head.len()
        };
        let mut extensions = Vec::new();
        let mut at = h.header_length as usize;
        while at + 8 <= ext_end {
            let kind = be32(&head, at);
            let len = be32(&head, at + 4) as usize;
            if kind == EXT_END || at + 8 + len > ext_end {
                break;
            }
            if kind != EXT_BACKING_FORMAT {
                extensions.push((kind, head[at + 8..at + 8 + len].to_vec()));
            }
            at += 8 + len.next_multiple_of(8);
        }
        let tail = if h.version >= 3 {
            head[104..h.header_length as usize].to_vec()
        } else {
            Vec::new()
        };
        Ok(HeaderImage {
            version: h.version,
            fixed: head[8..72].to_vec(),
            incompatible: h.incompatible,
            compatible: h.compatible,
            autoclear: h.autoclear,
            refcount_order: h.refcount_order,
            tail,
            extensions,
            backing: h.backing_file.clone().filter(|n| !n.is_empty()),
            backing_format: h.backing_format.clone(),
        })
    }

    /// Encodes the header cluster; refuses when it does not fit in one cluster.
    fn encode(&self, cluster: usize) -> Result<Vec<u8>> {
        let v3 = self.version >= 3;
        let mut out = vec![0u8; cluster];
        out[0..4].copy_from_slice(b"QFI\xfb");
        out[4..8].copy_from_slice(&self.version.to_be_bytes());
        out[8..72].copy_from_slice(&self.fixed);
        let mut header_len = V2_HEADER_BYTES as usize;
        if v3 {
            out[72..80].copy_from_slice(&self.incompatible.to_be_bytes());
            out[80..88].copy_from_slice(&self.compatible.to_be_bytes());
            out[88..96].copy_from_slice(&self.autoclear.to_be_bytes());
            out[96..100].copy_from_slice(&self.refcount_order.to_be_bytes());
            // qemu writes the compression type field too (padded to 112 bytes).
            let tail = if self.tail.is_empty() {
                vec![0u8; 8]
            } else {
                self.tail.clone()
            };
            header_len = 104 + tail.len();
            out[100..104].copy_from_slice(&(header_len as u32).to_be_bytes());
            out[104..header_len].copy_from_slice(&tail);
        }
        let mut ext = Vec::new();
        if let (Some(_), Some(f)) = (&self.backing, &self.backing_format) {
            push_extension(&mut ext, EXT_BACKING_FORMAT, f.as_bytes());
        }
        for (kind, data) in &self.extensions {
            if *kind != EXT_FEATURE_TABLE {
                push_extension(&mut ext, *kind, data);
            }
        }
        let name = self.backing.as_deref().unwrap_or("").as_bytes();
        // The feature name table only helps readers that do not know a bit: it is written
        // (in version 3) when the backing file name leaves it room, as qemu-img's writer does.
        if v3 {
            let table = feature_names();
            if header_len + ext.len() + 8 + table.len() + 8 + name.len() <= cluster {
                push_extension(&mut ext, EXT_FEATURE_TABLE, &table);
            }
        }
        push_extension(&mut ext, EXT_END, &[]);
        let name_at = header_len + ext.len();
        if name.len() > crate::formats::qcow2::header::MAX_BACKING_NAME as usize
            || name_at + name.len() > cluster
        {
            return Err(Error::invalid(format!(
                "the backing file name ({} bytes) does not fit in the header cluster ({cluster} bytes, of which the header and its extensions take {name_at}); qemu keeps it there too",
                name.len()
            )));
        }
        out[header_len..name_at].copy_from_slice(&ext);
        out[name_at..name_at + name.len()].copy_from_slice(name);
        let (offset, size) = if name.is_empty() {
            (0u64, 0u32)
        } else {
            (name_at as u64, name.len() as u32)
        };
        out[8..16].copy_from_slice(&offset.to_be_bytes());
        out[16..20].copy_from_slice(&size.to_be_bytes());
        Ok(out)
    }

    /// Writes the header cluster, after everything before it is durable.
    pub(super) fn write(&self, ed: &mut Editor) -> Result<()> {
        let bytes = self.encode(ed.cs as usize)?;
        ed.flush()?;
        ed.write(&bytes, 0)?;
        ed.flush()
    }
}
