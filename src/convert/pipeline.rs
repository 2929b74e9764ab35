//! The parallel part of the engine: a planner thread cuts the source into items, worker
//! threads read, detect zeros and encode them — or, for targets that place data at known
//! offsets, write it there themselves — and the calling thread hands the results to the
//! target writer strictly in order.
//!
//! Memory is bounded by a pool of tokens: an item is planned only when a token is free, and its
//! token comes back only after the writer has consumed it. At most `inflight` items exist at
//! any time, each holding at most one chunk of data (plus its encoding, plus the backing's
//! bytes with `-B`), whatever the size of the image.

use super::CopyMode;
use super::buffer::AlignedBuf;
use super::offload::{self, Offload};
use super::plan::{Cutting, ItemKind, Planner, Sparseness};
use super::stream_plan::StreamPlanner;
use super::zero::is_zero;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::ops::{Rate, Throttle};
use crate::stream::{StreamPayload, StreamRun, StreamSource};
use crate::writer::{ChunkEncoder, DirectWrite, ImageWriter, Piece};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How the pipeline runs.
pub struct Settings {
    /// Worker threads (at least 1).
    pub threads: usize,
    /// How the source is cut.
    pub cutting: Cutting,
    /// Run on every data granule, for targets that compress.
    pub encoder: Option<Arc<dyn ChunkEncoder>>,
    /// Where workers write data themselves, for targets that place it at known offsets
    /// (`-W`: out-of-order writes).
    pub direct: Option<Arc<dyn DirectWrite>>,
    /// `-C`: data ranges are copied whole, without looking for zeros in them.
    pub copy: CopyMode,
    /// `-C` into a target that writes regular files by position (and has no backing image):
    /// host-file data is copied by the kernel.
    pub offload: Option<Offload>,
    /// `-r`: the most bytes read from the source a second.
    pub rate: Rate,
}

impl Settings {
    /// Items in flight at once: enough to keep every worker busy while the writer works.
    pub fn inflight(&self) -> usize {
        2 * self.threads + 2
    }
}

/// Where the content comes from.
pub enum Source<'a> {
    /// An image that can be read anywhere.
    Image(&'a Image),
    /// An image read front to back (a pipe).
    Stream(Box<dyn StreamSource>),
}

/// What a worker does with a range.
enum Content {
    /// The source reads as zeros here.
    Zero,
    /// Read the range from the source image.
    Read,
    /// Assemble the range from these stream runs (zeros between them).
    Runs(Vec<StreamRun>),
}

/// A range of the virtual disk for the workers.
struct Work {
    offset: u64,
    len: u64,
    content: Content,
}

/// What a conversion moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes handed to the writer as data.
    pub data_bytes: u64,
    /// Bytes handed to the writer as zeros.
    pub zero_bytes: u64,
    /// Bytes left to the target's backing image.
    pub unallocated_bytes: u64,
    /// Bytes read from the source (data items only), the kernel's copies included.
    pub read_bytes: u64,
    /// Bytes of data the kernel copied from file to file (`-C`, `copy_file_range`).
    pub offloaded_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Data,
    /// Data a worker has already written at its place.
    Placed,
    Zero,
    Unallocated,
}

/// A run of an item with one class; data runs index into the item's buffers.
struct Segment {
    start: usize,
    len: u64,
    class: Class,
    encoded: Option<(usize, usize)>,
}

/// A processed item, waiting for its turn at the writer.
struct Done {
    seq: u64,
    offset: u64,
    len: u64,
    /// True when the item's bytes were read from the source.
    read: bool,
    /// Bytes of the item the kernel copied (`-C`).
    offloaded: u64,
    buf: Option<AlignedBuf>,
    encoded: Vec<u8>,
    segments: Vec<Segment>,
}

type BufferPool = Mutex<Vec<AlignedBuf>>;

fn take_buffer(pool: &BufferPool, len: usize) -> AlignedBuf {
    let mut buf = pool
        .lock()
        .map(|mut p| p.pop())
        .ok()
        .flatten()
        .unwrap_or_default();
    buf.resize(len);
    buf
}

fn give_buffer(pool: &BufferPool, buf: AlignedBuf) {
    if let Ok(mut p) = pool.lock() {
        p.push(buf);
    }
}

