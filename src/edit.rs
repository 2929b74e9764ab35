//! Images changed in place: what `resize`, `commit`, `rebase`, `amend`, `snapshot -c|-a|-d`,
//! `bitmap` and `measure` need from a format, as types every driver shares.
//!
//! A format opts in by overriding the matching [`Driver`](crate::format::Driver) methods
//! ([`open_mut`](crate::format::Driver::open_mut), [`resize`](crate::format::Driver::resize),
//! [`set_backing`](crate::format::Driver::set_backing), [`amend`](crate::format::Driver::amend),
//! [`edit_snapshot`](crate::format::Driver::edit_snapshot),
//! [`edit_bitmaps`](crate::format::Driver::edit_bitmaps),
//! [`measure`](crate::format::Driver::measure)) and listing the capability (`edit_bitmaps`
//! needs none: a format without bitmaps answers as qemu-img does); the operations
//! built on top (commit and rebase copy data through [`ImageMut`]) live in [`crate::ops`].
//!
//! Every in-place change must be crash-consistent: a process killed at any instant leaves an
//! image that still opens and reads either the old or the new content of each range (for
//! qcow2, leaked clusters that `check -r leaks` reclaims are allowed; corruption is not). The
//! usual order is: write new data where nothing points yet, flush, then switch the one pointer
//! (a table entry, a header field) that makes it visible.

use crate::error::Result;
use crate::format::Format;
use crate::gate::Gate;
use crate::image::{BackingPolicy, Image, OpenOptions};
use crate::options::FormatOptions;
use std::ops::Range;
use std::path::Path;

/// An image opened for writing in place, with its backing chain (if any) open for reading so
/// that a partial write into an unallocated unit copies the rest from the parent.
pub trait ImageMut: Send {
    /// The size of the virtual disk in bytes.
    fn virtual_size(&self) -> u64;

    /// The unit in which the image allocates (cluster, block, grain; 512 for raw). Callers
    /// that copy whole units avoid read-modify-write.
    fn allocation_unit(&self) -> u64;

    /// Writes `data` at virtual `offset`, allocating what is needed. `offset + data.len()`
    /// must not pass the virtual size.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;

    /// Makes `[offset, offset + len)` read differently without writing data, as `how` says.
    fn clear(&mut self, offset: u64, len: u64, how: Clear) -> Result<()>;

    /// Makes every change durable and the metadata consistent (tables, footers, headers).
    fn flush(&mut self) -> Result<()>;

    /// Whether [`write_compressed`](ImageMut::write_compressed) can store units compressed in
    /// this image: `Err` says why not (the default: a format without compressed units, or
    /// whose compressed units are not written in place).
    fn can_write_compressed(&self) -> Result<()> {
        Err(crate::error::Error::unsupported(
            "compressed clusters are not written into existing images of this kind",
        ))
    }

    /// Writes `data`, one whole allocation unit at the unit-aligned virtual `offset` (shorter
    /// only where the disk ends), compressed when that makes it smaller and as
    /// [`write_at`](ImageMut::write_at) writes otherwise; says which. The default refuses as
    /// [`can_write_compressed`](ImageMut::can_write_compressed) does.
    fn write_compressed(&mut self, offset: u64, data: &[u8]) -> Result<Stored> {
        let _ = (offset, data);
        self.can_write_compressed()?;
        Err(crate::error::Error::invalid(
            "internal error: the driver says it writes compressed clusters but does not implement write_compressed",
        ))
    }
}

/// How [`ImageMut::write_compressed`] stored a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Compressed.
    Compressed,
    /// As it is: compressing did not make it smaller.
    Plain,
}

/// What a cleared range reads as afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clear {
    /// Zeros, whatever the backing image holds (a zero flag, or zeros written where the format
    /// has no such flag).
    Zero,
    /// What the backing image holds (zeros without one): the unit is deallocated. This is how
    /// `commit` empties the image it committed.
    Deallocate,
}

/// Whether `resize` may make an image smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shrink {
    /// Refuse a smaller size (qemu-img's default, which protects data).
    #[default]
    Refuse,
    /// Cut the disk; data past the new end is lost (`--shrink`).
    Allow,
}

