//! commit and rebase through the library over a writable copy-on-write format of this test's
//! own ("cow", registered like any driver): the operations are generic over every format that
//! implements `open_mut` and `set_backing`, and this checks them where no built-in format
//! offers both yet (qcow2's land from another branch). A kill-free check of their results:
//! every byte read back through the chain against what it must be.
//!
//! The cow format: "TOYCOW01", the virtual size (LE u64), the backing name's length (LE u16)
//! and name (at most 256 bytes), the backing format's length and name (at most 16); from 512
//! one state byte per 4 KiB block (0 unallocated, 1 data, 2 zero); data of block i at
//! 1 MiB + i × 4 KiB.

use diskferry::detect::ProbeData;
use diskferry::edit::{Clear, EditContext, ImageMut, NewBacking};
use diskferry::format::{Capabilities, Capability, Driver, OpenContext, Probe};
use diskferry::image::{Allocation, BackingLink, Layer, Mapping};
use diskferry::ops::commit::{AfterCommit, CommitOptions, Emptied, commit};
use diskferry::ops::rebase::{RebaseMode, RebaseOptions, rebase};
use diskferry::ops::{self, Rate};
use diskferry::storage::Storage;
use diskferry::{Error, Format, Gate, Image, OpenOptions, Registry, Result};
use std::any::Any;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"TOYCOW01";
const BLOCK: u64 = 4096;
const STATES: u64 = 512;
const DATA: u64 = 1 << 20;
const NAME_AT: u64 = 18;
const FMT_AT: u64 = 18 + 256;

struct CowDriver;
const COW: Format = Format::new(&CowDriver);

fn registry() -> Registry {
    Registry::builtin().with(COW)
}

fn open_options() -> OpenOptions {
    OpenOptions {
        registry: registry(),
        gate: Gate::anywhere(),
        ..OpenOptions::default()
    }
}

#[derive(Debug, Clone)]
struct Header {
    size: u64,
    backing: Option<(String, String)>,
}

fn read_header(storage: &dyn Storage) -> Result<Header> {
    let mut h = [0u8; 512];
    storage.read_exact_at(&mut h, 0)?;
    if &h[..8] != MAGIC {
        return Err(Error::corrupt("not a cow image"));
    }
    let size = u64::from_le_bytes(h[8..16].try_into().unwrap());
    let name_len = u16::from_le_bytes(h[16..18].try_into().unwrap()) as usize;
    let fmt_len = h[FMT_AT as usize] as usize;
    let backing = (name_len > 0).then(|| {
        let name = &h[NAME_AT as usize..NAME_AT as usize + name_len.min(256)];
        let fmt = &h[FMT_AT as usize + 1..FMT_AT as usize + 1 + fmt_len.min(16)];
        (
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(fmt).into_owned(),
        )
    });
    Ok(Header { size, backing })
}

fn header_bytes(h: &Header) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&h.size.to_le_bytes());
    if let Some((name, fmt)) = &h.backing {
        b[16..18].copy_from_slice(&(name.len() as u16).to_le_bytes());
        b[NAME_AT as usize..NAME_AT as usize + name.len()].copy_from_slice(name.as_bytes());
        b[FMT_AT as usize] = fmt.len() as u8;
        b[FMT_AT as usize + 1..FMT_AT as usize + 1 + fmt.len()].copy_from_slice(fmt.as_bytes());
    }
    b
}

/// Makes an empty cow image of `size` bytes over `backing` (name, format).
fn create(path: &Path, size: u64, backing: Option<(&str, &str)>) {
    let h = Header {
        size,
        backing: backing.map(|(n, f)| (n.to_string(), f.to_string())),
    };
    let f = std::fs::File::create(path).unwrap();
    f.write_all_at(&header_bytes(&h), 0).unwrap();
    f.set_len(DATA + size).unwrap();
}

fn blocks(size: u64) -> usize {
    size.div_ceil(BLOCK) as usize
}

