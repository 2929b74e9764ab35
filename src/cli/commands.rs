//! One function per command: call the library, print the result.

use super::Outcome;
use super::args::{
    CheckArgs, CompareArgs, ConvertArgs, CreateArgs, GateArgs, InfoArgs, MapArgs, MigrateArgs,
    OutputFormat, RepairArg,
};
use super::compat::{self, Personality, Progress, Step};
use diskferry::check::{CheckReport, RepairMode, ReportStyle, Severity};
use diskferry::compare::{CompareEvent, Comparison, compare_images_reporting};
use diskferry::convert::{self, ConvertOptions, WriteMode};
use diskferry::format::{Capability, Salvage};
use diskferry::gate::{DeviceAccess, Gate};
use diskferry::host_file::{Durability, HostFile, SourceReads};
use diskferry::image::{BackingPolicy, DataFilePolicy, OpenOptions};
use diskferry::info::{ImageInfo, layer_info, printable};
use diskferry::map::{MapEntry, map_image};
use diskferry::size::parse_size;
use diskferry::{Error, Format, Image, Registry, options};
use std::io::Write;
use std::path::Path;

pub(super) fn parse_format(name: Option<&str>) -> Result<Option<Format>, Error> {
    let registry = Registry::builtin();
    name.map(|n| registry.find(n)).transpose()
}

/// How the command line opens images: the gate follows regular files anywhere, as qemu-img
/// does, unless `--confine`; the backing chain is followed unless `--no-backing`.
pub(super) fn open_options(gate: &GateArgs, format: Option<Format>) -> OpenOptions {
    let base = if gate.confine {
        Gate::confined()
    } else {
        Gate::anywhere()
    };
    let devices = if gate.allow_devices {
        DeviceAccess::Allow
    } else {
        DeviceAccess::Refuse
    };
    OpenOptions {
        format,
        backing: if gate.no_backing {
            BackingPolicy::Ignore
        } else {
            BackingPolicy::Follow
        },
        gate: base.with_devices(devices),
        parent: gate.parent.clone(),
        package_disk: gate.disk.clone(),
        ..OpenOptions::default()
    }
}

fn print_warnings(image: &Image, quiet: bool) {
    if !quiet {
        for w in image.warnings() {
            eprintln!("diskferry: warning: {}", printable(w));
        }
    }
}

/// Writes to stdout, treating a closed pipe (`| head`) as a normal end.
pub(super) fn emit(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("cannot write to standard output", e)),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut ser).expect("our info types serialize");
    let mut text = String::from_utf8(out).expect("serde_json writes UTF-8");
    text.push('\n');
    text
}

fn package_info_human(i: &diskferry::ova::open::PackageInfo) -> String {
    let vm = &i.vm;
    let system = i
        .system_type
        .as_deref()
        .map(|s| format!(", {s}"))
        .unwrap_or_default();
    let mut t = if i.format == "xva" {
        format!(
            "package: {}\nformat: xva (export version {}, from {}{system})\n",
            i.filename, i.ovf_version, i.dialect
        )
    } else {
        format!(
            "package: {}\nformat: {} (OVF {}, {} dialect{system})\n",
            i.filename, i.format, i.ovf_version, i.dialect
        )
    };
    t.push_str(&format!("name: {}\n", vm.name));
    if let Some(os) = vm.guest_os.os {
        t.push_str(&format!("guest OS: {os}\n"));
    } else if let Some(d) = &vm.guest_os.description {
        t.push_str(&format!("guest OS: {d}\n"));
    }
    t.push_str(&format!(
        "firmware: {}{}\n",
        vm.firmware,
        if vm.tpm { ", TPM" } else { "" }
    ));
    t.push_str(&format!(
        "CPUs: {}{}\n",
        vm.cpus.count,
        vm.cpus
            .cores_per_socket
            .map(|c| format!(" ({c} cores per socket)"))
            .unwrap_or_default()
    ));
    t.push_str(&format!(
        "memory: {} MiB ({} bytes)\n",
        vm.memory_bytes >> 20,
        vm.memory_bytes
    ));
    t.push_str("disks:\n");
    for d in &i.disks {
        let on = d
            .controller
            .as_deref()
            .map(|c| format!(", on {c}"))
            .unwrap_or_default();
        match (&d.format, d.virtual_size, &d.error) {
            (Some(f), Some(v), _) => t.push_str(&format!(
                "  {}: {} ({f}, virtual size {v} bytes, {} bytes in the package{on})\n",
                d.index,
                d.file,
                d.file_size.unwrap_or(0),
            )),
            (_, _, e) => t.push_str(&format!(
                "  {}: {} (cannot be read: {}{on})\n",
                d.index,
                d.file,
                e.as_deref().unwrap_or("unknown error")
            )),
        }
    }
    for (n, nic) in vm.nics.iter().enumerate() {
        t.push_str(&format!(
            "NIC {n}: {}{}{}\n",
            nic.model,
            nic.network
                .as_deref()
                .map(|x| format!(" on '{x}'"))
                .unwrap_or_default(),
            nic.mac
                .as_deref()
                .map(|m| format!(", MAC {m}"))
                .unwrap_or_default()
        ));
    }
    if !vm.cdroms.is_empty() {
        t.push_str(&format!("CD/DVD drives: {}\n", vm.cdroms.len()));
    }
    match &i.manifest {
        Some(m) => t.push_str(&format!(
            "manifest: {} file(s), {}{}\n",
            m.files,
            m.algorithms.join(", "),
            if m.descriptor_verified {
                "; descriptor verified, disks verified when read"
            } else {
                "; disks verified when read"
            }
        )),
        None if i.format == "xva" => {}
        None => t.push_str("manifest: none (nothing to verify the files against)\n"),
    }
    if let Some(c) = &i.certificate {
        t.push_str(&format!("certificate: {c}\n"));
    }
    for n in &i.notes {
        t.push_str(&format!("note: {n}\n"));
    }
    for w in vm.warnings.iter().chain(&i.warnings) {
        t.push_str(&format!("warning: {w}\n"));
    }
    t
}

