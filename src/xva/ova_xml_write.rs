//! Writing `ova.xml`: the VM model as the XML-RPC records XAPI's importer reads.
//!
//! The field set is the one Xen Orchestra's XVA writer emits (@xen-orchestra/xva,
//! `templates/*.mjs` and `_writeOvaXml.mjs`), which XAPI imports: a VM, an SR holding the VDIs,
//! one VDI and one VBD per disk, an empty CD VBD per CD-ROM drive, and a network with one VIF per
//! NIC. XAPI's importer (xen-api `ocaml/xapi/import.ml`) looks every reference up among the
//! export's own objects (`lookup` / `find_in_export`), so every `VM`, `VDI`, `SR` and `network`
//! a record names is an object of the export; `Ref:` ids are zero-padded to one width because
//! the importer streams disks in the lexicographic order of their VDI's id.
//!
//! Integers are written as XAPI writes its 64-bit integers, as strings; booleans as
//! `<boolean>`.

use super::ova_xml::Value;
use crate::vm::{Firmware, Vm};

/// The `version` block: XAPI refuses an export whose `xapi_major.xapi_minor` is newer than its
/// own, so this says 1.20 (XenServer 8.2 / XCP-ng 8.2, what Xen Orchestra writes), which every
/// current host accepts; `export_vsn` 2 is the layout with inline chunk checksums.
pub const XAPI_MAJOR: u64 = 1;
/// See [`XAPI_MAJOR`].
pub const XAPI_MINOR: u64 = 20;

/// A disk as the description needs it.
#[derive(Debug, Clone)]
pub struct DiskRecord {
    /// The VDI's id, the folder of its chunks (`Ref:002`).
    pub vdi: String,
    /// Its virtual size in bytes.
    pub virtual_size: u64,
    /// The VDI's name.
    pub name: String,
}

/// The ids the description gives its objects, decided before anything is written (the disks'
/// chunk folders are their VDIs' ids).
#[derive(Debug, Clone)]
pub struct Layout {
    width: usize,
    /// The VDI id of each disk, in `vm.disks` order.
    pub vdis: Vec<String>,
}

impl Layout {
    /// The ids for a VM with `disks` disks, `cdroms` CD drives and `nics` NICs: the VM is
    /// `Ref:0…`, the SR next, then the VDIs (so they sort in disk order), then the rest.
    pub fn new(disks: usize, cdroms: usize, nics: usize) -> Layout {
        let total = 3 + 2 * disks + cdroms + nics;
        let width = total.to_string().len().max(3);
        let vdis = (0..disks)
            .map(|i| format!("Ref:{:0width$}", 2 + i))
            .collect();
        Layout { width, vdis }
    }

    fn id(&self, n: usize) -> String {
        format!("Ref:{:0w$}", n, w = self.width)
    }
}

fn s(x: impl ToString) -> Value {
    Value::Str(x.to_string())
}

fn b(x: bool) -> Value {
    Value::Bool(x)
}

