//! A raw disk as one old-GNU sparse tar member (type `S`), what `tar --format=oldgnu -S`
//! writes: only the disk's data is stored, so gzip never sees its holes.
//!
//! The layout, from the GNU tar manual, "Old GNU Format"
//! (<https://www.gnu.org/software/tar/manual/html_node/Old-GNU-Format.html>): the header is a
//! GNU header of type `S` whose `size` counts the stored bytes only; at offset 386 it holds
//! the first four chunks of the sparse map (offset and size, 12-byte numbers each), at 482
//! `isextended`, at 483 `realsize`, the file's real size. When there are more than four
//! chunks, extension headers follow the header, 21 chunks each and their own `isextended`.
//! Then come the chunks' bytes, one after the other.
//!
//! Two details the manual leaves to GNU tar's own behaviour, which readers rely on: GNU tar
//! starts every chunk on a 512-byte block (it pads each chunk's bytes to a block) while
//! Python's `tarfile` places them end to end, so every chunk but a final one ending at the
//! real size is a whole number of blocks here, which both read alike; and a file ending in a
//! hole gets a last chunk of zero bytes at its real size, which GNU tar extracts by
//! truncating the file to that size.
//!
//! The map comes from the staged raw file's holes (`SEEK_DATA`/`SEEK_HOLE`, through
//! [`Storage`]): the raw writer left a hole wherever the disk reads as zeros, so no zero is
//! read again. The map is walked three times (count, extension headers, data) rather than
//! kept, so memory stays bounded however fragmented the disk is.

use crate::error::{Error, Result};
use crate::storage::Storage;
use std::io::Write;
use std::ops::Range;

const BLOCK: u64 = 512;
/// Chunks in the main header, and in each extension header.
const IN_HEADER: usize = 4;
const PER_EXTENSION: usize = 21;
/// How much of a chunk is read at once.
const READ_SIZE: usize = 1 << 20;

/// The data runs of a storage, widened to whole 512-byte blocks (clamped to the end) and
/// merged when widening makes them touch.
struct DataRuns<'a> {
    storage: &'a dyn Storage,
    pos: u64,
}

impl Iterator for DataRuns<'_> {
    type Item = Result<Range<u64>>;

    fn next(&mut self) -> Option<Self::Item> {
        let size = self.storage.len();
        let run = (|| -> Result<Option<Range<u64>>> {
            let Some(data) = self.storage.next_data(self.pos)? else {
                return Ok(None);
            };
            let start = (data / BLOCK * BLOCK).max(self.pos);
            let mut end = start;
            let mut at = data;
            loop {
                let hole = self.storage.next_hole(at)?;
                let widened = hole.div_ceil(BLOCK).saturating_mul(BLOCK).min(size);
                if widened <= end {
                    // A storage that reports no progress: stop here rather than spin.
                    break;
                }
                end = widened;
                // Data may resume within the block the run was widened into, or right at
                // its end: one chunk, not two.
                match self.storage.next_data(end)? {
                    Some(next) if end < size && next / BLOCK * BLOCK <= end => at = next.max(end),
                    _ => break,
                }
            }
            Ok(Some(start..end))
        })();
        match run {
            Ok(Some(r)) if r.start < r.end => {
                self.pos = r.end;
                Some(Ok(r))
            }
            Ok(_) => {
                self.pos = size;
                None
            }
            Err(e) => {
                self.pos = size;
                Some(Err(e))
            }
        }
    }
}

fn data_runs(storage: &dyn Storage) -> DataRuns<'_> {
    DataRuns { storage, pos: 0 }
}

/// The sparse map's chunks: the data runs, then a zero-byte chunk at the real size when the
/// file ends in a hole (or holds no data at all).
fn chunks(storage: &dyn Storage) -> impl Iterator<Item = Result<(u64, u64)>> + '_ {
    let size = storage.len();
    let mut last_end = 0;
    let mut done = false;
    let mut runs = data_runs(storage);
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match runs.next() {
            Some(Ok(r)) => {
                last_end = r.end;
                Some(Ok((r.start, r.end - r.start)))
            }
            Some(Err(e)) => {
                done = true;
                Some(Err(e))
            }
            None => {
                done = true;
                (last_end < size || size == 0).then_some(Ok((size, 0)))
            }
        }
    })
}

/// What the first walk of the map learns.
struct Census {
    chunks: usize,
    stored: u64,
    first: Vec<(u64, u64)>,
}

fn census(storage: &dyn Storage) -> Result<Census> {
    let mut c = Census {
        chunks: 0,
        stored: 0,
        first: Vec::with_capacity(IN_HEADER),
    };
    for chunk in chunks(storage) {
        let (offset, len) = chunk?;
        if c.first.len() < IN_HEADER {
            c.first.push((offset, len));
        }
        c.chunks += 1;
        c.stored += len;
    }
    Ok(c)
}

fn changed(storage: &dyn Storage) -> Error {
    Error::invalid("the disk's layout changed while it was being archived")
        .with_path(storage.name())
}

