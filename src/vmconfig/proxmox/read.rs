//! Reading a Proxmox VE `qemu-server/<vmid>.conf` into the VM model.
//!
//! The format (qm.conf(5), <https://pve.proxmox.com/pve-docs/qm.conf.5.html>, and
//! PVE::QemuServer's parse_vm_config): `key: value` lines; `#` lines are the VM's
//! description; `[name]` starts a snapshot section (and `[special:cloudinit]` the pending
//! cloud-init settings) that runs to the next section or the end. Values of devices are
//! property strings: `default-item,key=value,...`.
//!
//! Stricter than Proxmox, which skips a line it cannot parse with a warning: a line that is
//! not `key: value`, a key given twice, a device index out of range or a value of a key we
//! interpret that does not parse is one error naming the line. Keys that only the Proxmox
//! host uses (smbios1, vmgenid, meta, numa, agent ...) are ignored.

use super::mapping;
use crate::error::{Error, Result};
use crate::vm::{Cdrom, Disk, DiskSource, Firmware, Nic, ScsiModel, SerialPort, Video, Vm};
use std::collections::HashMap;
use std::path::PathBuf;

/// Where a disk's content lives, as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volume {
    /// An absolute path on the Proxmox host (Proxmox accepts these as volumes).
    Path(String),
    /// A volume on a storage: `storage:volume` (`local:100/vm-100-disk-0.qcow2` on a
    /// directory storage, `local-lvm:vm-100-disk-0` on a block storage).
    Storage {
        /// The storage id (storage.cfg).
        storage: String,
        /// The volume name within the storage.
        volume: String,
    },
}

/// One hard disk's volume with the line that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskVolume {
    /// The device key (`scsi0`).
    pub key: String,
    /// The line number (from 1).
    pub line: usize,
    /// The volume.
    pub volume: Volume,
}

/// A parsed configuration: the machine and one volume per entry of `vm.disks`.
#[derive(Debug, Clone)]
pub struct PveConfig {
    /// The machine.
    pub vm: Vm,
    /// One per entry of `vm.disks`.
    pub volumes: Vec<DiskVolume>,
}

/// The highest index of each device kind (qm.conf(5): ide0-3, sata0-5, scsi0-30,
/// virtio0-15, net0-31, serial0-3; for serial ports Proxmox qemu-server's
/// PVE/QemuServer.pm, `$MAX_SERIAL_PORTS = 4`).
const LIMITS: &[(&str, u32)] = &[
    ("ide", 3),
    ("sata", 5),
    ("scsi", 30),
    ("virtio", 15),
    ("net", 31),
    ("serial", 3),
    ("unused", 255),
    ("hostpci", 15),
    ("usb", 14),
    ("ipconfig", 31),
];

/// True when `head` looks like a Proxmox VM configuration: at least two `key: value` lines
/// with keys only Proxmox writes this way, before any section.
pub fn probe(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut hits = 0;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim_end();
        if line.starts_with('[') {
            break;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, _)) = line.split_once(": ") else {
            // The head may end inside a line: only a whole line decides.
            if !raw.ends_with('\n') {
                break;
            }
            return false;
        };
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        let indexed = base.len() < key.len();
        let known = matches!(
            key,
            "cores"
                | "memory"
                | "scsihw"
                | "ostype"
                | "boot"
                | "bootdisk"
                | "name"
                | "bios"
                | "smbios1"
                | "vmgenid"
                | "sockets"
                | "machine"
                | "efidisk0"
                | "tpmstate0"
        ) || (indexed && matches!(base, "net" | "scsi" | "virtio" | "sata" | "ide"));
        if known {
            hits += 1;
        }
    }
    hits >= 2
}

