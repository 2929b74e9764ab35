//! `-W`: workers write data where it belongs themselves, out of order, for every output that
//! places data at offsets known in advance. The image must be the same as in order.

mod common;

use common::*;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn out_of_order_writes_give_the_same_images() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    // Data of odd lengths across item and block boundaries, zeros between, a zero-filled
    // data run (detected, left out) and data up to the end.
    let size = 48u64 << 20;
    make_raw(
        &src,
        size,
        &[
            (0, 5000),
            (2 << 20, (3 << 20) + 777),
            (11 << 20, 64 << 10),
            (20 << 20, 9 << 20),
            (size - 4096, 4096),
        ],
    );
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
        f.write_all_at(&vec![0u8; 1 << 20], 40 << 20).unwrap();
    }
    let base = dir.path().join("base.vhd");
    run_ok(&["convert", "-O", "vhd", s(&src), s(&base)]);
    let cases: &[(&str, &[&str])] = &[
        ("raw", &["-O", "raw"]),
        ("vhd", &["-O", "vhd"]),
        ("vhd", &["-O", "vhd", "-o", "subformat=fixed"]),
        ("vhd", &["-O", "vhd", "-o", "block_size=512K"]),
        ("vmdk", &["-O", "vmdk", "-o", "subformat=monolithicFlat"]),
        ("vmdk", &["-O", "vmdk", "-o", "subformat=vmfs"]),
        ("vhd", &["-O", "vhd", "-B", "base.vhd"]),
    ];
    for (i, (fmt, args)) in cases.iter().enumerate() {
        for w in [false, true] {
            let out = dir.path().join(format!("out-{i}-{w}.img"));
            let mut argv = vec!["convert"];
            if w {
                argv.push("-W");
            }
            argv.extend_from_slice(args);
            argv.extend([s(&src), s(&out)]);
            run_ok(&argv);
            let (code, text, err) = run(&["compare", "-f", "raw", s(&src), s(&out)]);
            assert_eq!(code, 0, "{args:?} -W {w}: {text}{err}");
            // qemu's vpc driver does not follow a differencing VHD's parent.
            let differencing = args.contains(&"-B");
            if !differencing && have_qemu("out_of_order_writes") {
                let qfmt = if *fmt == "vhd" { "vpc" } else { fmt };
                assert!(qemu_compare("raw", &src, qfmt, &out), "{args:?} -W {w}");
                let (code, out_text, _) = qemu_img(&["check", "-f", qfmt, s(&out)]);
                assert!(
                    code == 0 || (code == 63 && *fmt != "vmdk"),
                    "{args:?} -W {w}: {out_text}"
                );
            }
        }
    }
}
