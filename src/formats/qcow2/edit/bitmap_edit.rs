//! `bitmap`: persistent dirty bitmaps added, removed, cleared, enabled, disabled and merged
//! in place, with qemu-img's semantics and messages.
//!
//! The operations run in order on the bitmap directory held in memory: a bitmap whose bits
//! change (added, cleared, merged into) has its bits loaded into memory; one that only
//! changes flags, or does not change, keeps its directory entry, table and data as stored.
//! As in qemu-img, the first operation that fails stops the rest and the ones before it are
//! kept, so what they changed is written before the error is returned.
//!
//! Writing is crash-consistent, as the snapshot table's rewrite ([`super::snapshots`]):
//! 1. each changed bitmap's data clusters and table, then the whole new directory, are
//!    written to newly counted clusters and flushed;
//! 2. the header is switched to the new directory in one write and flushed: the bitmaps
//!    extension's 24 bytes in place when it stays, else the header cluster rewritten (the
//!    extension and its autoclear bit added with the first bitmap, dropped with the last);
//! 3. only then are the old directory and the old tables and data of the removed and
//!    changed bitmaps counted down.
//!
//! A `kill -9` before the switch leaves the old bitmaps and leaked clusters, after it the new
//! ones and leaked clusters: `qemu-img check -r leaks` reclaims both. Unlike qemu-img, which
//! flags every bitmap in use while it has the image open, no bitmap is ever left flagged
//! inconsistent by an interrupted run.

use super::amend::HeaderImage;
use super::{Editor, ExistingBitmaps, ExternalData};
use crate::dirty_bitmap::{DirtyBitmap, Tracking};
use crate::edit::{BitmapEdit, BitmapOp, EditContext, bitmap_op_failed, check_bitmap_granularity};
use crate::error::{Error, Result};
use crate::formats::qcow2::bitmaps::{
    Bitmap, FLAG_AUTO, GRANULARITY_BITS, MAX_BITMAP_BYTES, MAX_BITMAPS, MAX_DIRECTORY_BYTES,
    MAX_NAME_BYTES, MAX_TABLE_ENTRIES, StoredBitmap, entry_size, read_directory, store,
};
use crate::formats::qcow2::header::{AUTOCLEAR_BITMAPS, BitmapsExtension, EXT_BITMAPS, EXT_END};
use crate::host_file::HostFile;
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

/// Mask of a bitmap table entry's data cluster offset.
const ENTRY_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;

/// Applies `edit` to the bitmaps of the qcow2 image at `path`.
pub(crate) fn edit_bitmaps(
    path: &Path,
    edit: &BitmapEdit<'_>,
    ctx: &EditContext<'_>,
) -> Result<()> {
    let _ = ctx;
    if edit.ops.is_empty() {
        return Ok(());
    }
    // A source image that is the image being changed would be read through tables that the
    // operations before the merge may already have freed (`--clear --merge B -b IMG IMG B`
    // read the cleared bits back from freed clusters): refused. qemu-img fails there too, on
    // its own image lock; the image's own bitmaps are merged without a source image.
    if let Some(source) = edit.source
        && let Some(target) = crate::image::file_identity(path)
        && source.layers().iter().any(|l| {
            (0..l.files().len()).any(|i| l.storage(i).and_then(|s| s.identity()) == Some(target))
        })
    {
        return Err(Error::invalid(
            "the image to merge from is the image being changed; merge one of its own bitmaps without naming a source image",
        )
        .with_path(path));
    }
    let mut ed = Editor::open_with(
        path,
        "change persistent dirty bitmaps",
        ExistingBitmaps::Keep,
        ExternalData::Refuse,
    )?;
    let reader: Arc<dyn Storage> = Arc::new(HostFile::open(path)?);
    let mut dir = Directory::read(&ed, reader).map_err(|e| e.with_path(path))?;
    let mut failed = None;
    for op in edit.ops {
        if let Err(why) = dir.apply(&ed, op, edit) {
            failed = Some(match why {
                Failure::Op(text) => bitmap_op_failed(op, edit.name, text),
                Failure::Other(e) => e,
            });
            break;
        }
    }
    if dir.changed {
        commit(&mut ed, &dir).map_err(|e| e.with_path(path))?;
    }
    match failed {
        Some(e) => Err(e.with_path(path)),
        None => Ok(()),
    }
}

