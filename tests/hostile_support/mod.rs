//! Building blocks of tests/hostile_input.rs: byte-level writers for the VHD and VMDK
//! structures a hostile file is made of (written here from the specifications, independently of
//! diskferry's own code), sparse files, and running diskferry under an address-space limit and
//! a timeout with its output counted rather than held.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const SECTOR: u64 = 512;
pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

/// The address space diskferry runs in: 1 GiB. Every allocation an input can drive must fit.
pub const ADDRESS_SPACE: u64 = 1 << 30;
/// A run still going after this long is killed and fails its test.
pub const TIMEOUT: Duration = Duration::from_secs(30);

// ---- Sparse files ----

/// A file of `len` bytes (a hole) with `pieces` written at their offsets: what the test
/// writes is all the file really holds, whatever its apparent size.
pub fn sparse_file(path: &Path, len: u64, pieces: &[(u64, &[u8])]) {
    let f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (at, bytes) in pieces {
        f.write_all_at(bytes, *at).unwrap();
    }
}

/// Bytes a file really occupies on disk.
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

// ---- VHD (big-endian; offsets from the Virtual Hard Disk Image Format Specification) ----

pub const VHD_FIXED: u32 = 2;
pub const VHD_DYNAMIC: u32 = 3;
pub const VHD_DIFFERENCING: u32 = 4;
pub const BAT_UNUSED: u32 = 0xFFFF_FFFF;

fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// One's complement of the byte sum, the 4-byte checksum field at `field` counted as zeros.
pub fn vhd_checksum(b: &[u8], field: usize) -> u32 {
    !b.iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |a, (_, &x)| a.wrapping_add(u32::from(x)))
}

/// A hard disk footer: creator "tst " (so the size is current_size, not CHS), geometry of the
/// largest CHS (the size rule ignores it), checksum filled in.
pub fn vhd_footer(disk_type: u32, size: u64, data_offset: u64, uuid: [u8; 16]) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    put_be32(&mut f, 8, 2); // features: reserved bit
    put_be32(&mut f, 12, 0x0001_0000);
    put_be64(&mut f, 16, data_offset);
    put_be32(&mut f, 24, 0x2A00_0000); // timestamp
    f[28..32].copy_from_slice(b"tst ");
    put_be32(&mut f, 32, 0x0001_0000);
    f[36..40].copy_from_slice(b"Wi2k");
    put_be64(&mut f, 40, size);
    put_be64(&mut f, 48, size);
    f[56..58].copy_from_slice(&65535u16.to_be_bytes());
    f[58] = 16;
    f[59] = 255;
    put_be32(&mut f, 60, disk_type);
    f[68..84].copy_from_slice(&uuid);
    let c = vhd_checksum(&f, 64);
    put_be32(&mut f, 64, c);
    f
}

/// A parent locator entry: platform code, reserved bytes, data length, absolute offset.
#[derive(Debug, Clone, Copy)]
pub struct VhdLocator {
    pub code: [u8; 4],
    pub space: u32,
    pub length: u32,
    pub offset: u64,
}

/// The 1024-byte dynamic disk header, checksum filled in. `parent_name` is stored UTF-16BE.
pub fn vhd_header(
    table_offset: u64,
    entries: u32,
    block_size: u32,
    parent_uuid: [u8; 16],
    parent_name: &str,
    locators: &[VhdLocator],
) -> [u8; 1024] {
    let mut h = [0u8; 1024];
    h[0..8].copy_from_slice(b"cxsparse");
    put_be64(&mut h, 8, u64::MAX);
    put_be64(&mut h, 16, table_offset);
    put_be32(&mut h, 24, 0x0001_0000);
    put_be32(&mut h, 28, entries);
    put_be32(&mut h, 32, block_size);
    h[40..56].copy_from_slice(&parent_uuid);
    let name: Vec<u8> = parent_name
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .take(512)
        .collect();
    h[64..64 + name.len()].copy_from_slice(&name);
    for (i, l) in locators.iter().enumerate() {
        let at = 576 + 24 * i;
        h[at..at + 4].copy_from_slice(&l.code);
        put_be32(&mut h, at + 4, l.space);
        put_be32(&mut h, at + 8, l.length);
        put_be64(&mut h, at + 16, l.offset);
    }
    let c = vhd_checksum(&h, 36);
    put_be32(&mut h, 36, c);
    h
}

