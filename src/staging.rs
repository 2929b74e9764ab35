//! Atomic output: files are written beside their destinations without a name (`O_TMPFILE`)
//! where the file system allows it, else under hidden temporary names, and appear at their
//! destinations only when complete. A failed or interrupted run leaves nothing at the
//! destination; with `O_TMPFILE` not even `kill -9` leaves a partial file behind.

use crate::error::{Error, Result};
use crate::host_file::Durability;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Temporary files of every live [`Staging`], so that an interrupt handler can remove them
/// before the process exits (destructors do not run on a signal).
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every temporary output file still pending, and says how many there were. For
/// signal handlers; see [`install_interrupt_cleanup`].
pub fn remove_pending_outputs() -> usize {
    let pending = match PENDING.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    for path in pending.iter() {
        if std::fs::remove_file(path).is_err() {
            // A staged folder (a VM written as a folder of files).
            let _ = std::fs::remove_dir_all(path);
        }
    }
    pending.len()
}

/// The signals whose default action ends the process and that a handler can catch: each of
/// them would otherwise leave a hidden temporary file behind.
const TERMINATING_SIGNALS: [i32; 11] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGQUIT,
    signal_hook::consts::SIGUSR1,
    signal_hook::consts::SIGUSR2,
    signal_hook::consts::SIGALRM,
    signal_hook::consts::SIGVTALRM,
    signal_hook::consts::SIGPROF,
    signal_hook::consts::SIGXCPU,
    signal_hook::consts::SIGXFSZ,
];

/// Installs a handler for every catchable signal that would end the process (Ctrl-C, SIGTERM,
/// SIGHUP, SIGQUIT, SIGUSR1 ...) that removes pending outputs and exits with status 130. For
/// command-line programs; a library caller may prefer its own handling.
pub fn install_interrupt_cleanup() -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new(TERMINATING_SIGNALS)
        .map_err(|e| Error::io("cannot install the interrupt handler", e))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                // An in-place operation has no staged output: its image is left as each
                // step's crash consistency leaves it, and the message does not claim more.
                if remove_pending_outputs() > 0 {
                    eprintln!("diskferry: interrupted; partial output removed");
                } else {
                    eprintln!("diskferry: interrupted");
                }
                std::process::exit(130);
            }
        })
        .map_err(|e| Error::io("cannot start the interrupt handler", e))?;
    Ok(())
}

struct StagedFile {
    dest: PathBuf,
    temp: Temp,
}

enum Temp {
    /// A hidden file beside the destination (registered in [`PENDING`]).
    Named(PathBuf),
    /// An unnamed file in the destination's folder: a second handle on it, to give it a name
    /// at commit. The kernel frees it when the process ends without doing so.
    Unnamed { dir: PathBuf, file: Arc<File> },
}

/// A set of output files being written. Dropping it without [`Staging::commit`] removes them.
pub struct Staging {
    files: Vec<StagedFile>,
    durability: Durability,
}

impl Default for Staging {
    fn default() -> Self {
        Staging::new()
    }
}

impl Staging {
    /// An empty staging area whose outputs are flushed before they are renamed into place.
    pub fn new() -> Staging {
        Staging::with_durability(Durability::Flush)
    }

    /// An empty staging area with the given durability.
    pub fn with_durability(durability: Durability) -> Staging {
        Staging {
            files: Vec::new(),
            durability,
        }
    }