/// Why an operation failed: qemu's reason (worded into `Operation ... failed: REASON`), or
/// an error of its own (an unreadable or corrupt image) passed on as it is.
enum Failure {
    Op(String),
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Other(e)
    }
}

/// One bitmap of the directory being edited.
struct Entry {
    name: String,
    granularity_bits: u8,
    /// The flags word (in use, auto, reserved bits as stored).
    flags: u32,
    /// Where it is stored now (`None` for a bitmap added by this run).
    stored: Option<Bitmap>,
    /// Its bits, when they change: the whole bitmap, in memory.
    bits: Option<Vec<u8>>,
}

impl Entry {
    fn in_use(&self) -> bool {
        self.flags & crate::formats::qcow2::bitmaps::FLAG_IN_USE != 0
    }
}

/// The bitmap directory as the operations leave it.
struct Directory {
    entries: Vec<Entry>,
    /// Stored bitmaps removed or rewritten: their tables and data are freed once the new
    /// directory is in place.
    retired: Vec<Bitmap>,
    /// Whether anything must be written.
    changed: bool,
    /// Reads the image's stored bitmaps (a second handle on the file: stored bits are never
    /// overwritten, new ones go to new clusters).
    reader: Arc<dyn Storage>,
}

/// qemu's reason for a bitmap flagged in use (the image was not closed cleanly while the
/// bitmap tracked writes): its bits cannot be trusted, it can only be removed.
fn inconsistent(name: &str) -> Failure {
    Failure::Op(format!(
        "Bitmap '{name}' is inconsistent and cannot be used"
    ))
}

fn not_found(name: &str) -> Failure {
    Failure::Op(format!("Dirty bitmap '{name}' not found"))
}

