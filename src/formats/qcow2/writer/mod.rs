//! Writing QCOW2 images (versions 2 and 3), to a file, a device or front to back to a stream.
//!
//! # Layout
//!
//! ```text
//! cluster 0     header, header extensions (backing format, data file name, feature names),
//!               backing file name
//! then, in guest order, for each L2 range (cluster_size / 8 guest clusters, or / 16 with
//! extended L2 entries):
//!               the range's data clusters (uncompressed, or compressed and packed byte after
//!               byte, several to a host cluster, as qemu packs them)
//!               the range's L2 table
//!               a refcount block whenever a block's clusters are all handed out
//! then          with `convert --bitmaps`, each bitmap's data clusters and table, and the
//!               bitmap directory (see `bitmaps.rs`)
//! at the end    the L1 table, the last refcount blocks, the refcount table
//! ```
//!
//! Everything is written front to back except cluster 0 and the host cluster being filled
//! with compressed data (held in memory until full): each table follows the data it describes,
//! so memory holds one L2 table, a few refcount blocks and the L1 table (at most 32 MiB, qemu's
//! limit) whatever the size of the disk. Every cluster written is counted, refcount blocks and
//! tables included, so `qemu-img check` finds no leak; a cluster whose refcount is one has the
//! COPIED flag in the entry that points at it, as qemu expects.
//!
//! # To a stream
//!
//! The header is at offset 0 and names the L1 and refcount tables, which come last, so a
//! stream needs their places before the first byte: the writer plans the layout from the
//! source's allocation map ([`CreateSpec::may_have_data`]). Every cluster that may hold data
//! gets a slot (see `plan.rs`), a dry run of the same layout code over those slots gives the
//! tables' places, the header goes out first, and the real run hands out the same places in
//! the same order; a slot whose cluster turns out to hold zeros stays a free cluster (zeros in
//! the stream, refcount 0). Compressed clusters cannot be planned (their sizes are known only
//! once compressed), so with `-c` the image is made in an unnamed temporary file and copied to
//! the stream when complete (see `spool.rs`); so is an image with persistent bitmaps, whose
//! clusters are known only once their bits are read.
//!
//! # Compression
//!
//! With `-c` every cluster is compressed on the engine's worker threads ([`ClusterEncoder`]):
//! the writer's granularity is one cluster, and a cluster that does not shrink is stored as it
//! is. zlib is raw deflate with a 4 KiB window, zstd one frame per cluster (see `compress.rs`).
//!
//! # What each piece becomes
//!
//! | piece | no backing file | backing file, v3 | backing file, v2 |
//! |---|---|---|---|
//! | data | data cluster | data cluster | data cluster |
//! | zeros | unallocated | zero flag (extended L2: zero bits) | a data cluster of zeros |
//! | unallocated | unallocated | unallocated | unallocated |
//!
//! With preallocation (and `data_file_raw`) every cluster gets a place: zeros are an allocated
//! cluster that reads as zeros, unallocated (over a backing file, extended L2 only) an
//! allocated cluster whose subclusters all read from the backing file. With an external data
//! file the data goes there at its guest offset, unrefcounted, and this file holds only the
//! metadata. As qemu-img, a relative data file name is stored as given and the file made in the
//! current folder, where qemu looks for it.

mod bitmaps;
pub(crate) mod compress;
mod cutter;
pub(crate) mod header;
mod layout;
pub mod options;
mod plan;
mod refcount;
mod spool;

pub use compress::ClusterEncoder;
pub use options::CREATE_OPTIONS;

use self::compress::{compress_cluster, default_level};
use self::cutter::{ClusterSink, Cutter, Frame};
use self::header::Tables;
use self::layout::{Geometry, Layout, Rules, RunKind};
use self::options::{Preallocation, Settings};
use self::spool::Spool;
use crate::dirty_bitmap::DirtyBitmap;
use crate::error::{Error, Result};
use crate::formats::qcow2::header::BitmapsExtension;
use crate::sink::{Access, Output};
use crate::writer::{ChunkEncoder, CreateSpec, ImageWriter, Piece};
use std::sync::Arc;

