//! Hypervisors' own VM configuration files, each one folder plus one line in [`CONFIGS`].
//!
//! A configuration format ([`VmConfig`]) may be read (it is then a `migrate` source, found by
//! its content) and may be written (it is then a `migrate` target: a folder with the disks in
//! the format that hypervisor runs and the configuration beside them). `migrate` does the
//! rest: it opens the disks a configuration names through the open gate, converts the disks
//! on every core into a staged folder, and renames the folder into place when everything is
//! written.
//!
//! | format | folder | `--to` |
//! |---|---|---|
//! | libvirt domain XML (KVM/QEMU) | [`libvirt`] | `kvm`, `libvirt` |
//! | Proxmox VE `<vmid>.conf` | [`proxmox`] | `proxmox`, `pve` |
//! | Xen xl.cfg | [`xl`] | `xen`, `xl` |
//! | Azure, AWS, Google Cloud images (written only) | [`cloud`] | `azure`, `aws`, `gcp` |
//! | VMware .vmx (Workstation, Fusion, ESXi) | [`vmx`] | `vmx`, `esxi-vmx` |
//! | VirtualBox machine settings (`.vbox`) | [`vbox`] | `virtualbox-vbox`, `vbox` |
//! | XenServer file-SR VHDs and `xe` commands (writer only) | [`xenserver_vhd`] | `xenserver-vhd` |
//! | Hyper-V XML (v5) and .vmcx | [`hyperv`] | `hyperv` |
//! | Virtual PC / Virtual Server .vmc | [`vmc`] | `virtualpc`, `vmc` |
//!
//! To add one: a folder `src/vmconfig/NAME/` with a type implementing [`VmConfig`], and its
//! line in [`CONFIGS`].

pub mod cloud;
pub mod hyperv;
pub mod libvirt;
pub mod proxmox;
pub mod vbox;
pub mod vmc;
pub mod vmx;
pub mod xenserver_vhd;
pub mod xl;

use crate::error::{Error, Result};
use crate::gate::{Gate, Lookup, Role};
use crate::host_file::HostFile;
use crate::vm::Vm;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A configuration as read: the machine and, for each of `vm.disks`, the disk's file as the
/// configuration names it (resolved against the configuration's folder through the gate).
#[derive(Debug, Clone)]
pub struct ConfigVm {
    /// The machine.
    pub vm: Vm,
    /// One name per entry of `vm.disks`, as stored (relative or absolute).
    pub disk_files: Vec<String>,
}

/// How a target wants one disk written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    /// The file's name inside the output folder.
    pub file_name: String,
    /// The image format (a registry name: `qcow2`, `vmdk`, `vhd`, `vhdx`, `vdi`, `raw`).
    pub format: &'static str,
    /// The format's creation options, `key=value,...`.
    pub options: String,
}

/// A disk once written, as the configuration writer sees it.
#[derive(Debug, Clone)]
pub struct PlacedDisk {
    /// The plan it was written to.
    pub plan: DiskPlan,
    /// Where the file is now (inside the staged folder; readable, e.g. for its UUID).
    pub staged: PathBuf,
    /// Where the file will be once the folder is in place (absolute).
    pub final_path: PathBuf,
    /// The disk's virtual size in bytes.
    pub capacity: u64,
    /// The file's size in bytes.
    pub file_size: u64,
}

/// What a configuration writer produced.
#[derive(Debug, Clone, Default)]
pub struct ConfigFiles {
    /// Files to write into the folder beside the disks: name and content.
    pub files: Vec<(String, Vec<u8>)>,
    /// What the target could not carry, one sentence each.
    pub warnings: Vec<String>,
    /// Commands or steps the user runs on the target to finish the import, one per line.
    pub instructions: Vec<String>,
}

/// One hypervisor's configuration format.
pub trait VmConfig: Sync {
    /// The format's short name (`libvirt`, `vmx`), for messages.
    fn name(&self) -> &'static str;

    /// The `migrate --to` names that write this format, with a one-line description for
    /// `--to help`; empty when the format is only read.
    fn targets(&self) -> &'static [(&'static str, &'static str)];

