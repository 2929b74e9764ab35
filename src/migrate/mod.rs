//! Moving a whole VM from one hypervisor to another: its disks converted to the target's
//! format and its description rewritten in the target's dialect.
//!
//! A [`Source`] is a [`Vm`] with its disks opened (from a package, or bare disk images
//! described on the command line); [`migrate`] writes it for a [`Target`]:
//!
//! | target | what is written |
//! |---|---|
//! | `vsphere`, `esxi`, `workstation` | an OVA in VMware's dialect, stream-optimized VMDK disks |
//! | `virtualbox` | an OVA VirtualBox imports, stream-optimized VMDK disks |
//! | `xenserver`, `xcp-ng` | an XVA `xe vm-import` and Xen Orchestra import (`-o checksum=sha1`, `-o compress=gzip\|zstd`); a destination named `*.ova` gets an OVA XenCenter imports, dynamic VHD disks |
//! | `kvm` and every other [`crate::vmconfig`] target | a folder: the disks in the format that hypervisor runs and its own configuration file |
//! | `ovf` | a folder: the OVF (VMware dialect), its manifest, stream-optimized VMDK disks |
//! | `disks` | a folder of the disks alone, in the `-O` format (qcow2 by default) |
//!
//! Output is atomic: an OVA is staged beside its destination and renamed when complete, a
//! folder is written hidden and renamed; a failure leaves nothing. Progress is reported over
//! the whole VM. What the target cannot carry is in [`Summary::warnings`], with the source's
//! own warnings.

pub mod describe;
pub mod mapping;

pub use describe::Description;

use crate::convert::{ConvertOptions, Event, convert_image};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::host_file::Durability;
use crate::host_file::HostFile;
use crate::image::{Image, OpenOptions};
use crate::ova::descriptor::{Dialect, descriptor};
use crate::ova::open::Package;
use crate::ova::write::{
    PackageDisk, PackagePlan, WrittenDisk, digest_of, manifest_text, write_ova,
};
use crate::registry::Registry;
use crate::sink::{DigestAlgorithm, FileSink, HashingTee, Output, Sink};
use crate::staging::StagedFolder;
use crate::storage::{Storage, StorageExt};
use crate::vm::{ControllerKind, ScsiModel, Vm};
use crate::vmconfig::{self, DiskPlan, PlacedDisk, VmConfig};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a VM is going.
#[derive(Clone, Copy)]
pub enum Target {
    /// VMware vSphere / ESXi: an OVA.
    Vsphere,
    /// VMware Workstation / Fusion: an OVA.
    Workstation,
    /// Oracle VirtualBox: an OVA.
    VirtualBox,
    /// XenServer / XCP-ng: an XVA (`xe vm-import`), or, for a destination named `*.ova`, an OVA
    /// with VHD disks for XenCenter's OVF import.
    XenServer,
    /// A hypervisor's own configuration with its disks, in a folder (`kvm`: libvirt XML and
    /// qcow2 disks; see [`crate::vmconfig::CONFIGS`]).
    Config(&'static dyn VmConfig),
    /// A plain OVF folder (VMware dialect).
    Ovf,
    /// The disks alone, in a folder.
    Disks,
}

/// The target names `--to` accepts, with what each means.
pub const TARGETS: &[(&str, Target)] = &[
    ("vsphere", Target::Vsphere),
    ("esxi", Target::Vsphere),
    ("workstation", Target::Workstation),
    ("virtualbox", Target::VirtualBox),
    ("xenserver", Target::XenServer),
    ("xcp-ng", Target::XenServer),
    ("ovf", Target::Ovf),
    ("disks", Target::Disks),
];

/// `--to disks` writes the disks alone: no device is described.
pub static DISKS: mapping::TargetMapping = mapping::TargetMapping {
    names: &["disks"],
    controllers: &[],
    nics: &[],
    firmware: &[],
    guest: &[],
    os: "(not written)",
    notes: "Only the disks are written, in the -O format: no controller, NIC or firmware setting travels.",
};

impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Config(a), Target::Config(b)) => a.name() == b.name(),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for Target {}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Vsphere => f.write_str("Vsphere"),
            Target::Workstation => f.write_str("Workstation"),
            Target::VirtualBox => f.write_str("VirtualBox"),
            Target::XenServer => f.write_str("XenServer"),
            Target::Config(c) => write!(f, "Config({})", c.name()),
            Target::Ovf => f.write_str("Ovf"),
            Target::Disks => f.write_str("Disks"),
        }
    }
}

