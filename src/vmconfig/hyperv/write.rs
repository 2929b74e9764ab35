//! `--to hyperv`: VHDX disks and a PowerShell script that creates the VM with Hyper-V's own
//! cmdlets (a .vmcx cannot reasonably be written: its format is private and checksummed).
//!
//! The script (documented at learn.microsoft.com/powershell/module/hyper-v/):
//! - `New-VM -Name -Generation -MemoryStartupBytes -VHDPath|-NoVHD` makes the machine;
//!   Generation 2 for UEFI guests (UEFI firmware, synthetic SCSI boot), Generation 1 for BIOS
//!   ones (BIOS, IDE boot: Generation 1 cannot boot from SCSI). `-VHDPath` attaches the boot
//!   disk where the generation boots (IDE 0:0, or SCSI 0:0).
//! - `Add-VMHardDiskDrive -ControllerType -ControllerNumber -ControllerLocation -Path` for the
//!   other disks; `Set-VMProcessor -Count`; `Set-VMFirmware -EnableSecureBoot` (with
//!   `-SecureBootTemplate MicrosoftUEFICertificateAuthority` for non-Windows guests, which the
//!   default Windows template does not boot) and `-FirstBootDevice`;
//! - `Add-VMNetworkAdapter -SwitchName` (only when a switch of that name exists on the host,
//!   otherwise the adapter is left unconnected with a warning), `Set-VMNetworkAdapter
//!   -StaticMacAddress`.
//!
//! Every cmdlet after New-VM is given the VM object (`-VM $vm`), never `-VMName`, which takes
//! wildcards: a VM named `web[1]` must not match `web1`. Strings are single-quoted with their
//! quotes doubled (PowerShell counts the typographic quotes U+2018..U+201B as single quotes
//! too); disk paths are built from `$PSScriptRoot`, so the folder can be copied anywhere.

use super::mapping::WRITE;
use crate::error::Result;
use crate::vm::{ControllerKind, Firmware, Vm};
use crate::vmconfig::{ConfigFiles, DiskPlan, PlacedDisk};
use std::fmt::Write as _;

/// Hyper-V's startup memory must be a multiple of 2 MiB (Hyper-V Manager refuses others;
/// `New-VM` rounds silently); 32 MiB is its minimum.
pub const MEMORY_ALIGN: u64 = 2 << 20;
/// The least startup memory Hyper-V takes.
pub const MEMORY_MIN: u64 = 32 << 20;
/// The most virtual processors a Hyper-V VM takes (Windows Server 2016 and later: 240 for
/// Generation 2, 64 for Generation 1).
pub const CPUS_MAX_GEN1: u32 = 64;
/// See [`CPUS_MAX_GEN1`].
pub const CPUS_MAX_GEN2: u32 = 240;
/// Locations on one synthetic SCSI controller.
pub const SCSI_LOCATIONS: u32 = 64;
/// Synthetic SCSI controllers per VM.
pub const SCSI_CONTROLLERS: u32 = 4;

/// A PowerShell single-quoted string literal holding `s` exactly.
pub fn ps_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Where one disk goes on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// IDE or SCSI.
    pub bus: Bus,
    /// The controller's number.
    pub controller: u32,
    /// The location on it.
    pub location: u32,
}

/// The two buses Hyper-V attaches disks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// Emulated IDE (Generation 1 only; 2 controllers, 2 locations each).
    Ide,
    /// Synthetic SCSI.
    Scsi,
}

impl Bus {
    fn name(self) -> &'static str {
        match self {
            Bus::Ide => "IDE",
            Bus::Scsi => "SCSI",
        }
    }
}

/// The slots of `n` disks for a generation: Generation 1 boots the first disk from IDE 0:0
/// and puts the second on IDE 0:1 (IDE 1:0 keeps the DVD drive New-VM adds), the rest on
/// SCSI; Generation 2 puts every disk on SCSI, 64 per controller.
pub fn slots(n: usize, generation2: bool) -> Result<Vec<Slot>> {
    let mut out = Vec::with_capacity(n);
    let ide = if generation2 { 0 } else { 2 };
    for i in 0..n {
        if i < ide {
            out.push(Slot {
                bus: Bus::Ide,
                controller: 0,
                location: i as u32,
            });
        } else {
            let k = (i - ide) as u32;
            if k >= SCSI_LOCATIONS * SCSI_CONTROLLERS {
                return Err(crate::error::Error::invalid(format!(
                    "Hyper-V attaches at most {} disks ({} SCSI controllers of {} locations{}); this VM has {n}",
                    SCSI_LOCATIONS * SCSI_CONTROLLERS + ide as u32,
                    SCSI_CONTROLLERS,
                    SCSI_LOCATIONS,
                    if generation2 { "" } else { ", and 2 on IDE" }
                )));
            }
            out.push(Slot {
                bus: Bus::Scsi,
                controller: k / SCSI_LOCATIONS,
                location: k % SCSI_LOCATIONS,
            });
        }
    }
    Ok(out)
}

