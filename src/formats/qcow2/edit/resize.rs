//! `resize`: the virtual size changed in place, as `qemu-img resize` changes it.
//!
//! Growing writes a larger L1 table elsewhere when the new size needs one and switches to it;
//! a backing file longer than the old size is hidden behind zeros (as qemu does, so the grown
//! range reads as zeros); only then is the new size written. Preallocation gives
//! the new whole clusters fresh host clusters at the end of the file (metadata: the file grows
//! sparsely; falloc: the space is reserved; full: zeros are written). Shrinking (refused with
//! snapshots, as qemu refuses) switches the size first, then frees what lies past it and cuts
//! the free clusters off the end of the file.

use super::Editor;
use super::write::Writer;
use crate::edit::{EditContext, GrowPreallocation, ResizeRequest, Shrink};
use crate::error::{Error, Result};
use crate::formats::qcow2::table::{L2E_OFFSET_MASK, OFLAG_COPIED};
use std::path::Path;

/// Resizes the image at `path`.
pub(crate) fn resize(path: &Path, req: &ResizeRequest, ctx: &EditContext<'_>) -> Result<()> {
    let mut ed = Editor::open(path, "resize the image")?;
    resize_inner(&mut ed, req, ctx).map_err(|e| e.with_path(path))
}

fn resize_inner(ed: &mut Editor, req: &ResizeRequest, ctx: &EditContext<'_>) -> Result<()> {
    let old = ed.h.size;
    let new = req.new_size;
    if !new.is_multiple_of(512) {
        return Err(Error::invalid(format!(
            "the new size {new} is not a multiple of 512 bytes (qcow2 sizes are whole sectors)"
        )));
    }
    if new < old {
        if req.shrink == Shrink::Refuse {
            return Err(Error::invalid(
                "Use the --shrink option to perform a shrink operation (data past the new end is lost)",
            ));
        }
        if ed.h.nb_snapshots > 0 {
            return Err(Error::unsupported(
                "Can't shrink an image which has snapshots (qemu-img refuses too); delete them first",
            ));
        }
        if req.preallocation != GrowPreallocation::Off {
            return Err(Error::invalid("Preallocation can only be used for growing"));
        }
        return shrink(ed, new);
    }
    if new == old {
        return Ok(());
    }
    if ed.h.nb_snapshots > 0 && ed.h.version < 3 {
        return Err(Error::unsupported(
            "Can't resize a v2 image which has snapshots (qemu-img refuses too)",
        ));
    }
    if req.preallocation != GrowPreallocation::Off && ed.h.backing_file.is_some() {
        return Err(Error::unsupported(
            "preallocation of an image with a backing file is not supported (the new clusters would hide it)",
        ));
    }
    let backing = ed.open_backing(ctx)?;
    // Everything for the new range is in place before the size makes it visible.
    grow_l1(ed, new)?;
    if let Some(b) = &backing
        && b.size() > old
    {
        let mut w = Writer {
            ed: &mut *ed,
            backing: Some(b),
            size: new,
        };
        w.clear_inner(old, new - old, crate::edit::Clear::Zero)?;
    }
    preallocate(ed, old, new, req.preallocation)?;
    ed.flush()?;
    ed.write(&new.to_be_bytes(), 24)?;
    ed.h.size = new;
    ed.flush()
}

/// Makes the L1 table large enough for `new` bytes: a larger copy written elsewhere and
/// switched to (size and offset in one write), the old one freed.
fn grow_l1(ed: &mut Editor, new: u64) -> Result<()> {
    let needed = ed.h.l1_entries_for(new);
    if needed <= u64::from(ed.h.l1_size) {
        return Ok(());
    }
    if needed * 8 > crate::formats::qcow2::header::MAX_L1_BYTES {
        return Err(Error::invalid(format!(
            "a virtual size of {new} bytes needs an L1 table larger than qemu's 32 MiB limit"
        )));
    }
    let old = (ed.h.l1_table_offset, u64::from(ed.h.l1_size) * 8);
    let mut bytes = Vec::with_capacity((needed * 8) as usize);
    for e in ed.l1() {
        bytes.extend_from_slice(&e.to_be_bytes());
    }
    bytes.resize((needed * 8) as usize, 0);
    let at = ed.write_new(&bytes)?;
    ed.flush()?;
    let mut field = [0u8; 12];
    field[..4].copy_from_slice(&(needed as u32).to_be_bytes());
    field[4..].copy_from_slice(&at.to_be_bytes());
    ed.write(&field, 36)?;
    ed.flush()?;
    ed.h.l1_size = needed as u32;
    ed.h.l1_table_offset = at;
    ed.l1.resize(needed as usize, 0);
    ed.free_bytes(old.0, old.1)
}

