//! The `-o` options of a new QCOW2 image (qemu-img's names and values) and their validation
//! into [`Settings`].

use crate::error::{Error, Result};
use crate::options::{OptionKind, OptionSpec};
use crate::writer::CreateSpec;

/// The options `-o help` lists for qcow2, in qemu-img's spelling.
pub const CREATE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "compat",
        kind: OptionKind::Choice(&["0.10", "1.1", "v2", "v3"]),
        help: "QCOW2 version: 1.1 (v3, the default) or 0.10 (v2, for qemu before 1.1)",
    },
    OptionSpec {
        key: "cluster_size",
        kind: OptionKind::Size,
        help: "cluster size, a power of two from 512 to 2M (default 64K)",
    },
    OptionSpec {
        key: "preallocation",
        kind: OptionKind::Choice(&["off", "metadata", "falloc", "full"]),
        help: "allocate every cluster up front: metadata (tables only), falloc (reserve space), full (write zeros)",
    },
    OptionSpec {
        key: "lazy_refcounts",
        kind: OptionKind::Flag,
        help: "mark the image for lazy refcount updates (compat 1.1)",
    },
    OptionSpec {
        key: "refcount_bits",
        kind: OptionKind::Number,
        help: "width of a reference count: 1, 2, 4, 8, 16 (default), 32 or 64 (compat 0.10: 16 only)",
    },
    OptionSpec {
        key: "extended_l2",
        kind: OptionKind::Flag,
        help: "extended L2 entries with 32 subclusters per cluster (compat 1.1, clusters of 16K or more)",
    },
    OptionSpec {
        key: "compression_type",
        kind: OptionKind::Choice(&["zlib", "zstd"]),
        help: "how -c compresses clusters: zlib (default, every reader) or zstd (compat 1.1, qemu 5.1 and later)",
    },
    OptionSpec {
        key: "backing_file",
        kind: OptionKind::Text,
        help: "backing file name, stored as given (the same as -b)",
    },
    OptionSpec {
        key: "backing_fmt",
        kind: OptionKind::Text,
        help: "format of the backing file (the same as -F)",
    },
    OptionSpec {
        key: "data_file",
        kind: OptionKind::Text,
        help: "keep guest data in this separate file, created beside the image (compat 1.1)",
    },
    OptionSpec {
        key: "data_file_raw",
        kind: OptionKind::Flag,
        help: "keep the data file a valid raw image of the whole disk",
    },
];

/// The default cluster size, qemu's.
pub const DEFAULT_CLUSTER_BITS: u32 = 16;
/// The smallest cluster, 512 bytes.
pub const MIN_CLUSTER_BITS: u32 = 9;
/// The largest cluster qemu opens, 2 MiB.
pub const MAX_CLUSTER_BITS: u32 = 21;
/// The longest backing file name the specification allows.
pub const MAX_BACKING_NAME: usize = 1023;

/// `preallocation=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    /// Only what holds data is allocated.
    Off,
    /// Every cluster has its place; the file has holes there.
    Metadata,
    /// As metadata, with the space reserved (fallocate).
    Falloc,
    /// As metadata, with zeros written.
    Full,
}

/// `compression_type=`: how compressed clusters are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate with a 4 KiB window (the header's compression_type 0).
    Zlib,
    /// One zstd frame per cluster (compression_type 1, incompatible feature bit 3).
    Zstd,
}

/// The backing file a new image names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingName {
    /// The name stored in the image, as the user gave it.
    pub name: String,
    /// The format stored in the backing format extension (qemu's driver name).
    pub format: Option<String>,
    /// True when the engine opened it (`-b`, `-B`): it then sends unallocated pieces where
    /// the backing file shows through. False for `-o backing_file` alone with `create`.
    pub opened: bool,
}

/// Validated choices for a new image.
#[derive(Debug, Clone)]
pub struct Settings {
    /// 2 (compat 0.10) or 3 (compat 1.1).
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// `preallocation=`.
    pub preallocation: Preallocation,
    /// `lazy_refcounts=on`.
    pub lazy_refcounts: bool,
    /// log2 of `refcount_bits`.
    pub refcount_order: u32,
    /// `extended_l2=on`.
    pub extended_l2: bool,
    /// `compression_type=`.
    pub compression: Compression,
    /// `-c`: compress every cluster that shrinks.
    pub compress: bool,
    /// The backing file, if any.
    pub backing: Option<BackingName>,
    /// The external data file's name, if any.
    pub data_file: Option<String>,
    /// `data_file_raw=on`.
    pub data_file_raw: bool,
}

impl Settings {
    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The width of a reference count in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// True when every cluster of the disk gets its place up front.
    pub fn preallocates(&self) -> bool {
        self.preallocation != Preallocation::Off || self.data_file_raw
    }
}

/// qemu's name of a backing format (diskferry says vhd where qemu says vpc).
pub fn qemu_format_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case("vhd") {
        "vpc"
    } else {
        name
    }
}

