//! The result of `check`: corruptions, leaks and what was repaired, with qemu-img's exit codes.

use crate::format::Format;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What `check -r` may repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Only leaks: space allocated but unused.
    Leaks,
    /// Leaks and every corruption that can be fixed without guessing at data.
    All,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Data may read wrongly.
    Corruption,
    /// Space is wasted; data is fine.
    Leak,
    /// Worth knowing, harmless.
    Warning,
}

/// How a report is printed by the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportStyle {
    /// diskferry's own: one line per finding with its offset, then a summary (VHD, VMDK).
    #[default]
    Findings,
    /// qemu-img's, line for line (QCOW2): its per-problem lines on stderr, its summary on
    /// stdout and its JSON keys, so that scripts written against `qemu-img check` read ours.
    Qemu,
}

/// The counts of a checker that counts as qemu does (several lines for one problem, one line
/// for several), kept apart from the findings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Corruptions left.
    pub corruptions: u64,
    /// Leaks left.
    pub leaks: u64,
    /// Corruptions repaired.
    pub corruptions_fixed: u64,
    /// Leaks repaired.
    pub leaks_fixed: u64,
}

/// One finding of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where in the file, when it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// True when `-r` repaired it.
    pub repaired: bool,
}

/// The result of checking one image.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The image checked.
    pub filename: PathBuf,
    /// Its format.
    #[serde(serialize_with = "serialize_format")]
    pub format: Format,
    /// Every finding, in the order found.
    pub findings: Vec<Finding>,
    /// Errors that stopped parts of the check from running.
    #[serde(rename = "check-errors")]
    pub check_errors: u64,
    /// The end of the last used byte of the file, when known (qemu-img's `image-end-offset`).
    #[serde(rename = "image-end-offset", skip_serializing_if = "Option::is_none")]
    pub image_end_offset: Option<u64>,
    /// Allocation units of the virtual disk (qemu-img's `total-clusters`).
    #[serde(rename = "total-clusters", skip_serializing_if = "Option::is_none")]
    pub total_clusters: Option<u64>,
    /// Allocation units in use (qemu-img's `allocated-clusters`).
    #[serde(rename = "allocated-clusters", skip_serializing_if = "Option::is_none")]
    pub allocated_clusters: Option<u64>,
    /// Allocated clusters not right after the previous one (qemu-img's `fragmented-clusters`).
    #[serde(
        rename = "fragmented-clusters",
        skip_serializing_if = "Option::is_none"
    )]
    pub fragmented_clusters: Option<u64>,
    /// Compressed clusters (qemu-img's `compressed-clusters`).
    #[serde(
        rename = "compressed-clusters",
        skip_serializing_if = "Option::is_none"
    )]
    pub compressed_clusters: Option<u64>,
    /// Set when the format has no metadata to check (raw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// How the command line prints the report.
    #[serde(skip)]
    pub style: ReportStyle,
    /// Why the check stopped before it was complete (qemu-img's "Check failed"): the
    /// findings so far are all there is, and the figures mean nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The checker's own counts; when absent, each finding counts once.
    #[serde(skip)]
    pub tally: Option<Tally>,
}

fn serialize_format<S: serde::Serializer>(f: &Format, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.name())
}

impl CheckReport {
    /// An empty (clean) report for `path`.
    pub fn new(path: &Path, format: Format) -> CheckReport {
        CheckReport {
            filename: path.to_path_buf(),
            format,
            findings: Vec::new(),
            check_errors: 0,
            image_end_offset: None,
            total_clusters: None,
            allocated_clusters: None,
            fragmented_clusters: None,
            compressed_clusters: None,
            note: None,
            style: ReportStyle::Findings,
            stopped: None,
            tally: None,
        }
    }

    /// The report for a format with no metadata.
    pub fn nothing_to_check(path: &Path, format: Format) -> CheckReport {
        CheckReport {
            note: Some(format!(
                "{format} images carry no metadata, so there is nothing to check"
            )),
            ..CheckReport::new(path, format)
        }
    }

    /// Records a finding.
    pub fn add(&mut self, severity: Severity, message: impl Into<String>, offset: Option<u64>) {
        self.findings.push(Finding {
            severity,
            message: message.into(),
            offset,
            repaired: false,
        });
    }

    fn count(&self, severity: Severity, repaired: bool) -> u64 {
        self.findings
            .iter()
            .filter(|f| f.severity == severity && f.repaired == repaired)
            .count() as u64
    }

    /// Corruptions left unrepaired.
    pub fn corruptions(&self) -> u64 {
        match self.tally {
            Some(t) => t.corruptions,
            None => self.count(Severity::Corruption, false),
        }
    }

    /// Leaks left unrepaired.
    pub fn leaks(&self) -> u64 {
        match self.tally {
            Some(t) => t.leaks,
            None => self.count(Severity::Leak, false),
        }
    }

    /// Corruptions repaired.
    pub fn corruptions_fixed(&self) -> u64 {
        match self.tally {
            Some(t) => t.corruptions_fixed,
            None => self.count(Severity::Corruption, true),
        }
    }

    /// Leaks repaired.
    pub fn leaks_fixed(&self) -> u64 {
        match self.tally {
            Some(t) => t.leaks_fixed,
            None => self.count(Severity::Leak, true),
        }
    }

