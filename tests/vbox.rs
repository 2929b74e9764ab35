//! VirtualBox machine settings (`.vbox`): every one in ../shared/corpus/configs/virtualbox
//! reads into the VM model with the values it holds; what `--to virtualbox-vbox` writes reads
//! back into the same model and follows VirtualBox's settings schema, one test per rule
//! (VirtualBox cannot run here); VMs go bare disks / OVA -> .vbox -> kvm with identical disk
//! content (`qemu-img compare`), a snapshot chain of differencing VDIs is flattened; broken
//! settings files fail with one clear line.
//!
//! The schema cited below is VirtualBox-settings.xsd in VirtualBox's source
//! (https://github.com/VirtualBox/virtualbox/blob/main/src/VBox/Main/xml/VirtualBox-settings.xsd).

mod common;

use common::*;
use diskferry::ovf::xml::{Element, Ns};
use diskferry::vm::{
    Cdrom, Controller, ControllerKind, Disk, DiskSource, Firmware, Nic, NicModel, Os, ScsiModel,
    SerialPort, Vm,
};
use diskferry::vmconfig::vbox::{read, write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use uuid::Uuid;

fn corpus(test: &str, name: &str) -> Option<Vec<u8>> {
    let shared = shared_dir(test)?;
    Some(std::fs::read(shared.join("corpus/configs/virtualbox").join(name)).unwrap())
}

#[test]
fn corpus_goad_reads_the_current_state_of_its_snapshot_chain() {
    let Some(bytes) = corpus("goad", "dissect-GOAD-DC01.vbox") else {
        return;
    };
    let c = read::parse(&bytes, "GOAD-DC01.vbox").unwrap();
    let vm = &c.vm;
    assert_eq!(vm.name, "GOAD-DC01");
    assert_eq!(vm.guest_os.virtualbox_id.as_deref(), Some("Windows2016_64"));
    assert_eq!(vm.guest_os.os, Os::from_virtualbox("Windows2016_64"));
    assert!(vm.guest_os.os.is_some());
    assert_eq!(vm.cpus.count, 2);
    assert_eq!(vm.memory_bytes, 3000 << 20);
    assert_eq!(vm.firmware, Firmware::Bios);
    assert!(!vm.tpm);
    // The machine's own Hardware, not its snapshots' copies: the leaf of the chain.
    assert_eq!(
        c.disk_files,
        ["Snapshots/{e6800503-8273-4f16-b584-c7ba2c1df698}.vmdk"]
    );
    assert_eq!(vm.disks.len(), 1);
    assert_eq!(
        vm.disks[0].controller,
        Controller {
            kind: ControllerKind::Ide,
            index: 0
        }
    );
    assert_eq!(vm.disks[0].unit, 0);
    assert_eq!(vm.nics.len(), 2);
    assert_eq!(vm.nics[0].model, NicModel::E1000);
    assert_eq!(vm.nics[0].mac.as_deref(), Some("08:00:27:7a:a2:fc"));
    assert_eq!(vm.nics[0].network.as_deref(), Some("NAT"));
    // The attachment in force, not the DisabledModes kept for later.
    assert_eq!(vm.nics[1].network.as_deref(), Some("HostOnly:vboxnet0"));
    assert_eq!(vm.nics[1].mac.as_deref(), Some("08:00:27:8c:c8:21"));
    assert_eq!(vm.video.as_ref().unwrap().vram_bytes, Some(128 << 20));
}

#[test]
fn corpus_encrypted_machine_is_refused_naming_the_disk() {
    let Some(bytes) = corpus("encrypted", "dissect-encrypted.vbox") else {
        return;
    };
    let e = read::parse(&bytes, "encrypted.vbox")
        .unwrap_err()
        .to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("encrypted.vbox"), "{e}");
    assert!(e.contains("encrypted by VirtualBox"), "{e}");
    // The attached image is a snapshot whose parent holds the key: both are named.
    assert!(
        e.contains("Snapshots/{742e6d0f-8896-4aa6-97f4-e05d70e73029}.vdi"),
        "{e}"
    );
    assert!(e.contains("encrypted test.vdi"), "{e}");
}

#[test]
fn corpus_encrypted_machine_without_its_encrypted_disk_reads_uefi_and_tpm() {
    let Some(bytes) = corpus("encrypted-rest", "dissect-encrypted.vbox") else {
        return;
    };
    // The same machine with the encrypted chain detached: what remains reads.
    let text = String::from_utf8(bytes).unwrap();
    let cut = text.replacen(
        "<Image uuid=\"{742e6d0f-8896-4aa6-97f4-e05d70e73029}\"/>",
        "",
        1,
    );
    let cut = cut.replacen(
        "<AttachedDevice type=\"HardDisk\" hotpluggable=\"false\" port=\"0\" device=\"0\">\n            \n          </AttachedDevice>",
        "",
        1,
    );
    let c = read::parse(cut.as_bytes(), "encrypted.vbox").unwrap();
    assert_eq!(c.vm.name, "encrypted test");
    assert_eq!(c.vm.firmware, Firmware::Uefi { secure_boot: false });
    assert!(c.vm.tpm);
    assert_eq!(c.vm.memory_bytes, 4096 << 20);
    // Its variable store is not carried: the current state's is VirtualBox's default (only
    // the snapshot's is named).
    assert!(
        c.vm.warnings.iter().any(|w| w.contains(
            "the VM's NVRAM file ('encrypted.nvram' beside the .vbox, VirtualBox's default) is not carried"
        )),
        "{:?}",
        c.vm.warnings
    );
    assert_eq!(c.disk_files, ["encrypted test_1.vdi"]);
    assert_eq!(c.vm.disks[0].controller.kind, ControllerKind::Sata);
    assert_eq!(c.vm.disks[0].unit, 2);
    assert_eq!(c.vm.cdroms.len(), 1);
    assert_eq!(c.vm.cdroms[0].unit, 1);
    assert_eq!(c.vm.cdroms[0].source, DiskSource::Blank);
    assert_eq!(
        c.vm.video.as_ref().unwrap().model.as_deref(),
        Some("VBoxSVGA")
    );
}

