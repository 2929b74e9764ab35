//! A Hyper-V configuration's key tree (XML version 5 or .vmcx) into the VM model.
//!
//! What the keys mean (checked against the corpus's Gen 1 / Gen 2 pairs, the same VMs saved
//! as XML by Windows Server 2012 R2 and as .vmcx by Windows 10):
//! - `configuration/properties/name` the VM's name, `properties/subtype` its generation
//!   (0 = Generation 1, BIOS and IDE boot; 1 = Generation 2, UEFI and SCSI boot),
//!   `properties/version` the configuration version (1280 = 5.0);
//! - `settings/memory/bank/size` startup memory in MiB (`dynamic_memory_enabled`, `limit`),
//!   `settings/processors/count`;
//! - the device `_ac6b8dc1-3257-4a70-b1b2-a9c9215659ad_` (Microsoft Virtual BIOS / UEFI):
//!   `secure_boot_enabled`, `secure_boot_template_id`;
//! - the emulated IDE controller `_83f8638b-8dca-4152-9eda-2ca8b33039b4_`: `controllerN/driveM`
//!   (channel N, position M) with `type` VHD | ISO | NONE and `pathname`;
//! - each synthetic SCSI controller, a device listed in `manifest` as device class
//!   `d422512d-2bf2-4752-809d-7b82b5fcb1b4`: `controller0/driveM` (location M);
//! - each network adapter, a device with `MacAddress` (`00-15-5D-..`; all zeros with
//!   `MacAddressIsStatic` False means "assigned at start"), `SwitchName`; synthetic ones are
//!   manifest class `2fc216b0-d2e2-4967-9b6d-b8a5c9ca2778`, legacy (emulated DEC 21140) ones
//!   are listed as "Emulated Ethernet Port"/"Legacy Network Adapter".
//! - the host's `data.vmcx` is a registry of VMs (`Configurations`), not a VM.

use super::tree::Node;
use crate::error::{Error, Result};
use crate::vm::{Cdrom, Controller, ControllerKind, Disk, DiskSource, Firmware, Nic, NicModel, Vm};
use crate::vmconfig::ConfigVm;
use std::path::{Path, PathBuf};

/// The emulated IDE controller's device id (the same in every VM).
pub const IDE_DEVICE: &str = "83f8638b-8dca-4152-9eda-2ca8b33039b4";
/// The synthetic SCSI controller's device class in the manifest.
pub const SCSI_CLASS: &str = "d422512d-2bf2-4752-809d-7b82b5fcb1b4";
/// The virtual firmware device (BIOS for Generation 1, UEFI for Generation 2).
pub const FIRMWARE_DEVICE: &str = "ac6b8dc1-3257-4a70-b1b2-a9c9215659ad";
/// The Secure Boot template that trusts Microsoft's UEFI CA (for Linux and other guests),
/// as `Set-VMFirmware -SecureBootTemplate MicrosoftUEFICertificateAuthority` sets it.
pub const UEFI_CA_TEMPLATE: &str = "272e7447-90a4-4563-a4b9-8e4ab00526ce";

/// A Hyper-V VM's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// BIOS, emulated IDE boot, emulated devices available.
    One,
    /// UEFI, synthetic SCSI boot, no emulated devices.
    Two,
}

/// Which bus a SCSI disk of Hyper-V is read as (by [`super::mapping::READ`]).
const HYPERV_SCSI: ControllerKind = super::mapping::READ.controllers[1].model;

fn device_guid(name: &str) -> Option<String> {
    let g = name.strip_prefix('_')?.strip_suffix('_')?;
    (g.len() == 36).then(|| g.to_ascii_lowercase())
}

