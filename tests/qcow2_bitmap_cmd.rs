//! `bitmap` (qemu-img's command for persistent dirty bitmaps, which oVirt/vdsm and backup
//! tools run for incremental backups): each operation and their combinations run by
//! qemu-img 10 and by diskferry linked as `qemu-img` on copies of the same images, judged on
//! what a script and qemu see afterwards: the exit code and the message, the bitmaps
//! `qemu-img info` lists (name, granularity, flags), the bits qemu-storage-daemon loads
//! (digest and dirty count), and a clean `qemu-img check`. Then a `kill -9` at every write
//! must leave an image that opens, holds the old or the new bitmaps and that
//! `qemu-img check -r all` repairs (leaks at most).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// The test hook of src/formats/qcow2/edit: abort after the N-th write.
const ABORT_AFTER: &str = "DISKFERRY_TEST_EDIT_ABORT_AFTER";

fn qio(img: &Path, cmds: &[&str]) {
    qemu_io("qcow2", img, cmds);
}

/// qemu names the image by its block node (`#block123`, a counter) where diskferry names
/// the file: both read as the file name `file`.
fn normalized(stderr: &str, file: &str) -> String {
    let mut out = String::new();
    let mut rest = stderr;
    while let Some(i) = rest.find("#block") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 6..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.push_str(file);
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// How the messages of a run are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    /// Word for word (after [`normalized`]).
    Same,
    /// Exit code only: an open failure, which diskferry words its own way.
    CodeOnly,
}

/// The images of a run: `img.qcow2` (64 MiB, bitmaps `a` 64k, `small` 4k, `big` 128k, all
/// dirty in places, and `frozen`, disabled, dirty elsewhere), `other.qcow2` (64 MiB, bitmap
/// `x` 32k), `half.qcow2` (32 MiB, bitmap `x`), `c512.qcow2`, `c8k.qcow2` and `c2m.qcow2`
/// (those cluster sizes), `r.img` (raw) and `v2.qcow2` (compat=0.10).
fn setup(d: &Path) {
    let img = d.join("img.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&img), "64M"]);
    qemu_img_ok(&["bitmap", "--add", s(&img), "a"]);
    qemu_img_ok(&["bitmap", "--add", "-g", "4k", s(&img), "small"]);
    qemu_img_ok(&["bitmap", "--add", "-g", "128k", s(&img), "big"]);
    qio(
        &img,
        &["write 1M 64k", "write 10M 4k", "write 63M 512", "write 0 1"],
    );
    qemu_img_ok(&["bitmap", "--add", s(&img), "frozen"]);
    qio(&img, &["write 20M 1M", "write 40M 8k"]);
    qemu_img_ok(&["bitmap", "--disable", s(&img), "frozen"]);
    qio(&img, &["write 50M 4k"]);
    let other = d.join("other.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&other), "64M"]);
    qemu_img_ok(&["bitmap", "--add", "-g", "32k", s(&other), "x"]);
    qio(&other, &["write 5M 64k", "write 33M 4k"]);
    let half = d.join("half.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&half), "32M"]);
    qemu_img_ok(&["bitmap", "--add", s(&half), "x"]);
    // The default granularity follows the cluster size, kept within 4 KiB to 64 KiB.
    for (name, cluster) in [
        ("c512.qcow2", "512"),
        ("c8k.qcow2", "8k"),
        ("c2m.qcow2", "2M"),
    ] {
        let o = format!("cluster_size={cluster}");
        qemu_img_ok(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &o,
            s(&d.join(name)),
            "64M",
        ]);
    }
    qemu_img_ok(&["create", "-q", "-f", "raw", s(&d.join("r.img")), "64M"]);
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        s(&d.join("v2.qcow2")),
        "64M",
    ]);
}

