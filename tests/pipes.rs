//! Pipes: images written to standard output and read from standard input, through the CLI.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `diskferry args` with `input` on standard input; returns (code, stdout, stderr).
fn run_with_stdin(args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = diskferry()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Feed from another thread so a full stdout pipe cannot deadlock us.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src.raw");
    make_raw(
        &src,
        40 * MIB + 4096,
        &[(0, 300_000), (7 * MIB + 512, 3 * MIB), (40 * MIB, 4096)],
    );
    src
}

#[test]
fn stream_vmdk_from_qemu_img_converts_from_standard_input() {
    if !have_qemu("stream_vmdk_from_qemu_img_converts_from_standard_input") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let vmdk = dir.path().join("qemu-stream.vmdk");
    qemu_img_ok(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&src),
        s(&vmdk),
    ]);
    let out = dir.path().join("out.raw");
    let (code, _, err) = run_with_stdin(&["convert", "-", s(&out)], &std::fs::read(&vmdk).unwrap());
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256_file(&out), sha256_file(&src));
    // And with the format named, into another format.
    let vhd = dir.path().join("out.vhd");
    let (code, _, err) = run_with_stdin(
        &["convert", "-f", "vmdk", "-O", "vhd", "-", s(&vhd)],
        &std::fs::read(&vmdk).unwrap(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(qemu_compare("raw", &src, "vpc", &vhd));
}

#[test]
fn stream_vmdk_round_trips_through_two_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let out = dir.path().join("out.raw");
    let mut producer = diskferry()
        .args([
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            s(&src),
            "-",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = diskferry()
        .args(["convert", "-", s(&out)])
        .stdin(producer.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(producer.wait().unwrap().success());
    assert_eq!(sha256_file(&out), sha256_file(&src));
}

#[test]
fn dynamic_and_fixed_vhd_stream_to_standard_output() {
    if !have_qemu("dynamic_and_fixed_vhd_stream_to_standard_output") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    for subformat in ["dynamic", "fixed"] {
        let opt = format!("subformat={subformat}");
        let out = Command::new(env!("CARGO_BIN_EXE_diskferry"))
            .args(["convert", "-O", "vhd", "-o", &opt, s(&src), "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vhd = dir.path().join(format!("{subformat}.vhd"));
        std::fs::write(&vhd, &out.stdout).unwrap();
        assert!(qemu_compare("raw", &src, "vpc", &vhd), "{subformat}");
    }
}

#[test]
fn formats_that_cannot_come_from_a_pipe_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let out = dir.path().join("out.raw");
    let (code, _, err) = run_with_stdin(&["convert", "-", s(&out)], &std::fs::read(&src).unwrap());
    assert_eq!(code, 1);
    assert!(err.contains("cannot read a raw image from a pipe"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let vhd = dir.path().join("x.vhd");
    run_ok(&["convert", "-O", "vhd", s(&src), s(&vhd)]);
    let (code, _, err) = run_with_stdin(&["convert", "-", s(&out)], &std::fs::read(&vhd).unwrap());
    assert_eq!(code, 1);
    assert!(err.contains("cannot be read from a pipe"), "{err}");

    let (code, _, err) = run_with_stdin(&["convert", "-", s(&out)], b"");
    assert_eq!(code, 1);
    assert!(err.contains("standard input is empty"), "{err}");

    // A stream cut short is an error, and leaves nothing behind.
    let vmdk = dir.path().join("s.vmdk");
    run_ok(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&src),
        s(&vmdk),
    ]);
    let bytes = std::fs::read(&vmdk).unwrap();
    let (code, _, err) = run_with_stdin(&["convert", "-", s(&out)], &bytes[..bytes.len() / 2]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out.exists());
}
