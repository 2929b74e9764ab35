//! The open gate (cli.md, "Which files an image may open"): every file an image names rather
//! than the user (VMDK extents and parents, VHD parents) passes one policy.
//!
//! - default: regular files anywhere (absolute names and `../` allowed, as qemu-img), never a
//!   device, FIFO, socket, directory or anything under /proc, /sys or /dev;
//! - `--allow-devices`: block and character devices too (raw device mappings), nothing else;
//! - `--confine`: regular files inside the image's own folder only;
//! - `--no-backing`: parents are not opened at all; extents still are, under the other rules.
//!
//! A refusal is exit 1 with one stderr line "diskferry: ..." naming the image and the refused
//! name as stored, never a hang, never the refused file's contents. Every run here has a
//! deadline, so a FIFO that blocks an open fails the test instead of hanging it. Each image is
//! run through every mode in parallel and all problems are reported together.

mod common;
mod gate_support;

use gate_support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SIZE: u64 = 8 * MIB;
const SECRET_VAR: &str = "DF_SECRET";
const SECRET: &str = "topsecret123";

/// Where the data of a flat extent is.
const EXTENT_REGIONS: [(u64, u64); 2] = [(0, MIB), (6 * MIB, MIB)];
/// Where the data of a VHD parent is.
const PARENT_REGIONS: [(u64, u64); 2] = [(2 * MIB, MIB), (5 * MIB, MIB / 2)];
/// The child's own data covers [0, CHILD_OWN) with pseudo_random(.., CHILD_SEED).
const CHILD_OWN: usize = MIB as usize;
const CHILD_SEED: u64 = 77;

/// A test's folders: the user's image lives in `<root>/vm/disks`, two levels below the root
/// so that "../../" names a file in the root.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    disks: PathBuf,
    outside: PathBuf,
    out: PathBuf,
    scratch: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let disks = root.join("vm/disks");
    let outside = root.join("outside");
    let out = root.join("out");
    let scratch = root.join("scratch");
    for d in [&disks, &outside, &out, &scratch] {
        std::fs::create_dir_all(d).unwrap();
    }
    Fixture {
        _dir: dir,
        root,
        disks,
        outside,
        out,
        scratch,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Default,
    Confine,
    NoBacking,
    AllowDevices,
    ConfineNoBacking,
}

impl Mode {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Mode::Default => &[],
            Mode::Confine => &["--confine"],
            Mode::NoBacking => &["--no-backing"],
            Mode::AllowDevices => &["--allow-devices"],
            Mode::ConfineNoBacking => &["--confine", "--no-backing"],
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Confine => "confine",
            Mode::NoBacking => "no-backing",
            Mode::AllowDevices => "allow-devices",
            Mode::ConfineNoBacking => "confine+no-backing",
        }
    }
}

#[derive(Clone)]
enum Expect {
    /// Succeeds, and the raw output holds these bytes.
    Content(Arc<Vec<u8>>),
    /// Refused (convert and info): exit 1, one line naming the image and the stored name.
    Refused,
    /// Fails with exit 1 without hanging; the message is not specified.
    Fails,
}

use Expect::{Fails, Refused};

/// The expectation of each mode, in the order default, --confine, --no-backing,
/// --allow-devices, --confine --no-backing.
fn plan(d: &Expect, c: &Expect, n: &Expect, a: &Expect, cn: &Expect) -> Vec<(Mode, Expect)> {
    vec![
        (Mode::Default, d.clone()),
        (Mode::Confine, c.clone()),
        (Mode::NoBacking, n.clone()),
        (Mode::AllowDevices, a.clone()),
        (Mode::ConfineNoBacking, cn.clone()),
    ]
}

fn content(v: Vec<u8>) -> Expect {
    Expect::Content(Arc::new(v))
}

/// Runs `image` through every mode of `plan` (in parallel) and fails with every problem
/// found. `stored` are the spellings of the name the image stores; `extra_forbidden` is text
/// that must never appear in the output (besides the secret environment variable's value).
fn run_matrix(
    fx: &Fixture,
    image: &Path,
    stored: &[String],
    plan: &[(Mode, Expect)],
    extra_forbidden: &[&str],
) {
    assert_none(matrix_problems(
        fx,
        image,
        stored,
        plan,
        extra_forbidden,
        &[],
    ));
}