impl Directory {
    fn read(ed: &Editor, reader: Arc<dyn Storage>) -> Result<Directory> {
        let list = match &ed.h.bitmaps {
            Some(ext) => read_directory(ed.storage(), ext)?,
            None => Vec::new(),
        };
        let entries = list
            .into_iter()
            .map(|b| Entry {
                name: b.name.clone(),
                granularity_bits: b.granularity_bits,
                flags: b.flags,
                stored: Some(b),
                bits: None,
            })
            .collect();
        Ok(Directory {
            entries,
            retired: Vec::new(),
            changed: false,
            reader,
        })
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// The bitmap `name` for a change of its bits or flags: present and consistent.
    fn usable(&self, name: &str) -> Result<usize, Failure> {
        let i = self.find(name).ok_or_else(|| not_found(name))?;
        if self.entries[i].in_use() {
            return Err(inconsistent(name));
        }
        Ok(i)
    }

    /// The bits of entry `i`, loaded into memory (from then on they are written anew).
    fn load_bits(&mut self, ed: &Editor, i: usize) -> Result<&mut Vec<u8>> {
        if self.entries[i].bits.is_none() {
            let stored = self.entries[i]
                .stored
                .as_ref()
                .expect("an entry without bits in memory is stored");
            let b = StoredBitmap::load(self.reader.clone(), stored, ed.cs, ed.h.size)?;
            let mut bits = vec![0u8; b.byte_len() as usize];
            b.read(0, &mut bits)?;
            self.entries[i].bits = Some(bits);
        }
        Ok(self.entries[i].bits.as_mut().expect("loaded"))
    }

    fn apply(&mut self, ed: &Editor, op: &BitmapOp, edit: &BitmapEdit<'_>) -> Result<(), Failure> {
        let name = edit.name;
        match op {
            BitmapOp::Add { granularity } => self.add(ed, name, *granularity)?,
            BitmapOp::Remove => {
                let i = self.find(name).ok_or_else(|| not_found(name))?;
                let e = self.entries.remove(i);
                self.retired.extend(e.stored);
            }
            BitmapOp::Clear => {
                let i = self.usable(name)?;
                // A stored bitmap is checked as merge checks what it loads (granularity,
                // qemu's 512 MiB limit, its table), so that the bits allocated here are
                // bounded: its entry's granularity and the header's disk size are the
                // file's word, and 2^0-byte units of a 128 PiB disk are 16 PiB of bits.
                let bytes = match (&self.entries[i].bits, &self.entries[i].stored) {
                    (Some(bits), _) => bits.len(),
                    (None, Some(stored)) => {
                        StoredBitmap::load(self.reader.clone(), stored, ed.cs, ed.h.size)?
                            .byte_len() as usize
                    }
                    (None, None) => unreachable!("a new bitmap has its bits in memory"),
                };
                self.entries[i].bits = Some(vec![0u8; bytes]);
            }
            BitmapOp::Enable | BitmapOp::Disable => {
                let i = self.usable(name)?;
                let e = &mut self.entries[i];
                e.flags = match op {
                    BitmapOp::Enable => e.flags | FLAG_AUTO,
                    _ => e.flags & !FLAG_AUTO,
                };
            }
            BitmapOp::Merge(source) => self.merge(ed, name, source, edit)?,
        }
        self.changed = true;
        Ok(())
    }

    /// `--add`: qemu's checks in qemu's order, then an empty, enabled bitmap.
    fn add(&mut self, ed: &Editor, name: &str, granularity: Option<u64>) -> Result<(), Failure> {
        if name.is_empty() {
            return Err(Failure::Op("Bitmap name cannot be empty".into()));
        }
        let granularity = match granularity {
            Some(g) => {
                check_bitmap_granularity(g).map_err(|e| Failure::Op(e.message().into()))?;
                g
            }
            // qemu's default: the cluster size, kept within 4 KiB to 64 KiB.
            None => ed.cs.clamp(4096, 65536),
        };
        let bits = granularity.trailing_zeros() as u8;
        let cannot_store = |why: &str| {
            Failure::Op(format!(
                "Can't make bitmap '{name}' persistent in '{}': {why}",
                ed.path().display()
            ))
        };
        if ed.h.version < 3 {
            return Err(cannot_store("Cannot store dirty bitmaps in qcow2 v2 files"));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(cannot_store(&format!(
                "Name length exceeds maximum ({MAX_NAME_BYTES} characters)"
            )));
        }
        let bytes = bitmap_bytes(ed.h.size, bits);
        if bytes > MAX_BITMAP_BYTES || bytes.div_ceil(ed.cs) > MAX_TABLE_ENTRIES {
            return Err(cannot_store(
                "Too much space will be occupied by the bitmap. Use larger granularity",
            ));
        }
        if ed.h.size == 0 {
            return Err(cannot_store(
                "the disk is empty, and a bitmap of no bits cannot be stored",
            ));
        }
        if self.entries.len() as u32 >= MAX_BITMAPS {
            return Err(cannot_store(
                "Maximum number of persistent bitmaps is already reached",
            ));
        }
        let directory: u64 = self.entries.iter().map(|e| entry_size(e.name.len())).sum();
        if directory + entry_size(name.len()) > MAX_DIRECTORY_BYTES {
            return Err(cannot_store("Not enough space in the bitmap directory"));
        }
        if self.find(name).is_some() {
            return Err(Failure::Op(format!("Bitmap already exists: {name}")));
        }
        self.entries.push(Entry {
            name: name.to_string(),
            granularity_bits: bits,
            flags: FLAG_AUTO,
            stored: None,
            bits: Some(vec![0u8; bytes as usize]),
        });
        Ok(())
    }

    /// `--merge SOURCE`: the target first (present, consistent), then the source, as qemu
    /// checks them.
    fn merge(
        &mut self,
        ed: &Editor,
        target: &str,
        source: &str,
        edit: &BitmapEdit<'_>,
    ) -> Result<(), Failure> {
        let t = self.usable(target)?;
        let (src_bits, src_gran, src_size) = match edit.source {
            None => {
                let s = self.usable(source)?;
                let g = self.entries[s].granularity_bits;
                (self.load_bits(ed, s)?.clone(), g, ed.h.size)
            }
            Some(image) => {
                let layer = image.top();
                let listed = layer.dirty_bitmaps().unwrap_or_default();
                let entry = listed
                    .iter()
                    .find(|b| b.name == source)
                    .ok_or_else(|| not_found(source))?;
                if entry.in_use {
                    return Err(inconsistent(source));
                }
                let b = layer.load_dirty_bitmap(source)?;
                let mut bits = vec![0u8; b.byte_len() as usize];
                b.read(0, &mut bits)?;
                (bits, b.granularity_bits(), layer.virtual_size())
            }
        };
        if src_size != ed.h.size {
            return Err(Failure::Op(format!(
                "Bitmaps are of different sizes (destination size is {}, source size is {src_size}) and can't be merged",
                ed.h.size
            )));
        }
        let size = ed.h.size;
        let dst_gran = self.entries[t].granularity_bits;
        let dst = self.load_bits(ed, t)?;
        merge_bits(dst, dst_gran, &src_bits, src_gran, size);
        Ok(())
    }
}

/// Bytes of bits a bitmap of `2^granularity_bits`-byte units holds for a `size`-byte disk.
fn bitmap_bytes(size: u64, granularity_bits: u8) -> u64 {
    size.div_ceil(1 << granularity_bits).div_ceil(8)
}

/// Sets in `dst` (units of `2^dst_gran` bytes) every bit whose range of the `size`-byte disk
/// overlaps that of a bit set in `src` (units of `2^src_gran` bytes): qemu's merge, which
/// works on byte ranges, so a coarser source sets several bits and a finer one sets the bit
/// holding its range.
fn merge_bits(dst: &mut [u8], dst_gran: u8, src: &[u8], src_gran: u8, size: u64) {
    let src_bits = size.div_ceil(1 << src_gran);
    let dst_bits = size.div_ceil(1 << dst_gran);
    for (byte_index, &byte) in src.iter().enumerate() {
        if byte == 0 {
            continue;
        }
        for bit in 0..8u64 {
            let i = byte_index as u64 * 8 + bit;
            if byte & (1 << bit) == 0 || i >= src_bits {
                continue;
            }
            let start = i << src_gran;
            let end = ((i + 1) << src_gran).min(size);
            let first = start >> dst_gran;
            let last = ((end - 1) >> dst_gran).min(dst_bits - 1);
            for j in first..=last {
                dst[(j / 8) as usize] |= 1 << (j % 8);
            }
        }
    }
}

/// A bitmap held in memory, for [`store`].
#[derive(Debug)]
struct InMemory<'a> {
    name: &'a str,
    granularity_bits: u8,
    tracking: Tracking,
    bits: u64,
    data: &'a [u8],
}

