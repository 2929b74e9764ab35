//! Arbitrary bytes as a qcow2 image whose persistent dirty bitmaps `bitmap` changes in place
//! (`Driver::edit_bitmaps`, as `diskferry bitmap` calls it): the bitmap directory, its
//! entries, tables and data clusters are the untrusted input. The editor works on a file, so
//! the bytes are written to `fuzz.qcow2` in a temporary folder made once per process (nothing
//! else is ever there), then a fixed sequence of operations runs on it, each on what the one
//! before left: on every bitmap the reader lists (at most 4) and on `b0`, `b1` (the seeds'
//! names) and `new`: disable, enable, merge the first one into it, clear then disable, merge
//! its namesake from the input as read from memory (`-b`); then `new` added with the default
//! granularity and merged into, `g512` added with 512-byte granularity and merged into, and
//! every one removed. Each call must return `Ok` or an error: never panic, never allocate
//! without bound, never hang. When the input checks clean (`qcow2::check_storage`, exit 0),
//! the edited file must check without corruption (leaks are what an interrupted edit may
//! leave, and are allowed).
#![no_main]

use diskferry::edit::{BitmapEdit, BitmapOp, EditContext, Force};
use diskferry::formats::qcow2::check::check_storage;
use diskferry::image::{BackingPolicy, Image, OpenOptions};
use diskferry::storage::Memory;
use diskferry::Gate;
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// `fuzz.qcow2` inside a new folder, made on first use and kept for the life of the process.
fn path() -> &'static Path {
    static NAME: OnceLock<PathBuf> = OnceLock::new();
    NAME.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("diskferry-fuzz-bitmap-")
            .tempdir()
            .expect("a temporary folder for the edited image");
        dir.keep().join("fuzz.qcow2")
    })
}

fn memory(data: &[u8]) -> Arc<Memory> {
    Arc::new(Memory::new(path(), data.to_vec()))
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    std::fs::write(path, data).expect("the fuzzed image is written");
    let clean = check_storage(memory(data)).is_ok_and(|r| r.exit_code() == 0);
    let options = OpenOptions {
        format: Some(diskferry::formats::qcow2::FORMAT),
        backing: BackingPolicy::Ignore,
        gate: Gate::confined(),
        ..OpenOptions::default()
    };
    // The input as `-b` names it: read from memory, so the edits do not change it.
    let source = Image::open_storage(memory(data), &options).ok();
    let mut names: Vec<String> = source
        .as_ref()
        .and_then(|image| image.top().dirty_bitmaps())
        .unwrap_or_default()
        .into_iter()
        .map(|b| b.name)
        .take(4)
        .collect();
    for name in ["b0", "b1", "new"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    let first = names[0].clone();
    let gate = Gate::confined();
    let ctx = EditContext {
        gate: &gate,
        force: Force::No,
    };
    let driver = diskferry::formats::qcow2::FORMAT.driver();
    let run = |name: &str, ops: &[BitmapOp], source: Option<&Image>| {
        let edit = BitmapEdit { name, ops, source };
        let _ = driver.edit_bitmaps(path, &edit, &ctx);
    };
    for name in &names {
        run(name, &[BitmapOp::Disable], None);
        run(name, &[BitmapOp::Enable], None);
        run(name, &[BitmapOp::Merge(first.clone())], None);
        run(name, &[BitmapOp::Clear, BitmapOp::Disable], None);
        run(name, &[BitmapOp::Merge(name.clone())], source.as_ref());
    }
    run(
        "new",
        &[BitmapOp::Add { granularity: None }, BitmapOp::Merge(first.clone())],
        None,
    );
    run(
        "g512",
        &[
            BitmapOp::Add {
                granularity: Some(512),
            },
            BitmapOp::Merge("new".into()),
        ],
        None,
    );
    for name in names.iter().map(String::as_str).chain(["g512"]) {
        run(name, &[BitmapOp::Remove], None);
    }
    if clean {
        let after = std::fs::read(path).expect("the edited image is read back");
        let report = check_storage(memory(&after)).expect("the edited image checks");
        assert!(
            matches!(report.exit_code(), 0 | 3),
            "a clean image checks with exit {} after the edits: {:?}",
            report.exit_code(),
            report.findings
        );
    }
});