/// Runs `bitmap ARGS` in both folders and asserts that the exit codes, the messages (as
/// `how` says) and, for a qcow2 `file`, the bitmaps listed and loaded are the same, and that
/// diskferry's image is clean.
fn same(t: &Twin, args: &[&str], file: &str, how: Message, loads: bool) {
    let mut all = vec!["bitmap"];
    all.extend_from_slice(args);
    let (q, d) = t.run(&all);
    assert_eq!(
        d.0, q.0,
        "bitmap {args:?}: exit codes differ\nqemu-img: {q:?}\ndiskferry: {d:?}"
    );
    assert_eq!(d.1, q.1, "bitmap {args:?}: standard output");
    if how == Message::Same {
        assert_eq!(
            d.2,
            normalized(&q.2, file),
            "bitmap {args:?}: messages differ"
        );
    }
    if !file.ends_with(".qcow2") {
        return;
    }
    let (qf, df) = (t.q.join(file), t.d.join(file));
    assert_eq!(
        info_bitmaps(&df),
        info_bitmaps(&qf),
        "bitmap {args:?}: qemu-img info lists other bitmaps"
    );
    let (code, out, err) = qemu_img(&["check", s(&df)]);
    assert_eq!(code, 0, "bitmap {args:?}: check of ours: {out}{err}");
    if loads {
        assert_eq!(
            loaded_bitmaps(&df),
            loaded_bitmaps(&qf),
            "bitmap {args:?}: qemu loads other bits"
        );
    }
}

#[test]
fn every_operation_and_combination_does_what_qemu_img_does() {
    if !peers("every_operation_and_combination_does_what_qemu_img_does") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Twin::new(dir.path(), setup);
    let long = "n".repeat(1024);
    let longest = "m".repeat(1023);
    use Message::*;
    let img = "img.qcow2";
    #[rustfmt::skip]
    let runs: Vec<(Vec<&str>, &str, Message)> = vec![
        // Usage, checked in qemu-img's order before the image is opened.
        (vec![img, "a"], img, Same),
        (vec!["--add", img], img, Same),
        (vec!["--add", img, "a", "b"], img, Same),
        (vec!["-g", "512", "--remove", img, "a"], img, Same),
        (vec!["-F", "qcow2", "--merge", "x", img, "a"], img, Same),
        (vec!["-b", "other.qcow2", "--add", img, "q"], img, Same),
        (vec!["--add", "-g", "abc", img, "q"], img, Same),
        (vec!["--add", "-g", "-1", img, "q"], img, Same),
        (vec!["--add", "-g", "17E", img, "q"], img, Same),
        // --add: default granularity (the cluster size, within 4k..64k), -g, bad names.
        (vec!["--add", img, "n1"], img, Same),
        (vec!["--add", "-g", "512", img, "n2"], img, Same),
        (vec!["--add", "-g", "2G", img, "n3"], img, Same),
        (vec!["--add", "-g", "0", img, "n4"], img, Same),
        (vec!["--add", "-g", "6G", img, "n5"], img, Same),
        (vec!["--add", "-g", "1000", img, "q"], img, Same),
        (vec!["--add", "-g", "4G", img, "q"], img, Same),
        (vec!["--add", "-g", "1.5k", img, "q"], img, Same),
        (vec!["--add", img, "a"], img, Same),
        (vec!["--add", img, ""], img, Same),
        (vec!["--add", img, &long], img, Same),
        (vec!["--add", img, &longest], img, Same),
        // Order: --add --disable makes a frozen bitmap; --disable --add fails first; a
        // failure keeps what the operations before it did.
        (vec!["--add", "--disable", img, "n6"], img, Same),
        (vec!["--disable", "--add", img, "n7"], img, Same),
        (vec!["--add", "--add", img, "n8"], img, Same),
        (vec!["--add", "--remove", "--add", "--disable", img, "n9"], img, Same),
        // Missing bitmaps.
        (vec!["--remove", img, "nope"], img, Same),
        (vec!["--clear", img, "nope"], img, Same),
        (vec!["--enable", img, "nope"], img, Same),
        (vec!["--disable", img, "nope"], img, Same),
        (vec!["--merge", "nope", img, "a"], img, Same),
        (vec!["--merge", "a", img, "nope"], img, Same),
        // Merges within the image: finer into coarser, coarser into finer, into itself,
        // into a new one, into a disabled one.
        (vec!["--merge", "small", img, "a"], img, Same),
        (vec!["--merge", "big", img, "small"], img, Same),
        (vec!["--merge", "a", img, "a"], img, Same),
        (vec!["--add", "--merge", "frozen", "--merge", "big", img, "n10"], img, Same),
        (vec!["--merge", "a", img, "frozen"], img, Same),
        (vec!["--merge", "small", "--disable", img, "n2"], img, Same),
        // Merges from another image, with and without -F; other sizes; missing ones.
        (vec!["--merge", "x", "-b", "other.qcow2", img, "n1"], img, Same),
        (vec!["--merge", "x", "-b", "other.qcow2", "-F", "qcow2", img, "n3"], img, Same),
        (vec!["--merge", "x", "-b", "other.qcow2", img, "n2"], img, Same),
        (vec!["--merge", "x", "-b", "half.qcow2", img, "n1"], img, Same),
        (vec!["--merge", "nope", "-b", "other.qcow2", img, "n1"], img, Same),
        (vec!["--merge", "x", "-b", "r.img", "-F", "raw", img, "n1"], img, Same),
        (vec!["--add", "--merge", "x", "-b", "missing.qcow2", img, "n11"], img, CodeOnly),
        // Clear, enable, disable.
        (vec!["--clear", img, "big"], img, Same),
        (vec!["--enable", img, "frozen"], img, Same),
        (vec!["--disable", img, "a"], img, Same),
        (vec!["--enable", "--enable", img, "a"], img, Same),
        (vec!["--clear", "--merge", "small", img, "a"], img, Same),
        // Removal, of new and old bitmaps.
        (vec!["--remove", img, "n2"], img, Same),
        (vec!["--add", "--remove", img, "tmp"], img, Same),
        (vec!["--remove", "--remove", img, "n3"], img, Same),
        (vec!["--remove", img, &longest], img, Same),
        // Default granularities of other cluster sizes.
        (vec!["--add", "c512.qcow2", "d"], "c512.qcow2", Same),
        (vec!["--add", "c8k.qcow2", "d"], "c8k.qcow2", Same),
        (vec!["--add", "--merge", "x", "-b", "other.qcow2", "c2m.qcow2", "d"], "c2m.qcow2", Same),
        // Formats without bitmaps, and qcow2 version 2.
        (vec!["--add", "-f", "raw", "r.img", "b"], "r.img", Same),
        (vec!["--remove", "-f", "raw", "r.img", "b"], "r.img", Same),
        (vec!["--merge", "x", "-f", "raw", "r.img", "b"], "r.img", Same),
        (vec!["--add", "v2.qcow2", "b"], "v2.qcow2", Same),
        (vec!["--remove", "v2.qcow2", "b"], "v2.qcow2", Same),
        (vec!["--add", "--image-opts", "driver=qcow2,file.filename=other.qcow2", "y"], "other.qcow2", Same),
        (vec!["--add", "-f", "qcow2", "--image-opts", "driver=qcow2,file.filename=other.qcow2", "z"], "other.qcow2", Same),
    ];
    for (args, file, how) in &runs {
        same(&t, args, file, *how, true);
    }
    // Every bitmap removed, the last one too: the extension goes, the image stays clean.
    let listed = info_bitmaps(&t.q.join(img));
    for b in listed.as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        same(&t, &["--remove", img, name], img, Message::Same, true);
    }
    assert!(info_bitmaps(&t.d.join(img)).is_null());
    same(&t, &["--add", img, "again"], img, Message::Same, true);
}