/// One header write of bytes 24..48: size, encryption method (none), L1 size and offset.
pub(super) fn switch_size(ed: &mut Editor, size: u64, l1_size: u32, l1_offset: u64) -> Result<()> {
    let mut field = [0u8; 24];
    field[..8].copy_from_slice(&size.to_be_bytes());
    field[12..16].copy_from_slice(&l1_size.to_be_bytes());
    field[16..].copy_from_slice(&l1_offset.to_be_bytes());
    ed.write(&field, 24)?;
    ed.flush()?;
    ed.h.size = size;
    ed.h.l1_size = l1_size;
    ed.h.l1_table_offset = l1_offset;
    Ok(())
}

/// Gives every whole cluster of `[old, new)` a fresh host cluster.
fn preallocate(ed: &mut Editor, old: u64, new: u64, how: GrowPreallocation) -> Result<()> {
    if how == GrowPreallocation::Off {
        return Ok(());
    }
    let cs = ed.cs;
    let first = old.div_ceil(cs);
    let last = new.div_ceil(cs);
    let per = ed.h.l2_entries();
    let span = ed.l1_span();
    let extended = ed.h.extended_l2();
    let mut pending = Vec::new();
    // Fresh clusters past the end of the file read as zeros, unlike freed ones.
    ed.free_hint = ed.end;
    for c in first..last {
        let l2 = ed.l2_for_write((c * cs / span) as usize)?;
        let (entry, _) = ed.l2_entry(l2, c % per)?;
        if entry & L2E_OFFSET_MASK != 0 {
            continue;
        }
        let at = ed.alloc(1)?;
        pending.push((l2, c % per, at));
    }
    let end_bytes = ed.end * cs;
    match how {
        GrowPreallocation::Full => {
            let zeros = vec![0u8; cs as usize];
            for &(_, _, at) in &pending {
                ed.write(&zeros, at)?;
            }
        }
        GrowPreallocation::Falloc => {
            let start = pending.first().map_or(end_bytes, |p| p.2);
            rustix::fs::fallocate(
                ed.file.file(),
                rustix::fs::FallocateFlags::empty(),
                start,
                end_bytes.saturating_sub(start),
            )
            .map_err(|e| Error::io("cannot reserve space", e.into()))?;
        }
        _ => {}
    }
    if crate::storage::Storage::len(&ed.file) < end_bytes {
        ed.file.set_len(end_bytes)?;
    }
    ed.flush()?;
    for (l2, k, at) in pending {
        let bitmap = if extended { 0xffff_ffff } else { 0 };
        ed.set_l2_entry(l2, k, at | OFLAG_COPIED, bitmap)?;
    }
    ed.flush()
}

/// Cuts the disk to `new` bytes: the size first, then the clusters past it freed.
fn shrink(ed: &mut Editor, new: u64) -> Result<()> {
    let cs = ed.cs;
    let old = ed.h.size;
    let l1_size = ed.h.l1_size;
    let l1_offset = ed.h.l1_table_offset;
    ed.flush()?;
    switch_size(ed, new, l1_size, l1_offset)?;
    let decoder = ed.decoder();
    let per = ed.h.l2_entries();
    let span = ed.l1_span();
    let first = new.div_ceil(cs);
    let last = old.div_ceil(cs);
    let mut freed = Vec::new();
    let mut c = first;
    while c < last {
        let l1i = (c * cs / span) as usize;
        let Some(at) = ed.l2_of(l1i) else {
            c = (l1i as u64 + 1) * per;
            continue;
        };
        let whole_table = c.is_multiple_of(per) && c * cs >= new;
        if whole_table {
            // Nothing of this table stays: the L1 entry goes, then everything it held.
            for k in 0..per {
                let (entry, _) = ed.l2_entry(at, k)?;
                freed.extend(super::tables::host_bytes(&decoder, entry));
            }
            ed.set_l1(l1i, 0)?;
            freed.push((at, cs));
            c += per;
            continue;
        }
        let l2 = ed.l2_for_write(l1i)?;
        let (entry, _) = ed.l2_entry(l2, c % per)?;
        if entry != 0 {
            ed.set_l2_entry(l2, c % per, 0, 0)?;
            freed.extend(super::tables::host_bytes(&decoder, entry));
        }
        c += 1;
    }
    ed.flush()?;
    for (host, len) in freed {
        ed.add_ref_bytes(host, len, -1)?;
    }
    ed.flush()?;
    cut_free_tail(ed)
}

/// Cuts the free clusters at the end of the file off (as qemu truncates after a shrink).
fn cut_free_tail(ed: &mut Editor) -> Result<()> {
    let mut last = ed.end;
    while last > 1 && ed.refcount(last - 1)? == 0 {
        last -= 1;
    }
    if last < ed.end {
        ed.file.set_len(last * ed.cs)?;
        ed.end = last;
        ed.free_hint = ed.free_hint.min(last);
        ed.flush()?;
    }
    Ok(())
}
