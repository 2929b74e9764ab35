//! Reading VHDX: the [`Layer`] of a fixed, dynamic or differencing file.
//!
//! Opening reads, in order: the file identifier, the current header, the log (replayed in
//! memory when it holds entries, and from then on every read goes through the replay), the
//! region table, the metadata and the BAT. Everything is checked against the file's length
//! before it is used, so a damaged file fails at open with the offset of what is wrong.

use super::bat::{Bat, Geometry, PayloadState};
use super::guid::braced;
use super::header::{self, HEADER_SECTION, Header};
use super::log::{self, Replay};
use super::metadata::{self, Metadata};
use super::parent::{self, ParentRef};
use super::region::{self, Regions};
use crate::error::{Error, Result};
use crate::format::{Format, OpenContext};
use crate::image::{Allocation, BackingLink, Layer, LayerDetails, Mapping};
use crate::storage::Storage;
use serde_json::json;
use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The kind of VHDX, as `info` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subformat {
    /// Every block allocated (LeaveBlocksAllocated).
    Fixed,
    /// Blocks allocated as written.
    Dynamic,
    /// A child of a parent disk (HasParent).
    Differencing,
}

impl Subformat {
    /// The name `info` prints (qemu-img's `subformat` words).
    pub fn name(self) -> &'static str {
        match self {
            Subformat::Fixed => "fixed",
            Subformat::Dynamic => "dynamic",
            Subformat::Differencing => "differencing",
        }
    }
}

/// The sector bitmap of one partially present block: its index and bits.
type CachedBitmap = Option<(u64, Arc<[u8]>)>;

/// A VHDX layer.
pub struct VhdxLayer {
    /// The file, or the log's replay over it.
    file: Arc<dyn Storage>,
    creator: String,
    header: Header,
    regions: Regions,
    metadata: Metadata,
    bat: Bat,
    replay: Option<Replay>,
    parent: Option<ParentRef>,
    backing: Option<BackingLink>,
    warnings: Vec<String>,
    /// The last partially present block's bitmap: a walk asks for the same block run after run.
    bitmap: Mutex<CachedBitmap>,
}

impl std::fmt::Debug for VhdxLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdxLayer")
            .field("path", &self.path())
            .field("subformat", &self.subformat())
            .field("size", &self.metadata.virtual_size)
            .finish()
    }
}

impl VhdxLayer {
    /// Opens a VHDX, replaying its log in memory if it has one to replay. The file is never
    /// written.
    pub fn open(file: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<VhdxLayer> {
        let creator = header::read_creator(file.as_ref())?;
        let (header, header_warning) = header::read_current(file.as_ref())?;
        let mut warnings: Vec<String> = header_warning.into_iter().collect();
        let (file, replay): (Arc<dyn Storage>, Option<Replay>) = match log::replay(
            file.clone(),
            &header,
        )? {
            Some((overlay, summary)) => {
                warnings.push(format!(
                        "the file was not closed cleanly: its log ({} entries, sequence {} to {}) was replayed in memory; the file itself is unchanged ('qemu-img check -r all' replays it in place)",
                        summary.entries, summary.sequence.0, summary.sequence.1
                    ));
                (Arc::new(overlay), Some(summary))
            }
            None => (file, None),
        };
        let regions = region::read(file.as_ref())?;
        warnings.extend(regions.warning.clone());
        let metadata = metadata::read(file.as_ref(), regions.metadata)?;
        let geometry = Geometry::new(&metadata);
        let mut reserved = vec![
            (0, HEADER_SECTION, "header section"),
            (regions.bat.offset, regions.bat.end(), "BAT region"),
            (
                regions.metadata.offset,
                regions.metadata.end(),
                "metadata region",
            ),
        ];
        let log_end = header.log_offset.checked_add(u64::from(header.log_length));
        if header.log_length > 0 && log_end.is_some_and(|e| e <= file.len()) {
            reserved.push((header.log_offset, log_end.unwrap_or(0), "log"));
        }
        let bat = Bat::read(file.as_ref(), regions.bat, geometry, &reserved)?;
        let (parent, backing) = match &metadata.parent_locator {
            Some(locator) => {
                let p = parent::locate(locator, ctx.may_quote());
                warnings.extend(p.problems.iter().cloned());
                let link = BackingLink {
                    stored_name: p.stored_name.clone(),
                    names: p.names.clone(),
                    // Usually a VHDX, but Hyper-V also chains a VHDX to a VHD parent:
                    // detected, then checked by verify_backing.
                    format: None,
                    searched: None,
                };
                (Some(p), Some(link))
            }
            None => (None, None),
        };
        Ok(VhdxLayer {
            file,
            creator,
            header,
            regions,
            metadata,
            bat,
            replay,
            parent,
            backing,
            warnings,
            bitmap: Mutex::new(None),
        })
    }

    /// Fixed, dynamic or differencing.
    pub fn subformat(&self) -> Subformat {
        if self.metadata.has_parent {
            Subformat::Differencing
        } else if self.metadata.leave_blocks_allocated {
            Subformat::Fixed
        } else {
            Subformat::Dynamic
        }
    }

    /// The current header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Where the BAT and the metadata are.
    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// The block allocation table as read.
    pub fn bat(&self) -> &Bat {
        &self.bat
    }

    /// What replaying the log did, when it had entries.
    pub fn replay(&self) -> Option<&Replay> {
        self.replay.as_ref()
    }

    /// How a block in `state` (not stored) reads.
    fn absent(&self, state: PayloadState) -> Allocation {
        match state {
            PayloadState::NotPresent if self.metadata.has_parent => Allocation::Unallocated,
            _ => Allocation::Zero,
        }
    }

    /// The sector bitmap bits of partially present block `block`.
    fn block_bitmap(&self, block: u64) -> Result<Arc<[u8]>> {
        let mut cache = match self.bitmap.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((b, bits)) = cache.as_ref()
            && *b == block
        {
            return Ok(bits.clone());
        }
        let g = self.bat.geometry();
        let chunk = block / g.chunk_ratio;
        let base = self.bat.bitmap(chunk).ok_or_else(|| {
            Error::corrupt(format!(
                "block {block} is partially present but its chunk has no sector bitmap"
            ))
        })?;
        let sectors = g.block_size / g.sector_size;
        let at = base + (block % g.chunk_ratio) * sectors / 8;
        let mut bits = vec![0u8; (sectors / 8) as usize];
        self.file.read_exact_at(&mut bits, at)?;
        let bits: Arc<[u8]> = bits.into();
        *cache = Some((block, bits.clone()));
        Ok(bits)
    }
}

impl Layer for VhdxLayer {
    fn format(&self) -> Format {
        super::FORMAT
    }

