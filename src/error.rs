//! Errors with context: what went wrong, in which file, at which offset.
//!
//! A user reading `disk.vhd: BAT entry 17 points past the end of the file (offset 9216 = 0x2400)`
//! knows what happened; "invalid data" helps nobody. Every error the library returns carries the
//! path of the file involved (when there is one) and the byte offset (when it applies).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is, for callers that branch on it (exit codes, retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The operating system refused an operation (open, read, write, rename ...).
    Io,
    /// The image's bytes contradict its format: bad magic, bad checksum, table entry out of bounds.
    Corrupt,
    /// The image is valid but uses something diskferry does not handle (yet).
    Unsupported,
    /// The caller asked for something impossible: unknown option, bad size, destination = source.
    InvalidInput,
    /// The operation was interrupted (Ctrl-C, a closed pipe).
    Interrupted,
    /// An image names a file that the open gate does not let it open (a device, a FIFO, a
    /// file outside a confined folder); see [`crate::gate`].
    Refused,
}

/// An error with its context. Construct with [`Error::io`], [`Error::corrupt`],
/// [`Error::unsupported`] or [`Error::invalid`], then add context with [`Error::with_path`] and
/// [`Error::at_offset`].
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    path: Option<PathBuf>,
    offset: Option<u64>,
    source: Option<io::Error>,
}

impl Error {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            path: None,
            offset: None,
            source: None,
        }
    }

    /// An operating-system error while doing `op` (a short verb phrase: "open", "read header").
    pub fn io(op: impl Into<String>, source: io::Error) -> Self {
        let kind = match source.kind() {
            io::ErrorKind::Interrupted | io::ErrorKind::BrokenPipe => ErrorKind::Interrupted,
            _ => ErrorKind::Io,
        };
        Error {
            source: Some(source),
            ..Error::new(kind, op)
        }
    }

    /// The image's content contradicts its format.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    /// A valid feature diskferry does not handle.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// A request that cannot be honoured (bad argument, bad option).
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// The operation was interrupted.
    pub fn interrupted(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Interrupted, message)
    }

    /// Names the file the error is about, unless one is named already (the innermost context is
    /// the most precise one: a parent image's path beats the child's).
    pub fn with_path(mut self, path: impl AsRef<Path>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Names the byte offset in the file the error is about, unless one is named already.
    pub fn at_offset(mut self, offset: u64) -> Self {
        if self.offset.is_none() {
            self.offset = Some(offset);
        }
        self
    }

    /// A file named inside an image was refused by the open gate.
    pub fn refused(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Refused, message)
    }

    /// Adds what was being done in front of the message ("extent 'a.vmdk': ..."), keeping the
    /// kind, the cause, the file and the offset: context never rebuilds an error from its text.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Adds a note after the message ("...; formats that can: vhd, vmdk").
    pub fn context_after(mut self, note: impl std::fmt::Display) -> Self {
        self.message = format!("{}; {note}", self.message);
        self
    }

    /// Re-attributes an error raised inside a storage that a [`crate::storage::Window`] looks
    /// into: it now names the window, at an offset relative to the window's start.
    pub fn relocate(mut self, path: &Path, start: u64) -> Self {
        self.path = Some(path.to_path_buf());
        self.offset = self.offset.map(|o| o.saturating_sub(start));
        self
    }

    /// Replaces the file the error names (for errors about a temporary file that has another
    /// name for the user).
    pub fn rename_path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = Some(path.as_ref().to_path_buf());
        self
    }

    /// The failure's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file the error is about, if known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte offset the error is about, if known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The message without path and offset.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The operating-system error behind this one, if any.
    pub fn io_source(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}: ", path.display())?;
        }
        f.write_str(&self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " (offset {offset} = {offset:#x})")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {}", describe_io(source))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `io::Error`'s Display appends "(os error 2)"; users want the sentence only.
fn describe_io(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Adds a path to errors on their way out of a function.
pub trait ResultExt<T> {
    /// See [`Error::with_path`].
    fn with_path(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| e.with_path(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_offset_and_cause() {
        let e = Error::corrupt("BAT entry 17 points past the end of the file")
            .at_offset(0x2400)
            .with_path("disk.vhd");
        assert_eq!(
            e.to_string(),
            "disk.vhd: BAT entry 17 points past the end of the file (offset 9216 = 0x2400)"
        );
        let e = Error::io("open", io::Error::from_raw_os_error(2)).with_path("x.img");
        assert_eq!(e.to_string(), "x.img: open: No such file or directory");
        assert_eq!(e.kind(), ErrorKind::Io);
    }

    #[test]
    fn innermost_context_wins() {
        let e = Error::corrupt("bad")
            .with_path("parent.vhd")
            .with_path("child.vhd");
        assert_eq!(e.path(), Some(Path::new("parent.vhd")));
    }
}
