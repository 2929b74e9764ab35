//! monolithicSparse and twoGbMaxExtentSparse: hosted sparse extents laid out as VMware
//! Workstation lays them out: header, (embedded descriptor), redundant grain directory and
//! tables, grain directory and tables, then the grains, appended in disk order.
//!
//! Every grain table is preallocated (a hole until written) and the directories are written
//! at creation, so only the current grain table is kept in memory: it is written (both
//! copies) as soon as the pieces move past it.

use super::descriptor_out::DiskSettings;
use super::grains::{GrainCutter, GrainSink};
use super::{
    EMBEDDED_DESCRIPTOR_SECTORS, GRAIN_BYTES, GTES_PER_GT, SPLIT_EXTENT_BYTES, Subformat,
    split_extents, stem,
};
use crate::error::{Error, Result};
use crate::formats::vmdk::descriptor::ExtentKind;
use crate::formats::vmdk::sparse_header::{
    FLAG_NEWLINE_CHECK, FLAG_REDUNDANT, FLAG_ZEROED_GRAIN, SparseHeader,
};
use crate::sink::{Output, Sink};
use crate::writer::{CreateSpec, ImageWriter, Piece};

const GRAIN_SECTORS: u64 = GRAIN_BYTES / 512;
/// Grain table entries are 32-bit sector numbers: an extent file cannot reach past 2 TiB.
const MAX_EXTENT_FILE_SECTORS: u64 = u32::MAX as u64;

/// One sparse extent file being written.
struct ExtentFile<'a> {
    file: Box<dyn Sink + 'a>,
    /// Grains in this extent.
    grains: u64,
    /// Sector of grain table 0, and of its redundant copy.
    gt_base: u64,
    rgt_base: u64,
    /// Where the next grain goes.
    next_sector: u64,
    /// The grain table being filled: its index and entries.
    current: Option<(u64, Vec<u32>)>,
}

