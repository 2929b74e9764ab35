//! QCOW version 1 (old QEMU images): read (L1/L2 tables, compressed clusters, backing file);
//! encrypted ones are refused.
//!
//! - [`header`]: the 48-byte header.
//! - `reader.rs`: the [`Layer`] ([`QcowLayer`]), sharing QCOW2's L2 cache and inflater.
//! - `edit.rs`: writes in place and rebase -u; `measure.rs`: measure.

mod edit;
pub mod header;
mod measure;
mod reader;

pub use edit::QcowMut;
pub use reader::QcowLayer;

pub mod writer;

use crate::detect::ProbeData;
use crate::edit::{EditContext, ImageMut, MeasureRequest, Measurement, NewBacking};
use crate::error::Result;
use crate::format::{Capabilities, Capability, Driver, Format, OpenContext, Probe};
use crate::image::Layer;
use crate::sink::Output;
use crate::storage::Storage;
use crate::writer::{CreateSpec, ImageWriter};
use std::path::Path;
use std::sync::Arc;

/// The QCOW (version 1) driver.
pub struct QcowDriver;

/// The QCOW format.
pub const FORMAT: Format = Format::new(&QcowDriver);

impl Driver for QcowDriver {
    fn name(&self) -> &'static str {
        "qcow"
    }

    fn description(&self) -> &'static str {
        "QEMU copy-on-write version 1: plain and compressed clusters, backing files"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Read,
            Capability::Write,
            Capability::Compress,
            Capability::Backing,
            Capability::WriteInPlace,
            Capability::Rebase,
            Capability::Measure,
        ])
    }

    fn probe(&self, probe: &ProbeData) -> Probe {
        match super::qcow2::qcow_version(probe) {
            Some(1) => Probe::Yes,
            _ => Probe::No,
        }
    }

    fn open(&self, storage: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(QcowLayer::open(storage, ctx)?))
    }

    fn create_writer<'a>(
        &self,
        output: Output<'a>,
        spec: &CreateSpec,
    ) -> Result<Box<dyn ImageWriter + 'a>> {
        writer::create_writer(output, spec)
    }

    fn open_mut(&self, path: &Path, ctx: &EditContext<'_>) -> Result<Box<dyn ImageMut>> {
        Ok(Box::new(edit::open_mut(path, ctx)?))
    }

    fn set_backing(
        &self,
        path: &Path,
        backing: Option<&NewBacking>,
        ctx: &EditContext<'_>,
    ) -> Result<()> {
        edit::set_backing(path, backing, ctx)
    }

    fn measure(&self, request: &MeasureRequest<'_>) -> Result<Measurement> {
        measure::measure(request)
    }
}