fn st(members: Vec<(&str, Value)>) -> Value {
    Value::Struct(
        members
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn arr(ids: &[String]) -> Value {
    Value::Array(ids.iter().map(s).collect())
}

fn empty() -> Value {
    Value::Array(Vec::new())
}

fn none() -> Value {
    Value::Struct(Vec::new())
}

const NULL: &str = "OpaqueRef:NULL";

fn object(class: &str, id: &str, snapshot: Value) -> Value {
    st(vec![
        ("class", s(class)),
        ("id", s(id)),
        ("snapshot", snapshot),
    ])
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The memory XAPI gives `vm`, in bytes, as its `memory_*` fields (and `xe
/// vm-memory-limits-set`) hold it: the source's, to the byte (the fields are bytes), or 1 MiB
/// with a warning when the source gives none.
pub fn memory_bytes(vm: &Vm) -> (u64, Option<String>) {
    if vm.memory_bytes == 0 {
        let w = "the VM states no memory size: it gets 1 MiB; set it with xe vm-memory-limits-set";
        (1 << 20, Some(w.into()))
    } else {
        (vm.memory_bytes, None)
    }
}

/// Makes `ova.xml` for `vm` with its disks `disks` (in `vm.disks` order, ids from `layout`),
/// written at `date` (ISO 8601). Returns the XML and what XAPI cannot be told.
pub fn ova_xml(
    vm: &Vm,
    layout: &Layout,
    disks: &[DiskRecord],
    date: &str,
) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    let vm_id = layout.id(0);
    let sr_id = layout.id(1);
    let mut next = 2 + disks.len();
    let mut take = || {
        let id = layout.id(next);
        next += 1;
        id
    };
    let vbd_ids: Vec<String> = disks.iter().map(|_| take()).collect();
    let cd_ids: Vec<String> = vm.cdroms.iter().map(|_| take()).collect();
    let net_id = take();
    let vif_ids: Vec<String> = vm.nics.iter().map(|_| take()).collect();

    let mut objects = Vec::new();
    let (memory, w) = memory_bytes(vm);
    warnings.extend(w);
    let cpus = vm.cpus.count.max(1);
    let (firmware, secure_boot) = match vm.firmware {
        Firmware::Bios => ("bios", false),
        Firmware::Uefi { secure_boot } => ("uefi", secure_boot),
    };
    let mut platform = vec![
        ("timeoffset", s(0)),
        ("device-model", s("qemu-upstream-compat")),
        ("secureboot", s(secure_boot)),
        ("hpet", s(true)),
        ("nx", s(true)),
        ("pae", s(true)),
        ("apic", s(true)),
        ("viridian", s(true)),
        ("acpi", s(1)),
    ];
    if let Some(c) = vm.cpus.cores_per_socket.filter(|&c| c > 0) {
        platform.push(("cores-per-socket", s(c)));
    }
    // XAPI's platform:nic_type picks one emulated model for every VIF: e1000 when all the
    // NICs are e1000, else QEMU's default (rtl8139), with a warning below when that changes one.
    let all_e1000 = !vm.nics.is_empty()
        && vm
            .nics
            .iter()
            .all(|n| n.model == crate::vm::NicModel::E1000);
    if all_e1000 {
        platform.push(("nic_type", s("e1000")));
    }
    if let Some(vram) = vm.video.as_ref().and_then(|v| v.vram_bytes) {
        platform.push(("videoram", s((vram >> 20).max(1))));
    }
    if let Some(w) = super::mapping::WRITE.tpm(vm).and_then(|r| r.warning) {
        warnings.push(w.into());
    }
    if !vm.serial_ports.is_empty() {
        warnings.push(format!(
            "{} serial port(s) are not carried: XAPI gives every HVM guest its own console",
            vm.serial_ports.len()
        ));
    }
    // The boot disk is the one the model orders first, else the first disk.
    let boot = vm
        .disks
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.boot_order.map(|o| (o, i)))
        .min()
        .map_or(0, |(_, i)| i);
    let mut vbd_all = vbd_ids.clone();
    vbd_all.extend(cd_ids.iter().cloned());
    objects.push(object(
        "VM",
        &vm_id,
        st(vec![
            ("uuid", s(uuid())),
            ("name_label", s(&vm.name)),
            (
                "name_description",
                s(vm.description.as_deref().unwrap_or("")),
            ),
            ("power_state", s("Halted")),
            ("is_a_template", b(false)),
            ("is_a_snapshot", b(false)),
            ("is_control_domain", b(false)),
            ("is_default_template", b(false)),
            ("is_snapshot_from_vmpp", b(false)),
            ("is_vmss_snapshot", b(false)),
            ("snapshot_of", s(NULL)),
            ("snapshots", empty()),
            (
                "snapshot_time",
                Value::DateTime("19700101T00:00:00Z".into()),
            ),
            ("snapshot_info", none()),
            ("snapshot_metadata", s("")),
            ("transportable_snapshot_id", s("")),
            ("parent", s(NULL)),
            ("children", empty()),
            ("user_version", s(1)),
            ("version", s(0)),
            ("generation_id", s("")),
            ("memory_overhead", s(0)),
            ("memory_target", s(memory)),
            ("memory_static_max", s(memory)),
            ("memory_dynamic_max", s(memory)),
            ("memory_dynamic_min", s(memory)),
            ("memory_static_min", s(memory)),
            ("VCPUs_params", none()),
            ("VCPUs_max", s(cpus)),
            ("VCPUs_at_startup", s(cpus)),
            ("actions_after_shutdown", s("destroy")),
            ("actions_after_reboot", s("restart")),
            ("actions_after_crash", s("restart")),
            ("consoles", empty()),
            ("VIFs", arr(&vif_ids)),
            ("VBDs", arr(&vbd_all)),
            ("VUSBs", empty()),
            ("crash_dumps", empty()),
            ("VTPMs", empty()),
            ("VGPUs", empty()),
            ("attached_PCIs", empty()),
            ("PV_bootloader", s("")),
            ("PV_kernel", s("")),
            ("PV_ramdisk", s("")),
            ("PV_args", s("")),
            ("PV_bootloader_args", s("")),
            ("PV_legacy_args", s("")),
            ("HVM_boot_policy", s("BIOS order")),
            (
                "HVM_boot_params",
                st(vec![("order", s("cdn")), ("firmware", s(firmware))]),
            ),
            ("HVM_shadow_multiplier", Value::Double("1".into())),
            ("platform", st(platform)),
            ("PCI_bus", s("")),
            (
                "other_config",
                st(vec![
                    ("mac_seed", s(uuid())),
                    ("base_template_name", s("Other install media")),
                    ("install-methods", s("cdrom")),
                ]),
            ),
            ("domid", s(-1)),
            ("domarch", s("")),
            ("last_boot_CPU_flags", none()),
            ("last_booted_record", s("")),
            ("recommendations", s("")),
            ("xenstore_data", none()),
            ("ha_always_run", b(false)),
            ("ha_restart_priority", s("")),
            ("tags", empty()),
            ("blocked_operations", none()),
            ("allowed_operations", empty()),
            ("current_operations", none()),
            ("blobs", none()),
            ("metrics", s(NULL)),
            ("guest_metrics", s(NULL)),
            ("resident_on", s(NULL)),
            ("affinity", s(NULL)),
            ("suspend_VDI", s(NULL)),
            ("suspend_SR", s(NULL)),
            ("order", s(0)),
            ("start_delay", s(0)),
            ("shutdown_delay", s(0)),
            ("hardware_platform_version", s(0)),
            ("has_vendor_device", b(false)),
            ("reference_label", s("other-install-media")),
            ("domain_type", s("hvm")),
            ("NVRAM", none()),
        ]),
    ));
    objects.push(object(
        "SR",
        &sr_id,
        st(vec![
            ("uuid", s(uuid())),
            ("name_label", s("diskferry export")),
            ("name_description", s("")),
            ("VDIs", arr(&layout.vdis)),
            ("PBDs", empty()),
            ("virtual_allocation", s(0)),
            ("physical_utilisation", s(0)),
            ("physical_size", s(0)),
            ("type", s("user")),
            ("content_type", s("")),
            ("shared", b(false)),
            ("other_config", none()),
            ("tags", empty()),
            ("sm_config", none()),
            ("blobs", none()),
            ("allowed_operations", empty()),
            ("current_operations", none()),
        ]),
    ));
    for (i, d) in disks.iter().enumerate() {
        objects.push(object(
            "VDI",
            &d.vdi,
            st(vec![
                ("uuid", s(uuid())),
                ("name_label", s(&d.name)),
                ("name_description", s("")),
                ("SR", s(&sr_id)),
                ("VBDs", arr(std::slice::from_ref(&vbd_ids[i]))),
                ("crash_dumps", empty()),
                ("virtual_size", s(d.virtual_size)),
                ("physical_utilisation", s(d.virtual_size)),
                ("type", s("user")),
                ("sharable", b(false)),
                ("read_only", b(false)),
                ("other_config", none()),
                ("storage_lock", b(false)),
                ("location", s("")),
                ("managed", b(true)),
                ("missing", b(false)),
                ("parent", s(NULL)),
                ("xenstore_data", none()),
                ("sm_config", none()),
                ("is_a_snapshot", b(false)),
                ("snapshot_of", s(NULL)),
                ("snapshots", empty()),
                (
                    "snapshot_time",
                    Value::DateTime("19700101T00:00:00Z".into()),
                ),
                ("tags", empty()),
                ("allow_caching", b(false)),
                ("on_boot", s("persist")),
                ("metadata_of_pool", s(NULL)),
                ("metadata_latest", b(false)),
                ("is_tools_iso", b(false)),
                ("cbt_enabled", b(false)),
                ("allowed_operations", empty()),
                ("current_operations", none()),
            ]),
        ));
    }
    let vbd = |id: &str, userdevice: usize, vdi: &str, kind: &str, bootable: bool| {
        let cd = kind == "CD";
        object(
            "VBD",
            id,
            st(vec![
                ("uuid", s(uuid())),
                ("VM", s(&vm_id)),
                ("VDI", s(vdi)),
                ("device", s(xvd(userdevice))),
                ("userdevice", s(userdevice)),
                ("bootable", b(bootable)),
                ("mode", s(if cd { "RO" } else { "RW" })),
                ("type", s(kind)),
                ("unpluggable", b(false)),
                ("storage_lock", b(false)),
                ("empty", b(cd)),
                ("other_config", none()),
                ("currently_attached", b(false)),
                ("status_code", s(0)),
                ("status_detail", s("")),
                ("runtime_properties", none()),
                ("qos_algorithm_type", s("")),
                ("qos_algorithm_params", none()),
                ("qos_supported_algorithms", empty()),
                ("metrics", s(NULL)),
                ("allowed_operations", empty()),
                ("current_operations", none()),
            ]),
        )
    };
    // userdevice 0-3 are the emulated IDE places a BIOS boots from; disks take them first, in
    // the model's order, and CD drives follow.
    for (i, d) in disks.iter().enumerate() {
        objects.push(vbd(&vbd_ids[i], i, &d.vdi, "Disk", i == boot));
    }
    for (j, id) in cd_ids.iter().enumerate() {
        objects.push(vbd(id, disks.len() + j, NULL, "CD", false));
    }
    if vm
        .cdroms
        .iter()
        .any(|c| c.source != crate::vm::DiskSource::Blank)
    {
        warnings.push(
            "CD drives are carried empty: an XVA carries no ISO; insert one with xe vm-cd-insert"
                .into(),
        );
    }
    // One network object: XAPI's importer matches it to a host network by name_label, then by
    // bridge, and creates it otherwise. NICs on different networks in the source all land on
    // it; the first NIC's network names it.
    let net_name = vm
        .nics
        .iter()
        .find_map(|n| n.network.clone())
        .unwrap_or_else(|| "Pool-wide network associated with eth0".into());
    let mut networks: Vec<&str> = vm
        .nics
        .iter()
        .filter_map(|n| n.network.as_deref())
        .collect();
    networks.dedup();
    if networks.len() > 1 {
        warnings.push(format!(
            "the NICs are on {} networks; all are put on '{net_name}' (move them with xe vif-move)",
            networks.len()
        ));
    }
    objects.push(object(
        "network",
        &net_id,
        st(vec![
            ("uuid", s(uuid())),
            ("name_label", s(&net_name)),
            ("name_description", s("")),
            ("VIFs", arr(&vif_ids)),
            ("PIFs", empty()),
            ("MTU", s(1500)),
            ("other_config", none()),
            ("bridge", s("")),
            ("managed", b(true)),
            ("blobs", none()),
            ("tags", empty()),
            ("default_locking_mode", s("unlocked")),
            ("allowed_operations", empty()),
            ("current_operations", none()),
        ]),
    ));
    for (i, nic) in vm.nics.iter().enumerate() {
        let mac = nic.mac.clone().unwrap_or_default();
        objects.push(object(
            "VIF",
            &vif_ids[i],
            st(vec![
                ("uuid", s(uuid())),
                ("device", s(i)),
                ("network", s(&net_id)),
                ("VM", s(&vm_id)),
                ("MAC", s(&mac)),
                ("MAC_autogenerated", b(mac.is_empty())),
                ("MTU", s(1500)),
                ("currently_attached", b(false)),
                ("status_code", s(0)),
                ("status_detail", s("")),
                ("runtime_properties", none()),
                ("qos_algorithm_type", s("")),
                ("qos_algorithm_params", none()),
                ("qos_supported_algorithms", empty()),
                ("other_config", none()),
                ("metrics", s(NULL)),
                ("locking_mode", s("network_default")),
                ("ipv4_allowed", empty()),
                ("ipv6_allowed", empty()),
                ("ipv4_configuration_mode", s("None")),
                ("ipv4_addresses", empty()),
                ("ipv4_gateway", s("")),
                ("ipv6_configuration_mode", s("None")),
                ("ipv6_addresses", empty()),
                ("ipv6_gateway", s("")),
                ("allowed_operations", empty()),
                ("current_operations", none()),
            ]),
        ));
    }
    // The e1000 row holds only when every NIC is e1000; otherwise any NIC not rtl8139 changes.
    if !all_e1000
        && vm
            .nics
            .iter()
            .any(|n| n.model != crate::vm::NicModel::Rtl8139)
    {
        warnings.push(super::mapping::NICS_LOST.into());
    }
    let root = st(vec![
        (
            "version",
            st(vec![
                ("hostname", s("diskferry")),
                ("date", s(date)),
                ("product_version", s("8.2.1")),
                ("product_brand", s("XCP-ng")),
                ("build_number", s("diskferry")),
                ("xapi_major", s(XAPI_MAJOR)),
                ("xapi_minor", s(XAPI_MINOR)),
                ("export_vsn", s(2)),
            ]),
        ),
        ("objects", Value::Array(objects)),
    ]);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_value(&root, &mut xml);
    xml.push('\n');
    (xml, warnings)
}

/// The device name XAPI gives a userdevice (`xvda` for 0).
fn xvd(userdevice: usize) -> String {
    let mut n = userdevice;
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.reverse();
    format!("xvd{}", String::from_utf8_lossy(&letters))
}

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Writes `v` as an XML-RPC `<value>`.
pub fn write_value(v: &Value, out: &mut String) {
    out.push_str("<value>");
    match v {
        Value::Str(x) => escape(x, out),
        Value::Int(i) => out.push_str(&format!("<i4>{i}</i4>")),
        Value::Bool(x) => out.push_str(if *x {
            "<boolean>1</boolean>"
        } else {
            "<boolean>0</boolean>"
        }),
        Value::Double(x) => {
            out.push_str("<double>");
            escape(x, out);
            out.push_str("</double>");
        }
        Value::DateTime(x) => {
            out.push_str("<dateTime.iso8601>");
            escape(x, out);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Base64(x) => {
            out.push_str("<base64>");
            escape(x, out);
            out.push_str("</base64>");
        }
        Value::Nil => out.push_str("<nil/>"),
        Value::Struct(members) => {
            out.push_str("<struct>");
            for (k, m) in members {
                out.push_str("<member><name>");
                escape(k, out);
                out.push_str("</name>");
                write_value(m, out);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for i in items {
                write_value(i, out);
            }
            out.push_str("</data></array>");
        }
    }
    out.push_str("</value>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{Cpus, Nic, NicModel};

    #[test]
    fn reads_back_as_the_same_vm() {
        let mut vm = Vm::new("web & <db>");
        vm.memory_bytes = 2 << 30;
        vm.cpus = Cpus {
            count: 4,
            cores_per_socket: Some(2),
        };
        vm.firmware = Firmware::Uefi { secure_boot: true };
        vm.nics.push(Nic {
            model: NicModel::E1000,
            mac: Some("00:16:3e:00:00:01".into()),
            network: Some("LAN".into()),
        });
        let layout = Layout::new(2, 0, 1);
        let disks: Vec<DiskRecord> = layout
            .vdis
            .iter()
            .enumerate()
            .map(|(i, id)| DiskRecord {
                vdi: id.clone(),
                virtual_size: (i as u64 + 1) << 20,
                name: format!("disk{i}"),
            })
            .collect();
        for (i, d) in [0u32, 1].iter().enumerate() {
            let _ = d;
            vm.disks.push(crate::vm::Disk {
                source: crate::vm::DiskSource::Blank,
                capacity_bytes: Some((i as u64 + 1) << 20),
                controller: crate::vm::Controller {
                    kind: crate::vm::ControllerKind::Ide,
                    index: 0,
                },
                unit: i as u32,
                boot_order: (i == 0).then_some(0),
            });
        }
        let (xml, _) = ova_xml(&vm, &layout, &disks, "20260101T00:00:00Z");
        let d = super::super::ova_xml::parse(xml.as_bytes(), "ova.xml").unwrap();
        assert_eq!(d.vm.name, vm.name);
        assert_eq!(d.vm.memory_bytes, vm.memory_bytes);
        assert_eq!(d.vm.cpus, vm.cpus);
        assert_eq!(d.vm.firmware, vm.firmware);
        assert_eq!(d.version.export_vsn, 2);
        assert_eq!(d.disks.len(), 2);
        assert_eq!(d.disks[1].virtual_size, 2 << 20);
        assert_eq!(d.disks[0].vdi, "Ref:002");
        assert_eq!(d.vm.nics[0].mac.as_deref(), Some("00:16:3e:00:00:01"));
        assert_eq!(d.vm.nics[0].network.as_deref(), Some("LAN"));
        assert_eq!(d.vm.disks[0].boot_order, Some(0));
    }

    #[test]
    fn device_names_follow_xapi() {
        assert_eq!(xvd(0), "xvda");
        assert_eq!(xvd(25), "xvdz");
        assert_eq!(xvd(26), "xvdaa");
    }
}
