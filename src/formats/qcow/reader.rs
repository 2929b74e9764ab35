//! The QCOW version 1 reader: L1 and L2 tables (no zero clusters, no snapshots), clusters
//! stored plainly or compressed (raw deflate, qemu's 4 KiB window), a backing file.

use super::header::Header;
use crate::error::{Error, Result};
use crate::format::{Format, OpenContext, Salvage};
use crate::formats::qcow2::compressed;
use crate::formats::qcow2::header::Compression;
use crate::formats::qcow2::table::{L2_CACHE_BYTES, L2Cache, read_u64_table};
use crate::image::{Allocation, BackingLink, Layer, LayerDetails, Mapping};
use crate::storage::Storage;
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bit 63 of an L2 entry: the cluster is compressed.
const OFLAG_COMPRESSED: u64 = 1 << 63;

/// Tells open layers apart in the per-thread cache of the last inflated cluster (from the
/// top of the range, away from QCOW2's ids).
static NEXT_LAYER_ID: AtomicU64 = AtomicU64::new(u64::MAX / 2);

/// What one cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Unallocated,
    Data {
        host: u64,
    },
    Compressed {
        offset: u64,
        size: u64,
    },
    /// Lost past the end of the file, read as zeros when salvaging.
    Missing,
}

/// A QCOW version 1 layer.
pub struct QcowLayer {
    path: PathBuf,
    file: Arc<dyn Storage>,
    header: Header,
    size: u64,
    l1: Vec<u64>,
    cache: L2Cache,
    backing: Option<BackingLink>,
    salvage: bool,
    id: u64,
}

