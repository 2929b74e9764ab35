//! Writing into an existing image (`open_mut`): the [`ImageMut`] that `commit` and the safe
//! `rebase` copy data through.
//!
//! Each call allocates what it needs, writes new data where nothing points yet, flushes, then
//! points the L2 entries at it, and frees what they pointed at before only after another
//! flush. A cluster shared with a snapshot (no COPIED flag), compressed, or zero is never
//! written in place: its new content goes to a new cluster, a partial write copying the rest
//! from the image or its backing chain first.
//!
//! A compressed write (`rebase -c`) stores one whole guest cluster deflated (or zstd) as the
//! header's compression type says, packed byte after byte into a host cluster this session
//! allocated for compressed data (a new one when the next does not fit: compressed data never
//! crosses a host cluster here), in the same order: the bytes where nothing points, the host
//! cluster's refcount up by one, flush, then the L2 entry with the compressed descriptor.

use super::tables::{host_bytes, zero_entry};
use super::{Backing, Editor};
use crate::edit::{Clear, EditContext, ImageMut, Stored};
use crate::error::{Error, Result};
use crate::formats::qcow2::table::{L2E_OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO};
use std::path::Path;

/// An image open for writing in place.
pub(crate) struct Qcow2Mut {
    ed: Editor,
    backing: Option<Backing>,
    size: u64,
    /// The host cluster compressed clusters are packed into, while it has room.
    pack: Option<Pack>,
}

/// The free tail of a host cluster allocated for compressed data: `[next, end)`.
#[derive(Debug, Clone, Copy)]
struct Pack {
    next: u64,
    end: u64,
}

/// Opens the image at `path` for writes, its backing chain for partial clusters.
pub(crate) fn open_mut(path: &Path, ctx: &EditContext<'_>) -> Result<Box<dyn ImageMut>> {
    let ed = Editor::open(path, "write into the image")?;
    let backing = ed.open_backing(ctx).map_err(|e| e.with_path(path))?;
    let size = ed.header().size;
    Ok(Box::new(Qcow2Mut {
        ed,
        backing,
        size,
        pack: None,
    }))
}

/// A change to one L2 entry, made once the data it points at is durable.
struct Pending {
    l2: u64,
    index: u64,
    entry: u64,
    bitmap: u64,
    /// What the entry referenced before, freed after the change.
    old: Option<(u64, u64)>,
}

impl Qcow2Mut {
    fn path(&self) -> &Path {
        self.ed.path()
    }

    /// The dirty bit, set before the first change when lazy refcounts are on (as qemu does).
    fn begin(&mut self) -> Result<()> {
        if self.ed.header().lazy_refcounts() {
            self.ed.set_dirty(true)?;
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|e| e > self.size) {
            return Err(Error::invalid(format!(
                "write of {len} bytes at {offset} runs past the end of the virtual disk ({} bytes)",
                self.size
            ))
            .with_path(self.path()));
        }
        Ok(())
    }

    /// Host bytes for `len` bytes of compressed data (less than a cluster), counted: the tail
    /// of the pack cluster when it fits, the data written there first and its count raised
    /// after (so a crash between leaves a leak, not a reference to nothing), else a new
    /// cluster. Returns where `data` now lies.
    fn place_compressed(&mut self, data: &[u8]) -> Result<u64> {
        let len = data.len() as u64;
        if let Some(p) = self.pack
            && p.next + len <= p.end
        {
            self.ed.write(data, p.next)?;
            self.ed.add_ref(p.next / self.ed.cs, 1)?;
            self.pack = Some(Pack {
                next: p.next + len,
                end: p.end,
            });
            return Ok(p.next);
        }
        let at = self.ed.alloc(1)?;
        self.ed.write(data, at)?;
        self.pack = Some(Pack {
            next: at + len,
            end: at + self.ed.cs,
        });
        Ok(at)
    }

