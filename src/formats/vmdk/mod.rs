//! VMDK (VMware virtual disk): a text descriptor (its own file, or embedded in a sparse
//! extent) and extents: FLAT/VMFS (raw bytes), ZERO, SPARSE (hosted "KDMV", including
//! stream-optimized), VMFSSPARSE ("COWD") and SESPARSE.
//!
//! Where things are:
//! - `descriptor.rs`: parsing and writing the text descriptor.
//! - `sparse_header.rs`, `cowd.rs`, `sesparse.rs`: the three sparse extent headers.
//! - `grain_table.rs`: grain directory and tables (bounded cache); `grain.rs`: markers,
//!   compressed grains, the parallel encoder/decoder.
//! - `extent.rs`: one extent; `reader.rs`: the layer (descriptor + extents).
//! - `writer/`: every subformat; `stream_source.rs`: reading streamOptimized from a pipe;
//!   `check.rs`: `check`.
//! - In place: `edit.rs` (writing into an image: commit, safe rebase), `resize.rs` (with
//!   `resize_split.rs` for twoGbMaxExtent disks),
//!   `amend.rs` (amend and rebase -u), `measure.rs`; `descriptor_io.rs` writes a changed
//!   descriptor back crash-safely.

mod amend;
mod check;
pub mod cowd;
pub mod descriptor;
pub mod descriptor_io;
mod edit;
pub mod extent;
pub mod grain;
pub mod grain_table;
mod measure;
mod reader;
mod resize;
mod resize_split;
pub mod sesparse;
pub mod sparse_header;
mod stream_source;
mod writer;

pub use amend::AMEND_OPTIONS;
pub use check::{check, check_storage};
pub use edit::VmdkMut;
pub use reader::{Layout, VmdkLayer, parent_names};
pub use stream_source::{StreamOptimizedSource, open_stream};
pub use writer::{Subformat, create_writer};

use crate::check::{CheckReport, RepairMode};
use crate::detect::ProbeData;
use crate::edit::{EditContext, ImageMut, MeasureRequest, Measurement, NewBacking, ResizeRequest};
use crate::error::Result;
use crate::format::{Capabilities, Capability, Driver, Format, OpenContext, Probe};
use crate::gate::Gate;
use crate::image::Layer;
use crate::options::{FormatOptions, OptionKind, OptionSpec};
use crate::sink::Output;
use crate::storage::Storage;
use crate::stream::StreamSource;
use crate::writer::{CreateSpec, ImageWriter};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The VMDK driver.
pub struct VmdkDriver;

/// The VMDK format.
pub const FORMAT: Format = Format::new(&VmdkDriver);

impl Driver for VmdkDriver {
    fn name(&self) -> &'static str {
        "vmdk"
    }

    fn description(&self) -> &'static str {
        "VMware virtual disk: every subformat, delta disks, streamOptimized from and to pipes"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Read,
            Capability::ReadStream,
            Capability::Write,
            Capability::WriteStream,
            Capability::Check,
            Capability::Compress,
            Capability::Backing,
            Capability::WriteInPlace,
            Capability::Resize,
            Capability::Rebase,
            Capability::Amend,
            Capability::Measure,
        ])
    }

    fn probe(&self, data: &ProbeData) -> Probe {
        if probe(data) { Probe::Yes } else { Probe::No }
    }

    fn open(&self, storage: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(VmdkLayer::open(storage, ctx)?))
    }

    fn open_stream(&self, reader: Box<dyn Read + Send>) -> Result<Box<dyn StreamSource>> {
        open_stream(reader)
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
        Ok(Box::new(edit::open_mut(path, ctx)?))
    }

    fn resize(&self, path: &Path, request: &ResizeRequest, ctx: &EditContext<'_>) -> Result<()> {
        resize::resize(path, request, ctx.gate)
    }

    fn set_backing(
        &self,
        path: &Path,
        backing: Option<&NewBacking>,
        ctx: &EditContext<'_>,
    ) -> Result<()> {
        amend::set_backing(path, backing, ctx)
    }

    fn amend_options(&self) -> &'static [OptionSpec] {
        AMEND_OPTIONS
    }

    fn amend(&self, path: &Path, options: &FormatOptions, _ctx: &EditContext<'_>) -> Result<()> {
        amend::amend(path, options)
    }

    fn measure(&self, request: &MeasureRequest<'_>) -> Result<Measurement> {
        measure::measure(request)
    }
}

/// `-o` options for VMDK outputs.
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "subformat",
        kind: OptionKind::Choice(&[
            "monolithicSparse",
            "monolithicFlat",
            "twoGbMaxExtentSparse",
            "twoGbMaxExtentFlat",
            "streamOptimized",
            "vmfs",
        ]),
        help: "monolithicSparse (default), monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized (compressed, for OVA/ESXi import; can go to a pipe), vmfs (descriptor + flat extent, for ESXi)",
    },
    OptionSpec {
        key: "adapter_type",
        kind: OptionKind::Choice(&["ide", "lsilogic", "buslogic", "legacyESX", "pvscsi"]),
        help: "ddb.adapterType (default lsilogic: the SCSI adapter ESXi and vSphere expect)",
    },
    OptionSpec {
        key: "hwversion",
        kind: OptionKind::Text,
        help: "ddb.virtualHWVersion (default 4, which every VMware product accepts)",
    },
    OptionSpec {
        key: "compat6",
        kind: OptionKind::Flag,
        help: "same as hwversion=6 (qemu-img compatibility)",
    },
    OptionSpec {
        key: "toolsversion",
        kind: OptionKind::Text,
        help: "ddb.toolsVersion (default 2147483647: tools managed by the guest, which vSphere guest customization needs)",
    },
    OptionSpec {
        key: "zeroed_grain",
        kind: OptionKind::Flag,
        help: "sparse extents of version 2 with zeroed-grain entries (default: on for delta disks, where zeros must hide the parent; off otherwise)",
    },
];

/// True for a VMDK sparse extent ("KDMV"), a VMFS sparse extent ("COWD"), an SESPARSE extent
/// or a text descriptor: comment and blank lines, then `version=N` as the first setting.
pub fn probe(probe: &ProbeData) -> bool {
    let head = &probe.head;
    if head.starts_with(b"KDMV") || head.starts_with(b"COWD") || sesparse::has_magic(head) {
        return true;
    }
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let Some(rest) = trimmed.strip_prefix(b"version") else {
            return false;
        };
        let rest = rest.trim_ascii_start();
        return rest.first() == Some(&b'=')
            && rest[1..].trim_ascii().iter().all(u8::is_ascii_digit)
            && !rest[1..].trim_ascii().is_empty();
    }
    false
}
