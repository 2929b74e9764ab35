//! Reading an xl.cfg into the VM model: xl.cfg(5) for the settings,
//! xl-disk-configuration(5) for `disk` specs (both the key=value and the positional
//! `target,format,vdev,access` forms, and the deprecated `phy:`/`file:`/`tap:aio:` target
//! prefixes and `hdc:cdrom` vdevs), xl-network-configuration(5) for `vif` specs.

use super::syntax::{Setting, Value, parse as parse_syntax};
use crate::error::{Error, Result};
use crate::vm::{
    Cdrom, Controller, Disk, DiskSource, Firmware, Nic, NicModel, SerialPort, Video, Vm,
};
use std::path::PathBuf;

/// The guest type (xl.cfg(5) `type`, or the older `builder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestType {
    /// Fully virtualized, with emulated firmware and devices.
    Hvm,
    /// PVH: paravirtualized, booted from a kernel or PVH-capable firmware.
    Pvh,
    /// Classic paravirtualized guest (xl's default when nothing is said).
    Pv,
}

/// One disk spec, as far as the model needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The file or device (empty for an empty CD-ROM drive).
    pub target: String,
    /// `raw`, `qcow`, `qcow2`, `vhd`, `qed`, when said.
    pub format: Option<String>,
    /// The virtual device (`xvda`, `hdc`).
    pub vdev: String,
    /// True for `access=ro`.
    pub read_only: bool,
    /// True for a CD-ROM drive.
    pub cdrom: bool,
}

/// A parsed xl.cfg: the machine, its type, and one file per entry of `vm.disks`.
#[derive(Debug, Clone)]
pub struct XlConfig {
    /// The machine.
    pub vm: Vm,
    /// HVM, PVH or PV.
    pub guest_type: GuestType,
    /// One per entry of `vm.disks`: the target as written.
    pub disk_files: Vec<String>,
}

/// True when `head` looks like an xl.cfg: two or more settings xl knows (`name`, `memory`,
/// `vcpus`, `disk`, `vif`, `type`, `builder`, `kernel`) and no dotted keys (a .vmx's).
pub fn probe(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut hits = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.contains('.') || key.contains(':') {
            return false;
        }
        if matches!(
            key,
            "name" | "memory" | "maxmem" | "vcpus" | "disk" | "vif" | "type" | "builder" | "kernel"
        ) {
            hits += 1;
        }
    }
    hits >= 2
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Str(s) | Value::Num(s) => Some(s),
        Value::List(_) => None,
    }
}

