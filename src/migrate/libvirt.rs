//! A libvirt domain (KVM/QEMU) from the VM model.
//!
//! virtio is what KVM runs fastest, but a guest boots from a virtio disk only if it has the
//! driver: Linux has had it for fifteen years, Windows needs the virtio-win drivers installed
//! first, and an unknown guest is not guessed at. So Linux and BSD guests get virtio-blk
//! disks and virtio-net NICs, every other guest SATA disks and e1000e NICs, with a warning
//! that names the drivers to install before switching to virtio. What libvirt needs but the
//! source does not say (the host network to attach to) takes libvirt's defaults, said in a
//! warning.
//!
//! Elements follow libvirt's domain schema (domain.rng, checked by `virt-xml-validate`):
//! `os firmware='efi'` with the secure-boot firmware feature (libvirt 7.2+) and SMM for secure
//! boot, q35 machines, `tpm-crb` with the emulator backend for a TPM.

use crate::vm::{Firmware, NicModel, OsFamily, Vm};
use quick_xml::escape::escape;
use std::fmt::Write as _;
use std::path::Path;

/// Which buses the domain uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buses {
    /// virtio-blk disks and virtio-net NICs.
    Virtio,
    /// SATA disks and e1000e NICs, which every guest drives.
    Emulated,
}

/// The buses for `vm`'s guest and, for emulated ones, why.
pub fn buses_for(vm: &Vm) -> (Buses, Option<String>) {
    match vm.guest_os.os.map(|o| o.family()) {
        Some(OsFamily::Linux | OsFamily::Bsd) => (Buses::Virtio, None),
        Some(OsFamily::Windows) => (
            Buses::Emulated,
            Some(
                "Windows guest: disks on SATA and NICs as e1000e, which Windows drives without help; install the virtio-win drivers (viostor, vioscsi, NetKVM) in the guest, then switch the disks to bus='virtio' and the NICs to model type='virtio' for KVM's speed"
                    .to_string(),
            ),
        ),
        _ => (
            Buses::Emulated,
            Some(
                "the guest operating system is not known: disks on SATA and NICs as e1000e, which most guests drive; if the guest has virtio drivers (virtio_blk, virtio_net), switch to virtio for speed"
                    .to_string(),
            ),
        ),
    }
}