    /// Whether outputs are flushed before they are renamed into place.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Creates a new file that will appear at `dest` on commit. Its temporary name is hidden
    /// (a leading dot) in the same folder, so the final rename never crosses file systems.
    /// The staging area and the caller share one descriptor (a disk of thousands of extent
    /// files must not need two each).
    pub fn create(&mut self, dest: &Path) -> Result<Arc<File>> {
        let name = dest
            .file_name()
            .ok_or_else(|| Error::invalid("destination has no file name").with_path(dest))?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(
                Error::invalid(format!("folder '{}' does not exist", dir.display()))
                    .with_path(dest),
            );
        }
        if dest.is_dir() {
            return Err(Error::invalid("destination is a directory").with_path(dest));
        }
        if self.files.iter().any(|f| f.dest == dest) {
            return Err(Error::invalid("the same output file is written twice").with_path(dest));
        }
        if let Some(file) = create_unnamed(&dir) {
            let file = Arc::new(file);
            self.files.push(StagedFile {
                dest: dest.to_path_buf(),
                temp: Temp::Unnamed {
                    dir,
                    file: Arc::clone(&file),
                },
            });
            return Ok(file);
        }
        let (temp, file) = create_hidden(&dir, name, |temp| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(temp)
        })?;
        self.files.push(StagedFile {
            dest: dest.to_path_buf(),
            temp: Temp::Named(temp),
        });
        Ok(Arc::new(file))
    }

    /// The final paths of the staged files, in creation order.
    pub fn destinations(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.dest.as_path())
    }

    /// Renames every staged file to its destination, the first-created (the main file, such
    /// as a VMDK descriptor) last, so that it never names extents that are not there yet.
    pub fn commit(mut self) -> Result<()> {
        while let Some(mut staged) = self.files.pop() {
            // Replacing an existing file keeps its owner and permissions, as writing into it
            // would (scripts rely on a disk image keeping its group and mode).
            if let Ok(old) = std::fs::metadata(&staged.dest)
                && old.is_file()
            {
                let result = match &staged.temp {
                    Temp::Unnamed { file, .. } => keep_owner_and_mode(file, &old),
                    Temp::Named(temp) => {
                        File::open(temp).and_then(|f| keep_owner_and_mode(&f, &old))
                    }
                };
                if let Err(e) = result {
                    let err = Error::io("cannot give the new file the old one's owner and mode", e)
                        .with_path(&staged.dest);
                    self.files.push(staged);
                    return Err(err);
                }
            }
            if let Temp::Unnamed { dir, file } = &staged.temp {
                // Name it beside the destination, then rename: linkat cannot replace an
                // existing destination, and rename does so atomically.
                let name = staged.dest.file_name().unwrap_or_default();
                let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
                let linked = create_hidden(dir, name, |temp| {
                    rustix::fs::linkat(
                        rustix::fs::CWD,
                        &fd_path,
                        rustix::fs::CWD,
                        temp,
                        rustix::fs::AtFlags::SYMLINK_FOLLOW,
                    )
                    .map_err(std::io::Error::from)
                });
                match linked {
                    Ok((temp, ())) => staged.temp = Temp::Named(temp),
                    Err(e) => {
                        self.files.push(staged);
                        return Err(e);
                    }
                }
            }
            let Temp::Named(temp) = &staged.temp else {
                unreachable!("named just above")
            };
            if let Err(e) = rename_registered(temp, &staged.dest) {
                let err = Error::io("cannot move the finished file into place", e)
                    .with_path(&staged.dest);
                self.files.push(staged);
                return Err(err);
            }
            if self.durability == Durability::Unsafe {
                continue;
            }
            if let Some(dir) = staged.dest.parent() {
                // Make the rename durable; failures here do not undo a complete output.
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    }
}

/// Gives `file` the owner, group and permission bits of `old`. Changing the owner needs
/// privileges; without them only what is allowed is kept (the group, when the user is in it)
/// and the mode is kept in any case.
fn keep_owner_and_mode(file: &File, old: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::fs::Uid::from_raw(old.uid());
    let gid = rustix::fs::Gid::from_raw(old.gid());
    let current = file.metadata()?;
    if current.uid() != old.uid() || current.gid() != old.gid() {
        match rustix::fs::fchown(file, Some(uid), Some(gid)) {
            Ok(()) => {}
            Err(rustix::io::Errno::PERM) => {
                let _ = rustix::fs::fchown(file, None, Some(gid));
            }
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::fchmod(file, rustix::fs::Mode::from_raw_mode(old.mode() & 0o7777))?;
    Ok(())
}

/// Opens an unnamed file in `dir`, or `None` where that cannot be done (a file system without
/// `O_TMPFILE`, or no `/proc` to name it through at commit); the caller then uses a hidden name.
/// A scratch file in `dir` that no name reaches and that vanishes with its last handle, even if
/// the process is killed: `O_TMPFILE`, or on file systems without it a file removed at once.
/// For data kept only while a command runs (a compressed qcow2's spool, an inflated gzip
/// member, an OVA's disks before they go to a pipe).
pub fn scratch_file(dir: &Path) -> Result<File> {
    use rustix::fs::{Mode, OFlags};
    if let Ok(fd) = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        return Ok(File::from(fd));
    }
    let path = dir.join(format!(".diskferry-scratch-{}", uuid::Uuid::new_v4()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("cannot make a temporary file", e).with_path(&path))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

fn create_unnamed(dir: &Path) -> Option<File> {
    if !Path::new("/proc/self/fd").is_dir() {
        return None;
    }
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o666),
    )
    .ok()?;
    Some(File::from(fd))
}

/// Makes a hidden name beside the destination (`.NAME.PID-N.diskferry-partial`) with `make`,
/// trying further numbers while the name is taken. The name is registered for the interrupt
/// handler before `make` runs, so an interrupt between the two cannot leave the file behind.
fn create_hidden<T>(
    dir: &Path,
    name: &std::ffi::OsStr,
    mut make: impl FnMut(&Path) -> std::io::Result<T>,
) -> Result<(PathBuf, T)> {
    let mut attempt = 0u32;
    loop {
        let temp = dir.join(format!(
            ".{}.{}-{attempt}.diskferry-partial",
            name.to_string_lossy(),
            std::process::id()
        ));
        lock_pending().push(temp.clone());
        match make(&temp) {
            Ok(made) => return Ok((temp, made)),
            Err(e) => {
                unregister(&temp);
                if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 {
                    attempt += 1;
                    continue;
                }
                // Name the destination the user gave, never the hidden temporary name.
                return Err(
                    Error::io("cannot create the output's temporary file beside", e)
                        .with_path(dir.join(name)),
                );
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for staged in self.files.drain(..) {
            // An unnamed file vanishes with its last handle.
            if let Temp::Named(temp) = &staged.temp {
                let _ = std::fs::remove_file(temp);
                unregister(temp);
            }
        }
    }
}

/// A new folder being written (a VM as a folder of disks and a description): made hidden
/// beside its destination and renamed into place on [`StagedFolder::commit`]; dropped
/// without it, or on an interrupt, it is removed with everything in it.
pub struct StagedFolder {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl StagedFolder {
    /// Starts the folder `dest`, which must not exist (a folder of someone's VM is never
    /// merged into or replaced).
    pub fn new(dest: &Path) -> Result<StagedFolder> {
        let name = dest
            .file_name()
            .ok_or_else(|| Error::invalid("destination has no folder name").with_path(dest))?;
        if std::fs::symlink_metadata(dest).is_ok() {
            return Err(Error::invalid(
                "the destination exists; a VM is written as a new folder, never into an existing one",
            )
            .with_path(dest));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (temp, ()) = create_hidden(&dir, name, |temp| std::fs::create_dir(temp))?;
        Ok(StagedFolder {
            temp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// Where to write the folder's files now.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Where the folder will be.
    pub fn destination(&self) -> &Path {
        &self.dest
    }

    /// Flushes every file in the folder (when `durability` asks) and renames the folder into
    /// place.
    pub fn commit(mut self, durability: Durability) -> Result<()> {
        if durability == Durability::Flush {
            let entries = std::fs::read_dir(&self.temp)
                .map_err(|e| Error::io("cannot list the new folder", e).with_path(&self.temp))?;
            for entry in entries.flatten() {
                if let Ok(f) = File::open(entry.path()) {
                    f.sync_all()
                        .map_err(|e| Error::io("cannot flush", e).with_path(entry.path()))?;
                }
            }
        }
        if std::fs::symlink_metadata(&self.dest).is_ok() {
            return Err(Error::invalid(
                "the destination appeared while the VM was being written; the new folder is left out",
            )
            .with_path(&self.dest));
        }
        rename_registered(&self.temp, &self.dest).map_err(|e| {
            Error::io("cannot rename the new folder into place", e).with_path(&self.dest)
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedFolder {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.temp);
            unregister(&self.temp);
        }
    }
}

fn lock_pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    match PENDING.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Renames a registered temporary output to `dest` and unregisters it, holding the list's
/// lock throughout: an interrupt's cleanup (which takes the lock) then runs wholly before the
/// rename, removing the temporary, or wholly after it, finding nothing to remove. Without
/// the lock, a cleanup emptying a staged folder while it was renamed emptied the
/// destination instead.
fn rename_registered(temp: &Path, dest: &Path) -> std::io::Result<()> {
    let mut pending = lock_pending();
    std::fs::rename(temp, dest)?;
    if let Some(i) = pending.iter().position(|p| p == temp) {
        pending.swap_remove(i);
    }
    Ok(())
}

fn unregister(path: &Path) {
    let mut pending = lock_pending();
    if let Some(i) = pending.iter().position(|p| p == path) {
        pending.swap_remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn nothing_appears_until_commit_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.img");
        {
            let mut s = Staging::new();
            let mut f = s.create(&dest).unwrap();
            f.write_all(b"abc").unwrap();
            assert!(!dest.exists());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut s = Staging::new();
        let mut f = s.create(&dest).unwrap();
        f.write_all(b"abc").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_folder_is_a_clear_error() {
        let mut s = Staging::new();
        let err = s.create(Path::new("/nonexistent-dir/x.img")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
