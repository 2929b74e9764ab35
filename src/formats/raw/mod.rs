//! raw: the virtual disk byte for byte. Holes in the host file are unallocated ranges that
//! read as zeros; we find them with SEEK_DATA/SEEK_HOLE and write holes instead of zeros.

mod reader;
mod writer;

pub use reader::RawLayer;
pub use writer::{Preallocation, RawWriter};

use crate::options::{OptionKind, OptionSpec};

/// `-o` options for raw outputs.
pub const CREATE_OPTIONS: &[OptionSpec] = &[OptionSpec {
    key: "preallocation",
    kind: OptionKind::Choice(&["off", "falloc", "full"]),
    help: "off: sparse file (default); falloc: reserve the space without writing; full: write zeros",
}];
