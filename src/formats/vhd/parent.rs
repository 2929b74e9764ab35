//! Finding the parent of a differencing VHD (parent locators and the parent's unicode name)
//! and making the locators of a new child.

use super::dynamic_header::{DynamicHeader, Locator, NewLocator, platform};
use crate::format::Provenance;
use crate::storage::{Storage, StorageExt};
use std::path::{Component, Path, PathBuf};

/// Locator data longer than this is not a path (the longest Windows path is 32767 UTF-16
/// units); refusing it keeps a hostile length from making us allocate.
const MAX_LOCATOR_BYTES: u32 = 65536;

/// The parent as a differencing disk names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// The reference as stored (the first readable locator, else the unicode name).
    pub stored_name: String,
    /// Names to try, in order (`/` separators; relative ones are relative to the child's
    /// folder), to be opened through the gate.
    pub names: Vec<String>,
    /// Locators that could not be read, as messages for `info` and `check`.
    pub problems: Vec<String>,
}

/// The order locators are tried in: a relative path survives moving the chain to another
/// folder, so it comes before the absolute one; the deprecated ANSI codes come last.
fn rank(code: [u8; 4]) -> Option<u8> {
    match code {
        platform::W2RU => Some(0),
        platform::W2KU => Some(1),
        platform::MACX => Some(2),
        platform::WI2R => Some(3),
        platform::WI2K => Some(4),
        _ => None,
    }
}

/// A locator's platform code as text ("W2ku").
pub fn code_text(code: [u8; 4]) -> String {
    super::footer::fourcc_text(&code)
}

/// Reads and decodes one locator into a path as written (slashes normalised, drive letter
/// dropped); `Err` says why it is unusable.
pub fn read_locator(
    file: &dyn Storage,
    locator: &Locator,
    provenance: Provenance,
) -> Result<String, String> {
    let name = code_text(locator.code);
    if rank(locator.code).is_none() {
        return Err(format!(
            "parent locator {} has platform code '{name}', which names no path diskferry can use",
            locator.index
        ));
    }
    if locator.data_length == 0 {
        return Err(format!(
            "parent locator {} ({name}) has a length of 0",
            locator.index
        ));
    }
    if locator.data_length > MAX_LOCATOR_BYTES {
        return Err(format!(
            "parent locator {} ({name}) has a length of {} bytes, more than a path takes (at most {MAX_LOCATOR_BYTES})",
            locator.index, locator.data_length
        ));
    }
    let bytes = file
        .read_vec(
            locator.data_offset,
            u64::from(locator.data_length),
            "parent locator",
        )
        .map_err(|e| {
            format!(
                "parent locator {} ({name}) cannot be read: {}",
                locator.index,
                e.message()
            )
        })?;
    let text = match locator.code {
        platform::W2RU | platform::W2KU => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            String::from_utf16(&units).map_err(|_| {
                format!(
                    "parent locator {} ({name}) is not valid UTF-16",
                    locator.index
                )
            })?
        }
        platform::MACX => {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| {
                    format!(
                        "parent locator {} ({name}) is not valid UTF-8",
                        locator.index
                    )
                })?
                .trim_end_matches('\0');
            decode_file_url(text).ok_or_else(|| match provenance {
                Provenance::User => format!(
                    "parent locator {} ({name}) is not a file:// URL: '{text}'",
                    locator.index
                ),
                Provenance::NamedByImage => format!(
                    "parent locator {} ({name}) is not a file:// URL",
                    locator.index
                ),
            })?
        }
        // The deprecated codes hold the path in the host's ANSI code page; Latin-1 keeps
        // every byte.
        _ => bytes
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .collect(),
    };
    let path = windows_to_unix(&text);
    if path.is_empty() {
        return Err(format!(
            "parent locator {} ({name}) is empty",
            locator.index
        ));
    }
    Ok(path)
}

/// `C:\dir\x.vhd` → `/dir/x.vhd`, `.\x.vhd` → `./x.vhd`: the parts a Unix host can use.
fn windows_to_unix(text: &str) -> String {
    let text = text.trim_end_matches('\0');
    let mut s = text.replace('\\', "/");
    let b = s.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        s.drain(..2);
    }
    s
}

/// `file://localhost/a%20b/x.vhd` → `/a b/x.vhd`; `file://./x.vhd` → `./x.vhd`. `None` when
/// it is not a file URL or does not decode to UTF-8.
fn decode_file_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("file://")?;
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// A locator path as a name for the gate: absolute as it is, relative without `./` parts.
fn as_name(path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() {
        return path.to_string();
    }
    let rel: PathBuf = p
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    rel.to_string_lossy().into_owned()
}

