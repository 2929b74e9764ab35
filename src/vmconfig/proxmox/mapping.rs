//! The device mapping between the VM model and Proxmox VE, in one table each way, so that a
//! reader can audit what a VM becomes on Proxmox (the most common move today is VMware to
//! Proxmox) and what a Proxmox VM becomes elsewhere.
//!
//! | model | Linux/BSD guest on Proxmox | any other guest on Proxmox |
//! |---|---|---|
//! | SCSI disks (any model), SATA, IDE, NVMe | `scsiN`, `scsihw: virtio-scsi-single` | `sataN` (AHCI: every guest has the driver) |
//! | SCSI pvscsi disks (all SCSI disks pvscsi) | `scsiN`, `virtio-scsi-single` | `scsiN`, `scsihw: pvscsi` (VMware Tools' driver) |
//! | virtio-blk | `virtioN` | `virtioN` (the guest had the driver) |
//! | NIC virtio, vmxnet3, e1000 ... | `virtio` | the same model when Proxmox emulates it (vmxnet3, e1000, e1000e, rtl8139, pcnet, virtio), else e1000 |
//! | UEFI (Secure Boot) | `bios: ovmf`, `machine: q35`, efidisk0 (pre-enrolled-keys=1) | same |
//! | TPM | tpmstate0 version v2.0 | same |
//!
//! Linux has had virtio drivers for fifteen years; Windows needs the virtio-win drivers
//! installed first, so it keeps devices it drives (the warning says which drivers to install
//! before switching). Proxmox's own ESXi importer makes the same choice for Windows.

use crate::vm::{Controller, ControllerKind, NicModel, Os, OsFamily, ScsiModel, Vm};

/// The largest memory read or written (Proxmox's limit is far below; this bounds overflow).
pub const MAX_MEMORY: u64 = 64 << 40;

/// Proxmox's `ostype` values (qm.conf(5)), the VMware guestOS id of the model's row for each,
/// and Proxmox's label.
pub const OSTYPES: &[(&str, Option<&str>, &str)] = &[
    ("other", None, "unspecified OS"),
    ("wxp", Some("winxppro"), "Microsoft Windows XP"),
    ("w2k", Some("win2000pro"), "Microsoft Windows 2000"),
    (
        "w2k3",
        Some("winnetenterprise-64"),
        "Microsoft Windows 2003",
    ),
    ("w2k8", Some("winlonghorn-64"), "Microsoft Windows 2008"),
    ("wvista", Some("winvista-64"), "Microsoft Windows Vista"),
    ("win7", Some("windows7-64"), "Microsoft Windows 7/2008r2"),
    (
        "win8",
        Some("windows8-64"),
        "Microsoft Windows 8.x/2012/2012r2",
    ),
    (
        "win10",
        Some("windows9-64"),
        "Microsoft Windows 10/2016/2019",
    ),
    (
        "win11",
        Some("windows11-64"),
        "Microsoft Windows 11/2022/2025",
    ),
    ("l24", Some("other24xlinux-64"), "Linux 2.4 Kernel"),
    ("l26", Some("otherlinux-64"), "Linux 2.6 - 6.X Kernel"),
    ("solaris", Some("solaris11-64"), "Solaris Kernel"),
];

/// The model's OS and Proxmox's label for an `ostype`, or None when the value is unknown.
pub fn os_from_ostype(v: &str) -> Option<(Option<Os>, &'static str)> {
    OSTYPES
        .iter()
        .find(|(k, _, _)| *k == v)
        .map(|(_, vmware, label)| (vmware.and_then(Os::from_vmware), *label))
}

/// The `ostype` for the model's guest.
pub fn ostype_for(vm: &Vm) -> &'static str {
    let Some(os) = vm.guest_os.os else {
        return "other";
    };
    let name = os.name();
    match os.family() {
        OsFamily::Linux => {
            if name.contains("2.4") {
                "l24"
            } else {
                "l26"
            }
        }
        OsFamily::Solaris => "solaris",
        OsFamily::Windows => {
            let has = |s: &str| name.contains(s);
            if has("11") || has("2022") || has("2025") {
                "win11"
            } else if has("10") || has("2016") || has("2019") {
                "win10"
            } else if has("8") || has("2012") {
                "win8"
            } else if has("7") || has("2008 R2") {
                "win7"
            } else if has("Vista") {
                "wvista"
            } else if has("2008") {
                "w2k8"
            } else if has("2003") {
                "w2k3"
            } else if has("2000") {
                "w2k"
            } else if has("XP") {
                "wxp"
            } else {
                "other"
            }
        }
        _ => "other",
    }
}

/// `scsihw` values and the model's SCSI controllers.
pub fn scsi_model_from_scsihw(v: &str) -> Option<ScsiModel> {
    Some(match v {
        // LSI 53C895A and 53C810: the model's parallel LSI controller is the nearest.
        "lsi" | "lsi53c810" => ScsiModel::LsiLogic,
        "megasas" => ScsiModel::LsiSas,
        "pvscsi" => ScsiModel::Pvscsi,
        "virtio-scsi-pci" | "virtio-scsi-single" => ScsiModel::VirtioScsi,
        _ => return None,
    })
}

