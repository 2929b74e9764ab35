//! One disk of an XVA, assembled in place from its chunk members.
//!
//! XAPI and Xen Orchestra write a disk as members `<ref>/<number>` (the number zero-padded to 8
//! digits), each followed by its checksum member `<ref>/<number>.checksum` (SHA-1, lowercase
//! hex) or `.xxhash` (XXH64 with seed 0, 16 uppercase hex digits). Chunks are 1 MiB; all-zero
//! chunks are left out except the first and the last, and the last may be short.
//!
//! Where each chunk lies follows XAPI's importer, not the chunk number alone: XAPI's exporter
//! writes an empty chunk now and then to keep an idle connection open, and that empty member
//! takes a number without taking any bytes, so every later chunk's number is one ahead of its
//! position. The importer therefore places each chunk at the end of the previous one plus one
//! chunk size of zeros for every number skipped, and so do we. (XAPI counts skipped numbers in
//! units of the first chunk's length; every exporter makes that 1 MiB, which is used here so a
//! short first disk cannot change the layout of the next.)
//!
//! Rules, each an error naming the member: chunk numbers strictly increase in archive order; a
//! chunk holds at most 1 MiB; every chunk is followed by its checksum member; no chunk starts
//! at or runs past the VDI's virtual size; the chunks reach the virtual size (XAPI requires the
//! last chunk, so a disk that stops short is a cut export). Omitted chunks read as zeros and
//! are reported as holes, so conversion skips them. Each chunk's checksum is verified the
//! first time any of its bytes is read (the whole chunk is read and hashed once, 1 MiB at
//! most); empty chunks are verified when the disk is opened.

use crate::error::{Error, Result};
use crate::package::TarIndex;
use crate::storage::{Storage, StorageExt};
use sha1::{Digest, Sha1};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The size of a chunk (the last of a disk may be shorter).
pub const CHUNK: u64 = 1 << 20;

/// The largest chunk number read (12 digits: far past any disk XAPI supports).
const MAX_DIGITS: usize = 12;

/// A chunk's expected checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// `.checksum`: SHA-1.
    Sha1([u8; 20]),
    /// `.xxhash`: XXH64, seed 0.
    Xxh64(u64),
}

impl Checksum {
    /// The extension of its member.
    pub fn extension(self) -> &'static str {
        match self {
            Checksum::Sha1(_) => ".checksum",
            Checksum::Xxh64(_) => ".xxhash",
        }
    }

    /// Parses the content of a checksum member with extension `ext` (hex digits in either
    /// case, nothing else, as XAPI compares them).
    fn parse(ext: &str, content: &[u8]) -> Option<Checksum> {
        let text = std::str::from_utf8(content).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match ext {
            ".checksum" if text.len() == 40 => {
                let mut out = [0u8; 20];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
                }
                Some(Checksum::Sha1(out))
            }
            ".xxhash" if text.len() == 16 => {
                u64::from_str_radix(text, 16).ok().map(Checksum::Xxh64)
            }
            _ => None,
        }
    }

    /// The same kind of checksum, of `data`.
    pub fn of(self, data: &[u8]) -> Checksum {
        match self {
            Checksum::Sha1(_) => Checksum::Sha1(Sha1::digest(data).into()),
            Checksum::Xxh64(_) => Checksum::Xxh64(xxhash_rust::xxh64::xxh64(data, 0)),
        }
    }
}

impl std::fmt::Display for Checksum {
    /// As the exporters write it: SHA-1 in lowercase, XXH64 in uppercase hex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checksum::Sha1(b) => b.iter().try_for_each(|x| write!(f, "{x:02x}")),
            Checksum::Xxh64(h) => write!(f, "{h:016X}"),
        }
    }
}