/// A dynamic or differencing VHD laid out as writers do: footer copy, header, locator data,
/// BAT, then blocks. The BAT is given as (index, entry) pairs over a table of `entries`
/// entries; entries not given are [`BAT_UNUSED`] when `fill_bat` (written bytes), or left as
/// a hole (zeros) when not, so that a huge table costs nothing on disk.
pub struct DynamicVhd<'a> {
    pub disk_type: u32,
    pub size: u64,
    pub block_size: u32,
    pub entries: u32,
    pub uuid: [u8; 16],
    pub parent_uuid: [u8; 16],
    pub parent_name: &'a str,
    /// (platform code, data) of each locator.
    pub locators: Vec<([u8; 4], Vec<u8>)>,
    pub fill_bat: bool,
}

/// Where things landed in a [`DynamicVhd`].
#[derive(Debug, Clone, Copy)]
pub struct VhdLayout {
    pub table_offset: u64,
    /// The first 4 KiB-aligned byte after the BAT: where blocks may go.
    pub data_start: u64,
}

impl DynamicVhd<'_> {
    pub fn dynamic(size: u64, block_size: u32) -> DynamicVhd<'static> {
        DynamicVhd {
            disk_type: VHD_DYNAMIC,
            size,
            block_size,
            entries: size.div_ceil(u64::from(block_size)) as u32,
            uuid: [0x11; 16],
            parent_uuid: [0; 16],
            parent_name: "",
            locators: Vec::new(),
            fill_bat: true,
        }
    }

    /// Lays the file out: the footer copy and header, locators and BAT (the BAT given as
    /// (index, entry) pairs), extra `pieces`, and the footer at `len` (or right after the
    /// last thing written when `len` is None). Returns the layout.
    pub fn write(
        &self,
        path: &Path,
        bat: &[(u32, u32)],
        pieces: &[(u64, &[u8])],
        len: Option<u64>,
    ) -> VhdLayout {
        let mut at = 1536u64;
        let mut locs = Vec::new();
        let mut loc_pieces: Vec<(u64, Vec<u8>)> = Vec::new();
        for (code, data) in &self.locators {
            let space = (data.len() as u64).div_ceil(SECTOR).max(1) * SECTOR;
            locs.push(VhdLocator {
                code: *code,
                space: space as u32,
                length: data.len() as u32,
                offset: at,
            });
            loc_pieces.push((at, data.clone()));
            at += space;
        }
        let table_offset = at;
        let bat_bytes = (u64::from(self.entries) * 4).div_ceil(SECTOR).max(1) * SECTOR;
        let data_start = (table_offset + bat_bytes).div_ceil(4096) * 4096;
        let footer = vhd_footer(self.disk_type, self.size, 512, self.uuid);
        let header = vhd_header(
            table_offset,
            self.entries,
            self.block_size,
            self.parent_uuid,
            self.parent_name,
            &locs,
        );
        let f = File::create(path).unwrap();
        f.write_all_at(&footer, 0).unwrap();
        f.write_all_at(&header, 512).unwrap();
        for (o, d) in &loc_pieces {
            f.write_all_at(d, *o).unwrap();
        }
        if self.fill_bat {
            // Written in pieces: a large table is never held in memory at once.
            let mut left = bat_bytes;
            let mut pos = table_offset;
            let ones = vec![0xFFu8; (1 << 20).min(bat_bytes) as usize];
            while left > 0 {
                let n = left.min(ones.len() as u64);
                f.write_all_at(&ones[..n as usize], pos).unwrap();
                pos += n;
                left -= n;
            }
        }
        for &(index, entry) in bat {
            f.write_all_at(&entry.to_be_bytes(), table_offset + u64::from(index) * 4)
                .unwrap();
        }
        let mut end = data_start.max(table_offset + bat_bytes);
        for (o, d) in pieces {
            f.write_all_at(d, *o).unwrap();
            end = end.max(o + d.len() as u64);
        }
        let end = len.unwrap_or(end.div_ceil(SECTOR) * SECTOR);
        f.write_all_at(&footer, end).unwrap();
        f.set_len(end + 512).unwrap();
        VhdLayout {
            table_offset,
            data_start,
        }
    }
}

