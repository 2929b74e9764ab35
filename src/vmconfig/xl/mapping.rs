//! The device mapping between the VM model and a Xen xl.cfg (HVM), each way.
//!
//! A Xen HVM guest sees its disks through emulated IDE (xvda to xvdd) until it has the Xen PV
//! drivers, and Xen emulates two NICs, rtl8139 and e1000; everything else becomes e1000.

use crate::migrate::mapping::{
    Adapter, Boot, Bus, Guest, ReadRow, Row, SourceMapping, TargetMapping, read, row,
};
use crate::vm::{ControllerKind as K, NicModel as N, ScsiModel as S};

const XL_CFG: &str = "https://xenbits.xen.org/docs/unstable/man/xl.cfg.5.html";
const XL_DISK: &str = "https://xenbits.xen.org/docs/unstable/man/xl-disk-configuration.5.html";
const XL_NET: &str = "https://xenbits.xen.org/docs/unstable/man/xl-network-configuration.5.html";
const WIN_PV: &str = "https://xenproject.org/windows-pv-drivers/";

static CONTROLLERS: [Row<Bus>; 2] = [
    // Hyper-V enlightenments too (viridian = 1): xl.cfg(5) recommends them for Windows.
    row(
        Guest::Windows,
        Bus::Any,
        "xvdX (qdisk), viridian = 1",
        Some(
            "Windows guest: disks and NICs are emulated (IDE, e1000) until the Xen PV drivers (XenServer/XCP-ng VM Tools or the Xen Project's win-pv drivers) are installed",
        ),
        WIN_PV,
    ),
    row(Guest::Any, Bus::Any, "xvdX (qdisk)", None, XL_DISK),
];

/// Why a NIC model became e1000.
pub const NIC_EMULATED: &str = "Xen HVM emulates e1000 and rtl8139; guests with Xen PV drivers use the paravirtual NIC instead";

static NICS: [Row<Adapter>; 3] = [
    row(Guest::Any, Adapter::Is(N::Rtl8139), "rtl8139", None, XL_NET),
    row(Guest::Any, Adapter::Is(N::E1000), "e1000", None, XL_NET),
    row(
        Guest::Any,
        Adapter::Any,
        "e1000",
        Some(NIC_EMULATED),
        XL_NET,
    ),
];

const NO_TPM: &str =
    "the TPM is not carried: a Xen vTPM needs a vTPM stub domain set up on the host";

static FIRMWARE: [Row<Boot>; 5] = [
    row(
        Guest::Any,
        Boot::Bios,
        "(bios not written: SeaBIOS)",
        None,
        XL_CFG,
    ),
    // bios= is understood by every xl since 4.2; firmware="uefi" only by newer ones.
    row(Guest::Any, Boot::Uefi, "bios = \"ovmf\"", None, XL_CFG),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "bios = \"ovmf\"",
        Some(
            "Secure Boot is not carried: Xen's OVMF has no Secure Boot; the guest boots with it off",
        ),
        XL_CFG,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "(not written)",
        Some(NO_TPM),
        XL_CFG,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "(not written)",
        Some(NO_TPM),
        XL_CFG,
    ),
];

/// What the xl.cfg writer does with each model device.
pub static WRITE: TargetMapping = TargetMapping {
    names: &["xen", "xl"],
    controllers: &CONTROLLERS,
    nics: &NICS,
    firmware: &FIRMWARE,
    guest: &[],
    os: "(not written: xl.cfg has no guest OS id)",
    notes: "Every disk is an xvdX qcow2 disk in the source's order, whatever its controller; NICs go on bridge xenbr0.",
};

static READ_CONTROLLERS: [ReadRow<K>; 4] = [
    read("vdev `hd`X", K::Ide, XL_DISK),
    read("vdev `xvda-xvdd` (the emulated IDE disks)", K::Ide, XL_DISK),
    read("vdev `xvde+` (PV only)", K::Sata, XL_DISK),
    read("vdev `sd`X", K::Scsi(S::LsiLogic), XL_DISK),
];

static READ_NICS: [ReadRow<N>; 7] = [
    read("vif model=`rtl8139` (or none, on HVM)", N::Rtl8139, XL_CFG),
    read("vif model=`e1000`", N::E1000, XL_NET),
    read("vif model=`e1000e`", N::E1000e, XL_NET),
    read("vif model=`virtio-net`", N::Virtio, XL_NET),
    read("vif model=`virtio`", N::Virtio, XL_NET),
    read("vif model=`vmxnet3`", N::Vmxnet3, XL_NET),
    read("vif model=`pcnet`", N::PcNet, XL_NET),
];

static READ_FIRMWARE: [ReadRow<Boot>; 2] = [
    read(
        "firmware or bios = bios, seabios, rombios (or none)",
        Boot::Bios,
        XL_CFG,
    ),
    read("firmware or bios = uefi, ovmf", Boot::Uefi, XL_CFG),
];

/// What the xl.cfg reader makes of each setting.
pub static READ: SourceMapping = SourceMapping {
    names: &["xl", "xen"],
    kinds: "xl.cfg",
    controllers: &READ_CONTROLLERS,
    nics: &READ_NICS,
    other_nics: &[read(
        "vif of a PV or PVH guest, or type=vif",
        "xen-netfront",
        XL_NET,
    )],
    firmware: &READ_FIRMWARE,
    os: "(none: xl.cfg has no guest OS id)",
};
