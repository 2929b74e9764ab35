//! Finding a differencing VHDX's parent and checking it is the right one.
//!
//! The parent locator holds Windows paths: `relative_path` (`.\parent.vhdx`,
//! `..\base\parent.vhdx`), `volume_path` (`\\?\Volume{GUID}\dir\parent.vhdx`) and
//! `absolute_win32_path` (`C:\dir\parent.vhdx`). None of the absolute forms means anything on
//! another host, and a chain moved between hosts keeps its files together, so, as Hyper-V does
//! when a chain is moved, they are tried by their file name in the child's folder. The names go
//! to the core's backing chain machinery, which opens them through the gate.
//!
//! `parent_linkage` is the parent's DataWriteGuid when the child was made: a parent whose data
//! changed since then (or another file of the same name) would give wrong data, so it is refused.

use super::guid::{Guid, braced};
use super::metadata::ParentLocator;
use std::path::{Component, Path, PathBuf};

/// The keys whose values are paths, in the order they are tried.
pub const PATH_KEYS: [&str; 3] = ["relative_path", "volume_path", "absolute_win32_path"];

/// The parent as a differencing disk names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    /// The first path the locator holds, as stored (Windows separators), for messages and
    /// `info`'s backing file name.
    pub stored_name: String,
    /// Names to try, in order (`/` separators; relative ones are relative to the child's
    /// folder).
    pub names: Vec<String>,
    /// The parent's DataWriteGuid when the child was made.
    pub linkage: Option<Guid>,
    /// A second accepted linkage (`parent_linkage2`, written while a parent is being changed).
    pub linkage2: Option<Guid>,
    /// Locator problems that did not stop the open.
    pub problems: Vec<String>,
}

/// `.\a\b.vhdx` → `a/b.vhdx`; `..\b.vhdx` → `../b.vhdx`.
fn relative_name(path: &str) -> Option<String> {
    let unix = path.replace('\\', "/");
    let p = Path::new(&unix);
    if p.is_absolute() || unix.contains(':') {
        return None;
    }
    let rel: PathBuf = p
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let s = rel.to_string_lossy().into_owned();
    (!s.is_empty()).then_some(s)
}

/// The file name of a Windows path (`C:\a\b.vhdx`, `\\?\Volume{..}\b.vhdx`).
fn file_name(path: &str) -> Option<String> {
    path.rsplit(['\\', '/'])
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(':'))
        .map(str::to_string)
}

/// Parses a GUID as a locator writes it (`{...}` or bare).
fn parse_guid(text: &str) -> Option<Guid> {
    Guid::parse_str(text.trim().trim_start_matches('{').trim_end_matches('}')).ok()
}

/// The parent named by `locator`.
pub fn locate(locator: &ParentLocator) -> ParentRef {
    let mut names: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    let mut stored: Option<String> = None;
    for key in PATH_KEYS {
        let Some(value) = locator.get(key) else {
            continue;
        };
        stored.get_or_insert_with(|| value.to_string());
        let name = if key == "relative_path" {
            relative_name(value)
        } else {
            file_name(value)
        };
        match name {
            Some(n) if !names.contains(&n) => names.push(n),
            Some(_) => {}
            None => problems.push(format!(
                "parent locator {key} '{value}' names no file diskferry can look for"
            )),
        }
    }
    // The relative path may name a subfolder that did not move with the chain: its file name
    // beside the child comes last.
    if let Some(n) = locator.get("relative_path").and_then(file_name)
        && !names.contains(&n)
    {
        names.push(n);
    }
    let guid_of = |key: &str, problems: &mut Vec<String>| {
        let text = locator.get(key)?;
        let g = parse_guid(text);
        if g.is_none() {
            problems.push(format!("parent locator {key} '{text}' is not a GUID"));
        }
        g
    };
    let linkage = guid_of("parent_linkage", &mut problems);
    let linkage2 = guid_of("parent_linkage2", &mut problems);
    if linkage.is_none() {
        problems
            .push("the parent locator has no parent_linkage: the parent cannot be verified".into());
    }
    ParentRef {
        stored_name: stored.unwrap_or_else(|| "(parent locator without a path)".into()),
        names,
        linkage,
        linkage2,
        problems,
    }
}

/// Checks a VHDX parent's DataWriteGuid against the child's linkage; `Err` says why not.
pub fn check_linkage(p: &ParentRef, data_write_guid: &Guid) -> Result<(), String> {
    let Some(linkage) = p.linkage else {
        return Ok(());
    };
    if linkage == *data_write_guid || p.linkage2 == Some(*data_write_guid) {
        return Ok(());
    }
    Err(format!(
        "its DataWriteGuid is {} but this differencing disk was made against {} (parent_linkage): the parent has changed since, or is another disk; refusing to read through it",
        braced(data_write_guid),
        braced(&linkage)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locator(pairs: &[(&str, &str)]) -> ParentLocator {
        ParentLocator {
            entries: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            offset: 0,
        }
    }

    #[test]
    fn windows_paths_become_names_beside_the_child() {
        let p = locate(&locator(&[
            ("parent_linkage", "{83ade3c6-9a3c-4a49-a6b6-0dba4d3e1b40}"),
            ("relative_path", "..\\base\\p.vhdx"),
            ("volume_path", "\\\\?\\Volume{1e2f}\\VMs\\p.vhdx"),
            ("absolute_win32_path", "C:\\VMs\\p.vhdx"),
        ]));
        assert_eq!(p.names, vec!["../base/p.vhdx", "p.vhdx"]);
        assert_eq!(p.stored_name, "..\\base\\p.vhdx");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let linkage = p.linkage.unwrap();
        assert!(check_linkage(&p, &linkage).is_ok());
        assert!(check_linkage(&p, &Guid::nil()).is_err());
        let p = locate(&locator(&[("relative_path", ".\\p.vhdx")]));
        assert_eq!(p.names, vec!["p.vhdx"]);
        assert!(p.problems[0].contains("no parent_linkage"));
    }
}