/// `info` of a hypervisor configuration (any of `vmconfig::CONFIGS`): the machine as read,
/// and where each disk was found through `gate`; a disk that is not here (it may live on
/// another host, or on Proxmox storage) is listed as not found, not an error.
fn config_info(
    config: &dyn diskferry::vmconfig::VmConfig,
    path: &std::path::Path,
    output: OutputFormat,
    gate: &diskferry::gate::Gate,
) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", e).with_path(path))?;
    if bytes.len() as u64 > diskferry::vmconfig::MAX_CONFIG_BYTES {
        return Err(Error::invalid(format!(
            "a {} configuration of more than {} MiB",
            config.name(),
            diskferry::vmconfig::MAX_CONFIG_BYTES >> 20
        ))
        .with_path(path));
    }
    let read = config.read(&bytes, path)?;
    diskferry::migrate::check_source_vm(&read.vm, path)?;
    /// Where one disk is: `found` its path, else `tried` (and `refused`, the gate's reason).
    #[derive(serde::Serialize)]
    struct Located {
        found: Option<String>,
        tried: Vec<String>,
        refused: Option<String>,
    }
    #[derive(serde::Serialize)]
    struct ConfigInfo<'a> {
        filename: String,
        format: &'static str,
        vm: &'a diskferry::vm::Vm,
        disk_files: &'a [String],
        disk_locations: &'a [Located],
    }
    use diskferry::vmconfig::DiskLocation;
    let located: Vec<Located> = diskferry::vmconfig::locate_disks(config, &read, path, gate)
        .into_iter()
        .map(|l| match l {
            DiskLocation::Found(p, _) => Located {
                found: Some(p.display().to_string()),
                tried: Vec::new(),
                refused: None,
            },
            DiskLocation::NotFound(tried) => Located {
                found: None,
                tried: tried.iter().map(|p| p.display().to_string()).collect(),
                refused: None,
            },
            DiskLocation::Refused(e) => Located {
                found: None,
                tried: Vec::new(),
                refused: Some(e.to_string()),
            },
        })
        .collect();
    let vm = &read.vm;
    if output == OutputFormat::Json {
        return Ok(to_json(&ConfigInfo {
            filename: path.display().to_string(),
            format: config.name(),
            vm,
            disk_files: &read.disk_files,
            disk_locations: &located,
        }));
    }
    let mut t = format!(
        "configuration: {}\nformat: {}\nname: {}\n",
        path.display(),
        config.name(),
        vm.name
    );
    if let Some(d) = &vm.description {
        t.push_str(&format!("description: {}\n", d.replace('\n', " / ")));
    }
    match (
        vm.guest_os.os,
        &vm.guest_os.vmware_id,
        &vm.guest_os.description,
    ) {
        (Some(os), _, _) => t.push_str(&format!("guest OS: {os}\n")),
        (None, Some(id), _) => t.push_str(&format!("guest OS: {id} (not in the table)\n")),
        (None, None, Some(d)) => t.push_str(&format!("guest OS: {d}\n")),
        _ => {}
    }
    t.push_str(&format!(
        "firmware: {}{}\nCPUs: {}{}\nmemory: {} MiB ({} bytes)\n",
        vm.firmware,
        if vm.tpm { ", TPM" } else { "" },
        vm.cpus.count,
        vm.cpus
            .cores_per_socket
            .map(|c| format!(" ({c} cores per socket)"))
            .unwrap_or_default(),
        vm.memory_bytes >> 20,
        vm.memory_bytes
    ));
    t.push_str("disks:\n");
    for (i, ((d, f), l)) in vm
        .disks
        .iter()
        .zip(&read.disk_files)
        .zip(&located)
        .enumerate()
    {
        let place = match (&l.found, &l.refused) {
            (Some(p), _) => format!("found: {p}"),
            (None, Some(why)) => format!("refused: {why}"),
            (None, None) => format!("not found (looked for {})", l.tried.join(", ")),
        };
        t.push_str(&format!(
            "  {i}: {f} (on {} {}, unit {}); {place}\n",
            d.controller.kind, d.controller.index, d.unit
        ));
    }
    for (i, c) in vm.cdroms.iter().enumerate() {
        let medium = match &c.source {
            diskferry::vm::DiskSource::Path { path } => path.display().to_string(),
            diskferry::vm::DiskSource::PackageFile { href, .. } => href.clone(),
            diskferry::vm::DiskSource::Blank => "no medium".into(),
        };
        t.push_str(&format!(
            "CD/DVD {i}: {medium} (on {} {}, unit {})\n",
            c.controller.kind, c.controller.index, c.unit
        ));
    }
    for (n, nic) in vm.nics.iter().enumerate() {
        t.push_str(&format!(
            "NIC {n}: {}{}{}\n",
            nic.model,
            nic.network
                .as_deref()
                .map(|x| format!(" on '{x}'"))
                .unwrap_or_default(),
            nic.mac
                .as_deref()
                .map(|m| format!(", MAC {m}"))
                .unwrap_or_default()
        ));
    }
    for p in &vm.serial_ports {
        t.push_str(&format!(
            "serial port {}{}\n",
            p.index,
            p.connection
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
    }
    for w in &vm.warnings {
        t.push_str(&format!("warning: {w}\n"));
    }
    Ok(printable_lines(&t))
}

pub fn info(args: InfoArgs) -> Outcome {
    use diskferry::migrate::{SourceKind, source_kind};
    let kind = if args.format.is_none() && args.gate.disk.is_none() {
        source_kind(&args.image)?
    } else {
        SourceKind::Disk
    };
    let package = match kind {
        SourceKind::Xva => {
            let xva = diskferry::xva::XvaPackage::open(&args.image)?;
            diskferry::migrate::check_source_vm(xva.vm(), &args.image)?;
            Some(xva.info())
        }
        SourceKind::Package => {
            // A file the manifest names but the package lacks does not hide the machine here;
            // what reads the package to make something from it refuses it.
            let package = diskferry::ova::open::Package::open_with(
                &args.image,
                diskferry::ova::open::MissingFiles::Warn,
            )?;
            diskferry::migrate::check_source_vm(&package.descriptor().vm, &args.image)?;
            Some(package.info(&open_options(&args.gate, None))?)
        }
        SourceKind::Config(config) => {
            let gate = open_options(&args.gate, None).gate;
            emit(&config_info(config, &args.image, args.output, &gate)?)?;
            return Ok(0);
        }
        SourceKind::Disk => None,
    };
    if let Some(info) = package {
        emit(&match args.output {
            OutputFormat::Json => to_json(&info),
            OutputFormat::Human => printable_lines(&package_info_human(&info)),
        })?;
        return Ok(0);
    }
    let format = parse_format(args.format.as_deref())?;
    let mut options = open_options(&args.gate, format);
    if !args.backing_chain {
        options.backing = BackingPolicy::Ignore;
    }
    // info reads no guest data: an image whose data file is missing is still shown (with a
    // warning), as qemu-img 10's info shows it; commands that read the disk refuse it.
    options.data_files = DataFilePolicy::MetadataSuffices;
    let image = Image::open(&args.image, &options)?;
    let infos: Vec<ImageInfo> = (0..image.layers().len())
        .map(|i| {
            let name = if i == 0 {
                args.image.display().to_string()
            } else {
                image.layers()[i].path().display().to_string()
            };
            let mut info = layer_info(&image, i, &name);
            if Personality::current() == Personality::QemuImg {
                compat::qemu_info(&mut info);
            }
            info
        })
        .collect();
    let text = match (args.output, args.backing_chain) {
        (OutputFormat::Json, true) => to_json(&infos),
        (OutputFormat::Json, false) => to_json(&infos[0]),
        (OutputFormat::Human, _) => infos
            .iter()
            .map(ImageInfo::to_human)
            .collect::<Vec<_>>()
            .join("\n"),
    };
    emit(&text)?;
    Ok(0)
}

/// `-o help` prints the format's options instead of running the command; a format diskferry
/// cannot write has none to show, and says so.
fn options_help(format: Format, options: &str) -> Result<Option<String>, Error> {
    let wants_help = options
        .split(',')
        .any(|o| o.trim() == "help" || o.trim() == "?");
    if !wants_help {
        return Ok(None);
    }
    Registry::builtin().require(format, Capability::Write)?;
    Ok(Some(options::describe(
        format,
        format.driver().create_options(),
    )))
}

/// Progress on the bar (or qemu-img's lines), warnings above it (unless quiet).
fn show_event(progress: &mut Progress, quiet: bool, event: convert::Event<'_>) {
    match event {
        convert::Event::Progress { done, total } => progress.set(done, total),
        convert::Event::Warning(w) if !quiet => {
            progress.suspend(|| {
                eprintln!(
                    "{}: warning: {}",
                    Personality::current().program(),
                    printable(w)
                )
            });
        }
        convert::Event::Warning(_) => {}
    }
}

pub fn convert(mut args: ConvertArgs) -> Outcome {
    compat::accept_objects(&args.objects)?;
    if args.image_opts {
        let (format, path) = compat::image_opts(&args.source.to_string_lossy())?;
        if format.is_some() {
            args.format = format;
        }
        args.source = path;
    }
    if args.target_image_opts {
        if !args.no_create {
            return Err(Error::invalid(
                "--target-image-opts requires use of -n flag",
            ));
        }
        let (format, path) = compat::image_opts(&args.destination.to_string_lossy())?;
        if let Some(f) = format {
            args.output_format = f;
        }
        args.destination = path;
    }
    // qemu-img's refusals, in its order, before anything is opened.
    if args.copy_offload {
        if args.compress {
            return Err(Error::invalid(
                "Cannot enable copy offloading when -c is used",
            ));
        }
        if args.sparse_size.is_some() {
            return Err(Error::invalid(
                "Cannot enable copy offloading when -S is used",
            ));
        }
        if args.salvage {
            return Err(Error::invalid(
                "Cannot use copy offloading in salvaging mode",
            ));
        }
    }
    if args.target_is_zero && !args.no_create {
        return Err(Error::invalid("--target-is-zero requires use of -n flag"));
    }
    if args.target_is_zero && args.backing.is_some() {
        let message = "Cannot use --target-is-zero when the destination image has a backing file";
        if compat::Personality::current() == compat::Personality::QemuImg {
            // qemu-img 10 says so and stops, writing nothing, but exits with 0; scripts that
            // run it see success, so the personality keeps the exit code.
            eprintln!("qemu-img: {message}");
            return Ok(0);
        }
        return Err(Error::invalid(message));
    }
    let rate = args
        .rate
        .as_deref()
        .map(diskferry::ops::Rate::parse)
        .transpose()?
        .unwrap_or_default();
    if let Some(id) = args.old_snapshot.take() {
        if args.snapshot.is_some() {
            return Err(Error::invalid("-s and -l cannot be used together"));
        }
        args.snapshot = Some(id);
    }
    let target_format = Registry::builtin().find(&args.output_format)?;
    let target_options = args.options.join(",");
    if let Some(help) = options_help(target_format, &target_options)? {
        emit(&help)?;
        return Ok(0);
    }
    let threads = match args.threads {
        // qemu-img's limit and words, for scripts that read them; diskferry's -m counts
        // worker threads and takes up to 256.
        Some(n) if Personality::current() == Personality::QemuImg && !(1..=16).contains(&n) => {
            return Err(Error::invalid(
                "Invalid number of coroutines specified. Must be between 1 and 16.",
            ));
        }
        Some(0) => return Err(Error::invalid("-m must be at least 1")),
        Some(n) if n > 256 => return Err(Error::invalid("-m must be at most 256")),
        other => other,
    };
    let durability = match args.cache.as_deref() {
        // qemu-img convert's default cache mode is "unsafe": no flush. We keep its default so
        // that scripts see the same speed, and flush for every mode that asks for it.
        None | Some("unsafe") => Durability::Unsafe,
        Some("writeback" | "none" | "directsync" | "writethrough") => Durability::Flush,
        Some(other) => {
            return Err(Error::invalid(format!(
                "unknown cache mode '{other}' for -t; valid: writeback, unsafe, none, directsync, writethrough"
            )));
        }
    };
    // -T: how the source is read. Without it, large reads of what the page cache does not
    // hold go around it (host_file/direct.rs).
    diskferry::host_file::set_source_reads(match args.source_cache.as_deref() {
        None => SourceReads::Auto,
        Some("writeback" | "writethrough" | "unsafe") => SourceReads::Cached,
        Some("none" | "directsync") => SourceReads::Direct,
        Some(other) => {
            return Err(Error::invalid(format!(
                "unknown cache mode '{other}' for -T; valid: writeback, unsafe, none, directsync, writethrough"
            )));
        }
    });
    let mut source = open_options(&args.gate, parse_format(args.format.as_deref())?);
    if let Some(spec) = &args.snapshot {
        source.snapshot = Some(diskferry::snapshot::Selector::parse(spec)?);
    }
    if args.salvage {
        source.salvage = Salvage::ReadWhatIsThere;
    }
    // The source's size, only where qemu-img's default for the target depends on it.
    let source_size = if compat::wants_size(target_format.name(), &target_options) {
        Some(Image::open(&args.source, &source)?.virtual_size())
    } else {
        None
    };
    let options = ConvertOptions {
        durability,
        source,
        order: if args.out_of_order {
            convert::WriteOrder::OutOfOrder
        } else {
            convert::WriteOrder::InOrder
        },
        mode: if args.no_create {
            WriteMode::Existing
        } else {
            WriteMode::Create
        },
        target_format,
        target_options: compat::library_options(target_format.name(), &target_options, source_size),
        compress: compat::convert_compresses(target_format.name(), &target_options, args.compress),
        sparse_size: match &args.sparse_size {
            Some(text) => parse_size(text)?,
            None => convert::DEFAULT_SPARSE_SIZE,
        },
        threads,
        target_backing: args.backing.clone(),
        target_backing_format: parse_format(args.backing_format.as_deref())?,
        rate,
        target_content: if args.target_is_zero {
            convert::TargetContent::Zeros
        } else {
            convert::TargetContent::Unknown
        },
        copy: if args.copy_offload {
            convert::CopyMode::Offload
        } else {
            convert::CopyMode::Detect
        },
        bitmaps: match (args.bitmaps, args.skip_broken_bitmaps) {
            (true, false) => convert::Bitmaps::Copy,
            (true, true) => convert::Bitmaps::CopySkippingBroken,
            (false, false) => convert::Bitmaps::Leave,
            (false, true) => {
                return Err(Error::invalid(
                    "Use of --skip-broken-bitmaps requires --bitmaps",
                ));
            }
        },
    };
    let mut progress = Progress::new(args.progress && !args.quiet);
    let quiet = args.quiet;
    let result = convert::convert(&args.source, &args.destination, &options, &mut |event| {
        show_event(&mut progress, quiet, event)
    });
    match result {
        Ok(stats) => {
            progress.finish(Some(stats.data_bytes + stats.zero_bytes));
            Ok(0)
        }
        Err(e) => {
            progress.abandon();
            Err(e)
        }
    }
}

/// Each line of `text` made printable (snapshot names come from the image).
pub(super) fn printable_lines(text: &str) -> String {
    text.lines().map(|l| printable(l) + "\n").collect()
}

pub fn create(mut args: CreateArgs) -> Outcome {
    let format = Registry::builtin().find(&args.format)?;
    let options = args.options.join(",");
    if let Some(help) = options_help(format, &options)? {
        emit(&help)?;
        return Ok(0);
    }
    // `-o backing_file=`, `backing_fmt=` and `size=` are `-b`, `-F` and the size argument.
    let (options, extras) = compat::lift_create_extras(&options);
    let merge =
        |flag: &mut Option<String>, lifted: Option<String>, what: &str| -> diskferry::Result<()> {
            match (flag.as_deref(), lifted) {
                (Some(a), Some(b)) if a != b => Err(Error::invalid(format!(
                    "{what} is given twice, as '{a}' and as '{b}'"
                ))),
                (None, Some(b)) => {
                    *flag = Some(b);
                    Ok(())
                }
                _ => Ok(()),
            }
        };
    let mut backing = args
        .backing
        .as_ref()
        .map(|b| b.to_string_lossy().into_owned());
    merge(&mut backing, extras.backing_file, "the backing file")?;
    args.backing = backing.map(std::path::PathBuf::from);
    merge(
        &mut args.backing_format,
        extras.backing_fmt,
        "the backing format",
    )?;
    merge(&mut args.size, extras.size, "the size")?;
    let size = args
        .size
        .as_deref()
        .map(parse_size)
        .transpose()?
        .map(|s| compat::create_size(format.name(), s));
    compat::require_backing_format(args.backing.as_deref(), args.backing_format.as_deref())
        .map_err(|e| e.with_path(&args.image))?;
    let backing_format = parse_format(args.backing_format.as_deref())?;
    let open = open_options(&args.gate, None);
    let library_options = compat::library_options(format.name(), &options, size);
    let unreachable_backing = args.unsafe_backing
        && args.backing.as_ref().is_some_and(|b| {
            !diskferry::gate::Gate::resolve(&args.image, &b.to_string_lossy()).exists()
        });
    if unreachable_backing {
        // -u with a backing file that is not there (yet): qemu-img records the name without
        // opening it. The image is made without one, then the name is recorded in place, as
        // `rebase -u` would; formats that must read their parent (VHD, VHDX, VDI take its
        // UUID) refuse there, clearly.
        let size = size.ok_or_else(|| {
            Error::invalid("-u with a backing file that cannot be opened needs the size")
        })?;
        let backing = args.backing.as_ref().expect("checked above");
        Registry::builtin()
            .require(format, Capability::Rebase)
            .map_err(|e| e.with_path(&args.image))?;
        convert::create(
            &args.image,
            format,
            Some(size),
            &library_options,
            None,
            &open,
        )?;
        let new = diskferry::edit::NewBacking {
            name: backing.to_string_lossy().into_owned(),
            format: backing_format,
        };
        let ctx = diskferry::edit::EditContext {
            gate: &open.gate,
            force: diskferry::edit::Force::Yes,
        };
        if let Err(e) = format.driver().set_backing(&args.image, Some(&new), &ctx) {
            let _ = std::fs::remove_file(&args.image);
            return Err(e);
        }
    } else {
        convert::create(
            &args.image,
            format,
            size,
            &library_options,
            args.backing.as_deref().map(|b| (b, backing_format)),
            &open,
        )?;
    }
    if !args.quiet {
        // qemu-img prints this line on standard output; scripts that capture it expect it.
        let size = match size {
            Some(s) => s,
            None => {
                let mut only = open.clone();
                only.backing = BackingPolicy::Ignore;
                only.format = Some(format);
                Image::open(&args.image, &only)?.virtual_size()
            }
        };
        let mut shown = options.clone();
        if let Some(b) = &args.backing {
            shown.push_str(&format!(",backing_file={}", b.display()));
            if let Some(f) = backing_format {
                shown.push_str(&format!(
                    ",backing_fmt={}",
                    compat::qemu_driver_name(f.name())
                ));
            }
        }
        emit(&format!(
            "{}\n",
            printable(&compat::formatting_line(
                &args.image.display().to_string(),
                format.name(),
                size,
                &shown
            ))
        ))?;
    }
    Ok(0)
}

fn check_human(report: &CheckReport) -> String {
    let mut out = String::new();
    if let Some(note) = &report.note {
        out.push_str(&format!("{}.\n", printable(note)));
        return out;
    }
    for f in &report.findings {
        let label = match (f.severity, f.repaired) {
            (_, true) => "Repaired",
            (Severity::Corruption, false) => "ERROR",
            (Severity::Leak, false) => "Leaked",
            (Severity::Warning, false) => "Warning",
        };
        let message = printable(&f.message);
        match f.offset {
            Some(o) => out.push_str(&format!("{label}: {message} (offset {o} = {o:#x})\n")),
            None => out.push_str(&format!("{label}: {message}\n")),
        }
    }
    let (fixed_c, fixed_l) = (report.corruptions_fixed(), report.leaks_fixed());
    if fixed_c + fixed_l > 0 {
        out.push_str(&format!(
            "The following inconsistencies were found and repaired:\n\n    {fixed_l} leaked clusters\n    {fixed_c} corruptions\n\n"
        ));
    }
    let (c, l) = (report.corruptions(), report.leaks());
    if c == 0 && l == 0 && report.check_errors == 0 {
        out.push_str("No errors were found on the image.\n");
    }
    if c > 0 {
        out.push_str(&format!(
            "\n{c} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n"
        ));
    }
    if l > 0 {
        out.push_str(&format!(
            "\n{l} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n"
        ));
    }
    if report.check_errors > 0 {
        out.push_str(&format!(
            "\n{} internal errors have occurred during the check.\n",
            report.check_errors
        ));
    }
    if let (Some(a), Some(t)) = (report.allocated_clusters, report.total_clusters) {
        let pct = if t > 0 {
            a as f64 * 100.0 / t as f64
        } else {
            0.0
        };
        out.push_str(&format!("{a}/{t} = {pct:.2}% allocated\n"));
    }
    if let Some(end) = report.image_end_offset {
        out.push_str(&format!("Image end offset: {end}\n"));
    }
    out
}

/// `check` of a package: each disk read to its end through the package's checks (manifest
/// digests, chunk checksums); exit 2 when one fails them, as a corrupt image's check. `None`
/// when the file is not a package.
fn check_package(args: &CheckArgs) -> diskferry::Result<Option<i32>> {
    use diskferry::package::verify::{PackageKind, package_disks, verify_disk};
    let name = printable(&args.image.to_string_lossy());
    let mut errors: Vec<String> = Vec::new();
    let mut disks_json = Vec::new();
    let mut lines = String::new();
    let kind = match package_disks(&args.image) {
        Ok(None) => return Ok(None),
        Ok(Some((kind, disks))) => {
            let options = open_options(&args.gate, None);
            for disk in &disks {
                let label = format!("disk {} '{}'", disk.index, printable(&disk.name));
                match verify_disk(&args.image, disk, &options) {
                    Ok(size) => {
                        lines.push_str(&format!("{label}: {size} bytes read, its checks passed\n"));
                        disks_json.push(serde_json::json!({
                            "index": disk.index, "name": disk.name, "virtual-size": size,
                        }));
                    }
                    Err(e) if e.kind() == diskferry::ErrorKind::Corrupt => {
                        let message = e.message().to_string();
                        eprintln!("ERROR: {label}: {}", printable(&message));
                        disks_json.push(serde_json::json!({
                            "index": disk.index, "name": disk.name, "error": message,
                        }));
                        errors.push(message);
                    }
                    Err(e) => return Err(e),
                }
            }
            Some(kind)
        }
        // The package itself (its descriptor, manifest or ova.xml) fails its checks.
        Err(e) if e.kind() == diskferry::ErrorKind::Corrupt => {
            eprintln!("ERROR: {}", printable(&e.to_string()));
            errors.push(e.message().to_string());
            None
        }
        Err(e) => return Err(e),
    };
    if !args.quiet || args.output == OutputFormat::Json {
        let text = match args.output {
            OutputFormat::Human => {
                let verdict = if errors.is_empty() {
                    "No errors were found in the package.".to_string()
                } else {
                    format!("{} errors were found in the package.", errors.len())
                };
                if lines.is_empty() {
                    format!("{verdict}\n")
                } else {
                    format!("{lines}\n{verdict}\n")
                }
            }
            OutputFormat::Json => to_json(&serde_json::json!({
                "filename": args.image.to_string_lossy(),
                "format": match kind {
                    Some(PackageKind::Xva) => "xva",
                    _ => "ova",
                },
                "disks": disks_json,
                "check-errors": errors.len(),
            })),
        };
        emit(&text)?;
    }
    if !errors.is_empty() {
        eprintln!("diskferry: {name}: Check failed");
        return Ok(Some(2));
    }
    Ok(Some(0))
}

pub fn check(args: CheckArgs) -> Outcome {
    let registry = Registry::builtin();
    // A package (OVA, OVF, XVA) is checked disk by disk; qemu-img takes it for raw, which it
    // cannot check.
    if args.format.is_none() {
        if Personality::current() == Personality::QemuImg {
            if let Ok(Some(_)) = diskferry::package::verify::package_disks(&args.image) {
                eprintln!("qemu-img: This image format does not support checks");
                return Ok(63);
            }
        } else if let Some(code) = check_package(&args)? {
            return Ok(code);
        }
    }
    let format = match parse_format(args.format.as_deref())? {
        Some(f) => f,
        // Detect from the content only: check must reach images too damaged to open (a VHD
        // with a broken header is a corruption to report, not a failure to check).
        None => registry.detect(&HostFile::open(&args.image)?)?.format,
    };
    if Personality::current() == Personality::QemuImg && !compat::qemu_checks(format.name()) {
        eprintln!("qemu-img: This image format does not support checks");
        return Ok(63);
    }
    registry
        .require(format, Capability::Check)
        .map_err(|e| e.with_path(&args.image))?;
    let repair = args.repair.map(|r| match r {
        RepairArg::Leaks => RepairMode::Leaks,
        RepairArg::All => RepairMode::All,
    });
    let options = open_options(&args.gate, Some(format));
    let report = format.driver().check(&args.image, repair, &options.gate)?;
    // qemu-img's check starts by opening the image with the files it names (extents, the
    // backing chain): one that is missing or refused is a failure to check (exit 1), not a
    // corruption of this image, and scripts tell the two apart by the exit code. Damage is
    // left for the report. (Where qemu-img cannot open a chain, as a differencing VHDX or VDI,
    // diskferry's own findings name the missing parent and go on.)
    if compat::qemu_opens_chain_to_check(format.name())
        && let Err(e) = Image::open(&args.image, &options)
        && e.kind() != diskferry::ErrorKind::Corrupt
    {
        return Err(e);
    }
    if report.style == ReportStyle::Qemu {
        // qemu-img prints each problem on stderr as it finds it, whatever the output format.
        for f in &report.findings {
            eprintln!("{}", printable(&f.message));
        }
        if let Some(why) = &report.stopped {
            // As qemu-img: no summary of an incomplete check.
            return Err(Error::corrupt(format!("Check failed: {why}")).with_path(&args.image));
        }
        if !args.quiet || args.output == OutputFormat::Json {
            emit(&match args.output {
                OutputFormat::Human => report.qemu_human(),
                OutputFormat::Json => to_json(&report.qemu_json()),
            })?;
        }
        if report.check_errors > 0 {
            eprintln!(
                "diskferry: {}: Check failed",
                printable(&args.image.to_string_lossy())
            );
        }
        return Ok(report.exit_code());
    }
    if !args.quiet || args.output == OutputFormat::Json {
        let text = match args.output {
            OutputFormat::Human => check_human(&report),
            OutputFormat::Json => {
                let mut value = serde_json::to_value(&report).expect("reports serialize");
                let obj = value.as_object_mut().expect("a report is an object");
                obj.insert("corruptions".into(), report.corruptions().into());
                obj.insert("leaks".into(), report.leaks().into());
                obj.insert(
                    "corruptions-fixed".into(),
                    report.corruptions_fixed().into(),
                );
                obj.insert("leaks-fixed".into(), report.leaks_fixed().into());
                to_json(&value)
            }
        };
        emit(&text)?;
    }
    Ok(report.exit_code())
}

pub fn compare(args: CompareArgs) -> Outcome {
    let a = Image::open(
        &args.image_a,
        &open_options(&args.gate, parse_format(args.format_a.as_deref())?),
    )?;
    let b = Image::open(
        &args.image_b,
        &open_options(&args.gate, parse_format(args.format_b.as_deref())?),
    )?;
    print_warnings(&a, args.quiet);
    print_warnings(&b, args.quiet);
    // vdsm runs `compare -p` and parses the records: they come as qemu-img's do, after each
    // range compared, and the size warning between the common part and the larger image's
    // rest (where qemu-img prints it, and only when the common part is the same).
    let mut progress = Progress::with_step(args.progress && !args.quiet, Step::MoreThanTwoPercent);
    let mut warning: Result<(), Error> = Ok(());
    let compared = compare_images_reporting(&a, &b, args.strict, &mut |event| match event {
        CompareEvent::Progress { done, total } => progress.set(done, total),
        CompareEvent::SizeMismatch if !args.quiet && warning.is_ok() => {
            progress.suspend(|| warning = emit("Warning: Image size mismatch!\n"));
        }
        CompareEvent::SizeMismatch => {}
    });
    let verdict = match compared.and_then(|v| warning.map(|()| v)) {
        Ok(v) => v,
        Err(e) => {
            progress.abandon();
            return Err(e);
        }
    };
    // A package member's digest, checked while it was compared.
    a.finish_checks()?;
    b.finish_checks()?;
    let mut text = String::new();
    let code = match verdict {
        Comparison::Identical => {
            text.push_str("Images are identical.\n");
            0
        }
        Comparison::ContentMismatch(offset) => {
            // qemu-img compares by 512-byte sectors and names the sector the difference is
            // in; diskferry names the byte.
            let offset = match Personality::current() {
                Personality::QemuImg => offset / 512 * 512,
                Personality::Diskferry => offset,
            };
            text.push_str(&format!("Content mismatch at offset {offset}!\n"));
            1
        }
        Comparison::SizeMismatch => {
            text.push_str("Strict mode: Image size mismatch!\n");
            1
        }
        Comparison::AllocationMismatch(offset) => {
            text.push_str(&format!(
                "Strict mode: Offset {offset} block status mismatch!\n"
            ));
            1
        }
    };
    // qemu-img prints the verdict after the last record, which is where the comparison ended
    // (100% when the images are the same and not empty; none of its own after a difference),
    // and then ends the progress line.
    if !args.quiet {
        // On a terminal the bar (on standard error) steps aside for the verdict.
        let mut printed = Ok(());
        progress.suspend(|| printed = emit(&text));
        printed?;
    }
    progress.abandon();
    Ok(code)
}

/// qemu-img map's JSON line for one entry, character for character.
fn map_json_line(e: &MapEntry) -> String {
    let mut line = format!(
        "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {}",
        e.start, e.length, e.depth, e.present, e.zero, e.data, e.compressed
    );
    if let Some(o) = e.offset {
        line.push_str(&format!(", \"offset\": {o}"));
    }
    line.push('}');
    line
}

/// `%#-16x` as C prints it: `0` for zero, `0x...` otherwise, left-aligned in 16 columns.
fn hex16(v: u64) -> String {
    let s = if v == 0 {
        "0".to_string()
    } else {
        format!("{v:#x}")
    };
    format!("{s:<16}")
}

/// Standard output for a long listing: written as it is produced (a map of a huge image must
/// not be held in memory), a closed pipe (`| head`) ending it quietly.
struct Listing {
    out: std::io::BufWriter<std::io::Stdout>,
    closed: bool,
}

impl Listing {
    fn new() -> Listing {
        Listing {
            out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
            closed: false,
        }
    }

    fn put(&mut self, text: &str) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        match self.out.write_all(text.as_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(Error::io("cannot write to standard output", e)),
        }
    }

    fn finish(mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        match self.out.flush() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(Error::io("cannot write to standard output", e)),
        }
    }
}

