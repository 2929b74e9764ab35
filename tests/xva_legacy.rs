//! The legacy XVA layout (`<appliance version="0.1">`, each disk a folder of gzip chunk files),
//! as XenSource's products before XenServer 4.0 and rPath rBuilder wrote it and as XAPI still
//! imports it. No such file is in public test data within reach, so each XVA here is made the
//! way rPath rBuilder's exporter made them (its tests give the exact ova.xml and member list:
//! the chunks split from the raw disk, each compressed by the `gzip` program, the tar made by
//! GNU tar with ova.xml first), and each of XAPI's import rules (`xva.ml`,
//! `Stream_vdi.recv_all_zurich`) and of the format's documentation ("Legacy VM Import Format",
//! xapi-project.github.io) is one case below.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// rPath rBuilder's ova.xml for a one-disk PV appliance, as its exporter test expects it
/// (jobslave's xen_ova tests), with the disk's size as given.
fn rpath_ova_xml(size: u64) -> String {
    format!(
        r#"<?xml version="1.0" ?>
    <appliance version="0.1">
        <vm name="vm">
            <label>Foo Bar</label>
            <shortdesc>Created by rPath rBuilder</shortdesc>
            <config mem_set="0" vcpus="1"/>
            <hacks is_hvm="false" kernel_boot_cmdline="root=/dev/xvda1 ro ">
            </hacks>
<vbd device="xvda" function="root" mode="w" vdi="vdi_xvda" />
        </vm>
<vdi name="vdi_xvda" size="{size}" source="file://xvda" type="dir-gzipped-chunks" variety="system" />
</appliance>
"#
    )
}

/// An HVM VM with two disks, as the format's documentation shows its elements.
fn two_disk_ova_xml(size_a: u64, size_b: u64) -> String {
    format!(
        r#"<?xml version="1.0" ?>
<appliance version="0.1">
  <vm name="vm">
    <label> Windows 2003 </label>
    <shortdesc> a legacy export </shortdesc>
    <config mem_set="268435456" vcpus="2"/>
    <hacks is_hvm="true"/>
    <vbd device="hda" function="root" mode="w" vdi="vdi_hda"/>
    <vbd device="hdb" function="data" mode="w" vdi="vdi_hdb"/>
  </vm>
  <vdi name="vdi_hda" size="{size_a}" source="file://hda" type="dir-gzipped-chunks" variety="system"/>
  <vdi name="vdi_hdb" size="{size_b}" source="file://hdb" type="dir-gzipped-chunks" variety="user"/>
</appliance>
"#
    )
}

/// Splits the raw file `raw` into `folder` as `chunk-NNNNNNNNN` files of `chunk` bytes and
/// compresses each with the `gzip` program, as rBuilder's exporter did.
fn chunk_with_gzip(raw: &Path, folder: &Path, chunk: u64) {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(folder).unwrap();
    let size = std::fs::metadata(raw).unwrap().len();
    let mut input = std::fs::File::open(raw).unwrap();
    let mut block = vec![0u8; MIB as usize];
    let mut at = 0u64;
    for n in 0..size.div_ceil(chunk).max(1) {
        let path = folder.join(format!("chunk-{n:09}"));
        let file = std::fs::File::create(&path).unwrap();
        let len = chunk.min(size - n * chunk);
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(MIB) as usize;
            input.read_exact(&mut block[..want]).unwrap();
            if block[..want].iter().any(|&b| b != 0) {
                file.write_all_at(&block[..want], done).unwrap();
            }
            done += want as u64;
        }
        file.set_len(len).unwrap();
        at += len;
        let st = Command::new("gzip")
            .args(["-1", s(&path)])
            .status()
            .unwrap();
        assert!(st.success());
    }
    assert_eq!(at, size);
}

/// Tars `base` with GNU tar: ova.xml first, then every disk folder's chunks in name order
/// (rBuilder listed the members in a file and passed it with `-T`).
fn tar_folder(base: &Path, out: &Path) {
    let mut files = vec!["ova.xml".to_string()];
    let mut folders: Vec<String> = dir_names(base)
        .into_iter()
        .filter(|n| base.join(n).is_dir())
        .collect();
    folders.sort();
    for f in folders {
        let mut names = dir_names(&base.join(&f));
        names.sort();
        files.extend(names.into_iter().map(|n| format!("{f}/{n}")));
    }
    let list = base.join("files");
    std::fs::write(&list, files.join("\n") + "\n").unwrap();
    let st = Command::new("tar")
        .args(["-c", "-f", s(out), "-C", s(base), "-T", s(&list)])
        .status()
        .unwrap();
    assert!(st.success());
}

/// A raw disk of `size` bytes with data at `regions` (offset, length), written to `path`.
fn raw_disk(path: &Path, size: u64, regions: &[(u64, u64)]) {
    make_raw(path, size, regions);
}

