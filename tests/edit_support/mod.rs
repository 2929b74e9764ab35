//! Helpers the in-place edit tests of QCOW, VHD, VHDX, VDI and VMDK share: a list of writes with partial
//! sectors and blocks, applying it through a driver's `open_mut` or to a raw model, kill -9
//! rounds of a helper process timed to land mid-job, and reading an image's content back.
#![allow(dead_code)]

use crate::common::{qemu_img, run, run_ok};
use diskferry::Format;
use diskferry::edit::{Clear, EditContext, Force, ImageMut, NewBacking};
use diskferry::gate::Gate;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// One change: bytes of one value written, or a range cleared.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// `len` bytes of `byte` at `offset`.
    Write { offset: u64, len: u64, byte: u8 },
    /// A clear of `len` bytes at `offset`.
    Clear { offset: u64, len: u64, how: Clear },
}

/// Writes that cross blocks and cut sectors: `count` of them over a disk of `size` bytes,
/// each value distinct, placed by a fixed pseudo-random sequence.
pub fn writes(size: u64, count: usize, seed: u64) -> Vec<Op> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|i| {
            let len = 1 + next() % (3 << 20);
            let offset = next() % (size - len);
            Op::Write {
                offset,
                len,
                byte: (i % 250) as u8 + 1,
            }
        })
        .collect()
}

/// The context every test uses: names followed anywhere, as the command line does.
pub fn ctx(gate: &Gate) -> EditContext<'_> {
    EditContext {
        gate,
        force: Force::No,
    }
}

/// Applies `ops` through `format`'s `open_mut`, flushing at the end.
pub fn apply_mut(format: Format, image: &Path, ops: &[Op]) {
    let gate = Gate::anywhere();
    let mut m = format
        .driver()
        .open_mut(image, &ctx(&gate))
        .expect("open_mut");
    for op in ops {
        apply_one(m.as_mut(), op);
    }
    m.flush().expect("flush");
}

/// Applies one change to an open image.
pub fn apply_one(m: &mut dyn ImageMut, op: &Op) {
    match *op {
        Op::Write { offset, len, byte } => m
            .write_at(offset, &vec![byte; len as usize])
            .expect("write_at"),
        Op::Clear { offset, len, how } => m.clear(offset, len, how).expect("clear"),
    }
}

/// Applies `ops` to a raw model of the disk (`parent` gives what a deallocated range reads).
pub fn apply_raw(model: &Path, ops: &[Op], parent: Option<&Path>) {
    let f = std::fs::OpenOptions::new().write(true).open(model).unwrap();
    for op in ops {
        match *op {
            Op::Write { offset, len, byte } => {
                f.write_all_at(&vec![byte; len as usize], offset).unwrap()
            }
            Op::Clear { offset, len, how } => {
                let mut bytes = vec![0u8; len as usize];
                if how == Clear::Deallocate
                    && let Some(p) = parent
                {
                    let pf = std::fs::File::open(p).unwrap();
                    let plen = pf.metadata().unwrap().len();
                    if offset < plen {
                        let n = (plen - offset).min(len) as usize;
                        pf.read_exact_at(&mut bytes[..n], offset).unwrap();
                    }
                }
                f.write_all_at(&bytes, offset).unwrap();
            }
        }
    }
}