fn num(v: &Value) -> Option<u64> {
    let s = text(v)?;
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The drive number of `hdc`, `sdb`, `xvdaa` (a = 0), ignoring a partition number.
fn drive_number(letters: &str) -> Option<u32> {
    let l: String = letters
        .chars()
        .take_while(|c| c.is_ascii_lowercase())
        .collect();
    let rest = &letters[l.len()..];
    if l.is_empty() || l.len() > 3 || !rest.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(
        l.bytes()
            .fold(0u32, |n, b| n * 26 + u32::from(b - b'a') + 1)
            - 1,
    )
}

/// Where a vdev puts a disk in the model: `hdX` on IDE (two per controller), `sdX` on SCSI,
/// `xvdX` where an HVM guest's firmware sees it (xvda-xvdd are the emulated IDE disks, the
/// rest PV only: SATA in the model). xl-disk-configuration(5), "vdev".
pub fn vdev_place(vdev: &str) -> Option<(Controller, u32)> {
    let c = |kind, index| Controller { kind, index };
    let kind = |token| super::mapping::READ.controller_named(token);
    if let Some(l) = vdev.strip_prefix("xvd") {
        let n = drive_number(l)?;
        return Some(if n < 4 {
            (c(kind("xvda-xvdd")?, n / 2), n % 2)
        } else {
            (c(kind("xvde+")?, 0), n)
        });
    }
    if let Some(l) = vdev.strip_prefix("hd") {
        let n = drive_number(l)?;
        return Some((c(kind("hd")?, n / 2), n % 2));
    }
    if let Some(l) = vdev.strip_prefix("sd") {
        let n = drive_number(l)?;
        return Some((c(kind("sd")?, 0), n));
    }
    None
}

/// Parses one disk spec (xl-disk-configuration(5)).
pub fn parse_disk(spec: &str) -> std::result::Result<DiskSpec, String> {
    let mut d = DiskSpec {
        target: String::new(),
        format: None,
        vdev: String::new(),
        read_only: false,
        cdrom: false,
    };
    let mut positional = 0;
    let mut rest = spec;
    loop {
        let item_full = rest.trim_start();
        // `target=` takes the rest of the spec, commas included.
        if let Some(t) = item_full.strip_prefix("target=") {
            d.target = t.to_string();
            break;
        }
        let (item, next) = match item_full.split_once(',') {
            Some((a, b)) => (a.trim(), Some(b)),
            None => (item_full.trim(), None),
        };
        if let Some((k, v)) = item.split_once('=') {
            match k {
                "format" => d.format = Some(v.to_string()),
                "vdev" => d.vdev = v.to_string(),
                "access" => d.read_only = access(v)?,
                "devtype" => d.cdrom = v == "cdrom",
                _ => {}
            }
        } else if item == "cdrom" {
            d.cdrom = true;
        } else if matches!(
            item,
            "direct-io-safe" | "discard" | "no-discard" | "trusted" | "untrusted" | "colo"
        ) {
        } else {
            match positional {
                0 => d.target = item.to_string(),
                // The deprecated xm form `raw:/dev/vg/lv,hda,w` has no format: a vdev in
                // the format's place is the vdev (xl-disk-configuration(5) examples).
                1 if vdev_place(item.split(':').next().unwrap_or(item)).is_some() => {
                    d.vdev = item.to_string();
                    positional += 1;
                }
                1 => {
                    if !item.is_empty() {
                        d.format = Some(item.to_string());
                    }
                }
                2 => d.vdev = item.to_string(),
                3 => {
                    if !item.is_empty() {
                        d.read_only = access(item)?;
                    }
                }
                _ => return Err(format!("a fifth positional parameter '{item}'")),
            }
            positional += 1;
        }
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    // Deprecated `hdc:cdrom`.
    if let Some((v, kind)) = d.vdev.clone().split_once(':') {
        d.cdrom |= kind == "cdrom";
        d.vdev = v.to_string();
    }
    // Deprecated target prefixes: `phy:`, `file:`, `tap:aio:`, `tap:qcow2:`, `aio:` ...
    while let Some((prefix, after)) = d.target.clone().split_once(':') {
        match prefix {
            "phy" | "file" | "tap" | "tap2" | "tapdisk" | "aio" => {}
            "raw" | "qcow" | "qcow2" | "vhd" | "qed" => d.format = Some(prefix.to_string()),
            _ => break,
        }
        d.target = after.to_string();
    }
    if d.vdev.is_empty() {
        return Err("no vdev (the guest's device name, e.g. xvda)".into());
    }
    if d.target.is_empty() && !d.cdrom {
        return Err(format!("disk {} has no target", d.vdev));
    }
    if let Some(f) = &d.format
        && !matches!(
            f.as_str(),
            "raw" | "qcow" | "qcow2" | "vhd" | "qed" | "empty"
        )
    {
        return Err(format!("format '{f}' is not raw, qcow, qcow2, vhd or qed"));
    }
    Ok(d)
}

fn access(v: &str) -> std::result::Result<bool, String> {
    match v {
        "ro" | "r" => Ok(true),
        "rw" | "w" => Ok(false),
        other => Err(format!("access '{other}' is neither ro nor rw")),
    }
}

/// Parses one vif spec (xl-network-configuration(5)).
pub fn parse_vif(spec: &str, guest: GuestType) -> std::result::Result<Nic, String> {
    let mut model = None;
    let mut mac = None;
    let mut bridge = None;
    let mut pv_only = false;
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("'{item}' is not key=value"));
        };
        match k {
            "mac" => {
                mac = Some(
                    crate::vmconfig::proxmox::read::normal_mac(v)
                        .ok_or_else(|| format!("'{v}' is not a MAC address"))?,
                )
            }
            "bridge" => bridge = Some(v.to_string()),
            "model" => model = Some(v.to_string()),
            "type" => pv_only = v == "vif",
            _ => {}
        }
    }
    let model = match model.as_deref() {
        _ if pv_only || guest != GuestType::Hvm => {
            NicModel::Other(super::mapping::READ.other_nics[0].model.into())
        }
        // xl.cfg(5): an HVM guest's emulated NIC is an rtl8139 unless model= says.
        m => {
            let m = m.unwrap_or("rtl8139");
            super::mapping::READ
                .nic_named(m)
                .unwrap_or_else(|| NicModel::Other(m.to_string()))
        }
    };
    Ok(Nic {
        model,
        mac,
        network: bridge,
    })
}

