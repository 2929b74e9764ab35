//! Cloud image targets (written only): `--to azure`, `--to aws`, `--to gcp`. Each writes the
//! disks as that cloud imports them and the commands that upload and register them, printed
//! and kept in a script in the folder.
//!
//! | target | disks | registration |
//! |---|---|---|
//! | `azure` | fixed VHD, virtual size a whole number of MiB, file = size + 512 | `az disk create --upload-type Upload`, `azcopy`, `az vm create --attach-os-disk` |
//! | `aws` | stream-optimized VMDK | `containers.json` (Format, UserBucket{S3Bucket, S3Key}), `aws ec2 import-image` |
//! | `gcp` | `disk.raw` (whole GiB) as a sparse member of a gzip'd GNU tar | `gcloud compute images create --source-uri` |
//!
//! A cloud chooses the VM's size, network and devices itself: what the VM had of those is
//! said in warnings for the user to choose alike.

mod aws;
mod azure;
mod gcp;
pub mod mapping;
mod sparse_tar;

pub use aws::Aws;
pub use azure::Azure;
pub use gcp::Gcp;

use crate::vm::{Firmware, OsFamily, Vm};

/// The disks' indexes with the boot disk first (the disk with the lowest boot order, else
/// the first).
pub(crate) fn boot_first(vm: &Vm) -> Vec<usize> {
    let mut order: Vec<usize> = (0..vm.disks.len()).collect();
    order.sort_by_key(|&i| (vm.disks[i].boot_order.unwrap_or(u32::MAX), i));
    order
}

/// What every cloud target says about the VM's shape.
pub(crate) fn common_warnings(vm: &Vm, cloud: &str, size_flag: &str) -> Vec<String> {
    let mut w = vec![format!(
        "the VM's size is not carried: choose a {cloud} size with at least {} vCPUs and {} MiB ({size_flag})",
        vm.cpus.count.max(1),
        // At least: a size below the source's would be too small.
        vm.memory_bytes.div_ceil(1 << 20)
    )];
    if !vm.nics.is_empty() {
        w.push(format!(
            "{} NIC(s) not carried (MACs and networks included): {cloud} gives the VM its own network interfaces",
            vm.nics.len()
        ));
    }
    if !vm.cdroms.is_empty() {
        w.push(format!("{} CD/DVD drive(s) not carried", vm.cdroms.len()));
    }
    w
}

/// `Linux` or `Windows` for a cloud's --os-type, and a warning when the guest is unknown.
pub(crate) fn os_type(vm: &Vm) -> (&'static str, Option<String>) {
    match vm.guest_os.os.map(|o| o.family()) {
        Some(OsFamily::Windows) => ("Windows", None),
        Some(OsFamily::Linux) => ("Linux", None),
        _ => (
            "Linux",
            Some("the guest operating system is not known: the commands say Linux; change it if the guest is Windows".into()),
        ),
    }
}

/// True for UEFI firmware.
pub(crate) fn uefi(vm: &Vm) -> bool {
    matches!(vm.firmware, Firmware::Uefi { .. })
}

/// A shell-quoted word.
pub(crate) fn sh(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '='))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A cloud resource name: lowercase letters, digits and `-`, starting with a letter.
pub(crate) fn resource_name(name: &str) -> String {
    let n: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let n = n.trim_matches('-').to_string();
    let n = if n.starts_with(|c: char| c.is_ascii_lowercase()) {
        n
    } else {
        format!("vm-{n}")
    };
    n.chars()
        .take(60)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// A cloud target's import script and the instructions that announce it: `header` (the
/// shebang, comments and argument checks, ending in a newline) then one line per step; the
/// instructions name the script run in `folder` with `usage`, then list the steps.
pub(crate) fn import_script(
    name: &str,
    header: String,
    usage: &str,
    steps: &[String],
    folder: &std::path::Path,
) -> ((String, Vec<u8>), Vec<String>) {
    let mut script = header;
    for s in steps {
        script.push_str(s);
        script.push('\n');
    }
    let mut instructions = vec![format!(
        "in {}: sh {name} {usage}, which runs:",
        folder.display()
    )];
    instructions.extend(steps.iter().map(|s| format!("  {s}")));
    ((name.to_string(), script.into_bytes()), instructions)
}
