//! Formats: the [`Driver`] trait every disk image format implements, the [`Format`] handle that
//! names one, and what a driver can do ([`Capabilities`]).
//!
//! A format is one folder under `src/formats/` whose `mod.rs` defines a driver (a unit struct
//! implementing [`Driver`]) and one line in [`crate::formats::BUILTIN`]. Nothing outside the
//! registry asks "which format is this?" to decide what to do: commands ask the driver.

use crate::check::{CheckReport, RepairMode};
use crate::detect::ProbeData;
use crate::edit::{
    BitmapEdit, EditContext, ImageMut, MeasureRequest, Measurement, NewBacking, ResizeRequest,
    SnapshotEdit,
};
use crate::error::{Error, Result};
use crate::gate::Gate;
use crate::image::Layer;
use crate::options::{FormatOptions, OptionSpec};
use crate::sink::Output;
use crate::storage::Storage;
use crate::stream::StreamSource;
use crate::writer::{CreateSpec, ImageWriter};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// One thing a driver may be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Open an image for reading (info, convert from, compare, map).
    Read,
    /// Read an image front to back from a pipe.
    ReadStream,
    /// Write new images (convert -O, create).
    Write,
    /// Write an image front to back to a pipe.
    WriteStream,
    /// Check its metadata (check).
    Check,
    /// Compress data as it is written (convert -c).
    Compress,
    /// Make images that refer to a backing image (create -b, convert -B).
    Backing,
    /// Hold internal snapshots, listed by `snapshot -l` and read with `convert -l`.
    Snapshots,
    /// Open an existing image for writing in place (the target of `commit`, the top of a safe
    /// `rebase`).
    WriteInPlace,
    /// Change the virtual size in place (`resize`).
    Resize,
    /// Change the recorded backing file in place (`rebase`).
    Rebase,
    /// Change creation options in place (`amend`).
    Amend,
    /// Take, apply and delete internal snapshots (`snapshot -c|-a|-d`).
    EditSnapshots,
    /// Predict the size of a conversion (`measure`).
    Measure,
}

impl Capability {
    const ALL: [Capability; 14] = [
        Capability::Read,
        Capability::ReadStream,
        Capability::Write,
        Capability::WriteStream,
        Capability::Check,
        Capability::Compress,
        Capability::Backing,
        Capability::Snapshots,
        Capability::WriteInPlace,
        Capability::Resize,
        Capability::Rebase,
        Capability::Amend,
        Capability::EditSnapshots,
        Capability::Measure,
    ];

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// The set of things a driver can do.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(u16);

impl Capabilities {
    /// Nothing (a format diskferry only detects).
    pub const NONE: Capabilities = Capabilities(0);

    /// The set of the given capabilities.
    pub const fn of(list: &[Capability]) -> Capabilities {
        let mut bits = 0;
        let mut i = 0;
        while i < list.len() {
            bits |= list[i].bit();
            i += 1;
        }
        Capabilities(bits)
    }

    /// True when `cap` is in the set.
    pub fn has(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Capability::ALL.iter().filter(|c| self.has(**c)))
            .finish()
    }
}

/// What a probe thinks of a file's first and last bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Not this format.
    No,
    /// This format (a magic number, a signature).
    Yes,
    /// Whatever nothing else claims (raw): used only when no driver says [`Probe::Yes`], and
    /// reported as a guess.
    Fallback,
}

/// Who chose a file that a driver is asked to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// The user named it: errors may quote its contents.
    User,
    /// Another image named it (a parent, a backing file) and the gate let it through: errors
    /// must not quote its contents, which the user may not be allowed to see.
    NamedByImage,
}

/// Whether damage that loses data is an error or something to read around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Salvage {
    /// A truncated or damaged image is an error (the default).
    #[default]
    Refuse,
    /// Read what is there: missing data reads as zeros, with a warning (`--salvage`).
    ReadWhatIsThere,
}

/// What a driver's [`Driver::open`] gets besides the storage.
#[derive(Debug, Clone, Copy)]
pub struct OpenContext<'a> {
    /// The gate every file this image names (extents, data files) is opened through.
    pub gate: &'a Gate,
    /// Who chose the storage being opened.
    pub provenance: Provenance,
    /// Whether to read around damage.
    pub salvage: Salvage,
    /// The internal snapshot to read instead of the image's current state (`convert -l`); only
    /// ever given to the image the user named, never to its backing files.
    pub snapshot: Option<&'a crate::snapshot::Selector>,
    /// Whether an external data file must be opened, or the metadata alone will do (`info`).
    pub data_files: crate::image::DataFilePolicy,
}