/// One chunk with content.
#[derive(Debug, Clone)]
struct Chunk {
    /// Where it lies in the disk.
    offset: u64,
    /// Its length (at most [`CHUNK`]).
    len: u64,
    /// Where its data lies in the archive.
    data: u64,
    /// Its member's index in the archive's index, for messages.
    member: usize,
    /// What it must hash to.
    sum: Checksum,
}

/// Figures about a disk's chunks, for `info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChunkStats {
    /// Chunks with content.
    pub chunks: u64,
    /// Empty (keep-alive) chunks.
    pub empty_chunks: u64,
    /// Chunks with a `.checksum` (SHA-1).
    pub sha1: u64,
    /// Chunks with an `.xxhash` (XXH64).
    pub xxh64: u64,
    /// Bytes the chunks hold.
    pub stored_bytes: u64,
}

/// A disk of an XVA: its chunks read in place as one storage of the VDI's virtual size.
#[derive(Debug)]
pub struct ChunkedDisk {
    index: Arc<TarIndex>,
    name: PathBuf,
    len: u64,
    chunks: Vec<Chunk>,
    /// Whether each chunk's checksum has been verified.
    verified: Vec<AtomicBool>,
    /// The runs of stored bytes, `[start, end)`, merged where chunks touch.
    runs: Vec<(u64, u64)>,
    stats: ChunkStats,
}

