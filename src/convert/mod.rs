//! The conversion engine: the one place where images are copied.
//!
//! Driven by the source's allocation map: unallocated and zero ranges are never read or written
//! as data. Data is read, checked for zeros at the `-S` granularity and (for compressing
//! targets) encoded by a pool of worker threads; one writer receives the result in order. The
//! output is staged without a name (or under a hidden one) and appears only when complete.
//!
//! Memory: at most `2 × threads + 2` chunks of [`CHUNK_SIZE`] bytes are in flight, each with
//! room for its encoded form and, with `-B`, the backing image's bytes — at most 24 MiB of
//! data buffers with two workers, whatever the size of the image. The target's own tables (a
//! VHD's BAT, a VMDK's grain directory) come on top and scale with the virtual size.

mod pipeline;
mod plan;
mod stream_plan;
mod zero;

pub use pipeline::Stats;
pub use plan::range_has_data;
pub use zero::is_zero;

use crate::detect::{HEAD_LEN, ProbeData, detect_from};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::formats;
use crate::host_file::Durability;
use crate::image::{BackingPolicy, Image, OpenOptions, file_identity};
use crate::options::FormatOptions;
use crate::staging::Staging;
use crate::stream::StreamSource;
use crate::writer::{BackingTarget, CreateSpec, Destination, ImageWriter, Piece, SourceMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes per work item: large enough to amortise system calls, small enough that the pipeline's
/// memory stays small. Always a multiple of the granularity.
pub const CHUNK_SIZE: u64 = 2 << 20;

/// The default `-S`: runs of zeros this long (and aligned) become holes.
pub const DEFAULT_SPARSE_SIZE: u64 = 4096;

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// `-f`: the source format, or `None` to detect it.
    pub source_format: Option<Format>,
    /// `-O`: the target format.
    pub target_format: Format,
    /// `-o`: the target's options, as `key=value,...`.
    pub target_options: String,
    /// `-c`: compress where the target format can.
    pub compress: bool,
    /// `-S`: the smallest run of zeros written as a hole; 0 writes everything (fully allocated).
    pub sparse_size: u64,
    /// `-m`: worker threads, or `None` to choose by the target (see [`default_threads`]).
    pub threads: Option<usize>,
    /// `-B`: make the target a differencing image over this backing image; only what differs
    /// from it is written.
    pub target_backing: Option<PathBuf>,
    /// `-F`: the backing image's format, or `None` to detect it.
    pub target_backing_format: Option<Format>,
    /// Whether the output is flushed to stable storage before it is renamed into place
    /// (`-t writeback`); the command line's default, like qemu-img's, is not to.
    pub durability: Durability,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            source_format: None,
            target_format: Format::Raw,
            target_options: String::new(),
            compress: false,
            sparse_size: DEFAULT_SPARSE_SIZE,
            threads: None,
            target_backing: None,
            target_backing_format: None,
            durability: Durability::Flush,
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
pub fn parse_target_options(format: Format, text: &str) -> Result<FormatOptions> {
    if !formats::can_write(format) {
        return Err(Error::unsupported(format!(
            "writing {format} images is not supported by diskferry yet"
        )));
    }
    FormatOptions::parse(format, formats::create_options(format), text)
}

/// Answers the writer's planning questions from the source's allocation map.
struct ImageSourceMap {
    image: Arc<Image>,
    everything_is_data: bool,
}

impl SourceMap for ImageSourceMap {
    fn may_have_data(&self, offset: u64, len: u64) -> Result<bool> {
        if self.everything_is_data {
            return Ok(true);
        }
        range_has_data(&self.image, offset, offset.saturating_add(len))
    }
}

/// Refuses a destination that is the source or one of the files the source reads.
fn refuse_overwriting_source(source: &Image, dest: &Path) -> Result<()> {
    let Some(dest_id) = file_identity(dest) else {
        return Ok(());
    };
    for layer in source.layers() {
        for file in layer.files() {
            if file_identity(&file) == Some(dest_id) {
                return Err(Error::invalid(format!(
                    "destination is the same file as the source image's '{}'; refusing to overwrite it",
                    file.display()
                ))
                .with_path(dest));
            }
        }
    }
    Ok(())
}

/// Opens the backing image a new image will refer to. A relative name is relative to the new
/// image's folder, as qemu-img and every hypervisor resolve it.
pub fn open_target_backing(
    new_image: &Path,
    stored_name: &Path,
    format: Option<Format>,
) -> Result<BackingTarget> {
    let path = if stored_name.is_absolute() {
        stored_name.to_path_buf()
    } else {
        new_image
            .parent()
            .unwrap_or(Path::new(""))
            .join(stored_name)
    };
    let image = Image::open(&path, &OpenOptions::with_format(format))?;
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

/// Opens an image arriving on standard input, detecting its format from its first bytes.
fn open_stdin_source(format: Option<Format>) -> Result<Box<dyn StreamSource>> {
    let mut stdin = std::io::stdin();
    let mut head = vec![0u8; HEAD_LEN];
    let mut filled = 0;
    while filled < head.len() {
        let n = stdin
            .read(&mut head[filled..])
            .map_err(|e| Error::io("cannot read standard input", e))?;
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
            let probe = ProbeData {
                head: head.clone(),
                tail: Vec::new(),
                file_len: u64::MAX,
            };
            let detected = detect_from(&probe);
            if detected.guessed {
                return Err(Error::unsupported(
                    "cannot read a raw image from a pipe (its size is unknown); only stream-optimized VMDK can be read from standard input",
                ));
            }
            detected.format
        }
    };
    let reader = std::io::Cursor::new(head).chain(stdin);
    formats::open_stream(format, Box::new(reader)).map_err(|e| e.with_path("<stdin>"))
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

/// Converts the image at `source` (`-` for standard input, formats that stream only) into a
/// new image at `dest` (`-` for standard output), reporting warnings and progress to `on_event`.
pub fn convert(
    source: &Path,
    dest: &Path,
    options: &ConvertOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Stats> {
    let target_options = parse_target_options(options.target_format, &options.target_options)?;
    if !options.sparse_size.is_multiple_of(512) {
        return Err(Error::invalid(format!(
            "-S {} is not a multiple of 512 bytes",
            options.sparse_size
        )));
    }
    let everything_is_data = options.sparse_size == 0;
    let (image, stream) = if is_stdio(source) {
        if options.target_backing.is_some() {
            return Err(Error::unsupported(
                "-B cannot be used with a source read from standard input",
            ));
        }
        (None, Some(open_stdin_source(options.source_format)?))
    } else {
        let image = Image::open(source, &OpenOptions::with_format(options.source_format))?;
        for w in image.warnings() {
            on_event(Event::Warning(w));
        }
        if !is_stdio(dest) {
            refuse_overwriting_source(&image, dest)?;
        }
        (Some(Arc::new(image)), None)
    };
    let backing = match &options.target_backing {
        Some(b) => {
            let target = open_target_backing(dest, b, options.target_backing_format)?;
            for w in target.image.warnings() {
                on_event(Event::Warning(w));
            }
            if file_identity(&target.path).is_some()
                && file_identity(&target.path) == file_identity(dest)
            {
                return Err(
                    Error::invalid("the backing image cannot be the destination").with_path(dest),
                );
            }
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
                everything_is_data,
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
    };

    let mut staging = Staging::with_durability(options.durability);
    let destination = if is_stdio(dest) {
        Destination::Stream(Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        )) as Box<dyn Write + Send>)
    } else {
        Destination::Files {
            staging: &mut staging,
            path: dest.to_path_buf(),
        }
    };
    let mut writer = formats::create_writer(options.target_format, destination, &spec)
        .map_err(|e| e.with_path(dest))?;
    let granularity = writer.granularity().max(512);
    let sparse = options.sparse_size.max(granularity);
    let granularity = sparse.div_ceil(granularity) * granularity;
    let encoder = writer.encoder();
    let settings = pipeline::Settings {
        threads: options.threads.unwrap_or_else(default_threads).max(1),
        cutting: plan::Cutting {
            granularity,
            chunk: (CHUNK_SIZE / granularity).max(1) * granularity,
            everything_is_data,
        },
        detect_zeros: !everything_is_data,
        encoder,
    };
    let source = match (&image, stream) {
        (Some(image), _) => pipeline::Source::Image(image),
        (None, Some(stream)) => pipeline::Source::Stream(stream),
        (None, None) => unreachable!("a source was opened"),
    };
    let stats = pipeline::run(
        source,
        backing_image.as_deref(),
        writer.as_mut(),
        &settings,
        &mut |done| on_event(Event::Progress { done, total: size }),
    )
    .map_err(|e| e.with_path(dest))?;
    writer.finish().map_err(|e| e.with_path(dest))?;
    staging.commit()?;
    Ok(stats)
}

/// Creates a new image of `size` bytes (all zeros, or all unallocated over `backing`).
/// Without `size`, a differencing image takes its backing image's size.
pub fn create(
    path: &Path,
    format: Format,
    size: Option<u64>,
    options_text: &str,
    backing: Option<(&Path, Option<Format>)>,
) -> Result<()> {
    let options = parse_target_options(format, options_text)?;
    let backing = match backing {
        Some((name, fmt)) => Some(open_target_backing(path, name, fmt)?),
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
    if path.exists()
        && backing
            .as_ref()
            .is_some_and(|b| file_identity(&b.path) == file_identity(path))
    {
        return Err(Error::invalid("an image cannot be its own backing image").with_path(path));
    }
    let has_backing = backing.is_some();
    let spec = CreateSpec {
        backing,
        ..CreateSpec::new(size, options)
    };
    let mut staging = Staging::new();
    let mut writer: Box<dyn ImageWriter> = formats::create_writer(
        format,
        Destination::Files {
            staging: &mut staging,
            path: path.to_path_buf(),
        },
        &spec,
    )
    .map_err(|e| e.with_path(path))?;
    if size > 0 {
        let piece = if has_backing {
            Piece::Unallocated(size)
        } else {
            Piece::Zero(size)
        };
        writer.write(0, piece).map_err(|e| e.with_path(path))?;
    }
    writer.finish().map_err(|e| e.with_path(path))?;
    staging.commit()
}

/// Opens an image for reading with the CLI's defaults (backing chain followed).
pub fn open_image(path: &Path, format: Option<Format>) -> Result<Image> {
    Image::open(path, &OpenOptions::with_format(format))
}

/// Opens only the top layer of an image (its backing chain is not followed).
pub fn open_top(path: &Path, format: Option<Format>) -> Result<Image> {
    Image::open(
        path,
        &OpenOptions {
            format,
            backing: BackingPolicy::Ignore,
            ..OpenOptions::default()
        },
    )
}
