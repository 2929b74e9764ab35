//! A compressed image for a stream is written to an unnamed temporary file first, then copied
//! to the stream: its header, which comes first, names tables whose places depend on the sizes
//! of the compressed clusters, known only once all are written. It costs the compressed
//! image's size in the temporary folder (`TMPDIR`, else `/tmp`) for the time of the copy.

use crate::error::{Error, Result};
use crate::host_file::Durability;
use crate::sink::{FileSink, Sink};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The temporary file and the stream it will be copied to.
pub struct Spool<'a> {
    file: Arc<File>,
    stream: Box<dyn Sink + 'a>,
}

impl<'a> Spool<'a> {
    /// A spool for `stream`, and the sink that writes into it.
    pub fn new(stream: Box<dyn Sink + 'a>) -> Result<(Spool<'a>, Box<dyn Sink + 'a>)> {
        let dir = std::env::temp_dir();
        let file = Arc::new(crate::staging::scratch_file(&dir)?);
        let sink = FileSink::new_file(Arc::clone(&file), stream.name(), Durability::Unsafe);
        Ok((Spool { file, stream }, Box::new(sink)))
    }

    /// Copies the finished image (`len` bytes) to the stream and finishes it.
    pub fn copy_out(mut self, len: u64) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| Error::io("cannot read back the temporary copy of the image", e))?;
            self.stream.write_at(&buf[..n], at)?;
            at += n as u64;
        }
        self.stream.set_len(len)?;
        self.stream.finish()
    }

    /// The temporary file's length.
    pub fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io("cannot measure the temporary copy of the image", e))
    }
}
