//! What format probes look at: the first and last bytes of a file. Detection itself walks the
//! registry's drivers ([`crate::registry::Registry::detect`]); never the file name.

use crate::error::Result;
use crate::storage::Storage;

/// How many bytes of the start of a file the probes see (enough for a VMDK text descriptor's
/// first lines and every binary header we know).
pub const HEAD_LEN: usize = 64 * 1024;
/// How many bytes of the end of a file the probes see (a VHD footer, with room for the
/// 511-byte footers of old Virtual PC versions).
pub const TAIL_LEN: usize = 1024;

/// The bytes a probe looks at.
#[derive(Debug, Clone, Default)]
pub struct ProbeData {
    /// The first bytes of the file (up to [`HEAD_LEN`]).
    pub head: Vec<u8>,
    /// The last bytes of the file (up to [`TAIL_LEN`]); overlaps `head` in small files. Empty
    /// for a stream, whose end is not known yet.
    pub tail: Vec<u8>,
    /// The file's length (`u64::MAX` for a stream).
    pub file_len: u64,
}

impl ProbeData {
    /// Reads the head and tail of `storage`.
    pub fn read(storage: &dyn Storage) -> Result<ProbeData> {
        let len = storage.len();
        let mut head = vec![0u8; (len.min(HEAD_LEN as u64)) as usize];
        storage.read_exact_at(&mut head, 0)?;
        let tail_len = len.min(TAIL_LEN as u64);
        let mut tail = vec![0u8; tail_len as usize];
        storage.read_exact_at(&mut tail, len - tail_len)?;
        Ok(ProbeData {
            head,
            tail,
            file_len: len,
        })
    }

    /// The first bytes of a stream (no tail: its end has not arrived).
    pub fn stream_head(head: Vec<u8>) -> ProbeData {
        ProbeData {
            head,
            tail: Vec::new(),
            file_len: u64::MAX,
        }
    }

    /// No bytes at all: what a probe sees of an empty file.
    pub fn empty() -> ProbeData {
        ProbeData::default()
    }

    /// The head bytes `range`, or `None` when the file is shorter.
    pub fn head_at(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.head.get(offset..offset.checked_add(len)?)
    }
}
