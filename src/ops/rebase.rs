//! `rebase`: gives an image a new backing file (or none).
//!
//! Unsafe mode (`-u`) only rewrites the name ([`Driver::set_backing`]). Safe mode first makes
//! the image hold, for every range it leaves to its backing chain, what the old chain reads
//! wherever the new backing reads differently, then switches the name. Until the switch the
//! image still reads through its old chain, and what was written there equals what that chain
//! reads, so a kill at any point leaves an image that reads as before; after the switch it
//! reads the same through the new backing.
//!
//! With [`Compress::Yes`] (`-c`, as qemu-img 10) the clusters the safe mode copies are stored
//! compressed: each cluster the image leaves wholly to its backing chain and that reads
//! differently is written whole, as the old chain reads it, through
//! [`ImageMut::write_compressed`] (stored plainly where it does not shrink); a cluster the
//! image holds part of is completed as without `-c`. Only formats that can compress are
//! accepted, in either mode, with qemu-img's message.
//!
//! [`Driver::set_backing`]: crate::format::Driver::set_backing

use super::{OnProgress, STEP, Status, read_status, status_above};
use crate::edit::{Clear, EditContext, Force, ImageMut, NewBacking, Stored};
use crate::error::{Error, Result};
use crate::format::{Capability, Format};
use crate::gate::{Lookup, Role};
use crate::image::{Allocation, BackingPolicy, Image, OpenOptions};
use std::path::Path;

/// Whether data is copied before the backing file changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebaseMode {
    /// Copy what would read differently first (qemu-img's default).
    #[default]
    Safe,
    /// Change the name only (`-u`): for a backing file moved or renamed, same content.
    Unsafe,
}

/// How to rebase.
#[derive(Debug, Clone)]
pub struct RebaseOptions {
    /// How the image, its old chain and the new backing's chain are opened (`-f`, the gate,
    /// the registry).
    pub open: OpenOptions,
    /// `-b`: the new backing file's name as it is to be stored (relative names mean the
    /// image's folder); `None` (`-b ""`) for no backing file.
    pub backing: Option<String>,
    /// `-F`: the new backing file's format; detected when not given and the file opens.
    pub backing_format: Option<Format>,
    /// `-u` or not.
    pub mode: RebaseMode,
    /// `-c` or not.
    pub compress: Compress,
}

/// The refusal of `-c` for a format that cannot compress, in qemu-img's words (which name no
/// file: the error carries the path, which the qemu-img personality leaves out).
pub const COMPRESSION_UNSUPPORTED: &str = "Compression not supported for this file format";

/// Whether the clusters a safe rebase copies are stored compressed (`-c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compress {
    /// As they are.
    #[default]
    No,
    /// Compressed where that makes them smaller.
    Yes,
}

/// What a rebase did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebaseReport {
    /// Bytes written into the image so that it reads the same over its new backing.
    pub bytes: u64,
    /// Clusters of those stored compressed (with [`Compress::Yes`]).
    pub compressed: u64,
}

