//! Writing VirtualBox's `Machine` element from the VM model: as a whole settings file
//! (`.vbox`, for `VBoxManage registervm`) and as the `vbox:Machine` section of an OVF
//! (which VirtualBox's appliance import prefers over the OVF items when present).
//!
//! Rules followed (VirtualBox-settings.xsd, Settings.cpp, SystemPropertiesImpl.cpp; each has
//! a test in tests/vbox.rs):
//! - root `<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">`; settings
//!   1.19 (VirtualBox 7.0) keep `StorageControllers` inside `Hardware`, as VirtualBox 7 writes;
//! - UUIDs in braces; `Machine` has `uuid`, `name` and `OSType`; each `HardDisk` `uuid`,
//!   `location` (relative to the settings file) and `format`;
//! - `RAMSize` in MiB from 4 to 2097152, `CPU count` from 1 to 64, an I/O APIC (VirtualBox
//!   refuses more than one CPU without one);
//! - at most 8 network adapters (PIIX3), `slot` 0-7, `MACAddress` 12 hex digits without
//!   separators, unicast;
//! - one controller per bus (PIIX3 allows one instance of each), ports and devices within
//!   each bus's limits (IDE 2x2, SATA 30, SCSI 16, SAS 255, NVMe 255, virtio-scsi 256) and
//!   `PortCount` covering them (IDE exactly 2, SCSI exactly 16).

use super::NET_ATTACHMENTS;
use super::mapping;
use crate::error::{Error, Result};
use crate::vm::{ControllerKind, DiskSource, Firmware, NicModel, OsFamily, ScsiModel, Vm};
use quick_xml::escape::escape;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use uuid::Uuid;

/// The settings version written.
pub const SETTINGS_VERSION: &str = "1.19-linux";
/// The settings namespace.
pub const SETTINGS_NS: &str = "http://www.virtualbox.org/";
/// The most network adapters (PIIX3 chipset).
pub const MAX_ADAPTERS: usize = 8;
/// The most memory VirtualBox-settings.xsd allows (`TMemory RAMSize`, MiB).
pub const MAX_RAM_MIB: u64 = 2_097_152;
/// The most virtual CPUs VirtualBox configures.
pub const MAX_CPUS: u32 = 64;

/// The memory VirtualBox gives `vm`, in MiB, as a .vbox's `RAMSize` or a VirtualBox OVF's
/// memory item holds it: whole MiB (rounded up), 4 MiB to [`MAX_RAM_MIB`], 1024 MiB when the
/// source gives none. With a warning for each change.
pub fn ram_size(vm: &Vm) -> (u64, Vec<String>) {
    let mut w = Vec::new();
    let (mut mib, rounded) =
        crate::vm::memory_in_units(vm.memory_bytes, 1 << 20, "VirtualBox takes whole MiB");
    if mib == 0 {
        w.push("the source gives no memory size: 1024 MiB written; set it before starting".into());
        mib = 1024;
    } else if mib > MAX_RAM_MIB {
        w.push(format!(
            "{mib} MiB of memory is above VirtualBox's maximum: {MAX_RAM_MIB} MiB written"
        ));
        mib = MAX_RAM_MIB;
    } else if mib < 4 {
        w.push(format!(
            "{mib} MiB of memory is below VirtualBox's minimum: 4 MiB written"
        ));
        mib = 4;
    } else {
        // Past the limits the warning above names the size written.
        w.extend(rounded);
    }
    (mib, w)
}

/// Where the `Machine` element goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A settings file: `<Machine>` with its MediaRegistry.
    SettingsFile,
    /// An OVF's `<vbox:Machine ovf:required="false">`: no registry (the OVF `Disk` elements
    /// carry the media's `vbox:uuid`), and controllers limited to those the OVF items can
    /// express (the descriptor warns about the others).
    Ovf,
}

/// One disk's medium: its UUID and, in a settings file, its file.
#[derive(Debug, Clone)]
pub struct Medium {
    /// The UUID (a VDI's creation UUID; in an OVF, the `Disk`'s `vbox:uuid`).
    pub uuid: Uuid,
    /// The file, relative to the settings file.
    pub location: String,
}

