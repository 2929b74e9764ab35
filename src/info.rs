//! What `info` reports about each layer of an image, with qemu-img's JSON keys.

use crate::gate::Role;
use crate::image::{Image, Layer};
use crate::size::human_size;
use serde::Serialize;
use std::os::unix::fs::MetadataExt;

/// qemu-img's `format-specific` object: the format's name and its facts.
#[derive(Debug, Clone, Serialize)]
pub struct FormatSpecific {
    /// The format's name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its facts.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// One of qemu-img's `children`: a file the layer's format driver reads, as qemu-img 10 lists
/// it (its "file" protocol node).
#[derive(Debug, Clone, Serialize)]
pub struct ChildNode {
    /// qemu's name for the role: `file` (the image's own file), `extents.N` (VMDK extents),
    /// `data-file` (a qcow2 external data file).
    pub name: String,
    /// The file's facts.
    pub info: ChildFile,
}

/// A child node's facts, with qemu-img's keys and fixed values for a plain file.
#[derive(Debug, Clone, Serialize)]
pub struct ChildFile {
    /// Always empty: a file has no children.
    pub children: Vec<ChildNode>,
    /// The file's length.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// Its path.
    pub filename: String,
    /// Always `file` (qemu's protocol driver).
    pub format: String,
    /// Bytes it occupies on disk.
    #[serde(rename = "actual-size")]
    pub actual_size: u64,
    /// `{"type": "file", "data": {}}`.
    #[serde(rename = "format-specific")]
    pub format_specific: FormatSpecific,
    /// Always false.
    #[serde(rename = "dirty-flag")]
    pub dirty_flag: bool,
}

/// A file an image names that `info` did not open (see [`crate::image::AbsentFile`]).
#[derive(Debug, Clone, Serialize)]
pub struct AbsentFileInfo {
    /// What it is to the image (`data file`).
    pub role: String,
    /// The name as the image stores it.
    pub name: String,
    /// Why it was not opened: where it was looked for, or why the gate refused it.
    pub reason: String,
}

/// The facts about one layer of an image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    /// The files the layer reads, as qemu-img 10's `children` (extents first, then `file`).
    pub children: Vec<ChildNode>,
    /// The image's path, as given (or as resolved, for backing images).
    pub filename: String,
    /// The format's name.
    pub format: String,
    /// True when no format was recognised and raw was assumed (our key).
    #[serde(rename = "format-guessed")]
    pub format_guessed: bool,
    /// The size of the virtual disk.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// Bytes the image's files occupy on disk.
    #[serde(rename = "actual-size")]
    pub actual_size: u64,
    /// The allocation unit, where the format has one.
    #[serde(rename = "cluster-size", skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// True when the image was not closed cleanly.
    #[serde(rename = "dirty-flag")]
    pub dirty_flag: bool,
    /// The backing image as the image names it.
    #[serde(rename = "backing-filename", skip_serializing_if = "Option::is_none")]
    pub backing_filename: Option<String>,
    /// The backing image's path, resolved.
    #[serde(
        rename = "full-backing-filename",
        skip_serializing_if = "Option::is_none"
    )]
    pub full_backing_filename: Option<String>,
    /// The backing image's format, when the image names it or it was opened.
    #[serde(
        rename = "backing-filename-format",
        skip_serializing_if = "Option::is_none"
    )]
    pub backing_filename_format: Option<String>,
    /// Internal snapshots, as qemu-img lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<serde_json::Value>,
    /// The same, as a table for human output.
    #[serde(skip)]
    pub snapshot_list: Option<String>,
    /// Format-specific facts.
    #[serde(rename = "format-specific", skip_serializing_if = "Option::is_none")]
    pub format_specific: Option<FormatSpecific>,
    /// Every file the layer reads (extents), when there is more than one (our key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Every file opened to read the image, its backing chain included when it was followed
    /// (our key; a backing layer lists its own files).
    #[serde(rename = "opened-files", skip_serializing_if = "Vec::is_empty")]
    pub opened_files: Vec<String>,
    /// Problems found while opening (our key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Files the layer names but was shown without (a qcow2's missing external data file):
    /// its metadata is shown, its data cannot be read (our key).
    #[serde(rename = "absent-files", skip_serializing_if = "Vec::is_empty")]
    pub absent_files: Vec<AbsentFileInfo>,
    /// Format-specific facts as (label, value) lines for human output: those qemu-img prints,
    /// in its layout (see [`crate::image::LayerDetails::human`]).
    #[serde(skip)]
    pub human_details: Vec<(String, String)>,
    /// diskferry's further facts, printed after all of qemu-img's lines.
    #[serde(skip)]
    pub human_extra: Vec<(String, String)>,
}