/// Every `--to` name: the package targets, then each configuration format's.
pub fn target_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = TARGETS.iter().map(|(n, _)| *n).collect();
    for c in vmconfig::CONFIGS {
        names.extend(c.targets().iter().map(|(n, _)| *n));
    }
    names
}

impl Target {
    /// The target called `name`; an unknown name is an error listing the known ones.
    pub fn parse(name: &str) -> Result<Target> {
        if let Some((_, t)) = TARGETS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Ok(*t);
        }
        if let Some(c) = vmconfig::target_named(name) {
            return Ok(Target::Config(c));
        }
        Err(Error::invalid(format!(
            "unknown target '{name}'; known targets: {}",
            target_names().join(", ")
        )))
    }

    /// True when the target is one file, an OVA or an XVA (otherwise a folder).
    pub fn is_package(self) -> bool {
        matches!(
            self,
            Target::Vsphere | Target::Workstation | Target::VirtualBox | Target::XenServer
        )
    }
}

/// A VM to migrate: its description and its disks, opened, in the order of `vm.disks`.
pub struct Source {
    /// The machine.
    pub vm: Vm,
    /// Its disks, one per entry of `vm.disks`.
    pub disks: Vec<Arc<Image>>,
}

/// What a file given as a VM's source is, by its content.
#[derive(Clone, Copy)]
pub enum SourceKind {
    /// An XVA (plain, gzip or zstd).
    Xva,
    /// An OVA or an OVF descriptor.
    Package,
    /// A hypervisor's configuration file (libvirt XML, ...).
    Config(&'static dyn VmConfig),
    /// A disk image (described on the command line).
    Disk,
}

/// What `path` holds, for `info` and `migrate` to choose how to read it. The XVA probe comes
/// first: an XVA is a tar too.
pub fn source_kind(path: &Path) -> Result<SourceKind> {
    // A legacy XVA may be a folder, which has no bytes to probe (its ova.xml, named as a
    // file, is told by the XVA probe below).
    if path.is_dir() && crate::xva::legacy_descriptor(path).is_some() {
        return Ok(SourceKind::Xva);
    }
    let file = HostFile::open(path)?;
    if crate::xva::probe(&file).is_some() {
        return Ok(SourceKind::Xva);
    }
    if crate::ova::open::probe(&file).is_some() {
        return Ok(SourceKind::Package);
    }
    let mut head = [0u8; 4096];
    let n = file.read_at_most(&mut head, 0)?;
    if let Some(c) = vmconfig::detect(&head[..n], path) {
        return Ok(SourceKind::Config(c));
    }
    Ok(SourceKind::Disk)
}

impl PartialEq for SourceKind {
    fn eq(&self, other: &SourceKind) -> bool {
        match (self, other) {
            (SourceKind::Config(a), SourceKind::Config(b)) => a.name() == b.name(),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for SourceKind {}

impl std::fmt::Debug for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKind::Xva => f.write_str("Xva"),
            SourceKind::Package => f.write_str("Package"),
            SourceKind::Config(c) => write!(f, "Config({})", c.name()),
            SourceKind::Disk => f.write_str("Disk"),
        }
    }
}

impl Source {
    /// The VM at `paths`: one XVA, OVA, OVF or libvirt domain (which describes its VM, so
    /// `description` must say nothing), or disk images described by `description`.
    pub fn open(
        paths: &[PathBuf],
        description: &Description,
        options: &OpenOptions,
    ) -> Result<Source> {
        let kind = match paths {
            [one] => source_kind(one)?,
            _ => {
                // A package or a configuration describes a whole VM: read among disks, it
                // would be taken for a raw disk holding its own text.
                for path in paths {
                    let what = match source_kind(path)? {
                        SourceKind::Disk => continue,
                        SourceKind::Xva => "an XVA".to_string(),
                        SourceKind::Package => "an OVA or OVF package".to_string(),
                        SourceKind::Config(c) => format!("a {} configuration", c.name()),
                    };
                    return Err(Error::invalid(format!(
                        "{what} describes a whole VM and must be the only source; several sources are bare disk images"
                    ))
                    .with_path(path));
                }
                SourceKind::Disk
            }
        };
        if kind != SourceKind::Disk && !description.is_empty() {
            return Err(Error::invalid(
                "the source describes its VM: --name, --cpus, --cores-per-socket, --memory, --firmware, --os, --disk-bus and --nic apply to bare disk images",
            )
            .with_path(&paths[0]));
        }
        let source = match kind {
            SourceKind::Xva => Source::from_xva(&paths[0], options),
            SourceKind::Package => Source::from_package(&paths[0], options),
            SourceKind::Config(c) => Source::from_config(&paths[0], c, options),
            SourceKind::Disk => Source::from_disks(paths, description, options),
        }?;
        if kind == SourceKind::Disk {
            // The command line's description, bounded as a file's is.
            source.vm.check_limits()?;
        }
        Ok(source)
    }

