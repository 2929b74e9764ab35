//! Writing QCOW version 1 images (the format of QEMU before 0.10), as qemu's block/qcow.c
//! reads them, with `-c` and backing files.
//!
//! ```text
//! 0        header (48 bytes, big-endian), the backing file name right after it
//!          the L1 table (8-byte aligned): one entry per 2 MiB of the disk
//! then, in guest order, for each 2 MiB range (an L2 table's 512 clusters of 4 KiB):
//!          its data clusters (cluster-aligned), or compressed clusters packed byte after byte
//!          its L2 table (512 entries, one cluster)
//! ```
//!
//! The data and the L2 tables go front to back; the L1 table and the header are written last,
//! so the output must be a file or a device, not a stream. There are no refcounts, no zero
//! flag: zeros over a backing file are stored as data (compressed with `-c`).
//!
//! An L2 entry is the host offset of the cluster, or, with bit 63 set, of compressed data
//! whose byte length sits in the bits just below bit 63 (`63 - cluster_bits` and up): raw
//! deflate with a 4 KiB window, as QCOW2's (the same encoder, run on the engine's workers).

use crate::error::{Error, Result};
use crate::formats::qcow2::writer::ClusterEncoder;
use crate::formats::qcow2::writer::options::Compression;
use crate::sink::{Access, Output, Sink};
use crate::writer::{ChunkEncoder, CreateSpec, ImageWriter, Piece};
use std::sync::Arc;

/// The cluster size qemu gives QCOW images: 4 KiB.
pub const CLUSTER_BITS: u32 = 12;
/// Entries per L2 table (one cluster of 8-byte entries).
pub const L2_BITS: u32 = 9;
const HEADER_LEN: u64 = 48;
const COMPRESSED: u64 = 1 << 63;
/// The longest backing file name qemu reads.
const MAX_BACKING_NAME: usize = 1023;

/// Makes a QCOW writer for `spec` into `output`.
pub fn create_writer<'a>(
    mut output: Output<'a>,
    spec: &CreateSpec,
) -> Result<Box<dyn ImageWriter + 'a>> {
    if output.access() == Access::Sequential {
        return Err(Error::unsupported(
            "qcow images cannot be written to a stream: their L1 table, at the front, is known only at the end; write to a file",
        ));
    }
    let size = spec.size.next_multiple_of(512);
    let cs = 1u64 << CLUSTER_BITS;
    let per_l2 = 1u64 << L2_BITS;
    let l1_size = size.div_ceil(cs << L2_BITS);
    let name = spec
        .backing
        .as_ref()
        .map(|b| b.stored_name.clone())
        .unwrap_or_default();
    if name.len() > MAX_BACKING_NAME {
        return Err(Error::invalid(format!(
            "the backing file name is {} bytes, more than the {MAX_BACKING_NAME} qemu reads",
            name.len()
        )));
    }
    let l1_offset = (HEADER_LEN + name.len() as u64).next_multiple_of(8);
    let data_start = (l1_offset + l1_size * 8).next_multiple_of(cs);
    let encoder = spec.compress.then(|| {
        Arc::new(ClusterEncoder {
            method: Compression::Zlib,
            level: crate::formats::qcow2::writer::zlib_level(),
            cluster_size: cs as usize,
        })
    });
    let zero_cluster = vec![0u8; cs as usize];
    let zero_frame = match &encoder {
        Some(e) if spec.backing.is_some() => {
            let mut out = Vec::new();
            e.encode(0, &zero_cluster, &mut out)?;
            crate::formats::qcow2::writer::single_frame(&out)
        }
        _ => None,
    };
    let mut sink = output.main()?;
    sink.set_len(data_start)?;
    Ok(Box::new(QcowWriter {
        sink,
        size,
        disk_size: spec.size,
        cs,
        per_l2,
        l1: vec![0u64; l1_size as usize],
        l1_offset,
        backing_name: name,
        backing: spec.backing.is_some(),
        pos: data_start,
        l2: None,
        encoder,
        zero_frame,
        zero_cluster,
        pending: Vec::new(),
        pending_at: data_start,
    }))
}

/// A QCOW image being written.
struct QcowWriter<'a> {
    sink: Box<dyn Sink + 'a>,
    /// The size in the header (whole sectors).
    size: u64,
    /// The size the engine sends.
    disk_size: u64,
    cs: u64,
    per_l2: u64,
    l1: Vec<u64>,
    l1_offset: u64,
    backing_name: String,
    backing: bool,
    /// The next free byte.
    pos: u64,
    /// The L2 table being filled: index and entries.
    l2: Option<(u64, Vec<u64>)>,
    encoder: Option<Arc<ClusterEncoder>>,
    zero_frame: Option<Vec<u8>>,
    zero_cluster: Vec<u8>,
    /// Bytes appended at `pending_at`, not yet written (small clusters add up).
    pending: Vec<u8>,
    pending_at: u64,
}