/// Makes a QCOW2 writer for `spec` into `output`.
pub fn create_writer<'a>(
    mut output: Output<'a>,
    spec: &CreateSpec,
) -> Result<Box<dyn ImageWriter + 'a>> {
    let settings = options::settings(spec)?;
    // Sizes are whole sectors, as qemu-img makes them: a source of another size gets zeros
    // up to the next sector (in its last cluster, which is stored whole anyway).
    let size = spec.size.next_multiple_of(512);
    let g = Geometry::new(&settings, size)?;
    let rules = Rules::of(&settings);
    // Refuse a header that cannot fit before anything is written (with the bitmaps
    // extension, when there will be one).
    let placeholder = Tables {
        bitmaps: (!spec.bitmaps.is_empty()).then_some(BitmapsExtension {
            count: 0,
            directory_size: 0,
            directory_offset: 0,
        }),
        ..Tables::default()
    };
    header::encode(&settings, size, &placeholder)?;
    // A compressed image for a stream is made in a temporary file, then copied (spool.rs);
    // so is one with bitmaps, which a planned layout has no places for.
    let spooled =
        output.access() == Access::Sequential && (settings.compress || !spec.bitmaps.is_empty());
    let streaming = output.access() == Access::Sequential && !spooled;
    if streaming && settings.preallocation == Preallocation::Falloc {
        return Err(Error::unsupported(
            "preallocation=falloc reserves space in a file and cannot be used with a stream",
        ));
    }
    let data_sink = match &settings.data_file {
        Some(name) => {
            // qemu opens a relative data file name from its current folder (not the image's,
            // unlike a backing file), and qemu-img creates it there: so is it made here.
            let path = std::env::current_dir()
                .map_err(|e| Error::io("cannot find the current folder", e))?
                .join(name);
            let mut sink = output.beside(&path.to_string_lossy())?;
            sink.set_len(size)?;
            Some(sink)
        }
        None => None,
    };
    let (plan, planned) = if streaming {
        let plan = plan::plan(
            spec,
            size,
            g.cluster_size,
            g.clusters,
            settings.preallocates(),
        )?;
        let tables = Layout::dry_run(g, rules, plan.clone())?;
        (Some(plan), Some(tables))
    } else {
        (None, None)
    };
    let (sink, spool) = if spooled {
        let (spool, sink) = Spool::new(output.main()?)?;
        (sink, Some(spool))
    } else {
        (output.main()?, None)
    };
    let mut layout = Layout::new(g, rules, Some(sink), data_sink, plan)?;
    if let Some(tables) = &planned {
        layout.write_main(0, &header::encode(&settings, size, tables)?)?;
    }
    let encoder = settings.compress.then(|| {
        Arc::new(ClusterEncoder {
            method: settings.compression,
            level: default_level(settings.compression),
            cluster_size: g.cluster_size as usize,
        })
    });
    let backing_image = spec.backing.as_ref().map(|b| Arc::clone(&b.image));
    // `create -o backing_file=...`: the whole disk reads from the backing file, as qemu-img
    // makes it, though the engine (which did not open it) sends zeros.
    let zero_is_unallocated = settings.backing.as_ref().is_some_and(|b| !b.opened);
    // Version 2 has no zero flag: zeros over a backing file are stored, compressed with -c.
    let zero_frame = match &encoder {
        Some(e) if settings.version < 3 && settings.backing.is_some() => {
            let mut frame = Vec::new();
            let zeros = vec![0u8; g.cluster_size as usize];
            compress_cluster(e.method, e.level, &zeros, e.cluster_size, &mut frame)?
                .then_some(frame)
        }
        _ => None,
    };
    Ok(Box::new(Qcow2Writer {
        cutter: Some(Cutter::new(g.cluster_size, spec.size, backing_image)),
        inner: Inner {
            layout,
            encoder,
            zero_is_unallocated,
            zero_frame,
            scratch: Vec::new(),
        },
        settings,
        size,
        planned,
        spool,
        bitmaps: spec.bitmaps.clone(),
    }))
}