/// Rebases the image at `path` (see the module documentation).
pub fn rebase(
    path: &Path,
    options: &RebaseOptions,
    on_progress: OnProgress<'_>,
) -> Result<RebaseReport> {
    let registry = &options.open.registry;
    let mut top_only = options.open.clone();
    top_only.backing = BackingPolicy::Ignore;
    let format = Image::open(path, &top_only)?.top().format();
    if options.compress == Compress::Yes && !format.can(Capability::Compress) {
        // qemu-img's check and words, made before anything else (with -u too).
        return Err(Error::unsupported(COMPRESSION_UNSUPPORTED).with_path(path));
    }
    registry
        .require(format, Capability::Rebase)
        .map_err(|e| e.with_path(path))?;
    if options.mode == RebaseMode::Safe {
        registry
            .require(format, Capability::WriteInPlace)
            .map_err(|e| e.with_path(path))?;
    }
    let ctx = EditContext {
        gate: &options.open.gate,
        force: Force::No,
    };
    let new_image = match &options.backing {
        Some(name) => open_new_backing(path, name, options, options.mode)?,
        None => None,
    };
    let new_backing = options.backing.as_ref().map(|name| NewBacking {
        name: name.clone(),
        format: options
            .backing_format
            .or_else(|| new_image.as_ref().map(|i| i.top().format())),
    });
    let mut report = RebaseReport::default();
    if options.mode == RebaseMode::Safe {
        let old = Image::open(path, &options.open)?;
        let mut top = format.driver().open_mut(path, &ctx)?;
        if options.compress == Compress::Yes {
            top.can_write_compressed()
                .map_err(|e| e.context(format!("rebase -c ({format})")).with_path(path))?;
        }
        let mut out = Out {
            top: top.as_mut(),
            old: &old,
            compress: options.compress,
            unit: 0,
            done: None,
            report: RebaseReport::default(),
        };
        copy_differences(&old, new_image.as_ref(), &mut out, on_progress)?;
        report = out.report;
        top.flush()?;
    }
    format
        .driver()
        .set_backing(path, new_backing.as_ref(), &ctx)?;
    Ok(report)
}

/// Opens the new backing file `name` as the image at `image` will name it: through the gate,
/// relative to the image's folder. In unsafe mode a missing file is no error (the user may be
/// about to put it there), as with qemu-img.
fn open_new_backing(
    image: &Path,
    name: &str,
    options: &RebaseOptions,
    mode: RebaseMode,
) -> Result<Option<Image>> {
    let storage = match options.open.gate.open(image, name, Role::Backing) {
        Ok(Lookup::Opened(file)) => file,
        Ok(Lookup::Missing(resolved)) if mode == RebaseMode::Unsafe => {
            let _ = resolved;
            return Ok(None);
        }
        Ok(Lookup::Missing(resolved)) => {
            return Err(Error::invalid(format!(
                "Could not open new backing file '{name}': no such file ({})",
                resolved.display()
            ))
            .with_path(image));
        }
        Err(e) => return Err(e),
    };
    let open = OpenOptions {
        format: options.backing_format,
        ..options.open.clone()
    };
    match Image::open_storage(storage, &open) {
        Ok(i) => Ok(Some(i)),
        Err(_) if mode == RebaseMode::Unsafe => Ok(None),
        Err(e) => Err(e.context(format!("new backing file '{name}'"))),
    }
}

/// Writes into `out`, for every range the image `old` leaves to its backing chain, the old
/// chain's content wherever `new` (or zeros, without one) reads differently.
fn copy_differences(
    old: &Image,
    new: Option<&Image>,
    out: &mut Out<'_>,
    on_progress: OnProgress<'_>,
) -> Result<()> {
    let size = old.virtual_size();
    let unit = out.top.allocation_unit().clamp(512, STEP);
    out.unit = unit;
    let new_size = new.map_or(0, |n| n.virtual_size());
    let mut old_buf = Vec::new();
    let mut new_buf = Vec::new();
    let mut pos = 0u64;
    on_progress(0, size);
    while pos < size {
        let own = status_above(old, 1, pos, (size - pos).min(STEP))?;
        if own.allocation != Allocation::Unallocated {
            pos += own.len;
            on_progress(pos, size);
            continue;
        }
        let was = old.block_status(pos, own.len)?;
        let mut n = was.mapping.length;
        let new_status = match new {
            Some(img) if pos < new_size => {
                let s = img.block_status(pos, n.min(new_size - pos))?;
                n = s.mapping.length;
                Some(s)
            }
            _ => None,
        };
        let new_is_zero = new_status.is_none_or(|s| s.zero());
        if was.zero() && new_is_zero {
            pos += n;
            on_progress(pos, size);
            continue;
        }
        new_buf.resize(n as usize, 0);
        match (new, new_status) {
            (Some(img), Some(_)) => img.read_at(pos, &mut new_buf)?,
            _ => new_buf.fill(0),
        }
        if was.zero() {
            if new_buf.iter().any(|&b| b != 0) {
                out.zero(pos, n)?;
            }
        } else {
            old_buf.resize(n as usize, 0);
            let status = Status {
                len: n,
                allocation: Allocation::Data,
                depth: was.depth,
            };
            read_status(old, &status, pos, &mut old_buf)?;
            write_differing_units(out, pos, &old_buf, &new_buf)?;
        }
        pos += n;
        on_progress(pos, size);
    }
    Ok(())
}

