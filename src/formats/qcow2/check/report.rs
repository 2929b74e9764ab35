//! What a check found, counted as qemu counts it: the lines `qemu-img check` prints on stderr,
//! and its counters (one problem may print several lines, and a repair takes a count back).

use crate::check::{CheckReport, Finding, ReportStyle, Severity, Tally};
use std::path::Path;

/// Lines and counters of one pass over the image.
#[derive(Debug, Default, Clone)]
pub struct Out {
    /// qemu's lines, in order.
    pub findings: Vec<Finding>,
    /// Its counters.
    pub tally: Tally,
    /// Problems that stopped part of the check (qemu's `check-errors`).
    pub check_errors: u64,
}

impl Out {
    fn push(&mut self, severity: Severity, repaired: bool, message: String) {
        self.findings.push(Finding {
            severity,
            message,
            offset: None,
            repaired,
        });
    }

    /// A line about a corruption, counted.
    pub fn corruption(&mut self, message: String) {
        self.tally.corruptions += 1;
        self.push(Severity::Corruption, false, message);
    }

    /// A line about a corruption that is counted elsewhere (or not at all, as qemu's second
    /// line of some messages).
    pub fn corruption_line(&mut self, message: String) {
        self.push(Severity::Corruption, false, message);
    }

    /// A line about a leak, not counted (the caller counts).
    pub fn leak_line(&mut self, message: String) {
        self.push(Severity::Leak, false, message);
    }

    /// A line about a repair of a problem of `severity`.
    pub fn repaired_line(&mut self, severity: Severity, message: String) {
        self.push(severity, true, message);
    }

    /// A line that is neither (progress of a repair).
    pub fn note(&mut self, message: String) {
        self.push(Severity::Warning, false, message);
    }

    /// A problem that stopped part of the check.
    pub fn check_error(&mut self, message: String) {
        self.check_errors += 1;
        self.push(Severity::Warning, false, message);
    }
}

/// qemu's allocation figures of the active L1 table.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Clusters of the virtual disk.
    pub total: u64,
    /// Allocated L2 entries (data, preallocated zero, compressed).
    pub allocated: u64,
    /// Allocated clusters not right after the previous one of their L2 table (every
    /// compressed cluster counts).
    pub fragmented: u64,
    /// Compressed clusters.
    pub compressed: u64,
}

/// The report of a pass.
pub(super) fn to_report(path: &Path, pass: super::Pass) -> CheckReport {
    let super::Pass {
        out,
        stats,
        end,
        stopped,
    } = pass;
    let mut report = CheckReport::new(path, super::super::FORMAT);
    report.style = ReportStyle::Qemu;
    report.findings = out.findings;
    report.tally = Some(out.tally);
    report.check_errors = out.check_errors;
    report.image_end_offset = Some(end);
    report.total_clusters = Some(stats.total);
    report.allocated_clusters = Some(stats.allocated);
    report.fragmented_clusters = Some(stats.fragmented);
    report.compressed_clusters = Some(stats.compressed);
    report.stopped = stopped;
    report
}
