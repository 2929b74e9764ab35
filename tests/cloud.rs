//! Cloud targets: `--to azure` writes fixed VHDs Azure takes (`qemu-img info` says vpc, the
//! virtual size a whole number of MiB, the file that size + 512, a fixed footer), `--to aws`
//! stream-optimized VMDKs and the disk containers JSON of VM Import, `--to gcp` a gzip'd GNU
//! tar holding only `disk.raw`, a sparse member, as GNU tar and Python's tarfile read it; every disk's content is the source's
//! (`qemu-img compare`, or byte for byte out of the tar). No cloud can be reached from here:
//! each documented import rule is one test, citing its page.

mod common;

use common::*;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;

/// A qcow2 system disk of 64 MiB and a raw data disk that is not a whole number of MiB.
fn disks(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let a = d.join("system.raw");
    make_raw(&a, 64 * MIB, &[(0, 3 * MIB), (60 * MIB, MIB)]);
    let q = d.join("system.qcow2");
    run_ok(&["convert", "-O", "qcow2", s(&a), s(&q)]);
    let b = d.join("data.raw");
    make_raw(&b, 10 * MIB + 4096, &[(5 * MIB, 100_000), (10 * MIB, 4096)]);
    (a, q, b)
}

fn migrate(d: &Path, target: &str, extra: &[&str]) -> (PathBuf, String) {
    let (_, q, b) = disks(d);
    let out = d.join(target);
    let mut args = vec![
        "migrate", "--to", target, "--name", "web01", "--cpus", "2", "--memory", "2G",
    ];
    args.extend_from_slice(extra);
    args.extend([s(&q), s(&b), s(&out)]);
    let (code, stdout, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.is_empty());
    (out, err)
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}

fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

/// Azure, "Prepare a Linux/Windows VHD" (https://learn.microsoft.com/azure/virtual-machines/linux/create-upload-generic
/// "The VHD format is the only one Azure supports... fixed VHD ... The virtual size of all
/// VHDs on Azure must be aligned to 1 MB"): qemu-img reads vpc, virtual sizes whole MiB,
/// files size + 512, the footer's disk type 2 (fixed) at its end.
#[test]
fn azure_disks_are_fixed_vhds_of_whole_mib() {
    let test = "azure_disks_are_fixed_vhds_of_whole_mib";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (out, err) = migrate(d, "azure", &["--os", "ubuntu-64", "--firmware", "uefi"]);
    assert!(
        err.contains("disk 2: 10489856 bytes rounded up to 11534336 (11 MiB)"),
        "{err}"
    );
    for (name, source, fmt) in [
        ("web01-disk1.vhd", "system.qcow2", "qcow2"),
        ("web01-disk2.vhd", "data.raw", "raw"),
    ] {
        let p = out.join(name);
        let len = std::fs::metadata(&p).unwrap().len();
        let size = len - 512;
        assert_eq!(size % MIB, 0, "{name}: a whole number of MiB");
        let mut footer = [0u8; 512];
        std::fs::File::open(&p)
            .unwrap()
            .read_exact_at(&mut footer, size)
            .unwrap();
        assert_eq!(&footer[..8], b"conectix", "{name}");
        assert_eq!(be32(&footer, 60), 2, "{name}: fixed");
        assert_eq!(
            (be64(&footer, 40), be64(&footer, 48)),
            (size, size),
            "{name}"
        );
        // The footer's checksum: one's complement of the byte sum without it.
        let sum: u32 = footer
            .iter()
            .enumerate()
            .filter(|(i, _)| !(64..68).contains(i))
            .map(|(_, b)| u32::from(*b))
            .sum();
        assert_eq!(be32(&footer, 64), !sum, "{name}: checksum");
        if have_qemu(test) {
            let info: serde_json::Value =
                serde_json::from_str(&qemu_img_ok(&["info", "--output=json", "-f", "vpc", s(&p)]))
                    .unwrap();
            assert_eq!(info["format"], "vpc");
            assert_eq!(info["virtual-size"].as_u64().unwrap(), size, "{name}");
            // The grown tail reads as zeros: compare with the source is exact.
            assert!(qemu_compare(fmt, &d.join(source), "vpc", &p), "{name}");
        }
    }
}

