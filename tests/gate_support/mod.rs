//! Helpers for the open-gate and destination tests: running diskferry with a deadline (a
//! FIFO named by an image must never make it hang), asserting the shape of a refusal, and
//! building the images whose inner file names the tests choose: VMDK text descriptors and
//! differencing VHDs with rewritten parent locators. The VHD structures are written here from
//! the specification's offsets, independently of diskferry's own code.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one diskferry run may take before the test calls it a hang.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub const MIB: u64 = 1 << 20;

/// What one run produced. `code` is None when the run was killed at the deadline.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<String>,
}

impl Outcome {
    /// A one-line description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "diskferry {:?} -> {} | stdout: {:?} | stderr: {:?}",
            self.args,
            match self.code {
                Some(c) => format!("exit {c}"),
                None => format!("HUNG (killed after {}s)", DEADLINE.as_secs()),
            },
            self.stdout,
            self.stderr
        )
    }

    /// Fails unless the run finished with exit 0.
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success: {}", self.describe());
        self
    }
}

/// Kills a child on drop unless it has been waited for.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs diskferry with `args` and extra environment `env`, killing it after [`DEADLINE`].
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    run_deadline(args, env, DEADLINE)
}

/// Runs diskferry with `args`, killing it after [`DEADLINE`].
pub fn run(args: &[&str]) -> Outcome {
    run_deadline(args, &[], DEADLINE)
}

/// Runs diskferry with `args` and `env`, killing it after `deadline`.
pub fn run_deadline(args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_diskferry"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("diskferry starts");
    wait_deadline(
        child,
        deadline,
        args.iter().map(|s| s.to_string()).collect(),
    )
}

/// Waits for `child` (stdout and stderr piped) up to `deadline`; kills it past that.
pub fn wait_deadline(mut child: Child, deadline: Duration, args: Vec<String>) -> Outcome {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut guard = KillOnDrop(Some(child));
    let start = Instant::now();
    let code = loop {
        let c = guard.0.as_mut().unwrap();
        if let Some(status) = c.try_wait().unwrap() {
            guard.0 = None;
            break Some(status.code().unwrap_or(-1));
        }
        if start.elapsed() > deadline {
            drop(guard);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    Outcome {
        code,
        stdout,
        stderr,
        args,
    }
}

/// Asserts the shape of a refusal: see [`refusal_problem`].
pub fn assert_refused(o: &Outcome, image_name: &str, stored: &[&str], forbidden: &[&str]) {
    if let Some(p) = refusal_problem(o, 1, image_name, stored, forbidden) {
        panic!("{p}");
    }
}

/// What is wrong with `o` as a refusal, if anything: a refusal exits `code` (not a hang) with
/// exactly one stderr line starting "diskferry: " that names `image_name` (the file the user
/// gave) and one of `stored` (the refused name as the image stores it, in any of its
/// spellings), and none of `forbidden` appears anywhere in stdout or stderr.
pub fn refusal_problem(
    o: &Outcome,
    code: i32,
    image_name: &str,
    stored: &[&str],
    forbidden: &[&str],
) -> Option<String> {
    let d = o.describe();
    if o.code.is_none() {
        return Some(format!("hung instead of refusing: {d}"));
    }
    if let Some(p) = leak_problem(o, forbidden) {
        return Some(p);
    }
    if o.code != Some(code) {
        return Some(format!("expected a refusal (exit {code}): {d}"));
    }
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != 1 {
        return Some(format!("expected exactly one stderr line: {d}"));
    }
    if !lines[0].starts_with("diskferry: ") {
        return Some(format!("the error must start with 'diskferry: ': {d}"));
    }
    if !lines[0].contains(image_name) {
        return Some(format!("the error must name the image '{image_name}': {d}"));
    }
    if !stored.iter().any(|s| lines[0].contains(s)) {
        return Some(format!(
            "the error must name the refused file as stored ({stored:?}): {d}"
        ));
    }
    None
}

/// What leaks, if anything: one of `forbidden` in stdout or stderr.
pub fn leak_problem(o: &Outcome, forbidden: &[&str]) -> Option<String> {
    forbidden
        .iter()
        .find(|f| o.stdout.contains(*f) || o.stderr.contains(*f))
        .map(|f| format!("output quotes forbidden text {f:?}: {}", o.describe()))
}

/// Asserts that none of `forbidden` appears in stdout or stderr.
pub fn assert_no_leak(o: &Outcome, forbidden: &[&str]) {
    if let Some(p) = leak_problem(o, forbidden) {
        panic!("{p}");
    }
}

/// A path as &str (all test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Makes a FIFO at `path` with mkfifo(1).
pub fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(st.success(), "mkfifo {}", path.display());
}

/// True when running as root (uid 0), read from /proc/self/status.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// VMDK text descriptors

/// A monolithicFlat-style text descriptor whose single FLAT extent of `sectors` sectors
/// names `extent` (written into the file exactly as given).
pub fn flat_descriptor(sectors: u64, extent: &str) -> String {
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID=12345678\n\
         parentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\
         \n\
         # Extent description\n\
         RW {sectors} FLAT \"{extent}\" 0\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"16\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"ide\"\n"
    )
}

