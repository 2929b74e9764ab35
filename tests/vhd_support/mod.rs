//! Helpers shared by the VHD integration tests: the independent readers (including libyal
//! reading a differencing chain), a sparse-aware content hash, and byte-level access to VHD
//! structures for crafting malformed files and checking layout rules. The structures are
//! parsed here independently of diskferry's own parser, from the specification's offsets.
#![allow(dead_code)]

use crate::common;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1 << 20;

/// The sha256 of an image's virtual content, read through diskferry's own raw reader so that
/// holes are hashed from a zero buffer instead of read (the corpus has 127 GiB sparse disks).
pub fn sparse_sha256(raw: &Path) -> (u64, String) {
    use diskferry::image::{Allocation, Image};
    let image = Image::open(
        raw,
        &diskferry::OpenOptions::with_format(Some(diskferry::formats::raw::FORMAT)),
    )
    .expect("open raw output");
    let size = image.virtual_size();
    let zeros = vec![0u8; 4 << 20];
    let mut buf = vec![0u8; 4 << 20];
    let mut h = Sha256::new();
    let mut pos = 0;
    while pos < size {
        let s = image.block_status(pos, size - pos).unwrap();
        let mut left = s.mapping.length;
        let data = s.mapping.allocation == Allocation::Data;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            if data {
                image.read_at(pos, &mut buf[..n]).unwrap();
                h.update(&buf[..n]);
            } else {
                h.update(&zeros[..n]);
            }
            pos += n as u64;
            left -= n as u64;
        }
    }
    (size, hex::encode(h.finalize()))
}

