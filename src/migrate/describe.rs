//! A VM described on the command line around bare disk images (`--name --cpus --memory
//! --firmware --os --nic --disk-bus`), for sources that carry no description of their own.

use super::Source;
use super::mapping::{Boot, ReadRow, SourceMapping, read};
use crate::error::{Error, Result};
use crate::image::{Image, OpenOptions};
use crate::vm::{
    Controller, ControllerKind, Cpus, Disk, DiskSource, Firmware, GuestOs, Nic, NicModel, Os,
    ScsiModel, Vm,
};
use std::path::PathBuf;
use std::sync::Arc;

/// What the user says about a VM made of bare disks; `None` takes the default.
#[derive(Debug, Clone, Default)]
pub struct Description {
    /// The name (default: the first disk's file name without its extension).
    pub name: Option<String>,
    /// Virtual CPUs (default 1).
    pub cpus: Option<u32>,
    /// Cores per socket.
    pub cores_per_socket: Option<u32>,
    /// Memory in bytes (default 1 GiB).
    pub memory_bytes: Option<u64>,
    /// `bios`, `uefi` or `uefi-secure` (default bios).
    pub firmware: Option<String>,
    /// A guest OS id in any of the vocabularies [`Os`] maps.
    pub guest_os: Option<String>,
    /// `sata` (default), `scsi`, `ide`, `nvme` or `virtio`.
    pub disk_bus: Option<String>,
    /// NICs as `MODEL[,mac=MAC][,network=NAME]`, or `none`; default one e1000.
    pub nics: Vec<String>,
}

impl Description {
    /// True when nothing is said (every value takes its default).
    pub fn is_empty(&self) -> bool {
        let Description {
            name,
            cpus,
            cores_per_socket,
            memory_bytes,
            firmware,
            guest_os,
            disk_bus,
            nics,
        } = self;
        name.is_none()
            && cpus.is_none()
            && cores_per_socket.is_none()
            && memory_bytes.is_none()
            && firmware.is_none()
            && guest_os.is_none()
            && disk_bus.is_none()
            && nics.is_empty()
    }
}

/// Parses a firmware name.
pub fn parse_firmware(name: &str) -> Result<Firmware> {
    match name.to_ascii_lowercase().as_str() {
        "bios" => Ok(Firmware::Bios),
        "uefi" | "efi" => Ok(Firmware::Uefi { secure_boot: false }),
        "uefi-secure" | "uefi-secureboot" | "secureboot" => {
            Ok(Firmware::Uefi { secure_boot: true })
        }
        other => Err(Error::invalid(format!(
            "unknown firmware '{other}'; use bios, uefi or uefi-secure"
        ))),
    }
}

/// Parses a guest OS id: a VMware guestOS id, a VirtualBox OS type, a libosinfo short id or a
/// CIM OSType number.
pub fn parse_guest_os(id: &str) -> Result<GuestOs> {
    let os = id
        .parse::<u16>()
        .ok()
        .and_then(Os::from_cim)
        .or_else(|| Os::from_libosinfo(id))
        .or_else(|| Os::from_virtualbox(id))
        .or_else(|| Os::from_vmware(id))
        .ok_or_else(|| {
            Error::invalid(format!(
                "unknown guest OS '{id}': give a VMware guestOS id (ubuntu-64, windows9-64), a VirtualBox OS type (Ubuntu_64), a libosinfo id (ubuntu22.04, win10) or a CIM number"
            ))
        })?;
    Ok(GuestOs {
        os: Some(os),
        ..GuestOs::default()
    })
}

/// Parses a disk bus name (by [`MAPPING`]).
pub fn parse_bus(name: &str) -> Result<ControllerKind> {
    let name = name.to_ascii_lowercase();
    MAPPING.controller_named(&name).ok_or_else(|| {
        Error::invalid(format!(
            "unknown disk bus '{name}'; use sata, scsi, lsisas, pvscsi, virtio-scsi, ide, nvme or virtio"
        ))
    })
}