pub fn map(args: MapArgs) -> Outcome {
    let image = Image::open(
        &args.image,
        &open_options(&args.gate, parse_format(args.format.as_deref())?),
    )?;
    print_warnings(&image, false);
    let start = args
        .start_offset
        .as_deref()
        .map(parse_size)
        .transpose()?
        .unwrap_or(0);
    let end = match args.max_length.as_deref().map(parse_size).transpose()? {
        Some(len) => start.saturating_add(len),
        None => u64::MAX,
    };
    let mut out = Listing::new();
    match args.output {
        OutputFormat::Json => {
            out.put("[")?;
            let mut first = true;
            map_image(&image, start, end, |e| {
                if !first {
                    out.put(",\n")?;
                }
                first = false;
                out.put(&map_json_line(e))
            })?;
            out.put("]\n")?;
        }
        OutputFormat::Human => {
            out.put(&format!(
                "{}{}{}File\n",
                "Offset          ", "Length          ", "Mapped to       "
            ))?;
            map_image(&image, start, end, |e| {
                if e.data && !e.zero {
                    let mapped = match e.offset {
                        Some(o) => hex16(o),
                        None => format!("{:<16}", "(compressed)"),
                    };
                    let file = e
                        .file
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                        .to_string();
                    out.put(&format!(
                        "{}{}{}{}\n",
                        hex16(e.start),
                        hex16(e.length),
                        mapped,
                        printable(&file)
                    ))?;
                }
                Ok(())
            })?;
        }
    }
    out.finish()?;
    Ok(0)
}

