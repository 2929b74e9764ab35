//! The legacy XVA layout, written by XenSource's products before XenServer 4.0 and by appliance
//! builders of that time (rPath rBuilder), which XAPI still imports ("Zurich/Geneva-style" in
//! its sources).
//!
//! `ova.xml` is not XML-RPC but `<appliance version="0.1">` holding one `<vm>` (`<label>`,
//! `<shortdesc>`, `<config mem_set vcpus>`, `<hacks is_hvm kernel_boot_cmdline>` and a
//! `<vbd device function mode vdi>` per disk) and a `<vdi name size source type variety>` per
//! disk image. A VDI's `source` is a `file://` URL naming a folder beside ova.xml; its `type`
//! is `dir-gzipped-chunks`: the folder holds gzip files (`chunk-000000000.gz` ...), each
//! 10^9 bytes when inflated (the last fewer), whose inflated contents concatenated are the
//! disk. Exported as one file, all of it is a tar with ova.xml first.
//!
//! Sources: XAPI's description of the format ("Legacy VM Import Format", in its VM
//! import/export documentation), the reader XAPI imports it with (`xva.ml` for ova.xml,
//! `Stream_vdi.recv_all_zurich` for the chunks), and rPath rBuilder's exporter tests (the
//! members it wrote: `ova.xml`, `xvda/chunk-000000000.gz` ...).
//!
//! Rules, as XAPI's importer applies them, each an error naming the file: `version` is `0.1`;
//! `<label>`, `<shortdesc>` and `<config>` with `mem_set` and `vcpus` are present; a VBD's
//! `mode` is `r`, `w` or `rw` and its `vdi` names a `<vdi>` of the appliance; a VDI's `source`
//! is a `file://` URL (here also: relative, without `..`) and its `size` a number; a disk's
//! chunks are the members under its folder, their names strictly increasing in archive order;
//! each chunk is inflated on its own and the results concatenated; the disk is that data
//! followed by zeros up to the VDI's size (XAPI writes into a new volume of that size), and
//! data past the size is an error (XAPI's write past the volume's end). Unlike XAPI, a missing
//! `<hacks>` means HVM and a missing `variety` is accepted: the documentation shows both so.
//!
//! Gzip has no index, so a legacy disk is inflated once, when opened, into an unnamed
//! temporary file ([`GzipStorage`]) and read from there, as a compressed XVA is.

use super::ova_xml::{Description, ExportKind, PV_DRIVERS, PV_GUEST, Version, XvaDisk};
use crate::error::{Error, Result};
use crate::gate::{Gate, Lookup, Role};
use crate::ovf::xml::{self, Element, Ns};
use crate::package::{Codec, GzipStorage, TarIndex};
use crate::storage::Storage;
use crate::vm::{Cpus, Disk, DiskSource, Vm};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The VDI `type` XAPI imports (the only one the format defines).
pub const DISK_TYPE: &str = "dir-gzipped-chunks";

/// True when the XML in `bytes` has `<appliance>` as its root element: a legacy ova.xml.
pub fn is_appliance(bytes: &[u8]) -> bool {
    // The first tag that is not the XML declaration, a comment or a DOCTYPE.
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| b == b'<') {
        rest = &rest[at..];
        if rest.starts_with(b"<!--") {
            match rest.windows(3).position(|w| w == b"-->") {
                Some(end) => rest = &rest[end + 3..],
                None => return false,
            }
            continue;
        }
        if rest.starts_with(b"<?") || rest.starts_with(b"<!") {
            rest = &rest[1..];
            continue;
        }
        let tag = &rest[1..];
        return tag.starts_with(b"appliance")
            && tag
                .get(9)
                .is_some_and(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/');
    }
    false
}