/// Writes a descriptor naming `extent` for a disk of `size` bytes at `path`.
pub fn write_flat_descriptor(path: &Path, size: u64, extent: &str) {
    std::fs::write(path, flat_descriptor(size / 512, extent)).unwrap();
}

// ---------------------------------------------------------------------------------------
// VHD byte access (big-endian fields; offsets from the VHD specification)

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

/// One's complement of the byte sum with the 4-byte checksum field at `field` as zeros.
pub fn vhd_checksum(b: &[u8], field: usize) -> u32 {
    !b.iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |a, (_, &x)| a.wrapping_add(u32::from(x)))
}

/// Header offsets (from the start of the 1024-byte dynamic disk header).
const H_CHECKSUM: usize = 36;
const H_PARENT_NAME: usize = 64;
const H_LOCATORS: usize = 576;
const LOCATOR_ENTRY: usize = 24;

/// How the parent locators of a rewritten differencing VHD spell the parent's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocatorStyle {
    /// Windows: an absolute name in a W2ku locator, a relative one in a W2ru locator
    /// (UTF-16LE, backslashes).
    Windows,
    /// Windows as Hyper-V writes it: W2ru holding the relative name and W2ku the same file's
    /// absolute name (only for relative names).
    WindowsBoth,
    /// Mac OS X: a MacX locator holding a file:// URL (UTF-8).
    Mac,
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The locators (code, data) that name `name` in `style`; `child_dir` gives the absolute
/// spelling of a relative name for [`LocatorStyle::WindowsBoth`].
pub fn locators_for(name: &str, style: LocatorStyle, child_dir: &Path) -> Vec<([u8; 4], Vec<u8>)> {
    let absolute = name.starts_with('/');
    match style {
        LocatorStyle::Windows => {
            let code = if absolute { *b"W2ku" } else { *b"W2ru" };
            vec![(code, utf16le(&name.replace('/', "\\")))]
        }
        LocatorStyle::WindowsBoth => {
            assert!(!absolute, "WindowsBoth is for relative names");
            let abs = child_dir.join(name);
            vec![
                (
                    *b"W2ru",
                    utf16le(&format!(".\\{}", name.replace('/', "\\"))),
                ),
                (*b"W2ku", utf16le(&s(&abs).replace('/', "\\"))),
            ]
        }
        LocatorStyle::Mac => {
            let url = if absolute {
                format!("file://{}", url_escape(name))
            } else {
                format!("file://./{}", url_escape(name))
            };
            vec![(*b"MacX", url.into_bytes())]
        }
    }
}

/// The spellings under which an error may quote `name`: as given, or with the backslashes
/// a Windows locator stores.
pub fn stored_spellings(name: &str) -> Vec<String> {
    vec![name.to_string(), name.replace('/', "\\")]
}

/// Rewrites the parent references of the differencing VHD at `child`: every locator entry
/// is replaced by `locators` (their data appended in whole sectors before the footer) and
/// the unicode parent name field by `unicode_name`; the header checksum is recomputed. The
/// parent UUID is left as it is.
pub fn rewrite_vhd_parent(child: &Path, locators: &[([u8; 4], Vec<u8>)], unicode_name: &str) {
    let mut bytes = std::fs::read(child).unwrap();
    let len = bytes.len();
    assert!(
        len >= 2048 && len.is_multiple_of(512),
        "unexpected VHD length {len}"
    );
    let footer = bytes[len - 512..].to_vec();
    assert_eq!(&footer[..8], b"conectix");
    assert_eq!(be32(&footer, 60), 4, "not a differencing VHD");
    let header_at = be64(&footer, 16) as usize;
    bytes.truncate(len - 512);
    let mut entries = Vec::new();
    for (code, data) in locators {
        let at = bytes.len() as u64;
        let space = (data.len() as u64).div_ceil(512).max(1) * 512;
        bytes.extend_from_slice(data);
        bytes.resize(at as usize + space as usize, 0);
        entries.push((*code, space as u32, data.len() as u32, at));
    }
    let h = &mut bytes[header_at..header_at + 1024];
    assert_eq!(&h[..8], b"cxsparse");
    for i in 0..8 {
        let e = H_LOCATORS + i * LOCATOR_ENTRY;
        h[e..e + LOCATOR_ENTRY].fill(0);
        if let Some(&(code, space, length, offset)) = entries.get(i) {
            h[e..e + 4].copy_from_slice(&code);
            put32(h, e + 4, space);
            put32(h, e + 8, length);
            put64(h, e + 16, offset);
        }
    }
    let name: Vec<u8> = unicode_name
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    assert!(name.len() <= 512, "parent name too long");
    h[H_PARENT_NAME..H_PARENT_NAME + 512].fill(0);
    h[H_PARENT_NAME..H_PARENT_NAME + name.len()].copy_from_slice(&name);
    let c = vhd_checksum(h, H_CHECKSUM);
    put32(h, H_CHECKSUM, c);
    bytes.extend_from_slice(&footer);
    std::fs::write(child, bytes).unwrap();
}

