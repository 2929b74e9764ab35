//! Shared by the fuzz targets: the in-memory storage every input is read from, the open
//! options, and a walk of an image's map with a bounded read of every run, so that mapping and
//! reading are fuzzed as well as opening.
//!
//! Inputs never touch the disk: each is a [`Memory`] storage named `fuzz.img` inside a folder
//! made empty once per process. Names an input holds (VMDK extents, VHD parents) go through
//! the confined gate, so they can only be looked for inside that empty folder: whatever a
//! fuzzed name says, no real file is opened.

// Each target uses some of these helpers, never all.
#![allow(dead_code)]

use diskferry::image::{BackingPolicy, Image, OpenOptions};
use diskferry::storage::{Memory, Storage};
use diskferry::{Format, Gate};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// `fuzz.img` inside a new empty folder, made on first use and kept (empty) for the life of
/// the process: the name every input's storage carries.
pub fn image_name() -> &'static Path {
    static NAME: OnceLock<PathBuf> = OnceLock::new();
    NAME.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("diskferry-fuzz-")
            .tempdir()
            .expect("a temporary folder for the fuzzed images' names");
        // Kept for the whole run: nothing is ever written there.
        dir.keep().join("fuzz.img")
    })
}

/// The fuzzer's bytes as a storage named [`image_name`].
pub fn storage(data: &[u8]) -> Arc<dyn Storage> {
    Arc::new(Memory::new(image_name(), Arc::<[u8]>::from(data)))
}

/// The gate every target opens through: names lead only inside the image's (empty) folder.
pub fn gate() -> Gate {
    Gate::confined()
}

/// Open options for fuzzed bytes: the given format (or detection), the top layer only, the
/// confined gate.
pub fn options(format: Option<Format>) -> OpenOptions {
    OpenOptions {
        format,
        backing: BackingPolicy::Ignore,
        gate: gate(),
        ..OpenOptions::default()
    }
}

/// Walks at most 4096 runs of `image`'s map, reading up to 64 KiB of each; stops at the first
/// error (errors are the expected outcome on fuzzed bytes, panics are the bug).
pub fn walk_and_read(image: &Image) {
    let size = image.virtual_size();
    let mut pos = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut steps = 0;
    while pos < size && steps < 4096 {
        let Ok(status) = image.block_status(pos, size - pos) else {
            return;
        };
        let m = status.mapping;
        assert!(
            m.start == pos && m.length > 0 && m.length <= size - pos,
            "bad mapping {m:?} at {pos} of {size}"
        );
        let n = m.length.min(buf.len() as u64) as usize;
        if image.read_at(pos, &mut buf[..n]).is_err() {
            return;
        }
        pos = m.end();
        steps += 1;
    }
}
