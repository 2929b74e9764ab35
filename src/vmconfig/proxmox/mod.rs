//! Proxmox VE: `qemu-server/<vmid>.conf` read as a `migrate` source and written for
//! `--to proxmox`.
//!
//! Proxmox names disks by storage (`local-lvm:vm-100-disk-0`), which only the Proxmox host
//! can resolve (its /etc/pve/storage.cfg). What a user migrating away from Proxmox has is the
//! configuration and the disk files copied beside it, so a volume is looked for there, by the
//! last part of its name: `local:100/vm-100-disk-0.qcow2` (a directory storage, file
//! `images/100/vm-100-disk-0.qcow2` under the storage's path) as `vm-100-disk-0.qcow2`, and a
//! block volume `local-lvm:vm-100-disk-0` as `vm-100-disk-0`, `.raw`, `.qcow2` or `.img`.
//! On the Proxmox host itself a `local:` volume is also found in `/var/lib/vz/images`
//! (the `local` storage's fixed path) where the gate allows absolute names. A volume found
//! nowhere is one error saying how to fetch it (`pvesm path`).

pub mod mapping;
pub mod read;
pub mod write;

use crate::error::{Error, Result};
use crate::vm::Vm;
use crate::vmconfig::{ConfigFiles, ConfigVm, DiskPlan, PlacedDisk, VmConfig};
use read::Volume;
use std::path::{Path, PathBuf};

pub use read::{PveConfig, parse, probe};

/// Proxmox VE's VM configuration as a [`VmConfig`].
pub struct Proxmox;

/// The file names a volume may have beside the configuration, best first.
pub fn candidates(volume: &Volume) -> Vec<String> {
    match volume {
        Volume::Path(p) => vec![p.clone()],
        Volume::Storage { volume, .. } => {
            let file = volume.rsplit('/').next().unwrap_or(volume).to_string();
            let mut c = vec![file.clone()];
            if !file.contains('.') {
                for ext in ["raw", "qcow2", "img"] {
                    c.push(format!("{file}.{ext}"));
                }
            }
            c
        }
    }
}

/// The volume a disk's stored text names (as [`read::parse`] split it: an absolute path, else
/// `storage:volume`).
fn volume_of(stored: &str) -> Volume {
    match stored.split_once(':') {
        Some((storage, volume)) if !stored.starts_with('/') => Volume::Storage {
            storage: storage.to_string(),
            volume: volume.to_string(),
        },
        _ => Volume::Path(stored.to_string()),
    }
}

/// The names to look for a volume's file by, relative to the configuration's folder or
/// absolute: the path of a path volume; the plain file names of [`candidates`] (a volume
/// cannot lead out of the folder by `..`), then, for the `local` storage, its fixed path on
/// a Proxmox host.
fn lookup_names(stored: &str) -> Vec<String> {
    let volume = volume_of(stored);
    let Volume::Storage { storage, volume: v } = &volume else {
        return candidates(&volume);
    };
    let mut names: Vec<String> = candidates(&volume)
        .into_iter()
        .filter(|n| !n.is_empty() && n != ".." && n != ".")
        .collect();
    if storage == "local" && v.contains('/') && !v.split('/').any(|p| p == "..") {
        names.push(format!("/var/lib/vz/images/{v}"));
    }
    names
}

impl VmConfig for Proxmox {
    fn name(&self) -> &'static str {
        "proxmox"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&mapping::WRITE)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "proxmox",
                "a folder: qcow2 disks, a Proxmox VE <vmid>.conf and import.sh (qm set ... import-from)",
            ),
            ("pve", "the same as proxmox"),
        ]
    }

    fn probe(&self, head: &[u8], _path: &Path) -> bool {
        probe(head)
    }

    fn read(&self, bytes: &[u8], path: &Path) -> Result<ConfigVm> {
        let conf = parse(bytes, &path.to_string_lossy())?;
        let disk_files = conf
            .volumes
            .iter()
            .map(|v| match &v.volume {
                Volume::Path(p) => p.clone(),
                Volume::Storage { storage, volume } => format!("{storage}:{volume}"),
            })
            .collect();
        Ok(ConfigVm {
            vm: conf.vm,
            disk_files,
        })
    }

    fn disk_candidates(&self, read: &ConfigVm, index: usize) -> Vec<String> {
        read.disk_files
            .get(index)
            .map(|s| lookup_names(s))
            .unwrap_or_default()
    }

    fn disk_not_found(
        &self,
        bytes: &[u8],
        path: &Path,
        read: &ConfigVm,
        index: usize,
        tried: &[PathBuf],
    ) -> Error {
        let stored = read.disk_files.get(index).map_or("", String::as_str);
        let names = candidates(&volume_of(stored));
        // The line and key, from the configuration as read.
        let at = parse(bytes, &path.to_string_lossy())
            .ok()
            .and_then(|c| {
                c.volumes
                    .get(index)
                    .map(|v| format!("line {}: {} is ", v.line, v.key))
            })
            .unwrap_or_default();
        let message = match volume_of(stored) {
            Volume::Storage { storage, volume } => format!(
                "{at}volume '{storage}:{volume}', which only the Proxmox host resolves, and no {} is beside the configuration; on the host, `pvesm path {storage}:{volume}` prints its file: copy it here as {}",
                names.join(" or "),
                names.first().map_or("", String::as_str)
            ),
            Volume::Path(p) => format!(
                "{at}'{p}', which is not on this host ({})",
                tried
                    .iter()
                    .map(|t| t.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Error::invalid(message).with_path(path)
    }

    fn disk_plan(&self, vm: &Vm, _stem: &str) -> Result<Vec<DiskPlan>> {
        // Refused before any disk is converted.
        if vm.disks.len() > write::DISK_SLOTS {
            return Err(Error::unsupported(format!(
                "{} disks: a Proxmox VM has {} disk slots (scsi0-30, sata0-5, virtio0-15)",
                vm.disks.len(),
                write::DISK_SLOTS
            )));
        }
        Ok((0..vm.disks.len())
            .map(|i| DiskPlan {
                file_name: write::disk_file(i),
                format: "qcow2",
                options: String::new(),
            })
            .collect())
    }

    fn memory_bytes(&self, vm: &Vm) -> u64 {
        write::memory_mib(vm).0 << 20
    }

    fn write(
        &self,
        vm: &Vm,
        _stem: &str,
        _folder: &Path,
        disks: &[PlacedDisk],
    ) -> Result<ConfigFiles> {
        let w = write::write(vm, disks);
        Ok(ConfigFiles {
            files: vec![
                (format!("{}.conf", write::DEFAULT_VMID), w.conf.into_bytes()),
                ("import.sh".into(), w.script.into_bytes()),
            ],
            warnings: w.warnings,
            instructions: w.instructions,
        })
    }
}
