//! Any bytes, opened as an image with format detection: every prober and parser reachable from
//! `diskferry info` must fail cleanly (an error, never a panic, never an unbounded allocation).
//! What opens is mapped, read and described as `info` describes it, and read again as its
//! first internal snapshot when it has some. The bytes are an in-memory storage; names inside
//! them lead only into an empty folder (see walk.rs).
#![no_main]

use diskferry::Image;
use diskferry::snapshot::Selector;
use libfuzzer_sys::fuzz_target;

#[path = "walk.rs"]
mod walk;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = Image::open_storage(walk::storage(data), &walk::options(None)) else {
        return;
    };
    walk::walk_and_read(&image);
    let info = diskferry::info::layer_info(&image, 0, "fuzz.img");
    let _ = info.to_human();
    let _ = serde_json::to_string(&info);
    // An image with internal snapshots (qcow2) is also read as its first snapshot, as
    // `convert -l ID` reads it.
    let Some(first) = image.top().snapshots().into_iter().next() else {
        return;
    };
    let mut options = walk::options(None);
    options.snapshot = Some(Selector::IdOrName(first.id));
    if let Ok(snapshot) = Image::open_storage(walk::storage(data), &options) {
        walk::walk_and_read(&snapshot);
    }
});