impl DirtyBitmap for InMemory<'_> {
    fn name(&self) -> &str {
        self.name
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
        buf.fill(0);
        let from = (offset as usize).min(self.data.len());
        let to = (from + buf.len()).min(self.data.len());
        buf[..to - from].copy_from_slice(&self.data[from..to]);
        // Bits past the last one are not part of the bitmap (a coarse merge may set them).
        let tail = self.bits % 8;
        let last = self.byte_len().saturating_sub(1) as usize;
        if tail != 0 && (from..to).contains(&last) {
            buf[last - from] &= (1u8 << tail) - 1;
        }
        Ok(())
    }
}

/// Writes the directory `dir` leaves and switches the header to it (see the module).
fn commit(ed: &mut Editor, dir: &Directory) -> Result<()> {
    let cs = ed.cs;
    let size = ed.h.size;
    let mut directory = Vec::new();
    for e in &dir.entries {
        match (&e.bits, &e.stored) {
            (Some(data), _) => {
                let bitmap = InMemory {
                    name: &e.name,
                    granularity_bits: e.granularity_bits,
                    tracking: if e.flags & FLAG_AUTO != 0 {
                        Tracking::Enabled
                    } else {
                        Tracking::Disabled
                    },
                    bits: size.div_ceil(1 << e.granularity_bits),
                    data,
                };
                store(&bitmap, cs, &mut directory, &mut |bytes| {
                    ed.write_new(bytes)
                })?;
            }
            (None, Some(b)) => {
                // Kept where it is: its entry as stored (extra data and all), with the flags
                // as they are now. Its length comes from the stored name size: `b.name` is
                // the name's bytes read as UTF-8, lossily, so longer than they are when they
                // are not UTF-8 (qemu takes any bytes), and the copy then took the next
                // entry's first bytes and misplaced every entry after it.
                let mut fixed = [0u8; 24];
                ed.read(&mut fixed, b.entry_offset)?;
                let name_size = u16::from_be_bytes([fixed[18], fixed[19]]);
                let len = 24 + u64::from(b.extra_data_size) + u64::from(name_size);
                let mut raw = vec![0u8; len as usize];
                ed.read(&mut raw, b.entry_offset)?;
                raw[12..16].copy_from_slice(&e.flags.to_be_bytes());
                raw.resize(raw.len().next_multiple_of(8), 0);
                directory.extend_from_slice(&raw);
            }
            (None, None) => unreachable!("a new bitmap has its bits in memory"),
        }
    }
    let retired_bits: Vec<&Bitmap> = dir
        .entries
        .iter()
        .filter(|e| e.bits.is_some())
        .filter_map(|e| e.stored.as_ref())
        .chain(dir.retired.iter())
        .collect();
    let old = ed.h.bitmaps;
    let new = if dir.entries.is_empty() {
        None
    } else {
        let at = ed.write_new(&directory)?;
        Some(BitmapsExtension {
            count: dir.entries.len() as u32,
            directory_size: directory.len() as u64,
            directory_offset: at,
        })
    };
    ed.flush()?;
    switch_header(ed, new)?;
    ed.h.bitmaps = new;
    if let Some(old) = old {
        release(ed, old.directory_offset, old.directory_size)?;
    }
    for b in retired_bits {
        free_bitmap(ed, b)?;
    }
    ed.flush()
}

