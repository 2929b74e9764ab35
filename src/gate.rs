//! The open gate: the one place that decides which files an image may make diskferry open.
//!
//! The user chooses the image; the image chooses its parents, extents, backing and data files
//! by names stored inside it. Those names are untrusted: a VMDK descriptor naming
//! `RW 1 FLAT "/etc/shadow"` must not copy that file into an output, and an extent naming a
//! FIFO must not hang the program. Every name an image holds is opened here, by one policy:
//!
//! - always: only regular files (with [`DeviceAccess::Allow`], block and character devices
//!   too, for VMware raw-device mappings); never a FIFO, a socket or a directory; never
//!   anything under `/proc`, `/sys` or (unless devices are allowed) `/dev`. Opening never
//!   blocks: the file is opened non-blocking and its type checked on the open descriptor.
//! - [`Confinement::Anywhere`] (the command line's default, as qemu-img): any such file.
//! - [`Confinement::ImageFolder`] (`--confine`, the library's default, for services that handle
//!   uploaded images): only files inside the folder of the image that names them: no absolute
//!   names, no `..` that leaves the folder, no symlink that leads out of it.
//!
//! Whether backing files are followed at all is the image's open options' business
//! ([`crate::image::BackingPolicy`]); the gate decides where a followed name may lead.

use crate::error::{Error, Result};
use crate::host_file::HostFile;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Where names found inside an image may lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// Anywhere on the host (regular files only).
    Anywhere,
    /// Only inside the folder of the image that holds the name.
    ImageFolder,
}

/// Whether names found inside an image may lead to devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAccess {
    /// Regular files only.
    Refuse,
    /// Block and character devices too (`--allow-devices`: a raw-device-mapping descriptor).
    Allow,
}

/// What the named file is to the image, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A part of the image itself (a VMDK extent).
    Extent,
    /// The image's parent or backing file.
    Backing,
    /// An external data file (qcow2).
    DataFile,
    /// A file an OVF descriptor names (a disk of an OVF folder).
    PackageMember,
    /// A folder searched for a parent the image names by identity only (a VDI's, by UUID).
    SearchFolder,
}

impl Role {
    /// The role as messages name it (`data file`, `backing file`...).
    pub fn noun(self) -> &'static str {
        match self {
            Role::Extent => "extent file",
            Role::Backing => "backing file",
            Role::DataFile => "data file",
            Role::PackageMember => "package file",
            Role::SearchFolder => "folder",
        }
    }
}

/// What opening a name found.
#[derive(Debug)]
pub enum Lookup {
    /// The file, opened read-only.
    Opened(Arc<HostFile>),
    /// Nothing by that name (the caller may try another candidate); the path tried.
    Missing(PathBuf),
}

/// The policy for every file an image names. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// Where names may lead.
    pub confinement: Confinement,
    /// Whether they may lead to devices.
    pub devices: DeviceAccess,
}

impl Default for Gate {
    /// The library's default: confined to the image's folder, no devices.
    fn default() -> Gate {
        Gate::confined()
    }
}

/// Folders whose files are never opened through a name inside an image: they hold the
/// kernel's and the process's secrets (`/proc/self/environ`) and devices.
const FORBIDDEN_TREES: [&str; 3] = ["/proc", "/sys", "/dev"];

const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const SYSFS_MAGIC: i64 = 0x6265_6572;

impl Gate {
    /// Regular files inside the image's folder only.
    pub fn confined() -> Gate {
        Gate {
            confinement: Confinement::ImageFolder,
            devices: DeviceAccess::Refuse,
        }
    }

    /// Regular files anywhere, as qemu-img follows names.
    pub fn anywhere() -> Gate {
        Gate {
            confinement: Confinement::Anywhere,
            devices: DeviceAccess::Refuse,
        }
    }

    /// The same gate with the given device access.
    pub fn with_devices(self, devices: DeviceAccess) -> Gate {
        Gate { devices, ..self }
    }

    /// The path `name` (as stored in the image, with `/` separators) means for the image at
    /// `image`: absolute names as they are, relative ones against the image's folder.
    pub fn resolve(image: &Path, name: &str) -> PathBuf {
        let as_path = Path::new(name);
        match image.parent() {
            // An image named without a folder: the name is already relative to the current
            // folder, and is shown as qemu-img shows it (no added `./`, which scripts compare).
            Some(p) if p.as_os_str().is_empty() && !as_path.is_absolute() => as_path.to_path_buf(),
            _ if as_path.is_absolute() => as_path.to_path_buf(),
            _ => folder_of(image).join(as_path),
        }
    }

