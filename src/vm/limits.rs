//! Bounds on what a VM description may claim, checked once where a source's [`Vm`] enters
//! `migrate` or `info`, whichever reader made it: a configuration saying
//! `<vcpu>4294967295</vcpu>` is a damaged or hostile file, and passing it on would only fail
//! later, on the target, or make a writer size something by it.
//!
//! Each limit is the largest per-VM maximum any hypervisor diskferry reads documents,
//! rounded up to a power of two so that no machine a hypervisor can run is refused:
//!
//! | field | limit | the largest documented maximum |
//! |---|---|---|
//! | `cpus.count`, `cpus.cores_per_socket` | 4096 | KVM on x86: `CONFIG_KVM_MAX_NR_VCPUS` allows up to 4096 vCPUs, the most the Hyper-V TLFS's 64 sparse banks address (Linux commit f10a570b093e, "KVM: x86: Add CONFIG_KVM_MAX_NR_VCPUS to allow up to 4096 vCPUs"); vSphere 8 runs 768, Hyper-V 240 |
//! | `memory_bytes` | 32 TiB | vSphere 8 Configuration Maximums: 24 TB per VM (<https://configmax.broadcom.com>); Hyper-V on Windows Server 2016-2022: 12 TB for generation 2 ("Plan for Hyper-V scalability in Windows Server", <https://learn.microsoft.com/windows-server/virtualization/hyper-v/plan/plan-hyper-v-scalability-in-windows-server>) |
//! | `disks` | 1024 | vSphere 8: 4 SCSI adapters of 64 targets, 4 NVMe adapters of 64 namespaces, 4 SATA of 30 and 4 IDE devices; Hyper-V: 4 SCSI controllers of 64 disks and 4 IDE; Proxmox VE: scsi0-30, virtio0-15, sata0-5, ide0-3 (qm.conf(5)) |
//! | `nics` | 128 | Hyper-V: 68 (64 synthetic and 4 legacy adapters, the page above); VirtualBox: 36 on the ICH9 chipset (User Manual, "Virtual Networking"); Proxmox VE: net0-31; vSphere 8: 10 |
//!
//! Zero stays allowed for the CPU count and memory: it is how the model says "the source
//! did not say" (with a warning).

use super::Vm;
use crate::error::{Error, Result};

/// The most virtual CPUs (and cores per socket) a VM may have.
pub const MAX_VCPUS: u32 = 4096;
/// The most guest memory a VM may have, in bytes.
pub const MAX_MEMORY_BYTES: u64 = 32 << 40;
/// The most hard disks a VM may have.
pub const MAX_DISKS: usize = 1024;
/// The most network adapters a VM may have.
pub const MAX_NICS: usize = 128;

impl Vm {
    /// Refuses a machine whose CPU count, cores per socket, memory, disk or NIC count is
    /// beyond what any hypervisor runs (see the module doc for the limits and their
    /// sources). The error names the model's field; the caller adds the file.
    pub fn check_limits(&self) -> Result<()> {
        let refuse = |field: &str, value: String, limit: String| {
            Err(Error::invalid(format!(
                "the VM's {field} ({value}) is more than any hypervisor runs (at most {limit})"
            )))
        };
        if self.cpus.count > MAX_VCPUS {
            return refuse(
                "virtual CPU count",
                self.cpus.count.to_string(),
                MAX_VCPUS.to_string(),
            );
        }
        match self.cpus.cores_per_socket {
            Some(0) => {
                return Err(Error::invalid(
                    "the VM's cores per socket is 0 (at least 1)",
                ));
            }
            Some(c) if c > MAX_VCPUS => {
                return refuse("cores per socket", c.to_string(), MAX_VCPUS.to_string());
            }
            _ => {}
        }
        if self.memory_bytes > MAX_MEMORY_BYTES {
            return refuse(
                "memory",
                format!("{} bytes", self.memory_bytes),
                format!("{} TiB", MAX_MEMORY_BYTES >> 40),
            );
        }
        if self.disks.len() > MAX_DISKS {
            return refuse(
                "disk count",
                self.disks.len().to_string(),
                MAX_DISKS.to_string(),
            );
        }
        if self.nics.len() > MAX_NICS {
            return refuse(
                "network adapter count",
                self.nics.len().to_string(),
                MAX_NICS.to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{Nic, NicModel};

    #[test]
    fn limits_are_inclusive_and_name_the_field() {
        let mut vm = Vm::new("x");
        vm.cpus.count = MAX_VCPUS;
        vm.memory_bytes = MAX_MEMORY_BYTES;
        vm.cpus.cores_per_socket = Some(MAX_VCPUS);
        vm.check_limits().unwrap();
        vm.cpus.count = u32::MAX;
        let e = vm.check_limits().unwrap_err().to_string();
        assert!(e.contains("virtual CPU count (4294967295)"), "{e}");
        vm.cpus.count = 1;
        vm.memory_bytes = MAX_MEMORY_BYTES + 1;
        assert!(
            vm.check_limits()
                .unwrap_err()
                .to_string()
                .contains("memory")
        );
        vm.memory_bytes = 0;
        vm.cpus.cores_per_socket = Some(0);
        assert!(vm.check_limits().is_err());
        vm.cpus.cores_per_socket = None;
        let nic = Nic {
            model: NicModel::E1000,
            mac: None,
            network: None,
        };
        vm.nics = vec![nic; MAX_NICS + 1];
        let e = vm.check_limits().unwrap_err().to_string();
        assert!(e.contains("network adapter count (129)"), "{e}");
    }
}
