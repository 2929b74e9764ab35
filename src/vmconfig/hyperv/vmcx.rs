//! Hyper-V's binary configuration store (.vmcx, and the .vmrs runtime state and the host's
//! data.vmcx, which share it): a journaled key-value container, read into a [`Node`] tree.
//!
//! Layout (little-endian, packed), as Hyper-V's VmDataStore.dll writes it and as
//! fox-it/dissect.hypervisor (`descriptor/c_hyperv.py`, `descriptor/hyperv.py`) documents it:
//! - two file headers, at 0 and 0x1000: signature 0x01282014, checksum, u16 sequence number,
//!   u32 format version (0x400), ..., u32 alignment; the one with the higher sequence wins;
//! - an object table at 0x2000: signature 0x01110001, u32 count, then 18-byte entries
//!   {u8 type, u32 checksum, u64 offset, u32 size, u8 allocated}; type 2 is a key table,
//!   3 a file object (a value too large for a key table);
//! - key tables: {u16 signature 2, u16 index, u16 sequence, u32 checksum} and then entries
//!   {u16 type|flags<<8, u32 size, u16 parent table index, u32 parent offset, u32 checksum,
//!   u32 insertion sequence, u8 data offset}, each followed by its NUL-terminated UTF-8 key and,
//!   at the data offset, its value: i64, u64, f64, u32-length-prefixed UTF-16 string or bytes,
//!   u32 bool, or a node. Flag 1 means the value lives in a file object: {u32 size, u64
//!   offset}. A parent table index of 0 means a top-level key.
//!
//! Every count and offset is checked against the file before use; the tree's depth and size
//! are bounded. Checksums and the replay log are not verified (their algorithms are not
//! public): a file saved while Hyper-V was writing it may read as its previous state.

use super::tree::{Node, Value};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// The first bytes of every .vmcx, .vmrs and data.vmcx.
pub const SIGNATURE: [u8; 4] = [0x14, 0x20, 0x28, 0x01];

const HEADER_2: usize = 0x1000;
const OBJECT_TABLE: usize = 0x2000;
const OBJECT_TABLE_SIGNATURE: u32 = 0x0111_0001;
const VERSION: u32 = 0x400;
const OBJECT_ENTRY: usize = 18;
const KEY_TABLE_HEADER: usize = 10;
const KEY_ENTRY_HEADER: usize = 21;
/// The deepest key nesting accepted (real configurations nest about 8 levels).
pub const MAX_DEPTH: usize = 64;
/// The most keys accepted (a configuration has about a thousand).
pub const MAX_KEYS: usize = 200_000;
/// The most value bytes decoded in all: many keys may point to one large file object, and
/// each would otherwise cost a copy of it.
pub const MAX_VALUE_BYTES: usize = 64 << 20;

