//! Packages: the archives whole VMs travel in (OVA, later XVA), read in place.
//!
//! - [`tar_index`]: the members of a tar held in any [`Storage`], found by reading headers
//!   only; a member is read through a [`Window`](crate::storage::Window), never extracted.
//! - [`manifest`]: OVF manifests (`.mf`) in every spelling vendors write, verified against
//!   members; `.cert` files noted (not verified).
//! - [`chunked`]: an OVF file split into `ovf:chunkSize` parts, read as one
//!   [`Concat`] storage.
//! - [`verify`]: `check` of a package: every disk read to its end through the package's checks.
//! - [`gzip`]: a gzip-compressed file (`ovf:compression="gzip"`) inflated once into an unnamed
//!   temporary file.

pub mod gzip;
pub mod manifest;
pub mod tar_index;
pub mod verify;

pub use gzip::{Codec, GzipStorage};
pub use manifest::{Algorithm, CertNote, Entry, Manifest};
pub use tar_index::{Limits, Member, MemberKind, TarIndex};

use crate::error::{Error, Result};
use crate::storage::{Concat, Storage};
use std::sync::Arc;

/// How an OVF `File` element says one of its files is stored in the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileRef<'a> {
    /// `ovf:href`: the member's name (or, with a chunk size, its parts' common prefix).
    pub href: &'a str,
    /// `ovf:chunkSize`, when the file is split into parts.
    pub chunk_size: Option<u64>,
    /// `ovf:compression` (`gzip`, or `identity`/absent for none).
    pub compression: Option<&'a str>,
    /// The most bytes a compressed file may inflate to (from the disk's declared capacity and
    /// format, which the OVF reader knows); `None` for no bound.
    pub inflate_limit: Option<u64>,
}

/// The bytes of an OVF file in the package: the member itself (a window, read in place), its
/// chunk parts read as one storage, and, for `gzip`, the inflated copy (see [`gzip`]; the
/// temporary file goes to `temp_dir`, the system's temporary folder when `None`). Any other
/// compression is an unsupported-feature error naming it.
pub fn open_file(
    index: &TarIndex,
    file: &FileRef<'_>,
    temp_dir: Option<&std::path::Path>,
) -> Result<Arc<dyn Storage>> {
    let stored: Arc<dyn Storage> = match file.chunk_size {
        Some(chunk) => Arc::new(chunked(index, file.href, chunk)?),
        None => Arc::new(index.open(file.href)?),
    };
    match file.compression.map(str::trim) {
        None | Some("") | Some("identity") => Ok(stored),
        Some(c) if c.eq_ignore_ascii_case("gzip") => Ok(Arc::new(GzipStorage::inflate(
            &*stored,
            file.inflate_limit,
            temp_dir,
            index.member_label(file.href),
        )?)),
        Some(other) => Err(Error::unsupported(format!(
            "'{}' is compressed with '{}', which diskferry does not read (gzip only)",
            file.href,
            other.escape_debug()
        ))
        .with_path(index.storage().name())),
    }
}

