//! diskferry as a drop-in for qemu-img (issue 15): the same invocation run with qemu-img and
//! with diskferry linked as `qemu-img`, comparing what scripts read: exit codes, standard
//! output, the progress lines, the created images.

mod common;

use common::*;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_version_line_is_qemu_imgs_when_invoked_as_qemu_img() {
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    let (code, out, _) = run_prog(&fake, &["--version"]);
    assert_eq!(code, 0);
    let first = out.lines().next().unwrap();
    // cinder (cinder/image/image_utils.py, get_qemu_img_version) matches
    // r"qemu-img version ([0-9\.]*)" on this line; vdsm's qemuimg.version likewise.
    assert!(
        first.starts_with("qemu-img version 10.0.2 (diskferry "),
        "{first}"
    );
    let (_, own, _) = run(&["--version"]);
    assert!(own.starts_with("diskferry "), "{own}");
}

#[test]
fn create_prints_qemu_imgs_formatting_line_for_every_format() {
    if !have_qemu("create_prints_qemu_imgs_formatting_line_for_every_format") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    for (fmt, opts) in [
        ("raw", ""),
        ("qcow2", ""),
        ("qcow2", "cluster_size=2M,compat=0.10"),
        (
            "qcow2",
            "lazy_refcounts=on,refcount_bits=64,preallocation=metadata",
        ),
        ("vpc", ""),
        ("vpc", "subformat=fixed"),
        ("vmdk", ""),
        ("vmdk", "subformat=streamOptimized,adapter_type=lsilogic"),
        ("vhdx", ""),
        ("vdi", ""),
        ("vdi", "static=on"),
        ("qcow", ""),
    ] {
        let theirs = d.path().join(format!("theirs.{fmt}"));
        let ours = d.path().join(format!("ours.{fmt}"));
        let mut a = vec!["create", "-f", fmt];
        if !opts.is_empty() {
            a.extend(["-o", opts]);
        }
        let mut ta = a.clone();
        ta.extend([s(&theirs), "3M"]);
        let mut oa = a.clone();
        oa.extend([s(&ours), "3M"]);
        let (qc, qout, qerr) = qemu_img(&ta);
        let (dc, dout, derr) = run_prog(&fake, &oa);
        assert_eq!(qc, 0, "{qerr}");
        assert_eq!(dc, 0, "{derr}");
        assert_eq!(
            dout.replace("ours.", "theirs."),
            qout,
            "create -f {fmt} -o {opts}"
        );
        std::fs::remove_file(&theirs).unwrap();
        std::fs::remove_file(&ours).unwrap();
    }
    // -q silences it, as qemu-img's.
    let q = d.path().join("q.raw");
    let (code, out, _) = run_prog(&fake, &["create", "-q", "-f", "raw", s(&q), "1M"]);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn create_with_a_backing_file_prints_it_as_qemu_img_does() {
    if !have_qemu("create_with_a_backing_file_prints_it_as_qemu_img_does") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&base), "4M"]);
    let child = d.path().join("child.qcow2");
    // Nova (nova/virt/images.py, create_cow_image) and Proxmox create overlays this way.
    let args = |out: &Path| {
        vec![
            "create".to_string(),
            "-f".into(),
            "qcow2".into(),
            "-b".into(),
            s(&base).into(),
            "-F".into(),
            "qcow2".into(),
            s(out).into(),
        ]
    };
    let a: Vec<String> = args(&child);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let theirs = qemu_img_ok(&a);
    std::fs::remove_file(&child).unwrap();
    let ours = run_ok(&a);
    assert_eq!(ours, theirs);
}

