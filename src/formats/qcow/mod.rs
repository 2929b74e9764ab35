//! QCOW version 1 (old QEMU images): recognised by its magic so that it is never mistaken for
//! raw; reading and writing come with QCOW2's issue.

pub mod writer;

use crate::detect::ProbeData;
use crate::error::Result;
use crate::format::{Capabilities, Capability, Driver, Format, Probe};
use crate::sink::Output;
use crate::writer::{CreateSpec, ImageWriter};

/// The QCOW (version 1) driver.
pub struct QcowDriver;

/// The QCOW format.
pub const FORMAT: Format = Format::new(&QcowDriver);

impl Driver for QcowDriver {
    fn name(&self) -> &'static str {
        "qcow"
    }

    fn description(&self) -> &'static str {
        "QEMU copy-on-write version 1: detected, not yet read or written"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Write, Capability::Compress, Capability::Backing])
    }

    fn probe(&self, probe: &ProbeData) -> Probe {
        match super::qcow2::qcow_version(probe) {
            Some(1) => Probe::Yes,
            _ => Probe::No,
        }
    }

    fn create_writer<'a>(
        &self,
        output: Output<'a>,
        spec: &CreateSpec,
    ) -> Result<Box<dyn ImageWriter + 'a>> {
        writer::create_writer(output, spec)
    }
}
