//! The device mapping between the VM model and a VirtualBox machine, each way.
//!
//! VirtualBox has IDE, SATA, three SCSI/SAS controllers, NVMe and virtio-scsi; what it lacks
//! (VMware's paravirtual SCSI, virtio-blk) goes to the nearest controller every guest (or a
//! guest with virtio) drives. A NIC model VirtualBox lacks becomes the Intel PRO/1000 MT
//! Desktop, which every guest drives.

use crate::migrate::mapping::{
    Adapter, Boot, Bus, Guest, ReadRow, Row, SourceMapping, TargetMapping, read, row,
};
use crate::vm::{ControllerKind as K, NicModel as N, ScsiModel as S};

const XSD: &str =
    "https://www.virtualbox.org/browser/vbox/trunk/src/VBox/Main/xml/VirtualBox-settings.xsd";
const STORAGE: &str = "https://www.virtualbox.org/manual/ch05.html#harddiskcontrollers";
const NET: &str = "https://www.virtualbox.org/manual/ch06.html#nichardware";
const EFI: &str = "https://www.virtualbox.org/manual/ch03.html#efi";

static CONTROLLERS: [Row<Bus>; 9] = [
    row(Guest::Any, Bus::Is(K::Ide), "PIIX4", None, STORAGE),
    row(Guest::Any, Bus::Is(K::Sata), "AHCI", None, STORAGE),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::LsiLogic)),
        "LsiLogic",
        None,
        STORAGE,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::BusLogic)),
        "BusLogic",
        None,
        STORAGE,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::LsiSas)),
        "LsiLogicSas",
        None,
        STORAGE,
    ),
    row(Guest::Any, Bus::Is(K::Nvme), "NVMe", None, STORAGE),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::VirtioScsi)),
        "VirtioSCSI",
        None,
        STORAGE,
    ),
    row(
        Guest::Any,
        Bus::Is(K::VirtioBlk),
        "VirtioSCSI",
        Some(
            "VirtualBox has no virtio-blk: the disks go on virtio-scsi (a Linux guest drives it; Windows needs the vioscsi driver)",
        ),
        STORAGE,
    ),
    row(
        Guest::Any,
        Bus::Is(K::Scsi(S::Pvscsi)),
        "LsiLogicSas",
        Some(
            "VirtualBox has no VMware paravirtual SCSI: the disks go on an LSI Logic SAS controller (Windows and Linux drive it)",
        ),
        STORAGE,
    ),
];

static NICS: [Row<Adapter>; 4] = [
    row(Guest::Any, Adapter::Is(N::PcNet), "Am79C973", None, NET),
    row(Guest::Any, Adapter::Is(N::E1000), "82540EM", None, NET),
    row(Guest::Any, Adapter::Is(N::Virtio), "virtio", None, NET),
    // A model named by VirtualBox's own adapter type (super::ADAPTER_TYPES) keeps it.
    row(
        Guest::Any,
        Adapter::Any,
        "82540EM",
        Some("written as an Intel PRO/1000 MT Desktop (82540EM), which every guest drives"),
        NET,
    ),
];

static FIRMWARE: [Row<Boot>; 5] = [
    row(
        Guest::Any,
        Boot::Bios,
        "(Firmware not written: BIOS)",
        None,
        XSD,
    ),
    row(Guest::Any, Boot::Uefi, "Firmware type=\"EFI\"", None, EFI),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "Firmware type=\"EFI\"",
        Some(
            "Secure Boot lives in VirtualBox's NVRAM, not its settings: enable it after registering (Settings > System > Enable Secure Boot)",
        ),
        EFI,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "TrustedPlatformModule type=\"v2_0\"",
        None,
        XSD,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "TrustedPlatformModule type=\"v2_0\"",
        None,
        XSD,
    ),
];

/// What the .vbox writer does with each model device.
pub static WRITE: TargetMapping = TargetMapping {
    names: &["virtualbox-vbox", "vbox"],
    controllers: &CONTROLLERS,
    nics: &NICS,
    firmware: &FIRMWARE,
    guest: &[],
    os: "OSType: VirtualBox id of src/vm/guest_os.rs",
    notes: "Targets are StorageController types (one controller per VirtualBox bus) and Adapter types; a NIC model named by one of VirtualBox's own adapter types keeps it.",
};

static READ_CONTROLLERS: [ReadRow<K>; 9] = [
    read("StorageController type=`PIIX3`", K::Ide, XSD),
    read("StorageController type=`PIIX4`", K::Ide, XSD),
    read("StorageController type=`ICH6`", K::Ide, XSD),
    read("StorageController type=`AHCI`", K::Sata, XSD),
    read(
        "StorageController type=`LsiLogic`",
        K::Scsi(S::LsiLogic),
        XSD,
    ),
    read(
        "StorageController type=`BusLogic`",
        K::Scsi(S::BusLogic),
        XSD,
    ),
    read(
        "StorageController type=`LsiLogicSas`",
        K::Scsi(S::LsiSas),
        XSD,
    ),
    read("StorageController type=`NVMe`", K::Nvme, XSD),
    read(
        "StorageController type=`VirtioSCSI`",
        K::Scsi(S::VirtioScsi),
        XSD,
    ),
];

static READ_NICS: [ReadRow<N>; 7] = [
    read("Adapter type=`Am79C970A`", N::PcNet, NET),
    read("Adapter type=`Am79C973` (or none)", N::PcNet, NET),
    read("Adapter type=`Am79C960`", N::PcNet, NET),
    read("Adapter type=`82540EM`", N::E1000, NET),
    read("Adapter type=`82543GC`", N::E1000, NET),
    read("Adapter type=`82545EM`", N::E1000, NET),
    read("Adapter type=`virtio`", N::Virtio, NET),
];

static READ_FIRMWARE: [ReadRow<Boot>; 3] = [
    read("no Firmware, or type=\"BIOS\"", Boot::Bios, XSD),
    read("Firmware type=\"EFI*\"", Boot::Uefi, EFI),
    read(
        "TrustedPlatformModule type other than None",
        Boot::TpmUefi,
        XSD,
    ),
];

/// What the .vbox reader makes of each setting.
pub static READ: SourceMapping = SourceMapping {
    names: &["vbox", "virtualbox-vbox"],
    kinds: "vbox",
    controllers: &READ_CONTROLLERS,
    nics: &READ_NICS,
    other_nics: &[],
    firmware: &READ_FIRMWARE,
    os: "OSType, read through src/vm/guest_os.rs",
};
