//! `compare -p` (issue 15): progress records as qemu-img 10 prints them while it compares,
//! run with qemu-img and with diskferry linked as `qemu-img` on the same images, standard
//! output compared byte for byte. qemu-img prints a record after each range both images leave
//! zero and after each piece of at most 2 MiB it reads, once progress has moved more than 2%
//! (on a 64 MiB pair: one record per 2 MiB of data, 3.12% apart); the size warning comes
//! between the common part and the larger image's rest, and a difference ends the records
//! where it is found, without a 100% record.

mod common;

use common::*;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Images of 64 MiB and one of 32 MiB, made by qemu-img and qemu-io in `dir`.
fn images(dir: &Path) {
    let make = |name: &str, fmt: &str, size: &str, cmds: &[&str]| {
        let p = dir.join(name);
        qemu_img_ok(&["create", "-q", "-f", fmt, s(&p), size]);
        if !cmds.is_empty() {
            qemu_io(fmt, &p, cmds);
        }
    };
    make("full.raw", "raw", "64M", &["write -P 0x11 0 64M"]);
    make("full2.raw", "raw", "64M", &["write -P 0x11 0 64M"]);
    // Data, 32 MiB of holes, data: a record per 2 MiB of data, one for the holes.
    make(
        "mixed.raw",
        "raw",
        "64M",
        &["write -P 0x22 0 16M", "write -P 0x33 48M 4M"],
    );
    make(
        "mixed.qcow2",
        "qcow2",
        "64M",
        &["write -P 0x22 0 16M", "write -P 0x33 48M 4M"],
    );
    // Differs from mixed.raw at 9 MiB, and within a sector further on (invoked as
    // qemu-img, diskferry names the sector a difference is in, as qemu-img does).
    make(
        "differs.raw",
        "raw",
        "64M",
        &[
            "write -P 0x22 0 16M",
            "write -P 0x33 48M 4M",
            "write -P 0x44 9M 512",
        ],
    );
    make(
        "differs-mid-sector.raw",
        "raw",
        "64M",
        &[
            "write -P 0x22 0 16M",
            "write -P 0x33 48M 4M",
            "write -P 0x44 9437189 3",
        ],
    );
    make("half.raw", "raw", "32M", &[]);
    // Zeros written (data) past 32 MiB: the rest of the larger image is read, in records.
    make("zero-tail.raw", "raw", "64M", &["write -P 0 32M 16M"]);
    make("empty.qcow2", "qcow2", "64M", &[]);
    // Zero bytes: qemu-img prints its first record and the verdict, no 100% record.
    make("nothing.raw", "raw", "0", &[]);
    make("nothing2.raw", "raw", "0", &[]);
    make("zeroed.qcow2", "qcow2", "64M", &["write -z 0 64M"]);
}

#[test]
fn compare_progress_records_are_qemu_imgs_byte_for_byte() {
    let test = "compare_progress_records_are_qemu_imgs_byte_for_byte";
    if !have_qemu(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let twin = Twin::new(d.path(), images);
    let cases: &[&[&str]] = &[
        &["full.raw", "full2.raw"],
        &["mixed.raw", "mixed.qcow2"],
        &["mixed.raw", "differs.raw"],
        &["mixed.raw", "differs-mid-sector.raw"],
        // Sizes differ: the warning between the records, then the rest of the larger image.
        &["zero-tail.raw", "half.raw"],
        &["half.raw", "zero-tail.raw"],
        &["empty.qcow2", "half.raw"],
        // Sizes differ and the common part does not match: no warning at all.
        &["mixed.raw", "half.raw"],
        &["-s", "mixed.raw", "half.raw"],
        &["-s", "empty.qcow2", "zeroed.qcow2"],
        &["-f", "raw", "-F", "raw", "nothing.raw", "nothing2.raw"],
    ];
    for case in cases {
        let mut args = vec!["compare", "-p"];
        args.extend_from_slice(case);
        let (q, d) = twin.same("qemu-img 10", &args, Stdout::Exact);
        // The records are there to compare: the runs are not all alike.
        if *case == ["full.raw", "full2.raw"] {
            let p = percentages(&d.1);
            assert_eq!(p.len(), 33, "{:?}", d.1);
            assert_eq!(p[1], 3.12, "{:?}", d.1);
        }
        assert_eq!(q.1, d.1);
    }
    // Without -p nothing but the verdict (and the warning only where qemu-img prints it).
    for case in [["mixed.raw", "half.raw"], ["half.raw", "zero-tail.raw"]] {
        let mut args = vec!["compare"];
        args.extend_from_slice(&case);
        twin.same("qemu-img 10", &args, Stdout::Exact);
    }
}

#[test]
fn compare_progress_on_a_larger_image_prints_a_record_per_two_percent_moved() {
    let test = "compare_progress_on_a_larger_image_prints_a_record_per_two_percent_moved";
    if !have_qemu(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // 200 MiB: each 2 MiB piece is exactly 1%, so a record comes every third piece (more than
    // 2% moved), not every piece and not every other one.
    let twin = Twin::new(d.path(), |dir| {
        for name in ["a.raw", "b.raw"] {
            let p = dir.join(name);
            qemu_img_ok(&["create", "-q", "-f", "raw", s(&p), "200M"]);
            qemu_io("raw", &p, &["write -P 0x55 0 150M"]);
        }
    });
    let (_, d) = twin.same(
        "qemu-img 10",
        &["compare", "-p", "a.raw", "b.raw"],
        Stdout::Exact,
    );
    let p = percentages(&d.1);
    assert_eq!(&p[..4], &[0.0, 3.0, 6.0, 9.0], "{:?}", d.1);
    assert_eq!(p.last(), Some(&100.0));
}
