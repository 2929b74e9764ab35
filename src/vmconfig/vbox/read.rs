//! Reading a VirtualBox machine settings file (`.vbox`, or the `.xml` of VirtualBox 3.x and
//! earlier) into the VM model.
//!
//! The file is XML (root `VirtualBox`, one `Machine`). What we take, as Settings.cpp in
//! VirtualBox's source reads it:
//! - `Machine`: `name`, `OSType`, `Description`; the current state's `Hardware` (snapshots'
//!   own `Hardware` copies describe the past and are not read);
//! - `Hardware`: `CPU count`, `Memory RAMSize` (MiB), `Firmware type` (`EFI*` is UEFI; in
//!   settings 1.20 `CPU` may sit in `Platform`, beside `Hardware`), `TrustedPlatformModule type`, `Display`,
//!   `Network/Adapter` (enabled ones), `UART/Port` (enabled ones); `BIOS/NVRAM path` (or
//!   `Firmware/NVRAM`), only to warn that the firmware's variable store is not carried;
//! - `StorageControllers`: under `Hardware` in recent settings versions, beside it under
//!   `Machine` in old ones; each `AttachedDevice` (`HardDisk`, `DVD`, `Floppy`) with its
//!   `port`, `device` and `Image uuid`;
//! - `MediaRegistry`: `HardDisk` elements, nested for differencing images (a snapshot's
//!   image is a child of its parent), each with `uuid`, `location` (relative to the machine
//!   file's folder) and `format`. An attachment names the current state's image: the leaf
//!   of a differencing chain, which the image drivers follow to its parents.
//!
//! Media encrypted by VirtualBox (a `CRYPT/KeyStore` property on the image or any parent)
//! and machines whose whole settings are encrypted (`MachineEncrypted`) are refused: their
//! content cannot be read without the password.

use super::{Bus, NET_ATTACHMENTS, bus_from_type, nic_model_from_type};
use crate::error::{Error, Result};
use crate::ovf::xml::{Element, Ns};
use crate::vm::{
    Cdrom, Controller, ControllerKind, Disk, DiskSource, Firmware, Nic, SerialPort, Video, Vm,
};
use crate::vmconfig::ConfigVm;
use std::path::PathBuf;

/// A medium of the registry.
#[derive(Debug, Clone)]
struct Medium {
    /// Its UUID, lowercase without braces.
    uuid: String,
    /// Its file, as written (relative to the machine file's folder, or absolute).
    location: String,
    /// The index of its parent in the list (differencing images).
    parent: Option<usize>,
    /// True when VirtualBox encrypted it (it has a `CRYPT/` property).
    encrypted: bool,
}

/// The first child named `name`, in any namespace: a `.vbox` has its own default namespace
/// (two URIs over the years), and inside an OVF's `vbox:Machine` the children sit in the
/// envelope's default namespace.
pub(crate) fn kid<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    e.children.iter().find(|c| c.name == name)
}

/// Every child named `name`, in any namespace.
pub(crate) fn kids<'a>(e: &'a Element, name: &'a str) -> impl Iterator<Item = &'a Element> {
    e.children.iter().filter(move |c| c.name == name)
}

fn attr<'a>(e: &'a Element, name: &str) -> Option<&'a str> {
    e.attr(Ns::None, name)
}

/// VirtualBox writes booleans as `true`/`false`; its reader also takes `yes`, `on` and `1`.
fn truthy(v: Option<&str>) -> bool {
    matches!(
        v.map(str::to_ascii_lowercase).as_deref(),
        Some("true" | "yes" | "on" | "1")
    )
}

