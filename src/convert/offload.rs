//! `convert -C`: copy offloading. Where a data range of the source is stored plainly in a host
//! file (a raw image, a fixed VHD, a flat VMDK extent, an uncompressed qcow2 cluster: what
//! `map` reports with an `offset`) and the target writes it by position into a regular file
//! (see [`DirectWrite::host_target`]), the kernel copies it with `copy_file_range`, so that
//! the file system may share the blocks (reflinks) or copy them without the bytes passing
//! through this process, as qemu-img's `-C` does. Everything else in the range is read and
//! written as usual: the kernel may decline (another file system, a file system without the
//! call) or stop short, and the rest of the range then goes by `pread`/`pwrite`.
//!
//! This is the one code path for every source and target format: formats only say where their
//! bytes are ([`Storage::host_file`](crate::storage::Storage::host_file) and the map's host
//! offsets on the source side, [`DirectWrite::host_target`] on the target side).

use crate::error::{Error, Result};
use crate::image::{Allocation, Image};
use crate::writer::DirectWrite;
use rustix::io::Errno;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The largest piece asked of the kernel at once: the call takes a `usize` and Linux copies at
/// most about 2 GiB per call anyway; the engine's items are far smaller.
const MAX_CALL: u64 = 1 << 30;

/// Whether the kernel is still asked to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelCopy {
    /// Ask it.
    Try,
    /// It declined for good (no such call, or not between these files): read and write.
    Declined,
}

/// The engine's copy offloading for one conversion: the target's writer and whether the
/// kernel has declined.
pub struct Offload {
    target: Arc<dyn DirectWrite>,
    declined: AtomicBool,
}

/// Where a range of the source's virtual disk comes from.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    /// Stored plainly in this host file (named so in messages) at this offset.
    HostFile(&'a File, &'a Path, u64),
    /// It reads as zeros (a hole, a zero cluster, nothing allocated).
    Zeros,
    /// Anything else (compressed, in memory): read through the image.
    Read,
}

/// A range of the source with one origin.
struct Run<'a> {
    /// First virtual byte.
    offset: u64,
    /// Bytes.
    len: u64,
    origin: Origin<'a>,
}

/// What became of a piece of a range [`Offload::copy_range`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its data is in place in the target (copied by the kernel, or read and written).
    Placed,
    /// It reads as zeros in the source: left to the target's writer as zeros, as qemu-img's
    /// `-C` leaves the zero ranges of the source's map (a hole in a new file).
    Zero,
}

/// What [`Offload::copy_range`] did: the range cut into pieces, in order.
#[derive(Debug, Clone, Default)]
pub struct Copied {
    /// Bytes the kernel copied.
    pub offloaded: u64,
    /// (length, outcome) of each piece, in order, covering the range.
    pub pieces: Vec<(u64, Outcome)>,
}

impl Copied {
    fn push(&mut self, len: u64, outcome: Outcome) {
        match self.pieces.last_mut() {
            Some((n, last)) if *last == outcome => *n += len,
            _ => self.pieces.push((len, outcome)),
        }
    }
}

impl Offload {
    /// Copy offloading into the target written through `target`.
    pub fn new(target: Arc<dyn DirectWrite>) -> Offload {
        Offload {
            target,
            declined: AtomicBool::new(false),
        }
    }

    /// Whether the kernel has declined for good. From then on the engine converts as without
    /// `-C`, zeros in the data found and left out, as qemu-img goes back to its usual path
    /// once a copy has failed (qemu-img.c `convert_co_do_copy`: `s->copy_range = false`).
    pub fn declined(&self) -> bool {
        self.state() == KernelCopy::Declined
    }

    fn state(&self) -> KernelCopy {
        if self.declined.load(Ordering::Relaxed) {
            KernelCopy::Declined
        } else {
            KernelCopy::Try
        }
    }

