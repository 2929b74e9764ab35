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
//! | `xenserver`, `xcp-ng` | an OVA XenCenter imports, dynamic VHD disks |
//! | `kvm` | a folder: qcow2 disks and a libvirt domain XML (`virsh define`) |
//! | `ovf` | a folder: the OVF (VMware dialect), its manifest, stream-optimized VMDK disks |
//! | `disks` | a folder of the disks alone, in the `-O` format (qcow2 by default) |
//!
//! Output is atomic: an OVA is staged beside its destination and renamed when complete, a
//! folder is written hidden and renamed; a failure leaves nothing. Progress is reported over
//! the whole VM. What the target cannot carry is in [`Summary::warnings`], with the source's
//! own warnings.

pub mod describe;
pub mod libvirt;

pub use describe::Description;

use crate::convert::{ConvertOptions, Event, convert_image};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::gate::{Lookup, Role};
use crate::host_file::Durability;
use crate::host_file::HostFile;
use crate::image::{Image, OpenOptions};
use crate::ova::descriptor::{Dialect, descriptor};
use crate::ova::open::Package;
use crate::ova::write::{
    PackageDisk, PackagePlan, WrittenDisk, digest_of, manifest_text, write_ova,
};
use crate::registry::Registry;
use crate::sink::{Digest, DigestAlgorithm, FileSink, HashingTee, Output, Sink};
use crate::staging::StagedFolder;
use crate::storage::{Storage, StorageExt};
use crate::vm::{ControllerKind, ScsiModel, Vm};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a VM is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// VMware vSphere / ESXi: an OVA.
    Vsphere,
    /// VMware Workstation / Fusion: an OVA.
    Workstation,
    /// Oracle VirtualBox: an OVA.
    VirtualBox,
    /// XenServer / XCP-ng through XenCenter's OVF import: an OVA with VHD disks.
    XenServer,
    /// KVM/QEMU under libvirt: a folder with qcow2 disks and a domain XML.
    Kvm,
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
    ("kvm", Target::Kvm),
    ("ovf", Target::Ovf),
    ("disks", Target::Disks),
];