/// VHDX disks named after the VM.
pub fn disk_plan(vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
    slots(vm.disks.len(), matches!(vm.firmware, Firmware::Uefi { .. }))?;
    Ok((1..=vm.disks.len())
        .map(|i| DiskPlan {
            file_name: format!("{stem}-disk{i}.vhdx"),
            format: "vhdx",
            options: String::new(),
        })
        .collect())
}

/// `$PSScriptRoot`-relative path expression of a file in the folder.
fn beside(file: &str) -> String {
    format!("(Join-Path $PSScriptRoot {})", ps_quote(file))
}

/// The startup memory Hyper-V gives `vm`, in bytes: a multiple of [`MEMORY_ALIGN`] (rounded
/// up), at least [`MEMORY_MIN`], 1 GiB when the source gives none; with a warning for each
/// change.
pub fn startup_memory(vm: &Vm) -> (u64, Vec<String>) {
    let mut w = Vec::new();
    let mut memory = vm.memory_bytes;
    if memory == 0 {
        memory = 1 << 30;
        w.push(
            "the source gives no memory size: 1 GiB written; set it before starting".to_string(),
        );
    }
    if memory < MEMORY_MIN {
        w.push(format!(
            "memory of {} MiB raised to Hyper-V's minimum of 32 MiB",
            memory >> 20
        ));
        memory = MEMORY_MIN;
    }
    if !memory.is_multiple_of(MEMORY_ALIGN) {
        let up = memory.div_ceil(MEMORY_ALIGN) * MEMORY_ALIGN;
        w.push(format!(
            "memory of {memory} bytes rounded up to {} MiB: Hyper-V takes whole multiples of 2 MiB",
            up >> 20
        ));
        memory = up;
    }
    (memory, w)
}