impl Driver for CowDriver {
    fn name(&self) -> &'static str {
        "cow"
    }
    fn description(&self) -> &'static str {
        "a copy-on-write toy: a test of the generic in-place operations"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Read,
            Capability::WriteInPlace,
            Capability::Rebase,
        ])
    }
    fn probe(&self, probe: &ProbeData) -> Probe {
        if probe.head_at(0, 8) == Some(MAGIC) {
            Probe::Yes
        } else {
            Probe::No
        }
    }
    fn open(&self, storage: Arc<dyn Storage>, _ctx: &OpenContext<'_>) -> Result<Box<dyn Layer>> {
        let header = read_header(storage.as_ref())?;
        let mut states = vec![0u8; blocks(header.size)];
        storage.read_exact_at(&mut states, STATES)?;
        let backing = header.backing.as_ref().map(|(name, fmt)| BackingLink {
            stored_name: name.clone(),
            names: vec![name.clone()],
            format: registry().find(fmt).ok(),
            searched: None,
        });
        Ok(Box::new(CowLayer {
            storage,
            size: header.size,
            states,
            backing,
        }))
    }
    fn open_mut(&self, path: &Path, ctx: &EditContext<'_>) -> Result<Box<dyn ImageMut>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", e).with_path(path))?;
        let chain = Image::open(
            path,
            &OpenOptions {
                gate: *ctx.gate,
                ..open_options()
            },
        )?;
        let top = chain
            .top()
            .as_any()
            .downcast_ref::<CowLayer>()
            .expect("a cow image");
        Ok(Box::new(CowMut {
            file,
            size: top.size,
            states: top.states.clone(),
            chain,
        }))
    }
    fn set_backing(
        &self,
        path: &Path,
        backing: Option<&NewBacking>,
        _ctx: &EditContext<'_>,
    ) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", e).with_path(path))?;
        let storage = diskferry::host_file::HostFile::open(path)?;
        let mut h = read_header(&storage)?;
        h.backing = backing.map(|b| {
            (
                b.name.clone(),
                b.format.map(|f| f.name().to_string()).unwrap_or_default(),
            )
        });
        file.write_all_at(&header_bytes(&h), 0)
            .map_err(|e| Error::io("write", e))
    }
}

struct CowLayer {
    storage: Arc<dyn Storage>,
    size: u64,
    states: Vec<u8>,
    backing: Option<BackingLink>,
}

fn allocation(state: u8) -> Allocation {
    match state {
        1 => Allocation::Data,
        2 => Allocation::Zero,
        _ => Allocation::Unallocated,
    }
}

impl Layer for CowLayer {
    fn format(&self) -> Format {
        COW
    }
    fn path(&self) -> &Path {
        self.storage.name()
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let first = (offset / BLOCK) as usize;
        let state = self.states[first];
        let mut end = (first as u64 + 1) * BLOCK;
        while end < self.size && self.states[(end / BLOCK) as usize] == state {
            end += BLOCK;
        }
        let len = (end.min(self.size) - offset).min(max_len);
        Ok(Mapping::new(offset, len, allocation(state)))
    }
    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.storage.read_exact_at(buf, DATA + offset)
    }
    fn backing(&self) -> Option<&BackingLink> {
        self.backing.as_ref()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct CowMut {
    file: std::fs::File,
    size: u64,
    states: Vec<u8>,
    /// The image as it was opened, for the parent's bytes of partly written blocks.
    chain: Image,
}

impl CowMut {
    fn block_before(&self, index: usize) -> Result<Vec<u8>> {
        let at = index as u64 * BLOCK;
        let len = BLOCK.min(self.size - at) as usize;
        let mut buf = vec![0u8; len];
        match self.states[index] {
            1 => self.file.read_exact_at(&mut buf, DATA + at).unwrap(),
            2 => {}
            _ => {
                if self.chain.layers().len() > 1 {
                    let parent = &self.chain.layers()[1];
                    let mut pos = at;
                    while pos < at + len as u64 && pos < parent.virtual_size() {
                        let m = parent.map(pos, at + len as u64 - pos)?;
                        let r = (pos - at) as usize..(m.end() - at) as usize;
                        if m.allocation == Allocation::Data {
                            parent.read_data(pos, &mut buf[r])?;
                        }
                        pos = m.end();
                    }
                }
            }
        }
        Ok(buf)
    }

    /// Applies `f` to each block touched by `[offset, offset + len)`: whole blocks get
    /// `None`, partly covered ones the range inside them.
    fn each_block(
        &mut self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&mut CowMut, usize, Option<std::ops::Range<usize>>) -> Result<()>,
    ) -> Result<()> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let index = (pos / BLOCK) as usize;
            let start = index as u64 * BLOCK;
            let block_end = (start + BLOCK).min(self.size);
            let stop = block_end.min(end);
            if pos == start && stop == block_end {
                f(self, index, None)?;
            } else {
                f(
                    self,
                    index,
                    Some((pos - start) as usize..(stop - start) as usize),
                )?;
            }
            pos = stop;
        }
        Ok(())
    }
}

