//! Sinks: where a writer's bytes go.
//!
//! Writers never own files or streams directly: they get an [`Output`] and take [`Sink`]s from
//! it. One place ([`crate::convert`]) decides what a destination is:
//!
//! - [`FileSink::new_file`]: a new file, staged without a name and renamed into place when
//!   complete (see [`crate::staging`]); unwritten ranges are holes.
//! - [`FileSink::existing`]: an existing file or block/character device, written in place
//!   (`-n`, `/dev/sdX`, an LVM volume): never truncated or replaced, zero ranges written or
//!   discarded, a destination smaller than the image refused before anything is written.
//! - [`PipeSink`]: standard output or any byte stream, strictly front to back.
//! - [`TarStream`] and [`TarMember`]: a member of a tar archive (OVA, XVA), front to back.
//! - [`HashingTee`]: passes bytes on and digests them (OVA manifests, XVA checksums).
//!
//! Random-access sinks also hand out a [`SharedSink`], through which the engine's workers
//! write payload at its place in parallel while the writer keeps the metadata in order.

mod file;
mod hash;
mod pipe;
mod sequential;
mod tar;

pub use file::{FileSink, Placement};
pub use hash::{Digest, DigestAlgorithm, HashingTee};
pub use pipe::PipeSink;
pub use sequential::SequentialWriter;
pub use tar::{TarMember, TarStream, member_header};

use crate::error::{Error, Result};
use crate::staging::Staging;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a sink can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anywhere, in any order (a file, a device).
    Random,
    /// Front to back only (a pipe, a tar member): offsets never go back, gaps become zeros.
    Sequential,
}

/// Where output bytes go.
pub trait Sink: Send {
    /// The name for messages: the destination the user gave, never a temporary name.
    fn name(&self) -> &Path;

    /// How the sink can be written.
    fn access(&self) -> Access;

    /// Writes all of `buf` at `offset`. A sequential sink takes offsets in increasing order
    /// and fills any gap before `offset` with zeros.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()>;

    /// Makes `[offset, offset + len)`, which this writer has not written, read as zeros: a
    /// no-op on a new file (its unwritten ranges are holes), zeros written or discarded in an
    /// existing file or device, zeros emitted on a stream.
    fn write_zeros(&mut self, offset: u64, len: u64) -> Result<()>;

    /// Declares the output's length: a new file is sized to it (holes), an existing file or
    /// device must hold at least this much (checked before anything is written), a stream is
    /// padded with zeros up to it when finished.
    fn set_len(&mut self, len: u64) -> Result<()>;

    /// Reserves space for the first `len` bytes without writing (`preallocation=falloc`).
    fn preallocate(&mut self, len: u64) -> Result<()> {
        let _ = len;
        Err(Error::unsupported("this destination cannot preallocate space").with_path(self.name()))
    }

    /// A handle for writing from other threads, for random-access sinks.
    fn shared(&self) -> Option<Arc<dyn SharedSink>> {
        None
    }

    /// Writes what is buffered and, where the sink was asked to, flushes to stable storage.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Positional writes from any thread (the engine's workers placing payload).
pub trait SharedSink: Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;

    /// The file written, when it is a regular file that [`SharedSink::write_at`] writes at
    /// the offsets given, unchanged (so the kernel may copy into it: `copy_file_range`).
    fn regular_file(&self) -> Option<&std::fs::File> {
        None
    }
}

enum OutputKind<'a> {
    /// New files: the main one at the destination, others beside it.
    NewFiles(&'a mut Staging),
    /// One sink given by the caller (a pipe, a device, an existing file, a tar member).
    Single(Option<Box<dyn Sink + 'a>>),
}

/// What a writer writes into: new files through a staging area, or one given sink.
pub struct Output<'a> {
    path: PathBuf,
    kind: OutputKind<'a>,
}

impl<'a> Output<'a> {
    /// New files: the main file at `path` (staged, appearing on commit), others beside it.
    pub fn new_files(staging: &'a mut Staging, path: impl Into<PathBuf>) -> Output<'a> {
        Output {
            path: path.into(),
            kind: OutputKind::NewFiles(staging),
        }
    }

    /// The single sink `sink`: the image must be one file.
    pub fn single(sink: Box<dyn Sink + 'a>) -> Output<'a> {
        Output {
            path: sink.name().to_path_buf(),
            kind: OutputKind::Single(Some(sink)),
        }
    }

    /// The main destination's name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder new files go into, when the output is new files (for the relative names a
    /// differencing image stores).
    pub fn folder(&self) -> Option<PathBuf> {
        match self.kind {
            OutputKind::NewFiles(_) => Some(crate::gate::folder_of(&self.path)),
            OutputKind::Single(_) => None,
        }
    }

    /// How the main sink can be written.
    pub fn access(&self) -> Access {
        match &self.kind {
            OutputKind::NewFiles(_) => Access::Random,
            OutputKind::Single(Some(s)) => s.access(),
            OutputKind::Single(None) => Access::Sequential,
        }
    }

    /// True when the writer may create files beside the main one (extents).
    pub fn can_add_files(&self) -> bool {
        matches!(self.kind, OutputKind::NewFiles(_))
    }

    /// A description of a single sink for messages ("a pipe", "a device").
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            OutputKind::NewFiles(_) => "new files",
            OutputKind::Single(Some(s)) if s.access() == Access::Sequential => "a stream",
            OutputKind::Single(_) => "an existing file or device",
        }
    }

    /// The main sink (taken once).
    pub fn main(&mut self) -> Result<Box<dyn Sink + 'a>> {
        match &mut self.kind {
            OutputKind::NewFiles(staging) => {
                let durability = staging.durability();
                let file = staging.create(&self.path)?;
                Ok(Box::new(FileSink::new_file(file, &self.path, durability)))
            }
            OutputKind::Single(sink) => sink.take().ok_or_else(|| {
                Error::invalid("internal error: the output's sink was taken twice")
                    .with_path(&self.path)
            }),
        }
    }

    /// A new file named `name` beside the main one (an extent); refused for single sinks.
    pub fn beside(&mut self, name: &str) -> Result<Box<dyn Sink + 'a>> {
        let path = crate::gate::folder_of(&self.path).join(name);
        match &mut self.kind {
            OutputKind::NewFiles(staging) => {
                let durability = staging.durability();
                let file = staging.create(&path)?;
                Ok(Box::new(FileSink::new_file(file, &path, durability)))
            }
            OutputKind::Single(_) => Err(Error::invalid(format!(
                "this image is several files and cannot be written to {}",
                self.describe()
            ))
            .with_path(&self.path)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    /// A `Write` into shared memory, to look at what a stream sink produced.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_pipe_fills_gaps_and_pads_to_its_length() {
        let mem = Shared::default();
        let mut sink: Box<dyn Sink> = Box::new(PipeSink::new(Box::new(mem.clone()), "-"));
        sink.set_len(10).unwrap();
        sink.write_at(b"ab", 2).unwrap();
        sink.write_zeros(4, 2).unwrap();
        sink.write_at(b"c", 6).unwrap();
        assert!(sink.write_at(b"x", 1).is_err());
        sink.finish().unwrap();
        assert_eq!(&*mem.0.lock().unwrap(), b"\0\0ab\0\0c\0\0\0");
    }
}