/// VirtualBox keeps an EFI machine's variables (boot entries, Secure Boot's keys) in an
/// NVRAM file beside the .vbox (named by `<NVRAM path>` under `<BIOS>`, or `<Firmware>` in
/// settings 1.20; unnamed, VirtualBox's default, the .vbox's name with its suffix replaced by
/// `.nvram`: Machine::i_getDefaultNVRAMFilename in VirtualBox's MachineImpl.cpp): no target
/// reads it, so the reader warns, naming it, as the vmx and libvirt readers do.
#[test]
fn an_nvram_file_is_warned_about() {
    let mut vm = rich_vm();
    vm.serial_ports.clear();
    let (xml, _) = written(&vm);
    let said = |xml: &str| {
        let c = read::parse(xml.as_bytes(), "w.vbox").unwrap();
        c.vm.warnings
            .into_iter()
            .filter(|w| w.contains("the VM's NVRAM"))
            .collect::<Vec<_>>()
    };
    // An EFI machine naming no file has VirtualBox's default one, named after the .vbox
    // (its last suffix replaced, its folder left out); a BIOS machine none.
    assert_eq!(
        said(&xml),
        [
            "the VM's NVRAM file ('w.nvram' beside the .vbox, VirtualBox's default) is not carried; UEFI variables (boot entries, enrolled Secure Boot keys) start empty"
        ]
    );
    for (settings, store) in [
        ("/vms/My VM/My VM.vbox", "'My VM.nvram'"),
        ("web.v2.vbox", "'web.v2.nvram'"),
    ] {
        let c = read::parse(xml.as_bytes(), settings).unwrap();
        assert!(
            c.vm.warnings.iter().any(|w| w.contains(store)),
            "{settings}: {:?}",
            c.vm.warnings
        );
    }
    let mut bios_vm = vm.clone();
    bios_vm.firmware = Firmware::Bios;
    assert_eq!(said(&written(&bios_vm).0), Vec::<String>::new());
    let bios = xml.replacen(
        "<IOAPIC enabled=\"true\"/>",
        "<IOAPIC enabled=\"true\"/><NVRAM path=\"Snapshots/x.nvram\"/>",
        1,
    );
    assert_ne!(bios, xml);
    assert_eq!(
        said(&bios),
        [
            "the VM's NVRAM file ('Snapshots/x.nvram') is not carried; UEFI variables (boot entries, enrolled Secure Boot keys) start empty"
        ]
    );
    // Settings 1.20: the firmware's settings in <Firmware>, the NVRAM with them.
    let firmware = xml.replacen(
        "<Firmware type=\"EFI\"/>",
        "<Firmware type=\"EFI\"><NVRAM path=\"y.nvram\"/></Firmware>",
        1,
    );
    assert_ne!(firmware, xml);
    assert_eq!(said(&firmware).len(), 1, "{firmware}");
    assert!(said(&firmware)[0].contains("'y.nvram'"));
}

#[test]
fn corpus_virtualbox_3_1_settings_read() {
    let Some(bytes) = corpus("vbox3.1", "pyVBox-TestVM-vbox3.1.xml") else {
        return;
    };
    assert!(diskferry::vmconfig::vbox::probe(&bytes));
    let c = read::parse(&bytes, "TestVM.xml").unwrap();
    let vm = &c.vm;
    assert_eq!(vm.name, "TestVM");
    assert_eq!(vm.guest_os.os, Os::from_virtualbox("WindowsXP"));
    assert!(vm.guest_os.os.is_some());
    assert_eq!(vm.cpus.count, 1);
    assert_eq!(vm.memory_bytes, 192 << 20);
    assert!(vm.disks.is_empty() && c.disk_files.is_empty());
    // Eight slots, one enabled.
    assert_eq!(vm.nics.len(), 1);
    assert_eq!(vm.nics[0].model, NicModel::PcNet);
    assert_eq!(vm.nics[0].mac.as_deref(), Some("08:00:27:1b:ad:0a"));
    assert_eq!(vm.nics[0].network.as_deref(), Some("NAT"));
}

