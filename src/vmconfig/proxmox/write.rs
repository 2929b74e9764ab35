//! Writing a VM for Proxmox VE: a `<vmid>.conf`, qcow2 disks named as Proxmox names them on
//! a directory storage, and `import.sh`, which creates the VM on any storage.
//!
//! The configuration is complete as it stands for Proxmox's `local` directory storage: with
//! the disks copied to `/var/lib/vz/images/<vmid>/` and the file to
//! `/etc/pve/qemu-server/<vmid>.conf` the VM exists (qm.conf(5); the storage layout is
//! pvesm(1)'s "dir" backend: `images/<vmid>/vm-<vmid>-disk-<n>.<format>`). Most hosts keep
//! disks on LVM-thin or ZFS (`local-lvm` is the installer's default), so import.sh writes the
//! configuration without its disks and brings each disk in with
//! `qm set <vmid> --scsi0 <storage>:0,import-from=<file>` (qm(1), Proxmox VE 7.2 and later;
//! `qm importdisk` then `qm set` on older hosts, given in the instructions too).

use super::mapping;
use crate::vm::{Firmware, Vm};
use crate::vmconfig::PlacedDisk;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The VM id written when nothing else is known (the first id Proxmox hands out).
/// import.sh takes another as its first argument.
pub const DEFAULT_VMID: u32 = 100;

/// The storage import.sh imports to when not told (the installer's default storage).
pub const DEFAULT_STORAGE: &str = "local-lvm";

/// The file name of the `i`th disk (from 0), as Proxmox names it on a directory storage.
pub fn disk_file(i: usize) -> String {
    format!("vm-{DEFAULT_VMID}-disk-{i}.qcow2")
}

/// A written configuration and what comes with it.
pub struct Written {
    /// The `<vmid>.conf` text.
    pub conf: String,
    /// import.sh.
    pub script: String,
    /// What the target could not carry.
    pub warnings: Vec<String>,
    /// The commands the user runs on the Proxmox host.
    pub instructions: Vec<String>,
}

/// A Proxmox VM name: a DNS name (letters, digits, `-` and `.`).
fn pve_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let n = n.trim_matches(|c| c == '-' || c == '.').to_string();
    if n.is_empty() {
        "imported-vm".into()
    } else {
        n
    }
}

