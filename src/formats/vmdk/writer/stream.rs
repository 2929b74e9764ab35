//! streamOptimized, as the VMDK 5.0 specification describes it, written strictly front to
//! back (to a file or a pipe):
//!
//! ```text
//! header (version 3, compressed + markers, gdOffset = GD_AT_END)
//! embedded descriptor (20 sectors, NUL-padded: room for in-place rewrites)
//! padding to sector 128 (where VMware's tools put the first grain)
//! for each grain with data:  marker(LBA, size) + zlib stream, padded to a sector
//! after the grains of each grain table: GT marker + grain table
//! GD marker + grain directory
//! footer marker + footer (the header with the real gdOffset)
//! end-of-stream marker
//! ```
//!
//! Compression happens on the engine's worker threads ([`GrainEncoder`]); this writer only
//! appends their output and keeps one grain table and the (small) directory in memory.

use super::descriptor_out::DiskSettings;
use super::grains::{GrainCutter, GrainSink};
use super::{EMBEDDED_DESCRIPTOR_SECTORS, GRAIN_BYTES, GTES_PER_GT, stem};
use crate::error::{Error, Result};
use crate::formats::vmdk::descriptor::ExtentKind;
use crate::formats::vmdk::grain::{
    GrainEncoder, MARKER_FOOTER, MARKER_GD, MARKER_GT, Marker, deflate_grain,
};
use crate::formats::vmdk::sparse_header::{
    FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_CHECK, GD_AT_END, SparseHeader,
};
use crate::host_file::Durability;
use crate::writer::{ChunkEncoder, CreateSpec, Destination, ImageWriter, Piece};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

const GRAIN_SECTORS: u64 = GRAIN_BYTES / 512;
/// The first grain's sector, as VMware writes it.
const FIRST_GRAIN_SECTOR: u64 = 128;
/// Bytes of one grain table.
const GT_BYTES: usize = GTES_PER_GT as usize * 4;

enum Output {
    File(BufWriter<File>, PathBuf, Durability),
    Stream(Box<dyn Write + Send>),
}

/// Writes a streamOptimized VMDK.
pub struct StreamWriter {
    out: Output,
    /// Bytes written so far.
    pos: u64,
    header: SparseHeader,
    /// One entry per grain table: its sector, or 0.
    gd: Vec<u32>,
    /// The grain table being filled.
    current: Option<(u64, Vec<u32>)>,
    cutter: Option<GrainCutter>,
    scratch: Vec<u8>,
}

impl StreamWriter {
    /// Starts the file: header, descriptor, padding.
    pub fn create(
        dest: Destination<'_>,
        _spec: &CreateSpec,
        settings: DiskSettings,
    ) -> Result<StreamWriter> {
        let sectors = settings.sectors;
        let (out, name) = match dest {
            Destination::Files { staging, path } => {
                let durability = staging.durability();
                let f = staging.create(&path)?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("{}.vmdk", stem(&path)));
                (
                    Output::File(BufWriter::with_capacity(1 << 20, f), path, durability),
                    name,
                )
            }
            Destination::Stream(w) => (Output::Stream(w), "disk.vmdk".to_string()),
        };
        let grains = sectors.div_ceil(GRAIN_SECTORS);
        let tables = grains.div_ceil(u64::from(GTES_PER_GT));
        let header = SparseHeader {
            version: 3,
            flags: FLAG_NEWLINE_CHECK | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: sectors,
            grain_sectors: GRAIN_SECTORS,
            descriptor_offset: 1,
            descriptor_size: EMBEDDED_DESCRIPTOR_SECTORS,
            gtes_per_gt: GTES_PER_GT,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: FIRST_GRAIN_SECTOR,
            dirty: false,
            compressed: true,
            markers: true,
        };
        let text = settings
            .descriptor(
                super::Subformat::StreamOptimized,
                &[(Some(name), sectors, ExtentKind::Sparse)],
            )
            .to_text();
        let mut start = vec![0u8; (FIRST_GRAIN_SECTOR * 512) as usize];
        start[..512].copy_from_slice(&header.to_bytes());
        let room = (EMBEDDED_DESCRIPTOR_SECTORS * 512) as usize;
        if text.len() > room {
            return Err(Error::invalid(format!(
                "the descriptor is {} bytes, more than the {room} reserved for it",
                text.len()
            )));
        }
        start[512..512 + text.len()].copy_from_slice(text.as_bytes());
        let mut w = StreamWriter {
            out,
            pos: 0,
            header,
            gd: vec![0; tables as usize],
            current: None,
            cutter: Some(GrainCutter::new(GRAIN_BYTES, sectors * 512)),
            scratch: Vec::new(),
        };
        w.append(&start)?;
        Ok(w)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let result = match &mut self.out {
            Output::File(w, _, _) => w.write_all(bytes),
            Output::Stream(w) => w.write_all(bytes),
        };
        result.map_err(|e| {
            Error::io("cannot write the stream-optimized VMDK", e).at_offset(self.pos)
        })?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn sector(&self) -> Result<u32> {
        let s = self.pos / 512;
        u32::try_from(s).map_err(|_| {
            Error::invalid(
                "a stream-optimized VMDK cannot grow past 2 TiB (grain table entries are 32-bit sector numbers)",
            )
        })
    }