    /// The path `name` leads to, when the policy lets the image at `image` name it; the
    /// refusal otherwise. Only the way there is looked at (the names on it, and the symbolic
    /// links met, read as the kernel would follow them); the file itself is not touched, so a
    /// caller that must not open it (`info` showing a parent it does not follow) can still
    /// ask before looking at it. [`Gate::open`] makes the final decision on the open file.
    pub fn allowed_path(&self, image: &Path, name: &str, role: Role) -> Result<PathBuf> {
        let refuse = |why: String| {
            Error::refused(format!("{} '{name}' refused: {why}", role.noun())).with_path(image)
        };
        if name.is_empty() || name.contains('\0') {
            return Err(refuse("the name is empty or holds a NUL byte".into()));
        }
        if self.confinement == Confinement::ImageFolder {
            if Path::new(name).is_absolute() {
                return Err(refuse(
                    "an absolute name, and --confine allows only files inside the image's folder"
                        .into(),
                ));
            }
            if leaves_folder(name) {
                return Err(refuse(
                    "it leads out of the image's folder (..), which --confine does not allow"
                        .into(),
                ));
            }
        }
        let path = Gate::resolve(image, name);
        // The file's real place is checked on the open descriptor by `open`; the way there is
        // checked first, for a name or link that passes through /proc or /dev to a regular
        // file (`/dev/stdin`, `/dev/fd/7`, `/proc/self/root/...` lead to whatever the process
        // holds open).
        if let Some(tree) = self.forbidden_way(&path) {
            return Err(refuse(format!("it leads through {tree}")));
        }
        Ok(path)
    }