/// A QCOW2 image being written.
struct Qcow2Writer<'a> {
    cutter: Option<Cutter>,
    inner: Inner<'a>,
    settings: Settings,
    /// The virtual size in the header.
    size: u64,
    /// For a stream: the tables the dry run placed (the header is already out).
    planned: Option<Tables>,
    /// For a compressed image to a stream: the temporary file it is made in.
    spool: Option<Spool<'a>>,
    /// `convert --bitmaps`: the persistent bitmaps to store after the data.
    bitmaps: Vec<Arc<dyn DirtyBitmap>>,
}

/// What receives the clusters.
struct Inner<'a> {
    layout: Layout<'a>,
    encoder: Option<Arc<ClusterEncoder>>,
    zero_is_unallocated: bool,
    /// A compressed cluster of zeros, when zeros are stored compressed.
    zero_frame: Option<Vec<u8>>,
    scratch: Vec<u8>,
}

impl ClusterSink for Inner<'_> {
    fn data(&mut self, cluster: u64, bytes: &[u8], frame: Frame<'_>) -> Result<()> {
        let Some(encoder) = &self.encoder else {
            return self.layout.normal(cluster, bytes);
        };
        match frame {
            Frame::Compressed(c) => self.layout.compressed(cluster, c),
            Frame::Stored => self.layout.normal(cluster, bytes),
            Frame::Plain => {
                let mut scratch = std::mem::take(&mut self.scratch);
                let shrunk = compress_cluster(
                    encoder.method,
                    encoder.level,
                    bytes,
                    encoder.cluster_size,
                    &mut scratch,
                )?;
                let r = if shrunk {
                    self.layout.compressed(cluster, &scratch)
                } else {
                    self.layout.normal(cluster, bytes)
                };
                self.scratch = scratch;
                r
            }
        }
    }

    fn data_run(&mut self, first: u64, bytes: &[u8], cluster_size: u64) -> Result<()> {
        if self.encoder.is_some() {
            for (i, chunk) in bytes.chunks(cluster_size as usize).enumerate() {
                self.data(first + i as u64, chunk, Frame::Plain)?;
            }
            return Ok(());
        }
        self.layout.normal_run(first, bytes)
    }

    fn run(&mut self, first: u64, count: u64, kind: RunKind) -> Result<()> {
        let kind = if self.zero_is_unallocated {
            RunKind::Unallocated
        } else {
            kind
        };
        if let (Some(frame), RunKind::Zero) = (&self.zero_frame, kind) {
            for c in first..first + count {
                self.layout.compressed(c, frame)?;
            }
            return Ok(());
        }
        self.layout.run(first, count, kind, false)
    }
}

impl ImageWriter for Qcow2Writer<'_> {
    fn granularity(&self) -> u64 {
        self.settings.cluster_size()
    }

    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        self.inner
            .encoder
            .as_ref()
            .map(|e| Arc::clone(e) as Arc<dyn ChunkEncoder>)
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        let mut cutter = self.cutter.take().expect("a cutter");
        let result = cutter.feed(offset, piece, &mut self.inner);
        self.cutter = Some(cutter);
        result
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let this = *self;
        if let Some(c) = &this.cutter {
            c.finish()?;
        }
        let (settings, size, planned, spool) = (this.settings, this.size, this.planned, this.spool);
        let mut layout = this.inner.layout;
        let directory = bitmaps::write(&mut layout, &this.bitmaps, settings.cluster_size())?;
        layout.finish(
            |tables| match planned {
                Some(p) if p == *tables => Ok(None),
                Some(p) => Err(Error::invalid(format!(
                    "internal error: the stream's tables ended up at {tables:?}, not where its header (already written) says: {p:?}"
                ))),
                None => header::encode(
                    &settings,
                    size,
                    &Tables {
                        bitmaps: directory,
                        ..*tables
                    },
                )
                .map(Some),
            },
            size,
        )?;
        match spool {
            Some(spool) => {
                let len = spool.len()?;
                spool.copy_out(len)
            }
            None => Ok(()),
        }
    }
}

