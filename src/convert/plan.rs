//! Cutting the source into work items from its allocation map, without reading data.
//!
//! Data runs are widened to the target's granularity (a grain is written whole) and cut at
//! multiples of the chunk size; what lies between data runs becomes one zero item, however
//! large. A sparse terabyte is a handful of items.

use crate::error::Result;
use crate::image::Image;

/// What a work item holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// The source may hold data here: read it, detect zeros, encode.
    Data,
    /// The source reads as zeros here, and the target's backing (if any) holds nothing.
    Zero,
}

/// A range of the virtual disk for the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// What to do with it.
    pub kind: ItemKind,
}

/// Whether zeros in the source are left out of the target (`-S`) or written like data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sparseness {
    /// Zero runs (unallocated ranges, and zero granules the workers find) become holes or
    /// unallocated ranges of the target.
    Sparse,
    /// `-S 0`: every byte of the disk is data, stored as such (a fully allocated target).
    Dense,
}

/// The rules for cutting.
#[derive(Debug, Clone, Copy)]
pub struct Cutting {
    /// Data items start and end on multiples of this (except at the end of the disk): the
    /// target's unit (a grain is written whole).
    pub granularity: u64,
    /// Zeros are looked for in granules aligned to multiples of this (`-S`), clipped to the
    /// item: a run of zeros shorter than it inside data is written as data, as qemu-img does,
    /// while the source's unallocated ranges around the data stay out of the items whatever
    /// its size. A multiple of `granularity`.
    pub zero_granule: u64,
    /// Data items never cross a multiple of this; a multiple of `zero_granule`.
    pub chunk: u64,
    /// Whether zeros are left out.
    pub sparseness: Sparseness,
}

/// Walks the source's allocation (and the target backing's, with `-B`) and yields items in order.
pub struct Planner<'a> {
    source: &'a Image,
    target_backing: Option<&'a Image>,
    cutting: Cutting,
    size: u64,
    /// Everything before this has been yielded.
    emitted: u64,
    /// Where the next allocation query starts.
    scan: u64,
    /// A data range found but not yet cut into items.
    pending: Option<(u64, u64)>,
}

/// Holes shorter than this between two data runs are read as part of one item.
const MERGE_GAP: u64 = 64 * 1024;

fn align_down(x: u64, a: u64) -> u64 {
    x - x % a
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

impl<'a> Planner<'a> {
    /// A planner over `source`; with `target_backing`, ranges where the source reads as zeros
    /// but the backing holds data become data items, so that the zeros are written.
    pub fn new(source: &'a Image, target_backing: Option<&'a Image>, cutting: Cutting) -> Self {
        assert!(
            cutting.granularity > 0
                && cutting.zero_granule.is_multiple_of(cutting.granularity)
                && cutting.chunk.is_multiple_of(cutting.zero_granule)
        );
        Planner {
            source,
            target_backing,
            cutting,
            size: source.virtual_size(),
            emitted: 0,
            scan: 0,
            pending: None,
        }
    }

    /// The next item, or `None` when the whole disk has been covered.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some((start, end)) = self.pending {
                if start > self.emitted {
                    let zero = Item {
                        offset: self.emitted,
                        len: start - self.emitted,
                        kind: ItemKind::Zero,
                    };
                    self.emitted = start;
                    return Ok(Some(zero));
                }
                let cut = align_up(start + 1, self.cutting.chunk).min(end);
                let item = Item {
                    offset: start,
                    len: cut - start,
                    kind: ItemKind::Data,
                };
                self.emitted = cut;
                self.pending = if cut < end { Some((cut, end)) } else { None };
                return Ok(Some(item));
            }
            if self.scan >= self.size {
                if self.emitted < self.size {
                    let zero = Item {
                        offset: self.emitted,
                        len: self.size - self.emitted,
                        kind: ItemKind::Zero,
                    };
                    self.emitted = self.size;
                    return Ok(Some(zero));
                }
                return Ok(None);
            }
            self.find_next_data()?;
        }
    }

    /// Advances `scan` to the end of the next data run (or the end of the disk) and records the
    /// run, widened to the granularity, in `pending`.
    fn find_next_data(&mut self) -> Result<()> {
        if self.cutting.sparseness == Sparseness::Dense {
            self.pending = Some((self.emitted, self.size));
            self.scan = self.size;
            return Ok(());
        }
        while self.scan < self.size {
            let status = self.source.block_status(self.scan, self.size - self.scan)?;
            let (start, end) = (status.mapping.start, status.mapping.end());
            let data = !status.zero() || self.backing_has_data(start, end)?;
            self.scan = end;
            if data {
                let g = self.cutting.granularity;
                let mut run_start = align_down(start, g).max(self.emitted);
                let mut run_end = align_up(end, g).min(self.size);
                // Merge data runs that follow directly (a VHD's blocks, a qcow2's clusters), so
                // that items are cut by chunk size rather than by the source's allocation unit;
                // absorb short holes between data runs too, so that a fragmented source does
                // not become thousands of tiny items (the workers find those zeros again).
                while run_end < self.size {
                    let next = self.source.block_status(run_end, self.size - run_end)?;
                    let next_end = next.mapping.end();
                    if !next.zero() || self.backing_has_data(run_end, next_end)? {
                        run_end = align_up(next_end, g).min(self.size);
                        continue;
                    }
                    if next_end - run_end > MERGE_GAP || next_end >= self.size {
                        break;
                    }
                    let after = self.source.block_status(next_end, self.size - next_end)?;
                    if after.zero() {
                        break;
                    }
                    run_end = align_up(after.mapping.end(), g).min(self.size);
                }
                run_start = run_start.min(run_end);
                self.scan = self.scan.max(run_end);
                self.pending = Some((run_start, run_end));
                return Ok(());
            }
        }
        Ok(())
    }

    fn backing_has_data(&self, start: u64, end: u64) -> Result<bool> {
        let Some(backing) = self.target_backing else {
            return Ok(false);
        };
        range_has_data(backing, start, end)
    }
}

