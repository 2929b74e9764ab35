//! VDI (VirtualBox): recognised by its signature so that it is never mistaken for raw; reading
//! and writing come with its own issue.

use crate::detect::ProbeData;
use crate::format::{Capabilities, Driver, Format, Probe};

/// The VDI driver.
pub struct VdiDriver;

/// The VDI format.
pub const FORMAT: Format = Format::new(&VdiDriver);

/// The signature at offset 0x40 of every VDI header.
const SIGNATURE: u32 = 0xBEDA_107F;

impl Driver for VdiDriver {
    fn name(&self) -> &'static str {
        "vdi"
    }

    fn description(&self) -> &'static str {
        "VirtualBox disk image: detected, not yet read or written"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    fn probe(&self, probe: &ProbeData) -> Probe {
        match probe.head_at(0x40, 4) {
            Some(sig) if u32::from_le_bytes(sig.try_into().expect("4 bytes")) == SIGNATURE => {
                Probe::Yes
            }
            _ => Probe::No,
        }
    }
}
