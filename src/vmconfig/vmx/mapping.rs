//! The device mapping between the VM model and a VMware .vmx (Workstation, Fusion, ESXi),
//! each way.
//!
//! VMware has IDE, SATA, NVMe and four SCSI models, and four NIC models. What it lacks
//! (virtio-blk, virtio-scsi) goes to the paravirtual SCSI controller for Linux (its driver,
//! vmw_pvscsi, is in the kernel since 2.6.33) and to LSI Logic SAS for the rest (Windows has
//! that driver in the box since Vista); a NIC model VMware lacks becomes vmxnet3 for Linux
//! (vmxnet3 is in the kernel) and e1000e for the rest (in Windows without VMware Tools).

use crate::migrate::mapping::{
    Adapter, Boot, Bus, Guest, ReadRow, Row, SourceMapping, TargetMapping, read, row,
};
use crate::vm::{ControllerKind as K, NicModel as N, ScsiModel as S};

const VMX: &str = "packages.md: VM configurations (VMware .vmx)";
const PVSCSI: &str = "https://knowledge.broadcom.com/external/article?legacyId=1010398";
const LSISAS: &str = "https://learn.microsoft.com/en-us/windows-hardware/drivers/storage/";
const VMXNET3: &str = "https://knowledge.broadcom.com/external/article?legacyId=1001805";
const EFI: &str = "https://techdocs.broadcom.com/us/en/vmware-cis/vsphere/vsphere/8-0/vsphere-virtual-machine-administration-guide-8-0/configuring-virtual-machine-hardwarevsphere-vm-admin/virtual-machine-compatibilityvsphere-vm-admin.html";
const VTPM: &str = "https://techdocs.broadcom.com/us/en/vmware-cis/vsphere/vsphere/8-0/vsphere-security-8-0/securing-virtual-machines-with-virtual-trusted-platform-module.html";

static CONTROLLERS: [Row<Bus>; 9] = [
    row(Guest::Any, Bus::Is(K::Ide), "ide", None, VMX),
    row(Guest::Any, Bus::Is(K::Sata), "sata", None, VMX),
    row(Guest::Any, Bus::Is(K::Nvme), "nvme", None, VMX),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::LsiLogic)),
        "lsilogic",
        None,
        VMX,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::LsiSas)),
        "lsisas1068",
        None,
        VMX,
    ),
    row(Guest::Any, Bus::Is(K::Scsi(S::Pvscsi)), "pvscsi", None, VMX),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::BusLogic)),
        "buslogic",
        None,
        VMX,
    ),
    // virtio-blk and virtio-scsi: VMware has neither.
    row(
        Guest::Linux,
        Bus::Any,
        "pvscsi",
        Some("the guest needs its driver (vmw_pvscsi, in Linux since 2.6.33)"),
        PVSCSI,
    ),
    row(
        Guest::Any,
        Bus::Any,
        "lsisas1068",
        Some("the guest needs its driver (lsi_sas, in Windows since Vista)"),
        LSISAS,
    ),
];

static NICS: [Row<Adapter>; 6] = [
    row(Guest::Any, Adapter::Is(N::E1000), "e1000", None, VMX),
    row(Guest::Any, Adapter::Is(N::E1000e), "e1000e", None, VMX),
    row(Guest::Any, Adapter::Is(N::Vmxnet3), "vmxnet3", None, VMX),
    row(Guest::Any, Adapter::Is(N::PcNet), "vlance", None, VMX),
    row(
        Guest::Linux,
        Adapter::Any,
        "vmxnet3",
        Some("VMware has no such adapter (vmxnet3's driver is in Linux)"),
        VMXNET3,
    ),
    // vmxnet3 needs a driver Windows does not have in the box; e1000e it has.
    row(
        Guest::Any,
        Adapter::Any,
        "e1000e",
        Some(
            "VMware has no such adapter (e1000e's driver is in Windows; vmxnet3's comes with VMware Tools)",
        ),
        VMXNET3,
    ),
];

/// A TPM on a BIOS machine.
pub const TPM_BIOS: &str = "the virtual TPM is left out: VMware gives a vTPM only to UEFI machines and this one boots BIOS";

