//! VMDK images changed in place (issue 15, item 4): writes through `Driver::open_mut` against
//! qemu-io doing the same writes, `resize`, `rebase -u` (`set_backing`), `amend` against the
//! descriptors qemu-img writes for the same options, `measure` against the files diskferry
//! writes, and a kill -9 at random points of each in-place operation.

mod common;
mod edit_support;

use common::{
    have_qemu, oracle_read, pseudo_random, qemu_compare, qemu_img, qemu_img_ok, read_image_head,
    run, run_ok, sha256_file,
};
use diskferry::edit::{
    Clear, GrowPreallocation, MeasureRequest, NewBacking, ResizeRequest, Shrink,
};
use diskferry::formats::vmdk::FORMAT;
use diskferry::formats::vmdk::descriptor_io::StoredDescriptor;
use diskferry::options::FormatOptions;
use diskferry::{Gate, Image, OpenOptions};
use edit_support::{
    KillRounds, QemuOpens, Survivor, apply_mut, ctx, helper_job, rebase_in_turn, strided_writes,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qemu_io(image: &Path, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "vmdk"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(image).output().expect("qemu-io runs");
    assert!(out.status.success(), "qemu-io {cmds:?}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("failed"), "qemu-io {cmds:?}: {text}");
}

fn check_clean(image: &Path) {
    let (code, out, err) = qemu_img(&["check", "-f", "vmdk", s(image)]);
    assert_eq!(code, 0, "qemu-img check {}: {out}{err}", image.display());
    let (code, out, err) = run(&["check", s(image)]);
    assert_eq!(code, 0, "diskferry check {}: {out}{err}", image.display());
}

/// `qemu-img create -f vmdk -o subformat=SUB` of `size` at `p`.
fn qemu_create(sub: &str, p: &Path, size: &str) {
    let sub = format!("subformat={sub}");
    qemu_img_ok(&["create", "-q", "-f", "vmdk", "-o", &sub, s(p), size]);
}

fn read_all(image: &Path) -> Vec<u8> {
    let options = OpenOptions {
        gate: Gate::anywhere(),
        ..OpenOptions::default()
    };
    let img = Image::open(image, &options).unwrap();
    let mut buf = vec![0u8; img.virtual_size() as usize];
    img.read_at(0, &mut buf).unwrap();
    buf
}

/// Writes of every shape: whole grains, partial grains, across grains and tables.
fn writes() -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, pseudo_random(64 * 1024, 1)),
        (3 * 65536 + 512, pseudo_random(1000 + 24, 2)),
        (5 * 65536 - 4096, pseudo_random(8192, 3)),
        (
            31 * MIB + 65536 * 7 + 1536,
            pseudo_random(2 * 65536 + 512, 4),
        ),
        (0x1000, pseudo_random(512, 5)),
    ]
}

fn qemu_write_cmds(writes: &[(u64, Vec<u8>)], dir: &Path) -> Vec<String> {
    // qemu-io writes a pattern, not bytes: the data goes through a raw file and `qemu-img dd`
    // is not partial, so write each piece with `write -s` from a file.
    writes
        .iter()
        .enumerate()
        .map(|(i, (off, data))| {
            let f = dir.join(format!("piece{i}"));
            std::fs::write(&f, data).unwrap();
            format!("write -s {} {off} {}", f.display(), data.len())
        })
        .collect()
}

