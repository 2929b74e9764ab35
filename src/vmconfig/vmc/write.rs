//! `--to virtualpc`: a .vmc (UTF-16LE with a byte-order mark, as Virtual PC writes it) and
//! dynamic VHD disks, for Virtual PC 2007 and Virtual Server 2005 R2.
//!
//! What those products take (each rule has a test in tests/vmc.rs citing its source):
//! - hard disks on IDE only, at most three: IDE 0:0 (boot), 0:1 and 1:1; IDE 1:0 holds the
//!   CD/DVD drive (Connectix/Microsoft Virtual PC user guide: "Hard Disk 1, 2, 3" and the
//!   CD on the secondary master);
//! - an IDE disk is seen up to 127 GiB (65535 cylinders x 16 heads x 255 sectors, the CHS
//!   geometry the VHD format specification's footer gives an IDE disk);
//! - memory from 4 MiB to 3712 MiB (3.6 GiB, the most a VM of Virtual Server 2005 R2 and
//!   Virtual PC 2007 takes);
//! - one processor, BIOS firmware, up to 4 NICs (emulated DEC 21140);
//! - disks as dynamic VHDs ("subformat=dynamic"), named relative to the .vmc (`.\x.vhd`).

use super::mapping::WRITE;
use crate::error::{Error, Result};
use crate::vm::Vm;
use crate::vmconfig::{ConfigFiles, DiskPlan, PlacedDisk};
use quick_xml::escape::escape;
use std::fmt::Write as _;

/// The most hard disks a Virtual PC VM attaches.
pub const MAX_DISKS: usize = 3;
/// The IDE addresses of hard disks 1, 2 and 3 (controller, location).
pub const DISK_SLOTS: [(u32, u32); MAX_DISKS] = [(0, 0), (0, 1), (1, 1)];
/// The IDE address of the CD/DVD drive.
pub const CD_SLOT: (u32, u32) = (1, 0);
/// The largest IDE disk a Virtual PC guest sees whole (CHS 65535 x 16 x 255 x 512 bytes).
pub const IDE_MAX_BYTES: u64 = 65535 * 16 * 255 * 512;
/// Memory bounds in MiB.
pub const MEMORY_MIN_MIB: u64 = 4;
/// See [`MEMORY_MIN_MIB`].
pub const MEMORY_MAX_MIB: u64 = 3712;
/// The most NICs.
pub const MAX_NICS: usize = 4;

/// Dynamic VHD disks named after the VM; more than three disks is an error (Virtual PC has
/// no fourth hard disk slot, and dropping a disk is not a warning matter).
pub fn disk_plan(vm: &Vm, stem: &str) -> Result<Vec<DiskPlan>> {
    if vm.disks.len() > MAX_DISKS {
        return Err(Error::invalid(format!(
            "Virtual PC and Virtual Server attach at most {MAX_DISKS} IDE hard disks (IDE 0:0, 0:1, 1:1; the CD drive is on 1:0); this VM has {}: migrate to another target or merge disks first",
            vm.disks.len()
        )));
    }
    Ok((1..=vm.disks.len())
        .map(|i| DiskPlan {
            file_name: format!("{stem}-disk{i}.vhd"),
            format: "vhd",
            options: "subformat=dynamic".to_string(),
        })
        .collect())
}

fn location(x: &mut String, unit: u32, drive_type: u32, relative: &str) {
    let _ = write!(
        x,
        "\t\t\t\t\t<location id=\"{unit}\">\n\t\t\t\t\t\t<drive_type type=\"integer\">{drive_type}</drive_type>\n\t\t\t\t\t\t<pathname>\n\t\t\t\t\t\t\t<absolute type=\"string\"></absolute>\n\t\t\t\t\t\t\t<relative type=\"string\">{}</relative>\n\t\t\t\t\t\t</pathname>\n\t\t\t\t\t</location>\n",
        escape(relative)
    );
}

/// The memory Virtual PC gives `vm`, in MiB, as a .vmc's `ram_size` holds it: whole MiB
/// (rounded up), [`MEMORY_MIN_MIB`] to [`MEMORY_MAX_MIB`], 512 MiB when the source gives
/// none; with a warning for each change.
pub fn ram_size(vm: &Vm) -> (u64, Vec<String>) {
    let mut w = Vec::new();
    let (mut mib, rounded) =
        crate::vm::memory_in_units(vm.memory_bytes, 1 << 20, "Virtual PC takes whole MiB");
    if vm.memory_bytes == 0 {
        mib = 512;
        w.push("the source gives no memory size: 512 MiB written".to_string());
    } else if mib < MEMORY_MIN_MIB {
        w.push(format!(
            "memory of {mib} MiB raised to Virtual PC's minimum of {MEMORY_MIN_MIB} MiB"
        ));
        mib = MEMORY_MIN_MIB;
    } else if mib > MEMORY_MAX_MIB {
        w.push(format!(
            "memory of {mib} MiB lowered to {MEMORY_MAX_MIB} MiB, the most Virtual PC 2007 and Virtual Server 2005 R2 give a VM"
        ));
        mib = MEMORY_MAX_MIB;
    } else {
        // Past the limits the warning above names the size written.
        w.extend(rounded);
    }
    (mib, w)
}

