//! The conversion engine: the one place where images are copied.
//!
//! Driven by the source's allocation map: unallocated and zero ranges are never read or written
//! as data. Data is read, checked for zeros at the `-S` granularity and (for compressing
//! targets) encoded by a pool of worker threads; for targets that place data at offsets known
//! in advance (raw, fixed VHD, flat VMDK, dynamic VHD planned from the map) the workers also
//! write it there; one writer receives the rest in order. This module also decides what a
//! destination is ([`destination`]): a new file staged without a name and renamed into place
//! when complete, an existing file or device written in place, or a pipe.
//!
//! Memory: at most `2 × threads + 2` chunks of [`CHUNK_SIZE`] bytes are in flight, each with
//! room for its encoded form and, with `-B`, the backing image's bytes — at most 24 MiB of
//! data buffers with two workers, whatever the size of the image. The target's own tables (a
//! VHD's BAT, a VMDK's grain directory) come on top and scale with the virtual size.

mod bitmaps;
mod buffer;
pub mod destination;
mod in_place;
mod in_place_edit;
mod offload;
mod pipeline;
mod plan;
mod stream_plan;
mod target_zero;
mod zero;

pub use bitmaps::Bitmaps;
pub use destination::{Destination, WriteMode};
pub use pipeline::Stats;
pub use plan::{Sparseness, range_has_data};
pub use zero::is_zero;

use crate::detect::{HEAD_LEN, ProbeData};
use crate::error::{Error, Result};
use crate::format::{Capability, Format};
use crate::host_file::Durability;
use crate::image::{Image, OpenOptions};
use crate::ops::Rate;
use crate::options::FormatOptions;
use crate::registry::Registry;
use crate::sink::{Output, PipeSink};
use crate::staging::Staging;
use crate::stream::{StreamRun, StreamSource};
use crate::writer::{BackingTarget, CreateSpec, ImageWriter, Piece, SourceMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes per work item: large enough to amortise system calls, small enough that the pipeline's
/// memory stays small. Always a multiple of the granularity.
pub const CHUNK_SIZE: u64 = 2 << 20;

/// The default `-S`: runs of zeros this long (and aligned) become holes.
pub const DEFAULT_SPARSE_SIZE: u64 = 4096;

/// The largest `-S` (qemu-img's limit too): it sizes the zero-detection granule.
pub const MAX_SPARSE_SIZE: u64 = 16 << 20;

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// How to open the source: `-f`, the gate, `--no-backing`, `--salvage`, the registry.
    pub source: OpenOptions,
    /// `-O`: the target format.
    pub target_format: Format,
    /// `-o`: the target's options, as `key=value,...`.
    pub target_options: String,
    /// `-c`: compress where the target format can.
    pub compress: bool,
    /// `-S`: the smallest run of zeros written as a hole; 0 writes everything (fully allocated).
    pub sparse_size: u64,
    /// `-m`: worker threads, or `None` for one per core.
    pub threads: Option<usize>,
    /// `-B`: make the target a differencing image over this backing image; only what differs
    /// from it is written.
    pub target_backing: Option<PathBuf>,
    /// `-F`: the backing image's format, or `None` to detect it.
    pub target_backing_format: Option<Format>,
    /// Whether the output is flushed to stable storage before it is renamed into place
    /// (`-t writeback`); the command line's default, like qemu-img's, is not to.
    pub durability: Durability,
    /// `-n`: write into an existing destination instead of creating it.
    pub mode: WriteMode,
    /// `-W`: whether workers may write data out of order themselves.
    pub order: WriteOrder,
    /// `-r`: at most this many bytes of the virtual disk a second.
    pub rate: Rate,
    /// `--target-is-zero` (with `-n`): what the existing destination reads before it is written.
    pub target_content: TargetContent,
    /// `-C`: how data ranges are copied.
    pub copy: CopyMode,
    /// `--bitmaps`: whether the source's persistent dirty bitmaps go with it.
    pub bitmaps: Bitmaps,
}