    fn path(&self) -> &Path {
        self.file.name()
    }

    fn virtual_size(&self) -> u64 {
        self.metadata.virtual_size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let size = self.metadata.virtual_size;
        let max_len = max_len.min(size.saturating_sub(offset));
        if max_len == 0 {
            return Err(Error::invalid(format!(
                "map at {offset} outside the virtual disk ({size} bytes)"
            )));
        }
        let g = *self.bat.geometry();
        let bs = g.block_size;
        let end = offset + max_len;
        let block = offset / bs;
        let block_start = block * bs;
        let in_block = offset - block_start;
        let (state, host) = self.bat.payload(block);
        match state {
            PayloadState::FullyPresent => {
                // Neighbouring blocks stored one after the other are one run.
                let mut next = block + 1;
                while next * bs < end {
                    let (s, h) = self.bat.payload(next);
                    if s != PayloadState::FullyPresent || h != host + (next - block) * bs {
                        break;
                    }
                    next += 1;
                }
                let run_end = (next * bs).min(end);
                Ok(Mapping::new(offset, run_end - offset, Allocation::Data)
                    .at_host(0, host + in_block))
            }
            PayloadState::PartiallyPresent => {
                let bits = self.block_bitmap(block)?;
                let ss = g.sector_size;
                let sectors = bs / ss;
                let first = in_block / ss;
                let bit = |s: u64| bits[(s / 8) as usize] >> (s % 8) & 1 != 0;
                let set = bit(first);
                let mut s = first + 1;
                while s < sectors && bit(s) == set {
                    s += 1;
                }
                let run_end = (block_start + s * ss).min(end);
                let m = if set {
                    Mapping::new(offset, run_end - offset, Allocation::Data)
                        .at_host(0, host + in_block)
                } else {
                    Mapping::new(offset, run_end - offset, Allocation::Unallocated)
                };
                Ok(m)
            }
            other => {
                let alloc = self.absent(other);
                let end_block = end.div_ceil(bs);
                let next = self.bat.run_end(block + 1, end_block, |s| {
                    !s.is_stored() && self.absent(s) == alloc
                });
                let run_end = (next * bs).min(end);
                Ok(Mapping::new(offset, run_end - offset, alloc))
            }
        }
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.bat.geometry().block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / bs;
            let in_block = pos % bs;
            let n = ((bs - in_block) as usize).min(buf.len() - done);
            let (state, host) = self.bat.payload(block);
            if !state.is_stored() {
                return Err(Error::invalid(format!(
                    "read of block {block} at virtual offset {pos}, which is not stored ({state:?})"
                )));
            }
            self.file
                .read_exact_at(&mut buf[done..done + n], host + in_block)?;
            done += n;
        }
        Ok(())
    }

