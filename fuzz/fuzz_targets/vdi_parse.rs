//! Arbitrary bytes as a VDI (no detection: the VDI parser sees everything): the header checks
//! (versions 0 and 1.1), the block map, every block state, `details`, `info`, the parent
//! search (which looks only into the empty folder walk.rs makes, through the confined gate)
//! and `check` must fail cleanly, never panic, never allocate without bound. The bytes are an
//! in-memory storage.
#![no_main]

use diskferry::Image;
use diskferry::format::{OpenContext, Provenance, Salvage};
use diskferry::formats::vdi;
use libfuzzer_sys::fuzz_target;

#[path = "walk.rs"]
mod walk;

fuzz_target!(|data: &[u8]| {
    let storage = walk::storage(data);
    if let Ok(report) = vdi::check::check_storage(storage.as_ref(), walk::image_name()) {
        let _ = report.exit_code();
        let _ = serde_json::to_string(&report);
    }
    let gate = walk::gate();
    for salvage in [Salvage::Refuse, Salvage::ReadWhatIsThere] {
        let ctx = OpenContext {
            gate: &gate,
            provenance: Provenance::User,
            salvage,
            snapshot: None,
            data_files: diskferry::image::DataFilePolicy::Require,
        };
        let Ok(layer) = vdi::FORMAT.driver().open(storage.clone(), &ctx) else {
            continue;
        };
        if let Some(link) = layer.backing() {
            let _ = link.candidates(layer.path());
        }
        // The identity check a parent must pass (here against the image itself).
        let _ = layer.verify_backing(layer.as_ref());
        let image = Image::from_layer(layer);
        walk::walk_and_read(&image);
        let info = diskferry::info::layer_info(&image, 0, "fuzz.img");
        let _ = info.to_human();
        let _ = serde_json::to_string(&info);
    }
});
