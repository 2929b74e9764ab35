//! The VirtualSystem's sections (name, annotation, operating system, virtual hardware, and
//! VMware's and VirtualBox's extensions) turned into a [`Vm`].
//!
//! Items are read by CIM ResourceType: 3 processors, 4 memory, 5 IDE, 6 SCSI, 20 other
//! storage (SATA/AHCI, VMware NVMe), 17 disks, 15/16 CD/DVD, 10 NICs, 21 serial ports,
//! 24 video; OVF 2.0's StorageItem and EthernetPortItem the same way. Items of another
//! deployment configuration and `ovf:bound` min/max ranges are skipped.

use super::xml::{Element, Ns};
use super::{DiskRef, FileRef, Reader, is_true, parse_u64, section, units_multiplier};
use crate::error::Result;
use crate::vm::{
    Cdrom, Controller, ControllerKind, Disk, DiskSource, Firmware, GuestOs, Nic, NicModel,
    ScsiModel, SerialPort, Video, Vm,
};
use std::collections::HashMap;

/// What the hardware reader needs from the rest of the descriptor.
pub(super) struct Hardware<'a> {
    pub reader: &'a Reader<'a>,
    pub files: &'a [FileRef],
    pub disks: &'a [DiskRef],
    /// Disk ids marked bootable (XenCenter's xenovf:isBootable), in DiskSection order.
    pub bootable: &'a [String],
    pub configuration: Option<&'a str>,
}

/// One hardware item, its RASD properties looked up by local name.
struct Item<'a> {
    e: &'a Element,
    id: String,
    resource_type: u32,
}

impl<'a> Item<'a> {
    fn prop(&self, name: &str) -> Option<&'a str> {
        self.e.child_text(Ns::Rasd, name)
    }

    fn subtype(&self) -> &'a str {
        self.prop("ResourceSubType").unwrap_or("")
    }

    fn label(&self) -> String {
        let name = self
            .prop("ElementName")
            .or_else(|| self.prop("Caption"))
            .or_else(|| self.prop("Description"))
            .unwrap_or("");
        format!("item {} '{}'", self.id, name)
    }

    /// A `vmw:Config` value set on this item.
    fn vmw_config(&self, key: &str) -> Option<&'a str> {
        vmw_configs(self.e).find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// The `vmw:Config` and `vmw:ExtraConfig` key/value pairs directly under `e`.
fn vmw_configs(e: &Element) -> impl Iterator<Item = (&str, &str)> {
    e.children
        .iter()
        .filter(|c| c.ns == Ns::Vmw && (c.name == "Config" || c.name == "ExtraConfig"))
        .filter_map(|c| Some((c.attr(Ns::Vmw, "key")?, c.attr(Ns::Vmw, "value")?)))
}