#[test]
fn corpus_virtualbox_4_0_settings_read() {
    let Some(bytes) = corpus("vbox4.0", "pyVBox-TestVM.vbox") else {
        return;
    };
    let c = read::parse(&bytes, "TestVM.vbox").unwrap();
    let vm = &c.vm;
    assert_eq!(vm.name, "TestVM");
    assert_eq!(vm.guest_os.os, Os::from_virtualbox("Ubuntu"));
    assert_eq!(vm.guest_os.os.map(|o| o.bits()), Some(32));
    assert_eq!(vm.memory_bytes, 512 << 20);
    assert!(vm.disks.is_empty());
    // StorageControllers beside Hardware (old settings): the empty DVD drive on IDE 1:0.
    assert_eq!(
        vm.cdroms,
        [Cdrom {
            source: DiskSource::Blank,
            controller: Controller {
                kind: ControllerKind::Ide,
                index: 0
            },
            unit: 2
        }]
    );
    assert_eq!(vm.nics.len(), 1);
    assert_eq!(vm.nics[0].model, NicModel::E1000);
}

/// A machine using most of what the model has.
fn rich_vm() -> Vm {
    let mut vm = Vm::new("rich & <odd> \"name\"");
    vm.description = Some("line one\nline two".into());
    vm.guest_os.virtualbox_id = Some("Windows11_64".into());
    vm.guest_os.resolve();
    vm.firmware = Firmware::Uefi { secure_boot: false };
    vm.tpm = true;
    vm.cpus.count = 6;
    vm.memory_bytes = 6 << 30;
    let disk = |kind, unit| Disk {
        source: DiskSource::Blank,
        capacity_bytes: None,
        controller: Controller { kind, index: 0 },
        unit,
        boot_order: None,
    };
    vm.disks.push(disk(ControllerKind::Sata, 0));
    vm.disks.push(disk(ControllerKind::Sata, 3));
    vm.disks.push(disk(ControllerKind::Nvme, 0));
    vm.disks
        .push(disk(ControllerKind::Scsi(ScsiModel::LsiSas), 1));
    vm.disks.push(disk(ControllerKind::Ide, 1));
    vm.cdroms.push(Cdrom {
        source: DiskSource::Blank,
        controller: Controller {
            kind: ControllerKind::Ide,
            index: 0,
        },
        unit: 2,
    });
    for (model, mac, net) in [
        (NicModel::E1000, "08:00:27:00:00:01", "NAT"),
        (NicModel::Virtio, "08:00:27:00:00:02", "Bridged:eth0"),
        (NicModel::PcNet, "08:00:27:00:00:03", "HostOnly:vboxnet0"),
        (NicModel::E1000, "08:00:27:00:00:04", "Internal:intnet"),
    ] {
        vm.nics.push(Nic {
            model,
            mac: Some(mac.into()),
            network: Some(net.into()),
        });
    }
    vm.serial_ports.push(SerialPort {
        index: 0,
        connection: None,
    });
    vm
}

fn media(n: usize) -> Vec<write::Medium> {
    (0..n)
        .map(|i| write::Medium {
            uuid: Uuid::from_u128(0x1111_0000_0000_4000_8000_0000_0000_0000 + i as u128),
            location: format!("disk{i}.vdi"),
        })
        .collect()
}

fn written(vm: &Vm) -> (String, Element) {
    let (xml, _) = write::settings_file(vm, &media(vm.disks.len())).unwrap();
    let root = diskferry::ovf::xml::parse(xml.as_bytes(), "w.vbox").unwrap();
    (xml, root)
}

fn find<'a>(e: &'a Element, name: &str) -> Vec<&'a Element> {
    let mut out = Vec::new();
    if e.name == name {
        out.push(e);
    }
    for c in &e.children {
        out.extend(find(c, name));
    }
    out
}

fn attr_of<'a>(e: &'a Element, name: &str) -> Option<&'a str> {
    e.attr(Ns::None, name)
}

#[test]
fn written_vbox_reads_back_into_the_same_model() {
    let vm = rich_vm();
    let (xml, _) = written(&vm);
    let back = read::parse(xml.as_bytes(), "w.vbox").unwrap();
    let b = &back.vm;
    assert_eq!(b.name, vm.name);
    assert_eq!(b.description, vm.description);
    assert_eq!(b.guest_os.os, vm.guest_os.os);
    assert_eq!(b.firmware, vm.firmware);
    assert_eq!(b.tpm, vm.tpm);
    assert_eq!(b.cpus, vm.cpus);
    assert_eq!(b.memory_bytes, vm.memory_bytes);
    assert_eq!(b.nics, vm.nics);
    assert_eq!(b.serial_ports, vm.serial_ports);
    assert_eq!(b.cdroms, vm.cdroms);
    let placed = |d: &Disk| (d.controller, d.unit);
    assert_eq!(
        b.disks.iter().map(placed).collect::<Vec<_>>(),
        vm.disks.iter().map(placed).collect::<Vec<_>>()
    );
    assert_eq!(
        back.disk_files,
        [
            "disk0.vdi",
            "disk1.vdi",
            "disk2.vdi",
            "disk3.vdi",
            "disk4.vdi"
        ]
    );
}

/// Rule: the root is `<VirtualBox>` in the namespace http://www.virtualbox.org/ with a
/// required `version` (VirtualBox-settings.xsd: `TVirtualBox`, attribute `version`
/// use="required"; `targetNamespace`); 1.19 is VirtualBox 7.0's, which keeps
/// StorageControllers in Hardware (`THardware` lists it).
#[test]
fn rule_root_is_virtualbox_in_its_namespace_with_a_version() {
    let (xml, root) = written(&rich_vm());
    assert_eq!(root.name, "VirtualBox");
    assert_eq!(root.ns_uri.as_deref(), Some("http://www.virtualbox.org/"));
    assert_eq!(attr_of(&root, "version"), Some("1.19-linux"));
    assert!(xml.starts_with("<?xml version=\"1.0\"?>"));
    let hw = find(&root, "Hardware")[0];
    assert!(hw.children.iter().any(|c| c.name == "StorageControllers"));
}

