//! OVA packages: a tar of an OVF descriptor, its manifest and the VM's disks.
//!
//! The `write` module makes one in a single pass over each disk.

pub mod descriptor;
pub mod mapping;
pub mod open;
pub mod write;
