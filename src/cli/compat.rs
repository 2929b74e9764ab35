//! Everything the command line does differently to be a drop-in for qemu-img: the
//! personality chosen by the program's name, the progress lines scripts parse, the
//! `Formatting ...` line of `create`, qemu-img's driver names.
//!
//! Scripts (Proxmox's `qm importdisk`, oVirt's vdsm, KubeVirt's CDI, OpenStack) run `qemu-img`
//! and parse what it prints; `ln -s diskferry qemu-img` must keep them working. Invoked as
//! `diskferry`, the tool keeps its own defaults where they are better for a person.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

/// Which tool the command line behaves as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    /// Invoked as `diskferry`: its own messages and defaults.
    Diskferry,
    /// Invoked through a name starting with `qemu-img`: qemu-img's messages, names and
    /// version line.
    QemuImg,
}

static PERSONALITY: OnceLock<Personality> = OnceLock::new();

/// The version of qemu-img whose behaviour the qemu-img personality follows.
pub const QEMU_VERSION: &str = "10.0.2";

impl Personality {
    /// The personality for a program invoked as `argv0` (a path; only its file name counts).
    pub fn from_argv0(argv0: &std::ffi::OsStr) -> Personality {
        let name = std::path::Path::new(argv0)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("qemu-img") {
            Personality::QemuImg
        } else {
            Personality::Diskferry
        }
    }

    /// Sets the process's personality (once, at start).
    pub fn install(self) {
        let _ = PERSONALITY.set(self);
    }

    /// The process's personality.
    pub fn current() -> Personality {
        *PERSONALITY.get().unwrap_or(&Personality::Diskferry)
    }

    /// The prefix of error and warning lines.
    pub fn program(self) -> &'static str {
        match self {
            Personality::Diskferry => "diskferry",
            Personality::QemuImg => "qemu-img",
        }
    }

    /// What `--version` prints.
    pub fn version_text(self) -> String {
        let ours = env!("CARGO_PKG_VERSION");
        match self {
            Personality::Diskferry => format!("diskferry {ours}\n"),
            // Version checks (cinder's, vdsm's) parse the first line's "qemu-img version X.Y.Z".
            Personality::QemuImg => format!(
                "qemu-img version {QEMU_VERSION} (diskferry {ours})\nCopyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n"
            ),
        }
    }
}

/// qemu-img's name for a format: its block driver's name, which JSON parsers (CDI,
/// oslo.utils, vdsm) compare against.
pub fn qemu_driver_name(format: &str) -> &str {
    match format {
        "vhd" => "vpc",
        other => other,
    }
}

/// `info` as qemu-img reports it: its driver names, a qcow2's external data file left out
/// of its children and disk size, and only the format-specific facts it
/// prints (oslo.utils' QemuImgInfo hands the whole `format-specific` object to glance, cinder
/// and nova, which compare it): none for VHD, VHDX, VDI, QCOW and raw; for VMDK its four keys.
/// diskferry's own keys (`opened-files`, `format-guessed`) stay: parsers ignore keys they
/// do not know, and the human lines they are printed on come after qemu-img's.
pub fn qemu_info(info: &mut diskferry::info::ImageInfo) {
    let qemu_keys: Option<&[&str]> = match info.format.as_str() {
        "qcow2" => None,
        "vmdk" => Some(&["cid", "parent-cid", "create-type", "extents"]),
        _ => Some(&[]),
    };
    if let (Some(keys), Some(fs)) = (qemu_keys, info.format_specific.as_mut()) {
        fs.data.retain(|k, _| keys.contains(&k.as_str()));
        if fs.data.is_empty() {
            info.format_specific = None;
        }
    }
    // qemu-img 10 never opens a qcow2's external data file for info (since the fix for
    // CVE-2024-4467, so that info of an untrusted image touches no file it names): it lists
    // no `data-file` child and its disk size is the qcow2 file's alone. Scripts compare both.
    if let Some(i) = info.children.iter().position(|c| c.name == "data-file") {
        let data_file = info.children.remove(i);
        info.actual_size = info.actual_size.saturating_sub(data_file.info.actual_size);
    }
    // Nor does it find a data file missing: it never looks.
    info.absent_files.clear();
    info.format = qemu_driver_name(&info.format).to_string();
    if let Some(f) = &info.backing_filename_format {
        info.backing_filename_format = Some(qemu_driver_name(f).to_string());
    }
}