/// qemu-io's commands for the same writes (`write -P`).
pub fn qemu_io(format: &str, image: &Path, ops: &[Op]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", format]);
    for op in ops {
        match *op {
            Op::Write { offset, len, byte } => {
                cmd.args(["-c", &format!("write -P {byte} {offset} {len}")]);
            }
            Op::Clear { offset, len, .. } => {
                cmd.args(["-c", &format!("write -z {offset} {len}")]);
            }
        }
    }
    let out = cmd.arg(image).output().expect("qemu-io runs");
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("failed"),
        "qemu-io failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates `child`, a differencing `format` image over `backing` (named as the child records
/// it), with `-o opts` when given.
pub fn create_child(format: &str, child: &Path, backing: &str, opts: Option<&str>) {
    let mut args = vec!["create", "-f", format];
    if let Some(o) = opts {
        args.extend(["-o", o]);
    }
    args.extend(["-b", backing, "-F", format, child.to_str().unwrap()]);
    run_ok(&args);
}

/// Applies `ops` to `ours` through `format`'s `open_mut` and to its raw model `raw`, first
/// copying `ours` to `theirs.EXT` beside it for [`qemu_io_agrees`]; returns that copy.
pub fn apply_keeping_copy(format: Format, ours: &Path, raw: &Path, ops: &[Op]) -> PathBuf {
    let theirs = ours.with_file_name(format!("theirs.{}", format.name()));
    std::fs::copy(ours, &theirs).unwrap();
    apply_mut(format, ours, ops);
    apply_raw(raw, ops, None);
    theirs
}

/// With qemu: qemu-io's writes of `ops` into `theirs` (a copy of `ours` from before `ops`
/// changed it) leave it reading as `ours`, both as the qemu format `qemu_fmt`.
pub fn qemu_io_agrees(test: &str, qemu_fmt: &str, ours: &Path, theirs: &Path, ops: &[Op]) {
    if crate::common::have_qemu(test) {
        qemu_io(qemu_fmt, theirs, ops);
        assert!(
            crate::common::qemu_compare(qemu_fmt, ours, qemu_fmt, theirs),
            "{test}: qemu-io's writes read otherwise"
        );
    }
}

/// The raw model (`model.raw` beside `raw`) of a child of the disk `raw` after `ops`: with
/// qemu, qemu-io writes all but the last `by_model` of them into a raw copy, so that the
/// model does not rest on diskferry's own [`apply_raw`] alone; those last (clears giving
/// ranges back to the parent, which a raw file has none of) and all without qemu go through
/// `apply_raw`.
pub fn child_model(test: &str, raw: &Path, ops: &[Op], by_model: usize) -> PathBuf {
    let model = raw.with_file_name("model.raw");
    std::fs::copy(raw, &model).unwrap();
    let split = if crate::common::have_qemu(test) {
        let split = ops.len() - by_model;
        qemu_io("raw", &model, &ops[..split]);
        split
    } else {
        0
    };
    apply_raw(&model, &ops[split..], Some(raw));
    model
}

/// The image's content as diskferry reads it, converted to a raw file beside it.
pub fn to_raw(image: &Path, format: &str) -> PathBuf {
    let out = image.with_extension("read.raw");
    let _ = std::fs::remove_file(&out);
    run_ok(&[
        "convert",
        "-f",
        format,
        "-O",
        "raw",
        image.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    out
}

/// A raw file of `size` bytes with pseudo-random data in `regions`.
pub fn raw_with_data(path: &Path, size: u64, regions: &[(u64, u64)]) {
    crate::common::make_raw(path, size, regions);
}

/// True when the image opens with diskferry (`info`) and its check finds no corruption.
pub fn opens_and_checks(image: &Path, format: &str) -> Result<(), String> {
    let (code, _, err) = run(&["info", "-f", format, image.to_str().unwrap()]);
    if code != 0 {
        return Err(format!("info: {err}"));
    }
    let (code, out, err) = run(&["check", "-f", format, image.to_str().unwrap()]);
    if code != 0 && code != 3 {
        return Err(format!("check exit {code}: {out}{err}"));
    }
    Ok(())
}

/// True when qemu-img opens the image as `format`.
pub fn qemu_opens(image: &Path, format: &str) -> Result<(), String> {
    let (code, _, err) = qemu_img(&["info", "-f", format, image.to_str().unwrap()]);
    if code == 0 { Ok(()) } else { Err(err) }
}

/// The environment variable that makes a test binary a kill test's helper process: its value
/// is the job (`NAME|IMAGE`).
const HELPER_ENV: &str = "DISKFERRY_EDIT_HELPER";

/// The line a helper process prints when its job begins. The rounds time and kill from it,
/// so that the test harness starting up in the helper (often longer than the job on an idle
/// machine) is neither counted as the job nor where the kills land.
const JOB_BEGINS: &str = "diskferry-edit-helper: the job begins";

/// How many rounds a kill test runs (each kills one run of the job at its own point).
const ROUNDS: u64 = 20;

/// How many rounds must have killed the job between its start and its end. The kills are
/// spread over 9/10 of a run timed first, so on a steady machine about all of them land;
/// half tolerates a loaded machine running some rounds much faster than the timed one, while
/// a job too short to interrupt (or one that ends before the kills) still fails.
const MID_RUN_FLOOR: usize = 10;

/// The helper process of a kill test: this test binary run again with `zz_kill_helper` (the
/// test that does the work when [`helper_job`] names one) as the only test, on `image`. Its
/// stdout is piped for [`JOB_BEGINS`].
pub fn helper_on(job: &str, image: &Path) -> Child {
    helper_command(job, image)
        .stdout(Stdio::piped())
        .spawn()
        .expect("helper starts")
}

/// The command [`helper_on`] runs (its output thrown away), for a test that sets more of
/// its environment.
pub fn helper_command(job: &str, image: &Path) -> Command {
    let mut helper = Command::new(std::env::current_exe().unwrap());
    helper
        .args([
            "--exact",
            "zz_kill_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, format!("{job}|{}", image.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    helper
}

/// The job a helper process was started for, if this process is one; it announces
/// [`JOB_BEGINS`] to the parent, so call it right before the work.
pub fn helper_job() -> Option<String> {
    let job = std::env::var(HELPER_ENV).ok()?;
    let mut out = std::io::stdout().lock();
    // On a line of its own: the harness has written `test zz_kill_helper ... ` without one.
    writeln!(out, "\n{JOB_BEGINS}")
        .and_then(|()| out.flush())
        .expect("the helper tells its parent the job begins");
    Some(job)
}

/// A helper process whose job has begun.
struct Begun {
    child: Child,
    /// Kept open until the helper ends: with it closed, the harness's last lines would fail.
    out: BufReader<ChildStdout>,
    at: Instant,
}

/// Never leaves a helper behind, whatever panics first.
impl Drop for Begun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `job` on `image` and waits until its helper says the job begins.
fn begin(test: &str, job: &str, image: &Path) -> Begun {
    let mut child = helper_on(job, image);
    let out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut run = Begun {
        child,
        out,
        at: Instant::now(),
    };
    let mut line = String::new();
    loop {
        line.clear();
        if run.out.read_line(&mut line).unwrap_or(0) == 0 {
            let status = run.child.wait();
            panic!("{test}: the helper of {job} ended before its job began ({status:?})");
        }
        if line.trim_end() == JOB_BEGINS {
            run.at = Instant::now();
            return run;
        }
    }
}

/// Runs `job` on `image` to its end and returns how long the job took.
fn run_to_end(test: &str, job: &str, image: &Path) -> Duration {
    let mut run = begin(test, job, image);
    let _ = run.out.read_to_end(&mut Vec::new());
    let status = run.child.wait().expect("helper waited for");
    let took = run.at.elapsed();
    assert!(status.success(), "{test}: {job} run to its end failed");
    took
}

/// How a round's kill fell.
#[derive(Debug, PartialEq)]
enum Kill {
    /// The job was still running: it was killed mid-run.
    MidRun,
    /// The job had ended already.
    TooLate,
}

/// Kills the job `after` its start with SIGKILL, if it is still running then.
fn kill_after(mut run: Begun, after: Duration) -> Kill {
    std::thread::sleep(after.saturating_sub(run.at.elapsed()));
    let kill = match run.child.try_wait() {
        Ok(None) => Kill::MidRun,
        _ => Kill::TooLate,
    };
    // SIGKILL, and reaped, as dropping a `Begun` does.
    drop(run);
    kill
}

/// How a kill test's rounds treat qemu-img: open each survivor with it as this format, or not.
#[derive(Clone, Copy)]
pub enum QemuOpens {
    /// `qemu-img info -f FMT` must open every survivor.
    As(&'static str),
    /// qemu-img cannot open these images (a differencing VDI, say): not asked.
    No,
}

/// What the rounds require of every survivor before the test's own `verify`.
#[derive(Clone, Copy)]
pub enum Survivor {
    /// It opens and checks clean with diskferry, and opens with qemu-img as said.
    ChecksClean(QemuOpens),
    /// It may be in a state the format expects after a crash but `check` reports (a VHDX
    /// log still to replay): `verify` judges it wholly.
    JudgedByVerify,
}

/// A kill -9 test: the in-place operation `job` runs in a helper process (see [`helper_on`])
/// and is killed at points spread over its duration, timed by one run to the end first, so
/// that the kills fall mid-job whether the machine is idle or loaded.
pub struct KillRounds<'a> {
    /// The test's name, for messages and for skipping what a missing qemu-img cannot check.
    pub test: &'a str,
    /// The format diskferry opens and checks the survivors as.
    pub format: &'a str,
    /// What every survivor must pass before `verify`.
    pub survivor: Survivor,
    /// The job `zz_kill_helper` runs.
    pub job: &'a str,
    /// The latest a kill lands into the job, in milliseconds, however long the job runs (so
    /// that long jobs are killed where their interesting part is, and the rounds stay short).
    pub max_ms: u64,
}

impl KillRounds<'_> {
    /// The rounds on a copy of `template` (`victim.FORMAT` beside it) each.
    pub fn on_copies_of(&self, template: &Path, verify: &dyn Fn(u64, &Path)) {
        let image = template
            .parent()
            .unwrap()
            .join(format!("victim.{}", self.format));
        self.on(
            &|_| {
                std::fs::copy(template, &image).unwrap();
                image.clone()
            },
            verify,
        );
    }

    /// The rounds on images of several files: `prepare` makes round `i`'s image afresh (in a
    /// folder of its own, say) and returns the path to start on. Round [`ROUNDS`] is the run
    /// to the end that times the job; its result must pass as any survivor's.
    pub fn on(&self, prepare: &dyn Fn(u64) -> PathBuf, verify: &dyn Fn(u64, &Path)) {
        let test = self.test;
        let image = prepare(ROUNDS);
        let took = run_to_end(test, self.job, &image);
        self.judge(ROUNDS, &image, verify);
        // Within 9/10 of the timed run, lowered whenever a kill comes too late, so that a
        // timed run slowed by a loaded machine does not put the later kills past the end.
        let mut window = (took * 9 / 10).min(Duration::from_millis(self.max_ms));
        let mut mid_run = 0;
        for i in 0..ROUNDS {
            let image = prepare(i);
            // Spread evenly: from 1/40 to 39/40 of the window.
            let after = window * (2 * i as u32 + 1) / (2 * ROUNDS as u32);
            match kill_after(begin(test, self.job, &image), after) {
                Kill::MidRun => mid_run += 1,
                Kill::TooLate => window = window.min(after * 9 / 10),
            }
            self.judge(i, &image, verify);
        }
        // Shown by `--nocapture`: how well the kills fell on this machine.
        eprintln!("{test}: {mid_run} of {ROUNDS} kills mid-run; the job ran {took:?}");
        assert!(
            mid_run >= MID_RUN_FLOOR,
            "{test}: only {mid_run} of {ROUNDS} kills landed before the job ended (it ran \
             {took:?} uninterrupted)"
        );
    }

    /// Requires round `i`'s survivor to pass [`Self::survivor`] and `verify`.
    fn judge(&self, i: u64, image: &Path, verify: &dyn Fn(u64, &Path)) {
        if let Survivor::ChecksClean(qemu) = self.survivor {
            opens_and_checks(image, self.format).unwrap_or_else(|e| panic!("round {i}: {e}"));
            if let QemuOpens::As(f) = qemu
                && crate::common::have_qemu(self.test)
            {
                qemu_opens(image, f).unwrap_or_else(|e| panic!("round {i}: qemu-img: {e}"));
            }
        }
        verify(i, image);
    }
}

/// The writes of the kill tests' `writes` job: 40 over a 16 MiB disk (the test judges each
/// survivor by the same list).
pub fn killed_writes() -> Vec<Op> {
    writes(16 * MIB, 40, 99)
}

/// `count` writes of `len` bytes of 0xab, `stride` bytes apart from offset 512 (so that
/// each cuts sectors).
pub fn strided_writes(count: u64, stride: u64, len: u64) -> Vec<Op> {
    (0..count)
        .map(|i| Op::Write {
            offset: i * stride + 512,
            len,
            byte: 0xab,
        })
        .collect()
}

/// Re-links `image` through `format`'s `set_backing` to each of `names` in turn, `times` in
/// all (with `backing_format` recorded): the rebase job of the kill tests, many in a row so
/// that the kills land mid-rebase.
pub fn rebase_in_turn(
    format: Format,
    image: &Path,
    names: [&str; 2],
    times: usize,
    backing_format: Option<Format>,
) {
    let gate = Gate::anywhere();
    for name in names.iter().cycle().take(times) {
        let backing = NewBacking {
            name: name.to_string(),
            format: backing_format,
        };
        format
            .driver()
            .set_backing(image, Some(&backing), &ctx(&gate))
            .expect("set_backing");
    }
}

/// True when each write of `ops` reads either wholly as before (`old`) or wholly as written,
/// in order: a later write that overlaps an earlier one decides the overlap.
pub fn each_write_old_or_new(content: &[u8], old: &[u8], ops: &[Op]) -> Result<(), String> {
    // The newest write that covers each byte decides what it may be, along with the old byte
    // and the bytes of earlier writes over it (a later write may not have landed).
    for (i, op) in ops.iter().enumerate() {
        let Op::Write { offset, len, byte } = *op else {
            continue;
        };
        let range = offset as usize..(offset + len) as usize;
        for at in range.clone() {
            let c = content[at];
            if c == byte || c == old[at] {
                continue;
            }
            let earlier = ops[..i].iter().any(|o| match *o {
                Op::Write {
                    offset: eo,
                    len: el,
                    byte: eb,
                } => (eo as usize..(eo + el) as usize).contains(&at) && eb == c,
                Op::Clear { .. } => false,
            });
            let later = ops[i + 1..].iter().any(|o| match *o {
                Op::Write {
                    offset: eo,
                    len: el,
                    byte: eb,
                } => (eo as usize..(eo + el) as usize).contains(&at) && eb == c,
                Op::Clear { .. } => false,
            });
            if !earlier && !later {
                return Err(format!(
                    "byte {at} of write {i} reads {c:#x}: neither the old {:#x} nor any write's",
                    old[at]
                ));
            }
        }
    }
    // Bytes no write touched stay as they were.
    for (at, (c, o)) in content.iter().zip(old).enumerate() {
        if c != o
            && !ops.iter().any(|op| match *op {
                Op::Write { offset, len, .. } => (offset..offset + len).contains(&(at as u64)),
                Op::Clear { .. } => false,
            })
        {
            return Err(format!("byte {at} changed although nothing wrote it"));
        }
    }
    Ok(())
}

/// A `format` image of `size` bytes made by converting a raw file with data in a few places
/// (with `-o opts` when given), and that raw file.
pub fn image_with_data(
    dir: &Path,
    name: &str,
    format: &str,
    size: u64,
    opts: Option<&str>,
) -> (PathBuf, PathBuf) {
    let raw = dir.join(format!("{name}.raw"));
    crate::common::make_raw(
        &raw,
        size,
        &[(0, 65536), (3 * MIB + 100, 9000), (7 * MIB, MIB)],
    );
    let image = dir.join(format!("{name}.{format}"));
    convert_to(format, opts, &raw, &image);
    (image, raw)
}

const MIB: u64 = 1 << 20;

/// Converts raw `src` to a new `format` image at `out` (with `-o opts` when given).
fn convert_to(format: &str, opts: Option<&str>, src: &Path, out: &Path) {
    let _ = std::fs::remove_file(out);
    let mut args = vec!["convert", "-O", format];
    if let Some(o) = opts.filter(|o| !o.is_empty()) {
        args.extend(["-o", o]);
    }
    args.extend([src.to_str().unwrap(), out.to_str().unwrap()]);
    run_ok(&args);
}

/// Resizes through `format`'s driver, growing space left unreserved.
pub fn resize_with(
    format: Format,
    image: &Path,
    new_size: u64,
    shrink: diskferry::edit::Shrink,
) -> diskferry::Result<()> {
    let gate = Gate::anywhere();
    format.driver().resize(
        image,
        &diskferry::edit::ResizeRequest {
            new_size,
            shrink,
            preallocation: diskferry::edit::GrowPreallocation::Off,
        },
        &ctx(&gate),
    )
}

/// For each `-o` of `opts_list`, `format`'s `measure` of a disk of `size` bytes with data in
/// `regions` gives the size of the file the converter writes from such a raw file
/// (`required`), and from one with data everywhere (`fully_allocated`).
pub fn assert_measure_matches_conversion(
    format: Format,
    dir: &Path,
    opts_list: &[&str],
    size: u64,
    regions: &[(u64, u64)],
) {
    let raw = dir.join("m.raw");
    crate::common::make_raw(&raw, size, regions);
    let full = dir.join("full.raw");
    crate::common::make_raw(&full, size, &[(0, size)]);
    let allocated: Vec<std::ops::Range<u64>> = regions.iter().map(|&(o, l)| o..o + l).collect();
    let out = dir.join(format!("m.{}", format.name()));
    for opts in opts_list {
        let options = diskferry::options::FormatOptions::parse(
            format,
            format.driver().create_options(),
            opts,
        )
        .unwrap();
        let m = format
            .driver()
            .measure(&diskferry::edit::MeasureRequest {
                virtual_size: size,
                allocated: &allocated,
                options: &options,
                source_bitmaps: None,
            })
            .unwrap();
        for (src, want) in [(&raw, m.required), (&full, m.fully_allocated)] {
            convert_to(format.name(), Some(opts), src, &out);
            assert_eq!(
                want,
                std::fs::metadata(&out).unwrap().len(),
                "-o {opts} from {}",
                src.display()
            );
        }
    }
}
