//! `--to aws`: stream-optimized VMDKs, the disk containers file and the `aws` commands of
//! VM Import/Export.
//!
//! AWS's rules (VM Import/Export User Guide, <https://docs.aws.amazon.com/vm-import/latest/userguide/prerequisites.html>
//! "Image formats": OVA, ESX stream-optimized VMDK, VHD/VHDX, raw; and
//! <https://docs.aws.amazon.com/vm-import/latest/userguide/import-vm-image.html>): each disk is
//! uploaded to S3 and named in a JSON list of disk containers
//! `{"Description", "Format", "UserBucket": {"S3Bucket", "S3Key"}}`, the boot disk first, for
//! `aws ec2 import-image --disk-containers file://containers.json` (import-snapshot takes one
//! such container). UEFI guests are imported with `--boot-mode uefi`. The import needs the
//! `vmimport` service role (<https://docs.aws.amazon.com/vm-import/latest/userguide/required-permissions.html>).

use super::{boot_first, common_warnings, os_type, sh};
use crate::error::Result;
use crate::vm::{Firmware, Vm};
use crate::vmconfig::{ConfigFiles, DiskPlan, PlacedDisk, VmConfig};
use std::path::Path;

/// The bucket name containers.json holds until the script puts the user's in.
pub const BUCKET_PLACEHOLDER: &str = "YOUR-BUCKET";

/// AWS as a [`VmConfig`] target.
pub struct Aws;

/// The disk containers JSON for `files` (in boot order) in `bucket` under `prefix/`.
pub fn containers_json(vm_name: &str, files: &[&str], bucket: &str, prefix: &str) -> String {
    let list: Vec<serde_json::Value> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            serde_json::json!({
                "Description": format!("{vm_name} disk {}", i + 1),
                "Format": "vmdk",
                "UserBucket": { "S3Bucket": bucket, "S3Key": format!("{prefix}/{f}") },
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&list).expect("JSON of strings");
    text.push('\n');
    text
}

impl VmConfig for Aws {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&super::mapping::AWS)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "aws",
            "a folder: stream-optimized VMDKs, containers.json and aws-import.sh (aws s3 cp, aws ec2 import-image)",
        )]
    }

    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
        Ok(vm
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| DiskPlan {
                file_name: format!("{stem}-disk{}.vmdk", i + 1),
                format: "vmdk",
                options: format!(
                    "subformat=streamOptimized,adapter_type={}",
                    super::mapping::AWS
                        .controller(d.controller.kind, vm)
                        .and_then(|r| r.target.strip_prefix("VMDK adapter_type="))
                        .unwrap_or("lsilogic")
                ),
            })
            .collect())
    }

    fn write(
        &self,
        vm: &Vm,
        stem: &str,
        folder: &Path,
        disks: &[PlacedDisk],
    ) -> Result<ConfigFiles> {
        let mut warnings = common_warnings(vm, "EC2", "the instance type");
        let (os, unknown) = os_type(vm);
        warnings.extend(unknown);
        let table = &super::mapping::AWS;
        warnings.extend(table.boot(vm).and_then(|r| r.warning).map(str::to_string));
        warnings.extend(table.tpm(vm).and_then(|r| r.warning).map(str::to_string));
        if os == "Windows" {
            warnings.extend(table.needs(vm).and_then(|r| r.warning).map(str::to_string));
        }
        let order = boot_first(vm);
        let files: Vec<&str> = order
            .iter()
            .map(|&i| disks[i].plan.file_name.as_str())
            .collect();
        for &i in &order {
            let d = &disks[i];
            if vm.firmware == Firmware::Bios
                && vm.disks[i].boot_order == Some(0)
                && d.capacity > 2 << 40
            {
                warnings.push("the BIOS boot disk is larger than 2 TiB: VM Import takes BIOS boot volumes of at most 2 TiB (MBR); convert the guest to UEFI/GPT first".into());
            }
        }
        let json = containers_json(&vm.name, &files, BUCKET_PLACEHOLDER, stem);
        let boot_mode = if super::uefi(vm) {
            " --boot-mode uefi"
        } else {
            ""
        };
        let mut steps = Vec::new();
        for f in &files {
            steps.push(format!(
                "aws s3 cp {} \"s3://$BUCKET/{}/{}\"",
                sh(f),
                stem,
                f
            ));
        }
        steps.push(format!(
            "sed \"s/{BUCKET_PLACEHOLDER}/$BUCKET/\" containers.json > containers.bucket.json"
        ));
        steps.push(format!(
            "aws ec2 import-image --description {} --disk-containers file://containers.bucket.json{boot_mode}",
            sh(&vm.name)
        ));
        steps.push("aws ec2 describe-import-image-tasks   # until Status is completed; the AMI id is in ImageId".into());
        let (script, instructions) = super::import_script(
            "aws-import.sh",
            format!(
                "#!/bin/sh\n# Uploads the disks of '{}' to S3 and imports them as an AMI with VM Import (written by diskferry).\n# Usage: sh aws-import.sh BUCKET   (the bucket exists, the vmimport role is set up)\nset -eu\ncd \"$(dirname \"$0\")\"\nBUCKET=\"${{1:?S3 bucket}}\"\n",
                vm.name.replace('\n', " ")
            ),
            "<bucket>",
            &steps,
            folder,
        );
        Ok(ConfigFiles {
            files: vec![("containers.json".into(), json.into_bytes()), script],
            warnings,
            instructions,
        })
    }
}