/// The domain XML of `vm` with its disks at `disk_paths` (qcow2 files, in `vm.disks` order),
/// and the warnings of what was not carried.
pub fn domain_xml(vm: &Vm, disk_paths: &[&Path], buses: Buses) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    let mut x = String::with_capacity(4096);
    x.push_str("<domain type='kvm'>\n");
    let _ = writeln!(
        x,
        "  <name>{}</name>",
        escape(libvirt_name(&vm.name).as_str())
    );
    if let Some(d) = &vm.description {
        let _ = writeln!(x, "  <description>{}</description>", escape(d.as_str()));
    }
    if let Some(id) = vm.guest_os.os.and_then(|o| o.libosinfo()) {
        let _ = writeln!(
            x,
            "  <metadata>\n    <libosinfo:libosinfo xmlns:libosinfo=\"http://libosinfo.org/xmlns/libvirt/domain/1.0\">\n      <libosinfo:os id=\"{}\"/>\n    </libosinfo:libosinfo>\n  </metadata>",
            escape(libosinfo_url(id).as_str())
        );
    }
    let kib = vm.memory_bytes.div_ceil(1024).max(1024);
    if vm.memory_bytes == 0 {
        warnings
            .push("the source gives no memory size: 1 MiB written; set it before starting".into());
    }
    let _ = writeln!(x, "  <memory unit='KiB'>{kib}</memory>");
    let _ = writeln!(x, "  <currentMemory unit='KiB'>{kib}</currentMemory>");
    let cpus = vm.cpus.count.max(1);
    let _ = writeln!(x, "  <vcpu placement='static'>{cpus}</vcpu>");
    let secure = matches!(vm.firmware, Firmware::Uefi { secure_boot: true });
    match vm.firmware {
        Firmware::Bios => {
            x.push_str("  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n");
        }
        Firmware::Uefi { secure_boot } => {
            x.push_str("  <os firmware='efi'>\n    <type arch='x86_64' machine='q35'>hvm</type>\n");
            let _ = writeln!(
                x,
                "    <firmware>\n      <feature enabled='{}' name='enrolled-keys'/>\n      <feature enabled='{}' name='secure-boot'/>\n    </firmware>",
                yes(secure_boot),
                yes(secure_boot)
            );
        }
    }
    x.push_str("    <boot dev='hd'/>\n  </os>\n");
    x.push_str("  <features>\n    <acpi/>\n    <apic/>\n");
    if secure {
        x.push_str("    <smm state='on'/>\n");
    }
    x.push_str("  </features>\n");
    if let Some(cores) = vm
        .cpus
        .cores_per_socket
        .filter(|c| *c > 0 && cpus.is_multiple_of(*c))
    {
        let _ = writeln!(
            x,
            "  <cpu mode='host-passthrough'>\n    <topology sockets='{}' dies='1' cores='{cores}' threads='1'/>\n  </cpu>",
            cpus / cores
        );
    } else {
        x.push_str("  <cpu mode='host-passthrough'/>\n");
    }
    let windows = vm
        .guest_os
        .os
        .is_some_and(|o| o.family() == OsFamily::Windows);
    // Windows keeps the hardware clock in local time.
    let _ = writeln!(
        x,
        "  <clock offset='{}'/>",
        if windows { "localtime" } else { "utc" }
    );
    x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n");
    x.push_str("  <devices>\n");
    for (i, path) in disk_paths.iter().enumerate() {
        let (dev, bus) = match buses {
            Buses::Virtio => (format!("vd{}", drive_letters(i)), "virtio"),
            Buses::Emulated => (format!("sd{}", drive_letters(i)), "sata"),
        };
        let _ = writeln!(
            x,
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2' discard='unmap'/>\n      <source file='{}'/>\n      <target dev='{dev}' bus='{bus}'/>\n    </disk>",
            escape(path.to_string_lossy().as_ref())
        );
    }
    for (i, _cd) in vm.cdroms.iter().enumerate() {
        let _ = writeln!(
            x,
            "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <target dev='sd{}' bus='sata'/>\n      <readonly/>\n    </disk>",
            drive_letters(vm.disks.len() + i)
        );
    }
    if !vm.cdroms.is_empty() {
        warnings.push(format!(
            "{} CD/DVD drive(s) written empty: their media stay behind",
            vm.cdroms.len()
        ));
    }
    let mut networks = Vec::new();
    for nic in &vm.nics {
        let model = match (buses, &nic.model) {
            (Buses::Virtio, _) => "virtio",
            (Buses::Emulated, NicModel::E1000) => "e1000",
            (Buses::Emulated, NicModel::Rtl8139) => "rtl8139",
            (Buses::Emulated, _) => "e1000e",
        };
        x.push_str("    <interface type='network'>\n");
        if let Some(mac) = &nic.mac {
            let _ = writeln!(x, "      <mac address='{}'/>", escape(mac.as_str()));
        }
        let _ = writeln!(
            x,
            "      <source network='default'/>\n      <model type='{model}'/>\n    </interface>"
        );
        if let Some(n) = &nic.network {
            networks.push(n.clone());
        }
    }
    if !networks.is_empty() {
        warnings.push(format!(
            "NICs attached to libvirt's 'default' network; on the source they were on {}: change <source network=...> (or use a bridge) to match the host",
            networks
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for port in &vm.serial_ports {
        let _ = writeln!(
            x,
            "    <serial type='pty'>\n      <target port='{}'/>\n    </serial>",
            port.index
        );
    }
    x.push_str("    <console type='pty'/>\n");
    if vm.tpm {
        x.push_str("    <tpm model='tpm-crb'>\n      <backend type='emulator' version='2.0'/>\n    </tpm>\n");
    }
    x.push_str("    <graphics type='vnc' port='-1' autoport='yes'/>\n");
    x.push_str("    <video>\n      <model type='virtio'/>\n    </video>\n");
    x.push_str("  </devices>\n</domain>\n");
    (x, warnings)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `a`..`z`, `aa`..: the letters of the `i`th drive (`vda`, `vdb`, ... `vdaa`).
fn drive_letters(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

/// libvirt names may not contain '/'; other characters pass.
fn libvirt_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    if n.trim().is_empty() {
        "imported-vm".to_string()
    } else {
        n
    }
}

/// libosinfo's id URL for a short id (`ubuntu22.04` → `http://ubuntu.com/ubuntu/22.04`).
fn libosinfo_url(short: &str) -> String {
    let split = short
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(short.len());
    let (distro, version) = short.split_at(split);
    let vendor = match distro {
        "ubuntu" => "http://ubuntu.com/ubuntu",
        "debian" => "http://debian.org/debian",
        "fedora" => "http://fedoraproject.org/fedora",
        "rhel" => "http://redhat.com/rhel",
        "centos" => "http://centos.org/centos",
        "rocky" => "http://rockylinux.org/rocky",
        "almalinux" => "http://almalinux.org/almalinux",
        "sles" => "http://suse.com/sles",
        "opensuse" => "http://opensuse.org/opensuse",
        "freebsd" => "http://freebsd.org/freebsd",
        "win" => "http://microsoft.com/win",
        _ => return format!("http://libosinfo.org/{short}"),
    };
    if version.is_empty() {
        vendor.to_string()
    } else {
        format!("{vendor}/{version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_letters_go_on_past_z() {
        assert_eq!(drive_letters(0), "a");
        assert_eq!(drive_letters(25), "z");
        assert_eq!(drive_letters(26), "aa");
        assert_eq!(drive_letters(27), "ab");
    }

    #[test]
    fn libosinfo_ids_become_urls() {
        assert_eq!(
            libosinfo_url("ubuntu22.04"),
            "http://ubuntu.com/ubuntu/22.04"
        );
        assert_eq!(libosinfo_url("win10"), "http://microsoft.com/win/10");
    }
}