impl ImageMut for CowMut {
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn allocation_unit(&self) -> u64 {
        BLOCK
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        assert!(
            offset + data.len() as u64 <= self.size,
            "a write past the end"
        );
        self.each_block(offset, data.len() as u64, |m, index, part| {
            let at = index as u64 * BLOCK;
            let from = (at.max(offset) - offset) as usize;
            let bytes = match part {
                None => {
                    let len = BLOCK.min(m.size - at) as usize;
                    data[from..from + len].to_vec()
                }
                Some(r) => {
                    let mut block = m.block_before(index)?;
                    block[r.clone()].copy_from_slice(&data[from..from + r.len()]);
                    block
                }
            };
            m.file.write_all_at(&bytes, DATA + at).unwrap();
            m.states[index] = 1;
            Ok(())
        })
    }
    fn clear(&mut self, offset: u64, len: u64, how: Clear) -> Result<()> {
        self.each_block(offset, len, |m, index, part| match part {
            None => {
                m.states[index] = match how {
                    Clear::Zero => 2,
                    Clear::Deallocate => 0,
                };
                Ok(())
            }
            Some(r) => {
                let mut block = m.block_before(index)?;
                block[r].fill(0);
                m.file
                    .write_all_at(&block, DATA + index as u64 * BLOCK)
                    .unwrap();
                m.states[index] = 1;
                Ok(())
            }
        })
    }
    fn flush(&mut self) -> Result<()> {
        self.file.write_all_at(&self.states, STATES).unwrap();
        self.file.sync_data().map_err(|e| Error::io("flush", e))
    }
}

/// Writes `data` at `offset` of the cow image at `path` through the driver.
fn write(path: &Path, offset: u64, data: &[u8]) {
    let gate = Gate::anywhere();
    let ctx = EditContext {
        gate: &gate,
        force: Default::default(),
    };
    let mut m = COW.driver().open_mut(path, &ctx).unwrap();
    m.write_at(offset, data).unwrap();
    m.flush().unwrap();
}

fn zero(path: &Path, offset: u64, len: u64) {
    let gate = Gate::anywhere();
    let ctx = EditContext {
        gate: &gate,
        force: Default::default(),
    };
    let mut m = COW.driver().open_mut(path, &ctx).unwrap();
    m.clear(offset, len, Clear::Zero).unwrap();
    m.flush().unwrap();
}