/// True when any part of `[start, end)` of `image` is data (past its end counts as zeros).
pub fn range_has_data(image: &Image, start: u64, end: u64) -> Result<bool> {
    let end = end.min(image.virtual_size());
    let mut pos = start;
    while pos < end {
        let status = image.block_status(pos, end - pos)?;
        if !status.zero() {
            return Ok(true);
        }
        pos = status.mapping.end();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Allocation as A;
    use crate::image::tests::MemLayer;
    use std::path::PathBuf;

    fn image(runs: Vec<(u64, u64, A)>) -> Image {
        let size = runs.iter().map(|r| r.0 + r.1).max().unwrap();
        Image::from_layer(Box::new(MemLayer {
            path: PathBuf::from("mem"),
            data: vec![1; size as usize],
            runs,
        }))
    }

    fn plan(img: &Image, cutting: Cutting) -> Vec<(u64, u64, ItemKind)> {
        let mut p = Planner::new(img, None, cutting);
        let mut out = vec![];
        while let Some(i) = p.next_item().unwrap() {
            out.push((i.offset, i.len, i.kind));
        }
        out
    }

    #[test]
    fn items_cover_the_disk_in_order_aligned() {
        let img = image(vec![
            (0, 100, A::Zero),
            (100, 50, A::Data),
            (150, 200_000, A::Unallocated),
            (200_150, 300, A::Data),
            (200_450, 50, A::Zero),
        ]);
        let items = plan(
            &img,
            Cutting {
                granularity: 64,
                zero_granule: 64,
                chunk: 256,
                sparseness: Sparseness::Sparse,
            },
        );
        use ItemKind::*;
        assert_eq!(
            items,
            vec![
                (0, 64, Zero),
                (64, 128, Data),
                (192, 199_936, Zero),
                (200_128, 64, Data),
                (200_192, 256, Data),
                (200_448, 52, Data),
            ]
        );
        let mut pos = 0;
        for (o, l, _) in &items {
            assert_eq!(*o, pos);
            pos += l;
        }
        assert_eq!(pos, 200_500);
    }

    #[test]
    fn short_holes_between_data_are_absorbed() {
        let k = 1024;
        let img = image(vec![
            (0, 4 * k, A::Data),
            (4 * k, 4 * k, A::Zero),
            (8 * k, 4 * k, A::Data),
            (12 * k, 100 * k, A::Unallocated),
            (112 * k, 4 * k, A::Data),
            (116 * k, 4 * k, A::Zero),
        ]);
        let items = plan(
            &img,
            Cutting {
                granularity: 4 * k,
                zero_granule: 4 * k,
                chunk: 1024 * k,
                sparseness: Sparseness::Sparse,
            },
        );
        use ItemKind::*;
        assert_eq!(
            items,
            vec![
                (0, 12 * k, Data),
                (12 * k, 100 * k, Zero),
                (112 * k, 4 * k, Data),
                (116 * k, 4 * k, Zero)
            ]
        );
    }

    #[test]
    fn everything_is_data_without_sparseness() {
        let img = image(vec![(0, 1000, A::Zero)]);
        let items = plan(
            &img,
            Cutting {
                granularity: 512,
                zero_granule: 512,
                chunk: 512,
                sparseness: Sparseness::Dense,
            },
        );
        assert_eq!(
            items,
            vec![(0, 512, ItemKind::Data), (512, 488, ItemKind::Data)]
        );
    }
}
