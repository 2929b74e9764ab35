//! Large reads of bytes that are not in the page cache go around it (`O_DIRECT`).
//!
//! A conversion reads each byte of its source once. Read through the page cache, every byte
//! is copied twice (device to cache, cache to the caller) and the cache must first find memory
//! for it — on a VM whose balloon hands free memory back to the host, memory that the host
//! must fault in again, page by page. That made cold conversions spend most of their time in
//! the kernel (`perf`: 60% in `_copy_to_iter`), and it evicts what the machine had cached,
//! gigabytes of it for a large disk. A direct read lands in the caller's buffer, which the
//! engine reuses. A range mostly in the cache is still read from it: there it costs one copy
//! from memory, far cheaper than the device. Small reads (headers, tables) always go through
//! the cache, which also reads ahead for them.
//!
//! Whether a range is cached is asked with `cachestat(2)` (Linux 6.5). Where the kernel or
//! the file system cannot answer or cannot read directly, or the buffer, offset or length are
//! not aligned as the file's direct I/O requires (`statx` `STATX_DIOALIGN`), reads use the
//! page cache, as before.

use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// How large reads of read-only host files use the page cache (the source side of
/// qemu-img's `-T`). Process-wide, like the page cache itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceReads {
    /// Bytes in the cache are read from it, the others directly (the default).
    Auto,
    /// Always through the page cache (`-T writeback`, `writethrough`, `unsafe`).
    Cached,
    /// Directly wherever alignment allows, even bytes that are cached (`-T none`,
    /// `directsync`).
    Direct,
}

static POLICY: AtomicU8 = AtomicU8::new(0);
/// Cleared for good after `cachestat` answered ENOSYS (a kernel before 6.5, or a seccomp
/// filter that refuses it).
static CACHESTAT_WORKS: AtomicBool = AtomicBool::new(true);

/// Sets how large reads of read-only host files use the page cache, for the whole process.
pub fn set_source_reads(policy: SourceReads) {
    let value = match policy {
        SourceReads::Auto => 0,
        SourceReads::Cached => 1,
        SourceReads::Direct => 2,
    };
    POLICY.store(value, Ordering::Relaxed);
}

/// The policy [`set_source_reads`] set.
pub fn source_reads() -> SourceReads {
    match POLICY.load(Ordering::Relaxed) {
        1 => SourceReads::Cached,
        2 => SourceReads::Direct,
        _ => SourceReads::Auto,
    }
}

/// Reads smaller than this go through the page cache: metadata, whose neighbours are read
/// next, and pieces too small for a direct read to pay for its device round trip.
const MIN_DIRECT: usize = 256 * 1024;

/// A host file's direct reads: its second descriptor, opened on the first read large enough
/// for one (and `None` for good where the file cannot be read directly).
#[derive(Debug, Default)]
pub(super) struct Direct(OnceLock<Option<DirectReader>>);

impl Direct {
    /// Reads all of `buf` at `offset` of `file` around the page cache where that is wanted
    /// and possible; `false` where the caller must read through the cache instead (a failed
    /// or short direct read too, so that the cached read reports what it finds).
    pub(super) fn read(&self, file: &File, buf: &mut [u8], offset: u64) -> bool {
        if buf.len() < MIN_DIRECT || source_reads() == SourceReads::Cached {
            return false;
        }
        match self.0.get_or_init(|| DirectReader::open(file)) {
            Some(reader) => reader.wanted(file, buf, offset) && reader.read(buf, offset),
            None => false,
        }
    }
}

/// A second descriptor of an open file with `O_DIRECT`, and the alignments the file's direct
/// reads need.
#[derive(Debug)]
pub(super) struct DirectReader {
    file: File,
    mem_align: usize,
    offset_align: u64,
}

impl DirectReader {
    /// Opens `file` again with `O_DIRECT`, or `None` where it cannot be read directly. Only
    /// files opened read-only are, so that nothing reads directly what the same process
    /// writes through its other descriptor.
    ///
    /// The file is reopened through `/proc/self/fd`, which names the open file itself rather
    /// than a path, so what is opened is the file the gate already let through even if its
    /// path has changed since; it is checked to be the same inode all the same.
    fn open(file: &File) -> Option<DirectReader> {
        if rustix::fs::fcntl_getfl(file).ok()? & OFlags::ACCMODE != OFlags::RDONLY {
            return None;
        }
        let meta = file.metadata().ok()?;
        // Regular files and block devices (an LVM volume or a disk as the source): both have
        // a page cache that cachestat can ask about and report their direct-I/O alignment.
        if !(meta.is_file() || meta.file_type().is_block_device()) {
            return None;
        }
        let stat = rustix::fs::statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN).ok()?;
        if stat.stx_mask & StatxFlags::DIOALIGN.bits() == 0 || stat.stx_dio_offset_align == 0 {
            return None;
        }
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let fd: OwnedFd = rustix::fs::open(
            path.as_str(),
            OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .ok()?;
        let direct = File::from(fd);
        let again = direct.metadata().ok()?;
        if (again.dev(), again.ino()) != (meta.dev(), meta.ino()) {
            return None;
        }
        Some(DirectReader {
            file: direct,
            mem_align: (stat.stx_dio_mem_align as usize).max(1),
            offset_align: u64::from(stat.stx_dio_offset_align),
        })
    }

