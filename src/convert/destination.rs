//! What a destination is, decided once for every command that writes an image, as qemu-img
//! decides it (scripts rely on it):
//!
//! - `-`: standard output, written front to back;
//! - a block or character device (`/dev/sdX`, an LVM volume, a loop device): written in place,
//!   never replaced by a file;
//! - with `-n`: an existing image of the target format, written into without being created;
//! - anything else: a new file, staged beside the destination and renamed over it only when
//!   complete (a failed or interrupted command leaves the old file as it was), keeping the old
//!   file's owner and mode;
//! - a symbolic link is followed: its target gets the content, the link stays a link.

use crate::error::{Error, Result};
use crate::image::{Image, file_identity};
use rustix::fs::FileType;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether a destination is made or written into (`-n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Make the destination (replacing a file, writing a device in place).
    #[default]
    Create,
    /// `-n`: write into an existing image of the target format and size.
    Existing,
}

/// Where an image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output.
    Stdout,
    /// A new file at this path (symbolic links already followed).
    NewFile(PathBuf),
    /// A block or character device, written in place.
    Device(PathBuf),
    /// An existing image written into (`-n`).
    Existing(PathBuf),
}

/// Symbolic links followed at most (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Follows symbolic links from `path` to the file they lead to, which need not exist yet.
pub(crate) fn follow_links(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&current).map_err(|e| {
                    Error::io("cannot read the symbolic link", e).with_path(&current)
                })?;
                current = if target.is_absolute() {
                    target
                } else {
                    current.parent().unwrap_or(Path::new("")).join(target)
                };
            }
            _ => return Ok(current),
        }
    }
    Err(Error::invalid("too many levels of symbolic links").with_path(path))
}

impl Destination {
    /// Decides what `dest` is.
    pub fn resolve(dest: &Path, mode: WriteMode) -> Result<Destination> {
        if crate::convert::is_stdio(dest) {
            if mode == WriteMode::Existing {
                return Err(Error::invalid("-n cannot be used with standard output"));
            }
            return Ok(Destination::Stdout);
        }
        let path = follow_links(dest)?;
        let meta = std::fs::metadata(&path);
        match (mode, meta) {
            (WriteMode::Existing, Ok(_)) => Ok(Destination::Existing(path)),
            (WriteMode::Existing, Err(e)) => Err(Error::io(
                "-n writes into an existing image, but the destination cannot be opened",
                e,
            )
            .with_path(dest)),
            (WriteMode::Create, Ok(m)) => match FileType::from_raw_mode(m.mode()) {
                FileType::BlockDevice | FileType::CharacterDevice => Ok(Destination::Device(path)),
                FileType::Directory => {
                    Err(Error::invalid("destination is a directory").with_path(dest))
                }
                _ => Ok(Destination::NewFile(path)),
            },
            (WriteMode::Create, Err(_)) => Ok(Destination::NewFile(path)),
        }
    }

    /// The destination's name for messages.
    pub fn path(&self) -> &Path {
        match self {
            Destination::Stdout => Path::new("-"),
            Destination::NewFile(p) | Destination::Device(p) | Destination::Existing(p) => p,
        }
    }

    /// Refuses a destination that is the source or one of the files the source reads.
    pub fn refuse_overwriting(&self, source: &Image) -> Result<()> {
        let Some(dest_id) = file_identity(self.path()).filter(|_| *self != Destination::Stdout)
        else {
            return Ok(());
        };
        for layer in source.layers() {
            for (i, file) in layer.files().iter().enumerate() {
                let id = layer
                    .storage(i)
                    .and_then(|s| s.identity())
                    .or_else(|| file_identity(file));
                if id == Some(dest_id) {
                    return Err(Error::invalid(format!(
                        "destination is the same file as the source image's '{}'; refusing to overwrite it",
                        file.display()
                    ))
                    .with_path(self.path()));
                }
            }
        }
        Ok(())
    }

    /// Refuses a destination that is the backing image a new image is to refer to.
    pub fn refuse_as_backing(&self, backing: &Path) -> Result<()> {
        let dest = file_identity(self.path()).filter(|_| *self != Destination::Stdout);
        if dest.is_some() && dest == file_identity(backing) {
            return Err(
                Error::invalid("an image cannot be its own backing image").with_path(self.path())
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_to_files_that_need_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink("other/target.img", &link).unwrap();
        assert_eq!(
            Destination::resolve(&link, WriteMode::Create).unwrap(),
            Destination::NewFile(dir.path().join("other/target.img"))
        );
        assert!(Destination::resolve(&link, WriteMode::Existing).is_err());
        assert_eq!(
            Destination::resolve(Path::new("/dev/null"), WriteMode::Create).unwrap(),
            Destination::Device(PathBuf::from("/dev/null"))
        );
        assert_eq!(
            Destination::resolve(Path::new("-"), WriteMode::Create).unwrap(),
            Destination::Stdout
        );
    }
}