/// Points the header at `new` (no bitmaps when `None`) in one write, durable on return.
fn switch_header(ed: &mut Editor, new: Option<BitmapsExtension>) -> Result<()> {
    if let (Some(new), Some(_)) = (new, ed.h.bitmaps)
        && let Some(at) = bitmaps_extension_data(ed)?
    {
        ed.write(&new.encode(), at)?;
        return ed.flush();
    }
    let mut header = HeaderImage::read(ed)?;
    header.extensions.retain(|(kind, _)| *kind != EXT_BITMAPS);
    match new {
        Some(new) => {
            header.extensions.push((EXT_BITMAPS, new.encode().to_vec()));
            // Without the autoclear bit a reader takes the extension for one left stale by
            // a program that does not know bitmaps, and drops them.
            header.autoclear |= AUTOCLEAR_BITMAPS;
        }
        None => header.autoclear &= !AUTOCLEAR_BITMAPS,
    }
    header.write(ed)
}

/// Where the bitmaps extension's data is in the header cluster, if there is one.
fn bitmaps_extension_data(ed: &Editor) -> Result<Option<u64>> {
    let mut head = vec![0u8; ed.cs as usize];
    ed.read(&mut head, 0)?;
    let be32 = |at: usize| u32::from_be_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let mut at = ed.h.header_length as usize;
    while at + 8 <= head.len() {
        let kind = be32(at);
        let len = be32(at + 4) as usize;
        if kind == EXT_END || at + 8 + len > head.len() {
            break;
        }
        if kind == EXT_BITMAPS && len == 24 {
            return Ok(Some(at as u64 + 8));
        }
        at += 8 + len.next_multiple_of(8);
    }
    Ok(None)
}

