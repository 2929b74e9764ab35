//! Finding a differencing VDI's parent.
//!
//! A differencing VDI names its parent by UUID only (`uuidLinkage`, the parent's creation
//! UUID); VirtualBox finds it through its media registry. So do we, in this order:
//!
//! 1. VirtualBox machine files (`*.vbox`) in the image's folder and the folder above it (a
//!    snapshot lives in `<VM>/Snapshots/{uuid}.vdi`, the machine file in `<VM>/`): every
//!    `HardDisk` element's `uuid` and `location`, the location relative to the machine file;
//! 2. VDI files in those two folders whose creation UUID is the linkage.
//!
//! Every file is opened through the open gate, as any name an image holds, and each folder
//! passes the gate before it is listed: with the confined gate (the library's default) only
//! the image's own folder is searched, and never a folder in /proc, /sys or /dev. The search is
//! bounded: at most [`MAX_ENTRIES`] directory entries per folder, [`MAX_VBOX_FILES`] machine
//! files of at most [`MAX_VBOX_BYTES`] each, [`MAX_VDI_FILES`] VDI headers.

use super::header::{HEADER_OFFSET, HEADER1_PLUS_LEN, Header};
use crate::gate::{Confinement, Gate, Lookup, Role};
use crate::storage::{Storage, StorageExt};
use quick_xml::events::Event;
use std::path::Path;
use uuid::Uuid;

/// Directory entries looked at per folder.
pub const MAX_ENTRIES: usize = 4096;
/// Machine files read per folder.
pub const MAX_VBOX_FILES: usize = 16;
/// The largest machine file read.
pub const MAX_VBOX_BYTES: u64 = 4 << 20;
/// VDI headers read per folder.
pub const MAX_VDI_FILES: usize = 256;

/// What the search found: names of candidate parents (relative to the image's folder, or
/// absolute), best first, and the folders searched, for the message when none opens.
#[derive(Debug, Default)]
pub struct Search {
    /// Candidate names, as the gate takes them.
    pub names: Vec<String>,
    /// The folders searched, as names relative to the image ("." and "..").
    pub searched: Vec<String>,
    /// The folders the gate kept the search out of, with its refusal.
    pub refused: Vec<String>,
}

/// Searches for the VDI whose creation UUID is `linkage`, for the image at `image`.
pub fn find(image: &Path, linkage: Uuid, gate: &Gate) -> Search {
    let mut search = Search::default();
    let folders: &[&str] = match gate.confinement {
        Confinement::ImageFolder => &["."],
        Confinement::Anywhere => &[".", ".."],
    };
    let own_name = image.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut vdi_matches = Vec::new();
    for &folder in folders {
        // The folder is a place the image leads us to as much as a name it stores: an image
        // read through `/dev/fd/3` or `/proc/self/fd/3` would otherwise have `/proc/self/fd`
        // and `/proc/self` listed before the gate refused each name found there.
        let dir = match gate.allowed_path(image, folder, Role::SearchFolder) {
            Ok(dir) => dir,
            Err(e) => {
                search.refused.push(e.message().to_string());
                continue;
            }
        };
        search.searched.push(folder.to_string());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut vbox = Vec::new();
        let mut vdi = Vec::new();
        for entry in entries.take(MAX_ENTRIES).flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let lower = name.to_ascii_lowercase();
            if lower.ends_with(".vbox") && vbox.len() < MAX_VBOX_FILES {
                vbox.push(name);
            } else if lower.ends_with(".vdi")
                && vdi.len() < MAX_VDI_FILES
                && !(folder == "." && Some(&name) == own_name.as_ref())
            {
                vdi.push(name);
            }
        }
        // Directory order is the file system's; sort so the search is repeatable.
        vbox.sort();
        vdi.sort();
        for name in vbox {
            let rel = relative(folder, &name);
            if let Some(location) = registry_location(image, &rel, linkage, gate) {
                let candidate = if Path::new(&location).is_absolute() {
                    location
                } else {
                    relative(folder, &location)
                };
                if !search.names.contains(&candidate) {
                    search.names.push(candidate);
                }
            }
        }
        for name in vdi {
            let rel = relative(folder, &name);
            if creation_uuid(image, &rel, gate) == Some(linkage) {
                vdi_matches.push(rel);
            }
        }
    }
    for m in vdi_matches {
        if !search.names.contains(&m) {
            search.names.push(m);
        }
    }
    search
}

