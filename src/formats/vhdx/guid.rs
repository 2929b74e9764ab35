//! GUIDs as VHDX stores them (Microsoft's mixed-endian layout) and the ones the format defines.

use uuid::{Uuid, uuid};

/// A GUID, held as a [`Uuid`] so it prints as Windows tools print it.
pub type Guid = Uuid;

/// The GUID stored at `at` of `b`: the first three fields little-endian, as Windows writes
/// them (`Uuid::from_bytes_le` undoes exactly that).
pub fn read_guid(b: &[u8], at: usize) -> Guid {
    Uuid::from_bytes_le(b[at..at + 16].try_into().expect("16 bytes"))
}

/// Region: the block allocation table.
pub const REGION_BAT: Guid = uuid!("2DC27766-F623-4200-9D64-115E9BFD4A08");
/// Region: the metadata table and items.
pub const REGION_METADATA: Guid = uuid!("8B7CA206-4790-4B9A-B8FE-575F050F886E");

/// Metadata item: block size and the fixed/differencing flags.
pub const FILE_PARAMETERS: Guid = uuid!("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
/// Metadata item: the size of the virtual disk.
pub const VIRTUAL_DISK_SIZE: Guid = uuid!("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
/// Metadata item: the disk's identity for SCSI page 83.
pub const PAGE_83_DATA: Guid = uuid!("BECA12AB-B2E6-4523-93EF-C309E000C746");
/// Metadata item: the logical sector size.
pub const LOGICAL_SECTOR_SIZE: Guid = uuid!("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
/// Metadata item: the physical sector size.
pub const PHYSICAL_SECTOR_SIZE: Guid = uuid!("CDA348C7-445D-4471-9CC9-E9885251C556");
/// Metadata item: where a differencing disk's parent is.
pub const PARENT_LOCATOR: Guid = uuid!("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");

/// The parent locator type of a VHDX parent (the only one the specification defines).
pub const LOCATOR_TYPE_VHDX: Guid = uuid!("B04AEFB7-D19E-4A81-B789-25B8E9445913");

/// A GUID in braces, as Hyper-V writes them in parent locators and shows them.
pub fn braced(g: &Guid) -> String {
    format!("{{{}}}", g.hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_read_in_windows_layout() {
        // The BAT region GUID as it lies on disk.
        let on_disk = [
            0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD,
            0x4A, 0x08,
        ];
        assert_eq!(read_guid(&on_disk, 0), REGION_BAT);
        assert_eq!(
            braced(&REGION_BAT),
            "{2dc27766-f623-4200-9d64-115e9bfd4a08}"
        );
    }
}
