//! VHD (Microsoft Virtual Hard Disk): fixed, dynamic and differencing, read, written and
//! checked.
//!
//! - [`footer`]: the footer, its checksum, the CHS geometry and the virtual size rule.
//! - [`dynamic_header`]: the header of dynamic and differencing disks, parent locator entries.
//! - [`bat`]: the block allocation table.
//! - [`bitmap`]: the sector bitmap in front of each block.
//! - [`parent`]: finding a differencing disk's parent; the locators of a new child.
//! - [`reader`]: the [`Layer`] ([`VhdLayer`]).
//! - [`writer`]: fixed, dynamic and differencing writers, to files or streams.
//! - [`check`](mod@check): `check` and `check -r`.
//! - [`edit`]: writing into an existing image ([`edit::VhdMut`]).
//! - [`resize`](mod@resize), [`rebase`], [`measure`](mod@measure): the in-place operations and
//!   the size prediction.

pub mod bat;
pub mod bitmap;
pub mod check;
pub mod dynamic_header;
pub mod edit;
pub mod footer;
pub mod measure;
pub mod parent;
pub mod reader;
pub mod rebase;
pub mod resize;
pub mod writer;

pub use check::{check, check_storage};
pub use reader::VhdLayer;
pub use writer::create_writer;

use crate::check::{CheckReport, RepairMode};
use crate::detect::ProbeData;
use crate::edit::{EditContext, ImageMut, MeasureRequest, Measurement, NewBacking, ResizeRequest};
use crate::error::Result;
use crate::format::{Capabilities, Capability, Driver, Format, OpenContext, Probe};
use crate::gate::Gate;
use crate::image::Layer;
use crate::options::{OptionKind, OptionSpec};
use crate::sink::Output;
use crate::storage::Storage;
use crate::writer::{CreateSpec, ImageWriter};
use std::path::Path;
use std::sync::Arc;

/// The VHD driver.
pub struct VhdDriver;

/// The VHD format (`vpc` to qemu-img).
pub const FORMAT: Format = Format::new(&VhdDriver);

impl Driver for VhdDriver {
    fn name(&self) -> &'static str {
        "vhd"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["vpc"]
    }

    fn description(&self) -> &'static str {
        "Microsoft Virtual Hard Disk: fixed, dynamic, differencing (Virtual PC, Hyper-V, Azure, XenServer)"
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

    fn probe(&self, data: &ProbeData) -> Probe {
        if probe(data) { Probe::Yes } else { Probe::No }
    }

    fn open(&self, storage: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(VhdLayer::open(storage, ctx)?))
    }

    fn create_options(&self) -> &'static [OptionSpec] {
        CREATE_OPTIONS
    }

    fn create_writer<'a>(
        &self,
        output: Output<'a>,
        spec: &CreateSpec,
    ) -> Result<Box<dyn ImageWriter + 'a>> {
        create_writer(output, spec)
    }

    fn check(&self, path: &Path, repair: Option<RepairMode>, gate: &Gate) -> Result<CheckReport> {
        check(path, repair, gate)
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

/// `-o` options for VHD outputs.
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "subformat",
        kind: OptionKind::Choice(&["dynamic", "fixed"]),
        help: "dynamic (default): blocks allocated as data arrives, what XenServer imports; fixed: the disk then a footer, what Azure takes",
    },
    OptionSpec {
        key: "block_size",
        kind: OptionKind::Size,
        help: "block size of dynamic and differencing disks, a power of two from 4K to 256M (default 2M, what Hyper-V, XenServer and qemu use)",
    },
    OptionSpec {
        key: "force_size",
        kind: OptionKind::Flag,
        help: "on (diskferry's default): the exact size, rounded up to whole sectors; off: rounded up to whole CHS geometry as qemu-img does by default (diskferry invoked as qemu-img does too)",
    },
];

/// True when the file starts with a VHD footer copy (dynamic, differencing) or ends with a
/// VHD footer (fixed; qemu-img misses these and calls them raw). Old Virtual PC versions wrote
/// a 511-byte footer, so a file whose length is 511 modulo 512 is looked at one byte earlier.
pub fn probe(probe: &ProbeData) -> bool {
    if probe.head_at(0, 8) == Some(b"conectix") {
        return true;
    }
    let tail = &probe.tail;
    let footer_len = if probe.file_len % 512 == 511 {
        511
    } else {
        512
    };
    tail.len() >= footer_len
        && &tail[tail.len() - footer_len..tail.len() - footer_len + 8] == b"conectix"
}
