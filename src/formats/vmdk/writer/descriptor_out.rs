//! The descriptor and disk database of the VMDKs we write.
//!
//! VMware's importers are picky about the disk database: ESXi and vSphere's guest
//! customization want a real `ddb.adapterType` and `ddb.toolsVersion`, and an IDE disk wants
//! a BIOS-style geometry. We write what VMware's own tools write.

use super::Subformat;
use crate::error::{Error, Result};
use crate::formats::vmdk::VmdkLayer;
use crate::formats::vmdk::descriptor::{Access, CID_NONE, Descriptor, ExtentKind, ExtentLine};
use crate::writer::CreateSpec;

/// Identity and disk database of a disk being written.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// Virtual size in sectors.
    pub sectors: u64,
    /// The new disk's content id.
    pub cid: u32,
    /// The parent's content id, or [`CID_NONE`].
    pub parent_cid: u32,
    /// The parent as the user named it.
    pub parent_hint: Option<String>,
    /// ddb.adapterType.
    pub adapter_type: String,
    /// ddb.virtualHWVersion.
    pub hwversion: String,
    /// ddb.toolsVersion.
    pub toolsversion: String,
    /// Write version-2 sparse extents with zeroed-grain entries.
    pub zeroed_grain: bool,
    /// 128 random bits for ddb.uuid and ddb.longContentID.
    random: [u8; 16],
}

/// A random CID that is neither of the reserved values (ffffffff "none", fffffffe "unset").
fn random_cid(bytes: &[u8; 16]) -> u32 {
    let cid = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if cid >= 0xffff_fffe { 0x1234_5678 } else { cid }
}

impl DiskSettings {
    /// Settings from the user's options and the backing image.
    pub fn from_spec(spec: &CreateSpec, subformat: Subformat) -> Result<DiskSettings> {
        let random = *uuid::Uuid::new_v4().as_bytes();
        let (parent_cid, parent_hint) = match &spec.backing {
            None => (CID_NONE, None),
            Some(b) => {
                let top = b.image.top();
                let Some(parent) = top.as_any().downcast_ref::<VmdkLayer>() else {
                    return Err(Error::invalid(format!(
                        "the backing image of a VMDK must be a VMDK, but '{}' is {}",
                        b.path.display(),
                        top.format()
                    )));
                };
                (parent.cid(), Some(b.stored_name.clone()))
            }
        };
        let hwversion = match (spec.options.text("hwversion"), spec.options.flag("compat6")) {
            (Some(v), Some(true)) if v != "6" => {
                return Err(Error::invalid(
                    "compat6 and hwversion contradict each other; give one of them",
                ));
            }
            (Some(v), _) => v.to_string(),
            (None, Some(true)) => "6".to_string(),
            (None, _) => "4".to_string(),
        };
        let zeroed_grain = match spec.options.flag("zeroed_grain") {
            Some(z) => z,
            None => spec.backing.is_some(),
        };
        if zeroed_grain && !subformat.is_sparse() {
            return Err(Error::invalid(format!(
                "zeroed_grain applies to sparse extents only, not {}",
                subformat.create_type()
            )));
        }
        Ok(DiskSettings {
            sectors: spec.size.div_ceil(512),
            cid: random_cid(&random),
            parent_cid,
            parent_hint,
            adapter_type: spec
                .options
                .text("adapter_type")
                .unwrap_or("lsilogic")
                .to_string(),
            hwversion,
            toolsversion: spec
                .options
                .text("toolsversion")
                .unwrap_or("2147483647")
                .to_string(),
            zeroed_grain,
            random,
        })
    }

    /// (cylinders, heads, sectors) as VMware computes them: IDE disks use 16 heads and at
    /// most 16383 cylinders, SCSI disks 255 heads and at most 65535.
    pub fn geometry(&self) -> (u64, u64, u64) {
        let (heads, max_cylinders) = if self.adapter_type == "ide" {
            (16, 16383)
        } else {
            (255, 65535)
        };
        let cylinders = (self.sectors / (heads * 63)).clamp(1, max_cylinders);
        (cylinders, heads, 63)
    }

    /// The descriptor for a disk of `subformat` made of `extents` (file name, sectors, kind).
    pub fn descriptor(
        &self,
        subformat: Subformat,
        extents: &[(Option<String>, u64, ExtentKind)],
    ) -> Descriptor {
        let (c, h, s) = self.geometry();
        let r = &self.random;
        let uuid = format!(
            "{:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x}-{:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x} {:02x}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
            r[12],
            r[13],
            r[14],
            r[15]
        );
        // VMware's longContentID ends with the CID.
        let long_cid = format!(
            "{}{:08x}",
            r[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            self.cid
        );
        let ddb = vec![
            ("ddb.adapterType".to_string(), self.adapter_type.clone()),
            ("ddb.geometry.cylinders".to_string(), c.to_string()),
            ("ddb.geometry.heads".to_string(), h.to_string()),
            ("ddb.geometry.sectors".to_string(), s.to_string()),
            ("ddb.longContentID".to_string(), long_cid),
            ("ddb.toolsInstallType".to_string(), "4".to_string()),
            ("ddb.toolsVersion".to_string(), self.toolsversion.clone()),
            ("ddb.uuid".to_string(), uuid),
            ("ddb.virtualHWVersion".to_string(), self.hwversion.clone()),
        ];
        Descriptor {
            version: 1,
            cid: self.cid,
            parent_cid: self.parent_cid,
            create_type: subformat.create_type().to_string(),
            parent_hint: self.parent_hint.clone(),
            extents: extents
                .iter()
                .map(|(file, sectors, kind)| ExtentLine {
                    access: Access::ReadWrite,
                    sectors: *sectors,
                    kind: *kind,
                    file: file.clone(),
                    offset: 0,
                    line: 0,
                })
                .collect(),
            ddb,
            other: vec![
                ("encoding".to_string(), "UTF-8".to_string()),
                ("isNativeSnapshot".to_string(), "no".to_string()),
            ],
        }
    }
}
