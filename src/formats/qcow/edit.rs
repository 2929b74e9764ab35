//! Changing a QCOW (version 1) image in place: writes ([`open_mut`], for commit targets and
//! the top of a safe rebase) and the backing file name ([`set_backing`], rebase -u). qemu-img 10
//! can do neither for qcow ("Operation not supported"), nor resize it, so resize is not offered.
//!
//! Crash order, as the rule of [`crate::edit`] asks: a new cluster, or a new L2 table (zeroed),
//! is written at the end of the file, where nothing points, and flushed; then the one entry
//! that makes it visible (the L2 entry, the L1 entry) is written. A cluster that is stored
//! plainly is overwritten where it is; a compressed one is never rewritten: its content is
//! inflated, changed, and written as a new plain cluster. A crash leaves at most unreferenced
//! clusters at the end (QCOW has no refcounts, so nothing else counts them).
//!
//! A compressed write (`rebase -c`) deflates one whole cluster as the writer does (raw
//! deflate, 4 KiB window) and appends it byte after byte at the end of the file, as qemu packs
//! them; plain clusters and L2 tables that follow start at the next cluster boundary. The
//! same order holds: the bytes, flush, then the L2 entry.
//!
//! A new backing name is written past the end of the file, flushed, and then the header's
//! name offset and length (12 bytes of one sector) point to it: the old name or the new one.

use super::header::{HEADER_BYTES, Header, MAX_BACKING_NAME};
use crate::edit::{Clear, EditContext, Force, ImageMut, NewBacking, Stored, read_below_top};
use crate::error::{Error, Result};
use crate::gate::Lookup;
use crate::host_file::HostFile;
use crate::image::{BackingPolicy, Image, OpenOptions};
use crate::storage::{Storage, StorageExt};
use std::path::{Path, PathBuf};

const OFLAG_COMPRESSED: u64 = 1 << 63;

/// A QCOW image opened for writing in place.
pub struct QcowMut {
    file: HostFile,
    header: Header,
    l1: Vec<u64>,
    /// The last L2 table read: (L1 index, entries).
    l2: Option<(u64, Vec<u64>)>,
    /// The end of what the file holds or was given out (cluster-aligned except after
    /// compressed data): plain clusters go at the next cluster boundary.
    end: u64,
    /// The image with its chain: the top reads compressed clusters, the rest fills partial
    /// clusters.
    image: Image,
    has_backing: bool,
}

fn be64s(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// Opens the QCOW image at `path` for writing in place; its backing chain through `ctx.gate`.
pub fn open_mut(path: &Path, ctx: &EditContext<'_>) -> Result<QcowMut> {
    let file = HostFile::open_rw(path)?;
    let header = Header::read(&file).map_err(|e| e.with_path(path))?;
    if header.crypt_method != 0 {
        return Err(
            Error::unsupported("encrypted qcow images cannot be written by diskferry")
                .with_path(path),
        );
    }
    let l1 = be64s(
        &file
            .read_vec(header.l1_table_offset, header.l1_size * 8, "L1 table")
            .map_err(|e| e.with_path(path))?,
    );
    let options = OpenOptions {
        format: Some(super::FORMAT),
        backing: BackingPolicy::Follow,
        gate: *ctx.gate,
        ..OpenOptions::default()
    };
    let image = Image::open(path, &options)?;
    let end = file.len().next_multiple_of(header.cluster_size());
    Ok(QcowMut {
        has_backing: header.backing_file.is_some(),
        file,
        header,
        l1,
        l2: None,
        end,
        image,
    })
}

/// What an L2 entry says about a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cluster {
    Unallocated,
    Compressed { offset: u64, size: u64 },
    At(u64),
}

impl QcowMut {
    fn path(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }

    fn cs(&self) -> u64 {
        self.header.cluster_size()
    }

    fn l2_table(&mut self, index: u64) -> Result<&mut Vec<u64>> {
        if self.l2.as_ref().is_none_or(|(i, _)| *i != index) {
            let at = self.l1[index as usize];
            let entries = if at == 0 {
                vec![0u64; self.header.l2_entries() as usize]
            } else {
                be64s(
                    &self
                        .file
                        .read_vec(at, self.header.l2_entries() * 8, "L2 table")
                        .map_err(|e| e.with_path(self.path()))?,
                )
            };
            self.l2 = Some((index, entries));
        }
        Ok(&mut self.l2.as_mut().expect("just loaded").1)
    }