/// `--object` definitions: accepted when they are of a kind qemu-img scripts pass for
/// encrypted images (`secret`, `secret_keyring`), which diskferry refuses anyway, so that the
/// refusal names the image rather than the option; anything else is refused.
pub fn accept_objects(objects: &[String]) -> Result<(), diskferry::Error> {
    for o in objects {
        let kind = o.split(',').next().unwrap_or("").trim();
        let kind = kind.strip_prefix("qom-type=").unwrap_or(kind);
        if !matches!(kind, "secret" | "secret_keyring") {
            return Err(diskferry::Error::unsupported(format!(
                "--object {kind}: only secret objects are accepted (diskferry has no other qemu objects)"
            )));
        }
    }
    Ok(())
}

/// An image given as qemu's options (`--image-opts`): `driver=FMT,file.filename=PATH` (also
/// `filename=PATH`, and `file.driver=file`). Returns the format named by `driver` (None for
/// the protocol drivers `file` and `host_device`, which mean raw bytes of a file: detection
/// decides) and the path.
pub fn image_opts(text: &str) -> Result<(Option<String>, PathBuf), diskferry::Error> {
    let mut pairs = Vec::new();
    for part in split_opts(text) {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            diskferry::Error::invalid(format!("--image-opts: '{part}' is not key=value"))
        })?;
        pairs.push((key.trim().to_string(), value.to_string()));
    }
    opts_image(&pairs, text)
}

/// An image named by qemu's `json:` pseudo-protocol, as vdsm's `measure` and CDI name them:
/// `json:{"driver": FMT, "file": {"driver": "file", "filename": PATH}}` (nested objects or
/// dotted keys). None when `name` is an ordinary file name. The same options as
/// [`image_opts`] are understood.
pub fn json_image(
    name: &std::path::Path,
) -> Option<Result<(Option<String>, PathBuf), diskferry::Error>> {
    let text = name.to_str()?.strip_prefix("json:")?;
    let parsed = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => {
            return Some(Err(diskferry::Error::invalid(format!(
                "json: image name is not a JSON object: {text}"
            ))));
        }
    };
    fn flatten(
        prefix: &str,
        m: &serde_json::Map<String, serde_json::Value>,
        out: &mut Vec<(String, String)>,
    ) {
        for (k, v) in m {
            let key = format!("{prefix}{k}");
            match v {
                serde_json::Value::Object(inner) => flatten(&format!("{key}."), inner, out),
                serde_json::Value::String(s) => out.push((key, s.clone())),
                other => out.push((key, other.to_string())),
            }
        }
    }
    let mut pairs = Vec::new();
    flatten("", &parsed, &mut pairs);
    Some(opts_image(&pairs, text))
}

/// The format and path that qemu's block options `pairs` name (see [`image_opts`]); `text`
/// is how the user wrote them, for messages.
fn opts_image(
    pairs: &[(String, String)],
    text: &str,
) -> Result<(Option<String>, PathBuf), diskferry::Error> {
    let mut driver = None;
    let mut path = None;
    for (key, value) in pairs {
        let value = value.as_str();
        match key.as_str() {
            "driver" => driver = Some(value.to_string()),
            "file.filename" | "filename" => path = Some(PathBuf::from(value)),
            "file.driver" if matches!(value, "file" | "host_device") => {}
            // Cache and locking knobs change nothing in what is read.
            "cache.direct" | "cache.no-flush" | "file.locking" | "file.aio" | "force-share" => {}
            other => {
                return Err(diskferry::Error::unsupported(format!(
                    "--image-opts: option '{other}' is not supported (diskferry takes driver=FMT and file.filename=PATH)"
                )));
            }
        }
    }
    let path = path.ok_or_else(|| {
        diskferry::Error::invalid(format!("--image-opts: no file.filename in '{text}'"))
    })?;
    let driver = match driver.as_deref() {
        None | Some("file") | Some("host_device") => None,
        Some(d) => Some(d.to_string()),
    };
    Ok((driver, path))
}

/// What `create -o` may say in place of `-b`, `-F` and the size argument (qemu-img treats
/// `-b` as `-o backing_file` and the size argument as `-o size`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CreateExtras {
    /// `backing_file=`.
    pub backing_file: Option<String>,
    /// `backing_fmt=`.
    pub backing_fmt: Option<String>,
    /// `size=`.
    pub size: Option<String>,
}

