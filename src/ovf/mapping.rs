//! What the OVF reader makes of each device (OVA and OVF packages, whatever their dialect:
//! VMware, VirtualBox, XenServer, COT).

use crate::migrate::mapping::{Boot, ReadRow, SourceMapping, read};
use crate::vm::{ControllerKind as K, NicModel as N, ScsiModel as S};

const OVF: &str = "packages.md: OVF / OVA";
const DSP0243: &str =
    "https://www.dmtf.org/sites/default/files/standards/documents/DSP0243_2.1.1.pdf";

static CONTROLLERS: [ReadRow<K>; 13] = [
    read("ResourceType 5", K::Ide, OVF),
    read("ResourceType 20 (or 1 naming sata or ahci)", K::Sata, OVF),
    read("ResourceType 20 or 1 naming nvme", K::Nvme, OVF),
    read(
        "ResourceType 6 `lsilogic` (or an unknown model, with a warning)",
        K::Scsi(S::LsiLogic),
        OVF,
    ),
    read("ResourceType 6 `lsilogicsas`", K::Scsi(S::LsiSas), OVF),
    read("ResourceType 6 `lsisas1068`", K::Scsi(S::LsiSas), OVF),
    read("ResourceType 6 `lsisas`", K::Scsi(S::LsiSas), OVF),
    read("ResourceType 6 `virtualscsi`", K::Scsi(S::Pvscsi), OVF),
    read("ResourceType 6 `pvscsi`", K::Scsi(S::Pvscsi), OVF),
    read("ResourceType 6 `buslogic`", K::Scsi(S::BusLogic), OVF),
    read(
        "ResourceType 6 `virtio-scsi`",
        K::Scsi(S::VirtioScsi),
        DSP0243,
    ),
    read(
        "ResourceType 6 `virtioscsi`",
        K::Scsi(S::VirtioScsi),
        DSP0243,
    ),
    read("ResourceType 6 `virtio`", K::Scsi(S::VirtioScsi), DSP0243),
];

static NICS: [ReadRow<N>; 14] = [
    read(
        "ResourceType 10 `e1000` (or no subtype, with a warning)",
        N::E1000,
        OVF,
    ),
    read("ResourceType 10 `e1000e`", N::E1000e, OVF),
    read("ResourceType 10 `vmxnet3`", N::Vmxnet3, OVF),
    read("ResourceType 10 `virtio`", N::Virtio, DSP0243),
    read("ResourceType 10 `virtio-net`", N::Virtio, DSP0243),
    read("ResourceType 10 `virtionet`", N::Virtio, DSP0243),
    read("ResourceType 10 `rtl8139`", N::Rtl8139, DSP0243),
    read("ResourceType 10 `pcnet32`", N::PcNet, OVF),
    read("ResourceType 10 `pcnet`", N::PcNet, OVF),
    read("ResourceType 10 `vlance`", N::PcNet, OVF),
    read("ResourceType 10 `am79c970a`", N::PcNet, OVF),
    read("ResourceType 10 `am79c973`", N::PcNet, OVF),
    read("ResourceType 10 `netvsc`", N::Netvsc, DSP0243),
    read("ResourceType 10 `hv_netvsc`", N::Netvsc, DSP0243),
];

static FIRMWARE: [ReadRow<Boot>; 4] = [
    read("no firmware setting", Boot::Bios, OVF),
    read(
        "vmw:Config firmware=efi, or a VirtualBox section's Firmware EFI",
        Boot::Uefi,
        OVF,
    ),
    read(
        "vmw:Config uefi.secureBoot.enabled=true",
        Boot::SecureBoot,
        OVF,
    ),
    read(
        "a VirtualBox section's TrustedPlatformModule",
        Boot::TpmUefi,
        OVF,
    ),
];

/// What the OVF reader makes of each item.
pub static READ: SourceMapping = SourceMapping {
    names: &["ovf", "ova"],
    kinds: "OVA (VMware), OVA (VirtualBox), OVF folder",
    controllers: &CONTROLLERS,
    nics: &NICS,
    other_nics: &[],
    firmware: &FIRMWARE,
    os: "OperatingSystemSection: vmw:osType or ovf:id (CIM), through src/vm/guest_os.rs",
};