    /// The VM a hypervisor's configuration file describes (read as `config`), its disk files
    /// opened through `options`' gate (they are named by the configuration, not by the user).
    pub fn from_config(
        path: &Path,
        config: &dyn VmConfig,
        options: &OpenOptions,
    ) -> Result<Source> {
        let file = HostFile::open(path)?;
        if file.len() > vmconfig::MAX_CONFIG_BYTES {
            return Err(Error::invalid(format!(
                "a {} configuration of more than {} MiB",
                config.name(),
                vmconfig::MAX_CONFIG_BYTES >> 20
            ))
            .with_path(path));
        }
        let mut bytes = vec![0u8; file.len() as usize];
        file.read_exact_at(&mut bytes, 0)?;
        let read = config.read(&bytes, path)?;
        check_source_vm(&read.vm, path)?;
        let mut vm = read.vm.clone();
        if vm.disks.len() != read.disk_files.len() {
            return Err(Error::invalid(format!(
                "internal error: the {} reader listed {} disks and {} files",
                config.name(),
                vm.disks.len(),
                read.disk_files.len()
            )));
        }
        let mut disks = Vec::new();
        let found = vmconfig::locate_disks(config, &read, path, &options.gate);
        for (i, (d, location)) in vm.disks.iter_mut().zip(found).enumerate() {
            let storage = match location {
                vmconfig::DiskLocation::Found(_, f) => f,
                vmconfig::DiskLocation::NotFound(tried) => {
                    return Err(config.disk_not_found(&bytes, path, &read, i, &tried));
                }
                vmconfig::DiskLocation::Refused(e) => return Err(e),
            };
            let image = Image::open_storage(storage, options)?;
            d.capacity_bytes = Some(image.virtual_size());
            disks.push(Arc::new(image));
        }
        Ok(Source { vm, disks })
    }

    /// The VM an XVA (XenServer, XCP-ng, Xen Orchestra export) describes, with its disks
    /// assembled in place from their chunks (each chunk verified when read). A disk without
    /// content in the export is left out with a warning.
    pub fn from_xva(path: &Path, options: &OpenOptions) -> Result<Source> {
        let package = crate::xva::XvaPackage::open(path)?;
        check_source_vm(package.vm(), path)?;
        let mut vm = package.vm().clone();
        let entries = package.disks();
        let mut disks = Vec::new();
        let mut kept = Vec::new();
        for (i, disk) in vm.disks.iter().enumerate() {
            match entries.iter().find(|e| e.index == i) {
                Some(entry) => {
                    disks.push(Arc::new(package.open_disk(entry, options)?));
                    kept.push(disk.clone());
                }
                None => vm.warnings.push(format!(
                    "disk {} has no content in the export (a metadata-only export?): not carried",
                    i + 1
                )),
            }
        }
        vm.disks = kept;
        Ok(Source { vm, disks })
    }