/// How the space that `resize` adds is reserved (`--preallocation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GrowPreallocation {
    /// Nothing reserved: the new range reads as zeros and costs nothing.
    #[default]
    Off,
    /// Metadata for the new range allocated (qcow2), no data.
    Metadata,
    /// Space reserved with fallocate.
    Falloc,
    /// Zeros written.
    Full,
}

/// A `resize` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeRequest {
    /// The new virtual size in bytes (already resolved from `+N`/`-N`).
    pub new_size: u64,
    /// Whether a smaller size is allowed.
    pub shrink: Shrink,
    /// How grown space is reserved.
    pub preallocation: GrowPreallocation,
}

/// The backing image a `rebase` (or `amend -o backing_file=`) records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBacking {
    /// The name stored in the image, as the user gave it (relative names resolve against the
    /// image's folder when opened).
    pub name: String,
    /// The backing image's format, where the image records it (`-F`).
    pub format: Option<crate::format::Format>,
}

/// An internal-snapshot change (`snapshot -c|-a|-d`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotEdit {
    /// Take a snapshot of the current state with this name.
    Create(String),
    /// Revert the current state to the snapshot with this ID or name.
    Apply(String),
    /// Delete the snapshot with this ID or name.
    Delete(String),
}

/// One operation of `bitmap` (qemu-img's `--add`, `--remove`, `--clear`, `--enable`,
/// `--disable`, `--merge`); a request applies several in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BitmapOp {
    /// Create the bitmap, with no bit set and enabled (it tracks writes). `granularity` is
    /// the bytes of the disk one bit covers; `None` takes the format's default (qcow2: its
    /// cluster size, kept within 4 KiB to 64 KiB, as qemu does).
    Add {
        /// Bytes per bit: a power of two from 512 to 2 GiB.
        granularity: Option<u64>,
    },
    /// Delete the bitmap (an inconsistent one too).
    Remove,
    /// Clear every bit.
    Clear,
    /// Make the bitmap track writes.
    Enable,
    /// Make the bitmap stop tracking writes.
    Disable,
    /// Set every bit that the named bitmap has set: a bitmap of the image itself, or of
    /// [`BitmapEdit::source`] when one is given. Granularities may differ: a source bit sets
    /// every bit whose range overlaps its own.
    Merge(String),
}

impl BitmapOp {
    /// The operation's name in qemu-img's messages (`Operation add on bitmap ...`).
    pub fn verb(&self) -> &'static str {
        match self {
            BitmapOp::Add { .. } => "add",
            BitmapOp::Remove => "remove",
            BitmapOp::Clear => "clear",
            BitmapOp::Enable => "enable",
            BitmapOp::Disable => "disable",
            BitmapOp::Merge(_) => "merge",
        }
    }
}

/// A `bitmap` request: operations on one persistent dirty bitmap of an image.
///
/// The operations run in order, as qemu-img runs them: the first that fails stops the rest,
/// and the ones before it stay done (its error is returned). Errors are worded as qemu-img's
/// (`Operation add on bitmap b0 failed: Bitmap already exists: b0`), which scripts match.
#[derive(Debug, Clone, Copy)]
pub struct BitmapEdit<'a> {
    /// The bitmap the operations apply to.
    pub name: &'a str,
    /// The operations, in order.
    pub ops: &'a [BitmapOp],
    /// The image whose bitmaps [`BitmapOp::Merge`] reads (`-b`); `None`: the image itself.
    pub source: Option<&'a Image>,
}

/// The largest granularity a persistent bitmap may have (2 GiB; qemu's limit).
pub const MAX_BITMAP_GRANULARITY: u64 = 1 << 31;

/// Checks a granularity given to [`BitmapOp::Add`] as qemu does, with its message.
pub fn check_bitmap_granularity(granularity: u64) -> crate::error::Result<()> {
    if granularity < 512 || !granularity.is_power_of_two() {
        return Err(crate::error::Error::invalid(
            "Granularity must be power of 2 and at least 512",
        ));
    }
    if granularity > MAX_BITMAP_GRANULARITY {
        return Err(crate::error::Error::invalid(format!(
            "Granularity exceeds maximum ({MAX_BITMAP_GRANULARITY} bytes)"
        )));
    }
    Ok(())
}

