//! The device mapping of the cloud targets. A cloud chooses the VM's devices itself (AWS
//! Nitro's ENA and NVMe, Azure's synthetic Hyper-V devices, Compute Engine's virtio-scsi and
//! gVNIC): the tables say what is written (the disk's VMDK adapter type for AWS), what the
//! firmware becomes and what the guest needs before it boots there.

use crate::migrate::mapping::{Adapter, Boot, Bus, Guest, Row, TargetMapping, row};
use crate::vm::{ControllerKind as K, ScsiModel as S};

const AWS_IMPORT: &str =
    "https://docs.aws.amazon.com/vm-import/latest/userguide/prerequisites.html";
const AWS_UEFI: &str =
    "https://docs.aws.amazon.com/vm-import/latest/userguide/vmie_prereqs.html#vmimport-boot-modes";
const AWS_TPM: &str = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/nitrotpm.html";
const AZURE_LINUX: &str =
    "https://learn.microsoft.com/en-us/azure/virtual-machines/linux/create-upload-generic";
const AZURE_TL: &str = "https://learn.microsoft.com/en-us/azure/virtual-machines/trusted-launch";
const AZURE_GEN2: &str = "https://learn.microsoft.com/en-us/azure/virtual-machines/generation-2";
const GCP_IMPORT: &str = "https://cloud.google.com/compute/docs/import/import-existing-image";
const GCP_SHIELDED: &str = "https://cloud.google.com/compute/shielded-vm/docs/shielded-vm";
const GCP_UEFI: &str =
    "https://cloud.google.com/compute/docs/images/create-custom#guest-os-features";

static AWS_CONTROLLERS: [Row<Bus>; 5] = [
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::BusLogic)),
        "VMDK adapter_type=buslogic",
        None,
        AWS_IMPORT,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Ide),
        "VMDK adapter_type=ide",
        None,
        AWS_IMPORT,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Sata),
        "VMDK adapter_type=ide",
        None,
        AWS_IMPORT,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Nvme),
        "VMDK adapter_type=ide",
        None,
        AWS_IMPORT,
    ),
    row(
        Guest::Any,
        Bus::Any,
        "VMDK adapter_type=lsilogic",
        None,
        AWS_IMPORT,
    ),
];

/// What every cloud does with the VM's NICs (the count is in the writer's warning).
static CLOUD_NICS: [Row<Adapter>; 1] = [row(
    Guest::Any,
    Adapter::Any,
    "(not carried: the cloud's own interface)",
    None,
    "packages.md: More targets",
)];

static AWS_FIRMWARE: [Row<Boot>; 5] = [
    row(
        Guest::Any,
        Boot::Bios,
        "(legacy BIOS boot mode)",
        None,
        AWS_UEFI,
    ),
    row(
        Guest::Any,
        Boot::Uefi,
        "import-image --boot-mode uefi",
        None,
        AWS_UEFI,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "import-image --boot-mode uefi",
        Some(
            "Secure Boot is not carried by VM Import: the AMI boots UEFI without it (register UEFI variables with the AMI afterwards to turn it on)",
        ),
        AWS_UEFI,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "(not written)",
        Some(
            "the TPM is not carried: NitroTPM is an AMI setting (--tpm-support v2.0 when registering)",
        ),
        AWS_TPM,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "(not written)",
        Some(
            "the TPM is not carried: NitroTPM is an AMI setting (--tpm-support v2.0 when registering)",
        ),
        AWS_TPM,
    ),
];

static AWS_GUEST: [Row<()>; 2] = [
    row(
        Guest::Windows,
        (),
        "VM Import installs ENA and NVMe drivers",
        Some(
            "Windows guest: VM Import installs the AWS drivers (ENA, NVMe) itself and needs a license choice: add --license-type BYOL or AWS to import-image",
        ),
        AWS_IMPORT,
    ),
    row(
        Guest::Any,
        (),
        "ENA and NVMe drivers (in current Linux kernels)",
        None,
        AWS_IMPORT,
    ),
];

/// `--to aws`.
pub static AWS: TargetMapping = TargetMapping {
    names: &["aws"],
    controllers: &AWS_CONTROLLERS,
    nics: &CLOUD_NICS,
    firmware: &AWS_FIRMWARE,
    guest: &AWS_GUEST,
    os: "import-image --platform: Windows or Linux by the guest's family (Linux, with a warning, when it is not known)",
    notes: "",
};

