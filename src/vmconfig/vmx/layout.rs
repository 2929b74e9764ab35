//! Where each disk and CD drive goes on a VMware machine, and which device models it gets.
//!
//! The VM model may come from a hypervisor VMware does not emulate (virtio), or carry
//! addresses VMware does not have (IDE channel 3, SCSI unit 7), so the writer maps every
//! device to one VMware has, keeping the source's bus, controller and unit wherever VMware
//! allows them, and says in a warning what it changed. One function decides, so that the
//! disk plan (the VMDK's adapter type) and the .vmx agree.

use super::mapping;
use super::read::Bus;
use crate::error::{Error, Result};
use crate::vm::{ControllerKind, ScsiModel, Vm};
use std::collections::BTreeMap;

/// A device's address in the .vmx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    /// The bus.
    pub bus: Bus,
    /// The controller's index on that bus.
    pub controller: u32,
    /// The unit on the controller.
    pub unit: u32,
}

impl Slot {
    /// `scsi0:1`.
    pub fn key(self) -> String {
        format!("{}{}:{}", self.bus.prefix(), self.controller, self.unit)
    }
}

/// The machine's devices as VMware will have them.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// One per disk, in `vm.disks` order.
    pub disks: Vec<Slot>,
    /// One per CD drive, in `vm.cdroms` order.
    pub cdroms: Vec<Slot>,
    /// The model of each SCSI controller used.
    pub scsi: BTreeMap<u32, ScsiModel>,
    /// `ethernetN.virtualDev` of each NIC.
    pub nics: Vec<&'static str>,
    /// What was changed, one sentence each.
    pub warnings: Vec<String>,
}

/// Units VMware allows per controller as we write them: 16 SCSI targets (64 only for pvscsi on
/// vHW 14+, not needed to carry a machine), 30 SATA ports, 15 NVMe namespaces, 2 IDE devices.
fn units(bus: Bus) -> u32 {
    match bus {
        Bus::Ide => 2,
        Bus::Scsi => 16,
        Bus::Sata => 30,
        Bus::Nvme => 15,
    }
}

fn usable(bus: Bus, unit: u32) -> bool {
    unit < units(bus) && !(bus == Bus::Scsi && unit == 7)
}

/// The `virtualDev` of a SCSI model (the target of its row in [`mapping::WRITE_HOSTED`]).
pub fn scsi_dev(m: ScsiModel) -> &'static str {
    mapping::WRITE_HOSTED
        .controller_for(ControllerKind::Scsi(m), None)
        .map_or("lsisas1068", |r| r.target)
}

/// The VMDK `adapter_type` of a disk at `slot` (ddb.adapterType must match the controller:
/// VMware's own SATA and NVMe disks say `ide`).
pub fn adapter_type(layout: &Layout, slot: Slot) -> &'static str {
    match slot.bus {
        Bus::Ide | Bus::Sata | Bus::Nvme => "ide",
        Bus::Scsi => match layout.scsi.get(&slot.controller) {
            Some(ScsiModel::BusLogic) => "buslogic",
            Some(ScsiModel::Pvscsi) => "pvscsi",
            _ => "lsilogic",
        },
    }
}

/// Lays out `vm`'s devices; an error when there are more than VMware has addresses for (244
/// disks and CD drives).
pub fn layout(vm: &Vm) -> Result<Layout> {
    let mut l = storage_layout(vm)?;
    for (i, n) in vm.nics.iter().enumerate() {
        let row = mapping::WRITE_HOSTED.nic(&n.model, vm);
        let dev = row.map_or("e1000e", |r| r.target);
        if row.is_none_or(|r| r.warning.is_some()) {
            l.warnings.push(format!(
                "NIC {}: VMware has no {} adapter: written as {dev}",
                i + 1,
                n.model
            ));
        }
        l.nics.push(dev);
    }
    Ok(l)
}