/// Runs the pipeline: the whole virtual disk of `source` goes to `writer`, in order.
/// `target_backing` is the new image's backing image (`-B`): granules equal to it are left
/// unallocated. `progress` is called on this thread with the number of bytes written so far.
pub fn run(
    source: Source<'_>,
    target_backing: Option<&Image>,
    writer: &mut dyn ImageWriter,
    settings: &Settings,
    progress: &mut dyn FnMut(u64),
) -> Result<Stats> {
    let (size, source_image, stream_name) = match &source {
        Source::Image(image) => (image.virtual_size(), Some(*image), None),
        Source::Stream(stream) => (
            stream.virtual_size(),
            None,
            Some(stream.name().to_path_buf()),
        ),
    };
    let stream_name = stream_name.as_deref();
    let inflight = settings.inflight();
    let (token_tx, token_rx) = bounded::<()>(inflight);
    for _ in 0..inflight {
        token_tx
            .send(())
            .expect("the channel has room for every token");
    }
    let (work_tx, work_rx) = bounded::<(u64, Work)>(inflight);
    let (done_tx, done_rx) = unbounded::<Result<Done>>();
    let pool: BufferPool = Mutex::new(Vec::new());

    std::thread::scope(|scope| {
        let planner_done_tx = done_tx.clone();
        let planner_cutting = settings.cutting;
        let planner_rate = settings.rate;
        scope.spawn(move || {
            let mut next_work: Box<dyn FnMut() -> Result<Option<Work>> + Send> = match source {
                Source::Image(image) => {
                    // No read-ahead hints: the kernel reads ahead sequential reads of a file
                    // itself, and asking it to (fadvise WILLNEED from this thread, a window of
                    // 2 to 32 MiB ahead) measured slower with the page cache dropped, 0.55 s
                    // against 0.45 s for realistic raw to raw (bench/bench.py --cold).
                    let mut planner = Planner::new(image, target_backing, planner_cutting);
                    Box::new(move || {
                        Ok(planner.next_item()?.map(|item| Work {
                            offset: item.offset,
                            len: item.len,
                            content: match item.kind {
                                ItemKind::Data => Content::Read,
                                ItemKind::Zero => Content::Zero,
                            },
                        }))
                    })
                }
                Source::Stream(stream) => {
                    let mut planner = StreamPlanner::new(stream, planner_cutting);
                    Box::new(move || {
                        Ok(planner.next_item()?.map(|item| Work {
                            offset: item.offset,
                            len: item.len,
                            content: if item.runs.is_empty() {
                                Content::Zero
                            } else {
                                Content::Runs(item.runs)
                            },
                        }))
                    })
                }
            };
            let mut seq = 0u64;
            // -r: the planner holds back each range to be read until the rate allows it, as
            // qemu-img holds back each request (ranges of zeros cost no reads and pass).
            let mut throttle = Throttle::new(planner_rate);
            while token_rx.recv().is_ok() {
                match next_work() {
                    Ok(Some(item)) => {
                        if !matches!(item.content, Content::Zero) {
                            throttle.wait_then_account(item.len);
                        }
                        if work_tx.send((seq, item)).is_err() {
                            return;
                        }
                        seq += 1;
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = planner_done_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        for _ in 0..settings.threads.max(1) {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            let pool = &pool;
            scope.spawn(move || {
                worker(
                    Sources {
                        image: source_image,
                        stream_name,
                        target_backing,
                    },
                    settings,
                    pool,
                    work_rx,
                    done_tx,
                )
            });
        }
        drop(work_rx);
        drop(done_tx);
        write_in_order(size, writer, done_rx, token_tx, &pool, progress)
    })
}

/// What a worker reads from.
#[derive(Clone, Copy)]
struct Sources<'a> {
    /// The source image, when it is one (not a stream).
    image: Option<&'a Image>,
    /// The stream's name, for errors in its content that the workers find (decoding).
    stream_name: Option<&'a std::path::Path>,
    /// The target's backing image (`-B`).
    target_backing: Option<&'a Image>,
}

fn worker(
    sources: Sources<'_>,
    settings: &Settings,
    pool: &BufferPool,
    work_rx: Receiver<(u64, Work)>,
    done_tx: Sender<Result<Done>>,
) {
    for (seq, item) in work_rx.iter() {
        let result = process(seq, item, sources, settings, pool);
        let failed = result.is_err();
        if done_tx.send(result).is_err() || failed {
            return;
        }
    }
}

fn process(
    seq: u64,
    item: Work,
    sources: Sources<'_>,
    settings: &Settings,
    pool: &BufferPool,
) -> Result<Done> {
    let (source, target_backing) = (sources.image, sources.target_backing);
    let leave_to_backing = if target_backing.is_some() {
        Class::Unallocated
    } else {
        Class::Zero
    };
    if matches!(item.content, Content::Zero) {
        return Ok(Done {
            seq,
            offset: item.offset,
            len: item.len,
            read: false,
            offloaded: 0,
            buf: None,
            encoded: Vec::new(),
            segments: vec![Segment {
                start: 0,
                len: item.len,
                class: leave_to_backing,
                encoded: None,
            }],
        });
    }
    let len = item.len as usize;
    if let (Content::Read, Some(offload), Some(image), None) =
        (&item.content, &settings.offload, source, target_backing)
    {
        let mut buf = take_buffer(pool, len);
        let copied = offload.copy_range(image, item.offset, item.len, &mut buf);
        give_buffer(pool, buf);
        if let Some(copied) = copied? {
            let mut start = 0usize;
            let segments = copied
                .pieces
                .iter()
                .map(|&(len, outcome)| {
                    let segment = Segment {
                        start,
                        len,
                        class: match outcome {
                            offload::Outcome::Placed => Class::Placed,
                            offload::Outcome::Zero => Class::Zero,
                        },
                        encoded: None,
                    };
                    start += len as usize;
                    segment
                })
                .collect();
            return Ok(Done {
                seq,
                offset: item.offset,
                len: item.len,
                read: true,
                offloaded: copied.offloaded,
                buf: None,
                encoded: Vec::new(),
                segments,
            });
        }
    }
    let mut buf = take_buffer(pool, len);
    match item.content {
        Content::Runs(runs) => {
            assemble(item.offset, &runs, &mut buf).map_err(|e| match sources.stream_name {
                Some(name) => e.with_path(name),
                None => e,
            })?
        }
        _ => source
            .expect("read items come from an image source")
            .read_at(item.offset, &mut buf)?,
    }
    let backing_buf = match target_backing {
        Some(backing) => {
            let mut b = take_buffer(pool, len);
            read_clipped(backing, item.offset, &mut b)?;
            Some(b)
        }
        None => None,
    };

    let zero_granule = settings.cutting.zero_granule;
    // -C looks for no zeros in the data, but the ranges the source's map calls zero stay
    // zeros (holes in a new file), as qemu-img's -C leaves them. Once the kernel has declined
    // to copy, zeros are looked for again, as qemu-img's read-and-write path does.
    let copy = match &settings.offload {
        Some(offload) if offload.declined() => CopyMode::Detect,
        _ => settings.copy,
    };
    let map_zeros = match (copy, source) {
        (CopyMode::Offload, Some(image)) => offload::zero_ranges(image, item.offset, item.len)?,
        _ => Vec::new(),
    };
    let mut map_zeros = map_zeros.iter().peekable();
    let mut segments: Vec<Segment> = Vec::new();
    let mut encoded = Vec::new();
    let mut scratch = Vec::new();
    let mut pos = 0usize;
    while pos < len {
        // Granules are aligned to absolute multiples of -S, clipped to the item (which starts
        // on a multiple of the target's unit, so a granule is whole units).
        let at = item.offset + pos as u64;
        let end = ((at / zero_granule + 1) * zero_granule - item.offset).min(len as u64) as usize;
        let granule = &buf[pos..end];
        while map_zeros.next_if(|&&(_, e)| e <= pos as u64).is_some() {}
        let in_map_zeros = map_zeros
            .peek()
            .is_some_and(|&&(s, e)| s <= pos as u64 && end as u64 <= e);
        let class = match &backing_buf {
            Some(b) if &b[pos..end] == granule => Class::Unallocated,
            _ if in_map_zeros => Class::Zero,
            _ if settings.cutting.sparseness == Sparseness::Sparse
                && copy == CopyMode::Detect
                && is_zero(granule) =>
            {
                Class::Zero
            }
            _ => Class::Data,
        };
        let mut enc_range = None;
        if class == Class::Data
            && let Some(encoder) = &settings.encoder
        {
            scratch.clear();
            encoder.encode(item.offset + pos as u64, granule, &mut scratch)?;
            enc_range = Some((encoded.len(), encoded.len() + scratch.len()));
            encoded.extend_from_slice(&scratch);
        }
        match segments.last_mut() {
            Some(last) if last.class == class && enc_range.is_none() => {
                last.len += (end - pos) as u64;
            }
            _ => segments.push(Segment {
                start: pos,
                len: (end - pos) as u64,
                class,
                encoded: enc_range,
            }),
        }
        pos = end;
    }
    if let Some(b) = backing_buf {
        give_buffer(pool, b);
    }
    let mut buf = Some(buf);
    if let (Some(direct), None) = (&settings.direct, &settings.encoder) {
        // The target places data at known offsets: write it from here, in parallel with the
        // other workers, and hand the writer only the fact that it is done.
        let bytes = buf.as_deref().expect("read above");
        for seg in segments.iter_mut().filter(|s| s.class == Class::Data) {
            direct.write_data(
                item.offset + seg.start as u64,
                &bytes[seg.start..seg.start + seg.len as usize],
            )?;
            seg.class = Class::Placed;
        }
        give_buffer(pool, buf.take().expect("read above"));
    }
    Ok(Done {
        seq,
        offset: item.offset,
        len: item.len,
        read: true,
        offloaded: 0,
        buf,
        encoded,
        segments,
    })
}

/// Fills `buf` (the range at `offset`) from stream runs, decoding encoded ones; zeros between.
fn assemble(offset: u64, runs: &[StreamRun], buf: &mut [u8]) -> Result<()> {
    let mut filled = 0usize;
    for run in runs {
        let start = (run.offset - offset) as usize;
        let end = start + run.len as usize;
        buf[filled..start].fill(0);
        let out = &mut buf[start..end];
        match &run.payload {
            StreamPayload::Plain(bytes) => {
                if bytes.len() != out.len() {
                    return Err(Error::corrupt(format!(
                        "stream run at {} holds {} bytes, not {}",
                        run.offset,
                        bytes.len(),
                        out.len()
                    )));
                }
                out.copy_from_slice(bytes);
            }
            StreamPayload::Encoded { bytes, decoder } => decoder.decode(bytes, out)?,
        }
        filled = end;
    }
    buf[filled..].fill(0);
    Ok(())
}

/// Reads `buf.len()` bytes at `offset`, with zeros past the image's end (a backing image
/// smaller than the new image).
fn read_clipped(image: &Image, offset: u64, buf: &mut [u8]) -> Result<()> {
    let size = image.virtual_size();
    let inside = size.saturating_sub(offset).min(buf.len() as u64) as usize;
    if inside > 0 {
        image.read_at(offset, &mut buf[..inside])?;
    }
    buf[inside..].fill(0);
    Ok(())
}

fn write_in_order(
    size: u64,
    writer: &mut dyn ImageWriter,
    done_rx: Receiver<Result<Done>>,
    token_tx: Sender<()>,
    pool: &BufferPool,
    progress: &mut dyn FnMut(u64),
) -> Result<Stats> {
    let mut stats = Stats::default();
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next_seq = 0u64;
    let mut written = 0u64;
    while written < size {
        let Ok(result) = done_rx.recv() else {
            return Err(Error::interrupted(format!(
                "conversion stopped early at byte {written} of {size}"
            )));
        };
        let done = result?;
        waiting.insert(done.seq, done);
        while let Some(done) = waiting.remove(&next_seq) {
            debug_assert_eq!(done.offset, written);
            for seg in &done.segments {
                let offset = done.offset + seg.start as u64;
                let piece = match seg.class {
                    Class::Data => {
                        let buf = done.buf.as_ref().expect("data items carry a buffer");
                        stats.data_bytes += seg.len;
                        Piece::Data {
                            bytes: &buf[seg.start..seg.start + seg.len as usize],
                            encoded: seg.encoded.map(|(a, b)| &done.encoded[a..b]),
                        }
                    }
                    Class::Placed => {
                        stats.data_bytes += seg.len;
                        Piece::Placed(seg.len)
                    }
                    Class::Zero => {
                        stats.zero_bytes += seg.len;
                        Piece::Zero(seg.len)
                    }
                    Class::Unallocated => {
                        stats.unallocated_bytes += seg.len;
                        Piece::Unallocated(seg.len)
                    }
                };
                writer.write(offset, piece)?;
            }
            written = done.offset + done.len;
            if done.read {
                stats.read_bytes += done.len;
            }
            stats.offloaded_bytes += done.offloaded;
            if let Some(buf) = done.buf {
                give_buffer(pool, buf);
            }
            progress(written);
            next_seq += 1;
            // The planner may have finished already; a lost token is then harmless.
            let _ = token_tx.send(());
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::formats::raw::RawWriter;
    use crate::options::FormatOptions;
    use crate::sink::Output;
    use crate::staging::Staging;
    use crate::stream::ChunkDecoder;
    use crate::writer::CreateSpec;

    /// "Encoded" runs are the plain bytes XOR 0x5A, so a missing decode shows.
    struct Xor;
    impl ChunkDecoder for Xor {
        fn decode(&self, encoded: &[u8], out: &mut [u8]) -> Result<()> {
            if encoded.len() != out.len() {
                return Err(Error::corrupt("bad length"));
            }
            for (o, e) in out.iter_mut().zip(encoded) {
                *o = e ^ 0x5A;
            }
            Ok(())
        }
    }

    struct Fake {
        size: u64,
        runs: Vec<(u64, Vec<u8>, bool)>,
    }
    impl StreamSource for Fake {
        fn format(&self) -> Format {
            crate::formats::vmdk::FORMAT
        }
        fn virtual_size(&self) -> u64 {
            self.size
        }
        fn next_run(&mut self) -> Result<Option<StreamRun>> {
            if self.runs.is_empty() {
                return Ok(None);
            }
            let (offset, bytes, encoded) = self.runs.remove(0);
            let len = bytes.len() as u64;
            let payload = if encoded {
                StreamPayload::Encoded {
                    bytes: bytes.iter().map(|b| b ^ 0x5A).collect(),
                    decoder: Arc::new(Xor),
                }
            } else {
                StreamPayload::Plain(bytes)
            };
            Ok(Some(StreamRun {
                offset,
                len,
                payload,
            }))
        }
    }

    #[test]
    fn stream_sources_assemble_decode_and_keep_holes() {
        let size = 10 << 20;
        let runs = vec![
            (4096, vec![1u8; 8192], false),
            (65536, vec![2u8; 65536], true),
            (65536 * 2, vec![0u8; 65536], true),
            (5 << 20, vec![3u8; 1000], false),
        ];
        let mut expected = vec![0u8; size as usize];
        for (o, b, _) in &runs {
            expected[*o as usize..*o as usize + b.len()].copy_from_slice(b);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.raw");
        let mut staging = Staging::new();
        let spec = CreateSpec::new(size, FormatOptions::empty(crate::formats::raw::FORMAT));
        let mut writer =
            RawWriter::create(Output::new_files(&mut staging, path.clone()), &spec).unwrap();
        let settings = Settings {
            direct: writer.direct(),
            threads: 2,
            cutting: Cutting {
                granularity: 4096,
                zero_granule: 4096,
                chunk: 2 << 20,
                sparseness: crate::convert::Sparseness::Sparse,
            },
            encoder: None,
            copy: CopyMode::Detect,
            offload: None,
            rate: Rate::Unlimited,
        };
        let stats = run(
            Source::Stream(Box::new(Fake { size, runs })),
            None,
            &mut writer,
            &settings,
            &mut |_| {},
        )
        .unwrap();
        Box::new(writer).finish().unwrap();
        staging.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        assert_eq!(stats.data_bytes, 8192 + 65536 + 4096);
        assert_eq!(stats.data_bytes + stats.zero_bytes, size);
    }
}