/// Parses a legacy ova.xml (`bytes`, named `name` in messages) into the VM model.
pub fn parse(bytes: &[u8], name: &str) -> Result<Description> {
    let root = xml::parse(bytes, name)?;
    let bad = |what: String| Error::corrupt(format!("ova.xml: {what}")).with_path(name);
    if root.name != "appliance" {
        return Err(bad(format!(
            "the root element is <{}>, not <appliance>",
            root.name
        )));
    }
    let version = root.attr(Ns::None, "version").unwrap_or("");
    if version != "0.1" {
        return Err(Error::unsupported(format!(
            "ova.xml: a legacy XVA of version '{version}' (XAPI imports version 0.1 only)"
        ))
        .with_path(name));
    }
    let attr = |e: &Element, key: &str| -> Result<String> {
        e.attr(Ns::None, key)
            .map(str::to_string)
            .ok_or_else(|| bad(format!("<{}> has no '{key}' attribute", e.name)))
    };
    let number = |e: &Element, key: &str| -> Result<u64> {
        let text = attr(e, key)?;
        text.trim().parse::<u64>().map_err(|_| {
            bad(format!(
                "<{}> {key}=\"{text}\" is not a whole number",
                e.name
            ))
        })
    };

    // The VDIs, by name.
    let mut vdis: Vec<(String, XvaDisk)> = Vec::new();
    for e in root.children(Ns::None, "vdi") {
        let vdi_name = attr(e, "name")?;
        let size = number(e, "size")?;
        let source = attr(e, "source")?;
        let folder = source_folder(&source)
            .ok_or_else(|| bad(format!("VDI '{vdi_name}' has source '{source}': XAPI reads only file:// URLs of a folder beside ova.xml")))?;
        let kind = attr(e, "type")?;
        if kind != DISK_TYPE {
            return Err(Error::unsupported(format!(
                "ova.xml: VDI '{vdi_name}' is of type '{kind}'; the legacy format has only '{DISK_TYPE}'"
            ))
            .with_path(name));
        }
        if vdis.iter().any(|(n, _)| *n == vdi_name) {
            return Err(bad(format!("two VDIs are named '{vdi_name}'")));
        }
        vdis.push((
            vdi_name.clone(),
            XvaDisk {
                vdi: folder,
                name: Some(vdi_name),
                userdevice: 0,
                device: None,
                virtual_size: size,
                bootable: false,
            },
        ));
    }

    let vms: Vec<&Element> = root.children(Ns::None, "vm").collect();
    let Some(vm_element) = vms.first() else {
        return Err(bad("the appliance holds no <vm>".into()));
    };
    let child_text = |e: &Element, child: &str| -> Result<String> {
        e.child(Ns::None, child)
            .map(|c| c.text.trim().to_string())
            .ok_or_else(|| bad(format!("<vm> has no <{child}>")))
    };
    let label = child_text(vm_element, "label")?;
    let mut vm = Vm::new(if label.is_empty() { "vm".into() } else { label });
    if vms.len() > 1 {
        vm.warn(format!(
            "ova.xml holds {} VMs; the first, '{}', is read",
            vms.len(),
            vm.name
        ));
    }
    let description = child_text(vm_element, "shortdesc")?;
    vm.description = (!description.is_empty()).then_some(description);
    let config = vm_element
        .child(Ns::None, "config")
        .ok_or_else(|| bad("<vm> has no <config>".into()))?;
    vm.memory_bytes = number(config, "mem_set")?;
    let vcpus = number(config, "vcpus")?;
    vm.cpus = Cpus {
        count: vcpus.clamp(1, u64::from(u32::MAX)) as u32,
        cores_per_socket: None,
    };
    let distribution = [
        config.attr(Ns::None, "distrib"),
        config.attr(Ns::None, "distrib_version"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    if !distribution.is_empty() {
        vm.guest_os.description = Some(distribution);
    }
    let hacks = vm_element.child(Ns::None, "hacks");
    let pv = hacks
        .and_then(|h| h.attr(Ns::None, "is_hvm"))
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("true"));
    if pv {
        vm.warn(PV_GUEST);
        if let Some(cmdline) = hacks
            .and_then(|h| h.attr(Ns::None, "kernel_boot_cmdline"))
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            vm.warn(format!(
                "the kernel command line '{cmdline}' (given through Xen's bootloader) is not carried"
            ));
        }
    }

    let mut disks = Vec::new();
    for (position, vbd) in vm_element.children(Ns::None, "vbd").enumerate() {
        let device = attr(vbd, "device")?;
        let vdi_name = attr(vbd, "vdi")?;
        let mode = attr(vbd, "mode")?;
        let read_only = match mode.to_ascii_lowercase().as_str() {
            "w" | "rw" => false,
            "r" => true,
            other => {
                return Err(bad(format!(
                    "VBD {device} has mode '{other}' (XAPI knows r, w and rw)"
                )));
            }
        };
        let Some((_, vdi)) = vdis.iter().find(|(n, _)| *n == vdi_name) else {
            return Err(bad(format!(
                "VBD {device} names VDI '{vdi_name}', which the appliance does not hold"
            )));
        };
        let (userdevice, partition) = device_number(&device).unwrap_or_else(|| {
            vm.warn(format!(
                "VBD device '{device}' is not a Xen, SCSI or IDE disk name: placed as disk {position}"
            ));
            (position as u32, false)
        });
        if partition {
            vm.warn(format!(
                "VBD {device} is a partition: its VDI holds a file system, not a partitioned disk, which another hypervisor cannot boot without a bootloader"
            ));
        }
        if read_only {
            vm.warn(format!(
                "VBD {device} is read-only in the source: carried as an ordinary disk"
            ));
        }
        let (controller, unit) = super::mapping::place(userdevice);
        let bootable = attr(vbd, "function")
            .map(|f| f.eq_ignore_ascii_case("root"))
            .unwrap_or(false);
        vm.disks.push(Disk {
            source: DiskSource::PackageFile {
                id: vdi.name.clone(),
                href: vdi.vdi.clone(),
            },
            capacity_bytes: Some(vdi.virtual_size),
            controller,
            unit,
            boot_order: None,
        });
        disks.push(XvaDisk {
            userdevice,
            device: Some(device),
            bootable,
            ..vdi.clone()
        });
    }
    if disks
        .iter()
        .enumerate()
        .any(|(i, d)| disks[..i].iter().any(|e| e.userdevice == d.userdevice))
    {
        return Err(bad("two VBDs name the same device".into()));
    }
    for (vdi_name, _) in &vdis {
        if !disks.iter().any(|d| d.name.as_ref() == Some(vdi_name)) {
            vm.warn(format!(
                "VDI '{vdi_name}' is attached to no VBD of the VM: not carried"
            ));
        }
    }
    if !pv && !vm.disks.is_empty() {
        let boot = disks.iter().position(|d| d.bootable).unwrap_or(0);
        vm.disks[boot].boot_order = Some(0);
        vm.warn(PV_DRIVERS);
    }
    Ok(Description {
        kind: ExportKind::Legacy,
        version: Version::default(),
        vm,
        disks,
    })
}