/// The file `href` that an OVF splits into parts of `chunk_size` bytes (`ovf:chunkSize`): the
/// members `HREF.000000000`, `HREF.000000001`, ... (any fixed number of digits, as long as
/// every part uses the same; VMware writes nine, others three), found in order from 0 and read
/// as one storage. Every part but the last must be exactly `chunk_size` bytes; the last may be
/// shorter but not empty or longer. A gap in the numbering, a part that is not a regular file,
/// or a wrong size is an error naming the part.
pub fn chunked(index: &TarIndex, href: &str, chunk_size: u64) -> Result<Concat> {
    let archive = index.storage().name();
    let label = index.member_label(href);
    if chunk_size == 0 {
        return Err(Error::corrupt(format!("'{href}' has a chunk size of 0")).with_path(archive));
    }
    let prefix = format!("{}.", href.trim_start_matches("./"));
    // Parts named with a number after HREF., each with its number.
    let mut parts: Vec<(u64, usize, &Member)> = index
        .members()
        .iter()
        .filter_map(|m| {
            let digits = m.name.strip_prefix(&prefix)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((digits.parse().ok()?, digits.len(), m))
        })
        .collect();
    if parts.is_empty() {
        return Err(index
            .missing(&format!("{prefix}000000000"))
            .context_after(format!(
                "'{href}' is chunked, but none of its parts is there"
            )));
    }
    parts.sort_by_key(|&(n, _, _)| n);
    let width = parts[0].1;
    let mut storages: Vec<Arc<dyn Storage>> = Vec::with_capacity(parts.len());
    let count = parts.len();
    for (i, &(n, w, m)) in parts.iter().enumerate() {
        let expected = format!("{prefix}{i:0width$}");
        if n != i as u64 || w != width {
            return Err(Error::corrupt(format!(
                "chunked file '{href}': part '{}' is out of sequence (expected '{expected}')",
                m.name
            ))
            .with_path(archive));
        }
        let last = i + 1 == count;
        let size_ok = if last {
            m.size > 0 && m.size <= chunk_size
        } else {
            m.size == chunk_size
        };
        if !size_ok {
            return Err(Error::corrupt(format!(
                "chunked file '{href}': part '{}' holds {} bytes, but the chunk size is {chunk_size}{}",
                m.name,
                m.size,
                if last { " (the last part may be shorter, not empty)" } else { "" }
            ))
            .at_offset(m.header_offset)
            .with_path(archive));
        }
        storages.push(Arc::new(index.window(m)?));
    }
    Concat::new(storages, label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Memory, StorageExt};

    fn tar_of(files: &[(&str, &[u8])]) -> Arc<dyn Storage> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        Arc::new(Memory::new("vm.ova", b.into_inner().unwrap()))
    }

    #[test]
    fn chunked_parts_concatenate() {
        let idx = TarIndex::read(tar_of(&[
            ("vm.ovf", b"<x/>"),
            ("disk.vmdk.000", b"abcd"),
            ("disk.vmdk.001", b"efgh"),
            ("disk.vmdk.002", b"ij"),
        ]))
        .unwrap();
        let c = chunked(&idx, "disk.vmdk", 4).unwrap();
        assert_eq!(c.read_vec(0, 10, "all").unwrap(), b"abcdefghij");
        assert_eq!(c.name(), std::path::Path::new("vm.ova:disk.vmdk"));
        let err = chunked(&idx, "disk.vmdk", 5).unwrap_err().to_string();
        assert!(
            err.contains("disk.vmdk.000") && err.contains("chunk size is 5"),
            "{err}"
        );
        assert!(chunked(&idx, "other.vmdk", 4).is_err());
    }

    #[test]
    fn open_file_combines_chunks_and_gzip() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"hello, chunked gzip").unwrap();
        let gz = e.finish().unwrap();
        let half = gz.len().div_ceil(2);
        let idx = TarIndex::read(tar_of(&[
            ("d.gz.000000000", &gz[..half]),
            ("d.gz.000000001", &gz[half..]),
            ("plain", b"abc"),
        ]))
        .unwrap();
        let f = FileRef {
            href: "d.gz",
            chunk_size: Some(half as u64),
            compression: Some("gzip"),
            inflate_limit: Some(100),
        };
        let s = open_file(&idx, &f, None).unwrap();
        assert_eq!(
            s.read_vec(0, s.len(), "all").unwrap(),
            b"hello, chunked gzip"
        );
        let plain = FileRef {
            href: "plain",
            ..FileRef::default()
        };
        assert_eq!(open_file(&idx, &plain, None).unwrap().len(), 3);
        let bz = FileRef {
            compression: Some("bzip2"),
            ..plain
        };
        let err = open_file(&idx, &bz, None).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unsupported);
    }

    #[test]
    fn chunked_gaps_and_mixed_widths_are_errors() {
        let idx = TarIndex::read(tar_of(&[("d.000000000", b"ab"), ("d.000000002", b"c")])).unwrap();
        let err = chunked(&idx, "d", 2).unwrap_err().to_string();
        assert!(
            err.contains("out of sequence") && err.contains("d.000000001"),
            "{err}"
        );
        let idx = TarIndex::read(tar_of(&[("d.000", b"ab"), ("d.0001", b"c")])).unwrap();
        assert!(chunked(&idx, "d", 2).is_err());
        let idx = TarIndex::read(tar_of(&[("d.000", b"ab"), ("d.001", b"")])).unwrap();
        assert!(chunked(&idx, "d", 2).is_err());
    }
}
