//! Arbitrary bytes as a QCOW2 image in memory: `check` and `check -r all` must fail cleanly
//! or finish, never panic, never allocate without bound (the computed refcounts are bounded
//! by the bytes given, the walk by the clusters they hold). A repair that reports a clean
//! image must leave bytes that check clean again. Seeds: small images made by qemu-img or
//! diskferry (see README.md).
#![no_main]

use diskferry::check::RepairMode;
use diskferry::formats::qcow2::check::{check_image, check_storage, io::MemoryImage};
use diskferry::storage::Memory;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let _ = check_storage(Arc::new(Memory::new("fuzz.qcow2", data.to_vec())));
    let mut image = MemoryImage::new("fuzz.qcow2", data.to_vec());
    if let Ok(report) = check_image(&mut image, Path::new("fuzz.qcow2"), Some(RepairMode::All))
        && report.exit_code() == 0
    {
        let again = check_storage(Arc::new(Memory::new("fuzz.qcow2", image.bytes)))
            .expect("a repaired image checks");
        assert_eq!(again.exit_code(), 0, "{:?}", again.findings);
    }
});