/// The script `<stem>.ps1` and what it could not carry.
pub fn write(vm: &Vm, stem: &str, disks: &[PlacedDisk]) -> Result<ConfigFiles> {
    let mut warnings = Vec::new();
    let gen2 = matches!(vm.firmware, Firmware::Uefi { .. });
    let slots = slots(disks.len(), gen2)?;
    let (memory, w) = startup_memory(vm);
    warnings.extend(w);
    let max_cpus = if gen2 { CPUS_MAX_GEN2 } else { CPUS_MAX_GEN1 };
    let mut cpus = vm.cpus.count.max(1);
    if cpus > max_cpus {
        warnings.push(format!(
            "{cpus} processors lowered to {max_cpus}, the most a Generation {} VM takes",
            if gen2 { 2 } else { 1 }
        ));
        cpus = max_cpus;
    }
    if vm.cpus.cores_per_socket.is_some() {
        warnings.push("the processor topology (cores per socket) is not carried: Hyper-V derives it from the host (Set-VMProcessor -HwThreadCountPerCore and NUMA settings exist to tune it)".to_string());
    }
    if let (false, Some(first)) = (gen2, vm.disks.first())
        && first.controller.kind != ControllerKind::Ide
    {
        warnings.push(format!(
            "the boot disk was on {} and goes to IDE 0:0: Generation 1 boots only from IDE; the guest needs its IDE (ATA) driver enabled",
            first.controller.kind
        ));
    }
    warnings.extend(WRITE.tpm(vm).and_then(|r| r.warning).map(str::to_string));
    warnings.extend(
        WRITE
            .controller(ControllerKind::Ide, vm)
            .and_then(|r| r.warning)
            .map(str::to_string),
    );
    let mut s = String::with_capacity(4096);
    let _ = writeln!(
        s,
        "# Creates the Hyper-V VM {} from the disks beside this script (written by diskferry).\n# Run in an elevated PowerShell on the Hyper-V host: powershell -ExecutionPolicy Bypass -File .\\{}.ps1\n$ErrorActionPreference = 'Stop'",
        // A line break in the name would end the comment and run the rest as code.
        ps_quote(&vm.name).replace(|c: char| c.is_control(), "?"),
        stem
    );
    let boot_vhd = match (slots.first(), disks.first()) {
        (Some(slot), Some(d)) if slot.controller == 0 && slot.location == 0 => {
            Some(beside(&d.plan.file_name))
        }
        _ => None,
    };
    let _ = writeln!(
        s,
        "$vm = New-VM -Name {} -Generation {} -MemoryStartupBytes {memory} {}",
        ps_quote(&vm.name),
        if gen2 { 2 } else { 1 },
        match &boot_vhd {
            Some(p) => format!("-VHDPath {p}"),
            None => "-NoVHD".to_string(),
        }
    );
    let _ = writeln!(s, "Set-VMProcessor -VM $vm -Count {cpus}");
    for (i, (slot, d)) in slots.iter().zip(disks).enumerate() {
        if i == 0 && boot_vhd.is_some() {
            continue;
        }
        if slot.bus == Bus::Scsi && slot.controller > 0 && slot.location == 0 {
            let _ = writeln!(s, "Add-VMScsiController -VM $vm");
        }
        let _ = writeln!(
            s,
            "Add-VMHardDiskDrive -VM $vm -ControllerType {} -ControllerNumber {} -ControllerLocation {} -Path {}",
            slot.bus.name(),
            slot.controller,
            slot.location,
            beside(&d.plan.file_name)
        );
    }
    if let Firmware::Uefi { .. } = vm.firmware {
        if let Some(r) = WRITE.boot(vm) {
            let _ = writeln!(s, "Set-VMFirmware -VM $vm {}", r.target);
        }
        if !disks.is_empty() {
            let _ = writeln!(
                s,
                "Set-VMFirmware -VM $vm -FirstBootDevice (Get-VMHardDiskDrive -VM $vm -ControllerType SCSI -ControllerNumber 0 -ControllerLocation 0)"
            );
        }
    }
    // New-VM adds one unconnected adapter; the source's adapters replace it.
    let _ = writeln!(s, "Get-VMNetworkAdapter -VM $vm | Remove-VMNetworkAdapter");
    let mut switches = Vec::new();
    for (i, nic) in vm.nics.iter().enumerate() {
        let name = ps_quote(&format!("Network Adapter {}", i + 1));
        match &nic.network {
            Some(net) => {
                let q = ps_quote(net);
                let _ = writeln!(
                    s,
                    "if (Get-VMSwitch -Name {q} -ErrorAction SilentlyContinue) {{\n    $nic = Add-VMNetworkAdapter -VM $vm -Name {name} -SwitchName {q} -Passthru\n}} else {{\n    Write-Warning ('no virtual switch named ' + {q} + ': ' + {name} + ' is left unconnected')\n    $nic = Add-VMNetworkAdapter -VM $vm -Name {name} -Passthru\n}}"
                );
                switches.push(net.clone());
            }
            None => {
                let _ = writeln!(
                    s,
                    "$nic = Add-VMNetworkAdapter -VM $vm -Name {name} -Passthru"
                );
            }
        }
        if let Some(mac) = &nic.mac {
            let hex: String = mac
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect::<String>()
                .to_ascii_uppercase();
            if hex.len() == 12 {
                let _ = writeln!(
                    s,
                    "Set-VMNetworkAdapter -VMNetworkAdapter $nic -StaticMacAddress {}",
                    ps_quote(&hex)
                );
            } else {
                warnings.push(format!(
                    "NIC {}: MAC address '{mac}' is not 6 bytes: not carried",
                    i + 1
                ));
            }
        }
    }
    if !switches.is_empty() {
        warnings.push(format!(
            "NICs connect to the virtual switches {} when the host has switches of those names; otherwise they are left unconnected (Connect-VMNetworkAdapter)",
            switches
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let models: Vec<String> = vm
        .nics
        .iter()
        .filter(|n| WRITE.nic(&n.model, vm).is_some_and(|r| r.warning.is_some()))
        .map(|n| n.model.to_string())
        .collect();
    if !models.is_empty() {
        warnings.push(format!(
            "NIC models {} become Hyper-V synthetic adapters",
            models.join(", ")
        ));
    }
    if !vm.cdroms.is_empty() {
        warnings.push(format!(
            "{} CD/DVD drive(s) not carried: their media stay behind (Add-VMDvdDrive adds one)",
            vm.cdroms.len()
        ));
    }
    if !vm.serial_ports.is_empty() {
        warnings.push(format!(
            "{} serial port(s) not carried (Set-VMComPort maps one to a named pipe)",
            vm.serial_ports.len()
        ));
    }
    let file = format!("{stem}.ps1");
    // Windows PowerShell 5.1 reads a script without a byte-order mark as the ANSI code page:
    // a UTF-8 BOM makes non-ASCII names survive.
    let mut bytes = vec![0xef, 0xbb, 0xbf];
    // Line ends stay LF (PowerShell reads either): converting to CRLF would also change a line
    // break inside a quoted VM name.
    bytes.extend(s.into_bytes());
    Ok(ConfigFiles {
        instructions: vec![format!(
            "copy the folder to the Hyper-V host and run, in an elevated PowerShell there: powershell -ExecutionPolicy Bypass -File .\\{file}"
        )],
        files: vec![(file, bytes)],
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_including_typographic_ones() {
        assert_eq!(ps_quote("a'b"), "'a''b'");
        assert_eq!(ps_quote("x\u{2019}y"), "'x\u{2019}\u{2019}y'");
        assert_eq!(ps_quote("$env:x"), "'$env:x'");
    }

    #[test]
    fn generation_1_boots_from_ide_and_generation_2_from_scsi() {
        let g1 = slots(4, false).unwrap();
        assert_eq!(
            (g1[0].bus, g1[0].controller, g1[0].location),
            (Bus::Ide, 0, 0)
        );
        assert_eq!((g1[1].bus, g1[1].location), (Bus::Ide, 1));
        assert_eq!((g1[2].bus, g1[2].location), (Bus::Scsi, 0));
        let g2 = slots(65, true).unwrap();
        assert!(g2.iter().all(|s| s.bus == Bus::Scsi));
        assert_eq!((g2[64].controller, g2[64].location), (1, 0));
        assert!(slots(257, true).is_err());
    }
}
