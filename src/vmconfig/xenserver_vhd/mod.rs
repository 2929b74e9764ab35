//! `--to xenserver-vhd`: a folder of dynamic VHDs named `<uuid>.vhd`, for copying into a file
//! SR (ext, NFS: XenServer and XCP-ng keep each VDI there as `<VDI uuid>.vhd`), with the `xe`
//! commands that make XAPI see them and build the VM around them ([`mod@write`]).
//!
//! Writer-only: there is no XenServer configuration file to read (a VM's description lives in
//! XAPI's database; its export is an XVA, read by [`crate::xva`]).

pub mod mapping;
pub mod write;

use super::{ConfigFiles, DiskPlan, PlacedDisk, VmConfig};
use crate::error::Result;
use crate::vm::Vm;
use std::path::Path;

/// The VHD block size XenServer's storage manager (blktap, vhd-util) uses: 2 MiB.
pub const BLOCK_OPTIONS: &str = "subformat=dynamic,block_size=2M";

/// The writer of `--to xenserver-vhd`.
pub struct XenServerVhd;

impl VmConfig for XenServerVhd {
    fn name(&self) -> &'static str {
        "xenserver-vhd"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&mapping::WRITE)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "xenserver-vhd",
            "a folder: dynamic VHDs named <uuid>.vhd for a XenServer/XCP-ng file SR, and the xe commands that attach them",
        )]
    }

    fn disk_plan(&self, vm: &Vm, _stem: &str) -> Result<Vec<DiskPlan>> {
        // A file SR names each VDI by its uuid: the file's name is the VDI's identity there.
        Ok(vm
            .disks
            .iter()
            .map(|_| DiskPlan {
                file_name: format!("{}.vhd", uuid::Uuid::new_v4()),
                format: "vhd",
                options: BLOCK_OPTIONS.to_string(),
            })
            .collect())
    }

    fn memory_bytes(&self, vm: &Vm) -> u64 {
        crate::xva::ova_xml_write::memory_bytes(vm).0
    }

    fn write(
        &self,
        vm: &Vm,
        stem: &str,
        folder: &Path,
        disks: &[PlacedDisk],
    ) -> Result<ConfigFiles> {
        write::commands(vm, stem, folder, disks)
    }
}