// ---- VMDK (little-endian; VMware "Virtual Disk Format 5.0") ----

pub const KDMV_NEWLINE: u32 = 1;
pub const KDMV_REDUNDANT: u32 = 2;
pub const KDMV_COMPRESSED: u32 = 1 << 16;
pub const KDMV_MARKERS: u32 = 1 << 17;
pub const GD_AT_END: u64 = u64::MAX;

/// The fields of a hosted sparse extent header.
#[derive(Debug, Clone, Copy)]
pub struct Kdmv {
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub grain_sectors: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub overhead: u64,
    pub compress: u16,
}

impl Kdmv {
    /// A monolithicSparse-style header: version 1, no embedded descriptor, the grain
    /// directory at sector 1 (right after the header).
    pub fn sparse(capacity: u64, grain_sectors: u64, gtes_per_gt: u32) -> Kdmv {
        Kdmv {
            version: 1,
            flags: KDMV_NEWLINE,
            capacity,
            grain_sectors,
            descriptor_offset: 0,
            descriptor_size: 0,
            gtes_per_gt,
            rgd_offset: 0,
            gd_offset: 1,
            overhead: 1,
            compress: 0,
        }
    }

    /// A streamOptimized header: version 3, compressed grains with markers, the grain
    /// directory found through the footer, a 2-sector descriptor at sector 1.
    pub fn stream(capacity: u64, gtes_per_gt: u32) -> Kdmv {
        Kdmv {
            version: 3,
            flags: KDMV_NEWLINE | KDMV_COMPRESSED | KDMV_MARKERS,
            capacity,
            grain_sectors: 128,
            descriptor_offset: 1,
            descriptor_size: 2,
            gtes_per_gt,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 3,
            compress: 1,
        }
    }

    /// Entries the grain directory has for this capacity.
    pub fn gd_entries(&self) -> u64 {
        self.capacity
            .div_ceil(self.grain_sectors * u64::from(self.gtes_per_gt))
    }