/// A size as Proxmox writes it (`32G`, `512M`, bytes when no unit divides it).
fn pve_size(bytes: u64) -> String {
    for (shift, unit) in [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// True for a bridge name Proxmox hosts have (`vmbr0`) or an SDN VNet id (`vnet0`).
fn pve_bridge(name: &str) -> bool {
    let vmbr = name
        .strip_prefix("vmbr")
        .is_some_and(|n| !n.is_empty() && n.len() <= 4 && n.chars().all(|c| c.is_ascii_digit()));
    let vnet = (2..=8).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    vmbr || vnet
}

/// The highest disk index qm.conf(5) allows on `bus` (`scsi0`-`scsi30`, `sata0`-`sata5`,
/// `virtio0`-`virtio15`).
fn last_slot(bus: &str) -> u32 {
    match bus {
        "sata" => 5,
        "virtio" => 15,
        _ => 30,
    }
}

/// Disks a Proxmox VM holds on scsi, sata and virtio (its IDE slots are left to CD drives).
pub const DISK_SLOTS: usize = 31 + 6 + 16;

/// The least memory Proxmox takes, in MiB (qm.conf(5): `memory: <integer> (16 - N)`).
pub const MEMORY_MIN_MIB: u64 = 16;

/// The memory Proxmox gives `vm`, in MiB, as a conf's `memory` holds it: whole MiB (rounded
/// up), at least [`MEMORY_MIN_MIB`], 512 MiB (Proxmox's default) when the source gives none;
/// with a warning for each change.
pub fn memory_mib(vm: &Vm) -> (u64, Vec<String>) {
    let (mib, rounded) =
        crate::vm::memory_in_units(vm.memory_bytes, 1 << 20, "Proxmox takes whole MiB");
    if mib == 0 {
        let w = "the source gives no memory size: 512 MiB written; set it before starting";
        (512, vec![w.into()])
    } else if mib < MEMORY_MIN_MIB {
        let w = format!(
            "memory of {} raised to Proxmox's minimum of {MEMORY_MIN_MIB} MiB",
            crate::vm::memory_text(vm.memory_bytes)
        );
        (MEMORY_MIN_MIB, vec![w])
    } else {
        (mib, rounded.into_iter().collect())
    }
}

/// The configuration of `vm` with its disks `disks` (placed as [`disk_file`] names them).
pub fn write(vm: &Vm, disks: &[PlacedDisk]) -> Written {
    let vmid = DEFAULT_VMID;
    let mut w = Vec::new();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let name = pve_name(&vm.name);
    if name != vm.name {
        w.push(format!(
            "the VM is named '{name}': Proxmox names are DNS names"
        ));
    }
    keys.insert("name".into(), name.clone());
    let (mib, memory) = memory_mib(vm);
    w.extend(memory);
    keys.insert("memory".into(), mib.to_string());
    let count = vm.cpus.count.max(1);
    let (sockets, cores) = match vm.cpus.cores_per_socket {
        Some(c) if c > 0 && count.is_multiple_of(c) => (count / c, c),
        _ => (1, count),
    };
    keys.insert("cores".into(), cores.to_string());
    keys.insert("sockets".into(), sockets.to_string());
    keys.insert("ostype".into(), mapping::ostype_for(vm).into());
    if matches!(vm.firmware, Firmware::Uefi { .. }) {
        keys.insert("bios".into(), "ovmf".into());
        // OVMF with Secure Boot needs SMM, which Proxmox gives q35 machines.
        keys.insert("machine".into(), "q35".into());
    }
    let paravirt = mapping::paravirt(vm);
    let (buses, scsihw) = mapping::disk_buses(vm);
    let mut next: BTreeMap<&str, u32> = BTreeMap::new();
    let mut disk_keys = Vec::new();
    for (i, (placed, wanted)) in disks.iter().zip(&buses).enumerate() {
        // A full bus sends the disk to the next with room: scsi, then sata, then virtio
        // (disk_plan refused more disks than all of them hold).
        let free =
            |b: &str, next: &BTreeMap<&str, u32>| next.get(b).copied().unwrap_or(0) <= last_slot(b);
        let bus = [*wanted, "scsi", "sata", "virtio"]
            .into_iter()
            .find(|b| free(b, &next))
            .unwrap_or("scsi");
        let n = next.get(bus).copied().unwrap_or(0);
        if bus != *wanted {
            w.push(format!(
                "disk {}: {wanted}0-{} are taken: written as {bus}{n}",
                i + 1,
                last_slot(wanted)
            ));
        }
        next.insert(bus, n + 1);
        let key = format!("{bus}{n}");
        keys.insert(
            key.clone(),
            format!(
                "local:{vmid}/{},size={}",
                placed.plan.file_name,
                pve_size(placed.capacity)
            ),
        );
        disk_keys.push(key);
    }
    if buses.contains(&"scsi") || next.contains_key("scsi") {
        keys.insert("scsihw".into(), scsihw.into());
    }
    if !paravirt && buses.contains(&"sata") {
        w.push(
            "disks on SATA, which every guest drives: install the virtio-win drivers (vioscsi, NetKVM) in the guest, then move the disks to scsiN on virtio-scsi-single for Proxmox's speed"
                .into(),
        );
    }
    for i in 0..vm.cdroms.len() {
        let Some(slot) = ["ide2", "ide3", "ide0", "ide1"].get(i) else {
            w.push(format!(
                "CD/DVD drive {} not carried: Proxmox has four IDE slots",
                i + 1
            ));
            continue;
        };
        keys.insert((*slot).into(), "none,media=cdrom".into());
    }
    if !vm.cdroms.is_empty() {
        w.push(format!(
            "{} CD/DVD drive(s) written empty: their media stay behind",
            vm.cdroms.len()
        ));
    }
    let mut moved = Vec::new();
    let mut changed = Vec::new();
    for (i, nic) in vm.nics.iter().enumerate() {
        let (model, warning) = mapping::pve_nic(&nic.model, vm);
        if warning.is_some() || model != nic.model.to_string() {
            changed.push(format!("{} -> {model}", nic.model));
        }
        let bridge = match &nic.network {
            Some(n) if pve_bridge(n) => n.clone(),
            Some(n) => {
                moved.push(format!("'{n}'"));
                "vmbr0".into()
            }
            None => "vmbr0".into(),
        };
        let v = match &nic.mac {
            Some(mac) => format!("{model}={},bridge={bridge}", mac.to_ascii_uppercase()),
            None => format!("{model},bridge={bridge}"),
        };
        keys.insert(format!("net{i}"), v);
    }
    if !changed.is_empty() {
        w.push(format!(
            "NIC models changed ({}): {}",
            changed.join(", "),
            if paravirt {
                mapping::NIC_TO_VIRTIO
            } else {
                mapping::NIC_NOT_EMULATED
            }
        ));
    }
    // The kept vmxnet3 row's warning, once.
    if let Some(kept) = vm
        .nics
        .iter()
        .filter(|n| n.model == crate::vm::NicModel::Vmxnet3)
        .filter_map(|n| mapping::WRITE.nic(&n.model, vm))
        .find(|r| r.target == "vmxnet3")
        .and_then(|r| r.warning)
    {
        w.push(kept.into());
    }
    if !moved.is_empty() {
        w.push(format!(
            "NICs attached to bridge vmbr0; on the source they were on {}: change bridge= to the host's bridge",
            moved.join(", ")
        ));
    }
    let from_vmware = vm.guest_os.vmware_id.is_some()
        || vm
            .nics
            .iter()
            .any(|n| n.model == crate::vm::NicModel::Vmxnet3)
        || vm.disks.iter().any(|d| {
            d.controller.kind == crate::vm::ControllerKind::Scsi(crate::vm::ScsiModel::Pvscsi)
        });
    if from_vmware {
        w.push("the guest comes from VMware: uninstall VMware Tools (open-vm-tools on Linux may stay), install the QEMU guest agent and set 'agent: 1'".into());
    }
    // Proxmox qemu-server, PVE/QemuServer.pm: serial0 to serial3 ($MAX_SERIAL_PORTS = 4),
    // each '(/dev/.+|socket)' ($serialdesc). A host device of the source host is not assumed
    // to exist on the Proxmox node, so every port becomes a socket.
    for p in &vm.serial_ports {
        if p.index > 3 {
            w.push(format!(
                "serial port {}: Proxmox has serial0 to serial3: not carried",
                p.index
            ));
            continue;
        }
        keys.insert(format!("serial{}", p.index), "socket".into());
        if let Some(c) = p.host_end() {
            w.push(format!(
                "serial port {}: its host end ({c}) is not carried: written as a socket (qm terminal); Proxmox connects a port to a socket or a host device (/dev/ttyS0) only",
                p.index
            ));
        }
    }
    let order: Vec<String> = {
        let mut booted: Vec<(u32, usize)> = vm
            .disks
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.boot_order.map(|o| (o, i)))
            .collect();
        booted.sort();
        let mut order: Vec<String> = booted.iter().map(|(_, i)| disk_keys[*i].clone()).collect();
        if order.is_empty() {
            order.extend(disk_keys.first().cloned());
        }
        if !vm.nics.is_empty() {
            order.push("net0".into());
        }
        order
    };
    if !order.is_empty() {
        keys.insert("boot".into(), format!("order={}", order.join(";")));
    }
    if let Some(warning) = mapping::WRITE.tpm(vm).and_then(|r| r.warning) {
        w.push(warning.into());
    }

    let mut conf = String::new();
    if let Some(d) = &vm.description {
        for line in d.lines() {
            let _ = writeln!(conf, "#{line}");
        }
    }
    for (k, v) in &keys {
        let _ = writeln!(conf, "{k}: {v}");
    }

    // import.sh and the instructions.
    let mut steps = Vec::new();
    for (key, placed) in disk_keys.iter().zip(disks) {
        steps.push(format!(
            "qm set \"$VMID\" --{key} \"$STORAGE:0,import-from=$PWD/{}\"",
            placed.plan.file_name
        ));
    }
    if let Firmware::Uefi { secure_boot } = vm.firmware {
        steps.push(format!(
            "qm set \"$VMID\" --efidisk0 \"$STORAGE:1,efitype=4m,pre-enrolled-keys={}\"",
            u8::from(secure_boot)
        ));
    }
    if vm.tpm {
        steps.push("qm set \"$VMID\" --tpmstate0 \"$STORAGE:1,version=v2.0\"".into());
    }
    if let Some(b) = keys.get("boot") {
        steps.push(format!("qm set \"$VMID\" --boot \"{b}\""));
    }
    let mut script = format!(
        "#!/bin/sh\n# Creates the VM '{name}' on a Proxmox VE host (7.2 or later) from this folder, written by diskferry.\n# Usage: sh import.sh [VMID] [STORAGE]    (defaults: {vmid}, {DEFAULT_STORAGE})\nset -eu\ncd \"$(dirname \"$0\")\"\nVMID=\"${{1:-{vmid}}}\"\nSTORAGE=\"${{2:-{DEFAULT_STORAGE}}}\"\nCONF=\"/etc/pve/qemu-server/$VMID.conf\"\nif [ -e \"$CONF\" ]; then\n    echo \"VM $VMID exists already: give another VMID\" >&2\n    exit 1\nfi\n# The configuration without its disks and boot order: each disk is imported into $STORAGE next.\ngrep -Ev '^((scsi|sata|virtio)[0-9]+|boot): ' {vmid}.conf > \"$CONF\"\n"
    );
    for s in &steps {
        let _ = writeln!(script, "{s}");
    }
    let mut instructions = vec![format!(
        "copy this folder to the Proxmox host and run: sh import.sh {vmid} {DEFAULT_STORAGE}   (VMID and storage of your choice); it runs:"
    )];
    instructions.push(format!(
        "  grep -Ev '^((scsi|sata|virtio)[0-9]+|boot): ' {vmid}.conf > /etc/pve/qemu-server/{vmid}.conf"
    ));
    for s in &steps {
        instructions.push(format!(
            "  {}",
            s.replace("\"$VMID\"", &vmid.to_string())
                .replace("$STORAGE", DEFAULT_STORAGE)
                .replace("$PWD/", "<this folder on the host>/")
        ));
    }
    for (key, placed) in disk_keys.iter().zip(disks) {
        instructions.push(format!(
            "on Proxmox VE before 7.2: qm importdisk {vmid} {} {DEFAULT_STORAGE}, then qm set {vmid} --{key} <the unused0 volume it prints>",
            placed.plan.file_name
        ));
    }
    instructions.push(format!(
        "or, on the 'local' directory storage: copy the disks to /var/lib/vz/images/{vmid}/ and {vmid}.conf to /etc/pve/qemu-server/ as it is"
    ));
    Written {
        conf,
        script,
        warnings: w,
        instructions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names() {
        assert_eq!(pve_size(32 << 30), "32G");
        assert_eq!(pve_size(1536 << 20), "1536M");
        assert_eq!(pve_size(1000), "1000");
        assert_eq!(pve_name("web 01_x"), "web-01-x");
        assert!(pve_bridge("vmbr0") && pve_bridge("vnet0") && !pve_bridge("VM Network"));
    }
}
