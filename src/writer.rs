//! The writer side: how content reaches a target format.
//!
//! The conversion engine hands an [`ImageWriter`] the whole virtual disk as a sequence of
//! [`Piece`]s in increasing order, each starting where the previous one ended, from 0 to the
//! virtual size. Because the order is fixed, every format can be written front to back in one
//! pass (stream-optimized VMDK, VHD for XenServer, a member of an OVA or XVA tar, a pipe), and
//! formats that keep tables in front of their data can still use random access when their
//! [`Output`](crate::sink::Output) is a file.
//!
//! Two kinds of work leave the writer's thread:
//! - compression: a writer that compresses returns a [`ChunkEncoder`] and receives each data
//!   granule already encoded;
//! - payload placement: a writer whose output is random-access and whose data offsets are
//!   known before the data arrives (raw, fixed VHD, flat VMDK, a dynamic VHD planned from the
//!   source's map) returns a [`DirectWrite`]; the workers write data at its place in parallel
//!   and the writer receives [`Piece::Placed`] for it, keeping only the metadata in order.

use crate::error::Result;
use crate::format::Format;
use crate::image::Image;
use crate::options::FormatOptions;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// Content for the writer: a run of bytes of the virtual disk.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Bytes to store; `encoded` holds them as the writer's [`ChunkEncoder`] encoded them.
    Data {
        /// The plain bytes.
        bytes: &'a [u8],
        /// The encoder's output for these bytes, when the writer has an encoder.
        encoded: Option<&'a [u8]>,
    },
    /// Data of this many bytes that a worker has already written at its place through the
    /// writer's [`DirectWrite`].
    Placed(u64),
    /// A run that must read as zeros (whatever a backing image holds).
    Zero(u64),
    /// A run the target leaves unallocated, so it reads from the target's backing image; the
    /// engine sends this only when the target has one, and means Zero otherwise.
    Unallocated(u64),
}

impl Piece<'_> {
    /// The number of virtual bytes the piece covers.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Data { bytes, .. } => bytes.len() as u64,
            Piece::Placed(n) | Piece::Zero(n) | Piece::Unallocated(n) => *n,
        }
    }

    /// True for a piece covering no bytes (never sent by the engine).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes (compresses) data granules on the engine's worker threads.
pub trait ChunkEncoder: Send + Sync {
    /// Encodes the granule at virtual `offset` into `out` (which arrives empty).
    fn encode(&self, offset: u64, data: &[u8], out: &mut Vec<u8>) -> Result<()>;
}

/// Writes data at its final place in the output, from the engine's worker threads, in any
/// order. The writer then receives each such range as [`Piece::Placed`], in order.
pub trait DirectWrite: Send + Sync {
    /// Writes `bytes`, the virtual disk's data at `offset` (a data piece the writer will get as
    /// placed), where it belongs in the output.
    fn write_data(&self, offset: u64, bytes: &[u8]) -> Result<()>;

    /// Where the data of `[offset, offset + len)` goes when it goes into a regular host file
    /// by position: the file and the place of `offset` in it, with how many bytes from there
    /// lie in that file contiguously (at most `len`). The engine then lets the kernel copy
    /// host-file data there (`convert -C`, `copy_file_range`). `None` (the default) where the
    /// output is not such a file (a device, a block placed as it arrives).
    fn host_target(&self, offset: u64, len: u64) -> Option<HostTarget<'_>> {
        let _ = (offset, len);
        None
    }
}

/// A range of a regular host file that a [`DirectWrite`] writes by position.
#[derive(Debug, Clone, Copy)]
pub struct HostTarget<'a> {
    /// The output file, open for writing.
    pub file: &'a File,
    /// Where the range starts in it.
    pub offset: u64,
    /// The bytes that lie there contiguously (never 0).
    pub len: u64,
}

/// Receives a virtual disk in order and writes it in a target format.
pub trait ImageWriter: Send {
    /// Data pieces start and end on multiples of this many bytes (except the last at the end
    /// of the disk), and zero detection never splits a granule. A writer with an encoder
    /// receives each data granule as its own piece. A power of two, at least 512.
    fn granularity(&self) -> u64 {
        512
    }

    /// The encoder to run on each data granule, for writers that compress.
    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        None
    }

    /// Where workers may write data themselves (see [`DirectWrite`]); `None` (the default)
    /// sends all data through [`ImageWriter::write`]. Never offered together with an encoder.
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        None
    }

    /// Receives the next piece, which starts at `offset`: pieces arrive in order with no gaps
    /// and no overlaps, from 0 to the virtual size.
    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()>;

    /// Writes what remains (tables, footers) and flushes to stable storage. The caller then
    /// commits the staged files; a writer never renames anything itself.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Answers, before any data is written, whether a range of the source may hold data. Writers
/// that must commit an allocation table in front of the data when they stream (a dynamic VHD
/// to a pipe) plan with it; it costs no data reads.
pub trait SourceMap: Send + Sync {
    /// True when `[offset, offset + len)` of the source may hold non-zero data (false means the
    /// whole range surely reads as zeros, or surely comes from the target's backing image).
    fn may_have_data(&self, offset: u64, len: u64) -> Result<bool>;
}

/// The backing image a new image is made against (`create -b`, `convert -B`).
pub struct BackingTarget {
    /// The reference to store in the new image, as the user gave it (usually relative).
    pub stored_name: String,
    /// Where it is on disk now.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// The opened backing image, for its size and identity (UUID, content id).
    pub image: Arc<Image>,
}

impl std::fmt::Debug for BackingTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackingTarget")
            .field("stored_name", &self.stored_name)
            .field("path", &self.path)
            .field("format", &self.format)
            .finish()
    }
}

/// Everything a writer needs to know about the image to make.
pub struct CreateSpec {
    /// The virtual size in bytes.
    pub size: u64,
    /// The validated `-o` options.
    pub options: FormatOptions,
    /// The image's backing image, if it is a differencing/delta image.
    pub backing: Option<BackingTarget>,
    /// `-c`: compress where the format can.
    pub compress: bool,
    /// The source's allocation, when converting (absent for `create`, where all is zero).
    pub source_map: Option<Arc<dyn SourceMap>>,
    /// `convert --bitmaps`: the source's persistent dirty bitmaps, for a qcow2 target to hold
    /// (empty otherwise; only qcow2 writes them).
    pub bitmaps: Vec<Arc<dyn crate::dirty_bitmap::DirtyBitmap>>,
}

impl CreateSpec {
    /// A spec for `size` bytes with the given options, no backing, no compression.
    pub fn new(size: u64, options: FormatOptions) -> CreateSpec {
        CreateSpec {
            size,
            options,
            backing: None,
            compress: false,
            source_map: None,
            bitmaps: Vec::new(),
        }
    }

    /// True when the source may hold data in the range; always false for `create`, whose
    /// content is all zeros.
    pub fn may_have_data(&self, offset: u64, len: u64) -> Result<bool> {
        match &self.source_map {
            Some(map) => map.may_have_data(offset, len),
            None => Ok(false),
        }
    }
}

/// Calls `f(pos, part)` for the parts of `bytes` (the virtual disk's bytes at `offset`) that
/// fall in each `block`-byte block, in order: for writers that place data block by block.
pub fn for_each_block(
    offset: u64,
    bytes: &[u8],
    block: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut done = 0usize;
    while done < bytes.len() {
        let pos = offset + done as u64;
        let n = ((block - pos % block) as usize).min(bytes.len() - done);
        f(pos, &bytes[done..done + n])?;
        done += n;
    }
    Ok(())
}
