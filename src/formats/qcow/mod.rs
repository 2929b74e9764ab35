//! QCOW version 1 (old QEMU images): recognised by its magic so that it is never mistaken for
//! raw; reading and writing come with QCOW2's issue.

use crate::detect::ProbeData;
use crate::format::{Capabilities, Driver, Format, Probe};

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
        Capabilities::NONE
    }

    fn probe(&self, probe: &ProbeData) -> Probe {
        match super::qcow2::qcow_version(probe) {
            Some(1) => Probe::Yes,
            _ => Probe::No,
        }
    }
}
