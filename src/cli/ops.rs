//! The commands built on the in-place interface: `commit`, `rebase`, `measure`, `dd`, with
//! qemu-img's spelling, output and exit codes. The work is the library's ([`diskferry::ops`]);
//! this file parses, prints and chooses messages by personality.

use super::Outcome;
use super::args::{CommitArgs, DdArgs, MeasureArgs, OutputFormat, RebaseArgs};
use super::commands::{emit, open_options, parse_format};
use super::compat::{self, Personality, Progress, qemu_driver_name};
use diskferry::convert::{self, ConvertOptions, Event};
use diskferry::format::Capability;
use diskferry::host_file::Durability;
use diskferry::info::printable;
use diskferry::ops::commit::{AfterCommit, CommitOptions, Emptied};
use diskferry::ops::dd::{DdOutcome, DdRange, DdSlice};
use diskferry::ops::measure::MeasureSource;
use diskferry::ops::rebase::{COMPRESSION_UNSUPPORTED, Compress, RebaseMode, RebaseOptions};
use diskferry::ops::{self, Rate};
use diskferry::size::parse_size;
use diskferry::{Error, Image, Registry, options};
use std::path::PathBuf;

/// The cache modes qemu-img knows; diskferry flushes what it changes in place whichever is
/// given, so they are checked and otherwise ignored.
const CACHE_MODES: &[&str] = &["writeback", "unsafe", "none", "directsync", "writethrough"];

