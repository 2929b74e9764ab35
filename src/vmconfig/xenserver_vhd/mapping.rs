//! The device mapping of `--to xenserver-vhd`: VHDs for a file SR and the `xe` commands
//! that make the VM around them.

use crate::migrate::mapping::{Adapter, Boot, Bus, Guest, Row, TargetMapping, row};

const XE: &str = "https://docs.xenserver.com/en-us/xenserver/8/command-line-interface.html";
const XAPI_VM: &str = "https://xapi-project.github.io/xen-api/classes/vm.html";

static CONTROLLERS: [Row<Bus>; 1] = [row(
    Guest::Any,
    Bus::Any,
    "xe vbd-create device=N (the boot disk 0)",
    None,
    XE,
)];

static NICS: [Row<Adapter>; 1] = [row(
    Guest::Any,
    Adapter::Any,
    "xe vif-create (XenServer's default emulated NIC)",
    None,
    XE,
)];

const NO_TPM: &str =
    "the VM's TPM is not carried: add one with xe vtpm-create vm-uuid=$VM (its contents are lost)";

static FIRMWARE: [Row<Boot>; 5] = [
    row(
        Guest::Any,
        Boot::Bios,
        "(the template's BIOS)",
        None,
        XAPI_VM,
    ),
    row(
        Guest::Any,
        Boot::Uefi,
        "HVM-boot-params:firmware=uefi, platform:secureboot=false",
        None,
        XAPI_VM,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "HVM-boot-params:firmware=uefi, platform:secureboot=true",
        None,
        XAPI_VM,
    ),
    row(Guest::Any, Boot::TpmUefi, "(not written)", Some(NO_TPM), XE),
    row(Guest::Any, Boot::TpmBios, "(not written)", Some(NO_TPM), XE),
];

/// What the xe commands make of each model device.
pub static WRITE: TargetMapping = TargetMapping {
    names: &["xenserver-vhd"],
    controllers: &CONTROLLERS,
    nics: &NICS,
    firmware: &FIRMWARE,
    guest: &[],
    os: "(not written: template 'Other install media')",
    notes: "",
};
