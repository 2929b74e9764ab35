//! diskferry: read, write, convert, check and package virtual disk images, bit-exact.
//!
//! The library knows the formats; the `diskferry` binary is a thin command line on top.
//!
//! # Opening an image, walking its map, reading
//!
//! Mapping, not bytes, is the core interface: every format says, for any range of the virtual
//! disk, whether it holds data, reads as zeros, or falls through to the backing image.
//!
//! ```
//! use diskferry::{Image, OpenOptions};
//! use diskferry::image::Allocation;
//!
//! # fn main() -> diskferry::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("diskferry-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("disk.raw");
//! # let file = std::fs::File::create(&path).unwrap();
//! # file.set_len(1 << 20).unwrap();
//! # std::os::unix::fs::FileExt::write_all_at(&file, &[7u8; 4096], 0).unwrap();
//! // The library's default gate keeps files an image names inside its own folder.
//! let image = Image::open(&path, &OpenOptions::default())?;
//! println!("{}: {} bytes", image.top().format(), image.virtual_size());
//!
//! let mut pos = 0;
//! while pos < image.virtual_size() {
//!     let run = image.block_status(pos, image.virtual_size() - pos)?;
//!     let what = match run.mapping.allocation {
//!         Allocation::Data => "data",
//!         Allocation::Zero => "zeros",
//!         Allocation::Unallocated => "unallocated",
//!     };
//!     println!("{pos:>10} +{:<10} {what} (layer {})", run.mapping.length, run.depth);
//!     pos = run.mapping.end();
//! }
//!
//! let mut sector = [0u8; 512];
//! image.read_at(0, &mut sector)?;
//! assert_eq!(sector[0], 7);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! # Converting
//!
//! ```
//! use diskferry::convert::{convert, ConvertOptions, Event};
//! use diskferry::Registry;
//!
//! # fn main() -> diskferry::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("diskferry-doc2-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let source = dir.join("disk.raw");
//! # std::fs::write(&source, vec![1u8; 1 << 20]).unwrap();
//! let options = ConvertOptions {
//!     target_format: Registry::builtin().find("vhd")?,
//!     target_options: "subformat=dynamic".into(),
//!     ..ConvertOptions::default()
//! };
//! let stats = convert(&source, &dir.join("disk.vhd"), &options, &mut |event| {
//!     if let Event::Warning(w) = event {
//!         eprintln!("warning: {w}");
//!     }
//! })?;
//! assert_eq!(stats.data_bytes, 1 << 20);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//!
//! - [`format`](mod@format): the [`Driver`] trait every format implements and the [`Format`] handle;
//!   [`registry`]: the list of drivers, lookup by name, detection by content;
//!   [`formats`]: one folder per format and [`formats::BUILTIN`], the list that registers them.
//! - [`storage`]: what parsers read (a file, a window into a package, memory, an overlay).
//! - [`image`]: the [`Image`] chain and the [`Layer`](image::Layer) trait every reader
//!   implements; [`gate`]: the one policy for every file an image names.
//! - [`writer`]: the [`ImageWriter`](writer::ImageWriter) trait every writer implements;
//!   [`sink`]: where output bytes go (new files, devices, pipes, tar members, digests).
//! - [`convert`]: the conversion engine (parallel, bounded memory, atomic output) and what a
//!   destination is.
//! - [`info`], [`map`], [`compare`], [`check`]: what the commands of the same names compute.
// No unsafe code, with one exception allowed where it stands, with its proof: the
// cachestat(2) call in host_file/direct.rs, a system call that neither rustix nor any
// well-kept crate wraps.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod compare;
pub mod convert;
pub mod detect;
pub mod dirty_bitmap;
pub mod edit;
pub mod error;
pub mod format;
pub mod formats;
pub mod gate;
pub mod host_file;
pub mod image;
pub mod info;
pub mod map;
pub mod migrate;
pub mod ops;
pub mod options;
pub mod ova;
pub mod ovf;
pub mod package;
pub mod registry;
pub mod sink;
pub mod size;
pub mod snapshot;
pub mod staging;
pub mod storage;
pub mod stream;
pub mod vm;
pub mod vmconfig;
pub(crate) mod winpath;
pub mod writer;
pub mod xva;

pub use error::{Error, ErrorKind, Result};
pub use format::{Capability, Driver, Format};
pub use gate::Gate;
pub use image::{Image, OpenOptions};
pub use registry::Registry;