/// Parses `MODEL[,mac=MAC][,network=NAME]` (the model by [`MAPPING`]).
pub fn parse_nic(spec: &str) -> Result<Nic> {
    let mut parts = spec.split(',');
    let name = parts.next().unwrap_or("").to_ascii_lowercase();
    let Some(model) = MAPPING.nic_named(&name) else {
        return Err(Error::invalid(format!(
            "unknown NIC model '{name}' in --nic {spec}; use e1000, e1000e, vmxnet3, virtio, rtl8139, pcnet or netvsc"
        )));
    };
    let mut nic = Nic {
        model,
        mac: None,
        network: None,
    };
    for part in parts {
        match part.split_once('=') {
            Some(("mac", v)) => nic.mac = Some(parse_mac(v, spec)?),
            Some(("network", v)) if !v.is_empty() => nic.network = Some(v.to_string()),
            _ => {
                return Err(Error::invalid(format!(
                    "unknown part '{part}' in --nic {spec}; use mac=MAC and network=NAME"
                )));
            }
        }
    }
    Ok(nic)
}

fn parse_mac(text: &str, spec: &str) -> Result<String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(Error::invalid(format!(
            "'{text}' in --nic {spec} is not a MAC address (six hex pairs)"
        )));
    }
    // The low bit of the first octet marks a group address, which no NIC may own (libvirt
    // refuses one: "expected unicast mac address").
    let first = u8::from_str_radix(parts[0], 16).unwrap_or(0);
    if first & 1 == 1 {
        return Err(Error::invalid(format!(
            "'{text}' in --nic {spec} is a multicast address; a NIC's MAC must be unicast (an even first octet)"
        )));
    }
    Ok(parts.join(":").to_ascii_lowercase())
}

impl Source {
    /// A VM made of the disk images at `paths` (the first boots) as `description` says,
    /// opened with `options`.
    pub fn from_disks(
        paths: &[PathBuf],
        description: &Description,
        options: &OpenOptions,
    ) -> Result<Source> {
        if paths.is_empty() {
            return Err(Error::invalid("no disk image given"));
        }
        let name = match &description.name {
            Some(n) => n.clone(),
            None => paths[0]
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "vm".into()),
        };
        let mut vm = Vm::new(name);
        if description.cpus == Some(0) {
            return Err(Error::invalid("--cpus must be at least 1"));
        }
        vm.cpus = Cpus {
            count: description.cpus.unwrap_or(1),
            cores_per_socket: description.cores_per_socket,
        };
        if let Some(c) = description.cores_per_socket
            && (c == 0 || !vm.cpus.count.is_multiple_of(c))
        {
            return Err(Error::invalid(format!(
                "--cores-per-socket {c} does not divide --cpus {}",
                vm.cpus.count
            )));
        }
        vm.memory_bytes = description.memory_bytes.unwrap_or(1 << 30);
        if vm.memory_bytes < 1 << 20 {
            return Err(Error::invalid("--memory is less than 1 MiB"));
        }
        if let Some(f) = &description.firmware {
            vm.firmware = parse_firmware(f)?;
        }
        if let Some(os) = &description.guest_os {
            vm.guest_os = parse_guest_os(os)?;
        }
        let kind = match &description.disk_bus {
            Some(b) => parse_bus(b)?,
            None => ControllerKind::Sata,
        };
        // A PC has two IDE channels of two drives each, on every hypervisor.
        if kind == ControllerKind::Ide && paths.len() > 4 {
            return Err(Error::invalid(format!(
                "--disk-bus ide holds 4 disks (two controllers of two), not {}; use sata, scsi or virtio",
                paths.len()
            )));
        }
        let mut disks = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let image = Image::open(path, options)?;
            // IDE holds two disks per controller; the others many.
            let (index, unit) = match kind {
                ControllerKind::Ide => ((i / 2) as u32, (i % 2) as u32),
                _ => (0, i as u32),
            };
            vm.disks.push(Disk {
                source: DiskSource::Path { path: path.clone() },
                capacity_bytes: Some(image.virtual_size()),
                controller: Controller { kind, index },
                unit,
                boot_order: (i == 0).then_some(0),
            });
            disks.push(Arc::new(image));
        }
        if description.nics.iter().any(|n| n == "none") {
            if description.nics.len() > 1 {
                return Err(Error::invalid(
                    "--nic none cannot be combined with other --nic",
                ));
            }
        } else if description.nics.is_empty() {
            vm.nics.push(Nic {
                model: NicModel::E1000,
                mac: None,
                network: None,
            });
        } else {
            for spec in &description.nics {
                let nic = parse_nic(spec)?;
                if let Some(mac) = &nic.mac
                    && vm.nics.iter().any(|n| n.mac.as_ref() == Some(mac))
                {
                    return Err(Error::invalid(format!(
                        "--nic {spec}: MAC {mac} is given to two NICs; each needs its own"
                    )));
                }
                vm.nics.push(nic);
            }
        }
        Ok(Source { vm, disks })
    }
}

