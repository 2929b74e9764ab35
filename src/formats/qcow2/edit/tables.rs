//! L1 and L2 tables of an image being changed: entries read and written one at a time, L2
//! tables allocated or copied on demand, and the references of a whole L1 tree counted.

use super::{CACHE_TABLES, Editor};
use crate::error::{Error, Result};
use crate::formats::qcow2::table::{
    ClusterState, Decoder, L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED,
    OFLAG_ZERO, Run,
};

/// The host bytes an L2 entry holds a reference to: a cluster, or a compressed run.
pub(super) fn host_bytes(decoder: &Decoder, entry: u64) -> Option<(u64, u64)> {
    let cs = 1u64 << decoder.cluster_bits;
    if entry & OFLAG_COMPRESSED != 0 {
        return match decoder.decode(entry, 0, 0, 0) {
            Ok(ClusterState::Whole(Run::Compressed { offset, size })) => Some((offset, size)),
            _ => None,
        };
    }
    let host = entry & L2E_OFFSET_MASK;
    (host != 0).then_some((host, cs))
}

impl Editor {
    /// The decoder of this image's L2 entries.
    pub(super) fn decoder(&self) -> Decoder {
        Decoder {
            cluster_bits: self.h.cluster_bits,
            extended: self.h.extended_l2(),
            data_file: false,
        }
    }

    /// Guest bytes one L1 entry covers.
    pub(super) fn l1_span(&self) -> u64 {
        self.h.l1_span()
    }

    /// The active L1 table.
    pub(super) fn l1(&self) -> &[u64] {
        &self.l1
    }

    /// Writes L1 entry `index` of the active table.
    pub(super) fn set_l1(&mut self, index: usize, value: u64) -> Result<()> {
        let at = self.h.l1_table_offset + index as u64 * 8;
        self.write(&value.to_be_bytes(), at)?;
        self.l1[index] = value;
        Ok(())
    }

    /// The L2 table at `at`, read (and checked to lie in the file) or cached.
    pub(super) fn l2(&mut self, at: u64) -> Result<&[u8]> {
        if !self.l2s.contains_key(&at) {
            if !at.is_multiple_of(self.cs) || at + self.cs > self.file_len() {
                return Err(Error::corrupt(format!(
                    "L2 table at {at:#x} is off a cluster boundary or past the end of the file"
                )));
            }
            if self.l2s.len() >= CACHE_TABLES {
                self.l2s.clear();
            }
            let mut t = vec![0u8; self.cs as usize];
            self.read(&mut t, at)?;
            self.l2s.insert(at, t);
        }
        Ok(&self.l2s[&at])
    }

    fn file_len(&self) -> u64 {
        crate::storage::Storage::len(&self.file)
    }

    /// Entry `index` of the L2 table at `at`: the entry and, for extended L2, its bitmap.
    pub(super) fn l2_entry(&mut self, at: u64, index: u64) -> Result<(u64, u64)> {
        let width = self.h.l2_entry_bytes() as usize;
        let t = self.l2(at)?;
        let o = index as usize * width;
        let entry = u64::from_be_bytes(t[o..o + 8].try_into().expect("8 bytes"));
        let bitmap = if width == 16 {
            u64::from_be_bytes(t[o + 8..o + 16].try_into().expect("8 bytes"))
        } else {
            0
        };
        Ok((entry, bitmap))
    }

    /// Writes entry `index` of the L2 table at `at` (one write of the entry and its bitmap).
    pub(super) fn set_l2_entry(
        &mut self,
        at: u64,
        index: u64,
        entry: u64,
        bitmap: u64,
    ) -> Result<()> {
        let width = self.h.l2_entry_bytes() as usize;
        let mut bytes = entry.to_be_bytes().to_vec();
        if width == 16 {
            bytes.extend_from_slice(&bitmap.to_be_bytes());
        }
        self.l2(at)?;
        let o = index as usize * width;
        self.l2s.get_mut(&at).expect("loaded")[o..o + width].copy_from_slice(&bytes);
        self.write(&bytes, at + o as u64)
    }

    /// The L2 table of L1 entry `index`, if it has one.
    pub(super) fn l2_of(&self, index: usize) -> Option<u64> {
        let at = self.l1.get(index).copied().unwrap_or(0) & L1E_OFFSET_MASK;
        (at != 0).then_some(at)
    }

