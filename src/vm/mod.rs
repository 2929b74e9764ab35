//! A whole virtual machine, apart from any hypervisor's way of writing it down.
//!
//! Readers of VM descriptions (OVF, and later XVA, .vmx, .vbox, libvirt XML) fill a [`Vm`];
//! writers take one. What a reader recognized but could not express in this model goes to
//! [`Vm::warnings`], so that nothing is dropped silently; a writer does the same for what its
//! target cannot express.
//!
//! ```
//! use diskferry::vm::{Controller, ControllerKind, Disk, DiskSource, ScsiModel, Vm};
//!
//! let mut vm = Vm::new("web");
//! vm.cpus.count = 2;
//! vm.memory_bytes = 4 << 30;
//! vm.disks.push(Disk {
//!     source: DiskSource::PackageFile { id: None, href: "web-disk1.vmdk".into() },
//!     capacity_bytes: Some(20 << 30),
//!     controller: Controller { kind: ControllerKind::Scsi(ScsiModel::Pvscsi), index: 0 },
//!     unit: 0,
//!     boot_order: None,
//! });
//! assert_eq!(vm.disks[0].controller.kind.to_string(), "SCSI (pvscsi)");
//! ```

pub mod guest_os;
pub mod limits;

pub use guest_os::{GuestOs, Os, OsFamily};

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// A virtual machine: its identity, processors, memory, firmware and devices.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vm {
    /// The machine's name (an OVF VirtualSystem's name or id, a .vmx displayName).
    pub name: String,
    /// A free-text description or annotation, when the source has one.
    pub description: Option<String>,
    /// The guest operating system, as far as the source says.
    pub guest_os: GuestOs,
    /// The firmware the guest boots with.
    pub firmware: Firmware,
    /// True when the machine has a virtual TPM (Windows 11 requires one).
    pub tpm: bool,
    /// Virtual processors.
    pub cpus: Cpus,
    /// Guest memory in bytes (0 when the source does not say).
    pub memory_bytes: u64,
    /// Hard disks, in the order the source lists them.
    pub disks: Vec<Disk>,
    /// CD/DVD drives.
    pub cdroms: Vec<Cdrom>,
    /// Network adapters, in the order the source lists them.
    pub nics: Vec<Nic>,
    /// The video adapter, when the source describes one.
    pub video: Option<Video>,
    /// Serial ports.
    pub serial_ports: Vec<SerialPort>,
    /// What the reader recognized but this model cannot represent, one sentence each.
    pub warnings: Vec<String>,
}

impl Vm {
    /// An empty machine named `name`: one processor, no memory, BIOS, no devices.
    pub fn new(name: impl Into<String>) -> Self {
        Vm {
            name: name.into(),
            description: None,
            guest_os: GuestOs::default(),
            firmware: Firmware::Bios,
            tpm: false,
            cpus: Cpus {
                count: 1,
                cores_per_socket: None,
            },
            memory_bytes: 0,
            disks: Vec::new(),
            cdroms: Vec::new(),
            nics: Vec::new(),
            video: None,
            serial_ports: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Notes something the model could not carry (see [`Vm::warnings`]).
    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}

/// A guest memory size as the summary and warnings name it: `N MiB` when it is a whole MiB,
/// else exactly, in bytes (a source's memory need not be a whole MiB, and rounding it here
/// would hide the very difference a warning reports).
pub fn memory_text(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// `bytes` of guest memory in whole `unit`s, rounded up, as a configuration holding memory
/// in `unit`s (MiB, KiB) must give it; with the warning naming both sizes when that changes
/// it, `why` saying which target takes only such sizes. Zero stays zero: what a source without
/// memory gets is each writer's own default.
pub fn memory_in_units(bytes: u64, unit: u64, why: &str) -> (u64, Option<String>) {
    let units = bytes.div_ceil(unit);
    let warning = (units * unit != bytes).then(|| {
        format!(
            "memory rounded up from {} to {} ({why})",
            memory_text(bytes),
            memory_text(units * unit)
        )
    });
    (units, warning)
}

/// The firmware a machine boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Firmware {
    /// Legacy PC BIOS (the default of every hypervisor when nothing is said).
    Bios,
    /// UEFI.
    Uefi {
        /// True when Secure Boot is enabled.
        secure_boot: bool,
    },
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Firmware::Bios => f.write_str("BIOS"),
            Firmware::Uefi { secure_boot: false } => f.write_str("UEFI"),
            Firmware::Uefi { secure_boot: true } => f.write_str("UEFI (Secure Boot)"),
        }
    }
}

