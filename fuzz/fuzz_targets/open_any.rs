//! Any bytes, opened as an image with format detection: every prober and parser reachable from
//! `diskferry info` must fail cleanly (an error, never a panic, never an unbounded allocation).
#![no_main]

use diskferry::image::{BackingPolicy, Image, OpenOptions};
use libfuzzer_sys::fuzz_target;
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
    // Walk the map and read a bounded prefix of every run.
    let size = image.virtual_size();
    let mut pos = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut steps = 0;
    while pos < size && steps < 4096 {
        let Ok(status) = image.block_status(pos, size - pos) else {
            return;
        };
        let n = status.mapping.length.min(buf.len() as u64) as usize;
        if image.read_at(pos, &mut buf[..n]).is_err() {
            return;
        }
        pos = status.mapping.end();
        steps += 1;
    }
});
