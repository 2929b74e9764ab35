//! VDI (VirtualBox): static, dynamic and differencing images, read and written.
//!
//! - [`header`]: the pre-header and header (versions 0 and 1.1), checked before anything is
//!   sized by them; the header of a new image.
//! - [`parent`]: finding a differencing image's parent by UUID (VirtualBox machine files, then
//!   VDIs beside the image), through the open gate.
//! - `reader.rs`: the [`Layer`] ([`VdiLayer`]).
//! - [`writer`]: static, dynamic (to a file or a stream) and differencing writers.
//! - [`check`](mod@check): `check` and `check -r`.
//! - [`edit`]: writing into an existing image ([`edit::VdiMut`]); [`resize`](mod@resize),
//!   [`rebase`] and [`measure`](mod@measure).
//!
//! There is no published specification: the layout follows VirtualBox's VDICore.h and VDI.cpp.

pub mod check;
pub mod edit;
pub mod header;
pub mod measure;
pub mod parent;
mod reader;
pub mod rebase;
pub mod resize;
pub mod writer;

pub use reader::VdiLayer;

use crate::check::{CheckReport, RepairMode};
use crate::detect::ProbeData;
use crate::edit::{EditContext, ImageMut, MeasureRequest, Measurement, NewBacking, ResizeRequest};
use crate::error::Result;
use crate::format::{Capabilities, Capability, Driver, Format, OpenContext, Probe};
use crate::gate::Gate;
use crate::image::Layer;
use crate::options::OptionSpec;
use crate::sink::Output;
use crate::storage::Storage;
use crate::writer::{CreateSpec, ImageWriter};
use std::path::Path;
use std::sync::Arc;

/// The VDI driver.
pub struct VdiDriver;

/// The VDI format.
pub const FORMAT: Format = Format::new(&VdiDriver);

impl Driver for VdiDriver {
    fn name(&self) -> &'static str {
        "vdi"
    }

    fn description(&self) -> &'static str {
        "VirtualBox disk image: static, dynamic, differencing (snapshots found by UUID)"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Read,
            Capability::Write,
            Capability::WriteStream,
            Capability::Check,
            Capability::Backing,
            Capability::WriteInPlace,
            Capability::Resize,
            Capability::Rebase,
            Capability::Measure,
        ])
    }

    /// The signature at 0x40, not the text banner in front of it (VirtualBox, Sun, innotek
    /// and qemu each wrote their own).
    fn probe(&self, probe: &ProbeData) -> Probe {
        match probe.head_at(0, 0x48) {
            Some(head) if header::has_signature(head) => Probe::Yes,
            _ => Probe::No,
        }
    }

    fn open(&self, storage: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(VdiLayer::open(storage, ctx)?))
    }

    fn create_options(&self) -> &'static [OptionSpec] {
        writer::CREATE_OPTIONS
    }

    fn create_writer<'a>(
        &self,
        output: Output<'a>,
        spec: &CreateSpec,
    ) -> Result<Box<dyn ImageWriter + 'a>> {
        writer::create_writer(output, spec)
    }

    fn check(&self, path: &Path, repair: Option<RepairMode>, gate: &Gate) -> Result<CheckReport> {
        let _ = gate;
        check::check(path, repair)
    }

    fn open_mut(&self, path: &Path, ctx: &EditContext<'_>) -> Result<Box<dyn ImageMut>> {
        edit::open_mut(path, ctx)
    }

    fn resize(&self, path: &Path, request: &ResizeRequest, ctx: &EditContext<'_>) -> Result<()> {
        resize::resize(path, request, ctx)
    }

    fn set_backing(
        &self,
        path: &Path,
        backing: Option<&NewBacking>,
        ctx: &EditContext<'_>,
    ) -> Result<()> {
        rebase::set_backing(path, backing, ctx)
    }

    fn measure(&self, request: &MeasureRequest<'_>) -> Result<Measurement> {
        measure::measure(request)
    }
}