#[test]
fn writes_in_place_match_qemu_io_for_each_subformat() {
    if !have_qemu("writes_in_place_match_qemu_io_for_each_subformat") {
        return;
    }
    let gate = Gate::anywhere();
    for sub in [
        "monolithicSparse",
        "twoGbMaxExtentSparse",
        "monolithicFlat",
        "twoGbMaxExtentFlat",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (ours_dir, theirs_dir) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&ours_dir).unwrap();
        std::fs::create_dir_all(&theirs_dir).unwrap();
        let ours = ours_dir.join("d.vmdk");
        let theirs = theirs_dir.join("d.vmdk");
        for p in [&ours, &theirs] {
            qemu_create(sub, p, "40M");
        }
        let w = writes();
        let mut m = FORMAT.driver().open_mut(&ours, &ctx(&gate)).unwrap();
        assert_eq!(m.virtual_size(), 40 * MIB);
        for (off, data) in &w {
            m.write_at(*off, data).unwrap();
        }
        m.flush().unwrap();
        drop(m);
        qemu_io(&theirs, &qemu_write_cmds(&w, dir.path()));
        assert!(
            qemu_compare("vmdk", &ours, "vmdk", &theirs),
            "{sub}: content differs from qemu-io's"
        );
        check_clean(&ours);
        // The CID changed, as qemu and VMware change it on the first write.
        let before = StoredDescriptor::load(&theirs).unwrap().descriptor.cid;
        let after = StoredDescriptor::load(&ours).unwrap().descriptor.cid;
        assert_ne!(before, 0xffff_ffff);
        assert_ne!(after, 0xffff_ffff);
    }
}

#[test]
fn streamoptimized_and_esx_extents_are_refused() {
    if !have_qemu("streamoptimized_and_esx_extents_are_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.vmdk");
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&p),
        "10M",
    ]);
    let gate = Gate::anywhere();
    let err = FORMAT
        .driver()
        .open_mut(&p, &ctx(&gate))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("streamOptimized"), "{err}");
    let err = FORMAT
        .driver()
        .resize(
            &p,
            &ResizeRequest {
                new_size: 20 * MIB,
                shrink: Shrink::Refuse,
                preallocation: GrowPreallocation::Off,
            },
            &ctx(&gate),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("streamOptimized"), "{err}");
}

/// A base with data and a delta child, as qemu-img makes them, in `dir`.
fn base_and_child(dir: &Path, zeroed_grain: bool) -> (PathBuf, PathBuf) {
    let base = dir.join("base.vmdk");
    let child = dir.join("child.vmdk");
    qemu_img_ok(&["create", "-q", "-f", "vmdk", s(&base), "8M"]);
    qemu_io(
        &base,
        &[
            "write -P 0x5a 0 8M".to_string(),
            "write -P 0x11 1M 1M".to_string(),
        ],
    );
    let mut opts = String::from("backing_fmt=vmdk");
    if zeroed_grain {
        opts.push_str(",zeroed_grain=on");
    }
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-o",
        &opts,
        s(&child),
    ]);
    (base, child)
}

#[test]
fn delta_disks_keep_the_parent_around_partial_grains_and_clear_as_asked() {
    if !have_qemu("delta_disks_keep_the_parent_around_partial_grains_and_clear_as_asked") {
        return;
    }
    let gate = Gate::anywhere();
    for zeroed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let (_, ours) = base_and_child(&a, zeroed);
        let (base_b, theirs) = base_and_child(&b, zeroed);
        let w = writes()
            .into_iter()
            .filter(|(o, d)| o + d.len() as u64 <= 8 * MIB)
            .collect::<Vec<_>>();
        let mut m = FORMAT.driver().open_mut(&ours, &ctx(&gate)).unwrap();
        for (off, data) in &w {
            m.write_at(*off, data).unwrap();
        }
        // Zeros over whole grains, a partial grain and a stored grain.
        m.clear(2 * MIB, 3 * 65536, Clear::Zero).unwrap();
        m.clear(3 * 65536 + 100, 50, Clear::Zero).unwrap();
        m.flush().unwrap();
        drop(m);
        let mut cmds = qemu_write_cmds(&w, dir.path());
        cmds.push(format!("write -z {} {}", 2 * MIB, 3 * 65536));
        cmds.push(format!("write -z {} 50", 3 * 65536 + 100));
        qemu_io(&theirs, &cmds);
        assert!(
            qemu_compare("vmdk", &ours, "vmdk", &theirs),
            "zeroed_grain={zeroed}: content differs from qemu-io's"
        );
        check_clean(&ours);
        // Deallocate brings the parent back, also in a partial grain of stored data.
        let mut m = FORMAT.driver().open_mut(&ours, &ctx(&gate)).unwrap();
        m.clear(0, 65536, Clear::Deallocate).unwrap();
        m.clear(2 * MIB, 65536, Clear::Deallocate).unwrap();
        m.clear(5 * 65536 - 1024, 2048, Clear::Deallocate).unwrap();
        m.flush().unwrap();
        drop(m);
        let got = read_all(&ours);
        let parent = read_all(&base_b);
        for r in [
            0..65536usize,
            2 << 20..(2 << 20) + 65536,
            5 * 65536 - 1024..5 * 65536 + 1024,
        ] {
            assert!(
                got[r.clone()] == parent[r.clone()],
                "{r:?} does not read the parent"
            );
        }
        let theirs_content = read_all(&theirs);
        for r in [65536..5 * 65536 - 1024, 5 * 65536 + 1024..2 << 20] {
            assert!(got[r.clone()] == theirs_content[r.clone()], "{r:?} changed");
        }
        // A deallocated grain stays in the file, used by no table: a leak (a sparse VMDK has
        // no free list), which diskferry check reports as such (3) and qemu-img ignores.
        let (code, out, err) = qemu_img(&["check", "-f", "vmdk", s(&ours)]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = run(&["check", s(&ours)]);
        assert_eq!(code, 3, "{out}{err}");
        assert!(out.contains("Leaked") && !out.contains("rror"), "{out}");
    }
}