/// Takes `backing_file`, `backing_fmt` and `size` out of a `create -o` list: the rest of the
/// list (commas in values escaped again) and what was taken.
pub fn lift_create_extras(options: &str) -> (String, CreateExtras) {
    let mut extras = CreateExtras::default();
    let mut rest = Vec::new();
    for part in split_opts(options) {
        match part.split_once('=') {
            Some(("backing_file", v)) => extras.backing_file = Some(v.to_string()),
            Some(("backing_fmt", v)) => extras.backing_fmt = Some(v.to_string()),
            Some(("size", v)) => extras.size = Some(v.to_string()),
            _ => rest.push(part.replace(',', ",,")),
        }
    }
    (rest.join(","), extras)
}

/// The virtual size `create` gives a new image of `format` asked to hold `size` bytes:
/// rounded up to whole 512-byte sectors, as qemu-img rounds every new image (the image
/// formats count their size in sectors), except a raw file under the diskferry name, which
/// keeps the exact size asked for.
pub fn create_size(format: &str, size: u64) -> u64 {
    if format == "raw" && Personality::current() != Personality::QemuImg {
        size
    } else {
        size.div_ceil(512).saturating_mul(512)
    }
}

/// qemu's option list split at commas, where `,,` is a literal comma (qemu's escaping).
fn split_opts(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().expect("never empty").push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// True when qemu-img 10 can check images of `format` (its driver has a check); for the
/// others it says "This image format does not support checks" and exits with 63, which
/// scripts (vdsm, cinder) treat as "nothing to check". Checked with qemu-img 10.0.2.
pub fn qemu_checks(format: &str) -> bool {
    matches!(format, "qcow2" | "vmdk" | "vhdx" | "vdi")
}

/// Whether qemu-img's check of `format` opens the image with its extents and backing chain
/// first, failing (exit 1) when one is missing: qcow2 and VMDK (qemu reads no differencing
/// VHDX or VDI).
pub fn qemu_opens_chain_to_check(format: &str) -> bool {
    matches!(format, "qcow2" | "vmdk")
}

/// Whether the `-o` options `options` name `key` (as `key=value` or a bare `key`).
fn option_given(options: &str, key: &str) -> bool {
    options
        .split(',')
        .any(|o| o.split('=').next().is_some_and(|k| k.trim() == key))
}

/// The `-o` options diskferry's library gets for a new image of `format` and virtual size
/// `size` (when known): the user's, plus, when invoked as qemu-img, qemu-img's defaults where
/// diskferry's differ:
/// - VHD: qemu-img rounds its size up to whole CHS geometry unless `force_size` is given,
///   while diskferry keeps the exact size (what Hyper-V and Azure want);
/// - VMDK: qemu-img's descriptor names the `ide` adapter unless `adapter_type` is given,
///   while diskferry names `lsilogic` (what ESXi and vSphere expect). Tools that do not pass
///   `adapter_type` (osbuild's vmdk stage without one) get the descriptor they got before;
/// - VHDX: qemu-img's block size grows with the disk (8 MiB up to 1 GiB), while diskferry
///   uses Hyper-V's 32 MiB; `info` shows it as the cluster size, which scripts read.
pub fn library_options(format: &str, options: &str, size: Option<u64>) -> String {
    if Personality::current() != Personality::QemuImg {
        return options.to_string();
    }
    let default = match (format, size) {
        ("vhd", _) if !option_given(options, "force_size") => Some("force_size=off".to_string()),
        ("vmdk", _) if !option_given(options, "adapter_type") => {
            Some("adapter_type=ide".to_string())
        }
        ("vhdx", Some(size)) if wants_size(format, options) => {
            Some(format!("block_size={}", qemu_vhdx_block_size(size)))
        }
        _ => None,
    };
    match default {
        Some(d) if options.trim().is_empty() => d,
        Some(d) => format!("{options},{d}"),
        None => options.to_string(),
    }
}

/// Whether [`library_options`] needs the new image's virtual size for `format` and `options`
/// (so `convert` opens its source for the size only then).
pub fn wants_size(format: &str, options: &str) -> bool {
    Personality::current() == Personality::QemuImg
        && format == "vhdx"
        && !option_given(options, "block_size")
}

/// qemu-img 10's VHDX block size for a new disk of `size` bytes when none is given (its
/// vhdx driver's choice by size).
fn qemu_vhdx_block_size(size: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match size {
        s if s > 32 * 1024 * GIB => 64 * MIB,
        s if s > 100 * GIB => 32 * MIB,
        s if s > GIB => 16 * MIB,
        _ => 8 * MIB,
    }
}

/// Whether `convert -c` into `format` with `-o` `options` compresses what it writes. Invoked
/// as diskferry, `-c` means compressed output, and a VMDK is streamOptimized unless another
/// subformat is named (which is then refused). qemu-img 10 accepts `-c` for any sparse VMDK
/// and writes monolithicSparse and twoGbMaxExtentSparse grains uncompressed (only a
/// streamOptimized extent stores compressed grains); osbuild's vmdk stage passes `-c` by
/// default, so the qemu-img personality does the same rather than change the subformat.
pub fn convert_compresses(format: &str, options: &str, compress: bool) -> bool {
    if !compress || format != "vmdk" || Personality::current() != Personality::QemuImg {
        return compress;
    }
    let subformat = options
        .split(',')
        .filter_map(|o| o.split_once('='))
        .find(|(k, _)| k.trim() == "subformat")
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    // Flat subformats keep -c, and so its refusal, as qemu-img refuses them too.
    !matches!(
        subformat.as_deref(),
        None | Some("monolithicsparse" | "twogbmaxextentsparse")
    )
}

/// qemu-img 10's refusal of `create -b` without `-F`: it no longer guesses the backing file's
/// format for a new image (a guessed raw backing file is a security hole). Invoked as
/// diskferry, the format is detected as before.
pub fn require_backing_format(
    backing: Option<&std::path::Path>,
    backing_format: Option<&str>,
) -> Result<(), diskferry::Error> {
    if Personality::current() == Personality::QemuImg
        && backing.is_some()
        && backing_format.is_none()
    {
        return Err(diskferry::Error::invalid(
            "Backing file specified without backing format",
        ));
    }
    Ok(())
}

/// The line qemu-img's `create` prints: `Formatting 'NAME', fmt=FMT key=value ...`, with the
/// keys qemu-img lists for the format in its order, the user's values where given (sizes in
/// bytes) and qemu-img's defaults otherwise. `options` includes `backing_file` and
/// `backing_fmt` when `-b` and `-F` were given.
pub fn formatting_line(name: &str, format: &str, size: u64, options: &str) -> String {
    let given: Vec<(String, String)> = options
        .split(',')
        .filter(|o| !o.trim().is_empty())
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (o.trim().to_string(), "on".to_string()),
        })
        .collect();
    // Each format's keys in the order qemu-img 10 prints them, with the default it prints
    // when the key is not given (None: printed only when given), and whether the value is a
    // size (printed in bytes). Checked against `qemu-img create` for each format.
    const SIZE: &str = "size";
    let table: &[(&str, Option<&str>, bool)] = match format {
        "qcow2" => &[
            ("cluster_size", Some("65536"), true),
            ("extended_l2", Some("off"), false),
            ("preallocation", None, false),
            ("compression_type", Some("zlib"), false),
            (SIZE, None, true),
            ("compat", None, false),
            ("backing_file", None, false),
            ("backing_fmt", None, false),
            ("data_file", None, false),
            ("data_file_raw", None, false),
            ("lazy_refcounts", Some("off"), false),
            ("refcount_bits", Some("16"), false),
        ],
        "vmdk" => &[
            (SIZE, None, true),
            ("adapter_type", None, false),
            ("backing_file", None, false),
            ("backing_fmt", None, false),
            ("compat6", Some("off"), false),
            ("hwversion", Some("undefined"), false),
            ("toolsversion", None, false),
            ("subformat", None, false),
            ("zeroed_grain", None, false),
        ],
        "vhd" => &[
            (SIZE, None, true),
            ("subformat", None, false),
            ("force_size", None, false),
        ],
        "vhdx" => &[
            (SIZE, None, true),
            ("log_size", Some("1048576"), true),
            ("block_size", Some("0"), true),
            ("subformat", None, false),
            ("block_state_zero", None, false),
        ],
        "vdi" => &[(SIZE, None, true), ("static", Some("off"), false)],
        "qcow" => &[
            (SIZE, None, true),
            ("backing_file", None, false),
            ("backing_fmt", None, false),
        ],
        _ => &[(SIZE, None, true), ("preallocation", None, false)],
    };
    let mut line = format!("Formatting '{name}', fmt={}", qemu_driver_name(format));
    let mut printed = Vec::new();
    for (key, default, is_size) in table {
        let value = if *key == SIZE {
            Some(size.to_string())
        } else {
            given
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .or_else(|| default.map(str::to_string))
        };
        if let Some(v) = value {
            let v = if *is_size {
                diskferry::size::parse_size(&v)
                    .map(|n| n.to_string())
                    .unwrap_or(v)
            } else {
                v
            };
            line.push_str(&format!(" {key}={v}"));
            printed.push(*key);
        }
    }
    // Our own keys (qemu-img has no such option) follow, in the order given.
    for (k, v) in &given {
        if !printed.contains(&k.as_str()) {
            line.push_str(&format!(" {k}={v}"));
            printed.push(k);
        }
    }
    line
}