/// `name` in `folder` ("." or ".."), as a name relative to the image's folder.
fn relative(folder: &str, name: &str) -> String {
    let name = name.replace('\\', "/");
    if folder == "." {
        name
    } else {
        format!("{folder}/{name}")
    }
}

fn open(image: &Path, name: &str, gate: &Gate) -> Option<std::sync::Arc<dyn Storage>> {
    match gate.open(image, name, Role::Backing) {
        Ok(Lookup::Opened(f)) => Some(f),
        _ => None,
    }
}

/// The creation UUID of the VDI `name` names, if it is one.
fn creation_uuid(image: &Path, name: &str, gate: &Gate) -> Option<Uuid> {
    let file = open(image, name, gate)?;
    let len = file.len().min(HEADER_OFFSET + HEADER1_PLUS_LEN as u64);
    let head = file.read_vec(0, len, "VDI header").ok()?;
    if !super::header::has_signature(&head) {
        return None;
    }
    Header::read(file.as_ref()).ok().map(|h| h.uuid_create)
}

/// The location a machine file gives the medium `uuid`, if it lists it.
fn registry_location(image: &Path, name: &str, uuid: Uuid, gate: &Gate) -> Option<String> {
    let file = open(image, name, gate)?;
    if file.len() > MAX_VBOX_BYTES {
        return None;
    }
    let bytes = file.read_vec(0, file.len(), "machine file").ok()?;
    let text = String::from_utf8(bytes).ok()?;
    media(&text)
        .into_iter()
        .find(|(u, _)| *u == uuid)
        .map(|(_, location)| location)
}

/// Every `HardDisk` element's UUID and location in a VirtualBox machine file (or media
/// registry); elements nest for differencing chains, so the whole document is walked.
pub fn media(xml: &str) -> Vec<(Uuid, String)> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.local_name().as_ref() == "HardDisk" => {
                let mut uuid = None;
                let mut location = None;
                for attr in e.attributes().flatten() {
                    let Ok(value) = attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    else {
                        continue;
                    };
                    match attr.key.local_name().as_ref() {
                        "uuid" => {
                            uuid =
                                Uuid::parse_str(value.trim_matches(|c| c == '{' || c == '}')).ok()
                        }
                        "location" => location = Some(value.into_owned()),
                        _ => {}
                    }
                }
                if let (Some(u), Some(l)) = (uuid, location) {
                    out.push((u, l));
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_media_are_all_listed() {
        let xml = r#"<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{11111111-2222-3333-4444-555555555555}" name="vm">
    <MediaRegistry>
      <HardDisks>
        <HardDisk uuid="{aaaaaaaa-0000-0000-0000-000000000001}" location="vm.vdi" format="VDI" type="Normal">
          <HardDisk uuid="{aaaaaaaa-0000-0000-0000-000000000002}" location="Snapshots/{aaaaaaaa-0000-0000-0000-000000000002}.vdi" format="VDI"/>
        </HardDisk>
      </HardDisks>
    </MediaRegistry>
  </Machine>
</VirtualBox>"#;
        let m = media(xml);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].1, "vm.vdi");
        assert_eq!(
            m[1].0,
            Uuid::parse_str("aaaaaaaa-0000-0000-0000-000000000002").unwrap()
        );
    }

    #[test]
    fn broken_xml_lists_what_came_before() {
        let m = media(
            r#"<HardDisk uuid="{aaaaaaaa-0000-0000-0000-000000000001}" location="a.vdi"/><<<"#,
        );
        assert_eq!(m.len(), 1);
    }
}