    /// The VM an OVA or OVF describes, with its disks opened in place (each checked against
    /// the manifest while it is read). A disk the descriptor declares without content (a
    /// template's empty disk) is left out with a warning, as is what the package holds besides
    /// the machine ([`crate::ovf::Descriptor::not_carried`]).
    pub fn from_package(path: &Path, options: &OpenOptions) -> Result<Source> {
        let package = Package::open(path)?;
        check_source_vm(&package.descriptor().vm, path)?;
        let mut vm = package.descriptor().vm.clone();
        // The package's other systems, configurations and properties stay behind: say so
        // (`info` lists them as notes, facts about the package rather than the machine).
        vm.warnings.extend(package.descriptor().not_carried());
        let entries = package.disks();
        let mut disks = Vec::new();
        let mut kept = Vec::new();
        for (i, disk) in vm.disks.iter().enumerate() {
            match entries.iter().find(|e| e.index == i) {
                Some(entry) => {
                    disks.push(Arc::new(package.open_disk(entry, options)?));
                    kept.push(disk.clone());
                }
                None => vm.warnings.push(format!(
                    "disk {} has no content in the package (an empty disk of {}): not carried; create it on the target",
                    i + 1,
                    disk.capacity_bytes
                        .map(|c| format!("{c} bytes"))
                        .unwrap_or_else(|| "unknown size".into())
                )),
            }
        }
        vm.disks = kept;
        Ok(Source { vm, disks })
    }
}

/// Refuses the VM a description at `path` gives when it is beyond the model's bounds
/// ([`Vm::check_limits`]), naming the file: checked as the VM enters `migrate` or `info`,
/// whichever reader made it, before any disk it names is opened.
pub fn check_source_vm(vm: &Vm, path: &Path) -> Result<()> {
    vm.check_limits().map_err(|e| e.with_path(path))
}

/// How to migrate.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// `-O`: the disk format of the `disks` target (default qcow2); other targets have theirs.
    pub disk_format: Option<Format>,
    /// `-o`: options for the disks of the `disks` target, or the XVA's (`checksum=`,
    /// `compress=`) for `xenserver`.
    pub disk_options: String,
    /// `-m`: worker threads, or one per core.
    pub threads: Option<usize>,
    /// Whether outputs are flushed before they are renamed into place.
    pub durability: Durability,
    /// Members' modification time in packages (seconds since 1970).
    pub mtime: u64,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            disk_format: None,
            disk_options: String::new(),
            threads: None,
            durability: Durability::Flush,
            mtime: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// What a migration wrote and what it could not carry.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The files written (the OVA, or the folder's files as they are named once in place).
    pub files: Vec<PathBuf>,
    /// The guest memory written, in bytes: the source's, unless the target takes only some
    /// sizes (VMware: multiples of 4 MiB; most others whole MiB; each with its minimum and
    /// maximum) or gives a default to a source without one, each change with a warning.
    /// Targets that write no memory (disks, the clouds) give the source's.
    pub memory_bytes: u64,
    /// What was not carried, or needs the user's attention, one sentence each.
    pub warnings: Vec<String>,
    /// What the user runs on the target to finish the import (`virsh define ...`), one
    /// command or step per entry.
    pub instructions: Vec<String>,
}

/// True when `dest` names an OVA (`.ova`, any case): `--to xenserver` then writes the OVA
/// XenCenter imports instead of an XVA.
pub fn is_ova_name(dest: &Path) -> bool {
    dest.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ova"))
}

/// Refuses a file name a target chose that is not one plain name inside the output folder.
fn check_member_name(name: &str) -> Result<()> {
    let plain = Path::new(name).components().count() == 1
        && !name.is_empty()
        && !name.contains(['/', '\\'])
        && name != "."
        && name != "..";
    if plain {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "internal error: output file name '{name}' is not a plain file name"
        )))
    }
}

/// The longest stem [`file_stem`] makes: with `-disk999.vmdk` after it, a member name stays
/// within the 100 bytes a tar header's name field holds (an OVA's members must have plain
/// ustar names: VMware's dialect has no PAX headers), and a file name far within the 255
/// bytes of a file system's.
const MAX_STEM: usize = 64;

/// A file name made from a VM name: characters other than letters, digits, `.`, `-` and `_`
/// become `_`, and a long name is cut to [`MAX_STEM`] bytes (the VM keeps its whole name in
/// its description).
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Every character is ASCII now, so any byte is a character boundary.
    let s = s.trim_matches('.');
    let s = s[..s.len().min(MAX_STEM)].trim_end_matches('.');
    if s.is_empty() {
        "vm".to_string()
    } else {
        s.to_string()
    }
}

