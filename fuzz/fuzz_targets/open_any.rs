//! Any bytes, opened as an image with format detection: every prober and parser reachable from
//! `diskferry info` must fail cleanly (an error, never a panic, never an unbounded allocation).
#![no_main]

use diskferry::image::{BackingPolicy, Image, OpenOptions};
use libfuzzer_sys::fuzz_target;

#[path = "walk.rs"]
mod walk;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let options = OpenOptions {
        backing: BackingPolicy::Ignore,
        ..OpenOptions::default()
    };
    let Ok(image) = Image::open(file.path(), &options) else {
        return;
    };
    walk::walk_and_read(&image);
});
