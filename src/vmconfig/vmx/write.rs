//! The VM model as a .vmx.
//!
//! What the file holds follows what VMware itself writes for a new VM (the corpus's Workstation
//! and ESXi files): `.encoding` first, `config.version = "8"`, the hardware version
//! ([`super::hwversion`]), the PCI bridges VMware puts PCIe devices behind, then the machine.
//! Disk file names are relative to the .vmx (VMware resolves them against its folder), so the
//! folder can be moved or uploaded to a datastore whole.

use super::hwversion::{self, Product};
use super::layout::{Layout, Slot, scsi_dev};
use super::parse::escape;
use super::read::Bus;
use crate::migrate::mapping::Boot;
use crate::vm::{DiskSource, Firmware, Vm};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// How a NIC's MAC address is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacKind {
    /// In VMware's static range 00:50:56:00:00:00 to 00:50:56:3F:FF:FF: `addressType = "static"`.
    Static,
    /// One VMware generated (00:0C:29 Workstation/ESXi, 00:50:56:80+ vCenter):
    /// `addressType = "generated"` with `generatedAddress`.
    Generated,
    /// Outside VMware's ranges: static, with `checkMACAddress = "FALSE"`, without which VMware
    /// refuses to power the VM on.
    Foreign,
}

/// Which of VMware's MAC ranges `mac` (lowercase, colon-separated) is in (vSphere Networking,
/// "MAC Address Assignment from vCenter Server" and "Assigning a Static MAC Address": static
/// addresses are 00:50:56:00:00:00-00:50:56:3F:FF:FF; hosts generate 00:0C:29:xx:xx:xx).
pub fn mac_kind(mac: &str) -> MacKind {
    let b: Vec<u8> = mac
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    match b.as_slice() {
        [0x00, 0x50, 0x56, x, _, _] if *x <= 0x3f => MacKind::Static,
        [0x00, 0x50, 0x56, _, _, _] | [0x00, 0x0c, 0x29, _, _, _] => MacKind::Generated,
        _ => MacKind::Foreign,
    }
}

/// The memory VMware gives `vm`, in MiB, as a .vmx's `memsize` or a VMware OVF's memory item
/// holds it: a multiple of 4 MiB (VMware takes no other), rounded up; 32 MiB, VMware's
/// default, when the source gives none. With a warning for each change.
pub fn memsize(vm: &Vm) -> (u64, Vec<String>) {
    let mut warnings = Vec::new();
    if vm.memory_bytes == 0 {
        warnings.push(
            "the source gives no memory size: 32 MiB written (VMware's default); set it before starting"
                .into(),
        );
        return (32, warnings);
    }
    let mib = vm.memory_bytes.div_ceil(1 << 20);
    let mib4 = mib.div_ceil(4) * 4;
    if mib4 << 20 != vm.memory_bytes {
        // Name the source's size exactly: it need not be a whole MiB.
        let from = if vm.memory_bytes.is_multiple_of(1 << 20) {
            format!("{mib} MiB")
        } else {
            format!("{} bytes", vm.memory_bytes)
        };
        warnings.push(format!(
            "memory rounded up from {from} to {mib4} MiB (VMware takes multiples of 4 MiB)"
        ));
    }
    (mib4, warnings)
}

