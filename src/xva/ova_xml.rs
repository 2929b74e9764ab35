//! `ova.xml`, the description at the head of an XVA: one XML-RPC value (a struct) holding a
//! `version` block and an `objects` array of `{class, id, snapshot}` records, the database
//! records of the VM and of what it refers to (VBDs, VDIs, VIFs, networks, SRs), linked by
//! their `id`s (`Ref:3`).
//!
//! The XML is read with the bounded tree of [`crate::ovf::xml`] (no entities, capped size,
//! depth and element count), then turned into [`Value`]s and into the [`Vm`] model. XAPI
//! writes 64-bit integers as strings and Xen Orchestra as untyped values; both are read, as
//! are `<int>`/`<i4>`/`<i8>` and booleans written as `<boolean>` or as `true`/`false` text.

use crate::error::{Error, Result};
use crate::ovf::xml::{self, Element, Ns};
use crate::vm::{Cdrom, Cpus, Disk, DiskSource, Firmware, Nic, Video, Vm};
use std::collections::HashMap;

/// One XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<string>` or an untyped value's text.
    Str(String),
    /// `<int>`, `<i4>` or `<i8>`.
    Int(i64),
    /// `<boolean>`.
    Bool(bool),
    /// `<double>`, as written.
    Double(String),
    /// `<dateTime.iso8601>`, as written.
    DateTime(String),
    /// `<base64>`, as written.
    Base64(String),
    /// `<nil/>`.
    Nil,
    /// `<struct>`: its members in order.
    Struct(Vec<(String, Value)>),
    /// `<array>`.
    Array(Vec<Value>),
}