/// The error of operation `op` on bitmap `name` failing because `why`, worded as qemu-img's.
pub fn bitmap_op_failed(op: &BitmapOp, name: &str, why: impl std::fmt::Display) -> crate::Error {
    crate::Error::invalid(format!(
        "Operation {} on bitmap {name} failed: {why}",
        op.verb()
    ))
}

/// What `bitmap` answers for an image whose format holds no persistent bitmaps: as qemu,
/// which sees an image without bitmaps that cannot store any, the first operation fails —
/// `add` because nothing can be stored, every other because the bitmap does not exist.
pub fn no_bitmaps(path: &Path, edit: &BitmapEdit<'_>) -> crate::error::Result<()> {
    let Some(op) = edit.ops.first() else {
        return Ok(());
    };
    let why = match op {
        BitmapOp::Add { granularity } => {
            if edit.name.is_empty() {
                "Bitmap name cannot be empty".to_string()
            } else if let Some(Err(e)) = granularity.map(check_bitmap_granularity) {
                e.message().to_string()
            } else {
                format!(
                    "Can't store persistent bitmaps to {}: Operation not supported",
                    path.display()
                )
            }
        }
        _ => format!("Dirty bitmap '{}' not found", edit.name),
    };
    Err(bitmap_op_failed(op, edit.name, why).with_path(path))
}

/// What `measure` is asked about: an image of `virtual_size` whose data lies in `allocated`.
#[derive(Debug, Clone)]
pub struct MeasureRequest<'a> {
    /// The virtual size of the image to be made.
    pub virtual_size: u64,
    /// The ranges of the source that hold data (sorted, disjoint); empty for `--size`.
    pub allocated: &'a [Range<u64>],
    /// The `-o` options of the image to be made.
    pub options: &'a FormatOptions,
    /// The source's persistent dirty bitmaps, where its format holds them (`None` for
    /// `--size`, or a source whose format holds none): a target that can carry them reports
    /// their size, as qemu-img does.
    pub source_bitmaps: Option<&'a [crate::dirty_bitmap::BitmapEntry]>,
}

impl MeasureRequest<'_> {
    /// How many `unit`-aligned units the allocated ranges touch (each unit counted once).
    pub fn units_touched(&self, unit: u64) -> u64 {
        let mut count = 0;
        let mut last_unit: Option<u64> = None;
        for r in self.allocated {
            if r.start >= r.end {
                continue;
            }
            let mut first = r.start / unit;
            let end = (r.end - 1) / unit;
            if last_unit == Some(first) {
                first += 1;
            }
            if first <= end {
                count += end - first + 1;
            }
            last_unit = Some(end);
        }
        count
    }
}

/// What `measure` answers, in bytes (qemu-img's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measurement {
    /// The file size the conversion of the source needs.
    pub required: u64,
    /// The file size were every byte of the virtual disk allocated.
    pub fully_allocated: u64,
    /// Bytes of persistent bitmaps carried over (qcow2), when the format has them.
    pub bitmaps: Option<u64>,
}

/// What an in-place operation needs besides the path: the gate for the files the image names.
#[derive(Debug, Clone, Copy)]
pub struct EditContext<'a> {
    /// The gate every file the image names is opened through.
    pub gate: &'a Gate,
    /// Whether to go on where a check would otherwise stop the change (`amend --force`,
    /// `rebase` without a readable old backing file).
    pub force: Force,
}

/// Whether to override a safety refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Force {
    /// Refuse unsafe changes (default).
    #[default]
    No,
    /// The user insisted (`--force`).
    Yes,
}

