//! Helpers shared by the integration tests: running the binary, finding peers (qemu-img, the
//! oracle readers, ../shared/corpus) and skipping loudly when one is missing.
#![allow(dead_code)]

mod bitmaps;
mod qemu;
mod v2v;
mod vm;
// Only the bitmap tests use these.
#[allow(unused_imports)]
pub use bitmaps::*;
// Only the qemu-img comparison tests use these.
#[allow(unused_imports)]
pub use qemu::*;
// Not every test uses the VM helpers.
#[allow(unused_imports)]
pub use vm::*;
// Only the VM tests use virt-v2v.
#[allow(unused_imports)]
pub use v2v::*;

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The diskferry binary built for this test run.
pub fn diskferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_diskferry"))
}

/// Runs diskferry with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = diskferry().args(args).output().expect("diskferry runs");
    decode(out)
}

pub fn decode(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs diskferry and fails the test unless it exits 0.
pub fn run_ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "diskferry {args:?} failed: {err}");
    out
}

/// A `qemu-img` symbolic link (in `dir/bin`) to the diskferry under test, which then behaves
/// as qemu-img (its personality comes from the name it is run by).
pub fn as_qemu_img(dir: &Path) -> PathBuf {
    let link = dir.join("bin").join("qemu-img");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_diskferry"), &link).unwrap();
    }
    link
}

