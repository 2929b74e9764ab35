//! Running one qemu-img invocation twice, with qemu-img and with diskferry linked as
//! `qemu-img`, on identical inputs, and comparing what a script sees: the exit code, standard
//! output (JSON parsed, human exact, progress records), and the images written.

use super::{as_qemu_img, decode, qemu_compare, qemu_img, run_prog};
use std::path::{Path, PathBuf};
use std::process::Command;

/// (exit code, stdout, stderr) of one run.
pub type Ran = (i32, String, String);

/// Runs `args` with qemu-img on image `q` and with diskferry linked as qemu-img (`fake`) on
/// image `d`, each in place of `{}`.
pub fn twin(fake: &Path, args: &[&str], q: &Path, d: &Path) -> (Ran, Ran) {
    let with = |p: &Path| -> Vec<String> {
        args.iter()
            .map(|a| {
                if *a == "{}" {
                    p.to_str().unwrap().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect()
    };
    let (qa, da) = (with(q), with(d));
    (
        qemu_img(&qa.iter().map(String::as_str).collect::<Vec<_>>()),
        run_prog(fake, &da.iter().map(String::as_str).collect::<Vec<_>>()),
    )
}

/// Runs qemu-io's `cmds` (such as `write -P 0x33 1M 2M`) on `img`, failing the test if one
/// fails.
pub fn qemu_io(fmt: &str, img: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", fmt]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(img).output().expect("qemu-io runs");
    assert!(out.status.success(), "qemu-io {cmds:?}: {out:?}");
}

/// The percentages a progress output (qemu-img's `    (NN.NN/100%)\r` records) holds, in
/// order.
pub fn percentages(out: &str) -> Vec<f64> {
    out.split('\r')
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix('(')?.strip_suffix("/100%)")?.parse().ok()
        })
        .collect()
}

/// How a script reads a command's standard output, and so how the two outputs are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Parsed as JSON: every key qemu-img prints has qemu-img's value (recursively);
    /// diskferry may add only its documented keys ([`DISKFERRY_JSON_KEYS`]).
    Json,
    /// As [`Stdout::Json`], but the keys named are left out on both sides at every depth:
    /// for `info` of an image each tool wrote, whose `actual-size` (the blocks the file
    /// system gave it) is the writer's own business.
    JsonExcept(&'static [&'static str]),
    /// Byte for byte.
    Exact,
    /// Human `info`: qemu-img's lines, line for line, then only lines of diskferry's own.
    HumanThenExtra,
    /// `-p` progress records as vdsm, CDI and Proxmox parse them: both start at 0 and end at
    /// 100, ours rise monotonically and have qemu-img's shape; the text after the last
    /// record is identical.
    Progress,
}

/// The keys diskferry's JSON adds to qemu-img's (scripts ignore keys they do not know).
pub const DISKFERRY_JSON_KEYS: &[&str] = &["format-guessed", "opened-files", "files", "warnings"];

/// A pair of folders (`q` for qemu-img, `d` for diskferry) holding the same input files, and
/// the `qemu-img` link to diskferry. Commands run inside each folder with the same relative
/// names, so outputs that name files compare as they are.
pub struct Twin {
    /// qemu-img's folder.
    pub q: PathBuf,
    /// diskferry's folder.
    pub d: PathBuf,
    src: PathBuf,
    fake: PathBuf,
}

impl Twin {
    /// Makes the inputs once with `setup` (called with the folder to create them in) and
    /// copies them, holes kept, into both folders: copies rather than two runs of `setup`, so
    /// that random identifiers (VMDK CIDs, VHD UUIDs) and allocation are the same on both sides.
    pub fn new(dir: &Path, setup: impl FnOnce(&Path)) -> Twin {
        let (src, q, d) = (dir.join("src"), dir.join("q"), dir.join("d"));
        std::fs::create_dir_all(&src).unwrap();
        setup(&src);
        for side in [&q, &d] {
            let ok = Command::new("cp")
                // Holes as the source has them, no more: qemu's qcow2 driver takes an image
                // with holes inside its clusters for a preallocated one and maps it
                // differently.
                .args(["-r"])
                .arg(&src)
                .arg(side)
                .status()
                .unwrap()
                .success();
            assert!(ok, "cp -r {} {}", src.display(), side.display());
        }
        Twin {
            q,
            d,
            src,
            fake: as_qemu_img(dir),
        }
    }

    /// Runs `args` in both folders: (qemu-img's run, diskferry's run).
    pub fn run(&self, args: &[&str]) -> (Ran, Ran) {
        let q = Command::new("qemu-img")
            .args(args)
            .current_dir(&self.q)
            .output()
            .expect("qemu-img runs");
        let d = Command::new(&self.fake)
            .args(args)
            .current_dir(&self.d)
            .output()
            .expect("diskferry runs");
        (decode(q), decode(d))
    }

