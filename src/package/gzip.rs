//! Gzip-compressed package files (`ovf:compression="gzip"`), and gzip- or zstd-compressed
//! whole packages (an XVA), made readable at any offset.
//!
//! Neither gzip nor zstd streams as producers write them have an index, so random access means inflating from the start. The member is inflated
//! once, when opened, into an unnamed temporary file (`O_TMPFILE` in the temporary folder, or a
//! file whose name is removed at once where the file system cannot do that): it costs disk
//! space, not memory, however large the disk, and nothing is left behind when the process
//! ends, even by `kill -9`. `memfd` would keep the disk in memory (tmpfs) and was ruled out
//! for that reason. All-zero runs are left as holes, so a sparse disk stays sparse.
//!
//! The inflated size is bounded by what the caller says the package declares, when it does:
//! a stream that inflates past it is an error, never a full disk.

use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::storage::{Storage, StorageExt};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A compression [`GzipStorage::inflate_with`] undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip (one member, or several concatenated).
    Gzip,
    /// zstd (one frame, or several concatenated).
    Zstd,
}

impl Codec {
    /// The codec whose magic number `head` starts with, if any.
    pub fn sniff(head: &[u8]) -> Option<Codec> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Codec::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    /// A decoder of `compressed` from its start, as a stream.
    pub fn decoder<'a>(self, compressed: &'a dyn Storage) -> Result<Box<dyn Read + 'a>> {
        let reader = std::io::BufReader::with_capacity(
            1 << 20,
            StorageReader {
                storage: compressed,
                pos: 0,
            },
        );
        Ok(match self {
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(
                |e| {
                    Error::corrupt(format!("the zstd stream cannot be read: {e}"))
                        .with_path(compressed.name())
                },
            )?),
        })
    }
}

/// The inflated bytes of a gzip- (or zstd-) compressed storage, held in an unnamed temporary
/// file.
#[derive(Debug)]
pub struct GzipStorage {
    file: HostFile,
    name: PathBuf,
}

/// Reads a storage from its start as a stream.
struct StorageReader<'a> {
    storage: &'a dyn Storage,
    pos: u64,
}