fn resize(p: &Path, size: u64, shrink: Shrink, pre: GrowPreallocation) -> diskferry::Result<()> {
    let gate = Gate::anywhere();
    FORMAT.driver().resize(
        p,
        &ResizeRequest {
            new_size: size,
            shrink,
            preallocation: pre,
        },
        &ctx(&gate),
    )
}

fn virtual_size_by_qemu(p: &Path) -> u64 {
    let out = qemu_img_ok(&["info", "--output=json", "-f", "vmdk", s(p)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

#[test]
fn resize_grows_sparse_and_flat_and_shrinks_flat() {
    if !have_qemu("resize_grows_sparse_and_flat_and_shrinks_flat") {
        return;
    }
    // Sizes: within the directory's spare entries (100M -> 3G: one sector holds 128 tables of
    // 32 MiB), and past them (-> 9G: a new directory).
    for (sub, from, to) in [
        ("monolithicSparse", "100M", 3u64 << 30),
        ("monolithicSparse", "100M", 9u64 << 30),
        ("monolithicFlat", "100M", 300 * MIB),
        ("vmfs", "100M", 300 * MIB),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.vmdk");
        let orig = dir.path().join("o.vmdk");
        // qemu-img cannot make vmfs disks; diskferry's are what ESXi reads.
        run_ok(&[
            "create",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&p),
            from,
        ]);
        qemu_io(
            &p,
            &["write -P 0x11 0 1M".into(), "write -P 0x22 99M 64k".into()],
        );
        qemu_img_ok(&["convert", "-O", "vmdk", s(&p), s(&orig)]);
        resize(&p, to, Shrink::Refuse, GrowPreallocation::Off).unwrap();
        assert_eq!(virtual_size_by_qemu(&p), to, "{sub}");
        check_clean(&p);
        // The old content stays and the new range reads as zeros (compare checks both).
        assert!(qemu_compare("vmdk", &orig, "vmdk", &p), "{sub} to {to}");
        // qemu writes and reads in the new range.
        qemu_io(
            &p,
            &[
                format!("write -P 0x33 {} 128k", to - 256 * 1024),
                format!("read -P 0x33 {} 128k", to - 256 * 1024),
                "read -P 0x11 0 1M".into(),
            ],
        );
        check_clean(&p);
        let info = run_ok(&["info", "--output=json", s(&p)]);
        assert!(info.contains(&format!("\"virtual-size\": {to}")), "{info}");
    }
    // Shrinking: refused without --shrink, refused for sparse, done for flat.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.vmdk");
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        s(&p),
        "64M",
    ]);
    qemu_io(&p, &["write -P 0x44 0 1M".into()]);
    assert!(resize(&p, 32 * MIB, Shrink::Refuse, GrowPreallocation::Off).is_err());
    resize(&p, 32 * MIB, Shrink::Allow, GrowPreallocation::Off).unwrap();
    assert_eq!(virtual_size_by_qemu(&p), 32 * MIB);
    assert_eq!(
        std::fs::metadata(dir.path().join("f-flat.vmdk"))
            .unwrap()
            .len(),
        32 * MIB
    );
    qemu_io(&p, &["read -P 0x44 0 1M".into()]);
    resize(&p, 48 * MIB, Shrink::Refuse, GrowPreallocation::Full).unwrap();
    assert_eq!(virtual_size_by_qemu(&p), 48 * MIB);
    let sp = dir.path().join("s.vmdk");
    qemu_img_ok(&["create", "-q", "-f", "vmdk", s(&sp), "64M"]);
    let err = resize(&sp, 32 * MIB, Shrink::Allow, GrowPreallocation::Off)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not shrink"), "{err}");
}