/// The `-o` of a stream-optimized VMDK for a disk on `kind`.
fn stream_vmdk_options(kind: ControllerKind) -> String {
    format!(
        "subformat=streamOptimized,adapter_type={}",
        vmdk_adapter(kind)
    )
}

/// The VMDK `adapter_type` for a disk's controller (the descriptor's ddb.adapterType must
/// match the controller the OVF puts the disk on; SATA and NVMe disks say `ide`, as VMware's
/// own exports do).
fn vmdk_adapter(kind: ControllerKind) -> &'static str {
    match kind {
        ControllerKind::Scsi(ScsiModel::BusLogic) => "buslogic",
        ControllerKind::Scsi(ScsiModel::Pvscsi) => "pvscsi",
        ControllerKind::Scsi(_) | ControllerKind::VirtioBlk => "lsilogic",
        ControllerKind::Ide | ControllerKind::Sata | ControllerKind::Nvme => "ide",
    }
}

fn format_named(name: &str) -> Result<Format> {
    Registry::builtin().find(name)
}

/// Progress over the whole VM: each disk's progress offset by the disks before it.
struct Overall<'e> {
    on_event: &'e mut dyn FnMut(Event<'_>),
    before: u64,
    total: u64,
}

impl Overall<'_> {
    fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Progress { done, .. } => (self.on_event)(Event::Progress {
                done: self.before + done,
                total: self.total,
            }),
            other => (self.on_event)(other),
        }
    }
}

