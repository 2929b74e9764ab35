//! `-o` as scripts write it for qemu-img: bare boolean keys (`force_size`, `compat6`) mean
//! `=on`, as every Azure VHD and VMware OVA recipe passes them.

mod common;

use common::*;

#[test]
fn bare_boolean_keys_mean_on() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_raw(&src, 4 << 20, &[(0, 4096)]);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();

    // The Azure recipe: fixed VHD with force_size.
    let vhd = dir.path().join("azure.vhd");
    run_ok(&[
        "convert",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed,force_size",
        &s(&src),
        &s(&vhd),
    ]);
    assert_eq!(std::fs::metadata(&vhd).unwrap().len(), (4 << 20) + 512);

    // The VMware OVA recipe: streamOptimized with compat6 (hardware version 6).
    let vmdk = dir.path().join("ova.vmdk");
    run_ok(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized,compat6",
        &s(&src),
        &s(&vmdk),
    ]);
    let bytes = std::fs::read(&vmdk).unwrap();
    let text = String::from_utf8_lossy(&bytes[512..512 * 21]);
    assert!(text.contains("ddb.virtualHWVersion = \"6\""), "{text}");

    // A bare key that is not a flag still needs its value.
    let (code, _, err) = run(&[
        "create",
        "-f",
        "vhd",
        "-o",
        "block_size",
        &s(&dir.path().join("x.vhd")),
        "1M",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("block_size") && err.contains("needs a value"),
        "{err}"
    );
}

#[test]
fn options_help_comes_from_the_driver_and_is_refused_for_formats_not_written() {
    let (code, out, _) = run(&["create", "-f", "vhd", "-o", "help", "x.vhd"]);
    assert_eq!(code, 0);
    assert!(out.contains("subformat=<dynamic|fixed>"), "{out}");
    let (code, out, err) = run(&["convert", "-O", "vdi", "-o", "help", "a", "b"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("writing vdi images is not supported") && err.contains("vhd"),
        "{err}"
    );
}