impl Value {
    /// The member `name` of a struct.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(m) => m.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as text: a string, or a number or boolean written out.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Str(s) | Value::Double(s) | Value::DateTime(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The value as an unsigned number (XAPI writes 64-bit integers as strings).
    pub fn unsigned(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The value as a boolean (`<boolean>`, or `true`/`false`/`1`/`0` text).
    pub fn boolean(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            Value::Str(s) => match s.trim() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Turns the `<value>` element `e` into a [`Value`]. Recursion is bounded by the tree's depth
/// limit ([`xml::MAX_DEPTH`]).
fn value_of(e: &Element, name: &str) -> Result<Value> {
    let bad = |what: String| {
        Error::corrupt(format!("ova.xml is not valid XML-RPC: {what}"))
            .at_offset(e.offset)
            .with_path(name)
    };
    if e.name != "value" || e.ns != Ns::None {
        return Err(bad(format!("<{}> where a <value> belongs", e.name)));
    }
    let Some(typed) = e.children.first() else {
        // An untyped value is a string.
        return Ok(Value::Str(e.text.clone()));
    };
    if e.children.len() > 1 {
        return Err(bad("a <value> with more than one type element".into()));
    }
    let text = typed.text.trim();
    Ok(match typed.name.as_str() {
        "string" => Value::Str(typed.text.clone()),
        "int" | "i4" | "i8" => Value::Int(
            text.parse()
                .map_err(|_| bad(format!("<{}>{}</{0}> is not an integer", typed.name, text)))?,
        ),
        "boolean" => match text {
            "1" => Value::Bool(true),
            "0" => Value::Bool(false),
            other => return Err(bad(format!("<boolean>{other}</boolean> is not 0 or 1"))),
        },
        "double" => Value::Double(text.to_string()),
        "dateTime.iso8601" => Value::DateTime(text.to_string()),
        "base64" => Value::Base64(text.to_string()),
        "nil" => Value::Nil,
        "struct" => {
            let mut members = Vec::with_capacity(typed.children.len());
            for m in &typed.children {
                if m.name != "member" {
                    return Err(bad(format!("<{}> inside a <struct>", m.name)));
                }
                let key = m
                    .child(Ns::None, "name")
                    .ok_or_else(|| bad("a struct <member> without a <name>".into()))?;
                let v = m
                    .child(Ns::None, "value")
                    .ok_or_else(|| bad(format!("struct member '{}' has no <value>", key.text)))?;
                members.push((key.text.clone(), value_of(v, name)?));
            }
            Value::Struct(members)
        }
        "array" => {
            let data = typed
                .child(Ns::None, "data")
                .ok_or_else(|| bad("an <array> without <data>".into()))?;
            Value::Array(
                data.children
                    .iter()
                    .map(|v| value_of(v, name))
                    .collect::<Result<_>>()?,
            )
        }
        other => return Err(bad(format!("unknown value type <{other}>"))),
    })
}

/// Parses XML-RPC text whose root is a `<value>` (as `ova.xml` is) or a `<methodResponse>` /
/// `<params>` wrapper around one.
pub fn parse_value(bytes: &[u8], name: &str) -> Result<Value> {
    let root = xml::parse(bytes, name)?;
    let mut e = &root;
    // Accept what Python's xmlrpc.client.dumps writes around a value too.
    loop {
        match e.name.as_str() {
            "value" => return value_of(e, name),
            "params" | "param" | "methodResponse" | "methodCall" => {
                e = e
                    .children
                    .iter()
                    .find(|c| matches!(c.name.as_str(), "params" | "param" | "value"))
                    .ok_or_else(|| {
                        Error::corrupt(format!("ova.xml: <{}> holds no value", e.name))
                            .with_path(name)
                    })?;
            }
            other => {
                return Err(Error::corrupt(format!(
                    "ova.xml is not an XVA description: its root element is <{other}>, not an XML-RPC <value>"
                ))
                .with_path(name));
            }
        }
    }
}

/// The `version` block of `ova.xml`: who exported the VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Version {
    /// The exporting host.
    pub hostname: Option<String>,
    /// When it exported.
    pub date: Option<String>,
    /// `product_brand` (XenServer, XCP-ng).
    pub product_brand: Option<String>,
    /// `product_version` (8.2.1).
    pub product_version: Option<String>,
    /// `build_number`.
    pub build_number: Option<String>,
    /// `xapi_major`.
    pub xapi_major: Option<u64>,
    /// `xapi_minor`.
    pub xapi_minor: Option<u64>,
    /// `export_vsn`: 0 for exports without inline checksums, 2 for current ones.
    pub export_vsn: u64,
}

/// A disk of the VM, with the VDI whose chunks hold its content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XvaDisk {
    /// The VDI's id in `ova.xml` (`Ref:3`): the folder of its chunk members.
    pub vdi: String,
    /// The VDI's name.
    pub name: Option<String>,
    /// The VBD's `userdevice` (0 is the first disk, xvda).
    pub userdevice: u32,
    /// The VBD's `device` (`xvda`), when set.
    pub device: Option<String>,
    /// The VDI's `virtual_size` in bytes.
    pub virtual_size: u64,
    /// The VBD's `bootable` flag.
    pub bootable: bool,
}

/// Which layout an XVA has, as its `ova.xml` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportKind {
    /// Today's layout (XenServer 4 on, XCP-ng, Xen Orchestra): XML-RPC records, and each disk
    /// as 1 MiB chunk members with their checksums (see [`super::disk`]).
    Chunked,
    /// The legacy layout (`<appliance version="0.1">`): each disk a folder of gzip files
    /// (see [`super::legacy`]).
    Legacy,
}

/// What `ova.xml` says: the exporter and the VM with its disks.
#[derive(Debug, Clone)]
pub struct Description {
    /// The layout of the export.
    pub kind: ExportKind,
    /// The version block (all unset but `export_vsn` 0 for a legacy export).
    pub version: Version,
    /// The VM, its disks in the order of [`Description::disks`].
    pub vm: Vm,
    /// The disks' VDIs, one per entry of `vm.disks`.
    pub disks: Vec<XvaDisk>,
}