/// A VirtualBox storage bus: the unit of the one-controller-per-bus rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VBus {
    Ide,
    Sata,
    Scsi,
    Sas,
    Pcie,
    VirtioScsi,
}

impl VBus {
    /// (port count limit, devices per port).
    fn limits(self) -> (u32, u32) {
        match self {
            VBus::Ide => (2, 2),
            VBus::Sata => (30, 1),
            VBus::Scsi => (16, 1),
            VBus::Sas | VBus::Pcie => (255, 1),
            VBus::VirtioScsi => (256, 1),
        }
    }

    fn name(self) -> &'static str {
        match self {
            VBus::Ide => "IDE",
            VBus::Sata => "SATA",
            VBus::Scsi => "SCSI",
            VBus::Sas => "SAS",
            VBus::Pcie => "NVMe",
            VBus::VirtioScsi => "VirtIO",
        }
    }
}

/// The bus and controller type for a model controller (by [`mapping::WRITE`]), and a warning
/// when it had to change.
fn controller_type(kind: ControllerKind, layout: Layout) -> (VBus, &'static str, Option<String>) {
    // VirtualBox's OVF import knows only these; the OVF items put the others on SATA (and
    // say so): the machine section agrees with them.
    let in_ovf = matches!(
        kind,
        ControllerKind::Ide
            | ControllerKind::Sata
            | ControllerKind::Scsi(ScsiModel::LsiLogic | ScsiModel::BusLogic | ScsiModel::LsiSas)
    );
    let (ty, warning) = match mapping::WRITE.controller_for(kind, None) {
        _ if layout == Layout::Ovf && !in_ovf => ("AHCI", None),
        Some(r) => (r.target, r.warning),
        None => ("AHCI", None),
    };
    // Each controller type lives on one VirtualBox bus (VirtualBox-settings.xsd).
    let bus = match ty {
        "PIIX4" => VBus::Ide,
        "LsiLogic" | "BusLogic" => VBus::Scsi,
        "LsiLogicSas" => VBus::Sas,
        "NVMe" => VBus::Pcie,
        "VirtioSCSI" => VBus::VirtioScsi,
        _ => VBus::Sata,
    };
    (bus, ty, warning.map(str::to_string))
}

/// The adapter type for a NIC model (by [`mapping::WRITE`]), and a warning when it changed.
fn adapter_type(model: &NicModel) -> (&'static str, Option<String>) {
    if let NicModel::Other(s) = model
        && let Some(t) = super::ADAPTER_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(s))
    {
        return (t, None);
    }
    match mapping::WRITE.nic_for(model, None) {
        Some(r) => (
            r.target,
            r.warning
                .map(|w| format!("VirtualBox has no {model} adapter: {w}")),
        ),
        None => ("82540EM", None),
    }
}