    /// Copies `[offset, offset + len)` of `image` into the target: host-file ranges by the
    /// kernel where it will, zero ranges left to the target's writer, the rest read and
    /// written by position with `buf` (at least `len` bytes); once the kernel has declined,
    /// host-file ranges are read and written too, so that the output is the same. Returns
    /// `None`, having written nothing, when the range holds no host-file data or the target
    /// takes none there: the caller then copies the range its usual way.
    pub fn copy_range(
        &self,
        image: &Image,
        offset: u64,
        len: u64,
        buf: &mut [u8],
    ) -> Result<Option<Copied>> {
        if self.declined() || self.target.host_target(offset, len).is_none() {
            return Ok(None);
        }
        let runs = source_runs(image, offset, len)?;
        if !runs
            .iter()
            .any(|r| matches!(r.origin, Origin::HostFile(..)))
        {
            return Ok(None);
        }
        let mut copied = Copied::default();
        for run in &runs {
            let by_kernel = match run.origin {
                Origin::Zeros => {
                    copied.push(run.len, Outcome::Zero);
                    continue;
                }
                Origin::HostFile(file, name, at) if self.state() == KernelCopy::Try => {
                    self.copy_by_kernel((file, name), at, run.offset, run.len)?
                }
                Origin::HostFile(..) | Origin::Read => 0,
            };
            if by_kernel == 0
                && self.declined()
                && !copied.pieces.iter().any(|&(_, o)| o == Outcome::Placed)
            {
                // Declined before anything of the range was placed: the caller converts it
                // its usual way, zeros found, as qemu-img retries a failed copy.
                return Ok(None);
            }
            copied.offloaded += by_kernel;
            let (rest_at, rest) = (run.offset + by_kernel, run.len - by_kernel);
            if rest > 0 {
                let part = &mut buf[..rest as usize];
                image.read_at(rest_at, part)?;
                self.target.write_data(rest_at, part)?;
            }
            copied.push(run.len, Outcome::Placed);
        }
        Ok(Some(copied))
    }

    /// Lets the kernel copy `len` bytes at `source_at` of `source` to the target's place of
    /// virtual `offset`, as far as it will; returns how many bytes it copied.
    fn copy_by_kernel(
        &self,
        source: (&File, &Path),
        source_at: u64,
        offset: u64,
        len: u64,
    ) -> Result<u64> {
        let mut done = 0;
        while done < len {
            let Some(target) = self.target.host_target(offset + done, len - done) else {
                break;
            };
            let want = target.len.min(len - done);
            let copied =
                copy_file_range(source, source_at + done, target.file, target.offset, want)?;
            done += copied.bytes;
            match copied.end {
                End::Complete => {}
                End::Short => break,
                End::Declined => {
                    self.declined.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        Ok(done)
    }
}

/// The ranges of `[offset, offset + len)` of `image` that read as zeros by its map (holes,
/// zero clusters, nothing allocated), as (start, end) relative to `offset`, in order: `-C`
/// copies data ranges whole, zeros included, but leaves these to the target's writer as zeros,
/// as qemu-img does.
pub fn zero_ranges(image: &Image, offset: u64, len: u64) -> Result<Vec<(u64, u64)>> {
    Ok(source_runs(image, offset, len)?
        .iter()
        .filter(|r| matches!(r.origin, Origin::Zeros))
        .map(|r| (r.offset - offset, r.offset - offset + r.len))
        .collect())
}

/// Cuts `[offset, offset + len)` of `image` by where its bytes come from.
fn source_runs(image: &Image, offset: u64, len: u64) -> Result<Vec<Run<'_>>> {
    let end = offset + len;
    let mut runs: Vec<Run<'_>> = Vec::new();
    let mut pos = offset;
    while pos < end {
        let status = image.block_status(pos, end - pos)?;
        let m = status.mapping;
        let host_file = match (m.allocation, m.host, m.compressed) {
            (Allocation::Data, Some(host), false) => image.layers()[status.depth]
                .storage(host.file)
                .filter(|s| {
                    host.offset
                        .checked_add(m.length)
                        .is_some_and(|e| e <= s.len())
                })
                .and_then(|s| {
                    let (file, base) = s.host_file()?;
                    Some((file, s.name(), base.checked_add(host.offset)?))
                }),
            _ => None,
        };
        let origin = match host_file {
            Some((file, name, at)) => Origin::HostFile(file, name, at),
            None if status.zero() => Origin::Zeros,
            None => Origin::Read,
        };
        match (runs.last_mut(), origin) {
            (Some(last), Origin::Zeros) if matches!(last.origin, Origin::Zeros) => {
                last.len += m.length
            }
            (Some(last), Origin::Read) if matches!(last.origin, Origin::Read) => {
                last.len += m.length
            }
            _ => runs.push(Run {
                offset: pos,
                len: m.length,
                origin,
            }),
        }
        pos = m.end();
    }
    Ok(runs)
}

/// How a kernel copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every byte asked for was copied.
    Complete,
    /// The kernel stopped early (the source's end, a signal): the rest is copied otherwise.
    Short,
    /// The kernel cannot copy between these files (no such call, another file system, a file
    /// system or file kind without it): nothing more is asked of it.
    Declined,
}

/// What [`copy_file_range`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KernelCopied {
    bytes: u64,
    end: End,
}

