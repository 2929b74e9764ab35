//! Format detection from content: magic numbers at the start, footers at the end. Never from
//! the file name. Raw is what is left when nothing matches, and is reported as guessed.

use crate::error::{Error, Result};
use crate::format::Format;
use crate::formats;
use crate::host_file::HostFile;

/// How many bytes of the start of a file the probes see (enough for a VMDK text descriptor's
/// first lines and every binary header we know).
pub const HEAD_LEN: usize = 64 * 1024;
/// How many bytes of the end of a file the probes see (a VHD footer, with room for the
/// 511-byte footers of old Virtual PC versions).
pub const TAIL_LEN: usize = 1024;

/// The bytes a probe looks at.
#[derive(Debug)]
pub struct ProbeData {
    /// The first bytes of the file (up to [`HEAD_LEN`]).
    pub head: Vec<u8>,
    /// The last bytes of the file (up to [`TAIL_LEN`]); overlaps `head` in small files.
    pub tail: Vec<u8>,
    /// The file's length.
    pub file_len: u64,
}

impl ProbeData {
    /// Reads the head and tail of `file`.
    pub fn read(file: &HostFile) -> Result<ProbeData> {
        let len = file.len();
        let mut head = vec![0u8; (len.min(HEAD_LEN as u64)) as usize];
        file.read_exact_at(&mut head, 0)?;
        let tail_len = len.min(TAIL_LEN as u64);
        let mut tail = vec![0u8; tail_len as usize];
        file.read_exact_at(&mut tail, len - tail_len)?;
        Ok(ProbeData {
            head,
            tail,
            file_len: len,
        })
    }

    /// The head bytes `range`, or `None` when the file is shorter.
    pub fn head_at(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.head.get(offset..offset.checked_add(len)?)
    }
}

/// The result of detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// The format.
    pub format: Format,
    /// True when no format matched and raw was assumed.
    pub guessed: bool,
}

/// Detects the format of an open file.
pub fn detect_format(file: &HostFile) -> Result<Detected> {
    if file.is_empty() {
        return Err(Error::invalid(
            "file is empty: not a disk image (give -f raw to treat it as a zero-byte raw disk)",
        )
        .with_path(file.path()));
    }
    let probe = ProbeData::read(file)?;
    Ok(detect_from(&probe))
}

/// Detects the format from probe data. Binary magics at offset 0 are tried first, the text
/// and footer probes after, so that a qcow2 image that happens to end in a VHD footer is
/// still qcow2.
pub fn detect_from(probe: &ProbeData) -> Detected {
    let found = |format| Detected {
        format,
        guessed: false,
    };
    if let Some(magic) = probe.head_at(0, 8) {
        if &magic[..4] == b"QFI\xfb" {
            let version = u32::from_be_bytes(magic[4..8].try_into().expect("4 bytes"));
            return found(if version == 1 {
                Format::Qcow
            } else {
                Format::Qcow2
            });
        }
        if magic == b"vhdxfile" {
            return found(Format::Vhdx);
        }
    }
    if let Some(sig) = probe.head_at(0x40, 4)
        && u32::from_le_bytes(sig.try_into().expect("4 bytes")) == 0xBEDA_107F
    {
        return found(Format::Vdi);
    }
    if formats::vmdk::probe(probe) {
        return found(Format::Vmdk);
    }
    if formats::vhd::probe(probe) {
        return found(Format::Vhd);
    }
    Detected {
        format: Format::Raw,
        guessed: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(head: &[u8]) -> ProbeData {
        ProbeData {
            head: head.to_vec(),
            tail: head[head.len().saturating_sub(TAIL_LEN)..].to_vec(),
            file_len: head.len() as u64,
        }
    }

    #[test]
    fn binary_magics() {
        let mut q = vec![0u8; 512];
        q[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
        assert_eq!(detect_from(&probe(&q)).format, Format::Qcow2);
        q[7] = 1;
        assert_eq!(detect_from(&probe(&q)).format, Format::Qcow);
        let mut x = vec![0u8; 512];
        x[..8].copy_from_slice(b"vhdxfile");
        assert_eq!(detect_from(&probe(&x)).format, Format::Vhdx);
        let mut v = vec![0u8; 512];
        v[0x40..0x44].copy_from_slice(&0xBEDA_107Fu32.to_le_bytes());
        assert_eq!(detect_from(&probe(&v)).format, Format::Vdi);
    }

    #[test]
    fn unknown_content_is_guessed_raw() {
        let d = detect_from(&probe(&[0x55u8; 4096]));
        assert_eq!(
            d,
            Detected {
                format: Format::Raw,
                guessed: true
            }
        );
    }
}