/// The zlib level compressed clusters are written at (QCOW version 1 uses it too).
pub fn zlib_level() -> i32 {
    default_level(options::Compression::Zlib)
}

/// The frames of an encoder's output, one per cluster, each as the encoder wrote it.
pub fn split_frames(encoded: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = encoded;
    while rest.len() >= 4 {
        let tag = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        let n = if tag == compress::STORED {
            4
        } else {
            (4 + tag as usize).min(rest.len())
        };
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

/// The compressed bytes of a one-cluster frame, or `None` for a cluster stored as it is.
pub fn single_frame(frame: &[u8]) -> Option<Vec<u8>> {
    compress::Frames::new(frame)
        .next_frame()
        .ok()
        .flatten()
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::FormatOptions;
    use crate::sink::PipeSink;
    use crate::sink::tests::Shared;
    use crate::writer::SourceMap;

    /// A source whose data is where `runs` say.
    struct Runs(Vec<(u64, u64)>);

    impl SourceMap for Runs {
        fn may_have_data(&self, offset: u64, len: u64) -> Result<bool> {
            Ok(self
                .0
                .iter()
                .any(|&(s, l)| s < offset + len && offset < s + l))
        }
    }

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Streams are planned: whatever mix of data and zeros arrives where the map says data
    /// may be, the real run puts the tables where the header (written first) says, writing
    /// front to back (the pipe refuses anything else).
    #[test]
    fn a_planned_stream_keeps_the_places_its_header_names() {
        let mut seed = 0x5eed_u64;
        for round in 0..40 {
            let cluster_bits = 9 + (xorshift(&mut seed) % 8) as u32;
            let cs = 1u64 << cluster_bits;
            let size = (xorshift(&mut seed) % (64 << 20)) + 1;
            let runs: Vec<(u64, u64)> = (0..xorshift(&mut seed) % 6)
                .map(|_| {
                    let start = xorshift(&mut seed) % size;
                    let len = (xorshift(&mut seed) % (3 << 20)).min(size - start).max(1);
                    (start, len)
                })
                .collect();
            let mut text = format!("cluster_size={cs}");
            match round % 4 {
                1 => text.push_str(",compat=0.10"),
                2 if cluster_bits >= 14 => text.push_str(",extended_l2=on"),
                3 => text.push_str(",refcount_bits=1"),
                _ => {}
            }
            let options =
                FormatOptions::parse(super::super::FORMAT, CREATE_OPTIONS, &text).unwrap();
            let spec = CreateSpec {
                source_map: Some(Arc::new(Runs(runs.clone()))),
                ..CreateSpec::new(size, options)
            };
            let mem = Shared::default();
            let sink = PipeSink::new(Box::new(mem.clone()), "-");
            let mut w = create_writer(Output::single(Box::new(sink)), &spec).unwrap();
            let g = w.granularity();
            assert_eq!(g, cs);
            let mut pos = 0u64;
            while pos < size {
                let end = (pos + g).min(size);
                let data = runs.iter().any(|&(s, l)| s < end && pos < s + l);
                if data && !xorshift(&mut seed).is_multiple_of(3) {
                    let bytes = vec![(pos / g) as u8 | 1; (end - pos) as usize];
                    w.write(
                        pos,
                        Piece::Data {
                            bytes: &bytes,
                            encoded: None,
                        },
                    )
                    .unwrap();
                } else {
                    w.write(pos, Piece::Zero(end - pos)).unwrap();
                }
                pos = end;
            }
            w.finish()
                .unwrap_or_else(|e| panic!("round {round} ({text}, {size} bytes): {e}"));
            let out = mem.0.lock().unwrap();
            assert_eq!(&out[..4], b"QFI\xfb");
            assert_eq!(out.len() as u64 % cs, 0, "round {round}");
        }
    }
}
