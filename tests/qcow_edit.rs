//! QCOW (version 1) images changed in place (issue 15, item 4): writes through
//! `Driver::open_mut` against qemu-io doing the same writes (plain, compressed and backed
//! images), `rebase -u` (`set_backing`: qemu-img cannot, so the result is checked with
//! qemu-img info and compare), `measure` against the files diskferry writes, and a kill -9 at
//! random points of each in-place operation. qemu-img cannot resize qcow, nor does diskferry.

mod common;
mod edit_support;

use common::{
    have_qemu, pseudo_random, qemu_compare, qemu_img, qemu_img_ok, read_image_head, run_ok,
};
use diskferry::Gate;
use diskferry::edit::{Clear, MeasureRequest, NewBacking};
use diskferry::formats::qcow::FORMAT;
use diskferry::options::FormatOptions;
use edit_support::{
    KillRounds, Survivor, apply_mut, ctx, helper_job, rebase_in_turn, strided_writes,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn qemu_io(image: &Path, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "qcow"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(image).output().expect("qemu-io runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("failed"),
        "qemu-io {cmds:?}: {out:?}"
    );
}

fn writes() -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, pseudo_random(4096, 1)),
        (3 * 4096 + 512, pseudo_random(1000, 2)),
        (2 * MIB - 2048, pseudo_random(8192, 3)),
        (5 * MIB + 100, pseudo_random(3 * 4096, 4)),
    ]
}

fn write_cmds(w: &[(u64, Vec<u8>)], dir: &Path) -> Vec<String> {
    w.iter()
        .enumerate()
        .map(|(i, (off, data))| {
            let f = dir.join(format!("piece{i}"));
            std::fs::write(&f, data).unwrap();
            format!("write -s {} {off} {}", f.display(), data.len())
        })
        .collect()
}

/// `base.qcow` (data, compressed when asked) and `child.qcow` on it, as qemu-img makes them.
fn images(dir: &Path, compressed: bool) -> (PathBuf, PathBuf) {
    let raw = dir.join("src.raw");
    let base = dir.join("base.qcow");
    let child = dir.join("child.qcow");
    {
        let mut data = vec![0x5au8; 8 * MIB as usize];
        data[MIB as usize..2 * MIB as usize].fill(0x11);
        std::fs::write(&raw, data).unwrap();
    }
    if compressed {
        // qemu-img 10 cannot write compressed qcow; diskferry's is what qemu reads.
        run_ok(&[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow",
            s(&raw),
            s(&base),
        ]);
    } else {
        qemu_img_ok(&[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow",
            s(&raw),
            s(&base),
        ]);
    }
    std::fs::remove_file(&raw).unwrap();
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "qcow",
        "-b",
        "base.qcow",
        "-F",
        "qcow",
        s(&child),
    ]);
    (base, child)
}