/// The .vmc text (before UTF-16 encoding) and the warnings.
pub fn vmc_text(vm: &Vm, disks: &[PlacedDisk]) -> Result<(String, Vec<String>)> {
    let mut warnings = Vec::new();
    if disks.len() > MAX_DISKS {
        return Err(Error::invalid(format!(
            "Virtual PC attaches at most {MAX_DISKS} hard disks; this VM has {}",
            disks.len()
        )));
    }
    let (mib, w) = ram_size(vm);
    warnings.extend(w);
    warnings.extend(WRITE.boot(vm).and_then(|r| r.warning).map(str::to_string));
    if vm.cpus.count > 1 {
        warnings.push(format!(
            "{} processors become 1: Virtual PC and Virtual Server give a VM one processor",
            vm.cpus.count
        ));
    }
    warnings.extend(WRITE.tpm(vm).and_then(|r| r.warning).map(str::to_string));
    for (i, d) in disks.iter().enumerate() {
        if d.capacity > IDE_MAX_BYTES {
            warnings.push(format!(
                "disk {} is {} bytes: a Virtual PC IDE disk is seen only up to 127 GiB",
                i + 1,
                d.capacity
            ));
        }
    }
    if let Some(d) = vm.disks.first()
        && let Some(w) = WRITE
            .controller(d.controller.kind, vm)
            .and_then(|r| r.warning)
    {
        warnings.push(format!(
            "the boot disk was on {} and goes to IDE 0:0: {w}",
            d.controller.kind
        ));
    }
    if vm.cdroms.len() > 1 {
        warnings.push(format!(
            "{} CD/DVD drives become one (IDE 1:0), empty",
            vm.cdroms.len()
        ));
    } else if vm
        .cdroms
        .iter()
        .any(|c| c.source != crate::vm::DiskSource::Blank)
    {
        warnings.push("the CD/DVD drive is written empty: its medium stays behind".to_string());
    }
    let mut x = String::with_capacity(4096);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<!-- Microsoft Virtual Machine Options and Settings -->\n<preferences>\n\t<version type=\"string\">2.0</version>\n\t<hardware>\n");
    let _ = write!(
        x,
        "\t\t<memory>\n\t\t\t<ram_size type=\"integer\">{mib}</ram_size>\n\t\t</memory>\n\t\t<pci_bus>\n"
    );
    let nics = &vm.nics[..vm.nics.len().min(MAX_NICS)];
    if vm.nics.len() > MAX_NICS {
        warnings.push(format!(
            "{} NICs: Virtual PC has {MAX_NICS}, the others are not carried",
            vm.nics.len()
        ));
    }
    let _ = write!(
        x,
        "\t\t\t<ethernet_adapter>\n\t\t\t\t<controller_count type=\"integer\">{}</controller_count>\n",
        nics.len()
    );
    let mut networks = Vec::new();
    for (i, nic) in nics.iter().enumerate() {
        let _ = writeln!(x, "\t\t\t\t<ethernet_controller id=\"{i}\">");
        if let Some(n) = &nic.network {
            let _ = write!(
                x,
                "\t\t\t\t\t<virtual_network>\n\t\t\t\t\t\t<name type=\"string\">{}</name>\n\t\t\t\t\t</virtual_network>\n",
                escape(n.as_str())
            );
            networks.push(n.clone());
        }
        if let Some(mac) = &nic.mac {
            let hex: String = mac
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect::<String>()
                .to_ascii_uppercase();
            if hex.len() == 12 {
                let _ = writeln!(
                    x,
                    "\t\t\t\t\t<ethernet_card_address type=\"bytes\">{hex}</ethernet_card_address>"
                );
            }
        }
        let _ = writeln!(x, "\t\t\t\t</ethernet_controller>");
    }
    x.push_str("\t\t\t</ethernet_adapter>\n\t\t\t<ide_adapter>\n");
    if !networks.is_empty() {
        warnings.push(format!(
            "the NICs name the networks {}: Virtual PC connects each to the host adapter of that name, or leaves it unconnected; check Settings > Networking",
            networks.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
        ));
    }
    for controller in 0..2u32 {
        let _ = writeln!(x, "\t\t\t\t<ide_controller id=\"{controller}\">");
        for location_id in 0..2u32 {
            if (controller, location_id) == CD_SLOT {
                location(&mut x, location_id, 2, "");
                continue;
            }
            if let Some(i) = DISK_SLOTS
                .iter()
                .position(|s| *s == (controller, location_id))
                && let Some(d) = disks.get(i)
            {
                location(&mut x, location_id, 1, &format!(".\\{}", d.plan.file_name));
            }
        }
        let _ = writeln!(x, "\t\t\t\t</ide_controller>");
    }
    x.push_str("\t\t\t</ide_adapter>\n\t\t</pci_bus>\n\t</hardware>\n</preferences>\n");
    Ok((x, warnings))
}

/// The .vmc as Virtual PC writes it: UTF-16LE with a byte-order mark, CRLF line ends.
pub fn encode(text: &str) -> Vec<u8> {
    let mut out = vec![0xff, 0xfe];
    for u in text.replace('\n', "\r\n").encode_utf16() {
        out.extend(u.to_le_bytes());
    }
    out
}

/// The folder's .vmc.
pub fn write(vm: &Vm, stem: &str, disks: &[PlacedDisk]) -> Result<ConfigFiles> {
    let (text, warnings) = vmc_text(vm, disks)?;
    let file = format!("{stem}.vmc");
    Ok(ConfigFiles {
        instructions: vec![format!(
            "copy the folder to the Windows host and open {file} in Virtual PC (File > New Virtual Machine Wizard > Add an existing virtual machine) or add it in Virtual Server's Administration Website (Virtual Machines > Add)"
        )],
        files: vec![(file, encode(&text))],
        warnings,
    })
}