/// Rule: every UUID is `{8-4-4-4-12}` in braces and not null (`TUUID`, `TNonNullUUID`).
#[test]
fn rule_uuids_are_braced_and_not_null() {
    let (_, root) = written(&rich_vm());
    let mut uuids = Vec::new();
    for name in ["Machine", "HardDisk", "Image"] {
        for e in find(&root, name) {
            uuids.push(attr_of(e, "uuid").unwrap().to_string());
        }
    }
    assert_eq!(uuids.len(), 1 + 5 + 5);
    for u in uuids {
        let inner = u
            .strip_prefix('{')
            .and_then(|u| u.strip_suffix('}'))
            .unwrap();
        let parsed = Uuid::parse_str(inner).unwrap();
        assert_eq!(inner.len(), 36);
        assert!(!parsed.is_nil());
    }
}

/// Rule: `Machine` has `name` (non-empty), `OSType` (non-empty) and `uuid`, all required;
/// `version` "must not be present in normal settings files" (`TMachine`).
#[test]
fn rule_machine_has_name_ostype_uuid_and_no_version() {
    let (_, root) = written(&rich_vm());
    let m = find(&root, "Machine")[0];
    assert_eq!(attr_of(m, "name"), Some("rich & <odd> \"name\""));
    assert_eq!(attr_of(m, "OSType"), Some("Windows11_64"));
    assert!(attr_of(m, "uuid").is_some());
    assert_eq!(attr_of(m, "version"), None);
    // An unknown guest still gets an OSType.
    let (_, root) = written(&Vm::new("x"));
    assert_eq!(
        attr_of(find(&root, "Machine")[0], "OSType"),
        Some("Other_64")
    );
}

/// Rule: each registry `HardDisk` has `uuid`, `location`, `format` and (at the top level)
/// `type`, all required (`THardDiskBase`, `THardDisk`); the location is relative to the
/// settings file so the folder can move.
#[test]
fn rule_hard_disks_have_uuid_relative_location_format_and_type() {
    let (_, root) = written(&rich_vm());
    let disks = find(&root, "HardDisk");
    assert_eq!(disks.len(), 5);
    for (i, d) in disks.iter().enumerate() {
        assert_eq!(
            attr_of(d, "location"),
            Some(format!("disk{i}.vdi").as_str())
        );
        assert_eq!(attr_of(d, "format"), Some("VDI"));
        assert_eq!(attr_of(d, "type"), Some("Normal"));
    }
    // Each attachment names a registered medium.
    let registered: Vec<&str> = disks.iter().map(|d| attr_of(d, "uuid").unwrap()).collect();
    for img in find(&root, "Image") {
        assert!(registered.contains(&attr_of(img, "uuid").unwrap()));
    }
}

/// Rule: `Memory RAMSize` in MiB from 4 to 2097152 (`TMemory`), `CPU count` from 1 to 64
/// (`TCPUCount`).
#[test]
fn rule_memory_in_mib_and_cpu_count_in_range() {
    let (_, root) = written(&rich_vm());
    assert_eq!(attr_of(find(&root, "Memory")[0], "RAMSize"), Some("6144"));
    assert_eq!(attr_of(find(&root, "CPU")[0], "count"), Some("6"));
    let mut big = Vm::new("big");
    big.cpus.count = 200;
    big.memory_bytes = 8 << 40;
    let (_, root) = written(&big);
    assert_eq!(
        attr_of(find(&root, "Memory")[0], "RAMSize"),
        Some("2097152")
    );
    assert_eq!(attr_of(find(&root, "CPU")[0], "count"), Some("64"));
    let mut tiny = Vm::new("tiny");
    tiny.memory_bytes = 1 << 20;
    let (_, root) = written(&tiny);
    assert_eq!(attr_of(find(&root, "Memory")[0], "RAMSize"), Some("4"));
}

/// Rule: more than one CPU needs the I/O APIC (VirtualBox refuses to start an SMP guest
/// without it: Console's configuration, "IOAPIC" check in ConsoleImplConfigX86.cpp); we
/// always enable it (`BIOS/IOAPIC enabled`, default false in the schema).
#[test]
fn rule_io_apic_is_enabled() {
    let (_, root) = written(&rich_vm());
    assert_eq!(attr_of(find(&root, "IOAPIC")[0], "enabled"), Some("true"));
}

/// Rule: `MACAddress` is 12 hex digits without separators, the first octet even (unicast):
/// pattern `[0-9A-Fa-f][02468ACEace][0-9A-Fa-f]{10}` (`TNetworkAdapter`); a missing or
/// multicast address is replaced with one in VirtualBox's 08:00:27 range.
#[test]
fn rule_mac_is_twelve_hex_digits_unicast() {
    let mut vm = rich_vm();
    vm.nics[1].mac = None;
    vm.nics[2].mac = Some("01:00:5e:00:00:01".into());
    let (_, root) = written(&vm);
    let macs: Vec<&str> = find(&root, "Adapter")
        .iter()
        .map(|e| attr_of(e, "MACAddress").unwrap())
        .collect();
    assert_eq!(macs[0], "080027000001");
    for m in &macs {
        assert_eq!(m.len(), 12, "{m}");
        assert!(m.bytes().all(|b| b.is_ascii_hexdigit()), "{m}");
        assert_eq!(u8::from_str_radix(&m[..2], 16).unwrap() & 1, 0, "{m}");
    }
    assert!(macs[1].starts_with("080027") && macs[2].starts_with("080027"));
}

