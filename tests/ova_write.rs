//! The OVA writer's layout, checked with GNU tar, sha256sum and qemu-img: members in the order
//! vSphere requires (.ovf, .mf, disks), no PAX headers, a manifest that verifies, disks
//! identical to their sources, to a file and to a pipe alike.

mod common;

use common::*;
use diskferry::convert::ConvertOptions;
use diskferry::ova::write::{PackageDisk, PackagePlan, WrittenDisk, write_ova};
use diskferry::sink::DigestAlgorithm;
use diskferry::{Image, OpenOptions, Registry};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn descriptor(disks: &[WrittenDisk]) -> diskferry::Result<String> {
    let mut s = String::from("<?xml version=\"1.0\"?>\n<Envelope>\n");
    for d in disks {
        s.push_str(&format!(
            "  <File href=\"{}\" size=\"{}\" capacity=\"{}\"/>\n",
            d.member, d.file_size, d.capacity
        ));
    }
    s.push_str("</Envelope>");
    Ok(s)
}

fn plan<'f>(
    dir: &Path,
    f: &'f dyn Fn(&[WrittenDisk]) -> diskferry::Result<String>,
) -> PackagePlan<'f> {
    let mut disks = Vec::new();
    for (i, size) in [(1, 5u64 << 20), (2, 3 << 20)] {
        let raw = dir.join(format!("d{i}.raw"));
        make_raw(&raw, size, &[(0, 300_000), (size - 70_000, 70_000)]);
        let image = Image::open(&raw, &OpenOptions::default()).unwrap();
        disks.push(PackageDisk {
            member: format!("vm-disk{i}.vmdk"),
            image: Arc::new(image),
            convert: ConvertOptions {
                target_format: Registry::builtin().find("vmdk").unwrap(),
                target_options: "subformat=streamOptimized".into(),
                ..ConvertOptions::default()
            },
        });
    }
    PackagePlan {
        descriptor_name: "vm.ovf".into(),
        manifest_name: "vm.mf".into(),
        algorithm: DigestAlgorithm::Sha256,
        disks,
        descriptor: f,
        mtime: 1_700_000_000,
    }
}

fn check_package(test: &str, dir: &Path, ova: &Path) {
    let list = Command::new("tar").arg("-tvf").arg(ova).output().unwrap();
    assert!(list.status.success());
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["vm.ovf", "vm.mf", "vm-disk1.vmdk", "vm-disk2.vmdk"]);
    let bytes = std::fs::read(ova).unwrap();
    for h in (0..bytes.len()).step_by(512) {
        // No PAX ('x', 'g') or GNU long-name ('L') headers anywhere.
        if &bytes[h + 257..h + 262] == b"ustar" {
            assert!(
                !matches!(bytes[h + 156], b'x' | b'g' | b'L'),
                "header at {h}"
            );
        }
    }
    let out = dir.join("x");
    std::fs::create_dir_all(&out).unwrap();
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(ova)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap()
            .success()
    );
    let mf = std::fs::read_to_string(out.join("vm.mf")).unwrap();
    for line in mf.lines() {
        let (name, digest) = line
            .strip_prefix("SHA256(")
            .unwrap()
            .split_once(")= ")
            .unwrap();
        assert_eq!(sha256_file(&out.join(name)), digest, "{name}");
    }
    let ovf = std::fs::read_to_string(out.join("vm.ovf")).unwrap();
    assert!(ovf.trim_end().ends_with("</Envelope>"));
    for (i, n) in [(1, "vm-disk1.vmdk"), (2, "vm-disk2.vmdk")] {
        let size = std::fs::metadata(out.join(n)).unwrap().len();
        assert!(
            ovf.contains(&format!("href=\"{n}\" size=\"{size}\"")),
            "{ovf}"
        );
        if have_qemu(test) {
            assert!(qemu_compare(
                "raw",
                &dir.join(format!("d{i}.raw")),
                "vmdk",
                &out.join(n)
            ));
            assert_eq!(qemu_img(&["check", out.join(n).to_str().unwrap()]).0, 0);
        }
    }
}

#[test]
fn an_ova_written_to_a_file_lists_verifies_and_holds_its_disks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ova = d.join("vm.ova");
    let plan = plan(d, &descriptor);
    let written = write_ova(
        &ova,
        &plan,
        diskferry::host_file::Durability::Unsafe,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(written.len(), 2);
    check_package(
        "an_ova_written_to_a_file_lists_verifies_and_holds_its_disks",
        d,
        &ova,
    );
}