impl Firmware {
    /// What the firmware starts with on a target when the source's NVRAM (its variable
    /// store) stays behind, for the warning that says so.
    pub fn without_nvram(self) -> &'static str {
        match self {
            Firmware::Bios => "BIOS settings start at their defaults",
            Firmware::Uefi { .. } => {
                "UEFI variables (boot entries, enrolled Secure Boot keys) start empty"
            }
        }
    }
}

/// Virtual processors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cpus {
    /// The number of virtual CPUs (all sockets times cores); 0 when the source does not say
    /// (with a warning).
    pub count: u32,
    /// Cores per socket, when the source sets a topology.
    pub cores_per_socket: Option<u32>,
}

/// Where a disk's (or a CD's) content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum DiskSource {
    /// A file inside the package that described the machine (an OVF `File`, an XVA member).
    PackageFile {
        /// The package's id for the file (an OVF `ovf:id`), when it has one.
        id: Option<String>,
        /// The file's name relative to the package (an OVF `ovf:href`).
        href: String,
    },
    /// A file on the host, by path (a .vmx `fileName`, a libvirt `source file`).
    Path {
        /// The path as the description writes it.
        path: PathBuf,
    },
    /// No content: a disk to create empty, or a CD drive with no medium.
    Blank,
}

/// A hard disk attached to the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// The disk's content.
    pub source: DiskSource,
    /// The virtual size in bytes, when the description says (a .vmx does not; the image does).
    pub capacity_bytes: Option<u64>,
    /// The controller the disk hangs on.
    pub controller: Controller,
    /// The disk's unit (address) on its controller.
    pub unit: u32,
    /// The disk's place in the boot order (0 boots first), when the source sets one.
    pub boot_order: Option<u32>,
}

/// A CD/DVD drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cdrom {
    /// The medium: an ISO in the package or on the host, or [`DiskSource::Blank`] for none.
    pub source: DiskSource,
    /// The controller the drive hangs on.
    pub controller: Controller,
    /// The drive's unit on its controller.
    pub unit: u32,
}

/// A storage controller, identified by its kind and its index among controllers of that bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Controller {
    /// The controller's bus and model.
    pub kind: ControllerKind,
    /// Its index among the machine's controllers of the same bus (IDE 0, IDE 1 ...).
    pub index: u32,
}

/// A storage controller's bus and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControllerKind {
    /// IDE (PIIX3/PIIX4/ICH6).
    Ide,
    /// SATA (AHCI).
    Sata,
    /// Parallel SCSI or SAS, of the given model.
    Scsi(ScsiModel),
    /// NVMe.
    Nvme,
    /// virtio-blk (a disk that is its own PCI device, no controller).
    VirtioBlk,
}

impl fmt::Display for ControllerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControllerKind::Ide => f.write_str("IDE"),
            ControllerKind::Sata => f.write_str("SATA"),
            ControllerKind::Scsi(model) => write!(f, "SCSI ({model})"),
            ControllerKind::Nvme => f.write_str("NVMe"),
            ControllerKind::VirtioBlk => f.write_str("virtio-blk"),
        }
    }
}

/// A SCSI/SAS controller model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScsiModel {
    /// LSI Logic 53c1030 parallel SCSI (VMware `lsilogic`).
    LsiLogic,
    /// LSI Logic SAS 1068 (VMware `lsisas1068`, OVF `lsilogicsas`).
    LsiSas,
    /// VMware Paravirtual SCSI (`pvscsi`, OVF `VirtualSCSI`).
    Pvscsi,
    /// BusLogic BT-958.
    BusLogic,
    /// virtio-scsi.
    VirtioScsi,
}

