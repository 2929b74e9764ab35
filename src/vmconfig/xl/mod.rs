//! Xen's xl.cfg (`xl create`): read as a `migrate` source and written for `--to xen`.
//!
//! Disk targets in an xl.cfg are host paths (`/var/lib/xen/images/web.qcow2`, an LVM
//! volume). A user moving a VM off a Xen host copies the cfg and the disk files into one
//! folder, so a target that does not exist is looked for beside the cfg by its file name
//! (with a warning); every name goes through the open gate.

pub mod mapping;
pub mod read;
pub mod syntax;
pub mod write;

use crate::error::Result;
use crate::gate::folder_of;
use crate::vm::Vm;
use crate::vmconfig::{ConfigFiles, ConfigVm, DiskPlan, PlacedDisk, VmConfig};
use std::path::Path;

pub use read::{XlConfig, parse, probe};

/// xl.cfg as a [`VmConfig`].
pub struct Xl;

impl VmConfig for Xl {
    fn name(&self) -> &'static str {
        "xl"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&mapping::WRITE)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("xen", "a folder: qcow2 disks and an xl.cfg (xl create)"),
            ("xl", "the same as xen"),
        ]
    }

    fn probe(&self, head: &[u8], _path: &Path) -> bool {
        probe(head)
    }

    fn read(&self, bytes: &[u8], path: &Path) -> Result<ConfigVm> {
        let mut cfg = parse(bytes, &path.to_string_lossy())?;
        let folder = folder_of(path);
        let mut files = Vec::new();
        for target in cfg.disk_files {
            let p = Path::new(&target);
            let beside = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| p.is_absolute() && std::fs::symlink_metadata(folder.join(n)).is_ok());
            match beside {
                Some(n) if std::fs::symlink_metadata(p).is_err() => {
                    cfg.vm.warn(format!(
                        "disk '{target}' is not on this host: its copy beside the configuration, '{n}', is read"
                    ));
                    files.push(n);
                }
                _ => files.push(target),
            }
        }
        Ok(ConfigVm {
            vm: cfg.vm,
            disk_files: files,
        })
    }

    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
        Ok((1..=vm.disks.len())
            .map(|i| DiskPlan {
                file_name: format!("{stem}-disk{i}.qcow2"),
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
        stem: &str,
        folder: &Path,
        disks: &[PlacedDisk],
    ) -> Result<ConfigFiles> {
        let (cfg, warnings) = write::xl_cfg(vm, disks)?;
        let name = format!("{stem}.cfg");
        Ok(ConfigFiles {
            instructions: vec![format!("xl create '{}'", folder.join(&name).display())],
            files: vec![(name, cfg.into_bytes())],
            warnings,
        })
    }
}