impl Hardware<'_> {
    pub fn vm(&self, system: &Element, warnings: &mut Vec<String>) -> Result<(Vm, Option<String>)> {
        let r = self.reader;
        let hw_sections: Vec<&Element> =
            super::sections(system, "VirtualHardwareSection").collect();
        let hw = hw_sections.first().copied();
        if hw_sections.len() > 1 {
            warnings.push(format!(
                "the virtual system has {} VirtualHardwareSections; the first is read",
                hw_sections.len()
            ));
        }
        let vssd = hw.and_then(|h| h.child(Ns::Ovf, "System"));
        let system_type = vssd
            .and_then(|s| s.child_text(Ns::Vssd, "VirtualSystemType"))
            .map(str::to_string);

        let name = system
            .child_text(Ns::Ovf, "Name")
            .or_else(|| vssd.and_then(|s| s.child_text(Ns::Vssd, "VirtualSystemIdentifier")))
            .or_else(|| system.ovf_attr("id"))
            .unwrap_or("unnamed");
        let mut vm = Vm::new(name);
        vm.cpus.count = 0;
        vm.warnings.append(warnings);
        vm.description = super::section(system, "AnnotationSection")
            .and_then(|a| a.child_text(Ns::Ovf, "Annotation"))
            .map(str::to_string);
        vm.guest_os = self.guest_os(system, &mut vm);
        self.virtualbox_machine(system, &mut vm);

        let Some(hw) = hw else {
            vm.warn("the virtual system has no VirtualHardwareSection: no hardware described");
            return Ok((vm, system_type));
        };

        // XenCenter's export keeps the boot firmware in HVM_boot_params (`firmware=uefi`).
        let xen_uefi = hw
            .children
            .iter()
            .filter(|c| {
                c.ns == Ns::Xenovf
                    && c.name == "VirtualSystemOtherConfigurationData"
                    && c.attr(Ns::None, "Name") == Some("HVM_boot_params")
            })
            .filter_map(|c| c.child_text(Ns::Xenovf, "Value"))
            .any(|v| {
                v.split(';')
                    .any(|p| p.trim().eq_ignore_ascii_case("firmware=uefi"))
            });
        if xen_uefi {
            vm.firmware = Firmware::Uefi { secure_boot: false };
        }
        for (key, value) in vmw_configs(hw) {
            match key {
                "firmware" => match value.trim().to_ascii_lowercase().as_str() {
                    "efi" | "uefi" => {
                        if vm.firmware == Firmware::Bios {
                            vm.firmware = Firmware::Uefi { secure_boot: false };
                        }
                    }
                    "bios" => vm.firmware = Firmware::Bios,
                    other => vm.warn(format!("unknown VMware firmware '{other}', BIOS assumed")),
                },
                "uefi.secureBoot.enabled" | "bootOptions.efiSecureBootEnabled"
                    if is_true(value) =>
                {
                    vm.firmware = Firmware::Uefi { secure_boot: true };
                }
                "nvram" => vm.warn(format!(
                    "the VM's NVRAM file ('{value}') is not carried; UEFI variables start empty"
                )),
                // Settings a guest can depend on that the model has no place for.
                "nestedHVEnabled"
                | "flags.vbsEnabled"
                | "flags.vvtdEnabled"
                | "sevEnabled"
                | "cpuHotAddEnabled"
                | "memoryHotAddEnabled"
                    if is_true(value) =>
                {
                    vm.warn(format!("VMware setting {key}=true is not carried"))
                }
                _ => {}
            }
        }
        let items = self.items(hw, &mut vm)?;
        let mut controllers: HashMap<&str, Controller> = HashMap::new();
        let mut per_kind: HashMap<&'static str, u32> = HashMap::new();
        for item in &items {
            if let Some(kind) = controller_kind(item, &mut vm) {
                let bucket = match kind {
                    ControllerKind::Ide => "ide",
                    ControllerKind::Sata => "sata",
                    ControllerKind::Scsi(_) => "scsi",
                    ControllerKind::Nvme => "nvme",
                    ControllerKind::VirtioBlk => "virtio",
                };
                let n = per_kind.entry(bucket).or_insert(0);
                // IDE's Address is the channel (0 primary, 1 secondary): keep it as the index.
                let index = match (kind, item.prop("Address").and_then(parse_u64)) {
                    (ControllerKind::Ide, Some(a)) if a < 4 => a as u32,
                    _ => *n,
                };
                *n += 1;
                controllers.insert(item.id.as_str(), Controller { kind, index });
            }
        }

        let mut cpu_seen = false;
        let mut memory_seen = false;
        for item in &items {
            match item.resource_type {
                3 => {
                    if cpu_seen {
                        vm.warn(format!(
                            "{}: a second processor item, ignored",
                            item.label()
                        ));
                        continue;
                    }
                    cpu_seen = true;
                    let count = self.quantity(item, "VirtualQuantity")?.unwrap_or(1);
                    vm.cpus.count = u32::try_from(count).map_err(|_| {
                        r.err(item.e, format!("{}: {count} processors", item.label()))
                    })?;
                    vm.cpus.cores_per_socket = item
                        .e
                        .child_text(Ns::Vmw, "CoresPerSocket")
                        .and_then(parse_u64)
                        .and_then(|c| u32::try_from(c).ok())
                        .filter(|c| *c > 0);
                }
                4 => {
                    if memory_seen {
                        vm.warn(format!("{}: a second memory item, ignored", item.label()));
                        continue;
                    }
                    memory_seen = true;
                    vm.memory_bytes = self.memory(item, &mut vm)?;
                }
                // XenCenter writes disks as ResourceType 19 (storage extent) without a Parent.
                17 | 19 if item.resource_type == 17 || item.prop("HostResource").is_some() => {
                    let (controller, unit) = self.attachment(item, &controllers, &mut vm)?;
                    let (source, capacity) = self.disk_source(item)?;
                    let boot_order = host_resource(item.prop("HostResource").unwrap_or(""))
                        .and_then(|r| match r {
                            HostResource::Disk(id) => self.bootable.iter().position(|b| b == id),
                            HostResource::File(_) => None,
                        })
                        .map(|i| i as u32);
                    vm.disks.push(Disk {
                        source,
                        capacity_bytes: capacity,
                        controller,
                        unit,
                        boot_order,
                    });
                }
                15 | 16 => {
                    let (controller, unit) = self.attachment(item, &controllers, &mut vm)?;
                    let source = self.cd_source(item, &mut vm)?;
                    vm.cdroms.push(Cdrom {
                        source,
                        controller,
                        unit,
                    });
                }
                10 => {
                    let nic = self.nic(item, &mut vm);
                    vm.nics.push(nic);
                }
                21 => {
                    let index = vm.serial_ports.len() as u32;
                    vm.serial_ports.push(SerialPort {
                        index,
                        connection: item.prop("Connection").map(str::to_string),
                    });
                }
                24 => {
                    if vm.video.is_some() {
                        vm.warn(format!("{}: a second video adapter, ignored", item.label()));
                        continue;
                    }
                    let model = Some(item.subtype())
                        .filter(|s| !s.is_empty())
                        .or_else(|| item.prop("ElementName"))
                        .map(str::to_string);
                    let vram_bytes = item
                        .vmw_config("videoRamSizeInKB")
                        .and_then(parse_u64)
                        .and_then(|k| k.checked_mul(1024));
                    vm.video = Some(Video { model, vram_bytes });
                }
                5 | 6 | 20 => {} // controllers, read above
                1 if item.subtype().eq_ignore_ascii_case("vmware.vtpm") => vm.tpm = true,
                other => {
                    let what = match other {
                        14 => "floppy drive",
                        22 => "parallel port",
                        23 => "USB controller",
                        35 => "sound card",
                        1 => "device",
                        _ => "device of an unknown ResourceType",
                    };
                    let sub = item.subtype();
                    let sub = if sub.is_empty() {
                        String::new()
                    } else {
                        format!(" ({sub})")
                    };
                    vm.warn(format!(
                        "not carried: {what}{sub}, {} (ResourceType {other})",
                        item.label()
                    ));
                }
            }
        }
        if !cpu_seen {
            vm.warn("the hardware names no processor item; CPU count unknown (0)");
        }
        if !memory_seen {
            vm.warn("the hardware names no memory item; memory unknown (0)");
        }
        Ok((vm, system_type))
    }

    /// The items that apply to the chosen configuration, with InstanceID and ResourceType read.
    fn items<'e>(&self, hw: &'e Element, vm: &mut Vm) -> Result<Vec<Item<'e>>> {
        let r = self.reader;
        let mut out: Vec<Item<'e>> = Vec::new();
        for e in &hw.children {
            if e.ns != Ns::Ovf
                || !matches!(e.name.as_str(), "Item" | "StorageItem" | "EthernetPortItem")
            {
                continue;
            }
            if let Some(configs) = e.ovf_attr("configuration") {
                let applies = self
                    .configuration
                    .is_some_and(|c| configs.split_whitespace().any(|x| x == c));
                if !applies {
                    continue;
                }
            }
            if matches!(e.ovf_attr("bound").map(str::trim), Some("min" | "max")) {
                continue;
            }
            let id = e
                .child_text(Ns::Rasd, "InstanceID")
                .or_else(|| e.child_text(Ns::Rasd, "InstanceId"))
                .ok_or_else(|| r.err(e, format!("<{}> has no InstanceID", e.name)))?
                .to_string();
            let rt = e
                .child_text(Ns::Rasd, "ResourceType")
                .ok_or_else(|| r.err(e, format!("item {id} has no ResourceType")))?;
            let resource_type = parse_u64(rt)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    r.err(e, format!("item {id}: ResourceType '{rt}' is not a number"))
                })?;
            let item = Item {
                e,
                id,
                resource_type,
            };
            if let Some(prev) = out.iter().position(|o| o.id == item.id) {
                // The same InstanceID twice: a configuration-specific item overrides a general one.
                if e.ovf_attr("configuration").is_some() {
                    out[prev] = item;
                } else {
                    vm.warn(format!(
                        "{}: InstanceID used twice; the first is kept",
                        item.label()
                    ));
                }
                continue;
            }
            out.push(item);
        }
        Ok(out)
    }

    fn quantity(&self, item: &Item<'_>, prop: &str) -> Result<Option<u64>> {
        match item.prop(prop) {
            None => Ok(None),
            Some(v) => parse_u64(v).map(Some).ok_or_else(|| {
                self.reader.err(
                    item.e,
                    format!("{}: {prop} '{v}' is not a whole number", item.label()),
                )
            }),
        }
    }

    fn memory(&self, item: &Item<'_>, vm: &mut Vm) -> Result<u64> {
        let r = self.reader;
        let Some(q) = self.quantity(item, "VirtualQuantity")? else {
            vm.warn(format!(
                "{}: memory item without VirtualQuantity",
                item.label()
            ));
            return Ok(0);
        };
        let scale = match item.prop("AllocationUnits") {
            Some(u) => units_multiplier(u).ok_or_else(|| {
                r.err(
                    item.e,
                    format!("{}: unknown memory AllocationUnits '{u}'", item.label()),
                )
            })?,
            None => {
                vm.warn(format!(
                    "{}: memory without AllocationUnits; read as MiB (VMware's and VirtualBox's unit)",
                    item.label()
                ));
                1 << 20
            }
        };
        q.checked_mul(scale)
            .filter(|b| *b <= super::MAX_CAPACITY)
            .ok_or_else(|| r.err(item.e, format!("{}: memory size overflows", item.label())))
    }

    /// The controller and unit of a disk or CD item.
    fn attachment(
        &self,
        item: &Item<'_>,
        controllers: &HashMap<&str, Controller>,
        vm: &mut Vm,
    ) -> Result<(Controller, u32)> {
        let r = self.reader;
        let controller = match item.prop("Parent") {
            Some(p) => *controllers.get(p).ok_or_else(|| {
                r.err(
                    item.e,
                    format!(
                        "{}: Parent '{p}' is not a storage controller item of this hardware section",
                        item.label()
                    ),
                )
            })?,
            None => {
                // XenServer's virtual block devices have no controller; HVM guests see the
                // first ones on IDE.
                vm.warn(format!(
                    "{}: drive without a Parent controller (a XenServer virtual block device?); placed on IDE",
                    item.label()
                ));
                Controller {
                    kind: ControllerKind::Ide,
                    index: 0,
                }
            }
        };
        let unit = match item.prop("AddressOnParent") {
            Some(a) => parse_u64(a)
                .and_then(|u| u32::try_from(u).ok())
                .ok_or_else(|| {
                    r.err(
                        item.e,
                        format!("{}: AddressOnParent '{a}' is not a number", item.label()),
                    )
                })?,
            None => {
                // The next unit not taken on that controller.
                let taken = vm
                    .disks
                    .iter()
                    .map(|d| (d.controller, d.unit))
                    .chain(vm.cdroms.iter().map(|c| (c.controller, c.unit)));
                taken
                    .filter(|(c, _)| *c == controller)
                    .map(|(_, u)| u + 1)
                    .max()
                    .unwrap_or(0)
            }
        };
        Ok((controller, unit))
    }

    fn disk_source(&self, item: &Item<'_>) -> Result<(DiskSource, Option<u64>)> {
        let r = self.reader;
        let Some(res) = item.prop("HostResource") else {
            return Err(r.err(
                item.e,
                format!("{}: a disk without HostResource", item.label()),
            ));
        };
        match host_resource(res) {
            Some(HostResource::Disk(id)) => {
                let disk = self.disks.iter().find(|d| d.disk_id == id).ok_or_else(|| {
                    r.err(
                        item.e,
                        format!(
                            "{}: HostResource '{res}' names disk '{id}', which DiskSection does not list",
                            item.label()
                        ),
                    )
                })?;
                let source = match &disk.file_ref {
                    Some(f) => {
                        let file = self
                            .files
                            .iter()
                            .find(|x| &x.id == f)
                            .expect("checked in DiskSection");
                        DiskSource::PackageFile {
                            id: Some(file.id.clone()),
                            href: file.href.clone(),
                        }
                    }
                    None => DiskSource::Blank,
                };
                Ok((source, disk.capacity))
            }
            Some(HostResource::File(id)) => {
                let file = self.file(item, res, id)?;
                Ok((
                    DiskSource::PackageFile {
                        id: Some(file.id.clone()),
                        href: file.href.clone(),
                    },
                    None,
                ))
            }
            None => Err(r.err(
                item.e,
                format!(
                    "{}: HostResource '{res}' is neither ovf:/disk/<id> nor ovf:/file/<id>",
                    item.label()
                ),
            )),
        }
    }

    fn file<'f>(&'f self, item: &Item<'_>, res: &str, id: &str) -> Result<&'f FileRef> {
        self.files.iter().find(|f| f.id == id).ok_or_else(|| {
            self.reader.err(
                item.e,
                format!(
                    "{}: HostResource '{res}' names file '{id}', which References does not list",
                    item.label()
                ),
            )
        })
    }

    fn cd_source(&self, item: &Item<'_>, vm: &mut Vm) -> Result<DiskSource> {
        let Some(res) = item.prop("HostResource") else {
            return Ok(DiskSource::Blank);
        };
        match host_resource(res) {
            Some(HostResource::File(id)) => {
                let file = self.file(item, res, id)?;
                Ok(DiskSource::PackageFile {
                    id: Some(file.id.clone()),
                    href: file.href.clone(),
                })
            }
            Some(HostResource::Disk(_)) => Ok(self.disk_source(item)?.0),
            None => {
                vm.warn(format!(
                    "{}: CD/DVD medium '{res}' is not in the package; the drive is left empty",
                    item.label()
                ));
                Ok(DiskSource::Blank)
            }
        }
    }

    fn nic(&self, item: &Item<'_>, vm: &mut Vm) -> Nic {
        let sub = item.subtype();
        // COT writes several acceptable models separated by blanks ("VMXNET3 virtio").
        let models: Vec<&str> = sub.split_whitespace().collect();
        let model = match models.iter().find_map(|m| nic_model(m)) {
            Some(m) => {
                if models.len() > 1 {
                    vm.warn(format!(
                        "{}: NIC offers models '{sub}'; {m} is used",
                        item.label()
                    ));
                }
                m
            }
            None if sub.is_empty() => {
                vm.warn(format!(
                    "{}: NIC without a model (ResourceSubType); e1000 assumed",
                    item.label()
                ));
                NicModel::E1000
            }
            None => NicModel::Other(sub.to_string()),
        };
        let mac = match item.prop("Address") {
            Some(a) => {
                let m = normalize_mac(a);
                if m.is_none() {
                    vm.warn(format!(
                        "{}: MAC address '{a}' is not valid, dropped",
                        item.label()
                    ));
                }
                m
            }
            None => None,
        };
        Nic {
            model,
            mac,
            network: item.prop("Connection").map(str::to_string),
        }
    }

    fn guest_os(&self, system: &Element, vm: &mut Vm) -> GuestOs {
        let mut g = GuestOs::default();
        if let Some(os) = section(system, "OperatingSystemSection") {
            if let Some(id) = os.ovf_attr("id") {
                match parse_u64(id).and_then(|v| u16::try_from(v).ok()) {
                    Some(v) => g.cim_id = Some(v),
                    None => vm.warn(format!(
                        "OperatingSystemSection ovf:id '{id}' is not a number"
                    )),
                }
            }
            g.vmware_id = os.attr(Ns::Vmw, "osType").map(str::to_string);
            g.virtualbox_id = os.child_text(Ns::Vbox, "OSType").map(str::to_string);
            g.description = os.child_text(Ns::Ovf, "Description").map(str::to_string);
        }
        g.resolve();
        g
    }

    /// VirtualBox's own machine description: where it says more than the OVF items (OS type,
    /// firmware), take it.
    fn virtualbox_machine(&self, system: &Element, vm: &mut Vm) {
        let Some(m) = system.child(Ns::Vbox, "Machine") else {
            return;
        };
        if vm.guest_os.virtualbox_id.is_none()
            && let Some(t) = m.attr(Ns::None, "OSType")
        {
            vm.guest_os.virtualbox_id = Some(t.to_string());
            vm.guest_os.resolve();
        }
        // Its children sit in whatever default namespace the envelope declares: match by name.
        let hardware = m.children.iter().find(|c| c.name == "Hardware");
        let firmware = hardware.and_then(|h| h.children.iter().find(|c| c.name == "Firmware"));
        if let Some(t) = firmware.and_then(|f| f.attr(Ns::None, "type"))
            && t.to_ascii_uppercase().starts_with("EFI")
            && vm.firmware == Firmware::Bios
        {
            vm.firmware = Firmware::Uefi { secure_boot: false };
        }
        // VirtualBox 7 writes <TrustedPlatformModule type="v2_0"/> ("None" when absent).
        let tpm = hardware.and_then(|h| {
            h.children
                .iter()
                .find(|c| c.name == "TrustedPlatformModule")
        });
        if let Some(t) = tpm.and_then(|t| t.attr(Ns::None, "type"))
            && !t.eq_ignore_ascii_case("none")
        {
            vm.tpm = true;
        }
    }
}

