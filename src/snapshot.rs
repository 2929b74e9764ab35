//! Internal snapshots as every format that has them describes them: what `info` and
//! `snapshot -l` list (as qemu-img prints them), and which one `convert -l` reads.

use crate::error::{Error, Result};
use crate::size::human_size;
use serde_json::{Value, json};

/// One internal snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its unique ID.
    pub id: String,
    /// Its name (tag).
    pub name: String,
    /// Bytes of saved VM state.
    pub vm_state_size: u64,
    /// When it was taken: seconds since the epoch.
    pub date_sec: u64,
    /// And nanoseconds.
    pub date_nsec: u32,
    /// The guest's clock then, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// The record/replay instruction count, when recorded.
    pub icount: Option<u64>,
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
    pub fn find(&self, list: &[SnapshotInfo]) -> Option<usize> {
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
pub fn list_text(list: &[SnapshotInfo]) -> String {
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
            utc_date(s.date_sec),
            vm_clock(s.vm_clock_nsec),
            s.icount.map(|c| c.to_string()).unwrap_or_default()
        ));
    }
    out
}

/// One snapshot as qemu-img's JSON `snapshots` entry.
pub fn to_json(s: &SnapshotInfo) -> Value {
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
        let snap = |id: &str, name: &str| SnapshotInfo {
            id: id.into(),
            name: name.into(),
            date_sec: 0,
            date_nsec: 0,
            vm_clock_nsec: 0,
            vm_state_size: 0,
            icount: None,
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
        let s = SnapshotInfo {
            id: "1".into(),
            name: "snap1".into(),
            date_sec: 1_796_144_548,
            date_nsec: 0,
            vm_clock_nsec: 0,
            vm_state_size: 0,
            icount: Some(0),
        };
        assert_eq!(
            list_text(&[s]),
            "Snapshot list:\n\
             ID      TAG               VM_SIZE                DATE        VM_CLOCK     ICOUNT\n\
             1       snap1                 0 B 2026-12-01 17:02:28  0000:00:00.000          0\n"
        );
    }
}
