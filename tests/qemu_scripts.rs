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

/// A qcow2 with data in two places.
fn qcow2_with_data(dir: &Path, name: &str) {
    let img = dir.join(name);
    qemu_img_ok(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "16M"]);
    qemu_io(
        "qcow2",
        &img,
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
    let top = dir.join("top.qcow2");
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        top.to_str().unwrap(),
    ]);
    qemu_io(
        "qcow2",
        &top,
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
    if !have_qemu("kubevirt_cdi_invocations_match_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Twin::new(dir.path(), |src| {
        qcow2_with_data(src, "disk.qcow2");
        make_raw(&src.join("disk.raw"), 8 << 20, &[(4096, 70000)]);
    });
    const CDI: &str = "kubevirt/containerized-data-importer pkg/image/qemu.go";
    // Info: `qemu-img info --output=json URL`, unmarshalled into ImgInfo (format,
    // backing-filename, virtual-size, actual-size) and checked by checkIfURLIsValid.
    t.same(
        &format!("{CDI} Info"),
        &["info", "--output=json", "disk.qcow2"],
        Stdout::Json,
    );
    // convertToRaw: `convert -t none -p -O raw SRC DEST`, progress parsed by
    // reportProgress's `\((\d?\d\.\d\d)\/100%\)`.
    let cite = format!("{CDI} convertToRaw");
    t.same(
        &cite,
        &[
            "convert",
            "-t",
            "none",
            "-p",
            "-O",
            "raw",
            "disk.qcow2",
            "out.raw",
        ],
        Stdout::Progress,
    );
    t.same_content(&cite, "raw", "out.raw");
    // The same with preallocation, the option appended after the file names.
    let cite = format!("{CDI} convertToRaw (preallocate)");
    t.same(
        &cite,
        &[
            "convert",
            "-t",
            "none",
            "-p",
            "-O",
            "raw",
            "disk.qcow2",
            "falloc.raw",
            "-o",
            "preallocation=falloc",
        ],
        Stdout::Progress,
    );
    t.same_content(&cite, "raw", "falloc.raw");
    assert_eq!(
        disk_usage(&t.d.join("falloc.raw")),
        disk_usage(&t.q.join("falloc.raw")),
        "{cite}: preallocated the same"
    );
    // Resize: `resize -f raw IMAGE SIZE` (a byte count).
    let cite = format!("{CDI} Resize");
    t.same(
        &cite,
        &["resize", "-f", "raw", "disk.raw", "12582912"],
        Stdout::Exact,
    );
    t.same_content(&cite, "raw", "disk.raw");
    // CreateBlankImage: `create -f raw DEST SIZE -o preallocation=falloc`.
    let cite = format!("{CDI} CreateBlankImage");
    t.same(
        &cite,
        &[
            "create",
            "-f",
            "raw",
            "blank.raw",
            "8388608",
            "-o",
            "preallocation=falloc",
        ],
        Stdout::Exact,
    );
    t.same_content(&cite, "raw", "blank.raw");
}

