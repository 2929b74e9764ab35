//! `commit`: copies what an image (and every layer between it and its base) holds into the
//! base, through the base's [`ImageMut`](crate::edit::ImageMut), then empties the image unless asked not to.
//!
//! Crash consistency follows from the order: the base is written and flushed while the top
//! still holds every range (so the top reads the same throughout), and only then are the top's
//! units deallocated, each of which then reads the base's identical copy.

use super::{OnProgress, Rate, STEP, Throttle, read_status, status_above};
use crate::edit::{
    Clear, EditContext, Force, GrowPreallocation, NewBacking, ResizeRequest, Shrink,
};
use crate::error::{Error, Result};
use crate::format::Capability;
use crate::image::{Allocation, Image, OpenOptions, file_identity};
use std::path::{Path, PathBuf};

/// What happens to the committed image afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterCommit {
    /// Deallocate everything it holds, so it reads through to the base (qemu-img's default).
    #[default]
    Empty,
    /// Leave it as it is (`-d`, and whenever `-b` names a base further down the chain).
    Keep,
}

/// How to commit.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// How the image and its chain are opened (`-f`, the gate, the registry).
    pub open: OpenOptions,
    /// `-b`: the image of the chain to commit into; `None` for the image's direct backing file.
    pub base: Option<PathBuf>,
    /// `-d`: whether to empty the image afterwards.
    pub after: AfterCommit,
    /// `-r`: the rate limit.
    pub rate: Rate,
}

/// Whether the committed image was emptied.
#[derive(Debug)]
pub enum Emptied {
    /// Its units were deallocated.
    Yes,
    /// It was kept as asked (`-d`, `-b`).
    Kept,
    /// Its format cannot deallocate in place; its data stays (and reads as the base now does).
    Unsupported(Error),
}

/// What a commit did.
#[derive(Debug)]
pub struct CommitReport {
    /// Bytes of the virtual disk copied into the base (data and zeroed ranges).
    pub bytes: u64,
    /// The base written into.
    pub base: PathBuf,
    /// Whether the image was emptied.
    pub emptied: Emptied,
}

/// Commits the image at `path` into its base (see the module documentation).
pub fn commit(
    path: &Path,
    options: &CommitOptions,
    on_progress: OnProgress<'_>,
) -> Result<CommitReport> {
    let image = Image::open(path, &options.open)?;
    if image.layers().len() < 2 {
        return Err(Error::invalid("Image does not have a backing file").with_path(path));
    }
    let base_depth = match &options.base {
        None => 1,
        Some(name) => find_in_chain(&image, name).ok_or_else(|| {
            Error::invalid(format!(
                "Did not find '{}' in the backing chain of '{}'",
                name.display(),
                path.display()
            ))
        })?,
    };
    // Layers between the top and a deeper base become stale once the base holds their data,
    // so the top must keep its own (qemu-img: -b implies -d).
    let after = if base_depth > 1 {
        AfterCommit::Keep
    } else {
        options.after
    };
    let registry = &options.open.registry;
    let base_layer = &image.layers()[base_depth];
    let base_path = base_layer.path().to_path_buf();
    let base_format = base_layer.format();
    registry
        .require(base_format, Capability::WriteInPlace)
        .map_err(|e| e.with_path(&base_path))?;
    let ctx = EditContext {
        gate: &options.open.gate,
        force: Force::No,
    };
    let size = image.virtual_size();
    if base_layer.virtual_size() < size {
        // The base must hold the whole disk, as qemu-img grows it.
        registry
            .require(base_format, Capability::Resize)
            .map_err(|e| {
                e.context(format!(
                    "the base is smaller ({} bytes) than the image ({size} bytes)",
                    base_layer.virtual_size()
                ))
                .with_path(&base_path)
            })?;
        base_format.driver().resize(
            &base_path,
            &ResizeRequest {
                new_size: size,
                shrink: Shrink::Refuse,
                preallocation: GrowPreallocation::Off,
            },
            &ctx,
        )?;
    }
    let mut base = base_format.driver().open_mut(&base_path, &ctx)?;
    let mut throttle = Throttle::new(options.rate);
    let mut buf = Vec::new();
    let mut copied = 0u64;
    let mut pos = 0u64;
    on_progress(0, size);
    while pos < size {
        let status = status_above(&image, base_depth, pos, (size - pos).min(STEP))?;
        let n = status.len;
        match status.allocation {
            Allocation::Unallocated => {}
            Allocation::Zero => {
                base.clear(pos, n, Clear::Zero)?;
                copied += n;
            }
            Allocation::Data => {
                buf.resize(n as usize, 0);
                read_status(&image, &status, pos, &mut buf)?;
                base.write_at(pos, &buf)?;
                copied += n;
                throttle.account(n);
            }
        }
        pos += n;
        on_progress(pos, size);
    }
    base.flush()?;
    drop(base);
    if base_depth == 1 {
        relink_top(&image, options, &ctx)?;
    }
    let emptied = match after {
        AfterCommit::Keep => Emptied::Kept,
        AfterCommit::Empty => empty(&image, &ctx)?,
    };
    Ok(CommitReport {
        bytes: copied,
        base: base_path,
        emptied,
    })
}