/// Rule: adapters have a required, unique `slot` (`TNetworkAdapter`, the
/// `THardware-Network-Adapter` unique key) and a `type` from `TNetworkAdapterType`; the
/// PIIX3 chipset has 8 (SystemPropertiesImpl.cpp, getMaxNetworkAdapters).
#[test]
fn rule_at_most_eight_adapters_in_unique_slots_of_known_types() {
    let mut vm = rich_vm();
    for _ in 0..7 {
        vm.nics.push(Nic {
            model: NicModel::Vmxnet3,
            mac: None,
            network: None,
        });
    }
    let (xml, _) = write::settings_file(&vm, &media(vm.disks.len())).unwrap();
    let (_, warnings) = write::settings_file(&vm, &media(vm.disks.len())).unwrap();
    let root = diskferry::ovf::xml::parse(xml.as_bytes(), "w").unwrap();
    let adapters = find(&root, "Adapter");
    assert_eq!(adapters.len(), 8);
    let slots: Vec<&str> = adapters
        .iter()
        .map(|e| attr_of(e, "slot").unwrap())
        .collect();
    assert_eq!(slots, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    for e in &adapters {
        assert!(
            diskferry::vmconfig::vbox::ADAPTER_TYPES.contains(&attr_of(e, "type").unwrap()),
            "{:?}",
            attr_of(e, "type")
        );
    }
    assert!(
        warnings.iter().any(|w| w.contains("8 slots")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("vmxnet3")),
        "{warnings:?}"
    );
}

/// Rule: one controller per storage bus on the default PIIX3 chipset
/// (SystemPropertiesImpl.cpp, getMaxInstancesOfStorageBus), each with a required `name`,
/// `type` (`TStorageControllerType`) and `PortCount` (`TStorageController`), ports and devices
/// within the bus's limits (getMaxPortCountForStorageBus, getMaxDevicesPerPortForStorageBus:
/// IDE 2 ports x 2 devices, SATA 30, SCSI 16, SAS 255, NVMe 255, virtio-scsi 256).
#[test]
fn rule_one_controller_per_bus_within_its_port_limits() {
    let mut vm = rich_vm();
    // A second SCSI model and a unit beyond IDE's four slots.
    vm.disks[3].controller.kind = ControllerKind::Scsi(ScsiModel::LsiLogic);
    vm.disks.push(Disk {
        source: DiskSource::Blank,
        capacity_bytes: None,
        controller: Controller {
            kind: ControllerKind::Scsi(ScsiModel::BusLogic),
            index: 1,
        },
        unit: 1,
        boot_order: None,
    });
    vm.disks[4].unit = 9;
    let (xml, warnings) = write::settings_file(&vm, &media(vm.disks.len())).unwrap();
    let root = diskferry::ovf::xml::parse(xml.as_bytes(), "w").unwrap();
    let ctls = find(&root, "StorageController");
    let types: Vec<&str> = ctls.iter().map(|c| attr_of(c, "type").unwrap()).collect();
    assert_eq!(types, ["AHCI", "NVMe", "LsiLogic", "PIIX4"]);
    let mut names: Vec<&str> = ctls.iter().map(|c| attr_of(c, "name").unwrap()).collect();
    names.dedup();
    assert_eq!(names.len(), 4);
    for c in &ctls {
        let ports: u32 = attr_of(c, "PortCount").unwrap().parse().unwrap();
        let (limit, devices) = match attr_of(c, "type").unwrap() {
            "PIIX4" => (2, 2),
            "AHCI" => (30, 1),
            "LsiLogic" => (16, 1),
            _ => (255, 1),
        };
        assert!(ports >= 1 && ports <= limit, "{ports}");
        if matches!(attr_of(c, "type"), Some("PIIX4" | "LsiLogic")) {
            assert_eq!(ports, limit);
        }
        let mut seen = Vec::new();
        for d in find(c, "AttachedDevice") {
            let p: u32 = attr_of(d, "port").unwrap().parse().unwrap();
            let dev: u32 = attr_of(d, "device").unwrap().parse().unwrap();
            assert!(p < ports && dev < devices, "{p}:{dev}");
            assert!(!seen.contains(&(p, dev)));
            seen.push((p, dev));
        }
    }
    // SATA units 0 and 3 kept; the IDE disk asked for unit 9 and got a free slot.
    assert!(
        warnings.iter().any(|w| w.contains("one SCSI controller")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("unit 9")),
        "{warnings:?}"
    );
}

/// Rule: `RTC localOrUTC` is `local` or `UTC` (`TLocalOrUTC`): Windows keeps local time.
#[test]
fn rule_clock_is_local_for_windows_and_utc_otherwise() {
    let (_, root) = written(&rich_vm());
    assert_eq!(attr_of(find(&root, "RTC")[0], "localOrUTC"), Some("local"));
    let mut linux = Vm::new("l");
    linux.guest_os.virtualbox_id = Some("Ubuntu_64".into());
    linux.guest_os.resolve();
    let (_, root) = written(&linux);
    assert_eq!(attr_of(find(&root, "RTC")[0], "localOrUTC"), Some("UTC"));
}

/// Two bare disks with data in places.
fn disks(d: &Path) -> (PathBuf, PathBuf) {
    let a = d.join("system.raw");
    make_raw(&a, 64 << 20, &[(0, 3 << 20), (60 << 20, 1 << 20)]);
    let b = d.join("data.raw");
    make_raw(&b, 16 << 20, &[(5 << 20, 100_000)]);
    (a, b)
}

#[test]
fn bare_disks_to_vbox_and_on_to_kvm_keep_their_content() {
    let test = "bare_disks_to_vbox_and_on_to_kvm_keep_their_content";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = disks(d);
    let out = d.join("vb");
    let (code, stdout, err) = run(&[
        "migrate",
        "--to",
        "virtualbox-vbox",
        "--name",
        "web01",
        "--cpus",
        "2",
        "--memory",
        "2G",
        "--os",
        "ubuntu-64",
        "--firmware",
        "uefi",
        "--nic",
        "e1000,mac=08:00:27:01:02:03,network=Bridged:eth0",
        s(&a),
        s(&b),
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.is_empty());
    assert!(err.contains("VBoxManage registervm"), "{err}");
    let vbox = out.join("web01.vbox");
    let xml = std::fs::read_to_string(&vbox).unwrap();
    // The registry names each VDI by the UUID in its header.
    for disk in ["web01-disk1.vdi", "web01-disk2.vdi"] {
        let u = uuid_of(&out.join(disk));
        assert!(
            xml.contains(&format!("uuid=\"{{{u}}}\" location=\"{disk}\"")),
            "{u} {disk}\n{xml}"
        );
    }
    let c = read::parse(xml.as_bytes(), "web01.vbox").unwrap();
    assert_eq!(c.vm.firmware, Firmware::Uefi { secure_boot: false });
    assert_eq!(c.vm.nics[0].network.as_deref(), Some("Bridged:eth0"));
    // On to KVM: the .vbox is found by its content, its disks through the gate.
    let kvm = d.join("kvm");
    let (code, _, err) = run(&["migrate", "--to", "kvm", s(&vbox), s(&kvm)]);
    assert_eq!(code, 0, "{err}");
    let domain = std::fs::read_to_string(kvm.join("web01.xml")).unwrap();
    assert!(domain.contains("firmware='efi'"), "{domain}");
    assert!(
        domain.contains("<memory unit='KiB'>2097152</memory>"),
        "{domain}"
    );
    if have_qemu(test) {
        assert!(qemu_compare(
            "raw",
            &a,
            "qcow2",
            &kvm.join("web01-disk1.qcow2")
        ));
        assert!(qemu_compare(
            "raw",
            &b,
            "qcow2",
            &kvm.join("web01-disk2.qcow2")
        ));
        assert!(qemu_compare("raw", &a, "vdi", &out.join("web01-disk1.vdi")));
    }
}

#[test]
fn ova_to_vbox_to_kvm_keeps_the_machine_and_the_content() {
    let test = "ova_to_vbox_to_kvm_keeps_the_machine_and_the_content";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = disks(d);
    let ova = d.join("vm.ova");
    run_ok(&[
        "migrate",
        "--to",
        "vsphere",
        "--name",
        "app",
        "--cpus",
        "4",
        "--memory",
        "1G",
        "--os",
        "windows9-64",
        "--disk-bus",
        "scsi",
        s(&a),
        s(&b),
        s(&ova),
    ]);
    let vb = d.join("vb");
    let (code, _, err) = run(&["migrate", "--to", "vbox", s(&ova), s(&vb)]);
    assert_eq!(code, 0, "{err}");
    let xml = std::fs::read_to_string(vb.join("app.vbox")).unwrap();
    let c = read::parse(xml.as_bytes(), "app.vbox").unwrap();
    assert_eq!(c.vm.cpus.count, 4);
    assert_eq!(c.vm.memory_bytes, 1 << 30);
    assert_eq!(
        c.vm.guest_os.os.map(|o| o.family()),
        Some(diskferry::vm::OsFamily::Windows)
    );
    assert_eq!(c.vm.disks.len(), 2);
    let kvm = d.join("kvm");
    let (code, _, err) = run(&["migrate", "--to", "kvm", s(&vb.join("app.vbox")), s(&kvm)]);
    assert_eq!(code, 0, "{err}");
    if have_qemu(test) {
        assert!(qemu_compare(
            "raw",
            &a,
            "qcow2",
            &kvm.join("app-disk1.qcow2")
        ));
        assert!(qemu_compare(
            "raw",
            &b,
            "qcow2",
            &kvm.join("app-disk2.qcow2")
        ));
    }
}

/// A VirtualBox machine folder with a snapshot: `vm.vdi` and `Snapshots/{uuid}.vdi` over it,
/// the snapshot attached (the current state). Returns the folder and the raw content of the
/// current state.
fn machine_with_snapshot(d: &Path) -> (PathBuf, PathBuf) {
    let folder = d.join("vm");
    std::fs::create_dir_all(folder.join("Snapshots")).unwrap();
    let base_raw = d.join("base.raw");
    make_raw(&base_raw, 32 << 20, &[(0, 2 << 20), (20 << 20, 1 << 20)]);
    let base = folder.join("vm.vdi");
    run_ok(&["convert", "-O", "vdi", s(&base_raw), s(&base)]);
    // The snapshot changes a block and zeroes one the parent has.
    let now = d.join("now.raw");
    std::fs::copy(&base_raw, &now).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&now).unwrap();
    f.write_all_at(&pseudo_random(100_000, 7), 10 << 20)
        .unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 20 << 20).unwrap();
    let beside = folder.join("new.vdi");
    run_ok(&[
        "convert",
        "-O",
        "vdi",
        "-B",
        s(&base),
        "-F",
        "vdi",
        s(&now),
        s(&beside),
    ]);
    let snap_uuid = uuid_of(&beside);
    std::fs::rename(
        &beside,
        folder
            .join("Snapshots")
            .join(format!("{{{snap_uuid}}}.vdi")),
    )
    .unwrap();
    let base_uuid = uuid_of(&base);
    let vbox = format!(
        r#"<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{{0b1c2d3e-0000-4000-8000-000000000009}}" name="snappy" OSType="Debian_64" currentSnapshot="{{0b1c2d3e-0000-4000-8000-00000000000a}}" snapshotFolder="Snapshots">
    <MediaRegistry>
      <HardDisks>
        <HardDisk uuid="{{{base_uuid}}}" location="vm.vdi" format="VDI" type="Normal">
          <HardDisk uuid="{{{snap_uuid}}}" location="Snapshots/{{{snap_uuid}}}.vdi" format="VDI"/>
        </HardDisk>
      </HardDisks>
    </MediaRegistry>
    <Snapshot uuid="{{0b1c2d3e-0000-4000-8000-00000000000a}}" name="before" timeStamp="2025-01-01T00:00:00Z">
      <Hardware>
        <Memory RAMSize="512"/>
        <StorageControllers>
          <StorageController name="SATA" type="AHCI" PortCount="1">
            <AttachedDevice type="HardDisk" port="0" device="0">
              <Image uuid="{{{base_uuid}}}"/>
            </AttachedDevice>
          </StorageController>
        </StorageControllers>
      </Hardware>
    </Snapshot>
    <Hardware>
      <CPU count="2"/>
      <Memory RAMSize="1024"/>
      <Network>
        <Adapter slot="0" enabled="true" MACAddress="080027AABBCC" type="virtio">
          <NAT/>
        </Adapter>
      </Network>
      <StorageControllers>
        <StorageController name="SATA" type="AHCI" PortCount="1">
          <AttachedDevice type="HardDisk" port="0" device="0">
            <Image uuid="{{{snap_uuid}}}"/>
          </AttachedDevice>
        </StorageController>
      </StorageControllers>
    </Hardware>
  </Machine>
</VirtualBox>
"#
    );
    std::fs::write(folder.join("vm.vbox"), vbox).unwrap();
    (folder, now)
}

