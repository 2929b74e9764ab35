//! Cutting a stream source (an image arriving on a pipe) into work items.
//!
//! Runs arrive in order with arbitrary offsets and lengths; items must start and end on the
//! target's granularity. Runs that share a granule are gathered into one item, and the worker
//! assembles the item's bytes from its runs (decoding encoded ones in parallel).

use super::plan::Cutting;
use crate::error::{Error, Result};
use crate::stream::{StreamRun, StreamSource};

/// A range of the virtual disk and the stream runs that fall into it (none: all zeros).
pub struct StreamItem {
    /// First byte (a multiple of the granularity).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The runs inside, in order.
    pub runs: Vec<StreamRun>,
}

/// Pulls runs from a stream source and yields granule-aligned items in order.
pub struct StreamPlanner {
    source: Box<dyn StreamSource>,
    cutting: Cutting,
    size: u64,
    /// Everything before this has been yielded.
    emitted: u64,
    /// The item being gathered: [start, end) and its runs.
    open: Option<StreamItem>,
    /// A run read ahead that belongs to a later item.
    lookahead: Option<StreamRun>,
    finished: bool,
}

fn align_down(x: u64, a: u64) -> u64 {
    x - x % a
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

impl StreamPlanner {
    /// A planner over `source`.
    pub fn new(source: Box<dyn StreamSource>, cutting: Cutting) -> StreamPlanner {
        let size = source.virtual_size();
        StreamPlanner {
            source,
            cutting,
            size,
            emitted: 0,
            open: None,
            lookahead: None,
            finished: false,
        }
    }

    fn next_run(&mut self) -> Result<Option<StreamRun>> {
        if let Some(run) = self.lookahead.take() {
            return Ok(Some(run));
        }
        if self.finished {
            return Ok(None);
        }
        let run = self.source.next_run()?;
        match &run {
            None => self.finished = true,
            Some(r) => {
                let end = r.offset.checked_add(r.len);
                if r.len == 0 || r.len > 16 << 20 || end.is_none_or(|e| e > self.size) {
                    return Err(Error::corrupt(format!(
                        "stream run at {} of {} bytes lies outside the {}-byte disk",
                        r.offset, r.len, self.size
                    )));
                }
            }
        }
        Ok(run)
    }

    /// The next item, or `None` when the whole disk has been covered.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>> {
        let g = self.cutting.granularity;
        loop {
            let Some(run) = self.next_run()? else {
                if let Some(item) = self.open.take() {
                    self.emitted = item.offset + item.len;
                    return Ok(Some(item));
                }
                if self.emitted < self.size {
                    let zero = StreamItem {
                        offset: self.emitted,
                        len: self.size - self.emitted,
                        runs: Vec::new(),
                    };
                    self.emitted = self.size;
                    return Ok(Some(zero));
                }
                return Ok(None);
            };
            let frontier = self
                .open
                .as_ref()
                .map_or(self.emitted, |i| i.offset + i.len);
            let last_end = self
                .open
                .as_ref()
                .and_then(|i| i.runs.last())
                .map_or(self.emitted, |r| r.offset + r.len);
            if run.offset < last_end {
                return Err(Error::corrupt(format!(
                    "stream data at virtual offset {} comes after data at {}; a stream read from a pipe must be in order (convert from a file instead)",
                    run.offset, last_end
                )));
            }
            let start = align_down(run.offset, g).max(self.emitted);
            let end = align_up(run.offset + run.len, g).min(self.size);
            match &mut self.open {
                // The run shares a granule with the open item, or continues it within a chunk.
                Some(item)
                    if start < frontier
                        || (start == frontier
                            && item.len + (end - start) <= self.cutting.chunk) =>
                {
                    item.len = end.max(frontier) - item.offset;
                    item.runs.push(run);
                }
                Some(_) => {
                    let item = self.open.take().expect("matched Some");
                    self.emitted = item.offset + item.len;
                    self.lookahead = Some(run);
                    return Ok(Some(item));
                }
                None => {
                    if start > self.emitted {
                        let zero = StreamItem {
                            offset: self.emitted,
                            len: start - self.emitted,
                            runs: Vec::new(),
                        };
                        self.emitted = start;
                        self.lookahead = Some(run);
                        return Ok(Some(zero));
                    }
                    self.open = Some(StreamItem {
                        offset: start,
                        len: end - start,
                        runs: vec![run],
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::stream::StreamPayload;

    struct Runs(u64, std::vec::IntoIter<(u64, u64)>);

    impl StreamSource for Runs {
        fn format(&self) -> Format {
            crate::formats::vmdk::FORMAT
        }
        fn virtual_size(&self) -> u64 {
            self.0
        }
        fn next_run(&mut self) -> Result<Option<StreamRun>> {
            Ok(self.1.next().map(|(offset, len)| StreamRun {
                offset,
                len,
                payload: StreamPayload::Plain(vec![1; len as usize]),
            }))
        }
    }

    fn plan(
        size: u64,
        runs: Vec<(u64, u64)>,
        g: u64,
        chunk: u64,
    ) -> Result<Vec<(u64, u64, usize)>> {
        let mut p = StreamPlanner::new(
            Box::new(Runs(size, runs.into_iter())),
            Cutting {
                granularity: g,
                zero_granule: g,
                chunk,
                sparseness: crate::convert::Sparseness::Sparse,
            },
        );
        let mut out = vec![];
        while let Some(i) = p.next_item()? {
            out.push((i.offset, i.len, i.runs.len()));
        }
        Ok(out)
    }

    #[test]
    fn gathers_runs_sharing_a_granule_and_fills_gaps_with_zero_items() {
        let items = plan(
            1000,
            vec![(10, 20), (40, 30), (300, 64), (900, 100)],
            64,
            128,
        )
        .unwrap();
        assert_eq!(
            items,
            vec![
                (0, 128, 2),
                (128, 128, 0),
                (256, 128, 1),
                (384, 512, 0),
                (896, 104, 1)
            ]
        );
        let mut pos = 0;
        for (o, l, _) in items {
            assert_eq!(o, pos);
            pos += l;
        }
        assert_eq!(pos, 1000);
    }

    #[test]
    fn contiguous_runs_fill_a_chunk_then_start_a_new_item() {
        let items = plan(512, vec![(0, 64), (64, 64), (128, 64), (192, 64)], 64, 128).unwrap();
        assert_eq!(items, vec![(0, 128, 2), (128, 128, 2), (256, 256, 0)]);
    }

    #[test]
    fn runs_out_of_order_are_refused() {
        assert!(plan(1000, vec![(500, 10), (100, 10)], 64, 128).is_err());
        assert!(plan(1000, vec![(990, 20)], 64, 128).is_err());
    }
}