/// Azure, "Upload a VHD to Azure ... with the Azure CLI"
/// (https://learn.microsoft.com/azure/virtual-machines/linux/disks-upload-vhd-to-managed-disk-cli):
/// `az disk create --upload-type Upload --upload-size-bytes <the VHD file's size, footer
/// included>`, `az disk grant-access --access-level Write`, `azcopy copy ... --blob-type
/// PageBlob`, `az disk revoke-access`; a Gen2 (UEFI) disk says `--hyper-v-generation V2`;
/// `az vm create --attach-os-disk`.
#[test]
fn azure_commands_upload_each_disk_at_its_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = migrate(
        dir.path(),
        "azure",
        &["--os", "ubuntu-64", "--firmware", "uefi"],
    );
    let script = std::fs::read_to_string(out.join("azure-upload.sh")).unwrap();
    for (name, disk) in [
        ("web01-disk1.vhd", "web01-disk1"),
        ("web01-disk2.vhd", "web01-disk2"),
    ] {
        let len = std::fs::metadata(out.join(name)).unwrap().len();
        let create = script
            .lines()
            .find(|l| l.starts_with("az disk create") && l.contains(&format!("-n {disk} ")))
            .unwrap();
        assert!(
            create.contains(&format!("--upload-type Upload --upload-size-bytes {len} ")),
            "{create}"
        );
        assert!(
            script.contains(&format!("azcopy copy {name} \"$SAS\" --blob-type PageBlob")),
            "{script}"
        );
        assert!(
            script.contains(&format!("az disk revoke-access -g \"$RG\" -n {disk}")),
            "{script}"
        );
    }
    assert!(
        script.contains("--os-type Linux --hyper-v-generation V2"),
        "{script}"
    );
    assert!(script.contains("az vm create -g \"$RG\" -n web01 --attach-os-disk web01-disk1 --os-type linux --attach-data-disks web01-disk2"), "{script}");
    assert!(
        err.contains("az disk create"),
        "the commands are printed too: {err}"
    );
    assert!(
        Command::new("sh")
            .arg("-n")
            .arg(out.join("azure-upload.sh"))
            .status()
            .unwrap()
            .success()
    );
}

/// AWS VM Import/Export, "Image formats" (https://docs.aws.amazon.com/vm-import/latest/userguide/prerequisites.html):
/// "Stream-optimized ESX Virtual Machine Disk (VMDK) image format"; "Import a VM as an image"
/// (https://docs.aws.amazon.com/vm-import/latest/userguide/import-vm-image.html): a JSON list
/// of disk containers with Description, Format and UserBucket {S3Bucket, S3Key}, the boot
/// disk first, given to `aws ec2 import-image --disk-containers file://...`; UEFI with
/// `--boot-mode uefi`.
#[test]
fn aws_disks_are_stream_optimized_vmdks_named_in_containers_json() {
    let test = "aws_disks_are_stream_optimized_vmdks_named_in_containers_json";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (out, _) = migrate(d, "aws", &["--firmware", "uefi"]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("containers.json")).unwrap())
            .unwrap();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (c, file) in list.iter().zip(["web01-disk1.vmdk", "web01-disk2.vmdk"]) {
        assert_eq!(c["Format"], "vmdk");
        assert_eq!(c["UserBucket"]["S3Bucket"], "YOUR-BUCKET");
        assert_eq!(c["UserBucket"]["S3Key"], format!("web01/{file}"));
        assert!(c["Description"].is_string());
        let mut head = [0u8; 4];
        std::fs::File::open(out.join(file))
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        assert_eq!(&head, b"KDMV", "{file}");
    }
    let script = std::fs::read_to_string(out.join("aws-import.sh")).unwrap();
    assert!(
        script.contains("aws s3 cp web01-disk1.vmdk \"s3://$BUCKET/web01/web01-disk1.vmdk\""),
        "{script}"
    );
    assert!(script.contains("aws ec2 import-image --description web01 --disk-containers file://containers.bucket.json --boot-mode uefi"), "{script}");
    assert!(
        Command::new("sh")
            .arg("-n")
            .arg(out.join("aws-import.sh"))
            .status()
            .unwrap()
            .success()
    );
    if have_qemu(test) {
        for (file, src, fmt) in [
            ("web01-disk1.vmdk", "system.qcow2", "qcow2"),
            ("web01-disk2.vmdk", "data.raw", "raw"),
        ] {
            let info: serde_json::Value =
                serde_json::from_str(&qemu_img_ok(&["info", "--output=json", s(&out.join(file))]))
                    .unwrap();
            assert_eq!(info["format"], "vmdk");
            assert_eq!(
                info["format-specific"]["data"]["create-type"], "streamOptimized",
                "{file}"
            );
            assert!(
                qemu_compare(fmt, &d.join(src), "vmdk", &out.join(file)),
                "{file}"
            );
        }
    }
}