    /// Runs `args` in both folders and asserts what scripts see is the same: the exit code,
    /// and standard output compared as `how`. `cite` names the invocation's source.
    pub fn same(&self, cite: &str, args: &[&str], how: Stdout) -> (Ran, Ran) {
        let (q, d) = self.run(args);
        assert_eq!(
            d.0, q.0,
            "{cite}: qemu-img {args:?}: exit codes differ\nqemu-img: {q:?}\ndiskferry: {d:?}"
        );
        match how {
            Stdout::Exact => assert_eq!(
                d.1, q.1,
                "{cite}: qemu-img {args:?}: standard output differs\n(diskferry's stderr: {})",
                d.2
            ),
            Stdout::HumanThenExtra => assert!(
                d.1.starts_with(&q.1),
                "{cite}: qemu-img {args:?}: qemu-img's lines are not ours, line for line\nqemu-img:\n{}\ndiskferry:\n{}",
                q.1,
                d.1
            ),
            Stdout::Json | Stdout::JsonExcept(_) => {
                let parse = |who: &str, text: &str| -> serde_json::Value {
                    serde_json::from_str(text).unwrap_or_else(|e| {
                        panic!("{cite}: {who}'s output of {args:?} is not JSON ({e}): {text}")
                    })
                };
                let (mut qv, mut dv) = (parse("qemu-img", &q.1), parse("diskferry", &d.1));
                if let Stdout::JsonExcept(keys) = how {
                    drop_keys(&mut qv, keys);
                    drop_keys(&mut dv, keys);
                }
                json_covers(&qv, &dv, &format!("{cite}: qemu-img {args:?}"), "");
            }
            Stdout::Progress => {
                let (qp, dp) = (percentages(&q.1), percentages(&d.1));
                assert_eq!(qp.first(), Some(&0.0), "{cite}: {:?}", q.1);
                assert_eq!(dp.first(), Some(&0.0), "{cite}: {:?}", d.1);
                assert_eq!(qp.last(), Some(&100.0), "{cite}: {:?}", q.1);
                assert_eq!(dp.last(), Some(&100.0), "{cite}: {:?}", d.1);
                assert!(dp.windows(2).all(|w| w[0] <= w[1]), "{cite}: {dp:?}");
                // Every record has qemu-img's exact shape: four spaces, two decimals, `\r`.
                let records = d.1.rsplit_once('\r').map_or("", |(r, _)| r);
                for rec in records.split('\r') {
                    let num = rec
                        .strip_prefix("    (")
                        .and_then(|r| r.strip_suffix("/100%)"))
                        .unwrap_or_else(|| panic!("{cite}: record {rec:?}"));
                    assert_eq!(num.split('.').nth(1).map(str::len), Some(2), "{rec:?}");
                }
                let tail = |s: &str| s.rsplit_once('\r').map_or(s, |(_, t)| t).to_string();
                assert_eq!(tail(&d.1), tail(&q.1), "{cite}: after the progress records");
            }
        }
        (q, d)
    }

    /// Asserts that file `name` (of format `fmt`) reads the same in both folders.
    pub fn same_content(&self, cite: &str, fmt: &str, name: &str) {
        assert!(
            qemu_compare(fmt, &self.q.join(name), fmt, &self.d.join(name)),
            "{cite}: {name} differs between qemu-img's and diskferry's"
        );
    }

    /// The folder the inputs were made in (before the commands changed the copies).
    pub fn source(&self) -> &Path {
        &self.src
    }
}

/// Asserts that every key of `theirs` is in `ours` with the same value (objects compared key
/// by key, arrays element by element), and that `ours` adds only [`DISKFERRY_JSON_KEYS`].
pub fn json_covers(theirs: &serde_json::Value, ours: &serde_json::Value, what: &str, at: &str) {
    use serde_json::Value;
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => {
            for (k, tv) in t {
                let ov = o
                    .get(k)
                    .unwrap_or_else(|| panic!("{what}: {at}/{k} missing; qemu-img has {tv}"));
                json_covers(tv, ov, what, &format!("{at}/{k}"));
            }
            for k in o.keys() {
                assert!(
                    t.contains_key(k) || DISKFERRY_JSON_KEYS.contains(&k.as_str()),
                    "{what}: {at}/{k} is not qemu-img's: {}",
                    o[k]
                );
            }
        }
        (Value::Array(t), Value::Array(o)) => {
            assert_eq!(o.len(), t.len(), "{what}: {at} has {o:?}, qemu-img {t:?}");
            for (i, (tv, ov)) in t.iter().zip(o).enumerate() {
                json_covers(tv, ov, what, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(ours, theirs, "{what}: {at}"),
    }
}

/// `value` without the keys `keys`, at every depth.
fn drop_keys(value: &mut serde_json::Value, keys: &[&str]) {
    match value {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !keys.contains(&k.as_str()));
            m.values_mut().for_each(|v| drop_keys(v, keys));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| drop_keys(v, keys)),
        _ => {}
    }
}