/// What an existing destination (`-n`) holds before the conversion writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetContent {
    /// Anything: every byte is written, zeros included.
    #[default]
    Unknown,
    /// `--target-is-zero`: it reads as zeros everywhere, so zero ranges are not written.
    Zeros,
}

/// How the data ranges of the source's map are copied (`-C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CopyMode {
    /// Read, look for zeros at the `-S` granularity, write what is not zero.
    #[default]
    Detect,
    /// `-C`: copy offloading, as qemu-img's. Data ranges are copied as they are, zeros
    /// included (no detection, so `-S` and `-c` are refused), where both sides allow with
    /// `copy_file_range` so that the file system may share or offload the copy.
    Offload,
}

/// Who writes the data of a target that places it at offsets known in advance (raw, fixed and
/// dynamic VHD, flat VMDK, `-n`).
///
/// In order (the default, as qemu-img's) measured fastest on Linux: buffered writes to one
/// file take the file's lock one writer at a time, so workers writing in parallel only queue
/// (and, in a VM whose vCPUs the host preempts, spin) on it, while the one writer's writes
/// overlap the workers' reads. Realistic raw to raw with the page cache dropped: 0.40 s in
/// order, 0.67 s with two workers writing (bench/bench.py --cold, medians of 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteOrder {
    /// The ordered writer writes everything.
    #[default]
    InOrder,
    /// `-W`: each worker writes its data where it belongs as soon as it has it.
    OutOfOrder,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            source: OpenOptions::default(),
            target_format: crate::formats::raw::FORMAT,
            target_options: String::new(),
            compress: false,
            sparse_size: DEFAULT_SPARSE_SIZE,
            threads: None,
            target_backing: None,
            target_backing_format: None,
            durability: Durability::Flush,
            mode: WriteMode::Create,
            order: WriteOrder::InOrder,
            rate: Rate::Unlimited,
            target_content: TargetContent::Unknown,
            copy: CopyMode::Detect,
            bitmaps: Bitmaps::Leave,
        }
    }
}

/// The number of workers when `-m` is not given: one per core. (Reading ahead is the
/// planner's job, so more workers than cores would add contention, not I/O depth.)
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A source or destination of `-` means standard input or output.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Parses `-o` text for `format`, refusing formats diskferry cannot write.
pub fn parse_target_options(
    registry: &Registry,
    format: Format,
    text: &str,
) -> Result<FormatOptions> {
    registry.require(format, Capability::Write)?;
    FormatOptions::parse(format, format.driver().create_options(), text)
}

/// Answers the writer's planning questions from the source's allocation map.
struct ImageSourceMap {
    image: Arc<Image>,
    sparseness: Sparseness,
}

impl SourceMap for ImageSourceMap {
    fn may_have_data(&self, offset: u64, len: u64) -> Result<bool> {
        match self.sparseness {
            Sparseness::Dense => Ok(true),
            Sparseness::Sparse => range_has_data(&self.image, offset, offset.saturating_add(len)),
        }
    }
}

/// Opens the backing image a new image will refer to. A relative name is relative to the new
/// image's folder, as qemu-img and every hypervisor resolve it; a Windows absolute name
/// (`C:\VMs\base.vhdx`, the parent as Hyper-V will see it) is looked for by its file name
/// there. The user named it, so it is opened directly; its own chain goes through the gate of
/// `options`.
pub fn open_target_backing(
    new_image: &Path,
    stored_name: &Path,
    format: Option<Format>,
    options: &OpenOptions,
) -> Result<BackingTarget> {
    let folder = new_image.parent().unwrap_or(Path::new(""));
    let text = stored_name.to_string_lossy();
    let path = if stored_name.is_absolute() {
        stored_name.to_path_buf()
    } else if crate::winpath::is_absolute(&text) {
        let Some(name) = crate::winpath::file_name(&text) else {
            return Err(Error::invalid(format!(
                "the backing file '{text}' names no file"
            )));
        };
        folder.join(name)
    } else {
        folder.join(stored_name)
    };
    let image = Image::open(
        &path,
        &OpenOptions {
            format,
            ..options.clone()
        },
    )?;
    Ok(BackingTarget {
        stored_name: stored_name.to_string_lossy().into_owned(),
        format: image.top().format(),
        path,
        image: Arc::new(image),
    })
}