/// The folder of `p`.
pub fn folder(p: &Path) -> PathBuf {
    p.parent().unwrap().to_path_buf()
}

// ---------------------------------------------------------------------------------------
// VMDK embedded descriptors (monolithicSparse: little-endian KDMV header)

/// Replaces the `parentFileNameHint` of the monolithicSparse VMDK at `path` (its embedded
/// descriptor, rewritten in place and padded with NULs to the same area) by `hint`.
pub fn set_vmdk_parent_hint(path: &Path, hint: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"KDMV", "not a hosted sparse VMDK");
    let le64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let start = le64(28) as usize * 512;
    let len = le64(36) as usize * 512;
    assert!(start > 0 && len > 0, "no embedded descriptor");
    let area = &bytes[start..start + len];
    let end = area.iter().position(|&b| b == 0).unwrap_or(len);
    let text = String::from_utf8(area[..end].to_vec()).unwrap();
    let mut found = false;
    let new: String = text
        .lines()
        .map(|l| {
            if l.starts_with("parentFileNameHint=") {
                found = true;
                format!("parentFileNameHint=\"{hint}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(found, "the descriptor has no parentFileNameHint");
    assert!(new.len() < len, "the new descriptor does not fit");
    let area = &mut bytes[start..start + len];
    area.fill(0);
    area[..new.len()].copy_from_slice(new.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// None when `got` equals `want`, else where they first differ.
pub fn content_problem(got: &[u8], want: &[u8]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!(
            "content is {} bytes, expected {}",
            got.len(),
            want.len()
        ));
    }
    got.iter().zip(want).position(|(a, b)| a != b).map(|i| {
        format!(
            "content differs first at offset {i:#x} (got {:#04x}, expected {:#04x})",
            got[i], want[i]
        )
    })
}

/// The bytes of a raw image made by `common::make_raw(size, regions)`, in memory.
pub fn raw_bytes(size: u64, regions: &[(u64, u64)]) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    for (i, &(offset, len)) in regions.iter().enumerate() {
        let data = crate::common::pseudo_random(len as usize, i as u64 + 1);
        v[offset as usize..(offset + len) as usize].copy_from_slice(&data);
    }
    v
}

/// A loop device over a file, detached on drop. If a convert replaced the device node by a
/// file, the node is put back first (with its number and mode), so the machine keeps its
/// loop device.
pub struct LoopDevice {
    /// The device node.
    pub dev: PathBuf,
    rdev: u64,
    mode: u32,
}

impl LoopDevice {
    /// A loop device over `backing`, or None (with the reason) where loop devices are not
    /// available: not root, no /dev/loop-control, or losetup failing.
    pub fn attach(backing: &Path) -> Result<LoopDevice, String> {
        if !is_root() {
            return Err("not root".into());
        }
        if !Path::new("/dev/loop-control").exists() {
            return Err("no /dev/loop-control".into());
        }
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup -f --show failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let meta = std::fs::metadata(&dev).map_err(|e| format!("{}: {e}", dev.display()))?;
        let guard = LoopDevice {
            dev,
            rdev: meta.rdev(),
            mode: meta.permissions().mode() & 0o7777,
        };
        if !meta.file_type().is_block_device() {
            return Err(format!("{} is not a block device", guard.dev.display()));
        }
        Ok(guard)
    }

    pub fn is_block_device(&self) -> bool {
        std::fs::symlink_metadata(&self.dev)
            .map(|m| m.file_type().is_block_device() && m.rdev() == self.rdev)
            .unwrap_or(false)
    }

    pub fn path(&self) -> &str {
        self.dev.to_str().expect("losetup names devices in UTF-8")
    }
}

/// Major and minor numbers of a Linux dev_t (glibc's encoding).
pub fn major_minor(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major, minor)
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if !self.is_block_device() {
            eprintln!(
                "{} is no longer the block device: restoring the node",
                self.dev.display()
            );
            let _ = std::fs::remove_file(&self.dev);
            let (major, minor) = major_minor(self.rdev);
            let _ = Command::new("mknod")
                .args(["-m", &format!("{:o}", self.mode)])
                .arg(&self.dev)
                .args(["b", &major.to_string(), &minor.to_string()])
                .status();
        }
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .stderr(Stdio::null())
            .status();
    }
}