/// Counts down the clusters of `bytes` bytes at `offset`, each only if it is counted
/// (reads past the end of the file read zeros, and clusters past it have no count):
/// freeing comes after the switch, where a stale or damaged old table must cost a leak at
/// worst, never an error or a count gone wrong.
fn release(ed: &mut Editor, offset: u64, bytes: u64) -> Result<()> {
    if offset == 0 || bytes == 0 || !offset.is_multiple_of(ed.cs) {
        return Ok(());
    }
    // qemu does not pad the last cluster of the file: a table or directory there ends
    // before the cluster does, and is freed all the same.
    for c in 0..bytes.div_ceil(ed.cs) {
        let cluster = offset / ed.cs + c;
        if ed.refcount(cluster)? > 0 {
            ed.add_ref(cluster, -1)?;
        }
    }
    Ok(())
}

/// Frees a stored bitmap's data clusters and table (an inconsistent one's too: they are
/// read as far as they make sense).
///
/// Only a table of the size the bitmap's granularity and the disk need, within qemu's
/// limits, is read and freed (at most 8 MiB, for 512 MiB of bits in 512-byte clusters):
/// an entry's table size is the file's word, up to 2^32 - 1 entries (32 GiB to read, and
/// clusters past the real table, perhaps just written, to count down). Any other table is
/// left as a leak.
fn free_bitmap(ed: &mut Editor, b: &Bitmap) -> Result<()> {
    let cs = ed.cs;
    if !GRANULARITY_BITS.contains(&b.granularity_bits) {
        return Ok(());
    }
    let bytes = bitmap_bytes(ed.h.size, b.granularity_bits);
    let entries = bytes.div_ceil(cs);
    if bytes > MAX_BITMAP_BYTES
        || entries > MAX_TABLE_ENTRIES
        || u64::from(b.table_size) != entries
        || b.table_offset == 0
        || !b.table_offset.is_multiple_of(cs)
    {
        return Ok(());
    }
    let table_bytes = entries * 8;
    let mut table = vec![0u8; table_bytes as usize];
    ed.read(&mut table, b.table_offset)?;
    for e in table.chunks_exact(8) {
        let data = u64::from_be_bytes(e.try_into().expect("8 bytes")) & ENTRY_OFFSET;
        if data != 0 && data.is_multiple_of(cs) {
            release(ed, data, cs)?;
        }
    }
    release(ed, b.table_offset, table_bytes)
}

#[cfg(test)]
mod tests {
    use super::merge_bits;

    #[test]
    fn merges_across_granularities_cover_the_same_bytes() {
        // 1 MiB disk. A 64 KiB source bit 1 (64..128 KiB) sets 4 KiB bits 16..32.
        let mut fine = vec![0u8; 32];
        merge_bits(&mut fine, 12, &[0b10, 0], 16, 1 << 20);
        assert_eq!(&fine[..6], &[0, 0, 0xff, 0xff, 0, 0]);
        // A 4 KiB source bit 17 sets the 64 KiB bit 1; bit 40 the bit 2.
        let mut coarse = vec![0u8; 2];
        let mut src = vec![0u8; 32];
        src[2] = 0b10;
        src[5] = 1;
        merge_bits(&mut coarse, 16, &src, 12, 1 << 20);
        assert_eq!(coarse, vec![0b110, 0]);
        // A source bit past a disk that ends mid-unit sets only the last target bit.
        let mut d = vec![0u8; 1];
        merge_bits(&mut d, 9, &[1], 12, 1536);
        assert_eq!(d, vec![0b111]);
    }
}