    fn cluster(&mut self, c: u64) -> Result<Cluster> {
        let per = self.header.l2_entries();
        let len = self.file.len();
        let cs = self.cs();
        let e = self.l2_table(c / per)?[(c % per) as usize];
        Ok(match e {
            0 => Cluster::Unallocated,
            e if e & OFLAG_COMPRESSED != 0 => {
                let shift = 63 - self.header.cluster_bits;
                Cluster::Compressed {
                    offset: e & ((1u64 << shift) - 1),
                    size: (e >> shift) & (cs - 1),
                }
            }
            at => {
                if at
                    .checked_add(cs)
                    .is_none_or(|end| end > len.next_multiple_of(cs))
                {
                    return Err(Error::corrupt(format!(
                        "cluster {c} is stored at byte {at}, past the end of the file ({len} bytes)"
                    ))
                    .with_path(self.path()));
                }
                Cluster::At(at)
            }
        })
    }

    fn allocate(&mut self) -> u64 {
        let at = self.end.next_multiple_of(self.cs());
        self.end = at + self.cs();
        at
    }

    /// Points cluster `c` at `value` (0: unallocated), making its L2 table first if needed.
    fn set_entry(&mut self, c: u64, value: u64) -> Result<()> {
        let per = self.header.l2_entries();
        let index = c / per;
        if self.l1[index as usize] == 0 {
            if value == 0 {
                return Ok(());
            }
            // An L2 table is 2^l2_bits entries of 8 bytes: qemu's own images have 512-byte
            // clusters and 32 KiB tables.
            let bytes = (per * 8).next_multiple_of(self.cs());
            let at = self.end.next_multiple_of(self.cs());
            self.end = at + bytes;
            self.file.write_all_at(&vec![0u8; bytes as usize], at)?;
            self.file.sync()?;
            self.file
                .write_all_at(&at.to_be_bytes(), self.header.l1_table_offset + index * 8)?;
            self.l1[index as usize] = at;
            self.l2 = None;
        }
        let table_at = self.l1[index as usize];
        self.file
            .write_all_at(&value.to_be_bytes(), table_at + (c % per) * 8)?;
        self.l2_table(index)?[(c % per) as usize] = value;
        Ok(())
    }

    /// The content of cluster `c` as the image reads it now (for a partial write).
    fn current(&mut self, c: u64, state: Cluster, buf: &mut [u8]) -> Result<()> {
        let at = c * self.cs();
        match state {
            Cluster::Unallocated => read_below_top(&self.image, at, buf),
            // Inflated from where the entry says (it may have been written since the reader
            // opened the image).
            Cluster::Compressed { offset, size } => {
                let mut full = vec![0u8; self.cs() as usize];
                crate::formats::qcow2::compressed::read_cluster(
                    &self.file,
                    offset,
                    size,
                    crate::formats::qcow2::header::Compression::Deflate,
                    &mut full,
                )
                .map_err(|e| e.with_path(self.path()))?;
                buf.copy_from_slice(&full[..buf.len()]);
                Ok(())
            }
            Cluster::At(host) => self.file.read_exact_at(buf, host),
        }
    }

    fn write_cluster_part(&mut self, c: u64, within: u64, src: &[u8]) -> Result<()> {
        let cs = self.cs();
        let state = self.cluster(c)?;
        if let Cluster::At(host) = state {
            return self.file.write_all_at(src, host + within);
        }
        let mut buf = vec![0u8; cs as usize];
        let valid = cs.min(self.header.size - c * cs) as usize;
        if (src.len() as u64) < cs {
            self.current(c, state, &mut buf[..valid])?;
        }
        buf[within as usize..within as usize + src.len()].copy_from_slice(src);
        let at = self.allocate();
        self.file.write_all_at(&buf, at)?;
        self.file.sync()?;
        self.set_entry(c, at)
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.header.size)
        {
            return Err(Error::invalid(format!(
                "write of {len} bytes at {offset} runs past the end of the disk ({} bytes)",
                self.header.size
            ))
            .with_path(self.path()));
        }
        Ok(())
    }
}