    /// Whether a read of `buf` at `offset` should go around the page cache of `cached`.
    fn wanted(&self, cached: &File, buf: &[u8], offset: u64) -> bool {
        if !(buf.as_ptr() as usize).is_multiple_of(self.mem_align)
            || !offset.is_multiple_of(self.offset_align)
            || !(buf.len() as u64).is_multiple_of(self.offset_align)
        {
            return false;
        }
        source_reads() == SourceReads::Direct
            || mostly_uncached(cached, offset, buf.len() as u64) == Some(true)
    }

    /// Reads all of `buf` at `offset` directly; `false` when the read failed or came up short.
    fn read(&self, buf: &mut [u8], offset: u64) -> bool {
        self.file.read_exact_at(buf, offset).is_ok()
    }
}

/// `struct cachestat_range` of include/uapi/linux/mman.h.
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// `struct cachestat` of include/uapi/linux/mman.h.
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// `cachestat` is 451 in the table every Linux architecture shares since 6.5.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
const SYS_CACHESTAT: libc::c_long = 451;

/// Whether fewer than half the pages of `[offset, offset + len)` of `file` are in the page
/// cache; `None` where the kernel cannot say. Not "any page missing": a range that holds a
/// hole has uncached pages however warm its data is, and a header read just before leaves a
/// few pages of a cold file cached.
#[allow(unsafe_code)]
fn mostly_uncached(file: &File, offset: u64, len: u64) -> Option<bool> {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        if !CACHESTAT_WORKS.load(Ordering::Relaxed) {
            return None;
        }
        let range = CachestatRange { off: offset, len };
        let mut stat = Cachestat::default();
        // SAFETY: cachestat(2) takes a descriptor, a pointer to one `struct cachestat_range`
        // that it only reads, a pointer to one `struct cachestat` that it only writes, and
        // flags that must be 0. The descriptor is borrowed from `file`, open for the whole
        // call; both pointers come from references to live locals of the kernel's layout
        // (`repr(C)`, all fields u64, so no padding and the same alignment), valid and
        // unaliased for the duration of the call, which keeps no pointer after it returns.
        let result = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                file.as_raw_fd(),
                &range as *const CachestatRange,
                &mut stat as *mut Cachestat,
                0u32,
            )
        };
        if result != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                CACHESTAT_WORKS.store(false, Ordering::Relaxed);
            }
            return None;
        }
        let page = rustix::param::page_size() as u64;
        let first = offset / page;
        let end = offset.saturating_add(len).div_ceil(page);
        Some(stat.nr_cache.saturating_mul(2) < end - first)
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        let _ = (file, offset, len, &CACHESTAT_WORKS);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_read_only_files_are_reopened_for_direct_reads() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&[1u8; 4096]).unwrap();
        // Opened for writing: never, whatever the file system.
        assert!(DirectReader::open(tmp.as_file()).is_none());
        let read_only = File::open(tmp.path()).unwrap();
        // Read-only: where the file system reads directly (it says so through statx).
        let dio = rustix::fs::statx(&read_only, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN)
            .is_ok_and(|s| {
                s.stx_mask & StatxFlags::DIOALIGN.bits() != 0 && s.stx_dio_offset_align != 0
            });
        assert_eq!(DirectReader::open(&read_only).is_some(), dio);
    }

    #[test]
    fn cachestat_sees_what_was_just_written() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&vec![5u8; 1 << 20]).unwrap();
        // Just written: every page is in the cache (dirty or not), where the kernel answers.
        if let Some(cold) = mostly_uncached(tmp.as_file(), 0, 1 << 20) {
            assert!(!cold);
        }
        // Past the end nothing is cached.
        if let Some(cold) = mostly_uncached(tmp.as_file(), 8 << 20, 1 << 20) {
            assert!(cold);
        }
    }
}