/// Reads a configuration (`name` names it in errors).
pub fn parse(bytes: &[u8], name: &str) -> Result<PveConfig> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Error::invalid(format!("line {line}: not UTF-8 text")).with_path(name)
    })?;
    let err =
        |line: usize, what: String| Error::invalid(format!("line {line}: {what}")).with_path(name);
    // The main section's keys, with their lines, in file order.
    let mut keys: Vec<(usize, String, String)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut description = Vec::new();
    let mut sections = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(section) = rest.strip_suffix(']').filter(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':'))
            }) else {
                return Err(err(n, format!("'{}' is not a [section] line", clip(line))));
            };
            sections.push(section.to_string());
            continue;
        }
        if !sections.is_empty() {
            // Snapshots and pending changes: not the VM's current state.
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            // vzdump's own notes (`#qmdump#map:...`) are not the user's description.
            if !comment.starts_with("qmdump#") {
                description.push(comment.to_string());
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(err(
                n,
                format!("'{}' is not a 'key: value' line", clip(line)),
            ));
        };
        let key_ok = key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        let value = value.trim();
        if !key_ok || value.is_empty() {
            return Err(err(
                n,
                format!("'{}' is not a 'key: value' line", clip(line)),
            ));
        }
        if let Some(first) = seen.insert(key.to_string(), n) {
            return Err(err(
                n,
                format!("'{key}' is set twice (first on line {first})"),
            ));
        }
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        if base.len() < key.len()
            && let Some((_, max)) = LIMITS.iter().find(|(b, _)| *b == base)
        {
            let index: u64 = key[base.len()..].parse().unwrap_or(u64::MAX);
            if index > u64::from(*max) {
                return Err(err(
                    n,
                    format!("'{key}' is out of range ({base}0 to {base}{max})"),
                ));
            }
        }
        keys.push((n, key.to_string(), value.to_string()));
    }

    let mut vm = Vm::new("");
    // qm.conf(5): `memory: [current=]<integer> (16 - N) (default = 512)`, in MiB; a conf
    // without the key runs with 512 MiB.
    vm.memory_bytes = 512 << 20;
    if !description.is_empty() {
        vm.description = Some(description.join("\n"));
    }
    let mut cores: Option<(usize, u32)> = None;
    let mut sockets: Option<(usize, u32)> = None;
    let mut scsihw: Option<(usize, String)> = None;
    let mut boot: Option<(usize, String)> = None;
    let mut bootdisk: Option<String> = None;
    let mut volumes = Vec::new();
    let mut disk_keys = Vec::new();
    // Drives are placed after scsihw is known, which may come later in the file.
    let mut drives: Vec<(usize, String, String)> = Vec::new();
    for (n, key, value) in &keys {
        let n = *n;
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        match key.as_str() {
            "name" => vm.name = value.clone(),
            "memory" => {
                // PVE 8.1+ may write `memory: current=4096`.
                let v = value.strip_prefix("current=").unwrap_or(value);
                let mib: u64 = number(v).ok_or_else(|| err(n, format!("memory '{value}' is not a number of MiB")))?;
                vm.memory_bytes = mib
                    .checked_mul(1 << 20)
                    .filter(|b| *b <= mapping::MAX_MEMORY)
                    .ok_or_else(|| err(n, format!("memory '{value}' MiB is too large")))?;
            }
            "cores" => cores = Some((n, count(value).ok_or_else(|| err(n, format!("cores '{value}' is not a count from 1 to 4096")))?)),
            "sockets" => sockets = Some((n, count(value).ok_or_else(|| err(n, format!("sockets '{value}' is not a count from 1 to 4096")))?)),
            "bios" => match value.as_str() {
                "seabios" => vm.firmware = Firmware::Bios,
                "ovmf" => {
                    if vm.firmware == Firmware::Bios {
                        vm.firmware = Firmware::Uefi { secure_boot: false };
                    }
                }
                other => return Err(err(n, format!("bios '{other}' is neither seabios nor ovmf"))),
            },
            "efidisk0" => {
                let props = properties(value);
                if props.iter().any(|(k, v)| *k == "pre-enrolled-keys" && *v == "1") {
                    vm.firmware = Firmware::Uefi { secure_boot: true };
                } else if vm.firmware == Firmware::Bios {
                    vm.firmware = Firmware::Uefi { secure_boot: false };
                }
                vm.warn("efidisk0 (the UEFI variables) is not carried: the target starts with fresh UEFI variables and finds the boot loader on the disk's EFI system partition");
            }
            "tpmstate0" => {
                vm.tpm = true;
                vm.warn("tpmstate0 (the TPM's state) is not carried: the target gets a new TPM, so BitLocker or LUKS keys sealed to it need their recovery key");
            }
            "ostype" => {
                let (os, label) = mapping::os_from_ostype(value)
                    .ok_or_else(|| err(n, format!("ostype '{value}' is not one of Proxmox's ({})", mapping::OSTYPES.iter().map(|(k, _, _)| *k).collect::<Vec<_>>().join(", "))))?;
                vm.guest_os.os = os;
                vm.guest_os.description = Some(label.to_string());
            }
            "scsihw" => scsihw = Some((n, value.clone())),
            "boot" => boot = Some((n, value.clone())),
            "bootdisk" => bootdisk = Some(value.clone()),
            "parent" => vm.warn(format!("the configuration is at snapshot '{value}': the disks' current state is migrated, not their snapshots")),
            "vga" => {
                let model = value.split(',').next().unwrap_or(value).to_string();
                vm.video = Some(Video { model: Some(model), vram_bytes: None });
            }
            "args" => vm.warn("'args' (extra QEMU arguments) is not carried"),
            _ => match base {
                "ide" | "sata" | "scsi" | "virtio" => drives.push((n, key.clone(), value.clone())),
                "net" => {
                    vm.nics.push(parse_net(value).map_err(|e| err(n, format!("{key}: {e}")))?);
                }
                "serial" => {
                    // Proxmox qemu-server, PVE/QemuServer.pm, $serialdesc: pattern
                    // '(/dev/.+|socket)', which PVE::JSONSchema anchors at both ends: a unix
                    // socket (`qm terminal`) or a host serial device, nothing else.
                    if value != "socket" && value.strip_prefix("/dev/").is_none_or(str::is_empty) {
                        return Err(err(n, format!("{key} '{value}' is neither socket nor a host device (/dev/...)")));
                    }
                    vm.serial_ports.push(SerialPort {
                        index: key[6..].parse().unwrap_or(0),
                        connection: Some(value.clone()),
                    });
                }
                "hostpci" | "usb" => vm.warn(format!("{key} (a passed-through host device, {value}) is not carried")),
                "unused" => vm.warn(format!("{key} ({value}) is a detached disk: not carried")),
                _ => {}
            },
        }
    }
    let model = match &scsihw {
        None => ScsiModel::LsiLogic,
        Some((n, hw)) => mapping::scsi_model_from_scsihw(hw).ok_or_else(|| {
            err(*n, format!("scsihw '{hw}' is not one of Proxmox's (lsi, lsi53c810, virtio-scsi-pci, virtio-scsi-single, megasas, pvscsi)"))
        })?,
    };
    for (n, key, value) in drives {
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        let index: u32 = key[base.len()..].parse().unwrap_or(0);
        let drive = parse_drive(&value).map_err(|e| err(n, format!("{key}: {e}")))?;
        let (controller, unit) = mapping::placement(base, index, model);
        if drive.cdrom {
            let source = match &drive.volume {
                None => DiskSource::Blank,
                Some(v) if v.contains("cloudinit") => {
                    vm.warn(format!("{key} is Proxmox's generated cloud-init drive: not carried (cloud-init settings stay on the host)"));
                    continue;
                }
                Some(v) => DiskSource::Path {
                    path: PathBuf::from(v),
                },
            };
            vm.cdroms.push(Cdrom {
                source,
                controller,
                unit,
            });
            continue;
        }
        let Some(text) = drive.volume else {
            return Err(err(n, format!("{key}: a hard disk without a volume")));
        };
        let volume = if text.starts_with('/') {
            Volume::Path(text.clone())
        } else {
            match text.split_once(':') {
                Some((storage, volume)) if !storage.is_empty() && !volume.is_empty() => {
                    Volume::Storage {
                        storage: storage.to_string(),
                        volume: volume.to_string(),
                    }
                }
                _ => {
                    return Err(err(
                        n,
                        format!(
                            "{key}: volume '{}' is neither storage:volume nor an absolute path",
                            clip(&text)
                        ),
                    ));
                }
            }
        };
        vm.disks.push(Disk {
            source: DiskSource::Path {
                path: PathBuf::from(&text),
            },
            capacity_bytes: drive.size,
            controller,
            unit,
            boot_order: None,
        });
        disk_keys.push(key.clone());
        volumes.push(DiskVolume {
            key,
            line: n,
            volume,
        });
    }
    let cores_n = cores.map(|c| c.1).unwrap_or(1);
    let sockets_n = sockets.map(|s| s.1).unwrap_or(1);
    vm.cpus.count = cores_n.saturating_mul(sockets_n);
    if cores.is_some() || sockets.is_some() {
        vm.cpus.cores_per_socket = Some(cores_n);
    }
    if vm.name.is_empty() {
        vm.name = "proxmox-vm".into();
    }
    // Boot order: `order=scsi0;ide2;net0` (PVE 6.2+) or the legacy letters and bootdisk.
    let order: Vec<String> = match &boot {
        Some((_, b)) if b.starts_with("order=") => {
            b["order=".len()..].split(';').map(str::to_string).collect()
        }
        Some((_, b)) if b.contains('c') => bootdisk.into_iter().collect(),
        None => bootdisk.into_iter().collect(),
        _ => Vec::new(),
    };
    let mut next = 0;
    for dev in &order {
        if let Some(i) = disk_keys.iter().position(|k| k == dev) {
            vm.disks[i].boot_order = Some(next);
            next += 1;
        }
    }
    Ok(PveConfig { vm, volumes })
}