#[test]
fn progress_on_a_pipe_is_qemu_imgs_lines_on_standard_output() {
    if !have_qemu("progress_on_a_pipe_is_qemu_imgs_lines_on_standard_output") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&src), "64M"]);
    let raw = d.path().join("data.raw");
    make_raw(&raw, 64 << 20, &[(0, 8 << 20), (32 << 20, 8 << 20)]);
    qemu_img_ok(&["convert", "-O", "qcow2", s(&raw), s(&src)]);
    // Proxmox (PVE/QemuServer/QemuImage.pm, convert): `qemu-img convert -p -n -f FMT -O FMT
    // SRC DST`, parsing `\((\d+\.\d+)/100%\)` from standard output.
    let dst_q = d.path().join("q.raw");
    let dst_d = d.path().join("d.raw");
    let (qc, qout, _) = qemu_img(&["convert", "-p", "-O", "raw", s(&src), s(&dst_q)]);
    let (dc, dout, derr) = run(&["convert", "-p", "-O", "raw", s(&src), s(&dst_d)]);
    assert_eq!((qc, dc), (0, 0), "{derr}");
    let (q, o) = (percentages(&qout), percentages(&dout));
    assert_eq!(q.first(), Some(&0.0), "{qout:?}");
    assert_eq!(o.first(), Some(&0.0), "{dout:?}");
    assert_eq!(q.last(), Some(&100.0));
    assert_eq!(o.last(), Some(&100.0));
    assert!(o.windows(2).all(|w| w[0] <= w[1]), "{o:?}");
    // Every record has qemu-img's exact shape: four spaces, two decimals, a carriage return;
    // the output ends with a newline after the last.
    for rec in dout.trim_end_matches('\n').split_inclusive('\r') {
        let body = rec.strip_suffix('\r').expect("each record ends with \\r");
        assert!(body.starts_with("    ("), "{rec:?}");
        let pct = body.trim_start().trim_start_matches('(');
        let num = pct.split('/').next().unwrap();
        assert_eq!(num.split('.').nth(1).map(str::len), Some(2), "{rec:?}");
    }
    assert!(dout.ends_with("\r\n"));
    assert!(qemu_compare("raw", &dst_q, "raw", &dst_d));
}