    fn backing(&self) -> Option<&BackingLink> {
        self.backing.as_ref()
    }

    fn verify_backing(&self, parent: &dyn Layer) -> Result<Vec<String>> {
        let Some(p) = &self.parent else {
            return Ok(Vec::new());
        };
        if let Some(vhdx) = parent.as_any().downcast_ref::<VhdxLayer>() {
            return parent::check_linkage(p, &vhdx.header.data_write_guid)
                .map(|()| Vec::new())
                .map_err(|why| {
                    Error::corrupt(format!("parent '{}': {why}", parent.path().display()))
                });
        }
        if parent.format() == crate::formats::vhd::FORMAT {
            return Ok(vec![format!(
                "the parent '{}' is a VHD, which has no DataWriteGuid: the parent linkage cannot be checked",
                parent.path().display()
            )]);
        }
        Err(Error::invalid(format!(
            "the parent '{}' is a {} image, but a differencing VHDX's parent must be a VHDX or a VHD",
            parent.path().display(),
            parent.format()
        )))
    }

    fn details(&self) -> LayerDetails {
        let m = &self.metadata;
        let mut data = serde_json::Map::new();
        let mut human: Vec<(String, String)> = Vec::new();
        let sub = self.subformat().name();
        data.insert("subformat".into(), json!(sub));
        data.insert("block-size".into(), json!(m.block_size));
        data.insert("logical-sector-size".into(), json!(m.logical_sector_size));
        data.insert("physical-sector-size".into(), json!(m.physical_sector_size));
        data.insert("allocated-blocks".into(), json!(self.bat.stored_blocks()));
        data.insert("creator".into(), json!(self.creator));
        data.insert("disk-id".into(), json!(braced(&m.page83)));
        data.insert(
            "data-write-guid".into(),
            json!(braced(&self.header.data_write_guid)),
        );
        data.insert(
            "header".into(),
            json!({"copy": self.header.copy, "sequence-number": self.header.sequence_number}),
        );
        data.insert("region-table-copy".into(), json!(self.regions.copy));
        human.push(("subformat".into(), sub.into()));
        human.push(("block size".into(), m.block_size.to_string()));
        human.push((
            "sector size".into(),
            format!(
                "{} logical, {} physical",
                m.logical_sector_size, m.physical_sector_size
            ),
        ));
        human.push(("creator".into(), self.creator.clone()));
        human.push(("disk id".into(), braced(&m.page83)));
        let log = match &self.replay {
            None => "clean".to_string(),
            Some(r) => {
                data.insert(
                    "log-replay".into(),
                    json!({
                        "entries": r.entries,
                        "first-sequence": r.sequence.0,
                        "last-sequence": r.sequence.1,
                        "bytes": r.bytes,
                        "file-length": r.file_len,
                    }),
                );
                format!(
                    "replayed in memory ({} entries, sequence {} to {}; the file is unchanged)",
                    r.entries, r.sequence.0, r.sequence.1
                )
            }
        };
        data.insert(
            "log".into(),
            json!(if self.replay.is_some() {
                "replayed in memory"
            } else {
                "clean"
            }),
        );
        human.push(("log".into(), log));
        if let (Some(p), Some(locator)) = (&self.parent, &m.parent_locator) {
            let entries: serde_json::Map<String, serde_json::Value> = locator
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            data.insert("parent-locator".into(), serde_json::Value::Object(entries));
            let tried: Vec<String> = p
                .names
                .iter()
                .map(|n| {
                    crate::gate::Gate::resolve(self.path(), n)
                        .display()
                        .to_string()
                })
                .collect();
            data.insert("parent-candidates".into(), json!(tried));
            for (k, v) in &locator.entries {
                human.push((format!("parent locator {k}"), v.clone()));
            }
        }
        LayerDetails {
            cluster_size: Some(m.block_size),
            dirty: self.replay.is_some(),
            format_specific: data,
            // qemu-img prints no format-specific block for VHDX: all of these are ours.
            human: Vec::new(),
            human_extra: human,
        }
    }

    fn open_warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn storage(&self, index: usize) -> Option<&dyn Storage> {
        (index == 0).then_some(self.file.as_ref())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