/// A UUID derived from `parts`, stable for the same input (outputs are reproducible).
pub fn derived_uuid(parts: &[&[u8]]) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// An attribute value: XML-escaped, with the whitespace characters an XML reader would fold
/// into spaces written as character references, so that they survive.
fn attr_text(v: &str) -> String {
    escape(v)
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

fn braced(u: &Uuid) -> String {
    format!("{{{}}}", u.hyphenated())
}

/// `08:00:27:7a:a2:fc` (or with dashes, or bare) → `0800277AA2FC`; `None` unless six octets
/// of a unicast address.
pub fn mac_for_vbox(mac: &str) -> Option<String> {
    let hex: String = mac
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let first = u8::from_str_radix(&hex[..2], 16).ok()?;
    (first & 1 == 0).then(|| hex.to_ascii_uppercase())
}

/// The attachment element for a model network, and a warning when it is a guess.
fn attachment(network: Option<&str>, slot: usize) -> (String, Option<String>) {
    let Some(net) = network.map(str::trim).filter(|n| !n.is_empty()) else {
        return ("<NAT/>".into(), None);
    };
    let (label, target) = match net.split_once(':') {
        Some((l, t)) => (l, Some(t)),
        None => (net, None),
    };
    let known = NET_ATTACHMENTS
        .iter()
        .find(|(_, l)| l.eq_ignore_ascii_case(label));
    match (known, target) {
        (Some((element, "NAT")), _) => (format!("<{element}/>"), None),
        (Some((element, l)), Some(t)) if !t.is_empty() => {
            let key = if *l == "Generic" { "driver" } else { "name" };
            (format!("<{element} {key}=\"{}\"/>", attr_text(t)), None)
        }
        (Some((element, l)), _) => (
            format!("<{element}/>"),
            Some(format!(
                "network adapter {}: attached {l} without a name: choose the host's interface or network in VirtualBox",
                slot + 1
            )),
        ),
        (None, _) => (
            "<NAT/>".into(),
            Some(format!(
                "network adapter {}: the source's network '{net}' means nothing to VirtualBox: attached to NAT; attach it to a bridged or host-only network to match",
                slot + 1
            )),
        ),
    }
}

/// One attachment placed on a controller.
struct Placed {
    port: u32,
    device: u32,
    element: String,
}

/// A controller being filled.
struct Ctl {
    bus: VBus,
    ty: &'static str,
    placed: Vec<Placed>,
}

impl Ctl {
    fn free(&self, port: u32, device: u32) -> bool {
        !self
            .placed
            .iter()
            .any(|p| p.port == port && p.device == device)
    }

    /// Places at the slot `unit` asks for when it is valid and free, else at the first free
    /// slot (with a warning); `None` when the controller is full.
    fn place(&mut self, unit: u32, what: &str, warnings: &mut Vec<String>) -> Option<(u32, u32)> {
        let (ports, devices) = self.bus.limits();
        let want = if devices == 2 {
            (unit / 2, unit % 2)
        } else {
            (unit, 0)
        };
        if want.0 < ports && self.free(want.0, want.1) {
            return Some(want);
        }
        let slot = (0..ports)
            .flat_map(|p| (0..devices).map(move |d| (p, d)))
            .find(|(p, d)| self.free(*p, *d))?;
        warnings.push(format!(
            "{what}: unit {unit} is taken or beyond the {} controller's limits: placed at port {} device {}",
            self.bus.name(),
            slot.0,
            slot.1
        ));
        Some(slot)
    }
}

/// The `Machine` element of `vm`, with `media` the disks' media in `vm.disks` order, indented
/// by `indent`. Returns the XML and what VirtualBox cannot carry.
pub fn machine_xml(
    vm: &Vm,
    media: &[Medium],
    layout: Layout,
    indent: &str,
) -> Result<(String, Vec<String>)> {
    if media.len() != vm.disks.len() {
        return Err(Error::invalid(format!(
            "internal error: {} media for {} disks",
            media.len(),
            vm.disks.len()
        )));
    }
    let mut w = Vec::new();
    let mut ids: Vec<&[u8]> = vec![vm.name.as_bytes()];
    let media_bytes: Vec<[u8; 16]> = media.iter().map(|m| *m.uuid.as_bytes()).collect();
    ids.extend(media_bytes.iter().map(|b| b.as_slice()));
    let machine_uuid = derived_uuid(&ids);
    let os = vm.guest_os.os;
    let os_type = match os.and_then(|o| o.virtualbox()) {
        Some(t) => t.to_string(),
        None => {
            let t = vm
                .guest_os
                .virtualbox_id
                .clone()
                .unwrap_or_else(|| "Other_64".into());
            w.push(format!(
                "the guest OS is not known to VirtualBox's OS types: OSType '{t}' written; set the right type in VirtualBox (it picks defaults such as the clock and the USB tablet)"
            ));
            t
        }
    };
    let i1 = format!("{indent}  ");
    let i2 = format!("{indent}    ");
    let i3 = format!("{indent}      ");
    let mut x = String::with_capacity(4096);
    let _ = match layout {
        Layout::SettingsFile => writeln!(
            x,
            "{indent}<Machine uuid=\"{}\" name=\"{}\" OSType=\"{}\" snapshotFolder=\"Snapshots\">",
            braced(&machine_uuid),
            attr_text(&vm.name),
            attr_text(&os_type)
        ),
        Layout::Ovf => writeln!(
            x,
            "{indent}<vbox:Machine ovf:required=\"false\" version=\"{SETTINGS_VERSION}\" uuid=\"{}\" name=\"{}\" OSType=\"{}\" snapshotFolder=\"Snapshots\">\n{i1}<ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>",
            braced(&machine_uuid),
            attr_text(&vm.name),
            attr_text(&os_type)
        ),
    };
    if layout == Layout::SettingsFile {
        let _ = writeln!(x, "{i1}<MediaRegistry>\n{i2}<HardDisks>");
        for m in media {
            let _ = writeln!(
                x,
                "{i3}<HardDisk uuid=\"{}\" location=\"{}\" format=\"VDI\" type=\"Normal\"/>",
                braced(&m.uuid),
                attr_text(&m.location)
            );
        }
        let _ = writeln!(x, "{i2}</HardDisks>\n{i1}</MediaRegistry>");
    }
    if let Some(d) = &vm.description {
        let _ = writeln!(x, "{i1}<Description>{}</Description>", escape(d.as_str()));
    }
    let _ = writeln!(x, "{i1}<Hardware>");
    let mut cpus = vm.cpus.count.max(1);
    if cpus > MAX_CPUS {
        w.push(format!(
            "{cpus} CPUs: VirtualBox configures at most {MAX_CPUS}; {MAX_CPUS} written"
        ));
        cpus = MAX_CPUS;
    }
    if vm.cpus.cores_per_socket.is_some_and(|c| c > 1) {
        w.push(
            "VirtualBox has no CPU topology: the cores-per-socket setting is not carried".into(),
        );
    }
    let long_mode = os.is_none_or(|o| o.bits() == 64);
    let _ = writeln!(
        x,
        "{i2}<CPU count=\"{cpus}\">\n{i3}<PAE enabled=\"true\"/>\n{i3}<LongMode enabled=\"{long_mode}\"/>\n{i2}</CPU>"
    );
    let (mib, memory) = ram_size(vm);
    w.extend(memory);
    let _ = writeln!(x, "{i2}<Memory RAMSize=\"{mib}\"/>");
    if let Firmware::Uefi { .. } = vm.firmware {
        let _ = writeln!(x, "{i2}<Firmware type=\"EFI\"/>");
        if let Some(warning) = mapping::WRITE.boot(vm).and_then(|r| r.warning) {
            w.push(warning.into());
        }
    }
    let _ = writeln!(
        x,
        "{i2}<Boot>\n{i3}<Order position=\"1\" device=\"HardDisk\"/>\n{i3}<Order position=\"2\" device=\"DVD\"/>\n{i3}<Order position=\"3\" device=\"None\"/>\n{i3}<Order position=\"4\" device=\"None\"/>\n{i2}</Boot>"
    );
    let vram = vm
        .video
        .as_ref()
        .and_then(|v| v.vram_bytes)
        .map(|b| b.div_ceil(1 << 20).clamp(1, 256))
        .unwrap_or(16);
    let controller = vm
        .video
        .as_ref()
        .and_then(|v| v.model.as_deref())
        .filter(|m| matches!(*m, "VBoxVGA" | "VMSVGA" | "VBoxSVGA"))
        .map(|m| format!(" controller=\"{m}\""))
        .unwrap_or_default();
    let _ = writeln!(x, "{i2}<Display{controller} VRAMSize=\"{vram}\"/>");
    // More than one CPU needs the I/O APIC; 64-bit Windows needs it too.
    let _ = writeln!(x, "{i2}<BIOS>\n{i3}<IOAPIC enabled=\"true\"/>\n{i2}</BIOS>");
    if vm.tpm {
        let _ = writeln!(x, "{i2}<TrustedPlatformModule type=\"v2_0\"/>");
    }
    if !vm.nics.is_empty() {
        let _ = writeln!(x, "{i2}<Network>");
        for (slot, nic) in vm.nics.iter().enumerate().take(MAX_ADAPTERS) {
            let (ty, warn) = adapter_type(&nic.model);
            if layout == Layout::SettingsFile {
                w.extend(warn);
            }
            let mac = match nic.mac.as_deref().and_then(mac_for_vbox) {
                Some(m) => m,
                None => {
                    // VirtualBox's own prefix, 08:00:27, and three bytes of the machine's
                    // identity: the same input gives the same address.
                    let h = derived_uuid(&[vm.name.as_bytes(), &(slot as u64).to_le_bytes()]);
                    let b = h.as_bytes();
                    let m = format!("080027{:02X}{:02X}{:02X}", b[0], b[1], b[2]);
                    if let Some(bad) = &nic.mac {
                        w.push(format!(
                            "network adapter {}: MAC '{bad}' is not a unicast address VirtualBox takes: {m} written",
                            slot + 1
                        ));
                    }
                    m
                }
            };
            let (att, warn) = attachment(nic.network.as_deref(), slot);
            w.extend(warn);
            let _ = writeln!(
                x,
                "{i3}<Adapter slot=\"{slot}\" enabled=\"true\" MACAddress=\"{mac}\" type=\"{ty}\">\n{i3}  {att}\n{i3}</Adapter>"
            );
        }
        let _ = writeln!(x, "{i2}</Network>");
        if vm.nics.len() > MAX_ADAPTERS {
            w.push(format!(
                "{} network adapters: VirtualBox has {MAX_ADAPTERS} slots; the others are not carried",
                vm.nics.len()
            ));
        }
    }
    if !vm.serial_ports.is_empty() {
        let _ = writeln!(x, "{i2}<UART>");
        for (i, p) in vm.serial_ports.iter().enumerate().take(4) {
            let (io, irq) = [("0x3f8", 4), ("0x2f8", 3), ("0x3e8", 4), ("0x2e8", 3)][i];
            let _ = writeln!(
                x,
                "{i3}<Port slot=\"{i}\" enabled=\"true\" IOBase=\"{io}\" IRQ=\"{irq}\" hostMode=\"Disconnected\"/>"
            );
            if p.connection.is_some() {
                w.push(format!(
                    "serial port {}: its host end is not carried (disconnected)",
                    i + 1
                ));
            }
        }
        let _ = writeln!(x, "{i2}</UART>");
        if vm.serial_ports.len() > 4 {
            w.push("VirtualBox has 4 serial ports: the others are not carried".into());
        }
    }
    let windows = os.is_some_and(|o| o.family() == OsFamily::Windows);
    // Windows keeps the hardware clock in local time, everything else in UTC.
    let _ = writeln!(
        x,
        "{i2}<RTC localOrUTC=\"{}\"/>",
        if windows { "local" } else { "UTC" }
    );
    // Controllers: one per VirtualBox bus, in the order their first device comes.
    let mut ctls: Vec<Ctl> = Vec::new();
    let mut attach = |kind: ControllerKind,
                      unit: u32,
                      what: String,
                      element: String,
                      w: &mut Vec<String>|
     -> Result<()> {
        let (bus, ty, warn) = controller_type(kind, layout);
        if let Some(m) = warn
            && !w.contains(&m)
        {
            w.push(m);
        }
        let at = match ctls.iter().position(|c| c.bus == bus) {
            Some(i) => {
                if ctls[i].ty != ty {
                    w.push(format!(
                        "{what}: VirtualBox has one {} controller per machine: put on the {} one",
                        bus.name(),
                        ctls[i].ty
                    ));
                }
                i
            }
            None => {
                ctls.push(Ctl {
                    bus,
                    ty,
                    placed: Vec::new(),
                });
                ctls.len() - 1
            }
        };
        let c = &mut ctls[at];
        let Some((port, device)) = c.place(unit, &what, w) else {
            return Err(Error::unsupported(format!(
                "{what}: the {} controller is full",
                bus.name()
            )));
        };
        c.placed.push(Placed {
            port,
            device,
            element,
        });
        Ok(())
    };
    for (i, (d, m)) in vm.disks.iter().zip(media).enumerate() {
        attach(
            d.controller.kind,
            d.unit,
            format!("disk {}", i + 1),
            format!(
                "<AttachedDevice type=\"HardDisk\" hotpluggable=\"false\" port=\"{{port}}\" device=\"{{device}}\">\n{i3}    <Image uuid=\"{}\"/>\n{i3}  </AttachedDevice>",
                braced(&m.uuid)
            ),
            &mut w,
        )?;
    }
    for (i, cd) in vm.cdroms.iter().enumerate() {
        attach(
            cd.controller.kind,
            cd.unit,
            format!("CD/DVD drive {}", i + 1),
            "<AttachedDevice passthrough=\"false\" type=\"DVD\" hotpluggable=\"false\" port=\"{port}\" device=\"{device}\"/>".into(),
            &mut w,
        )?;
        if !matches!(cd.source, DiskSource::Blank) && layout == Layout::SettingsFile {
            w.push(format!(
                "CD/DVD drive {}: its medium is not carried (the drive is, empty)",
                i + 1
            ));
        }
    }
    if !ctls.is_empty() {
        let _ = writeln!(x, "{i2}<StorageControllers>");
        for c in &ctls {
            let (ports, _) = c.bus.limits();
            let count = match c.bus {
                VBus::Ide | VBus::Scsi => ports,
                _ => c.placed.iter().map(|p| p.port + 1).max().unwrap_or(1),
            };
            let _ = writeln!(
                x,
                "{i3}<StorageController name=\"{}\" type=\"{}\" PortCount=\"{count}\" useHostIOCache=\"{}\" Bootable=\"true\">",
                c.bus.name(),
                c.ty,
                c.bus == VBus::Ide
            );
            for p in &c.placed {
                let e = p
                    .element
                    .replace("{port}", &p.port.to_string())
                    .replace("{device}", &p.device.to_string());
                let _ = writeln!(x, "{i3}  {e}");
            }
            let _ = writeln!(x, "{i3}</StorageController>");
        }
        let _ = writeln!(x, "{i2}</StorageControllers>");
    }
    let _ = writeln!(x, "{i1}</Hardware>");
    let _ = match layout {
        Layout::SettingsFile => writeln!(x, "{indent}</Machine>"),
        Layout::Ovf => writeln!(x, "{indent}</vbox:Machine>"),
    };
    Ok((x, w))
}

/// The settings file (`.vbox`) of `vm` with its disks' `media`.
pub fn settings_file(vm: &Vm, media: &[Medium]) -> Result<(String, Vec<String>)> {
    let (machine, warnings) = machine_xml(vm, media, Layout::SettingsFile, "  ")?;
    let x = format!(
        "<?xml version=\"1.0\"?>\n<!-- Written by diskferry: register with VBoxManage registervm -->\n<VirtualBox xmlns=\"{SETTINGS_NS}\" version=\"{SETTINGS_VERSION}\">\n{machine}</VirtualBox>\n"
    );
    Ok((x, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_lose_their_separators_and_multicast_is_refused() {
        assert_eq!(
            mac_for_vbox("08:00:27:7a:a2:fc").as_deref(),
            Some("0800277AA2FC")
        );
        assert_eq!(mac_for_vbox("01:00:5e:00:00:01"), None);
        assert_eq!(mac_for_vbox("zz"), None);
    }

    #[test]
    fn derived_uuids_are_stable_and_version_4() {
        let a = derived_uuid(&[b"x"]);
        assert_eq!(a, derived_uuid(&[b"x"]));
        assert_ne!(a, derived_uuid(&[b"y"]));
        assert_eq!(a.get_version_num(), 4);
    }
}