/// What the image at `path` reads, through its chain.
fn content(path: &Path) -> Vec<u8> {
    let image = Image::open(path, &open_options()).unwrap();
    let mut buf = vec![0u8; image.virtual_size() as usize];
    image.read_at(0, &mut buf).unwrap();
    buf
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// A raw base, a cow middle and a cow top, each holding something of its own.
fn chain(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let size = 256 << 10;
    let base = dir.join("base.raw");
    let mut b = vec![0u8; size];
    b[..100_000].copy_from_slice(&pattern(100_000, 1));
    std::fs::write(&base, &b).unwrap();
    let mid = dir.join("mid.cow");
    create(&mid, size as u64, Some(("base.raw", "raw")));
    write(&mid, 50_000, &pattern(70_000, 2));
    let top = dir.join("top.cow");
    create(&top, size as u64, Some(("mid.cow", "cow")));
    write(&top, 8192, &pattern(5000, 3));
    write(&top, 200_000, &pattern(30_000, 4));
    zero(&top, 60 * 1024, 8 * 1024);
    (base, mid, top)
}

fn commit_options(after: AfterCommit, base: Option<PathBuf>) -> CommitOptions {
    CommitOptions {
        open: open_options(),
        base,
        after,
        rate: Rate::Unlimited,
    }
}

fn layer_allocations(path: &Path) -> Vec<Allocation> {
    let mut only = open_options();
    only.backing = diskferry::image::BackingPolicy::Ignore;
    let image = Image::open(path, &only).unwrap();
    let top = image.top();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < top.virtual_size() {
        let m = top.map(pos, top.virtual_size() - pos).unwrap();
        out.push(m.allocation);
        pos = m.end();
    }
    out
}

#[test]
fn commit_copies_into_the_backing_image_and_empties_the_top() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mid, top) = chain(dir.path());
    let (top_view, base_view) = (content(&top), content(&base));
    let mut calls = 0;
    let report = commit(
        &top,
        &commit_options(AfterCommit::Empty, None),
        &mut |done, total| {
            assert!(done <= total);
            calls += 1;
        },
    )
    .unwrap();
    assert!(calls >= 2);
    assert!(matches!(report.emptied, Emptied::Yes), "{report:?}");
    assert_eq!(report.base, mid);
    // The middle now reads as the top did, the top reads the same through it, holds nothing,
    // and the raw base is untouched.
    assert_eq!(content(&mid), top_view);
    assert_eq!(content(&top), top_view);
    assert_eq!(layer_allocations(&top), vec![Allocation::Unallocated]);
    assert_eq!(content(&base), base_view);
}

#[test]
fn commit_into_a_raw_base_two_levels_down_keeps_the_top() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mid, top) = chain(dir.path());
    let top_view = content(&top);
    let mid_allocations = layer_allocations(&mid);
    let report = commit(
        &top,
        &commit_options(AfterCommit::Empty, Some(PathBuf::from("base.raw"))),
        &mut |_, _| {},
    );
    // "base.raw" is relative to the top image's folder, not the working folder.
    let report = report.unwrap();
    assert!(matches!(report.emptied, Emptied::Kept));
    assert_eq!(std::fs::read(&base).unwrap(), top_view);
    assert_eq!(content(&top), top_view);
    assert_eq!(layer_allocations(&mid), mid_allocations);
    let err = commit(
        &top,
        &commit_options(AfterCommit::Keep, Some(dir.path().join("elsewhere.raw"))),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("Did not find"), "{err}");
}

fn rebase_options(backing: Option<&str>, mode: RebaseMode) -> RebaseOptions {
    RebaseOptions {
        open: open_options(),
        backing: backing.map(str::to_string),
        backing_format: None,
        mode,
        compress: Default::default(),
    }
}

#[test]
fn safe_rebase_onto_another_image_keeps_what_the_image_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, top) = chain(dir.path());
    let view = content(&top);
    let other = dir.path().join("other.raw");
    let mut o = pattern(256 << 10, 9);
    // Some of it equals the old chain (nothing needs copying there).
    o[..40_000].copy_from_slice(&view[..40_000]);
    o[150_000..180_000].fill(0);
    std::fs::write(&other, &o).unwrap();
    let report = rebase(
        &top,
        &rebase_options(Some("other.raw"), RebaseMode::Safe),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(content(&top), view);
    assert!(report.bytes > 0 && report.bytes < (256 << 10), "{report:?}");
    let image = Image::open(&top, &open_options()).unwrap();
    let link = image.top().backing().unwrap();
    assert_eq!(link.stored_name, "other.raw");
    assert_eq!(link.format.map(|f| f.name()), Some("raw"));
    assert_eq!(image.layers()[1].path(), other.as_path());
}

