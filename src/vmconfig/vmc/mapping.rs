//! The device mapping between the VM model and a Virtual PC / Virtual Server .vmc, each way.
//!
//! Virtual PC emulates one machine: BIOS, IDE disks (Virtual Server adds an Adaptec SCSI
//! controller), DEC 21140 NICs. Everything is written on IDE and as the DEC 21140, which
//! every guest of that era drives.

use crate::migrate::mapping::{
    Adapter, Boot, Bus, Guest, ReadRow, Row, SourceMapping, TargetMapping, read, row,
};
use crate::vm::{ControllerKind as K, ScsiModel as S};

const VMC: &str = "packages.md: VM configurations (Virtual PC / Virtual Server .vmc)";
const VPC: &str = "https://learn.microsoft.com/en-us/previous-versions/windows/desktop/virtual/virtual-pc-and-virtual-server";

static CONTROLLERS: [Row<Bus>; 2] = [
    row(Guest::Any, Bus::Is(K::Ide), "ide_controller", None, VMC),
    row(
        Guest::Any,
        Bus::Any,
        "ide_controller",
        Some("the guest needs its IDE (ATA) driver enabled"),
        VMC,
    ),
];

static NICS: [Row<Adapter>; 1] = [row(
    Guest::Any,
    Adapter::Any,
    "ethernet_controller (DEC 21140)",
    None,
    VMC,
)];

static FIRMWARE: [Row<Boot>; 5] = [
    row(
        Guest::Any,
        Boot::Bios,
        "(BIOS, the only firmware)",
        None,
        VPC,
    ),
    row(
        Guest::Any,
        Boot::Uefi,
        "(BIOS)",
        Some(
            "the VM boots with UEFI, and Virtual PC has only a BIOS: the guest will not boot unless it also has a BIOS boot loader",
        ),
        VPC,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "(BIOS)",
        Some(
            "the VM boots with UEFI, and Virtual PC has only a BIOS: the guest will not boot unless it also has a BIOS boot loader",
        ),
        VPC,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "(not written)",
        Some("the VM's TPM is not carried: Virtual PC has none"),
        VPC,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "(not written)",
        Some("the VM's TPM is not carried: Virtual PC has none"),
        VPC,
    ),
];

/// What the .vmc writer does with each model device.
pub static WRITE: TargetMapping = TargetMapping {
    names: &["virtualpc", "vmc"],
    controllers: &CONTROLLERS,
    nics: &NICS,
    firmware: &FIRMWARE,
    guest: &[],
    os: "(not written: a .vmc has no guest OS id)",
    notes: "The boot disk goes to IDE 0:0 (its controller's warning is given for it alone), the others after it; at most 4 NICs, one processor.",
};

static READ_CONTROLLERS: [ReadRow<K>; 2] = [
    read("ide_adapter/ide_controller", K::Ide, VMC),
    // Virtual Server's Adaptec AIC-7870: the nearest model the VM model has.
    read("scsi_adapter (Adaptec AIC-7870)", K::Scsi(S::BusLogic), VMC),
];

static READ_FIRMWARE: [ReadRow<Boot>; 1] = [read("(always BIOS)", Boot::Bios, VPC)];

/// What the .vmc reader makes of each setting.
pub static READ: SourceMapping = SourceMapping {
    names: &["vmc", "virtualpc"],
    kinds: "vmc",
    controllers: &READ_CONTROLLERS,
    nics: &[],
    other_nics: &[read(
        "ethernet_adapter/ethernet_controller",
        "dec21140",
        VMC,
    )],
    firmware: &READ_FIRMWARE,
    os: "(none: a .vmc has no guest OS id)",
};