    pub fn bytes(&self) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&self.version.to_le_bytes());
        h[8..12].copy_from_slice(&self.flags.to_le_bytes());
        h[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        h[20..28].copy_from_slice(&self.grain_sectors.to_le_bytes());
        h[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        h[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        h[44..48].copy_from_slice(&self.gtes_per_gt.to_le_bytes());
        h[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        h[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        h[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        h[72] = 0;
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&self.compress.to_le_bytes());
        h
    }
}

/// A text descriptor: the header lines, `extra` lines (parentFileNameHint, ddb...), the
/// extent lines.
pub fn descriptor(create_type: &str, parent_cid: &str, extra: &str, extents: &[String]) -> String {
    let mut d = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID={parent_cid}\ncreateType=\"{create_type}\"\n{extra}\n# Extent description\n"
    );
    for e in extents {
        d.push_str(e);
        d.push('\n');
    }
    d.push_str(
        "\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n",
    );
    d
}

/// zlib (RFC 1950) of `data`, as stream-optimized grains hold it.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    use flate2::Compression;
    use flate2::write::ZlibEncoder;
    use std::io::Write;
    let mut e = ZlibEncoder::new(Vec::new(), Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A compressed grain: the marker (LBA in sectors, size), the payload, padded to a sector.
pub fn grain_marker(lba: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + payload.len() + 512);
    m.extend_from_slice(&lba.to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    m.resize(m.len().div_ceil(512) * 512, 0);
    m
}

/// A metadata marker sector: `sectors` of metadata of `kind` follow (0 = end of stream).
pub fn meta_marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// The start of a stream-optimized file: header, then its embedded descriptor in sectors
/// 1 and 2, padded to where the first marker goes.
pub fn stream_head(header: &Kdmv) -> Vec<u8> {
    let mut out = header.bytes().to_vec();
    let mut desc = descriptor(
        "streamOptimized",
        "ffffffff",
        "",
        &[format!("RW {} SPARSE \"stream.vmdk\"", header.capacity)],
    )
    .into_bytes();
    desc.resize((header.descriptor_size * SECTOR) as usize, 0);
    out.extend_from_slice(&desc);
    out.resize((header.overhead * SECTOR) as usize, 0);
    out
}

/// A complete stream-optimized file laid out as the specification says (64 KiB grains, 512
/// entries per table): header (GD_AT_END), descriptor, the grains (LBA in sectors, zlib
/// payload, in order), each grain table after its grains, the directory, the footer and the
/// end-of-stream marker.
pub fn spec_stream(capacity: u64, grains: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let header = Kdmv::stream(capacity, 512);
    let mut out = stream_head(&header);
    let tables = header.gd_entries() as usize;
    let mut gts = vec![vec![0u32; 512]; tables];
    for (lba, payload) in grains {
        let g = (lba / 128) as usize;
        gts[g / 512][g % 512] = (out.len() as u64 / SECTOR) as u32;
        out.extend_from_slice(&grain_marker(*lba, payload));
    }
    let mut gd = vec![0u32; tables];
    for (i, gt) in gts.iter().enumerate() {
        if gt.iter().any(|&e| e != 0) {
            out.extend_from_slice(&meta_marker(4, 1));
            gd[i] = (out.len() as u64 / SECTOR) as u32;
            out.extend(gt.iter().flat_map(|e| e.to_le_bytes()));
        }
    }
    let gd_sectors = (tables as u64 * 4).div_ceil(SECTOR);
    out.extend_from_slice(&meta_marker(gd_sectors, 2));
    let gd_offset = out.len() as u64 / SECTOR;
    out.extend(gd.iter().flat_map(|e| e.to_le_bytes()));
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&meta_marker(1, 3));
    let mut footer = header;
    footer.gd_offset = gd_offset;
    out.extend_from_slice(&footer.bytes());
    out.extend_from_slice(&meta_marker(0, 0));
    out
}

// ---- Running diskferry under limits ----

/// What a run of diskferry printed on standard output, counted as it came rather than held:
/// its size, its lines, and its first and last bytes.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    pub bytes: u64,
    pub lines: u64,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    /// Bytes other than '\n' and '\t' below 0x20, and DEL, anywhere in the output.
    pub control_bytes: u64,
}

const HEAD_KEEP: usize = 4 << 20;
const TAIL_KEEP: usize = 64 << 10;

impl Captured {
    fn take(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        self.lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        self.control_bytes += chunk
            .iter()
            .filter(|&&b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7F)
            .count() as u64;
        if self.head.len() < HEAD_KEEP {
            let n = (HEAD_KEEP - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..n]);
        }
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > 2 * TAIL_KEEP {
            let cut = self.tail.len() - TAIL_KEEP;
            self.tail.drain(..cut);
        }
    }

    /// The first `n` lines (from the kept head).
    pub fn first_lines(&self, n: usize) -> Vec<String> {
        String::from_utf8_lossy(&self.head)
            .lines()
            .take(n)
            .map(str::to_string)
            .collect()
    }

    /// The last line (from the kept tail).
    pub fn last_line(&self) -> String {
        String::from_utf8_lossy(&self.tail)
            .lines()
            .last()
            .unwrap_or("")
            .to_string()
    }

    /// The whole output as text, when it was small enough to be kept whole.
    pub fn text(&self) -> String {
        assert!(
            self.bytes as usize <= self.head.len(),
            "output of {} bytes was not kept whole",
            self.bytes
        );
        String::from_utf8_lossy(&self.head).into_owned()
    }
}

/// How to run diskferry.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// `prlimit --nofile`.
    pub nofile: Option<u64>,
    /// A file to give as standard input.
    pub stdin: Option<std::path::PathBuf>,
}

/// One finished (or killed) run.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub stdout: Captured,
    pub stderr: Vec<u8>,
}