/// The .vmx text of `vm` with its disks named `disk_files` (relative to the .vmx, in
/// `vm.disks` order), laid out as `layout`; returns the text and what was not carried.
pub fn vmx_text(
    vm: &Vm,
    disk_files: &[String],
    layout: &Layout,
    product: Product,
) -> (String, Vec<String>) {
    let mut warnings = layout.warnings.clone();
    let mut x = String::with_capacity(4096);
    let mut kv = |k: &str, v: &str| {
        let _ = writeln!(x, "{k} = \"{}\"", escape(v));
    };
    let hw = hwversion::choose(vm, product);
    kv(".encoding", "UTF-8");
    kv("config.version", "8");
    kv("virtualHW.version", &hw.to_string());
    if product == Product::Hosted {
        kv("virtualHW.productCompatibility", "hosted");
    }
    kv("pciBridge0.present", "TRUE");
    for b in 4..=7 {
        kv(&format!("pciBridge{b}.present"), "TRUE");
        kv(&format!("pciBridge{b}.virtualDev"), "pcieRootPort");
        kv(&format!("pciBridge{b}.functions"), "8");
    }
    kv("vmci0.present", "TRUE");
    kv("hpet0.present", "TRUE");
    kv("floppy0.present", "FALSE");
    kv("displayName", &vm.name);
    if let Some(d) = &vm.description {
        kv("annotation", d);
    }
    let guest = vm
        .guest_os
        .os
        .and_then(|o| o.vmware().map(str::to_string))
        .or_else(|| vm.guest_os.vmware_id.clone());
    match guest {
        Some(g) => kv("guestOS", &g),
        None => {
            let bits64 = vm.guest_os.os.is_none_or(|o| o.bits() == 64);
            let g = if bits64 { "other-64" } else { "other" };
            warnings.push(format!(
                "the guest operating system has no VMware id: guestOS = \"{g}\"; set it in the VM's settings so that VMware Tools and defaults fit"
            ));
            kv("guestOS", g);
        }
    }
    let (mib, w) = memsize(vm);
    warnings.extend(w);
    kv("memsize", &mib.to_string());
    let cpus = vm.cpus.count.max(1);
    kv("numvcpus", &cpus.to_string());
    if let Some(c) = vm
        .cpus
        .cores_per_socket
        .filter(|c| *c > 0 && cpus.is_multiple_of(*c))
    {
        kv("cpuid.coresPerSocket", &c.to_string());
    }
    if let Firmware::Uefi { secure_boot } = vm.firmware {
        kv("firmware", "efi");
        if secure_boot {
            kv("uefi.secureBoot.enabled", "TRUE");
        }
    }
    let table = match product {
        Product::Hosted => &super::mapping::WRITE_HOSTED,
        Product::Esxi => &super::mapping::WRITE_ESXI,
    };
    // vSphere Security, "Virtual Trusted Platform Module Overview": a vTPM needs EFI firmware.
    if let Some(r) = table.tpm(vm) {
        if r.model == Boot::TpmUefi {
            kv("vtpm.present", "TRUE");
        }
        warnings.extend(r.warning.map(str::to_string));
    }
    if let Some(v) = &vm.video {
        kv("svga.present", "TRUE");
        if let Some(b) = v.vram_bytes {
            kv("svga.vramSize", &b.to_string());
        }
    }
    // Controllers, each once.
    let used: BTreeSet<(Bus, u32)> = layout
        .disks
        .iter()
        .chain(&layout.cdroms)
        .map(|s| (s.bus, s.controller))
        .collect();
    for (bus, c) in &used {
        if *bus == Bus::Ide {
            continue;
        }
        kv(&format!("{}{c}.present", bus.prefix()), "TRUE");
        if *bus == Bus::Scsi {
            let m = layout
                .scsi
                .get(c)
                .copied()
                .map(scsi_dev)
                .unwrap_or("lsilogic");
            kv(&format!("scsi{c}.virtualDev"), m);
        }
    }
    for (slot, file) in layout.disks.iter().zip(disk_files) {
        let k = slot.key();
        kv(&format!("{k}.present"), "TRUE");
        kv(&format!("{k}.fileName"), file);
        if let Some(t) = disk_device_type(*slot) {
            kv(&format!("{k}.deviceType"), t);
        }
    }
    let mut left_behind = 0;
    for (slot, cd) in layout.cdroms.iter().zip(&vm.cdroms) {
        let k = slot.key();
        if !matches!(cd.source, DiskSource::Blank) {
            left_behind += 1;
        }
        kv(&format!("{k}.present"), "TRUE");
        match product {
            // What ESXi writes for an empty drive (corpus esx-in-the-wild-16).
            Product::Esxi => {
                kv(&format!("{k}.deviceType"), "atapi-cdrom");
                kv(&format!("{k}.fileName"), "emptyBackingString");
                kv(&format!("{k}.clientDevice"), "TRUE");
            }
            // What Workstation writes for a drive on the host's auto-detected device.
            Product::Hosted => {
                kv(&format!("{k}.deviceType"), "cdrom-raw");
                kv(&format!("{k}.fileName"), "auto detect");
                kv(&format!("{k}.autodetect"), "TRUE");
            }
        }
        kv(&format!("{k}.startConnected"), "FALSE");
    }
    if left_behind > 0 {
        warnings.push(format!(
            "{left_behind} CD/DVD drive(s) written empty: their media stay behind"
        ));
    }
    let mut defaulted = Vec::new();
    for (i, (n, dev)) in vm.nics.iter().zip(&layout.nics).enumerate() {
        let k = format!("ethernet{i}");
        kv(&format!("{k}.present"), "TRUE");
        kv(&format!("{k}.virtualDev"), dev);
        match product {
            Product::Esxi => {
                let net = n.network.clone().unwrap_or_else(|| {
                    defaulted.push(i);
                    "VM Network".into()
                });
                kv(&format!("{k}.networkName"), &net);
            }
            Product::Hosted => {
                let conn = match n.network.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    Some(c @ ("bridged" | "nat" | "hostonly")) => c.to_string(),
                    _ => "nat".to_string(),
                };
                kv(&format!("{k}.connectionType"), &conn);
                if let Some(net) = &n.network {
                    kv(&format!("{k}.networkName"), net);
                }
            }
        }
        match n.mac.as_deref() {
            None => kv(&format!("{k}.addressType"), "generated"),
            Some(mac) => match mac_kind(mac) {
                MacKind::Static => {
                    kv(&format!("{k}.addressType"), "static");
                    kv(&format!("{k}.address"), mac);
                }
                MacKind::Generated => {
                    kv(&format!("{k}.addressType"), "generated");
                    kv(&format!("{k}.generatedAddress"), mac);
                    kv(&format!("{k}.generatedAddressOffset"), "0");
                }
                MacKind::Foreign => {
                    kv(&format!("{k}.addressType"), "static");
                    kv(&format!("{k}.address"), mac);
                    kv(&format!("{k}.checkMACAddress"), "FALSE");
                    warnings.push(format!(
                        "NIC {}: MAC {mac} is outside VMware's ranges: kept as a static address with ethernet{i}.checkMACAddress = \"FALSE\"",
                        i + 1
                    ));
                }
            },
        }
    }
    if !defaulted.is_empty() {
        warnings.push(format!(
            "{} NIC(s) without a network attached to 'VM Network', ESXi's default port group: change ethernetN.networkName to match the host",
            defaulted.len()
        ));
    }
    for p in &vm.serial_ports {
        let k = format!("serial{}", p.index);
        kv(&format!("{k}.present"), "TRUE");
        kv(&format!("{k}.fileType"), "file");
        kv(&format!("{k}.fileName"), &format!("serial{}.log", p.index));
        if let Some(c) = &p.connection {
            warnings.push(format!(
                "serial port {}: its host connection ({c}) does not exist on the target: written to the file serial{}.log in the VM's folder",
                p.index, p.index
            ));
        }
    }
    (x, warnings)
}

/// The deviceType VMware writes for a hard disk on `slot`'s bus: none for SATA and NVMe disks
/// (ESXi's own files, corpus virt-v2v-test-i-vmx-6 and -7), and the IDE and SCSI types readers
/// look for (virt-v2v's input_vmx.ml takes an IDE disk only with `ata-hardDisk`).
fn disk_device_type(slot: Slot) -> Option<&'static str> {
    match slot.bus {
        Bus::Scsi => Some("scsi-hardDisk"),
        Bus::Ide => Some("ata-hardDisk"),
        Bus::Sata | Bus::Nvme => None,
    }
}