/// Writes the units of `old` (at virtual `pos`) that differ from `new`, each clipped to the
/// range.
fn write_differing_units(out: &mut Out<'_>, pos: u64, old: &[u8], new: &[u8]) -> Result<()> {
    let unit = out.unit;
    let end = pos + old.len() as u64;
    let mut at = pos;
    while at < end {
        let next = ((at / unit) + 1) * unit;
        let stop = next.min(end);
        let (a, b) = ((at - pos) as usize, (stop - pos) as usize);
        if old[a..b] != new[a..b] {
            out.write(at, &old[a..b])?;
        }
        at = stop;
    }
    Ok(())
}

/// Where a safe rebase's copies go: the image, plainly or (with `-c`) one whole compressed
/// unit at a time.
struct Out<'a> {
    top: &'a mut dyn ImageMut,
    /// The image over its old chain: what each unit reads as now.
    old: &'a Image,
    compress: Compress,
    /// The image's allocation unit (as clamped for copying).
    unit: u64,
    /// The unit last written whole: later pieces of it are in it already.
    done: Option<u64>,
    report: RebaseReport,
}

impl Out<'_> {
    /// Makes `data` at `pos` (within one unit) what the image holds there.
    fn write(&mut self, pos: u64, data: &[u8]) -> Result<()> {
        if self.whole_unit(pos)? {
            return Ok(());
        }
        self.top.write_at(pos, data)?;
        self.report.bytes += data.len() as u64;
        Ok(())
    }

    /// Makes `[pos, pos + len)` read as zeros whatever the new backing holds.
    fn zero(&mut self, pos: u64, len: u64) -> Result<()> {
        if self.compress == Compress::Yes {
            // Unit by unit, so that a unit partly zero and partly data is written whole.
            let end = pos + len;
            let mut at = pos;
            while at < end {
                let stop = ((at / self.unit) + 1) * self.unit;
                let stop = stop.min(end);
                if !self.whole_unit(at)? {
                    self.top.clear(at, stop - at, Clear::Zero)?;
                    self.report.bytes += stop - at;
                }
                at = stop;
            }
            return Ok(());
        }
        self.top.clear(pos, len, Clear::Zero)?;
        self.report.bytes += len;
        Ok(())
    }

    /// With `-c`: makes the whole unit holding `pos` what the image reads there now, compressed,
    /// when the image leaves all of it to its backing chain (else the caller writes the piece
    /// plainly, as qemu-img never compresses into a cluster the image holds part of). Returns
    /// whether the unit is done.
    fn whole_unit(&mut self, pos: u64) -> Result<bool> {
        if self.compress == Compress::No {
            return Ok(false);
        }
        let index = pos / self.unit;
        if self.done == Some(index) {
            return Ok(true);
        }
        let start = index * self.unit;
        let len = self.unit.min(self.top.virtual_size() - start);
        let mut seen = 0;
        while seen < len {
            let own = status_above(self.old, 1, start + seen, len - seen)?;
            if own.allocation != Allocation::Unallocated {
                return Ok(false);
            }
            seen += own.len;
        }
        let mut buf = vec![0u8; len as usize];
        self.old.read_at(start, &mut buf)?;
        // Zeros too are written compressed (a few bytes), as qemu-img writes them.
        if self.top.write_compressed(start, &buf)? == Stored::Compressed {
            self.report.compressed += 1;
        }
        self.report.bytes += len;
        self.done = Some(index);
        Ok(true)
    }
}