/// A twoGbMaxExtent disk of 100 MiB made by qemu-img, with data at its start and end.
fn split_disk(dir: &Path, sub: &str) -> PathBuf {
    let p = dir.join("d.vmdk");
    qemu_create(sub, &p, "100M");
    qemu_io(
        &p,
        &["write -P 0x11 0 8M".into(), "write -P 0x22 99M 64k".into()],
    );
    p
}

/// [`split_disk`] and its content as raw beside it.
fn split_with_data(dir: &Path, sub: &str) -> (PathBuf, PathBuf) {
    let p = split_disk(dir, sub);
    let raw = dir.join("d.raw");
    qemu_img_ok(&["convert", "-f", "vmdk", "-O", "raw", s(&p), s(&raw)]);
    (p, raw)
}

/// The raw model cut or grown to `size` by qemu-img, as the VMDK should read.
fn raw_resized(raw: &Path, size: u64) {
    qemu_img_ok(&[
        "resize",
        "-q",
        "-f",
        "raw",
        "--shrink",
        s(raw),
        &size.to_string(),
    ]);
}

fn file_len(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).unwrap().len()
}

#[test]
fn resize_grows_split_disks_and_shrinks_split_flat() {
    let test = "resize_grows_split_disks_and_shrinks_split_flat";
    if !have_qemu(test) {
        return;
    }
    const SPLIT: u64 = 2047 * MIB;
    let big = 5u64 << 30;
    for (sub, letter) in [("twoGbMaxExtentSparse", 's'), ("twoGbMaxExtentFlat", 'f')] {
        let dir = tempfile::tempdir().unwrap();
        let (p, raw) = split_with_data(dir.path(), sub);
        // An extent file left by a grow killed before its descriptor was replaced: reused.
        std::fs::write(dir.path().join(format!("d-{letter}002.vmdk")), b"orphan").unwrap();
        resize(&p, big, Shrink::Refuse, GrowPreallocation::Off).unwrap();
        raw_resized(&raw, big);
        assert_eq!(virtual_size_by_qemu(&p), big, "{sub}");
        check_clean(&p);
        assert!(qemu_compare("vmdk", &p, "raw", &raw), "{sub}: content");
        // The last extent filled to VMware's 2047 MiB, then new extents named as VMware names
        // them, the last one short.
        let d = StoredDescriptor::load(&p).unwrap().descriptor;
        let lines: Vec<(u64, String)> = d
            .extents
            .iter()
            .map(|e| (e.sectors * 512, e.file.clone().unwrap()))
            .collect();
        let want: Vec<(u64, String)> = [SPLIT, SPLIT, big - 2 * SPLIT]
            .iter()
            .enumerate()
            .map(|(i, &len)| (len, format!("d-{letter}{:03}.vmdk", i + 1)))
            .collect();
        assert_eq!(lines, want, "{sub}");
        assert_eq!(d.create_type, sub);
        if letter == 'f' {
            for (len, name) in &want {
                assert_eq!(file_len(dir.path(), name), *len, "{sub} {name}");
            }
        }
        // qemu writes and reads across the extents' seams and at the new end.
        let cmds = [
            format!("write -P 0x33 {} 1M", SPLIT - 512 * 1024),
            format!("write -P 0x44 {} 64k", big - 64 * 1024),
        ];
        qemu_io(&p, &cmds);
        edit_support::qemu_io(
            "raw",
            &raw,
            &[
                edit_support::Op::Write {
                    offset: SPLIT - 512 * 1024,
                    len: MIB,
                    byte: 0x33,
                },
                edit_support::Op::Write {
                    offset: big - 64 * 1024,
                    len: 64 * 1024,
                    byte: 0x44,
                },
            ],
        );
        check_clean(&p);
        assert!(
            qemu_compare("vmdk", &p, "raw", &raw),
            "{sub}: content after writes"
        );
        let info = run_ok(&["info", "--output=json", s(&p)]);
        assert!(info.contains(&format!("\"virtual-size\": {big}")), "{info}");
        if letter == 's' {
            let err = resize(&p, 3 << 30, Shrink::Allow, GrowPreallocation::Off)
                .unwrap_err()
                .to_string();
            assert!(err.contains("not shrink"), "{err}");
            continue;
        }
        // Shrinking a split flat disk cuts the extent the new end falls in and removes the
        // ones past it. (A whole number of MiB: dissect misreads flat disks of other sizes,
        // qemu-img's own among them.)
        let small = 60 * MIB;
        assert!(resize(&p, small, Shrink::Refuse, GrowPreallocation::Off).is_err());
        resize(&p, small, Shrink::Allow, GrowPreallocation::Off).unwrap();
        raw_resized(&raw, small);
        assert_eq!(virtual_size_by_qemu(&p), small);
        assert_eq!(file_len(dir.path(), "d-f001.vmdk"), small);
        assert!(!dir.path().join("d-f002.vmdk").exists());
        assert!(!dir.path().join("d-f003.vmdk").exists());
        check_clean(&p);
        assert!(
            qemu_compare("vmdk", &p, "raw", &raw),
            "{sub}: content after shrink"
        );
        // Small again: every reader reads it (the grown disk is too large to hash thrice).
        let want = (small, sha256_file(&raw));
        if let Some(readings) = oracle_read(test, "vmdk", &p) {
            for r in readings {
                assert_eq!(
                    r.result.as_ref().ok(),
                    Some(&want),
                    "{sub}: {} reads otherwise",
                    r.reader
                );
            }
        }
    }
}