/// `migrate --show-mapping --from SOURCE --to TARGET`: one pair's table.
fn show_mapping(args: &MigrateArgs) -> Outcome {
    use diskferry::migrate::mapping;
    let (sources, targets) = mapping::names();
    let from = args.from.as_deref().unwrap_or_default();
    let source = mapping::source_named(from).ok_or_else(|| {
        Error::invalid(format!(
            "unknown source kind '{from}'; known: {}",
            sources.join(", ")
        ))
    })?;
    let target = mapping::target_named(&args.target).ok_or_else(|| {
        Error::invalid(format!(
            "unknown target '{}'; known: {}",
            args.target,
            targets.join(", ")
        ))
    })?;
    emit(&format!(
        "# {} -> {}\n\n{}",
        source.names[0],
        target.names[0],
        mapping::pair_markdown(source, target)
    ))?;
    Ok(0)
}

pub fn migrate(args: MigrateArgs) -> Outcome {
    use diskferry::migrate::{self, Description, MigrateOptions, Source, Target};
    if args.show_mapping {
        return show_mapping(&args);
    }
    let target = Target::parse(&args.target)?;
    let (dest, sources) = args.paths.split_last().expect("clap requires two paths");
    let threads = match args.threads {
        Some(0) => return Err(Error::invalid("-m must be at least 1")),
        other => other,
    };
    if convert::is_stdio(dest) && !target.is_package() {
        return Err(Error::invalid(format!(
            "only an OVA or an XVA can go to standard output; --to {} writes a folder",
            args.target
        )));
    }
    let open = open_options(&args.gate, None);
    let description = Description {
        name: args.name.clone(),
        cpus: args.cpus,
        cores_per_socket: args.cores_per_socket,
        memory_bytes: args.memory.as_deref().map(parse_size).transpose()?,
        firmware: args.firmware.clone(),
        guest_os: args.guest_os.clone(),
        disk_bus: args.disk_bus.clone(),
        nics: args.nic.clone(),
    };
    let source = Source::open(sources, &description, &open)?;
    let options = MigrateOptions {
        disk_format: parse_format(args.output_format.as_deref())?,
        disk_options: args.options.join(","),
        threads,
        ..MigrateOptions::default()
    };
    // An XVA takes its own -o (checksum=, compress=), checked before anything is read.
    let xva = target == Target::XenServer && !migrate::is_ova_name(dest);
    if xva && options.disk_format.is_none() {
        diskferry::xva::write::XvaOptions::parse(&options.disk_options)?;
    } else if target != Target::Disks
        && (options.disk_format.is_some() || !options.disk_options.is_empty())
    {
        return Err(Error::invalid(format!(
            "-O and -o apply to --to disks (and -o to an XVA of --to xenserver: checksum=, compress=); --to {} writes the disk format its hypervisor imports",
            args.target
        )));
    }
    let mut progress = Progress::new(args.progress && !args.quiet);
    let quiet = args.quiet;
    // -q silences progress and the summary of what was carried, never what was not: the
    // warnings go to standard error in any case.
    let result = migrate::migrate(&source, dest, target, &options, &mut |event| {
        show_event(&mut progress, false, event)
    });
    let summary = match result {
        Ok(s) => {
            progress.finish(Some(source.disks.iter().map(|d| d.virtual_size()).sum()));
            s
        }
        Err(e) => {
            progress.abandon();
            return Err(e);
        }
    };
    if !quiet {
        let vm = &source.vm;
        eprintln!(
            "diskferry: migrated '{}' ({} CPU(s), {}, {}, {} disk(s), {} NIC(s)) for {}:",
            printable(&vm.name),
            vm.cpus.count,
            // Exactly: a target keeping a size that is not a whole MiB (an XVA's bytes) says so.
            diskferry::vm::memory_text(summary.memory_bytes),
            vm.firmware,
            vm.disks.len(),
            vm.nics.len(),
            args.target
        );
        for f in &summary.files {
            if !convert::is_stdio(f) {
                eprintln!("  {}", printable(&f.display().to_string()));
            }
        }
    }
    for w in &summary.warnings {
        eprintln!("diskferry: warning: {}", printable(w));
    }
    if !quiet && !summary.instructions.is_empty() {
        eprintln!("diskferry: to finish the import on the target:");
        for line in &summary.instructions {
            eprintln!("  {}", printable(line));
        }
    }
    Ok(0)
}