/// Runs diskferry with `args` under `prlimit --as=1 GiB` (and `limits`), killing it after
/// [`TIMEOUT`]. Standard output is counted, not kept whole (see [`Captured`]).
pub fn run_limited<S: AsRef<OsStr>>(args: &[S], limits: &Limits) -> Run {
    let what = format!(
        "diskferry {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={ADDRESS_SPACE}"));
    if let Some(n) = limits.nofile {
        cmd.arg(format!("--nofile={n}"));
    }
    cmd.arg("--")
        .arg(env!("CARGO_BIN_EXE_diskferry"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match &limits.stdin {
        Some(p) => cmd.stdin(File::open(p).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .expect("prlimit runs (util-linux; it is part of every Linux base system)");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut c = Captured::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => c.take(&buf[..n]),
            }
        }
        c
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if v.len() < 1 << 20 {
                        v.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
        v
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let run = Run {
        what,
        status,
        timed_out,
        elapsed,
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    };
    eprintln!("RUN {}", run.describe());
    run
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        6 => "SIGABRT: an aborted allocation hits this",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        _ => "",
    }
}

impl Run {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// True when the run died of the address-space limit (an allocation that failed).
    pub fn hit_memory_limit(&self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let err = self.stderr_text();
        err.contains("memory allocation of")
            || err.contains("capacity overflow")
            || err.contains("Cannot allocate memory")
            || self.status.signal() == Some(6)
    }

    /// One line describing the run for failure messages: exit, time, memory, stderr's start.
    pub fn describe(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        let how = if self.timed_out {
            format!("killed after {:?} (timeout)", TIMEOUT)
        } else if let Some(c) = self.status.code() {
            format!("exit {c}")
        } else {
            let s = self.status.signal().unwrap_or(0);
            format!("killed by signal {s} ({})", signal_name(s))
        };
        let err = self.stderr_text();
        let mut shown: String = err.lines().take(3).collect::<Vec<_>>().join(" | ");
        if shown.len() > 400 {
            let mut cut = 400;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
        }
        format!(
            "{}: {how} in {:.2} s{}; stdout {} bytes / {} lines; stderr {} lines: {}",
            self.what,
            self.elapsed.as_secs_f64(),
            if self.hit_memory_limit() {
                ", hit the 1 GiB address-space limit"
            } else {
                ""
            },
            self.stdout.bytes,
            self.stdout.lines,
            err.lines().count(),
            shown.escape_debug()
        )
    }
}

/// How a hostile input ended: handled, or refused in one line.
#[derive(Debug)]
pub enum Verdict {
    /// Exit 0: the caller checks the result.
    Done,
    /// Exit 1 with this one line.
    Refused(String),
}

/// The rule for every hostile input: finished in time, no signal (an abort is the allocator
/// giving up), and either exit 0 or exit 1 with exactly one line on stderr that starts with
/// "diskferry: ", names each of `names`, contains no panic or allocation failure and, when
/// `keywords` is not empty, mentions one of them (case-insensitive).
pub fn done_or_refused(run: &Run, names: &[&str], keywords: &[&str]) -> Verdict {
    let d = run.describe();
    assert!(!run.timed_out, "did not finish: {d}");
    let err = run.stderr_text();
    assert!(!err.contains("panicked"), "panicked: {d}");
    assert!(
        !run.hit_memory_limit(),
        "an allocation failed under the 1 GiB limit: {d}"
    );
    let code = run
        .status
        .code()
        .unwrap_or_else(|| panic!("died of a signal: {d}"));
    match code {
        0 => Verdict::Done,
        1 => Verdict::Refused(assert_one_line(run, names, keywords)),
        _ => panic!("exit {code} (0 or 1 wanted): {d}"),
    }
}

/// Asserts a refusal: exit 1, one line naming `names` and one of `keywords`; returns it.
pub fn refused(run: &Run, names: &[&str], keywords: &[&str]) -> String {
    match done_or_refused(run, names, keywords) {
        Verdict::Refused(line) => line,
        Verdict::Done => panic!("succeeded, a refusal was wanted: {}", run.describe()),
    }
}

/// Asserts success (exit 0).
pub fn done(run: &Run) {
    match done_or_refused(run, &[], &[]) {
        Verdict::Done => {}
        Verdict::Refused(line) => panic!("refused, success was wanted: {line}"),
    }
}

fn assert_one_line(run: &Run, names: &[&str], keywords: &[&str]) -> String {
    let d = run.describe();
    let err = run.stderr_text();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "not exactly one line on stderr: {d}");
    let line = lines[0];
    assert!(line.starts_with("diskferry: "), "{d}");
    for n in names {
        assert!(line.contains(n), "the error does not name {n:?}: {d}");
    }
    if !keywords.is_empty() {
        let lower = line.to_lowercase();
        assert!(
            keywords.iter().any(|k| lower.contains(&k.to_lowercase())),
            "the error mentions none of {keywords:?}: {d}"
        );
    }
    line.to_string()
}