/// The parent of a differencing disk in `file` with `header`: locators first (relative
/// before absolute), then the parent's unicode name beside the child.
pub fn locate(file: &dyn Storage, header: &DynamicHeader, provenance: Provenance) -> ParentRef {
    let mut locators: Vec<&Locator> = header.locators.iter().collect();
    locators.sort_by_key(|l| (rank(l.code).unwrap_or(u8::MAX), l.index));
    let mut names = Vec::new();
    let mut problems = Vec::new();
    let mut stored_name = None;
    for locator in locators {
        if locator.code == platform::MAC {
            // An alias record of classic Mac OS: nothing a path can be made of.
            continue;
        }
        match read_locator(file, locator, provenance) {
            Ok(path) => {
                if stored_name.is_none() {
                    stored_name = Some(path.clone());
                }
                names.push(as_name(&path));
            }
            Err(problem) => problems.push(problem),
        }
    }
    let name = windows_to_unix(&header.parent_name);
    if let Some(base) = name.rsplit('/').next().filter(|b| !b.is_empty()) {
        names.push(base.to_string());
    }
    if stored_name.is_none() && !name.is_empty() {
        stored_name = Some(header.parent_name.clone());
    }
    let mut unique: Vec<String> = Vec::new();
    for n in names {
        if !n.is_empty() && !unique.contains(&n) {
            unique.push(n);
        }
    }
    ParentRef {
        stored_name: stored_name.unwrap_or_default(),
        names: unique,
        problems,
    }
}

/// The path from folder `from` to `to`, both absolute and without `..`/symlink surprises
/// (canonicalised by the caller).
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// The locator data of a new child: W2ru (relative, `.\` first, as Windows writes it) and
/// W2ku (absolute), both UTF-16LE with backslashes, in that order.
pub fn new_locator_data(relative: &Path, absolute: &Path) -> Vec<([u8; 4], Vec<u8>)> {
    let utf16le = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect() };
    let rel = relative.to_string_lossy().replace('/', "\\");
    let rel = if rel.starts_with("..") {
        rel
    } else {
        format!(".\\{rel}")
    };
    let abs = absolute.to_string_lossy().replace('/', "\\");
    vec![
        (platform::W2RU, utf16le(&rel)),
        (platform::W2KU, utf16le(&abs)),
    ]
}

/// Lays out locator data from `start` (a multiple of 512), each in its own whole sectors;
/// returns the entries and the end of the last one.
pub fn place_locators(start: u64, data: &[([u8; 4], Vec<u8>)]) -> (Vec<NewLocator>, u64) {
    let mut pos = start;
    let mut out = Vec::new();
    for (code, bytes) in data {
        let space = (bytes.len() as u64).div_ceil(512).max(1) * 512;
        out.push(NewLocator {
            code: *code,
            data_offset: pos,
            data_space: space as u32,
            data_length: bytes.len() as u32,
        });
        pos += space;
    }
    (out, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_become_unix_paths() {
        assert_eq!(
            windows_to_unix("C:\\Projects\\x\\p.vhd"),
            "/Projects/x/p.vhd"
        );
        assert_eq!(windows_to_unix(".\\p.vhd"), "./p.vhd");
        assert_eq!(
            decode_file_url("file://localhost/a%20b/p.vhd").unwrap(),
            "/a b/p.vhd"
        );
        assert_eq!(decode_file_url("file://./p.vhd").unwrap(), "./p.vhd");
        assert!(decode_file_url("http://x").is_none());
        // A '%' before a multi-byte character is kept as it is, never sliced through.
        assert_eq!(decode_file_url("file://%é/p.vhd").unwrap(), "%é/p.vhd");
        assert!(decode_file_url("file://%ff/p.vhd").is_none());
    }

    #[test]
    fn locator_lengths_are_bounded_before_reading() {
        use crate::storage::Memory;
        let file = Memory::new("c.vhd", vec![0x41u8; 4096]);
        let locator = |length| Locator {
            index: 2,
            code: platform::WI2K,
            data_space: 512,
            data_length: length,
            data_offset: 1024,
        };
        let read = |length| read_locator(&file, &locator(length), Provenance::User);
        assert_eq!(read(4).unwrap(), "AAAA");
        assert_eq!(
            read(0).unwrap_err(),
            "parent locator 2 (Wi2k) has a length of 0"
        );
        assert_eq!(
            read(u32::MAX).unwrap_err(),
            "parent locator 2 (Wi2k) has a length of 4294967295 bytes, more than a path takes (at most 65536)"
        );
        // Within the limit but past the end of the file: refused by the read, not allocated.
        assert!(
            read(MAX_LOCATOR_BYTES)
                .unwrap_err()
                .contains("runs past the end")
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b"), Path::new("/a/b/p.vhd")),
            PathBuf::from("p.vhd")
        );
        assert_eq!(
            relative_path(Path::new("/a/b/c"), Path::new("/a/d/p.vhd")),
            PathBuf::from("../../d/p.vhd")
        );
        assert_eq!(as_name("./p.vhd"), "p.vhd");
        assert_eq!(as_name("./a/../p.vhd"), "a/../p.vhd");
        assert_eq!(as_name("/x/p.vhd"), "/x/p.vhd");
    }

    #[test]
    fn locator_layout() {
        let data = new_locator_data(Path::new("p.vhd"), Path::new("/v/p.vhd"));
        assert_eq!(data[0].1.len(), ".\\p.vhd".len() * 2);
        let (locs, end) = place_locators(1536, &data);
        assert_eq!(locs[0].data_offset, 1536);
        assert_eq!(locs[1].data_offset, 2048);
        assert_eq!(end, 2560);
    }
}