/// Compute Engine, "Manually import virtual disks" (https://cloud.google.com/compute/docs/import/import-existing-image):
/// the disk is a file named `disk.raw`, alone in a tar made with `tar --format=oldgnu -Sczf`
/// (GNU format, gzip), of a whole number of GiB; `gcloud compute images create
/// --source-uri gs://...`, `--guest-os-features UEFI_COMPATIBLE` for UEFI. `-S` makes the
/// member sparse: GNU tar lists it at its full size and `tar -xSzf` extracts it sparse and
/// equal to the source; Python's tarfile reads it the same.
#[test]
fn gcp_archives_hold_only_disk_raw_in_gnu_tar_and_gunzip() {
    let test = "gcp_archives_hold_only_disk_raw_in_gnu_tar_and_gunzip";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (out, err) = migrate(d, "gcp", &["--firmware", "uefi"]);
    assert!(err.contains("rounded up to 1073741824 (1 GiB)"), "{err}");
    let names: Vec<String> = {
        let mut v: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names,
        ["gcp-import.sh", "web01-disk1.tar.gz", "web01-disk2.tar.gz"],
        "no raw file is left"
    );
    let system = d.join("system.raw");
    let data = d.join("data.raw");
    for (i, (file, source)) in [
        ("web01-disk1.tar.gz", &system),
        ("web01-disk2.tar.gz", &data),
    ]
    .into_iter()
    .enumerate()
    {
        let p = out.join(file);
        let list = Command::new("tar").args(["-tvzf", s(&p)]).output().unwrap();
        assert!(list.status.success());
        let listing = String::from_utf8_lossy(&list.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 1, "{listing}");
        assert!(
            lines[0].ends_with(" disk.raw") && lines[0].contains(" 1073741824 "),
            "{listing}"
        );
        // The header's magic is GNU's ("ustar  \0"), what --format=oldgnu writes.
        let mut gz = Command::new("gzip")
            .args(["-dc", s(&p)])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut header = [0u8; 512];
        gz.stdout.as_mut().unwrap().read_exact(&mut header).unwrap();
        drop(gz.stdout.take());
        let _ = gz.wait();
        assert_eq!(&header[257..265], b"ustar  \0", "{file}: GNU magic");
        assert_eq!(&header[..9], b"disk.raw\0");
        // An old-GNU sparse member ('S', GNU tar manual, "Old GNU Format"): the header's
        // size counts the stored data only, its realsize the whole GiB.
        assert_eq!(header[156], b'S', "{file}: a sparse member");
        let octal = |f: &[u8]| {
            let f = std::str::from_utf8(f).unwrap().trim_matches(['\0', ' ']);
            u64::from_str_radix(f, 8).unwrap()
        };
        assert_eq!(octal(&header[483..495]), 1 << 30, "{file}: realsize");
        let stored = octal(&header[124..136]);
        let data = std::fs::metadata(source).unwrap().len();
        assert!(stored < data.min(8 * MIB), "{file}: {stored} bytes stored");
        // GNU tar extracts it sparse (-S) and byte for byte the source, then zeros to the GiB.
        let gnu = d.join(format!("gnu-{i}"));
        std::fs::create_dir(&gnu).unwrap();
        let x = Command::new("tar")
            .args(["-xSzf", s(&p), "-C", s(&gnu)])
            .output()
            .unwrap();
        assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
        // Python's tarfile understands GNU sparse members too, and restores the holes.
        let py = d.join(format!("py-{i}"));
        let script = "import sys, tarfile\nt = tarfile.open(sys.argv[1])\nm = t.getmembers()\nassert [x.name for x in m] == ['disk.raw'] and m[0].issparse(), m\nt.extract(m[0], sys.argv[2])\n";
        let pyx = Command::new("python3")
            .args(["-c", script, s(&p), s(&py)])
            .output();
        let pyx = match pyx {
            Ok(o) => Some(o),
            Err(e) => {
                skip(test, &format!("python3 is missing: {e}"));
                None
            }
        };
        let mut extracted = vec![gnu.join("disk.raw")];
        if let Some(o) = pyx {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            extracted.push(py.join("disk.raw"));
        }
        for x in &extracted {
            assert_eq!(
                std::fs::metadata(x).unwrap().len(),
                1 << 30,
                "{}",
                x.display()
            );
            assert!(
                disk_usage(x) <= data.min(8 * MIB) + MIB,
                "{}: sparse ({} bytes used)",
                x.display(),
                disk_usage(x)
            );
            if have_qemu(test) {
                // The tail past the source reads as zeros: compare without --strict says so.
                assert!(qemu_compare("raw", source, "raw", x), "{}", x.display());
            }
        }
    }
    let script = std::fs::read_to_string(out.join("gcp-import.sh")).unwrap();
    assert!(script.contains("gcloud compute images create web01-disk1 --source-uri \"gs://$BUCKET/web01-disk1.tar.gz\" --guest-os-features UEFI_COMPATIBLE"), "{script}");
    assert!(
        script.contains(
            "gcloud compute instances create web01 --image web01-disk1 --disk name=web01-disk2"
        ),
        "{script}"
    );
    assert!(
        Command::new("sh")
            .arg("-n")
            .arg(out.join("gcp-import.sh"))
            .status()
            .unwrap()
            .success()
    );
}

/// The clouds choose the VM's size and network: what the VM had of them is said, not lost.
#[test]
fn what_a_cloud_does_not_take_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let (_, err) = migrate(
        dir.path(),
        "aws",
        &[
            "--nic",
            "vmxnet3,mac=00:50:56:01:02:03",
            "--os",
            "windows2019srv-64",
        ],
    );
    assert!(err.contains("at least 2 vCPUs and 2048 MiB"), "{err}");
    assert!(err.contains("1 NIC(s) not carried"), "{err}");
    assert!(err.contains("--license-type"), "{err}");
}
