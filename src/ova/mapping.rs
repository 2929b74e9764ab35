//! The device mapping of the OVF dialects diskferry writes: VMware's (vSphere, ESXi,
//! Workstation, a plain OVF folder), VirtualBox's and XenCenter's.

use super::descriptor::Dialect;
use crate::migrate::mapping::{Adapter, Boot, Bus, Guest, Row, TargetMapping, row};
use crate::vm::{ControllerKind as K, NicModel as N, ScsiModel as S};

const OVF: &str = "packages.md: OVF / OVA";
const VSPHERE_OVF: &str = "https://techdocs.broadcom.com/us/en/vmware-cis/vsphere/vsphere/8-0/vsphere-virtual-machine-administration-guide-8-0/deploying-ovf-templatesvsphere-vm-admin.html";
const VBOX_OVF: &str = "https://www.virtualbox.org/manual/ch01.html#ovf";
const XEN_OVF: &str =
    "https://docs.xenserver.com/en-us/xencenter/current-release/vms-importexport-ovf.html";

static VMWARE_CONTROLLERS: [Row<Bus>; 8] = [
    row(Guest::Any, Bus::Is(K::Ide), "IDE", None, OVF),
    row(Guest::Any, Bus::Is(K::Sata), "vmware.sata.ahci", None, OVF),
    row(
        Guest::Any,
        Bus::Is(K::Nvme),
        "vmware.nvme.controller",
        None,
        VSPHERE_OVF,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::LsiLogic)),
        "lsilogic",
        None,
        OVF,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::LsiSas)),
        "lsilogicsas",
        None,
        OVF,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::Pvscsi)),
        "VirtualSCSI",
        None,
        OVF,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::BusLogic)),
        "buslogic",
        None,
        OVF,
    ),
    row(
        Guest::Any,
        Bus::Any,
        "lsilogicsas",
        Some(
            "its disks go on an LSI Logic SAS controller (the guest needs its driver, which Windows and Linux have)",
        ),
        OVF,
    ),
];

static VMWARE_NICS: [Row<Adapter>; 5] = [
    row(Guest::Any, Adapter::Is(N::E1000), "E1000", None, OVF),
    row(
        Guest::Any,
        Adapter::Is(N::E1000e),
        "E1000e",
        None,
        VSPHERE_OVF,
    ),
    row(Guest::Any, Adapter::Is(N::Vmxnet3), "VmxNet3", None, OVF),
    row(Guest::Any, Adapter::Is(N::PcNet), "PCNet32", None, OVF),
    row(
        Guest::Any,
        Adapter::Any,
        "VmxNet3",
        Some("written as vmxnet3 (VMware Tools or a recent Linux kernel drives it)"),
        OVF,
    ),
];

const VMWARE_TPM: &str =
    "the virtual TPM is not carried (vSphere adds a vTPM only after import, with a key provider)";

static VMWARE_FIRMWARE: [Row<Boot>; 5] = [
    row(
        Guest::Any,
        Boot::Bios,
        "(no firmware Config: BIOS)",
        None,
        OVF,
    ),
    row(Guest::Any, Boot::Uefi, "vmw:Config firmware=efi", None, OVF),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "vmw:Config firmware=efi, uefi.secureBoot.enabled=true",
        None,
        VSPHERE_OVF,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "(not written)",
        Some(VMWARE_TPM),
        VSPHERE_OVF,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "(not written)",
        Some(VMWARE_TPM),
        VSPHERE_OVF,
    ),
];

const VMWARE_NOTES: &str = "Targets are RASD ResourceSubTypes (ResourceType 5 IDE, 6 SCSI, 20 SATA and NVMe, 10 NIC); VirtualSystemType is the oldest vmx-NN with every feature used.";

/// VMware's dialect: an OVA for vSphere, ESXi and Workstation, and a plain OVF folder.
pub static VMWARE: TargetMapping = TargetMapping {
    names: &["vsphere", "esxi", "workstation", "ovf"],
    controllers: &VMWARE_CONTROLLERS,
    nics: &VMWARE_NICS,
    firmware: &VMWARE_FIRMWARE,
    guest: &[],
    os: "OperatingSystemSection: CIM id and vmw:osType of src/vm/guest_os.rs",
    notes: VMWARE_NOTES,
};

static VBOX_CONTROLLERS: [Row<Bus>; 6] = [
    row(Guest::Any, Bus::Is(K::Ide), "PIIX4", None, VBOX_OVF),
    row(Guest::Any, Bus::Is(K::Sata), "AHCI", None, VBOX_OVF),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::LsiLogic)),
        "lsilogic",
        None,
        VBOX_OVF,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::LsiSas)),
        "lsilogicsas",
        None,
        VBOX_OVF,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::BusLogic)),
        "buslogic",
        None,
        VBOX_OVF,
    ),
    row(
        Guest::Any,
        Bus::Any,
        "AHCI",
        Some("its disks go on SATA (AHCI)"),
        VBOX_OVF,
    ),
];

