//! Sources that can only be read front to back: an image arriving on a pipe (`convert - out`).
//!
//! A format that can be parsed in one forward pass (stream-optimized VMDK) implements
//! [`StreamSource`]; the conversion engine pulls runs from it on one thread and hands encoded
//! payloads to its workers to decode in parallel.

use crate::error::Result;
use crate::format::Format;
use std::sync::Arc;

/// Decodes (inflates) one encoded run on a worker thread.
pub trait ChunkDecoder: Send + Sync {
    /// Decodes `encoded` into exactly `out.len()` bytes; a payload that decodes to more or
    /// fewer bytes is corrupt, and decoding must stop at `out.len()` (never allocate more).
    fn decode(&self, encoded: &[u8], out: &mut [u8]) -> Result<()>;
}

/// The bytes of one run of a stream.
pub enum StreamPayload {
    /// Plain bytes, exactly the run's length.
    Plain(Vec<u8>),
    /// Encoded bytes that `decoder` turns into the run's bytes.
    Encoded {
        /// The encoded bytes.
        bytes: Vec<u8>,
        /// What decodes them.
        decoder: Arc<dyn ChunkDecoder>,
    },
}

/// One run of the virtual disk read from a stream.
pub struct StreamRun {
    /// First virtual byte; strictly greater than or equal to the end of the previous run.
    pub offset: u64,
    /// Length in bytes (the decoded length for encoded payloads); at most 16 MiB.
    pub len: u64,
    /// The run's bytes.
    pub payload: StreamPayload,
}

/// An image read front to back.
pub trait StreamSource: Send {
    /// The image's format.
    fn format(&self) -> Format;

    /// The name errors about the stream's content give (`<stdin>`).
    fn name(&self) -> &std::path::Path {
        std::path::Path::new("<stream>")
    }

    /// The size of the virtual disk (known from the stream's header).
    fn virtual_size(&self) -> u64;

    /// The next run with data, in increasing offset order; gaps between runs read as zeros.
    /// `None` at the end of the stream. A stream whose runs go backwards cannot be read from a
    /// pipe and must say so in its error.
    fn next_run(&mut self) -> Result<Option<StreamRun>>;
}