/// Converts `image` to raw with diskferry (format given or detected) and hashes the result.
pub fn diskferry_sha(image: &Path, format: Option<&str>, dir: &Path) -> (u64, String) {
    let out = dir.join(format!(
        "{}.df.raw",
        image.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&out);
    let mut args = vec!["convert"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    args.extend(["-O", "raw", image.to_str().unwrap(), out.to_str().unwrap()]);
    common::run_ok(&args);
    let r = sparse_sha256(&out);
    std::fs::remove_file(&out).unwrap();
    r
}

/// The sha256 of a plain file's bytes, padded with zeros to `size`.
pub fn padded_sha256(path: &Path, size: u64) -> String {
    let mut data = std::fs::read(path).unwrap();
    data.resize(size as usize, 0);
    hex::encode(Sha256::digest(&data))
}

/// Asserts that qemu-img, libyal and dissect all read `image` as (size, sha). Returns false
/// (after a skip line) when the oracle tool is unavailable.
#[must_use = "false means the oracle readers did not run"]
pub fn assert_oracles(test: &str, image: &Path, size: u64, sha: &str) -> bool {
    assert_oracles_but(test, image, size, sha, &[])
}

/// [`assert_oracles`] for every reader except those in `except`.
#[must_use = "false means the oracle readers did not run"]
pub fn assert_oracles_but(test: &str, image: &Path, size: u64, sha: &str, except: &[&str]) -> bool {
    let Some(readings) = common::oracle_read(test, "vhd", image) else {
        return false;
    };
    assert!(readings.len() >= 3, "oracle-read gave {readings:?}");
    for r in readings
        .iter()
        .filter(|r| !except.contains(&r.reader.as_str()))
    {
        match &r.result {
            Ok((s, h)) => assert_eq!(
                (*s, h.as_str()),
                (size, sha),
                "{} reads {} differently",
                r.reader,
                image.display()
            ),
            Err(e) => panic!("{} cannot read {}: {e}", r.reader, image.display()),
        }
    }
    true
}

/// The oracle venv's python (../shared/tools/oracle-env), if it can be set up.
fn oracle_python(test: &str) -> Option<PathBuf> {
    let shared = common::shared_dir(test)?;
    let tool = shared.join("tools/oracle-env");
    let out = match Command::new(&tool).output() {
        Ok(out) => out,
        Err(e) => {
            common::skip(test, &format!("cannot run {}: {e}", tool.display()));
            return None;
        }
    };
    if !out.status.success() {
        common::skip(test, "the oracle venv could not be set up");
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// libyal (pyvhdi) reading a chain given top first, each layer's parent set explicitly:
/// (size, sha256). None (skip line printed) when the venv is unavailable.
#[must_use = "None means libyal did not run"]
pub fn libyal_chain_sha(test: &str, chain: &[&Path]) -> Option<(u64, String)> {
    libyal_chain_sha_in(test, chain, 4 << 20)
}

/// [`libyal_chain_sha`] reading `chunk` bytes at a time at multiples of `chunk`. libyal
/// 20260901 misreads reads that span several blocks of less than 2 MiB when their sector
/// bitmaps are partial (it reads the right bytes block by block), so tests of small blocks
/// read block by block.
#[must_use = "None means libyal did not run"]
pub fn libyal_chain_sha_in(test: &str, chain: &[&Path], chunk: u64) -> Option<(u64, String)> {
    let py = oracle_python(test)?;
    let script = r#"
import sys, hashlib, pyvhdi
files = []
for p in sys.argv[2:]:
    f = pyvhdi.file(); f.open(p); files.append(f)
for child, parent in zip(files, files[1:]):
    child.set_parent(parent)
top = files[0]
size = top.get_media_size()
h = hashlib.sha256(); off = 0
chunk = int(sys.argv[1])
while off < size:
    n = min(chunk, size - off)
    b = top.read_buffer_at_offset(n, off)
    assert len(b) == n
    h.update(b); off += n
print(size, h.hexdigest())
"#;
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(chunk.to_string())
        .args(chain)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "libyal failed on {chain:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libyal ran: output it does not give in the expected shape is a failure, not a skip.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let size = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("libyal printed no size for {chain:?}: {text:?}"));
    let sha = parts
        .next()
        .unwrap_or_else(|| panic!("libyal printed no sha256 for {chain:?}: {text:?}"));
    Some((size, sha.to_string()))
}

/// A raw file with pseudo-random regions; returns its path.
pub fn raw_with(dir: &Path, name: &str, size: u64, regions: &[(u64, u64)]) -> PathBuf {
    let p = dir.join(name);
    common::make_raw(&p, size, regions);
    p
}

// ---- Byte-level VHD access (big-endian, offsets from the specification) ----

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// One's complement of the byte sum, with the 4-byte checksum field at `field` counted as 0.
pub fn vhd_checksum(b: &[u8], field: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |a, (_, &x)| a.wrapping_add(x as u32));
    !sum
}

/// Recomputes the checksum of the 512-byte footer at the start of `b`.
pub fn fix_footer(b: &mut [u8]) {
    let c = vhd_checksum(&b[..512], 64);
    put32(b, 64, c);
}

/// Recomputes the checksum of the 1024-byte header at the start of `b`.
pub fn fix_header(b: &mut [u8]) {
    let c = vhd_checksum(&b[..1024], 36);
    put32(b, 36, c);
}

/// The parsed layout of a dynamic or differencing VHD file (as bytes in memory).
#[derive(Debug)]
pub struct Layout {
    pub len: u64,
    pub footer: Vec<u8>,
    pub copy: Vec<u8>,
    pub header_at: u64,
    pub header: Vec<u8>,
    pub table_offset: u64,
    pub entries: u32,
    pub block_size: u64,
    pub bat: Vec<u32>,
}

pub const UNUSED: u32 = 0xFFFF_FFFF;

impl Layout {
    pub fn read(bytes: &[u8]) -> Layout {
        let len = bytes.len() as u64;
        let footer = bytes[bytes.len() - 512..].to_vec();
        let copy = bytes[..512].to_vec();
        let header_at = be64(&footer, 16);
        let header = bytes[header_at as usize..header_at as usize + 1024].to_vec();
        let table_offset = be64(&header, 16);
        let entries = be32(&header, 28);
        let block_size = be32(&header, 32) as u64;
        let bat = (0..entries as usize)
            .map(|i| be32(bytes, table_offset as usize + 4 * i))
            .collect();
        Layout {
            len,
            footer,
            copy,
            header_at,
            header,
            table_offset,
            entries,
            block_size,
            bat,
        }
    }

    pub fn bitmap_bytes(&self) -> u64 {
        (self.block_size / 512).div_ceil(8).div_ceil(512).max(1) * 512
    }

    pub fn current_size(&self) -> u64 {
        be64(&self.footer, 48)
    }

    /// Allocated blocks as (index, byte offset of the bitmap), in file order.
    pub fn blocks(&self) -> Vec<(usize, u64)> {
        let mut v: Vec<(usize, u64)> = self
            .bat
            .iter()
            .enumerate()
            .filter(|(_, e)| **e != UNUSED)
            .map(|(i, e)| (i, *e as u64 * 512))
            .collect();
        v.sort_by_key(|x| x.1);
        v
    }

    /// Parent locator entries in use: (code, data_space, data_length, data_offset).
    pub fn locators(&self) -> Vec<([u8; 4], u32, u32, u64)> {
        (0..8)
            .map(|i| 576 + 24 * i)
            .map(|o| {
                (
                    self.header[o..o + 4].try_into().unwrap(),
                    be32(&self.header, o + 4),
                    be32(&self.header, o + 8),
                    be64(&self.header, o + 16),
                )
            })
            .filter(|l| l.0 != [0; 4])
            .collect()
    }
}

/// The geometry blktap's vhd_chs (the specification's algorithm) gives `size`, packed as
/// cylinders << 16 | heads << 8 | sectors. Written here from the specification, independently.
pub fn spec_chs(size: u64) -> u32 {
    let mut secs = size.div_ceil(512);
    secs = secs.min(65535 * 16 * 255);
    let (spt, heads, cth);
    if secs >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = secs / spt;
    } else {
        let mut s = 17;
        let mut c = secs / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = secs / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = secs / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    (((cth / heads) as u32) << 16) | ((heads as u32) << 8) | spt as u32
}

/// Seconds since the VHD epoch.
pub fn vhd_now() -> u32 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 946_684_800) as u32
}

/// Runs diskferry and asserts it fails with one clear line on stderr (no panic, no backtrace);
/// returns that line.
pub fn fails_cleanly(args: &[&str]) -> String {
    let (code, out, err) = common::run(args);
    assert_ne!(code, 0, "diskferry {args:?} should fail; stdout: {out}");
    assert_ne!(code, 101, "diskferry {args:?} panicked: {err}");
    assert!(
        !err.contains("panicked"),
        "diskferry {args:?} panicked: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "diskferry {args:?}: expected one error line, got: {err}"
    );
    assert!(lines[0].starts_with("diskferry: "), "{err}");
    lines[0].to_string()
}