impl fmt::Display for ScsiModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScsiModel::LsiLogic => "lsilogic",
            ScsiModel::LsiSas => "lsisas",
            ScsiModel::Pvscsi => "pvscsi",
            ScsiModel::BusLogic => "buslogic",
            ScsiModel::VirtioScsi => "virtio-scsi",
        })
    }
}

/// A network adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    /// The emulated adapter.
    pub model: NicModel,
    /// The MAC address (lowercase, colon-separated), when the source fixes one.
    pub mac: Option<String>,
    /// The network (port group, bridge, OVF network name) the adapter connects to.
    pub network: Option<String>,
}

/// An emulated network adapter model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicModel {
    /// Intel 82545EM/82540EM (e1000).
    E1000,
    /// Intel 82574L (e1000e).
    E1000e,
    /// VMware vmxnet3.
    Vmxnet3,
    /// virtio-net.
    Virtio,
    /// Realtek RTL8139.
    Rtl8139,
    /// AMD PCnet (PCNet32, VMware vlance).
    PcNet,
    /// Hyper-V synthetic adapter (netvsc).
    Netvsc,
    /// Any other model, as the source names it.
    Other(String),
}

impl fmt::Display for NicModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Vmxnet3 => "vmxnet3",
            NicModel::Virtio => "virtio",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::PcNet => "pcnet",
            NicModel::Netvsc => "netvsc",
            NicModel::Other(s) => s,
        })
    }
}

/// The video adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Video {
    /// The adapter model as the source names it (VMware SVGA, VBoxVGA ...), when it does.
    pub model: Option<String>,
    /// Video memory in bytes, when the source says.
    pub vram_bytes: Option<u64>,
}

/// A serial port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SerialPort {
    /// The port's number (0 for COM1).
    pub index: u32,
    /// What the port connects to on the host (a pipe, a file, a telnet URI), when given.
    pub connection: Option<String>,
}

impl SerialPort {
    /// What the port connects to on the host that a target must recreate (a file, a pipe, a
    /// network address, a host device): its connection, unless that is only the console
    /// terminal every hypervisor gives a port by itself (a pty, Proxmox's socket).
    pub fn host_end(&self) -> Option<&str> {
        const TERMINALS: [&str; 4] = ["pty", "socket", "vc", "console"];
        self.connection
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty() && !TERMINALS.iter().any(|t| c.eq_ignore_ascii_case(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_typed_enums() {
        let mut vm = Vm::new("x");
        vm.firmware = Firmware::Uefi { secure_boot: true };
        vm.nics.push(Nic {
            model: NicModel::Other("Am79C970A".into()),
            mac: None,
            network: Some("VM Network".into()),
        });
        vm.disks.push(Disk {
            source: DiskSource::Blank,
            capacity_bytes: Some(1 << 30),
            controller: Controller {
                kind: ControllerKind::Scsi(ScsiModel::LsiSas),
                index: 1,
            },
            unit: 3,
            boot_order: Some(0),
        });
        let json = serde_json::to_value(&vm).unwrap();
        assert_eq!(json["firmware"]["type"], "uefi");
        assert_eq!(json["firmware"]["secure_boot"], true);
        assert_eq!(json["nics"][0]["model"]["other"], "Am79C970A");
        assert_eq!(json["disks"][0]["controller"]["kind"]["scsi"], "lsi-sas");
        assert_eq!(json["disks"][0]["source"]["type"], "blank");
    }

    #[test]
    fn display_names() {
        assert_eq!(Firmware::Uefi { secure_boot: false }.to_string(), "UEFI");
        assert_eq!(ControllerKind::Sata.to_string(), "SATA");
        assert_eq!(NicModel::Vmxnet3.to_string(), "vmxnet3");
    }
}
