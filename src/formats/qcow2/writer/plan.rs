//! The plan of a stream's layout: which clusters get a slot before any data arrives.
//!
//! The engine may send as data any granule near the source's data: granules are up to 16 MiB
//! (`-S`), data runs are widened to whole granules, and short holes between runs are merged
//! into them. So the plan works in 16 MiB pieces: a piece gets a slot for each of its
//! clusters when the source (or, with `-B`, the backing image, where zeros may have to be
//! written over it) may hold data within 16 MiB of it. Slots that turn out to hold zeros are
//! left free: zeros in the stream, never referenced.

use super::layout::Plan;
use crate::convert::{MAX_SPARSE_SIZE, range_has_data};
use crate::error::Result;
use crate::writer::CreateSpec;

/// The plan for a disk of `clusters` clusters of `cluster_size` bytes (`size` bytes in all):
/// every cluster when `all`, else as the module says.
pub fn plan(
    spec: &CreateSpec,
    size: u64,
    cluster_size: u64,
    clusters: u64,
    all: bool,
) -> Result<Plan> {
    if all {
        return Ok(Plan::new(if clusters > 0 {
            vec![(0, clusters)]
        } else {
            Vec::new()
        }));
    }
    let piece = MAX_SPARSE_SIZE.max(cluster_size);
    let pieces = size.div_ceil(piece);
    let backing = spec.backing.as_ref().map(|b| b.image.clone());
    let near_data = |first: u64, last: u64| -> Result<bool> {
        let start = first.saturating_sub(1) * piece;
        let end = ((last + 2) * piece).min(size);
        if spec.may_have_data(start, end - start)? {
            return Ok(true);
        }
        match &backing {
            Some(img) => range_has_data(img, start, end),
            None => Ok(false),
        }
    };
    let mut chosen = Vec::new();
    // Halve ranges of pieces that may hold data down to single pieces.
    let mut stack = vec![(0u64, pieces.saturating_sub(1))];
    while let Some((first, last)) = stack.pop() {
        if pieces == 0 || !near_data(first, last)? {
            continue;
        }
        if first == last {
            chosen.push(first);
        } else {
            let mid = first + (last - first) / 2;
            stack.push((mid + 1, last));
            stack.push((first, mid));
        }
    }
    let per_piece = piece / cluster_size;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for p in chosen {
        let (start, end) = (p * per_piece, ((p + 1) * per_piece).min(clusters));
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => runs.push((start, end)),
        }
    }
    Ok(Plan::new(runs))
}
