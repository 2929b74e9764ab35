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
    /// Set when the format has no metadata to check (raw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
            note: None,
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
        self.count(Severity::Corruption, false)
    }

    /// Leaks left unrepaired.
    pub fn leaks(&self) -> u64 {
        self.count(Severity::Leak, false)
    }

    /// Corruptions repaired.
    pub fn corruptions_fixed(&self) -> u64 {
        self.count(Severity::Corruption, true)
    }

    /// Leaks repaired.
    pub fn leaks_fixed(&self) -> u64 {
        self.count(Severity::Leak, true)
    }

    /// qemu-img check's exit status: 0 clean, 1 check incomplete, 2 corruptions, 3 leaks only.
    pub fn exit_code(&self) -> i32 {
        if self.check_errors > 0 {
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