impl ChunkedDisk {
    /// The disk whose chunks are the members `members` (indices into `index`, in archive
    /// order) under the folder `prefix` (the VDI's id), of `virtual_size` bytes. It is named
    /// `name` in messages.
    pub fn new(
        index: Arc<TarIndex>,
        prefix: &str,
        members: &[usize],
        virtual_size: u64,
        name: impl Into<PathBuf>,
    ) -> Result<ChunkedDisk> {
        let archive = index.storage().name().to_path_buf();
        let all = index.members();
        let err = |member: usize, what: String| {
            Error::corrupt(format!("chunk '{}' {what}", all[member].name))
                .at_offset(all[member].header_offset)
                .with_path(&archive)
        };
        let mut chunks = Vec::new();
        let mut stats = ChunkStats::default();
        // The last chunk's number (None before the first) and where it ended.
        let mut last: Option<u64> = None;
        let mut end = 0u64;
        let mut i = 0;
        while i < members.len() {
            let m = members[i];
            let member = &all[m];
            let rest = &member.name[prefix.len() + 1..];
            if !rest.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
                return Err(Error::corrupt(format!(
                    "member '{}' is not a chunk of disk {prefix} (a chunk is '{prefix}/NNNNNNNN', followed by its .checksum or .xxhash){}",
                    member.name,
                    if rest.ends_with(".checksum") || rest.ends_with(".xxhash") {
                        "; this checksum does not follow its chunk"
                    } else {
                        ""
                    }
                ))
                .at_offset(member.header_offset)
                .with_path(&archive));
            }
            if rest.len() > MAX_DIGITS {
                return Err(err(
                    m,
                    format!("has a number of more than {MAX_DIGITS} digits"),
                ));
            }
            let number: u64 = rest.parse().map_err(|_| err(m, "has no number".into()))?;
            if last.is_some_and(|l| number <= l) {
                return Err(err(
                    m,
                    format!(
                        "is out of order: it follows chunk {:08} (chunk numbers must increase)",
                        last.unwrap_or(0)
                    ),
                ));
            }
            if member.kind != crate::package::MemberKind::File {
                return Err(err(m, format!("is {}", member.kind.describe())));
            }
            if member.size > CHUNK {
                return Err(err(
                    m,
                    format!("holds {} bytes; chunks are at most {CHUNK}", member.size),
                ));
            }
            // Its checksum member comes right after it, as XAPI's importer requires.
            let sum_member = members.get(i + 1).map(|&s| (s, &all[s]));
            let sum = match sum_member {
                Some((s, sm))
                    if sm.name == format!("{}.checksum", member.name)
                        || sm.name == format!("{}.xxhash", member.name) =>
                {
                    let ext = &sm.name[member.name.len()..];
                    if sm.size > 64 {
                        return Err(err(
                            m,
                            format!("has a {ext} member of {} bytes, not a checksum", sm.size),
                        ));
                    }
                    let content = index.window(sm)?.read_vec(0, sm.size, "checksum")?;
                    Checksum::parse(ext, &content).ok_or_else(|| {
                        Error::corrupt(format!(
                            "checksum member '{}' holds '{}', not a{} checksum",
                            sm.name,
                            String::from_utf8_lossy(&content).escape_debug(),
                            if ext == ".xxhash" {
                                " 16-digit hex XXH64"
                            } else {
                                " 40-digit hex SHA-1"
                            }
                        ))
                        .at_offset(all[s].header_offset)
                        .with_path(&archive)
                    })?
                }
                _ => {
                    return Err(err(
                        m,
                        "has no checksum member (.checksum or .xxhash) right after it".into(),
                    ));
                }
            };
            let skipped = number - last.map_or(0, |l| l + 1);
            let offset = skipped
                .checked_mul(CHUNK)
                .and_then(|s| s.checked_add(end))
                .filter(|&o| o < virtual_size)
                .ok_or_else(|| {
                    err(
                        m,
                        format!(
                            "lies past the end of the disk (its virtual size is {virtual_size} bytes)"
                        ),
                    )
                })?;
            if offset + member.size > virtual_size {
                return Err(err(
                    m,
                    format!(
                        "of {} bytes at offset {offset} runs past the end of the disk (its virtual size is {virtual_size} bytes)",
                        member.size
                    ),
                ));
            }
            match sum {
                Checksum::Sha1(_) => stats.sha1 += 1,
                Checksum::Xxh64(_) => stats.xxh64 += 1,
            }
            if member.size == 0 {
                // A keep-alive chunk: nothing to read later, so its checksum is checked now.
                if sum.of(&[]) != sum {
                    return Err(mismatch(&archive, &member.name, sum, sum.of(&[])));
                }
                stats.empty_chunks += 1;
            } else {
                stats.chunks += 1;
                stats.stored_bytes += member.size;
                chunks.push(Chunk {
                    offset,
                    len: member.size,
                    data: member.offset,
                    member: m,
                    sum,
                });
            }
            last = Some(number);
            end = offset + member.size;
            i += 2;
        }
        if end < virtual_size {
            let name = name.into();
            return Err(Error::corrupt(format!(
                "disk {prefix}'s chunks end at byte {end}, short of its virtual size of {virtual_size} bytes (an exporter always writes the last chunk: the export is incomplete)"
            ))
            .with_path(if chunks.is_empty() { &archive } else { &name }));
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for c in &chunks {
            match runs.last_mut() {
                Some(r) if r.1 == c.offset => r.1 += c.len,
                _ => runs.push((c.offset, c.offset + c.len)),
            }
        }
        Ok(ChunkedDisk {
            verified: chunks.iter().map(|_| AtomicBool::new(false)).collect(),
            index,
            name: name.into(),
            len: virtual_size,
            chunks,
            runs,
            stats,
        })
    }

    /// Figures about the chunks.
    pub fn stats(&self) -> ChunkStats {
        self.stats
    }

    /// Reads `buf.len()` bytes at `local` of chunk `c`, verifying it first if it has not been.
    fn read_chunk(&self, c: usize, local: u64, buf: &mut [u8]) -> Result<()> {
        let chunk = &self.chunks[c];
        let archive = self.index.storage();
        if self.verified[c].load(Ordering::Acquire) {
            return archive.read_exact_at(buf, chunk.data + local);
        }
        // A read of the whole chunk (the engine's aligned reads are) is hashed in place;
        // anything else reads the chunk once into a buffer of its own.
        let whole_read = local == 0 && buf.len() as u64 == chunk.len;
        let mut own = Vec::new();
        let whole: &mut [u8] = if whole_read {
            &mut *buf
        } else {
            own.resize(chunk.len as usize, 0);
            &mut own
        };
        archive.read_exact_at(whole, chunk.data)?;
        let got = chunk.sum.of(whole);
        if got != chunk.sum {
            return Err(mismatch(
                archive.name(),
                &self.index.members()[chunk.member].name,
                chunk.sum,
                got,
            ));
        }
        self.verified[c].store(true, Ordering::Release);
        if !whole_read {
            buf.copy_from_slice(&own[local as usize..local as usize + buf.len()]);
        }
        Ok(())
    }
}

