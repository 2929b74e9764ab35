//! Arbitrary bytes checked as a VHDX over memory (`check_storage`): every structure the check
//! walks (headers, region tables, metadata, the whole BAT, the log replay, the overlap sweep)
//! must report or refuse, never panic, never allocate without bound. Seeds: any VHDX (the
//! corpus's, diskferry's and qemu-img's output); the two with a pending log reach the replay.
#![no_main]

use diskferry::formats::vhdx::check::check_storage;
use diskferry::storage::Memory;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let storage = Arc::new(Memory::new("fuzz.vhdx", data.to_vec()));
    if let Ok(report) = check_storage(storage, Path::new("fuzz.vhdx")) {
        let _ = report.exit_code();
    }
});