#[test]
fn writes_in_place_match_qemu_io() {
    if !have_qemu("writes_in_place_match_qemu_io") {
        return;
    }
    let gate = Gate::anywhere();
    // Into a compressed image, a plain one, and a child over a backing file.
    for (compressed, into_child) in [(true, false), (false, false), (false, true), (true, true)] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let pick = |d: &Path| {
            let (base, child) = images(d, compressed);
            if into_child { child } else { base }
        };
        let (ours, theirs) = (pick(&a), pick(&b));
        let w = writes();
        let mut m = FORMAT.driver().open_mut(&ours, &ctx(&gate)).unwrap();
        for (off, data) in &w {
            m.write_at(*off, data).unwrap();
        }
        m.clear(3 * MIB, 64 * 1024, Clear::Zero).unwrap();
        m.clear(4 * MIB + 100, 300, Clear::Zero).unwrap();
        m.flush().unwrap();
        drop(m);
        let mut cmds = write_cmds(&w, dir.path());
        cmds.push(format!("write -z {} 65536", 3 * MIB));
        cmds.push(format!("write -z {} 300", 4 * MIB + 100));
        qemu_io(&theirs, &cmds);
        assert!(
            qemu_compare("qcow", &ours, "qcow", &theirs),
            "compressed={compressed} child={into_child}: content differs from qemu-io's"
        );
        // Deallocate in the child brings the backing file's bytes back.
        if into_child {
            let mut m = FORMAT.driver().open_mut(&ours, &ctx(&gate)).unwrap();
            m.clear(0, 4096, Clear::Deallocate).unwrap();
            m.clear(2 * MIB - 1024, 2048, Clear::Deallocate).unwrap();
            m.flush().unwrap();
            drop(m);
            let (_, got) = read_image_head(&ours, 8 * MIB);
            let (_, base) = read_image_head(&a.join("base.qcow"), 8 * MIB);
            for r in [0..4096usize, (2 << 20) - 1024..(2 << 20) + 1024] {
                assert!(
                    got[r.clone()] == base[r.clone()],
                    "{r:?} does not read the base"
                );
            }
        }
        let info = qemu_img_ok(&["info", "-f", "qcow", s(&ours)]);
        assert!(info.contains("virtual size: 8 MiB"), "{info}");
    }
}

#[test]
fn rebase_unsafe_points_at_the_new_backing_file() {
    if !have_qemu("rebase_unsafe_points_at_the_new_backing_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = images(dir.path(), false);
    let other = dir.path().join("other-with-a-longer-name.qcow");
    qemu_img_ok(&["create", "-q", "-f", "qcow", s(&other), "8M"]);
    qemu_io(&other, &["write -P 0x77 0 8M".into()]);
    let gate = Gate::anywhere();
    let name = "other-with-a-longer-name.qcow";
    FORMAT
        .driver()
        .set_backing(
            &child,
            Some(&NewBacking {
                name: name.into(),
                format: Some(FORMAT),
            }),
            &ctx(&gate),
        )
        .unwrap();
    let info = qemu_img_ok(&["info", "--output=json", "-f", "qcow", s(&child)]);
    assert!(
        info.contains(&format!("\"backing-filename\": \"{name}\"")),
        "{info}"
    );
    assert!(qemu_compare("qcow", &child, "qcow", &other));
    // Writes after it append past the name, and qemu reads them.
    let mut m = FORMAT.driver().open_mut(&child, &ctx(&gate)).unwrap();
    m.write_at(4096, &[0x99; 4096]).unwrap();
    m.flush().unwrap();
    drop(m);
    qemu_io(
        &child,
        &[
            "read -P 0x99 4096 4096".into(),
            "read -P 0x77 0 4096".into(),
        ],
    );
    assert!(
        FORMAT
            .driver()
            .set_backing(
                &child,
                Some(&NewBacking {
                    name: "missing.qcow".into(),
                    format: None
                }),
                &ctx(&gate)
            )
            .is_err()
    );
    FORMAT
        .driver()
        .set_backing(&child, None, &ctx(&gate))
        .unwrap();
    let info = qemu_img_ok(&["info", "--output=json", "-f", "qcow", s(&child)]);
    assert!(!info.contains("backing-filename"), "{info}");
    let (_, got) = read_image_head(&child, 8 * MIB);
    assert!(got[4096..8192].iter().all(|&b| b == 0x99));
    assert!(got[..4096].iter().all(|&b| b == 0));
    let _ = base;
}

#[test]
fn measure_predicts_the_files_diskferry_writes() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let size = 100 * MIB + 512;
    let regions = [
        (0u64, 3 * 4096 + 7),
        (2 * MIB - 100, 300),
        (90 * MIB, 5 * MIB),
    ];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(size).unwrap();
        for (i, (o, l)) in regions.iter().enumerate() {
            f.write_all_at(&pseudo_random(*l as usize, i as u64 + 3), *o)
                .unwrap();
        }
    }
    let allocated: Vec<std::ops::Range<u64>> = regions.iter().map(|(o, l)| *o..o + l).collect();
    let options = FormatOptions::empty(FORMAT);
    let m = FORMAT
        .driver()
        .measure(&MeasureRequest {
            virtual_size: size,
            allocated: &allocated,
            options: &options,
            source_bitmaps: None,
        })
        .unwrap();
    let out = dir.path().join("o.qcow");
    run_ok(&["convert", "-O", "qcow", s(&raw), s(&out)]);
    assert_eq!(m.required, std::fs::metadata(&out).unwrap().len());
    let empty = dir.path().join("e.qcow");
    run_ok(&["create", "-f", "qcow", s(&empty), &size.to_string()]);
    let none = FORMAT
        .driver()
        .measure(&MeasureRequest {
            virtual_size: size,
            allocated: &[],
            options: &options,
            source_bitmaps: None,
        })
        .unwrap();
    assert_eq!(none.required, std::fs::metadata(&empty).unwrap().len());
    // Fully allocated: every byte of a random disk.
    let full_raw = dir.path().join("full.raw");
    std::fs::write(&full_raw, pseudo_random(3 * MIB as usize + 512, 9)).unwrap();
    let full = dir.path().join("full.qcow");
    run_ok(&["convert", "-O", "qcow", s(&full_raw), s(&full)]);
    let all = FORMAT
        .driver()
        .measure(&MeasureRequest {
            virtual_size: 3 * MIB + 512,
            allocated: &[],
            options: &options,
            source_bitmaps: None,
        })
        .unwrap();
    assert_eq!(all.fully_allocated, std::fs::metadata(&full).unwrap().len());
}

