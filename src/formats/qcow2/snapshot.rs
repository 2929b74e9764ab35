//! Internal snapshots: the snapshot table, choosing one (`convert -l`), and listing them as
//! `qemu-img snapshot -l` does.
//!
//! Each table entry (big-endian) is 40 bytes (the snapshot's L1 table offset and size, the
//! lengths of its ID and name, date, VM clock, 32-bit VM state size, extra data size), then
//! the extra data (64-bit VM state size, virtual disk size, icount), the ID and the name, padded
//! to a multiple of 8. Reading a snapshot is reading the image with the snapshot's L1 table
//! instead of the active one, at the image's current virtual size (as qemu-img does).

use crate::error::{Error, Result};
use crate::size::human_size;
use crate::storage::{Storage, StorageExt};
use serde_json::{Value, json};

/// The largest snapshot table qemu reads (64 MiB).
pub const MAX_TABLE_BYTES: u64 = 64 << 20;
/// The most extra data one entry may have (qemu's limit).
pub const MAX_EXTRA_BYTES: u32 = 1024;

/// One internal snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Where its L1 table is.
    pub l1_table_offset: u64,
    /// Entries of its L1 table.
    pub l1_size: u32,
    /// Its unique ID.
    pub id: String,
    /// Its name (tag).
    pub name: String,
    /// When it was taken: seconds since the epoch.
    pub date_sec: u32,
    /// And nanoseconds.
    pub date_nsec: u32,
    /// The guest's clock then, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Bytes of saved VM state.
    pub vm_state_size: u64,
    /// The virtual disk size then, when recorded.
    pub disk_size: Option<u64>,
    /// The record/replay instruction count, when recorded.
    pub icount: Option<u64>,
    /// Where its entry is in the file.
    pub entry_offset: u64,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the `count` entries of the snapshot table at `offset` (checked to start inside the
/// file). Every entry must lie inside the file, and the table within [`MAX_TABLE_BYTES`].
pub fn read_table(file: &dyn Storage, offset: u64, count: u32) -> Result<Vec<Snapshot>> {
    let mut out = Vec::with_capacity(count.min(1024) as usize);
    let mut at = offset;
    for i in 0..count {
        let used = at - offset;
        if used + 40 > MAX_TABLE_BYTES {
            return Err(Error::corrupt(format!(
                "snapshot table is larger than {} MiB (qemu's limit) at entry {i}",
                MAX_TABLE_BYTES >> 20
            ))
            .at_offset(at));
        }
        let fixed = file
            .read_vec(at, 40, "snapshot table entry")
            .map_err(|e| e.context(format!("snapshot {i}")))?;
        let id_len = u64::from(be16(&fixed, 12));
        let name_len = u64::from(be16(&fixed, 14));
        let extra_len = be32(&fixed, 36);
        if extra_len > MAX_EXTRA_BYTES {
            return Err(Error::corrupt(format!(
                "snapshot {i} has {extra_len} bytes of extra data (at most {MAX_EXTRA_BYTES})"
            ))
            .at_offset(at + 36));
        }
        let rest_len = u64::from(extra_len) + id_len + name_len;
        let rest = file
            .read_vec(at + 40, rest_len, "snapshot table entry")
            .map_err(|e| e.context(format!("snapshot {i}")))?;
        let extra = &rest[..extra_len as usize];
        let id = &rest[extra_len as usize..(u64::from(extra_len) + id_len) as usize];
        let name = &rest[(u64::from(extra_len) + id_len) as usize..];
        let vm_state_size = if extra.len() >= 8 {
            be64(extra, 0)
        } else {
            u64::from(be32(&fixed, 32))
        };
        out.push(Snapshot {
            l1_table_offset: be64(&fixed, 0),
            l1_size: be32(&fixed, 8),
            id: String::from_utf8_lossy(id).into_owned(),
            name: String::from_utf8_lossy(name).into_owned(),
            date_sec: be32(&fixed, 16),
            date_nsec: be32(&fixed, 20),
            vm_clock_nsec: be64(&fixed, 24),
            vm_state_size,
            disk_size: (extra.len() >= 16).then(|| be64(extra, 8)),
            icount: (extra.len() >= 24)
                .then(|| be64(extra, 16))
                .filter(|&c| c != u64::MAX),
            entry_offset: at,
        });
        at += (40 + rest_len).div_ceil(8) * 8;
    }
    if at - offset > MAX_TABLE_BYTES {
        return Err(Error::corrupt(format!(
            "snapshot table is larger than {} MiB (qemu's limit)",
            MAX_TABLE_BYTES >> 20
        ))
        .at_offset(offset));
    }
    Ok(out)
}

/// Which snapshot to read, as `convert -l` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `-l TEXT`: the snapshot whose ID is TEXT, else the first whose name is.
    IdOrName(String),
    /// `-l snapshot.id=ID,snapshot.name=NAME` (either or both): the first that matches all.
    Fields {
        /// The ID wanted.
        id: Option<String>,
        /// The name wanted.
        name: Option<String>,
    },
}