const CLI: &str = "docs: diskferry migrate --help (--disk-bus, --nic, --firmware)";

static BUSES: [ReadRow<ControllerKind>; 12] = [
    read("--disk-bus `sata` (the default)", ControllerKind::Sata, CLI),
    read("--disk-bus `ahci`", ControllerKind::Sata, CLI),
    read(
        "--disk-bus `scsi`",
        ControllerKind::Scsi(ScsiModel::LsiLogic),
        CLI,
    ),
    read(
        "--disk-bus `lsilogic`",
        ControllerKind::Scsi(ScsiModel::LsiLogic),
        CLI,
    ),
    read(
        "--disk-bus `lsisas`",
        ControllerKind::Scsi(ScsiModel::LsiSas),
        CLI,
    ),
    read(
        "--disk-bus `sas`",
        ControllerKind::Scsi(ScsiModel::LsiSas),
        CLI,
    ),
    read(
        "--disk-bus `pvscsi`",
        ControllerKind::Scsi(ScsiModel::Pvscsi),
        CLI,
    ),
    read(
        "--disk-bus `virtio-scsi`",
        ControllerKind::Scsi(ScsiModel::VirtioScsi),
        CLI,
    ),
    read("--disk-bus `ide`", ControllerKind::Ide, CLI),
    read("--disk-bus `nvme`", ControllerKind::Nvme, CLI),
    read("--disk-bus `virtio`", ControllerKind::VirtioBlk, CLI),
    read("--disk-bus `virtio-blk`", ControllerKind::VirtioBlk, CLI),
];

static NICS: [ReadRow<NicModel>; 11] = [
    read("--nic `e1000` (the default)", NicModel::E1000, CLI),
    read("--nic `e1000e`", NicModel::E1000e, CLI),
    read("--nic `vmxnet3`", NicModel::Vmxnet3, CLI),
    read("--nic `virtio`", NicModel::Virtio, CLI),
    read("--nic `virtio-net`", NicModel::Virtio, CLI),
    read("--nic `rtl8139`", NicModel::Rtl8139, CLI),
    read("--nic `pcnet`", NicModel::PcNet, CLI),
    read("--nic `pcnet32`", NicModel::PcNet, CLI),
    read("--nic `vlance`", NicModel::PcNet, CLI),
    read("--nic `netvsc`", NicModel::Netvsc, CLI),
    read("--nic `hyperv`", NicModel::Netvsc, CLI),
];

static FIRMWARE: [ReadRow<Boot>; 3] = [
    read("--firmware bios (the default)", Boot::Bios, CLI),
    read("--firmware uefi", Boot::Uefi, CLI),
    read("--firmware uefi-secure", Boot::SecureBoot, CLI),
];

/// What the command line's description of bare disks makes of each option.
pub static MAPPING: SourceMapping = SourceMapping {
    names: &["disks"],
    kinds: "bare disks",
    controllers: &BUSES,
    nics: &NICS,
    other_nics: &[],
    firmware: &FIRMWARE,
    os: "--os: a VMware, VirtualBox, libosinfo or CIM id, through src/vm/guest_os.rs",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_specs_parse_and_bad_ones_are_named() {
        let n = parse_nic("vmxnet3,mac=00-50-56-AA-BB-CC,network=LAN").unwrap();
        assert_eq!(n.model, NicModel::Vmxnet3);
        assert_eq!(n.mac.as_deref(), Some("00:50:56:aa:bb:cc"));
        assert_eq!(n.network.as_deref(), Some("LAN"));
        assert!(
            parse_nic("tulip")
                .unwrap_err()
                .to_string()
                .contains("tulip")
        );
        assert!(parse_nic("e1000,mac=zz").is_err());
        let multicast = parse_nic("e1000,mac=01:00:5e:00:00:01").unwrap_err();
        assert!(multicast.to_string().contains("multicast"), "{multicast}");
        assert!(parse_nic("e1000,mac=02:00:5e:00:00:01").is_ok());
        assert!(parse_nic("e1000,speed=10").is_err());
    }

    #[test]
    fn firmware_and_bus_names() {
        assert_eq!(
            parse_firmware("uefi-secure").unwrap(),
            Firmware::Uefi { secure_boot: true }
        );
        assert!(parse_firmware("coreboot").is_err());
        assert_eq!(parse_bus("nvme").unwrap(), ControllerKind::Nvme);
        assert!(parse_bus("floppy").is_err());
    }
}
