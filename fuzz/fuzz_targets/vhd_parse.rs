//! Arbitrary bytes as a VHD (no detection: the VHD parser sees everything): opening, mapping,
//! reading, the parent lookup and `check` must fail cleanly, never panic, never allocate
//! without bound. Structured seeds (a valid footer and header, see fuzz/README.md) reach the
//! BAT, bitmap and locator code.
#![no_main]

use diskferry::format::Format;
use diskferry::formats;
use diskferry::host_file::HostFile;
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("fuzz.vhd");
    let Ok(mut file) = std::fs::File::create(&path) else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    drop(file);
    // check reads every structure, including what reading skips (the whole BAT, locators).
    let _ = formats::check(Format::Vhd, &path, None);
    let Ok(host) = HostFile::open(&path) else {
        return;
    };
    let Ok(layer) = formats::open(Format::Vhd, host) else {
        return;
    };
    let _ = layer.details();
    let _ = layer.backing();
    let size = layer.virtual_size();
    let mut pos = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut steps = 0;
    while pos < size && steps < 4096 {
        let Ok(m) = layer.map(pos, size - pos) else {
            return;
        };
        assert!(
            m.start == pos && m.length > 0 && m.length <= size - pos,
            "bad mapping {m:?}"
        );
        if m.allocation == diskferry::image::Allocation::Data {
            let n = m.length.min(buf.len() as u64) as usize;
            if layer.read_data(pos, &mut buf[..n]).is_err() {
                return;
            }
        }
        pos = m.end();
        steps += 1;
    }
});
