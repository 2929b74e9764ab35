//! Real scripts' qemu-img invocations (issue 15), each run with qemu-img and with diskferry
//! linked as `qemu-img`, on copies of the same small inputs, comparing what the script reads:
//! the exit code, standard output (JSON parsed, human exact, `-p` progress records) and the
//! images written (`qemu-img compare`). Each invocation cites the function that runs it.
//!
//! Covered elsewhere, and counted toward the issue's 25 (their citations are beside them):
//! tests/qemu_compat.rs — nova `create_cow_image`, cinder `get_qemu_img_version`, Proxmox
//! `convert -p` parsing, CDI/oslo.utils `info --output=json`, nova `--image-opts` convert;
//! tests/ops.rs — vdsm `commit -d -t none`, nova `resize`, vdsm/nova `rebase`, glance/cinder
//! `measure`, coreos-assembler/osbuild `dd`.
//!
//! oslo.utils' own parser (QemuImgInfo) reading both tools' `info` is in
//! [`oslo_utils_reads_the_same_info_for_every_format`].

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// How `info` of an image each tool wrote itself compares: all but the blocks the file
/// system gave it and its file's length (`children`): how a writer lays out its metadata is
/// its own business (diskferry's new qcow2 overlay is one cluster longer than qemu-img's).
const WRITTEN: Stdout = Stdout::JsonExcept(&["actual-size", "children"]);

