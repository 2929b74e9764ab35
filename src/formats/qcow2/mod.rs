//! QCOW2 (QEMU copy-on-write, versions 2 and 3): read, with every feature a user meets, and
//! written with every qemu-img option, compressed on every core.
//!
//! - [`header`]: the header, its feature bits and extensions, checked before anything is
//!   sized by them.
//! - [`table`]: L1 and L2 tables (bounded cache), standard and extended (subcluster) entries.
//! - [`compressed`]: compressed clusters (deflate, zstd), inflated on the reading thread.
//! - [`bitmaps`]: the bitmap directory, listed by `info`.
//! - [`snapshot`]: internal snapshots: the table, choosing one, listing them.
//! - `reader.rs`: the [`Layer`] ([`Qcow2Layer`]).
//! - [`writer`]: every option qemu-img takes, front to back (to a pipe too).
//! - [`check`](mod@check): `check` and `check -r`, counted and printed as qemu-img does.
//! - [`edit`]: changes in place: writes, `resize`, `rebase -u`, `amend`, `snapshot -c|-a|-d`.
//! - [`measure`]: `measure`, computed as qemu-img computes it.
//!
//! Encrypted images (AES, LUKS) are recognised and refused; an external data file is opened
//! through the open gate; the backing file is named to the core, which opens the chain.

pub mod bitmaps;
pub mod check;
pub mod compressed;
pub mod edit;
pub mod header;
pub mod measure;
mod reader;
pub mod snapshot;
pub mod table;

pub use reader::Qcow2Layer;
pub use snapshot::Snapshot;

pub mod writer;

use crate::check::{CheckReport, RepairMode};
use crate::detect::ProbeData;
use crate::edit::{
    BitmapEdit, EditContext, ImageMut, MeasureRequest, Measurement, NewBacking, ResizeRequest,
    SnapshotEdit,
};
use crate::error::Result;
use crate::format::{Capabilities, Capability, Driver, Format, OpenContext, Probe};
use crate::gate::Gate;
use crate::image::Layer;
use crate::options::{FormatOptions, OptionSpec};
use crate::sink::Output;
use crate::storage::Storage;
use crate::writer::{CreateSpec, ImageWriter};
use std::path::Path;
use std::sync::Arc;

/// The QCOW2 driver.
pub struct Qcow2Driver;

/// The QCOW2 format.
pub const FORMAT: Format = Format::new(&Qcow2Driver);

/// `QFI\xfb` and a big-endian version: 1 is QCOW, 2 and 3 are QCOW2.
pub(crate) fn qcow_version(probe: &ProbeData) -> Option<u32> {
    let magic = probe.head_at(0, 8)?;
    (&magic[..4] == b"QFI\xfb")
        .then(|| u32::from_be_bytes(magic[4..8].try_into().expect("4 bytes")))
}

fn probe_qcow2(probe: &ProbeData) -> Probe {
    match qcow_version(probe) {
        Some(v) if v != 1 => Probe::Yes,
        _ => Probe::No,
    }
}

const DESCRIPTION: &str = "QEMU copy-on-write v2/v3 (KVM, Proxmox, OpenStack): every cluster size, compressed (zlib, zstd), extended L2, backing files, external data files, internal snapshots";

impl Driver for Qcow2Driver {
    fn name(&self) -> &'static str {
        "qcow2"
    }

    fn description(&self) -> &'static str {
        DESCRIPTION
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Read,
            Capability::Snapshots,
            Capability::Write,
            Capability::WriteStream,
            Capability::Compress,
            Capability::Backing,
            Capability::Check,
            Capability::WriteInPlace,
            Capability::Resize,
            Capability::Rebase,
            Capability::Amend,
            Capability::EditSnapshots,
            Capability::Measure,
        ])
    }

    fn probe(&self, probe: &ProbeData) -> Probe {
        probe_qcow2(probe)
    }

    fn open(&self, storage: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Qcow2Layer::open(storage, ctx)?))
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
        check::check(path, repair, gate)
    }

    fn open_mut(&self, path: &Path, ctx: &EditContext<'_>) -> Result<Box<dyn ImageMut>> {
        edit::open_mut(path, ctx)
    }

    fn resize(&self, path: &Path, request: &ResizeRequest, ctx: &EditContext<'_>) -> Result<()> {
        edit::resize(path, request, ctx)
    }

    fn set_backing(
        &self,
        path: &Path,
        backing: Option<&NewBacking>,
        ctx: &EditContext<'_>,
    ) -> Result<()> {
        edit::set_backing(path, backing, ctx)
    }

    fn amend_options(&self) -> &'static [OptionSpec] {
        edit::AMEND_OPTIONS
    }

    fn amend(&self, path: &Path, options: &FormatOptions, ctx: &EditContext<'_>) -> Result<()> {
        edit::amend(path, options, ctx)
    }

    fn edit_snapshot(&self, path: &Path, edit: &SnapshotEdit, ctx: &EditContext<'_>) -> Result<()> {
        edit::edit_snapshot(path, edit, ctx)
    }

    fn edit_bitmaps(
        &self,
        path: &Path,
        edit: &BitmapEdit<'_>,
        ctx: &EditContext<'_>,
    ) -> Result<()> {
        edit::edit_bitmaps(path, edit, ctx)
    }

    fn holds_dirty_bitmaps(&self, options: &FormatOptions) -> bool {
        // The bitmaps extension needs version 3 (compat 1.1).
        !options
            .text("compat")
            .is_some_and(|c| c == "0.10" || c == "v2")
    }

    fn can_add_dirty_bitmaps(&self, layer: &dyn Layer, size: u64) -> Result<()> {
        let Some(q) = layer.as_any().downcast_ref::<reader::Qcow2Layer>() else {
            return Err(crate::error::Error::unsupported(
                "Format driver 'qcow2' does not support bitmaps",
            ));
        };
        edit::check_add_bitmaps(q.header(), size)
    }

    fn add_dirty_bitmaps(
        &self,
        path: &Path,
        bitmaps: &[Arc<dyn crate::dirty_bitmap::DirtyBitmap>],
        ctx: &EditContext<'_>,
    ) -> Result<()> {
        edit::add_bitmaps(path, bitmaps, ctx)
    }

    fn measure(&self, request: &MeasureRequest<'_>) -> Result<Measurement> {
        measure::measure(request)
    }
}