/// The info of layer `index` of `image`; `filename` is how to name it (the user's spelling for
/// the top layer).
pub fn layer_info(image: &Image, index: usize, filename: &str) -> ImageInfo {
    let layer: &dyn Layer = image.layers()[index].as_ref();
    let details = layer.details();
    let snapshots = layer.snapshots();
    let files = layer.files();
    let actual_size = (0..files.len())
        .map(|i| match layer.storage(i) {
            Some(s) => s.allocated_bytes(),
            None => std::fs::metadata(&files[i])
                .map(|m| m.blocks() * 512)
                .unwrap_or(0),
        })
        .sum();
    let children = child_nodes(layer, &files);
    let backing = layer.backing();
    let parent = image.layers().get(index + 1);
    let full_backing = match (parent, backing) {
        (Some(p), _) => Some(p.path().display().to_string()),
        (None, Some(link)) => {
            // The first name that leads to a file, as the chain would be followed; a name the
            // gate refuses is never looked at (a stat of `/proc/self/...` is a probe an image
            // must not be able to make), though it is still shown when no name leads anywhere.
            let gate = image.gate();
            let candidates = link.candidates(layer.path());
            link.names
                .iter()
                .filter_map(|n| gate.allowed_path(layer.path(), n, Role::Backing).ok())
                .find(|c| c.is_file())
                .or(candidates.first().cloned())
                .map(|p| p.display().to_string())
        }
        (None, None) => None,
    };
    let backing_format = match (parent, backing) {
        (_, Some(link)) if link.format.is_some() => link.format.map(|f| f.name().to_string()),
        (Some(p), Some(_)) => Some(p.format().name().to_string()),
        _ => None,
    };
    let warnings = if index == 0 {
        image.warnings().to_vec()
    } else {
        Vec::new()
    };
    ImageInfo {
        children,
        filename: filename.to_string(),
        format: layer.format().name().to_string(),
        format_guessed: index == 0 && image.format_guessed(),
        virtual_size: layer.virtual_size(),
        actual_size,
        cluster_size: details.cluster_size,
        dirty_flag: details.dirty,
        snapshots: snapshots.iter().map(crate::snapshot::to_json).collect(),
        snapshot_list: (!snapshots.is_empty()).then(|| crate::snapshot::list_text(&snapshots)),
        backing_filename: backing.map(|b| b.stored_name.clone()),
        full_backing_filename: full_backing,
        backing_filename_format: backing_format,
        format_specific: if details.format_specific.is_empty() {
            None
        } else {
            Some(FormatSpecific {
                kind: layer.format().name().to_string(),
                data: details.format_specific,
            })
        },
        files: if files.len() > 1 {
            files.iter().map(|f| f.display().to_string()).collect()
        } else {
            Vec::new()
        },
        // The top layer lists every file the whole image opened; a backing layer its own.
        opened_files: if index == 0 {
            image
                .opened_files()
                .iter()
                .map(|f| f.display().to_string())
                .collect()
        } else {
            files.iter().map(|f| f.display().to_string()).collect()
        },
        warnings,
        absent_files: layer
            .absent_files()
            .into_iter()
            .map(|a| AbsentFileInfo {
                role: a.role.noun().to_string(),
                name: a.name,
                reason: a.reason,
            })
            .collect(),
        human_details: details.human,
        human_extra: details.human_extra,
    }
}

/// The layer's files as qemu-img names its child nodes: the first file (the image itself, or a
/// VMDK's descriptor) is `file`; the others are a qcow2's `data-file` or a VMDK's `extents.N`,
/// listed before `file` as qemu-img lists them.
fn child_nodes(layer: &dyn Layer, files: &[std::path::PathBuf]) -> Vec<ChildNode> {
    let node = |name: String, index: usize| {
        let path = &files[index];
        let meta = std::fs::metadata(path).ok();
        let actual_size = match layer.storage(index) {
            Some(s) => s.allocated_bytes(),
            None => meta.as_ref().map(|m| m.blocks() * 512).unwrap_or(0),
        };
        ChildNode {
            name,
            info: ChildFile {
                children: Vec::new(),
                // qemu counts a file in whole 512-byte sectors.
                virtual_size: meta.map(|m| m.len().div_ceil(512) * 512).unwrap_or(0),
                filename: path.display().to_string(),
                format: "file".to_string(),
                actual_size,
                format_specific: FormatSpecific {
                    kind: "file".to_string(),
                    data: serde_json::Map::new(),
                },
                dirty_flag: false,
            },
        }
    };
    let mut out: Vec<ChildNode> = (1..files.len())
        .map(|i| node(layer.child_node_name(i), i))
        .collect();
    if !files.is_empty() {
        out.push(node("file".to_string(), 0));
    }
    out
}