/// Progress of a long command, shown the way the caller can read it: a bar on a terminal,
/// qemu-img's `    (NN.NN/100%)\r` lines on standard output when that is a pipe (Proxmox,
/// vdsm and CDI parse them), nothing when not asked for.
pub enum Progress {
    /// Not shown.
    Hidden,
    /// indicatif's bar on standard error.
    Bar(indicatif::ProgressBar, Instant),
    /// qemu-img's lines on standard output: the last percentage printed, and when to print
    /// the next.
    Lines(f64, Step),
}

/// How far progress moves before qemu-img prints its next record (each command gives its
/// progress printer its own minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// convert and most commands: after a move of at least 1%.
    OnePercent,
    /// compare: after a move of more than 2% (qemu-img's `img_compare` asks for 2.0, and its
    /// printer waits until progress is strictly beyond the last record plus that).
    MoreThanTwoPercent,
}

impl Step {
    /// True when progress that moved `moved` percentage points since the last record earns
    /// a new one.
    fn due(self, moved: f64) -> bool {
        match self {
            Step::OnePercent => moved >= 1.0,
            Step::MoreThanTwoPercent => moved > 2.0,
        }
    }
}

impl Progress {
    /// Progress for a command run with `-p` (`enabled`) and without `-q`.
    pub fn new(enabled: bool) -> Progress {
        Progress::with_step(enabled, Step::OnePercent)
    }