impl Selector {
    /// Parses `-l`'s argument: `snapshot.id=...`/`snapshot.name=...` options, or a bare ID or
    /// name.
    pub fn parse(text: &str) -> Result<Selector> {
        if !text.starts_with("snapshot.") {
            if text.is_empty() {
                return Err(Error::invalid("-l: the snapshot ID or name is empty"));
            }
            return Ok(Selector::IdOrName(text.to_string()));
        }
        let (mut id, mut name) = (None, None);
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("snapshot.id", v)) => id = Some(v.to_string()),
                Some(("snapshot.name", v)) => name = Some(v.to_string()),
                _ => {
                    return Err(Error::invalid(format!(
                        "-l: '{part}' is not snapshot.id=ID or snapshot.name=NAME"
                    )));
                }
            }
        }
        if id.is_none() && name.is_none() {
            return Err(Error::invalid(
                "-l: give snapshot.id=ID or snapshot.name=NAME",
            ));
        }
        Ok(Selector::Fields { id, name })
    }

    /// How the selector reads in messages.
    pub fn describe(&self) -> String {
        match self {
            Selector::IdOrName(t) => format!("'{t}'"),
            Selector::Fields { id, name } => {
                let mut parts = Vec::new();
                if let Some(i) = id {
                    parts.push(format!("ID '{i}'"));
                }
                if let Some(n) = name {
                    parts.push(format!("name '{n}'"));
                }
                parts.join(" and ")
            }
        }
    }

    /// The index of the chosen snapshot in `list`.
    pub fn find(&self, list: &[Snapshot]) -> Option<usize> {
        match self {
            Selector::IdOrName(t) => list
                .iter()
                .position(|s| &s.id == t)
                .or_else(|| list.iter().position(|s| &s.name == t)),
            Selector::Fields { id, name } => list.iter().position(|s| {
                id.as_ref().is_none_or(|i| &s.id == i) && name.as_ref().is_none_or(|n| &s.name == n)
            }),
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time, in UTC.
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The VM clock as qemu-img shows it: `HHHH:MM:SS.mmm`.
pub fn vm_clock(nsec: u64) -> String {
    let secs = nsec / 1_000_000_000;
    format!(
        "{:04}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        nsec / 1_000_000 % 1000
    )
}

/// The snapshot list as `qemu-img snapshot -l` prints it (dates in UTC).
pub fn list_text(list: &[Snapshot]) -> String {
    let mut out = String::from("Snapshot list:\n");
    out.push_str(&format!(
        "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
        "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT"
    ));
    for s in list {
        out.push_str(&format!(
            "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
            s.id,
            s.name,
            human_size(s.vm_state_size),
            utc_date(u64::from(s.date_sec)),
            vm_clock(s.vm_clock_nsec),
            s.icount.map(|c| c.to_string()).unwrap_or_default()
        ));
    }
    out
}

/// One snapshot as qemu-img's JSON `snapshots` entry.
pub fn to_json(s: &Snapshot) -> Value {
    let mut o = serde_json::Map::new();
    if let Some(c) = s.icount {
        o.insert("icount".into(), json!(c));
    }
    o.insert(
        "vm-clock-nsec".into(),
        json!(s.vm_clock_nsec % 1_000_000_000),
    );
    o.insert("name".into(), json!(s.name));
    o.insert("date-sec".into(), json!(s.date_sec));
    o.insert("date-nsec".into(), json!(s.date_nsec));
    o.insert(
        "vm-clock-sec".into(),
        json!(s.vm_clock_nsec / 1_000_000_000),
    );
    o.insert("id".into(), json!(s.id));
    o.insert("vm-state-size".into(), json!(s.vm_state_size));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_clocks_read_like_qemu_img() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00");
        assert_eq!(utc_date(1_796_144_548), "2026-12-01 17:02:28");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(vm_clock(0), "0000:00:00.000");
        assert_eq!(vm_clock(3_723_004_000_000), "0001:02:03.004");
    }

    #[test]
    fn selectors() {
        let snap = |id: &str, name: &str| Snapshot {
            l1_table_offset: 0,
            l1_size: 0,
            id: id.into(),
            name: name.into(),
            date_sec: 0,
            date_nsec: 0,
            vm_clock_nsec: 0,
            vm_state_size: 0,
            disk_size: None,
            icount: None,
            entry_offset: 0,
        };
        let list = [snap("1", "2"), snap("2", "one"), snap("3", "one")];
        let find = |t: &str| Selector::parse(t).unwrap().find(&list);
        assert_eq!(find("2"), Some(1)); // an ID before a name
        assert_eq!(find("one"), Some(1));
        assert_eq!(find("snapshot.name=2"), Some(0));
        assert_eq!(find("snapshot.id=3,snapshot.name=one"), Some(2));
        assert_eq!(find("snapshot.id=3,snapshot.name=2"), None);
        assert_eq!(find("nope"), None);
        assert!(Selector::parse("snapshot.tag=x").is_err());
        assert!(Selector::parse("").is_err());
    }

    #[test]
    fn the_list_lines_up_as_qemu_img_prints_it() {
        let s = Snapshot {
            l1_table_offset: 0,
            l1_size: 0,
            id: "1".into(),
            name: "snap1".into(),
            date_sec: 1_796_144_548,
            date_nsec: 0,
            vm_clock_nsec: 0,
            vm_state_size: 0,
            disk_size: None,
            icount: Some(0),
            entry_offset: 0,
        };
        assert_eq!(
            list_text(&[s]),
            "Snapshot list:\n\
             ID      TAG               VM_SIZE                DATE        VM_CLOCK     ICOUNT\n\
             1       snap1                 0 B 2026-12-01 17:02:28  0000:00:00.000          0\n"
        );
    }
}