/// True when `bytes` start like a Hyper-V binary store.
pub fn probe(bytes: &[u8]) -> bool {
    bytes.starts_with(&SIGNATURE)
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// One key as stored, before the tree is linked.
struct Key {
    name: String,
    value: Value,
    is_node: bool,
    parent: Option<(u16, u32)>,
}

/// Reads a binary store into its tree: a root node (named `""`) whose children are the
/// top-level keys. `name` names the file in errors.
pub fn parse(bytes: &[u8], name: &str) -> Result<Node> {
    let corrupt = |what: String, at: usize| {
        Error::corrupt(format!("Hyper-V .vmcx: {what}"))
            .at_offset(at as u64)
            .with_path(name)
    };
    if !probe(bytes) {
        return Err(corrupt("no .vmcx signature (14 20 28 01)".into(), 0));
    }
    // The active header: the valid one with the higher sequence number.
    let header = |at: usize| {
        let sig = u32_at(bytes, at)?;
        (sig == u32::from_le_bytes(SIGNATURE)).then_some(())?;
        Some((u16_at(bytes, at + 8)?, u32_at(bytes, at + 10)?, at))
    };
    let (_, version, at) = match (header(0), header(HEADER_2)) {
        (Some(a), Some(b)) => {
            if b.0 > a.0 {
                b
            } else {
                a
            }
        }
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => return Err(corrupt("the file header is truncated".into(), 0)),
    };
    if version != VERSION {
        return Err(Error::unsupported(format!(
            "Hyper-V .vmcx: store format version {version:#x} (only {VERSION:#x} is known)"
        ))
        .at_offset(at as u64 + 10)
        .with_path(name));
    }
    let sig = u32_at(bytes, OBJECT_TABLE)
        .ok_or_else(|| corrupt("truncated before its object table".into(), OBJECT_TABLE))?;
    if sig != OBJECT_TABLE_SIGNATURE {
        return Err(corrupt(
            format!("object table signature {sig:#010x}, not 0x01110001"),
            OBJECT_TABLE,
        ));
    }
    let count = u32_at(bytes, OBJECT_TABLE + 4)
        .ok_or_else(|| corrupt("truncated object table".into(), OBJECT_TABLE))?
        as usize;
    let first = OBJECT_TABLE + 8;
    if count > (bytes.len() - first.min(bytes.len())) / OBJECT_ENTRY {
        return Err(corrupt(
            format!("the object table claims {count} entries, more than the file holds"),
            OBJECT_TABLE + 4,
        ));
    }
    // Key tables by index: (sequence, offset, size); file objects: offset -> size.
    let mut tables: HashMap<u16, (u16, usize, usize)> = HashMap::new();
    let mut files: HashMap<u64, u32> = HashMap::new();
    for i in 0..count {
        let e = first + i * OBJECT_ENTRY;
        let kind = bytes[e];
        let offset = u64_at(bytes, e + 5).unwrap_or(0);
        let size = u32_at(bytes, e + 13).unwrap_or(0) as usize;
        let allocated = bytes[e + 17] != 0;
        if !allocated {
            continue;
        }
        let end = offset.checked_add(size as u64);
        if end.is_none_or(|end| end > bytes.len() as u64) {
            return Err(corrupt(
                format!("object {i} lies past the end of the file ({offset:#x} + {size})"),
                e,
            ));
        }
        let offset = offset as usize;
        match kind {
            2 => {
                if size < KEY_TABLE_HEADER || u16_at(bytes, offset) != Some(2) {
                    return Err(corrupt(format!("object {i} is not a key table"), offset));
                }
                let index = u16_at(bytes, offset + 2).unwrap_or(0);
                let seq = u16_at(bytes, offset + 4).unwrap_or(0);
                let newer = tables.get(&index).is_none_or(|(s, _, _)| seq > *s);
                if newer {
                    tables.insert(index, (seq, offset, size));
                }
            }
            3 => {
                files.insert(offset as u64, size as u32);
            }
            _ => {}
        }
    }
    if tables.is_empty() {
        return Err(corrupt("no key table".into(), OBJECT_TABLE));
    }
    let mut keys: Vec<Key> = Vec::new();
    let mut budget = MAX_VALUE_BYTES;
    let mut by_place: HashMap<(u16, u32), usize> = HashMap::new();
    let mut indexes: Vec<u16> = tables.keys().copied().collect();
    indexes.sort_unstable();
    for index in indexes {
        let (_, start, size) = tables[&index];
        let table = &bytes[start..start + size];
        let mut p = KEY_TABLE_HEADER;
        while p + KEY_ENTRY_HEADER <= size {
            let at = start + p;
            let ty = u16_at(table, p).unwrap_or(0);
            let len = u32_at(table, p + 2).unwrap_or(0) as usize;
            if len == 0 {
                break;
            }
            if len < KEY_ENTRY_HEADER || len > size - p {
                return Err(corrupt(
                    format!("key entry of {len} bytes does not fit its table"),
                    at,
                ));
            }
            let kind = (ty & 0xff) as u8;
            let flags = (ty >> 8) as u8;
            if kind != 1 {
                if keys.len() >= MAX_KEYS {
                    return Err(Error::unsupported(format!(
                        "Hyper-V .vmcx: more than {MAX_KEYS} keys"
                    ))
                    .with_path(name));
                }
                let parent_table = u16_at(table, p + 6).unwrap_or(0);
                let parent_offset = u32_at(table, p + 8).unwrap_or(0);
                let data_offset = table[p + 20] as usize;
                let raw = &table[p + KEY_ENTRY_HEADER..p + len];
                if data_offset == 0 || data_offset > raw.len() {
                    return Err(corrupt(
                        format!("key entry's data offset {data_offset} lies outside the entry"),
                        at,
                    ));
                }
                let key = std::str::from_utf8(&raw[..data_offset - 1])
                    .map_err(|_| corrupt("a key name is not UTF-8".into(), at))?
                    .to_string();
                let data = &raw[data_offset..];
                let value =
                    value(bytes, &files, kind, flags, data, &mut budget).map_err(|what| {
                        corrupt(format!("key '{}': {what}", super::xml::shown(&key)), at)
                    })?;
                by_place.insert((index, p as u32), keys.len());
                keys.push(Key {
                    name: key,
                    value,
                    is_node: kind == 9,
                    parent: (parent_table != 0).then_some((parent_table, parent_offset)),
                });
            }
            p += len;
        }
    }
    // Link: each key's children, in file order; keys whose parent is unknown are dropped
    // (a stale entry), and a cycle cannot be reached from the root.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
    let mut top = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match k.parent {
            None => top.push(i),
            Some(place) => {
                if let Some(&p) = by_place.get(&place)
                    && p != i
                    && keys[p].is_node
                {
                    children[p].push(i);
                }
            }
        }
    }
    let mut root = Node {
        name: String::new(),
        value: Value::None,
        children: Vec::new(),
    };
    for i in top {
        root.children
            .push(build(&keys, &children, i, 1).ok_or_else(|| {
                Error::unsupported(format!(
                    "Hyper-V .vmcx: keys nest deeper than {MAX_DEPTH} levels"
                ))
                .with_path(name)
            })?);
    }
    Ok(root)
}