impl Read for StorageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .storage
            .read_at_most(buf, self.pos)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl GzipStorage {
    /// Inflates `compressed` (one gzip stream, or several concatenated) into a temporary file
    /// in `dir` (the temporary folder when `None`). `limit`, when given, is the most bytes
    /// the inflated file may hold. The result is named `name` in messages.
    pub fn inflate(
        compressed: &dyn Storage,
        limit: Option<u64>,
        dir: Option<&Path>,
        name: impl Into<PathBuf>,
    ) -> Result<GzipStorage> {
        GzipStorage::inflate_with(Codec::Gzip, compressed, limit, dir, name)
    }

    /// Like [`GzipStorage::inflate`], for a stream compressed with `codec`.
    pub fn inflate_with(
        codec: Codec,
        compressed: &dyn Storage,
        limit: Option<u64>,
        dir: Option<&Path>,
        name: impl Into<PathBuf>,
    ) -> Result<GzipStorage> {
        GzipStorage::inflate_parts(codec, &[compressed], limit, dir, name)
    }

    /// Inflates `parts`, each a whole stream compressed with `codec`, one after the other into
    /// one temporary file: what a reader gets who inflates each part and concatenates the
    /// results (a legacy XVA's disk, one gzip file per chunk). An error names the part whose
    /// stream fails. `limit` bounds the total, as for [`GzipStorage::inflate`].
    pub fn inflate_parts(
        codec: Codec,
        parts: &[&dyn Storage],
        limit: Option<u64>,
        dir: Option<&Path>,
        name: impl Into<PathBuf>,
    ) -> Result<GzipStorage> {
        let name = name.into();
        let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let file = crate::staging::scratch_file(&dir)?;
        const BUF: usize = 1 << 20;
        let mut buf = vec![0u8; BUF];
        let mut total = 0u64;
        for compressed in parts {
            let mut decoder = codec.decoder(*compressed)?;
            let start = total;
            loop {
                let mut filled = 0;
                while filled < BUF {
                    let n = decoder.read(&mut buf[filled..]).map_err(|e| {
                        Error::corrupt(format!(
                            "the {} stream is corrupt after {} inflated bytes: {e}",
                            codec.name(),
                            total - start + filled as u64
                        ))
                        .with_path(compressed.name())
                    })?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                if let Some(limit) = limit
                    && total + filled as u64 > limit
                {
                    return Err(Error::corrupt(format!(
                        "the {} stream inflates to more than the {limit} bytes the package declares",
                        codec.name()
                    ))
                    .with_path(compressed.name()));
                }
                // Zeros are left as holes: the file is extended to its length at the end.
                let data = &buf[..filled];
                let mut at = 0;
                for block in data.chunks(64 << 10) {
                    if block.iter().any(|&b| b != 0) {
                        file.write_all_at(block, total + at).map_err(|e| {
                            Error::io("cannot write the inflated copy to the temporary folder", e)
                                .with_path(&dir)
                        })?;
                    }
                    at += block.len() as u64;
                }
                total += filled as u64;
                if filled < BUF {
                    break;
                }
            }
        }
        file.set_len(total).map_err(|e| {
            Error::io("cannot size the inflated copy in the temporary folder", e).with_path(&dir)
        })?;
        Ok(GzipStorage {
            file: HostFile::from_file(file, &name)?,
            name,
        })
    }
}

impl GzipStorage {
    /// The same inflated bytes followed by zeros up to `len` (a holes-only extension; nothing
    /// is written): a disk whose stored chunks stop before its declared size, as an importer
    /// writing them into a new volume of that size leaves the rest zero.
    pub fn padded_to(self, len: u64) -> Result<GzipStorage> {
        if len <= self.file.len() {
            return Ok(self);
        }
        let file =
            self.file.file().try_clone().map_err(|e| {
                Error::io("cannot reopen the inflated copy", e).with_path(&self.name)
            })?;
        file.set_len(len).map_err(|e| {
            Error::io("cannot size the inflated copy in the temporary folder", e)
                .with_path(&self.name)
        })?;
        Ok(GzipStorage {
            file: HostFile::from_file(file, &self.name)?,
            name: self.name,
        })
    }
}

impl Storage for GzipStorage {
    fn name(&self) -> &Path {
        &self.name
    }
    fn len(&self) -> u64 {
        self.file.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        self.file.next_data(offset)
    }
    fn next_hole(&self, offset: u64) -> Result<u64> {
        self.file.next_hole(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_once_and_reads_anywhere() {
        let mut data = vec![0u8; 3 << 20];
        data[5] = 1;
        data[(2 << 20) + 7] = 9;
        let src = Memory::new("vm.ova:disk.raw.gz", gz(&data));
        let g = GzipStorage::inflate(&src, Some(3 << 20), None, "vm.ova:disk.raw").unwrap();
        assert_eq!(g.len(), 3 << 20);
        assert_eq!(g.read_vec(0, 3 << 20, "all").unwrap(), data);
        assert_eq!(g.name(), Path::new("vm.ova:disk.raw"));
        let err = GzipStorage::inflate(&src, Some(1 << 20), None, "x").unwrap_err();
        assert!(
            err.to_string().contains("more than the 1048576 bytes"),
            "{err}"
        );
        let mut bad = gz(&data);
        let n = bad.len();
        bad[n / 2] ^= 0xff;
        bad.truncate(n - 4);
        let err = GzipStorage::inflate(&Memory::new("c.gz", bad), None, None, "x").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("c.gz: the gzip stream is corrupt"),
            "{err}"
        );
        let err = GzipStorage::inflate(&Memory::new("n.gz", b"not gzip".to_vec()), None, None, "x")
            .unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn zstd_inflates_too() {
        let mut data = vec![0u8; 2 << 20];
        data[100] = 3;
        let z = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(Codec::sniff(&z), Some(Codec::Zstd));
        assert_eq!(Codec::sniff(&gz(b"x")), Some(Codec::Gzip));
        let src = Memory::new("vm.xva.zst", z.clone());
        let s = GzipStorage::inflate_with(Codec::Zstd, &src, None, None, "vm.xva").unwrap();
        assert_eq!(s.read_vec(0, 2 << 20, "all").unwrap(), data);
        let err = GzipStorage::inflate_with(
            Codec::Zstd,
            &Memory::new("c.zst", z[..z.len() / 2].to_vec()),
            None,
            None,
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("zstd stream is corrupt"), "{err}");
    }
}