impl<'a> ExtentFile<'a> {
    fn create(
        mut file: Box<dyn Sink + 'a>,
        capacity_sectors: u64,
        descriptor: Option<&str>,
        settings: &DiskSettings,
    ) -> Result<ExtentFile<'a>> {
        let grains = capacity_sectors.div_ceil(GRAIN_SECTORS);
        let gt_count = grains.div_ceil(u64::from(GTES_PER_GT));
        let gt_sectors = u64::from(GTES_PER_GT) * 4 / 512;
        let gd_sectors = (gt_count * 4).div_ceil(512);
        let (desc_offset, desc_size) = match descriptor {
            Some(_) => (1, EMBEDDED_DESCRIPTOR_SECTORS),
            None => (0, 0),
        };
        let rgd = 1 + desc_size;
        let rgt_base = rgd + gd_sectors;
        let gd = rgt_base + gt_count * gt_sectors;
        let gt_base = gd + gd_sectors;
        let overhead = (gt_base + gt_count * gt_sectors).div_ceil(GRAIN_SECTORS) * GRAIN_SECTORS;
        if overhead > MAX_EXTENT_FILE_SECTORS {
            return Err(Error::invalid(format!(
                "a sparse VMDK extent of {} bytes is larger than the limit of about {} TiB: its grain tables would need {} bytes, more than its 32-bit sector numbers address (twoGbMaxExtentSparse splits larger disks)",
                capacity_sectors.saturating_mul(512),
                max_sparse_capacity() >> 40,
                overhead.saturating_mul(512)
            )));
        }
        let mut flags = FLAG_NEWLINE_CHECK | FLAG_REDUNDANT;
        if settings.zeroed_grain {
            flags |= FLAG_ZEROED_GRAIN;
        }
        let header = SparseHeader {
            // Version 2 is what announces zeroed-grain entries; VMware writes 1 otherwise.
            version: if settings.zeroed_grain { 2 } else { 1 },
            flags,
            capacity: capacity_sectors,
            grain_sectors: GRAIN_SECTORS,
            descriptor_offset: desc_offset,
            descriptor_size: desc_size,
            gtes_per_gt: GTES_PER_GT,
            rgd_offset: rgd,
            gd_offset: gd,
            overhead,
            dirty: false,
            compressed: false,
            markers: false,
        };
        // The file ends after the tables: a destination too small is refused first.
        file.set_len(overhead * 512)?;
        file.write_at(&header.to_bytes(), 0)?;
        if let Some(text) = descriptor {
            let mut bytes = text.as_bytes().to_vec();
            if bytes.len() as u64 > desc_size * 512 {
                return Err(Error::invalid(format!(
                    "the descriptor is {} bytes, more than the {} reserved for it",
                    bytes.len(),
                    desc_size * 512
                )));
            }
            bytes.resize((desc_size * 512) as usize, 0);
            file.write_at(&bytes, 512)?;
        }
        // The directories, a bounded piece at a time; the tables start empty (zeros), which
        // an existing destination must be told.
        const PIECE_ENTRIES: u64 = 64 * 1024;
        for (dir, base) in [(rgd, rgt_base), (gd, gt_base)] {
            let mut first = 0u64;
            while first < gt_count {
                let n = (gt_count - first).min(PIECE_ENTRIES);
                let entries: Vec<u8> = (first..first + n)
                    .flat_map(|i| ((base + i * gt_sectors) as u32).to_le_bytes())
                    .collect();
                file.write_at(&entries, dir * 512 + first * 4)?;
                first += n;
            }
            let written = gt_count * 4;
            file.write_zeros(dir * 512 + written, gd_sectors * 512 - written)?;
            file.write_zeros(base * 512, gt_count * gt_sectors * 512)?;
        }
        Ok(ExtentFile {
            file,
            grains,
            gt_base,
            rgt_base,
            next_sector: overhead,
            current: None,
        })
    }

    fn set_entry(&mut self, grain: u64, value: u32) -> Result<()> {
        let gt = grain / u64::from(GTES_PER_GT);
        if self.current.as_ref().is_none_or(|(i, _)| *i != gt) {
            self.flush_table()?;
            self.current = Some((gt, vec![0u32; GTES_PER_GT as usize]));
        }
        let (_, entries) = self.current.as_mut().expect("a current table");
        entries[(grain % u64::from(GTES_PER_GT)) as usize] = value;
        Ok(())
    }

    fn flush_table(&mut self) -> Result<()> {
        let Some((gt, entries)) = self.current.take() else {
            return Ok(());
        };
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        let gt_sectors = bytes.len() as u64 / 512;
        self.file
            .write_at(&bytes, (self.gt_base + gt * gt_sectors) * 512)?;
        self.file
            .write_at(&bytes, (self.rgt_base + gt * gt_sectors) * 512)?;
        Ok(())
    }

    /// Appends whole grains starting at `first` (extent-relative).
    fn append(&mut self, first: u64, bytes: &[u8]) -> Result<()> {
        let count = (bytes.len() as u64).div_ceil(GRAIN_BYTES);
        if self.next_sector + count * GRAIN_SECTORS > MAX_EXTENT_FILE_SECTORS {
            return Err(Error::invalid(
                "a sparse extent file cannot grow past 2 TiB (grain table entries are 32-bit); use subformat=twoGbMaxExtentSparse",
            ));
        }
        self.file.write_at(bytes, self.next_sector * 512)?;
        let padding = count * GRAIN_BYTES - bytes.len() as u64;
        self.file
            .write_zeros(self.next_sector * 512 + bytes.len() as u64, padding)?;
        for i in 0..count {
            let sector = self.next_sector + i * GRAIN_SECTORS;
            self.set_entry(first + i, sector as u32)?;
        }
        self.next_sector += count * GRAIN_SECTORS;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.flush_table()?;
        // A short last grain still owns a whole grain of the file, as readers expect.
        self.file.set_len(self.next_sector * 512)?;
        self.file.finish()
    }
}

/// The largest capacity whose grain directory and tables fit under the 2 TiB a 32-bit sector
/// number addresses (both copies, 64 KiB grains, 512 entries per table).
fn max_sparse_capacity() -> u64 {
    // Each table covers 512 grains (32 MiB) and takes 4 sectors, twice, plus 4 bytes in
    // each directory.
    let per_table_sectors = 2 * 4 + 1;
    (MAX_EXTENT_FILE_SECTORS / per_table_sectors) * u64::from(GTES_PER_GT) * GRAIN_BYTES
}

/// How a sparse writer records grains that read as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zeros {
    /// Left unallocated: without a parent, an unallocated grain reads as zeros.
    Unallocated,
    /// Zeroed-grain entries (version 2 extents): zeros that hide the parent, for free.
    ZeroedEntries,
    /// Stored as data: zeros that must hide the parent, in an extent without zeroed-grain
    /// entries.
    Stored,
}

/// Writes monolithicSparse and twoGbMaxExtentSparse disks.
pub struct SparseWriter<'a> {
    extents: Vec<ExtentFile<'a>>,
    /// Grains per extent (all but the last extent are full).
    grains_per_extent: u64,
    cutter: Option<GrainCutter>,
    zeros: Zeros,
    /// The virtual size, rounded up to a sector.
    size: u64,
    descriptor_file: Option<(Box<dyn Sink + 'a>, String)>,
}

