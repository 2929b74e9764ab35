//! The device mapping between the VM model and Hyper-V, each way.
//!
//! Hyper-V places disks by generation, not by the source's controller: a Generation 1 VM
//! (BIOS) boots from IDE, a Generation 2 VM (UEFI) from synthetic SCSI. Its disks and NICs
//! are synthetic devices, which Windows drives out of the box and Linux through hv_storvsc and
//! hv_netvsc.

use crate::migrate::mapping::{
    Adapter, Boot, Bus, Guest, ReadRow, Row, SourceMapping, TargetMapping, read, row,
};
use crate::vm::{ControllerKind as K, NicModel as N, ScsiModel as S};

const HYPERV: &str = "packages.md: VM configurations (Hyper-V)";
const GENERATION: &str = "https://learn.microsoft.com/en-us/windows-server/virtualization/hyper-v/plan/should-i-create-a-generation-1-or-2-virtual-machine-in-hyper-v";
const LINUX: &str = "https://learn.microsoft.com/en-us/windows-server/virtualization/hyper-v/supported-linux-and-freebsd-virtual-machines-for-hyper-v-on-windows";
const FIRMWARE_DOC: &str =
    "https://learn.microsoft.com/en-us/powershell/module/hyper-v/set-vmfirmware";
const TPM_DOC: &str = "https://learn.microsoft.com/en-us/powershell/module/hyper-v/enable-vmtpm";

const PLACES: &str =
    "Generation 1: IDE 0:0, 0:1, then synthetic SCSI; Generation 2: synthetic SCSI";

static CONTROLLERS: [Row<Bus>; 2] = [
    row(Guest::Windows, Bus::Any, PLACES, None, GENERATION),
    row(
        Guest::Any,
        Bus::Any,
        PLACES,
        Some(
            "Hyper-V's synthetic disks and NICs need the guest's Hyper-V drivers (Linux: hv_storvsc, hv_netvsc, in the kernel since 3.x; other systems: check before migrating)",
        ),
        LINUX,
    ),
];

static NICS: [Row<Adapter>; 2] = [
    row(
        Guest::Any,
        Adapter::Is(N::Netvsc),
        "synthetic network adapter",
        None,
        HYPERV,
    ),
    row(
        Guest::Any,
        Adapter::Any,
        "synthetic network adapter",
        Some("the NIC model becomes a Hyper-V synthetic adapter"),
        LINUX,
    ),
];

static FIRMWARE: [Row<Boot>; 6] = [
    row(
        Guest::Any,
        Boot::Bios,
        "(New-VM -Generation 1)",
        None,
        GENERATION,
    ),
    row(
        Guest::Any,
        Boot::Uefi,
        "-EnableSecureBoot Off",
        None,
        FIRMWARE_DOC,
    ),
    row(
        Guest::Windows,
        Boot::SecureBoot,
        "-EnableSecureBoot On",
        None,
        FIRMWARE_DOC,
    ),
    // Linux guests boot through shim, signed by the third-party UEFI CA, not Microsoft's own.
    row(
        Guest::Any,
        Boot::SecureBoot,
        "-EnableSecureBoot On -SecureBootTemplate MicrosoftUEFICertificateAuthority",
        None,
        FIRMWARE_DOC,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "(not written)",
        Some(
            "the VM had a TPM: enable a virtual TPM with Set-VMKeyProtector -NewLocalKeyProtector and Enable-VMTPM before starting it",
        ),
        TPM_DOC,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "(not written)",
        Some("the VM had a TPM, which a Generation 1 (BIOS) VM cannot have: not carried"),
        TPM_DOC,
    ),
];

/// What the Hyper-V writer does with each model device.
pub static WRITE: TargetMapping = TargetMapping {
    names: &["hyperv"],
    controllers: &CONTROLLERS,
    nics: &NICS,
    firmware: &FIRMWARE,
    guest: &[],
    os: "(not written: New-VM takes no guest OS id)",
    notes: "UEFI makes a Generation 2 VM (Set-VMFirmware takes the firmware row's arguments), BIOS a Generation 1 VM; a Generation 1 boot disk not on IDE gets a warning that the guest needs its IDE driver.",
};

static READ_CONTROLLERS: [ReadRow<K>; 2] = [
    read("IDE controller", K::Ide, HYPERV),
    // The model has no entry for Hyper-V's synthetic SCSI (storvsc); SAS is the nearest: what
    // Windows guests drive elsewhere.
    read("synthetic SCSI controller", K::Scsi(S::LsiSas), HYPERV),
];

static READ_NICS: [ReadRow<N>; 1] = [read("synthetic network adapter", N::Netvsc, HYPERV)];

static READ_FIRMWARE: [ReadRow<Boot>; 3] = [
    read("Generation 1 (subtype 0)", Boot::Bios, GENERATION),
    read("Generation 2 (subtype 1)", Boot::Uefi, GENERATION),
    read(
        "Generation 2, secure_boot_enabled",
        Boot::SecureBoot,
        FIRMWARE_DOC,
    ),
];

/// What the Hyper-V reader makes of each setting.
pub static READ: SourceMapping = SourceMapping {
    names: &["hyperv"],
    kinds: "Hyper-V XML, .vmcx",
    controllers: &READ_CONTROLLERS,
    nics: &READ_NICS,
    other_nics: &[read(
        "legacy network adapter (DEC 21140)",
        "dec21140",
        HYPERV,
    )],
    firmware: &READ_FIRMWARE,
    os: "(none: the configuration has no guest OS id)",
};