/// Fails with every problem in `problems`, if any.
fn assert_none(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The problems of [`run_matrix`] for an image whose name under test is a parent: `info`
/// opens parents only with `--backing-chain` (as qemu-img's), so the refusal is checked there.
fn parent_matrix_problems(
    fx: &Fixture,
    image: &Path,
    stored: &[String],
    plan: &[(Mode, Expect)],
) -> Vec<String> {
    matrix_problems(fx, image, stored, plan, &[], &["--backing-chain"])
}

/// Runs `image` through every mode of `plan` in parallel; returns the problems found, each
/// tagged with the image's name and the mode.
fn matrix_problems(
    fx: &Fixture,
    image: &Path,
    stored: &[String],
    plan: &[(Mode, Expect)],
    extra_forbidden: &[&str],
    info_flags: &[&str],
) -> Vec<String> {
    let name = image.file_name().unwrap().to_str().unwrap().to_string();
    let mut forbidden: Vec<&str> = vec![SECRET];
    forbidden.extend_from_slice(extra_forbidden);
    let stored: Vec<&str> = stored.iter().map(String::as_str).collect();
    let subject = Subject {
        fx,
        image,
        name: &name,
        stored: &stored,
        forbidden: &forbidden,
        info_flags,
    };
    std::thread::scope(|sc| {
        let handles: Vec<_> = plan
            .iter()
            .map(|(mode, expect)| {
                let subject = &subject;
                sc.spawn(move || subject.check(*mode, expect))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .map(|p| format!("{name} {p}"))
            .collect()
    })
}

/// One image under test and what its runs must (not) print.
struct Subject<'a> {
    fx: &'a Fixture,
    image: &'a Path,
    /// The image's file name, which every refusal names.
    name: &'a str,
    /// Spellings of the name under test as the image stores it.
    stored: &'a [&'a str],
    /// Text that must never appear in any output.
    forbidden: &'a [&'a str],
    /// Flags `info` needs to open the name under test (`--backing-chain` for parents).
    info_flags: &'a [&'a str],
}

impl Subject<'_> {
    /// The problems of one mode's runs (none when it behaves as expected).
    fn check(&self, mode: Mode, expect: &Expect) -> Vec<String> {
        let stem = self.image.file_stem().unwrap().to_str().unwrap();
        let out = self.fx.out.join(format!("{stem}-{}.raw", mode.label()));
        let _ = std::fs::remove_file(&out);
        let env = [(SECRET_VAR, SECRET)];
        let mut args = vec!["convert"];
        args.extend_from_slice(mode.flags());
        args.extend(["-O", "raw", s(self.image), s(&out)]);
        let o = run_env(&args, &env);
        let tag = format!("[{}]", mode.label());
        let mut problems = Vec::new();
        match expect {
            Expect::Content(want) => {
                if o.code != Some(0) {
                    problems.push(format!("{tag} expected success: {}", o.describe()));
                } else {
                    match std::fs::read(&out) {
                        Ok(got) => {
                            if let Some(p) = content_problem(&got, want) {
                                problems.push(format!("{tag} {p}"));
                            }
                        }
                        Err(e) => problems.push(format!("{tag} no output {}: {e}", out.display())),
                    }
                }
                problems.extend(leak_problem(&o, self.forbidden).map(|p| format!("{tag} {p}")));
            }
            Expect::Refused => {
                problems.extend(
                    refusal_problem(&o, 1, self.name, self.stored, self.forbidden)
                        .map(|p| format!("{tag} {p}")),
                );
                if out.exists() {
                    problems.push(format!("{tag} a refused convert left an output"));
                }
                let mut args = vec!["info"];
                args.extend_from_slice(self.info_flags);
                args.extend_from_slice(mode.flags());
                args.push(s(self.image));
                let o = run_env(&args, &env);
                problems.extend(
                    refusal_problem(&o, 1, self.name, self.stored, self.forbidden)
                        .map(|p| format!("{tag} (info) {p}")),
                );
            }
            Expect::Fails => {
                if o.code.is_none() {
                    problems.push(format!("{tag} hung: {}", o.describe()));
                } else if o.code != Some(1) {
                    problems.push(format!("{tag} expected exit 1: {}", o.describe()));
                }
                problems.extend(leak_problem(&o, self.forbidden).map(|p| format!("{tag} {p}")));
            }
        }
        problems
    }
}

fn spellings(name: &str) -> Vec<String> {
    stored_spellings(name)
}

// ---------------------------------------------------------------------------------------
// VMDK text descriptors whose FLAT extent names the file under test

fn extent_bytes() -> Vec<u8> {
    raw_bytes(SIZE, &EXTENT_REGIONS)
}

fn write_extent(path: &Path) {
    common::make_raw(path, SIZE, &EXTENT_REGIONS);
}

/// A descriptor `name` in the image folder whose extent line names `extent`.
fn descriptor(fx: &Fixture, name: &str, extent: &str) -> PathBuf {
    let p = fx.disks.join(name);
    write_flat_descriptor(&p, SIZE, extent);
    p
}

#[test]
fn vmdk_extent_absolute_path_outside_the_folder() {
    let fx = fixture();
    let ext = fx.outside.join("abs-extent-flat.vmdk");
    write_extent(&ext);
    let image = descriptor(&fx, "abs.vmdk", s(&ext));
    let ok = content(extent_bytes());
    run_matrix(
        &fx,
        &image,
        &spellings(s(&ext)),
        &plan(&ok, &Refused, &ok, &ok, &Refused),
        &[],
    );
}

#[test]
fn vmdk_extent_dev_zero() {
    let fx = fixture();
    let image = descriptor(&fx, "devzero.vmdk", "/dev/zero");
    let zeros = content(vec![0; SIZE as usize]);
    run_matrix(
        &fx,
        &image,
        &spellings("/dev/zero"),
        &plan(&Refused, &Refused, &Refused, &zeros, &Refused),
        &[],
    );
}