enum HostResource<'a> {
    Disk(&'a str),
    File(&'a str),
}

/// `ovf:/disk/ID`, `/disk/ID` (OVF 0.9), `ovf:/file/ID`, `ovf://disk/ID` (seen in the wild).
fn host_resource(res: &str) -> Option<HostResource<'_>> {
    let rest = res.trim();
    let rest = rest.strip_prefix("ovf:").unwrap_or(rest);
    let rest = rest.trim_start_matches('/');
    if let Some(id) = rest.strip_prefix("disk/") {
        return (!id.is_empty()).then_some(HostResource::Disk(id));
    }
    if let Some(id) = rest.strip_prefix("file/") {
        return (!id.is_empty()).then_some(HostResource::File(id));
    }
    None
}

fn controller_kind(item: &Item<'_>, vm: &mut Vm) -> Option<ControllerKind> {
    let sub = item.subtype();
    let lower = sub.to_ascii_lowercase();
    match item.resource_type {
        5 => Some(ControllerKind::Ide),
        6 => {
            // COT writes several acceptable models separated by blanks ("virtio lsilogic").
            let models: Vec<&str> = lower.split_whitespace().collect();
            let known = models.iter().find_map(|m| scsi_model(m));
            match known {
                Some(m) => {
                    if models.len() > 1 {
                        vm.warn(format!(
                            "{}: SCSI controller offers models '{sub}'; {m} is used",
                            item.label()
                        ));
                    }
                    Some(ControllerKind::Scsi(m))
                }
                None => {
                    vm.warn(format!(
                        "{}: SCSI controller model '{sub}' unknown; lsilogic assumed",
                        item.label()
                    ));
                    Some(ControllerKind::Scsi(ScsiModel::LsiLogic))
                }
            }
        }
        20 | 1 if lower.contains("nvme") => Some(ControllerKind::Nvme),
        20 => Some(ControllerKind::Sata),
        1 if lower.contains("sata") || lower.contains("ahci") => Some(ControllerKind::Sata),
        _ => None,
    }
}