/// The folder a VDI's `source` URL names, relative to ova.xml: `file://xvda` is `xvda`.
/// `None` for other schemes, absolute paths, `..` and empty names.
fn source_folder(source: &str) -> Option<String> {
    let path = source.strip_prefix("file://")?;
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if path.starts_with('/') || parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// The disk number of a Linux device name (`xvda`, `sdb`, `hdc`: 0, 1, 2; `sdaa` is 26), and
/// whether it names a partition (`sda1`).
fn device_number(device: &str) -> Option<(u32, bool)> {
    let rest = ["xvd", "sd", "hd"]
        .iter()
        .find_map(|p| device.strip_prefix(p))?;
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    let (name, digits) = rest.split_at(letters);
    if name.is_empty() || name.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Bijective base 26, as Linux names disks: a..z, then aa, ab ...
    let number = name
        .bytes()
        .fold(0u32, |n, b| n * 26 + u32::from(b - b'a') + 1)
        - 1;
    Some((number, !digits.is_empty()))
}

/// Where a legacy export's gzip files are.
#[derive(Debug, Clone)]
pub enum ChunkSource {
    /// Members of the export's tar.
    Tar(Arc<TarIndex>),
    /// Files in the folders beside the `ova.xml` at this path (an export as the format
    /// describes it: a folder), each opened through the confined gate as a package file.
    Folder(PathBuf),
}

/// The gzip files of one legacy disk, checked, not yet inflated.
#[derive(Debug)]
pub struct LegacyDisk {
    source: ChunkSource,
    /// Each chunk's name (a member name, or a path relative to ova.xml) and stored size.
    chunks: Vec<(String, u64)>,
    virtual_size: u64,
    name: PathBuf,
}

impl LegacyDisk {
    /// The disk `disk` whose chunks are `chunks` (names and stored sizes, in archive order)
    /// in `source`. `name` names it in messages. Chunk names must increase strictly, as XAPI
    /// requires.
    pub fn new(
        source: ChunkSource,
        disk: &XvaDisk,
        chunks: Vec<(String, u64)>,
        name: PathBuf,
    ) -> Result<LegacyDisk> {
        for pair in chunks.windows(2) {
            if pair[1].0 <= pair[0].0 {
                return Err(Error::corrupt(format!(
                    "chunk '{}' comes after '{}': a legacy XVA's chunks must increase in name, as XAPI imports them",
                    pair[1].0, pair[0].0
                ))
                .with_path(&name));
            }
        }
        if chunks.is_empty() && disk.virtual_size > 0 {
            return Err(Error::corrupt(format!(
                "no chunk of disk '{}' is in the export",
                disk.vdi
            ))
            .with_path(&name));
        }
        Ok(LegacyDisk {
            source,
            chunks,
            virtual_size: disk.virtual_size,
            name,
        })
    }

    /// The disk's size (the VDI's).
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// The bytes its chunks take in the export (compressed).
    pub fn stored_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.1).sum()
    }

    /// How many chunks it has.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Inflates the chunks, one after the other, into an unnamed temporary file: the disk.
    pub fn inflate(&self) -> Result<GzipStorage> {
        let parts = self
            .chunks
            .iter()
            .map(|(chunk, _)| -> Result<Arc<dyn Storage>> {
                match &self.source {
                    ChunkSource::Tar(index) => match index.member(chunk) {
                        Some(m) => Ok(Arc::new(index.window(m)?)),
                        None => Err(index.missing(chunk)),
                    },
                    ChunkSource::Folder(ova_xml) => {
                        match Gate::confined().open(ova_xml, chunk, Role::PackageMember)? {
                            Lookup::Opened(f) => Ok(f),
                            Lookup::Missing(p) => Err(Error::invalid(format!(
                                "chunk '{chunk}' is no longer there ({})",
                                p.display()
                            ))
                            .with_path(ova_xml)),
                        }
                    }
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let parts: Vec<&dyn Storage> = parts.iter().map(|p| p.as_ref()).collect();
        GzipStorage::inflate_parts(
            Codec::Gzip,
            &parts,
            Some(self.virtual_size),
            None,
            &self.name,
        )?
        .padded_to(self.virtual_size)
    }
}

/// The chunk files of each disk folder in `folders` beside the ova.xml at `ova_xml`, in name
/// order, as (path relative to ova.xml, size). A folder that is not there has no chunks; an
/// entry that is not a regular file is refused, as the gate refuses it.
pub fn list_folders<'a>(
    ova_xml: &Path,
    folders: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, Vec<(String, u64)>>> {
    let base = crate::gate::folder_of(ova_xml);
    let mut out = HashMap::new();
    for folder in folders {
        let dir = base.join(folder);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("cannot list the disk's folder", e).with_path(&dir)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io("cannot list the disk's folder", e).with_path(&dir))?;
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("cannot read", e).with_path(entry.path()))?;
            let Some(file) = entry.file_name().to_str().map(str::to_string) else {
                return Err(Error::invalid(format!(
                    "'{}' has a name that is not UTF-8",
                    entry.file_name().to_string_lossy()
                ))
                .with_path(&dir));
            };
            if !meta.is_file() {
                return Err(Error::refused(format!(
                    "'{folder}/{file}' is not a regular file; a legacy XVA's chunks are read only from regular files"
                ))
                .with_path(ova_xml));
            }
            files.push((format!("{folder}/{file}"), meta.len()));
        }
        files.sort();
        out.insert(folder.to_string(), files);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_number_as_linux_does() {
        assert_eq!(device_number("xvda"), Some((0, false)));
        assert_eq!(device_number("sdb"), Some((1, false)));
        assert_eq!(device_number("hdd"), Some((3, false)));
        assert_eq!(device_number("sda1"), Some((0, true)));
        assert_eq!(device_number("xvdz"), Some((25, false)));
        assert_eq!(device_number("sdaa"), Some((26, false)));
        assert_eq!(device_number("sdba"), Some((52, false)));
        assert_eq!(device_number("vda"), None);
        assert_eq!(device_number("sd"), None);
        assert_eq!(device_number("sda1x"), None);
    }

    #[test]
    fn sources_are_folders_beside_ova_xml() {
        assert_eq!(source_folder("file://xvda").as_deref(), Some("xvda"));
        assert_eq!(
            source_folder("file://./disks/sda/").as_deref(),
            Some("disks/sda")
        );
        assert_eq!(source_folder("file:///etc"), None);
        assert_eq!(source_folder("file://../x"), None);
        assert_eq!(source_folder("http://x/y"), None);
        assert_eq!(source_folder("file://"), None);
    }

    #[test]
    fn the_root_element_tells_a_legacy_ova_xml() {
        assert!(is_appliance(
            b"<?xml version=\"1.0\" ?>\n    <appliance version=\"0.1\">"
        ));
        assert!(is_appliance(b"<!-- x --><appliance>"));
        assert!(!is_appliance(
            b"<!-- <appliance> --><value><struct/></value>"
        ));
        assert!(!is_appliance(
            b"<?xml version=\"1.0\"?><value><struct/></value>"
        ));
        assert!(!is_appliance(b"<appliances>"));
        assert!(!is_appliance(b"no xml"));
    }
}