/// The backing chain below the image at `path` (its parent first), opened through
/// `ctx.gate` and verified against the image as a read would, or `None` when the image has no
/// parent. A writer reads it to fill the part of a unit it does not write.
pub fn open_backing_chain(
    path: &Path,
    format: Format,
    ctx: &EditContext<'_>,
) -> Result<Option<Image>> {
    let options = OpenOptions {
        format: Some(format),
        backing: BackingPolicy::Follow,
        gate: *ctx.gate,
        ..OpenOptions::default()
    };
    // Opening the whole chain resolves and verifies the parent exactly as reading does; the
    // chain is then reopened from the parent down, so that it holds no view of the top image
    // (which the caller changes under it).
    let image = Image::open(path, &options)?;
    let Some(parent) = image.layers().get(1) else {
        return Ok(None);
    };
    let parent_options = OpenOptions {
        format: Some(parent.format()),
        ..options
    };
    Ok(Some(Image::open(parent.path(), &parent_options)?))
}

/// The new parent `backing` names for the image at `path` of `format`, opened through
/// `ctx.gate`, for a format whose differencing images cannot lose their parent and whose
/// parent is of its own format: `None` and another format are refused, naming why.
pub fn open_new_parent(
    path: &Path,
    format: Format,
    backing: Option<&NewBacking>,
    ctx: &EditContext<'_>,
) -> Result<std::sync::Arc<crate::host_file::HostFile>> {
    use crate::error::Error;
    use crate::gate::{Lookup, Role};
    let Some(backing) = backing else {
        return Err(Error::unsupported(format!(
            "a differencing {format} image cannot stand without its parent (what it does not hold is the parent's); use 'convert' to make a standalone image"
        ))
        .with_path(path));
    };
    if let Some(f) = backing.format
        && f != format
    {
        return Err(Error::invalid(format!(
            "the parent of a differencing {format} image must be {format}, not {f}"
        ))
        .with_path(path));
    }
    match ctx.gate.open(path, &backing.name, Role::Backing)? {
        Lookup::Opened(file) => Ok(file),
        Lookup::Missing(tried) => Err(Error::invalid(format!(
            "the new parent '{}' does not exist (looked for {})",
            backing.name,
            tried.display()
        ))
        .with_path(path)),
    }
}

/// Reads `buf.len()` bytes at virtual `offset` from the layers below the top of `image` (the
/// backing chain of an image opened for writing in place): what a partial write into an
/// unallocated unit keeps around the new bytes. Ranges no layer holds, or past a smaller
/// parent's end, read as zeros.
pub fn read_below_top(image: &crate::Image, offset: u64, buf: &mut [u8]) -> Result<()> {
    use crate::image::Allocation;
    let layers = image.layers();
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let mut len = (buf.len() - done) as u64;
        let mut found = None;
        for layer in layers.iter().skip(1) {
            let size = layer.virtual_size();
            if pos >= size {
                continue;
            }
            let m = layer
                .map(pos, len.min(size - pos))
                .map_err(|e| e.with_path(layer.path()))?;
            if m.start != pos || m.length == 0 || m.length > len {
                return Err(crate::Error::corrupt(format!(
                    "internal mapping error: asked for {pos}+{len}, got {}+{}",
                    m.start, m.length
                ))
                .with_path(layer.path()));
            }
            len = m.length;
            if m.allocation != Allocation::Unallocated {
                found = Some((layer, m.allocation));
                break;
            }
        }
        let chunk = &mut buf[done..done + len as usize];
        match found {
            Some((layer, Allocation::Data)) => layer
                .read_data(pos, chunk)
                .map_err(|e| e.with_path(layer.path()))?,
            _ => chunk.fill(0),
        }
        done += len as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::FormatOptions;

    #[test]
    fn units_touched_counts_each_unit_once() {
        let opts = FormatOptions::empty(crate::formats::raw::FORMAT);
        let ranges = [0..1, 10..70000, 65536..65537, 200_000..200_001];
        let req = MeasureRequest {
            virtual_size: 1 << 20,
            allocated: &ranges,
            options: &opts,
            source_bitmaps: None,
        };
        // Units of 64 KiB: unit 0 (0..1 and 10..65536), unit 1 (65536..70000), unit 3.
        assert_eq!(req.units_touched(65536), 3);
        assert_eq!(req.units_touched(1 << 20), 1);
    }
}