    /// [`Progress::new`], with qemu-img's records printed at `step`.
    pub fn with_step(enabled: bool, step: Step) -> Progress {
        if !enabled {
            return Progress::Hidden;
        }
        if !std::io::stdout().is_terminal() {
            let p = Progress::Lines(0.0, step);
            print_line(0.0);
            return p;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{percent:>3}% [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        Progress::Bar(bar, Instant::now())
    }

    /// `done` of `total` bytes.
    pub fn set(&mut self, done: u64, total: u64) {
        match self {
            Progress::Hidden => {}
            Progress::Bar(bar, _) => {
                bar.set_length(total);
                bar.set_position(done);
            }
            Progress::Lines(last, step) => {
                let pct = if total == 0 {
                    100.0
                } else {
                    (done as f64 * 100.0 / total as f64).min(100.0)
                };
                if step.due(pct - *last) || (pct >= 100.0 && *last < 100.0) {
                    *last = pct;
                    print_line(pct);
                }
            }
        }
    }

    /// Runs `f` (which prints to standard error) without breaking the bar.
    pub fn suspend(&self, f: impl FnOnce()) {
        match self {
            Progress::Bar(bar, _) => bar.suspend(f),
            _ => f(),
        }
    }

    /// Ends the progress display after success: qemu-img's last line, or the bar cleared and
    /// (for diskferry) a one-line summary of `bytes` handled on standard error.
    pub fn finish(self, bytes: Option<u64>) {
        match self {
            Progress::Hidden => {}
            Progress::Bar(bar, started) => {
                bar.finish_and_clear();
                if let Some(bytes) = bytes
                    && Personality::current() == Personality::Diskferry
                {
                    eprintln!("{}", summary_line(bytes, started.elapsed().as_secs_f64()));
                }
            }
            Progress::Lines(last, _) => {
                if last < 100.0 {
                    print_line(100.0);
                }
                println!();
            }
        }
    }

    /// Ends the progress display where it stands (after a failure, or where the last record
    /// already says where the command ended): nothing more is printed but a clean line.
    pub fn abandon(self) {
        match self {
            Progress::Bar(bar, _) => bar.finish_and_clear(),
            Progress::Lines(..) => println!(),
            Progress::Hidden => {}
        }
    }
}

fn print_line(pct: f64) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "    ({pct:.2}/100%)\r");
    let _ = out.flush();
}

/// `diskferry: 2.00 GiB in 1.3 s (1.54 GiB/s)`.
pub fn summary_line(bytes: u64, seconds: f64) -> String {
    let rate = if seconds > 0.0 {
        bytes as f64 / seconds
    } else {
        0.0
    };
    format!(
        "diskferry: {} in {seconds:.1} s ({}/s)",
        human_bytes(bytes as f64),
        human_bytes(rate)
    )
}

fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b:.0} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_opts_name_the_driver_and_the_file() {
        let (f, p) =
            super::image_opts("driver=qcow2,file.driver=file,file.filename=/a,,b.qcow2").unwrap();
        assert_eq!(f.as_deref(), Some("qcow2"));
        assert_eq!(p, std::path::PathBuf::from("/a,b.qcow2"));
        let (f, _) = super::image_opts("driver=file,filename=x").unwrap();
        assert_eq!(f, None);
        assert!(super::image_opts("driver=qcow2").is_err());
        assert!(super::image_opts("driver=qcow2,file.filename=x,encrypt.key-secret=s").is_err());
    }

    use super::*;

    #[test]
    fn the_personality_comes_from_the_file_name() {
        use std::ffi::OsStr;
        assert_eq!(
            Personality::from_argv0(OsStr::new("/usr/bin/qemu-img")),
            Personality::QemuImg
        );
        assert_eq!(
            Personality::from_argv0(OsStr::new("qemu-img-10")),
            Personality::QemuImg
        );
        assert_eq!(
            Personality::from_argv0(OsStr::new("/opt/qemu-img/diskferry")),
            Personality::Diskferry
        );
    }

    #[test]
    fn formatting_lines_match_qemu_img_10() {
        // Printed by `qemu-img create -f FMT /tmp/x.FMT 1M` (qemu-img 10.0.2).
        assert_eq!(
            formatting_line("/tmp/x.qcow2", "qcow2", 1048576, ""),
            "Formatting '/tmp/x.qcow2', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 lazy_refcounts=off refcount_bits=16"
        );
        assert_eq!(
            formatting_line("/tmp/y.qcow2", "qcow2", 1048576, "lazy_refcounts"),
            "Formatting '/tmp/y.qcow2', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 lazy_refcounts=on refcount_bits=16"
        );
        assert_eq!(
            formatting_line("/tmp/x.vpc", "vhd", 1048576, ""),
            "Formatting '/tmp/x.vpc', fmt=vpc size=1048576"
        );
        assert_eq!(
            formatting_line("/tmp/x.vmdk", "vmdk", 1048576, ""),
            "Formatting '/tmp/x.vmdk', fmt=vmdk size=1048576 compat6=off hwversion=undefined"
        );
        assert_eq!(
            formatting_line("/tmp/x.vhdx", "vhdx", 1048576, ""),
            "Formatting '/tmp/x.vhdx', fmt=vhdx size=1048576 log_size=1048576 block_size=0"
        );
        assert_eq!(
            formatting_line("/tmp/x.vdi", "vdi", 1048576, ""),
            "Formatting '/tmp/x.vdi', fmt=vdi size=1048576 static=off"
        );
        assert_eq!(
            formatting_line(
                "/tmp/c2.qcow2",
                "qcow2",
                1048576,
                "cluster_size=2M,compat=0.10"
            ),
            "Formatting '/tmp/c2.qcow2', fmt=qcow2 cluster_size=2097152 extended_l2=off compression_type=zlib size=1048576 compat=0.10 lazy_refcounts=off refcount_bits=16"
        );
        assert_eq!(
            formatting_line(
                "/tmp/c.qcow2",
                "qcow2",
                1048576,
                "backing_file=/tmp/x.qcow2,backing_fmt=qcow2"
            ),
            "Formatting '/tmp/c.qcow2', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 backing_file=/tmp/x.qcow2 backing_fmt=qcow2 lazy_refcounts=off refcount_bits=16"
        );
        assert_eq!(
            formatting_line(
                "/tmp/s.vmdk",
                "vmdk",
                1048576,
                "subformat=streamOptimized,adapter_type=lsilogic"
            ),
            "Formatting '/tmp/s.vmdk', fmt=vmdk size=1048576 adapter_type=lsilogic compat6=off hwversion=undefined subformat=streamOptimized"
        );
        assert_eq!(
            formatting_line("/tmp/f.vpc", "vhd", 1048576, "subformat=fixed"),
            "Formatting '/tmp/f.vpc', fmt=vpc size=1048576 subformat=fixed"
        );
        assert_eq!(
            formatting_line("/tmp/x.raw", "raw", 1048576, ""),
            "Formatting '/tmp/x.raw', fmt=raw size=1048576"
        );
    }

    #[test]
    fn summary_lines_use_binary_units() {
        assert_eq!(
            summary_line(2 << 30, 2.0),
            "diskferry: 2.00 GiB in 2.0 s (1.00 GiB/s)"
        );
    }
}
