//! VirtualBox machine settings (`.vbox`): read as a `migrate` source, written for
//! `--to virtualbox-vbox` as a folder VirtualBox registers (`VBoxManage registervm`).
//!
//! - [`self::read`]: the machine, its controllers and attachments, its media through the
//!   MediaRegistry (differencing chains in `Snapshots/`), NICs, firmware;
//! - [`self::write`]: the `Machine` element, shared by the `.vbox` file and the `vbox:Machine`
//!   section of the OVA we write for VirtualBox (one writer, two uses), and the settings file.
//!
//! The vocabulary below (controller types, adapter types, attachment kinds) is VirtualBox's,
//! as its settings schema (VirtualBox-settings.xsd) and Settings.cpp spell it.

pub mod mapping;
pub mod read;
pub mod write;

use crate::error::{Error, Result};
use crate::host_file::HostFile;
use crate::vm::{ControllerKind, NicModel, Vm};
use crate::vmconfig::{ConfigFiles, ConfigVm, DiskPlan, PlacedDisk, VmConfig};
use std::path::Path;

/// What a `StorageController type` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// A disk/DVD controller of the model.
    Storage(ControllerKind),
    /// The floppy controller (I82078).
    Floppy,
    /// USB mass storage.
    Usb,
}

/// A `StorageController type` as the model sees it; `None` for a type VirtualBox does not
/// have.
pub fn bus_from_type(ty: &str) -> Option<Bus> {
    Some(match ty {
        "I82078" => Bus::Floppy,
        "USB" => Bus::Usb,
        t => Bus::Storage(mapping::READ.controller_named(t)?),
    })
}

/// An `Adapter type` as the model sees it.
pub fn nic_model_from_type(ty: &str) -> NicModel {
    mapping::READ
        .nic_named(ty)
        .unwrap_or_else(|| NicModel::Other(ty.to_string()))
}

/// The adapter types VirtualBox has (VirtualBox-settings.xsd `TNetworkAdapterType`).
pub const ADAPTER_TYPES: &[&str] = &[
    "Am79C970A",
    "Am79C973",
    "Am79C960",
    "82540EM",
    "82543GC",
    "82545EM",
    "virtio",
    "NE1000",
    "NE2000",
    "WD8003",
    "WD8013",
    "ELNK2",
    "ELNK1",
];

/// A NIC's attachment elements and the label the model's `network` carries for each: `NAT`
/// alone, the others `Label:name` (`Bridged:eth0`, `HostOnly:vboxnet0`, `Internal:intnet`).
/// The labels are the ones VirtualBox writes as an OVF `Connection`.
pub const NET_ATTACHMENTS: &[(&str, &str)] = &[
    ("NAT", "NAT"),
    ("BridgedInterface", "Bridged"),
    ("InternalNetwork", "Internal"),
    ("HostOnlyInterface", "HostOnly"),
    ("GenericInterface", "Generic"),
    ("NATNetwork", "NATNetwork"),
    ("HostOnlyNetwork", "HostOnlyNetwork"),
    ("CloudNetwork", "Cloud"),
];

/// True when `head` starts (after a declaration and comments) with a `<VirtualBox` element.
pub fn probe(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
    super::after_xml_prolog(&text)
        .strip_prefix("<VirtualBox")
        .is_some_and(|r| r.starts_with([' ', '>', '\n', '\t', '\r']))
}

/// VirtualBox's machine settings as a [`VmConfig`].
pub struct Vbox;

impl VmConfig for Vbox {
    fn name(&self) -> &'static str {
        "vbox"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&mapping::WRITE)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "virtualbox-vbox",
                "a folder: VDI disks and a VirtualBox .vbox (VBoxManage registervm)",
            ),
            ("vbox", "the same as virtualbox-vbox"),
        ]
    }

    fn probe(&self, head: &[u8], _path: &Path) -> bool {
        probe(head)
    }

    fn read(&self, bytes: &[u8], path: &Path) -> Result<ConfigVm> {
        read::parse(bytes, &path.to_string_lossy())
    }

    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
        Ok((1..=vm.disks.len())
            .map(|i| DiskPlan {
                file_name: format!("{stem}-disk{i}.vdi"),
                format: "vdi",
                options: String::new(),
            })
            .collect())
    }

    fn memory_bytes(&self, vm: &Vm) -> u64 {
        write::ram_size(vm).0 << 20
    }

    fn write(
        &self,
        vm: &Vm,
        stem: &str,
        folder: &Path,
        disks: &[PlacedDisk],
    ) -> Result<ConfigFiles> {
        // The registry must name each VDI by the UUID in its header: read it back.
        let mut media = Vec::new();
        for d in disks {
            let file = HostFile::open(&d.staged)?;
            let header = crate::formats::vdi::header::Header::read(&file)?;
            media.push(write::Medium {
                uuid: header.uuid_create,
                location: d.plan.file_name.clone(),
            });
        }
        let (xml, warnings) = write::settings_file(vm, &media)?;
        let name = format!("{stem}.vbox");
        if name.len() > 255 {
            return Err(Error::invalid(format!(
                "the settings file name '{name}' is too long"
            )));
        }
        Ok(ConfigFiles {
            instructions: vec![format!(
                "VBoxManage registervm '{}'",
                folder.join(&name).display()
            )],
            files: vec![(name, xml.into_bytes())],
            warnings,
        })
    }
}
