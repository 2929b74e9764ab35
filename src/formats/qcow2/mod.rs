//! QCOW2 (QEMU copy-on-write, versions 2 and 3): recognised by its magic so that it is never
//! mistaken for raw; reading and writing come with its own issue.

pub mod writer;

use crate::detect::ProbeData;
use crate::error::Result;
use crate::format::{Capabilities, Capability, Driver, Format, Probe};
use crate::options::OptionSpec;
use crate::sink::Output;
use crate::writer::{CreateSpec, ImageWriter};

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

impl Driver for Qcow2Driver {
    fn name(&self) -> &'static str {
        "qcow2"
    }

    fn description(&self) -> &'static str {
        "QEMU copy-on-write v2/v3 (KVM, Proxmox, OpenStack): detected, not yet read or written"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[
            Capability::Write,
            Capability::WriteStream,
            Capability::Compress,
            Capability::Backing,
        ])
    }

    fn probe(&self, probe: &ProbeData) -> Probe {
        match qcow_version(probe) {
            Some(v) if v != 1 => Probe::Yes,
            _ => Probe::No,
        }
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
}