fn check_cache(flag: &str, mode: Option<&str>) -> Result<(), Error> {
    match mode {
        Some(m) if !CACHE_MODES.contains(&m) => Err(Error::invalid(format!(
            "Invalid cache option: {m} (for {flag}; valid: {})",
            CACHE_MODES.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// Warns on standard error, above any progress display.
fn warn(progress: &Progress, text: &str) {
    progress.suspend(|| {
        eprintln!(
            "{}: warning: {}",
            Personality::current().program(),
            printable(text)
        )
    });
}

/// `commit [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-q] [-r RATE] IMAGE`.
pub fn commit(args: CommitArgs) -> Outcome {
    check_cache("-t", args.cache.as_deref())?;
    let rate = args.rate.as_deref().map(Rate::parse).transpose()?;
    let options = CommitOptions {
        open: open_options(&args.gate, parse_format(args.format.as_deref())?),
        base: args.base.clone(),
        after: if args.keep {
            AfterCommit::Keep
        } else {
            AfterCommit::Empty
        },
        rate: rate.unwrap_or_default(),
    };
    let mut progress = Progress::new(args.progress && !args.quiet);
    let result = ops::commit::commit(&args.image, &options, &mut |done, total| {
        progress.set(done, total)
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            progress.abandon();
            return Err(e);
        }
    };
    if let Emptied::Unsupported(why) = &report.emptied
        && Personality::current() == Personality::Diskferry
        && !args.quiet
    {
        // qemu-img says nothing when the format cannot be emptied; a person should know the
        // image still holds its data (which now reads the same as the base).
        warn(
            &progress,
            &format!("{why}: the image keeps its data, which the base now holds too"),
        );
    }
    progress.finish(Some(report.bytes));
    if !args.quiet {
        emit("Image committed.\n")?;
    }
    Ok(0)
}

/// `rebase [-f FMT] [-F BACKING_FMT] [-u] [-p] [-q] [-t CACHE] [-T CACHE] -b BACKING IMAGE`.
pub fn rebase(args: RebaseArgs) -> Outcome {
    check_cache("-t", args.cache.as_deref())?;
    check_cache("-T", args.source_cache.as_deref())?;
    let mode = if args.unsafe_mode {
        RebaseMode::Unsafe
    } else {
        RebaseMode::Safe
    };
    if args.backing.is_none() && mode == RebaseMode::Safe {
        return Err(Error::invalid(
            "Must specify backing file (-b) or use unsafe mode (-u)",
        ));
    }
    let new_backing = args.backing.as_deref().filter(|b| !b.is_empty());
    if let Some(name) = new_backing
        && args.backing_format.is_none()
        && Personality::current() == Personality::QemuImg
    {
        // qemu-img 10 refuses to record a backing file without its format (probing one is how
        // a guest could make the host read any file). diskferry itself detects the format
        // through the open gate, which refuses such files, so only the personality refuses.
        return Err(Error::invalid(format!(
            "Could not change the backing file to '{name}': backing format must be specified"
        )));
    }
    let options = RebaseOptions {
        open: open_options(&args.gate, parse_format(args.format.as_deref())?),
        backing: args.backing.clone().filter(|b| !b.is_empty()),
        backing_format: parse_format(args.backing_format.as_deref())?,
        mode,
        compress: if args.compress {
            Compress::Yes
        } else {
            Compress::No
        },
    };
    let mut progress = Progress::new(args.progress && !args.quiet);
    let result = ops::rebase::rebase(&args.image, &options, &mut |done, total| {
        progress.set(done, total)
    });
    match result {
        Ok(report) => {
            progress.finish(Some(report.bytes));
            Ok(0)
        }
        Err(e)
            if e.message() == COMPRESSION_UNSUPPORTED
                && Personality::current() == Personality::QemuImg =>
        {
            // qemu-img names no file here; scripts match its exact line.
            progress.abandon();
            Err(Error::unsupported(COMPRESSION_UNSUPPORTED))
        }
        Err(e) => {
            progress.abandon();
            Err(e)
        }
    }
}

/// `measure [--output human|json] [-f FMT] [-O OUTPUT_FMT] [-o OPTIONS] [-l SNAPSHOT]
/// [--size N | IMAGE]`.
pub fn measure(args: MeasureArgs) -> Outcome {
    let registry = Registry::builtin();
    let target = registry.find(&args.output_format)?;
    let text = args.options.join(",");
    if text
        .split(',')
        .any(|o| o.trim() == "help" || o.trim() == "?")
    {
        registry.require(target, Capability::Write)?;
        emit(&options::describe(target, target.driver().create_options()))?;
        return Ok(0);
    }
    let target_options = convert::parse_target_options(&registry, target, &text)?;
    let image = match (&args.size, &args.image) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "--size N cannot be used together with a filename.",
            ));
        }
        (None, None) => {
            return Err(Error::invalid(
                "Either --size N or one filename must be specified.",
            ));
        }
        (Some(_), None) if args.snapshot.is_some() => {
            return Err(Error::invalid("--size N cannot be used together with -l."));
        }
        (Some(_), None) => None,
        (None, Some(path)) => {
            // vdsm names the image as `json:{...}` with its driver (qemuimg.measure).
            let (format, path) = match super::compat::json_image(path) {
                Some(named) => {
                    let (driver, file) = named?;
                    (driver.or_else(|| args.format.clone()), file)
                }
                None => (args.format.clone(), path.clone()),
            };
            let path = &path;
            let mut open = open_options(&args.gate, parse_format(format.as_deref())?);
            if let Some(spec) = &args.snapshot {
                open.snapshot = Some(diskferry::snapshot::Selector::parse(spec)?);
            }
            Some(Image::open(path, &open)?)
        }
    };
    let source = match (&image, &args.size) {
        (Some(image), _) => MeasureSource::Image(image),
        (None, Some(text)) => MeasureSource::Size(
            parse_size(text)
                .map_err(|_| Error::invalid(format!("Invalid image size specified: '{text}'.")))?,
        ),
        (None, None) => unreachable!("checked above"),
    };
    if !target.can(Capability::Measure) && Personality::current() == Personality::QemuImg {
        return Err(Error::unsupported(format!(
            "Block driver '{}' does not support size measurement",
            qemu_driver_name(target.name())
        )));
    }
    // Reports bitmaps as qemu-img does where the target can hold them and the source's
    // format does (qcow2's measure, from MeasureRequest::source_bitmaps).
    let m = ops::measure::measure(target, &target_options, source)?;
    let text = match args.output {
        OutputFormat::Human => {
            let mut t = format!(
                "required size: {}\nfully allocated size: {}\n",
                m.required, m.fully_allocated
            );
            if let Some(b) = m.bitmaps {
                t.push_str(&format!("bitmaps size: {b}\n"));
            }
            t
        }
        // qemu-img 10 prints the keys in this order (bitmaps first, when there are any).
        OutputFormat::Json => {
            let mut t = String::from("{\n");
            if let Some(b) = m.bitmaps {
                t.push_str(&format!("    \"bitmaps\": {b},\n"));
            }
            t.push_str(&format!(
                "    \"required\": {},\n    \"fully-allocated\": {}\n}}\n",
                m.required, m.fully_allocated
            ));
            t
        }
    };
    emit(&text)?;
    Ok(0)
}

/// The operands of `dd`, parsed as qemu-img parses them.
#[derive(Debug, Default)]
struct DdOperands {
    range: DdRange,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
}

/// A block count (`count=`, `skip=`): a plain number, as qemu-img reads it.
fn dd_blocks(key: &str, value: &str) -> Result<u64, Error> {
    match value.trim().parse::<i128>() {
        Ok(n) if (0..=i64::MAX as i128).contains(&n) => Ok(n as u64),
        Ok(_) => Err(Error::invalid(format!(
            "Invalid {key} specified. Must be between 0 and {}.",
            i64::MAX
        ))),
        Err(_) => Err(Error::invalid(format!(
            "Invalid {key} specified: '{value}'."
        ))),
    }
}

fn parse_dd_operands(operands: &[String]) -> Result<DdOperands, Error> {
    let mut out = DdOperands::default();
    for op in operands {
        let Some((key, value)) = op.split_once('=') else {
            return Err(Error::invalid(format!("unrecognized operand {op}")));
        };
        match key {
            "bs" => {
                let n = parse_size(value)
                    .map_err(|_| Error::invalid(format!("Invalid bs specified: '{value}'.")))?;
                if n == 0 || n > i32::MAX as u64 {
                    return Err(Error::invalid(format!(
                        "Invalid bs specified. Must be between 1 and {}.",
                        i32::MAX
                    )));
                }
                out.range.block_size = n;
            }
            "count" => out.range.count = Some(dd_blocks(key, value)?),
            "skip" => out.range.skip = dd_blocks(key, value)?,
            "if" => out.input = Some(PathBuf::from(value)),
            "of" => out.output = Some(PathBuf::from(value)),
            // qemu-img names the key alone when there is one.
            _ => return Err(Error::invalid(format!("unrecognized operand {key}"))),
        }
    }
    Ok(out)
}

/// `dd [-f FMT] [-O OUTPUT_FMT] [bs=N] [count=N] [skip=N] if=INPUT of=OUTPUT`.
pub fn dd(args: DdArgs) -> Outcome {
    let ops_args = parse_dd_operands(&args.operands)?;
    let (Some(input), Some(output)) = (&ops_args.input, &ops_args.output) else {
        return Err(Error::invalid("Must specify both input and output files"));
    };
    let source = open_options(&args.gate, parse_format(args.format.as_deref())?);
    let target_format = Registry::builtin().find(&args.output_format)?;
    // dd has no -o, but the qemu-img personality still owes qemu-img's creation defaults
    // (VHD's CHS rounding, VMDK's ide adapter, VHDX's block size by size), as convert and
    // create give them; the VHDX one depends on the size of the slice written.
    let slice_size = if compat::wants_size(target_format.name(), "") {
        match ops_args
            .range
            .slice(Image::open(input, &source)?.virtual_size())
        {
            DdSlice::Bytes { start, end } => Some((end - start).div_ceil(512) * 512),
            DdSlice::SkipPastEnd => Some(0),
        }
    } else {
        None
    };
    let options = ConvertOptions {
        source,
        target_format,
        target_options: compat::library_options(target_format.name(), "", slice_size),
        // qemu-img leaves what it writes to the kernel's writeback, as convert's default does.
        durability: Durability::Unsafe,
        ..ConvertOptions::default()
    };
    let outcome = ops::dd::dd(input, output, &ops_args.range, &options, &mut |e| {
        if let Event::Warning(w) = e {
            eprintln!(
                "{}: warning: {}",
                Personality::current().program(),
                printable(w)
            );
        }
    })?;
    if let DdOutcome::SkipPastEnd = outcome {
        // qemu-img says so, makes the empty output and succeeds; scripts may rely on both.
        eprintln!(
            "{}: {}: cannot skip to specified offset",
            Personality::current().program(),
            printable(&input.display().to_string())
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(list: &[&str]) -> Result<DdOperands, Error> {
        parse_dd_operands(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn dd_operands_are_read_as_qemu_img_reads_them() {
        let o = ops(&["if=a", "of=b", "bs=1M", "count=3", "skip=2", "bs=2k"]).unwrap();
        assert_eq!(o.range.block_size, 2048);
        assert_eq!((o.range.count, o.range.skip), (Some(3), 2));
        for (bad, msg) in [
            ("foo", "unrecognized operand foo"),
            ("conv=notrunc", "unrecognized operand conv"),
            (
                "bs=0",
                "Invalid bs specified. Must be between 1 and 2147483647.",
            ),
            (
                "bs=3G",
                "Invalid bs specified. Must be between 1 and 2147483647.",
            ),
            ("bs=1x", "Invalid bs specified: '1x'."),
            ("count=1k", "Invalid count specified: '1k'."),
            (
                "count=-1",
                "Invalid count specified. Must be between 0 and 9223372036854775807.",
            ),
            ("skip=x", "Invalid skip specified: 'x'."),
        ] {
            let err = ops(&[bad]).unwrap_err();
            assert_eq!(err.to_string(), msg, "{bad}");
        }
    }
}