#[test]
fn rebase_unsafe_records_the_parent_as_qemu_img_create_does() {
    if !have_qemu("rebase_unsafe_records_the_parent_as_qemu_img_create_does") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = base_and_child(dir.path(), false);
    let other = dir.path().join("other.vmdk");
    qemu_img_ok(&["convert", "-O", "vmdk", s(&base), s(&other)]);
    let reference = dir.path().join("ref.vmdk");
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "other.vmdk",
        "-F",
        "vmdk",
        s(&reference),
    ]);
    let gate = Gate::anywhere();
    let before = StoredDescriptor::load(&child).unwrap().descriptor;
    FORMAT
        .driver()
        .set_backing(
            &child,
            Some(&NewBacking {
                name: "other.vmdk".into(),
                format: Some(FORMAT),
            }),
            &ctx(&gate),
        )
        .unwrap();
    let after = StoredDescriptor::load(&child).unwrap().descriptor;
    let want = StoredDescriptor::load(&reference).unwrap().descriptor;
    assert_eq!(after.parent_cid, want.parent_cid);
    assert_eq!(after.parent_hint, want.parent_hint);
    assert_eq!(after.create_type, before.create_type);
    assert_eq!(after.cid, before.cid);
    let info = qemu_img_ok(&["info", "--output=json", s(&child)]);
    assert!(
        info.contains("\"backing-filename\": \"other.vmdk\""),
        "{info}"
    );
    assert!(qemu_compare("vmdk", &child, "vmdk", &other));
    check_clean(&child);
    // A missing parent is refused (no CID to record) unless forced.
    let missing = NewBacking {
        name: "nope.vmdk".into(),
        format: None,
    };
    assert!(
        FORMAT
            .driver()
            .set_backing(&child, Some(&missing), &ctx(&gate))
            .is_err()
    );
    // No parent: parentCID ffffffff, no hint; the unallocated grains read zeros.
    FORMAT
        .driver()
        .set_backing(&child, None, &ctx(&gate))
        .unwrap();
    let d = StoredDescriptor::load(&child).unwrap().descriptor;
    assert_eq!((d.parent_cid, d.parent_hint), (0xffff_ffff, None));
    let info = qemu_img_ok(&["info", "--output=json", s(&child)]);
    assert!(!info.contains("backing-filename"), "{info}");
    assert!(read_all(&child).iter().all(|&b| b == 0));
}

