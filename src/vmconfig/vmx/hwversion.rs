//! Which `virtualHW.version` a machine needs.
//!
//! VMware's table of hardware versions (Broadcom KB 315655, formerly VMware KB 1003746,
//! "Virtual machine hardware versions") gives the first version of each device; hosted
//! products (Workstation/Fusion) reached some of them later than ESXi (Workstation 14 release
//! notes: UEFI Secure Boot, virtual TPM 2.0 and NVMe in hardware version 14; Workstation 10:
//! SATA in version 10). We write the lowest version that has every device the machine uses,
//! never below [`FLOOR`], so that the VM runs on as many hosts as it can.

use crate::vm::{ControllerKind, Firmware, NicModel, ScsiModel, Vm};

/// Which product family the .vmx is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// VMware Workstation / Fusion (hosted).
    Hosted,
    /// VMware ESXi.
    Esxi,
}

/// The lowest version written: 10 (ESXi 5.5, Workstation 10), the first with SATA, which
/// every supported VMware product runs.
pub const FLOOR: u32 = 10;

/// One feature and the first hardware version that has it.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// What the feature is, for messages and tests.
    pub feature: &'static str,
    /// First version on ESXi.
    pub esxi: u32,
    /// First version on Workstation/Fusion.
    pub hosted: u32,
}

/// The table (KB 315655 / 1003746, Workstation 14 release notes).
pub const NEEDS: &[Need] = &[
    Need {
        feature: "SATA controller",
        esxi: 10,
        hosted: 10,
    },
    Need {
        feature: "UEFI firmware",
        esxi: 8,
        hosted: 8,
    },
    Need {
        feature: "e1000e NIC",
        esxi: 8,
        hosted: 8,
    },
    Need {
        feature: "vmxnet3 NIC",
        esxi: 7,
        hosted: 7,
    },
    Need {
        feature: "LSI Logic SAS / paravirtual SCSI",
        esxi: 7,
        hosted: 7,
    },
    Need {
        feature: "NVMe controller",
        esxi: 13,
        hosted: 14,
    },
    Need {
        feature: "UEFI Secure Boot",
        esxi: 13,
        hosted: 14,
    },
    Need {
        feature: "virtual TPM 2.0",
        esxi: 14,
        hosted: 14,
    },
];

fn need(feature: &str) -> Need {
    *NEEDS
        .iter()
        .find(|n| n.feature == feature)
        .expect("a feature of the table")
}

/// The features `vm` uses, each with its minimum version.
pub fn features(vm: &Vm) -> Vec<Need> {
    let mut out = Vec::new();
    let kinds: Vec<ControllerKind> = vm
        .disks
        .iter()
        .map(|d| d.controller.kind)
        .chain(vm.cdroms.iter().map(|c| c.controller.kind))
        .collect();
    if kinds.contains(&ControllerKind::Sata) {
        out.push(need("SATA controller"));
    }
    if kinds.contains(&ControllerKind::Nvme) {
        out.push(need("NVMe controller"));
    }
    if kinds.iter().any(|k| {
        matches!(
            k,
            ControllerKind::Scsi(ScsiModel::LsiSas | ScsiModel::Pvscsi)
        )
    }) {
        out.push(need("LSI Logic SAS / paravirtual SCSI"));
    }
    if let Firmware::Uefi { secure_boot } = vm.firmware {
        out.push(need("UEFI firmware"));
        if secure_boot {
            out.push(need("UEFI Secure Boot"));
        }
    }
    // A BIOS machine's TPM is not written (a vTPM needs UEFI), so it needs no version.
    if vm.tpm && vm.firmware != Firmware::Bios {
        out.push(need("virtual TPM 2.0"));
    }
    if vm.nics.iter().any(|n| n.model == NicModel::E1000e) {
        out.push(need("e1000e NIC"));
    }
    if vm.nics.iter().any(|n| n.model == NicModel::Vmxnet3) {
        out.push(need("vmxnet3 NIC"));
    }
    out
}

/// The hardware version to write for `vm` on `product`.
pub fn choose(vm: &Vm, product: Product) -> u32 {
    features(vm)
        .iter()
        .map(|n| match product {
            Product::Esxi => n.esxi,
            Product::Hosted => n.hosted,
        })
        .fold(FLOOR, u32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{Controller, Disk, DiskSource};

    #[test]
    fn versions_follow_the_features() {
        let mut vm = Vm::new("x");
        assert_eq!(choose(&vm, Product::Hosted), FLOOR);
        vm.firmware = Firmware::Uefi { secure_boot: true };
        assert_eq!(choose(&vm, Product::Esxi), 13);
        assert_eq!(choose(&vm, Product::Hosted), 14);
        vm.firmware = Firmware::Bios;
        vm.disks.push(Disk {
            source: DiskSource::Blank,
            capacity_bytes: None,
            controller: Controller {
                kind: ControllerKind::Nvme,
                index: 0,
            },
            unit: 0,
            boot_order: None,
        });
        assert_eq!(choose(&vm, Product::Esxi), 13);
        vm.tpm = true;
        assert_eq!(choose(&vm, Product::Esxi), 13);
        vm.firmware = Firmware::Uefi { secure_boot: false };
        assert_eq!(choose(&vm, Product::Esxi), 14);
    }
}
