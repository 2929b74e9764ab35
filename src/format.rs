//! The disk image formats diskferry knows by name.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A plain byte-for-byte disk; whatever is left when no other format matches.
    Raw,
    /// Microsoft Virtual Hard Disk (Virtual PC, Virtual Server, Hyper-V, Azure, XenServer).
    Vhd,
    /// Microsoft VHDX (Hyper-V 2012 and later).
    Vhdx,
    /// VMware virtual disk.
    Vmdk,
    /// QEMU copy-on-write version 2 and 3.
    Qcow2,
    /// QEMU copy-on-write version 1.
    Qcow,
    /// VirtualBox disk image.
    Vdi,
}

impl Format {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Format; 7] = [
        Format::Raw,
        Format::Vhd,
        Format::Vhdx,
        Format::Vmdk,
        Format::Qcow2,
        Format::Qcow,
        Format::Vdi,
    ];

    /// The canonical name, as `-f`/`-O` take it and `info` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vmdk => "vmdk",
            Format::Qcow2 => "qcow2",
            Format::Qcow => "qcow",
            Format::Vdi => "vdi",
        }
    }

    /// Parses a format name; `vpc` is accepted for VHD as qemu-img spells it.
    pub fn from_name(name: &str) -> Result<Format> {
        let lower = name.to_ascii_lowercase();
        if lower == "vpc" {
            return Ok(Format::Vhd);
        }
        Format::ALL
            .into_iter()
            .find(|f| f.name() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                Error::invalid(format!(
                    "unknown format '{name}'; known formats: {} (vpc is accepted for vhd)",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format> {
        Format::from_name(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_vpc_alias() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.name()).unwrap(), f);
        }
        assert_eq!(Format::from_name("VPC").unwrap(), Format::Vhd);
        let err = Format::from_name("foo").unwrap_err().to_string();
        assert!(
            err.contains("unknown format 'foo'") && err.contains("vmdk"),
            "{err}"
        );
    }
}