// --- kill -9 at random points -------------------------------------------------------------

/// The work of the kill tests' helper processes (a no-op as an ordinary test).
#[test]
fn zz_kill_helper() {
    let Some(job) = helper_job() else { return };
    let (op, path) = job.split_once('|').unwrap();
    let path = Path::new(path);
    match op {
        "write" => apply_mut(FORMAT, path, &strided_writes(256, 8192, 5000)),
        "rebase" => rebase_in_turn(FORMAT, path, ["base.qcow", "other.qcow"], 100, None),
        _ => panic!("unknown operation {op}"),
    }
}

/// Kills `op` (a job of `zz_kill_helper`) on a child of a fresh chain each round. diskferry
/// cannot check qcow, so each survivor must open with qemu-img and read (with diskferry) the
/// old content or, for writes, the new.
fn kill_loop(test: &str, op: &str, compressed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let prepare = |round: u64| {
        let d = dir.path().join(format!("r{round}"));
        std::fs::create_dir_all(&d).unwrap();
        let (base, child) = images(&d, compressed);
        std::fs::copy(&base, d.join("other.qcow")).unwrap();
        child
    };
    let rounds = KillRounds {
        test,
        format: "qcow",
        survivor: Survivor::JudgedByVerify,
        job: op,
        max_ms: 40,
    };
    rounds.on(&prepare, &|round, child| {
        let (code, out, err) = qemu_img(&["info", "-f", "qcow", s(child)]);
        assert_eq!(code, 0, "{op} round {round}: {out}{err}");
        let (_, content) = read_image_head(child, 8 * MIB);
        let ok = content.iter().enumerate().all(|(i, &b)| {
            let old = if (MIB as usize..2 * MIB as usize).contains(&i) {
                0x11
            } else {
                0x5a
            };
            b == old || (op == "write" && b == 0xab)
        });
        assert!(ok, "{op} round {round}: neither old nor new content");
    });
}

#[test]
fn kill_9_during_writes_leaves_old_or_new_content() {
    let test = "kill_9_during_writes_leaves_old_or_new_content";
    if have_qemu(test) {
        kill_loop(test, "write", true);
    }
}

#[test]
fn kill_9_during_rebase_leaves_a_working_chain() {
    let test = "kill_9_during_rebase_leaves_a_working_chain";
    if have_qemu(test) {
        kill_loop(test, "rebase", false);
    }
}