static VBOX_NICS: [Row<Adapter>; 4] = [
    row(Guest::Any, Adapter::Is(N::PcNet), "PCNet32", None, VBOX_OVF),
    row(Guest::Any, Adapter::Is(N::Virtio), "virtio", None, VBOX_OVF),
    row(Guest::Any, Adapter::Is(N::E1000), "E1000", None, VBOX_OVF),
    row(
        Guest::Any,
        Adapter::Any,
        "E1000",
        Some("written as an Intel PRO/1000 (E1000)"),
        VBOX_OVF,
    ),
];

static VBOX_FIRMWARE: [Row<Boot>; 5] = [
    row(Guest::Any, Boot::Bios, "(BIOS)", None, VBOX_OVF),
    row(
        Guest::Any,
        Boot::Uefi,
        "vbox:Machine Firmware type=\"EFI\"",
        None,
        VBOX_OVF,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "vbox:Machine Firmware type=\"EFI\"",
        Some(
            "Secure Boot lives in VirtualBox's NVRAM, not its settings: enable it after registering (Settings > System > Enable Secure Boot)",
        ),
        VBOX_OVF,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "vbox:Machine TrustedPlatformModule type=\"v2_0\"",
        None,
        VBOX_OVF,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "vbox:Machine TrustedPlatformModule type=\"v2_0\"",
        None,
        VBOX_OVF,
    ),
];

/// VirtualBox's dialect (the VirtualBox machine section carries what the items cannot).
pub static VIRTUALBOX: TargetMapping = TargetMapping {
    names: &["virtualbox"],
    controllers: &VBOX_CONTROLLERS,
    nics: &VBOX_NICS,
    firmware: &VBOX_FIRMWARE,
    guest: &[],
    os: "OperatingSystemSection CIM id; vbox:Machine OSType of src/vm/guest_os.rs",
    notes: "The vbox:Machine section is written by the .vbox writer (see target virtualbox-vbox) with the controllers the items have.",
};

const XEN_NICS_LOST: &str = "NIC models are not carried: XenCenter's OVF import gives every VIF XenServer's default emulated NIC";

static XEN_CONTROLLERS: [Row<Bus>; 1] = [row(Guest::Any, Bus::Any, "IDE", None, XEN_OVF)];

static XEN_NICS: [Row<Adapter>; 1] = [row(
    Guest::Any,
    Adapter::Any,
    "(no model: XenServer's default)",
    Some(XEN_NICS_LOST),
    XEN_OVF,
)];

const XEN_TPM: &str = "the virtual TPM is not carried by this OVF dialect";

static XEN_FIRMWARE: [Row<Boot>; 5] = [
    row(
        Guest::Any,
        Boot::Bios,
        "HVM_boot_params order=dc;firmware=bios",
        None,
        XEN_OVF,
    ),
    row(
        Guest::Any,
        Boot::Uefi,
        "HVM_boot_params order=dc;firmware=uefi",
        None,
        XEN_OVF,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "HVM_boot_params order=dc;firmware=uefi",
        None,
        XEN_OVF,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "(not written)",
        Some(XEN_TPM),
        XEN_OVF,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "(not written)",
        Some(XEN_TPM),
        XEN_OVF,
    ),
];

/// XenCenter's dialect (`--to xenserver` with a destination named `*.ova`).
pub static XENSERVER: TargetMapping = TargetMapping {
    names: &["xenserver.ova", "xcp-ng.ova"],
    controllers: &XEN_CONTROLLERS,
    nics: &XEN_NICS,
    firmware: &XEN_FIRMWARE,
    guest: &[],
    os: "OperatingSystemSection CIM id of src/vm/guest_os.rs",
    notes: "",
};

/// The table of a dialect.
pub fn of(dialect: Dialect) -> &'static TargetMapping {
    match dialect {
        Dialect::Vmware => &VMWARE,
        Dialect::VirtualBox => &VIRTUALBOX,
        Dialect::XenServer => &XENSERVER,
    }
}

/// The RASD ResourceType and ResourceSubType of a controller row's target.
pub fn rasd(target: &'static str) -> (u32, Option<&'static str>) {
    match target {
        "IDE" => (5, None),
        "PIIX4" => (5, Some(target)),
        "AHCI" | "vmware.sata.ahci" | "vmware.nvme.controller" => (20, Some(target)),
        _ => (6, Some(target)),
    }
}