/// The warning for a paravirtualized guest.
pub(crate) const PV_GUEST: &str = "a paravirtualized (PV) guest: it boots a kernel through Xen's bootloader and has no emulated devices; another hypervisor needs the guest to boot from its disk with its own bootloader and drivers";

/// The warning for an HVM guest's disks.
pub(crate) const PV_DRIVERS: &str = "the guest reads its disks through Xen PV drivers (xvd*); on another hypervisor it needs that hypervisor's drivers or the emulated controllers shown";

/// A record of `objects`.
struct Object<'a> {
    class: String,
    snapshot: &'a Value,
}

fn field<'a>(rec: &'a Value, name: &str) -> Option<&'a Value> {
    rec.get(name)
}

fn text(rec: &Value, name: &str) -> Option<String> {
    field(rec, name)
        .and_then(Value::text)
        .filter(|s| !s.is_empty())
}

fn number(rec: &Value, name: &str) -> Option<u64> {
    field(rec, name).and_then(Value::unsigned)
}

fn refs(rec: &Value, name: &str) -> Vec<String> {
    match field(rec, name) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::text).collect(),
        _ => Vec::new(),
    }
}

fn map_text(rec: &Value, map: &str, key: &str) -> Option<String> {
    field(rec, map).and_then(|m| text(m, key))
}

/// A reference that points nowhere (`OpaqueRef:NULL`) or is empty.
fn is_null(r: &str) -> bool {
    r.is_empty() || r == "OpaqueRef:NULL"
}