/// The arguments of a command line as the tool forms it, split at spaces (no argument of
/// these invocations holds one; vdsm's `json:` name, which does, is written out as a list).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A [`Twin`] of the inputs `setup` makes, in a new temporary folder (returned with it, as
/// the folder lives as long as it does), or None, with a skip line, without qemu-img.
fn twin(test: &str, setup: impl FnOnce(&Path)) -> Option<(tempfile::TempDir, Twin)> {
    if !have_qemu(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Twin::new(dir.path(), setup);
    Some((dir, t))
}

/// Runs the command line `line` in both folders (standard output compared as `how`), then
/// asserts that the image `name` it writes, of format `fmt`, reads the same in both.
fn writes(t: &Twin, cite: &str, line: &str, how: Stdout, fmt: &str, name: &str) {
    t.same(cite, &words(line), how);
    t.same_content(cite, fmt, name);
}

/// Runs qemu-img's command line `line` (split at spaces) in the folder `dir`, where the
/// inputs are made, failing the test if it fails.
fn qemu_img_in(dir: &Path, line: &str) {
    let out = Command::new("qemu-img")
        .args(words(line))
        .current_dir(dir)
        .output()
        .expect("qemu-img runs");
    assert!(out.status.success(), "qemu-img {line}: {out:?}");
}

/// A qcow2 with data in two places.
fn qcow2_with_data(dir: &Path, name: &str) {
    qemu_img_in(dir, &format!("create -q -f qcow2 {name} 16M"));
    qemu_io(
        "qcow2",
        &dir.join(name),
        &[
            "write -P 0x11 0 1M",
            "write -P 0x22 8M 64k",
            "write -z 12M 64k",
        ],
    );
}

/// A raw base and a qcow2 overlay over it (stored backing name relative), as the snapshot
/// chains of vdsm and Proxmox are.
fn raw_chain(dir: &Path) {
    make_raw(
        &dir.join("base.raw"),
        16 << 20,
        &[(0, 2 << 20), (9 << 20, 1 << 20)],
    );
    qemu_img_in(dir, "create -q -f qcow2 -b base.raw -F raw top.qcow2");
    qemu_io(
        "qcow2",
        &dir.join("top.qcow2"),
        // Whole clusters: qemu maps the zero tail of a cluster written in part over a zero
        // backing range by asking the file system, as diskferry does not (see the report).
        &[
            "write -P 0x33 1M 2M",
            "write -z 9M 512k",
            "write -P 0x44 14M 128k",
        ],
    );
}

#[test]
fn kubevirt_cdi_invocations_match_qemu_img() {
    let Some((_dir, t)) = twin("kubevirt_cdi_invocations_match_qemu_img", |src| {
        qcow2_with_data(src, "disk.qcow2");
        make_raw(&src.join("disk.raw"), 8 << 20, &[(4096, 70000)]);
    }) else {
        return;
    };
    const CDI: &str = "kubevirt/containerized-data-importer pkg/image/qemu.go";
    // Info: `qemu-img info --output=json URL`, unmarshalled into ImgInfo (format,
    // backing-filename, virtual-size, actual-size) and checked by checkIfURLIsValid.
    t.same(
        &format!("{CDI} Info"),
        &words("info --output=json disk.qcow2"),
        Stdout::Json,
    );
    // convertToRaw: `convert -t none -p -O raw SRC DEST`, progress parsed by
    // reportProgress's `\((\d?\d\.\d\d)\/100%\)`.
    writes(
        &t,
        &format!("{CDI} convertToRaw"),
        "convert -t none -p -O raw disk.qcow2 out.raw",
        Stdout::Progress,
        "raw",
        "out.raw",
    );
    // The same with preallocation, the option appended after the file names.
    let cite = format!("{CDI} convertToRaw (preallocate)");
    writes(
        &t,
        &cite,
        "convert -t none -p -O raw disk.qcow2 falloc.raw -o preallocation=falloc",
        Stdout::Progress,
        "raw",
        "falloc.raw",
    );
    assert_eq!(
        disk_usage(&t.d.join("falloc.raw")),
        disk_usage(&t.q.join("falloc.raw")),
        "{cite}: preallocated the same"
    );
    // Resize: `resize -f raw IMAGE SIZE` (a byte count).
    writes(
        &t,
        &format!("{CDI} Resize"),
        "resize -f raw disk.raw 12582912",
        Stdout::Exact,
        "raw",
        "disk.raw",
    );
    // CreateBlankImage: `create -f raw DEST SIZE -o preallocation=falloc`.
    writes(
        &t,
        &format!("{CDI} CreateBlankImage"),
        "create -f raw blank.raw 8388608 -o preallocation=falloc",
        Stdout::Exact,
        "raw",
        "blank.raw",
    );
}

#[test]
fn ovirt_vdsm_invocations_match_qemu_img() {
    let Some((_dir, t)) = twin("ovirt_vdsm_invocations_match_qemu_img", |src| {
        qcow2_with_data(src, "disk.qcow2");
        raw_chain(src);
        make_raw(&src.join("new.raw"), 16 << 20, &[(0, 2 << 20)]);
        qemu_img_in(src, "create -q -f qcow2 -o compat=0.10 old.qcow2 8M");
        qemu_io("qcow2", &src.join("old.qcow2"), &["write -P 0x55 64k 128k"]);
    }) else {
        return;
    };
    const VDSM: &str = "oVirt/vdsm lib/vdsm/storage/qemuimg.py";
    // info(): `info --output json -f FMT -U IMAGE`; reads format, virtual-size, actual-size,
    // cluster-size, backing-filename and format-specific.data.compat.
    t.same(
        &format!("{VDSM} info"),
        &words("info --output json -f qcow2 -U disk.qcow2"),
        Stdout::Json,
    );
    // check(): `check --output json -f FMT IMAGE`; reads image-end-offset and leaks.
    t.same(
        &format!("{VDSM} check"),
        &words("check --output json -f qcow2 disk.qcow2"),
        Stdout::Json,
    );
    // map(): `map --output json IMAGE`, run in the image's folder.
    t.same(
        &format!("{VDSM} map"),
        &words("map --output json top.qcow2"),
        Stdout::Json,
    );
    // measure(): `measure --output json -O FMT json:{"file": {...}, "driver": FMT}`.
    t.same(
        &format!("{VDSM} measure"),
        &[
            "measure",
            "--output",
            "json",
            "-O",
            "qcow2",
            r#"json:{"file": {"driver": "file", "filename": "disk.qcow2"}, "driver": "qcow2"}"#,
        ],
        Stdout::Json,
    );
    // create(): `create -f qcow2 -o compat=1.1 -b BACKING -F FMT IMAGE` (a snapshot volume,
    // no size), run in the image's folder.
    let cite = format!("{VDSM} create");
    writes(
        &t,
        &cite,
        "create -f qcow2 -o compat=1.1 -b base.raw -F raw snap.qcow2",
        Stdout::Exact,
        "qcow2",
        "snap.qcow2",
    );
    t.same(
        &cite,
        &words("info --output json -f qcow2 -U snap.qcow2"),
        WRITTEN,
    );
    // convert(): `convert -p -t none -T none -f FMT -O qcow2 -o compat=1.1 SRC DST`.
    writes(
        &t,
        &format!("{VDSM} convert"),
        "convert -p -t none -T none -f qcow2 -O qcow2 -o compat=1.1 disk.qcow2 conv.qcow2",
        Stdout::Progress,
        "qcow2",
        "conv.qcow2",
    );
    // compare(): `compare -p -f FMT -F FMT [-s] IMG1 IMG2`: 0 when equal, 1 and the first
    // differing offset when not.
    t.same(
        &format!("{VDSM} compare"),
        &words("compare -p -f qcow2 -F qcow2 disk.qcow2 conv.qcow2"),
        Stdout::Progress,
    );
    t.same(
        &format!("{VDSM} compare -s"),
        &words("compare -f qcow2 -F raw -s top.qcow2 base.raw"),
        Stdout::Exact,
    );
    // amend(): `amend -o compat=1.1 IMAGE`.
    let cite = format!("{VDSM} amend");
    writes(
        &t,
        &cite,
        "amend -o compat=1.1 old.qcow2",
        Stdout::Exact,
        "qcow2",
        "old.qcow2",
    );
    t.same(&cite, &words("info --output json old.qcow2"), WRITTEN);
    // resize(): `resize -f FMT IMAGE SIZE`.
    writes(
        &t,
        &format!("{VDSM} resize"),
        "resize -f qcow2 disk.qcow2 33554432",
        Stdout::Exact,
        "qcow2",
        "disk.qcow2",
    );
    // rebase(): `rebase -t none -T none -u -f FMT -F FMT -b BACKING IMAGE`.
    let cite = format!("{VDSM} rebase -u");
    t.same(
        &cite,
        &words("rebase -t none -T none -u -f qcow2 -F raw -b new.raw snap.qcow2"),
        Stdout::Exact,
    );
    t.same(&cite, &words("info --output json snap.qcow2"), WRITTEN);
    // commit(): `commit -p -t none -d -f FMT TOP` (no base given), in the image's folder.
    let cite = format!("{VDSM} commit");
    t.same(
        &cite,
        &words("commit -p -t none -d -f qcow2 top.qcow2"),
        Stdout::Progress,
    );
    t.same_content(&cite, "raw", "base.raw");
}

#[test]
fn proxmox_invocations_match_qemu_img() {
    let Some((_dir, t)) = twin("proxmox_invocations_match_qemu_img", |src| {
        qcow2_with_data(src, "vm-100-disk-0.qcow2");
        raw_chain(src);
        make_raw(&src.join("vm-101-disk-0.raw"), 16 << 20, &[]);
        make_raw(&src.join("vm-102-disk-0.raw"), 16 << 20, &[]);
        make_raw(&src.join("vm-103-disk-0.raw"), 4 << 20, &[(0, 65536)]);
    }) else {
        return;
    };
    const CONVERT: &str = "proxmox/qemu-server src/PVE/QemuServer/QemuImage.pm convert";
    const COMMON: &str = "proxmox/pve-storage src/PVE/Storage/Common.pm";
    // `convert -p -n -f FMT -O FMT SRC DST` into an allocated volume; the parser reads
    // `\((\S+)\/100\%\)`.
    writes(
        &t,
        CONVERT,
        "convert -p -n -f qcow2 -O raw vm-100-disk-0.qcow2 vm-101-disk-0.raw",
        Stdout::Progress,
        "raw",
        "vm-101-disk-0.raw",
    );
    // With is-zero-initialized: the target as `zeroinit:PATH`. Only Proxmox's own build of
    // qemu has that protocol; qemu-img 10 refuses it after its 0% record, and so do we
    // (exit 1, the same output), rather than write somewhere unexpected.
    writes(
        &t,
        &format!("{CONVERT} (is-zero-initialized)"),
        "convert -p -n -f qcow2 -O raw vm-100-disk-0.qcow2 zeroinit:vm-102-disk-0.raw",
        Stdout::Exact,
        "raw",
        "vm-102-disk-0.raw",
    );
    // qemu_img_create: `create -o preallocation=P -f FMT PATH SIZEK`.
    let cite = format!("{COMMON} qemu_img_create");
    writes(
        &t,
        &cite,
        "create -o preallocation=metadata -f qcow2 vm-104-disk-0.qcow2 4096K",
        Stdout::Exact,
        "qcow2",
        "vm-104-disk-0.qcow2",
    );
    t.same(
        &cite,
        &words("info --output=json vm-104-disk-0.qcow2"),
        WRITTEN,
    );
    // qemu_img_create_qcow2_backed: `create -F FMT -b BACKING -f qcow2 PATH -o
    // extended_l2=on,cluster_size=128k`.
    writes(
        &t,
        &format!("{COMMON} qemu_img_create_qcow2_backed"),
        "create -F raw -b base.raw -f qcow2 snap-vm-105.qcow2 -o extended_l2=on,cluster_size=128k",
        Stdout::Exact,
        "qcow2",
        "snap-vm-105.qcow2",
    );
    // qemu_img_info: `info --output=json PATH -f FMT --backing-chain`.
    t.same(
        &format!("{COMMON} qemu_img_info"),
        &words("info --output=json top.qcow2 -f qcow2 --backing-chain"),
        Stdout::Json,
    );
    // qemu_img_measure: `measure --output=json --size SIZEK -O FMT`.
    t.same(
        &format!("{COMMON} qemu_img_measure"),
        &words("measure --output=json --size 4096K -O qcow2"),
        Stdout::Json,
    );
    // qemu_img_resize: `resize --preallocation=P -f FMT PATH SIZE`.
    let cite = format!("{COMMON} qemu_img_resize");
    writes(
        &t,
        &cite,
        "resize --preallocation=falloc -f raw vm-103-disk-0.raw 8M",
        Stdout::Exact,
        "raw",
        "vm-103-disk-0.raw",
    );
    assert_eq!(
        disk_usage(&t.d.join("vm-103-disk-0.raw")),
        disk_usage(&t.q.join("vm-103-disk-0.raw")),
        "{cite}: preallocated the same"
    );
}

#[test]
fn coreos_assembler_invocations_match_qemu_img() {
    let Some((_dir, t)) = twin("coreos_assembler_invocations_match_qemu_img", |src| {
        qcow2_with_data(src, "fcos.qcow2")
    }) else {
        return;
    };
    const COSA: &str =
        "coreos/coreos-assembler src/cosalib/qemuvariants.py QemuVariantImage.mutate_image";
    // The aws and vmware variants: `convert -f qcow2 -O vmdk SRC -o
    // adapter_type=lsilogic,subformat=streamOptimized,compat6 DST`.
    writes(
        &t,
        &format!("{COSA} (aws, vmware)"),
        "convert -f qcow2 -O vmdk fcos.qcow2 -o adapter_type=lsilogic,subformat=streamOptimized,compat6 fcos.vmdk",
        Stdout::Exact,
        "vmdk",
        "fcos.vmdk",
    );
    // The azure variant: `convert -f qcow2 -O vpc SRC DST`, with qemu-img's geometry rounding.
    writes(
        &t,
        &format!("{COSA} (azure)"),
        "convert -f qcow2 -O vpc fcos.qcow2 fcos.vhd",
        Stdout::Exact,
        "vpc",
        "fcos.vhd",
    );
}

/// The oslo.utils venv tests/qemu_support/install-peers makes, or None (with a skip line).
fn oslo_python(test: &str) -> Option<std::path::PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/oslo-venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import oslo_utils.imageutils"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(py)
    } else {
        skip(
            test,
            "oslo.utils is not installed (run tests/qemu_support/install-peers)",
        );
        None
    }
}