#[test]
fn vmdk_extent_fifo() {
    let fx = fixture();
    mkfifo(&fx.disks.join("fifo-extent-flat.vmdk"));
    let image = descriptor(&fx, "fifo.vmdk", "fifo-extent-flat.vmdk");
    run_matrix(
        &fx,
        &image,
        &spellings("fifo-extent-flat.vmdk"),
        &plan(&Refused, &Refused, &Refused, &Refused, &Refused),
        &[],
    );
}

#[test]
fn vmdk_extent_proc_self_environ() {
    let fx = fixture();
    let image = descriptor(&fx, "environ.vmdk", "/proc/self/environ");
    run_matrix(
        &fx,
        &image,
        &spellings("/proc/self/environ"),
        &plan(&Refused, &Refused, &Refused, &Refused, &Refused),
        &[],
    );
}

/// A regular file reached through /proc (`/proc/self/root/...`, as `/dev/stdin` and
/// `/dev/fd/N` reach whatever the process holds open) is refused in every mode, devices
/// allowed or not: the way there counts, not only where it ends.
#[test]
fn vmdk_extent_regular_file_reached_through_proc() {
    let fx = fixture();
    let ext = fx.outside.join("via-proc-flat.vmdk");
    write_extent(&ext);
    let via = format!("/proc/self/root{}", s(&ext));
    let image = descriptor(&fx, "via-proc.vmdk", &via);
    run_matrix(
        &fx,
        &image,
        &spellings(&via),
        &plan(&Refused, &Refused, &Refused, &Refused, &Refused),
        &[],
    );
    // A link in the image's own folder whose target goes through /dev/fd.
    let link = fx.disks.join("fd-flat.vmdk");
    std::os::unix::fs::symlink("/dev/fd/0", &link).unwrap();
    let image = descriptor(&fx, "via-fd.vmdk", "fd-flat.vmdk");
    run_matrix(
        &fx,
        &image,
        &spellings("fd-flat.vmdk"),
        &plan(&Refused, &Refused, &Refused, &Refused, &Refused),
        &[],
    );
}

#[test]
fn vmdk_extent_directory() {
    let fx = fixture();
    std::fs::create_dir(fx.disks.join("dir-extent-flat.vmdk")).unwrap();
    let image = descriptor(&fx, "dir.vmdk", "dir-extent-flat.vmdk");
    run_matrix(
        &fx,
        &image,
        &spellings("dir-extent-flat.vmdk"),
        &plan(&Refused, &Refused, &Refused, &Refused, &Refused),
        &[],
    );
}

#[test]
fn vmdk_extent_dotdot_leaving_the_folder() {
    let fx = fixture();
    write_extent(&fx.root.join("escaped-extent-flat.vmdk"));
    let name = "../../escaped-extent-flat.vmdk";
    let image = descriptor(&fx, "dotdot.vmdk", name);
    let ok = content(extent_bytes());
    run_matrix(
        &fx,
        &image,
        &spellings(name),
        &plan(&ok, &Refused, &ok, &ok, &Refused),
        &[],
    );
}

#[test]
fn vmdk_extent_symlink_leading_out_of_the_folder() {
    let fx = fixture();
    let real = fx.outside.join("real-extent-flat.vmdk");
    write_extent(&real);
    // One link with an absolute target, one with a relative target that climbs out.
    std::os::unix::fs::symlink(&real, fx.disks.join("abslink-extent-flat.vmdk")).unwrap();
    std::os::unix::fs::symlink(
        "../../outside/real-extent-flat.vmdk",
        fx.disks.join("rellink-extent-flat.vmdk"),
    )
    .unwrap();
    let ok = content(extent_bytes());
    let mut problems = Vec::new();
    for link in ["abslink-extent-flat.vmdk", "rellink-extent-flat.vmdk"] {
        let image = descriptor(&fx, &link.replace("-extent-flat", ""), link);
        problems.extend(matrix_problems(
            &fx,
            &image,
            &spellings(link),
            &plan(&ok, &Refused, &ok, &ok, &Refused),
            &[],
            &[],
        ));
    }
    assert_none(problems);
}

#[test]
fn vmdk_extent_sibling_and_subfolder_files_allowed_in_every_mode() {
    let fx = fixture();
    write_extent(&fx.disks.join("disk-flat.vmdk"));
    std::fs::create_dir(fx.disks.join("sub")).unwrap();
    write_extent(&fx.disks.join("sub/x-flat.vmdk"));
    let ok = content(extent_bytes());
    let mut problems = Vec::new();
    for (image, extent) in [
        ("disk.vmdk", "disk-flat.vmdk"),
        ("x.vmdk", "sub/x-flat.vmdk"),
    ] {
        let image = descriptor(&fx, image, extent);
        problems.extend(matrix_problems(
            &fx,
            &image,
            &spellings(extent),
            &plan(&ok, &ok, &ok, &ok, &ok),
            &[],
            &[],
        ));
    }
    assert_none(problems);
}

