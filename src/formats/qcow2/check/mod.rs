//! `check` and `check -r leaks|all` for QCOW2, counting as `qemu-img check` counts and
//! printing what it prints, so that scripts and people reading either see the same thing.
//!
//! - [`io`]: the image read (zeros past its end, as qemu reads) and written.
//! - [`refcounts`]: stored refcounts (table and blocks, any width) and computed ones.
//! - [`walk`](mod@walk): counting every reference to every cluster of the file.
//! - [`compare`](mod@compare): stored against computed refcounts, then the COPIED flags.
//! - [`repair`](mod@repair): the writes of `-r`, in an order a crash cannot make worse.
//! - [`report`]: qemu's lines and counters, made into a [`CheckReport`].
//!
//! A repair is followed by a second, read-only pass whose findings are the ones reported,
//! with the counts of what the first repaired (qemu-img's "Double checking the fixed image").
//! Memory is bounded by the file, not the virtual disk: one 16-bit counter per cluster of the
//! file, up to [`MAX_CLUSTERS`], plus one L2 table and one refcount block at a time and the
//! L1 and refcount tables (bounded by the header's limits).

pub mod compare;
pub mod io;
pub mod refcounts;
pub mod repair;
pub mod report;
pub mod walk;

use self::compare::Fix;
use self::io::{ImageIo, ReadOnly, read_u64s};
use self::refcounts::{Computed, Stored, refcount_max};
use self::report::{Out, Stats, to_report};
use super::header::{Encryption, Header};
use super::snapshot::{self, Snapshot};
use crate::check::{CheckReport, RepairMode};
use crate::error::{Error, Result};
use crate::format::{OpenContext, Provenance, Salvage};
use crate::gate::Gate;
use crate::host_file::HostFile;
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

/// The most clusters of file a check counts (2^28: 512 MiB of counters, a 16 TiB file in
/// 64 KiB clusters); a larger file is refused rather than exhausting memory.
pub const MAX_CLUSTERS: u64 = 1 << 28;

/// The largest file a repair may grow an image to.
pub const MAX_FILE_BYTES: u64 = i64::MAX as u64;

/// The state of one pass over the image.
pub(crate) struct Checker<'a> {
    io: &'a mut dyn ImageIo,
    h: Header,
    cs: u64,
    computed: Computed,
    stored: Stored,
    out: Out,
    stats: Stats,
    snapshots: Vec<Snapshot>,
    snapshots_size: u64,
    /// The active L1 table, as qemu holds it in memory.
    l1: Vec<u64>,
    /// The refcount structure must be rebuilt to be repaired.
    rebuild: bool,
    fix: Fix,
    /// Why the check stopped early (qemu's "Check failed"), when it did.
    stopped: Option<String>,
    /// L2 tables the walk may still read: see [`Checker::reset_counts`].
    l2_budget: u64,
}

/// Checks the QCOW2 image at `path`, repairing with `repair`. Only the image is read (and,
/// when repairing, written): its backing and data files are not opened, whatever `gate`
/// allows.
pub fn check(path: &Path, repair: Option<RepairMode>, gate: &Gate) -> Result<CheckReport> {
    let _ = gate;
    let mut file = if repair.is_some() {
        HostFile::open_rw(path)?
    } else {
        HostFile::open(path)?
    };
    check_image(&mut file, path, repair)
}

/// Checks the QCOW2 image in `storage` (memory, a window into a package) without writing.
pub fn check_storage(storage: Arc<dyn Storage>) -> Result<CheckReport> {
    let name = storage.name().to_path_buf();
    check_image(&mut ReadOnly(storage), &name, None)
}

/// Checks the QCOW2 image in `io`, named `path` in the report, repairing with `repair`.
pub fn check_image(
    io: &mut dyn ImageIo,
    path: &Path,
    repair: Option<RepairMode>,
) -> Result<CheckReport> {
    let fix = match repair {
        None => Fix::default(),
        Some(RepairMode::Leaks) => Fix {
            leaks: true,
            errors: false,
        },
        Some(RepairMode::All) => Fix {
            leaks: true,
            errors: true,
        },
    };
    let first = pass(io, fix)?;
    let fixed = first.out.tally.corruptions_fixed + first.out.tally.leaks_fixed;
    if fixed == 0 || first.stopped.is_some() {
        return Ok(to_report(path, first));
    }
    // What is left after the repair, counted afresh; the repairs as the first pass counted them.
    let mut again = pass(io, Fix::default())?;
    let mut findings = first.out.findings;
    findings.append(&mut again.out.findings);
    again.out.findings = findings;
    again.out.tally.corruptions_fixed = first.out.tally.corruptions_fixed;
    again.out.tally.leaks_fixed = first.out.tally.leaks_fixed;
    Ok(to_report(path, again))
}

