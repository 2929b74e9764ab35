//! diskferry: read, write, convert, check and package virtual disk images, bit-exact.
//!
//! The library knows the formats; the `diskferry` binary is a thin command line on top.
//!
//! - [`image`]: the [`Image`] chain and the [`Layer`](image::Layer) trait every
//!   format reader implements; mapping (what is data, zero, unallocated) is the core interface.
//! - [`writer`]: the [`ImageWriter`](writer::ImageWriter) trait every format writer implements;
//!   content arrives in order, so every format can be written front to back.
//! - [`convert`]: the conversion engine (parallel, bounded memory, atomic output).
//! - [`formats`]: one folder per format, and the dispatch table.
//! - [`info`], [`map`], [`compare`], [`check`]: what the commands of the same names compute.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod compare;
pub mod convert;
pub mod detect;
pub mod error;
pub mod format;
pub mod formats;
pub mod gate;
pub mod host_file;
pub mod image;
pub mod info;
pub mod map;
pub mod options;
pub mod registry;
pub mod sink;
pub mod size;
pub mod staging;
pub mod storage;
pub mod stream;
pub mod writer;

pub use error::{Error, ErrorKind, Result};
pub use format::{Capability, Driver, Format};
pub use gate::Gate;
pub use image::{Image, OpenOptions};
pub use registry::Registry;