#[test]
fn amend_writes_the_fields_qemu_img_create_writes() {
    if !have_qemu("amend_writes_the_fields_qemu_img_create_writes") {
        return;
    }
    let gate = Gate::anywhere();
    for (sub, opts) in [
        (
            "monolithicSparse",
            "adapter_type=ide,hwversion=6,toolsversion=12345",
        ),
        ("monolithicFlat", "adapter_type=buslogic,compat6=on"),
        (
            "twoGbMaxExtentSparse",
            "adapter_type=lsilogic,toolsversion=10",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.vmdk");
        let r = dir.path().join("r.vmdk");
        qemu_create(sub, &p, "3G");
        qemu_img_ok(&[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sub},{opts}"),
            s(&r),
            "3G",
        ]);
        let values = FormatOptions::parse(FORMAT, FORMAT.driver().amend_options(), opts).unwrap();
        FORMAT.driver().amend(&p, &values, &ctx(&gate)).unwrap();
        let got = StoredDescriptor::load(&p).unwrap().descriptor;
        let want = StoredDescriptor::load(&r).unwrap().descriptor;
        for key in [
            "ddb.adapterType",
            "ddb.virtualHWVersion",
            "ddb.geometry.cylinders",
            "ddb.geometry.heads",
            "ddb.geometry.sectors",
        ] {
            assert_eq!(
                got.ddb_value(key),
                want.ddb_value(key),
                "{sub} {opts}: {key}"
            );
        }
        if opts.contains("toolsversion") {
            assert_eq!(
                got.ddb_value("ddb.toolsVersion"),
                want.ddb_value("ddb.toolsVersion")
            );
        }
        check_clean(&p);
    }
    // The command line reaches it too.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.vmdk");
    qemu_img_ok(&["create", "-q", "-f", "vmdk", s(&p), "1G"]);
    run_ok(&["amend", "-o", "adapter_type=pvscsi", s(&p)]);
    let d = StoredDescriptor::load(&p).unwrap().descriptor;
    assert_eq!(d.ddb_value("ddb.adapterType"), Some("pvscsi"));
}

