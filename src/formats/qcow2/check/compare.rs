//! Comparing: the stored refcount of every cluster against the computed one (leaks and
//! corruptions, repaired in place when allowed), then the COPIED flags of the active L1 and
//! L2 entries against the stored refcounts (set exactly when the refcount is 1).

use super::Checker;
use super::refcounts::Unreadable;
use super::walk::Kind;
use crate::check::Severity;
use crate::error::Result;
use crate::formats::qcow2::table::{L1E_OFFSET_MASK, L2E_OFFSET_MASK, OFLAG_COPIED};

/// What a pass may repair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fix {
    /// Refcounts too high.
    pub leaks: bool,
    /// Refcounts too low, COPIED flags, the refcount structure itself.
    pub errors: bool,
}

impl Checker<'_> {
    /// Compares stored and computed refcounts of every counted cluster, repairing what `fix`
    /// allows; returns the last cluster either calls in use. A stored refcount of 0 for a
    /// used cluster cannot be raised in place (its block may not exist): it asks for a
    /// rebuild of the refcount structure.
    pub fn compare(&mut self, fix: Fix) -> Result<u64> {
        let mut highest = 0;
        for i in 0..self.computed.len() {
            let stored = match self.stored.get(self.io, i)? {
                Ok(n) => n,
                Err(Unreadable) => {
                    self.out.check_error(format!(
                        "Can't get refcount for cluster {i}: Input/output error"
                    ));
                    continue;
                }
            };
            let computed = self.computed.get(i);
            if stored > 0 || computed > 0 {
                highest = i;
            }
            if stored == computed {
                continue;
            }
            let leak = stored > computed;
            if stored == 0 {
                self.rebuild = true;
            }
            let repair = stored != 0 && if leak { fix.leaks } else { fix.errors };
            let message =
                |label: &str| format!("{label} cluster {i} refcount={stored} reference={computed}");
            if repair {
                self.stored.set(self.io, i, computed)?;
                let severity = if leak {
                    self.out.tally.leaks_fixed += 1;
                    Severity::Leak
                } else {
                    self.out.tally.corruptions_fixed += 1;
                    Severity::Corruption
                };
                self.out.repaired_line(severity, message("Repairing"));
            } else if leak {
                self.out.tally.leaks += 1;
                self.out.leak_line(message("Leaked"));
            } else {
                self.out.corruption(message("ERROR"));
            }
        }
        self.stored.write_back(self.io)?;
        Ok(highest)
    }

    /// Checks the COPIED flag of every active L1 entry and of every data cluster of the
    /// active L2 tables; repairs them when `fix` has errors, or has leaks and nothing else
    /// is wrong (then the stored refcounts are known good).
    pub fn check_copied(&mut self, fix: Fix) -> Result<()> {
        let repair = fix.errors
            || (fix.leaks
                && self.out.check_errors == 0
                && self.out.tally.corruptions == 0
                && self.out.tally.leaks == 0);
        let label = if repair { "Repairing" } else { "ERROR" };
        for i in 0..self.l1.len() {
            let l1_entry = self.l1[i];
            let l2 = l1_entry & L1E_OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            let Ok(refcount) = self.stored.get(self.io, l2 >> self.h.cluster_bits)? else {
                continue;
            };
            if (refcount == 1) != (l1_entry & OFLAG_COPIED != 0) {
                self.out.tally.corruptions += 1;
                let m = format!(
                    "{label} OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={l1_entry:x} refcount={refcount}"
                );
                if repair {
                    let fixed = if refcount == 1 {
                        l1_entry | OFLAG_COPIED
                    } else {
                        l1_entry & !OFLAG_COPIED
                    };
                    super::repair::write(
                        self.io,
                        &fixed.to_be_bytes(),
                        self.h.l1_table_offset + 8 * i as u64,
                    )?;
                    self.l1[i] = fixed;
                    self.out.tally.corruptions -= 1;
                    self.out.tally.corruptions_fixed += 1;
                    self.out.repaired_line(Severity::Corruption, m);
                } else {
                    self.out.corruption_line(m);
                }
            }
            if !self.spend_l2() {
                return Ok(());
            }
            let mut table = self.read_l2(l2)?;
            let mut dirty = 0u64;
            for slot in table.iter_mut() {
                let entry = slot.0;
                if !matches!(self.kind(entry), Kind::Normal | Kind::ZeroAlloc) {
                    continue;
                }
                let refcount = if self.h.has_data_file() {
                    1
                } else {
                    match self
                        .stored
                        .get(self.io, (entry & L2E_OFFSET_MASK) >> self.h.cluster_bits)?
                    {
                        Ok(n) => n,
                        Err(Unreadable) => continue,
                    }
                };
                if (refcount == 1) != (entry & OFLAG_COPIED != 0) {
                    self.out.tally.corruptions += 1;
                    let m = format!(
                        "{label} OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={refcount}"
                    );
                    if repair {
                        slot.0 = if refcount == 1 {
                            entry | OFLAG_COPIED
                        } else {
                            entry & !OFLAG_COPIED
                        };
                        dirty += 1;
                        self.out.repaired_line(Severity::Corruption, m);
                    } else {
                        self.out.corruption_line(m);
                    }
                }
            }
            if dirty > 0 {
                self.write_l2(l2, &table)?;
                self.out.tally.corruptions -= dirty;
                self.out.tally.corruptions_fixed += dirty;
            }
        }
        Ok(())
    }

    /// Writes an L2 table back whole, as qemu does (one write per table).
    fn write_l2(&mut self, offset: u64, table: &[(u64, u64)]) -> Result<()> {
        let mut bytes = Vec::with_capacity(self.cs as usize);
        for &(entry, bitmap) in table {
            bytes.extend_from_slice(&entry.to_be_bytes());
            if self.h.extended_l2() {
                bytes.extend_from_slice(&bitmap.to_be_bytes());
            }
        }
        super::repair::write(self.io, &bytes, offset)
    }
}
