//! VHDX (Hyper-V since Windows Server 2012): recognised by its file identifier so that it is
//! never mistaken for raw; reading and writing come with its own issue.

use crate::detect::ProbeData;
use crate::format::{Capabilities, Driver, Format, Probe};

/// The VHDX driver.
pub struct VhdxDriver;

/// The VHDX format.
pub const FORMAT: Format = Format::new(&VhdxDriver);

impl Driver for VhdxDriver {
    fn name(&self) -> &'static str {
        "vhdx"
    }

    fn description(&self) -> &'static str {
        "Microsoft VHDX (Hyper-V): detected, not yet read or written"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    fn probe(&self, probe: &ProbeData) -> Probe {
        if probe.head_at(0, 8) == Some(b"vhdxfile") {
            Probe::Yes
        } else {
            Probe::No
        }
    }
}
