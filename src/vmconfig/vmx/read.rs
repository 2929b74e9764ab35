//! A parsed .vmx into the VM model.
//!
//! Keys read (as VMware writes them; libvirt's src/vmx/vmx.c reads the same ones): displayName,
//! annotation, guestOS, memsize, numvcpus, cpuid.coresPerSocket, firmware,
//! uefi.secureBoot.enabled, vtpm.present, svga.*, scsiN/sataN/nvmeN/ideN controllers and their
//! `N:M` devices, ethernetN and serialN. A device counts only when its `present` key is TRUE
//! (VMware's default is absent = not there), and a disk only when its controller is present
//! too (VMware refuses to power on otherwise).

use super::parse::{Entry, VmxFile};
use crate::error::{Error, Result};
use crate::vm::{
    Cdrom, Controller, ControllerKind, Disk, DiskSource, Firmware, Nic, NicModel, ScsiModel,
    SerialPort, Video, Vm,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A bus a .vmx puts devices on. The order is the order disks are listed in: SCSI, NVMe,
/// SATA, IDE, then controller and unit (the order virt-v2v's input_vmx.ml lists them in, so
/// that both readers number a VM's disks alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bus {
    /// `scsiN:M` (4 controllers, units 0 to 63 except 7 on pvscsi of vHW 14+, 0 to 15 else).
    Scsi,
    /// `nvmeN:M` (4 controllers, 15 units; 64 from vHW 20).
    Nvme,
    /// `sataN:M` (4 controllers, 30 units).
    Sata,
    /// `ideN:M` (2 channels, 2 devices each).
    Ide,
}

impl Bus {
    /// The key prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Bus::Ide => "ide",
            Bus::Scsi => "scsi",
            Bus::Sata => "sata",
            Bus::Nvme => "nvme",
        }
    }

    /// The most controllers of this bus a VM has.
    pub fn max_controllers(self) -> u32 {
        match self {
            Bus::Ide => 2,
            _ => 4,
        }
    }

    /// The number of units per controller VMware allows at most (any hardware version).
    pub fn max_units(self) -> u32 {
        match self {
            Bus::Ide => 2,
            Bus::Scsi => 64,
            Bus::Sata => 30,
            Bus::Nvme => 64,
        }
    }
}

/// A `bus N:M` device address parsed from a key such as `scsi0:1.fileName`.
fn device_key(key: &str) -> Option<(Bus, u32, u32, String)> {
    let lower = key.to_ascii_lowercase();
    let (bus, rest) = [Bus::Scsi, Bus::Sata, Bus::Nvme, Bus::Ide]
        .into_iter()
        .find_map(|b| lower.strip_prefix(b.prefix()).map(|r| (b, r)))?;
    let (ctrl, rest) = rest.split_once(':')?;
    let (unit, field) = rest.split_once('.')?;
    let ctrl: u32 = small_number(ctrl)?;
    let unit: u32 = small_number(unit)?;
    Some((bus, ctrl, unit, field.to_string()))
}