/// A symlink that stays inside the folder leads to a regular file inside the folder: only a
/// link that leads *out* is refused under --confine.
#[test]
fn vmdk_extent_symlink_staying_inside_the_folder_allowed() {
    let fx = fixture();
    write_extent(&fx.disks.join("real-flat.vmdk"));
    std::os::unix::fs::symlink("real-flat.vmdk", fx.disks.join("inlink-flat.vmdk")).unwrap();
    let image = descriptor(&fx, "inlink.vmdk", "inlink-flat.vmdk");
    let ok = content(extent_bytes());
    run_matrix(
        &fx,
        &image,
        &spellings("inlink-flat.vmdk"),
        &plan(&ok, &ok, &ok, &ok, &ok),
        &[],
    );
}

#[test]
fn vmdk_extent_secret_file_refused_under_confine_without_quoting_it() {
    let fx = fixture();
    let secret = fx.outside.join("secret");
    let text = "SECRET-CONTENTS-d41d8cd98f00b204\nline2-of-the-secret\n";
    std::fs::write(&secret, text).unwrap();
    let image = descriptor(&fx, "secret.vmdk", s(&secret));
    let env = [(SECRET_VAR, SECRET)];
    for cmd in ["convert", "info"] {
        let out = fx.out.join("secret.raw");
        let mut args = vec![cmd, "--confine"];
        if cmd == "convert" {
            args.extend(["-O", "raw", s(&image), s(&out)]);
        } else {
            args.push(s(&image));
        }
        let o = run_env(&args, &env);
        if let Some(p) = refusal_problem(
            &o,
            1,
            "secret.vmdk",
            &[s(&secret)],
            &["SECRET-CONTENTS", "line2-of-the-secret", SECRET],
        ) {
            panic!("{cmd}: {p}");
        }
        assert!(!out.exists(), "a refused convert left an output");
    }
}

// ---------------------------------------------------------------------------------------
// Differencing VHDs whose parent locators name the file under test

/// A differencing child made against a real parent, before its locators are rewritten.
struct VhdChain {
    pristine: PathBuf,
    /// The content read through the parent.
    followed: Expect,
    /// The content of the child alone (what it leaves to its parent reads as zeros).
    alone: Expect,
}

/// Makes a parent VHD at `parent_at` (valid, with data in PARENT_REGIONS) and a child against
/// it with data of its own at the start. With `keep_parent` false the parent is deleted
/// afterwards (the child's locators will name something else).
fn vhd_chain(fx: &Fixture, parent_at: &Path, keep_parent: bool) -> VhdChain {
    let parent_raw = fx.scratch.join("parent.raw");
    common::make_raw(&parent_raw, SIZE, &PARENT_REGIONS);
    run(&["convert", "-O", "vhd", s(&parent_raw), s(parent_at)]).ok();
    let own = common::pseudo_random(CHILD_OWN, CHILD_SEED);
    let mut followed = raw_bytes(SIZE, &PARENT_REGIONS);
    followed[..CHILD_OWN].copy_from_slice(&own);
    let child_raw = fx.scratch.join("child.raw");
    std::fs::write(&child_raw, &followed).unwrap();
    let pristine = fx.scratch.join("child-pristine.vhd");
    run(&[
        "convert",
        "-O",
        "vhd",
        "-B",
        s(parent_at),
        s(&child_raw),
        s(&pristine),
    ])
    .ok();
    if !keep_parent {
        std::fs::remove_file(parent_at).unwrap();
    }
    let mut alone = vec![0u8; SIZE as usize];
    alone[..CHILD_OWN].copy_from_slice(&own);
    VhdChain {
        pristine,
        followed: content(followed),
        alone: content(alone),
    }
}

fn style_label(style: LocatorStyle) -> &'static str {
    match style {
        LocatorStyle::Windows => "win",
        LocatorStyle::WindowsBoth => "win2",
        LocatorStyle::Mac => "mac",
    }
}

/// The styles a name can be stored in: absolute names in W2ku or MacX, relative ones in
/// W2ru, W2ru + W2ku (as Hyper-V writes them) or MacX.
fn styles_for(name: &str) -> Vec<LocatorStyle> {
    if name.starts_with('/') {
        vec![LocatorStyle::Windows, LocatorStyle::Mac]
    } else {
        vec![
            LocatorStyle::Windows,
            LocatorStyle::WindowsBoth,
            LocatorStyle::Mac,
        ]
    }
}

/// A copy of the chain's child in the image folder whose locators (and unicode parent name)
/// name `name` in `style`.
fn vhd_child(
    fx: &Fixture,
    chain: &VhdChain,
    tag: &str,
    name: &str,
    style: LocatorStyle,
) -> PathBuf {
    let child = fx
        .disks
        .join(format!("{tag}-child-{}.vhd", style_label(style)));
    std::fs::copy(&chain.pristine, &child).unwrap();
    rewrite_vhd_parent(&child, &locators_for(name, style, &fx.disks), name);
    child
}

/// Runs the matrix for a child naming `name` in every style.
fn vhd_matrix(fx: &Fixture, chain: &VhdChain, tag: &str, name: &str, plan: &[(Mode, Expect)]) {
    let mut problems = Vec::new();
    for style in styles_for(name) {
        let child = vhd_child(fx, chain, tag, name, style);
        problems.extend(parent_matrix_problems(fx, &child, &spellings(name), plan));
    }
    assert_none(problems);
}

