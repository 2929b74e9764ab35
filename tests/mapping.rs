//! The device mapping tables (issue 14): the audit document is what the tables give, every
//! `--to` target and every source kind has a table, the tables answer for every model value,
//! each rule cites its source, the writers write what their table says, and
//! `migrate --show-mapping` prints one pair.
//!
//! `docs/device-mapping.md` is regenerated with `DISKFERRY_BLESS=1 cargo test --release --test
//! mapping`; without it, a difference fails.

mod common;

use common::*;
use diskferry::migrate::mapping::{
    self, ALL_CONTROLLERS, Boot, TargetMapping, document, pair_markdown, source_named, target_named,
};
use diskferry::migrate::target_names;
use diskferry::vm::{
    Controller, Disk, DiskSource, Firmware, GuestOs, Nic, NicModel, Os, OsFamily, Vm,
};
use diskferry::vmconfig::{libvirt, proxmox, vmx, xl};
use std::path::Path;

const FAMILIES: [Option<OsFamily>; 4] = [
    Some(OsFamily::Linux),
    Some(OsFamily::Bsd),
    Some(OsFamily::Windows),
    None,
];

fn nic_models() -> Vec<NicModel> {
    vec![
        NicModel::E1000,
        NicModel::E1000e,
        NicModel::Vmxnet3,
        NicModel::Virtio,
        NicModel::Rtl8139,
        NicModel::PcNet,
        NicModel::Netvsc,
        NicModel::Other("dec21140".into()),
    ]
}

/// A guest of each family the tables distinguish.
fn guest(family: Option<OsFamily>) -> GuestOs {
    let id = match family {
        Some(OsFamily::Linux) => "ubuntu-64",
        Some(OsFamily::Bsd) => "freebsd-64",
        Some(OsFamily::Windows) => "windows9-64",
        _ => return GuestOs::default(),
    };
    let os = Os::from_vmware(id).unwrap();
    assert_eq!(Some(os.family()), family, "{id}");
    GuestOs {
        os: Some(os),
        ..GuestOs::default()
    }
}

/// A VM of `family` with one disk on each model controller and one NIC of each model.
fn vm(family: Option<OsFamily>) -> Vm {
    let mut vm = Vm::new("mapped");
    vm.guest_os = guest(family);
    vm.memory_bytes = 1 << 30;
    for (i, kind) in ALL_CONTROLLERS.iter().enumerate() {
        vm.disks.push(Disk {
            source: DiskSource::Blank,
            capacity_bytes: Some(1 << 20),
            controller: Controller {
                kind: *kind,
                index: 0,
            },
            unit: i as u32 % 2,
            boot_order: None,
        });
    }
    for model in nic_models() {
        vm.nics.push(Nic {
            model,
            mac: None,
            network: None,
        });
    }
    vm
}

#[test]
fn the_committed_document_is_what_the_tables_give() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/device-mapping.md");
    let text = document();
    if std::env::var_os("DISKFERRY_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "docs/device-mapping.md differs from the mapping tables; regenerate it with DISKFERRY_BLESS=1 cargo test --release --test mapping"
    );
    // Every pair is in it, each once.
    for s in mapping::sources() {
        for t in mapping::targets() {
            let heading = format!("### {} → {}\n", s.names[0], t.names[0]);
            assert_eq!(text.matches(&heading).count(), 1, "{heading}");
        }
    }
}

#[test]
fn every_target_and_source_kind_has_a_table() {
    for name in target_names() {
        assert!(target_named(name).is_some(), "--to {name} has no table");
    }
    assert!(target_named("xenserver.ova").is_some());
    // The source kinds tests/matrix.rs builds, by the name --from takes.
    for name in [
        "disks", "vmx", "vbox", "vmc", "hyperv", "libvirt", "xl", "proxmox", "ovf", "xva",
    ] {
        assert!(source_named(name).is_some(), "--from {name} has no table");
    }
    assert!(source_named("nonsense").is_none());
    assert!(target_named("nonsense").is_none());
}

fn described(t: &TargetMapping) -> bool {
    !t.controllers.is_empty()
}

#[test]
fn every_table_answers_for_every_model_value_and_guest() {
    for t in mapping::targets().into_iter().filter(|t| described(t)) {
        let name = t.names[0];
        for fam in FAMILIES {
            for kind in ALL_CONTROLLERS {
                assert!(
                    t.controller_for(kind, fam).is_some(),
                    "{name}: {kind} {fam:?}"
                );
            }
            for model in nic_models() {
                assert!(t.nic_for(&model, fam).is_some(), "{name}: {model} {fam:?}");
            }
            for key in Boot::ALL {
                assert!(t.boot_for(key, fam).is_some(), "{name}: {key} {fam:?}");
            }
        }
    }
}

fn cited(cite: &str) -> bool {
    cite.starts_with("https://") || cite.starts_with("packages.md: ") || cite.starts_with("docs: ")
}

