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
use crate::gate::folder_of;
use crate::vm::Vm;
use crate::vmconfig::{ConfigFiles, ConfigVm, DiskPlan, PlacedDisk, VmConfig};
use read::Volume;
use std::path::Path;

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

/// The name (relative to the configuration's folder, or absolute) of the file holding
/// `volume`, or an error saying where it was looked for.
fn resolve(path: &Path, v: &read::DiskVolume) -> Result<String> {
    let folder = folder_of(path);
    let names = candidates(&v.volume);
    if let Volume::Path(p) = &v.volume {
        return Ok(p.clone());
    }
    for n in &names {
        // Only plain names: a volume cannot lead out of the folder by `..`.
        if n.is_empty() || n == ".." || n == "." {
            continue;
        }
        if std::fs::symlink_metadata(folder.join(n)).is_ok() {
            return Ok(n.clone());
        }
    }
    let Volume::Storage { storage, volume } = &v.volume else {
        unreachable!("paths returned above")
    };
    if storage == "local" && volume.contains('/') {
        let host = format!("/var/lib/vz/images/{volume}");
        if !volume.split('/').any(|p| p == "..") && std::fs::symlink_metadata(&host).is_ok() {
            return Ok(host);
        }
    }
    Err(Error::invalid(format!(
        "line {}: {} is volume '{storage}:{volume}', which only the Proxmox host resolves, and no {} is beside the configuration; on the host, `pvesm path {storage}:{volume}` prints its file: copy it here as {}",
        v.line,
        v.key,
        names.join(" or "),
        names[0]
    ))
    .with_path(path))
}

impl VmConfig for Proxmox {
    fn name(&self) -> &'static str {
        "proxmox"
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
            .map(|v| resolve(path, v))
            .collect::<Result<Vec<_>>>()?;
        Ok(ConfigVm {
            vm: conf.vm,
            disk_files,
        })
    }

    fn disk_plan(&self, vm: &Vm, _stem: &str) -> Result<Vec<DiskPlan>> {
        Ok((0..vm.disks.len())
            .map(|i| DiskPlan {
                file_name: write::disk_file(i),
                format: "qcow2",
                options: String::new(),
            })
            .collect())
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