/// A drive's property string, as far as we use it.
struct Drive {
    volume: Option<String>,
    cdrom: bool,
    size: Option<u64>,
}

fn parse_drive(value: &str) -> std::result::Result<Drive, String> {
    let mut volume = None;
    let mut cdrom = false;
    let mut size = None;
    for (k, v) in properties(value) {
        match k {
            "" | "file" | "volume" => volume = Some(v.to_string()),
            "media" => cdrom = v == "cdrom",
            "size" => {
                size = Some(parse_size(v).ok_or_else(|| format!("size '{v}' is not a size"))?)
            }
            _ => {}
        }
    }
    if volume.as_deref() == Some("none") || volume.as_deref() == Some("cdrom") {
        if !cdrom {
            return Err("'none' is a volume only for a CD-ROM (media=cdrom)".into());
        }
        volume = None;
    }
    Ok(Drive {
        volume,
        cdrom,
        size,
    })
}

fn parse_net(value: &str) -> std::result::Result<Nic, String> {
    let mut model = None;
    let mut mac = None;
    let mut network = None;
    for (k, v) in properties(value) {
        match k {
            "model" => model = Some(v.to_string()),
            "macaddr" => mac = Some(v.to_string()),
            "bridge" => network = Some(v.to_string()),
            // `virtio,bridge=vmbr0`: the model alone, Proxmox makes up a MAC.
            "" if mapping::NIC_MODELS.contains(&v) => model = Some(v.to_string()),
            "" => return Err(format!("'{}' is not key=value", clip(v))),
            k if mapping::NIC_MODELS.contains(&k) => {
                model = Some(k.to_string());
                mac = Some(v.to_string());
            }
            _ => {}
        }
    }
    let model = model.ok_or("no model (virtio=<MAC>, e1000=<MAC> ...)")?;
    let model = mapping::nic_from_pve(&model)
        .ok_or_else(|| format!("model '{}' is not one Proxmox emulates", clip(&model)))?;
    let mac = match mac {
        Some(m) if !m.is_empty() => {
            Some(normal_mac(&m).ok_or_else(|| format!("'{}' is not a MAC address", clip(&m)))?)
        }
        _ => None,
    };
    Ok(Nic {
        model,
        mac,
        network,
    })
}