    /// The report as `qemu-img check --output=json` prints it: a key appears only when its
    /// value is not zero (but `check-errors`, `filename` and `format` always), in the order
    /// qemu's dictionary happens to iterate them (its hash buckets), which scripts comparing
    /// text depend on.
    pub fn qemu_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut put = |key: &str, value: Option<u64>| {
            if let Some(v) = value.filter(|&v| v != 0) {
                m.insert(key.into(), v.into());
            }
        };
        put("image-end-offset", self.image_end_offset);
        put("compressed-clusters", self.compressed_clusters);
        put("total-clusters", self.total_clusters);
        put("corruptions", Some(self.corruptions()));
        put("corruptions-fixed", Some(self.corruptions_fixed()));
        m.insert("check-errors".into(), self.check_errors.into());
        let mut put = |key: &str, value: Option<u64>| {
            if let Some(v) = value.filter(|&v| v != 0) {
                m.insert(key.into(), v.into());
            }
        };
        put("leaks", Some(self.leaks()));
        put("leaks-fixed", Some(self.leaks_fixed()));
        put("allocated-clusters", self.allocated_clusters);
        m.insert(
            "filename".into(),
            self.filename.to_string_lossy().into_owned().into(),
        );
        m.insert("format".into(), self.format.name().into());
        if let Some(v) = self.fragmented_clusters.filter(|&v| v != 0) {
            m.insert("fragmented-clusters".into(), v.into());
        }
        serde_json::Value::Object(m)
    }

    /// The summary `qemu-img check` prints on stdout (the problems themselves go to stderr,
    /// one line each, as they are found: [`Finding::message`]).
    pub fn qemu_human(&self) -> String {
        let mut out = String::new();
        let (c, l) = (self.corruptions(), self.leaks());
        let (fixed_c, fixed_l) = (self.corruptions_fixed(), self.leaks_fixed());
        if fixed_c + fixed_l > 0 {
            out.push_str(&format!(
                "The following inconsistencies were found and repaired:\n\n    {fixed_l} leaked clusters\n    {fixed_c} corruptions\n\nDouble checking the fixed image now...\n"
            ));
        }
        if c == 0 && l == 0 && self.check_errors == 0 {
            out.push_str("No errors were found on the image.\n");
        } else {
            if c > 0 {
                out.push_str(&format!(
                    "\n{c} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n"
                ));
            }
            if l > 0 {
                out.push_str(&format!(
                    "\n{l} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n"
                ));
            }
            if self.check_errors > 0 {
                out.push_str(&format!(
                    "\n{} internal errors have occurred during the check.\n",
                    self.check_errors
                ));
            }
        }
        let total = self.total_clusters.unwrap_or(0);
        let allocated = self.allocated_clusters.unwrap_or(0);
        if total != 0 && allocated != 0 {
            let pct = |n: u64, of: u64| n as f64 * 100.0 / of as f64;
            out.push_str(&format!(
                "{allocated}/{total} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\n",
                pct(allocated, total),
                pct(self.fragmented_clusters.unwrap_or(0), allocated),
                pct(self.compressed_clusters.unwrap_or(0), allocated),
            ));
        }
        if let Some(end) = self.image_end_offset.filter(|&e| e != 0) {
            out.push_str(&format!("Image end offset: {end}\n"));
        }
        out
    }

    /// qemu-img check's exit status: 0 clean, 1 check incomplete, 2 corruptions, 3 leaks only.
    pub fn exit_code(&self) -> i32 {
        if self.check_errors > 0 || self.stopped.is_some() {
            1
        } else if self.corruptions() > 0 {
            2
        } else if self.leaks() > 0 {
            3
        } else {
            0
        }
    }
}

/// Opens, for `check`, the first of `names` (a parent's candidate names, found in the image at
/// `image`) that the gate lets through and that exists. When none does, adds the finding
/// (a warning when the gate refused a name, a corruption when the parent is missing or cannot
/// be opened) at `offset` and returns `None`.
pub fn find_parent(
    report: &mut CheckReport,
    gate: &crate::gate::Gate,
    image: &Path,
    stored_name: &str,
    names: &[String],
    offset: Option<u64>,
) -> Option<std::sync::Arc<crate::host_file::HostFile>> {
    use crate::gate::{Lookup, Role};
    let mut tried = Vec::new();
    for name in names {
        match gate.open(image, name, Role::Backing) {
            Ok(Lookup::Opened(f)) => return Some(f),
            Ok(Lookup::Missing(p)) => tried.push(p.display().to_string()),
            Err(e) if e.kind() == crate::error::ErrorKind::Refused => {
                report.add(
                    Severity::Warning,
                    format!("the parent was not checked: {}", e.message()),
                    offset,
                );
                return None;
            }
            Err(e) => {
                report.add(
                    Severity::Corruption,
                    format!("the parent '{name}' cannot be opened: {}", e.message()),
                    offset,
                );
                return None;
            }
        }
    }
    report.add(
        Severity::Corruption,
        format!(
            "the parent '{stored_name}' was not found (tried: {}); the disk cannot be read without it",
            if tried.is_empty() {
                "nothing".to_string()
            } else {
                tried.join(", ")
            }
        ),
        offset,
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_qemu_img() {
        let mut r = CheckReport::new(Path::new("x"), crate::formats::vhd::FORMAT);
        assert_eq!(r.exit_code(), 0);
        r.add(Severity::Warning, "w", None);
        assert_eq!(r.exit_code(), 0);
        r.add(Severity::Leak, "l", None);
        assert_eq!(r.exit_code(), 3);
        r.add(Severity::Corruption, "c", Some(512));
        assert_eq!(r.exit_code(), 2);
        r.findings[2].repaired = true;
        assert_eq!((r.exit_code(), r.corruptions_fixed()), (3, 1));
        r.check_errors = 1;
        assert_eq!(r.exit_code(), 1);
    }
}