#[test]
fn ovirt_vdsm_invocations_match_qemu_img() {
    if !have_qemu("ovirt_vdsm_invocations_match_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Twin::new(dir.path(), |src| {
        qcow2_with_data(src, "disk.qcow2");
        raw_chain(src);
        make_raw(&src.join("new.raw"), 16 << 20, &[(0, 2 << 20)]);
        let old = src.join("old.qcow2");
        qemu_img_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            old.to_str().unwrap(),
            "8M",
        ]);
        qemu_io("qcow2", &old, &["write -P 0x55 64k 128k"]);
    });
    const VDSM: &str = "oVirt/vdsm lib/vdsm/storage/qemuimg.py";
    // info(): `info --output json -f FMT -U IMAGE`; reads format, virtual-size, actual-size,
    // cluster-size, backing-filename and format-specific.data.compat.
    t.same(
        &format!("{VDSM} info"),
        &[
            "info",
            "--output",
            "json",
            "-f",
            "qcow2",
            "-U",
            "disk.qcow2",
        ],
        Stdout::Json,
    );
    // check(): `check --output json -f FMT IMAGE`; reads image-end-offset and leaks.
    t.same(
        &format!("{VDSM} check"),
        &["check", "--output", "json", "-f", "qcow2", "disk.qcow2"],
        Stdout::Json,
    );
    // map(): `map --output json IMAGE`, run in the image's folder.
    t.same(
        &format!("{VDSM} map"),
        &["map", "--output", "json", "top.qcow2"],
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
    t.same(
        &cite,
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=1.1",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "snap.qcow2",
        ],
        Stdout::Exact,
    );
    t.same_content(&cite, "qcow2", "snap.qcow2");
    t.same(
        &cite,
        &[
            "info",
            "--output",
            "json",
            "-f",
            "qcow2",
            "-U",
            "snap.qcow2",
        ],
        WRITTEN,
    );
    // convert(): `convert -p -t none -T none -f FMT -O qcow2 -o compat=1.1 SRC DST`.
    let cite = format!("{VDSM} convert");
    t.same(
        &cite,
        &[
            "convert",
            "-p",
            "-t",
            "none",
            "-T",
            "none",
            "-f",
            "qcow2",
            "-O",
            "qcow2",
            "-o",
            "compat=1.1",
            "disk.qcow2",
            "conv.qcow2",
        ],
        Stdout::Progress,
    );
    t.same_content(&cite, "qcow2", "conv.qcow2");
    // compare(): `compare -p -f FMT -F FMT [-s] IMG1 IMG2`: 0 when equal, 1 and the first
    // differing offset when not.
    t.same(
        &format!("{VDSM} compare"),
        &[
            "compare",
            "-p",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "disk.qcow2",
            "conv.qcow2",
        ],
        Stdout::Progress,
    );
    t.same(
        &format!("{VDSM} compare -s"),
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-s",
            "top.qcow2",
            "base.raw",
        ],
        Stdout::Exact,
    );
    // amend(): `amend -o compat=1.1 IMAGE`.
    let cite = format!("{VDSM} amend");
    t.same(
        &cite,
        &["amend", "-o", "compat=1.1", "old.qcow2"],
        Stdout::Exact,
    );
    t.same_content(&cite, "qcow2", "old.qcow2");
    t.same(&cite, &["info", "--output", "json", "old.qcow2"], WRITTEN);
    // resize(): `resize -f FMT IMAGE SIZE`.
    let cite = format!("{VDSM} resize");
    t.same(
        &cite,
        &["resize", "-f", "qcow2", "disk.qcow2", "33554432"],
        Stdout::Exact,
    );
    t.same_content(&cite, "qcow2", "disk.qcow2");
    // rebase(): `rebase -t none -T none -u -f FMT -F FMT -b BACKING IMAGE`.
    let cite = format!("{VDSM} rebase -u");
    t.same(
        &cite,
        &[
            "rebase",
            "-t",
            "none",
            "-T",
            "none",
            "-u",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            "new.raw",
            "snap.qcow2",
        ],
        Stdout::Exact,
    );
    t.same(&cite, &["info", "--output", "json", "snap.qcow2"], WRITTEN);
    // commit(): `commit -p -t none -d -f FMT TOP` (no base given), in the image's folder.
    let cite = format!("{VDSM} commit");
    t.same(
        &cite,
        &[
            "commit",
            "-p",
            "-t",
            "none",
            "-d",
            "-f",
            "qcow2",
            "top.qcow2",
        ],
        Stdout::Progress,
    );
    t.same_content(&cite, "raw", "base.raw");
}