#[test]
fn json_info_names_vhd_vpc_when_invoked_as_qemu_img() {
    if !have_qemu("json_info_names_vhd_vpc_when_invoked_as_qemu_img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    let img = d.path().join("x.vhd");
    qemu_img_ok(&["create", "-q", "-f", "vpc", s(&img), "8M"]);
    // KubeVirt CDI (pkg/image/qemu.go, Info) and oslo.utils (imageutils.QemuImgInfo) run
    // `qemu-img info --output=json FILE` and compare "format" with qemu's driver names.
    let (_, theirs, _) = qemu_img(&["info", "--output=json", s(&img)]);
    let (code, ours, err) = run_prog(&fake, &["info", "--output=json", s(&img)]);
    assert_eq!(code, 0, "{err}");
    let t: serde_json::Value = serde_json::from_str(&theirs).unwrap();
    let o: serde_json::Value = serde_json::from_str(&ours).unwrap();
    for key in ["format", "virtual-size", "filename"] {
        assert_eq!(o[key], t[key], "{key}");
    }
    // Invoked as diskferry, the format keeps its own name.
    let own: serde_json::Value =
        serde_json::from_str(&run_ok(&["info", "--output=json", s(&img)])).unwrap();
    assert_eq!(own["format"], "vhd");
}

#[test]
fn argument_errors_are_one_line_like_every_other_error() {
    let (code, out, err) = run(&["convert", "-Z", "a", "b"]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("diskferry: "), "{err}");
    assert!(
        err.contains("'-Z'") && err.contains("diskferry convert --help"),
        "{err}"
    );
    let (code, _, err) = run(&["conver", "a", "b"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    // compare keeps its error code 2 (1 means "different").
    let (code, _, err) = run(&["compare", "--bogus", "a", "b"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn compare_of_an_image_that_cannot_be_opened_exits_2_under_both_names() {
    let test = "compare_of_an_image_that_cannot_be_opened_exits_2_under_both_names";
    let Some((d, fake)) = qemu_img_scratch(test) else {
        return;
    };
    // qemu-img compare: 1 only for "different" and its own usage errors; an image it cannot
    // open is 2 (img_compare's `ret = 2`), which scripts tell from a difference.
    let img = d.path().join("a.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&img), "1M"]);
    let gone = d.path().join("gone.qcow2");
    for args in [
        ["compare", s(&gone), s(&img)],
        ["compare", s(&img), s(&gone)],
    ] {
        let (qcode, _, qerr) = qemu_img(&args);
        assert_eq!(qcode, 2, "{qerr}");
        for (who, (code, _, err)) in [
            ("qemu-img", run_prog(&fake, &args)),
            ("diskferry", run(&args)),
        ] {
            assert_eq!(code, qcode, "{who} {args:?}: {err}");
            assert!(err.contains("gone.qcow2"), "{who}: {err}");
        }
    }
}

#[test]
fn missing_arguments_are_named_under_both_names() {
    let test = "missing_arguments_are_named_under_both_names";
    let Some((_d, fake)) = qemu_img_scratch(test) else {
        return;
    };
    // qemu-img says "Expecting one image file name" (and the like) and exits 1; diskferry
    // says clap's words, naming what is missing, under either name, on one line; compare's
    // error code is 2 under diskferry's name and qemu-img's 1 under its name.
    for (args, missing) in [
        (&["info"][..], "<IMAGE>"),
        (&["check"], "<IMAGE>"),
        (&["create", "-f", "qcow2"], "<IMAGE>"),
        (&["convert", "a.raw"], "<DESTINATION>"),
        (&["compare", "a.raw"], "<IMAGE_B>"),
        (&["amend", "-o", "compat=1.1"], "<IMAGE>"),
    ] {
        let (qcode, _, _) = qemu_img(args);
        assert_eq!(qcode, 1, "qemu-img {args:?}");
        for (program, (c, out, err)) in [
            ("diskferry", run(args)),
            ("qemu-img", run_prog(&fake, args)),
        ] {
            let code = if args[0] == "compare" && program == "diskferry" {
                2
            } else {
                qcode
            };
            assert_eq!(c, code, "{program} {args:?}: {err}");
            assert_eq!(out, "");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.starts_with(&format!(
                    "{program}: the following required arguments were not provided: {missing}"
                )),
                "{program} {args:?}: {err}"
            );
        }
    }
}

#[test]
fn commands_not_yet_supported_say_so() {
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    let cmd = "bench";
    let (code, _, err) = run(&[cmd, "x.img", "1G"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("diskferry: '{cmd}' is not supported by diskferry")),
        "{err}"
    );
    assert!(!err.contains("similar"), "{err}");
    let (code, _, err) = run_prog(&fake, &[cmd, "x.img", "1G"]);
    assert_eq!(code, 1);
    assert!(err.starts_with(&format!("qemu-img: '{cmd}'")), "{err}");
}

#[test]
fn man_pages_and_completions_come_from_the_cli_definition() {
    let d = tempfile::tempdir().unwrap();
    let man = d.path().join("man1");
    run_ok(&["man", s(&man)]);
    for page in ["diskferry.1", "diskferry-convert.1", "diskferry-migrate.1"] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.starts_with(".ie"), "{page} is roff");
        assert!(text.contains(".SH SYNOPSIS"), "{page}");
    }
    let convert = std::fs::read_to_string(man.join("diskferry-convert.1")).unwrap();
    assert!(
        convert.contains("diskferry convert"),
        "the synopsis names the command"
    );
    for (shell, marker) in [
        ("bash", "complete -F _diskferry"),
        ("zsh", "#compdef diskferry"),
        ("fish", "complete -c diskferry"),
    ] {
        let out = run_ok(&["completions", shell]);
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("migrate"), "{shell} completes the commands");
    }
}

#[test]
fn check_exits_63_for_formats_qemu_img_cannot_check() {
    if !have_qemu("check_exits_63_for_formats_qemu_img_cannot_check") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    // vdsm (lib/vdsm/storage/qemuimg.py, check) and cinder treat 63 as "this format has no
    // check"; qemu-img's own message goes to stderr.
    for (fmt, name) in [
        ("raw", "a.raw"),
        ("vpc", "a.vhd"),
        ("qcow", "a.qcow"),
        ("qcow2", "a.qcow2"),
    ] {
        let img = d.path().join(name);
        qemu_img_ok(&["create", "-q", "-f", fmt, s(&img), "4M"]);
        let (want_code, want_out, want_err) = qemu_img(&["check", s(&img)]);
        let (code, out, err) = run_prog(&fake, &["check", s(&img)]);
        assert_eq!(code, want_code, "{fmt}: {err}");
        assert_eq!(out, want_out, "{fmt}");
        if want_code == 63 {
            assert_eq!(err, want_err, "{fmt}");
        }
    }
    // As diskferry, a raw image is simply clean.
    let (code, _, _) = run(&["check", s(&d.path().join("a.raw"))]);
    assert_eq!(code, 0);
}

#[test]
fn vhd_sizes_round_to_geometry_only_when_invoked_as_qemu_img() {
    if !have_qemu("vhd_sizes_round_to_geometry_only_when_invoked_as_qemu_img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    let size_of = |img: &Path| -> u64 {
        let out = qemu_img_ok(&["info", "--output=json", "-f", "vpc", s(img)]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["virtual-size"].as_u64().unwrap()
    };
    let src = d.path().join("src.raw");
    make_raw(&src, 10 << 20, &[(4096, 8192)]);
    for (size, bytes, opts) in [
        ("1000M", 1000u64 << 20, ""),
        ("10M", 10 << 20, ""),
        ("1G", 1 << 30, "subformat=fixed"),
        ("10M", 10 << 20, "force_size"),
    ] {
        let (theirs, ours, own) = (
            d.path().join("q.vhd"),
            d.path().join("f.vhd"),
            d.path().join("o.vhd"),
        );
        let mut args = vec!["create", "-q", "-f", "vpc"];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        let with = |img: &Path| {
            let mut a = args.clone();
            a.extend([s(img), size]);
            a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
        };
        let q: Vec<String> = with(&theirs);
        qemu_img_ok(&q.iter().map(String::as_str).collect::<Vec<_>>());
        let f = with(&ours);
        let (code, _, err) = run_prog(&fake, &f.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{err}");
        assert_eq!(size_of(&ours), size_of(&theirs), "{size} {opts}");
        let o = with(&own);
        run_ok(&o.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(size_of(&own), bytes, "diskferry keeps {size} exact");
        for p in [&theirs, &ours, &own] {
            std::fs::remove_file(p).unwrap();
        }
    }
    // convert -O vpc rounds the same way, and the data is the source's.
    let (theirs, ours) = (d.path().join("cq.vhd"), d.path().join("cf.vhd"));
    qemu_img_ok(&["convert", "-O", "vpc", s(&src), s(&theirs)]);
    let (code, _, err) = run_prog(&fake, &["convert", "-O", "vpc", s(&src), s(&ours)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(size_of(&ours), size_of(&theirs));
    assert!(qemu_compare("vpc", &ours, "vpc", &theirs));
}

#[test]
fn info_lists_children_as_qemu_img_10_does() {
    if !have_qemu("info_lists_children_as_qemu_img_10_does") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    let base = d.path().join("base.raw");
    make_raw(&base, 4 << 20, &[(0, 65536)]);
    let top = d.path().join("top.qcow2");
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "raw",
        s(&top),
    ]);
    let mut images = vec![base.clone(), top];
    for sub in ["monolithicSparse", "monolithicFlat", "twoGbMaxExtentFlat"] {
        let img = d.path().join(format!("{sub}.vmdk"));
        qemu_img_ok(&[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&img),
            "3M",
        ]);
        images.push(img);
    }
    for img in &images {
        let theirs = qemu_img_ok(&["info", "--output=json", s(img)]);
        let (code, ours, err) = run_prog(&fake, &["info", "--output=json", s(img)]);
        assert_eq!(code, 0, "{err}");
        let t: serde_json::Value = serde_json::from_str(&theirs).unwrap();
        let o: serde_json::Value = serde_json::from_str(&ours).unwrap();
        assert_eq!(o["children"], t["children"], "{}", img.display());
        // The human block, line for line (vdsm and people read it).
        let child_lines = |text: &str| -> Vec<String> {
            let mut lines = Vec::new();
            let mut inside = false;
            for l in text.lines() {
                if l.starts_with("Child node") {
                    inside = true;
                } else if !l.starts_with("    ") {
                    inside = false;
                }
                if inside {
                    lines.push(l.to_string());
                }
            }
            lines
        };
        let theirs = qemu_img_ok(&["info", s(img)]);
        let (_, ours, _) = run_prog(&fake, &["info", s(img)]);
        assert_eq!(
            child_lines(&ours),
            child_lines(&theirs),
            "{}",
            img.display()
        );
        assert!(!child_lines(&theirs).is_empty());
    }
}

#[test]
fn info_of_a_qcow2_with_a_data_file_is_qemu_img_10s() {
    let test = "info_of_a_qcow2_with_a_data_file_is_qemu_img_10s";
    let Some((d, fake)) = qemu_img_scratch(test) else {
        return;
    };
    // qemu-img 10 does not open the data file for info: no `data-file` child, and the disk
    // size is the qcow2 file's alone, however much data the data file holds.
    for (name, raw) in [("plain", ""), ("raw", ",data_file_raw=on")] {
        let img = d.path().join(format!("{name}.qcow2"));
        // An absolute name: qemu opens a relative one from its working directory.
        let data = d.path().join(format!("{name}.bin"));
        let opts = format!("data_file={}{raw}", s(&data));
        qemu_img_ok(&["create", "-q", "-f", "qcow2", "-o", &opts, s(&img), "8M"]);
        qemu_io(
            "qcow2",
            &img,
            &["write -P 0x11 0 2M", "write -P 0x22 5M 1M"],
        );
        for json in [true, false] {
            let mut args = vec!["info"];
            if json {
                args.push("--output=json");
            }
            args.push(s(&img));
            let theirs = qemu_img_ok(&args);
            let (code, ours, err) = run_prog(&fake, &args);
            assert_eq!(code, 0, "{err}");
            if json {
                let t: serde_json::Value = serde_json::from_str(&theirs).unwrap();
                let o: serde_json::Value = serde_json::from_str(&ours).unwrap();
                json_covers(&t, &o, &format!("info of {name}.qcow2"), "");
            } else {
                assert!(
                    ours.starts_with(&theirs),
                    "{name}: qemu-img's lines are not ours\nqemu-img:\n{theirs}\nours:\n{ours}"
                );
            }
        }
    }
}

#[test]
fn a_qcow2_whose_data_file_is_missing_is_shown_by_info_and_refused_by_the_rest() {
    let test = "a_qcow2_whose_data_file_is_missing_is_shown_by_info_and_refused_by_the_rest";
    let Some((d, fake)) = qemu_img_scratch(test) else {
        return;
    };
    // qemu-img 10's info never opens the data file (CVE-2024-4467), so it shows an image
    // whose data file is gone (moved, not copied along) exactly as it shows one whose data
    // file is there; what reads the disk cannot open it. Refused by the gate (a device)
    // is the same to info.
    for (name, opts) in [("plain", ""), ("raw", ",data_file_raw=on"), ("dev", "")] {
        let img = d.path().join(format!("{name}.qcow2"));
        let data = d.path().join(format!("{name}.bin"));
        let create = format!("data_file={}{opts}", s(&data));
        qemu_img_ok(&["create", "-q", "-f", "qcow2", "-o", &create, s(&img), "8M"]);
        qemu_io("qcow2", &img, &["write -P 0x11 0 1M"]);
        if name == "dev" {
            qemu_img_ok(&["amend", "-o", "data_file=/dev/null", s(&img)]);
        }
        std::fs::remove_file(&data).unwrap();
        let where_ = if name == "dev" {
            "/dev/null".to_string()
        } else {
            s(&data).to_string()
        };
        for json in [true, false] {
            let mut args = vec!["info"];
            if json {
                args.push("--output=json");
            }
            args.push(s(&img));
            let theirs = qemu_img_ok(&args);
            // Under qemu-img's name: qemu-img's output (diskferry's own keys may follow).
            let (code, ours, err) = run_prog(&fake, &args);
            assert_eq!(code, 0, "{name}: {err}");
            assert!(!ours.contains("warning"), "{name}: {ours}");
            if json {
                let t: serde_json::Value = serde_json::from_str(&theirs).unwrap();
                let o: serde_json::Value = serde_json::from_str(&ours).unwrap();
                json_covers(&t, &o, &format!("info of {name}.qcow2"), "");
                assert!(o.get("absent-files").is_none(), "{o}");
            } else {
                assert!(
                    ours.starts_with(&theirs),
                    "{name}: qemu-img's lines are not ours\nqemu-img:\n{theirs}\nours:\n{ours}"
                );
            }
            // Under diskferry's name: the same, and a warning naming the file and where it
            // was looked for (or why it was refused).
            let (code, ours, err) = run(&args);
            assert_eq!(code, 0, "{name}: {err}");
            if json {
                let o: serde_json::Value = serde_json::from_str(&ours).unwrap();
                let absent = &o["absent-files"][0];
                assert_eq!(absent["name"], where_.as_str(), "{o}");
                assert!(absent["reason"].as_str().unwrap().contains(&where_), "{o}");
            } else {
                let warning: Vec<&str> =
                    ours.lines().filter(|l| l.starts_with("warning:")).collect();
                assert_eq!(warning.len(), 1, "{ours}");
                let says = if name == "dev" {
                    "refused"
                } else {
                    "not found (looked for"
                };
                assert!(
                    warning[0].contains(&format!("data file '{where_}'"))
                        && warning[0].contains(says),
                    "{ours}"
                );
            }
        }
        // What reads the disk fails, with qemu-img's exit code and one line naming the file.
        let out = d.path().join(format!("{name}.out"));
        // (qemu-img has no gate: it reads /dev/null, which diskferry refuses with the codes
        // of a file it cannot open.)
        for (args, qcode) in [
            (vec!["check", s(&img)], 1),
            (vec!["map", "--output=json", s(&img)], 1),
            (vec!["compare", s(&img), s(&img)], 2),
            (vec!["convert", "-O", "raw", s(&img), s(&out)], 1),
        ] {
            if name != "dev" {
                let (code, _, qerr) = qemu_img(&args);
                assert_eq!(code, qcode, "qemu-img {args:?}: {qerr}");
                assert!(qerr.contains(&format!("'{where_}'")), "{qerr}");
            }
            for (who, (code, _, err)) in [
                ("qemu-img", run_prog(&fake, &args)),
                ("diskferry", run(&args)),
            ] {
                assert_eq!(code, qcode, "{who} {args:?}: {err}");
                assert_eq!(err.lines().count(), 1, "{who} {args:?}: {err}");
                assert!(
                    err.contains(&format!("data file '{where_}'")),
                    "{who} {args:?}: {err}"
                );
            }
            assert!(!out.exists());
        }
    }
}

#[test]
fn amend_of_a_qcow2_with_a_data_file_does_what_qemu_img_10_does() {
    let test = "amend_of_a_qcow2_with_a_data_file_does_what_qemu_img_10_does";
    let Some((d, fake)) = qemu_img_scratch(test) else {
        return;
    };
    let data = d.path().join("data.raw");
    let content = d.path().join("content.raw");
    make_raw(&content, 8 << 20, &[(65536, 200_000), (5 << 20, 4096)]);
    // (options at creation, amend's options, qemu-img 10's exit code and message)
    #[rustfmt::skip]
    let cases: &[(&str, &str, i32, &str)] = &[
        ("", "compat=0.10", 1, "Cannot downgrade an image with a data file"),
        ("", "compat=1.1", 0, ""),
        ("", "lazy_refcounts=on", 0, ""),
        ("", "lazy_refcounts=on,compat=1.1", 0, ""),
        ("", "compat=0.10,lazy_refcounts=on", 1, "Lazy refcounts only supported"),
        ("", "data_file=elsewhere/new.raw", 0, ""),
        ("", "data_file=elsewhere/new.raw,lazy_refcounts=on", 0, ""),
        ("", "data_file_raw=on", 1, "data-file-raw cannot be set on existing images"),
        ("", "data_file_raw=off", 0, ""),
        (",data_file_raw=on", "data_file_raw=off", 0, ""),
        (",data_file_raw=on", "data_file_raw=on", 0, ""),
        ("none", "data_file=x.raw", 1, "data-file can only be set for images that use an external data file"),
        ("none", "data_file_raw=on", 1, "data-file-raw cannot be set on existing images"),
        ("none", "data_file_raw=off", 0, ""),
    ];
    for (create, amend, code, says) in cases {
        let q = d.path().join("q.qcow2");
        let ours = d.path().join("d.qcow2");
        let _ = std::fs::remove_file(&data);
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        let opts = format!("data_file={}{create}", s(&data));
        if *create != "none" {
            args.extend(["-o", &opts]);
        }
        args.extend([s(&q), "8M"]);
        qemu_img_ok(&args);
        qemu_img_ok(&[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&content),
            s(&q),
        ]);
        std::fs::copy(&q, &ours).unwrap();
        let before = std::fs::read(&q).unwrap();
        let (qc, qout, qerr) = qemu_img(&["amend", "-o", amend, s(&q)]);
        let (dc, dout, derr) = run_prog(&fake, &["amend", "-o", amend, s(&ours)]);
        let what = format!("-o {create} then amend -o {amend}");
        assert_eq!(qc, *code, "qemu-img {what}: {qerr}");
        assert!(qerr.contains(says), "qemu-img {what}: {qerr}");
        assert_eq!((dc, dout.as_str()), (qc, qout.as_str()), "{what}: {derr}");
        // The same words, without the file, as qemu-img prints its driver's refusals.
        assert_eq!(derr, qerr, "{what}");
        // The same image, byte for byte (a refusal leaves both unchanged).
        let after = std::fs::read(&ours).unwrap();
        assert_eq!(after, std::fs::read(&q).unwrap(), "{what}");
        if qc != 0 {
            assert_eq!(after, before, "{what}");
        }
        if qc == 0 && !amend.contains("data_file=") {
            let (code, out, err) = qemu_img(&["check", s(&ours)]);
            assert_eq!(code, 0, "{what}: {out}{err}");
            assert!(qemu_compare("qcow2", &ours, "raw", &content), "{what}");
        }
    }
    // Where diskferry differs, on purpose. `data_file=` (empty): qemu-img drops the name and
    // keeps the image's need for a data file, so that it no longer opens; refused.
    let img = d.path().join("img.qcow2");
    let _ = std::fs::remove_file(&data);
    let opts = format!("data_file={}", s(&data));
    qemu_img_ok(&["create", "-q", "-f", "qcow2", "-o", &opts, s(&img), "8M"]);
    qemu_img_ok(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&content),
        s(&img),
    ]);
    let before = std::fs::read(&img).unwrap();
    for (who, (code, _, err)) in [
        (
            "qemu-img",
            run_prog(&fake, &["amend", "-o", "data_file=", s(&img)]),
        ),
        ("diskferry", run(&["amend", "-o", "data_file=", s(&img)])),
    ] {
        assert_eq!(code, 1, "{who}: {err}");
        assert_eq!(err.lines().count(), 1, "{who}: {err}");
        assert!(err.contains("data_file="), "{who}: {err}");
    }
    assert_eq!(std::fs::read(&img).unwrap(), before);
    // A data file that moved: qemu-img amend opens it and fails; diskferry's amend touches the
    // header alone, so the image can be pointed at the file where it now is.
    let moved = d.path().join("moved.raw");
    std::fs::rename(&data, &moved).unwrap();
    let point = format!("data_file={}", s(&moved));
    let (qc, _, _) = qemu_img(&["amend", "-o", &point, s(&img)]);
    assert_eq!(qc, 1);
    let (code, _, err) = run(&["amend", "-o", &point, s(&img)]);
    assert_eq!(code, 0, "{err}");
    assert!(qemu_compare("qcow2", &img, "raw", &content));
}

#[test]
fn convert_takes_image_opts_and_secret_objects_as_qemu_img_does() {
    if !have_qemu("convert_takes_image_opts_and_secret_objects_as_qemu_img_does") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    let src = d.path().join("src.qcow2");
    let raw = d.path().join("src.raw");
    make_raw(&raw, 4 << 20, &[(8192, 70000)]);
    qemu_img_ok(&["convert", "-O", "qcow2", s(&raw), s(&src)]);
    // OpenStack nova (nova/privsep/qemu.py, convert_image) passes --image-opts with
    // driver=...,file.filename=...; cinder passes --object secret,... for encrypted volumes.
    let opts = format!("driver=qcow2,file.filename={}", s(&src));
    let secret = "secret,id=sec0,data=c2VjcmV0,format=base64";
    for (who, prog) in [("qemu-img", None), ("diskferry", Some(&fake))] {
        let out = d.path().join(format!("{who}.raw"));
        let args = [
            "convert",
            "--object",
            secret,
            "--image-opts",
            "-O",
            "raw",
            &opts,
            s(&out),
        ];
        let (code, _, err) = match prog {
            None => qemu_img(&args),
            Some(p) => run_prog(p, &args),
        };
        assert_eq!(code, 0, "{who}: {err}");
        assert!(qemu_compare("raw", &out, "raw", &raw), "{who}");
        // Into an existing target named by options, which needs -n in both.
        let args = [
            "convert",
            "--target-image-opts",
            "-O",
            "raw",
            s(&src),
            &format!("driver=raw,file.filename={}", s(&out)),
        ];
        let (code, _, _) = match prog {
            None => qemu_img(&args),
            Some(p) => run_prog(p, &args),
        };
        assert_eq!(code, 1, "{who}: --target-image-opts without -n");
    }
}

#[test]
fn create_u_records_a_backing_file_that_is_not_there_yet() {
    if !have_qemu("create_u_records_a_backing_file_that_is_not_there_yet") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    // Image builders (kiwi, osbuild) prepare an overlay before its base is in place.
    for (who, prog) in [("qemu-img", None), ("diskferry", Some(&fake))] {
        let img = d.path().join(format!("{who}.qcow2"));
        let args = [
            "create",
            "-q",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "base-later.raw",
            "-F",
            "raw",
            s(&img),
            "8M",
        ];
        let (code, out, err) = match prog {
            None => qemu_img(&args),
            Some(p) => run_prog(p, &args),
        };
        assert_eq!((code, out.as_str()), (0, ""), "{who}: {err}");
        let info = qemu_img_ok(&["info", "--output=json", "-U", s(&img)]);
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(v["backing-filename"], "base-later.raw", "{who}");
        assert_eq!(v["backing-filename-format"], "raw", "{who}");
        assert_eq!(v["virtual-size"], 8 << 20, "{who}");
        // Once the base arrives, the overlay reads through it.
        let base = d.path().join("base-later.raw");
        make_raw(&base, 8 << 20, &[(0, 4096)]);
        assert!(qemu_compare("qcow2", &img, "raw", &base), "{who}");
        std::fs::remove_file(&base).unwrap();
    }
    // Without a size there is nothing to take it from.
    let (code, _, err) = run_prog(
        &fake,
        &[
            "create",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "nowhere.raw",
            "-F",
            "raw",
            s(&d.path().join("x.qcow2")),
        ],
    );
    assert_eq!(code, 1, "{err}");
}

#[test]
fn create_takes_backing_file_and_size_as_options_and_rounds_sizes_as_qemu_img_does() {
    if !have_qemu("create_takes_backing_file_and_size_as_options_and_rounds_sizes_as_qemu_img_does")
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    let base = d.path().join("base.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&base), "4M"]);
    let facts = |img: &Path| -> (serde_json::Value, serde_json::Value) {
        let info = qemu_img_ok(&["info", "--output=json", "-U", s(img)]);
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        (v["virtual-size"].clone(), v["backing-filename"].clone())
    };
    // Ansible's and Packer's qcow2 recipes pass the backing file and the size through -o.
    let backing_opts = format!("backing_file={},backing_fmt=qcow2", s(&base));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("qcow2", vec!["-o", &backing_opts]),
        ("qcow2", vec!["-o", "size=3M"]),
        ("qcow2", vec!["-o", &backing_opts, "-o", "size=6M"]),
        ("vmdk", vec!["1000"]),
        ("raw", vec!["1000"]),
        ("vpc", vec!["1000"]),
    ];
    for (fmt, extra) in cases {
        let mut got = Vec::new();
        for (who, prog) in [("qemu-img", None), ("diskferry", Some(&fake))] {
            let img = d.path().join(format!("{who}.{fmt}"));
            let mut a = vec!["create", "-q", "-f", fmt, s(&img)];
            // Options before the name, sizes after it, as a user types them.
            let (opts, size): (Vec<&str>, Vec<&str>) = extra
                .iter()
                .partition(|x| x.starts_with('-') || x.contains('='));
            a.splice(4..4, opts);
            a.extend(size);
            let (code, _, err) = match prog {
                None => qemu_img(&a),
                Some(p) => run_prog(p, &a),
            };
            assert_eq!(code, 0, "{who} {a:?}: {err}");
            got.push(facts(&img));
            std::fs::remove_file(&img).unwrap();
        }
        assert_eq!(got[0], got[1], "create -f {fmt} {extra:?}");
    }
    // The same thing said two ways, differently, is refused rather than one silently winning.
    let img = d.path().join("twice.qcow2");
    let (code, _, err) = run_prog(
        &fake,
        &["create", "-f", "qcow2", "-o", "size=2M", s(&img), "3M"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("given twice"), "{err}");
    assert!(!img.exists());
}

#[test]
fn check_of_an_overlay_whose_backing_file_is_missing_fails_as_qemu_img_does() {
    if !have_qemu("check_of_an_overlay_whose_backing_file_is_missing_fails_as_qemu_img_does") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.qcow2");
    let top = d.path().join("top.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&base), "1M"]);
    qemu_img_ok(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "qcow2",
        s(&top),
    ]);
    std::fs::remove_file(&base).unwrap();
    // Exit 1 (the check could not be made), not 0: oVirt's and Proxmox's checks of a chain
    // must not pass an overlay that cannot be read.
    let (qcode, _, _) = qemu_img(&["check", s(&top)]);
    let (code, out, err) = run(&["check", s(&top)]);
    assert_eq!((qcode, code), (1, 1), "{out}{err}");
    assert!(err.contains("base.qcow2"), "{err}");
    // Asked for the one layer alone, it is clean.
    let (code, _, err) = run(&["check", "--no-backing", s(&top)]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn snapshot_list_of_a_format_without_snapshots_is_empty_as_in_qemu_img() {
    if !have_qemu("snapshot_list_of_a_format_without_snapshots_is_empty_as_in_qemu_img") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    for fmt in ["raw", "vmdk", "vpc", "vdi", "vhdx"] {
        let img = d.path().join(format!("x.{fmt}"));
        qemu_img_ok(&["create", "-q", "-f", fmt, s(&img), "1M"]);
        let theirs = qemu_img(&["snapshot", "-l", s(&img)]);
        let ours = run(&["snapshot", "-l", s(&img)]);
        assert_eq!(
            (theirs.0, theirs.1.as_str()),
            (0, ""),
            "{fmt}: {}",
            theirs.2
        );
        assert_eq!(
            (ours.0, ours.1.as_str(), ours.2.as_str()),
            (0, "", ""),
            "{fmt}"
        );
    }
}

#[test]
fn convert_m_is_limited_to_16_under_the_qemu_img_name() {
    if !have_qemu("convert_m_is_limited_to_16_under_the_qemu_img_name") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let fake = as_qemu_img(d.path());
    let src = d.path().join("src.raw");
    make_raw(&src, 1 << 20, &[(0, 4096)]);
    for m in ["0", "17"] {
        let out = d.path().join(format!("out{m}.raw"));
        let a = ["convert", "-m", m, s(&src), s(&out)];
        let (qc, _, qerr) = qemu_img(&a);
        let (dc, _, derr) = run_prog(&fake, &a);
        assert_eq!((dc, derr.as_str()), (qc, qerr.as_str()), "-m {m}");
        assert!(!out.exists());
    }
    // Under its own name, -m counts worker threads and takes more.
    let out = d.path().join("out.raw");
    run_ok(&["convert", "-m", "17", s(&src), s(&out)]);
}
