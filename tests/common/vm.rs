//! Helpers for the whole-VM tests (migrate, info of configurations): the path as text, a
//! target's file read back as JSON, the one-line error check.

use super::{make_raw, run, run_ok};
use std::path::{Path, PathBuf};

/// A path as `&str` (the tests' paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `diskferry info --output json FILE`, parsed.
pub fn info_json(file: &Path) -> serde_json::Value {
    serde_json::from_str(&run_ok(&["info", "--output", "json", s(file)])).unwrap()
}

/// The UUID a VDI or VHDX stores for itself (`info`'s format-specific data).
pub fn uuid_of(image: &Path) -> String {
    info_json(image)["format-specific"]["data"]["uuid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs diskferry with `args`, which must fail with one line on stderr containing every
/// one of `wants`; returns that line.
pub fn one_line_error(args: &[&str], wants: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_ne!(code, 0, "{args:?} succeeded: {out}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    for w in wants {
        assert!(err.contains(w), "{args:?}: '{w}' not in: {err}");
    }
    err
}

/// What `info` and `migrate` say of a file `name` holding `bytes` that its reader parses but
/// that must still be refused (the VM model's bounds, checked where every source enters):
/// both fail with the same one line, and `migrate` leaves no output. Run in a fresh folder
/// with the bare name, so the line reads `NAME: ...` as a parser's errors do (the program's
/// `diskferry: ` prefix dropped).
pub fn refused_by_info_and_migrate(name: &str, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), bytes).unwrap();
    let in_dir = |args: &[&str]| {
        let out = super::diskferry()
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let (code, stdout, err) = super::decode(out);
        assert_ne!(code, 0, "{args:?} succeeded: {stdout}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        err.trim().trim_start_matches("diskferry: ").to_string()
    };
    let info = in_dir(&["info", name]);
    let migrate = in_dir(&["migrate", "--to", "kvm", name, "out"]);
    assert_eq!(info, migrate, "info and migrate disagree");
    assert!(
        !dir.path().join("out").exists(),
        "{name}: output left behind"
    );
    info
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A VM's two disks in `d`: a qcow2 of 64 MiB with data at both ends (the system disk) and a
/// raw one of 16 MiB with a little (the data disk).
pub fn two_disks(d: &Path) -> (PathBuf, PathBuf) {
    let a = d.join("system.raw");
    make_raw(&a, 64 << 20, &[(0, 3 << 20), (60 << 20, 1 << 20)]);
    let q = d.join("system.qcow2");
    run_ok(&["convert", "-O", "qcow2", s(&a), s(&q)]);
    let b = d.join("data.raw");
    make_raw(&b, 16 << 20, &[(5 << 20, 100_000)]);
    (q, b)
}
