//! The device mapping between the VM model and an XVA (XAPI's `ova.xml`), each way.
//!
//! Xen gives a guest its disks as paravirtual block devices (xvda ...); what an HVM guest
//! sees before its PV drivers load is QEMU's emulated IDE for userdevice 0 to 3. XAPI picks
//! one emulated NIC model for every VIF (`platform:nic_type`).

use crate::migrate::mapping::{
    Adapter, Boot, Bus, Guest, ReadRow, Row, SourceMapping, TargetMapping, read, row,
};
use crate::vm::{ControllerKind as K, NicModel as N};

const XVA: &str = "packages.md: XVA (XenServer / XCP-ng export, \"xe vm-export\")";
const XAPI_VM: &str = "https://xapi-project.github.io/xen-api/classes/vm.html";
const XAPI_VBD: &str = "https://xapi-project.github.io/xen-api/classes/vbd.html";

static CONTROLLERS: [Row<Bus>; 1] = [row(
    Guest::Any,
    Bus::Any,
    "VBD userdevice N (xvdX; emulated IDE for 0-3 until the PV drivers load)",
    None,
    XAPI_VBD,
)];

/// What a NIC of another model becomes.
pub const NICS_LOST: &str = "NIC models are not carried: XAPI gives every VIF its own emulated NIC (and a PV netfront once the guest's Xen drivers load)";

static NICS: [Row<Adapter>; 3] = [
    row(
        Guest::Any,
        Adapter::Is(N::E1000),
        "e1000 (platform:nic_type, when every NIC is e1000; else rtl8139)",
        None,
        XAPI_VM,
    ),
    row(
        Guest::Any,
        Adapter::Is(N::Rtl8139),
        "rtl8139 (QEMU's default)",
        None,
        XAPI_VM,
    ),
    row(
        Guest::Any,
        Adapter::Any,
        "rtl8139 (QEMU's default)",
        Some(NICS_LOST),
        XAPI_VM,
    ),
];

const NO_TPM: &str = "the VM's TPM is not carried: an XVA holds no vTPM; add one with xe vtpm-create (its contents, such as BitLocker keys, are lost)";

static FIRMWARE: [Row<Boot>; 5] = [
    row(
        Guest::Any,
        Boot::Bios,
        "HVM_boot_params firmware=bios",
        None,
        XAPI_VM,
    ),
    row(
        Guest::Any,
        Boot::Uefi,
        "HVM_boot_params firmware=uefi, platform secureboot=false",
        None,
        XAPI_VM,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "HVM_boot_params firmware=uefi, platform secureboot=true",
        None,
        XAPI_VM,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "(not written)",
        Some(NO_TPM),
        XAPI_VM,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "(not written)",
        Some(NO_TPM),
        XAPI_VM,
    ),
];

/// What the XVA writer does with each model device.
pub static WRITE: TargetMapping = TargetMapping {
    names: &["xenserver", "xcp-ng"],
    controllers: &CONTROLLERS,
    nics: &NICS,
    firmware: &FIRMWARE,
    guest: &[],
    os: "(no OS id: XAPI keeps the guest's own report)",
    notes: "The boot disk takes userdevice 0.",
};

static READ_CONTROLLERS: [ReadRow<K>; 2] = [
    read("VBD userdevice 0-3 (QEMU's emulated IDE)", K::Ide, XVA),
    read("VBD userdevice 4 and up (PV only)", K::Sata, XVA),
];

static READ_NICS: [ReadRow<N>; 2] = [
    read("VIF with platform:nic_type=`e1000`", N::E1000, XAPI_VM),
    read(
        "VIF, no nic_type (QEMU's default, `rtl8139`)",
        N::Rtl8139,
        XAPI_VM,
    ),
];

static READ_FIRMWARE: [ReadRow<Boot>; 4] = [
    read(
        "HVM_boot_params firmware=bios (or none)",
        Boot::Bios,
        XAPI_VM,
    ),
    read("HVM_boot_params firmware=uefi", Boot::Uefi, XAPI_VM),
    read(
        "firmware=uefi, platform secureboot=true (auto is read as off)",
        Boot::SecureBoot,
        XAPI_VM,
    ),
    read("a VTPM", Boot::TpmUefi, XAPI_VM),
];

/// What the XVA reader makes of each record.
pub static READ: SourceMapping = SourceMapping {
    names: &["xva", "xenserver"],
    kinds: "XVA",
    controllers: &READ_CONTROLLERS,
    nics: &READ_NICS,
    other_nics: &[],
    firmware: &READ_FIRMWARE,
    os: "(none: the guest's own report, when the export has it)",
};

/// The model NIC of XAPI's `platform:nic_type` (by [`READ`]).
pub fn nic_model(nic_type: Option<&str>) -> N {
    nic_type
        .and_then(|t| READ.nic_named(t))
        .unwrap_or(N::Rtl8139)
}

/// The model controller of a VBD's userdevice (by [`READ`]).
pub fn controller(userdevice: u32) -> K {
    READ.controllers[usize::from(userdevice >= 4)].model
}

/// Where the disk of VBD `userdevice` goes in the model: its controller and unit.
///
/// Xen presents a guest's disks as its own paravirtual block devices (xvda ...), which no
/// other hypervisor has; the model has no such controller. What an HVM guest sees before its
/// PV drivers load is QEMU's emulated IDE, with userdevice 0-3 as the primary and secondary
/// master and slave: that is the faithful place for them, and the one every target can boot
/// from. Disks from userdevice 4 exist only as PV devices; they go on SATA (AHCI), which every
/// current guest has a driver for.
pub fn place(userdevice: u32) -> (crate::vm::Controller, u32) {
    let ud = userdevice;
    let controller = crate::vm::Controller {
        kind: controller(ud),
        index: if ud < 4 { ud / 2 } else { 0 },
    };
    (controller, if ud < 4 { ud % 2 } else { ud - 4 })
}