/// Records the top's link to its base again when the commit changed what the link checks.
///
/// Formats that tie a child to its parent's content identity (VHDX's parent_linkage is the
/// parent's DataWriteGuid, which every write to the parent must change, MS-VHDX 2.2.2.1)
/// refuse the chain once the base was written, although the top still reads the same over it
/// (the base now holds the top's data below it). Hyper-V's own merge leaves no child behind;
/// here the top stays, so it is re-linked to the same name, the way `rebase -u` would.
fn relink_top(image: &Image, options: &CommitOptions, ctx: &EditContext<'_>) -> Result<()> {
    let top = image.top();
    if Image::open(top.path(), &options.open).is_ok() {
        return Ok(());
    }
    let (Some(link), true) = (top.backing(), top.format().can(Capability::Rebase)) else {
        return Ok(());
    };
    // The name the base was found by (the link's stored form may be a Windows path).
    let base = image.layers()[1].path();
    let Some(name) = link.names.iter().find(|n| {
        let found = crate::gate::Gate::resolve(top.path(), n);
        file_identity(&found).is_some() && file_identity(&found) == file_identity(base)
    }) else {
        return Ok(());
    };
    top.format().driver().set_backing(
        top.path(),
        Some(&NewBacking {
            name: name.clone(),
            format: link.format,
        }),
        ctx,
    )
}

/// Deallocates everything the top holds, where its format can.
fn empty(image: &Image, ctx: &EditContext<'_>) -> Result<Emptied> {
    let top = image.top();
    let format = top.format();
    if !format.can(Capability::WriteInPlace) {
        return Ok(Emptied::Unsupported(
            crate::format::refusal(format.name(), Capability::WriteInPlace).with_path(top.path()),
        ));
    }
    let mut m = format.driver().open_mut(top.path(), ctx)?;
    let size = m.virtual_size();
    m.clear(0, size, Clear::Deallocate)?;
    m.flush()?;
    Ok(Emptied::Yes)
}

/// The depth of the layer of `image`'s chain that `name` means: the same file, named from the
/// working folder or relative to the top image's folder (as qemu-img looks it up).
fn find_in_chain(image: &Image, name: &Path) -> Option<usize> {
    let top = image.top().path();
    let candidates: Vec<_> = [
        name.to_path_buf(),
        crate::gate::Gate::resolve(top, &name.to_string_lossy()),
    ]
    .iter()
    .filter_map(|p| file_identity(p))
    .collect();
    image
        .layers()
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, l)| {
            let id = l
                .storage(0)
                .and_then(|s| s.identity())
                .or_else(|| file_identity(l.path()));
            id.is_some_and(|id| candidates.contains(&id))
        })
        .map(|(depth, _)| depth)
}