/// What oslo.utils' QemuImgInfo makes of an `info` output in `format` (json or human): its
/// attributes as JSON.
fn oslo_reads(py: &Path, output: &str, format: &str) -> serde_json::Value {
    let script = r#"
import json, sys
from oslo_utils.imageutils import QemuImgInfo
i = QemuImgInfo(sys.stdin.read(), format=sys.argv[1])
print(json.dumps({k: getattr(i, k, None) for k in ("image", "file_format", "virtual_size",
    "disk_size", "cluster_size", "backing_file", "backing_file_format", "encrypted",
    "snapshots", "format_specific")}))
"#;
    use std::io::Write;
    let mut child = Command::new(py)
        .args(["-c", script, format])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(output.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "QemuImgInfo({format}) failed: {}\n{output}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn oslo_utils_reads_the_same_info_for_every_format() {
    let test = "oslo_utils_reads_the_same_info_for_every_format";
    if !have_qemu(test) {
        return;
    }
    let Some(py) = oslo_python(test) else {
        return;
    };
    let images: &[(&str, &[&str])] = &[
        ("disk.raw", &[]),
        ("disk.vhd", &["-f", "vpc"]),
        ("sparse.vmdk", &["-f", "vmdk"]),
        (
            "flat.vmdk",
            &["-f", "vmdk", "-o", "subformat=monolithicFlat"],
        ),
        (
            "stream.vmdk",
            &["-f", "vmdk", "-o", "subformat=streamOptimized"],
        ),
        ("snaps.qcow2", &["-f", "qcow2"]),
        ("top.qcow2", &[]),
        ("disk.qcow", &["-f", "qcow"]),
        ("disk.vhdx", &["-f", "vhdx"]),
        ("disk.vdi", &["-f", "vdi"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let t = Twin::new(dir.path(), |src| {
        let raw = src.join("disk.raw");
        make_raw(&raw, 8 << 20, &[(0, 100_000), (5 << 20, 65536)]);
        raw_chain(src);
        for (name, opts) in images {
            if ["disk.raw", "top.qcow2"].contains(name) {
                continue;
            }
            qemu_img_in(
                src,
                &format!("convert -O {} disk.raw {name}", opts[1..].join(" ")),
            );
        }
        let snaps = src.join("snaps.qcow2");
        qemu_img_ok(&["snapshot", "-c", "first", snaps.to_str().unwrap()]);
        qemu_io("qcow2", &snaps, &["write -P 0x66 0 64k"]);
        qemu_img_ok(&["snapshot", "-c", "second", snaps.to_str().unwrap()]);
    });
    for (name, _) in images {
        for (output, oslo_format) in [("--output=json", "json"), ("--output=human", "human")] {
            let (q, d) = t.same(
                "oslo.utils imageutils.QemuImgInfo",
                &["info", output, name],
                if oslo_format == "json" {
                    Stdout::Json
                } else {
                    Stdout::HumanThenExtra
                },
            );
            let theirs = oslo_reads(&py, &q.1, oslo_format);
            let ours = oslo_reads(&py, &d.1, oslo_format);
            assert_eq!(ours, theirs, "{name} {output}");
        }
    }
}