#[test]
fn rebase_to_no_backing_copies_everything_the_chain_held() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, top) = chain(dir.path());
    let view = content(&top);
    rebase(
        &top,
        &rebase_options(None, RebaseMode::Safe),
        &mut |_, _| {},
    )
    .unwrap();
    let image = Image::open(&top, &open_options()).unwrap();
    assert!(image.top().backing().is_none());
    assert_eq!(image.layers().len(), 1);
    assert_eq!(content(&top), view);
}

#[test]
fn unsafe_rebase_changes_the_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mid, top) = chain(dir.path());
    let allocations = layer_allocations(&top);
    // A moved backing file: same content, new name (relative to the image's folder).
    let sub = dir.path().join("moved");
    std::fs::create_dir(&sub).unwrap();
    std::fs::rename(&mid, sub.join("mid.cow")).unwrap();
    std::fs::rename(&base, sub.join("base.raw")).unwrap();
    assert!(Image::open(&top, &open_options()).is_err());
    rebase(
        &top,
        &rebase_options(Some("moved/mid.cow"), RebaseMode::Unsafe),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(layer_allocations(&top), allocations);
    let image = Image::open(&top, &open_options()).unwrap();
    assert_eq!(image.layers().len(), 3);
    // Unsafe mode accepts a name that does not exist yet, as qemu-img -u does.
    rebase(
        &top,
        &rebase_options(Some("not-yet.raw"), RebaseMode::Unsafe),
        &mut |_, _| {},
    )
    .unwrap();
    let err = rebase(
        &top,
        &rebase_options(Some("not-yet.raw"), RebaseMode::Safe),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("not-yet.raw"), "{err}");
}

#[test]
fn the_new_backing_file_is_opened_through_the_gate() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("vm");
    std::fs::create_dir(&dir).unwrap();
    let (_, _, top) = chain(&dir);
    let secret = outer.path().join("secret.raw");
    std::fs::write(&secret, vec![7u8; 4096]).unwrap();
    let mut options = rebase_options(Some("../secret.raw"), RebaseMode::Safe);
    options.open.gate = Gate::confined();
    let before = std::fs::read(&top).unwrap();
    let err = rebase(&top, &options, &mut |_, _| {}).unwrap_err();
    assert_eq!(err.kind(), diskferry::ErrorKind::Refused, "{err}");
    assert_eq!(std::fs::read(&top).unwrap(), before, "nothing was written");
}

#[test]
fn measure_walks_only_the_data_of_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, top) = chain(dir.path());
    let image = Image::open(&top, &open_options()).unwrap();
    let ranges = ops::measure::allocated_ranges(&image).unwrap();
    let view = content(&top);
    // Every byte outside the ranges reads as zero; the ranges are sorted and merged.
    let mut pos = 0;
    for r in &ranges {
        assert!(r.start >= pos && r.start < r.end);
        assert!(r.start == 0 || r.start > pos || pos == 0);
        assert!(view[pos as usize..r.start as usize].iter().all(|&b| b == 0));
        pos = r.end;
    }
    assert!(view[pos as usize..].iter().all(|&b| b == 0));
    // The zeroed 8 KiB of the top (over data below) is not counted.
    assert!(
        !ranges
            .iter()
            .any(|r| r.start < 68 * 1024 && r.end > 60 * 1024)
    );
    let raw = diskferry::formats::raw::FORMAT;
    let m = ops::measure::measure(
        raw,
        &diskferry::options::FormatOptions::empty(raw),
        ops::measure::MeasureSource::Image(&image),
    )
    .unwrap();
    assert_eq!(m.required, 256 << 10);
    let err = ops::measure::measure(
        COW,
        &diskferry::options::FormatOptions::empty(COW),
        ops::measure::MeasureSource::Size(1 << 20),
    )
    .unwrap_err();
    assert!(err.to_string().contains("measuring cow images"), "{err}");
}
