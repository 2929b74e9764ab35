//! The device mapping between the VM model and a libvirt domain (KVM/QEMU), each way.
//!
//! virtio is what KVM runs fastest, but a guest boots from a virtio disk only if it has the
//! driver: Linux and BSD have had it for years, Windows needs the virtio-win drivers installed
//! first, and an unknown guest is not guessed at. So Linux and BSD guests get virtio-blk disks
//! and virtio-net NICs, every other guest SATA disks and e1000e NICs (e1000 and rtl8139 stay
//! as they are, QEMU emulates them), with the controller row's warning naming the drivers to
//! install before switching to virtio.

use crate::migrate::mapping::{
    Adapter, Boot, Bus, Guest, ReadRow, Row, SourceMapping, TargetMapping, read, row,
};
use crate::vm::{ControllerKind as K, NicModel as N, ScsiModel as S};

const DOMAIN: &str = "https://libvirt.org/formatdomain.html";
const DISKS: &str = "https://libvirt.org/formatdomain.html#hard-drives-floppy-disks-cdroms";
const NICS: &str = "https://libvirt.org/formatdomain.html#setting-the-nic-model";
const BOOT: &str = "https://libvirt.org/formatdomain.html#bios-bootloader";
const TPM: &str = "https://libvirt.org/formatdomain.html#tpm-device";
const VIRTIO_WIN: &str = "https://github.com/virtio-win/kvm-guest-drivers-windows";

/// What the domain's disks and NICs become for a Windows guest.
pub const WINDOWS: &str = "Windows guest: disks on SATA and NICs as e1000e, which Windows drives without help; install the virtio-win drivers (viostor, vioscsi, NetKVM) in the guest, then switch the disks to bus='virtio' and the NICs to model type='virtio' for KVM's speed";
/// What they become for a guest whose system is not known.
pub const UNKNOWN: &str = "the guest operating system is not known: disks on SATA and NICs as e1000e, which most guests drive; if the guest has virtio drivers (virtio_blk, virtio_net), switch to virtio for speed";

static CONTROLLERS: [Row<Bus>; 3] = [
    row(Guest::LinuxOrBsd, Bus::Any, "virtio", None, DISKS),
    row(Guest::Windows, Bus::Any, "sata", Some(WINDOWS), VIRTIO_WIN),
    row(Guest::Any, Bus::Any, "sata", Some(UNKNOWN), DISKS),
];

static NICS_OUT: [Row<Adapter>; 4] = [
    row(Guest::LinuxOrBsd, Adapter::Any, "virtio", None, NICS),
    row(Guest::Any, Adapter::Is(N::E1000), "e1000", None, NICS),
    row(Guest::Any, Adapter::Is(N::Rtl8139), "rtl8139", None, NICS),
    row(Guest::Any, Adapter::Any, "e1000e", None, NICS),
];

static FIRMWARE: [Row<Boot>; 5] = [
    row(Guest::Any, Boot::Bios, "q35 machine, SeaBIOS", None, BOOT),
    row(
        Guest::Any,
        Boot::Uefi,
        "os firmware='efi', secure-boot and enrolled-keys off",
        None,
        BOOT,
    ),
    row(
        Guest::Any,
        Boot::SecureBoot,
        "os firmware='efi', secure-boot and enrolled-keys on, SMM on",
        None,
        BOOT,
    ),
    row(
        Guest::Any,
        Boot::TpmUefi,
        "tpm model='tpm-crb', emulator backend 2.0",
        None,
        TPM,
    ),
    row(
        Guest::Any,
        Boot::TpmBios,
        "tpm model='tpm-crb', emulator backend 2.0",
        None,
        TPM,
    ),
];

/// What the domain writer does with each model device.
pub static WRITE: TargetMapping = TargetMapping {
    names: &["kvm", "libvirt"],
    controllers: &CONTROLLERS,
    nics: &NICS_OUT,
    firmware: &FIRMWARE,
    guest: &[],
    os: "libosinfo id of src/vm/guest_os.rs (metadata libosinfo:os)",
    notes: "Every disk of the domain is on the one bus the controller row gives (vdX for virtio, sdX for SATA); the source's controllers and NIC models are kept in diskferry's own metadata so a VM moved on arrives as it left.",
};

static READ_CONTROLLERS: [ReadRow<K>; 10] = [
    read("disk target bus=`ide`", K::Ide, DISKS),
    read("disk target bus=`sata`", K::Sata, DISKS),
    read("disk target bus=`nvme`", K::Nvme, DISKS),
    read("disk target bus=`virtio`", K::VirtioBlk, DISKS),
    read(
        "bus='scsi', controller model=`lsilogic`",
        K::Scsi(S::LsiLogic),
        DOMAIN,
    ),
    read(
        "bus='scsi', controller model=`lsisas1068`",
        K::Scsi(S::LsiSas),
        DOMAIN,
    ),
    read(
        "bus='scsi', controller model=`lsisas1078`",
        K::Scsi(S::LsiSas),
        DOMAIN,
    ),
    read(
        "bus='scsi', controller model=`vmpvscsi`",
        K::Scsi(S::Pvscsi),
        DOMAIN,
    ),
    read(
        "bus='scsi', controller model=`buslogic`",
        K::Scsi(S::BusLogic),
        DOMAIN,
    ),
    read(
        "bus='scsi', controller model=`virtio-scsi` (or none)",
        K::Scsi(S::VirtioScsi),
        DOMAIN,
    ),
];

static READ_NICS: [ReadRow<N>; 9] = [
    read("model type=`e1000`", N::E1000, NICS),
    read("model type=`e1000e`", N::E1000e, NICS),
    read("model type=`vmxnet3`", N::Vmxnet3, NICS),
    read("model type=`virtio`", N::Virtio, NICS),
    read("model type=`virtio-net`", N::Virtio, NICS),
    read("model type=`rtl8139`", N::Rtl8139, NICS),
    read("model type=`pcnet`", N::PcNet, NICS),
    read("model type=`pcnet32`", N::PcNet, NICS),
    read("model type=`netvsc`", N::Netvsc, NICS),
];

static READ_FIRMWARE: [ReadRow<Boot>; 4] = [
    read("no os firmware, no pflash loader", Boot::Bios, BOOT),
    read(
        "os firmware='efi' or loader type='pflash'",
        Boot::Uefi,
        BOOT,
    ),
    read(
        "firmware feature secure-boot enabled='yes' or loader secure='yes'",
        Boot::SecureBoot,
        BOOT,
    ),
    read("a tpm device (on a UEFI machine)", Boot::TpmUefi, TPM),
];

/// What the domain reader makes of each setting.
pub static READ: SourceMapping = SourceMapping {
    names: &["libvirt", "kvm"],
    kinds: "libvirt",
    controllers: &READ_CONTROLLERS,
    nics: &READ_NICS,
    other_nics: &[],
    firmware: &READ_FIRMWARE,
    os: "libosinfo:os id, read through src/vm/guest_os.rs",
};

/// The model's SCSI controller of a libvirt controller model (virtio-scsi for any other).
pub fn scsi_model(model: Option<&str>) -> S {
    match model.and_then(|m| READ.controller_named(m)) {
        Some(K::Scsi(m)) => m,
        _ => S::VirtioScsi,
    }
}