    /// An L2 table for L1 entry `index` that this image alone references (so its entries may
    /// be changed in place): allocated zeroed, or copied from a table shared with a snapshot.
    pub(super) fn l2_for_write(&mut self, index: usize) -> Result<u64> {
        let entry = self.l1[index];
        let old = entry & L1E_OFFSET_MASK;
        if old != 0 && entry & OFLAG_COPIED != 0 {
            return Ok(old);
        }
        let content = if old == 0 {
            vec![0u8; self.cs as usize]
        } else {
            self.l2(old)?.to_vec()
        };
        let new = self.write_new(&content)?;
        self.l2s.insert(new, content);
        // The table is durable before the L1 entry points at it.
        self.flush()?;
        self.set_l1(index, new | OFLAG_COPIED)?;
        if old != 0 {
            // The copy's references are the old table's: the data clusters keep their counts
            // (each is now referenced from two tables instead of one table twice).
            self.flush()?;
            self.add_ref(old / self.cs, -1)?;
        }
        Ok(new)
    }

    /// Adds `delta` to the refcount of every L2 table of `l1` and of every cluster they
    /// reference (what a snapshot's L1 table holds); with `delta` 0, only fixes the flags.
    /// Afterwards each touched table's entries have their COPIED flags as the counts say.
    /// Returns `l1` with its COPIED flags as the counts say.
    pub(super) fn adjust_tree(&mut self, l1: &[u64], delta: i64) -> Result<Vec<u64>> {
        let decoder = self.decoder();
        let per = self.h.l2_entries();
        let mut out = l1.to_vec();
        for (i, &e) in l1.iter().enumerate() {
            let at = e & L1E_OFFSET_MASK;
            if at == 0 {
                continue;
            }
            for k in 0..per {
                let (entry, bitmap) = self.l2_entry(at, k)?;
                let Some((host, len)) = host_bytes(&decoder, entry) else {
                    continue;
                };
                if delta != 0 {
                    self.add_ref_bytes(host, len, delta)?;
                }
                if entry & OFLAG_COMPRESSED == 0 {
                    let copied = self.refcount(host / self.cs)? == 1;
                    let want = if copied {
                        entry | OFLAG_COPIED
                    } else {
                        entry & !OFLAG_COPIED
                    };
                    if want != entry {
                        self.set_l2_entry(at, k, want, bitmap)?;
                    }
                }
            }
            if delta != 0 {
                self.add_ref(at / self.cs, delta)?;
            }
            let copied = self.refcount(at / self.cs)? == 1;
            out[i] = if copied {
                e | OFLAG_COPIED
            } else {
                e & !OFLAG_COPIED
            };
        }
        Ok(out)
    }

    /// Sets the COPIED flags of the active L1 table's entries as the counts say.
    pub(super) fn fix_active_l1_flags(&mut self, flags: &[u64]) -> Result<()> {
        for (i, &want) in flags.iter().enumerate() {
            if i < self.l1.len() && self.l1[i] != want {
                self.set_l1(i, want)?;
            }
        }
        Ok(())
    }

    /// Reads the guest cluster `index` of the image into `buf` (one cluster), as the image
    /// alone stores it; `backing` fills what the image does not hold.
    pub(super) fn read_cluster(
        &mut self,
        index: u64,
        buf: &mut [u8],
        backing: Option<&super::Backing>,
    ) -> Result<()> {
        let cs = self.cs;
        let guest = index * cs;
        let l1i = (guest / self.l1_span()) as usize;
        let Some(at) = self.l2_of(l1i) else {
            return fill_from(backing, guest, buf);
        };
        let (entry, bitmap) = self.l2_entry(at, index % self.h.l2_entries())?;
        let state = self.decoder().decode(entry, bitmap, guest, at)?;
        let mut within = 0u64;
        while within < cs {
            let (run, end) = state.piece(within, cs);
            let dest = &mut buf[within as usize..end as usize];
            match run {
                Run::Data { host } => self.read(dest, host)?,
                Run::Compressed { offset, size } => {
                    let mut full = vec![0u8; cs as usize];
                    crate::formats::qcow2::compressed::read_cluster(
                        &self.file,
                        offset,
                        size,
                        self.h.compression,
                        &mut full,
                    )?;
                    dest.copy_from_slice(&full[within as usize..end as usize]);
                }
                Run::Zero { .. } => dest.fill(0),
                Run::Unallocated { .. } => fill_from(backing, guest + within, dest)?,
            }
            within = end;
        }
        Ok(())
    }
}

/// Fills `buf` with what the backing chain holds at `offset` (zeros without one).
fn fill_from(backing: Option<&super::Backing>, offset: u64, buf: &mut [u8]) -> Result<()> {
    match backing {
        Some(b) => b.read(offset, buf),
        None => {
            buf.fill(0);
            Ok(())
        }
    }
}

/// The L2 entry (and bitmap) of a cluster that reads as zeros without data.
pub(super) fn zero_entry(extended: bool) -> (u64, u64) {
    if extended {
        (0, 0xffff_ffffu64 << 32)
    } else {
        (OFLAG_ZERO, 0)
    }
}
