//! Microsoft Hyper-V: VM configurations read (XML version 5 and binary .vmcx) and written
//! (`--to hyperv`: VHDX disks and a PowerShell script that creates the VM).
//!
//! - `tree.rs`: the key tree both encodings hold;
//! - `xml.rs`: UTF-16 XML (version 5) into the tree;
//! - `vmcx.rs`: the binary key store (.vmcx) into the tree;
//! - `read.rs`: the tree into the VM model;
//! - `write.rs`: the PowerShell script.

pub mod mapping;
pub mod read;
pub mod tree;
pub mod vmcx;
pub mod write;
pub mod xml;

use crate::error::Result;
use crate::vm::Vm;
use crate::vmconfig::{ConfigFiles, ConfigVm, DiskPlan, PlacedDisk, VmConfig};
use std::path::Path;

/// Hyper-V as a [`VmConfig`].
pub struct HyperV;

/// True when `head` is a Hyper-V XML configuration (root `<configuration>`, UTF-16 or UTF-8)
/// or a binary store.
pub fn probe(head: &[u8]) -> bool {
    if vmcx::probe(head) {
        return true;
    }
    // The head may end inside a UTF-16 unit: decode an even prefix, lossily.
    let text = if head.starts_with(&[0xff, 0xfe]) || head.starts_with(b"<\0") {
        let body = head.strip_prefix(&[0xff, 0xfe]).unwrap_or(head);
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(head).into_owned()
    };
    let t = super::after_xml_prolog(&text);
    t.starts_with("<configuration>") && (t.contains("type=\"") || t.contains("<_"))
}

/// Reads a Hyper-V configuration, XML or .vmcx by its content. `name` names it in errors.
pub fn parse(bytes: &[u8], name: &str) -> Result<ConfigVm> {
    let tree = if vmcx::probe(bytes) {
        vmcx::parse(bytes, name)?
    } else {
        xml::parse(bytes, name)?
    };
    read::read(&tree, Path::new(name))
}

impl VmConfig for HyperV {
    fn name(&self) -> &'static str {
        "hyperv"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&mapping::WRITE)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "hyperv",
            "a folder: VHDX disks and a PowerShell script that creates the VM (New-VM)",
        )]
    }

    fn probe(&self, head: &[u8], _path: &Path) -> bool {
        probe(head)
    }

    fn read(&self, bytes: &[u8], path: &Path) -> Result<ConfigVm> {
        parse(bytes, &path.to_string_lossy())
    }

    fn disk_candidates(&self, config: &ConfigVm, index: usize) -> Vec<String> {
        config
            .disk_files
            .get(index)
            .map(|stored| read::disk_candidates(stored))
            .unwrap_or_default()
    }

    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
        write::disk_plan(vm, stem)
    }

    fn memory_bytes(&self, vm: &Vm) -> u64 {
        write::startup_memory(vm).0
    }

    fn write(
        &self,
        vm: &Vm,
        stem: &str,
        _folder: &Path,
        disks: &[PlacedDisk],
    ) -> Result<ConfigFiles> {
        write::write(vm, stem, disks)
    }
}
