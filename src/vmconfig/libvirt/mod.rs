//! A libvirt domain (KVM/QEMU) from the VM model.
//!
//! Which bus and NIC model each guest gets (virtio where the guest has the drivers, SATA and
//! e1000e with a warning elsewhere) is in [`mapping::WRITE`]. What libvirt needs but the
//! source does not say (the host network to attach to) takes libvirt's defaults, said in a
//! warning.
//!
//! Elements follow libvirt's domain schema (domain.rng, checked by `virt-xml-validate`):
//! `os firmware='efi'` with the secure-boot firmware feature (libvirt 7.2+) and SMM for secure
//! boot, q35 machines, `tpm-crb` with the emulator backend for a TPM.

pub mod mapping;

use crate::error::{Error, Result};
use crate::ovf::xml::{Element, Ns};
use crate::vm::{
    Cdrom, Controller, ControllerKind, Disk, DiskSource, Firmware, Nic, NicModel, Os, OsFamily,
    ScsiModel, SerialPort, Vm,
};
use quick_xml::escape::escape;
use std::fmt::Write as _;
use std::path::Path;
use std::path::PathBuf;

/// Which buses the domain uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buses {
    /// virtio-blk disks and virtio-net NICs.
    Virtio,
    /// SATA disks and e1000e NICs, which every guest drives.
    Emulated,
}

/// The buses for `vm`'s guest and, for emulated ones, why (the controller row of
/// [`mapping::WRITE`]: one bus for every disk).
pub fn buses_for(vm: &Vm) -> (Buses, Option<String>) {
    match mapping::WRITE.controller(ControllerKind::Sata, vm) {
        Some(r) if r.target == "virtio" => (Buses::Virtio, r.warning.map(str::to_string)),
        r => (
            Buses::Emulated,
            r.and_then(|r| r.warning).map(str::to_string),
        ),
    }
}

/// The memory a domain written for `vm` runs with, in bytes: whole MiB, rounded up, as
/// libvirt aligns a QEMU guest's memory, so that the warning names what the guest gets; 1 MiB
/// when the source gives none. With a warning for each change.
pub fn memory_bytes(vm: &Vm) -> (u64, Vec<String>) {
    // libvirt, src/qemu/qemu_domain.c, qemuDomainGetMemorySizeAlignment: 1024 KiB for every
    // architecture but PPC64 (256 MiB there; QEMU itself needs only 4 KiB pages), rounded up
    // by qemuDomainAlignMemorySizes with VIR_ROUND_UP. The domains written here are x86_64.
    let (mib, rounded) = crate::vm::memory_in_units(
        vm.memory_bytes,
        1 << 20,
        "libvirt gives a QEMU guest whole MiB",
    );
    if mib == 0 {
        let w = "the source gives no memory size: 1 MiB written; set it before starting";
        (1 << 20, vec![w.into()])
    } else {
        (mib << 20, rounded.into_iter().collect())
    }
}