#[test]
fn merging_from_the_image_itself_named_by_b_fails_as_in_qemu_img() {
    if !peers("merging_from_the_image_itself_named_by_b_fails_as_in_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Twin::new(dir.path(), setup);
    let img = "img.qcow2";
    // qemu-img holds the image open for writing and fails on its own lock when -b opens it
    // again, whatever the spelling; diskferry refuses it in the same words and changes
    // nothing (read through -b, the source's tables could be ones an earlier --clear freed).
    #[rustfmt::skip]
    let runs: Vec<Vec<&str>> = vec![
        vec!["--merge", "a", "-b", img, img, "n1"],
        vec!["--merge", "a", "-b", "./img.qcow2", "-F", "qcow2", img, "small"],
        vec!["--clear", "--merge", "a", "-b", img, img, "a"],
        vec!["--add", "--merge", "big", "-b", img, img, "n2"],
    ];
    for args in &runs {
        same(&t, args, img, Message::Same, true);
    }
    // Under diskferry's own name: one line naming -b's file and what to do instead.
    let path = t.d.join(img);
    let (code, _, err) = run(&["bitmap", "--merge", "a", "-b", s(&path), s(&path), "small"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("is the image being changed") && err.contains("leave -b out"),
        "{err}"
    );
    same(
        &t,
        &["--merge", "a", img, "small"],
        img,
        Message::Same,
        true,
    );
}

#[test]
fn the_library_refuses_a_merge_source_that_is_the_image_being_changed() {
    use diskferry::edit::{BitmapEdit, BitmapOp, EditContext, Force};
    use diskferry::image::{Image, OpenOptions};
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img.qcow2");
    // Through a hard link too: the file, not its name, is what matters.
    let link = dir.path().join("link.qcow2");
    let (code, _, err) = run(&["create", "-f", "qcow2", s(&img), "64M"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["bitmap", "--add", s(&img), "a"]);
    assert_eq!(code, 0, "{err}");
    std::fs::hard_link(&img, &link).unwrap();
    let source = Image::open(&link, &OpenOptions::default()).unwrap();
    let ops = [BitmapOp::Clear, BitmapOp::Merge("a".into())];
    let edit = BitmapEdit {
        name: "a",
        ops: &ops,
        source: Some(&source),
    };
    let gate = diskferry::gate::Gate::confined();
    let ctx = EditContext {
        gate: &gate,
        force: Force::No,
    };
    let before = std::fs::read(&img).unwrap();
    let err = source
        .top()
        .format()
        .driver()
        .edit_bitmaps(&img, &edit, &ctx)
        .unwrap_err();
    assert!(
        err.to_string().contains("is the image being changed"),
        "{err}"
    );
    assert_eq!(std::fs::read(&img).unwrap(), before, "nothing changed");
}

/// Flags the bitmaps of `img` in use as qemu leaves them when killed while it has the image
/// open for writing (it flags them when it opens the image and clears the flag when it
/// closes it).
fn leave_in_use(img: &Path) {
    let mut child = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write 0 64k", "-c", "sleep 100000"])
        .arg(img)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // qemu-io flags them as it opens the image, before the write.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let info = qemu_img_ok(&["info", "-U", "--output=json", s(img)]);
        if info.contains("in-use") || std::time::Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn inconsistent_bitmaps_can_only_be_removed_as_in_qemu_img() {
    if !peers("inconsistent_bitmaps_can_only_be_removed_as_in_qemu_img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Twin::new(dir.path(), |d| {
        let img = d.join("img.qcow2");
        qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&img), "64M"]);
        qemu_img_ok(&["bitmap", "--add", s(&img), "a"]);
        qemu_img_ok(&["bitmap", "--add", s(&img), "b"]);
        qio(&img, &["write 3M 64k"]);
        leave_in_use(&img);
        let info = qemu_img_ok(&["info", "--output=json", s(&img)]);
        assert!(info.contains("in-use"), "{info}");
    });
    let img = "img.qcow2";
    use Message::Same;
    #[rustfmt::skip]
    let runs: Vec<Vec<&str>> = vec![
        vec!["--add", img, "a"],
        vec!["--clear", img, "a"],
        vec!["--enable", img, "a"],
        vec!["--disable", img, "a"],
        vec!["--add", img, "c"],
        vec!["--merge", "a", img, "c"],
        vec!["--merge", "c", img, "a"],
        vec!["--add", "--merge", "b", img, "d"],
        vec!["--remove", img, "a"],
    ];
    // qemu cannot load an inconsistent bitmap's bits: the lists and the check judge.
    for args in &runs {
        same(&t, args, img, Same, false);
    }
    same(&t, &["--remove", img, "b"], img, Same, true);
    // diskferry's own wording names the file and says what to do.
    let (code, _, err) = run(&["bitmap", "--clear", s(&t.d.join(img)), "zz"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "diskferry: {}: Operation clear on bitmap zz failed: Dirty bitmap 'zz' not found",
            t.d.join(img).display()
        )),
        "{err}"
    );
}

