//! `dd`: copies a slice of an image into a new image, with qemu-img dd's arithmetic: the
//! input is cut at `count × bs` bytes from its start (not from the skip), then `skip × bs`
//! bytes are dropped from the front. The slice is a layer of its own over the input's chain,
//! so the conversion engine copies it as any image: sparse, in parallel, staged and renamed
//! into place.

use crate::convert::{self, ConvertOptions, Event, Stats};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::image::{Allocation, Image, Layer, Mapping};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The operands `bs=`, `count=` and `skip=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdRange {
    /// `bs`: bytes per block (default 512).
    pub block_size: u64,
    /// `count`: the input is cut after this many blocks from its start.
    pub count: Option<u64>,
    /// `skip`: blocks dropped from the input's front.
    pub skip: u64,
}

impl Default for DdRange {
    fn default() -> Self {
        DdRange {
            block_size: 512,
            count: None,
            skip: 0,
        }
    }
}

/// Where the copied bytes lie in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdSlice {
    /// `[start, end)` of the input.
    Bytes {
        /// First byte.
        start: u64,
        /// One past the last.
        end: u64,
    },
    /// The skip lies past the input's end: the output is empty (qemu-img says so and still
    /// makes it).
    SkipPastEnd,
}

impl DdRange {
    /// The slice of an input of `input_size` bytes that is copied.
    pub fn slice(&self, input_size: u64) -> DdSlice {
        let end = match self.count.and_then(|c| c.checked_mul(self.block_size)) {
            Some(n) if n < input_size => n,
            _ => input_size,
        };
        match self.skip.checked_mul(self.block_size) {
            Some(start) if start <= end => DdSlice::Bytes { start, end },
            _ => DdSlice::SkipPastEnd,
        }
    }
}

/// `[start, start + len)` of an image, seen as an image of its own (rounded up to whole
/// sectors, the tail reading as zeros, as qemu-img sizes the images it creates).
struct Slice {
    image: Arc<Image>,
    start: u64,
    len: u64,
    size: u64,
    name: PathBuf,
}

impl Layer for Slice {
    fn format(&self) -> Format {
        self.image.top().format()
    }

    fn path(&self) -> &Path {
        &self.name
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let max_len = max_len.min(self.size - offset);
        if offset >= self.len {
            return Ok(Mapping::new(offset, max_len, Allocation::Zero));
        }
        let s = self
            .image
            .block_status(self.start + offset, max_len.min(self.len - offset))?;
        // Nothing lies under the copy: what no layer holds reads as zeros.
        let allocation = match s.mapping.allocation {
            Allocation::Data => Allocation::Data,
            _ => Allocation::Zero,
        };
        Ok(Mapping::new(offset, s.mapping.length, allocation))
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let inside = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        self.image
            .read_at(self.start + offset, &mut buf[..inside])?;
        buf[inside..].fill(0);
        Ok(())
    }

    fn files(&self) -> Vec<PathBuf> {
        self.image.opened_files()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What `dd` did.
#[derive(Debug)]
pub enum DdOutcome {
    /// The slice was copied.
    Copied(Stats),
    /// The skip lay past the input's end: an empty output was made.
    SkipPastEnd,
}

/// Copies the slice `range` of the image at `input` into a new image at `output` of
/// `options.target_format` (`options.source` opens the input).
pub fn dd(
    input: &Path,
    output: &Path,
    range: &DdRange,
    options: &ConvertOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<DdOutcome> {
    if range.block_size == 0 {
        return Err(Error::invalid("bs must be at least 1"));
    }
    let image = Arc::new(Image::open(input, &options.source)?);
    for w in image.warnings() {
        on_event(Event::Warning(w));
    }
    let slice = range.slice(image.virtual_size());
    let (start, end) = match slice {
        DdSlice::Bytes { start, end } => (start, end),
        DdSlice::SkipPastEnd => (0, 0),
    };
    let len = end - start;
    let layer = Slice {
        image,
        start,
        len,
        size: len.div_ceil(512) * 512,
        name: input.to_path_buf(),
    };
    let sliced = Arc::new(Image::from_layer(Box::new(layer)));
    let stats = convert::convert_opened(&sliced, output, options, on_event)?;
    Ok(match slice {
        DdSlice::Bytes { .. } => DdOutcome::Copied(stats),
        DdSlice::SkipPastEnd => DdOutcome::SkipPastEnd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_follow_qemu_img_dd() {
        let r = |bs, count, skip| DdRange {
            block_size: bs,
            count,
            skip,
        };
        let mib = 1 << 20;
        // Measured with qemu-img dd 10.0.2 on a 10 MiB input.
        assert_eq!(
            r(mib, Some(3), 2).slice(10 * mib),
            DdSlice::Bytes {
                start: 2 * mib,
                end: 3 * mib
            }
        );
        assert_eq!(
            r(1000, Some(5), 3).slice(10 * mib),
            DdSlice::Bytes {
                start: 3000,
                end: 5000
            }
        );
        assert_eq!(
            r(mib, Some(20), 0).slice(10 * mib),
            DdSlice::Bytes {
                start: 0,
                end: 10 * mib
            }
        );
        assert_eq!(
            r(mib, None, 10).slice(10 * mib),
            DdSlice::Bytes {
                start: 10 * mib,
                end: 10 * mib
            }
        );
        assert_eq!(r(mib, None, 20).slice(10 * mib), DdSlice::SkipPastEnd);
        assert_eq!(r(mib, None, u64::MAX).slice(10 * mib), DdSlice::SkipPastEnd);
        assert_eq!(
            r(512, Some(u64::MAX), 0).slice(10 * mib),
            DdSlice::Bytes {
                start: 0,
                end: 10 * mib
            }
        );
    }
}
