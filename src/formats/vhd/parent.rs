//! Finding the parent of a differencing VHD (parent locators and the parent's unicode name)
//! and making the locators of a new child.

use super::dynamic_header::{DynamicHeader, Locator, NewLocator, platform};
use crate::host_file::HostFile;
use std::path::{Component, Path, PathBuf};

/// Locator data longer than this is not a path (the longest Windows path is 32767 UTF-16
/// units); refusing it keeps a hostile length from making us allocate.
const MAX_LOCATOR_BYTES: u32 = 65536;

/// The parent as a differencing disk names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// The reference as stored (the first readable locator, else the unicode name).
    pub stored_name: String,
    /// Paths to try, in order, resolved against the child's folder.
    pub candidates: Vec<PathBuf>,
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
pub fn read_locator(file: &HostFile, locator: &Locator) -> Result<String, String> {
    let name = code_text(locator.code);
    if rank(locator.code).is_none() {
        return Err(format!(
            "parent locator {} has platform code '{name}', which names no path diskferry can use",
            locator.index
        ));
    }
    if locator.data_length == 0 || locator.data_length > MAX_LOCATOR_BYTES {
        return Err(format!(
            "parent locator {} ({name}) has an implausible length {}",
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
            decode_file_url(text).ok_or_else(|| {
                format!(
                    "parent locator {} ({name}) is not a file:// URL: '{text}'",
                    locator.index
                )
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

/// `file://localhost/a%20b/x.vhd` → `/a b/x.vhd`; `file://./x.vhd` → `./x.vhd`.
fn decode_file_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("file://")?;
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let mut out = Vec::with_capacity(rest.len());
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&rest[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Resolves a locator path against the child's folder.
fn resolve(child_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        let rel: PathBuf = p
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        child_dir.join(rel)
    }
}

/// The parent of a differencing disk at `child` with `header`: locators first (relative
/// before absolute), then the parent's unicode name beside the child.
pub fn locate(file: &HostFile, child: &Path, header: &DynamicHeader) -> ParentRef {
    let child_dir = child.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut locators: Vec<&Locator> = header.locators.iter().collect();
    locators.sort_by_key(|l| (rank(l.code).unwrap_or(u8::MAX), l.index));
    let mut candidates = Vec::new();
    let mut problems = Vec::new();
    let mut stored_name = None;
    for locator in locators {
        if locator.code == platform::MAC {
            // An alias record of classic Mac OS: nothing a path can be made of.
            continue;
        }
        match read_locator(file, locator) {
            Ok(path) => {
                if stored_name.is_none() {
                    stored_name = Some(path.clone());
                }
                candidates.push(resolve(&child_dir, &path));
            }
            Err(problem) => problems.push(problem),
        }
    }
    let name = windows_to_unix(&header.parent_name);
    if let Some(base) = name.rsplit('/').next().filter(|b| !b.is_empty()) {
        candidates.push(child_dir.join(base));
    }
    if stored_name.is_none() && !name.is_empty() {
        stored_name = Some(header.parent_name.clone());
    }
    let mut unique: Vec<PathBuf> = Vec::new();
    for c in candidates {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    ParentRef {
        stored_name: stored_name.unwrap_or_default(),
        candidates: unique,
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
        assert_eq!(
            resolve(Path::new("/a/b"), "./p.vhd"),
            PathBuf::from("/a/b/p.vhd")
        );
        assert_eq!(
            resolve(Path::new("/a/b"), "/x/p.vhd"),
            PathBuf::from("/x/p.vhd")
        );
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