/// Writes `storage` into `out` as a complete tar archive (the end blocks included) holding one
/// old-GNU sparse member named `name`, modified at `mtime` (seconds since 1970).
pub(crate) fn write_sparse_archive(
    out: &mut impl Write,
    storage: &dyn Storage,
    name: &str,
    mtime: u64,
) -> Result<()> {
    let path = storage.name().to_path_buf();
    let io = |e: std::io::Error| Error::io("cannot write the archive", e).with_path(&path);
    let census = census(storage)?;

    let mut header = tar::Header::new_gnu();
    header
        .set_path(name)
        .map_err(|e| Error::invalid(format!("cannot name a tar member '{name}': {e}")))?;
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(census.stored);
    header.set_entry_type(tar::EntryType::GNUSparse);
    let gnu = header
        .as_gnu_mut()
        .ok_or_else(|| Error::invalid("internal error: a GNU tar header is not GNU"))?;
    for (slot, &(offset, len)) in gnu.sparse.iter_mut().zip(&census.first) {
        slot.set_offset(offset);
        slot.set_length(len);
    }
    gnu.set_real_size(storage.len());
    gnu.set_is_extended(census.chunks > IN_HEADER);
    header.set_cksum();
    out.write_all(header.as_bytes()).map_err(io)?;

    // Extension headers: the chunks after the first four, 21 to a block.
    let mut rest = chunks(storage).skip(IN_HEADER);
    let mut left = census.chunks.saturating_sub(IN_HEADER);
    while left > 0 {
        let mut ext = tar::GnuExtSparseHeader::new();
        let here = left.min(PER_EXTENSION);
        for slot in ext.sparse.iter_mut().take(here) {
            let (offset, len) = rest.next().ok_or_else(|| changed(storage))??;
            slot.set_offset(offset);
            slot.set_length(len);
        }
        left -= here;
        ext.set_is_extended(left > 0);
        out.write_all(ext.as_bytes()).map_err(io)?;
    }
    if rest.next().is_some() {
        return Err(changed(storage));
    }

    let mut buf = vec![0u8; READ_SIZE];
    let mut written = 0u64;
    for run in data_runs(storage) {
        let run = run?;
        let mut pos = run.start;
        while pos < run.end {
            let n = (run.end - pos).min(READ_SIZE as u64) as usize;
            storage.read_exact_at(&mut buf[..n], pos)?;
            out.write_all(&buf[..n]).map_err(io)?;
            pos += n as u64;
        }
        written += run.end - run.start;
    }
    if written != census.stored {
        return Err(changed(storage));
    }
    // The member's last block padded, then the archive's two zero blocks.
    let pad = (BLOCK - written % BLOCK) % BLOCK + 2 * BLOCK;
    out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;
    use std::io::Read;

    /// A storage whose holes are given, to walk maps without a file system.
    #[derive(Debug)]
    struct Holey {
        bytes: Memory,
        data: Vec<Range<u64>>,
    }

    impl Storage for Holey {
        fn name(&self) -> &std::path::Path {
            self.bytes.name()
        }
        fn len(&self) -> u64 {
            self.bytes.len()
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            self.bytes.read_exact_at(buf, offset)
        }
        fn next_data(&self, offset: u64) -> Result<Option<u64>> {
            Ok(self
                .data
                .iter()
                .find(|r| r.end > offset)
                .map(|r| r.start.max(offset)))
        }
        fn next_hole(&self, offset: u64) -> Result<u64> {
            Ok(self
                .data
                .iter()
                .find(|r| r.contains(&offset))
                .map_or(offset, |r| r.end))
        }
    }

    fn holey(size: usize, data: &[Range<u64>]) -> Holey {
        let mut bytes = vec![0u8; size];
        for r in data {
            for i in r.clone() {
                bytes[i as usize] = (i % 251) as u8 + 1;
            }
        }
        Holey {
            bytes: Memory::new("disk", bytes),
            data: data.to_vec(),
        }
    }

    fn archive(s: &Holey) -> Vec<u8> {
        let mut out = Vec::new();
        write_sparse_archive(&mut out, s, "disk.raw", 1).unwrap();
        out
    }

    #[test]
    fn runs_are_widened_to_blocks_and_merged() {
        let s = holey(8192, &[100..200, 600..1024, 1100..1200, 5000..8000]);
        let runs: Vec<_> = data_runs(&s).map(|r| r.unwrap()).collect();
        assert_eq!(runs, [0..1536, 4608..8192]);
    }

    #[test]
    fn the_tar_crate_reads_back_the_disk_with_many_chunks() {
        // 30 chunks: the header's four, one full extension and a second one.
        let data: Vec<Range<u64>> = (0..30).map(|i| i * 4096..i * 4096 + 512).collect();
        let s = holey(200 * 1024, &data);
        let bytes = archive(&s);
        assert_eq!(bytes.len() % 512, 0);
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.header().entry_type(), tar::EntryType::GNUSparse);
        assert_eq!(e.size(), 200 * 1024);
        let mut got = Vec::new();
        e.read_to_end(&mut got).unwrap();
        let mut want = vec![0u8; 200 * 1024];
        s.bytes.read_exact_at(&mut want, 0).unwrap();
        assert!(got == want);
        drop(e);
        assert!(entries.next().is_none());
    }

    #[test]
    fn a_disk_of_holes_is_one_empty_chunk_at_its_size() {
        let s = holey(1 << 20, &[]);
        let bytes = archive(&s);
        assert_eq!(bytes.len(), 512 + 1024);
        let gnu = tar::Header::from_byte_slice(&bytes[..512])
            .as_gnu()
            .unwrap();
        assert_eq!(gnu.sparse[0].offset().unwrap(), 1 << 20);
        assert_eq!(gnu.sparse[0].length().unwrap(), 0);
        assert_eq!(gnu.real_size().unwrap(), 1 << 20);
    }
}
