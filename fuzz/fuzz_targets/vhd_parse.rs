//! Arbitrary bytes as a VHD (no detection: the VHD parser sees everything): opening, mapping,
//! reading, `details`, the parent lookup and `check` must fail cleanly, never panic, never
//! allocate without bound. Structured seeds (small valid VHDs, see fuzz/README.md) reach the
//! BAT, bitmap and locator code. The bytes are an in-memory storage; parent names lead only
//! into an empty folder (see walk.rs).
#![no_main]

use diskferry::format::{OpenContext, Provenance, Salvage};
use diskferry::formats::vhd;
use diskferry::image::Allocation;
use libfuzzer_sys::fuzz_target;

#[path = "walk.rs"]
mod walk;

fuzz_target!(|data: &[u8]| {
    let storage = walk::storage(data);
    let gate = walk::gate();
    // check reads every structure, including what reading skips (the whole BAT, the
    // locators), and looks the parent up through the gate.
    if let Ok(report) = vhd::check_storage(storage.clone(), None, &gate) {
        let _ = report.exit_code();
        let _ = serde_json::to_string(&report);
    }
    for salvage in [Salvage::Refuse, Salvage::ReadWhatIsThere] {
        let ctx = OpenContext {
            gate: &gate,
            provenance: Provenance::User,
            salvage,
            snapshot: None,
            data_files: diskferry::image::DataFilePolicy::Require,
        };
        let Ok(layer) = vhd::FORMAT.driver().open(storage.clone(), &ctx) else {
            continue;
        };
        let _ = layer.details();
        let _ = layer.open_warnings();
        // The parent lookup: the names a differencing disk gives, as paths beside it; and the
        // identity check a parent must pass (here against the disk itself).
        if let Some(link) = layer.backing() {
            let _ = link.candidates(layer.path());
        }
        let _ = layer.verify_backing(layer.as_ref());
        let size = layer.virtual_size();
        let mut pos = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let mut steps = 0;
        while pos < size && steps < 4096 {
            let Ok(m) = layer.map(pos, size - pos) else {
                break;
            };
            assert!(
                m.start == pos && m.length > 0 && m.length <= size - pos,
                "bad mapping {m:?}"
            );
            if m.allocation == Allocation::Data {
                let n = m.length.min(buf.len() as u64) as usize;
                if layer.read_data(pos, &mut buf[..n]).is_err() {
                    break;
                }
            }
            pos = m.end();
            steps += 1;
        }
    }
});
