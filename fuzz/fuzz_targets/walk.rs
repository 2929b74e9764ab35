//! Shared by the fuzz targets that open an image: walk its map and read a bounded prefix of
//! every run, so that mapping and reading are fuzzed as well as opening.

use diskferry::image::Image;

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
        let n = status.mapping.length.min(buf.len() as u64) as usize;
        if image.read_at(pos, &mut buf[..n]).is_err() {
            return;
        }
        pos = status.mapping.end();
        steps += 1;
    }
}
