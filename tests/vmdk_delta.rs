//! Delta (child) disks: `create -b`, `convert -B`, chains written by qemu-io, the parentCID
//! check, loops, missing parents, and COWD redo logs over a base disk.

mod common;
mod vmdk_build;

use common::*;
use std::path::Path;

fn qemu_io(image: &Path, cmd: &str) {
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "vmdk", "-c", cmd])
        .arg(image)
        .output()
        .expect("qemu-io runs");
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("error"),
        "qemu-io {cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_raw_sha(image: &Path, dir: &Path) -> String {
    let out = dir.join("qemu.raw");
    qemu_img_ok(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        image.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let sha = sha256_file(&out);
    std::fs::remove_file(out).unwrap();
    sha
}

/// A base disk with data everywhere it matters.
fn base(dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("base.raw");
    make_raw(
        &raw,
        48 << 20,
        &[
            (0, 4 << 20),
            (20 << 20, 1 << 20),
            ((48 << 20) - 65536, 65536),
        ],
    );
    let base = dir.join("base.vmdk");
    run_ok(&[
        "convert",
        "-O",
        "vmdk",
        raw.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    base
}

#[test]
fn create_b_makes_a_child_that_qemu_reads_and_writes() {
    let test = "create_b_makes_a_child_that_qemu_reads_and_writes";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    for sf in ["monolithicSparse", "twoGbMaxExtentSparse"] {
        let child = dir.path().join(format!("child-{sf}.vmdk"));
        run_ok(&[
            "create",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sf}"),
            "-b",
            "base.vmdk",
            child.to_str().unwrap(),
        ]);
        let info = qemu_img_ok(&["info", "--output", "json", child.to_str().unwrap()]);
        assert!(
            info.contains("\"backing-filename\": \"base.vmdk\""),
            "{info}"
        );
        let (code, out, err) = qemu_img(&["check", child.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            qemu_compare("vmdk", &base, "vmdk", &child),
            "{sf}: child differs from base"
        );
        // qemu-io writes data and zeros (zeroed-grain entries, which hide the parent).
        qemu_io(&child, "write -P 0xab 1M 64k");
        qemu_io(&child, "write -z 20M 128k");
        qemu_io(&child, "write -P 0xcd 30M 4k");
        let want = qemu_raw_sha(&child, dir.path());
        let (_, got) = content_sha256(&child, None, dir.path());
        assert_eq!(got, want, "{sf}: delta read differently");
        let (code, out, err) = run(&["check", child.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        let info = run_ok(&["info", child.to_str().unwrap()]);
        assert!(info.contains("backing file: base.vmdk"), "{info}");
        // dissect follows parentFileNameHint too.
        if let Some(readings) = oracle_read(test, "vmdk", &child) {
            let d = readings.iter().find(|r| r.reader == "dissect").unwrap();
            assert_eq!(d.result.as_ref().map(|(_, s)| s.clone()), Ok(want.clone()));
        }
    }
}

#[test]
fn convert_b_stores_only_the_differences() {
    let test = "convert_b_stores_only_the_differences";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    // The new content: the base, with some data changed and some zeroed where the base has data.
    let modified = dir.path().join("modified.raw");
    run_ok(&[
        "convert",
        "-O",
        "raw",
        base.to_str().unwrap(),
        modified.to_str().unwrap(),
    ]);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&modified)
            .unwrap();
        f.write_all_at(&pseudo_random(65536, 99), 2 << 20).unwrap();
        f.write_all_at(&vec![0u8; 1 << 20], 20 << 20).unwrap();
        f.write_all_at(&pseudo_random(4096, 98), 40 << 20).unwrap();
    }
    for zeroed in ["on", "off"] {
        let child = dir.path().join(format!("child-{zeroed}.vmdk"));
        run_ok(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &format!("zeroed_grain={zeroed}"),
            "-B",
            "base.vmdk",
            modified.to_str().unwrap(),
            child.to_str().unwrap(),
        ]);
        assert!(
            qemu_compare("raw", &modified, "vmdk", &child),
            "zeroed_grain={zeroed}"
        );
        let (code, out, err) = qemu_img(&["check", child.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        let (_, got) = content_sha256(&child, None, dir.path());
        assert_eq!(got, sha256_file(&modified));
        // Only the changed grains are stored: 2 data grains, plus 16 zero grains without
        // zeroed-grain entries.
        let map = qemu_img_ok(&["map", "--output", "json", child.to_str().unwrap()]);
        let own_data: usize = map
            .matches("\"depth\": 0, \"present\": true, \"zero\": false")
            .count();
        assert!(own_data >= 1, "{map}");
        let size = std::fs::metadata(&child).unwrap().len();
        assert!(
            size < 3 << 20,
            "zeroed_grain={zeroed}: child is {size} bytes"
        );
    }
}

fn set_cid(image: &Path, new: &str) {
    let mut bytes = std::fs::read(image).unwrap();
    let at = bytes.windows(4).position(|w| w == b"CID=").unwrap() + 4;
    bytes[at..at + 8].copy_from_slice(new.as_bytes());
    std::fs::write(image, bytes).unwrap();
}

#[test]
fn a_changed_parent_a_missing_parent_and_a_loop_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let child = dir.path().join("child.vmdk");
    run_ok(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        child.to_str().unwrap(),
    ]);
    run_ok(&["info", child.to_str().unwrap()]);

    set_cid(&base, "0badc0de");
    let (code, _, err) = run(&[
        "convert",
        "-O",
        "raw",
        child.to_str().unwrap(),
        dir.path().join("x.raw").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("parent CID mismatch") && err.trim_end().lines().count() == 1,
        "{err}"
    );

    std::fs::remove_file(&base).unwrap();
    let (code, _, err) = run(&[
        "convert",
        "-O",
        "raw",
        child.to_str().unwrap(),
        dir.path().join("x.raw").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("base.vmdk") && err.contains("not found"),
        "{err}"
    );

    // a.vmdk's parent is b.vmdk, whose parent is a.vmdk.
    for (name, parent) in [("a.vmdk", "b.vmdk"), ("b.vmdk", "a.vmdk")] {
        std::fs::write(
            dir.path().join(name),
            format!("# Disk DescriptorFile\nversion=1\nCID=11111111\nparentCID=11111111\ncreateType=\"custom\"\nparentFileNameHint=\"{parent}\"\nRW 2048 ZERO\n"),
        )
        .unwrap();
    }
    let (code, _, err) = run(&[
        "info",
        "--backing-chain",
        dir.path().join("a.vmdk").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("loops"), "{err}");
    let (code, _, err) = run(&[
        "convert",
        "-O",
        "raw",
        dir.path().join("a.vmdk").to_str().unwrap(),
        dir.path().join("y.raw").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("loops") && !err.contains("panicked"), "{err}");
}

/// A vmfsSparse snapshot: a descriptor whose VMFSSPARSE (COWD) extent holds the changed
/// grains, over a vmfs base. Built by hand from the format's description, read by qemu-img
/// and dissect.
#[test]
fn cowd_redo_log_reads_like_qemu_and_dissect() {
    let test = "cowd_redo_log_reads_like_qemu_and_dissect";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("b.raw");
    make_raw(&raw, 8 << 20, &[(0, 8 << 20)]);
    let base = dir.path().join("base.vmdk");
    run_ok(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=vmfs",
        raw.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    let base_text = std::fs::read_to_string(&base).unwrap();
    let cid = base_text
        .lines()
        .find_map(|l| l.strip_prefix("CID="))
        .unwrap()
        .to_string();
    // Grains of 8 sectors; 4096-entry tables cover 16 MiB, so one table.
    let grains: Vec<(u64, Vec<u8>)> = [0u64, 1, 300, 2047]
        .iter()
        .map(|&g| (g, pseudo_random(4096, g + 7)))
        .collect();
    std::fs::write(
        dir.path().join("snap-delta.vmdk"),
        vmdk_build::cowd_extent(16384, 8, &grains),
    )
    .unwrap();
    for (name, parent_cid, hint) in [
        (
            "snap.vmdk",
            cid.as_str(),
            "parentFileNameHint=\"base.vmdk\"\n",
        ),
        ("alone.vmdk", "ffffffff", ""),
    ] {
        let desc = dir.path().join(name);
        std::fs::write(
            &desc,
            format!("# Disk DescriptorFile\nversion=1\nCID=22222222\nparentCID={parent_cid}\ncreateType=\"vmfsSparse\"\n{hint}\n# Extent description\nRW 16384 VMFSSPARSE \"snap-delta.vmdk\"\n"),
        )
        .unwrap();
        let want = qemu_raw_sha(&desc, dir.path());
        let (_, got) = content_sha256(&desc, None, dir.path());
        assert_eq!(got, want, "{name}");
        if let Some(readings) = oracle_read(test, "vmdk", &desc) {
            let d = readings.iter().find(|r| r.reader == "dissect").unwrap();
            assert_eq!(
                d.result.as_ref().map(|(_, s)| s.clone()),
                Ok(want.clone()),
                "{name}: dissect"
            );
        }
        let (code, out, err) = run(&["check", desc.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
    }
    // The snapshot really is a mix of its own grains and the base's bytes.
    let (_, with_parent) = content_sha256(&dir.path().join("snap.vmdk"), None, dir.path());
    let (_, alone) = content_sha256(&dir.path().join("alone.vmdk"), None, dir.path());
    assert_ne!(with_parent, alone);
    assert_ne!(with_parent, sha256_file(&raw));
}