/// Parses `ova.xml` (`bytes`, named `name` in messages) into the VM model: XML-RPC records,
/// or a legacy `<appliance>` (see [`super::legacy`]).
pub fn parse(bytes: &[u8], name: &str) -> Result<Description> {
    if super::legacy::is_appliance(bytes) {
        return super::legacy::parse(bytes, name);
    }
    let root = parse_value(bytes, name)?;
    let bad = |what: String| Error::corrupt(format!("ova.xml: {what}")).with_path(name);
    if !matches!(root, Value::Struct(_)) {
        return Err(bad("the root value is not a struct".into()));
    }
    let version = match root.get("version") {
        Some(v @ Value::Struct(_)) => Version {
            hostname: text(v, "hostname"),
            date: text(v, "date"),
            product_brand: text(v, "product_brand"),
            product_version: text(v, "product_version"),
            build_number: text(v, "build_number"),
            xapi_major: number(v, "xapi_major"),
            xapi_minor: number(v, "xapi_minor"),
            export_vsn: number(v, "export_vsn").unwrap_or(0),
        },
        _ => return Err(bad("no 'version' struct (not an XVA description)".into())),
    };
    let Some(Value::Array(list)) = root.get("objects") else {
        return Err(bad("no 'objects' array (not an XVA description)".into()));
    };
    let mut objects: HashMap<String, Object<'_>> = HashMap::new();
    let mut vms: Vec<(String, &Value)> = Vec::new();
    for (i, o) in list.iter().enumerate() {
        let (Some(class), Some(id), Some(snapshot @ Value::Struct(_))) =
            (text(o, "class"), text(o, "id"), o.get("snapshot"))
        else {
            return Err(bad(format!(
                "object {i} lacks its class, id or snapshot record"
            )));
        };
        if class == "VM" {
            vms.push((id.clone(), snapshot));
        }
        if objects
            .insert(id.clone(), Object { class, snapshot })
            .is_some()
        {
            return Err(bad(format!("two objects have the id '{id}'")));
        }
    }
    // An export with its snapshots holds them as VMs too; the VM itself is the one that is
    // not a snapshot (nor dom0, which is never exported but costs nothing to rule out).
    let flag = |rec: &Value, f: &str| field(rec, f).and_then(Value::boolean).unwrap_or(false);
    let mut main: Vec<&(String, &Value)> = vms
        .iter()
        .filter(|(_, r)| !flag(r, "is_a_snapshot") && !flag(r, "is_control_domain"))
        .collect();
    if main.is_empty() {
        main = vms.iter().collect();
    }
    let Some(first) = main.first() else {
        return Err(bad("no VM object".into()));
    };
    let (vm_id, rec): (&String, &Value) = (&first.0, first.1);
    let mut vm = Vm::new(text(rec, "name_label").unwrap_or_else(|| "vm".into()));
    if main.len() > 1 {
        vm.warn(format!(
            "ova.xml holds {} VMs; the first, '{}', is read",
            main.len(),
            vm.name
        ));
    }
    let snapshots = vms.len() - main.len();
    if snapshots > 0 {
        vm.warn(format!(
            "the export holds {snapshots} snapshot(s) of the VM; only its current state is carried"
        ));
    }
    vm.description = text(rec, "name_description").map(|s| s.trim().to_string());
    vm.guest_os.description = map_text(rec, "other_config", "base_template_name")
        .or_else(|| text(rec, "reference_label"));
    // Memory: the static maximum is what the guest sees as installed.
    let static_max = number(rec, "memory_static_max").unwrap_or(0);
    vm.memory_bytes = static_max;
    let (dmin, dmax) = (
        number(rec, "memory_dynamic_min"),
        number(rec, "memory_dynamic_max"),
    );
    if let (Some(lo), Some(hi)) = (dmin, dmax)
        && (lo != hi || hi != static_max)
    {
        vm.warn(format!(
            "memory ballooning between {lo} and {hi} bytes (static maximum {static_max}) is not carried; the VM gets {static_max} bytes"
        ));
    }
    let at_start = number(rec, "VCPUs_at_startup");
    let max = number(rec, "VCPUs_max");
    let count = at_start.or(max).unwrap_or(1).clamp(1, u64::from(u32::MAX)) as u32;
    let cores = map_text(rec, "platform", "cores-per-socket")
        .and_then(|c| c.parse::<u32>().ok())
        .filter(|&c| c > 0 && count.is_multiple_of(c));
    vm.cpus = Cpus {
        count,
        cores_per_socket: cores,
    };
    if let Some(m) = max
        && m > u64::from(count)
    {
        vm.warn(format!(
            "VCPUs_max {m} (hot-pluggable up to) is not carried; the VM gets {count} CPU(s)"
        ));
    }
    // HVM or PV: current XAPI says so in domain_type; older exports by an empty
    // HVM_boot_policy.
    let domain_type = text(rec, "domain_type");
    let hvm_policy = text(rec, "HVM_boot_policy");
    let pv = match domain_type.as_deref() {
        Some("hvm") | Some("pvh") => false,
        Some("pv") | Some("pv_in_pvh") => true,
        _ => hvm_policy.is_none(),
    };
    if pv {
        vm.warn(PV_GUEST);
    } else if domain_type.as_deref() == Some("pvh") {
        vm.warn("a PVH guest: it has no emulated devices; another hypervisor boots it as HVM");
    }
    let firmware = map_text(rec, "HVM_boot_params", "firmware");
    let secureboot = map_text(rec, "platform", "secureboot");
    vm.firmware = match firmware.as_deref() {
        Some("uefi") => Firmware::Uefi {
            secure_boot: match secureboot.as_deref() {
                Some("true") => true,
                Some("auto") => {
                    vm.warn("Secure Boot is 'auto' (on where the pool has its certificates): carried as off");
                    false
                }
                _ => false,
            },
        },
        None | Some("bios") => Firmware::Bios,
        Some(other) => {
            vm.warn(format!("unknown firmware '{other}': read as BIOS"));
            Firmware::Bios
        }
    };
    vm.tpm = !refs(rec, "VTPMs").is_empty();
    let order = map_text(rec, "HVM_boot_params", "order").unwrap_or_else(|| "c".into());
    if let Some(vga) = map_text(rec, "platform", "vga") {
        vm.video = Some(Video {
            model: Some(vga),
            vram_bytes: map_text(rec, "platform", "videoram")
                .and_then(|m| m.parse::<u64>().ok())
                .map(|m| m << 20),
        });
    }
    for (what, field_name) in [
        ("PCI device", "attached_PCIs"),
        ("vGPU", "VGPUs"),
        ("USB device", "VUSBs"),
    ] {
        let n = refs(rec, field_name).len();
        if n > 0 {
            vm.warn(format!("{n} passed-through {what}(s) are not carried"));
        }
    }

    // VBDs: those the VM lists and those naming the VM (Xen Orchestra lists only the former
    // for disks, only the latter for VIFs).
    let attached = |class: &str, list: &str| -> Vec<(String, &Value)> {
        let mut ids: Vec<String> = refs(rec, list);
        for (id, o) in &objects {
            if o.class == class && text(o.snapshot, "VM").as_deref() == Some(vm_id.as_str()) {
                ids.push(id.clone());
            }
        }
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                objects
                    .get(&id)
                    .filter(|o| o.class == class)
                    .map(|o| (id, o.snapshot))
            })
            .collect()
    };
    let mut vbds: Vec<(u32, String, &Value)> = Vec::new();
    for (id, vbd) in attached("VBD", "VBDs") {
        let Some(ud) = text(vbd, "userdevice").and_then(|u| u.parse::<u32>().ok()) else {
            vm.warn(format!("VBD {id} has no numeric userdevice: left out"));
            continue;
        };
        vbds.push((ud, id, vbd));
    }
    vbds.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut disks = Vec::new();
    for (ud, id, vbd) in vbds {
        let (controller, unit) = super::mapping::place(ud);
        let kind = text(vbd, "type").unwrap_or_else(|| "Disk".into());
        let vdi_id = text(vbd, "VDI").unwrap_or_default();
        let empty = field(vbd, "empty")
            .and_then(Value::boolean)
            .unwrap_or(false);
        if kind.eq_ignore_ascii_case("CD") {
            vm.cdroms.push(Cdrom {
                source: DiskSource::Blank,
                controller,
                unit,
            });
            if !empty && !is_null(&vdi_id) {
                vm.warn(format!(
                    "the CD in drive {ud} (an ISO in an SR) is not in the export: the drive is carried empty"
                ));
            }
            continue;
        }
        if !kind.eq_ignore_ascii_case("Disk") {
            vm.warn(format!("VBD {id} of type '{kind}' is not carried"));
            continue;
        }
        let Some(vdi) = objects.get(&vdi_id).filter(|o| o.class == "VDI") else {
            vm.warn(format!(
                "disk {ud} (VBD {id}) names VDI '{vdi_id}', which is not in the export: not carried"
            ));
            continue;
        };
        let virtual_size = number(vdi.snapshot, "virtual_size")
            .ok_or_else(|| bad(format!("VDI {vdi_id} has no virtual_size")))?;
        let bootable = field(vbd, "bootable")
            .and_then(Value::boolean)
            .unwrap_or(false);
        if ud >= 4 {
            vm.warn(format!(
                "disk {ud} exists only as a Xen PV device (userdevice 4 and above have no emulated IDE place): carried on SATA"
            ));
        }
        vm.disks.push(Disk {
            source: DiskSource::PackageFile {
                id: Some(vdi_id.clone()),
                href: vdi_id.clone(),
            },
            capacity_bytes: Some(virtual_size),
            controller,
            unit,
            boot_order: None,
        });
        disks.push(XvaDisk {
            vdi: vdi_id,
            name: text(vdi.snapshot, "name_label"),
            userdevice: ud,
            device: text(vbd, "device"),
            virtual_size,
            bootable,
        });
    }
    // Boot order: HVM_boot_params' order is a string of c (the first disk), d (CD) and n
    // (network). The model orders disks only: the disk that boots is the lowest bootable one
    // (XAPI marks it), else the first.
    if !pv && !vm.disks.is_empty() {
        let boot = disks.iter().position(|d| d.bootable).unwrap_or(0);
        if order.contains('c') {
            vm.disks[boot].boot_order = Some(0);
        }
        let first = order.chars().next().unwrap_or('c');
        if first != 'c' {
            vm.warn(format!(
                "the VM boots from {} before its disk (boot order '{order}'); the target boots from the disk",
                match first {
                    'd' => "CD",
                    'n' => "the network",
                    _ => "another device",
                }
            ));
        }
    }
    if !vm.disks.is_empty() && !pv {
        vm.warn(PV_DRIVERS);
    }

    // VIFs, in device order, each on its network's name.
    // QEMU's default emulated NIC under XAPI (rtl8139) is what a guest sees before netfront
    // loads, unless nic_type says.
    let nic_model = super::mapping::nic_model(map_text(rec, "platform", "nic_type").as_deref());
    let mut vifs: Vec<(u32, String, &Value)> = attached("VIF", "VIFs")
        .into_iter()
        .map(|(id, v)| {
            let dev = text(v, "device")
                .and_then(|d| d.parse().ok())
                .unwrap_or(u32::MAX);
            (dev, id, v)
        })
        .collect();
    vifs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (_, _, vif) in vifs {
        let network = text(vif, "network").and_then(|n| {
            objects
                .get(&n)
                .filter(|o| o.class == "network")
                .and_then(|o| text(o.snapshot, "name_label").or_else(|| text(o.snapshot, "bridge")))
        });
        vm.nics.push(Nic {
            model: nic_model.clone(),
            mac: text(vif, "MAC").map(|m| m.to_ascii_lowercase()),
            network,
        });
    }
    Ok(Description {
        kind: ExportKind::Chunked,
        version,
        vm,
        disks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, value: &str) -> String {
        format!("<member><name>{name}</name>{value}</member>")
    }

    fn st(members: &[String]) -> String {
        format!("<value><struct>{}</struct></value>", members.concat())
    }

    fn obj(class: &str, id: &str, snap: &[String]) -> String {
        st(&[
            member("class", &format!("<value>{class}</value>")),
            member("id", &format!("<value>{id}</value>")),
            member("snapshot", &st(snap)),
        ])
    }

    fn v(s: &str) -> String {
        format!("<value>{s}</value>")
    }

    pub(crate) fn sample() -> String {
        let vm = obj(
            "VM",
            "Ref:0",
            &[
                member("name_label", &v("web &amp; db")),
                member("memory_static_max", &v("2147483648")),
                member("memory_dynamic_max", &v("2147483648")),
                member("memory_dynamic_min", &v("1073741824")),
                member("VCPUs_max", &v("<int>4</int>")),
                member("VCPUs_at_startup", &v("2")),
                member("domain_type", &v("hvm")),
                member("HVM_boot_policy", &v("BIOS order")),
                member(
                    "HVM_boot_params",
                    &st(&[member("order", &v("dc")), member("firmware", &v("uefi"))]),
                ),
                member("platform", &st(&[member("secureboot", &v("true"))])),
                member(
                    "VBDs",
                    &v("<array><data><value>Ref:2</value><value>Ref:4</value></data></array>"),
                ),
                member("is_a_snapshot", &v("<boolean>0</boolean>")),
            ],
        );
        let objects = [
            vm,
            obj(
                "VBD",
                "Ref:2",
                &[
                    member("userdevice", &v("1")),
                    member("type", &v("Disk")),
                    member("VDI", &v("Ref:3")),
                    member("VM", &v("Ref:0")),
                    member("bootable", &v("<boolean>0</boolean>")),
                ],
            ),
            obj(
                "VDI",
                "Ref:3",
                &[member("virtual_size", &v("<string>4194304</string>"))],
            ),
            obj(
                "VBD",
                "Ref:4",
                &[
                    member("userdevice", &v("0")),
                    member("type", &v("Disk")),
                    member("VDI", &v("Ref:5")),
                    member("bootable", &v("<boolean>1</boolean>")),
                ],
            ),
            obj("VDI", "Ref:5", &[member("virtual_size", &v("1048576"))]),
            obj(
                "VIF",
                "Ref:6",
                &[
                    member("device", &v("0")),
                    member("MAC", &v("AA:BB:CC:00:11:22")),
                    member("network", &v("Ref:7")),
                    member("VM", &v("Ref:0")),
                ],
            ),
            obj(
                "network",
                "Ref:7",
                &[member("name_label", &v("Pool-wide network"))],
            ),
        ];
        format!(
            "<?xml version=\"1.0\"?>{}",
            st(&[
                member(
                    "version",
                    &st(&[
                        member("product_brand", &v("XCP-ng")),
                        member("export_vsn", &v("2")),
                    ])
                ),
                member(
                    "objects",
                    &format!(
                        "<value><array><data>{}</data></array></value>",
                        objects.concat()
                    )
                ),
            ])
        )
    }

    #[test]
    fn reads_the_vm() {
        let d = parse(sample().as_bytes(), "ova.xml").unwrap();
        let vm = &d.vm;
        assert_eq!(vm.name, "web & db");
        assert_eq!(vm.memory_bytes, 2 << 30);
        assert_eq!(vm.cpus.count, 2);
        assert_eq!(vm.firmware, Firmware::Uefi { secure_boot: true });
        assert_eq!(d.version.export_vsn, 2);
        assert_eq!(d.disks.len(), 2);
        assert_eq!(d.disks[0].vdi, "Ref:5");
        assert_eq!(d.disks[0].userdevice, 0);
        assert_eq!(d.disks[1].virtual_size, 4 << 20);
        assert_eq!(vm.disks[0].boot_order, Some(0));
        assert_eq!(vm.disks[1].controller.kind, crate::vm::ControllerKind::Ide);
        assert_eq!(vm.disks[1].unit, 1);
        assert_eq!(vm.nics.len(), 1);
        assert_eq!(vm.nics[0].mac.as_deref(), Some("aa:bb:cc:00:11:22"));
        assert_eq!(vm.nics[0].network.as_deref(), Some("Pool-wide network"));
        let w = vm.warnings.join("\n");
        assert!(
            w.contains("ballooning") && w.contains("VCPUs_max 4") && w.contains("CD"),
            "{w}"
        );
    }

    /// XAPI's own ova.xml is indented, with empty values written `<value />` and empty
    /// arrays and structs `<data />` and `<struct />`.
    #[test]
    fn indented_xml_and_empty_elements_read_the_same() {
        let compact = parse(sample().as_bytes(), "ova.xml").unwrap();
        let pretty = sample()
            .replace("><", ">\n\t\t<")
            .replace(
                "<member><name>name_label</name>",
                "<member><name>PV_args</name><value /></member>\
                 <member><name>VGPUs</name><value><array><data /></array></value></member>\
                 <member><name>other_config</name><value><struct /></value></member>\
                 <member><name>HVM_shadow_multiplier</name><value><double>1</double></value></member>\
                 <member><name>name_label</name>",
            );
        let pretty = parse(pretty.as_bytes(), "ova.xml").unwrap();
        assert_eq!(pretty.vm, compact.vm);
        assert_eq!(pretty.disks, compact.disks);
        assert_eq!(pretty.version, compact.version);
    }

    #[test]
    fn malformed_descriptions_are_one_clear_error() {
        for (xml, says) in [
            ("<value><struct></struct></value>", "no 'version'"),
            ("<methodCall/>", "holds no value"),
            ("<a/>", "root element is <a>"),
            (
                "<value><struct><member><name>x</name></member></struct></value>",
                "no <value>",
            ),
            ("<value><int>x</int></value>", "not an integer"),
            ("<value><struct>", "invalid XML"),
        ] {
            let err = parse(xml.as_bytes(), "vm.xva:ova.xml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{xml}: {err}");
            assert!(err.starts_with("vm.xva:ova.xml"), "{err}");
        }
    }
}