impl Target {
    /// The target called `name`; an unknown name is an error listing the known ones.
    pub fn parse(name: &str) -> Result<Target> {
        TARGETS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown target '{name}'; known targets: {}",
                    TARGETS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// True when the target is one OVA file (otherwise a folder).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// An XVA (plain, gzip or zstd).
    Xva,
    /// An OVA or an OVF descriptor.
    Package,
    /// A libvirt domain XML.
    Libvirt,
    /// A disk image (described on the command line).
    Disk,
}

/// What `path` holds, for `info` and `migrate` to choose how to read it. The XVA probe comes
/// first: an XVA is a tar too.
pub fn source_kind(path: &Path) -> Result<SourceKind> {
    let file = HostFile::open(path)?;
    if crate::xva::probe(&file).is_some() {
        return Ok(SourceKind::Xva);
    }
    if crate::ova::open::probe(&file).is_some() {
        return Ok(SourceKind::Package);
    }
    let mut head = [0u8; 4096];
    let n = file.read_at_most(&mut head, 0)?;
    if libvirt::probe(&head[..n]) {
        return Ok(SourceKind::Libvirt);
    }
    Ok(SourceKind::Disk)
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
            _ => SourceKind::Disk,
        };
        if kind != SourceKind::Disk && !description.is_empty() {
            return Err(Error::invalid(
                "the source describes its VM: --name, --cpus, --cores-per-socket, --memory, --firmware, --os, --disk-bus and --nic apply to bare disk images",
            )
            .with_path(&paths[0]));
        }
        match kind {
            SourceKind::Xva => Source::from_xva(&paths[0], options),
            SourceKind::Package => Source::from_package(&paths[0], options),
            SourceKind::Libvirt => Source::from_libvirt(&paths[0], options),
            SourceKind::Disk => Source::from_disks(paths, description, options),
        }
    }

    /// The VM a libvirt domain XML describes, its disk files opened through `options`' gate
    /// (they are named by the description, not by the user).
    pub fn from_libvirt(path: &Path, options: &OpenOptions) -> Result<Source> {
        let file = HostFile::open(path)?;
        if file.len() > 16 << 20 {
            return Err(Error::invalid("a domain XML of more than 16 MiB").with_path(path));
        }
        let mut bytes = vec![0u8; file.len() as usize];
        file.read_exact_at(&mut bytes, 0)?;
        let domain = libvirt::parse_domain(&bytes, &path.to_string_lossy())?;
        let mut vm = domain.vm;
        let mut disks = Vec::new();
        for (d, name) in vm.disks.iter_mut().zip(&domain.disk_files) {
            let text = name.to_string_lossy();
            let storage = match options.gate.open(path, &text, Role::PackageMember)? {
                Lookup::Opened(f) => f,
                Lookup::Missing(p) => {
                    return Err(Error::invalid(format!(
                        "the domain's disk '{text}' is not there ({})",
                        p.display()
                    ))
                    .with_path(path));
                }
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
    /// template's empty disk) is left out with a warning.
    pub fn from_package(path: &Path, options: &OpenOptions) -> Result<Source> {
        let package = Package::open(path)?;
        let mut vm = package.descriptor().vm.clone();
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

/// How to migrate.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// `-O`: the disk format of the `disks` target (default qcow2); other targets have theirs.
    pub disk_format: Option<Format>,
    /// `-o`: options for the disks of the `disks` target.
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
    /// What was not carried, or needs the user's attention, one sentence each.
    pub warnings: Vec<String>,
}

/// A file name made from a VM name: characters other than letters, digits, `.`, `-` and `_`
/// become `_`.
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
    let s = s.trim_matches('.').to_string();
    if s.is_empty() { "vm".to_string() } else { s }
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
        warnings: source.vm.warnings.clone(),
    };
    let total: u64 = source.disks.iter().map(|d| d.virtual_size()).sum();
    let overall = RefCell::new(Overall {
        on_event,
        before: 0,
        total,
    });
    let stem = file_stem(&source.vm.name);
    let convert_for = |format: Format, opts: String| ConvertOptions {
        target_format: format,
        target_options: opts,
        threads: options.threads,
        compress: false,
        ..ConvertOptions::default()
    };
    match target {
        Target::Vsphere | Target::Workstation | Target::VirtualBox | Target::XenServer => {
            let dialect = match target {
                Target::VirtualBox => Dialect::VirtualBox,
                Target::XenServer => Dialect::XenServer,
                _ => Dialect::Vmware,
            };
            let mut disks = Vec::new();
            for (i, (disk, image)) in source.vm.disks.iter().zip(&source.disks).enumerate() {
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
                let (xml, w) = descriptor(&source.vm, written, dialect)?;
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
        Target::Ovf | Target::Kvm | Target::Disks => {
            let folder = StagedFolder::new(dest)?;
            let (format, opts, ext) = match target {
                Target::Ovf => (format_named("vmdk")?, None, "vmdk".to_string()),
                Target::Kvm => (format_named("qcow2")?, Some(String::new()), "qcow2".into()),
                _ => {
                    let f = match options.disk_format {
                        Some(f) => f,
                        None => format_named("qcow2")?,
                    };
                    (f, Some(options.disk_options.clone()), f.name().to_string())
                }
            };
            let mut written = Vec::new();
            let mut names = Vec::new();
            for (i, (disk, image)) in source.vm.disks.iter().zip(&source.disks).enumerate() {
                let name = format!("{stem}-disk{}.{ext}", i + 1);
                let path = folder.path().join(&name);
                let opts = opts
                    .clone()
                    .unwrap_or_else(|| stream_vmdk_options(disk.controller.kind));
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| Error::io("cannot create", e).with_path(dest.join(&name)))?;
                let sink =
                    FileSink::new_file(Arc::new(file), &dest.join(&name), Durability::Unsafe);
                // The OVF folder's manifest needs each disk's digest, taken as it is written.
                let (sink, digest): (Box<dyn Sink>, Option<Digest>) = if target == Target::Ovf {
                    let (tee, digest) = HashingTee::new(Box::new(sink), DigestAlgorithm::Sha256);
                    (Box::new(tee), Some(digest))
                } else {
                    (Box::new(sink), None)
                };
                let stats = convert_image(
                    image,
                    Output::single(sink),
                    &convert_for(format, opts),
                    &mut |e| overall.borrow_mut().event(e),
                )?;
                let written_disk = WrittenDisk {
                    member: name.clone(),
                    file_size: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                    capacity: image.virtual_size(),
                    populated: stats.data_bytes,
                    digest: digest.and_then(|d| d.get()).unwrap_or_default(),
                };
                overall.borrow_mut().before += image.virtual_size();
                written.push(written_disk);
                names.push(name);
            }
            match target {
                Target::Ovf => {
                    let (xml, w) = descriptor(&source.vm, &written, Dialect::Vmware)?;
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
                Target::Kvm => {
                    let absolute = std::path::absolute(dest).map_err(|e| {
                        Error::io("cannot make the path absolute", e).with_path(dest)
                    })?;
                    let paths: Vec<PathBuf> = names.iter().map(|n| absolute.join(n)).collect();
                    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
                    let (buses, why) = libvirt::buses_for(&source.vm);
                    let (xml, w) = libvirt::domain_xml(&source.vm, &refs, buses);
                    summary.warnings.extend(why);
                    summary.warnings.extend(w);
                    let xml_name = format!("{stem}.xml");
                    std::fs::write(folder.path().join(&xml_name), xml).map_err(|e| {
                        Error::io("cannot write", e).with_path(dest.join(&xml_name))
                    })?;
                    names.push(xml_name);
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
