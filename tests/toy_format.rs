//! A format is a driver and one line in a registry: this test adds a toy format from outside
//! the crate, through the public API alone, and converts to and from it. If the core ever
//! needs a `match` on formats again, this stops compiling or working.
//!
//! The toy format: "TOYDISK1", the virtual size as a little-endian u64, then the disk's bytes.

use diskferry::convert::{ConvertOptions, convert};
use diskferry::detect::ProbeData;
use diskferry::format::{Capabilities, Capability, Driver, OpenContext, Probe};
use diskferry::image::{Allocation, Layer, Mapping};
use diskferry::sink::{Output, Sink};
use diskferry::storage::Storage;
use diskferry::writer::{CreateSpec, ImageWriter, Piece};
use diskferry::{Format, Image, OpenOptions, Registry, Result};
use std::any::Any;
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"TOYDISK1";
const HEADER: u64 = 16;

struct ToyDriver;
const TOY: Format = Format::new(&ToyDriver);

impl Driver for ToyDriver {
    fn name(&self) -> &'static str {
        "toy"
    }
    fn description(&self) -> &'static str {
        "a header and the bytes: a test of the registry"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Read, Capability::Write])
    }
    fn probe(&self, probe: &ProbeData) -> Probe {
        if probe.head_at(0, 8) == Some(MAGIC) {
            Probe::Yes
        } else {
            Probe::No
        }
    }
    fn open(&self, storage: Arc<dyn Storage>, _ctx: &OpenContext<'_>) -> Result<Box<dyn Layer>> {
        let mut header = [0u8; HEADER as usize];
        storage.read_exact_at(&mut header, 0)?;
        let size = u64::from_le_bytes(header[8..16].try_into().unwrap());
        Ok(Box::new(ToyLayer { storage, size }))
    }
    fn create_writer<'a>(
        &self,
        mut output: Output<'a>,
        spec: &CreateSpec,
    ) -> Result<Box<dyn ImageWriter + 'a>> {
        let mut sink = output.main()?;
        sink.set_len(HEADER + spec.size)?;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&spec.size.to_le_bytes());
        sink.write_at(&header, 0)?;
        Ok(Box::new(ToyWriter { sink }))
    }
}

struct ToyLayer {
    storage: Arc<dyn Storage>,
    size: u64,
}

impl Layer for ToyLayer {
    fn format(&self) -> Format {
        TOY
    }
    fn path(&self) -> &Path {
        self.storage.name()
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        Ok(Mapping::new(offset, max_len, Allocation::Data).at_host(0, HEADER + offset))
    }
    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.storage.read_exact_at(buf, HEADER + offset)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct ToyWriter<'a> {
    sink: Box<dyn Sink + 'a>,
}

impl ImageWriter for ToyWriter<'_> {
    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        match piece {
            Piece::Data { bytes, .. } => self.sink.write_at(bytes, HEADER + offset),
            Piece::Placed(_) => unreachable!("the toy writer offers no direct writes"),
            Piece::Zero(n) | Piece::Unallocated(n) => self.sink.write_zeros(HEADER + offset, n),
        }
    }
    fn finish(self: Box<Self>) -> Result<()> {
        self.sink.finish()
    }
}

#[test]
fn a_format_added_through_the_registry_converts_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let mut content = vec![0u8; 1 << 20];
    for (i, b) in content.iter_mut().enumerate().skip(4096).take(70_000) {
        *b = (i % 251) as u8 + 1;
    }
    std::fs::write(&raw, &content).unwrap();

    let registry = Registry::builtin().with(TOY);
    assert_eq!(registry.find("TOY").unwrap(), TOY);
    let source = OpenOptions {
        registry: registry.clone(),
        ..OpenOptions::default()
    };
    let toy = dir.path().join("disk.toy");
    convert(
        &raw,
        &toy,
        &ConvertOptions {
            source: source.clone(),
            target_format: TOY,
            ..ConvertOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let bytes = std::fs::read(&toy).unwrap();
    assert_eq!(&bytes[..8], MAGIC);
    assert_eq!(&bytes[HEADER as usize..], &content[..]);

    // Detected by its probe, through the registry, and read back.
    let image = Image::open(&toy, &source).unwrap();
    assert_eq!(image.top().format(), TOY);
    let back = dir.path().join("back.raw");
    convert(
        &toy,
        &back,
        &ConvertOptions {
            source,
            ..ConvertOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), content);

    // Without it in the registry the file is just raw, guessed.
    let plain = Image::open(&toy, &OpenOptions::default()).unwrap();
    assert_eq!(plain.top().format().name(), "raw");
    assert!(plain.format_guessed());
}

#[test]
fn what_a_driver_cannot_do_is_refused_by_its_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![1u8; 4096]).unwrap();
    let source = OpenOptions {
        registry: Registry::builtin().with(TOY),
        ..OpenOptions::default()
    };
    let err = convert(
        &raw,
        &dir.path().join("x.toy"),
        &ConvertOptions {
            source,
            target_format: TOY,
            compress: true,
            ..ConvertOptions::default()
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("toy images cannot be compressed") && err.contains("vmdk"),
        "{err}"
    );
}