    /// Appends one encoded grain (marker + data, sector-padded) for grain `grain`.
    fn put_grain(&mut self, grain: u64, encoded: &[u8]) -> Result<()> {
        let gt = grain / u64::from(GTES_PER_GT);
        if self.current.as_ref().is_none_or(|(i, _)| *i != gt) {
            self.flush_table()?;
            self.current = Some((gt, vec![0u32; GTES_PER_GT as usize]));
        }
        let sector = self.sector()?;
        self.append(encoded)?;
        let (_, entries) = self.current.as_mut().expect("a current table");
        entries[(grain % u64::from(GTES_PER_GT)) as usize] = sector;
        Ok(())
    }

    /// Writes the current grain table after its grains.
    fn flush_table(&mut self) -> Result<()> {
        let Some((gt, entries)) = self.current.take() else {
            return Ok(());
        };
        let mut bytes = Vec::with_capacity(512 + GT_BYTES);
        bytes.extend_from_slice(&Marker::metadata((GT_BYTES / 512) as u64, MARKER_GT));
        bytes.extend(entries.iter().flat_map(|e| e.to_le_bytes()));
        let sector = self.sector()? + 1;
        self.append(&bytes)?;
        self.gd[gt as usize] = sector;
        Ok(())
    }
}

impl GrainSink for StreamWriter {
    fn data(&mut self, first: u64, bytes: &[u8], encoded: Option<&[u8]>) -> Result<()> {
        if let Some(enc) = encoded
            && bytes.len() as u64 <= GRAIN_BYTES
        {
            return self.put_grain(first, enc);
        }
        // Not encoded by the engine (a library caller's unaligned pieces): do it here.
        let mut scratch = std::mem::take(&mut self.scratch);
        for (i, chunk) in bytes.chunks(GRAIN_BYTES as usize).enumerate() {
            let grain = first + i as u64;
            deflate_grain(
                grain * GRAIN_BYTES,
                chunk,
                GRAIN_BYTES as usize,
                &mut scratch,
            )?;
            self.put_grain(grain, &scratch)?;
        }
        self.scratch = scratch;
        Ok(())
    }

    fn zero(&mut self, _first: u64, _count: u64) -> Result<()> {
        // Unwritten grains read as zeros: a stream-optimized disk never has a parent.
        Ok(())
    }

    fn unallocated(&mut self, first: u64, count: u64) -> Result<()> {
        self.zero(first, count)
    }
}

impl ImageWriter for StreamWriter {
    fn granularity(&self) -> u64 {
        GRAIN_BYTES
    }

    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        Some(Arc::new(GrainEncoder {
            grain_bytes: GRAIN_BYTES as usize,
        }))
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        let mut cutter = self.cutter.take().expect("a cutter");
        let result = cutter.feed(offset, piece, self);
        self.cutter = Some(cutter);
        result
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        if let Some(c) = &self.cutter {
            c.finish()?;
        }
        self.flush_table()?;
        let gd_sectors = (self.gd.len() as u64 * 4).div_ceil(512);
        let mut tail = Vec::new();
        tail.extend_from_slice(&Marker::metadata(gd_sectors, MARKER_GD));
        let gd_offset = u64::from(self.sector()?) + 1;
        let mut gd: Vec<u8> = self.gd.iter().flat_map(|e| e.to_le_bytes()).collect();
        gd.resize((gd_sectors * 512) as usize, 0);
        tail.extend_from_slice(&gd);
        tail.extend_from_slice(&Marker::metadata(1, MARKER_FOOTER));
        let footer = SparseHeader {
            gd_offset,
            ..self.header
        };
        tail.extend_from_slice(&footer.to_bytes());
        // End-of-stream: an all-zero marker.
        tail.extend_from_slice(&[0u8; 512]);
        self.append(&tail)?;
        match self.out {
            Output::File(w, path, durability) => {
                let f = w.into_inner().map_err(|e| {
                    Error::io("cannot write the stream-optimized VMDK", e.into_error())
                        .with_path(&path)
                })?;
                if durability == Durability::Unsafe {
                    return Ok(());
                }
                f.sync_data()
                    .map_err(|e| Error::io("cannot flush", e).with_path(&path))
            }
            Output::Stream(mut w) => w
                .flush()
                .map_err(|e| Error::io("cannot flush the output stream", e)),
        }
    }
}