#[test]
fn a_snapshot_chain_migrates_flattened() {
    let test = "a_snapshot_chain_migrates_flattened";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (folder, now) = machine_with_snapshot(d);
    let kvm = d.join("kvm");
    let (code, _, err) = run(&[
        "migrate",
        "--to",
        "kvm",
        s(&folder.join("vm.vbox")),
        s(&kvm),
    ]);
    assert_eq!(code, 0, "{err}");
    let domain = std::fs::read_to_string(kvm.join("snappy.xml")).unwrap();
    assert!(
        domain.contains("<memory unit='KiB'>1048576</memory>"),
        "{domain}"
    );
    assert!(domain.contains("08:00:27:aa:bb:cc"), "{domain}");
    // The current state, not the base: the snapshot's changes over its parent.
    let flat = d.join("flat.raw");
    run_ok(&[
        "convert",
        "-O",
        "raw",
        s(&kvm.join("snappy-disk1.qcow2")),
        s(&flat),
    ]);
    assert_eq!(
        std::fs::read(&flat).unwrap(),
        std::fs::read(&now).unwrap(),
        "flattened content differs"
    );
    // The result is one plain qcow2: no backing file left behind.
    if have_qemu(test) {
        let info = qemu_img_ok(&["info", s(&kvm.join("snappy-disk1.qcow2"))]);
        assert!(!info.contains("backing file"), "{info}");
    }
}