/// `aa:bb:cc:dd:ee:ff` in lowercase, or None.
pub(crate) fn normal_mac(m: &str) -> Option<String> {
    let parts: Vec<&str> = m.split([':', '-']).collect();
    (parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())))
    .then(|| parts.join(":").to_ascii_lowercase())
}

/// A property string's items: `(key, value)`, with `("", item)` for an item without `=`.
pub(crate) fn properties(value: &str) -> Vec<(&str, &str)> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|item| item.split_once('=').unwrap_or(("", item)))
        .collect()
}

/// A size as Proxmox writes it: a number with an optional K, M, G or T (binary) suffix; bytes
/// without one.
pub(crate) fn parse_size(v: &str) -> Option<u64> {
    let (digits, shift) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 10),
        b'M' | b'm' => (&v[..v.len() - 1], 20),
        b'G' | b'g' => (&v[..v.len() - 1], 30),
        b'T' | b't' => (&v[..v.len() - 1], 40),
        _ => (v, 0),
    };
    if let Some((whole, frac)) = digits.split_once('.') {
        // PVE writes fractions rarely (`size=1.5G`); whole bytes are kept.
        let w: u64 = number(whole)?;
        if frac.is_empty() || frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let f: u64 = frac.parse().ok()?;
        let scale = 10u64.pow(frac.len() as u32);
        let unit = 1u64 << shift;
        return w
            .checked_mul(unit)?
            .checked_add(f.checked_mul(unit)? / scale);
    }
    number(digits)?.checked_mul(1u64 << shift)
}

fn number(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn count(v: &str) -> Option<u32> {
    number(v)
        .filter(|n| (1..=4096).contains(n))
        .map(|n| n as u32)
}

/// A line cut short for a message.
fn clip(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_takes_a_head_cut_inside_a_line() {
        let mut conf = b"cores: 2\nmemory: 512\nscsi0: local:100/vm-100-disk-0.qcow2,si".to_vec();
        assert!(probe(&conf));
        conf.extend_from_slice(b"\nnot a conf line\n");
        assert!(!probe(&conf));
        assert!(!probe(b"displayName = \"x\"\nmemsize = \"512\"\n"));
    }

    #[test]
    fn sizes_as_proxmox_writes_them() {
        assert_eq!(parse_size("32G"), Some(32 << 30));
        assert_eq!(parse_size("528K"), Some(528 << 10));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_size("G"), None);
    }
}