/// `text` with every control character (newlines and escape sequences included) written as
/// an escape, so that names and metadata from an image cannot forge lines or drive the
/// terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl ImageInfo {
    /// The human-readable form, as qemu-img prints it.
    pub fn to_human(&self) -> String {
        let p = printable;
        let mut out = String::new();
        out.push_str(&format!("image: {}\n", p(&self.filename)));
        // Scripts (oslo.utils, vdsm) read everything after "file format: " as the name, so the
        // note that it was guessed has a line of its own, after qemu-img's lines.
        out.push_str(&format!("file format: {}\n", p(&self.format)));
        out.push_str(&format!(
            "virtual size: {} ({} bytes)\n",
            human_size(self.virtual_size),
            self.virtual_size
        ));
        out.push_str(&format!("disk size: {}\n", human_size(self.actual_size)));
        if let Some(c) = self.cluster_size {
            out.push_str(&format!("cluster_size: {c}\n"));
        }
        if let Some(b) = &self.backing_filename {
            match &self.full_backing_filename {
                Some(full) if full != b => out.push_str(&format!(
                    "backing file: {} (actual path: {})\n",
                    p(b),
                    p(full)
                )),
                _ => out.push_str(&format!("backing file: {}\n", p(b))),
            }
        }
        if let Some(f) = &self.backing_filename_format {
            out.push_str(&format!("backing file format: {f}\n"));
        }
        if self.dirty_flag {
            out.push_str("dirty flag: yes\n");
        }
        if let Some(list) = &self.snapshot_list {
            for line in list.lines() {
                out.push_str(&p(line));
                out.push('\n');
            }
        }
        if !self.human_details.is_empty() {
            out.push_str("Format specific information:\n");
            push_details(&mut out, &self.human_details);
        }
        for child in &self.children {
            // qemu-img's block for each child node, line for line.
            out.push_str(&format!("Child node '/{}':\n", p(&child.name)));
            out.push_str(&format!("    filename: {}\n", p(&child.info.filename)));
            out.push_str("    protocol type: file\n");
            out.push_str(&format!(
                "    file length: {} ({} bytes)\n",
                human_size(child.info.virtual_size),
                child.info.virtual_size
            ));
            out.push_str(&format!(
                "    disk size: {}\n",
                human_size(child.info.actual_size)
            ));
        }
        // Everything below is diskferry's, after qemu-img's last line.
        if !self.human_extra.is_empty() {
            out.push_str("Further information:\n");
            push_details(&mut out, &self.human_extra);
        }
        if !self.files.is_empty() {
            out.push_str("Files:\n");
            for f in &self.files {
                out.push_str(&format!("    {}\n", p(f)));
            }
        }
        if !self.opened_files.is_empty() {
            let names: Vec<String> = self.opened_files.iter().map(|f| p(f)).collect();
            out.push_str(&format!("opened files: {}\n", names.join(", ")));
        }
        if self.format_guessed {
            out.push_str("format guessed: no known format matched the content\n");
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {}\n", p(w)));
        }
        for a in &self.absent_files {
            out.push_str(&format!(
                "warning: {}; shown from the image's metadata alone (commands that read the disk need the {})\n",
                p(&a.reason),
                a.role
            ));
        }
        out
    }
}

/// Appends `details` as indented `key: value` lines. A key ending in `:` heads a nested block
/// (qemu-img prints lists such as qcow2's bitmaps and VMDK's extents so) and the keys inside
/// carry their own indentation; an empty value still prints `key: `, as qemu-img's does.
fn push_details(out: &mut String, details: &[(String, String)]) {
    for (k, v) in details {
        if k.ends_with(':') {
            out.push_str(&format!("    {}\n", printable(k)));
        } else {
            out.push_str(&format!("    {}: {}\n", printable(k), printable(v)));
        }
    }
}