fn mismatch(archive: &Path, chunk: &str, expected: Checksum, got: Checksum) -> Error {
    Error::corrupt(format!(
        "chunk '{chunk}' fails its {} check: the export says {expected}, its bytes hash to {got} (the export is damaged)",
        expected.extension()
    ))
    .with_path(archive)
}

impl Storage for ChunkedDisk {
    fn name(&self) -> &Path {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            return Err(Error::corrupt(format!(
                "read of {} bytes runs past the end of the disk ({} bytes)",
                buf.len(),
                self.len
            ))
            .at_offset(offset)
            .with_path(&self.name));
        }
        let end = offset + buf.len() as u64;
        // The first chunk ending after `offset`.
        let mut c = self
            .chunks
            .partition_point(|ch| ch.offset + ch.len <= offset);
        let mut at = offset;
        while at < end {
            let pos = (at - offset) as usize;
            match self.chunks.get(c) {
                Some(ch) if ch.offset <= at => {
                    let n = (ch.offset + ch.len).min(end) - at;
                    self.read_chunk(c, at - ch.offset, &mut buf[pos..pos + n as usize])?;
                    at += n;
                    c += 1;
                }
                next => {
                    // An omitted chunk: zeros up to the next stored one.
                    let until = next.map_or(end, |ch| ch.offset.min(end));
                    buf[pos..pos + (until - at) as usize].fill(0);
                    at = until;
                }
            }
        }
        Ok(())
    }

    fn prefetch(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len);
        let first = self.chunks.partition_point(|c| c.offset + c.len <= offset);
        let archive = self.index.storage();
        for c in self.chunks[first..].iter().take_while(|c| c.offset < end) {
            archive.prefetch(c.data, c.len);
        }
    }

    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        let r = self.runs.partition_point(|r| r.1 <= offset);
        Ok(self
            .runs
            .get(r)
            .map(|r| r.0.max(offset))
            .filter(|&d| d < self.len))
    }

    fn next_hole(&self, offset: u64) -> Result<u64> {
        let r = self.runs.partition_point(|r| r.1 <= offset);
        Ok(match self.runs.get(r) {
            Some(run) if run.0 <= offset => run.1,
            _ => offset.min(self.len),
        })
    }

    fn allocated_bytes(&self) -> u64 {
        self.stats.stored_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;

    fn xxh(data: &[u8]) -> Vec<u8> {
        format!("{:016X}", xxhash_rust::xxh64::xxh64(data, 0)).into_bytes()
    }

    /// A tar of `members` and the chunk members' indices under `Ref:1`.
    fn disk(members: &[(&str, Vec<u8>)], size: u64) -> Result<ChunkedDisk> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        let storage = Arc::new(Memory::new("t.xva", b.into_inner().unwrap()));
        let index = Arc::new(TarIndex::read(storage).unwrap());
        let ids: Vec<usize> = (0..index.members().len())
            .filter(|&i| index.members()[i].name.starts_with("Ref:1/"))
            .collect();
        ChunkedDisk::new(index, "Ref:1", &ids, size, "t.xva:Ref:1")
    }

    #[test]
    fn keep_alive_chunks_shift_numbers_not_offsets() {
        let a = vec![1u8; CHUNK as usize];
        let c = vec![3u8; 100];
        // Chunk 0, an omitted chunk 1, a keep-alive numbered 2, then chunk 3 which XAPI
        // places at 2 MiB (right after the gap), and a short last chunk 4 at 3 MiB.
        let d = disk(
            &[
                ("Ref:1/00000000", a.clone()),
                ("Ref:1/00000000.xxhash", xxh(&a)),
                ("Ref:1/00000002", Vec::new()),
                ("Ref:1/00000002.xxhash", xxh(&[])),
                ("Ref:1/00000003", a.clone()),
                ("Ref:1/00000003.checksum", hex_sha1(&a)),
                ("Ref:1/00000004", c.clone()),
                ("Ref:1/00000004.xxhash", xxh(&c)),
            ],
            3 * CHUNK + 100,
        )
        .unwrap();
        assert_eq!(d.next_data(0).unwrap(), Some(0));
        assert_eq!(d.next_hole(0).unwrap(), CHUNK);
        assert_eq!(d.next_data(CHUNK).unwrap(), Some(2 * CHUNK));
        assert_eq!(d.next_hole(2 * CHUNK).unwrap(), 3 * CHUNK + 100);
        assert_eq!(d.next_hole(CHUNK + 5).unwrap(), CHUNK + 5);
        let all = d.read_vec(0, d.len(), "all").unwrap();
        assert!(all[..CHUNK as usize].iter().all(|&b| b == 1));
        assert!(
            all[CHUNK as usize..2 * CHUNK as usize]
                .iter()
                .all(|&b| b == 0)
        );
        assert!(
            all[2 * CHUNK as usize..3 * CHUNK as usize]
                .iter()
                .all(|&b| b == 1)
        );
        assert!(all[3 * CHUNK as usize..].iter().all(|&b| b == 3));
        // Reads that start inside a verified chunk, and across a boundary.
        assert_eq!(d.read_vec(CHUNK - 2, 4, "x").unwrap(), vec![1, 1, 0, 0]);
        let s = d.stats();
        assert_eq!((s.chunks, s.empty_chunks, s.sha1, s.xxh64), (3, 1, 1, 3));
        assert!(d.read_vec(d.len() - 1, 2, "past").is_err());
    }

    fn hex_sha1(data: &[u8]) -> Vec<u8> {
        Checksum::Sha1([0; 20]).of(data).to_string().into_bytes()
    }

    #[test]
    fn a_bad_chunk_fails_the_read_that_reaches_it() {
        let a = vec![5u8; 4096];
        let mut sum = xxh(&a);
        sum[0] = if sum[0] == b'0' { b'1' } else { b'0' };
        let d = disk(
            &[
                ("Ref:1/00000000", a.clone()),
                ("Ref:1/00000000.xxhash", sum),
            ],
            4096,
        )
        .unwrap();
        let err = d.read_vec(10, 10, "x").unwrap_err().to_string();
        assert!(
            err.starts_with("t.xva: chunk 'Ref:1/00000000' fails its .xxhash check"),
            "{err}"
        );
        // The lowercase spelling of an XXH64 is accepted, as the same number.
        let lower = String::from_utf8(xxh(&a))
            .unwrap()
            .to_lowercase()
            .into_bytes();
        let d = disk(
            &[
                ("Ref:1/00000000", a.clone()),
                ("Ref:1/00000000.xxhash", lower),
            ],
            4096,
        )
        .unwrap();
        assert_eq!(d.read_vec(0, 4096, "all").unwrap(), a);
        // A keep-alive with a wrong checksum is caught on opening.
        let err = disk(
            &[
                ("Ref:1/00000000", Vec::new()),
                ("Ref:1/00000000.xxhash", b"0000000000000000".to_vec()),
                ("Ref:1/00000001", a.clone()),
                ("Ref:1/00000001.xxhash", xxh(&a)),
            ],
            4096,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("'Ref:1/00000000' fails"), "{err}");
    }
}