impl ImageMut for QcowMut {
    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn allocation_unit(&self) -> u64 {
        self.cs()
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        let cs = self.cs();
        let mut pos = offset;
        let end = offset + data.len() as u64;
        while pos < end {
            let c = pos / cs;
            let within = pos - c * cs;
            let n = (cs - within).min(end - pos);
            let from = (pos - offset) as usize;
            self.write_cluster_part(c, within, &data[from..from + n as usize])?;
            pos += n;
        }
        Ok(())
    }

    fn clear(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        self.check_range(offset, len)?;
        let cs = self.cs();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let c = pos / cs;
            let within = pos - c * cs;
            let n = (cs - within).min(end - pos);
            let whole = within == 0 && (n == cs || pos + n == self.header.size);
            let state = self.cluster(c)?;
            // QCOW has no zero flag: without a backing file an unallocated cluster is zeros;
            // with one, zeros must be stored.
            let deallocate = whole
                && state != Cluster::Unallocated
                && (how == Clear::Deallocate || !self.has_backing);
            if deallocate {
                self.set_entry(c, 0)?;
            } else if state != Cluster::Unallocated || (how == Clear::Zero && self.has_backing) {
                let mut bytes = vec![0u8; n as usize];
                if how == Clear::Deallocate {
                    read_below_top(&self.image, pos, &mut bytes)?;
                }
                self.write_cluster_part(c, within, &bytes)?;
            }
            pos += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file.sync()
    }

    fn can_write_compressed(&self) -> Result<()> {
        Ok(())
    }

    fn write_compressed(&mut self, offset: u64, data: &[u8]) -> Result<Stored> {
        use crate::formats::qcow2::writer::compress::compress_whole_cluster;
        use crate::formats::qcow2::writer::options::Compression;
        self.check_range(offset, data.len() as u64)?;
        let packed =
            compress_whole_cluster(Compression::Zlib, data, self.cs(), offset, self.header.size)
                .map_err(|e| e.with_path(self.path()))?;
        let Some(packed) = packed else {
            self.write_at(offset, data)?;
            return Ok(Stored::Plain);
        };
        let cs = self.cs();
        let shift = 63 - self.header.cluster_bits;
        let at = self.end;
        if at >= 1 << shift {
            return Err(Error::unsupported(format!(
                "compressed data at byte {at} lies past what a compressed cluster's entry can address"
            ))
            .with_path(self.path()));
        }
        self.file.write_all_at(&packed, at)?;
        self.end = at + packed.len() as u64;
        self.file.sync()?;
        self.set_entry(
            offset / cs,
            OFLAG_COMPRESSED | ((packed.len() as u64) << shift) | at,
        )?;
        Ok(Stored::Compressed)
    }
}

/// Records `backing` (or none) as the backing file of the QCOW image at `path`.
pub fn set_backing(path: &Path, backing: Option<&NewBacking>, ctx: &EditContext<'_>) -> Result<()> {
    let mut file = HostFile::open_rw(path)?;
    Header::read(&file).map_err(|e| e.with_path(path))?;
    let mut fields = [0u8; 12];
    if let Some(b) = backing {
        if b.name.is_empty() || b.name.len() > MAX_BACKING_NAME as usize {
            return Err(Error::invalid(format!(
                "a qcow backing file name must be 1 to {MAX_BACKING_NAME} bytes, not {}",
                b.name.len()
            ))
            .with_path(path));
        }
        // The image records no backing format: -F only has to name one the file can be read as.
        match ctx.gate.open(path, &b.name, crate::gate::Role::Backing) {
            Ok(Lookup::Opened(_)) => {}
            Ok(Lookup::Missing(p)) if ctx.force == Force::No => {
                return Err(Error::invalid(format!(
                    "new backing file '{}' not found (looked for {}); --force records it anyway",
                    b.name,
                    p.display()
                ))
                .with_path(path));
            }
            Ok(Lookup::Missing(_)) => {}
            Err(e) => return Err(e),
        }
        let at = file.len().next_multiple_of(8).max(HEADER_BYTES);
        file.write_all_at(b.name.as_bytes(), at)?;
        file.sync()?;
        fields[..8].copy_from_slice(&at.to_be_bytes());
        fields[8..].copy_from_slice(&(b.name.len() as u32).to_be_bytes());
    }
    file.write_all_at(&fields, 8)?;
    file.sync()
}