#[test]
fn proxmox_invocations_match_qemu_img() {
    if !have_qemu("proxmox_invocations_match_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Twin::new(dir.path(), |src| {
        qcow2_with_data(src, "vm-100-disk-0.qcow2");
        raw_chain(src);
        make_raw(&src.join("vm-101-disk-0.raw"), 16 << 20, &[]);
        make_raw(&src.join("vm-102-disk-0.raw"), 16 << 20, &[]);
        make_raw(&src.join("vm-103-disk-0.raw"), 4 << 20, &[(0, 65536)]);
    });
    const CONVERT: &str = "proxmox/qemu-server src/PVE/QemuServer/QemuImage.pm convert";
    const COMMON: &str = "proxmox/pve-storage src/PVE/Storage/Common.pm";
    // `convert -p -n -f FMT -O FMT SRC DST` into an allocated volume; the parser reads
    // `\((\S+)\/100\%\)`.
    t.same(
        CONVERT,
        &[
            "convert",
            "-p",
            "-n",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "vm-100-disk-0.qcow2",
            "vm-101-disk-0.raw",
        ],
        Stdout::Progress,
    );
    t.same_content(CONVERT, "raw", "vm-101-disk-0.raw");
    // With is-zero-initialized: the target as `zeroinit:PATH`. Only Proxmox's own build of
    // qemu has that protocol; qemu-img 10 refuses it after its 0% record, and so do we
    // (exit 1, the same output), rather than write somewhere unexpected.
    let cite = format!("{CONVERT} (is-zero-initialized)");
    t.same(
        &cite,
        &[
            "convert",
            "-p",
            "-n",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "vm-100-disk-0.qcow2",
            "zeroinit:vm-102-disk-0.raw",
        ],
        Stdout::Exact,
    );
    t.same_content(&cite, "raw", "vm-102-disk-0.raw");
    // qemu_img_create: `create -o preallocation=P -f FMT PATH SIZEK`.
    let cite = format!("{COMMON} qemu_img_create");
    t.same(
        &cite,
        &[
            "create",
            "-o",
            "preallocation=metadata",
            "-f",
            "qcow2",
            "vm-104-disk-0.qcow2",
            "4096K",
        ],
        Stdout::Exact,
    );
    t.same_content(&cite, "qcow2", "vm-104-disk-0.qcow2");
    t.same(
        &cite,
        &["info", "--output=json", "vm-104-disk-0.qcow2"],
        WRITTEN,
    );
    // qemu_img_create_qcow2_backed: `create -F FMT -b BACKING -f qcow2 PATH -o
    // extended_l2=on,cluster_size=128k`.
    let cite = format!("{COMMON} qemu_img_create_qcow2_backed");
    t.same(
        &cite,
        &[
            "create",
            "-F",
            "raw",
            "-b",
            "base.raw",
            "-f",
            "qcow2",
            "snap-vm-105.qcow2",
            "-o",
            "extended_l2=on,cluster_size=128k",
        ],
        Stdout::Exact,
    );
    t.same_content(&cite, "qcow2", "snap-vm-105.qcow2");
    // qemu_img_info: `info --output=json PATH -f FMT --backing-chain`.
    t.same(
        &format!("{COMMON} qemu_img_info"),
        &[
            "info",
            "--output=json",
            "top.qcow2",
            "-f",
            "qcow2",
            "--backing-chain",
        ],
        Stdout::Json,
    );
    // qemu_img_measure: `measure --output=json --size SIZEK -O FMT`.
    t.same(
        &format!("{COMMON} qemu_img_measure"),
        &["measure", "--output=json", "--size", "4096K", "-O", "qcow2"],
        Stdout::Json,
    );
    // qemu_img_resize: `resize --preallocation=P -f FMT PATH SIZE`.
    let cite = format!("{COMMON} qemu_img_resize");
    t.same(
        &cite,
        &[
            "resize",
            "--preallocation=falloc",
            "-f",
            "raw",
            "vm-103-disk-0.raw",
            "8M",
        ],
        Stdout::Exact,
    );
    t.same_content(&cite, "raw", "vm-103-disk-0.raw");
    assert_eq!(
        disk_usage(&t.d.join("vm-103-disk-0.raw")),
        disk_usage(&t.q.join("vm-103-disk-0.raw")),
        "{cite}: preallocated the same"
    );
}

#[test]
fn coreos_assembler_invocations_match_qemu_img() {
    if !have_qemu("coreos_assembler_invocations_match_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Twin::new(dir.path(), |src| qcow2_with_data(src, "fcos.qcow2"));
    const COSA: &str =
        "coreos/coreos-assembler src/cosalib/qemuvariants.py QemuVariantImage.mutate_image";
    // The aws and vmware variants: `convert -f qcow2 -O vmdk SRC -o
    // adapter_type=lsilogic,subformat=streamOptimized,compat6 DST`.
    let cite = format!("{COSA} (aws, vmware)");
    t.same(
        &cite,
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "vmdk",
            "fcos.qcow2",
            "-o",
            "adapter_type=lsilogic,subformat=streamOptimized,compat6",
            "fcos.vmdk",
        ],
        Stdout::Exact,
    );
    t.same_content(&cite, "vmdk", "fcos.vmdk");
    // The azure variant: `convert -f qcow2 -O vpc SRC DST`, with qemu-img's geometry rounding.
    let cite = format!("{COSA} (azure)");
    t.same(
        &cite,
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "vpc",
            "fcos.qcow2",
            "fcos.vhd",
        ],
        Stdout::Exact,
    );
    t.same_content(&cite, "vpc", "fcos.vhd");
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
            let mut args = vec!["convert", "-O"];
            args.extend(&opts[1..]);
            args.extend([raw.to_str().unwrap(), name]);
            let out = Command::new("qemu-img")
                .args(&args)
                .current_dir(src)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
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