/// Copies `len` bytes at `from` of `source` (a file and its name for messages) to `to` of
/// `target` with `copy_file_range`, as far as the kernel will. The errors that mean "not here" (`EXDEV`, `EOPNOTSUPP`, `EINVAL`,
/// `ENOSYS`, and `EBADF`/`EPERM` for files it cannot copy between) end as
/// [`End::Declined`]; others (an I/O error, a full disk) are errors.
fn copy_file_range(
    (source, name): (&File, &Path),
    from: u64,
    target: &File,
    to: u64,
    len: u64,
) -> Result<KernelCopied> {
    let mut done = 0;
    while done < len {
        let mut off_in = from + done;
        let mut off_out = to + done;
        let want = (len - done).min(MAX_CALL) as usize;
        match rustix::fs::copy_file_range(
            source,
            Some(&mut off_in),
            target,
            Some(&mut off_out),
            want,
        ) {
            Ok(0) => return Ok(short(done)),
            Ok(n) => done += n as u64,
            Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
            Err(
                Errno::XDEV
                | Errno::OPNOTSUPP
                | Errno::INVAL
                | Errno::NOSYS
                | Errno::BADF
                | Errno::PERM,
            ) => {
                return Ok(KernelCopied {
                    bytes: done,
                    end: End::Declined,
                });
            }
            Err(e) => {
                // The error is the output's (its path is added by the caller, with this offset,
                // which is the output's): the source is named in the text.
                return Err(Error::io(
                    format!(
                        "cannot copy {want} bytes from '{}' at offset {off_in} (copy_file_range)",
                        name.display()
                    ),
                    e.into(),
                )
                .at_offset(off_out));
            }
        }
    }
    Ok(KernelCopied {
        bytes: done,
        end: End::Complete,
    })
}

fn short(bytes: u64) -> KernelCopied {
    KernelCopied {
        bytes,
        end: End::Short,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn the_kernel_copies_between_regular_files() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        let source = file_with(&data);
        let target = tempfile::NamedTempFile::new().unwrap();
        let copied = copy_file_range(
            (source.as_file(), source.path()),
            4096,
            target.as_file(),
            8192,
            65536,
        )
        .unwrap();
        assert_eq!(
            copied,
            KernelCopied {
                bytes: 65536,
                end: End::Complete
            }
        );
        let mut back = vec![0u8; 65536];
        target.as_file().read_exact_at(&mut back, 8192).unwrap();
        assert_eq!(back, data[4096..4096 + 65536]);
    }

    #[test]
    fn a_copy_past_the_source_end_is_short() {
        let source = file_with(&[7u8; 10000]);
        let target = tempfile::NamedTempFile::new().unwrap();
        let copied = copy_file_range(
            (source.as_file(), source.path()),
            8192,
            target.as_file(),
            0,
            4096,
        )
        .unwrap();
        assert_eq!(
            copied,
            KernelCopied {
                bytes: 10000 - 8192,
                end: End::Short
            }
        );
    }

    #[test]
    fn a_source_that_is_not_a_regular_file_is_declined() {
        // /dev/zero is a character device: copy_file_range refuses it with EINVAL on every
        // kernel, which is the fallback path taken for real, not simulated.
        let zero = File::open("/dev/zero").unwrap();
        let target = tempfile::NamedTempFile::new().unwrap();
        let copied = copy_file_range(
            (&zero, Path::new("/dev/zero")),
            0,
            target.as_file(),
            0,
            4096,
        )
        .unwrap();
        assert_eq!(copied.end, End::Declined);
        assert_eq!(copied.bytes, 0);
    }
}