    fn write_compressed_inner(&mut self, offset: u64, data: &[u8]) -> Result<Stored> {
        use crate::formats::qcow2::header::Compression as Stream;
        use crate::formats::qcow2::writer::compress::compress_whole_cluster;
        use crate::formats::qcow2::writer::options::Compression as Method;
        let method = match self.ed.header().compression {
            Stream::Deflate => Method::Zlib,
            Stream::Zstd => Method::Zstd,
        };
        let cs = self.ed.cs;
        let Some(packed) = compress_whole_cluster(method, data, cs, offset, self.size)? else {
            self.pack = None;
            self.writer().write_inner(offset, data)?;
            return Ok(Stored::Plain);
        };
        let bits = self.ed.header().cluster_bits;
        let shift = 62 - (bits - 8);
        let per = self.ed.header().l2_entries();
        let l2 = self
            .ed
            .l2_for_write((offset / self.ed.l1_span()) as usize)?;
        let k = (offset / cs) % per;
        let (entry, _) = self.ed.l2_entry(l2, k)?;
        let at = self.place_compressed(&packed)?;
        if at >= 1 << shift {
            return Err(Error::unsupported(format!(
                "compressed data at host offset {at} lies past what a compressed cluster's descriptor can address with {cs}-byte clusters"
            )));
        }
        let sectors = ((at + packed.len() as u64 - 1) >> 9) - (at >> 9);
        let old = host_bytes(&self.ed.decoder(), entry);
        if old.is_some() {
            // What the entry held is freed after the switch, and may be the pack cluster.
            self.pack = None;
        }
        self.writer().commit(vec![Pending {
            l2,
            index: k,
            entry: OFLAG_COMPRESSED | (sectors << shift) | at,
            bitmap: 0,
            old,
        }])?;
        Ok(Stored::Compressed)
    }

    fn writer(&mut self) -> Writer<'_> {
        Writer {
            ed: &mut self.ed,
            backing: self.backing.as_ref(),
            size: self.size,
        }
    }
}

/// The writes and clears of one image, over an [`Editor`] (resize zeroes through it too).
pub(super) struct Writer<'a> {
    /// The image.
    pub ed: &'a mut Editor,
    /// Its backing chain, for partial clusters.
    pub backing: Option<&'a Backing>,
    /// The virtual size writes are bounded by.
    pub size: u64,
}

