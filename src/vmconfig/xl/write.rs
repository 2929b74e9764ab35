//! Writing an xl.cfg for `--to xen`: an HVM guest (every guest boots as HVM; PVH needs a
//! PVH-capable kernel the source does not promise) with qcow2 disks on the qdisk backend.
//!
//! Settings follow xl.cfg(5) (<https://xenbits.xen.org/docs/unstable/man/xl.cfg.5.html>),
//! disk specs xl-disk-configuration(5) (key=value form, `target=` last because it takes the
//! rest of the spec), NICs xl-network-configuration(5).

use super::mapping::{NIC_EMULATED, WRITE};
use crate::error::{Error, Result};
use crate::migrate::mapping::Guest;
use crate::vm::{ControllerKind, Firmware, Vm};
use crate::vmconfig::PlacedDisk;
use std::fmt::Write as _;

/// `a`..`z`, `aa`..: the letters of the `i`th drive.
pub fn drive_letters(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

/// `text` as an xl string: single quotes, or double quotes when it holds a single quote.
/// xl strings cannot hold a newline or both quotes.
fn quoted(text: &str) -> Result<String> {
    if text.contains(['\n', '\r', '\\']) || (text.contains('\'') && text.contains('"')) {
        return Err(Error::invalid(format!(
            "'{text}' cannot be written in an xl.cfg (a newline, a backslash or both quotes)"
        )));
    }
    Ok(if text.contains('\'') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    })
}

/// True for a name a Linux bridge can have (xenbr0, br0): 1 to 15 of letters, digits, `_.-`.
fn bridge_name(n: &str) -> bool {
    (1..=15).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The memory xl gives `vm`, in MiB, as an xl.cfg's `memory` and `maxmem` hold it: whole MiB
/// (rounded up), 512 MiB when the source gives none; with a warning for each change.
pub fn memory_mib(vm: &Vm) -> (u64, Vec<String>) {
    let (mib, rounded) =
        crate::vm::memory_in_units(vm.memory_bytes, 1 << 20, "xl.cfg takes whole MiB");
    if mib == 0 {
        let w = "the source gives no memory size: 512 MiB written; set it before starting";
        (512, vec![w.into()])
    } else {
        (mib, rounded.into_iter().collect())
    }
}

/// The xl.cfg of `vm` with its disks at `disks`' final paths, and the warnings.
pub fn xl_cfg(vm: &Vm, disks: &[PlacedDisk]) -> Result<(String, Vec<String>)> {
    let mut w = Vec::new();
    let mut x = String::new();
    x.push_str("# Written by diskferry: start with `xl create <this file>`.\n");
    let _ = writeln!(x, "name = {}", quoted(&vm.name)?);
    x.push_str("type = \"hvm\"\n");
    let (mib, memory) = memory_mib(vm);
    w.extend(memory);
    let _ = writeln!(x, "memory = {mib}\nmaxmem = {mib}");
    let _ = writeln!(x, "vcpus = {}", vm.cpus.count.max(1));
    if vm.cpus.cores_per_socket.is_some_and(|c| c > 1) {
        w.push(
            "the CPU topology (cores per socket) is not carried: xl gives the guest vcpus alone"
                .into(),
        );
    }
    if let Firmware::Uefi { .. } = vm.firmware {
        x.push_str("bios = \"ovmf\"\n");
    }
    w.extend(WRITE.boot(vm).and_then(|r| r.warning).map(str::to_string));
    w.extend(WRITE.tpm(vm).and_then(|r| r.warning).map(str::to_string));
    // The Windows row: Hyper-V enlightenments, and the drivers the guest needs.
    if let Some(r) = WRITE.controller(ControllerKind::Ide, vm)
        && r.guest == Guest::Windows
    {
        x.push_str("viridian = 1\n");
        w.extend(r.warning.map(str::to_string));
    }
    x.push_str("boot = \"c\"\n");
    let mut specs = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let target = d.final_path.to_string_lossy();
        specs.push(quoted(&format!(
            "format=qcow2, vdev=xvd{}, access=rw, backendtype=qdisk, target={target}",
            drive_letters(i)
        ))?);
    }
    for (i, _) in vm.cdroms.iter().enumerate() {
        specs.push(format!(
            "'format=raw, vdev=xvd{}, access=ro, devtype=cdrom, target='",
            drive_letters(disks.len() + i)
        ));
    }
    if !vm.cdroms.is_empty() {
        w.push(format!(
            "{} CD/DVD drive(s) written empty: their media stay behind",
            vm.cdroms.len()
        ));
    }
    if !specs.is_empty() {
        let _ = writeln!(x, "disk = [ {} ]", specs.join(",\n         "));
    }
    let mut vifs = Vec::new();
    let mut changed = Vec::new();
    let mut moved = Vec::new();
    for nic in &vm.nics {
        let row = WRITE.nic(&nic.model, vm);
        let model = row.map_or("e1000", |r| r.target);
        if row.is_none_or(|r| r.warning.is_some()) {
            changed.push(nic.model.to_string());
        }
        let mut spec = String::new();
        if let Some(mac) = &nic.mac {
            let _ = write!(spec, "mac={mac},");
        }
        let bridge = match &nic.network {
            Some(n) if bridge_name(n) => n.clone(),
            Some(n) => {
                moved.push(format!("'{n}'"));
                "xenbr0".into()
            }
            None => "xenbr0".into(),
        };
        let _ = write!(spec, "bridge={bridge},model={model}");
        vifs.push(quoted(&spec)?);
    }
    if !vifs.is_empty() {
        let _ = writeln!(x, "vif = [ {} ]", vifs.join(", "));
    }
    if !changed.is_empty() {
        w.push(format!(
            "NICs emulated as e1000 (from {}): {NIC_EMULATED}",
            changed.join(", ")
        ));
    }
    if !moved.is_empty() {
        w.push(format!(
            "NICs attached to bridge xenbr0; on the source they were on {}: change bridge= to the host's bridge",
            moved.join(", ")
        ));
    }
    if let Some((first, others)) = vm.serial_ports.split_first() {
        // One port, the first, as a pty: what xl's console command attaches to.
        x.push_str("serial = \"pty\"\n");
        if let Some(c) = first.host_end() {
            w.push(format!(
                "serial port {}: its host end ({c}) is not carried: written as a pty (xl console); set serial= to reconnect it",
                first.index
            ));
        }
        if !others.is_empty() {
            w.push(format!(
                "{} more serial port(s) not carried: serial= gets the first as a pty",
                others.len()
            ));
        }
    }
    x.push_str("on_poweroff = \"destroy\"\non_reboot = \"restart\"\non_crash = \"destroy\"\n");
    Ok((x, w))
}
