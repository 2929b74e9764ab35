//! `--to azure`: fixed VHDs and the `az` commands that upload them as managed disks.
//!
//! Azure's rules (<https://learn.microsoft.com/azure/virtual-machines/linux/create-upload-generic>,
//! "General Linux installation notes", and .../windows/prepare-for-upload-vhd-image): the disk
//! is a fixed VHD (no VHDX, no dynamic VHD), its virtual size a whole number of MiB; the
//! upload (<https://learn.microsoft.com/azure/virtual-machines/linux/disks-upload-vhd-to-managed-disk-cli>)
//! makes an empty disk of the file's exact size (`--upload-size-bytes`, the VHD with its
//! 512-byte footer), copies it with `azcopy --blob-type PageBlob` into a write SAS and revokes
//! the access. UEFI guests are Generation 2 (`--hyper-v-generation V2`).
//!
//! Our VHD writer stores the exact size rounded to whole sectors; a disk that is not a whole
//! number of MiB is grown here, once written: the footer is dropped, the file extended with a
//! hole and a new fixed footer written at the new end (a fixed VHD is the disk then a
//! footer, so nothing else moves).

use super::{boot_first, common_warnings, os_type, resource_name, sh, uefi};
use crate::error::{Error, Result};
use crate::formats::vhd::footer::{DiskType, NewFooter};
use crate::vm::Vm;
use crate::vmconfig::{ConfigFiles, DiskPlan, PlacedDisk, VmConfig};
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// Azure as a [`VmConfig`] target.
pub struct Azure;

/// Grows the fixed VHD at `path` (disk of `size` bytes, rounded to sectors, then the footer)
/// to `new_size` bytes of disk, keeping the footer's UUID, time stamp and creator.
pub fn grow_fixed_vhd(path: &Path, size: u64, new_size: u64) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("cannot open", e).with_path(path))?;
    let old_disk = size.div_ceil(512) * 512;
    let mut old = [0u8; 512];
    file.read_exact_at(&mut old, old_disk)
        .map_err(|e| Error::io("cannot read the footer", e).with_path(path))?;
    if &old[..8] != b"conectix" {
        return Err(
            Error::invalid(format!("internal error: no VHD footer at {old_disk}")).with_path(path),
        );
    }
    let be32 = |o: usize| u32::from_be_bytes(old[o..o + 4].try_into().expect("4 bytes"));
    let footer = NewFooter {
        disk_type: DiskType::Fixed,
        size: new_size,
        timestamp: be32(24),
        uuid: old[68..84].try_into().expect("16 bytes"),
        creator_app: old[28..32].try_into().expect("4 bytes"),
        creator_version: be32(32),
    }
    .to_bytes();
    // Drop the old footer (zeros from here on are holes), then write the new one at the end.
    file.set_len(old_disk)
        .and_then(|()| file.set_len(new_size + 512))
        .and_then(|()| file.write_all_at(&footer, new_size))
        .map_err(|e| Error::io("cannot grow the VHD", e).with_path(path))
}

impl VmConfig for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&super::mapping::AZURE)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "azure",
            "a folder: fixed VHDs of whole MiB and azure-upload.sh (az disk create, azcopy, az vm create)",
        )]
    }

    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
        Ok((1..=vm.disks.len())
            .map(|i| DiskPlan {
                file_name: format!("{stem}-disk{i}.vhd"),
                format: "vhd",
                options: "subformat=fixed".into(),
            })
            .collect())
    }

    fn write(
        &self,
        vm: &Vm,
        _stem: &str,
        folder: &Path,
        disks: &[PlacedDisk],
    ) -> Result<ConfigFiles> {
        let mut warnings = common_warnings(vm, "Azure", "az vm create --size");
        let (os, unknown) = os_type(vm);
        warnings.extend(unknown);
        let mut file_sizes = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            let size = d.capacity;
            let whole = size.div_ceil(MIB) * MIB;
            if whole != size {
                grow_fixed_vhd(&d.staged, size, whole)?;
                warnings.push(format!(
                    "disk {}: {size} bytes rounded up to {whole} ({} MiB): Azure takes whole MiB; the guest sees a little more disk",
                    i + 1,
                    whole / MIB
                ));
            }
            file_sizes.push(whole + 512);
        }
        // The commands say Linux for an unknown guest too: it gets the Linux row's warning.
        if os == "Linux" {
            let row = super::mapping::AZURE.needs_for(Some(crate::vm::OsFamily::Linux));
            warnings.extend(row.and_then(|r| r.warning).map(str::to_string));
        }
        warnings.extend(
            super::mapping::security_warning(&super::mapping::AZURE, vm).map(str::to_string),
        );
        let vm_name = resource_name(&vm.name);
        let gen2 = if uefi(vm) {
            " --hyper-v-generation V2"
        } else {
            ""
        };
        let order = boot_first(vm);
        let mut steps = Vec::new();
        for (pos, &i) in order.iter().enumerate() {
            let d = &disks[i];
            let disk = resource_name(d.plan.file_name.trim_end_matches(".vhd"));
            let os_flag = if pos == 0 {
                format!(" --os-type {os}{gen2}")
            } else {
                String::new()
            };
            steps.push(format!(
                "az disk create -g \"$RG\" -l \"$LOCATION\" -n {disk} --upload-type Upload --upload-size-bytes {} --sku standard_lrs{os_flag}",
                file_sizes[i]
            ));
            steps.push(format!(
                "SAS=$(az disk grant-access -g \"$RG\" -n {disk} --access-level Write --duration-in-seconds 86400 --query accessSAS -o tsv)"
            ));
            steps.push(format!(
                "azcopy copy {} \"$SAS\" --blob-type PageBlob",
                sh(&d.plan.file_name)
            ));
            steps.push(format!("az disk revoke-access -g \"$RG\" -n {disk}"));
        }
        let names: Vec<String> = order
            .iter()
            .map(|&i| resource_name(disks[i].plan.file_name.trim_end_matches(".vhd")))
            .collect();
        if let Some((os_disk, data)) = names.split_first() {
            let mut create = format!(
                "az vm create -g \"$RG\" -n {vm_name} --attach-os-disk {os_disk} --os-type {}",
                os.to_ascii_lowercase()
            );
            if !data.is_empty() {
                let _ = write!(create, " --attach-data-disks {}", data.join(" "));
            }
            steps.push(create);
        }
        let (script, instructions) = super::import_script(
            "azure-upload.sh",
            format!(
                "#!/bin/sh\n# Uploads the disks of '{}' to Azure as managed disks and creates the VM (written by diskferry).\n# Usage: sh azure-upload.sh RESOURCE_GROUP LOCATION   (az login first; azcopy on the PATH)\nset -eu\ncd \"$(dirname \"$0\")\"\nRG=\"${{1:?resource group}}\"\nLOCATION=\"${{2:?location, e.g. westeurope}}\"\n",
                vm.name.replace('\n', " ")
            ),
            "<resource-group> <location>",
            &steps,
            folder,
        );
        Ok(ConfigFiles {
            files: vec![script],
            warnings,
            instructions,
        })
    }
}