/// A UUID as the settings write it (`{...}`, sometimes without braces), lowercase without
/// braces; `None` when it is not a UUID.
pub(crate) fn uuid_key(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_prefix('{').unwrap_or(t);
    let t = t.strip_suffix('}').unwrap_or(t);
    uuid::Uuid::parse_str(t)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// Reads a machine settings file; `name` names it in errors.
pub fn parse(bytes: &[u8], name: &str) -> Result<ConfigVm> {
    let root = crate::ovf::xml::parse(bytes, name)?;
    let err = |what: String, at: u64| Error::invalid(what).at_offset(at).with_path(name);
    if root.name != "VirtualBox" {
        return Err(err(
            format!(
                "the root element is <{}>, not a VirtualBox settings file's <VirtualBox>",
                root.name
            ),
            root.offset,
        ));
    }
    if let Some(e) = kid(&root, "MachineEncrypted") {
        return Err(Error::unsupported(
            "the machine's settings are encrypted (VirtualBox 7 VM encryption): remove the encryption in VirtualBox first (VBoxManage encryptvm ... setencryption)",
        )
        .at_offset(e.offset)
        .with_path(name));
    }
    let Some(machine) = kid(&root, "Machine") else {
        return Err(err(
            "no <Machine> element (VirtualBox's global VirtualBox.xml is not a machine)".into(),
            root.offset,
        ));
    };
    let mut media = Vec::new();
    let mut dvds: Vec<(String, String)> = Vec::new();
    if let Some(reg) = kid(machine, "MediaRegistry") {
        if let Some(hds) = kid(reg, "HardDisks") {
            for hd in kids(hds, "HardDisk") {
                collect_media(hd, None, &mut media, name)?;
            }
        }
        if let Some(images) = kid(reg, "DVDImages") {
            for img in kids(images, "Image") {
                if let (Some(u), Some(l)) =
                    (attr(img, "uuid").and_then(uuid_key), attr(img, "location"))
                {
                    dvds.push((u, l.to_string()));
                }
            }
        }
    }
    let (vm, attached) = read_machine(machine, name)?;
    let mut disk_files = Vec::new();
    let mut vm = vm;
    for (i, (uuid, offset)) in attached.iter().enumerate() {
        let Some(index) = media.iter().position(|m: &Medium| &m.uuid == uuid) else {
            return Err(err(
                format!(
                    "disk {} is the medium {{{uuid}}}, which the machine's MediaRegistry does not list (media of VirtualBox 3.x and older are in the global VirtualBox.xml: re-save the machine with a recent VirtualBox)",
                    i + 1
                ),
                *offset,
            ));
        };
        // Encryption is per chain: a snapshot's image inherits its parent's key.
        let mut at = Some(index);
        let mut steps = 0;
        while let Some(j) = at {
            if media[j].encrypted {
                return Err(Error::unsupported(format!(
                    "disk {} ({}) is encrypted by VirtualBox: decrypt it first (VBoxManage encryptmedium '{}' --oldpassword FILE)",
                    i + 1,
                    media[index].location,
                    media[j].location
                ))
                .at_offset(*offset)
                .with_path(name));
            }
            at = media[j].parent;
            steps += 1;
            if steps > media.len() {
                break;
            }
        }
        let location = media[index].location.clone();
        if location.trim().is_empty() {
            return Err(err(
                format!("disk {}: the medium {{{uuid}}} has no location", i + 1),
                *offset,
            ));
        }
        vm.disks[i].source = DiskSource::Path {
            path: PathBuf::from(&location),
        };
        disk_files.push(location);
    }
    let mut unlisted = Vec::new();
    for cd in &mut vm.cdroms {
        if let DiskSource::Path { path } = &cd.source {
            let key = path.to_string_lossy().into_owned();
            cd.source = match dvds.iter().find(|(u, _)| *u == key) {
                Some((_, l)) => DiskSource::Path {
                    path: PathBuf::from(l),
                },
                None => {
                    unlisted.push(key);
                    DiskSource::Blank
                }
            };
        }
    }
    for key in unlisted {
        vm.warn(format!(
            "the DVD image {{{key}}} is not in the machine's MediaRegistry: its drive is carried empty"
        ));
    }
    Ok(ConfigVm { vm, disk_files })
}

fn collect_media(
    hd: &Element,
    parent: Option<usize>,
    media: &mut Vec<Medium>,
    name: &str,
) -> Result<()> {
    let Some(uuid) = attr(hd, "uuid").and_then(uuid_key) else {
        return Err(Error::invalid(format!(
            "a <HardDisk> of the MediaRegistry has no valid uuid ('{}')",
            attr(hd, "uuid").unwrap_or("")
        ))
        .at_offset(hd.offset)
        .with_path(name));
    };
    let encrypted = kids(hd, "Property").any(|p| {
        attr(p, "name").is_some_and(|n| n.starts_with("CRYPT/"))
            && attr(p, "value").is_some_and(|v| !v.is_empty())
    });
    media.push(Medium {
        uuid,
        location: attr(hd, "location").unwrap_or("").to_string(),
        parent,
        encrypted,
    });
    let me = media.len() - 1;
    // The XML tree is bounded in depth and size, so this recursion is too.
    for child in kids(hd, "HardDisk") {
        collect_media(child, Some(me), media, name)?;
    }
    Ok(())
}

/// Reads a `Machine` element (of a `.vbox`, or an OVF's `vbox:Machine`) into a machine. Its
/// disks come with [`DiskSource::Blank`]; the second value gives, per disk, the UUID of the
/// medium attached (lowercase, no braces) and the attachment's offset. A CD/DVD whose medium
/// is an image has the image's UUID as its path, for the caller to resolve.
pub fn read_machine(machine: &Element, name: &str) -> Result<(Vm, Vec<(String, u64)>)> {
    let err = |what: String, at: u64| Error::invalid(what).at_offset(at).with_path(name);
    let vm_name = attr(machine, "name")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| err("the <Machine> has no name".into(), machine.offset))?;
    let mut vm = Vm::new(vm_name);
    vm.description = kid(machine, "Description")
        .map(|d| d.text.trim().to_string())
        .filter(|d| !d.is_empty());
    if let Some(os) = attr(machine, "OSType") {
        vm.guest_os.virtualbox_id = Some(os.to_string());
        vm.guest_os.resolve();
        if vm.guest_os.os.is_none() {
            vm.warn(format!(
                "VirtualBox OS type '{os}' is not in the OS table: the guest OS is unknown to other targets"
            ));
        }
    }
    let hardware = kid(machine, "Hardware");
    let platform = kid(machine, "Platform");
    // Settings 1.20 (VirtualBox 7.1) moved some elements (CPU, RTC, Chipset) to <Platform>,
    // beside <Hardware>: look in both.
    let hw_kid = |n: &str| {
        hardware
            .and_then(|h| kid(h, n))
            .or_else(|| platform.and_then(|p| kid(p, n)))
    };
    if let Some(cpu) = hw_kid("CPU")
        && let Some(c) = attr(cpu, "count")
    {
        vm.cpus.count = c
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| err(format!("CPU count '{c}' is not a number"), cpu.offset))?;
    }
    if let Some(mem) = hw_kid("Memory") {
        let text = attr(mem, "RAMSize").unwrap_or("0");
        let mib: u64 = text.trim().parse().map_err(|_| {
            err(
                format!("Memory RAMSize '{text}' is not a number"),
                mem.offset,
            )
        })?;
        vm.memory_bytes = mib
            .checked_mul(1 << 20)
            .ok_or_else(|| err(format!("Memory RAMSize '{text}' overflows"), mem.offset))?;
    }
    if let Some(t) = hw_kid("Firmware").and_then(|f| attr(f, "type"))
        && t.to_ascii_uppercase().starts_with("EFI")
    {
        vm.firmware = Firmware::Uefi { secure_boot: false };
    }
    // The firmware's variables (UEFI boot entries, and Secure Boot's state and keys, which
    // VirtualBox keeps there rather than in the settings) live in their own file, named by
    // <NVRAM path> under <BIOS> (settings 1.19 and before) or <Firmware> (1.20, in
    // <Hardware> or <Platform>). An EFI machine naming none has VirtualBox's default, named
    // after the settings file: VirtualBox, src/VBox/Main/src-server/MachineImpl.cpp,
    // Machine::i_getDefaultNVRAMFilename takes the .vbox's file name, strips its suffix and
    // adds ".nvram", relative to the .vbox's folder (NvramStore::getNonVolatileStorageFile
    // uses it when no path is set; only snapshots' stores get names of their own). No target
    // reads it.
    let nvram = [hardware, platform]
        .into_iter()
        .flatten()
        .flat_map(|h| [kid(h, "BIOS"), kid(h, "Firmware")])
        .flatten()
        .filter_map(|f| kid(f, "NVRAM").and_then(|n| attr(n, "path")))
        .find(|p| !p.trim().is_empty());
    let store = match nvram {
        Some(file) => Some(format!("file ('{file}')")),
        None if matches!(vm.firmware, Firmware::Uefi { .. }) => {
            let stem = std::path::Path::new(name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some(format!(
                "file ('{stem}.nvram' beside the .vbox, VirtualBox's default)"
            ))
        }
        None => None,
    };
    if let Some(store) = store {
        vm.warn(format!(
            "the VM's NVRAM {store} is not carried; {}",
            vm.firmware.without_nvram()
        ));
    }
    if let Some(t) = hw_kid("TrustedPlatformModule").and_then(|t| attr(t, "type"))
        && !t.eq_ignore_ascii_case("none")
    {
        vm.tpm = true;
    }
    if let Some(d) = hw_kid("Display") {
        vm.video = Some(Video {
            model: attr(d, "controller").map(str::to_string),
            vram_bytes: attr(d, "VRAMSize")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .and_then(|v| v.checked_mul(1 << 20)),
        });
    }
    if let Some(net) = hw_kid("Network") {
        for a in kids(net, "Adapter") {
            if !truthy(attr(a, "enabled")) {
                continue;
            }
            // Am79C973 is what Settings.cpp assumes when the type is left out.
            let ty = attr(a, "type").unwrap_or("Am79C973");
            let mac = attr(a, "MACAddress").and_then(mac_from_vbox);
            let network = a.children.iter().find_map(|c| {
                let (_, label) = NET_ATTACHMENTS.iter().find(|(el, _)| *el == c.name)?;
                let target = attr(c, "name").or_else(|| attr(c, "driver"));
                Some(match (label, target) {
                    (&"NAT", _) => "NAT".to_string(),
                    (l, Some(t)) if !t.is_empty() => format!("{l}:{t}"),
                    (l, _) => l.to_string(),
                })
            });
            vm.nics.push(Nic {
                model: nic_model_from_type(ty),
                mac,
                network,
            });
        }
    }
    if let Some(uart) = hw_kid("UART") {
        for p in kids(uart, "Port") {
            if truthy(attr(p, "enabled")) {
                vm.serial_ports.push(SerialPort {
                    index: attr(p, "slot").and_then(|s| s.parse().ok()).unwrap_or(0),
                    connection: attr(p, "path")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                });
            }
        }
    }
    let controllers = hardware
        .and_then(|h| kid(h, "StorageControllers"))
        .or_else(|| kid(machine, "StorageControllers"));
    let mut attached = Vec::new();
    let mut seen: Vec<ControllerKind> = Vec::new();
    for sc in controllers
        .into_iter()
        .flat_map(|c| kids(c, "StorageController"))
    {
        let ty = attr(sc, "type").unwrap_or("");
        let kind = match bus_from_type(ty) {
            Some(Bus::Storage(kind)) => kind,
            Some(Bus::Floppy) => {
                if kids(sc, "AttachedDevice").next().is_some() {
                    vm.warn("a floppy drive is not carried (the model has none)");
                }
                continue;
            }
            Some(Bus::Usb) | None => {
                if kids(sc, "AttachedDevice").next().is_some() {
                    vm.warn(format!(
                        "storage controller '{}' of type '{ty}' is not carried, nor what is attached to it",
                        attr(sc, "name").unwrap_or("")
                    ));
                }
                continue;
            }
        };
        let index = seen.iter().filter(|k| **k == kind).count() as u32;
        seen.push(kind);
        let controller = Controller { kind, index };
        for ad in kids(sc, "AttachedDevice") {
            let num = |n: &str| -> Result<u32> {
                match attr(ad, n) {
                    None => Ok(0),
                    Some(v) => v.trim().parse().map_err(|_| {
                        err(
                            format!("AttachedDevice {n} '{v}' is not a number"),
                            ad.offset,
                        )
                    }),
                }
            };
            let (port, device) = (num("port")?, num("device")?);
            // IDE has two devices (master, slave) per port; the other buses one.
            let unit = if kind == ControllerKind::Ide {
                port.saturating_mul(2).saturating_add(device)
            } else {
                port
            };
            let image = kid(ad, "Image").and_then(|i| attr(i, "uuid"));
            match attr(ad, "type").unwrap_or("") {
                "HardDisk" => {
                    let Some(u) = image else {
                        return Err(err(
                            format!("a hard disk on port {port} has no <Image uuid>"),
                            ad.offset,
                        ));
                    };
                    let key = uuid_key(u)
                        .ok_or_else(|| err(format!("Image uuid '{u}' is not a UUID"), ad.offset))?;
                    vm.disks.push(Disk {
                        source: DiskSource::Blank,
                        capacity_bytes: None,
                        controller,
                        unit,
                        boot_order: None,
                    });
                    attached.push((key, ad.offset));
                }
                "DVD" => vm.cdroms.push(Cdrom {
                    source: match image.and_then(uuid_key) {
                        Some(k) => DiskSource::Path {
                            path: PathBuf::from(k),
                        },
                        None => DiskSource::Blank,
                    },
                    controller,
                    unit,
                }),
                "Floppy" => vm.warn("a floppy drive is not carried (the model has none)"),
                other => vm.warn(format!(
                    "an attached device of type '{other}' is not carried"
                )),
            }
        }
    }
    Ok((vm, attached))
}

/// `0800277AA2FC` → `08:00:27:7a:a2:fc`; `None` unless 12 hex digits.
fn mac_from_vbox(text: &str) -> Option<String> {
    let t = text.trim();
    if t.len() != 12 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let lower = t.to_ascii_lowercase();
    Some(
        (0..6)
            .map(|i| &lower[i * 2..i * 2 + 2])
            .collect::<Vec<_>>()
            .join(":"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_get_colons() {
        assert_eq!(
            mac_from_vbox("0800277AA2FC").as_deref(),
            Some("08:00:27:7a:a2:fc")
        );
        assert_eq!(mac_from_vbox("08:00:27:7a:a2:fc"), None);
    }

    #[test]
    fn uuids_lose_their_braces() {
        assert_eq!(
            uuid_key("{0898F36F-01c3-4b43-8aeb-36ba7adaef95}").as_deref(),
            Some("0898f36f-01c3-4b43-8aeb-36ba7adaef95")
        );
        assert_eq!(uuid_key("nope"), None);
    }
}