/// Answers "may have data" with yes everywhere: for stream sources, whose map is unknown
/// until they have been read.
struct UnknownSourceMap;

impl SourceMap for UnknownSourceMap {
    fn may_have_data(&self, _offset: u64, _len: u64) -> Result<bool> {
        Ok(true)
    }
}

/// A stream source whose errors name it (they would otherwise be blamed on the destination).
struct NamedStream {
    inner: Box<dyn StreamSource>,
    name: &'static str,
}

impl StreamSource for NamedStream {
    fn format(&self) -> Format {
        self.inner.format()
    }

    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size()
    }

    fn next_run(&mut self) -> Result<Option<StreamRun>> {
        self.inner.next_run().map_err(|e| e.with_path(self.name))
    }

    fn name(&self) -> &Path {
        Path::new(self.name)
    }
}

/// What standard input is called in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// Opens an image arriving on standard input, detecting its format from its first bytes.
fn open_stdin_source(format: Option<Format>, registry: &Registry) -> Result<Box<dyn StreamSource>> {
    let mut stdin = std::io::stdin();
    let mut head = vec![0u8; HEAD_LEN];
    let mut filled = 0;
    while filled < head.len() {
        let n = stdin
            .read(&mut head[filled..])
            .map_err(|e| Error::io("cannot read standard input", e).with_path(STDIN_NAME))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    let format = match format {
        Some(f) => f,
        None => {
            if head.is_empty() {
                return Err(Error::invalid("standard input is empty: no image to read"));
            }
            let probe = ProbeData::stream_head(head.clone());
            match registry.detect_probe(&probe) {
                Some(d) if !d.guessed => d.format,
                _ => {
                    if let Some(refusal) = crate::registry::foreign_refusal(&probe) {
                        return Err(refusal.with_path(STDIN_NAME));
                    }
                    return Err(Error::unsupported(format!(
                        "cannot read a raw image from a pipe (its size is unknown); formats that can be read from standard input: {}",
                        registry.names_that_can(Capability::ReadStream).join(", ")
                    )));
                }
            }
        }
    };
    registry
        .require(format, Capability::ReadStream)
        .map_err(|e| e.with_path(STDIN_NAME))?;
    let reader = std::io::Cursor::new(head).chain(stdin);
    let stream = format
        .driver()
        .open_stream(Box::new(reader))
        .map_err(|e| e.with_path(STDIN_NAME))?;
    Ok(Box::new(NamedStream {
        inner: stream,
        name: STDIN_NAME,
    }))
}

/// What the engine reports to its caller while it works, on the calling thread.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A problem that does not stop the conversion (a damaged footer read from its copy).
    Warning(&'a str),
    /// Bytes of the virtual disk written so far, of the total.
    Progress {
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
}

/// Checks `-S`: a multiple of 512 bytes, at most [`MAX_SPARSE_SIZE`].
pub fn check_sparse_size(sparse_size: u64) -> Result<()> {
    if !sparse_size.is_multiple_of(512) {
        return Err(Error::invalid(format!(
            "-S {sparse_size} is not a multiple of 512 bytes"
        )));
    }
    if sparse_size > MAX_SPARSE_SIZE {
        return Err(Error::invalid(format!(
            "-S {sparse_size} is larger than the limit of 16 MiB ({MAX_SPARSE_SIZE} bytes), as qemu-img's"
        )));
    }
    Ok(())
}

/// Converts the image at `source` (`-` for standard input, formats that stream only) into
/// `dest` (`-` for standard output), reporting warnings and progress to `on_event`.
pub fn convert(
    source: &Path,
    dest: &Path,
    options: &ConvertOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Stats> {
    let registry = &options.source.registry;
    let (target_options, sparseness) = validate(options)?;
    let destination = Destination::resolve(dest, options.mode)?;
    let mut copied_bitmaps = Vec::new();
    let (image, stream) = if is_stdio(source) {
        if options.bitmaps != Bitmaps::Leave {
            return Err(Error::unsupported("Source lacks bitmap support"));
        }
        if options.target_backing.is_some() {
            return Err(Error::unsupported(
                "-B cannot be used with a source read from standard input",
            ));
        }
        (
            None,
            Some(open_stdin_source(options.source.format, registry)?),
        )
    } else {
        let image = Image::open(source, &options.source)?;
        for w in image.warnings() {
            on_event(Event::Warning(w));
        }
        if options.bitmaps != Bitmaps::Leave {
            copied_bitmaps = bitmaps::check(
                &image,
                options.bitmaps,
                options.target_format,
                &target_options,
                &mut |w| on_event(Event::Warning(w)),
            )?;
        }
        destination.refuse_overwriting(&image)?;
        (Some(Arc::new(image)), None)
    };
    let backing = match &options.target_backing {
        Some(b) => {
            let target = open_target_backing(
                destination.path(),
                b,
                options.target_backing_format,
                &options.source,
            )?;
            for w in target.image.warnings() {
                on_event(Event::Warning(w));
            }
            destination.refuse_as_backing(&target.path)?;
            Some(target)
        }
        None => None,
    };
    let backing_image = backing.as_ref().map(|b| Arc::clone(&b.image));
    let (size, source_map): (u64, Arc<dyn SourceMap>) = match (&image, &stream) {
        (Some(image), _) => (
            image.virtual_size(),
            Arc::new(ImageSourceMap {
                image: Arc::clone(image),
                sparseness,
            }),
        ),
        (None, Some(stream)) => (stream.virtual_size(), Arc::new(UnknownSourceMap)),
        (None, None) => unreachable!("a source was opened"),
    };
    let spec = CreateSpec {
        size,
        options: target_options,
        backing,
        compress: options.compress,
        source_map: Some(source_map),
        bitmaps: copied_bitmaps,
    };

    let mut staging = Staging::with_durability(options.durability);
    let dest_name = destination.path().to_path_buf();
    let writer: Box<dyn ImageWriter + '_> = make_writer(&destination, &mut staging, options, &spec)
        .map_err(|e| e.with_path(&dest_name))?;
    let source = match (&image, stream) {
        (Some(image), _) => pipeline::Source::Image(image),
        (None, Some(stream)) => pipeline::Source::Stream(stream),
        (None, None) => unreachable!("a source was opened"),
    };
    let stats = drive(
        source,
        backing_image.as_deref(),
        writer,
        options,
        size,
        on_event,
    )
    .map_err(|e| e.with_path(&dest_name))?;
    // A package member's digest, checked while it was read: a mismatch leaves no output.
    if let Some(image) = &image {
        image.finish_checks()?;
    }
    staging.commit()?;
    Ok(stats)
}

/// The new image that holds all of the opened `image`, without a backing image (the callers
/// that hand the engine an image they opened make no differencing images).
fn whole_image_spec(image: &Arc<Image>, options: &ConvertOptions) -> Result<CreateSpec> {
    if options.target_backing.is_some() {
        return Err(Error::invalid(
            "internal error: a converted open image makes no differencing image",
        ));
    }
    let (target_options, sparseness) = validate(options)?;
    Ok(CreateSpec {
        size: image.virtual_size(),
        options: target_options,
        backing: None,
        compress: options.compress,
        source_map: Some(Arc::new(ImageSourceMap {
            image: Arc::clone(image),
            sparseness,
        })),
        bitmaps: Vec::new(),
    })
}

/// Converts an image the caller opened (a slice of one, for `dd`) into `dest`, which is
/// created, replaced or written in place as [`convert`] does it. `options.source` is not used
/// (the image is open); `-B` is refused.
pub fn convert_opened(
    image: &Arc<Image>,
    dest: &Path,
    options: &ConvertOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Stats> {
    let spec = whole_image_spec(image, options)?;
    let size = spec.size;
    let destination = Destination::resolve(dest, options.mode)?;
    destination.refuse_overwriting(image)?;
    let mut staging = Staging::with_durability(options.durability);
    let dest_name = destination.path().to_path_buf();
    let writer = make_writer(&destination, &mut staging, options, &spec)
        .map_err(|e| e.with_path(&dest_name))?;
    let stats = drive(
        pipeline::Source::Image(image),
        None,
        writer,
        options,
        size,
        on_event,
    )
    .map_err(|e| e.with_path(&dest_name))?;
    image.finish_checks()?;
    staging.commit()?;
    Ok(stats)
}

/// Converts the opened `image` into `output`, a sink the caller made (a member of a package
/// being written, a hashing tee, a region of a file): the engine of [`convert`] without its
/// choice of destination. `options.source`, `mode` and `durability` are not used (the image
/// is open, the output made); the output's sink is finished, committing it is the caller's.
pub fn convert_image(
    image: &Arc<Image>,
    output: Output<'_>,
    options: &ConvertOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Stats> {
    let spec = whole_image_spec(image, options)?;
    let size = spec.size;
    let name = output.path().to_path_buf();
    let writer = options
        .target_format
        .driver()
        .create_writer(output, &spec)
        .map_err(|e| e.with_path(&name))?;
    drive(
        pipeline::Source::Image(image),
        None,
        writer,
        options,
        size,
        on_event,
    )
    .map_err(|e| e.with_path(&name))
}

/// Runs the engine from the opened `image` into a `writer` the caller made (a format that is
/// not an image file of the registry, such as an XVA's chunk members): the workers read,
/// find zeros and run the writer's encoder, the writer gets the pieces in order. Uses
/// `options`' threads, `-S` and write order; the writer is finished.
pub fn convert_with_writer(
    image: &Arc<Image>,
    writer: Box<dyn ImageWriter + '_>,
    options: &ConvertOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Stats> {
    check_sparse_size(options.sparse_size)?;
    drive(
        pipeline::Source::Image(image),
        None,
        writer,
        options,
        image.virtual_size(),
        on_event,
    )
}

/// The target's `-o` options checked, and `-S`, `-c` and `-B` checked against the target.
fn validate(options: &ConvertOptions) -> Result<(FormatOptions, Sparseness)> {
    let registry = &options.source.registry;
    let target_options =
        parse_target_options(registry, options.target_format, &options.target_options)?;
    check_sparse_size(options.sparse_size)?;
    if options.compress {
        registry.require(options.target_format, Capability::Compress)?;
    }
    if options.target_backing.is_some() {
        registry.require(options.target_format, Capability::Backing)?;
    }
    if options.target_content == TargetContent::Zeros {
        if options.mode != WriteMode::Existing {
            return Err(Error::invalid("--target-is-zero requires use of -n flag"));
        }
        if options.target_backing.is_some() {
            return Err(Error::invalid(
                "Cannot use --target-is-zero when the destination image has a backing file",
            ));
        }
    }
    if options.copy == CopyMode::Offload && options.compress {
        return Err(Error::invalid(
            "Cannot enable copy offloading when -c is used",
        ));
    }
    let sparseness = if options.sparse_size == 0 {
        Sparseness::Dense
    } else {
        Sparseness::Sparse
    };
    Ok((target_options, sparseness))
}

/// Runs the pipeline from `source` into `writer` and finishes the writer.
fn drive(
    source: pipeline::Source<'_>,
    backing: Option<&Image>,
    mut writer: Box<dyn ImageWriter + '_>,
    options: &ConvertOptions,
    size: u64,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Stats> {
    let sparseness = if options.sparse_size == 0 {
        Sparseness::Dense
    } else {
        Sparseness::Sparse
    };
    // Items align to the target's unit, and to 4 KiB at least (no smaller than -S): the
    // source's data runs (file system blocks, clusters) are that coarse anyway, and aligned
    // items keep direct reads possible. Zeros are looked for at -S within them.
    let unit = writer.granularity().max(512);
    let granularity = options
        .sparse_size
        .clamp(512, 4096)
        .div_ceil(unit)
        .saturating_mul(unit);
    let zero_granule = options
        .sparse_size
        .max(granularity)
        .div_ceil(granularity)
        .saturating_mul(granularity);
    let encoder = writer.encoder();
    let direct = match (options.order, &encoder) {
        (WriteOrder::OutOfOrder, None) => writer.direct(),
        _ => None,
    };
    // -C: the kernel copies where the target writes regular files by position; a target with
    // a backing image (-B) needs every range compared, so it reads as usual.
    let offload = match (options.copy, &encoder, backing) {
        (CopyMode::Offload, None, None) => writer.direct().map(offload::Offload::new),
        _ => None,
    };
    let settings = pipeline::Settings {
        threads: options.threads.unwrap_or_else(default_threads).max(1),
        cutting: plan::Cutting {
            granularity,
            zero_granule,
            chunk: (CHUNK_SIZE / zero_granule).max(1) * zero_granule,
            sparseness,
        },
        encoder,
        direct,
        copy: options.copy,
        offload,
        rate: options.rate,
    };
    let stats = pipeline::run(source, backing, writer.as_mut(), &settings, &mut |done| {
        on_event(Event::Progress { done, total: size })
    })?;
    writer.finish()?;
    Ok(stats)
}

/// The writer for `destination`: new files through `staging`, or the one existing file,
/// device or pipe.
fn make_writer<'a>(
    destination: &Destination,
    staging: &'a mut Staging,
    options: &ConvertOptions,
    spec: &CreateSpec,
) -> Result<Box<dyn ImageWriter + 'a>> {
    let format = options.target_format;
    match destination {
        Destination::Stdout => {
            options
                .source
                .registry
                .require(format, Capability::WriteStream)?;
            let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            let sink = PipeSink::new(Box::new(out), "-");
            format
                .driver()
                .create_writer(Output::single(Box::new(sink)), spec)
        }
        Destination::NewFile(path) => format
            .driver()
            .create_writer(Output::new_files(staging, path.clone()), spec),
        Destination::Device(path) => {
            let sink = crate::sink::FileSink::existing(path, options.durability)?;
            format
                .driver()
                .create_writer(Output::single(Box::new(sink)), spec)
        }
        Destination::Existing(path) => {
            let writer = in_place::writer(path, format, spec, &options.source, options.durability)?;
            Ok(match options.target_content {
                TargetContent::Zeros => Box::new(target_zero::SkipZeros::new(writer)),
                TargetContent::Unknown => writer,
            })
        }
    }
}

/// Creates a new image of `size` bytes (all zeros, or all unallocated over `backing`).
/// Without `size`, a differencing image takes its backing image's size. A device destination
/// is written in place; a symbolic link is followed.
pub fn create(
    path: &Path,
    format: Format,
    size: Option<u64>,
    options_text: &str,
    backing: Option<(&Path, Option<Format>)>,
    open: &OpenOptions,
) -> Result<()> {
    let options = parse_target_options(&open.registry, format, options_text)?;
    if backing.is_some() {
        open.registry.require(format, Capability::Backing)?;
    }
    let destination = Destination::resolve(path, WriteMode::Create)?;
    let backing = match backing {
        Some((name, fmt)) => Some(open_target_backing(destination.path(), name, fmt, open)?),
        None => None,
    };
    let size = match (size, &backing) {
        (Some(s), _) => s,
        (None, Some(b)) => b.image.virtual_size(),
        (None, None) => {
            return Err(Error::invalid(
                "no size given: give a size, or a backing image (-b) to take it from",
            ));
        }
    };
    if let Some(b) = &backing {
        destination.refuse_as_backing(&b.path)?;
    }
    let has_backing = backing.is_some();
    let spec = CreateSpec {
        backing,
        ..CreateSpec::new(size, options)
    };
    let mut staging = Staging::new();
    let convert_options = ConvertOptions {
        source: open.clone(),
        target_format: format,
        ..ConvertOptions::default()
    };
    let name = destination.path().to_path_buf();
    let mut writer = make_writer(&destination, &mut staging, &convert_options, &spec)
        .map_err(|e| e.with_path(&name))?;
    if size > 0 {
        let piece = if has_backing {
            Piece::Unallocated(size)
        } else {
            Piece::Zero(size)
        };
        writer.write(0, piece).map_err(|e| e.with_path(&name))?;
    }
    writer.finish().map_err(|e| e.with_path(&name))?;
    staging.commit()
}