fn nic_model(m: &str) -> Option<NicModel> {
    super::mapping::READ.nic_named(&m.to_ascii_lowercase())
}

fn scsi_model(m: &str) -> Option<ScsiModel> {
    match super::mapping::READ.controller_named(m) {
        Some(ControllerKind::Scsi(m)) => Some(m),
        _ => None,
    }
}

/// `00:50:56:AB:CD:EF`, `00-50-56-ab-cd-ef` or `005056ABCDEF` as `00:50:56:ab:cd:ef`.
fn normalize_mac(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(
        (0..6)
            .map(|i| &hex[i * 2..i * 2 + 2])
            .collect::<Vec<_>>()
            .join(":"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            normalize_mac("00:50:56:AB:CD:EF").as_deref(),
            Some("00:50:56:ab:cd:ef")
        );
        assert_eq!(
            normalize_mac("0800272AFB4E").as_deref(),
            Some("08:00:27:2a:fb:4e")
        );
        assert_eq!(
            normalize_mac("00-50-56-ab-cd-ef").as_deref(),
            Some("00:50:56:ab:cd:ef")
        );
        assert_eq!(normalize_mac("zz"), None);
    }

    #[test]
    fn host_resources() {
        assert!(matches!(
            host_resource("ovf:/disk/vmdisk1"),
            Some(HostResource::Disk("vmdisk1"))
        ));
        assert!(matches!(
            host_resource("/disk/vmdisk1"),
            Some(HostResource::Disk("vmdisk1"))
        ));
        assert!(matches!(
            host_resource("ovf:/file/f1"),
            Some(HostResource::File("f1"))
        ));
        assert!(host_resource("nonexistent.vmdk").is_none());
        assert!(host_resource("ovf:/disk/").is_none());
    }
}