    /// Opens the file that the image at `image` names `name`, if the policy allows it.
    /// A refusal is an error of kind [`crate::ErrorKind::Refused`] naming the image and the
    /// name as stored; it never quotes the file's contents.
    pub fn open(&self, image: &Path, name: &str, role: Role) -> Result<Lookup> {
        let refuse = |why: String| {
            Error::refused(format!("{} '{name}' refused: {why}", role.noun())).with_path(image)
        };
        let path = self.allowed_path(image, name, role)?;
        // A first look, for a precise message; the decision is made on the open descriptor.
        if let Ok(meta) = std::fs::metadata(&path) {
            let kind = FileType::from_raw_mode(std::os::unix::fs::MetadataExt::mode(&meta));
            if let Some(why) = self.refusal_for(kind) {
                return Err(refuse(why));
            }
        }
        let fd = match rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(Lookup::Missing(path)),
            Err(Errno::NXIO) => return Err(refuse("it is a socket or an absent device".into())),
            Err(e) => {
                return Err(
                    Error::io(format!("cannot open {} '{name}'", role.noun()), e.into())
                        .with_path(image),
                );
            }
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| {
            Error::io(format!("cannot inspect {} '{name}'", role.noun()), e.into()).with_path(image)
        })?;
        if let Some(why) = self.refusal_for(FileType::from_raw_mode(stat.st_mode)) {
            return Err(refuse(why));
        }
        if let Ok(fs) = rustix::fs::fstatfs(&fd) {
            #[allow(clippy::unnecessary_cast)]
            // f_type is i64 here, a narrower type on other targets
            let magic = fs.f_type as i64;
            if magic == PROC_SUPER_MAGIC || magic == SYSFS_MAGIC {
                return Err(refuse("it lies in /proc or /sys".into()));
            }
        }
        let real = std::fs::read_link(format!("/proc/self/fd/{}", rustix_fd_number(&fd)))
            .or_else(|_| std::fs::canonicalize(&path))
            .map_err(|e| {
                Error::io(format!("cannot resolve {} '{name}'", role.noun()), e).with_path(image)
            })?;
        for tree in FORBIDDEN_TREES {
            let device_tree = tree == "/dev";
            if real.starts_with(tree) && !(device_tree && self.devices == DeviceAccess::Allow) {
                return Err(refuse(format!("it lies in {tree}")));
            }
        }
        if self.confinement == Confinement::ImageFolder {
            let folder = std::fs::canonicalize(folder_of(image))
                .map_err(|e| Error::io("cannot resolve the image's folder", e).with_path(image))?;
            if !real.starts_with(&folder) {
                return Err(refuse(
                    "it resolves (through a symbolic link) to a file outside the image's folder, which --confine does not allow".into(),
                ));
            }
        }
        // Reads of regular files and devices do not care, but leave the descriptor as a plain
        // blocking one.
        let _ = rustix::fs::fcntl_setfl(&fd, OFlags::empty());
        let file = std::fs::File::from(fd);
        Ok(Lookup::Opened(Arc::new(HostFile::from_file(file, &path)?)))
    }

    /// The forbidden tree that `path`, or any symbolic link met on the way to its file,
    /// names, walking it one component at a time as the kernel does.
    fn forbidden_way(&self, path: &Path) -> Option<&'static str> {
        let forbidden = |p: &Path| {
            FORBIDDEN_TREES.into_iter().find(|tree| {
                p.starts_with(tree) && !(*tree == "/dev" && self.devices == DeviceAccess::Allow)
            })
        };
        let start = std::path::absolute(path).ok()?;
        let mut todo: Vec<std::ffi::OsString> = start
            .components()
            .rev()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        let mut at = PathBuf::from("/");
        let mut links = 0;
        while let Some(part) = todo.pop() {
            match Path::new(&part).components().next() {
                Some(Component::RootDir) => at = PathBuf::from("/"),
                Some(Component::ParentDir) => {
                    at.pop();
                }
                Some(Component::Normal(n)) => {
                    let next = at.join(n);
                    if let Some(tree) = forbidden(&next) {
                        return Some(tree);
                    }
                    match std::fs::read_link(&next) {
                        Ok(target) => {
                            links += 1;
                            if links > 40 {
                                // The open fails on the loop itself.
                                return None;
                            }
                            todo.extend(
                                target
                                    .components()
                                    .rev()
                                    .map(|c| c.as_os_str().to_os_string()),
                            );
                        }
                        Err(_) => at = next,
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn refusal_for(&self, kind: FileType) -> Option<String> {
        match kind {
            FileType::RegularFile => None,
            FileType::BlockDevice | FileType::CharacterDevice
                if self.devices == DeviceAccess::Allow =>
            {
                None
            }
            FileType::BlockDevice => Some(
                "it is a block device, and names inside an image may lead only to regular files (--allow-devices allows devices)".into(),
            ),
            FileType::CharacterDevice => Some(
                "it is a character device, and names inside an image may lead only to regular files (--allow-devices allows devices)".into(),
            ),
            FileType::Directory => Some("it is a directory".into()),
            FileType::Fifo => Some("it is a FIFO (named pipe)".into()),
            FileType::Socket => Some("it is a socket".into()),
            _ => Some("it is not a regular file".into()),
        }
    }
}

fn rustix_fd_number(fd: &rustix::fd::OwnedFd) -> i32 {
    use rustix::fd::AsRawFd;
    fd.as_raw_fd()
}

/// The folder names inside `image` are relative to.
pub fn folder_of(image: &Path) -> PathBuf {
    match image.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// True when a relative name climbs above its starting folder with `..` at some point.
fn leaves_folder(name: &str) -> bool {
    let mut depth = 0i64;
    for c in Path::new(name).components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    fn opened(l: Lookup) -> Arc<HostFile> {
        match l {
            Lookup::Opened(f) => f,
            Lookup::Missing(p) => panic!("missing {}", p.display()),
        }
    }

    #[test]
    fn dot_dot_is_judged_lexically() {
        assert!(!leaves_folder("a/../b"));
        assert!(leaves_folder("../b"));
        assert!(leaves_folder("a/../../b"));
        assert!(!leaves_folder("./a/b"));
    }

    #[test]
    fn regular_files_pass_everything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.vmdk");
        std::fs::write(dir.path().join("ok.bin"), b"data").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for gate in [Gate::anywhere(), Gate::confined()] {
            let f = opened(gate.open(&image, "ok.bin", Role::Extent).unwrap());
            assert_eq!(f.len(), 4);
            for bad in ["fifo", "sub"] {
                let err = gate.open(&image, bad, Role::Extent).unwrap_err();
                assert_eq!(err.kind(), crate::ErrorKind::Refused, "{err}");
                assert!(err.to_string().contains(bad), "{err}");
            }
            assert!(matches!(
                gate.open(&image, "nope", Role::Extent).unwrap(),
                Lookup::Missing(_)
            ));
            for bad in ["/proc/self/environ", "/dev/zero"] {
                assert!(gate.open(&image, bad, Role::Backing).is_err(), "{bad}");
            }
        }
        let devices = Gate::anywhere().with_devices(DeviceAccess::Allow);
        assert!(devices.open(&image, "/dev/zero", Role::Extent).is_ok());
        assert!(
            devices
                .open(&image, "/proc/self/environ", Role::Extent)
                .is_err()
        );
        assert!(devices.open(&image, "fifo", Role::Extent).is_err());
    }

    #[test]
    fn confinement_keeps_names_inside_the_folder() {
        let outer = tempfile::tempdir().unwrap();
        let dir = outer.path().join("vm");
        std::fs::create_dir(&dir).unwrap();
        let image = dir.join("image.vmdk");
        let secret = outer.path().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("link")).unwrap();
        let abs = secret.to_str().unwrap();
        for name in ["../secret", abs, "link"] {
            assert!(
                Gate::anywhere().open(&image, name, Role::Extent).is_ok(),
                "{name}"
            );
            let err = Gate::confined()
                .open(&image, name, Role::Extent)
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Refused, "{name}: {err}");
            assert!(!err.to_string().contains("secret\n"), "{err}");
        }
    }
}