/// A scratch folder with diskferry linked as `qemu-img` in it ([`as_qemu_img`]), or `None`
/// (with a skip line) when qemu-img itself is not installed to compare with.
pub fn qemu_img_scratch(test: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if !have_qemu(test) {
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    Some((d, fake))
}

/// Runs the program `prog` (such as [`as_qemu_img`]'s link) with `args`; returns (exit code,
/// stdout, stderr).
pub fn run_prog(prog: &Path, args: &[&str]) -> (i32, String, String) {
    decode(Command::new(prog).args(args).output().expect("runs"))
}

/// True when the environment asks for every peer to be present: DISKFERRY_REQUIRE_PEERS set to
/// anything but "" or "0" (`.ci/run` sets it, so that CI never passes a test that tested nothing).
pub fn peers_required() -> bool {
    std::env::var_os("DISKFERRY_REQUIRE_PEERS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Reports a missing peer (qemu-img, the oracle readers, ../shared, vhd-lib): prints why the
/// test is skipped, loudly, so a skip never passes unnoticed; when [`peers_required`], fails
/// the test instead. Callers must still stop (or drop the peer's part) after calling it.
pub fn skip(test: &str, why: &str) {
    if peers_required() {
        panic!("required peer missing (DISKFERRY_REQUIRE_PEERS is set): {test}: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// Reports a part of a test this machine cannot exercise (a file system feature, not a peer):
/// printed, never a failure, even when peers are required.
pub fn note_weaker(test: &str, why: &str) {
    eprintln!("WEAKER {test}: {why}");
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True when strace is installed and may trace here; otherwise a skip line (or a failure when
/// peers are required: CI installs strace, see .ci/run).
#[must_use = "false means strace cannot be used: return"]
pub fn have_strace(test: &str) -> bool {
    match Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=openat", "true"])
        .output()
    {
        Err(_) => {
            skip(test, "strace is not installed (apt-get install strace)");
            false
        }
        Ok(out) if !out.status.success() => {
            skip(
                test,
                &format!(
                    "strace cannot trace here (is ptrace forbidden?): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
            false
        }
        Ok(_) => true,
    }
}

/// True when qemu-img is installed; otherwise prints a skip line for `test` (or fails it, see
/// [`skip`]). The caller must drop qemu-img's part of the test when this is false.
#[must_use = "a false result means qemu-img is missing: return or skip qemu-img's part"]
pub fn have_qemu(test: &str) -> bool {
    let ok = on_path("qemu-img");
    if !ok {
        skip(
            test,
            "qemu-img is not installed (apt-get install qemu-utils)",
        );
    }
    ok
}

/// Runs qemu-img with `args`; returns (exit code, stdout, stderr).
pub fn qemu_img(args: &[&str]) -> (i32, String, String) {
    decode(
        Command::new("qemu-img")
            .args(args)
            .output()
            .expect("qemu-img runs"),
    )
}

/// Runs qemu-img and fails the test unless it exits 0.
pub fn qemu_img_ok(args: &[&str]) -> String {
    let (code, out, err) = qemu_img(args);
    assert_eq!(code, 0, "qemu-img {args:?} failed: {err}");
    out
}

/// `qemu-img compare` of two images (formats given explicitly, since qemu-img misdetects
/// fixed VHDs): true when identical.
#[must_use = "assert on the comparison"]
pub fn qemu_compare(fmt_a: &str, a: &Path, fmt_b: &str, b: &Path) -> bool {
    let (code, out, err) = qemu_img(&[
        "compare",
        "-f",
        fmt_a,
        "-F",
        fmt_b,
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(
        code == 0 || code == 1,
        "qemu-img compare failed: {out}{err}"
    );
    code == 0
}

/// The shared folder beside the repository (../shared), when present (else a skip line, see
/// [`skip`]).
#[must_use = "None means ../shared is missing: return"]
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("corpus").is_dir() {
        Some(dir)
    } else {
        skip(
            test,
            "../shared (the corpus and oracle tools) is not present beside the repository",
        );
        None
    }
}

/// One row of ../shared/corpus/MANIFEST.tsv.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub path: String,
    pub format: String,
    pub made_by: String,
    pub virtual_size: Option<u64>,
    pub malformed: bool,
    pub qemu_result: String,
    pub raw_sha256: Option<String>,
    pub notes: String,
}

/// The corpus manifest.
pub fn manifest(shared: &Path) -> Vec<ManifestRow> {
    let text = std::fs::read_to_string(shared.join("corpus/MANIFEST.tsv")).expect("manifest");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (p, f, m, v, mal, q, r, n) = (
        col("path"),
        col("format"),
        col("made_by"),
        col("virtual_size_bytes"),
        col("malformed"),
        col("qemu_img_result"),
        col("raw_sha256"),
        col("notes"),
    );
    lines
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| c.get(i).copied().unwrap_or("").to_string();
            ManifestRow {
                path: get(p),
                format: get(f),
                made_by: get(m),
                virtual_size: get(v).parse().ok(),
                malformed: get(mal) == "yes",
                qemu_result: get(q),
                raw_sha256: Some(get(r)).filter(|s| !s.is_empty()),
                notes: get(n),
            }
        })
        .collect()
}

/// Makes a corpus file usable: plain files are returned as they are; `.gz` and `.bz2` files
/// are unpacked (as sparse files) into `dir` under their name without the suffix.
pub fn corpus_file(shared: &Path, rel: &str, dir: &Path) -> PathBuf {
    let src = shared.join("corpus").join(rel);
    let (tool, stem) = if let Some(s) = rel.strip_suffix(".gz") {
        ("gzip", s)
    } else if let Some(s) = rel.strip_suffix(".bz2") {
        ("bzip2", s)
    } else {
        return src;
    };
    let name = Path::new(stem).file_name().unwrap();
    let dest = dir.join(name);
    if dest.exists() {
        return dest;
    }
    let mut child = Command::new(tool)
        .args(["-dc"])
        .arg(&src)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} -dc {}: {e}", src.display()));
    let mut stdout = child.stdout.take().unwrap();
    write_sparse(&mut stdout, &dest);
    assert!(
        child.wait().unwrap().success(),
        "{tool} -dc {} failed",
        src.display()
    );
    dest
}

/// Copies a stream into a new file, leaving holes for all-zero 64 KiB blocks.
pub fn write_sparse(input: &mut impl Read, dest: &Path) {
    let mut out = File::create(dest).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut len = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = input.read(&mut buf[filled..]).unwrap();
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().any(|&b| b != 0) {
            out.seek(SeekFrom::Start(len)).unwrap();
            out.write_all(&buf[..filled]).unwrap();
        }
        len += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    out.set_len(len).unwrap();
}

/// The sha256 of a file's bytes, in hex. Holes are hashed from a buffer of zeros rather than
/// read: a 10 GiB sparse raw conversion costs the hash alone, not ten gigabytes of reads.
pub fn sha256_file(path: &Path) -> String {
    use diskferry::storage::Storage;
    let file = diskferry::host_file::HostFile::open(path).unwrap();
    let len = file.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let data = file.next_data(pos).unwrap().unwrap_or(len).min(len);
        while pos < data {
            let n = (data - pos).min(zeros.len() as u64) as usize;
            h.update(&zeros[..n]);
            pos += n as u64;
        }
        if pos >= len {
            break;
        }
        let hole = file.next_hole(pos).unwrap().min(len);
        while pos < hole {
            let n = (hole - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], pos).unwrap();
            h.update(&buf[..n]);
            pos += n as u64;
        }
    }
    hex::encode(h.finalize())
}

/// Bytes a file occupies on disk (what `du` counts).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The names of the entries of `dir`, sorted: compared before and after a command that must
/// leave nothing behind (not even a staged part of its output).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A raw file of `size` bytes (sparse) with pseudo-random data written at each (offset, len).
pub fn make_raw(path: &Path, size: u64, regions: &[(u64, u64)]) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (i, &(offset, len)) in regions.iter().enumerate() {
        let data = pseudo_random(len as usize, i as u64 + 1);
        use std::os::unix::fs::FileExt;
        f.write_all_at(&data, offset).unwrap();
    }
}

/// Deterministic bytes that do not compress to nothing (xorshift).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What one independent reader made of an image: (reader, Some((size, sha256))) or None
/// when it could not read it (with its message).
#[derive(Debug, Clone)]
pub struct OracleReading {
    pub reader: String,
    pub result: Result<(u64, String), String>,
}

/// Reads `image` with ../shared/tools/oracle-read (qemu-img, libyal, dissect). None (with a
/// skip line, see [`skip`]) when the tool or its environment is unavailable.
#[must_use = "None means the oracle readers are missing: the caller must not go on as if they agreed"]
pub fn oracle_read(test: &str, format: &str, image: &Path) -> Option<Vec<OracleReading>> {
    let shared = shared_dir(test)?;
    let tool = shared.join("tools/oracle-read");
    let out = match Command::new(&tool).arg(format).arg(image).output() {
        Ok(out) => out,
        Err(e) => {
            skip(test, &format!("cannot run {}: {e}", tool.display()));
            return None;
        }
    };
    if !out.status.success() {
        skip(
            test,
            &format!(
                "oracle-read failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let readings = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let reader = parts.next()?.to_string();
            let rest: Vec<&str> = parts.collect();
            let result = match rest.as_slice() {
                [size, sha] if size.parse::<u64>().is_ok() => {
                    Ok((size.parse().unwrap(), sha.to_string()))
                }
                _ => Err(rest.join(" ")),
            };
            Some(OracleReading { reader, result })
        })
        .collect();
    Some(readings)
}

/// The sha256 of an image's virtual content, computed by converting it to raw with diskferry.
pub fn content_sha256(image: &Path, format: Option<&str>, dir: &Path) -> (u64, String) {
    let out = dir.join(format!(
        "{}.content.raw",
        image.file_name().unwrap().to_string_lossy()
    ));
    let mut args = vec!["convert"];
    if let Some(f) = format {
        args.extend(["-f", f]);
    }
    args.extend(["-O", "raw", image.to_str().unwrap(), out.to_str().unwrap()]);
    run_ok(&args);
    let size = std::fs::metadata(&out).unwrap().len();
    let sha = sha256_file(&out);
    std::fs::remove_file(&out).unwrap();
    (size, sha)
}

/// The virtual size of the image (through its chain, any folder) and its first `limit` bytes.
pub fn read_image_head(image: &Path, limit: u64) -> (u64, Vec<u8>) {
    let options = diskferry::OpenOptions {
        gate: diskferry::Gate::anywhere(),
        ..diskferry::OpenOptions::default()
    };
    let img = diskferry::Image::open(image, &options).unwrap();
    let mut buf = vec![0u8; img.virtual_size().min(limit) as usize];
    img.read_at(0, &mut buf).unwrap();
    (img.virtual_size(), buf)
}

/// Runs diskferry with `args`, expects a failure with exactly one line on stderr containing
/// every `says`, and that `out` was not made.
pub fn fails_clearly(args: &[&str], out: &Path, says: &[&str]) {
    let (code, _, err) = run(args);
    assert_ne!(code, 0, "{args:?} succeeded");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    for w in says {
        assert!(err.contains(w), "{args:?}: missing {w:?} in: {err}");
    }
    assert!(!out.exists(), "{} was left behind", out.display());
}