#[test]
fn diskferrys_own_name_words_failures_as_its_other_commands_do() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img.qcow2");
    let (code, _, err) = run(&["create", "-f", "qcow2", s(&img), "64M"]);
    assert_eq!(code, 0, "{err}");
    let ok = |args: &[&str]| {
        let mut a = vec!["bitmap"];
        a.extend_from_slice(args);
        let (code, _, err) = run(&a);
        assert_eq!(code, 0, "{args:?}: {err}");
    };
    let fails = |args: &[&str], says: &str| {
        let mut a = vec!["bitmap"];
        a.extend_from_slice(args);
        let (code, out, err) = run(&a);
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with(says), "{args:?}: {err}");
    };
    let file = format!("diskferry: {}: ", img.display());
    ok(&["--add", "-g", "1M", s(&img), "b"]);
    fails(
        &["--add", s(&img), "b"],
        &format!("{file}Operation add on bitmap b failed: Bitmap already exists: b"),
    );
    // Past 2G is refused for what it is (qemu-img cuts -g to 32 bits first: 4G and 8G read
    // as 0, 6G as 2G).
    fails(
        &["--add", "-g", "4G", s(&img), "c"],
        &format!(
            "{file}Operation add on bitmap c failed: Granularity exceeds maximum (2147483648 bytes)"
        ),
    );
    fails(
        &["--add", "-g", "8G", s(&img), "c"],
        &format!("{file}Operation add on bitmap c failed: Granularity exceeds maximum"),
    );
    fails(
        &["--add", s(&img)],
        "diskferry: Expecting filename and bitmap name",
    );
    ok(&["--disable", "--clear", "--enable", s(&img), "b"]);
    let raw = dir.path().join("r.img");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    fails(
        &["--add", "-f", "raw", s(&raw), "b"],
        &format!(
            "diskferry: {}: Operation add on bitmap b failed: Can't store persistent bitmaps to {}: Operation not supported",
            raw.display(),
            raw.display()
        ),
    );
}