/// Where a Proxmox drive key puts a disk: PVE::QemuServer::Drive puts IDE drives two to a
/// controller, LSI-type SCSI drives seven to a controller and virtio-scsi all on one.
pub fn placement(base: &str, index: u32, model: ScsiModel) -> (Controller, u32) {
    let c = |kind, index| Controller { kind, index };
    match base {
        "ide" => (c(ControllerKind::Ide, index / 2), index % 2),
        "sata" => (c(ControllerKind::Sata, 0), index),
        "virtio" => (c(ControllerKind::VirtioBlk, 0), index),
        _ => match model {
            ScsiModel::VirtioScsi => (c(ControllerKind::Scsi(model), 0), index),
            _ => (c(ControllerKind::Scsi(model), index / 7), index % 7),
        },
    }
}

/// The NIC models Proxmox emulates (qm.conf(5) netN model enum), with the model's.
pub const NIC_MODELS: &[(&str, Option<NicModel>)] = &[
    ("virtio", Some(NicModel::Virtio)),
    ("e1000", Some(NicModel::E1000)),
    ("e1000-82540em", Some(NicModel::E1000)),
    ("e1000-82544gc", Some(NicModel::E1000)),
    ("e1000-82545em", Some(NicModel::E1000)),
    ("e1000e", Some(NicModel::E1000e)),
    ("vmxnet3", Some(NicModel::Vmxnet3)),
    ("rtl8139", Some(NicModel::Rtl8139)),
    ("pcnet", Some(NicModel::PcNet)),
    ("i82551", None),
    ("i82557b", None),
    ("i82559er", None),
    ("ne2k_isa", None),
    ("ne2k_pci", None),
];

/// The model's NIC for a Proxmox model name.
pub fn nic_from_pve(model: &str) -> Option<NicModel> {
    NIC_MODELS.iter().find(|(m, _)| *m == model).map(|(m, n)| {
        n.clone()
            .unwrap_or_else(|| NicModel::Other((*m).to_string()))
    })
}

/// The Proxmox model for a NIC of a guest: virtio for Linux and BSD, else the same model when
/// Proxmox emulates it, else e1000.
pub fn pve_nic(model: &NicModel, paravirt: bool) -> (&'static str, bool) {
    if paravirt {
        return ("virtio", *model != NicModel::Virtio);
    }
    match model {
        NicModel::Virtio => ("virtio", false),
        NicModel::E1000 => ("e1000", false),
        NicModel::E1000e => ("e1000e", false),
        NicModel::Vmxnet3 => ("vmxnet3", false),
        NicModel::Rtl8139 => ("rtl8139", false),
        NicModel::PcNet => ("pcnet", false),
        NicModel::Other(o) => match NIC_MODELS.iter().find(|(m, _)| m == o) {
            Some((m, _)) => (m, false),
            None => ("e1000", true),
        },
        NicModel::Netvsc => ("e1000", true),
    }
}

/// True when the guest drives virtio devices out of the box.
pub fn paravirt(vm: &Vm) -> bool {
    matches!(
        vm.guest_os.os.map(|o| o.family()),
        Some(OsFamily::Linux | OsFamily::Bsd)
    )
}

/// The bus (`scsi`, `sata`, `virtio`) and scsihw for each disk of `vm`, by the table above.
pub fn disk_buses(vm: &Vm) -> (Vec<&'static str>, &'static str) {
    if paravirt(vm) {
        return (
            vm.disks
                .iter()
                .map(|d| match d.controller.kind {
                    ControllerKind::VirtioBlk => "virtio",
                    _ => "scsi",
                })
                .collect(),
            "virtio-scsi-single",
        );
    }
    let scsi: Vec<_> = vm
        .disks
        .iter()
        .filter_map(|d| match d.controller.kind {
            ControllerKind::Scsi(m) => Some(m),
            _ => None,
        })
        .collect();
    let keep_scsi = !scsi.is_empty() && scsi.iter().all(|m| *m == scsi[0]);
    let scsihw = match scsi.first() {
        Some(ScsiModel::Pvscsi) if keep_scsi => "pvscsi",
        Some(ScsiModel::VirtioScsi) if keep_scsi => "virtio-scsi-single",
        _ => "virtio-scsi-single",
    };
    let keep = |m: ScsiModel| keep_scsi && matches!(m, ScsiModel::Pvscsi | ScsiModel::VirtioScsi);
    (
        vm.disks
            .iter()
            .map(|d| match d.controller.kind {
                ControllerKind::VirtioBlk => "virtio",
                ControllerKind::Scsi(m) if keep(m) => "scsi",
                _ => "sata",
            })
            .collect(),
        scsihw,
    )
}
