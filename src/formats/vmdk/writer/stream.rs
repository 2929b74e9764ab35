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
use crate::sink::{Output, SequentialWriter};
use crate::writer::{ChunkEncoder, CreateSpec, ImageWriter, Piece};
use std::collections::BTreeMap;
use std::sync::Arc;

const GRAIN_SECTORS: u64 = GRAIN_BYTES / 512;
/// The first grain's sector, as VMware writes it.
const FIRST_GRAIN_SECTOR: u64 = 128;
/// Bytes of one grain table.
const GT_BYTES: usize = GTES_PER_GT as usize * 4;

/// Writes a streamOptimized VMDK.
pub struct StreamWriter<'a> {
    out: SequentialWriter<'a>,
    /// Bytes written so far.
    pos: u64,
    header: SparseHeader,
    /// The grain tables written so far: table index → sector. Tables without grains are
    /// never written and their directory entries are 0, so memory follows the data, not the
    /// virtual size.
    gd: BTreeMap<u64, u32>,
    /// Grain tables of the whole disk (directory entries).
    tables: u64,
    /// The grain table being filled.
    current: Option<(u64, Vec<u32>)>,
    cutter: Option<GrainCutter>,
    scratch: Vec<u8>,
}

impl<'a> StreamWriter<'a> {
    /// Starts the file: header, descriptor, padding.
    pub fn create(
        mut output: Output<'a>,
        _spec: &CreateSpec,
        settings: DiskSettings,
    ) -> Result<StreamWriter<'a>> {
        let sectors = settings.sectors;
        let name = if output.can_add_files() {
            output
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{}.vmdk", stem(output.path())))
        } else {
            "disk.vmdk".to_string()
        };
        let grains = sectors.div_ceil(GRAIN_SECTORS);
        let tables = grains.div_ceil(u64::from(GTES_PER_GT));
        // The directory is written after the data; its sectors must be addressable.
        if FIRST_GRAIN_SECTOR + (tables * 4).div_ceil(512) > u64::from(u32::MAX) {
            return Err(Error::invalid(format!(
                "a stream-optimized VMDK of {} bytes would need a grain directory larger than its 32-bit sector numbers address",
                sectors.saturating_mul(512)
            )));
        }
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
            out: SequentialWriter::new(output.main()?),
            pos: 0,
            header,
            gd: BTreeMap::new(),
            tables,
            current: None,
            cutter: Some(GrainCutter::new(GRAIN_BYTES, sectors * 512)),
            scratch: Vec::new(),
        };
        w.append(&start)?;
        Ok(w)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.append(bytes)?;
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
        self.gd.insert(gt, sector);
        Ok(())
    }
}

impl GrainSink for StreamWriter<'_> {
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

impl ImageWriter for StreamWriter<'_> {
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
        let gd_sectors = (self.tables * 4).div_ceil(512);
        self.append(&Marker::metadata(gd_sectors, MARKER_GD))?;
        let gd_offset = u64::from(self.sector()?);
        // The directory, a bounded piece at a time (zeros for tables never written).
        const PIECE_ENTRIES: u64 = 64 * 1024;
        let mut first = 0u64;
        while first < self.tables {
            let n = (self.tables - first).min(PIECE_ENTRIES);
            let piece: Vec<u8> = (first..first + n)
                .flat_map(|t| self.gd.get(&t).copied().unwrap_or(0).to_le_bytes())
                .collect();
            self.append(&piece)?;
            first += n;
        }
        let pad = (gd_sectors * 512 - self.tables * 4) as usize;
        self.append(&vec![0u8; pad])?;
        let mut tail = Vec::new();
        tail.extend_from_slice(&Marker::metadata(1, MARKER_FOOTER));
        let footer = SparseHeader {
            gd_offset,
            ..self.header
        };
        tail.extend_from_slice(&footer.to_bytes());
        // End-of-stream: an all-zero marker.
        tail.extend_from_slice(&[0u8; 512]);
        self.append(&tail)?;
        let this = *self;
        this.out.finish()
    }
}