/// Runs diskferry's `bitmap ARGS` with the process aborted after write `n`: true when it
/// finished first.
fn run_aborted(args: &[&str], n: u64) -> bool {
    let out = diskferry()
        .arg("bitmap")
        .args(args)
        .env(ABORT_AFTER, n.to_string())
        .output()
        .unwrap();
    if out.status.code().is_none() {
        return false;
    }
    assert!(
        out.status.success(),
        "bitmap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

#[test]
fn bitmap_changes_killed_at_any_write_leave_the_old_or_the_new_bitmaps() {
    if !peers("bitmap_changes_killed_at_any_write_leave_the_old_or_the_new_bitmaps") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let img = d.join("img.qcow2");
    // An image without bitmaps, for the first --add and the last --remove, which rewrite the
    // header rather than the extension's 24 bytes.
    let bare = d.join("bare.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&bare), "64M"]);
    let one = d.join("one.qcow2");
    std::fs::copy(&bare, &one).unwrap();
    qemu_img_ok(&["bitmap", "--add", s(&one), "only"]);
    qio(&one, &["write 7M 64k"]);
    let other = d.join("other.qcow2");
    type Case<'a> = (&'a Path, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (&bare, vec!["--add", "--disable", "{}", "first"]),
        (&one, vec!["--remove", "{}", "only"]),
        (
            &img,
            vec!["--add", "--merge", "small", "--merge", "big", "{}", "n"],
        ),
        (
            &img,
            vec!["--clear", "--merge", "x", "-b", s(&other), "{}", "a"],
        ),
        (&img, vec!["--remove", "{}", "small"]),
        (&img, vec!["--disable", "{}", "a"]),
    ];
    for (orig, args) in cases {
        let before = loaded_bitmaps(orig);
        let mut tried = 0;
        let mut n = 1u64;
        let mut states = Vec::new();
        let after = loop {
            let crash = d.join("crash.qcow2");
            std::fs::copy(orig, &crash).unwrap();
            let a: Vec<&str> = args
                .iter()
                .map(|x| if *x == "{}" { s(&crash) } else { x })
                .collect();
            let finished = run_aborted(&a, n);
            tried += 1;
            // It opens, and check finds leaks at most (exit 3), which -r all repairs.
            let (code, out, err) = qemu_img(&["check", s(&crash)]);
            assert!(
                code == 0 || code == 3,
                "bitmap {args:?} aborted after write {n}: {out}{err}"
            );
            qemu_img_ok(&["check", "-r", "all", s(&crash)]);
            let (code, out, err) = qemu_img(&["check", s(&crash)]);
            assert_eq!(code, 0, "after -r all: {out}{err}");
            let now = loaded_bitmaps(&crash);
            if finished {
                break now;
            }
            states.push((n, now));
            n += 1;
            assert!(tried < 300, "bitmap {args:?} never finished");
        };
        assert_ne!(after, before, "bitmap {args:?} changed nothing");
        // Before the header's switch the old bitmaps, after it the new ones: never a mix, and
        // never back.
        let switched = states
            .iter()
            .position(|(_, b)| *b == after)
            .unwrap_or(states.len());
        for (i, (n, state)) in states.iter().enumerate() {
            let want = if i < switched { &before } else { &after };
            assert_eq!(
                state, want,
                "bitmap {args:?} aborted after write {n}: neither the old nor the new bitmaps"
            );
        }
        eprintln!("bitmap {args:?}: aborted at {} points", tried - 1);
    }
}
