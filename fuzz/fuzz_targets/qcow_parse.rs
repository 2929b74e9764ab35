//! Arbitrary bytes as a QCOW2 image and as a QCOW (version 1) image (no detection: both
//! parsers see everything): opening, `details`, `info`, the snapshot table, opening each
//! internal snapshot, mapping and reading must fail cleanly, never panic, never allocate
//! without bound. Structured seeds (small qemu-img images, see fuzz/README.md) reach the L1/L2
//! tables, compressed clusters (zlib, zstd), extended L2 entries, the header extensions
//! (backing format, bitmaps, data file names), the snapshot table and snapshot L1 tables.
//! qcow2's `check` (read-only) runs first. The bytes are an in-memory storage; names they
//! hold (backing file, external data file) lead only into an empty folder (see walk.rs).
#![no_main]

use diskferry::Image;
use diskferry::format::{Format, OpenContext, Provenance, Salvage};
use diskferry::formats::{qcow, qcow2};
use diskferry::snapshot::Selector;
use libfuzzer_sys::fuzz_target;

#[path = "walk.rs"]
mod walk;

/// Snapshots opened per input and mode: each is a full open and walk, and a fuzzed table can
/// list thousands.
const MAX_SNAPSHOTS: usize = 8;

fn open(
    format: Format,
    data: &[u8],
    salvage: Salvage,
    snapshot: Option<&Selector>,
) -> Option<Image> {
    let gate = walk::gate();
    let ctx = OpenContext {
        gate: &gate,
        provenance: Provenance::User,
        salvage,
        snapshot,
        data_files: diskferry::image::DataFilePolicy::Require,
    };
    let layer = format.driver().open(walk::storage(data), &ctx).ok()?;
    Some(Image::from_layer(layer))
}

fn exercise(image: &Image) {
    let layer = image.top();
    let _ = layer.details();
    let _ = layer.open_warnings();
    // A backing file's name, as paths beside the image (looked for, never opened, here).
    if let Some(link) = layer.backing() {
        let _ = link.candidates(layer.path());
    }
    walk::walk_and_read(image);
    let info = diskferry::info::layer_info(image, 0, "fuzz.img");
    let _ = info.to_human();
    let _ = serde_json::to_string(&info);
}

fuzz_target!(|data: &[u8]| {
    // qcow2's check reads every structure, including what reading skips (refcounts, every L2
    // table, snapshot tables), read-only.
    if let Ok(report) = qcow2::check::check_storage(walk::storage(data)) {
        let _ = report.exit_code();
        let _ = serde_json::to_string(&report);
    }
    // QCOW v1 has no snapshots: its driver ignores a selector (Image::open_storage refuses
    // one for formats without that capability before any driver sees it).
    for (format, has_snapshots) in [(qcow2::FORMAT, true), (qcow::FORMAT, false)] {
        for salvage in [Salvage::Refuse, Salvage::ReadWhatIsThere] {
            let Some(image) = open(format, data, salvage, None) else {
                continue;
            };
            exercise(&image);
            let snapshots = image.top().snapshots();
            let _ = diskferry::snapshot::list_text(&snapshots);
            // Each snapshot as `convert -l` reads it: by ID and name together (IDs are not
            // always unique in fuzzed tables), the first ones only.
            for s in snapshots.iter().take(MAX_SNAPSHOTS) {
                let selector = Selector::Fields {
                    id: Some(s.id.clone()),
                    name: Some(s.name.clone()),
                };
                if let Some(snapshot) = open(format, data, salvage, Some(&selector)) {
                    exercise(&snapshot);
                }
            }
            // And a snapshot that is not there: the error lists the ones that are.
            if has_snapshots {
                let missing = Selector::IdOrName("\u{0}no such snapshot".to_string());
                let _ = open(format, data, salvage, Some(&missing));
            }
        }
    }
});