impl Writer<'_> {
    /// Makes the pending entries point at their new data, then frees what they replaced.
    fn commit(&mut self, pending: Vec<Pending>) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        self.ed.flush()?;
        let mut freed = Vec::new();
        for p in pending {
            self.ed.set_l2_entry(p.l2, p.index, p.entry, p.bitmap)?;
            freed.extend(p.old);
        }
        if !freed.is_empty() {
            self.ed.flush()?;
            for (host, len) in freed {
                self.ed.add_ref_bytes(host, len, -1)?;
            }
        }
        Ok(())
    }

    fn write_inner(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let cs = self.ed.cs;
        let extended = self.ed.header().extended_l2();
        let per = self.ed.header().l2_entries();
        let span = self.ed.l1_span();
        let decoder = self.ed.decoder();
        let mut pending = Vec::new();
        let mut done = 0usize;
        let mut buf = vec![0u8; cs as usize];
        while done < data.len() {
            let pos = offset + done as u64;
            let index = pos / cs;
            let within = (pos % cs) as usize;
            let n = (cs as usize - within).min(data.len() - done);
            let piece = &data[done..done + n];
            let l2 = self.ed.l2_for_write((pos / span) as usize)?;
            let k = index % per;
            let (entry, bitmap) = self.ed.l2_entry(l2, k)?;
            let host = entry & L2E_OFFSET_MASK;
            let compressed = entry & OFLAG_COMPRESSED != 0;
            let all_data = if extended {
                bitmap & 0xffff_ffff == 0xffff_ffff
            } else {
                entry & OFLAG_ZERO == 0
            };
            let own = !compressed && host != 0 && entry & OFLAG_COPIED != 0;
            if own && all_data {
                self.ed.write(piece, host + within as u64)?;
            } else {
                // The whole new cluster: what it reads as now, with the write over it.
                if n < cs as usize {
                    self.ed.read_cluster(index, &mut buf, self.backing)?;
                }
                buf[within..within + n].copy_from_slice(piece);
                let (target, old) = if own {
                    (host, None)
                } else {
                    let at = self.ed.alloc(1)?;
                    (at, host_bytes(&decoder, entry))
                };
                self.ed.write(&buf, target)?;
                pending.push(Pending {
                    l2,
                    index: k,
                    entry: target | OFLAG_COPIED,
                    bitmap: if extended { 0xffff_ffff } else { 0 },
                    old,
                });
            }
            done += n;
        }
        self.commit(pending)
    }

    pub(super) fn clear_inner(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        let cs = self.ed.cs;
        let end = offset + len;
        let mut pos = offset;
        let mut pending = Vec::new();
        let v2 = self.ed.header().version < 3;
        let extended = self.ed.header().extended_l2();
        let per = self.ed.header().l2_entries();
        let span = self.ed.l1_span();
        let decoder = self.ed.decoder();
        while pos < end {
            let cluster_end = (pos / cs + 1) * cs;
            let piece_end = cluster_end.min(end);
            // A cluster is cleared whole when the range covers it up to the disk's end.
            let whole =
                pos.is_multiple_of(cs) && (piece_end == cluster_end || piece_end == self.size);
            let zeros_without_flag = how == Clear::Zero && v2 && self.backing.is_some();
            if !whole || zeros_without_flag {
                let n = (piece_end - pos) as usize;
                let mut bytes = vec![0u8; n];
                if how == Clear::Deallocate
                    && let Some(b) = self.backing
                {
                    b.read(pos, &mut bytes)?;
                }
                self.commit(std::mem::take(&mut pending))?;
                self.write_inner(pos, &bytes)?;
                pos = piece_end;
                continue;
            }
            let l1i = (pos / span) as usize;
            let k = (pos / cs) % per;
            let (want, want_bitmap) = if how == Clear::Zero && !v2 {
                zero_entry(extended)
            } else {
                (0, 0)
            };
            let current = match self.ed.l2_of(l1i) {
                Some(at) => self.ed.l2_entry(at, k)?,
                None => (0, 0),
            };
            if current != (want, want_bitmap) {
                let l2 = self.ed.l2_for_write(l1i)?;
                let (entry, _) = self.ed.l2_entry(l2, k)?;
                pending.push(Pending {
                    l2,
                    index: k,
                    entry: want,
                    bitmap: want_bitmap,
                    old: host_bytes(&decoder, entry),
                });
            }
            pos = piece_end;
        }
        self.commit(pending)
    }
}

impl ImageMut for Qcow2Mut {
    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn allocation_unit(&self) -> u64 {
        self.ed.cs
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        self.begin()?;
        // A plain write may free what the pack cluster holds; new compressed data goes to a
        // new cluster after it.
        self.pack = None;
        let path = self.path().to_path_buf();
        self.writer()
            .write_inner(offset, data)
            .map_err(|e| e.with_path(path))
    }

    fn clear(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        self.check_range(offset, len)?;
        self.begin()?;
        self.pack = None;
        let path = self.path().to_path_buf();
        self.writer()
            .clear_inner(offset, len, how)
            .map_err(|e| e.with_path(path))
    }

    fn flush(&mut self) -> Result<()> {
        self.ed.flush()?;
        self.ed.set_dirty(false)
    }

    fn can_write_compressed(&self) -> Result<()> {
        // The editor refuses external data files (which cannot hold compressed clusters) and
        // encryption at open; every other qcow2 image can.
        Ok(())
    }

    fn write_compressed(&mut self, offset: u64, data: &[u8]) -> Result<Stored> {
        self.check_range(offset, data.len() as u64)?;
        self.begin()?;
        let path = self.path().to_path_buf();
        self.write_compressed_inner(offset, data)
            .map_err(|e| e.with_path(path))
    }
}

impl Drop for Qcow2Mut {
    fn drop(&mut self) {
        // Best effort: an image left dirty is still sound (qemu repairs its refcounts).
        let _ = ImageMut::flush(self);
    }
}