/// Validates the options of `spec` (and its `-c`, `-b`/`-B`) for a new QCOW2 image.
pub fn settings(spec: &CreateSpec) -> Result<Settings> {
    let o = &spec.options;
    let version = match o.text("compat") {
        Some("0.10") | Some("v2") => 2,
        _ => 3,
    };
    let v3_only = |what: &str| -> Result<()> {
        if version < 3 {
            Err(Error::invalid(format!(
                "{what} needs compat=1.1 (QCOW2 version 3); compat=0.10 images cannot hold it"
            )))
        } else {
            Ok(())
        }
    };
    let cluster_size = o.size("cluster_size").unwrap_or(1 << DEFAULT_CLUSTER_BITS);
    if !cluster_size.is_power_of_two()
        || !((1 << MIN_CLUSTER_BITS)..=(1 << MAX_CLUSTER_BITS)).contains(&cluster_size)
    {
        return Err(Error::invalid(format!(
            "cluster_size {cluster_size} is not valid for qcow2: give a power of two from 512 to 2M (64K is the default)"
        )));
    }
    let cluster_bits = cluster_size.trailing_zeros();
    let preallocation = match o.text("preallocation") {
        Some("metadata") => Preallocation::Metadata,
        Some("falloc") => Preallocation::Falloc,
        Some("full") => Preallocation::Full,
        _ => Preallocation::Off,
    };
    let lazy_refcounts = o.flag("lazy_refcounts").unwrap_or(false);
    if lazy_refcounts {
        v3_only("lazy_refcounts")?;
    }
    let refcount_bits = o.number("refcount_bits").unwrap_or(16);
    if !refcount_bits.is_power_of_two() || refcount_bits > 64 {
        return Err(Error::invalid(format!(
            "refcount_bits {refcount_bits} is not valid: give a power of two from 1 to 64"
        )));
    }
    if refcount_bits != 16 {
        v3_only("refcount_bits other than 16")?;
    }
    let extended_l2 = o.flag("extended_l2").unwrap_or(false);
    if extended_l2 {
        v3_only("extended_l2")?;
        if cluster_bits < 14 {
            return Err(Error::invalid(format!(
                "extended_l2 needs clusters of at least 16K (its 32 subclusters are at least 512 bytes), not {cluster_size}"
            )));
        }
    }
    let compression = match o.text("compression_type") {
        Some("zstd") => {
            v3_only("compression_type=zstd")?;
            Compression::Zstd
        }
        _ => Compression::Zlib,
    };
    let data_file = o.text("data_file").map(str::to_string);
    let data_file_raw = o.flag("data_file_raw").unwrap_or(false);
    if let Some(name) = &data_file {
        v3_only("data_file")?;
        if name.is_empty() {
            return Err(Error::invalid("data_file needs a file name"));
        }
        if spec.compress {
            return Err(Error::invalid(
                "-c cannot be used with data_file: compressed clusters cannot live in an external data file",
            ));
        }
    } else if data_file_raw {
        return Err(Error::invalid("data_file_raw needs data_file"));
    }
    if spec.compress && preallocation != Preallocation::Off {
        return Err(Error::invalid(
            "-c cannot be used with preallocation: compressed clusters are written as they come",
        ));
    }
    let backing = backing_name(spec)?;
    if let Some(b) = &backing {
        if data_file_raw {
            return Err(Error::invalid(
                "a backing file cannot be used with data_file_raw (the data file must hold the whole disk)",
            ));
        }
        if preallocation != Preallocation::Off && !extended_l2 {
            return Err(Error::invalid(
                "a backing file and preallocation can only be used together with extended_l2=on",
            ));
        }
        if b.name.len() > MAX_BACKING_NAME {
            return Err(Error::invalid(format!(
                "the backing file name is {} bytes, more than the {MAX_BACKING_NAME} QCOW2 holds",
                b.name.len()
            )));
        }
    }
    Ok(Settings {
        version,
        cluster_bits,
        preallocation,
        lazy_refcounts,
        refcount_order: refcount_bits.trailing_zeros(),
        extended_l2,
        compression,
        compress: spec.compress,
        backing,
        data_file,
        data_file_raw,
    })
}

/// The backing file named by `-b`/`-B` (opened by the engine) or `-o backing_file`.
fn backing_name(spec: &CreateSpec) -> Result<Option<BackingName>> {
    let o = &spec.options;
    let format_option = o.text("backing_fmt").map(str::to_string);
    match (&spec.backing, o.text("backing_file")) {
        (Some(b), named) => {
            if let Some(n) = named
                && n != b.stored_name
            {
                return Err(Error::invalid(format!(
                    "-o backing_file={n} names another file than the backing image given ({})",
                    b.stored_name
                )));
            }
            Ok(Some(BackingName {
                name: b.stored_name.clone(),
                format: Some(
                    format_option.unwrap_or_else(|| qemu_format_name(b.format.name()).to_string()),
                ),
                opened: true,
            }))
        }
        (None, Some(n)) => {
            if spec.source_map.is_some() {
                // Converting: the engine must compare against the backing image to leave
                // what it holds unallocated, which it does for -B only.
                return Err(Error::invalid(
                    "give the backing file of a converted image with -B (and -F for its format), not -o backing_file",
                ));
            }
            Ok(Some(BackingName {
                name: n.to_string(),
                format: format_option,
                opened: false,
            }))
        }
        (None, None) => {
            if format_option.is_some() {
                return Err(Error::invalid(
                    "backing_fmt needs a backing file (-b or -o backing_file)",
                ));
            }
            Ok(None)
        }
    }
}