#[test]
fn malformed_settings_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let case = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let machine = |hw: &str, reg: &str| {
        format!(
            r#"<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux"><Machine uuid="{{0b1c2d3e-0000-4000-8000-000000000001}}" name="m" OSType="Ubuntu_64"><MediaRegistry><HardDisks>{reg}</HardDisks></MediaRegistry><Hardware>{hw}</Hardware></Machine></VirtualBox>"#
        )
    };
    let attach = r#"<StorageControllers><StorageController name="SATA" type="AHCI" PortCount="1"><AttachedDevice type="HardDisk" port="0" device="0"><Image uuid="{aaaaaaaa-0000-4000-8000-000000000001}"/></AttachedDevice></StorageController></StorageControllers>"#;
    // Entity expansion.
    let p = case(
        "bomb.vbox",
        "<?xml version=\"1.0\"?><!DOCTYPE VirtualBox [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><VirtualBox version=\"1.19\"><Machine name=\"&b;\"/></VirtualBox>",
    );
    one_line_error(&["migrate", "--to", "kvm", s(&p), s(&out)], &["bomb.vbox"]);
    // An attachment whose medium the registry does not list.
    let p = case("unlisted.vbox", &machine(attach, ""));
    one_line_error(
        &["migrate", "--to", "kvm", s(&p), s(&out)],
        &[
            "unlisted.vbox",
            "MediaRegistry",
            "aaaaaaaa-0000-4000-8000-000000000001",
        ],
    );
    // A listed medium whose file is missing.
    let p = case(
        "missing.vbox",
        &machine(
            attach,
            r#"<HardDisk uuid="{aaaaaaaa-0000-4000-8000-000000000001}" location="gone.vdi" format="VDI" type="Normal"/>"#,
        ),
    );
    one_line_error(
        &["migrate", "--to", "kvm", s(&p), s(&out)],
        &["missing.vbox", "gone.vdi"],
    );
    // A location escaping the machine's folder, under --confine.
    let outside = d.join("outside.raw");
    make_raw(&outside, 1 << 20, &[(0, 4096)]);
    let sub = d.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let p = sub.join("escape.vbox");
    std::fs::write(
        &p,
        machine(
            attach,
            r#"<HardDisk uuid="{aaaaaaaa-0000-4000-8000-000000000001}" location="../outside.raw" format="RAW" type="Normal"/>"#,
        ),
    )
    .unwrap();
    one_line_error(
        &["migrate", "--confine", "--to", "kvm", s(&p), s(&out)],
        &["outside.raw"],
    );
    assert!(!out.exists());
    // Not a machine: VirtualBox's global settings.
    let p = case(
        "VirtualBox.xml",
        r#"<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux"><Global/></VirtualBox>"#,
    );
    one_line_error(
        &["migrate", "--to", "kvm", s(&p), s(&out)],
        &["VirtualBox.xml", "no <Machine>"],
    );
    // Unterminated XML, a bad number, a CPU count beyond any hypervisor (the VM model's
    // bounds), a bad UUID: each names the file (and, for the parser's, where).
    for (name, text, want) in [
        (
            "cut.vbox",
            machine("<Memory RAMSize=\"1\"", ""),
            "invalid XML",
        ),
        (
            "ram.vbox",
            machine("<Memory RAMSize=\"lots\"/>", ""),
            "RAMSize",
        ),
        (
            "cpus.vbox",
            machine("<CPU count=\"4294967295\"/>", ""),
            "the VM's virtual CPU count (4294967295) is more than any hypervisor runs",
        ),
        (
            "uuid.vbox",
            machine(
                "",
                r#"<HardDisk uuid="{not-a-uuid}" location="a.vdi" format="VDI" type="Normal"/>"#,
            ),
            "uuid",
        ),
    ] {
        let p = case(name, &text);
        one_line_error(&["migrate", "--to", "kvm", s(&p), s(&out)], &[name, want]);
    }
    assert!(!out.exists());
}

