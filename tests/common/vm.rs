//! Helpers for the whole-VM tests (migrate, info of configurations): the path as text, a
//! target's file read back as JSON, the one-line error check.

use super::{run, run_ok};
use std::path::Path;

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