    /// The writer's device mapping (what each model controller, NIC model and firmware
    /// becomes), when the format is written.
    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        None
    }

    /// True when `head` (the file's first 4 KiB at most) is this format. `path` is given for
    /// formats whose content alone is ambiguous (a `.conf` of key: value lines).
    fn probe(&self, _head: &[u8], _path: &Path) -> bool {
        false
    }

    /// Reads a configuration (`bytes`, the whole file, at most [`MAX_CONFIG_BYTES`]);
    /// `path` names it in errors.
    fn read(&self, _bytes: &[u8], path: &Path) -> Result<ConfigVm> {
        Err(
            Error::unsupported(format!("{} configurations are not read", self.name()))
                .with_path(path),
        )
    }

    /// The names to try, in order, for the file of disk `index` of a configuration as
    /// [`VmConfig::read`] gave it (each opened through the gate; the first that exists is
    /// used). The default is `read.disk_files[index]` as stored; formats that store Windows
    /// paths map them to the configuration's folder.
    fn disk_candidates(&self, read: &ConfigVm, index: usize) -> Vec<String> {
        read.disk_files.get(index).cloned().into_iter().collect()
    }

    /// The error when no candidate of disk `index` exists (`tried`: the paths looked at);
    /// `bytes` is the configuration, for formats whose message names its line.
    fn disk_not_found(
        &self,
        _bytes: &[u8],
        path: &Path,
        read: &ConfigVm,
        index: usize,
        tried: &[PathBuf],
    ) -> Error {
        let stored = read.disk_files.get(index).map_or("", String::as_str);
        Error::invalid(format!(
            "the configuration's disk '{stored}' is not there ({})",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_path(path)
    }

    /// How to write each of `vm.disks` (in order); `stem` is a file-name-safe form of the VM's
    /// name.
    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>>;

    /// The guest memory, in bytes, that the configuration [`VmConfig::write`] makes gives
    /// `vm`: the source's, unless the hypervisor takes only some sizes (so that the summary
    /// shows what was written).
    fn memory_bytes(&self, vm: &Vm) -> u64 {
        vm.memory_bytes
    }

    /// The configuration files for `vm` with its disks written as `disks` (in `vm.disks`
    /// order); `folder` is the output folder as it will be named once in place (absolute).
    fn write(
        &self,
        vm: &Vm,
        stem: &str,
        folder: &Path,
        disks: &[PlacedDisk],
    ) -> Result<ConfigFiles>;
}

/// The largest configuration file read (real ones are a few KiB; a .vbox with a long
/// snapshot history some hundred KiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Every configuration format, probed in this order.
pub static CONFIGS: &[&dyn VmConfig] = &[
    &libvirt::Libvirt,
    &vbox::Vbox,
    &hyperv::HyperV,
    &vmc::Vmc,
    &vmx::HOSTED,
    &vmx::ESXI,
    &proxmox::Proxmox,
    &xl::Xl,
    &cloud::Azure,
    &cloud::Aws,
    &cloud::Gcp,
    &xenserver_vhd::XenServerVhd,
];

/// The text of an XML document's head from its root element on: a byte-order mark, the
/// declaration, comments and a DOCTYPE (internal subset included) are skipped, so a probe
/// claims a file whatever prolog it has; the readers then refuse any entity it declares.
pub fn after_xml_prolog(text: &str) -> &str {
    let mut t = text.trim_start_matches('\u{feff}').trim_start();
    loop {
        if let Some(rest) = t.strip_prefix("<?") {
            t = rest.split_once("?>").map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = t.strip_prefix("<!--") {
            t = rest.split_once("-->").map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = t.strip_prefix("<!DOCTYPE") {
            let end = match (rest.find('['), rest.find('>')) {
                (Some(open), Some(close)) if open < close => rest.find("]>").map(|i| i + 2),
                (_, close) => close.map(|i| i + 1),
            };
            t = end.map_or("", |i| &rest[i..]).trim_start();
        } else {
            return t;
        }
    }
}

/// The configuration format whose probe accepts `head`.
pub fn detect(head: &[u8], path: &Path) -> Option<&'static dyn VmConfig> {
    CONFIGS.iter().copied().find(|c| c.probe(head, path))
}

/// The configuration format that writes `--to name`.
pub fn target_named(name: &str) -> Option<&'static dyn VmConfig> {
    CONFIGS.iter().copied().find(|c| {
        c.targets()
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    })
}

/// Where one disk of a configuration is, as [`locate_disks`] found it.
#[derive(Debug)]
pub enum DiskLocation {
    /// The first candidate that exists: its path and the file, opened through the gate.
    Found(PathBuf, Arc<HostFile>),
    /// No candidate exists: the paths looked at.
    NotFound(Vec<PathBuf>),
    /// The gate refused a candidate (a FIFO, a name leaving the folder under `--confine`).
    Refused(Error),
}

/// Looks for each disk of a configuration read from `path`, trying
/// [`VmConfig::disk_candidates`] in order through `gate`. A disk that is not there is not an
/// error here: `info` lists it as not found, `migrate` refuses it with
/// [`VmConfig::disk_not_found`].
pub fn locate_disks(
    config: &dyn VmConfig,
    read: &ConfigVm,
    path: &Path,
    gate: &Gate,
) -> Vec<DiskLocation> {
    (0..read.disk_files.len())
        .map(|i| {
            let mut tried = Vec::new();
            for name in config.disk_candidates(read, i) {
                match gate.open(path, &name, Role::PackageMember) {
                    Ok(Lookup::Opened(f)) => {
                        return DiskLocation::Found(Gate::resolve(path, &name), f);
                    }
                    Ok(Lookup::Missing(p)) => tried.push(p),
                    Err(e) => return DiskLocation::Refused(e),
                }
            }
            DiskLocation::NotFound(tried)
        })
        .collect()
}
