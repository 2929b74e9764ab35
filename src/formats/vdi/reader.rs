//! The VDI reader: the block map, read whole (bounded by the header checks), and blocks that
//! are stored, free (from the parent, or zeros without one) or zero.

use super::header::{BLOCK_FREE, BLOCK_ZERO, Header};
use crate::error::{Error, Result};
use crate::format::{Format, OpenContext, Salvage};
use crate::image::{Allocation, BackingLink, Layer, LayerDetails, Mapping};
use crate::storage::Storage;
use serde_json::json;
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// What one block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Not in this image.
    Free,
    /// Reads as zeros.
    Zero,
    /// Stored, its data at this file offset.
    Stored(u64),
    /// Stored past the end of the file: read as zeros when salvaging.
    Missing,
}

/// A VDI layer.
pub struct VdiLayer {
    path: PathBuf,
    file: Arc<dyn Storage>,
    header: Header,
    map: Vec<u32>,
    backing: Option<BackingLink>,
    salvage: bool,
}

impl VdiLayer {
    /// Opens the image in `file`; for a differencing image, looks for its parent (see
    /// [`super::parent`]) through the context's gate.
    pub fn open(file: Arc<dyn Storage>, ctx: &OpenContext<'_>) -> Result<VdiLayer> {
        let header = Header::read(file.as_ref())?;
        let map = header.read_map(file.as_ref())?;
        let path = file.name().to_path_buf();
        let backing = if header.image_type.has_parent() {
            let search = super::parent::find(&path, header.uuid_linkage, ctx.gate);
            let searched = searched_text(&search);
            Some(BackingLink {
                stored_name: format!("{{{}}}", header.uuid_linkage),
                names: search.names,
                format: Some(super::FORMAT),
                searched: Some(searched),
            })
        } else {
            None
        };
        Ok(VdiLayer {
            path,
            file,
            header,
            map,
            backing,
            salvage: ctx.salvage == Salvage::ReadWhatIsThere,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn block(&self, index: u64) -> Result<Block> {
        let entry = self.map[index as usize];
        Ok(match entry {
            BLOCK_FREE => Block::Free,
            BLOCK_ZERO => Block::Zero,
            n => {
                let at = self.header.block_data_at(n);
                // The part of the block the disk uses must be in the file.
                let used = (self.header.disk_size)
                    .saturating_sub(index * self.header.block_size as u64)
                    .min(self.header.block_size as u64);
                if at.saturating_add(used) > self.file.len() {
                    if self.salvage {
                        return Ok(Block::Missing);
                    }
                    return Err(Error::corrupt(format!(
                        "block {index} is stored at {at:#x}, past the end of the file ({} bytes)",
                        self.file.len()
                    ))
                    .at_offset(self.header.blocks_offset + index * 4));
                }
                Block::Stored(at)
            }
        })
    }
}

/// Where the parent search looked, and where the gate kept it out, for the message when no
/// parent opens.
fn searched_text(search: &super::parent::Search) -> String {
    let quoted = |f: &String| format!("'{f}'");
    let mut text = if search.searched.is_empty() {
        "no folder".to_string()
    } else {
        format!(
            "VirtualBox machine files and VDIs in {} of the image's folder",
            search
                .searched
                .iter()
                .map(quoted)
                .collect::<Vec<_>>()
                .join(" and ")
        )
    };
    for refusal in &search.refused {
        text.push_str(&format!("; {refusal}"));
    }
    text
}

impl Layer for VdiLayer {
    fn format(&self) -> Format {
        super::FORMAT
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn virtual_size(&self) -> u64 {
        self.header.disk_size
    }

    fn map(&self, offset: u64, max_len: u64) -> Result<Mapping> {
        let size = self.header.disk_size;
        let limit = offset.saturating_add(max_len).min(size);
        if offset >= limit {
            return Err(Error::invalid(format!(
                "map at {offset} is outside the virtual disk ({size} bytes)"
            )));
        }
        let bs = self.header.block_size as u64;
        let first_index = offset / bs;
        let first = self.block(first_index)?;
        let within = offset % bs;
        let mut end = (first_index + 1) * bs;
        let mut index = first_index + 1;
        while end < limit {
            let next = self.block(index)?;
            let continues = match (first, next) {
                (Block::Stored(a), Block::Stored(b)) => {
                    self.header.block_extra == 0 && b == a + (index - first_index) * bs
                }
                (a, b) => a == b,
            };
            if !continues {
                break;
            }
            end += bs;
            index += 1;
        }
        let len = end.min(limit) - offset;
        Ok(match first {
            // A free block reads from the parent; without one it reads as zeros, and is
            // reported so (present, as qemu-img's map and compare -s have it).
            Block::Free if self.header.image_type.has_parent() => {
                Mapping::new(offset, len, Allocation::Unallocated)
            }
            Block::Free => Mapping::new(offset, len, Allocation::Zero),
            Block::Zero | Block::Missing => Mapping::new(offset, len, Allocation::Zero),
            Block::Stored(at) => {
                Mapping::new(offset, len, Allocation::Data).at_host(0, at + within)
            }
        })
    }

    fn read_data(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.header.block_size as u64;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let mut n = ((bs - pos % bs) as usize).min(buf.len() - done);
            let block = self.block(pos / bs)?;
            // Blocks stored one after the other are read with one call.
            if let Block::Stored(at) = block {
                let mut next = pos / bs + 1;
                while done + n < buf.len()
                    && self.block(next)? == Block::Stored(at + (next - pos / bs) * bs)
                    && self.header.block_extra == 0
                {
                    n += (bs as usize).min(buf.len() - done - n);
                    next += 1;
                }
            }
            let dest = &mut buf[done..done + n];
            match block {
                Block::Stored(at) => self.file.read_exact_at(dest, at + pos % bs)?,
                Block::Free | Block::Zero | Block::Missing => dest.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn backing(&self) -> Option<&BackingLink> {
        self.backing.as_ref()
    }

    fn verify_backing(&self, parent: &dyn Layer) -> Result<Vec<String>> {
        let Some(vdi) = parent.as_any().downcast_ref::<VdiLayer>() else {
            return Err(Error::invalid(format!(
                "the parent '{}' is a {} image, but a differencing VDI's parent must be a VDI",
                parent.path().display(),
                parent.format()
            )));
        };
        let h = &self.header;
        if vdi.header.uuid_create != h.uuid_linkage {
            return Err(Error::corrupt(format!(
                "parent '{}' has UUID {{{}}} but this differencing VDI was made against {{{}}}; refusing to read through the wrong parent",
                parent.path().display(),
                vdi.header.uuid_create,
                h.uuid_linkage
            )));
        }
        if !h.uuid_parent_modify.is_nil() && vdi.header.uuid_modify != h.uuid_parent_modify {
            let message = format!(
                "parent '{}' was modified after this differencing VDI was made (its modification UUID is {{{}}}, the child recorded {{{}}}), so the child's view of it is lost",
                parent.path().display(),
                vdi.header.uuid_modify,
                h.uuid_parent_modify
            );
            if self.salvage {
                return Ok(vec![format!("{message}; read anyway (--salvage)")]);
            }
            return Err(Error::corrupt(format!(
                "{message}; --salvage reads it anyway"
            )));
        }
        Ok(Vec::new())
    }

    fn details(&self) -> LayerDetails {
        let h = &self.header;
        let mut d = LayerDetails {
            cluster_size: Some(h.block_size as u64),
            ..LayerDetails::default()
        };
        let fs = &mut d.format_specific;
        // qemu-img prints no format-specific block for VDI: all of these are ours.
        let human = &mut d.human_extra;
        let mut both = |key: &str, human_key: &str, value: serde_json::Value, text: String| {
            fs.insert(key.into(), value);
            human.push((human_key.into(), text));
        };
        both(
            "image-type",
            "image type",
            json!(h.image_type.name()),
            h.image_type.name().into(),
        );
        both(
            "version",
            "version",
            json!(h.version_text()),
            h.version_text(),
        );
        both(
            "block-size",
            "block size",
            json!(h.block_size),
            h.block_size.to_string(),
        );
        both(
            "allocated-blocks",
            "allocated blocks",
            json!(h.blocks_allocated),
            format!("{} of {}", h.blocks_allocated, h.blocks),
        );
        let braced = |u: Uuid| format!("{{{u}}}");
        both(
            "uuid",
            "uuid",
            json!(h.uuid_create.to_string()),
            braced(h.uuid_create),
        );
        both(
            "modification-uuid",
            "modification uuid",
            json!(h.uuid_modify.to_string()),
            braced(h.uuid_modify),
        );
        if h.image_type.has_parent() {
            both(
                "parent-uuid",
                "parent uuid",
                json!(h.uuid_linkage.to_string()),
                braced(h.uuid_linkage),
            );
            both(
                "parent-modification-uuid",
                "parent modification uuid",
                json!(h.uuid_parent_modify.to_string()),
                braced(h.uuid_parent_modify),
            );
        }
        if !h.comment.is_empty() {
            both("comment", "comment", json!(h.comment), h.comment.clone());
        }
        d
    }

    fn storage(&self, index: usize) -> Option<&dyn Storage> {
        (index == 0).then_some(self.file.as_ref())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