impl OpenContext<'_> {
    /// True when errors may quote the bytes of the storage being opened.
    pub fn may_quote(&self) -> bool {
        self.provenance == Provenance::User
    }
}

/// A disk image format: what it is called, how to recognise it, and what diskferry can do
/// with it. Every method but the names, the probe and the capabilities has a default that
/// refuses; a driver overrides what its capabilities promise.
pub trait Driver: Send + Sync + 'static {
    /// The canonical name, as `-f`/`-O` take it and `info` prints it.
    fn name(&self) -> &'static str;

    /// Other names `-f`/`-O` accept (qemu-img's `vpc` for VHD).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// One line for `--help` and the README.
    fn description(&self) -> &'static str;

    /// What diskferry can do with the format.
    fn capabilities(&self) -> Capabilities;

    /// Looks at a file's first and last bytes.
    fn probe(&self, probe: &ProbeData) -> Probe;

    /// Opens one layer (the image without its backing chain) over `storage`.
    fn open(&self, storage: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<Box<dyn Layer>> {
        let _ = (storage, ctx);
        Err(refusal(self.name(), Capability::Read))
    }

    /// Opens an image that can only be read front to back (a pipe).
    fn open_stream(&self, reader: Box<dyn Read + Send>) -> Result<Box<dyn StreamSource>> {
        let _ = reader;
        Err(refusal(self.name(), Capability::ReadStream))
    }

    /// The `-o` options accepted when writing.
    fn create_options(&self) -> &'static [OptionSpec] {
        &[]
    }

    /// Makes a writer of a new image described by `spec`, into `output`.
    fn create_writer<'a>(
        &self,
        output: Output<'a>,
        spec: &CreateSpec,
    ) -> Result<Box<dyn ImageWriter + 'a>> {
        let _ = (output, spec);
        Err(refusal(self.name(), Capability::Write))
    }

    /// Checks the metadata of the image at `path`, repairing with `repair`; files the image
    /// names are opened through `gate`.
    fn check(&self, path: &Path, repair: Option<RepairMode>, gate: &Gate) -> Result<CheckReport> {
        let _ = (path, repair, gate);
        Err(refusal(self.name(), Capability::Check))
    }

    /// Opens the image at `path` for writing in place (see [`crate::edit`] for the
    /// crash-consistency every in-place change owes).
    fn open_mut(&self, path: &Path, ctx: &EditContext<'_>) -> Result<Box<dyn ImageMut>> {
        let _ = (path, ctx);
        Err(refusal(self.name(), Capability::WriteInPlace))
    }

    /// Changes the virtual size of the image at `path`.
    fn resize(&self, path: &Path, request: &ResizeRequest, ctx: &EditContext<'_>) -> Result<()> {
        let _ = (path, request, ctx);
        Err(refusal(self.name(), Capability::Resize))
    }

    /// Records `backing` (or none) as the image's backing file, without touching data
    /// (`rebase -u`; the safe rebase copies data first through [`Driver::open_mut`]).
    fn set_backing(
        &self,
        path: &Path,
        backing: Option<&NewBacking>,
        ctx: &EditContext<'_>,
    ) -> Result<()> {
        let _ = (path, backing, ctx);
        Err(refusal(self.name(), Capability::Rebase))
    }

    /// The `-o` options `amend` can change in place.
    fn amend_options(&self) -> &'static [OptionSpec] {
        &[]
    }

    /// Changes the options in `options` (parsed against [`Driver::amend_options`]) in place.
    fn amend(&self, path: &Path, options: &FormatOptions, ctx: &EditContext<'_>) -> Result<()> {
        let _ = (path, options, ctx);
        Err(refusal(self.name(), Capability::Amend))
    }

    /// Takes, applies or deletes an internal snapshot.
    fn edit_snapshot(&self, path: &Path, edit: &SnapshotEdit, ctx: &EditContext<'_>) -> Result<()> {
        let _ = (path, edit, ctx);
        Err(refusal(self.name(), Capability::EditSnapshots))
    }

    /// Adds, removes, clears, enables, disables or merges persistent dirty bitmaps of the
    /// image at `path` in place (`bitmap`), the operations in the order given. The default,
    /// for a format that holds no bitmaps, fails as qemu-img does for such a format
    /// ([`crate::edit::no_bitmaps`]).
    fn edit_bitmaps(
        &self,
        path: &Path,
        edit: &BitmapEdit<'_>,
        ctx: &EditContext<'_>,
    ) -> Result<()> {
        let _ = ctx;
        crate::edit::no_bitmaps(path, edit)
    }

    /// Predicts the file size of an image of this format made as `request` describes.
    fn measure(&self, request: &MeasureRequest<'_>) -> Result<Measurement> {
        let _ = request;
        Err(refusal(self.name(), Capability::Measure))
    }

    /// Whether `convert -n --bitmaps` can add persistent dirty bitmaps of a `size`-byte
    /// source to the existing image `layer` (opened from the destination): checked before any
    /// data is written, so a refusal leaves the destination as it was.
    fn can_add_dirty_bitmaps(&self, layer: &dyn Layer, size: u64) -> Result<()> {
        let _ = (layer, size);
        Err(Error::unsupported(format!(
            "Format driver '{}' does not support bitmaps",
            self.name()
        )))
    }

    /// Adds `bitmaps` to the existing image at `path` once its data is written
    /// (`convert -n --bitmaps`; see [`Driver::can_add_dirty_bitmaps`]).
    fn add_dirty_bitmaps(
        &self,
        path: &Path,
        bitmaps: &[std::sync::Arc<dyn crate::dirty_bitmap::DirtyBitmap>],
        ctx: &EditContext<'_>,
    ) -> Result<()> {
        let _ = (path, bitmaps, ctx);
        Err(Error::unsupported(format!(
            "Format driver '{}' does not support bitmaps",
            self.name()
        )))
    }

    /// Whether a new image made with `options` holds persistent dirty bitmaps
    /// ([`CreateSpec::bitmaps`](crate::writer::CreateSpec::bitmaps), `convert --bitmaps`).
    fn holds_dirty_bitmaps(&self, options: &FormatOptions) -> bool {
        let _ = options;
        false
    }
}

