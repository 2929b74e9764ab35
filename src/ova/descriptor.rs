//! The OVF descriptor each consumer imports, made from the VM model.
//!
//! One envelope (OVF 1.0, which every importer reads; OVF 2.0 StorageItem/EthernetPortItem are
//! refused by vSphere), three dialects:
//! - VMware (vSphere/ESXi, Workstation): `vmx-NN` system type, controllers as vSphere names
//!   them (`lsilogic`, `lsilogicsas`, `VirtualSCSI`, `buslogic`, `vmware.sata.ahci`,
//!   `vmware.nvme.controller`), stream-optimized VMDK disks, `vmw:osType`, firmware as
//!   `vmw:Config firmware=efi`, anything optional `ovf:required="false"`;
//! - VirtualBox: `virtualbox-2.2` system type, memory in `MegaBytes`, SATA as ResourceType 20
//!   `AHCI`, IDE `PIIX4`, its OS type in `vbox:OSType`, VMDK disks (the only disks it imports
//!   from an OVF), and its own `vbox:Machine` section (firmware, TPM, NIC attachments),
//!   written by [`crate::vmconfig::vbox::write`], its disks matched by `vbox:uuid`;
//! - XenServer (XenCenter's import): `xen-3.0-unknown`, VHD disks as disk drives (ResourceType
//!   17, which XenCenter's importer takes as it takes its own storage extents, 19) with their
//!   device number in `Connection`, the HVM boot settings XAPI wants as
//!   `xenovf:VirtualSystemOtherConfigurationData`.
//!
//! Sources: DSP0243 (OVF 1.1), DSP8023 (the RASD schema: child elements in alphabetical
//! order), VirtualBox's ovfreader.cpp, XenCenter's OVF exports, ../shared/notes/packages.md.
//! What a dialect cannot express is returned as warnings, never dropped silently.

use super::mapping;
use super::write::WrittenDisk;
use crate::error::{Error, Result};
use crate::vm::{ControllerKind, Firmware, NicModel, Vm};
use crate::vmconfig::vbox;
use quick_xml::escape::escape;
use std::fmt::Write as _;

/// The consumer an OVF is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// vSphere/ESXi and Workstation (`ovftool`'s dialect).
    Vmware,
    /// VirtualBox's appliance import.
    VirtualBox,
    /// XenCenter's OVF import into XenServer/XCP-ng.
    XenServer,
}

/// The OVF format URI of each disk format we put in a package.
pub const STREAM_OPTIMIZED_URI: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
/// The VHD format URI XenCenter writes.
pub const VHD_URI: &str = "http://www.microsoft.com/technet/virtualserver/downloads/vhdspec.mspx";

const NAMESPACES: &str = concat!(
    r#"xmlns="http://schemas.dmtf.org/ovf/envelope/1" "#,
    r#"xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" "#,
    r#"xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" "#,
    r#"xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" "#,
    r#"xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" "#,
    r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#
);

/// One `<Item>` of the hardware section: RASD elements, written in the schema's (alphabetical)
/// order whatever order they were added in.
#[derive(Default)]
struct Item {
    fields: Vec<(&'static str, String)>,
    required_false: bool,
    extra: String,
}

impl Item {
    fn new() -> Item {
        Item::default()
    }

    fn set(mut self, key: &'static str, value: impl ToString) -> Item {
        self.fields.push((key, value.to_string()));
        self
    }

    fn optional(mut self) -> Item {
        self.required_false = true;
        self
    }