/// The domain XML of `vm` with its disks at `disk_paths` (qcow2 files, in `vm.disks` order),
/// and the warnings of what was not carried.
pub fn domain_xml(vm: &Vm, disk_paths: &[&Path], buses: Buses) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    let mut x = String::with_capacity(4096);
    x.push_str("<domain type='kvm'>\n");
    let _ = writeln!(
        x,
        "  <name>{}</name>",
        escape(libvirt_name(&vm.name).as_str())
    );
    if let Some(d) = &vm.description {
        let _ = writeln!(x, "  <description>{}</description>", escape(d.as_str()));
    }
    x.push_str("  <metadata>\n");
    if let Some(id) = vm.guest_os.os.and_then(|o| o.libosinfo()) {
        let _ = writeln!(
            x,
            "    <libosinfo:libosinfo xmlns:libosinfo=\"http://libosinfo.org/xmlns/libvirt/domain/1.0\">\n      <libosinfo:os id=\"{}\"/>\n    </libosinfo:libosinfo>",
            escape(libosinfo_url(id).as_str())
        );
    }
    x.push_str(&our_metadata(vm));
    x.push_str("  </metadata>\n");
    let (bytes, memory) = memory_bytes(vm);
    warnings.extend(memory);
    let kib = bytes >> 10;
    let _ = writeln!(x, "  <memory unit='KiB'>{kib}</memory>");
    let _ = writeln!(x, "  <currentMemory unit='KiB'>{kib}</currentMemory>");
    let cpus = vm.cpus.count.max(1);
    let _ = writeln!(x, "  <vcpu placement='static'>{cpus}</vcpu>");
    let secure = matches!(vm.firmware, Firmware::Uefi { secure_boot: true });
    match vm.firmware {
        Firmware::Bios => {
            x.push_str("  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n");
        }
        Firmware::Uefi { secure_boot } => {
            x.push_str("  <os firmware='efi'>\n    <type arch='x86_64' machine='q35'>hvm</type>\n");
            let _ = writeln!(
                x,
                "    <firmware>\n      <feature enabled='{}' name='enrolled-keys'/>\n      <feature enabled='{}' name='secure-boot'/>\n    </firmware>",
                yes(secure_boot),
                yes(secure_boot)
            );
        }
    }
    x.push_str("    <boot dev='hd'/>\n  </os>\n");
    x.push_str("  <features>\n    <acpi/>\n    <apic/>\n");
    if secure {
        x.push_str("    <smm state='on'/>\n");
    }
    x.push_str("  </features>\n");
    if let Some(cores) = vm
        .cpus
        .cores_per_socket
        .filter(|c| *c > 0 && cpus.is_multiple_of(*c))
    {
        let _ = writeln!(
            x,
            "  <cpu mode='host-passthrough'>\n    <topology sockets='{}' dies='1' cores='{cores}' threads='1'/>\n  </cpu>",
            cpus / cores
        );
    } else {
        x.push_str("  <cpu mode='host-passthrough'/>\n");
    }
    let windows = vm
        .guest_os
        .os
        .is_some_and(|o| o.family() == OsFamily::Windows);
    // Windows keeps the hardware clock in local time.
    let _ = writeln!(
        x,
        "  <clock offset='{}'/>",
        if windows { "localtime" } else { "utc" }
    );
    x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n");
    x.push_str("  <devices>\n");
    for (i, path) in disk_paths.iter().enumerate() {
        let (dev, bus) = match buses {
            Buses::Virtio => (format!("vd{}", drive_letters(i)), "virtio"),
            Buses::Emulated => (format!("sd{}", drive_letters(i)), "sata"),
        };
        let _ = writeln!(
            x,
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2' discard='unmap'/>\n      <source file='{}'/>\n      <target dev='{dev}' bus='{bus}'/>\n    </disk>",
            escape(path.to_string_lossy().as_ref())
        );
    }
    for (i, _cd) in vm.cdroms.iter().enumerate() {
        let _ = writeln!(
            x,
            "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <target dev='sd{}' bus='sata'/>\n      <readonly/>\n    </disk>",
            drive_letters(vm.disks.len() + i)
        );
    }
    if !vm.cdroms.is_empty() {
        warnings.push(format!(
            "{} CD/DVD drive(s) written empty: their media stay behind",
            vm.cdroms.len()
        ));
    }
    let mut networks = Vec::new();
    for nic in &vm.nics {
        // The NIC rows follow the buses: virtio, or the rows of a guest not known to drive it.
        let model = match buses {
            Buses::Virtio => "virtio",
            Buses::Emulated => mapping::WRITE
                .nic_for(&nic.model, None)
                .map_or("e1000e", |r| r.target),
        };
        x.push_str("    <interface type='network'>\n");
        if let Some(mac) = &nic.mac {
            let _ = writeln!(x, "      <mac address='{}'/>", escape(mac.as_str()));
        }
        let _ = writeln!(
            x,
            "      <source network='default'/>\n      <model type='{model}'/>\n    </interface>"
        );
        if let Some(n) = &nic.network {
            networks.push(n.clone());
        }
    }
    if !networks.is_empty() {
        warnings.push(format!(
            "NICs attached to libvirt's 'default' network; on the source they were on {}: change <source network=...> (or use a bridge) to match the host",
            networks
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for port in &vm.serial_ports {
        let _ = writeln!(
            x,
            "    <serial type='pty'>\n      <target port='{}'/>\n    </serial>",
            port.index
        );
        if let Some(c) = port.host_end() {
            warnings.push(format!(
                "serial port {}: its host end ({c}) is not carried: written as a pty (virsh console); set <serial type=...> to reconnect it",
                port.index
            ));
        }
    }
    x.push_str("    <console type='pty'/>\n");
    if vm.tpm {
        x.push_str("    <tpm model='tpm-crb'>\n      <backend type='emulator' version='2.0'/>\n    </tpm>\n");
    }
    x.push_str("    <graphics type='vnc' port='-1' autoport='yes'/>\n");
    x.push_str("    <video>\n      <model type='virtio'/>\n    </video>\n");
    x.push_str("  </devices>\n</domain>\n");
    (x, warnings)
}

/// Our own metadata (libvirt keeps an application's elements in its namespace): what the VM
/// had on its source hypervisor that the domain expresses differently (the guest OS ids, the
/// disks' controllers, the NICs' models and networks), so that a VM migrated to KVM and on to
/// another hypervisor arrives as it left.
fn our_metadata(vm: &Vm) -> String {
    let mut x = format!("    <diskferry:vm xmlns:diskferry=\"{METADATA_NS}\">\n");
    let g = &vm.guest_os;
    let mut attrs = String::new();
    if let Some(os) = g.os {
        for (k, v) in [
            ("vmware", os.vmware()),
            ("virtualbox", os.virtualbox()),
            ("libosinfo", os.libosinfo()),
        ] {
            if let Some(v) = v {
                let _ = write!(attrs, " {k}=\"{}\"", escape(v));
            }
        }
        if let Some(c) = os.cim() {
            let _ = write!(attrs, " cim=\"{c}\"");
        }
    }
    if let Some(d) = &g.description {
        let _ = write!(attrs, " description=\"{}\"", escape(d.as_str()));
    }
    if !attrs.is_empty() {
        let _ = writeln!(x, "      <diskferry:guest-os{attrs}/>");
    }
    for (i, d) in vm.disks.iter().enumerate() {
        let _ = writeln!(
            x,
            "      <diskferry:disk index=\"{i}\" controller=\"{}\" controller-index=\"{}\" unit=\"{}\"/>",
            controller_token(d.controller.kind),
            d.controller.index,
            d.unit
        );
    }
    for (i, n) in vm.nics.iter().enumerate() {
        let network = n
            .network
            .as_deref()
            .map(|v| format!(" network=\"{}\"", escape(v)))
            .unwrap_or_default();
        let _ = writeln!(
            x,
            "      <diskferry:nic index=\"{i}\" model=\"{}\"{network}/>",
            escape(n.model.to_string().as_str())
        );
    }
    x.push_str("    </diskferry:vm>\n");
    x
}

/// The namespace of our metadata in a domain.
pub const METADATA_NS: &str = "urn:diskferry:vm:1";

fn controller_token(kind: ControllerKind) -> &'static str {
    match kind {
        ControllerKind::Ide => "ide",
        ControllerKind::Sata => "sata",
        ControllerKind::Nvme => "nvme",
        ControllerKind::VirtioBlk => "virtio-blk",
        ControllerKind::Scsi(ScsiModel::LsiLogic) => "scsi-lsilogic",
        ControllerKind::Scsi(ScsiModel::LsiSas) => "scsi-lsisas",
        ControllerKind::Scsi(ScsiModel::Pvscsi) => "scsi-pvscsi",
        ControllerKind::Scsi(ScsiModel::BusLogic) => "scsi-buslogic",
        ControllerKind::Scsi(ScsiModel::VirtioScsi) => "scsi-virtio",
    }
}

fn controller_from_token(token: &str) -> Option<ControllerKind> {
    Some(match token {
        "ide" => ControllerKind::Ide,
        "sata" => ControllerKind::Sata,
        "nvme" => ControllerKind::Nvme,
        "virtio-blk" => ControllerKind::VirtioBlk,
        "scsi-lsilogic" => ControllerKind::Scsi(ScsiModel::LsiLogic),
        "scsi-lsisas" => ControllerKind::Scsi(ScsiModel::LsiSas),
        "scsi-pvscsi" => ControllerKind::Scsi(ScsiModel::Pvscsi),
        "scsi-buslogic" => ControllerKind::Scsi(ScsiModel::BusLogic),
        "scsi-virtio" => ControllerKind::Scsi(ScsiModel::VirtioScsi),
        _ => return None,
    })
}

fn nic_model(name: &str) -> NicModel {
    mapping::READ
        .nic_named(&name.to_ascii_lowercase())
        .unwrap_or_else(|| NicModel::Other(name.to_ascii_lowercase()))
}

/// True when `bytes` look like a libvirt domain (`<domain` root).
pub fn probe(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    let t = super::after_xml_prolog(&text);
    t.starts_with("<domain") && t[7..].starts_with([' ', '>', '\n', '\t', '\r'])
}

/// A parsed domain: the machine and the files of its disks, in `vm.disks` order (a disk
/// without a file, such as a network disk, is left out with a warning).
#[derive(Debug, Clone)]
pub struct Domain {
    /// The machine.
    pub vm: Vm,
    /// The disks' files, as the domain names them.
    pub disk_files: Vec<PathBuf>,
}

/// Reads a libvirt domain XML (`name` names it in errors).
pub fn parse_domain(bytes: &[u8], name: &str) -> Result<Domain> {
    let root = crate::ovf::xml::parse(bytes, name)?;
    let err = |what: String| Error::invalid(what).with_path(name);
    if root.name != "domain" {
        return Err(err(format!(
            "the root element is <{}>, not a libvirt <domain>",
            root.name
        )));
    }
    let child = |e: &'_ Element, n: &str| {
        e.children
            .iter()
            .find(|c| c.name == n && c.ns == Ns::None)
            .cloned()
    };
    let text = |e: &Element, n: &str| {
        child(e, n)
            .map(|c| c.text.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let attr = |e: &Element, n: &str| e.attr(Ns::None, n).map(str::to_string);
    let mut vm = Vm::new(text(&root, "name").unwrap_or_else(|| "imported-vm".into()));
    vm.description = text(&root, "description");
    if let Some(m) = child(&root, "memory") {
        let n: u64 = m
            .text
            .trim()
            .parse()
            .map_err(|_| err(format!("<memory> '{}' is not a number", m.text.trim())))?;
        let unit = attr(&m, "unit").unwrap_or_else(|| "KiB".into());
        let mult = match unit.as_str() {
            "b" | "bytes" => 1,
            "KB" => 1000,
            "k" | "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "M" | "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "G" | "GiB" => 1 << 30,
            "TB" => 1_000_000_000_000,
            "T" | "TiB" => 1 << 40,
            other => return Err(err(format!("<memory> unit '{other}' is unknown"))),
        };
        vm.memory_bytes = n
            .checked_mul(mult)
            .ok_or_else(|| err("<memory> overflows".into()))?;
    }
    if let Some(v) = text(&root, "vcpu") {
        vm.cpus.count = v
            .parse()
            .map_err(|_| err(format!("<vcpu> '{v}' is not a number")))?;
    }
    if let Some(t) = child(&root, "cpu").and_then(|c| child(&c, "topology")) {
        let cores: Option<u32> = attr(&t, "cores").and_then(|v| v.parse().ok());
        let threads: u32 = attr(&t, "threads")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        vm.cpus.cores_per_socket = cores.map(|c| c.saturating_mul(threads.max(1)));
    }
    if let Some(os) = child(&root, "os") {
        let efi = attr(&os, "firmware").as_deref() == Some("efi")
            || child(&os, "loader").is_some_and(|l| attr(&l, "type").as_deref() == Some("pflash"));
        if efi {
            let secure = child(&os, "firmware").is_some_and(|f| {
                f.children.iter().any(|c| {
                    c.name == "feature"
                        && c.attr(Ns::None, "name") == Some("secure-boot")
                        && c.attr(Ns::None, "enabled") == Some("yes")
                })
            }) || child(&os, "loader")
                .is_some_and(|l| attr(&l, "secure").as_deref() == Some("yes"));
            vm.firmware = Firmware::Uefi {
                secure_boot: secure,
            };
        }
        // The firmware's variable store: the file <nvram> names (in <source> since libvirt
        // 8.5), or the one libvirt keeps for an EFI guest in its own folder when none is named.
        let nvram = child(&os, "nvram");
        let named = nvram.as_ref().and_then(|n| {
            Some(n.text.trim())
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .or_else(|| {
                    let source = child(n, "source")?;
                    ["file", "dev", "name"]
                        .iter()
                        .find_map(|a| attr(&source, a))
                })
        });
        let qemu = matches!(attr(&root, "type").as_deref(), Some("kvm" | "qemu"));
        let store = match named {
            Some(file) => Some(format!("'{file}'")),
            None if efi && qemu => Some(format!(
                "libvirt's default, '/var/lib/libvirt/qemu/nvram/{}_VARS.fd'",
                vm.name
            )),
            None if efi => Some("the store libvirt keeps for the guest".to_string()),
            None => None,
        };
        if let Some(store) = store {
            vm.warn(format!(
                "the VM's NVRAM ({store}) is not carried; {}",
                vm.firmware.without_nvram()
            ));
        }
    }
    let mut disk_files = Vec::new();
    if let Some(devices) = child(&root, "devices") {
        let scsi_model = devices
            .children
            .iter()
            .find(|c| c.name == "controller" && c.attr(Ns::None, "type") == Some("scsi"))
            .and_then(|c| c.attr(Ns::None, "model").map(str::to_string));
        for d in devices.children.iter().filter(|c| c.name == "disk") {
            let target = child(d, "target");
            let bus = target
                .as_ref()
                .and_then(|t| attr(t, "bus"))
                .unwrap_or_else(|| "ide".into());
            let dev = target
                .as_ref()
                .and_then(|t| attr(t, "dev"))
                .unwrap_or_default();
            let kind = match bus.as_str() {
                "virtio" => ControllerKind::VirtioBlk,
                "sata" => ControllerKind::Sata,
                "nvme" => ControllerKind::Nvme,
                "scsi" => ControllerKind::Scsi(mapping::scsi_model(scsi_model.as_deref())),
                b => mapping::READ
                    .controller_named(b)
                    .unwrap_or(ControllerKind::Ide),
            };
            let (index, unit) = dev_address(&dev, kind);
            let controller = Controller { kind, index };
            let source = child(d, "source");
            let file = source
                .as_ref()
                .and_then(|s| attr(s, "file").or_else(|| attr(s, "dev")));
            match attr(d, "device").as_deref().unwrap_or("disk") {
                "cdrom" => vm.cdroms.push(Cdrom {
                    source: match file {
                        Some(f) => DiskSource::Path {
                            path: PathBuf::from(f),
                        },
                        None => DiskSource::Blank,
                    },
                    controller,
                    unit,
                }),
                "disk" => match file {
                    Some(f) => {
                        vm.disks.push(Disk {
                            source: DiskSource::Path {
                                path: PathBuf::from(&f),
                            },
                            capacity_bytes: None,
                            controller,
                            unit,
                            boot_order: None,
                        });
                        disk_files.push(PathBuf::from(f));
                    }
                    None => vm.warn(format!(
                        "disk {dev}: no file (a network or volume disk), not carried"
                    )),
                },
                other => vm.warn(format!("a <disk device='{other}'> is not carried")),
            }
        }
        for n in devices.children.iter().filter(|c| c.name == "interface") {
            let model = child(n, "model")
                .and_then(|m| attr(&m, "type"))
                .unwrap_or_else(|| "rtl8139".into());
            let network =
                child(n, "source").and_then(|s| attr(&s, "network").or_else(|| attr(&s, "bridge")));
            vm.nics.push(Nic {
                model: nic_model(&model),
                mac: child(n, "mac")
                    .and_then(|m| attr(&m, "address"))
                    .map(|m| m.to_ascii_lowercase()),
                network,
            });
        }
        vm.tpm = devices.children.iter().any(|c| c.name == "tpm");
        for (i, serial) in devices
            .children
            .iter()
            .filter(|c| c.name == "serial")
            .enumerate()
        {
            vm.serial_ports.push(SerialPort {
                index: i as u32,
                connection: serial_host_end(serial),
            });
        }
    }
    // What the VM had before it came to KVM, when we wrote the domain.
    if let Some(ours) = child(&root, "metadata").and_then(|m| {
        m.children
            .iter()
            .find(|c| c.name == "vm" && c.ns_uri.as_deref() == Some(METADATA_NS))
            .cloned()
    }) {
        for e in &ours.children {
            let a = |n: &str| {
                e.attrs
                    .iter()
                    .find(|x| x.name == n)
                    .map(|x| x.value.clone())
            };
            let index = a("index").and_then(|v| v.parse::<usize>().ok());
            match e.name.as_str() {
                "guest-os" => {
                    let os = a("vmware")
                        .and_then(|v| Os::from_vmware(&v))
                        .or_else(|| a("virtualbox").and_then(|v| Os::from_virtualbox(&v)))
                        .or_else(|| a("libosinfo").and_then(|v| Os::from_libosinfo(&v)))
                        .or_else(|| a("cim").and_then(|v| v.parse().ok()).and_then(Os::from_cim));
                    vm.guest_os.os = os;
                    vm.guest_os.description = a("description");
                }
                "disk" => {
                    let kind = a("controller").and_then(|t| controller_from_token(&t));
                    if let (Some(d), Some(kind)) = (index.and_then(|i| vm.disks.get_mut(i)), kind) {
                        d.controller = Controller {
                            kind,
                            index: a("controller-index")
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0),
                        };
                        d.unit = a("unit").and_then(|v| v.parse().ok()).unwrap_or(d.unit);
                    }
                }
                "nic" => {
                    if let Some(n) = index.and_then(|i| vm.nics.get_mut(i)) {
                        if let Some(m) = a("model") {
                            n.model = nic_model(&m);
                        }
                        n.network = a("network");
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Domain { vm, disk_files })
}

/// What a `<serial>` connects to on the host, as `type:where` (`file:/var/log/x.log`,
/// `tcp:host:4555`, `unix:/run/x.sock`); None for a pty (libvirt's default, the console any
/// target gives) and for a port without a type.
fn serial_host_end(serial: &Element) -> Option<String> {
    let kind = serial.attr(Ns::None, "type")?;
    if kind == "pty" {
        return None;
    }
    let source = serial
        .children
        .iter()
        .find(|c| c.name == "source" && c.ns == Ns::None);
    let place = source.and_then(|s| {
        s.attr(Ns::None, "path").map(str::to_string).or_else(|| {
            let host = s.attr(Ns::None, "host")?;
            Some(match s.attr(Ns::None, "service") {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            })
        })
    });
    Some(match place {
        Some(p) => format!("{kind}:{p}"),
        None => kind.to_string(),
    })
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Where a disk's target `dev` puts it on a controller of `kind`: `nvme1n2` is namespace 2
/// of controller 1; `sda`, `vdb`, `xvdc` count drives by their letters (`a` first), and on
/// IDE two drives share a controller (`hdc` is the second controller's first). A name of
/// another shape is the first drive.
fn dev_address(dev: &str, kind: ControllerKind) -> (u32, u32) {
    if let Some(rest) = dev.strip_prefix("nvme") {
        let number = |s: &str| -> Option<u32> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        if let Some((c, ns)) = rest.split_once('n')
            && let (Some(c), Some(ns)) = (number(c), number(ns))
        {
            return (c, ns.saturating_sub(1));
        }
        return (0, 0);
    }
    let Some(letters) = ["xvd", "ubd", "hd", "sd", "vd"]
        .iter()
        .find_map(|p| dev.strip_prefix(p))
    else {
        return (0, 0);
    };
    // A hostile name (`sdzzzzzzzz`) must not overflow: saturate.
    let n = letters
        .bytes()
        .take_while(u8::is_ascii_lowercase)
        .fold(0u32, |n, b| {
            n.saturating_mul(26).saturating_add(u32::from(b - b'a') + 1)
        })
        .saturating_sub(1);
    match kind {
        ControllerKind::Ide => (n / 2, n % 2),
        _ => (0, n),
    }
}

/// `a`..`z`, `aa`..: the letters of the `i`th drive (`vda`, `vdb`, ... `vdaa`).
fn drive_letters(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

/// libvirt names may not contain '/'; other characters pass.
fn libvirt_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    if n.trim().is_empty() {
        "imported-vm".to_string()
    } else {
        n
    }
}

/// libosinfo's id URL for a short id (`ubuntu22.04` → `http://ubuntu.com/ubuntu/22.04`).
fn libosinfo_url(short: &str) -> String {
    let split = short
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(short.len());
    let (distro, version) = short.split_at(split);
    let vendor = match distro {
        "ubuntu" => "http://ubuntu.com/ubuntu",
        "debian" => "http://debian.org/debian",
        "fedora" => "http://fedoraproject.org/fedora",
        "rhel" => "http://redhat.com/rhel",
        "centos" => "http://centos.org/centos",
        "rocky" => "http://rockylinux.org/rocky",
        "almalinux" => "http://almalinux.org/almalinux",
        "sles" => "http://suse.com/sles",
        "opensuse" => "http://opensuse.org/opensuse",
        "freebsd" => "http://freebsd.org/freebsd",
        "win" => "http://microsoft.com/win",
        _ => return format!("http://libosinfo.org/{short}"),
    };
    if version.is_empty() {
        vendor.to_string()
    } else {
        format!("{vendor}/{version}")
    }
}

/// libvirt's domain XML as a [`super::VmConfig`]: read as a source, written with qcow2 disks
/// for `--to kvm`.
pub struct Libvirt;

impl super::VmConfig for Libvirt {
    fn name(&self) -> &'static str {
        "libvirt"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&mapping::WRITE)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "kvm",
                "a folder: qcow2 disks and a libvirt domain XML (virsh define)",
            ),
            ("libvirt", "the same as kvm"),
        ]
    }

    fn probe(&self, head: &[u8], _path: &Path) -> bool {
        probe(head)
    }

    fn read(&self, bytes: &[u8], path: &Path) -> Result<super::ConfigVm> {
        let domain = parse_domain(bytes, &path.to_string_lossy())?;
        Ok(super::ConfigVm {
            vm: domain.vm,
            disk_files: domain
                .disk_files
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        })
    }

    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<super::DiskPlan>> {
        Ok((1..=vm.disks.len())
            .map(|i| super::DiskPlan {
                file_name: format!("{stem}-disk{i}.qcow2"),
                format: "qcow2",
                options: String::new(),
            })
            .collect())
    }

    fn memory_bytes(&self, vm: &Vm) -> u64 {
        memory_bytes(vm).0
    }

    fn write(
        &self,
        vm: &Vm,
        stem: &str,
        folder: &Path,
        disks: &[super::PlacedDisk],
    ) -> Result<super::ConfigFiles> {
        let refs: Vec<&Path> = disks.iter().map(|d| d.final_path.as_path()).collect();
        let (buses, why) = buses_for(vm);
        let (xml, w) = domain_xml(vm, &refs, buses);
        let name = format!("{stem}.xml");
        let mut warnings: Vec<String> = why.into_iter().collect();
        warnings.extend(w);
        Ok(super::ConfigFiles {
            instructions: vec![format!("virsh define '{}'", folder.join(&name).display())],
            files: vec![(name, xml.into_bytes())],
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_target_name_does_not_overflow() {
        let xml = b"<domain><name>x</name><devices><disk device='disk'><source file='a'/><target dev='sdzzzzzzzzzzzzzz' bus='sata'/></disk></devices></domain>";
        let d = parse_domain(xml, "x.xml").unwrap();
        assert_eq!(d.vm.disks[0].unit, u32::MAX - 1);
    }

    #[test]
    fn target_names_give_controller_and_unit() {
        let ide = ControllerKind::Ide;
        let sata = ControllerKind::Sata;
        assert_eq!(dev_address("hda", ide), (0, 0));
        assert_eq!(dev_address("hdd", ide), (1, 1));
        assert_eq!(dev_address("sdb", sata), (0, 1));
        assert_eq!(dev_address("vdaa", ControllerKind::VirtioBlk), (0, 26));
        assert_eq!(dev_address("xvdb", ide), (0, 1));
        assert_eq!(dev_address("nvme0n1", ControllerKind::Nvme), (0, 0));
        assert_eq!(dev_address("nvme2n3", ControllerKind::Nvme), (2, 2));
        assert_eq!(dev_address("nvme", ControllerKind::Nvme), (0, 0));
        assert_eq!(dev_address("sdzzzzzzzzzzzz", sata).0, 0);
        assert_eq!(dev_address("", sata), (0, 0));
    }

    #[test]
    fn drive_letters_go_on_past_z() {
        assert_eq!(drive_letters(0), "a");
        assert_eq!(drive_letters(25), "z");
        assert_eq!(drive_letters(26), "aa");
        assert_eq!(drive_letters(27), "ab");
    }

    #[test]
    fn libosinfo_ids_become_urls() {
        assert_eq!(
            libosinfo_url("ubuntu22.04"),
            "http://ubuntu.com/ubuntu/22.04"
        );
        assert_eq!(libosinfo_url("win10"), "http://microsoft.com/win/10");
    }
}
