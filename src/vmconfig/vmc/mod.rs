//! Microsoft Virtual PC (2004, 2007) and Virtual Server (2005, 2005 R2) .vmc files: read as a
//! `migrate` source, written by `--to virtualpc` (a .vmc and dynamic VHD disks).
//!
//! - `read.rs`: the .vmc into the VM model;
//! - `write.rs`: the VM model into a .vmc, within what those products take.

pub mod mapping;
pub mod read;
pub mod write;

use crate::error::Result;
use crate::vm::Vm;
use crate::vmconfig::{ConfigFiles, ConfigVm, DiskPlan, PlacedDisk, VmConfig};
use std::path::Path;

/// Virtual PC / Virtual Server as a [`VmConfig`].
pub struct Vmc;

/// True when `head` is a .vmc: UTF-16 (or UTF-8) XML whose root is `<preferences>`.
pub fn probe(head: &[u8]) -> bool {
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
    t.starts_with("<preferences>") || t.starts_with("<preferences ")
}

/// Reads a .vmc; `name` names it in errors and gives the VM its name.
pub fn parse(bytes: &[u8], name: &str) -> Result<ConfigVm> {
    read::parse(bytes, name)
}

impl VmConfig for Vmc {
    fn name(&self) -> &'static str {
        "vmc"
    }

    fn mapping(&self) -> Option<&'static crate::migrate::mapping::TargetMapping> {
        Some(&mapping::WRITE)
    }

    fn targets(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "virtualpc",
                "a folder: dynamic VHD disks and a .vmc for Virtual PC 2007 / Virtual Server 2005 R2",
            ),
            ("vmc", "the same as virtualpc"),
        ]
    }

    fn probe(&self, head: &[u8], _path: &Path) -> bool {
        probe(head)
    }

    fn read(&self, bytes: &[u8], path: &Path) -> Result<ConfigVm> {
        parse(bytes, &path.to_string_lossy())
    }

    fn disk_candidates(&self, config: &ConfigVm, index: usize) -> Vec<String> {
        read::disk_candidates(config, index)
    }

    fn disk_plan(&self, vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
        write::disk_plan(vm, stem)
    }

    fn memory_bytes(&self, vm: &Vm) -> u64 {
        write::ram_size(vm).0 << 20
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
