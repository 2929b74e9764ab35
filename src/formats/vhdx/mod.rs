//! VHDX (Hyper-V since Windows Server 2012): fixed, dynamic and differencing files read, with
//! a pending log replayed in memory (reading never writes the file; only `check -r all`, asked
//! to repair, replays the log in place).
//!
//! - [`guid`]: GUIDs as VHDX stores them, and the ones it defines.
//! - [`header`]: the file identifier and the two headers (CRC-32C; the newer valid one wins).
//! - [`region`]: the region table: where the BAT and the metadata are.
//! - [`metadata`]: block size, virtual size, sector sizes, page 83 data, parent locator.
//! - [`bat`]: the block allocation table and every payload block state.
//! - [`check`]: `check` and `check -r` (the log replayed in place, crash-consistently).
//! - [`log`]: the metadata log, found and replayed over an in-memory overlay.
//! - [`log_write`]: the metadata log written: every table change of an edit goes through it.
//! - [`edit`]: writes in place ([`edit::VhdxMut`]) and the session resize and rebase share.
//! - [`resize`](mod@resize): the virtual size changed in place (the BAT moved when it must grow).
//! - [`rebase`]: `rebase -u`: a differencing disk's parent locator rewritten.
//! - [`parent`]: a differencing disk's parent locator and parent linkage.
//! - [`reader`]: the [`Layer`] ([`VhdxLayer`]).
//! - [`layout`]: where a new file's structures go, and their bytes.
//! - [`writer`]: fixed, dynamic (to a file or a stream) and differencing writers.
//! - [`measure`](mod@measure): the size of a file the writer makes.

pub mod bat;
pub mod check;
pub mod edit;
pub mod guid;
pub mod header;
pub mod layout;
pub mod log;
pub mod log_write;
pub mod measure;
pub mod metadata;
pub mod parent;
pub mod reader;
pub mod rebase;
pub mod region;
pub mod resize;
pub mod writer;

pub use reader::VhdxLayer;

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

/// The VHDX driver.
pub struct VhdxDriver;

/// The VHDX format.
pub const FORMAT: Format = Format::new(&VhdxDriver);

impl Driver for VhdxDriver {
    fn name(&self) -> &'static str {
        "vhdx"
    }

    fn description(&self) -> &'static str {
        "Microsoft VHDX (Hyper-V): fixed, dynamic, differencing (.avhdx) read, a pending log replayed in memory, written fixed, dynamic and differencing, changed in place through its log (writes, resize, rebase -u)"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Read,
            Capability::Write,
            Capability::WriteStream,
            Capability::Backing,
            Capability::Check,
            Capability::Measure,
            Capability::WriteInPlace,
            Capability::Resize,
            Capability::Rebase,
        ])
    }

    fn probe(&self, probe: &ProbeData) -> Probe {
        if probe.head_at(0, 8) == Some(header::FILE_SIGNATURE) {
            Probe::Yes
        } else {
            Probe::No
        }
    }

    fn open(&self, storage: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(VhdxLayer::open(storage, ctx)?))
    }

    fn create_options(&self) -> &'static [OptionSpec] {
        writer::CREATE_OPTIONS
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

    fn create_writer<'a>(
        &self,
        output: Output<'a>,
        spec: &CreateSpec,
    ) -> Result<Box<dyn ImageWriter + 'a>> {
        writer::create_writer(output, spec)
    }

    fn check(&self, path: &Path, repair: Option<RepairMode>, gate: &Gate) -> Result<CheckReport> {
        check::check(path, repair, gate)
    }
}