fn build(keys: &[Key], children: &[Vec<usize>], i: usize, depth: usize) -> Option<Node> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut node = Node {
        name: keys[i].name.clone(),
        value: keys[i].value.clone(),
        children: Vec::with_capacity(children[i].len()),
    };
    for &c in &children[i] {
        node.children.push(build(keys, children, c, depth + 1)?);
    }
    Some(node)
}

/// A key's value from its data (`kind`: 3 i64, 4 u64, 5 f64, 6 string, 7 bytes, 8 bool, 9
/// node).
fn value(
    file: &[u8],
    files: &HashMap<u64, u32>,
    kind: u8,
    flags: u8,
    data: &[u8],
    budget: &mut usize,
) -> std::result::Result<Value, String> {
    let short = || "its value is truncated".to_string();
    let mut variable = |data: &[u8]| -> std::result::Result<Vec<u8>, String> {
        let len = if flags & 1 != 0 {
            u32_at(data, 0).ok_or_else(short)? as usize
        } else {
            data.len()
        };
        *budget = budget.checked_sub(len).ok_or_else(|| {
            format!(
                "the values add up to more than {} MiB",
                MAX_VALUE_BYTES >> 20
            )
        })?;
        if flags & 1 != 0 {
            let size = u32_at(data, 0).ok_or_else(short)? as u64;
            let offset = u64_at(data, 4).ok_or_else(short)?;
            let object = files
                .get(&offset)
                .ok_or_else(|| format!("its value points to {offset:#x}, not a file object"))?;
            if size > *object as u64 {
                return Err(format!(
                    "its value of {size} bytes overruns its file object of {object}"
                ));
            }
            Ok(file[offset as usize..(offset + size) as usize].to_vec())
        } else {
            let len = u32_at(data, 0).ok_or_else(short)? as usize;
            data.get(4..4 + len.min(data.len()))
                .filter(|d| d.len() == len)
                .map(<[u8]>::to_vec)
                .ok_or_else(short)
        }
    };
    Ok(match kind {
        3 => Value::Int(u64_at(data, 0).ok_or_else(short)? as i64 as i128),
        4 => Value::Int(u64_at(data, 0).ok_or_else(short)? as i128),
        6 => {
            let raw = variable(data)?;
            if raw.len() % 2 != 0 {
                return Err("its UTF-16 string has an odd number of bytes".into());
            }
            let units: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let s = String::from_utf16(&units)
                .map_err(|_| "its string is not valid UTF-16".to_string())?;
            Value::Str(s.trim_end_matches('\0').to_string())
        }
        7 => {
            variable(data)?;
            Value::None
        }
        8 => Value::Bool(u32_at(data, 0).ok_or_else(short)? != 0),
        _ => Value::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_foreign_files_are_errors() {
        assert!(parse(b"", "x.vmcx").is_err());
        assert!(parse(&SIGNATURE, "x.vmcx").is_err());
        let mut b = vec![0u8; 0x2010];
        b[..4].copy_from_slice(&SIGNATURE);
        b[10..14].copy_from_slice(&0x400u32.to_le_bytes());
        let e = parse(&b, "x.vmcx").unwrap_err().to_string();
        assert!(e.starts_with("x.vmcx: "), "{e}");
        b[0x2000..0x2004].copy_from_slice(&OBJECT_TABLE_SIGNATURE.to_le_bytes());
        b[0x2004..0x2008].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = parse(&b, "x.vmcx").unwrap_err().to_string();
        assert!(e.contains("more than the file holds"), "{e}");
    }
}