/// `vm` with its disks and CD drives where VMware will have them ([`storage_layout`]), for
/// an OVF in VMware's dialect, which must give each the controller and unit a VMware
/// machine has, and with the memory VMware takes ([`super::write::memsize`]); with what was
/// changed, one sentence each.
pub fn vmware_placed(vm: &Vm) -> Result<(Vm, Vec<String>)> {
    let mut l = storage_layout(vm)?;
    let (mib, memory) = super::write::memsize(vm);
    l.warnings.extend(memory);
    let kind = |slot: Slot| match slot.bus {
        Bus::Ide => ControllerKind::Ide,
        Bus::Sata => ControllerKind::Sata,
        Bus::Nvme => ControllerKind::Nvme,
        Bus::Scsi => ControllerKind::Scsi(
            l.scsi
                .get(&slot.controller)
                .copied()
                .unwrap_or(ScsiModel::LsiLogic),
        ),
    };
    let mut placed = vm.clone();
    placed.memory_bytes = mib << 20;
    for (d, slot) in placed.disks.iter_mut().zip(&l.disks) {
        d.controller.kind = kind(*slot);
        d.controller.index = slot.controller;
        d.unit = slot.unit;
    }
    for (c, slot) in placed.cdroms.iter_mut().zip(&l.cdroms) {
        c.controller.kind = kind(*slot);
        c.controller.index = slot.controller;
        c.unit = slot.unit;
    }
    Ok((placed, l.warnings))
}

/// Lays out `vm`'s disks and CD drives (the NICs are left to [`layout`]).
pub fn storage_layout(vm: &Vm) -> Result<Layout> {
    let mut l = Layout::default();
    let mut taken: Vec<Slot> = Vec::new();
    let mut place =
        |kind: ControllerKind, index: u32, unit: u32, what: &str, l: &mut Layout| -> Option<Slot> {
            let row = mapping::WRITE_HOSTED.controller(kind, vm)?;
            let (bus, model) = match mapping::controller_named(row.target)? {
                ControllerKind::Ide => (Bus::Ide, None),
                ControllerKind::Sata => (Bus::Sata, None),
                ControllerKind::Nvme => (Bus::Nvme, None),
                ControllerKind::Scsi(m) => (Bus::Scsi, Some(m)),
                ControllerKind::VirtioBlk => return None,
            };
            if let Some(w) = row.warning {
                l.warnings.push(format!(
                    "{what}: {kind} has no VMware equivalent: put on SCSI ({}); {w}",
                    row.target
                ));
            }
            let wanted = Slot {
                bus,
                controller: index,
                unit,
            };
            let fits = |s: Slot, l: &Layout| {
                s.controller < bus.max_controllers()
                    && usable(bus, s.unit)
                    && !taken.contains(&s)
                    && match (bus, model) {
                        (Bus::Scsi, Some(m)) => l.scsi.get(&s.controller).is_none_or(|x| *x == m),
                        _ => true,
                    }
            };
            let slot = if fits(wanted, l) {
                wanted
            } else {
                let found = (0..bus.max_controllers())
                    .flat_map(|c| {
                        (0..units(bus)).map(move |u| Slot {
                            bus,
                            controller: c,
                            unit: u,
                        })
                    })
                    .find(|s| fits(*s, l));
                let slot = match found {
                    Some(s) => s,
                    // A full bus (more than 4 IDE devices, say): SATA has room for 120.
                    None => (0..4)
                        .flat_map(|c| {
                            (0..30).map(move |u| Slot {
                                bus: Bus::Sata,
                                controller: c,
                                unit: u,
                            })
                        })
                        .find(|s| !taken.contains(s))?,
                };
                l.warnings.push(format!(
                    "{what}: {} {index}:{unit} is not free or not a VMware address: written at {}",
                    kind,
                    slot.key()
                ));
                slot
            };
            if let (Bus::Scsi, Some(m)) = (slot.bus, model) {
                l.scsi.entry(slot.controller).or_insert(m);
            }
            taken.push(slot);
            Some(slot)
        };
    let full = || {
        Error::unsupported(format!(
            "{} disks and {} CD drives: more than a VMware machine has room for",
            vm.disks.len(),
            vm.cdroms.len()
        ))
    };
    for (i, d) in vm.disks.iter().enumerate() {
        let s = place(
            d.controller.kind,
            d.controller.index,
            d.unit,
            &format!("disk {}", i + 1),
            &mut l,
        )
        .ok_or_else(full)?;
        l.disks.push(s);
    }
    for (i, c) in vm.cdroms.iter().enumerate() {
        let s = place(
            c.controller.kind,
            c.controller.index,
            c.unit,
            &format!("CD drive {}", i + 1),
            &mut l,
        )
        .ok_or_else(full)?;
        l.cdroms.push(s);
    }
    Ok(l)
}
