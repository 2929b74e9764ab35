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

use crate::migrate::mapping::{
    Adapter, Boot, Bus, Guest, ReadRow, Row, SourceMapping, TargetMapping, read, row,
};
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

/// `scsihw` values and the model's SCSI controllers (by [`READ`]).
pub fn scsi_model_from_scsihw(v: &str) -> Option<ScsiModel> {
    READ.controllers
        .iter()
        .filter(|r| r.native.starts_with("scsiN with scsihw"))
        .find(|r| r.native.split('`').nth(1) == Some(v))
        .and_then(|r| match r.model {
            ControllerKind::Scsi(m) => Some(m),
            _ => None,
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

/// The NIC models Proxmox emulates (qm.conf(5) netN model enum); [`READ`] says what the
/// model makes of each (a name it has no row for stays as it is).
pub const NIC_MODELS: &[&str] = &[
    "virtio",
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "vmxnet3",
    "rtl8139",
    "pcnet",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
];

/// The model's NIC for a Proxmox model name (None: not one Proxmox emulates).
pub fn nic_from_pve(model: &str) -> Option<NicModel> {
    NIC_MODELS.iter().find(|m| **m == model).map(|m| {
        READ.nic_named(m)
            .unwrap_or_else(|| NicModel::Other((*m).to_string()))
    })
}

const QM_CONF: &str = "https://pve.proxmox.com/pve-docs/qm.conf.5.html";
const QM: &str = "https://pve.proxmox.com/pve-docs/chapter-qm.html";
const VIRTIO_WIN: &str = "https://pve.proxmox.com/wiki/Windows_VirtIO_Drivers";
const VM_CONFIGS: &str = "packages.md: More targets (Proxmox VE)";

/// Why a paravirtual guest's NICs become virtio.
pub const NIC_TO_VIRTIO: &str = "the guest drives virtio; its interface names may change (ens192 becomes ens18): check its network configuration";
/// Why another guest's NIC of a model Proxmox lacks becomes e1000.
pub const NIC_NOT_EMULATED: &str = "Proxmox does not emulate the source's model";
/// A Windows guest's vmxnet3 NIC stays.
pub const VMXNET3_KEPT: &str = "vmxnet3 NICs kept (Proxmox emulates vmxnet3; VMware Tools' driver drives it): after installing virtio-win, switch them to virtio";
/// A TPM on a BIOS machine.
pub const TPM_BIOS: &str =
    "a TPM with BIOS firmware: Proxmox's TPM works with either, the guest may expect UEFI";

static CONTROLLERS: [Row<Bus>; 6] = [
    row(
        Guest::LinuxOrBsd,
        Bus::Is(ControllerKind::VirtioBlk),
        "virtioN",
        None,
        QM_CONF,
    ),
    row(
        Guest::LinuxOrBsd,
        Bus::Any,
        "scsiN, scsihw: virtio-scsi-single",
        None,
        QM,
    ),
    row(
        Guest::Any,
        Bus::Is(ControllerKind::VirtioBlk),
        "virtioN",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Bus::Is(ControllerKind::Scsi(ScsiModel::Pvscsi)),
        "scsiN, scsihw: pvscsi (when every SCSI disk is pvscsi, else sataN)",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Bus::Is(ControllerKind::Scsi(ScsiModel::VirtioScsi)),
        "scsiN, scsihw: virtio-scsi-single (when every SCSI disk is virtio-scsi, else sataN)",
        None,
        QM_CONF,
    ),
    row(Guest::Any, Bus::Any, "sataN", None, VIRTIO_WIN),
];

static NICS: [Row<Adapter>; 9] = [
    row(
        Guest::LinuxOrBsd,
        Adapter::Is(NicModel::Virtio),
        "virtio",
        None,
        QM_CONF,
    ),
    row(
        Guest::LinuxOrBsd,
        Adapter::Any,
        "virtio",
        Some(NIC_TO_VIRTIO),
        QM,
    ),
    row(
        Guest::Any,
        Adapter::Is(NicModel::Virtio),
        "virtio",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Adapter::Is(NicModel::E1000),
        "e1000",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Adapter::Is(NicModel::E1000e),
        "e1000e",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Adapter::Is(NicModel::Vmxnet3),
        "vmxnet3",
        Some(VMXNET3_KEPT),
        QM_CONF,
    ),
    row(
        Guest::Any,
        Adapter::Is(NicModel::Rtl8139),
        "rtl8139",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Adapter::Is(NicModel::PcNet),
        "pcnet",
        None,
        QM_CONF,
    ),
    // A model none of the rows above names: Proxmox's own name when qm.conf lists it
    // ([`NIC_MODELS`]), else e1000.
    row(
        Guest::Any,
        Adapter::Any,
        "e1000",
        Some(NIC_NOT_EMULATED),
        QM_CONF,
    ),
];

static FIRMWARE: [Row<Boot>; 5] = [
    row(
        Guest::Any,
        Boot::Bios,
        "bios: seabios (the default, not written)",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Boot::Uefi,
        "bios: ovmf, machine: q35, efidisk0 pre-enrolled-keys=0",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "bios: ovmf, machine: q35, efidisk0 pre-enrolled-keys=1",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "tpmstate0 version=v2.0",
        None,
        QM_CONF,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "tpmstate0 version=v2.0",
        Some(TPM_BIOS),
        QM_CONF,
    ),
];

/// What the Proxmox writer does with each model device.
pub static WRITE: TargetMapping = TargetMapping {
    names: &["proxmox", "pve"],
    controllers: &CONTROLLERS,
    nics: &NICS,
    firmware: &FIRMWARE,
    guest: &[],
    os: "ostype of the guest's family and version (OSTYPES, qm.conf(5))",
    notes: "Linux and BSD guests take virtio; other guests keep pvscsi or virtio-scsi only when every SCSI disk has that one model, and a NIC model qm.conf lists (i82551, ne2k_pci ...) keeps its name. A guest with a VMware guestOS id, a vmxnet3 NIC or a pvscsi disk gets the warning to uninstall VMware Tools and install the QEMU guest agent.",
};

/// The Proxmox model for a NIC of `vm` (by [`WRITE`]), and true when it is not the source's
/// own model.
pub fn pve_nic(model: &NicModel, vm: &Vm) -> (&'static str, Option<&'static str>) {
    let Some(r) = WRITE.nic(model, vm) else {
        return ("e1000", Some(NIC_NOT_EMULATED));
    };
    if let (Adapter::Any, NicModel::Other(o)) = (&r.model, model)
        && r.guest == Guest::Any
        && let Some(m) = NIC_MODELS.iter().find(|m| *m == o)
    {
        return (m, None);
    }
    if nic_from_pve(r.target).as_ref() == Some(model) {
        (r.target, None)
    } else {
        (r.target, r.warning)
    }
}

/// True when the guest drives virtio devices out of the box (the guests of [`WRITE`]'s
/// first rows).
pub fn paravirt(vm: &Vm) -> bool {
    Guest::LinuxOrBsd.matches(vm.guest_os.os.map(|o| o.family()))
}

/// The bus (`scsi`, `sata`, `virtio`) and scsihw for each disk of `vm`, by [`WRITE`]'s
/// controller rows.
pub fn disk_buses(vm: &Vm) -> (Vec<&'static str>, &'static str) {
    let scsi: Vec<_> = vm
        .disks
        .iter()
        .filter_map(|d| match d.controller.kind {
            ControllerKind::Scsi(m) => Some(m),
            _ => None,
        })
        .collect();
    let keep_scsi = !scsi.is_empty() && scsi.iter().all(|m| *m == scsi[0]);
    let paravirt = paravirt(vm);
    let scsihw = match scsi.first() {
        Some(ScsiModel::Pvscsi) if keep_scsi && !paravirt => "pvscsi",
        _ => "virtio-scsi-single",
    };
    let buses = vm
        .disks
        .iter()
        .map(|d| {
            let target = WRITE
                .controller(d.controller.kind, vm)
                .map_or("sataN", |r| r.target);
            match target.split(|c: char| !c.is_ascii_lowercase()).next() {
                Some("virtio") => "virtio",
                // The model SCSI rows keep their bus only when every SCSI disk has the model.
                Some("scsi") if paravirt || keep_scsi => "scsi",
                _ => "sata",
            }
        })
        .collect();
    (buses, scsihw)
}

static READ_CONTROLLERS: [ReadRow<ControllerKind>; 10] = [
    read("`ide`N", ControllerKind::Ide, QM_CONF),
    read("`sata`N", ControllerKind::Sata, QM_CONF),
    read("`virtio`N", ControllerKind::VirtioBlk, QM_CONF),
    // LSI 53C895A and 53C810: the model's parallel LSI controller is the nearest.
    read(
        "scsiN with scsihw `lsi`",
        ControllerKind::Scsi(ScsiModel::LsiLogic),
        QM_CONF,
    ),
    read(
        "scsiN with scsihw `lsi53c810`",
        ControllerKind::Scsi(ScsiModel::LsiLogic),
        QM_CONF,
    ),
    read(
        "scsiN with scsihw `megasas`",
        ControllerKind::Scsi(ScsiModel::LsiSas),
        QM_CONF,
    ),
    read(
        "scsiN with scsihw `pvscsi`",
        ControllerKind::Scsi(ScsiModel::Pvscsi),
        QM_CONF,
    ),
    read(
        "scsiN with scsihw `virtio-scsi-pci`",
        ControllerKind::Scsi(ScsiModel::VirtioScsi),
        QM_CONF,
    ),
    read(
        "scsiN with scsihw `virtio-scsi-single`",
        ControllerKind::Scsi(ScsiModel::VirtioScsi),
        QM_CONF,
    ),
    read(
        "scsiN without scsihw (`lsi`, Proxmox's default)",
        ControllerKind::Scsi(ScsiModel::LsiLogic),
        QM_CONF,
    ),
];

static READ_NICS: [ReadRow<NicModel>; 9] = [
    read("netN `virtio`", NicModel::Virtio, QM_CONF),
    read("netN `e1000`", NicModel::E1000, QM_CONF),
    read("netN `e1000-82540em`", NicModel::E1000, QM_CONF),
    read("netN `e1000-82544gc`", NicModel::E1000, QM_CONF),
    read("netN `e1000-82545em`", NicModel::E1000, QM_CONF),
    read("netN `e1000e`", NicModel::E1000e, QM_CONF),
    read("netN `vmxnet3`", NicModel::Vmxnet3, QM_CONF),
    read("netN `rtl8139`", NicModel::Rtl8139, QM_CONF),
    read("netN `pcnet`", NicModel::PcNet, QM_CONF),
];

static READ_FIRMWARE: [ReadRow<Boot>; 4] = [
    read("bios: seabios, or no bios key", Boot::Bios, QM_CONF),
    read("bios: ovmf", Boot::Uefi, VM_CONFIGS),
    read(
        "bios: ovmf, efidisk0 pre-enrolled-keys=1",
        Boot::SecureBoot,
        QM_CONF,
    ),
    read(
        "tpmstate0 (its state is not carried)",
        Boot::TpmUefi,
        QM_CONF,
    ),
];

/// What the Proxmox reader makes of each setting.
pub static READ: SourceMapping = SourceMapping {
    names: &["proxmox", "pve"],
    kinds: "proxmox",
    controllers: &READ_CONTROLLERS,
    nics: &READ_NICS,
    other_nics: &[],
    firmware: &READ_FIRMWARE,
    os: "ostype, through OSTYPES and src/vm/guest_os.rs",
};