/// Makes a one-disk legacy XVA as rBuilder did, from a raw disk of `size` bytes with data at
/// `regions`, chunked every `chunk` bytes; returns (the xva, the raw disk).
fn rpath_xva(dir: &Path, size: u64, regions: &[(u64, u64)], chunk: u64) -> (PathBuf, PathBuf) {
    let raw = dir.join("disk.raw");
    raw_disk(&raw, size, regions);
    let base = dir.join("ova_base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("ova.xml"), rpath_ova_xml(size)).unwrap();
    chunk_with_gzip(&raw, &base.join("xvda"), chunk);
    let xva = dir.join("vm.xva");
    tar_folder(&base, &xva);
    (xva, raw)
}

#[test]
fn an_xva_made_as_rpath_rbuilder_made_them_converts_bit_exact() {
    let d = tempfile::tempdir().unwrap();
    let size = 7 * MIB + 4096;
    let (xva, raw) = rpath_xva(
        d.path(),
        size,
        &[(0, 70_000), (3 * MIB - 100, 300), (7 * MIB, 4096)],
        2 * MIB,
    );
    let info = run_ok(&["info", s(&xva)]);
    for want in [
        "Foo Bar",
        "xvda",
        "export version 0.1",
        "gzip chunk",
        "IDE 0:0",
    ] {
        assert!(info.contains(want), "info lacks {want:?}:\n{info}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(&["info", "--output", "json", s(&xva)])).unwrap();
    assert_eq!(json["vm"]["description"], "Created by rPath rBuilder");
    assert_eq!(json["vm"]["cpus"]["count"], 1);
    assert_eq!(json["disks"][0]["virtual-size"], size);
    let text = json.to_string();
    assert!(text.contains("paravirtualized"), "{text}");
    assert!(
        text.contains("root=/dev/xvda1 ro"),
        "the kernel command line is reported: {text}"
    );
    let out = d.path().join("out.raw");
    run_ok(&["convert", "-O", "raw", s(&xva), s(&out)]);
    assert_eq!(sha256_file(&out), sha256_file(&raw));
}

#[test]
fn chunks_of_decimal_sizes_read_across_their_boundaries() {
    // The documentation's chunks hold 10^9 bytes ("1GB, not 1GiB"), so their boundaries are
    // not whole sectors. The reader assumes no chunk size at all (it concatenates what the
    // chunks inflate to, as XAPI does), so chunks of 10^6 bytes test the same boundaries in a
    // fraction of the time: data straddles both, and the disk ends inside a sector.
    let d = tempfile::tempdir().unwrap();
    let size = 2_000_345u64;
    let (xva, raw) = rpath_xva(
        d.path(),
        size,
        &[(0, 4096), (1_000_000 - 700, 1500), (2_000_000 - 3, 348)],
        1_000_000,
    );
    let out = d.path().join("out.raw");
    run_ok(&["convert", "-O", "raw", s(&xva), s(&out)]);
    same_disk_rounded_up(&out, &raw);
}

/// `out` holds `raw`'s bytes followed by zeros up to the next multiple of 512: a disk whose
/// size is not whole sectors converts as qemu-img converts it.
fn same_disk_rounded_up(out: &Path, raw: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let size = std::fs::metadata(raw).unwrap().len();
    let rounded = size.div_ceil(512) * 512;
    assert_eq!(std::fs::metadata(out).unwrap().len(), rounded);
    let mut tail = Vec::new();
    let mut f = std::fs::File::open(out).unwrap();
    f.seek(SeekFrom::Start(size)).unwrap();
    f.read_to_end(&mut tail).unwrap();
    assert!(tail.iter().all(|&b| b == 0));
    std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .unwrap()
        .set_len(size)
        .unwrap();
    assert_eq!(sha256_file(out), sha256_file(raw));
}

#[test]
fn a_disk_whose_chunks_stop_short_of_its_size_reads_zeros_after_them() {
    // XAPI writes the chunks into a new volume of the VDI's size: what they do not reach
    // stays zero.
    let d = tempfile::tempdir().unwrap();
    let stored = 3 * MIB;
    let (xva, raw) = rpath_xva(d.path(), stored, &[(0, 3 * MIB)], MIB);
    // Declare a larger VDI in the same export.
    let base = d.path().join("ova_base");
    std::fs::write(base.join("ova.xml"), rpath_ova_xml(10 * MIB)).unwrap();
    tar_folder(&base, &xva);
    let out = d.path().join("out.raw");
    run_ok(&["convert", "-O", "raw", s(&xva), s(&out)]);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 10 * MIB);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(&got[..stored as usize], &std::fs::read(&raw).unwrap()[..]);
    assert!(got[stored as usize..].iter().all(|&b| b == 0));
}

#[test]
fn two_disks_select_and_migrate_to_kvm() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("ova_base");
    std::fs::create_dir_all(&base).unwrap();
    let (size_a, size_b) = (5 * MIB, 2 * MIB + 512);
    let raw_a = d.path().join("a.raw");
    let raw_b = d.path().join("b.raw");
    raw_disk(&raw_a, size_a, &[(0, 1000), (4 * MIB, 8192)]);
    raw_disk(&raw_b, size_b, &[(2 * MIB, 512)]);
    chunk_with_gzip(&raw_a, &base.join("hda"), MIB);
    chunk_with_gzip(&raw_b, &base.join("hdb"), MIB);
    std::fs::write(base.join("ova.xml"), two_disk_ova_xml(size_a, size_b)).unwrap();
    let xva = d.path().join("vm.xva");
    tar_folder(&base, &xva);
    let out = d.path().join("b.out");
    let (code, _, err) = run(&["convert", "-O", "raw", s(&xva), s(&out)]);
    assert_ne!(code, 0);
    assert!(err.contains("2 disks") && err.contains("hdb"), "{err}");
    run_ok(&["convert", "-O", "raw", "--disk", "hdb", s(&xva), s(&out)]);
    assert_eq!(sha256_file(&out), sha256_file(&raw_b));
    run_ok(&["convert", "-O", "raw", "--disk", "0", s(&xva), s(&out)]);
    assert_eq!(sha256_file(&out), sha256_file(&raw_a));
    let kvm = d.path().join("kvm");
    run_ok(&["migrate", s(&xva), s(&kvm), "--to", "kvm", "-q"]);
    let xml = std::fs::read_to_string(
        dir_names(&kvm)
            .iter()
            .find(|n| n.ends_with(".xml"))
            .map(|n| kvm.join(n))
            .unwrap(),
    )
    .unwrap();
    assert!(xml.contains("<name>Windows 2003</name>"), "{xml}");
    assert!(
        xml.contains("<vcpu>2</vcpu>") || xml.contains(">2</vcpu>"),
        "{xml}"
    );
    assert!(xml.contains("262144") || xml.contains("268435456"), "{xml}");
    let mut qcows: Vec<String> = dir_names(&kvm)
        .into_iter()
        .filter(|n| n.ends_with(".qcow2"))
        .collect();
    qcows.sort();
    assert_eq!(qcows.len(), 2, "{qcows:?}");
    for (q, raw) in qcows.iter().zip([&raw_a, &raw_b]) {
        let back = d.path().join("back.raw");
        run_ok(&["convert", "-O", "raw", s(&kvm.join(q)), s(&back)]);
        assert_eq!(sha256_file(&back), sha256_file(raw), "{q}");
    }
}

#[test]
fn a_gzip_compressed_legacy_xva_reads_too() {
    let d = tempfile::tempdir().unwrap();
    let (xva, raw) = rpath_xva(d.path(), 3 * MIB, &[(MIB, 5000)], MIB);
    let st = Command::new("gzip").args(["-k", s(&xva)]).status().unwrap();
    assert!(st.success());
    let out = d.path().join("out.raw");
    run_ok(&["convert", "-O", "raw", &format!("{}.gz", s(&xva)), s(&out)]);
    assert_eq!(sha256_file(&out), sha256_file(&raw));
}

/// One rule of XAPI's importer each: an export that breaks it fails with one line.
#[test]
fn each_import_rule_broken_is_one_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let (_, _) = rpath_xva(d.path(), 3 * MIB, &[(0, 3 * MIB)], MIB);
    let base = d.path().join("ova_base");
    let good = rpath_ova_xml(3 * MIB);
    let out = d.path().join("out.raw");
    let xva = d.path().join("case.xva");
    // (what is changed in ova.xml, what the error says)
    let xml_cases: Vec<(String, Vec<&str>)> = vec![
        (
            good.replace("version=\"0.1\"", "version=\"0.2\""),
            vec!["version '0.2'", "0.1"],
        ),
        (
            good.replace("file://xvda", "/xvda"),
            vec!["vdi_xvda", "file://"],
        ),
        (
            good.replace("file://xvda", "file:///etc"),
            vec!["vdi_xvda", "file://"],
        ),
        (
            good.replace("file://xvda", "file://../xvda"),
            vec!["vdi_xvda", "file://"],
        ),
        (
            good.replace("dir-gzipped-chunks", "vhd"),
            vec!["type 'vhd'", "dir-gzipped-chunks"],
        ),
        (
            good.replace("vdi=\"vdi_xvda\"", "vdi=\"vdi_nothere\""),
            vec!["vdi_nothere"],
        ),
        (good.replace("mode=\"w\"", "mode=\"x\""), vec!["mode 'x'"]),
        (good.replace("<label>Foo Bar</label>", ""), vec!["<label>"]),
        (good.replace("mem_set=\"0\" ", ""), vec!["mem_set"]),
        (
            good.replace(&format!("size=\"{}\"", 3 * MIB), "size=\"lots\""),
            vec!["lots"],
        ),
        // The chunks hold 3 MiB; a VDI of 2 MiB cannot take them.
        (
            good.replace(
                &format!("size=\"{}\"", 3 * MIB),
                &format!("size=\"{}\"", 2 * MIB),
            ),
            vec!["xvda", "more than"],
        ),
    ];
    for (xml, says) in xml_cases {
        std::fs::write(base.join("ova.xml"), xml).unwrap();
        tar_folder(&base, &xva);
        fails_clearly(&["convert", "-O", "raw", s(&xva), s(&out)], &out, &says);
    }
    std::fs::write(base.join("ova.xml"), &good).unwrap();

    // Chunk names must increase in archive order.
    let list =
        "ova.xml\nxvda/chunk-000000001.gz\nxvda/chunk-000000000.gz\nxvda/chunk-000000002.gz\n";
    std::fs::write(base.join("files"), list).unwrap();
    let st = Command::new("tar")
        .args([
            "-c",
            "-f",
            s(&xva),
            "-C",
            s(&base),
            "-T",
            s(&base.join("files")),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    fails_clearly(
        &["convert", "-O", "raw", s(&xva), s(&out)],
        &out,
        &["xvda/chunk-000000000.gz", "increase"],
    );

    // A chunk that is not a whole gzip stream names the chunk.
    let chunk = base.join("xvda/chunk-000000001.gz");
    let bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
    tar_folder(&base, &xva);
    fails_clearly(
        &["convert", "-O", "raw", s(&xva), s(&out)],
        &out,
        &["chunk-000000001.gz", "gzip"],
    );

    // No chunk at all for a disk with a size.
    std::fs::remove_dir_all(base.join("xvda")).unwrap();
    tar_folder(&base, &xva);
    let (code, stdout, _) = run(&["info", s(&xva)]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("no chunks") || stdout.contains("metadata-only"),
        "{stdout}"
    );
}

#[test]
fn the_folder_form_reads_as_the_tar_does() {
    // "An XVA is a directory containing, at a minimum, a file called ova.xml": given as the
    // folder or as its ova.xml.
    let d = tempfile::tempdir().unwrap();
    let (xva, raw) = rpath_xva(d.path(), 5 * MIB, &[(0, 9000), (4 * MIB, 4096)], 2 * MIB);
    let base = d.path().join("ova_base");
    std::fs::remove_file(base.join("files")).unwrap();
    for src in [base.clone(), base.join("ova.xml")] {
        let info = run_ok(&["info", s(&src)]);
        assert!(
            info.contains("Foo Bar") && info.contains("as a folder"),
            "{info}"
        );
        let out = d.path().join("out.raw");
        run_ok(&["convert", "-O", "raw", s(&src), s(&out)]);
        assert_eq!(sha256_file(&out), sha256_file(&raw));
        std::fs::remove_file(&out).unwrap();
    }
    let (_, tar_info, _) = run(&["info", "--output", "json", s(&xva)]);
    let (_, folder_info, _) = run(&["info", "--output", "json", s(&base)]);
    let vm = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap()["vm"].clone();
    assert_eq!(vm(&tar_info), vm(&folder_info));
}

#[test]
fn a_chunk_that_is_not_a_regular_file_is_refused() {
    // A chunk file of the folder form is a name the export gives: a symlink (to a secret or
    // out of the folder) or a FIFO is never read.
    let d = tempfile::tempdir().unwrap();
    let (_, _) = rpath_xva(d.path(), 2 * MIB, &[(0, 2 * MIB)], MIB);
    let base = d.path().join("ova_base");
    let out = d.path().join("out.raw");
    let secret = d.path().join("secret.gz");
    std::fs::copy(base.join("xvda/chunk-000000001.gz"), &secret).unwrap();
    std::fs::remove_file(base.join("xvda/chunk-000000001.gz")).unwrap();
    std::os::unix::fs::symlink(&secret, base.join("xvda/chunk-000000001.gz")).unwrap();
    fails_clearly(
        &["convert", "-O", "raw", s(&base), s(&out)],
        &out,
        &["xvda/chunk-000000001.gz", "not a regular file"],
    );
    std::fs::remove_file(base.join("xvda/chunk-000000001.gz")).unwrap();
    let st = Command::new("mkfifo")
        .arg(base.join("xvda/chunk-000000001.gz"))
        .status()
        .unwrap();
    assert!(st.success());
    fails_clearly(
        &["convert", "-O", "raw", s(&base), s(&out)],
        &out,
        &["xvda/chunk-000000001.gz", "not a regular file"],
    );
}