/// One pass of qemu's check.
fn pass(io: &mut dyn ImageIo, fix: Fix) -> Result<Pass> {
    let gate = Gate::confined();
    let ctx = OpenContext {
        gate: &gate,
        provenance: Provenance::User,
        salvage: Salvage::Refuse,
        snapshot: None,
        data_files: crate::image::DataFilePolicy::Require,
    };
    let h = Header::read(&*io, &ctx)?;
    if h.encryption != Encryption::None {
        return Err(Error::unsupported(
            "checking encrypted qcow2 images is not supported by diskferry",
        ));
    }
    let (snapshots, snapshots_size) = if h.nb_snapshots > 0 {
        snapshot::read_table_sized(&*io, h.snapshots_offset, h.nb_snapshots)?
    } else {
        (Vec::new(), 0)
    };
    let l1 = read_u64s(&*io, h.l1_table_offset, u64::from(h.l1_size))?;
    let stored = Stored::read(
        &*io,
        h.cluster_bits,
        h.refcount_order,
        h.refcount_table_offset,
        h.refcount_table_clusters,
    )?;
    let mut c = Checker {
        cs: h.cluster_size(),
        computed: Computed::new(0, refcount_max(h.refcount_order)),
        stored,
        out: Out::default(),
        stats: Stats::default(),
        snapshots,
        snapshots_size,
        l1,
        rebuild: false,
        fix,
        stopped: None,
        l2_budget: 0,
        h,
        io,
    };
    c.reset_counts()?;
    let end = c.run()?;
    let repairing = fix.leaks || fix.errors;
    if c.stopped.is_none() && repairing && c.out.check_errors == 0 && c.out.tally.corruptions == 0 {
        c.mark_clean()?;
    }
    Ok(Pass {
        out: c.out,
        stats: c.stats,
        end,
        stopped: c.stopped,
    })
}

/// What one pass found.
struct Pass {
    out: Out,
    stats: Stats,
    end: u64,
    stopped: Option<String>,
}

impl Checker<'_> {
    /// Zero counters for every cluster of the file as it is now.
    fn reset_counts(&mut self) -> Result<()> {
        let clusters = self.io.len().div_ceil(self.cs);
        if clusters > MAX_CLUSTERS {
            return Err(Error::unsupported(format!(
                "the file has {clusters} clusters, more than the {MAX_CLUSTERS} a check counts in memory"
            ))
            .with_path(self.io.name()));
        }
        self.computed = Computed::new(clusters, refcount_max(self.h.refcount_order));
        self.stats = Stats {
            total: self.h.size.div_ceil(self.cs),
            ..Stats::default()
        };
        // Each L1 table (the active one, each snapshot's) of a sound image points at distinct
        // L2 tables, each a cluster of the file: more L2 reads than that (twice, for the
        // COPIED pass) means L1 entries repeating one table, which hostile input uses to make
        // a small file cost hours. qemu would walk them all; we stop and say so.
        self.l2_budget = (clusters + 1)
            .saturating_mul(2 + self.snapshots.len() as u64)
            .max(1 << 16);
        Ok(())
    }

    /// qemu's `qcow2_check_refcounts`: count, compare, repair, check the COPIED flags;
    /// returns the image end offset (0 when the check stopped).
    fn run(&mut self) -> Result<u64> {
        self.calculate()?;
        if self.stopped.is_some() {
            return Ok(0);
        }
        // A repair starts again from the counts before the comparison (its lines stay:
        // qemu prints both the problem and its repair).
        let before = (self.out.tally, self.out.check_errors);
        let mut highest = self.compare(Fix::default())?;
        if self.rebuild && self.fix.errors {
            let old = self.out.tally;
            self.out.note("Rebuilding refcount structure".into());
            self.rebuild_refcounts()?;
            self.out.tally.corruptions = 0;
            self.out.tally.leaks = 0;
            self.rebuild = false;
            // The old structure is now unused: count again against the new one.
            self.stored = Stored::read(
                &*self.io,
                self.h.cluster_bits,
                self.h.refcount_order,
                self.h.refcount_table_offset,
                self.h.refcount_table_clusters,
            )?;
            self.reset_counts()?;
            // Counted again without repairs, as qemu does (they were made in the first count).
            let fix = std::mem::take(&mut self.fix);
            self.calculate()?;
            self.fix = fix;
            if self.stopped.is_some() {
                return Ok(0);
            }
            // The old structure's clusters are leaks of the new one: fixed, not reported
            // (the rebuild made them), unless they could not be.
            let saved = (self.out.tally, self.out.check_errors);
            self.out.tally = Default::default();
            highest = self.compare(Fix {
                leaks: true,
                errors: false,
            })?;
            if self.rebuild {
                self.out
                    .note("ERROR rebuilt refcount structure is still broken".into());
            }
            let fresh_leaks = self.out.tally.leaks;
            (self.out.tally, self.out.check_errors) = saved;
            let t = &mut self.out.tally;
            t.corruptions_fixed += old.corruptions.saturating_sub(t.corruptions);
            t.leaks_fixed += old.leaks.saturating_sub(t.leaks);
            t.leaks += fresh_leaks;
        } else if self.fix.leaks || self.fix.errors {
            if self.rebuild {
                self.out
                    .check_error("ERROR need to rebuild refcount structures".into());
                self.stopped = Some(
                    "the refcount structure must be rebuilt, which -r leaks does not do; repair with -r all"
                        .into(),
                );
                return Ok(0);
            }
            if self.out.tally.leaks > 0 || self.out.tally.corruptions > 0 {
                (self.out.tally, self.out.check_errors) = before;
                highest = self.compare(self.fix)?;
            }
        }
        self.check_copied(self.fix)?;
        Ok((highest + 1) * self.cs)
    }
}
