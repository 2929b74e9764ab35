//! The commands that change an image in place: `resize`, `amend`, `snapshot`, `bitmap`. Each asks the
//! format's driver, which owns the crash-consistency of its change (see `diskferry::edit`).

use super::Outcome;
use super::args::{
    AmendArgs, BitmapArgs, BitmapFlag, GateArgs, PreallocationArg, ResizeArgs, SnapshotArgs,
};
use super::commands::{emit, open_options, parse_format, printable_lines};
use super::compat::{self, Personality};
use diskferry::edit::{
    BitmapEdit, BitmapOp, EditContext, Force, GrowPreallocation, ResizeRequest, Shrink,
    SnapshotEdit,
};
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

/// `bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)...
/// [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRANULARITY] [--object OBJ] [--image-opts | -f FMT]
/// FILENAME BITMAP`: the usage checks in qemu-img's order and with its messages, then the
/// format's driver applies the operations (`order`, as given on the command line).
pub fn bitmap(args: BitmapArgs, order: Vec<BitmapFlag>) -> Outcome {
    let qemu = Personality::current() == Personality::QemuImg;
    // qemu-img parses -g as it reads the options, before any other check.
    let granularity = match &args.granularity {
        None => None,
        Some(text) => match diskferry::size::cvtnum("granularity", text)? {
            // 0 is no -g at all for qemu-img.
            0 => None,
            // qemu-img hands the value on as a 32-bit number: 6G arrives as 2G, 4G as 0
            // (refused). diskferry itself refuses what is past 2G.
            g if qemu => Some(u64::from(g as u32)),
            g => Some(g),
        },
    };
    if order.is_empty() {
        return Err(Error::invalid(
            "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge",
        ));
    }
    if granularity.is_some() && !order.contains(&BitmapFlag::Add) {
        return Err(Error::invalid("granularity only supported with --add"));
    }
    if args.source_format.is_some() && args.source_file.is_none() {
        return Err(Error::invalid("-F only supported with -b"));
    }
    if args.source_file.is_some() && !order.iter().any(|f| matches!(f, BitmapFlag::Merge(_))) {
        return Err(Error::invalid(
            "Merge bitmap source file only supported with --merge",
        ));
    }
    let [filename, name] = args.operands.as_slice() else {
        return Err(Error::invalid("Expecting filename and bitmap name"));
    };
    if args.image_opts && args.format.is_some() {
        return Err(Error::invalid(
            "--image-opts and --format are mutually exclusive",
        ));
    }
    compat::accept_objects(&args.objects)?;
    let (path, named) = if args.image_opts {
        let (format, path) = compat::image_opts(filename)?;
        (path, format)
    } else {
        (std::path::PathBuf::from(filename), args.format.clone())
    };
    let format = format_of(&path, named.as_deref())?;
    let ops: Vec<BitmapOp> = order
        .into_iter()
        .map(|f| match f {
            BitmapFlag::Merge(source) => BitmapOp::Merge(source),
            BitmapFlag::Add => BitmapOp::Add { granularity },
            BitmapFlag::Remove => BitmapOp::Remove,
            BitmapFlag::Clear => BitmapOp::Clear,
            BitmapFlag::Enable => BitmapOp::Enable,
            BitmapFlag::Disable => BitmapOp::Disable,
        })
        .collect();
    // -b naming the image being changed: qemu-img, holding that image open for writing, fails
    // on its own lock when it opens the source; diskferry refuses it too (the library would:
    // the source's tables may be freed by the operations before the merge), under the
    // qemu-img name in qemu-img's words, which scripts read as "image in use".
    if let Some(file) = &args.source_file
        && let Some(target) = diskferry::image::file_identity(&path)
        && diskferry::image::file_identity(file) == Some(target)
    {
        if qemu {
            let f = diskferry::info::printable(&file.display().to_string());
            eprintln!("qemu-img: Could not open '{f}': Failed to get shared \"write\" lock");
            eprintln!("Is another process using the image [{f}]?");
            return Ok(1);
        }
        return Err(Error::invalid(format!(
            "-b '{}' is the image being changed: to merge one of its own bitmaps, leave -b out",
            file.display()
        ))
        .with_path(&path));
    }
    // As qemu-img, the source image is opened before any operation runs: one that cannot be
    // opened changes nothing.
    let source = match &args.source_file {
        Some(file) => {
            let options = image_alone(parse_format(args.source_format.as_deref())?);
            Some(Image::open(file, &options)?)
        }
        None => None,
    };
    let edit = BitmapEdit {
        name,
        ops: &ops,
        source: source.as_ref(),
    };
    let gate = diskferry::gate::Gate::anywhere();
    let ctx = EditContext {
        gate: &gate,
        force: Force::No,
    };
    match format.driver().edit_bitmaps(&path, &edit, &ctx) {
        Ok(()) => Ok(0),
        Err(e) if e.message().starts_with("Operation ") => {
            let inconsistent = e.message().ends_with("is inconsistent and cannot be used");
            if qemu {
                // qemu-img's words exactly, without the file (scripts match them), and the
                // second line its QMP error carries.
                eprintln!("qemu-img: {}", diskferry::info::printable(e.message()));
                if inconsistent {
                    eprintln!("Try block-dirty-bitmap-remove to delete this bitmap from disk");
                }
                Ok(1)
            } else if inconsistent {
                Err(e.context_after(
                    "it was left in use by an unclean stop, so its bits cannot be trusted; only --remove applies to it",
                ))
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// How `snapshot -l` and `bitmap -b` open an image: the image alone (its own metadata is all
/// they read), never its backing chain.
fn image_alone(format: Option<Format>) -> diskferry::image::OpenOptions {
    let mut options = open_options(
        &GateArgs {
            confine: false,
            no_backing: true,
            allow_devices: false,
            parent: None,
            disk: None,
        },
        format,
    );
    options.backing = BackingPolicy::Ignore;
    options
}

/// `snapshot -l`: qemu-img's table, nothing when there are none (or the format has none).
fn list_snapshots(path: &Path, format: Format) -> Outcome {
    let options = image_alone(Some(format));
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