    fn write(mut self, out: &mut String) {
        self.fields.sort_by_key(|(k, _)| *k);
        let attr = if self.required_false {
            r#" ovf:required="false""#
        } else {
            ""
        };
        let _ = writeln!(out, "      <Item{attr}>");
        for (k, v) in &self.fields {
            let _ = writeln!(out, "        <rasd:{k}>{}</rasd:{k}>", escape(v.as_str()));
        }
        out.push_str(&self.extra);
        out.push_str("      </Item>\n");
    }
}

/// The VMware hardware version: the oldest that has every feature the VM uses (ESXi 5.5 reads
/// vmx-10; NVMe needs 13; secure boot and a TPM need 14).
fn vmware_hardware_version(vm: &Vm) -> u32 {
    let nvme = vm
        .disks
        .iter()
        .any(|d| d.controller.kind == ControllerKind::Nvme);
    let secure = matches!(vm.firmware, Firmware::Uefi { secure_boot: true });
    if secure || vm.tpm {
        14
    } else if nvme {
        13
    } else {
        10
    }
}

/// A controller's RASD (ResourceType, ResourceSubType) in `dialect` (by the dialect's table
/// in [`super::mapping`]), and the kind actually written (a kind the dialect lacks becomes the
/// closest it has, with a warning).
fn controller_rasd(
    kind: ControllerKind,
    dialect: Dialect,
    warnings: &mut Vec<String>,
) -> (u32, Option<&'static str>) {
    let Some(r) = mapping::of(dialect).controller_for(kind, None) else {
        return (5, None);
    };
    if let Some(w) = r.warning {
        warnings.push(match dialect {
            Dialect::Vmware => format!("VMware has no {kind} controller: {w}"),
            _ => format!("VirtualBox's OVF import has no {kind} controller: {w}"),
        });
    }
    mapping::rasd(r.target)
}

/// A NIC's ResourceSubType in `dialect` (by the dialect's table in [`super::mapping`]).
fn nic_subtype(model: &NicModel, dialect: Dialect, warnings: &mut Vec<String>) -> &'static str {
    let Some(r) = mapping::of(dialect).nic_for(model, None) else {
        return "";
    };
    if let Some(w) = r.warning {
        let w = match dialect {
            Dialect::Vmware => format!("VMware has no {model} adapter: {w}"),
            Dialect::VirtualBox => format!("VirtualBox has no {model} adapter: {w}"),
            Dialect::XenServer => w.to_string(),
        };
        // The XenServer warning is about every NIC at once: said once.
        if dialect != Dialect::XenServer || !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    if r.target.starts_with('(') {
        ""
    } else {
        r.target
    }
}

/// The disks the descriptor lists, in the order of `vm.disks` that have content: `written`
/// holds one entry per such disk.
fn check_counts(vm: &Vm, written: &[WrittenDisk]) -> Result<()> {
    if vm.disks.len() != written.len() {
        return Err(Error::invalid(format!(
            "internal error: {} disks in the machine but {} written",
            vm.disks.len(),
            written.len()
        )));
    }
    Ok(())
}

/// The memory the descriptor of `vm` in `dialect` gives, in MiB (its memory item's unit),
/// with a warning for each change from the source's: VMware's sizes as a .vmx's
/// ([`crate::vmconfig::vmx::write::memsize`]), VirtualBox's as a .vbox's
/// ([`crate::vmconfig::vbox::write::ram_size`]), and for XenServer whole MiB, rounded up, and
/// 1 MiB for a source that gives none, as an XVA has it.
pub fn memory_mib(vm: &Vm, dialect: Dialect) -> (u64, Vec<String>) {
    match dialect {
        Dialect::Vmware => crate::vmconfig::vmx::write::memsize(vm),
        Dialect::VirtualBox => vbox::write::ram_size(vm),
        Dialect::XenServer => {
            if vm.memory_bytes == 0 {
                return (
                    1,
                    vec!["the VM states no memory size: it gets 1 MiB; set it with xe vm-memory-limits-set".into()],
                );
            }
            let (mib, w) = crate::vm::memory_in_units(
                vm.memory_bytes,
                1 << 20,
                "the OVF's memory item holds whole MiB",
            );
            (mib, w.into_iter().collect())
        }
    }
}

/// The descriptor of `vm` in `dialect`, with `written` the package's disks in the order of
/// `vm.disks`. Returns the XML and what the dialect could not carry.
pub fn descriptor(
    vm: &Vm,
    written: &[WrittenDisk],
    dialect: Dialect,
) -> Result<(String, Vec<String>)> {
    check_counts(vm, written)?;
    let mut warnings = Vec::new();
    let mut x = String::with_capacity(8192);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    match dialect {
        Dialect::Vmware => {
            let _ = writeln!(
                x,
                "<Envelope {NAMESPACES} xmlns:vmw=\"http://www.vmware.com/schema/ovf\">"
            );
        }
        Dialect::VirtualBox => {
            let _ = writeln!(
                x,
                "<Envelope ovf:version=\"1.0\" xml:lang=\"en-US\" {NAMESPACES} xmlns:vbox=\"http://www.virtualbox.org/ovf/machine\">"
            );
        }
        Dialect::XenServer => {
            let _ = writeln!(
                x,
                "<Envelope {NAMESPACES} xmlns:xenovf=\"http://schemas.citrix.com/ovf/envelope/1\">"
            );
        }
    }
    let format_uri = match dialect {
        Dialect::XenServer => VHD_URI,
        _ => STREAM_OPTIMIZED_URI,
    };
    // References and disks.
    x.push_str("  <References>\n");
    for (i, w) in written.iter().enumerate() {
        let _ = writeln!(
            x,
            "    <File ovf:href=\"{}\" ovf:id=\"file{}\" ovf:size=\"{}\"/>",
            escape(w.member.as_str()),
            i + 1,
            w.file_size
        );
    }
    x.push_str("  </References>\n");
    x.push_str("  <DiskSection>\n    <Info>Virtual disk information</Info>\n");
    // VirtualBox's import matches the vbox:Machine section's attachments to the disks by
    // these UUIDs (vbox:uuid, as its own exports write them).
    let vbox_media: Vec<vbox::write::Medium> = written
        .iter()
        .map(|w| vbox::write::Medium {
            uuid: vbox::write::derived_uuid(&[w.member.as_bytes(), w.digest.as_bytes()]),
            location: w.member.clone(),
        })
        .collect();
    for (i, w) in written.iter().enumerate() {
        let vbox_uuid = match dialect {
            Dialect::VirtualBox => format!(" vbox:uuid=\"{}\"", vbox_media[i].uuid.hyphenated()),
            _ => String::new(),
        };
        let _ = writeln!(
            x,
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk{}\" ovf:fileRef=\"file{}\" ovf:format=\"{format_uri}\" ovf:populatedSize=\"{}\"{vbox_uuid}/>",
            w.capacity,
            i + 1,
            i + 1,
            w.populated
        );
    }
    x.push_str("  </DiskSection>\n");
    // Networks, by name, each once.
    let mut networks: Vec<String> = Vec::new();
    for nic in &vm.nics {
        let name = nic.network.clone().unwrap_or_else(|| "VM Network".into());
        if !networks.contains(&name) {
            networks.push(name);
        }
    }
    if !networks.is_empty() {
        x.push_str("  <NetworkSection>\n    <Info>The list of logical networks</Info>\n");
        for n in &networks {
            let _ = writeln!(
                x,
                "    <Network ovf:name=\"{}\">\n      <Description>The {} network</Description>\n    </Network>",
                escape(n.as_str()),
                escape(n.as_str())
            );
        }
        x.push_str("  </NetworkSection>\n");
    }
    let name = escape(vm.name.as_str()).into_owned();
    // An id is a token (no spaces); the name keeps what the user called the machine.
    let id_text: String = vm
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let system_id = escape(id_text.as_str()).into_owned();
    let _ = writeln!(
        x,
        "  <VirtualSystem ovf:id=\"{system_id}\">\n    <Info>A virtual machine</Info>\n    <Name>{name}</Name>"
    );
    if let Some(d) = &vm.description {
        let _ = writeln!(
            x,
            "    <AnnotationSection ovf:required=\"false\">\n      <Info>A human-readable annotation</Info>\n      <Annotation>{}</Annotation>\n    </AnnotationSection>",
            escape(d.as_str())
        );
    }
    // The guest OS.
    let os = vm.guest_os.os;
    let cim = os.and_then(|o| o.cim()).or(vm.guest_os.cim_id).unwrap_or(1);
    let mut os_attrs = format!("ovf:id=\"{cim}\"");
    if dialect == Dialect::Vmware {
        let vmw = os
            .and_then(|o| o.vmware_api())
            .unwrap_or_else(|| "otherGuest64".to_string());
        let _ = write!(os_attrs, " vmw:osType=\"{}\"", escape(vmw.as_str()));
    }
    let _ = writeln!(
        x,
        "    <OperatingSystemSection {os_attrs}>\n      <Info>The kind of installed guest operating system</Info>"
    );
    if let Some(desc) = os
        .map(|o| o.name().to_string())
        .or(vm.guest_os.description.clone())
    {
        let _ = writeln!(
            x,
            "      <Description>{}</Description>",
            escape(desc.as_str())
        );
    }
    if dialect == Dialect::VirtualBox {
        let vbox = os.and_then(|o| o.virtualbox()).unwrap_or("Other_64");
        let _ = writeln!(
            x,
            "      <vbox:OSType ovf:required=\"false\">{vbox}</vbox:OSType>"
        );
    }
    x.push_str("    </OperatingSystemSection>\n");
    // Hardware.
    let system_type = match dialect {
        Dialect::Vmware => format!("vmx-{:02}", vmware_hardware_version(vm)),
        Dialect::VirtualBox => "virtualbox-2.2".to_string(),
        Dialect::XenServer => "xen-3.0-unknown".to_string(),
    };
    let _ = writeln!(
        x,
        "    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n      <System>\n        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n        <vssd:InstanceID>0</vssd:InstanceID>\n        <vssd:VirtualSystemIdentifier>{system_id}</vssd:VirtualSystemIdentifier>\n        <vssd:VirtualSystemType>{system_type}</vssd:VirtualSystemType>\n      </System>"
    );
    let mut next_id = 1u32;
    let mut id = || {
        let v = next_id;
        next_id += 1;
        v
    };
    let cpus = vm.cpus.count.max(1);
    let mut cpu = Item::new()
        .set("AllocationUnits", "hertz * 10^6")
        .set("Description", "Number of Virtual CPUs")
        .set("ElementName", format!("{cpus} virtual CPU(s)"))
        .set("InstanceID", id())
        .set("ResourceType", 3)
        .set("VirtualQuantity", cpus);
    if let (Dialect::Vmware, Some(cores)) = (dialect, vm.cpus.cores_per_socket) {
        cpu.extra = format!(
            "        <vmw:CoresPerSocket ovf:required=\"false\">{cores}</vmw:CoresPerSocket>\n"
        );
    } else if vm.cpus.cores_per_socket.is_some_and(|c| c > 1) {
        warnings.push(format!(
            "the {cpus} CPUs' topology (cores per socket) is not carried by this OVF dialect"
        ));
    }
    cpu.write(&mut x);
    let (mib, memory) = memory_mib(vm, dialect);
    warnings.extend(memory);
    let units = if dialect == Dialect::VirtualBox {
        "MegaBytes"
    } else {
        "byte * 2^20"
    };
    Item::new()
        .set("AllocationUnits", units)
        .set("Description", "Memory Size")
        .set("ElementName", format!("{mib}MB of memory"))
        .set("InstanceID", id())
        .set("ResourceType", 4)
        .set("VirtualQuantity", mib)
        .write(&mut x);
    // Controllers, each once, in the order their disks come; then the disks on them.
    let mut controllers: Vec<(crate::vm::Controller, u32)> = Vec::new();
    let mut per_type_index: Vec<(u32, u32)> = Vec::new();
    let controller_id = |c: &crate::vm::Controller,
                         controllers: &mut Vec<(crate::vm::Controller, u32)>,
                         per_type_index: &mut Vec<(u32, u32)>,
                         x: &mut String,
                         warnings: &mut Vec<String>,
                         id: &mut dyn FnMut() -> u32|
     -> u32 {
        if let Some((_, cid)) = controllers.iter().find(|(k, _)| k == c) {
            return *cid;
        }
        let (rtype, subtype) = controller_rasd(c.kind, dialect, warnings);
        let address = match per_type_index.iter_mut().find(|(t, _)| *t == rtype) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                per_type_index.push((rtype, 0));
                0
            }
        };
        let cid = id();
        let label = match rtype {
            5 => "IDE Controller",
            6 => "SCSI Controller",
            _ => "SATA Controller",
        };
        let mut item = Item::new()
            .set("Address", address)
            .set("Description", format!("{label} {address}"))
            .set("ElementName", format!("{label} {address}"))
            .set("InstanceID", cid)
            .set("ResourceType", rtype);
        if let Some(s) = subtype {
            item = item.set("ResourceSubType", s);
        }
        item.write(x);
        controllers.push((*c, cid));
        cid
    };
    for (i, disk) in vm.disks.iter().enumerate() {
        let parent = controller_id(
            &disk.controller,
            &mut controllers,
            &mut per_type_index,
            &mut x,
            &mut warnings,
            &mut id,
        );
        let instance = id();
        let mut item = Item::new()
            .set("AddressOnParent", disk.unit)
            .set("ElementName", format!("Hard Disk {}", i + 1))
            .set("HostResource", format!("ovf:/disk/vmdisk{}", i + 1))
            .set("InstanceID", instance)
            .set("Parent", parent);
        if dialect == Dialect::XenServer {
            // XenCenter writes storage extents (19) but imports disk drives (17) alike; 17
            // is what every other reader (virt-v2v, COT) looks for. The device number rides
            // in Connection, as XenCenter reads it.
            item = item.set("Connection", format!("vmdisk{},device={}", i + 1, i));
        }
        item = item.set("ResourceType", 17);
        item.write(&mut x);
    }
    for (i, cd) in vm.cdroms.iter().enumerate() {
        let parent = controller_id(
            &cd.controller,
            &mut controllers,
            &mut per_type_index,
            &mut x,
            &mut warnings,
            &mut id,
        );
        Item::new()
            .set("AddressOnParent", cd.unit)
            .set("AutomaticAllocation", "false")
            .set("ElementName", format!("CD/DVD drive {}", i + 1))
            .set("InstanceID", id())
            .set("Parent", parent)
            .set("ResourceType", 15)
            .optional()
            .write(&mut x);
        if !matches!(cd.source, crate::vm::DiskSource::Blank) {
            warnings.push(format!(
                "CD/DVD drive {}: its medium is not carried into the package (the drive is, empty)",
                i + 1
            ));
        }
    }
    for (i, nic) in vm.nics.iter().enumerate() {
        let network = nic.network.clone().unwrap_or_else(|| "VM Network".into());
        let mut item = Item::new()
            .set("AutomaticAllocation", "true")
            .set("Connection", network)
            .set("ElementName", format!("Network adapter {}", i + 1))
            .set("InstanceID", id())
            .set("ResourceType", 10);
        let sub = nic_subtype(&nic.model, dialect, &mut warnings);
        if !sub.is_empty() {
            item = item.set("ResourceSubType", sub);
        }
        if let Some(mac) = &nic.mac {
            item = item.set("Address", mac);
        }
        item.write(&mut x);
    }
    if dialect == Dialect::Vmware {
        Item::new()
            .set("AutomaticAllocation", "false")
            .set("ElementName", "Video card")
            .set("InstanceID", id())
            .set("ResourceType", 24)
            .optional()
            .write(&mut x);
    }
    if !vm.serial_ports.is_empty() {
        warnings.push(format!(
            "{} serial port(s) not carried into the package (their host ends do not travel)",
            vm.serial_ports.len()
        ));
    }
    match (dialect, vm.firmware) {
        (Dialect::Vmware, Firmware::Uefi { secure_boot }) => {
            x.push_str("      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n");
            if secure_boot {
                x.push_str("      <vmw:Config ovf:required=\"false\" vmw:key=\"uefi.secureBoot.enabled\" vmw:value=\"true\"/>\n");
            }
        }
        (Dialect::XenServer, firmware) => {
            let fw = if matches!(firmware, Firmware::Uefi { .. }) {
                "uefi"
            } else {
                "bios"
            };
            for (key, value) in [
                ("HVM_boot_policy", "BIOS order".to_string()),
                ("HVM_boot_params", format!("order=dc;firmware={fw}")),
                (
                    "platform",
                    "nx=true;acpi=1;apic=true;pae=true;viridian=true".to_string(),
                ),
            ] {
                let _ = writeln!(
                    x,
                    "      <xenovf:VirtualSystemOtherConfigurationData Name=\"{key}\">\n        <xenovf:Info>XenServer specific information</xenovf:Info>\n        <xenovf:Value>{}</xenovf:Value>\n      </xenovf:VirtualSystemOtherConfigurationData>",
                    escape(value.as_str())
                );
            }
        }
        _ => {}
    }
    // VirtualBox's machine section carries the TPM; the other dialects say what is lost.
    if let Some(w) = mapping::of(dialect).tpm(vm).and_then(|r| r.warning) {
        warnings.push(w.to_string());
    }
    x.push_str("    </VirtualHardwareSection>\n");
    if dialect == Dialect::VirtualBox {
        // VirtualBox's own section carries what the OVF items cannot (UEFI, a TPM, the NICs'
        // attachments, the exact OS type); the same writer makes our .vbox files.
        let (machine, w) =
            vbox::write::machine_xml(vm, &vbox_media, vbox::write::Layout::Ovf, "    ")?;
        x.push_str(&machine);
        for m in w {
            if !warnings.contains(&m) {
                warnings.push(m);
            }
        }
    }
    x.push_str("  </VirtualSystem>\n</Envelope>");
    Ok((x, warnings))
}