fn files_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("disk"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn measure_predicts_the_files_diskferry_writes() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let size = 4200 * MIB + 512 * 3;
    let regions = [
        (0u64, 3 * 65536 + 7),
        (2047 * MIB - 100, 300),
        (4100 * MIB, 5 * MIB),
    ];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(size).unwrap();
        for (i, (o, l)) in regions.iter().enumerate() {
            f.write_all_at(&pseudo_random(*l as usize, i as u64 + 7), *o)
                .unwrap();
        }
    }
    let allocated: Vec<std::ops::Range<u64>> = regions.iter().map(|(o, l)| *o..o + l).collect();
    for sub in [
        "monolithicSparse",
        "twoGbMaxExtentSparse",
        "monolithicFlat",
        "twoGbMaxExtentFlat",
        "vmfs",
    ] {
        let out = dir.path().join(sub);
        std::fs::create_dir_all(&out).unwrap();
        let text = format!("subformat={sub}");
        let options =
            FormatOptions::parse(FORMAT, FORMAT.driver().create_options(), &text).unwrap();
        let m = FORMAT
            .driver()
            .measure(&MeasureRequest {
                virtual_size: size,
                allocated: &allocated,
                options: &options,
                source_bitmaps: None,
            })
            .unwrap();
        run_ok(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            &text,
            s(&raw),
            s(&out.join("disk.vmdk")),
        ]);
        assert_eq!(m.required, files_bytes(&out), "{sub}: required");
        let empty = dir.path().join(format!("{sub}-empty"));
        std::fs::create_dir_all(&empty).unwrap();
        run_ok(&[
            "create",
            "-f",
            "vmdk",
            "-o",
            &text,
            s(&empty.join("disk.vmdk")),
            &size.to_string(),
        ]);
        let none = FORMAT
            .driver()
            .measure(&MeasureRequest {
                virtual_size: size,
                allocated: &[],
                options: &options,
                source_bitmaps: None,
            })
            .unwrap();
        assert_eq!(none.required, files_bytes(&empty), "{sub}: empty");
        assert!(m.fully_allocated >= m.required);
    }
    let options = FormatOptions::parse(
        FORMAT,
        FORMAT.driver().create_options(),
        "subformat=streamOptimized",
    )
    .unwrap();
    assert!(
        FORMAT
            .driver()
            .measure(&MeasureRequest {
                virtual_size: size,
                allocated: &[],
                options: &options,
                source_bitmaps: None,
            })
            .is_err()
    );
}

// --- kill -9 at random points -------------------------------------------------------------

/// Runs the in-place operation `job` in a helper process (see `zz_kill_helper`) on the image
/// `prepare` makes in a fresh folder each round, kills it at a random point, and requires the
/// survivor to open (diskferry and qemu-img), to check clean with qemu-img, and to read as
/// `allowed` says (its virtual size and first 16 MiB).
fn kill_rounds(
    test: &str,
    job: &str,
    max_ms: u64,
    prepare: &dyn Fn(&Path) -> PathBuf,
    allowed: &dyn Fn(u64, &[u8]) -> bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let in_own_folder = |i: u64| {
        let round = dir.path().join(format!("r{i}"));
        std::fs::create_dir_all(&round).unwrap();
        prepare(&round)
    };
    let rounds = KillRounds {
        test,
        format: "vmdk",
        survivor: Survivor::ChecksClean(QemuOpens::As("vmdk")),
        job,
        max_ms,
    };
    rounds.on(&in_own_folder, &|round, image| {
        let (size, content) = read_image_head(image, 16 * MIB);
        assert!(
            allowed(size, &content),
            "{job} round {round}: neither old nor new content (size {size})"
        );
        let (code, out, err) = qemu_img(&["check", "-f", "vmdk", s(image)]);
        assert_eq!(code, 0, "{job} round {round}: qemu-img check: {out}{err}");
    });
}

/// The operations the kill tests run in a helper process.
#[test]
fn zz_kill_helper() {
    let Some(spec) = helper_job() else { return };
    let (op, path) = spec.split_once('|').unwrap();
    let path = Path::new(path);
    let gate = Gate::anywhere();
    match op {
        "write" => apply_mut(FORMAT, path, &strided_writes(64, 65536, 70000)),
        "rebase" => rebase_in_turn(FORMAT, path, ["base.vmdk", "other.vmdk"], 100, None),
        "amend" => {
            for _ in 0..50 {
                for o in [
                    "adapter_type=ide,hwversion=6",
                    "adapter_type=lsilogic,hwversion=4",
                ] {
                    let v =
                        FormatOptions::parse(FORMAT, FORMAT.driver().amend_options(), o).unwrap();
                    FORMAT.driver().amend(path, &v, &ctx(&gate)).unwrap();
                }
            }
        }
        // Many resizes in a row, so that the kills land in the middle of one.
        "resize" => {
            for i in 1..=100 {
                let size = 8 * MIB + i * 100 * MIB;
                resize(path, size, Shrink::Refuse, GrowPreallocation::Off).unwrap();
            }
        }
        "resize_split" => {
            for i in 1..=20 {
                let size = 100 * MIB + i * 512 * MIB;
                resize(path, size, Shrink::Refuse, GrowPreallocation::Off).unwrap();
            }
        }
        "shrink_split" => {
            for i in 1..=40 {
                let size = (5 << 30) - i * 100 * MIB;
                resize(path, size, Shrink::Allow, GrowPreallocation::Off).unwrap();
            }
        }
        _ => panic!("unknown operation {op}"),
    }
}

