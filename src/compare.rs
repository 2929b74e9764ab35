//! Comparing the content of two images, as `qemu-img compare` does.

use crate::convert::is_zero;
use crate::error::Result;
use crate::image::Image;

/// Bytes compared per read.
const COMPARE_CHUNK: u64 = 2 << 20;

/// The verdict of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Same content (and, in strict mode, same size and allocation).
    Identical,
    /// The first byte at which the content differs.
    ContentMismatch(u64),
    /// Strict mode: the sizes differ.
    SizeMismatch,
    /// Strict mode: one image allocates a range the other does not.
    AllocationMismatch(u64),
}

/// What a comparison reports while it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareEvent {
    /// `done` bytes of `total` compared; `total` is the larger image's size, as qemu-img
    /// counts. Reported after each range both images leave unallocated or zero, and after
    /// each piece of at most 2 MiB read.
    Progress {
        /// Bytes compared so far.
        done: u64,
        /// Bytes to compare in all.
        total: u64,
    },
    /// The images' sizes differ (not in strict mode) and their common part is the same: the
    /// larger image's rest is checked for zeros next. qemu-img warns of the mismatch here.
    SizeMismatch,
}

/// Compares `a` and `b`. Without `strict`, an image larger than the other must read as zeros
/// past the smaller one's end (qemu-img's rule); with it, sizes and allocation must match too.
pub fn compare_images(a: &Image, b: &Image, strict: bool) -> Result<Comparison> {
    compare_images_reporting(a, b, strict, &mut |_| {})
}

/// [`compare_images`], reporting its progress (and the moment a size mismatch is found to
/// matter) to `on_event` as it goes.
pub fn compare_images_reporting(
    a: &Image,
    b: &Image,
    strict: bool,
    on_event: &mut dyn FnMut(CompareEvent),
) -> Result<Comparison> {
    let (size_a, size_b) = (a.virtual_size(), b.virtual_size());
    if strict && size_a != size_b {
        return Ok(Comparison::SizeMismatch);
    }
    let common = size_a.min(size_b);
    let total = size_a.max(size_b);
    let mut progress = |done: u64| on_event(CompareEvent::Progress { done, total });
    let mut buf_a = Vec::new();
    let mut buf_b = Vec::new();
    let mut pos = 0;
    while pos < common {
        let sa = a.block_status(pos, common - pos)?;
        let sb = b.block_status(pos, sa.mapping.length)?;
        let len = sb.mapping.length;
        if strict && sa.present() != sb.present() {
            return Ok(Comparison::AllocationMismatch(pos));
        }
        if !(sa.zero() && sb.zero()) {
            let mut at = pos;
            while at < pos + len {
                let n = (pos + len - at).min(COMPARE_CHUNK) as usize;
                buf_a.resize(n, 0);
                buf_b.resize(n, 0);
                a.read_at(at, &mut buf_a)?;
                b.read_at(at, &mut buf_b)?;
                if buf_a != buf_b {
                    let i = buf_a
                        .iter()
                        .zip(&buf_b)
                        .position(|(x, y)| x != y)
                        .expect("buffers differ");
                    return Ok(Comparison::ContentMismatch(at + i as u64));
                }
                at += n as u64;
                progress(at);
            }
        } else {
            progress(pos + len);
        }
        pos += len;
    }
    if size_a == size_b {
        return Ok(Comparison::Identical);
    }
    on_event(CompareEvent::SizeMismatch);
    let longer = if size_a > size_b { a } else { b };
    let mut progress = |done: u64| on_event(CompareEvent::Progress { done, total });
    if let Some(offset) = scan_non_zero(longer, common, &mut progress)? {
        return Ok(Comparison::ContentMismatch(offset));
    }
    Ok(Comparison::Identical)
}

/// The first non-zero byte of `image` at or after `from`, if any.
pub fn first_non_zero(image: &Image, from: u64) -> Result<Option<u64>> {
    scan_non_zero(image, from, &mut |_| {})
}

/// [`first_non_zero`], calling `progress` with the offset reached after each range skipped
/// and each piece read.
fn scan_non_zero(image: &Image, from: u64, progress: &mut dyn FnMut(u64)) -> Result<Option<u64>> {
    let size = image.virtual_size();
    let mut buf = Vec::new();
    let mut pos = from;
    while pos < size {
        let s = image.block_status(pos, size - pos)?;
        let end = s.mapping.end();
        if !s.zero() {
            let mut at = pos;
            while at < end {
                let n = (end - at).min(COMPARE_CHUNK) as usize;
                buf.resize(n, 0);
                image.read_at(at, &mut buf)?;
                if !is_zero(&buf) {
                    let i = buf.iter().position(|&x| x != 0).expect("non-zero");
                    return Ok(Some(at + i as u64));
                }
                at += n as u64;
                progress(at);
            }
        } else {
            progress(end);
        }
        pos = end;
    }
    Ok(None)
}
