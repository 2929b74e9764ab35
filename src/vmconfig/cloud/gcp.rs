//! `--to gcp`: each disk as `disk.raw` in a gzip'd GNU tar, and the `gcloud` commands that
//! make images of them.
//!
//! Compute Engine's rules (<https://cloud.google.com/compute/docs/import/import-existing-image>,
//! "Manually importing virtual disks"): the archive holds exactly one file, named
//! `disk.raw`, the raw disk; it is a tar in GNU's format (the page makes it with
//! `tar --format=oldgnu -Sczf`) compressed with gzip; the disk is a whole number of GiB
//! (Compute Engine disks are). `gcloud compute images create --source-uri gs://...`
//! registers it; `--guest-os-features UEFI_COMPATIBLE` marks a UEFI guest.
//!
//! How the files are made: the engine writes each disk as raw into the staged folder under
//! its final name (`<stem>-disk1.tar.gz`), leaving holes where the disk reads as zeros;
//! [`VmConfig::write`] then grows it to whole GiB (a hole), writes the tar.gz beside it from
//! it, and renames the tar.gz over the raw file. So the folder lists exactly the files it
//! ends with and no trait change was needed. The member is an old-GNU sparse file (type `S`,
//! GNU tar manual, "Old GNU Format",
//! <https://www.gnu.org/software/tar/manual/html_node/Old-GNU-Format.html>; see
//! [`super::sparse_tar`]), as `tar -S` makes it: its map comes from the raw file's holes and
//! only the data is read and gzipped, so a mostly empty 100 GiB disk costs what its data
//! costs, not minutes of gzip over zeros.

use super::sparse_tar::write_sparse_archive;
use super::{boot_first, common_warnings, resource_name, uefi};
use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::vm::Vm;
use crate::vmconfig::{ConfigFiles, DiskPlan, PlacedDisk, VmConfig};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

const GIB: u64 = 1 << 30;

/// Google Compute Engine as a [`VmConfig`] target.
pub struct Gcp;

/// Replaces the raw disk at `path` by a gzip'd GNU tar holding it as the sparse member
/// `disk.raw`: written beside it under another name, then renamed over it, so the folder
/// never holds half an archive under the final name.
pub fn raw_to_tar_gz(path: &Path, mtime: u64) -> Result<()> {
    let raw = HostFile::open(path)?;
    let temp = path.with_extension("partial");
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| Error::io("cannot create the archive", e).with_path(&temp))?;
    let result = (|| -> Result<()> {
        let mut gz = flate2::write::GzEncoder::new(
            std::io::BufWriter::with_capacity(1 << 20, out),
            flate2::Compression::default(),
        );
        write_sparse_archive(&mut gz, &raw, "disk.raw", mtime)?;
        let write = |e| Error::io("cannot write the archive", e).with_path(&temp);
        gz.finish().map_err(write)?.flush().map_err(write)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, path)
        .map_err(|e| Error::io("cannot rename the archive into place", e).with_path(path))
}

impl VmConfig for Gcp {
    fn name(&self) -> &'static str {
        "gcp"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&super::mapping::GCP)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "gcp",
            "a folder: each disk as disk.raw in a .tar.gz and gcp-import.sh (gcloud compute images create)",
        )]
    }

    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
        // Raw bytes under the archive's name, replaced by the archive in write().
        Ok((1..=vm.disks.len())
            .map(|i| DiskPlan {
                file_name: format!("{stem}-disk{i}.tar.gz"),
                format: "raw",
                options: String::new(),
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
        let mut warnings = common_warnings(vm, "Compute Engine", "--machine-type");
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for (i, d) in disks.iter().enumerate() {
            let whole = d.capacity.div_ceil(GIB).max(1) * GIB;
            if whole != d.capacity {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&d.staged)
                    .and_then(|f| f.set_len(whole))
                    .map_err(|e| Error::io("cannot grow the disk", e).with_path(&d.staged))?;
                warnings.push(format!(
                    "disk {}: {} bytes rounded up to {whole} ({} GiB): Compute Engine disks are whole GiB",
                    i + 1,
                    d.capacity,
                    whole / GIB
                ));
            }
            raw_to_tar_gz(&d.staged, mtime)?;
        }
        let table = &super::mapping::GCP;
        warnings.extend(table.needs(vm).and_then(|r| r.warning).map(str::to_string));
        warnings.extend(super::mapping::security_warning(table, vm).map(str::to_string));
        let order = boot_first(vm);
        let features = if uefi(vm) {
            " --guest-os-features UEFI_COMPATIBLE"
        } else {
            ""
        };
        let vm_name = resource_name(&vm.name);
        let mut steps = Vec::new();
        let mut images = Vec::new();
        for (pos, &i) in order.iter().enumerate() {
            let f = &disks[i].plan.file_name;
            let image = resource_name(f.trim_end_matches(".tar.gz"));
            steps.push(format!("gcloud storage cp {f} \"gs://$BUCKET/{f}\""));
            steps.push(format!(
                "gcloud compute images create {image} --source-uri \"gs://$BUCKET/{f}\"{}",
                if pos == 0 { features } else { "" }
            ));
            images.push(image);
        }
        if let Some((boot, data)) = images.split_first() {
            for d in data {
                steps.push(format!("gcloud compute disks create {d} --image {d}"));
            }
            let mut create = format!("gcloud compute instances create {vm_name} --image {boot}");
            if !data.is_empty() {
                let _ = write!(
                    create,
                    " {}",
                    data.iter()
                        .map(|d| format!("--disk name={d}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            steps.push(create);
        }
        let (script, instructions) = super::import_script(
            "gcp-import.sh",
            format!(
                "#!/bin/sh\n# Uploads the disks of '{}' to Cloud Storage and makes Compute Engine images of them (written by diskferry).\n# Usage: sh gcp-import.sh BUCKET   (gcloud auth login and a default project and zone first)\nset -eu\ncd \"$(dirname \"$0\")\"\nBUCKET=\"${{1:?Cloud Storage bucket}}\"\n",
                vm.name.replace('\n', " ")
            ),
            "<bucket>",
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