fn sparse_with_data(dir: &Path) -> PathBuf {
    let p = dir.join("d.vmdk");
    qemu_img_ok(&["create", "-q", "-f", "vmdk", s(&p), "8M"]);
    qemu_io(&p, &["write -P 0x11 0 8M".into()]);
    p
}

#[test]
fn kill_9_during_writes_leaves_old_or_new_content() {
    let test = "kill_9_during_writes_leaves_old_or_new_content";
    if !have_qemu(test) {
        return;
    }
    kill_rounds(
        test,
        "write",
        40,
        &|dir| base_and_child(dir, false).1,
        &|_, content| {
            // Per byte: the parent's (0x5a, 0x11 in its second MiB) or the new 0xab.
            content.iter().enumerate().all(|(i, &b)| {
                let old = if (MIB as usize..2 * MIB as usize).contains(&i) {
                    0x11
                } else {
                    0x5a
                };
                b == old || b == 0xab
            })
        },
    );
}

#[test]
fn kill_9_during_rebase_leaves_a_working_chain() {
    let test = "kill_9_during_rebase_leaves_a_working_chain";
    if !have_qemu(test) {
        return;
    }
    kill_rounds(
        test,
        "rebase",
        40,
        &|dir| {
            let (base, child) = base_and_child(dir, false);
            std::fs::copy(&base, dir.join("other.vmdk")).unwrap();
            child
        },
        &|_, content| read_ok_as_base(content),
    );
}

fn read_ok_as_base(content: &[u8]) -> bool {
    content.iter().enumerate().all(|(i, &b)| {
        let old = if (MIB as usize..2 * MIB as usize).contains(&i) {
            0x11
        } else {
            0x5a
        };
        b == old
    })
}

#[test]
fn kill_9_during_amend_leaves_an_image_that_opens() {
    let test = "kill_9_during_amend_leaves_an_image_that_opens";
    if !have_qemu(test) {
        return;
    }
    kill_rounds(test, "amend", 40, &sparse_with_data, &|size, content| {
        size == 8 * MIB && content.iter().all(|&b| b == 0x11)
    });
}

#[test]
fn kill_9_during_resize_leaves_the_old_or_new_size() {
    let test = "kill_9_during_resize_leaves_the_old_or_new_size";
    if !have_qemu(test) {
        return;
    }
    kill_rounds(test, "resize", 150, &sparse_with_data, &|size, content| {
        (size - 8 * MIB).is_multiple_of(100 * MIB)
            && content[..8 * MIB as usize].iter().all(|&b| b == 0x11)
            && content[8 * MIB as usize..].iter().all(|&b| b == 0)
    });
}

/// What a split disk of [`split_disk`] reads in its first 16 MiB.
fn split_head_ok(content: &[u8]) -> bool {
    content[..8 * MIB as usize].iter().all(|&b| b == 0x11)
        && content[8 * MIB as usize..].iter().all(|&b| b == 0)
}

#[test]
fn kill_9_during_split_resizes_leaves_the_old_or_new_disk() {
    let test = "kill_9_during_split_resizes_leaves_the_old_or_new_disk";
    if !have_qemu(test) {
        return;
    }
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        kill_rounds(
            test,
            "resize_split",
            150,
            &|dir| split_disk(dir, sub),
            &|size, content| (size - 100 * MIB).is_multiple_of(512 * MIB) && split_head_ok(content),
        );
    }
    kill_rounds(
        test,
        "shrink_split",
        150,
        &|dir| {
            let p = split_disk(dir, "twoGbMaxExtentFlat");
            resize(&p, 5 << 30, Shrink::Refuse, GrowPreallocation::Off).unwrap();
            p
        },
        &|size, content| ((5 << 30) - size).is_multiple_of(100 * MIB) && split_head_ok(content),
    );
}
