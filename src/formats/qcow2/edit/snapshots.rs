//! `snapshot -c|-a|-d`: internal snapshots taken, applied and deleted as qemu does.
//!
//! - Create: every cluster reachable from the active L1 table is counted once more (and its
//!   COPIED flag cleared, the cluster being shared now), a copy of the L1 table is written,
//!   then a new snapshot table with the new entry, and the header switched to it.
//! - Apply: the snapshot's clusters are counted once more, a copy of its L1 table is written
//!   and the header switched to it (with the snapshot's virtual size) in one write; the old
//!   active tree is counted down after.
//! - Delete (by name, as qemu-img): the snapshot table without the entry is written and switched to first; the
//!   snapshot's clusters are counted down after, and the active COPIED flags brought up to date.
//!
//! Each switch is one header write; a crash before it leaves the old state (and leaks), after
//! it the new one (and leaks).

use super::Editor;
use crate::edit::{EditContext, SnapshotEdit};
use crate::error::{Error, Result};
use crate::formats::qcow2::header::{MAX_L1_BYTES, MAX_SNAPSHOTS};
use crate::formats::qcow2::snapshot::{self, MAX_TABLE_BYTES, Snapshot};
use crate::formats::qcow2::table::{OFLAG_COPIED, read_u64_table};
use std::path::Path;

/// Takes, applies or deletes a snapshot of the image at `path`.
pub(crate) fn edit_snapshot(path: &Path, edit: &SnapshotEdit, ctx: &EditContext<'_>) -> Result<()> {
    let _ = ctx;
    let what = match edit {
        SnapshotEdit::Create(_) => "create a snapshot",
        SnapshotEdit::Apply(_) => "apply a snapshot",
        SnapshotEdit::Delete(_) => "delete a snapshot",
    };
    let mut ed = Editor::open(path, what)?;
    let table = Table::read(&ed).map_err(|e| e.with_path(path))?;
    match edit {
        SnapshotEdit::Create(name) => create(&mut ed, table, name),
        SnapshotEdit::Apply(name) => {
            let i = table.find(name).ok_or_else(|| {
                Error::invalid(format!(
                    "Could not apply snapshot '{name}': Failed to load snapshot: No such file or directory"
                ))
            })?;
            apply(&mut ed, &table, i)
        }
        SnapshotEdit::Delete(name) => {
            // qemu-img deletes by name only (it applies by ID or name).
            let i = table.list.iter().position(|s| s.name == *name).ok_or_else(|| {
                Error::invalid(format!(
                    "Could not delete snapshot '{name}': snapshot not found"
                ))
            })?;
            delete(&mut ed, table, i)
        }
    }
    .map_err(|e| e.with_path(path))
}

/// The snapshot table: each entry parsed, and its bytes as stored (kept as they are).
struct Table {
    list: Vec<Snapshot>,
    raw: Vec<Vec<u8>>,
    /// Bytes the table occupies.
    bytes: u64,
}

impl Table {
    fn read(ed: &Editor) -> Result<Table> {
        let h = ed.header();
        if h.nb_snapshots == 0 {
            return Ok(Table {
                list: Vec::new(),
                raw: Vec::new(),
                bytes: 0,
            });
        }
        let (list, bytes) =
            snapshot::read_table_sized(ed.storage(), h.snapshots_offset, h.nb_snapshots)?;
        // The last entry's padding may lie past the end of the file (qemu does not write it).
        let mut all = vec![0u8; bytes as usize];
        ed.read(&mut all, h.snapshots_offset)?;
        let mut raw = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let from = (s.entry_offset - h.snapshots_offset) as usize;
            let to = list.get(i + 1).map_or(bytes as usize, |n| {
                (n.entry_offset - h.snapshots_offset) as usize
            });
            raw.push(all[from..to].to_vec());
        }
        for s in &list {
            if u64::from(s.l1_size) * 8 > MAX_L1_BYTES
                || !s.l1_table_offset.is_multiple_of(ed.cs)
                || s.l1_table_offset + u64::from(s.l1_size) * 8
                    > crate::storage::Storage::len(ed.storage())
            {
                return Err(Error::corrupt(format!(
                    "snapshot {}'s L1 table ({} entries at {:#x}) is not inside the file",
                    s.id, s.l1_size, s.l1_table_offset
                ))
                .at_offset(s.entry_offset));
            }
        }
        Ok(Table { list, raw, bytes })
    }

    /// The snapshot with this ID, else this name (qemu looks in that order).
    fn find(&self, key: &str) -> Option<usize> {
        self.list
            .iter()
            .position(|s| s.id == key)
            .or_else(|| self.list.iter().position(|s| s.name == key))
    }

    /// qemu's next ID: one more than the largest numeric ID.
    fn next_id(&self) -> String {
        let max = self
            .list
            .iter()
            .map(|s| leading_number(&s.id))
            .max()
            .unwrap_or(0);
        (max + 1).to_string()
    }
}