#[test]
fn vhd_parent_absolute_path_outside_the_folder() {
    let fx = fixture();
    let parent = fx.outside.join("abs-parent.vhd");
    let chain = vhd_chain(&fx, &parent, true);
    let (f, a) = (&chain.followed, &chain.alone);
    vhd_matrix(&fx, &chain, "abs", s(&parent), &plan(f, &Refused, a, f, a));
}

#[test]
fn vhd_parent_dev_zero() {
    let fx = fixture();
    let chain = vhd_chain(&fx, &fx.scratch.join("gone.vhd"), false);
    let a = &chain.alone;
    // With --allow-devices /dev/zero may be opened, but it is no VHD: an error, not a hang.
    vhd_matrix(
        &fx,
        &chain,
        "devzero",
        "/dev/zero",
        &plan(&Refused, &Refused, a, &Fails, a),
    );
}

#[test]
fn vhd_parent_fifo() {
    let fx = fixture();
    let chain = vhd_chain(&fx, &fx.scratch.join("gone.vhd"), false);
    mkfifo(&fx.disks.join("fifo-parent.vhd"));
    let a = &chain.alone;
    vhd_matrix(
        &fx,
        &chain,
        "fifo",
        "fifo-parent.vhd",
        &plan(&Refused, &Refused, a, &Refused, a),
    );
}

#[test]
fn vhd_parent_proc_self_environ() {
    let fx = fixture();
    let chain = vhd_chain(&fx, &fx.scratch.join("gone.vhd"), false);
    let a = &chain.alone;
    vhd_matrix(
        &fx,
        &chain,
        "environ",
        "/proc/self/environ",
        &plan(&Refused, &Refused, a, &Refused, a),
    );
}

#[test]
fn vhd_parent_directory() {
    let fx = fixture();
    let chain = vhd_chain(&fx, &fx.scratch.join("gone.vhd"), false);
    std::fs::create_dir(fx.disks.join("dir-parent.vhd")).unwrap();
    let a = &chain.alone;
    vhd_matrix(
        &fx,
        &chain,
        "dir",
        "dir-parent.vhd",
        &plan(&Refused, &Refused, a, &Refused, a),
    );
}

#[test]
fn vhd_parent_dotdot_leaving_the_folder() {
    let fx = fixture();
    let chain = vhd_chain(&fx, &fx.root.join("escaped-parent.vhd"), true);
    let (f, a) = (&chain.followed, &chain.alone);
    vhd_matrix(
        &fx,
        &chain,
        "dotdot",
        "../../escaped-parent.vhd",
        &plan(f, &Refused, a, f, a),
    );
}

#[test]
fn vhd_parent_symlink_leading_out_of_the_folder() {
    let fx = fixture();
    let real = fx.outside.join("real-parent.vhd");
    let chain = vhd_chain(&fx, &real, true);
    std::os::unix::fs::symlink(&real, fx.disks.join("link-parent.vhd")).unwrap();
    let (f, a) = (&chain.followed, &chain.alone);
    vhd_matrix(
        &fx,
        &chain,
        "symlink",
        "link-parent.vhd",
        &plan(f, &Refused, a, f, a),
    );
}

#[test]
fn vhd_parent_sibling_allowed_in_every_mode() {
    let fx = fixture();
    let chain = vhd_chain(&fx, &fx.disks.join("sibling-parent.vhd"), true);
    let (f, a) = (&chain.followed, &chain.alone);
    vhd_matrix(
        &fx,
        &chain,
        "sibling",
        "sibling-parent.vhd",
        &plan(f, f, a, f, a),
    );
}

// ---------------------------------------------------------------------------------------
// --no-backing: the stored name is still shown, the parent is never opened

fn info_json(args: &[&str]) -> Value {
    let o = run(args);
    o.ok();
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.describe()))
}

