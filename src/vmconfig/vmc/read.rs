//! A Virtual PC / Virtual Server .vmc into the VM model.
//!
//! The layout (Virtual PC 2004/2007 and Virtual Server 2005 write it; examples in the
//! public record, e.g. the 2013 "Convertir maquinas virtuales de Microsoft Virtual PC a KVM"
//! walk-through, and packages.md): UTF-16 XML, root `<preferences>`, values typed
//! (`type="integer"`, `"string"`, `"boolean"`, `"bytes"`):
//! - `hardware/memory/ram_size`: MiB;
//! - `hardware/pci_bus/ide_adapter/ide_controller id=N/location id=M`: `drive_type` 1 hard
//!   disk, 2 CD/DVD; `pathname/absolute` (a Windows path) and `pathname/relative` (to the
//!   .vmc, `.\disk.vhd`);
//! - Virtual Server's SCSI: `hardware/pci_bus/scsi_adapter` (with `scsi_controller id=N`
//!   children, or the adapter itself numbered by `id`) holding `location id=M` as above;
//! - `hardware/pci_bus/ethernet_adapter`: `controller_count` adapters among
//!   `ethernet_controller id=N`, each with `virtual_network/name` and
//!   `ethernet_card_address` (12 hex digits); Virtual PC emulates an Intel 21140 (DEC
//!   Tulip).
//!
//! The machine takes its name from the file, as Virtual PC's console does.

use crate::error::{Error, Result};
use crate::ovf::xml::Element;
use crate::vm::{Cdrom, Controller, ControllerKind, Disk, DiskSource, Nic, NicModel, Vm};
use crate::vmconfig::ConfigVm;
use std::path::{Path, PathBuf};

/// The NIC model Virtual PC and Virtual Server emulate (by [`super::mapping::READ`]).
pub const NIC_MODEL: &str = super::mapping::READ.other_nics[0].model;
/// The SCSI controller Virtual Server emulates (Adaptec AIC-7870), read as the nearest model
/// the VM model has (by [`super::mapping::READ`]).
const VS_SCSI: ControllerKind = super::mapping::READ.controllers[1].model;

fn child<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    e.children.iter().find(|c| c.name == name)
}

fn at<'a>(e: &'a Element, path: &str) -> Option<&'a Element> {
    path.split('/').try_fold(e, |e, p| child(e, p))
}

fn text<'a>(e: &'a Element, path: &str) -> Option<&'a str> {
    at(e, path).map(|c| c.text.trim()).filter(|t| !t.is_empty())
}

fn id(e: &Element, name: &str) -> Result<u32> {
    let v = e
        .attrs
        .iter()
        .find(|a| a.name == "id")
        .map(|a| a.value.trim());
    v.and_then(|v| v.parse::<u32>().ok())
        .filter(|v| *v < 64)
        .ok_or_else(|| {
            Error::corrupt(format!(
                "<{}> has no id between 0 and 63 ({})",
                e.name,
                crate::vmconfig::hyperv::xml::shown(v.unwrap_or("none"))
            ))
            .at_offset(e.offset)
            .with_path(name)
        })
}

fn integer(e: &Element, path: &str, name: &str) -> Result<Option<u64>> {
    let Some(t) = text(e, path) else {
        return Ok(None);
    };
    t.parse::<u64>().map(Some).map_err(|_| {
        Error::corrupt(format!(
            "{path} '{}' is not a number",
            crate::vmconfig::hyperv::xml::shown(t)
        ))
        .at_offset(at(e, path).map_or(0, |c| c.offset))
        .with_path(name)
    })
}