#[test]
fn every_row_cites_its_source() {
    for t in mapping::targets() {
        let n = t.names[0];
        let cites = t
            .controllers
            .iter()
            .map(|r| r.cite)
            .chain(t.nics.iter().map(|r| r.cite))
            .chain(t.firmware.iter().map(|r| r.cite))
            .chain(t.guest.iter().map(|r| r.cite));
        for c in cites {
            assert!(cited(c), "{n}: '{c}'");
        }
    }
    for s in mapping::sources() {
        let n = s.names[0];
        let cites = s
            .controllers
            .iter()
            .map(|r| r.cite)
            .chain(s.nics.iter().map(|r| r.cite))
            .chain(s.other_nics.iter().map(|r| r.cite))
            .chain(s.firmware.iter().map(|r| r.cite));
        for c in cites {
            assert!(cited(c), "{n}: '{c}'");
        }
    }
}

/// The writers write what their tables say: libvirt's NIC models and bus, VMware's NIC
/// models and SCSI controllers, Proxmox's buses, xl's NIC models.
#[test]
fn writers_follow_their_tables() {
    for fam in FAMILIES {
        let vm = vm(fam);
        // libvirt
        let (buses, _) = libvirt::buses_for(&vm);
        let (xml, _) = libvirt::domain_xml(&vm, &[], buses);
        for n in &vm.nics {
            let want = libvirt::mapping::WRITE.nic(&n.model, &vm).unwrap().target;
            assert!(
                xml.contains(&format!("<model type='{want}'/>")),
                "libvirt {fam:?} {}: {want}",
                n.model
            );
        }
        let bus = libvirt::mapping::WRITE
            .controller(vm.disks[0].controller.kind, &vm)
            .unwrap()
            .target;
        assert_eq!(
            bus,
            match buses {
                libvirt::Buses::Virtio => "virtio",
                libvirt::Buses::Emulated => "sata",
            }
        );
        // VMware
        let layout = vmx::layout::layout(&vm).unwrap();
        for (n, dev) in vm.nics.iter().zip(&layout.nics) {
            let want = vmx::mapping::WRITE_HOSTED
                .nic(&n.model, &vm)
                .unwrap()
                .target;
            assert_eq!(*dev, want, "vmx {fam:?} {}", n.model);
        }
        for (d, slot) in vm.disks.iter().zip(&layout.disks) {
            let want = vmx::mapping::WRITE_HOSTED
                .controller(d.controller.kind, &vm)
                .unwrap()
                .target;
            if let Some(m) = layout
                .scsi
                .get(&slot.controller)
                .filter(|_| matches!(want, "lsilogic" | "lsisas1068" | "pvscsi" | "buslogic"))
            {
                assert_eq!(
                    vmx::layout::scsi_dev(*m),
                    want,
                    "{fam:?} {}",
                    d.controller.kind
                );
            }
        }
        // Proxmox: each disk's bus starts as its row's target does (mixed SCSI models here,
        // so no SCSI row other than the paravirtual guests' holds).
        let (pve, _) = proxmox::mapping::disk_buses(&vm);
        for (d, bus) in vm.disks.iter().zip(&pve) {
            let want = proxmox::mapping::WRITE
                .controller(d.controller.kind, &vm)
                .unwrap()
                .target;
            if proxmox::mapping::paravirt(&vm) || !want.starts_with("scsi") {
                assert!(
                    want.starts_with(bus),
                    "proxmox {fam:?} {}: {bus} {want}",
                    d.controller.kind
                );
            } else {
                assert_eq!(*bus, "sata");
            }
        }
        // xl
        let mut xvm = vm.clone();
        xvm.disks.clear();
        let (cfg, _) = xl::write::xl_cfg(&xvm, &[]).unwrap();
        for n in &vm.nics {
            let want = xl::mapping::WRITE.nic(&n.model, &vm).unwrap().target;
            assert!(cfg.contains(&format!("model={want}")), "xl {}", n.model);
        }
    }
    // Firmware rows: the writer's warnings are the rows' (a Secure Boot UEFI machine with a
    // TPM on xl).
    let mut vm = vm(Some(OsFamily::Linux));
    vm.disks.clear();
    vm.firmware = Firmware::Uefi { secure_boot: true };
    vm.tpm = true;
    let (cfg, warnings) = xl::write::xl_cfg(&vm, &[]).unwrap();
    assert!(cfg.contains("bios = \"ovmf\""));
    for r in [xl::mapping::WRITE.boot(&vm), xl::mapping::WRITE.tpm(&vm)] {
        let w = r.unwrap().warning.unwrap();
        assert!(warnings.iter().any(|x| x == w), "{w}");
    }
}

#[test]
fn show_mapping_prints_one_pair() {
    let out = run_ok(&[
        "migrate",
        "--show-mapping",
        "--from",
        "vmx",
        "--to",
        "proxmox",
    ]);
    let want = format!(
        "# vmx -> proxmox\n\n{}",
        pair_markdown(
            source_named("vmx").unwrap(),
            target_named("proxmox").unwrap()
        )
    );
    assert_eq!(out, want);
    assert!(
        out.contains("| ethernetN.virtualDev = `vmxnet3` | NIC vmxnet3 | virtio [1] |"),
        "{out}"
    );
    let (code, _, err) = run(&[
        "migrate",
        "--show-mapping",
        "--from",
        "floppy",
        "--to",
        "kvm",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown source kind 'floppy'"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