/// Reads an xl.cfg (`name` names it in errors).
pub fn parse(bytes: &[u8], name: &str) -> Result<XlConfig> {
    let settings = parse_syntax(bytes, name)?;
    // Values may hold control characters (a string's `\n` escape): shown escaped, so the
    // error stays one line.
    let err = |line: usize, what: String| {
        Error::invalid(format!("line {line}: {}", printable(&what))).with_path(name)
    };
    let get = |k: &str| settings.iter().rev().find(|s| s.key == k);
    let string = |s: &Setting| -> Result<String> {
        match &s.value {
            Value::Str(v) => Ok(v.clone()),
            _ => Err(err(s.line, format!("'{}' must be a quoted string", s.key))),
        }
    };
    let number = |s: &Setting| -> Result<u64> {
        num(&s.value).ok_or_else(|| err(s.line, format!("'{}' must be a number", s.key)))
    };
    let list = |s: &Setting| -> Result<Vec<String>> {
        match &s.value {
            Value::List(items) => items
                .iter()
                .map(|i| match i {
                    Value::Str(v) => Ok(v.clone()),
                    _ => Err(err(
                        s.line,
                        format!("the items of '{}' must be quoted strings", s.key),
                    )),
                })
                .collect(),
            // A single string is taken as a list of one, as libxlu does.
            Value::Str(v) => Ok(vec![v.clone()]),
            Value::Num(_) => Err(err(s.line, format!("'{}' must be a [list]", s.key))),
        }
    };
    let Some(name_setting) = get("name") else {
        return Err(Error::invalid("no 'name' setting (xl.cfg(5) requires one)").with_path(name));
    };
    let mut vm = Vm::new(string(name_setting)?);
    if vm.name.is_empty() {
        return Err(err(name_setting.line, "'name' is empty".into()));
    }
    let guest_type = match (get("type"), get("builder")) {
        (Some(t), _) => match string(t)?.as_str() {
            "hvm" => GuestType::Hvm,
            "pvh" => GuestType::Pvh,
            "pv" => GuestType::Pv,
            other => return Err(err(t.line, format!("type '{other}' is not hvm, pvh or pv"))),
        },
        (None, Some(b)) => match string(b)?.as_str() {
            "hvm" => GuestType::Hvm,
            "generic" => GuestType::Pv,
            other => {
                return Err(err(
                    b.line,
                    format!("builder '{other}' is neither hvm nor generic"),
                ));
            }
        },
        (None, None) => GuestType::Pv,
    };
    let mib = |s: &Setting| -> Result<u64> {
        number(s)?
            .checked_mul(1 << 20)
            .filter(|b| *b <= crate::vmconfig::proxmox::mapping::MAX_MEMORY)
            .ok_or_else(|| err(s.line, format!("'{}' is too large", s.key)))
    };
    if let Some(m) = get("memory") {
        vm.memory_bytes = mib(m)?;
    }
    // With maxmem above memory the guest starts ballooned and may grow to maxmem: the target
    // gets maxmem, the most the guest may use (libvirt's xl reader makes it <memory> too).
    if let Some(m) = get("maxmem") {
        let max = mib(m)?;
        if max > vm.memory_bytes {
            if vm.memory_bytes > 0 {
                vm.warn(format!(
                    "memory ({} MiB) is below maxmem ({} MiB): the target gets maxmem; the ballooned start is not carried",
                    vm.memory_bytes >> 20,
                    max >> 20
                ));
            }
            vm.memory_bytes = max;
        }
    }
    vm.cpus.count = match get("vcpus") {
        Some(v) => {
            let n = number(v)?;
            u32::try_from(n)
                .ok()
                .filter(|n| (1..=4096).contains(n))
                .ok_or_else(|| err(v.line, format!("vcpus {n} is not from 1 to 4096")))?
        }
        None => 1,
    };
    let firmware = match (get("firmware"), get("bios")) {
        (Some(f), _) => Some((f, string(f)?)),
        (None, Some(b)) => Some((b, string(b)?)),
        _ => None,
    };
    if let Some((s, f)) = firmware {
        match f.as_str() {
            "uefi" | "ovmf" => vm.firmware = Firmware::Uefi { secure_boot: false },
            "bios" | "seabios" | "rombios" => {}
            "pvgrub32" | "pvgrub64" | "pvh" => {
                vm.warn(format!("firmware '{f}' boots a PV kernel from the disk: the target boots the disk with its own firmware (BIOS)"))
            }
            other if other.starts_with('/') => vm.warn(format!("firmware file '{other}' on the Xen host is not carried: BIOS assumed")),
            other => return Err(err(s.line, format!("firmware '{other}' is not one xl knows (bios, uefi, seabios, rombios, ovmf, pvgrub32, pvgrub64, pvh)"))),
        }
    }
    if guest_type != GuestType::Hvm
        && let Some(k) = get("kernel")
    {
        vm.warn(format!(
            "the guest boots the kernel '{}' from the Xen host (direct kernel boot), which is not carried: the target boots from the disk, so the guest needs a kernel and boot loader of its own",
            string(k)?
        ));
    }
    if get("vtpm").is_some() {
        vm.tpm = true;
        vm.warn("the vTPM's state stays on the Xen host: the target gets a new TPM");
    }
    if let Some(s) = get("serial") {
        // A list gives an HVM guest several ports, COM1 first.
        let ports: Vec<Option<&str>> = match &s.value {
            Value::List(items) => items.iter().map(text).collect(),
            v => vec![text(v)],
        };
        for (index, v) in ports.into_iter().enumerate() {
            if let Some(v) = v.filter(|v| *v != "none") {
                vm.serial_ports.push(SerialPort {
                    index: index as u32,
                    connection: Some(v.to_string()),
                });
            }
        }
    }
    if let Some(v) = get("vga") {
        vm.video = Some(Video {
            model: Some(string(v)?),
            vram_bytes: None,
        });
    } else if get("stdvga").and_then(|s| num(&s.value)) == Some(1) {
        vm.video = Some(Video {
            model: Some("stdvga".into()),
            vram_bytes: None,
        });
    }
    if get("pci").is_some() {
        vm.warn("passed-through PCI devices ('pci') are not carried");
    }
    let mut disk_files = Vec::new();
    if let Some(s) = get("disk") {
        for spec in list(s)? {
            let d = parse_disk(&spec)
                .map_err(|e| err(s.line, format!("disk '{}': {e}", clip(&spec))))?;
            let (controller, unit) = vdev_place(&d.vdev).ok_or_else(|| {
                err(
                    s.line,
                    format!("disk vdev '{}' is not hdX, sdX or xvdX", clip(&d.vdev)),
                )
            })?;
            if d.cdrom {
                vm.cdroms.push(Cdrom {
                    source: if d.target.is_empty() {
                        DiskSource::Blank
                    } else {
                        DiskSource::Path {
                            path: PathBuf::from(&d.target),
                        }
                    },
                    controller,
                    unit,
                });
                continue;
            }
            if d.read_only {
                vm.warn(format!(
                    "disk {} is read-only on Xen; the target attaches it read-write",
                    d.vdev
                ));
            }
            vm.disks.push(Disk {
                source: DiskSource::Path {
                    path: PathBuf::from(&d.target),
                },
                capacity_bytes: None,
                controller,
                unit,
                boot_order: None,
            });
            disk_files.push(d.target);
        }
    }
    // HVM boots from the first hard disk unless `boot` puts the CD or network first.
    if let Some(first) = vm.disks.first_mut() {
        first.boot_order = Some(0);
    }
    if let Some(s) = get("vif") {
        for spec in list(s)? {
            vm.nics.push(
                parse_vif(&spec, guest_type)
                    .map_err(|e| err(s.line, format!("vif '{}': {e}", clip(&spec))))?,
            );
        }
    }
    if guest_type != GuestType::Hvm {
        vm.warn(format!(
            "a {} guest: it uses Xen's paravirtual disks and NICs, so on another hypervisor it needs that hypervisor's drivers (virtio on KVM) in its kernel",
            if guest_type == GuestType::Pv { "PV" } else { "PVH" }
        ));
    }
    Ok(XlConfig {
        vm,
        guest_type,
        disk_files,
    })
}

