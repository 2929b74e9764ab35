//! Helpers the in-place edit tests of VHD, VHDX, VDI and VMDK share: a list of writes with partial
//! sectors and blocks, applying it through a driver's `open_mut` or to a raw model, a helper
//! process to kill at random points, and reading an image's content back.
#![allow(dead_code)]

use crate::common::{qemu_img, run, run_ok};
use diskferry::Format;
use diskferry::edit::{Clear, EditContext, Force, ImageMut};
use diskferry::gate::Gate;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

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

/// The helper process of a kill test: this test binary run again with `test` (a test that
/// does the work when `DISKFERRY_EDIT_HELPER` names a job) as the only test.
pub fn spawn_helper(test: &str, job: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("DISKFERRY_EDIT_HELPER", job)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("helper starts")
}

/// The job a helper process was started for, if this process is one.
pub fn helper_job() -> Option<String> {
    std::env::var("DISKFERRY_EDIT_HELPER").ok()
}

/// Runs `child` for `delay`, then kills it with SIGKILL (if still running); true when it was
/// killed rather than finished.
pub fn kill_after(mut child: Child, delay: Duration) -> bool {
    std::thread::sleep(delay);
    let killed = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    killed
}

/// How a kill test's rounds treat qemu-img: open each survivor with it as this format, or not.
#[derive(Clone, Copy)]
pub enum QemuOpens {
    /// `qemu-img info -f FMT` must open every survivor.
    As(&'static str),
    /// qemu-img cannot open these images (a differencing VDI, say): not asked.
    No,
}

/// Twenty kill rounds: each copies `template` to `victim.EXT` beside it, starts `start` on the
/// copy, kills it after a delay of up to `max_ms`, then requires the survivor to open and
/// check clean with diskferry (as `format`), to open with qemu-img as `qemu` says, and to pass
/// `verify`. At least five rounds must have killed the process before it finished, so the
/// test cannot pass by never interrupting anything.
#[allow(clippy::too_many_arguments)]
pub fn killed_rounds(
    test: &str,
    template: &Path,
    format: &str,
    qemu: QemuOpens,
    max_ms: u64,
    start: &dyn Fn(&Path) -> Child,
    verify: &dyn Fn(u64, &Path),
) {
    let dir = template.parent().unwrap();
    let prepare = |_| {
        let image = dir.join(format!("victim.{format}"));
        std::fs::copy(template, &image).unwrap();
        image
    };
    killed_rounds_with(test, format, qemu, max_ms, &prepare, start, verify);
}

/// [`killed_rounds`] for images of several files: `prepare` makes round `i`'s image afresh
/// (in a folder of its own, say) and returns the path to start on.
#[allow(clippy::too_many_arguments)]
pub fn killed_rounds_with(
    test: &str,
    format: &str,
    qemu: QemuOpens,
    max_ms: u64,
    prepare: &dyn Fn(u64) -> PathBuf,
    start: &dyn Fn(&Path) -> Child,
    verify: &dyn Fn(u64, &Path),
) {
    let mut killed = 0;
    for i in 0..20 {
        let image = prepare(i);
        killed += usize::from(kill_after(start(&image), delay(i, max_ms)));
        opens_and_checks(&image, format).unwrap_or_else(|e| panic!("round {i}: {e}"));
        if let QemuOpens::As(f) = qemu
            && crate::common::have_qemu(test)
        {
            qemu_opens(&image, f).unwrap_or_else(|e| panic!("round {i}: qemu-img: {e}"));
        }
        verify(i, &image);
    }
    assert!(
        killed >= 5,
        "{test}: only {killed} of 20 runs were killed before finishing"
    );
}

/// A helper process started on `image` for `job` (see [`spawn_helper`]).
pub fn helper_on(job: &str, image: &Path) -> Child {
    spawn_helper("zz_kill_helper", &format!("{job}|{}", image.display()))
}

/// A delay between 0 and `max_ms` milliseconds chosen by `i`.
pub fn delay(i: u64, max_ms: u64) -> Duration {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    Duration::from_millis(x % (max_ms + 1))
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