/// The number an ID starts with, as C's strtoul reads it (0 when none).
fn leading_number(id: &str) -> u64 {
    let digits: String = id.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// One snapshot table entry as qemu 10 writes it: 24 bytes of extra data (64-bit VM state
/// size, virtual disk size, instruction count).
fn encode_entry(l1_offset: u64, l1_size: u32, id: &str, name: &str, disk_size: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut e = Vec::with_capacity(64 + id.len() + name.len());
    e.extend_from_slice(&l1_offset.to_be_bytes());
    e.extend_from_slice(&l1_size.to_be_bytes());
    e.extend_from_slice(&(id.len() as u16).to_be_bytes());
    e.extend_from_slice(&(name.len() as u16).to_be_bytes());
    e.extend_from_slice(&(now.as_secs() as u32).to_be_bytes());
    e.extend_from_slice(&now.subsec_nanos().to_be_bytes());
    e.extend_from_slice(&0u64.to_be_bytes()); // vm_clock_nsec
    e.extend_from_slice(&0u32.to_be_bytes()); // vm_state_size
    e.extend_from_slice(&24u32.to_be_bytes()); // extra data size
    e.extend_from_slice(&0u64.to_be_bytes()); // vm_state_size_large
    e.extend_from_slice(&disk_size.to_be_bytes());
    e.extend_from_slice(&0u64.to_be_bytes()); // icount, as qemu-img records it
    e.extend_from_slice(id.as_bytes());
    e.extend_from_slice(name.as_bytes());
    e.resize(e.len().next_multiple_of(8), 0);
    e
}

/// Writes `l1` into new clusters and returns where.
fn write_l1(ed: &mut Editor, l1: &[u64]) -> Result<u64> {
    let mut bytes = Vec::with_capacity(l1.len() * 8);
    for e in l1 {
        bytes.extend_from_slice(&e.to_be_bytes());
    }
    ed.write_new(&bytes)
}

/// Writes a snapshot table of `entries` elsewhere, switches the header to it, frees the old.
fn switch_table(ed: &mut Editor, entries: &[Vec<u8>], old_bytes: u64) -> Result<()> {
    let bytes: Vec<u8> = entries.concat();
    if bytes.len() as u64 > MAX_TABLE_BYTES {
        return Err(Error::unsupported(format!(
            "the snapshot table would be larger than {} MiB (qemu's limit)",
            MAX_TABLE_BYTES >> 20
        )));
    }
    let at = if entries.is_empty() {
        0
    } else {
        ed.write_new(&bytes)?
    };
    ed.flush()?;
    let mut field = [0u8; 12];
    field[..4].copy_from_slice(&(entries.len() as u32).to_be_bytes());
    field[4..].copy_from_slice(&at.to_be_bytes());
    ed.write(&field, 60)?;
    ed.flush()?;
    let old_at = ed.h.snapshots_offset;
    ed.h.nb_snapshots = entries.len() as u32;
    ed.h.snapshots_offset = at;
    ed.free_bytes(old_at, old_bytes)
}

fn create(ed: &mut Editor, table: Table, name: &str) -> Result<()> {
    if name.len() > usize::from(u16::MAX) {
        return Err(Error::invalid("the snapshot name is too long"));
    }
    if table.list.len() as u32 >= MAX_SNAPSHOTS {
        return Err(Error::unsupported(format!(
            "the image already has {MAX_SNAPSHOTS} snapshots (qemu's limit)"
        )));
    }
    let id = table.next_id();
    // Every cluster of the active state is shared with the snapshot from now on.
    let active = ed.l1().to_vec();
    let flags = ed.adjust_tree(&active, 1)?;
    ed.fix_active_l1_flags(&flags)?;
    let copy: Vec<u64> = active.iter().map(|e| e & !OFLAG_COPIED).collect();
    let l1_at = write_l1(ed, &copy)?;
    let mut entries = table.raw.clone();
    entries.push(encode_entry(l1_at, copy.len() as u32, &id, name, ed.h.size));
    switch_table(ed, &entries, table.bytes)
}

fn apply(ed: &mut Editor, table: &Table, i: usize) -> Result<()> {
    let s = &table.list[i];
    let mut sn_l1 = read_u64_table(ed.storage(), s.l1_table_offset, u64::from(s.l1_size))?;
    sn_l1.resize(s.l1_size as usize, 0);
    let size = s.disk_size.unwrap_or(ed.h.size);
    let needed = ed.h.l1_entries_for(size) as usize;
    // The snapshot's tree is referenced by the active table too from now on.
    let mut new_l1 = ed.adjust_tree(&sn_l1, 1)?;
    if new_l1.len() < needed {
        new_l1.resize(needed, 0);
    }
    let old_l1 = ed.l1().to_vec();
    let old_at = (ed.h.l1_table_offset, u64::from(ed.h.l1_size) * 8);
    let at = write_l1(ed, &new_l1)?;
    ed.flush()?;
    super::resize::switch_size(ed, size, new_l1.len() as u32, at)?;
    ed.l1 = new_l1;
    ed.l2s.clear();
    // The old active state loses its reference.
    ed.adjust_tree(&old_l1, -1)?;
    ed.free_bytes(old_at.0, old_at.1)?;
    let active = ed.l1().to_vec();
    let flags = ed.adjust_tree(&active, 0)?;
    ed.fix_active_l1_flags(&flags)?;
    ed.flush()
}

fn delete(ed: &mut Editor, table: Table, i: usize) -> Result<()> {
    let s = table.list[i].clone();
    let mut sn_l1 = read_u64_table(ed.storage(), s.l1_table_offset, u64::from(s.l1_size))?;
    sn_l1.resize(s.l1_size as usize, 0);
    let mut entries = table.raw.clone();
    entries.remove(i);
    switch_table(ed, &entries, table.bytes)?;
    ed.adjust_tree(&sn_l1, -1)?;
    ed.free_bytes(s.l1_table_offset, u64::from(s.l1_size) * 8)?;
    let active = ed.l1().to_vec();
    let flags = ed.adjust_tree(&active, 0)?;
    ed.fix_active_l1_flags(&flags)?;
    ed.flush()
}