/// Reads a .vmc (`bytes`, the whole file); `name` names it in errors and gives the VM its
/// name.
pub fn parse(bytes: &[u8], name: &str) -> Result<ConfigVm> {
    let root = crate::vmconfig::hyperv::xml::parse_xml(bytes, name)?;
    if root.name != "preferences" {
        return Err(Error::invalid(format!(
            "the root element is <{}>, not a Virtual PC <preferences>",
            root.name
        ))
        .with_path(name));
    }
    let stem = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "virtualpc-vm".into());
    let mut vm = Vm::new(stem);
    if let Some(mib) = integer(&root, "hardware/memory/ram_size", name)? {
        if mib > 1 << 20 {
            return Err(
                Error::corrupt(format!("ram_size {mib} MiB is out of range")).with_path(name),
            );
        }
        vm.memory_bytes = mib << 20;
    }
    let mut disk_files = Vec::new();
    let pci = at(&root, "hardware/pci_bus");
    let mut buses: Vec<(ControllerKind, u32, &Element)> = Vec::new();
    if let Some(pci) = pci {
        for ide in pci.children.iter().filter(|c| c.name == "ide_adapter") {
            for c in ide.children.iter().filter(|c| c.name == "ide_controller") {
                buses.push((ControllerKind::Ide, id(c, name)?, c));
            }
        }
        for scsi in pci.children.iter().filter(|c| c.name == "scsi_adapter") {
            let controllers: Vec<&Element> = scsi
                .children
                .iter()
                .filter(|c| c.name == "scsi_controller")
                .collect();
            if controllers.is_empty() {
                if scsi.children.iter().any(|c| c.name == "location") {
                    buses.push((VS_SCSI, id(scsi, name)?, scsi));
                }
            } else {
                for c in controllers {
                    buses.push((VS_SCSI, id(c, name)?, c));
                }
            }
        }
    }
    // Controllers in address order (a .vmc may list IDE 1 before IDE 0).
    buses.sort_by_key(|(k, i, _)| (*k != ControllerKind::Ide, *i));
    for (kind, index, c) in buses {
        let mut locations = Vec::new();
        for l in c.children.iter().filter(|l| l.name == "location") {
            locations.push((id(l, name)?, l));
        }
        locations.sort_by_key(|(u, _)| *u);
        for (unit, l) in locations {
            let controller = Controller { kind, index };
            let absolute = text(l, "pathname/absolute").unwrap_or("");
            let relative = text(l, "pathname/relative").unwrap_or("");
            let stored = if relative.is_empty() {
                absolute
            } else {
                relative
            };
            match integer(l, "drive_type", name)? {
                Some(1) if !stored.is_empty() => {
                    vm.disks.push(Disk {
                        // The absolute path as the disk's source; the relative one (when
                        // there is one) is tried first (see disk_candidates).
                        source: DiskSource::Path {
                            path: PathBuf::from(if absolute.is_empty() {
                                stored
                            } else {
                                absolute
                            }),
                        },
                        capacity_bytes: None,
                        controller,
                        unit,
                        boot_order: None,
                    });
                    disk_files.push(stored.to_string());
                }
                Some(1) => vm.warn(format!(
                    "a hard disk on {kind} {index}:{unit} without a file: not carried"
                )),
                Some(2) => vm.cdroms.push(Cdrom {
                    source: if stored.is_empty() {
                        DiskSource::Blank
                    } else {
                        DiskSource::Path {
                            path: PathBuf::from(stored),
                        }
                    },
                    controller,
                    unit,
                }),
                _ => {}
            }
        }
    }
    if let Some(eth) = pci.and_then(|p| child(p, "ethernet_adapter")) {
        let count = integer(eth, "controller_count", name)?;
        let mut nics = Vec::new();
        for c in eth
            .children
            .iter()
            .filter(|c| c.name == "ethernet_controller")
        {
            let n = id(c, name)?;
            if count.is_some_and(|count| u64::from(n) >= count) {
                continue;
            }
            let hex: String = text(c, "ethernet_card_address")
                .unwrap_or("")
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect();
            let mac = (hex.len() == 12).then(|| {
                hex.as_bytes()
                    .chunks(2)
                    .map(|p| String::from_utf8_lossy(p).to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(":")
            });
            nics.push((
                n,
                Nic {
                    model: NicModel::Other(NIC_MODEL.into()),
                    mac,
                    network: text(c, "virtual_network/name").map(str::to_string),
                },
            ));
        }
        nics.sort_by_key(|(n, _)| *n);
        vm.nics = nics.into_iter().map(|(_, n)| n).collect();
    }
    if let Some(d) = vm
        .disks
        .iter_mut()
        .find(|d| d.controller.kind == ControllerKind::Ide)
    {
        d.boot_order = Some(0);
    }
    Ok(ConfigVm { vm, disk_files })
}

/// The names to try for disk `index` of a read .vmc, in the order Virtual PC looks: its
/// relative path (as stored in `disk_files`, `\` read as `/`), then the absolute Windows
/// path's file name beside the .vmc (the disk's [`DiskSource::Path`]; a .vmc moved with its
/// disks keeps a stale absolute path), then the relative path's file name beside the .vmc.
pub fn disk_candidates(config: &ConfigVm, index: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |n: String| {
        if !n.is_empty() && !out.iter().any(|o| *o == n || *o == format!("./{n}")) {
            out.push(n);
        }
    };
    let Some(stored) = config.disk_files.get(index) else {
        return out;
    };
    let absolute = config.vm.disks.get(index).and_then(|d| match &d.source {
        DiskSource::Path { path } => path.to_str().map(str::to_string),
        _ => None,
    });
    if crate::winpath::is_absolute(stored) {
        add(crate::winpath::file_name(stored)
            .unwrap_or(stored)
            .to_string());
    } else {
        add(stored.replace('\\', "/"));
    }
    if let Some(a) = absolute
        .as_deref()
        .filter(|a| crate::winpath::is_absolute(a))
        && let Some(n) = crate::winpath::file_name(a)
    {
        add(n.to_string());
    }
    if let Some(n) = crate::winpath::file_name(stored) {
        add(n.to_string());
    }
    out
}