/// Reads the VM of a Hyper-V key tree (`root` as [`super::xml::parse`] and
/// [`super::vmcx::parse`] give it). `path` names the file in errors and gives the name when
/// the configuration has none.
pub fn read(root: &Node, path: &Path) -> Result<ConfigVm> {
    let invalid = |what: &str| Error::invalid(what.to_string()).with_path(path);
    if root.child("Configurations").is_some() {
        return Err(invalid(
            "this is a Hyper-V host's VM registry (data.vmcx), not a VM: it lists the hosts's VMs; migrate one VM's own .vmcx (in its 'Virtual Machines' folder)",
        ));
    }
    let Some(c) = root.child("configuration") else {
        return Err(invalid(
            "not a Hyper-V VM configuration: no <configuration> root",
        ));
    };
    let Some(props) = c.child("properties") else {
        return Err(invalid(
            "a Hyper-V configuration without properties (a .vmrs runtime-state file?); migrate the VM's .vmcx or .xml",
        ));
    };
    if c.child("settings").is_none() {
        return Err(invalid(
            "a Hyper-V file without VM settings (a .vmrs runtime-state file?); migrate the VM's .vmcx or .xml",
        ));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hyperv-vm".into());
    let mut vm = Vm::new(
        props
            .str_at("name")
            .filter(|n| !n.trim().is_empty())
            .map(str::to_string)
            .unwrap_or(stem),
    );
    vm.description = props
        .str_at("notes")
        .filter(|n| !n.trim().is_empty())
        .map(str::to_string);
    let generation = match props.int_at("subtype") {
        None | Some(0) => Generation::One,
        Some(1) => Generation::Two,
        Some(n) => {
            return Err(invalid(&format!(
                "properties/subtype {n} is neither Generation 1 (0) nor 2 (1)"
            )));
        }
    };
    if let Some(mib) = c.int_at("settings/memory/bank/size") {
        let mib = u64::try_from(mib)
            .ok()
            .filter(|m| *m <= 1 << 30)
            .ok_or_else(|| invalid(&format!("memory size {mib} MiB is out of range")))?;
        vm.memory_bytes = mib << 20;
    }
    if c.bool_at("settings/memory/bank/dynamic_memory_enabled") == Some(true) {
        vm.warn(
            "Hyper-V Dynamic Memory was on: the startup memory is carried, not the dynamic range",
        );
    }
    if let Some(n) = c.int_at("settings/processors/count") {
        vm.cpus.count = u32::try_from(n)
            .ok()
            .filter(|n| (1..=4096).contains(n))
            .ok_or_else(|| invalid(&format!("processor count {n} is out of range")))?;
    }
    let firmware = c.child(&format!("_{FIRMWARE_DEVICE}_"));
    vm.firmware = match generation {
        Generation::One => Firmware::Bios,
        Generation::Two => Firmware::Uefi {
            secure_boot: firmware
                .and_then(|f| f.bool_at("secure_boot_enabled"))
                .unwrap_or(true),
        },
    };
    if generation == Generation::Two
        && firmware
            .and_then(|f| f.str_at("secure_boot_template_id"))
            .is_some_and(|t| t.eq_ignore_ascii_case(UEFI_CA_TEMPLATE))
        && !matches!(vm.firmware, Firmware::Uefi { secure_boot: false })
    {
        vm.warn("Secure Boot used the Microsoft UEFI CA template (for Linux guests): the target must trust the same certificate authority");
    }
    // The manifest: instance -> (class, name).
    let manifest: Vec<(String, String, String)> = c
        .child("manifest")
        .map(|m| {
            m.children
                .iter()
                .filter(|v| v.name.starts_with("vdev"))
                .map(|v| {
                    let s = |k: &str| v.str_at(k).unwrap_or("").to_ascii_lowercase();
                    (s("instance"), s("device"), s("name"))
                })
                .collect()
        })
        .unwrap_or_default();
    let class_of = |guid: &str| manifest.iter().find(|(i, _, _)| i == guid);
    let mut disk_files = Vec::new();
    let mut scsi_index = 0u32;
    for dev in &c.children {
        let Some(guid) = device_guid(&dev.name) else {
            continue;
        };
        let entry = class_of(&guid);
        let kind = if guid == IDE_DEVICE {
            Some(ControllerKind::Ide)
        } else if entry.is_some_and(|(_, class, name)| class == SCSI_CLASS || name.contains("scsi"))
        {
            Some(HYPERV_SCSI)
        } else {
            None
        };
        if let Some(kind) = kind {
            let this_scsi = scsi_index;
            if kind != ControllerKind::Ide {
                scsi_index += 1;
            }
            for ctrl in &dev.children {
                let Some(n) = numbered(&ctrl.name, "controller") else {
                    continue;
                };
                for drive in &ctrl.children {
                    let Some(m) = numbered(&drive.name, "drive") else {
                        continue;
                    };
                    let (index, unit) = if kind == ControllerKind::Ide {
                        (n, m)
                    } else {
                        (this_scsi, m)
                    };
                    let controller = Controller { kind, index };
                    let file = drive.str_at("pathname").unwrap_or("").trim().to_string();
                    match drive.str_at("type").unwrap_or("").to_ascii_uppercase().as_str() {
                        "VHD" if !file.is_empty() => {
                            vm.disks.push(Disk {
                                source: DiskSource::Path {
                                    path: PathBuf::from(&file),
                                },
                                capacity_bytes: None,
                                controller,
                                unit,
                                boot_order: None,
                            });
                            disk_files.push(file);
                        }
                        "VHD" => vm.warn(format!(
                            "a hard disk drive without a file on {kind} {index}:{unit}: not carried"
                        )),
                        "ISO" => vm.cdroms.push(Cdrom {
                            source: if file.is_empty() {
                                DiskSource::Blank
                            } else {
                                DiskSource::Path {
                                    path: PathBuf::from(&file),
                                }
                            },
                            controller,
                            unit,
                        }),
                        "PHYSICAL" | "PASSTHROUGH" => vm.warn(format!(
                            "a pass-through physical disk on {kind} {index}:{unit}: not carried (copy it to a VHDX first)"
                        )),
                        _ => {}
                    }
                }
            }
            continue;
        }
        if let Some(mac) = dev.str_at("MacAddress") {
            let legacy = entry
                .is_some_and(|(_, _, name)| name.contains("emulated") || name.contains("legacy"));
            let is_static = dev.bool_at("MacAddressIsStatic") == Some(true);
            let hex: String = mac.chars().filter(|c| c.is_ascii_hexdigit()).collect();
            let mac =
                (hex.len() == 12 && (is_static || hex.chars().any(|c| c != '0'))).then(|| {
                    hex.as_bytes()
                        .chunks(2)
                        .map(|p| String::from_utf8_lossy(p).to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(":")
                });
            vm.nics.push(Nic {
                model: if legacy {
                    NicModel::Other(super::mapping::READ.other_nics[0].model.into())
                } else {
                    NicModel::Netvsc
                },
                mac,
                network: dev
                    .str_at("SwitchName")
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string),
            });
        }
    }
    if let Some(boot) = c.child(&format!("_{FIRMWARE_DEVICE}_"))
        && generation == Generation::One
    {
        let first = boot.at("boot/device0").and_then(|d| match &d.value {
            super::tree::Value::Str(s) => Some(s.clone()),
            _ => None,
        });
        if let Some(i) = first
            .filter(|f| f.eq_ignore_ascii_case("HardDrive"))
            .and_then(|_| {
                vm.disks
                    .iter()
                    .position(|d| d.controller.kind == ControllerKind::Ide)
            })
        {
            vm.disks[i].boot_order = Some(0);
        }
    }
    Ok(ConfigVm { vm, disk_files })
}

/// `controller3` -> 3 (for `prefix` "controller"); bounded to a u32.
fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let n = name.strip_prefix(prefix)?;
    (!n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// The names to try, in order, for a disk file a Microsoft configuration stores as `stored`:
/// a relative name as it is (with `/` for `\`); an absolute Windows path by its file name
/// beside the configuration, then in the conventional `..\Virtual Hard Disks\` sibling
/// folder Hyper-V keeps disks in. Every candidate is opened through the gate.
pub fn disk_candidates(stored: &str) -> Vec<String> {
    if crate::winpath::is_absolute(stored) {
        match crate::winpath::file_name(stored) {
            Some(name) => vec![name.to_string(), format!("../Virtual Hard Disks/{name}")],
            None => vec![stored.to_string()],
        }
    } else {
        vec![stored.replace('\\', "/")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_become_candidates_beside_the_configuration() {
        assert_eq!(
            disk_candidates(r"C:\Disks\Default Generation 1.vhdx"),
            vec![
                "Default Generation 1.vhdx".to_string(),
                "../Virtual Hard Disks/Default Generation 1.vhdx".to_string()
            ]
        );
        assert_eq!(disk_candidates(r".\disks\a.vhd"), vec!["./disks/a.vhd"]);
        assert_eq!(numbered("controller12", "controller"), Some(12));
        assert_eq!(numbered("controller", "controller"), None);
        assert_eq!(numbered("controller99999999999", "controller"), None);
    }
}