/// The firmware rows of a .vmx writer, the same for Workstation/Fusion and ESXi but for what
/// it takes to power a vTPM on there (`vtpm_note`).
const fn firmware(vtpm_note: &'static str) -> [Row<Boot>; 5] {
    [
        row(
            Guest::Any,
            Boot::Bios,
            "(firmware not written: BIOS)",
            None,
            VMX,
        ),
        row(Guest::Any, Boot::Uefi, "firmware = \"efi\"", None, VMX),
        row(
            Guest::Any,
            Boot::SecureBoot,
            "firmware = \"efi\", uefi.secureBoot.enabled = \"TRUE\"",
            None,
            EFI,
        ),
        row(
            Guest::Any,
            Boot::TpmUefi,
            "vtpm.present = \"TRUE\"",
            Some(vtpm_note),
            VTPM,
        ),
        row(
            Guest::Any,
            Boot::TpmBios,
            "(not written)",
            Some(TPM_BIOS),
            VTPM,
        ),
    ]
}

static FIRMWARE_HOSTED: [Row<Boot>; 5] = firmware(
    "virtual TPM written: Workstation and Fusion power it on only once the VM is encrypted (VM Settings > Options > Access Control)",
);

static FIRMWARE_ESXI: [Row<Boot>; 5] = firmware(
    "virtual TPM written: ESXi powers it on only with a key provider configured in vCenter (Native Key Provider or KMS)",
);

const NOTES: &str = "Targets are scsiN.virtualDev values for SCSI; every device keeps its controller and unit when VMware has that address, else takes the next free one (a full bus moves to SATA, with a warning). virtualHW.version is the oldest that has every feature used.";

/// A .vmx writer's mapping: the same devices for Workstation/Fusion and ESXi, written under
/// `names`, with the `firmware` rows of that product.
const fn writer(names: &'static [&'static str], firmware: &'static [Row<Boot>]) -> TargetMapping {
    TargetMapping {
        names,
        controllers: &CONTROLLERS,
        nics: &NICS,
        firmware,
        guest: &[],
        os: "guestOS: VMware id of src/vm/guest_os.rs",
        notes: NOTES,
    }
}

/// What the Workstation/Fusion writer does with each model device.
pub static WRITE_HOSTED: TargetMapping = writer(&["vmx"], &FIRMWARE_HOSTED);

/// What the ESXi writer does with each model device.
pub static WRITE_ESXI: TargetMapping = writer(&["esxi-vmx"], &FIRMWARE_ESXI);

static READ_CONTROLLERS: [ReadRow<K>; 7] = [
    read("`ide`N:M", K::Ide, VMX),
    read("`sata`N:M", K::Sata, VMX),
    read("`nvme`N:M", K::Nvme, VMX),
    read(
        "scsiN.virtualDev = `lsilogic` (or absent, with a warning)",
        K::Scsi(S::LsiLogic),
        VMX,
    ),
    read("scsiN.virtualDev = `lsisas1068`", K::Scsi(S::LsiSas), VMX),
    read("scsiN.virtualDev = `pvscsi`", K::Scsi(S::Pvscsi), VMX),
    read("scsiN.virtualDev = `buslogic`", K::Scsi(S::BusLogic), VMX),
];

static READ_NICS: [ReadRow<N>; 4] = [
    read("ethernetN.virtualDev = `e1000`", N::E1000, VMX),
    read("ethernetN.virtualDev = `e1000e`", N::E1000e, VMX),
    read("ethernetN.virtualDev = `vmxnet3`", N::Vmxnet3, VMX),
    read(
        "ethernetN.virtualDev = `vlance` (or absent, with a warning)",
        N::PcNet,
        VMX,
    ),
];

static READ_FIRMWARE: [ReadRow<Boot>; 4] = [
    read("no firmware key, or firmware = \"bios\"", Boot::Bios, VMX),
    read("firmware = \"efi\"", Boot::Uefi, VMX),
    read(
        "firmware = \"efi\", uefi.secureBoot.enabled = \"TRUE\"",
        Boot::SecureBoot,
        EFI,
    ),
    read("vtpm.present = \"TRUE\"", Boot::TpmUefi, VTPM),
];

/// What the .vmx reader makes of each setting.
pub static READ: SourceMapping = SourceMapping {
    names: &["vmx", "esxi-vmx"],
    kinds: "vmx (Workstation), vmx (ESXi)",
    controllers: &READ_CONTROLLERS,
    nics: &READ_NICS,
    other_nics: &[],
    firmware: &READ_FIRMWARE,
    os: "guestOS, read through src/vm/guest_os.rs",
};

/// The model's controller for a VMware bus prefix (`ide`, `sata`, `nvme`) or SCSI
/// `virtualDev` (by [`READ`]).
pub fn controller_named(token: &str) -> Option<K> {
    READ.controller_named(token)
}