/// A decimal number of at most 4 digits (no sign, no spaces).
fn small_number(s: &str) -> Option<u32> {
    (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// What a device is, from its deviceType (or its bus's default when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceKind {
    Disk,
    /// A CD drive with an ISO image.
    CdImage,
    /// A CD drive passed through from the host or the client (no medium we can carry).
    CdHost,
    /// Anything else (raw disks, tapes, generic SCSI passthrough).
    Other,
}

fn device_kind(device_type: Option<&str>) -> DeviceKind {
    match device_type.map(str::to_ascii_lowercase).as_deref() {
        None | Some("scsi-harddisk" | "ata-harddisk" | "disk" | "plaindisk" | "sparsedisk") => {
            DeviceKind::Disk
        }
        Some("cdrom-image") => DeviceKind::CdImage,
        Some("cdrom-raw" | "atapi-cdrom" | "scsi-passthru-cdrom") => DeviceKind::CdHost,
        Some(_) => DeviceKind::Other,
    }
}

/// The SCSI model of a `scsiN.virtualDev` value (by [`super::mapping::READ`]).
pub fn scsi_model(virtual_dev: &str) -> Option<ScsiModel> {
    match super::mapping::controller_named(&virtual_dev.to_ascii_lowercase()) {
        Some(ControllerKind::Scsi(m)) => Some(m),
        _ => None,
    }
}

/// The NIC model of an `ethernetN.virtualDev` value (by [`super::mapping::READ`]).
pub fn nic_model(virtual_dev: &str) -> NicModel {
    super::mapping::READ
        .nic_named(&virtual_dev.to_ascii_lowercase())
        .unwrap_or_else(|| NicModel::Other(virtual_dev.to_ascii_lowercase()))
}

/// True when a disk file name is an ESXi datastore path (`[datastore1] dir/x.vmdk`), which
/// only the ESXi host resolves.
pub fn is_datastore_path(name: &str) -> bool {
    name.trim_start().starts_with('[') && name.contains(']')
}

/// The machine a .vmx describes and, for each of its disks, the file name as written.
pub fn read(file: &VmxFile, path: &Path) -> Result<(Vm, Vec<String>)> {
    let err = |e: &Entry, what: String| {
        Error::invalid(format!("line {}: '{}': {what}", e.line, e.key)).with_path(path)
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vm".into());
    let mut vm = Vm::new(
        file.get("displayName")
            .filter(|n| !n.trim().is_empty())
            .map(str::to_string)
            .unwrap_or(stem),
    );
    if file.get("encryption.keySafe").is_some() {
        vm.warn("the VM is encrypted (encryption.keySafe): its real configuration and its disks are sealed with a password VMware holds; decrypt it in Workstation/vSphere first");
    }
    vm.description = file
        .get("annotation")
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    let number = |key: &str| -> Result<Option<u64>> {
        match file.entry(key) {
            None => Ok(None),
            Some(e) => e
                .value
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| err(e, format!("'{}' is not a number", e.value))),
        }
    };
    match number("memsize")? {
        Some(mib) if mib <= 1 << 32 => vm.memory_bytes = mib << 20,
        Some(mib) => {
            return Err(err(
                file.entry("memsize").expect("read above"),
                format!("{mib} MiB is more memory than any VM has"),
            ));
        }
        // VMware's default, which libvirt's and virt-v2v's readers assume too.
        None => {
            vm.memory_bytes = 32 << 20;
            vm.warn("no memsize: VMware's default of 32 MiB taken");
        }
    }
    let cpus = number("numvcpus")?.unwrap_or(1);
    if cpus == 0 || cpus > 4096 {
        return Err(err(
            file.entry("numvcpus")
                .expect("a value other than 1 was read"),
            format!("{cpus} virtual CPUs is out of range (1 to 4096)"),
        ));
    }
    vm.cpus.count = cpus as u32;
    if let Some(c) = number("cpuid.coresPerSocket")? {
        if c == 0 || c > 4096 {
            return Err(err(
                file.entry("cpuid.coresPerSocket").expect("read above"),
                format!("{c} cores per socket is out of range"),
            ));
        }
        if cpus % c != 0 {
            vm.warn(format!(
                "cpuid.coresPerSocket = {c} does not divide numvcpus = {cpus}: topology not carried"
            ));
        } else {
            vm.cpus.cores_per_socket = Some(c as u32);
        }
    }
    if let Some(id) = file.get("guestOS") {
        vm.guest_os.vmware_id = Some(id.to_string());
        vm.guest_os.resolve();
        if vm.guest_os.os.is_none() {
            vm.warn(format!("guestOS '{id}' is not in the mapping table"));
        }
    }
    if let Some(alt) = file.get("guestOSAltName") {
        vm.guest_os.description = Some(alt.to_string());
    }
    match file.get("firmware").map(str::to_ascii_lowercase).as_deref() {
        None | Some("bios") => {}
        Some("efi") => {
            vm.firmware = Firmware::Uefi {
                secure_boot: file.flag("uefi.secureBoot.enabled") == Some(true),
            }
        }
        Some(other) => vm.warn(format!("firmware '{other}' is not known: taken as BIOS")),
    }
    // The firmware's variables (UEFI boot entries, Secure Boot keys; a BIOS's setup) live in
    // their own file beside the .vmx, which no target reads.
    if let Some(nvram) = file.get("nvram").filter(|n| !n.trim().is_empty()) {
        vm.warn(format!(
            "the VM's NVRAM file ('{nvram}') is not carried; {}",
            vm.firmware.without_nvram()
        ));
    }
    vm.tpm = file.flag("vtpm.present") == Some(true);
    if file.flag("svga.present") != Some(false) {
        let vram = number("svga.vramSize")?;
        if vram.is_some() || file.flag("svga.present") == Some(true) {
            vm.video = Some(Video {
                model: Some("VMware SVGA".into()),
                vram_bytes: vram,
            });
        }
    }

    // Devices, gathered by address so that they come out in bus order whatever the file's.
    let mut devices: BTreeMap<(Bus, u32, u32), BTreeMap<String, &Entry>> = BTreeMap::new();
    let mut nics: BTreeMap<u32, BTreeMap<String, &Entry>> = BTreeMap::new();
    let mut serials: BTreeMap<u32, BTreeMap<String, &Entry>> = BTreeMap::new();
    for e in file.entries() {
        if let Some((bus, c, u, field)) = device_key(&e.key) {
            devices.entry((bus, c, u)).or_default().insert(field, e);
            continue;
        }
        let lower = e.key.to_ascii_lowercase();
        for (prefix, map) in [("ethernet", &mut nics), ("serial", &mut serials)] {
            if let Some((n, field)) = lower
                .strip_prefix(prefix)
                .and_then(|r| r.split_once('.'))
                .and_then(|(n, f)| Some((small_number(n)?, f.to_string())))
            {
                map.entry(n).or_default().insert(field, e);
            }
        }
    }
    let flag = |fields: &BTreeMap<String, &Entry>, f: &str| {
        fields
            .get(f)
            .map(|e| e.value.trim().eq_ignore_ascii_case("true"))
    };
    let value = |fields: &BTreeMap<String, &Entry>, f: &str| {
        fields.get(f).map(|e| e.value.as_str()).map(str::to_string)
    };
    let mut disk_files = Vec::new();
    for ((bus, c, u), fields) in &devices {
        let addr = format!("{}{c}:{u}", bus.prefix());
        if flag(fields, "present") != Some(true) {
            continue;
        }
        if *c >= bus.max_controllers() || *u >= bus.max_units() {
            vm.warn(format!(
                "{addr}: no such address on a VMware {} bus: ignored",
                bus.prefix()
            ));
            continue;
        }
        let kind = match bus {
            Bus::Ide => ControllerKind::Ide,
            Bus::Sata | Bus::Nvme | Bus::Scsi => {
                let ctrl = format!("{}{c}", bus.prefix());
                if file.flag(&format!("{ctrl}.present")) != Some(true) {
                    vm.warn(format!(
                        "{addr}: its controller {ctrl} is not present: ignored"
                    ));
                    continue;
                }
                match bus {
                    Bus::Sata => ControllerKind::Sata,
                    Bus::Nvme => ControllerKind::Nvme,
                    _ => {
                        let dev = file.get(&format!("{ctrl}.virtualDev"));
                        ControllerKind::Scsi(match dev.and_then(scsi_model) {
                            Some(m) => m,
                            None => {
                                vm.warn(format!(
                                    "{ctrl}.virtualDev is {}: taken as lsilogic",
                                    dev.map(|d| format!("'{d}'"))
                                        .unwrap_or_else(|| "absent".into())
                                ));
                                ScsiModel::LsiLogic
                            }
                        })
                    }
                }
            }
        };
        if *bus == Bus::Scsi && *u == 7 {
            vm.warn(format!(
                "{addr}: SCSI unit 7 is the controller's own; VMware does not put a device there"
            ));
        }
        let controller = Controller { kind, index: *c };
        let name = value(fields, "filename");
        match device_kind(value(fields, "devicetype").as_deref()) {
            DeviceKind::Disk => {
                let Some(name) = name.filter(|n| !n.is_empty()) else {
                    vm.warn(format!("{addr}: a disk without a fileName: ignored"));
                    continue;
                };
                if is_datastore_path(&name) {
                    let e = fields.get("filename").expect("name came from it");
                    return Err(err(
                        e,
                        format!(
                            "'{name}' is an ESXi datastore path, which only the ESXi host resolves: copy the VM's folder off the datastore and name the disk by its path there (relative to the .vmx)"
                        ),
                    ));
                }
                if value(fields, "mode")
                    .is_some_and(|m| m.to_ascii_lowercase().contains("nonpersistent"))
                {
                    vm.warn(format!("{addr}: an independent-nonpersistent disk: its base content is carried, changes of a running VM are not"));
                }
                vm.disks.push(Disk {
                    source: DiskSource::Path {
                        path: PathBuf::from(&name),
                    },
                    capacity_bytes: None,
                    controller,
                    unit: *u,
                    boot_order: None,
                });
                disk_files.push(name);
            }
            DeviceKind::CdImage => vm.cdroms.push(Cdrom {
                source: match name.filter(|n| !n.is_empty()) {
                    Some(n) => DiskSource::Path {
                        path: PathBuf::from(n),
                    },
                    None => DiskSource::Blank,
                },
                controller,
                unit: *u,
            }),
            DeviceKind::CdHost => vm.cdroms.push(Cdrom {
                source: DiskSource::Blank,
                controller,
                unit: *u,
            }),
            DeviceKind::Other => vm.warn(format!(
                "{addr}: a device of type '{}' is not carried",
                value(fields, "devicetype").unwrap_or_default()
            )),
        }
    }
    for (n, fields) in &nics {
        if flag(fields, "present") != Some(true) {
            continue;
        }
        let model = match value(fields, "virtualdev") {
            Some(d) => nic_model(&d),
            None => {
                vm.warn(format!("ethernet{n}.virtualDev is absent: VMware then picks the model from the guest OS; taken as vlance (PCnet)"));
                NicModel::PcNet
            }
        };
        let address_type = value(fields, "addresstype").map(|a| a.to_ascii_lowercase());
        let mac_key = match address_type.as_deref() {
            Some("static") => "address",
            _ => "generatedaddress",
        };
        let mac = value(fields, mac_key)
            .or_else(|| value(fields, "address"))
            .map(|m| m.trim().to_ascii_lowercase())
            .filter(|m| !m.is_empty());
        if let Some(m) = &mac
            && !is_mac(m)
        {
            let e = fields
                .get(mac_key)
                .or_else(|| fields.get("address"))
                .expect("mac came from one");
            return Err(err(e, format!("'{m}' is not a MAC address")));
        }
        let network = value(fields, "networkname")
            .or_else(|| value(fields, "vnet"))
            .or_else(|| value(fields, "connectiontype"))
            .filter(|n| !n.is_empty());
        if fields.contains_key("dvs.portgroupid") || fields.contains_key("opaquenetwork.id") {
            vm.warn(format!(
                "ethernet{n}: on a distributed or NSX switch, which other hypervisors do not have: attach it to a network on the target"
            ));
        }
        vm.nics.push(Nic {
            model,
            mac,
            network,
        });
    }
    for (n, fields) in &serials {
        if flag(fields, "present") != Some(true) {
            continue;
        }
        let connection = match (value(fields, "filetype"), value(fields, "filename")) {
            (Some(t), Some(f)) => Some(format!("{t}:{f}")),
            (None, Some(f)) => Some(f),
            (Some(t), None) => Some(t),
            (None, None) => None,
        };
        vm.serial_ports.push(SerialPort {
            index: *n,
            connection,
        });
    }
    if file.flag("floppy0.present") == Some(true)
        && file
            .get("floppy0.fileName")
            .is_some_and(|f| f.ends_with(".flp") || f.ends_with(".img"))
    {
        vm.warn("a floppy image is not carried");
    }
    Ok((vm, disk_files))
}

/// True for `xx:xx:xx:xx:xx:xx` in hex.
fn is_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(text: &str) -> Result<(Vm, Vec<String>)> {
        let f = super::super::parse::parse(text.as_bytes(), Path::new("d/t.vmx"))?;
        read(&f, Path::new("d/t.vmx"))
    }

    #[test]
    fn devices_need_present_and_their_controller() {
        let (v, files) = vm("scsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\nscsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"b.vmdk\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"a.vmdk\"\nscsi1:0.present = \"TRUE\"\nscsi1:0.fileName = \"c.vmdk\"\nsata0:0.present = \"FALSE\"\nsata0:0.fileName = \"d.vmdk\"\n").unwrap();
        assert_eq!(files, ["a.vmdk", "b.vmdk"]);
        assert_eq!(v.disks[1].unit, 1);
        assert_eq!(
            v.disks[0].controller.kind,
            ControllerKind::Scsi(ScsiModel::Pvscsi)
        );
        assert!(
            v.warnings
                .iter()
                .any(|w| w.contains("scsi1 is not present"))
        );
        assert_eq!(v.name, "t");
    }

    #[test]
    fn datastore_paths_are_a_clear_error() {
        let e = vm("scsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"[datastore1] web/web.vmdk\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("datastore path"), "{e}");
    }

    #[test]
    fn bad_numbers_and_macs_name_the_line() {
        assert!(
            vm("memsize = \"lots\"\n")
                .unwrap_err()
                .to_string()
                .contains("line 1: 'memsize'")
        );
        assert!(
            vm("numvcpus = \"0\"\n")
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        let e = vm("ethernet0.present = \"TRUE\"\nethernet0.addressType = \"static\"\nethernet0.address = \"00:50:56\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("not a MAC"), "{e}");
    }

    #[test]
    fn hostile_addresses_are_ignored_not_trusted() {
        let (v, _) = vm("ide9:0.present = \"TRUE\"\nide9:0.fileName = \"x.vmdk\"\nscsi99999999999:0.present = \"TRUE\"\n").unwrap();
        assert!(v.disks.is_empty());
    }
}