impl QcowWriter<'_> {
    fn append(&mut self, at: u64, bytes: &[u8]) -> Result<()> {
        if at != self.pending_at + self.pending.len() as u64 || self.pending.len() >= 1 << 20 {
            self.flush()?;
            self.pending_at = at;
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.sink.write_at(&self.pending, self.pending_at)?;
            self.pending_at += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    /// The next cluster-aligned place.
    fn aligned(&mut self) -> u64 {
        let at = self.pos.next_multiple_of(self.cs);
        self.pos = at + self.cs;
        at
    }

    fn enter(&mut self, cluster: u64) -> Result<()> {
        let index = cluster / self.per_l2;
        if self.l2.as_ref().is_some_and(|(i, _)| *i == index) {
            return Ok(());
        }
        self.close_table()?;
        self.l2 = Some((index, vec![0u64; self.per_l2 as usize]));
        Ok(())
    }

    fn set(&mut self, cluster: u64, entry: u64) {
        let per = self.per_l2;
        let (_, table) = self.l2.as_mut().expect("entered");
        table[(cluster % per) as usize] = entry;
    }

    fn close_table(&mut self) -> Result<()> {
        let Some((index, table)) = self.l2.take() else {
            return Ok(());
        };
        if table.iter().all(|e| *e == 0) {
            return Ok(());
        }
        let at = self.aligned();
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.append(at, &bytes)?;
        self.l1[index as usize] = at;
        Ok(())
    }

    fn normal(&mut self, cluster: u64, bytes: &[u8]) -> Result<()> {
        self.enter(cluster)?;
        let at = self.aligned();
        self.append(at, bytes)?;
        if bytes.len() < self.cs as usize {
            let pad = self.cs as usize - bytes.len();
            let zeros = self.zero_cluster[..pad].to_vec();
            self.append(at + bytes.len() as u64, &zeros)?;
        }
        self.set(cluster, at);
        Ok(())
    }

    fn compressed(&mut self, cluster: u64, bytes: &[u8]) -> Result<()> {
        self.enter(cluster)?;
        let at = self.pos;
        self.append(at, bytes)?;
        self.pos += bytes.len() as u64;
        self.set(
            cluster,
            COMPRESSED | ((bytes.len() as u64) << (63 - CLUSTER_BITS)) | at,
        );
        Ok(())
    }

    fn data(&mut self, cluster: u64, bytes: &[u8], encoded: Option<&[u8]>) -> Result<()> {
        let Some(encoder) = self.encoder.clone() else {
            return self.normal(cluster, bytes);
        };
        let owned;
        let encoded = match encoded {
            Some(e) => e,
            None => {
                let mut out = Vec::new();
                encoder.encode(cluster * self.cs, bytes, &mut out)?;
                owned = out;
                &owned
            }
        };
        match crate::formats::qcow2::writer::single_frame(encoded) {
            Some(frame) => self.compressed(cluster, &frame),
            None => self.normal(cluster, bytes),
        }
    }

    /// Zeros: nothing to store without a backing file; data (there is no zero flag) with one.
    fn zeros(&mut self, first: u64, count: u64) -> Result<()> {
        if !self.backing {
            return Ok(());
        }
        for c in first..first + count {
            match self.zero_frame.clone() {
                Some(frame) => self.compressed(c, &frame)?,
                None => {
                    let zeros = std::mem::take(&mut self.zero_cluster);
                    let r = self.normal(c, &zeros);
                    self.zero_cluster = zeros;
                    r?;
                }
            }
        }
        Ok(())
    }
}

impl ImageWriter for QcowWriter<'_> {
    fn granularity(&self) -> u64 {
        self.cs
    }

    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        self.encoder
            .as_ref()
            .map(|e| Arc::clone(e) as Arc<dyn ChunkEncoder>)
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        let cs = self.cs;
        let end = offset + piece.len();
        let aligned =
            offset.is_multiple_of(cs) && (end.is_multiple_of(cs) || end == self.disk_size);
        if !aligned {
            return Err(Error::invalid(format!(
                "internal error: qcow pieces must start and end on {cs}-byte clusters (piece {offset}+{})",
                piece.len()
            )));
        }
        let first = offset / cs;
        let count = (end - offset).div_ceil(cs);
        match piece {
            Piece::Data { bytes, encoded } => {
                let mut frames = encoded.map(crate::formats::qcow2::writer::split_frames);
                for (i, chunk) in bytes.chunks(cs as usize).enumerate() {
                    let enc = frames.as_mut().and_then(|f| f.get(i).cloned());
                    let enc = enc.as_deref();
                    self.data(first + i as u64, chunk, enc)?;
                }
                Ok(())
            }
            Piece::Zero(_) => self.zeros(first, count),
            Piece::Unallocated(_) => Ok(()),
            Piece::Placed(_) => Err(Error::invalid(
                "internal error: qcow data was placed by a worker, but this writer places its own",
            )),
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let mut this = *self;
        this.close_table()?;
        let end = this.pos.next_multiple_of(512);
        this.flush()?;
        let l1: Vec<u8> = this.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        this.sink.write_at(&l1, this.l1_offset)?;
        let mut header = vec![0u8; HEADER_LEN as usize];
        header[0..4].copy_from_slice(b"QFI\xfb");
        header[4..8].copy_from_slice(&1u32.to_be_bytes());
        if !this.backing_name.is_empty() {
            header[8..16].copy_from_slice(&HEADER_LEN.to_be_bytes());
            header[16..20].copy_from_slice(&(this.backing_name.len() as u32).to_be_bytes());
        }
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        header[20..24].copy_from_slice(&mtime.to_be_bytes());
        header[24..32].copy_from_slice(&this.size.to_be_bytes());
        header[32] = CLUSTER_BITS as u8;
        header[33] = L2_BITS as u8;
        header[40..48].copy_from_slice(&this.l1_offset.to_be_bytes());
        header.extend_from_slice(this.backing_name.as_bytes());
        this.sink.write_at(&header, 0)?;
        this.sink.set_len(end)?;
        this.sink.finish()
    }
}
