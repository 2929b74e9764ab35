//! Any bytes as a sparse VMDK extent (hosted KDMV with embedded descriptor, footer and
//! markers; COWD; SESPARSE: the first byte picks the magic): open, map, read a bounded prefix
//! of every run, check, and read it as a stream. Errors are fine; panics, hangs and unbounded
//! allocations are not.
#![no_main]

use diskferry::formats::vmdk;
use diskferry::image::{BackingPolicy, Image, OpenOptions};
use libfuzzer_sys::fuzz_target;

#[path = "walk.rs"]
mod walk;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let mut bytes = data[1..].to_vec();
    let magic: &[u8] = match data[0] % 3 {
        0 => b"KDMV",
        1 => b"COWD",
        _ => &[0xbe, 0xba, 0xfe, 0xca, 0, 0, 0, 0],
    };
    if bytes.len() < magic.len() {
        bytes.resize(magic.len(), 0);
    }
    bytes[..magic.len()].copy_from_slice(magic);

    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(&bytes).is_err() {
        return;
    }
    let options = OpenOptions {
        format: Some(diskferry::Format::Vmdk),
        backing: BackingPolicy::Ignore,
        ..OpenOptions::default()
    };
    if let Ok(image) = Image::open(file.path(), &options) {
        walk::walk_and_read(&image);
        let _ = image.top().details();
    }
    let _ = vmdk::check(file.path(), None);

    if let Ok(mut source) = vmdk::open_stream(Box::new(std::io::Cursor::new(bytes))) {
        let mut out = vec![0u8; 0];
        for _ in 0..256 {
            match source.next_run() {
                Ok(Some(run)) => {
                    if let diskferry::stream::StreamPayload::Encoded { bytes, decoder } =
                        run.payload
                    {
                        out.resize(run.len as usize, 0);
                        let _ = decoder.decode(&bytes, &mut out);
                    }
                }
                _ => break,
            }
        }
    }
});