static AZURE_CONTROLLERS: [Row<Bus>; 1] = [row(
    Guest::Any,
    Bus::Any,
    "(attached by Azure)",
    None,
    AZURE_LINUX,
)];

/// Secure Boot and a TPM on Azure.
const TRUSTED_LAUNCH: &str = "Secure Boot and the TPM are Azure's Trusted Launch: add --security-type TrustedLaunch --enable-secure-boot true --enable-vtpm true to az vm create";

static AZURE_FIRMWARE: [Row<Boot>; 5] = [
    row(Guest::Any, Boot::Bios, "(Generation 1)", None, AZURE_GEN2),
    row(
        Guest::Any,
        Boot::Uefi,
        "--hyper-v-generation V2",
        None,
        AZURE_GEN2,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "--hyper-v-generation V2",
        Some(TRUSTED_LAUNCH),
        AZURE_TL,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "(not written)",
        Some(TRUSTED_LAUNCH),
        AZURE_TL,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "(not written)",
        Some(TRUSTED_LAUNCH),
        AZURE_TL,
    ),
];

static AZURE_GUEST: [Row<()>; 2] = [
    row(
        Guest::Linux,
        (),
        "Hyper-V drivers and the Azure Linux agent",
        Some(
            "Linux guest: Azure needs the Hyper-V drivers (hv_vmbus, hv_storvsc, hv_netvsc) in its initramfs and the Azure Linux agent or cloud-init installed before it boots there",
        ),
        AZURE_LINUX,
    ),
    row(
        Guest::Any,
        (),
        "(Windows has the Hyper-V drivers)",
        None,
        AZURE_LINUX,
    ),
];

/// `--to azure`.
pub static AZURE: TargetMapping = TargetMapping {
    names: &["azure"],
    controllers: &AZURE_CONTROLLERS,
    nics: &CLOUD_NICS,
    firmware: &AZURE_FIRMWARE,
    guest: &AZURE_GUEST,
    os: "--os-type: Windows or Linux by the guest's family (Linux, with a warning, when it is not known)",
    notes: "Secure Boot and a TPM give the Trusted Launch warning once.",
};

static GCP_CONTROLLERS: [Row<Bus>; 1] = [row(
    Guest::Any,
    Bus::Any,
    "(attached by Compute Engine)",
    None,
    GCP_IMPORT,
)];

/// Secure Boot and a TPM on Compute Engine.
const SHIELDED: &str = "Secure Boot and the vTPM are Shielded VM settings: add --shielded-secure-boot --shielded-vtpm to gcloud compute instances create";

static GCP_FIRMWARE: [Row<Boot>; 5] = [
    row(Guest::Any, Boot::Bios, "(BIOS)", None, GCP_UEFI),
    row(
        Guest::Any,
        Boot::Uefi,
        "--guest-os-features UEFI_COMPATIBLE",
        None,
        GCP_UEFI,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "--guest-os-features UEFI_COMPATIBLE",
        Some(SHIELDED),
        GCP_SHIELDED,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "(not written)",
        Some(SHIELDED),
        GCP_SHIELDED,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "(not written)",
        Some(SHIELDED),
        GCP_SHIELDED,
    ),
];

static GCP_GUEST: [Row<()>; 2] = [
    row(
        Guest::Linux,
        (),
        "virtio-scsi, gVNIC/virtio-net, google-guest-agent",
        Some(
            "Linux guest: Compute Engine needs the virtio-scsi and gVNIC/virtio-net drivers and the guest environment (google-guest-agent) installed, and a serial console helps debugging",
        ),
        GCP_IMPORT,
    ),
    row(Guest::Any, (), "(not checked)", None, GCP_IMPORT),
];

/// `--to gcp`.
pub static GCP: TargetMapping = TargetMapping {
    names: &["gcp"],
    controllers: &GCP_CONTROLLERS,
    nics: &CLOUD_NICS,
    firmware: &GCP_FIRMWARE,
    guest: &GCP_GUEST,
    os: "(not written: gcloud detects it)",
    notes: "Secure Boot and a TPM give the Shielded VM warning once.",
};

/// The Secure Boot / TPM warning of `table` for `vm`, once whichever of the two asks for it.
pub fn security_warning(table: &TargetMapping, vm: &crate::vm::Vm) -> Option<&'static str> {
    table
        .boot(vm)
        .and_then(|r| r.warning)
        .or_else(|| table.tpm(vm).and_then(|r| r.warning))
}