/// `s` with control characters escaped.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let e: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            e
        })
        .collect()
}

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
    fn disk_specs_both_forms() {
        let d = parse_disk("/dev/vg/guest-volume,raw,xvda,rw").unwrap();
        assert_eq!(
            (
                d.target.as_str(),
                d.format.as_deref(),
                d.vdev.as_str(),
                d.read_only
            ),
            ("/dev/vg/guest-volume", Some("raw"), "xvda", false)
        );
        let d = parse_disk("format=qcow2, vdev=xvdb, access=rw, target=/a,b c.qcow2").unwrap();
        assert_eq!(d.target, "/a,b c.qcow2");
        let d = parse_disk("raw:/dev/vg/guest-volume,hda,w").unwrap();
        assert_eq!(
            (d.target.as_str(), d.format.as_deref(), d.vdev.as_str()),
            ("/dev/vg/guest-volume", Some("raw"), "hda")
        );
        let d = parse_disk("/root/image.iso,,hdc,cdrom").unwrap();
        assert!(d.cdrom);
        assert!(parse_disk("/x,raw,xvda,rx").unwrap_err().contains("access"));
        let d = parse_disk("tap:qcow2:/x.qcow2,,hdc:cdrom,r").unwrap();
        assert!(d.cdrom && d.read_only);
        assert_eq!(
            (d.target.as_str(), d.format.as_deref()),
            ("/x.qcow2", Some("qcow2"))
        );
        assert_eq!(parse_disk(",,hdc:cdrom,r").unwrap().target, "");
        assert_eq!(drive_number("aa"), Some(26));
        assert_eq!(drive_number("b1"), Some(1));
    }
}
