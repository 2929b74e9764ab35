//! VMware .vmx (Workstation, Fusion, ESXi, GSX) in and out.
//!
//! Read: [`parse`] splits the text (case-insensitive keys, `|XX` escapes, `.encoding`), [`read`]
//! fills the VM model; the disks are the VMDK descriptors the .vmx names, relative to its folder
//! (or absolute), which `migrate` opens through the open gate.
//!
//! Written as two targets, because VMware's hosted products and ESXi keep disks differently:
//! - `--to vmx` (Workstation/Fusion): the .vmx with monolithicSparse VMDKs, the disk hosted
//!   products create by default;
//! - `--to esxi-vmx`: the .vmx with `vmfs` VMDKs (a descriptor and its `-flat.vmdk` extent),
//!   the layout of a disk on an ESXi datastore, plus the commands that register the VM.
//!
//! The hardware version is the lowest that has every device used ([`hwversion`]); devices
//! VMware does not emulate are mapped by [`layout`], with a warning.

pub mod hwversion;
pub mod layout;
pub mod mapping;
pub mod parse;
pub mod read;
pub mod write;

use super::{ConfigFiles, ConfigVm, DiskPlan, PlacedDisk, VmConfig};
use crate::error::Result;
use crate::vm::Vm;
use hwversion::Product;
use std::path::Path;

/// Reads a .vmx (`path` names it in errors and gives the VM a name when displayName is absent).
pub fn read_vmx(bytes: &[u8], path: &Path) -> Result<ConfigVm> {
    let file = parse::parse(bytes, path)?;
    let (vm, disk_files) = read::read(&file, path)?;
    Ok(ConfigVm { vm, disk_files })
}

/// VMware's .vmx for one product family.
pub struct Vmx(pub Product);

/// The Workstation/Fusion target (also the reader of every .vmx).
pub static HOSTED: Vmx = Vmx(Product::Hosted);
/// The ESXi target.
pub static ESXI: Vmx = Vmx(Product::Esxi);

impl VmConfig for Vmx {
    fn name(&self) -> &'static str {
        match self.0 {
            Product::Hosted => "vmx",
            Product::Esxi => "esxi-vmx",
        }
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(match self.0 {
            Product::Hosted => &mapping::WRITE_HOSTED,
            Product::Esxi => &mapping::WRITE_ESXI,
        })
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        match self.0 {
            Product::Hosted => &[(
                "vmx",
                "a folder: a VMware .vmx and monolithicSparse VMDK disks (Workstation, Fusion)",
            )],
            Product::Esxi => &[(
                "esxi-vmx",
                "a folder: a VMware .vmx and vmfs (flat) VMDK disks to copy to an ESXi datastore and register",
            )],
        }
    }

    fn probe(&self, head: &[u8], _path: &Path) -> bool {
        // One reader for both: the ESXi entry only writes.
        self.0 == Product::Hosted && parse::probe(head)
    }

    fn read(&self, bytes: &[u8], path: &Path) -> Result<ConfigVm> {
        read_vmx(bytes, path)
    }

    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
        let l = layout::layout(vm)?;
        let subformat = match self.0 {
            Product::Hosted => "monolithicSparse",
            Product::Esxi => "vmfs",
        };
        Ok(l.disks
            .iter()
            .enumerate()
            .map(|(i, slot)| DiskPlan {
                file_name: format!("{stem}-disk{}.vmdk", i + 1),
                format: "vmdk",
                options: format!(
                    "subformat={subformat},adapter_type={}",
                    layout::adapter_type(&l, *slot)
                ),
            })
            .collect())
    }

    fn memory_bytes(&self, vm: &Vm) -> u64 {
        write::memsize(vm).0 << 20
    }

    fn write(
        &self,
        vm: &Vm,
        stem: &str,
        folder: &Path,
        disks: &[PlacedDisk],
    ) -> Result<ConfigFiles> {
        let l = layout::layout(vm)?;
        let files: Vec<String> = disks.iter().map(|d| d.plan.file_name.clone()).collect();
        let (text, warnings) = write::vmx_text(vm, &files, &l, self.0);
        let name = format!("{stem}.vmx");
        let vmx_path = folder.join(&name);
        let folder_name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| stem.to_string());
        let instructions = match self.0 {
            Product::Hosted => vec![
                format!("Workstation: File > Open '{}' (or: vmrun -T ws start '{}')", vmx_path.display(), vmx_path.display()),
                format!("Fusion: open '{}' (or: vmrun -T fusion start '{}')", vmx_path.display(), vmx_path.display()),
            ],
            Product::Esxi => vec![
                format!("scp -r '{}' root@ESXI-HOST:/vmfs/volumes/DATASTORE/", folder.display()),
                format!("ssh root@ESXI-HOST vim-cmd solo/registervm '/vmfs/volumes/DATASTORE/{folder_name}/{name}'"),
                "the flat disks arrive thick-provisioned; to thin one: vmkfstools -i X.vmdk -d thin X-thin.vmdk on the host, then name X-thin.vmdk in the .vmx".to_string(),
            ],
        };
        Ok(ConfigFiles {
            files: vec![(name, text.into_bytes())],
            warnings,
            instructions,
        })
    }
}
