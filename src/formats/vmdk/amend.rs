//! `amend` and `rebase -u` for VMDK: both only rewrite the descriptor (see `descriptor_io.rs`
//! for how that survives a crash).
//!
//! qemu-img 10 supports neither for VMDK ("does not support option amendment", and rebase -u
//! fails with "Operation not supported"), so the fields are written as qemu-img `create`
//! writes them for the same options: `ddb.adapterType` with the geometry that adapter implies
//! (16 heads for IDE, 255 otherwise), `ddb.virtualHWVersion`, `ddb.toolsVersion`, and for a
//! parent `parentFileNameHint` as given and `parentCID` from the parent's CID.

use super::VmdkLayer;
use super::descriptor::CID_NONE;
use super::descriptor_io::{StoredDescriptor, set_ddb, update_geometry};
use crate::edit::{EditContext, Force, NewBacking};
use crate::error::{Error, Result};
use crate::format::{OpenContext, Provenance, Salvage};
use crate::gate::{Lookup, Role};
use crate::options::{FormatOptions, OptionKind, OptionSpec};
use std::path::Path;

/// The `-o` options `amend` changes in place (qemu-img's create names).
pub const AMEND_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "adapter_type",
        kind: OptionKind::Choice(&["ide", "lsilogic", "buslogic", "legacyESX", "pvscsi"]),
        help: "ddb.adapterType, and the ddb geometry that adapter implies (16 heads for ide, 255 otherwise)",
    },
    OptionSpec {
        key: "hwversion",
        kind: OptionKind::Text,
        help: "ddb.virtualHWVersion (a number, such as 4, 6, 13)",
    },
    OptionSpec {
        key: "compat6",
        kind: OptionKind::Flag,
        help: "same as hwversion=6",
    },
    OptionSpec {
        key: "toolsversion",
        kind: OptionKind::Text,
        help: "ddb.toolsVersion (2147483647: tools managed by the guest)",
    },
];

/// Changes the ddb fields `options` names, in the descriptor of the image at `path`.
pub fn amend(path: &Path, options: &FormatOptions) -> Result<()> {
    let mut stored = StoredDescriptor::load(path)?;
    let mut d = stored.descriptor.clone();
    let hwversion = match (options.text("hwversion"), options.flag("compat6")) {
        (Some(v), Some(true)) if v != "6" => {
            return Err(Error::invalid(
                "compat6 and hwversion contradict each other; give one of them",
            )
            .with_path(path));
        }
        (Some(v), _) => Some(v.to_string()),
        (None, Some(true)) => Some("6".to_string()),
        (None, _) => None,
    };
    if let Some(v) = &hwversion {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid(format!("hwversion '{v}' is not a number")).with_path(path));
        }
        set_ddb(&mut d, "ddb.virtualHWVersion", v);
    }
    if let Some(t) = options.text("toolsversion") {
        if t.is_empty() || t.contains('"') || t.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "toolsversion '{}' cannot be stored in a descriptor",
                t.escape_debug()
            ))
            .with_path(path));
        }
        set_ddb(&mut d, "ddb.toolsVersion", t);
    }
    if let Some(a) = options.text("adapter_type") {
        set_ddb(&mut d, "ddb.adapterType", a);
        let sectors = d.total_bytes().map_err(|e| e.with_path(path))? / 512;
        update_geometry(&mut d, sectors);
    }
    if d == stored.descriptor {
        return Ok(());
    }
    stored.store(d)
}

/// Records `backing` (or none) as the parent of the VMDK at `path`.
pub fn set_backing(path: &Path, backing: Option<&NewBacking>, ctx: &EditContext<'_>) -> Result<()> {
    let mut stored = StoredDescriptor::load(path)?;
    let mut d = stored.descriptor.clone();
    let esx_delta = d.extents.iter().any(|e| {
        matches!(
            e.kind,
            super::descriptor::ExtentKind::VmfsSparse | super::descriptor::ExtentKind::SeSparse
        )
    });
    match backing {
        None => {
            if esx_delta {
                return Err(Error::unsupported(
                    "an ESXi snapshot (vmfsSparse/seSparse) has no meaning without its parent; convert it to drop the parent",
                )
                .with_path(path));
            }
            d.parent_hint = None;
            d.parent_cid = CID_NONE;
        }
        Some(b) => {
            if let Some(f) = b.format
                && f != super::FORMAT
            {
                return Err(Error::invalid(format!(
                    "the parent of a VMDK must be a VMDK, not {f} (-F)"
                ))
                .with_path(path));
            }
            if b.name.is_empty() || b.name.contains('"') || b.name.chars().any(char::is_control) {
                return Err(Error::invalid(format!(
                    "parent name '{}' cannot be stored in a descriptor",
                    b.name.escape_debug()
                ))
                .with_path(path));
            }
            d.parent_cid = match parent_cid(path, &b.name, ctx) {
                Ok(cid) => cid,
                // Without the parent there is no CID to record; the user insisted, so the
                // link is written unchecked (readers then warn that it cannot be checked).
                Err(_) if ctx.force == Force::Yes => CID_NONE,
                Err(e) => return Err(e),
            };
            d.parent_hint = Some(b.name.clone());
        }
    }
    if d == stored.descriptor {
        return Ok(());
    }
    stored.store(d)
}

/// The CID of the VMDK that the image at `path` would name `name`, opened through the gate.
fn parent_cid(path: &Path, name: &str, ctx: &EditContext<'_>) -> Result<u32> {
    let storage = match ctx.gate.open(path, name, Role::Backing)? {
        Lookup::Opened(f) => f,
        Lookup::Missing(p) => {
            return Err(Error::invalid(format!(
                "new parent '{name}' not found (looked for {}); its CID is needed for parentCID",
                p.display()
            ))
            .with_path(path));
        }
    };
    let open = OpenContext {
        gate: ctx.gate,
        provenance: Provenance::NamedByImage,
        salvage: Salvage::Refuse,
        snapshot: None,
        data_files: crate::image::DataFilePolicy::Require,
    };
    let layer = VmdkLayer::open(storage, &open)
        .map_err(|e| e.context(format!("new parent '{name}'")).with_path(path))?;
    if layer.descriptor().is_none() {
        return Err(Error::invalid(format!(
            "new parent '{name}' has no descriptor (a bare extent), so no CID to record"
        ))
        .with_path(path));
    }
    Ok(layer.cid())
}