impl QcowLayer {
    /// Opens the image in `file`.
    pub fn open(file: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<QcowLayer> {
        let header = Header::read(file.as_ref())?;
        if header.crypt_method != 0 {
            return Err(Error::unsupported(
                "the image is encrypted (qcow AES), which diskferry does not decrypt (qemu-img convert --object secret,... can)",
            )
            .at_offset(36));
        }
        let l1 = read_u64_table(file.as_ref(), header.l1_table_offset, header.l1_size)?;
        let backing = header.backing_file.as_ref().map(|name| BackingLink {
            stored_name: name.clone(),
            names: vec![name.clone()],
            format: None,
            searched: None,
        });
        Ok(QcowLayer {
            path: file.name().to_path_buf(),
            // qemu counts whole sectors.
            size: header.size / 512 * 512,
            file,
            header,
            l1,
            cache: L2Cache::new(L2_CACHE_BYTES),
            backing,
            salvage: ctx.salvage == Salvage::ReadWhatIsThere,
            id: NEXT_LAYER_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The cluster at guest offset `pos` and where its run ends.
    fn piece_at(&self, pos: u64) -> Result<(Run, u64)> {
        let span = self.header.l2_span();
        let cluster = self.header.cluster_size();
        let l1_index = (pos / span) as usize;
        let l2_offset = self.l1.get(l1_index).copied().unwrap_or(0);
        if l2_offset == 0 {
            let mut next = l1_index + 1;
            while next < self.l1.len() && self.l1[next] == 0 {
                next += 1;
            }
            let end = if next >= self.l1.len() {
                u64::MAX
            } else {
                next as u64 * span
            };
            return Ok((Run::Unallocated, end));
        }
        let entry_at = self.header.l1_table_offset + l1_index as u64 * 8;
        let cluster_end = (pos / cluster + 1) * cluster;
        if l2_offset >= self.file.len() || l2_offset < super::header::HEADER_BYTES {
            if self.salvage {
                return Ok((Run::Missing, (l1_index as u64 + 1) * span));
            }
            return Err(Error::corrupt(format!(
                "L1 entry {l1_index}: L2 table at {l2_offset:#x} lies outside the file's data (the file has {} bytes)",
                self.file.len()
            ))
            .at_offset(entry_at));
        }
        let table = self.cache.get(
            self.file.as_ref(),
            l2_offset,
            self.header.l2_entries() as usize,
        )?;
        let l2_index = (pos / cluster) % self.header.l2_entries();
        let entry = table[l2_index as usize];
        let at = l2_offset + l2_index * 8;
        let within = pos % cluster;
        let run = if entry == 0 {
            Run::Unallocated
        } else if entry & OFLAG_COMPRESSED != 0 {
            let shift = 63 - self.header.cluster_bits;
            Run::Compressed {
                offset: entry & ((1u64 << shift) - 1),
                size: (entry >> shift) & (cluster - 1),
            }
        } else {
            Run::Data {
                host: entry + within,
            }
        };
        let start = match run {
            Run::Data { .. } => entry,
            Run::Compressed { offset, .. } => offset,
            _ => return Ok((run, cluster_end)),
        };
        if start < super::header::HEADER_BYTES || start >= self.file.len() {
            if self.salvage {
                return Ok((Run::Missing, cluster_end));
            }
            return Err(Error::corrupt(format!(
                "L2 entry {l2_index} of L1 entry {l1_index} places {} at {start:#x}, outside the file's data (the file has {} bytes)",
                if matches!(run, Run::Compressed { .. }) {
                    "compressed data"
                } else {
                    "its cluster"
                },
                self.file.len()
            ))
            .at_offset(at));
        }
        Ok((run, cluster_end))
    }
}

fn continues(first: Run, start: u64, next: Run, pos: u64) -> bool {
    match (first, next) {
        (Run::Unallocated, Run::Unallocated)
        | (Run::Missing, Run::Missing)
        | (Run::Compressed { .. }, Run::Compressed { .. }) => true,
        (Run::Data { host: a }, Run::Data { host: b }) => a + (pos - start) == b,
        _ => false,
    }
}

impl Layer for QcowLayer {
    fn format(&self) -> Format {
        super::FORMAT
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let limit = offset.saturating_add(max_len).min(self.size);
        if offset >= limit {
            return Err(Error::invalid(format!(
                "map at {offset} is outside the virtual disk ({} bytes)",
                self.size
            )));
        }
        let (first, mut end) = self.piece_at(offset)?;
        while end < limit {
            let (next, next_end) = self.piece_at(end)?;
            if !continues(first, offset, next, end) {
                break;
            }
            end = next_end;
        }
        let len = end.min(limit) - offset;
        Ok(match first {
            Run::Unallocated => Mapping::new(offset, len, Allocation::Unallocated),
            Run::Missing => Mapping::new(offset, len, Allocation::Zero),
            Run::Data { host } => Mapping::new(offset, len, Allocation::Data).at_host(0, host),
            Run::Compressed { .. } => {
                let mut m = Mapping::new(offset, len, Allocation::Data);
                m.compressed = true;
                m
            }
        })
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let cluster = self.header.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let want_end = pos + (buf.len() - done) as u64;
            let (run, mut end) = self.piece_at(pos)?;
            if let Run::Data { .. } = run {
                while end < want_end {
                    let (next, next_end) = self.piece_at(end)?;
                    if !continues(run, pos, next, end) {
                        break;
                    }
                    end = next_end;
                }
            }
            let n = (end.min(want_end) - pos) as usize;
            let dest = &mut buf[done..done + n];
            match run {
                Run::Data { host } => {
                    let available = self.file.len().saturating_sub(host).min(n as u64) as usize;
                    self.file.read_exact_at(&mut dest[..available], host)?;
                    dest[available..].fill(0);
                }
                Run::Compressed { offset: at, size } => {
                    compressed::copy_from_cluster(
                        self.id,
                        self.file.as_ref(),
                        at,
                        size,
                        Compression::Deflate,
                        cluster as usize,
                        (pos % cluster) as usize,
                        dest,
                    )?;
                }
                Run::Unallocated | Run::Missing => dest.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn backing(&self) -> Option<&BackingLink> {
        self.backing.as_ref()
    }

    fn details(&self) -> LayerDetails {
        LayerDetails {
            cluster_size: Some(self.header.cluster_size()),
            ..LayerDetails::default()
        }
    }

    fn storage(&self, index: usize) -> Option<&dyn Storage> {
        (index == 0).then_some(self.file.as_ref())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