/// The error for a format that lacks `cap`.
pub fn refusal(name: &str, cap: Capability) -> Error {
    Error::unsupported(match cap {
        Capability::Read => format!("reading {name} images is not supported by diskferry yet"),
        Capability::ReadStream => format!(
            "{name} images cannot be read from a pipe (they need random access); convert from a file"
        ),
        Capability::Write => format!("writing {name} images is not supported by diskferry yet"),
        Capability::WriteStream => format!(
            "{name} images cannot be written to a pipe (they are written out of order); write to a file"
        ),
        Capability::Check => format!("checking {name} images is not supported by diskferry yet"),
        Capability::Compress => format!("-c: {name} images cannot be compressed"),
        Capability::Backing => format!("{name} images cannot have a backing file"),
        Capability::Snapshots => format!("{name} images have no internal snapshots"),
        Capability::WriteInPlace => {
            format!("writing into existing {name} images is not supported by diskferry yet")
        }
        Capability::Resize => format!("resizing {name} images is not supported by diskferry yet"),
        Capability::Rebase => {
            format!("changing the backing file of {name} images is not supported by diskferry yet")
        }
        Capability::Amend => format!("{name} images have no options that amend can change"),
        Capability::EditSnapshots => {
            format!("{name} images cannot take internal snapshots (qcow2 can)")
        }
        Capability::Measure => format!("measuring {name} images is not supported by diskferry yet"),
    })
}

/// A handle on a format's driver: cheap to copy, compared by name.
#[derive(Clone, Copy)]
pub struct Format(&'static dyn Driver);

impl Format {
    /// The format of `driver`.
    pub const fn new(driver: &'static dyn Driver) -> Format {
        Format(driver)
    }

    /// The driver.
    pub fn driver(self) -> &'static dyn Driver {
        self.0
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// True when `name` is the canonical name or an alias (ignoring case).
    pub fn answers_to(self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name)
            || self
                .0
                .aliases()
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
    }

    /// True when the driver can do `cap`.
    pub fn can(self, cap: Capability) -> bool {
        self.0.capabilities().has(cap)
    }

    /// Fails with the format's refusal when the driver cannot do `cap`.
    pub fn require(self, cap: Capability) -> Result<()> {
        if self.can(cap) {
            Ok(())
        } else {
            Err(refusal(self.name(), cap))
        }
    }
}

impl PartialEq for Format {
    fn eq(&self, other: &Format) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Format {}

impl Hash for Format {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl fmt::Debug for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
