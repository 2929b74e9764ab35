//! virt-v2v as a peer reader of VM configurations: `virt-v2v -i MODE FILE --print-source`
//! (unpacked under target/peers by tests/ovf_support/install-peers), its report parsed into
//! the fields both tools model.

use super::vm::repo;
use super::{have_qemu, skip};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What virt-v2v --print-source reports.
#[derive(Debug, Default, PartialEq)]
pub struct V2v {
    pub name: String,
    pub memory: u64,
    pub vcpus: u32,
    pub firmware: String,
    /// Each disk's bus, in virt-v2v's terms (`ide`, `sata`, `scsi`, `virtio-blk`, ...).
    pub disks: Vec<String>,
    pub cdroms: Vec<String>,
    /// (network, mac, model)
    pub nics: Vec<(String, Option<String>, Option<String>)>,
}

/// Parses the `--print-source` report.
pub fn parse_print_source(out: &str) -> V2v {
    let mut r = V2v::default();
    let mut section = "";
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("source name:") {
            r.name = v.trim().to_string();
        } else if let Some(v) = t.strip_prefix("memory:") {
            r.memory = v.split_whitespace().next().unwrap().parse().unwrap();
        } else if let Some(v) = t.strip_prefix("nr vCPUs:") {
            r.vcpus = v.trim().parse().unwrap();
        } else if let Some(v) = t.strip_prefix("firmware:") {
            r.firmware = v.trim().to_string();
        } else if t == "disks:" || t == "removable media:" || t == "NICs:" {
            section = t;
        } else if line.starts_with('\t') {
            let bracket = t
                .split_once('[')
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(b, _)| b.to_string());
            match section {
                "disks:" => r.disks.push(bracket.unwrap_or_default()),
                // virt-v2v lists floppies here too; neither tool carries them as drives.
                "removable media:" if t.starts_with("CD-ROM") => {
                    r.cdroms.push(bracket.unwrap_or_default())
                }
                "NICs:" => {
                    let net = t.split('"').nth(1).unwrap_or("").to_string();
                    let mac = t
                        .split_once("mac: ")
                        .map(|(_, m)| m.split_whitespace().next().unwrap().to_string());
                    r.nics.push((net, mac, bracket.map(|b| b.to_lowercase())));
                }
                _ => {}
            }
        }
    }
    r
}

/// The unpacked virt-v2v wrapper, or None after skip() (which fails under
/// DISKFERRY_REQUIRE_PEERS=1). virt-v2v opens every disk with qemu-nbd, hence qemu too.
pub fn v2v_binary(test: &str) -> Option<PathBuf> {
    let v2v = repo().join("target/peers/virt-v2v/run");
    if !v2v.exists() {
        skip(
            test,
            "virt-v2v is not unpacked (run tests/ovf_support/install-peers)",
        );
        return None;
    }
    have_qemu(test).then_some(v2v)
}

/// Runs `virt-v2v -i MODE FILE --print-source` (the disks FILE names must exist); the parsed
/// report, or virt-v2v's output when it fails.
pub fn v2v_read(v2v: &Path, mode: &str, file: &Path) -> Result<V2v, String> {
    let out = Command::new(v2v)
        .args(["-i", mode])
        .arg(file)
        .arg("--print-source")
        .env("LIBGUESTFS_BACKEND", "direct")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(parse_print_source(&text))
    } else {
        Err(text)
    }
}