impl<'a> SparseWriter<'a> {
    /// Creates every file of the disk in `output`.
    pub fn create(
        mut output: Output<'a>,
        spec: &CreateSpec,
        settings: DiskSettings,
        subformat: Subformat,
    ) -> Result<SparseWriter<'a>> {
        let path = output.path().to_path_buf();
        let total = settings.sectors;
        let split_sectors = SPLIT_EXTENT_BYTES / 512;
        // Sized by the (checked) number of extents, never by the disk's size alone.
        let count = split_extents(subformat, total.saturating_mul(512))?;
        let sizes: Vec<u64> = if subformat == Subformat::TwoGbMaxExtentSparse {
            (0..count)
                .map(|i| total.saturating_sub(i * split_sectors).min(split_sectors))
                .collect()
        } else {
            vec![total]
        };
        let stem = stem(&path);
        let names: Vec<String> = if subformat == Subformat::TwoGbMaxExtentSparse {
            (1..=sizes.len())
                .map(|i| format!("{stem}-s{i:03}.vmdk"))
                .collect()
        } else {
            vec![
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "disk.vmdk".to_string()),
            ]
        };
        let lines: Vec<(Option<String>, u64, ExtentKind)> = names
            .iter()
            .zip(&sizes)
            .map(|(n, s)| (Some(n.clone()), *s, ExtentKind::Sparse))
            .collect();
        let text = settings.descriptor(subformat, &lines).to_text();
        let mut extents = Vec::new();
        let mut descriptor_file = None;
        if subformat == Subformat::MonolithicSparse {
            let f = output.main()?;
            extents.push(ExtentFile::create(f, total, Some(&text), &settings)?);
        } else {
            if !output.can_add_files() {
                return Err(Error::invalid(format!(
                    "a twoGbMaxExtentSparse VMDK is several files and cannot be written to {}; use monolithicSparse or streamOptimized",
                    output.describe()
                )));
            }
            // The descriptor is created first so that it is renamed into place last.
            descriptor_file = Some((output.main()?, text));
            for (name, &sectors) in names.iter().zip(&sizes) {
                let f = output.beside(name)?;
                extents.push(ExtentFile::create(f, sectors, None, &settings)?);
            }
        }
        Ok(SparseWriter {
            extents,
            grains_per_extent: split_sectors / GRAIN_SECTORS,
            cutter: Some(GrainCutter::new(GRAIN_BYTES, spec.size.div_ceil(512) * 512)),
            zeros: match (spec.backing.is_some(), settings.zeroed_grain) {
                (false, _) => Zeros::Unallocated,
                (true, true) => Zeros::ZeroedEntries,
                (true, false) => Zeros::Stored,
            },
            size: total * 512,
            descriptor_file,
        })
    }

    /// The extent holding global grain `grain`, and the grain's index inside it.
    fn locate(&self, grain: u64) -> (usize, u64) {
        if self.extents.len() == 1 {
            (0, grain)
        } else {
            (
                (grain / self.grains_per_extent) as usize,
                grain % self.grains_per_extent,
            )
        }
    }
}

impl GrainSink for SparseWriter<'_> {
    fn data(&mut self, first: u64, bytes: &[u8], _encoded: Option<&[u8]>) -> Result<()> {
        let mut grain = first;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (e, local) = self.locate(grain);
            let extent = self
                .extents
                .get_mut(e)
                .ok_or_else(|| Error::invalid("data past the last extent"))?;
            let room = (extent.grains - local) * GRAIN_BYTES;
            let n = (rest.len() as u64).min(room) as usize;
            extent.append(local, &rest[..n])?;
            grain += (n as u64).div_ceil(GRAIN_BYTES);
            rest = &rest[n..];
        }
        Ok(())
    }

    fn zero(&mut self, first: u64, count: u64) -> Result<()> {
        match self.zeros {
            Zeros::Unallocated => return Ok(()),
            Zeros::ZeroedEntries => {
                for grain in first..first + count {
                    let (e, local) = self.locate(grain);
                    if let Some(extent) = self.extents.get_mut(e) {
                        extent.set_entry(local, 1)?;
                    }
                }
                return Ok(());
            }
            Zeros::Stored => {}
        }
        let zeros = vec![0u8; (GRAIN_BYTES * 32) as usize];
        let mut grain = first;
        while grain < first + count {
            let n = (first + count - grain).min(32);
            let len = (n * GRAIN_BYTES).min(self.size - grain * GRAIN_BYTES) as usize;
            self.data(grain, &zeros[..len], None)?;
            grain += n;
        }
        Ok(())
    }

    fn unallocated(&mut self, _first: u64, _count: u64) -> Result<()> {
        Ok(())
    }
}

impl ImageWriter for SparseWriter<'_> {
    fn granularity(&self) -> u64 {
        GRAIN_BYTES
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
        if let Some((mut f, text)) = self.descriptor_file.take() {
            f.set_len(text.len() as u64)?;
            f.write_at(text.as_bytes(), 0)?;
            f.finish()?;
        }
        for e in self.extents {
            e.finish()?;
        }
        Ok(())
    }
}
