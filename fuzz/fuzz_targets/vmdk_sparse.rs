//! Any bytes as a sparse VMDK extent (hosted KDMV with embedded descriptor, footer and
//! markers; COWD; SESPARSE: the first byte picks the magic): open, map, read a bounded prefix
//! of every run, `details`, check, and read it as a stream from a pipe. Errors are fine;
//! panics, hangs and unbounded allocations are not. The bytes are an in-memory storage;
//! extent and parent names lead only into an empty folder (see walk.rs).
#![no_main]

use diskferry::Image;
use diskferry::formats::vmdk;
use diskferry::stream::StreamPayload;
use libfuzzer_sys::fuzz_target;

#[path = "walk.rs"]
mod walk;

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

    let storage = walk::storage(&bytes);
    if let Ok(image) = Image::open_storage(storage.clone(), &walk::options(Some(vmdk::FORMAT))) {
        walk::walk_and_read(&image);
        let _ = image.top().details();
        if let Some(link) = image.top().backing() {
            let _ = link.candidates(image.top().path());
        }
    }
    if let Ok(report) = vmdk::check_storage(storage, None, &walk::gate()) {
        let _ = report.exit_code();
    }

    // The same bytes arriving on a pipe.
    if let Ok(mut source) = vmdk::open_stream(Box::new(std::io::Cursor::new(bytes))) {
        let mut out = Vec::new();
        for _ in 0..256 {
            match source.next_run() {
                Ok(Some(run)) => {
                    if let StreamPayload::Encoded { bytes, decoder } = run.payload {
                        out.resize(run.len as usize, 0);
                        let _ = decoder.decode(&bytes, &mut out);
                    }
                }
                _ => break,
            }
        }
    }
});
