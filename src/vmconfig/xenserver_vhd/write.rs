//! The `xe` commands that attach the VHDs of `--to xenserver-vhd` to a new VM: copy the files
//! into the SR's mount (`/var/run/sr-mount/<SR uuid>/`), `xe sr-scan` so XAPI introduces each
//! `<uuid>.vhd` as the VDI of that uuid, `xe vm-install` from the "Other install media"
//! template, then the VM's memory, CPUs and firmware, one `xe vbd-create` per disk and one
//! `xe vif-create` per NIC. The same lines are printed and written into `<stem>-xe.sh` in the
//! folder, a script the user can run on the host after the copy.

use crate::error::{Error, Result};
use crate::vm::{Firmware, Vm};
use crate::vmconfig::{ConfigFiles, PlacedDisk};
use std::path::Path;

/// `text` as one shell word (single-quoted).
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The commands for `vm` with its disks written as `disks`, in `folder`.
pub fn commands(vm: &Vm, stem: &str, folder: &Path, disks: &[PlacedDisk]) -> Result<ConfigFiles> {
    if disks.len() != vm.disks.len() {
        return Err(Error::invalid(format!(
            "internal error: {} disks written for {} in the VM",
            disks.len(),
            vm.disks.len()
        )));
    }
    let mut warnings = Vec::new();
    let mut lines = vec![
        "# On the XenServer/XCP-ng host, with SR set to the uuid of a file SR (ext or NFS) that has room:".to_string(),
        format!(
            "# 1. copy the disks in: scp {}/*.vhd root@HOST:/var/run/sr-mount/$SR/",
            folder.display()
        ),
        "# 2. make XAPI see them (each <uuid>.vhd becomes the VDI of that uuid):".to_string(),
        "xe sr-scan uuid=$SR".to_string(),
        "# 3. the VM around them:".to_string(),
        format!(
            "VM=$(xe vm-install template='Other install media' new-name-label={})",
            quote(&vm.name)
        ),
    ];
    if let Some(d) = vm.description.as_deref().filter(|d| !d.is_empty()) {
        lines.push(format!(
            "xe vm-param-set uuid=$VM name-description={}",
            quote(d)
        ));
    }
    // As in an XVA: XAPI's memory fields are bytes; a source without memory is warned about.
    let (memory, w) = crate::xva::ova_xml_write::memory_bytes(vm);
    warnings.extend(w);
    lines.push(format!(
        "xe vm-memory-limits-set uuid=$VM static-min={memory} dynamic-min={memory} dynamic-max={memory} static-max={memory}"
    ));
    let cpus = vm.cpus.count.max(1);
    // VCPUs-max first: XAPI refuses VCPUs-at-startup above it.
    lines.push(format!("xe vm-param-set uuid=$VM VCPUs-max={cpus}"));
    lines.push(format!("xe vm-param-set uuid=$VM VCPUs-at-startup={cpus}"));
    if let Some(c) = vm.cpus.cores_per_socket.filter(|&c| c > 0) {
        lines.push(format!(
            "xe vm-param-set uuid=$VM platform:cores-per-socket={c}"
        ));
    }
    match vm.firmware {
        Firmware::Bios => {}
        Firmware::Uefi { secure_boot } => {
            lines.push("xe vm-param-set uuid=$VM HVM-boot-params:firmware=uefi".to_string());
            lines.push(format!(
                "xe vm-param-set uuid=$VM platform:secureboot={secure_boot}"
            ));
        }
    }
    // As in an XVA: XAPI has no serial port device to create.
    if !vm.serial_ports.is_empty() {
        warnings.push(format!(
            "{} serial port(s) are not carried: XAPI gives every HVM guest its own console",
            vm.serial_ports.len()
        ));
    }
    warnings.extend(
        super::mapping::WRITE
            .tpm(vm)
            .and_then(|r| r.warning)
            .map(str::to_string),
    );
    // The boot disk takes userdevice 0, where the BIOS looks first.
    let boot = vm
        .disks
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.boot_order.map(|o| (o, i)))
        .min()
        .map_or(0, |(_, i)| i);
    let mut order: Vec<usize> = (0..disks.len()).collect();
    order.retain(|&i| i != boot);
    if !disks.is_empty() {
        order.insert(0, boot);
    }
    for (userdevice, &i) in order.iter().enumerate() {
        let d = &disks[i];
        let uuid = d
            .plan
            .file_name
            .strip_suffix(".vhd")
            .unwrap_or(&d.plan.file_name);
        lines.push(format!(
            "xe vdi-param-set uuid={uuid} name-label={}",
            quote(&format!("{} disk {}", vm.name, i + 1))
        ));
        lines.push(format!(
            "xe vbd-create vm-uuid=$VM vdi-uuid={uuid} device={userdevice} bootable={} mode=RW type=Disk",
            userdevice == 0
        ));
    }
    if !vm.cdroms.is_empty() {
        lines.push(format!(
            "xe vbd-create vm-uuid=$VM device={} type=CD mode=RO   # an empty CD drive",
            disks.len()
        ));
    }
    for (i, nic) in vm.nics.iter().enumerate() {
        let network = match &nic.network {
            Some(n) => format!("$(xe network-list name-label={} --minimal)", quote(n)),
            None => "$(xe network-list bridge=xenbr0 --minimal)".to_string(),
        };
        let mac = nic
            .mac
            .as_deref()
            .map(|m| format!(" mac={m}"))
            .unwrap_or_default();
        lines.push(format!(
            "xe vif-create vm-uuid=$VM network-uuid={network} device={i}{mac}"
        ));
    }
    lines.push("xe vm-start uuid=$VM".to_string());
    let mut script = String::from(
        "#!/bin/sh\n# Made by diskferry migrate --to xenserver-vhd.\nset -e\nSR=${SR:?set SR to the uuid of a file SR}\n",
    );
    for l in &lines {
        script.push_str(l);
        script.push('\n');
    }
    let name = format!("{stem}-xe.sh");
    let mut instructions = lines;
    instructions.push(format!(
        "# (the same commands are in {})",
        folder.join(&name).display()
    ));
    Ok(ConfigFiles {
        files: vec![(name, script.into_bytes())],
        warnings,
        instructions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_shell_word() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