/// Writes `source` to `dest` for `target`.
pub fn migrate(
    source: &Source,
    dest: &Path,
    target: Target,
    options: &MigrateOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Summary> {
    if source.vm.disks.len() != source.disks.len() {
        return Err(Error::invalid(format!(
            "internal error: the machine lists {} disks but {} were opened",
            source.vm.disks.len(),
            source.disks.len()
        )));
    }
    let mut summary = Summary {
        files: Vec::new(),
        memory_bytes: source.vm.memory_bytes,
        warnings: source.vm.warnings.clone(),
        instructions: Vec::new(),
    };
    // An OVF in VMware's dialect gives each disk an address a VMware machine has (two IDE
    // channels of two, no SCSI unit 7 ...), as a .vmx does: one layout decides both.
    let vmware;
    let vm: &Vm = match target {
        Target::Vsphere | Target::Workstation | Target::Ovf => {
            let (v, moved) = crate::vmconfig::vmx::layout::vmware_placed(&source.vm)?;
            summary.warnings.extend(moved);
            vmware = v;
            &vmware
        }
        _ => &source.vm,
    };
    let total: u64 = source.disks.iter().map(|d| d.virtual_size()).sum();
    let overall = RefCell::new(Overall {
        on_event,
        before: 0,
        total,
    });
    // A package is one file: a symbolic link to it is followed, as convert follows one, so
    // the link's target gets the package and the link stays a link.
    let followed;
    let dest = if target.is_package() && !crate::convert::is_stdio(dest) {
        followed = crate::convert::destination::follow_links(dest)?;
        followed.as_path()
    } else {
        dest
    };
    // What each target writes, for the summary; its warnings come with what it writes.
    summary.memory_bytes = match target {
        Target::Config(config) => config.memory_bytes(vm),
        Target::XenServer if !is_ova_name(dest) => crate::xva::ova_xml_write::memory_bytes(vm).0,
        Target::Vsphere | Target::Workstation | Target::VirtualBox | Target::XenServer => {
            let dialect = match target {
                Target::VirtualBox => Dialect::VirtualBox,
                Target::XenServer => Dialect::XenServer,
                _ => Dialect::Vmware,
            };
            crate::ova::descriptor::memory_mib(vm, dialect).0 << 20
        }
        Target::Ovf | Target::Disks => vm.memory_bytes,
    };
    let stem = file_stem(&vm.name);
    let convert_for = |format: Format, opts: String| ConvertOptions {
        target_format: format,
        target_options: opts,
        threads: options.threads,
        compress: false,
        ..ConvertOptions::default()
    };
    match target {
        Target::XenServer if !is_ova_name(dest) => {
            let xva_options = crate::xva::write::XvaOptions::parse(&options.disk_options)?;
            let disks: Vec<crate::xva::write::XvaDiskSource> = source
                .disks
                .iter()
                .enumerate()
                .map(|(i, image)| crate::xva::write::XvaDiskSource {
                    image: Arc::clone(image),
                    name: format!("{} disk {}", vm.name, i + 1),
                })
                .collect();
            let written = crate::xva::write::write_xva(
                dest,
                vm,
                &disks,
                &crate::xva::write::XvaSettings {
                    options: xva_options,
                    convert: convert_for(crate::formats::raw::FORMAT, String::new()),
                    durability: options.durability,
                    mtime: options.mtime,
                },
                &mut |e| (overall.borrow_mut().on_event)(e),
            )?;
            summary.warnings.extend(written.warnings);
            summary.files.push(dest.to_path_buf());
            let file = if crate::convert::is_stdio(dest) {
                "<the XVA>".to_string()
            } else {
                dest.display().to_string()
            };
            summary.instructions.push(format!(
                "xe vm-import filename={file} sr-uuid=<SR uuid>   (or Xen Orchestra: Import > VM; an XVA, not an OVA: name the destination .ova for XenCenter's OVF import)"
            ));
        }
        Target::Vsphere | Target::Workstation | Target::VirtualBox | Target::XenServer => {
            let dialect = match target {
                Target::VirtualBox => Dialect::VirtualBox,
                Target::XenServer => Dialect::XenServer,
                _ => Dialect::Vmware,
            };
            let mut disks = Vec::new();
            for (i, (disk, image)) in vm.disks.iter().zip(&source.disks).enumerate() {
                let (ext, format, opts) = match dialect {
                    Dialect::XenServer => {
                        ("vhd", format_named("vhd")?, "subformat=dynamic".to_string())
                    }
                    _ => (
                        "vmdk",
                        format_named("vmdk")?,
                        stream_vmdk_options(disk.controller.kind),
                    ),
                };
                disks.push(PackageDisk {
                    member: format!("{stem}-disk{}.{ext}", i + 1),
                    image: Arc::clone(image),
                    convert: convert_for(format, opts),
                });
            }
            let dialect_warnings = RefCell::new(Vec::new());
            let make = |written: &[WrittenDisk]| -> Result<String> {
                let (xml, w) = descriptor(vm, written, dialect)?;
                *dialect_warnings.borrow_mut() = w;
                Ok(xml)
            };
            let plan = PackagePlan {
                descriptor_name: format!("{stem}.ovf"),
                manifest_name: format!("{stem}.mf"),
                algorithm: if dialect == Dialect::XenServer {
                    DigestAlgorithm::Sha1
                } else {
                    DigestAlgorithm::Sha256
                },
                disks,
                descriptor: &make,
                mtime: options.mtime,
            };
            write_ova(dest, &plan, options.durability, &mut |e| {
                (overall.borrow_mut().on_event)(e)
            })?;
            summary.warnings.extend(dialect_warnings.into_inner());
            summary.files.push(dest.to_path_buf());
        }
        Target::Ovf | Target::Config(_) | Target::Disks => {
            let folder = StagedFolder::new(dest)?;
            let absolute = std::path::absolute(dest)
                .map_err(|e| Error::io("cannot make the path absolute", e).with_path(dest))?;
            let plans: Vec<DiskPlan> = match target {
                Target::Config(config) => config.disk_plan(vm, &stem)?,
                Target::Ovf => source
                    .vm
                    .disks
                    .iter()
                    .enumerate()
                    .map(|(i, d)| DiskPlan {
                        file_name: format!("{stem}-disk{}.vmdk", i + 1),
                        format: "vmdk",
                        options: stream_vmdk_options(d.controller.kind),
                    })
                    .collect(),
                _ => {
                    let f = match options.disk_format {
                        Some(f) => f,
                        None => format_named("qcow2")?,
                    };
                    (1..=vm.disks.len())
                        .map(|i| DiskPlan {
                            file_name: format!("{stem}-disk{i}.{}", f.name()),
                            format: f.name(),
                            options: options.disk_options.clone(),
                        })
                        .collect()
                }
            };
            if plans.len() != source.disks.len() {
                return Err(Error::invalid(format!(
                    "internal error: {} disk plans for {} disks",
                    plans.len(),
                    source.disks.len()
                )));
            }
            let mut written = Vec::new();
            let mut placed = Vec::new();
            let mut names = Vec::new();
            for (plan, image) in plans.into_iter().zip(&source.disks) {
                let name = plan.file_name.clone();
                check_member_name(&name)?;
                let path = folder.path().join(&name);
                let convert = convert_for(format_named(plan.format)?, plan.options.clone());
                let mut digest = None;
                let stats = if target == Target::Ovf {
                    let file = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(|e| Error::io("cannot create", e).with_path(dest.join(&name)))?;
                    let sink =
                        FileSink::new_file(Arc::new(file), &dest.join(&name), Durability::Unsafe);
                    // The OVF folder's manifest needs each disk's digest, taken as it is written.
                    let (tee, d) = HashingTee::new(Box::new(sink), DigestAlgorithm::Sha256);
                    digest = Some(d);
                    let sink: Box<dyn Sink> = Box::new(tee);
                    convert_image(image, Output::single(sink), &convert, &mut |e| {
                        overall.borrow_mut().event(e)
                    })?
                } else {
                    // New files in the staged folder, so that a disk of several files (a
                    // VMDK descriptor and its flat extent, as ESXi keeps them) can be written.
                    let mut staging = crate::staging::Staging::with_durability(Durability::Unsafe);
                    let stats = convert_image(
                        image,
                        Output::new_files(&mut staging, &path),
                        &convert,
                        &mut |e| overall.borrow_mut().event(e),
                    )?;
                    let extra: Vec<String> = staging
                        .destinations()
                        .filter(|p| *p != path)
                        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .collect();
                    staging.commit()?;
                    names.extend(extra);
                    stats
                };
                let file_size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                written.push(WrittenDisk {
                    member: name.clone(),
                    file_size,
                    capacity: image.virtual_size(),
                    populated: stats.data_bytes,
                    digest: digest.and_then(|d| d.get()).unwrap_or_default(),
                });
                placed.push(PlacedDisk {
                    staged: path,
                    final_path: absolute.join(&name),
                    capacity: image.virtual_size(),
                    file_size,
                    plan,
                });
                overall.borrow_mut().before += image.virtual_size();
                names.push(name);
            }
            match target {
                Target::Ovf => {
                    let (xml, w) = descriptor(vm, &written, Dialect::Vmware)?;
                    summary.warnings.extend(w);
                    let ovf_name = format!("{stem}.ovf");
                    std::fs::write(folder.path().join(&ovf_name), &xml).map_err(|e| {
                        Error::io("cannot write", e).with_path(dest.join(&ovf_name))
                    })?;
                    let mf = manifest_text(
                        DigestAlgorithm::Sha256,
                        &ovf_name,
                        &digest_of(DigestAlgorithm::Sha256, xml.as_bytes()),
                        &written,
                    );
                    let mf_name = format!("{stem}.mf");
                    std::fs::write(folder.path().join(&mf_name), mf)
                        .map_err(|e| Error::io("cannot write", e).with_path(dest.join(&mf_name)))?;
                    names.insert(0, mf_name);
                    names.insert(0, ovf_name);
                }
                Target::Config(config) => {
                    let out = config.write(vm, &stem, &absolute, &placed)?;
                    summary.warnings.extend(out.warnings);
                    summary.instructions.extend(out.instructions);
                    for (name, bytes) in out.files {
                        check_member_name(&name)?;
                        std::fs::write(folder.path().join(&name), bytes).map_err(|e| {
                            Error::io("cannot write", e).with_path(dest.join(&name))
                        })?;
                        names.push(name);
                    }
                }
                _ => {}
            }
            for image in &source.disks {
                image.finish_checks()?;
            }
            folder.commit(options.durability)?;
            summary.files.extend(names.iter().map(|n| dest.join(n)));
        }
    }
    Ok(summary)
}
