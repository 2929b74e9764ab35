//! The commands that change an image in place: `resize`, `amend`, `snapshot`. Each asks the
//! format's driver, which owns the crash-consistency of its change (see `diskferry::edit`).

use super::Outcome;
use super::args::{AmendArgs, GateArgs, PreallocationArg, ResizeArgs, SnapshotArgs};
use super::commands::{emit, open_options, parse_format, printable_lines};
use super::compat::Personality;
use diskferry::edit::{EditContext, Force, GrowPreallocation, ResizeRequest, Shrink, SnapshotEdit};
use diskferry::format::Capability;
use diskferry::host_file::HostFile;
use diskferry::image::BackingPolicy;
use diskferry::size::parse_size;
use diskferry::{Error, ErrorKind, Format, Image, Registry, options};
use std::path::Path;

/// The format of the image at `path`: the one named, else detected from the content.
fn format_of(path: &Path, named: Option<&str>) -> Result<Format, Error> {
    match parse_format(named)? {
        Some(f) => Ok(f),
        None => Ok(Registry::builtin().detect(&HostFile::open(path)?)?.format),
    }
}

/// Fails unless `format` can do `cap`, naming the image.
fn require(format: Format, cap: Capability, path: &Path) -> Result<(), Error> {
    Registry::builtin()
        .require(format, cap)
        .map_err(|e| e.with_path(path))
}

/// `resize [-f FMT] [--shrink] [--preallocation=P] [-q] IMAGE [+|-]SIZE`.
pub fn resize(args: ResizeArgs) -> Outcome {
    let format = format_of(&args.image, args.format.as_deref())?;
    require(format, Capability::Resize, &args.image)?;
    let gate = open_options(&args.gate, Some(format)).gate;
    let current = current_size(&args.image, &args.gate, format)?;
    let new_size = resolve_size(&args.size, current).map_err(|e| e.with_path(&args.image))?;
    let request = ResizeRequest {
        new_size,
        shrink: if args.shrink {
            Shrink::Allow
        } else {
            Shrink::Refuse
        },
        preallocation: match args.preallocation {
            None | Some(PreallocationArg::Off) => GrowPreallocation::Off,
            Some(PreallocationArg::Metadata) => GrowPreallocation::Metadata,
            Some(PreallocationArg::Falloc) => GrowPreallocation::Falloc,
            Some(PreallocationArg::Full) => GrowPreallocation::Full,
        },
    };
    if new_size < current && request.shrink == Shrink::Refuse {
        return Err(Error::invalid(
            "Use the --shrink option to perform a shrink operation (data past the new end is lost)",
        )
        .with_path(&args.image));
    }
    let ctx = EditContext {
        gate: &gate,
        force: Force::No,
    };
    format.driver().resize(&args.image, &request, &ctx)?;
    if !args.quiet {
        emit("Image resized.\n")?;
    }
    Ok(0)
}

/// The virtual size of the image at `path`, its backing chain left closed.
fn current_size(path: &Path, gate: &GateArgs, format: Format) -> Result<u64, Error> {
    let mut options = open_options(gate, Some(format));
    options.backing = BackingPolicy::Ignore;
    Ok(Image::open(path, &options)?.virtual_size())
}

/// `SIZE`, `+SIZE` or `-SIZE` against the current size, as qemu-img reads them.
fn resolve_size(text: &str, current: u64) -> Result<u64, Error> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('+') {
        current
            .checked_add(parse_size(rest)?)
            .ok_or_else(|| Error::invalid(format!("size {text}: too large")))
    } else if let Some(rest) = text.strip_prefix('-') {
        current.checked_sub(parse_size(rest)?).ok_or_else(|| {
            Error::invalid(format!(
                "size {text}: the image would be smaller than empty"
            ))
        })
    } else {
        parse_size(text)
    }
}

/// `amend [-f FMT] [--force] -o OPTIONS IMAGE`.
pub fn amend(args: AmendArgs) -> Outcome {
    let format = format_of(&args.image, args.format.as_deref())?;
    let text = args.options.join(",");
    let specs = format.driver().amend_options();
    if text
        .split(',')
        .any(|o| o.trim() == "help" || o.trim() == "?")
    {
        require(format, Capability::Amend, &args.image)?;
        emit(&options::describe(format, specs))?;
        return Ok(0);
    }
    require(format, Capability::Amend, &args.image)?;
    let values = options::FormatOptions::parse(format, specs, &text)
        .map_err(|e| e.with_path(&args.image))?;
    let gate = open_options(&args.gate, Some(format)).gate;
    let ctx = EditContext {
        gate: &gate,
        force: if args.force { Force::Yes } else { Force::No },
    };
    format
        .driver()
        .amend(&args.image, &values, &ctx)
        .map_err(|e| amend_refusal(e, &args.image))?;
    Ok(0)
}

/// A refusal of `amend` as the program prints it: qemu-img prints its driver's refusal
/// alone ("Cannot downgrade ..."), without the image's name, and scripts match that text;
/// diskferry names the image, as in every other error.
fn amend_refusal(e: Error, image: &Path) -> Error {
    let plain = e.path() == Some(image) && e.offset().is_none() && e.io_source().is_none();
    if !plain || Personality::current() != Personality::QemuImg {
        return e;
    }
    match e.kind() {
        ErrorKind::Unsupported => Error::unsupported(e.message()),
        ErrorKind::InvalidInput => Error::invalid(e.message()),
        _ => e,
    }
}

/// `snapshot -l|-c NAME|-a SNAPSHOT|-d SNAPSHOT IMAGE`.
pub fn snapshot(args: SnapshotArgs) -> Outcome {
    let format = format_of(&args.image, args.format.as_deref())?;
    let edit = if let Some(name) = args.create {
        SnapshotEdit::Create(name)
    } else if let Some(name) = args.apply {
        SnapshotEdit::Apply(name)
    } else if let Some(name) = args.delete {
        SnapshotEdit::Delete(name)
    } else {
        return list_snapshots(&args.image, format);
    };
    require(format, Capability::EditSnapshots, &args.image)?;
    let gate = diskferry::gate::Gate::anywhere();
    let ctx = EditContext {
        gate: &gate,
        force: Force::No,
    };
    format.driver().edit_snapshot(&args.image, &edit, &ctx)?;
    Ok(0)
}

/// `snapshot -l`: qemu-img's table, nothing when there are none (or the format has none).
fn list_snapshots(path: &Path, format: Format) -> Outcome {
    let mut options = open_options(
        &GateArgs {
            confine: false,
            no_backing: true,
            allow_devices: false,
            parent: None,
            disk: None,
        },
        Some(format),
    );
    options.backing = BackingPolicy::Ignore;
    let image = Image::open(path, &options)?;
    // A format without internal snapshots has none to list: an empty list, as qemu-img's
    // (scripts list the snapshots of every disk of a VM before a migration).
    let list = image.top().snapshots();
    if !list.is_empty() {
        emit(&printable_lines(&diskferry::snapshot::list_text(&list)))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::resolve_size;

    #[test]
    fn sizes_resolve_as_qemu_img_reads_them() {
        assert_eq!(resolve_size("2G", 1 << 30).unwrap(), 2 << 30);
        assert_eq!(resolve_size("+1G", 1 << 30).unwrap(), 2 << 30);
        assert_eq!(resolve_size("-512M", 1 << 30).unwrap(), 512 << 20);
        assert!(resolve_size("-2G", 1 << 30).is_err());
    }
}
