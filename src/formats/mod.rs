//! The format drivers, one folder each, and [`BUILTIN`]: the one list that registers them.
//!
//! Adding a format: make a folder here whose `mod.rs` defines a unit struct implementing
//! [`Driver`](crate::format::Driver) (probe, capabilities, open, writer, check, options) and a
//! `FORMAT` constant, declare the module below, and add one line to [`BUILTIN`]. Nothing else
//! in the crate names formats.

pub mod qcow;
pub mod qcow2;
pub mod raw;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use crate::format::Format;

/// Every format diskferry knows, in detection order: formats with a magic number at offset 0
/// first, then those recognised by weaker signs (a text descriptor, a footer), raw last.
pub const BUILTIN: &[Format] = &[
    qcow2::FORMAT,
    qcow::FORMAT,
    vhdx::FORMAT,
    vdi::FORMAT,
    vmdk::FORMAT,
    vhd::FORMAT,
    raw::FORMAT,
];