#[test]
fn virtualbox_ova_carries_its_machine_section_and_reads_back_uefi() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = disks(d);
    let ova = d.join("vm.ova");
    let (code, _, err) = run(&[
        "migrate",
        "--to",
        "virtualbox",
        "--name",
        "efi",
        "--os",
        "ubuntu-64",
        "--firmware",
        "uefi",
        "--nic",
        "virtio,network=Bridged:eth0",
        s(&a),
        s(&b),
        s(&ova),
    ]);
    assert_eq!(code, 0, "{err}");
    // UEFI is carried now: no warning about it.
    assert!(!err.contains("firmware to EFI after import"), "{err}");
    let x = d.join("x");
    std::fs::create_dir_all(&x).unwrap();
    let st = std::process::Command::new("tar")
        .args(["xf", s(&ova), "-C", s(&x)])
        .status()
        .unwrap();
    assert!(st.success());
    let ovf = std::fs::read(x.join("efi.ovf")).unwrap();
    let root = diskferry::ovf::xml::parse(&ovf, "efi.ovf").unwrap();
    let machine = find(&root, "Machine");
    assert_eq!(machine.len(), 1);
    let m = machine[0];
    assert_eq!(m.ns, Ns::Vbox);
    assert_eq!(m.attr(Ns::Ovf, "required"), Some("false"));
    assert_eq!(attr_of(m, "OSType"), Some("Ubuntu_64"));
    assert_eq!(attr_of(find(m, "Firmware")[0], "type"), Some("EFI"));
    assert_eq!(find(m, "BridgedInterface").len(), 1);
    // Each attachment names a Disk by its vbox:uuid, as VirtualBox's import matches them.
    let disk_uuids: Vec<String> = find(&root, "Disk")
        .iter()
        .map(|e| format!("{{{}}}", e.attr(Ns::Vbox, "uuid").unwrap()))
        .collect();
    let images: Vec<String> = find(m, "Image")
        .iter()
        .map(|e| attr_of(e, "uuid").unwrap().to_string())
        .collect();
    assert_eq!(disk_uuids, images);
    // Our OVF reader reads the same machine back, UEFI included.
    let info: serde_json::Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&ova)])).unwrap();
    let text = info.to_string();
    assert!(text.contains("\"uefi\""), "{text}");
}
