//! raw: the virtual disk byte for byte. Holes in the host file are ranges that read as zeros;
//! we find them through the storage (SEEK_DATA/SEEK_HOLE) and write holes instead of zeros.

mod edit;
mod measure;
mod reader;
mod writer;

pub use edit::RawMut;
pub use reader::RawLayer;
pub use writer::{Preallocation, RawWriter};

use crate::detect::ProbeData;
use crate::edit::{EditContext, ImageMut, MeasureRequest, Measurement, ResizeRequest};
use crate::format::{Capabilities, Capability, Driver, Format, OpenContext, Probe};
use crate::image::Layer;
use crate::options::{OptionKind, OptionSpec};
use crate::sink::Output;
use crate::storage::Storage;
use crate::writer::{CreateSpec, ImageWriter};
use std::sync::Arc;

/// The raw driver.
pub struct RawDriver;

/// The raw format.
pub const FORMAT: Format = Format::new(&RawDriver);

/// `-o` options for raw outputs.
pub const CREATE_OPTIONS: &[OptionSpec] = &[OptionSpec {
    key: "preallocation",
    kind: OptionKind::Choice(&["off", "falloc", "full"]),
    help: "off: sparse file (default); falloc: reserve the space without writing; full: write zeros",
}];

impl Driver for RawDriver {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn description(&self) -> &'static str {
        "a plain disk, byte for byte (what nothing else claims)"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Read,
            Capability::Write,
            Capability::WriteStream,
            Capability::Check,
            Capability::WriteInPlace,
            Capability::Resize,
            Capability::Measure,
        ])
    }

    fn probe(&self, _probe: &ProbeData) -> Probe {
        Probe::Fallback
    }

    fn open(
        &self,
        storage: Arc<dyn Storage>,
        _ctx: &OpenContext<'_>,
    ) -> crate::Result<Box<dyn Layer>> {
        Ok(Box::new(RawLayer::open(storage)))
    }

    fn create_options(&self) -> &'static [OptionSpec] {
        CREATE_OPTIONS
    }

    fn create_writer<'a>(
        &self,
        output: Output<'a>,
        spec: &CreateSpec,
    ) -> crate::Result<Box<dyn ImageWriter + 'a>> {
        Ok(Box::new(RawWriter::create(output, spec)?))
    }

    fn check(
        &self,
        path: &std::path::Path,
        _repair: Option<crate::check::RepairMode>,
        _gate: &crate::gate::Gate,
    ) -> crate::Result<crate::check::CheckReport> {
        Ok(crate::check::CheckReport::nothing_to_check(path, FORMAT))
    }

    fn open_mut(
        &self,
        path: &std::path::Path,
        _ctx: &EditContext<'_>,
    ) -> crate::Result<Box<dyn ImageMut>> {
        Ok(Box::new(RawMut::open(path)?))
    }

    fn resize(
        &self,
        path: &std::path::Path,
        request: &ResizeRequest,
        _ctx: &EditContext<'_>,
    ) -> crate::Result<()> {
        edit::resize(path, request)
    }

    fn measure(&self, request: &MeasureRequest<'_>) -> crate::Result<Measurement> {
        Ok(measure::measure(request))
    }
}