/// The paths in the "opened-files" key of the top-level object (of every object, for the
/// array `--backing-chain` prints), canonicalised where they exist.
fn opened_files(v: &Value) -> Vec<PathBuf> {
    let objects: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        _ => vec![v],
    };
    let mut out = Vec::new();
    for o in objects {
        let list = o
            .get("opened-files")
            .unwrap_or_else(|| panic!("no \"opened-files\" key in {o:#}"))
            .as_array()
            .unwrap_or_else(|| panic!("\"opened-files\" is not an array in {o:#}"));
        for p in list {
            let p = PathBuf::from(p.as_str().expect("opened-files holds strings"));
            let p = p.canonicalize().unwrap_or(p);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn canon(p: &Path) -> PathBuf {
    p.canonicalize().unwrap()
}

#[test]
fn vhd_no_backing_info_shows_the_stored_parent_name_without_opening_it() {
    let fx = fixture();
    let chain = vhd_chain(&fx, &fx.scratch.join("gone.vhd"), false);
    mkfifo(&fx.disks.join("fifo-parent.vhd"));
    for name in ["/dev/zero", "fifo-parent.vhd", "missing-parent.vhd"] {
        let tag = name.trim_start_matches('/').replace('/', "-");
        let child = vhd_child(&fx, &chain, &tag, name, LocatorStyle::Windows);
        let v = info_json(&["info", "--no-backing", "--output", "json", s(&child)]);
        let backing = v["backing-filename"].as_str().unwrap_or_default();
        assert!(
            spellings(name)
                .iter()
                .any(|sp| backing.contains(sp.as_str())),
            "{name}: backing-filename is {backing:?}"
        );
        let files = opened_files(&v);
        assert_eq!(
            files,
            vec![canon(&child)],
            "{name}: only the child is opened"
        );
        let o = run(&["info", "--no-backing", s(&child)]);
        o.ok();
        assert!(
            o.stdout.contains(&name.replace('/', "\\")) || o.stdout.contains(name),
            "{name}: human info does not show the stored parent name: {}",
            o.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------
// VMDK delta disks whose parentFileNameHint names the file under test

/// A parent VMDK at `at` with data in PARENT_REGIONS.
fn vmdk_parent(fx: &Fixture, at: &Path) {
    let parent_raw = fx.scratch.join("vparent.raw");
    common::make_raw(&parent_raw, SIZE, &PARENT_REGIONS);
    run(&["convert", "-O", "vmdk", s(&parent_raw), s(at)]).ok();
}

/// An empty monolithicSparse child of `parent` in the image folder, named `child_name`.
fn vmdk_delta(fx: &Fixture, parent: &Path, child_name: &str) -> PathBuf {
    let child = fx.disks.join(child_name);
    run(&[
        "create",
        "-f",
        "vmdk",
        "-F",
        "vmdk",
        "-b",
        s(parent),
        s(&child),
    ])
    .ok();
    child
}

#[test]
fn vmdk_parent_hint_through_the_gate() {
    let fx = fixture();
    let parent = fx.outside.join("vparent.vmdk");
    vmdk_parent(&fx, &parent);
    let followed = content(raw_bytes(SIZE, &PARENT_REGIONS));
    let alone = content(vec![0; SIZE as usize]);
    let (f, a) = (&followed, &alone);
    let mut problems = Vec::new();
    // Absolute path to a real parent: followed by default, refused under --confine.
    let child = vmdk_delta(&fx, &parent, "abs-delta.vmdk");
    set_vmdk_parent_hint(&child, s(&parent));
    problems.extend(parent_matrix_problems(
        &fx,
        &child,
        &spellings(s(&parent)),
        &plan(f, &Refused, a, f, a),
    ));
    // Names that are never followed; with --no-backing they are never even looked at.
    mkfifo(&fx.disks.join("fifo-vparent.vmdk"));
    for (tag, name) in [
        ("devzero", "/dev/zero"),
        ("fifo", "fifo-vparent.vmdk"),
        ("environ", "/proc/self/environ"),
    ] {
        let child = vmdk_delta(&fx, &parent, &format!("{tag}-delta.vmdk"));
        set_vmdk_parent_hint(&child, name);
        problems.extend(parent_matrix_problems(
            &fx,
            &child,
            &spellings(name),
            &plan(&Refused, &Refused, a, &Refused, a),
        ));
        let o = run(&["info", "--no-backing", "--output", "json", s(&child)]);
        let backing = serde_json::from_str::<Value>(&o.stdout)
            .ok()
            .and_then(|v| v["backing-filename"].as_str().map(str::to_string));
        if o.code != Some(0) || backing.as_deref() != Some(name) {
            problems.push(format!(
                "{name}: info --no-backing does not show the stored parent name: {}",
                o.describe()
            ));
        }
    }
    assert_none(problems);
}

// ---------------------------------------------------------------------------------------
// info names every file an image opened

#[test]
fn info_lists_opened_files_of_a_descriptor_and_its_extent() {
    let fx = fixture();
    let ext = fx.disks.join("disk-flat.vmdk");
    write_extent(&ext);
    let image = descriptor(&fx, "disk.vmdk", "disk-flat.vmdk");
    let v = info_json(&["info", "--output", "json", s(&image)]);
    let files = opened_files(&v);
    for want in [canon(&image), canon(&ext)] {
        assert!(
            files.contains(&want),
            "opened-files {files:?} lacks {}",
            want.display()
        );
    }
    let o = run(&["info", s(&image)]);
    o.ok();
    let from = o
        .stdout
        .find("\nopened files:")
        .map(|i| i + 1)
        .or_else(|| o.stdout.starts_with("opened files:").then_some(0))
        .unwrap_or_else(|| panic!("no line starting 'opened files:': {}", o.describe()));
    let rest = &o.stdout[from..];
    assert!(
        rest.contains("disk.vmdk") && rest.contains("disk-flat.vmdk"),
        "'opened files:' does not name both files: {}",
        o.describe()
    );
}

#[test]
fn info_lists_opened_files_of_a_followed_vhd_chain() {
    let fx = fixture();
    let parent = fx.outside.join("chain-parent.vhd");
    let chain = vhd_chain(&fx, &parent, true);
    let child = vhd_child(&fx, &chain, "chain", s(&parent), LocatorStyle::Windows);
    // Plain info opens the child alone (as qemu-img's) and lists it.
    let v = info_json(&["info", "--output", "json", s(&child)]);
    assert!(
        opened_files(&v).contains(&canon(&child)),
        "opened-files {:?} lacks the child",
        opened_files(&v)
    );
    // --backing-chain follows the parent: both files are named.
    let v = info_json(&["info", "--backing-chain", "--output", "json", s(&child)]);
    let files = opened_files(&v);
    for want in [canon(&child), canon(&parent)] {
        assert!(
            files.contains(&want),
            "opened-files {files:?} lacks {}",
            want.display()
        );
    }
    let o = run(&["info", "--backing-chain", s(&child)]);
    o.ok();
    let from = o
        .stdout
        .lines()
        .position(|l| l.starts_with("opened files:"))
        .unwrap_or_else(|| panic!("no line starting 'opened files:': {}", o.describe()));
    let rest: Vec<&str> = o.stdout.lines().skip(from).collect();
    assert!(
        rest.join("\n").contains("chain-parent.vhd"),
        "'opened files:' does not name the parent: {}",
        o.describe()
    );
    // --no-backing: the parent is not opened, so not listed.
    let v = info_json(&[
        "info",
        "--backing-chain",
        "--no-backing",
        "--output",
        "json",
        s(&child),
    ]);
    assert_eq!(opened_files(&v), vec![canon(&child)]);
}

// ---------------------------------------------------------------------------------------
// Every command that opens images takes the options and passes the gate

const COMMANDS: [&str; 5] = ["info", "convert", "compare", "map", "check"];

fn command_args<'a>(cmd: &'a str, flags: &[&'a str], image: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut args = vec![cmd];
    args.extend_from_slice(flags);
    match cmd {
        "convert" => args.extend(["-O", "raw", image, out]),
        "compare" => args.extend([image, image]),
        _ => args.push(image),
    }
    args
}

#[test]
fn every_command_accepts_the_gate_options() {
    let fx = fixture();
    write_extent(&fx.disks.join("disk-flat.vmdk"));
    let vmdk = descriptor(&fx, "disk.vmdk", "disk-flat.vmdk");
    let raw = fx.scratch.join("plain.raw");
    common::make_raw(&raw, SIZE, &EXTENT_REGIONS);
    let vhd = fx.disks.join("plain.vhd");
    run(&["convert", "-O", "vhd", s(&raw), s(&vhd)]).ok();
    let out = fx.out.join("x.raw");
    let mut problems = Vec::new();
    for image in [&vmdk, &vhd] {
        for cmd in COMMANDS {
            for flags in [
                &["--confine"][..],
                &["--no-backing"],
                &["--allow-devices"],
                &["--confine", "--no-backing"],
            ] {
                let _ = std::fs::remove_file(&out);
                let o = run(&command_args(cmd, flags, s(image), s(&out)));
                if o.code != Some(0) {
                    problems.push(o.describe());
                }
            }
        }
    }
    assert_none(problems);
}

#[test]
fn every_command_refuses_a_dev_zero_extent() {
    let fx = fixture();
    let image = descriptor(&fx, "devzero.vmdk", "/dev/zero");
    let out = fx.out.join("x.raw");
    let mut problems = Vec::new();
    for cmd in COMMANDS {
        // compare reports errors as 2 (1 means "different"); the others as 1.
        let code = if cmd == "compare" { 2 } else { 1 };
        let o = run(&command_args(cmd, &[], s(&image), s(&out)));
        problems.extend(refusal_problem(
            &o,
            code,
            "devzero.vmdk",
            &["/dev/zero"],
            &[],
        ));
        if out.exists() {
            problems.push(format!("{cmd}: a refused convert left an output"));
        }
    }
    assert_none(problems);
}

// ---------------------------------------------------------------------------------------
// VDI parents, found by a search of the folders around the image: the gate decides on each
// folder before it is listed

/// A differencing VDI made against a parent in the image folder; returns the child.
fn vdi_child(fx: &Fixture) -> PathBuf {
    let raw = fx.scratch.join("vdi.raw");
    common::make_raw(&raw, SIZE, &PARENT_REGIONS);
    let parent = fx.disks.join("parent.vdi");
    run(&["convert", "-O", "vdi", s(&raw), s(&parent)]).ok();
    let child = fx.disks.join("child.vdi");
    run(&[
        "convert",
        "-O",
        "vdi",
        "-B",
        s(&parent),
        "-F",
        "vdi",
        s(&raw),
        s(&child),
    ])
    .ok();
    child
}

/// The path each call in an strace log (`-e trace=file,...`) was made on: its first quoted
/// argument. A `resumed` half is skipped: what it quotes is a result (a link's target).
fn traced_paths(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.contains("resumed>"))
        .filter_map(|l| {
            let (_, rest) = l.split_once('"')?;
            Some(rest.split_once('"')?.0.to_string())
        })
        .collect()
}

#[test]
fn vdi_parent_search_never_lists_a_folder_the_gate_refuses() {
    let test = "vdi_parent_search_never_lists_a_folder_the_gate_refuses";
    if !common::have_strace(test) {
        return;
    }
    let fx = fixture();
    let child = vdi_child(&fx);
    let log = fx.scratch.join("strace.log");
    let out = fx.out.join("x.raw");
    let mut problems = Vec::new();
    // The image reached through a descriptor: its folder is /dev/fd or /proc/self/fd, whose
    // listing (and its parent's, /proc/self) is what the process holds open.
    for (image, folder) in [
        ("/dev/fd/3", "/dev/fd"),
        ("/proc/self/fd/3", "/proc/self/fd"),
    ] {
        for flags in [&[][..], &["--confine"], &["--allow-devices"]] {
            for cmd in ["info", "convert"] {
                let _ = std::fs::remove_file(&out);
                let mut args = vec![cmd];
                args.extend(flags);
                args.push(image);
                if cmd == "convert" {
                    args.push(s(&out));
                }
                let o = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(r#"log=$1 child=$2; shift 2; exec strace -f -qq -o "$log" -e trace=file,readlink,readlinkat,getdents64 "$@" 3<"$child""#)
                    .args(["sh", s(&log), s(&child), env!("CARGO_BIN_EXE_diskferry")])
                    .args(&args)
                    .output()
                    .unwrap();
                let (code, _, err) = common::decode(o);
                let what = format!("diskferry {}", args.join(" "));
                let expected = if cmd == "info" { 0 } else { 1 };
                if code != expected {
                    problems.push(format!("{what}: exit {code}, not {expected}: {err}"));
                }
                if cmd == "convert" && !err.contains("refused: it leads through") {
                    problems.push(format!(
                        "{what}: the error does not say the gate kept the search out: {err}"
                    ));
                }
                let text = std::fs::read_to_string(&log).unwrap();
                // The folder's own name may be read as a link (with --allow-devices, /dev/fd
                // is how the gate learns the way leads on to /proc); nothing in it may be.
                for p in traced_paths(&text) {
                    if p != image && p.starts_with(&format!("{folder}/")) {
                        problems.push(format!("{what}: looked at {p} (strace: {})", s(&log)));
                    }
                }
            }
        }
    }
    assert_none(problems);
}

// ---------------------------------------------------------------------------------------
// info without --backing-chain shows a parent it does not open: the names it looks at to
// show the parent's path pass the gate first

/// Runs diskferry `args` under strace; returns the outcome and the paths of its file calls.
fn traced_run(log: &Path, args: &[&str]) -> ((i32, String, String), Vec<String>) {
    let o = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", s(log)])
        .args(["-e", "trace=file,readlink,readlinkat,getdents64"])
        .arg(env!("CARGO_BIN_EXE_diskferry"))
        .args(args)
        .output()
        .unwrap();
    let paths = traced_paths(&std::fs::read_to_string(log).unwrap());
    (common::decode(o), paths)
}

#[test]
fn info_never_looks_at_a_parent_name_the_gate_refuses() {
    let test = "info_never_looks_at_a_parent_name_the_gate_refuses";
    if !common::have_strace(test) {
        return;
    }
    let fx = fixture();
    let log = fx.scratch.join("strace.log");
    let refused = ["/proc/self/cwd/", "proc/self/environ"];
    let mut problems = Vec::new();
    // A VDI whose machine files give its parent's UUID refused places; the real parent is
    // found beside it by the scan.
    let child = vdi_child(&fx);
    let parent = fx.disks.join("parent.vdi");
    let meta = info_json(&["info", "--output", "json", s(&parent)]);
    let uuid = meta["format-specific"]["data"]["uuid"].as_str().unwrap();
    let escape = format!("{}proc/self/environ", "../".repeat(32));
    for (file, location) in [
        ("a.vbox", "/proc/self/cwd/parent.vdi"),
        ("b.vbox", escape.as_str()),
    ] {
        std::fs::write(
            fx.disks.join(file),
            format!(
                r#"<?xml version="1.0"?>
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{{0b1c2d3e-0000-4000-8000-00000000000{}}}" name="vm">
    <MediaRegistry><HardDisks>
      <HardDisk uuid="{{{uuid}}}" location="{location}" format="VDI" type="Normal"/>
    </HardDisks></MediaRegistry>
  </Machine>
</VirtualBox>
"#,
                file.len()
            ),
        )
        .unwrap();
    }
    // A VHD whose locator names /proc/self/environ.
    let chain = vhd_chain(&fx, &fx.scratch.join("gone.vhd"), false);
    let vhd = vhd_child(
        &fx,
        &chain,
        "environ",
        "/proc/self/environ",
        LocatorStyle::Windows,
    );
    for (image, shown) in [(&child, Some(parent.clone())), (&vhd, None)] {
        for flags in [&[][..], &["--confine"], &["--allow-devices"]] {
            let mut args = vec!["info", "--output", "json"];
            args.extend(flags);
            args.push(s(image));
            let what = format!("diskferry {}", args.join(" "));
            let ((code, stdout, err), paths) = traced_run(&log, &args);
            if code != 0 {
                problems.push(format!("{what}: exit {code}: {err}"));
                continue;
            }
            for p in paths {
                if refused.iter().any(|r| p.contains(r)) {
                    problems.push(format!("{what}: looked at {p}"));
                }
            }
            let v: Value = serde_json::from_str(&stdout).unwrap();
            if let Some(shown) = &shown {
                let full = v["full-backing-filename"].as_str().unwrap_or_default();
                if Path::new(full) != shown.as_path() {
                    problems.push(format!(
                        "{what}: full-backing-filename is {full:?}, not the parent beside it"
                    ));
                }
            }
        }
    }
    assert_none(problems);
}
