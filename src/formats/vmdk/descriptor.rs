//! The text descriptor: header settings (version, CID, parentCID, createType,
//! parentFileNameHint), extent lines and the disk database (`ddb.*`).
//!
//! Real descriptors vary a lot (CRLF line ends, keys in any order and case, values with or
//! without quotes and spaces around `=`, comments anywhere, trailing NULs in embedded ones),
//! so the parser accepts all of that; what it cannot make sense of is an error naming the line.

use crate::error::{Error, Result};

/// The largest descriptor we parse (real ones are a few KiB; VMware's limit is far lower).
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;

/// The most extents one descriptor may list (a twoGbMaxExtent disk of 64 TiB needs ~32 000).
pub const MAX_EXTENTS: usize = 1 << 16;

/// The CID value meaning "no parent" (parentCID) or "unset".
pub const CID_NONE: u32 = 0xffff_ffff;

/// How the guest may access an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write.
    ReadWrite,
    /// Read only.
    ReadOnly,
    /// No access (reads fail in VMware; we read such extents as zeros).
    NoAccess,
}

impl Access {
    /// The word used in extent lines.
    pub fn word(self) -> &'static str {
        match self {
            Access::ReadWrite => "RW",
            Access::ReadOnly => "RDONLY",
            Access::NoAccess => "NOACCESS",
        }
    }
}

/// The storage type of an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Raw bytes in a file (hosted products).
    Flat,
    /// Hosted sparse extent ("KDMV").
    Sparse,
    /// Reads as zeros, no file.
    Zero,
    /// Raw bytes in a file on VMFS (ESXi).
    Vmfs,
    /// ESXi sparse extent ("COWD"), used by vmfsSparse snapshots.
    VmfsSparse,
    /// ESXi space-efficient sparse extent (seSparse snapshots).
    SeSparse,
    /// A raw device mapping (virtual compatibility): raw bytes of a device or file.
    VmfsRdm,
    /// A raw device (pass-through): raw bytes of a device or file.
    VmfsRaw,
}

impl ExtentKind {
    /// The word used in extent lines.
    pub fn word(self) -> &'static str {
        match self {
            ExtentKind::Flat => "FLAT",
            ExtentKind::Sparse => "SPARSE",
            ExtentKind::Zero => "ZERO",
            ExtentKind::Vmfs => "VMFS",
            ExtentKind::VmfsSparse => "VMFSSPARSE",
            ExtentKind::SeSparse => "SESPARSE",
            ExtentKind::VmfsRdm => "VMFSRDM",
            ExtentKind::VmfsRaw => "VMFSRAW",
        }
    }

    fn from_word(word: &str) -> Option<ExtentKind> {
        Some(match word.to_ascii_uppercase().as_str() {
            "FLAT" => ExtentKind::Flat,
            "SPARSE" => ExtentKind::Sparse,
            "ZERO" => ExtentKind::Zero,
            "VMFS" => ExtentKind::Vmfs,
            "VMFSSPARSE" => ExtentKind::VmfsSparse,
            "SESPARSE" => ExtentKind::SeSparse,
            "VMFSRDM" => ExtentKind::VmfsRdm,
            "VMFSRAW" => ExtentKind::VmfsRaw,
            _ => return None,
        })
    }

    /// True for extents whose file holds the disk's bytes as they are.
    pub fn is_flat(self) -> bool {
        matches!(
            self,
            ExtentKind::Flat | ExtentKind::Vmfs | ExtentKind::VmfsRdm | ExtentKind::VmfsRaw
        )
    }
}

/// One extent line: `RW 4192256 SPARSE "disk-s001.vmdk"` or `RW 2048 FLAT "disk-flat.vmdk" 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// Access mode.
    pub access: Access,
    /// Size of the extent in 512-byte sectors.
    pub sectors: u64,
    /// Storage type.
    pub kind: ExtentKind,
    /// The file, relative to the descriptor's folder (absent for ZERO).
    pub file: Option<String>,
    /// For flat extents: where the extent starts in its file, in sectors.
    pub offset: u64,
    /// The line number in the descriptor (1-based), for messages.
    pub line: usize,
}

/// A parsed descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// `version=` (1, 2 or 3).
    pub version: u32,
    /// `CID=`: the content id, changed on every first write after an open.
    pub cid: u32,
    /// `parentCID=`: the parent's CID when this disk was made, or [`CID_NONE`].
    pub parent_cid: u32,
    /// `createType=`.
    pub create_type: String,
    /// `parentFileNameHint=`: the parent's descriptor, relative to this one's folder.
    pub parent_hint: Option<String>,
    /// The extents, in disk order.
    pub extents: Vec<ExtentLine>,
    /// The disk database (`ddb.key = "value"`), keys as written, in file order.
    pub ddb: Vec<(String, String)>,
    /// Every other header setting (encoding, isNativeSnapshot, ...), in file order.
    pub other: Vec<(String, String)>,
}

fn line_error(line: usize, what: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("descriptor line {line}: {what}"))
}

/// Strips one pair of surrounding double quotes (and the blanks inside them stay).
fn unquote(value: &str) -> &str {
    let v = value.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

fn parse_cid(line: usize, key: &str, value: &str) -> Result<u32> {
    let v = unquote(value);
    // Some tools write the CID with a 0x prefix or in upper case.
    let digits = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .unwrap_or(v);
    if digits.is_empty() || digits.len() > 8 {
        return Err(line_error(
            line,
            format!("{key} '{v}' is not a 32-bit hexadecimal value"),
        ));
    }
    u32::from_str_radix(digits, 16).map_err(|_| {
        line_error(
            line,
            format!("{key} '{v}' is not a 32-bit hexadecimal value"),
        )
    })
}

/// Splits an extent line into its words, a quoted file name being one word.
fn extent_words(line_no: usize, text: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('"') {
            let end = after
                .find('"')
                .ok_or_else(|| line_error(line_no, "file name has no closing quote"))?;
            words.push(after[..end].to_string());
            rest = after[end + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    Ok(words)
}

fn parse_extent(line_no: usize, text: &str) -> Result<ExtentLine> {
    let words = extent_words(line_no, text)?;
    let access = match words[0].to_ascii_uppercase().as_str() {
        "RW" => Access::ReadWrite,
        "RDONLY" => Access::ReadOnly,
        _ => Access::NoAccess,
    };
    let sectors_word = words
        .get(1)
        .ok_or_else(|| line_error(line_no, "extent line has no size"))?;
    let sectors: u64 = sectors_word.parse().map_err(|_| {
        line_error(
            line_no,
            format!("extent size '{sectors_word}' is not a number of sectors"),
        )
    })?;
    let kind_word = words
        .get(2)
        .ok_or_else(|| line_error(line_no, "extent line has no type"))?;
    let kind = ExtentKind::from_word(kind_word).ok_or_else(|| {
        line_error(
            line_no,
            format!(
                "unknown extent type '{kind_word}' (known: FLAT, SPARSE, ZERO, VMFS, VMFSSPARSE, SESPARSE, VMFSRDM, VMFSRAW)"
            ),
        )
    })?;
    let file = words.get(3).cloned();
    if file.as_deref().is_some_and(|f| f.contains('"')) {
        // Only an unquoted name can hold a quote, and no descriptor could name it back.
        return Err(line_error(line_no, "file name contains a stray quote"));
    }
    if kind != ExtentKind::Zero && file.as_deref().is_none_or(str::is_empty) {
        return Err(line_error(
            line_no,
            format!("{} extent names no file", kind.word()),
        ));
    }
    let offset: u64 = match words.get(4) {
        Some(w) if kind.is_flat() => w
            .parse()
            .map_err(|_| line_error(line_no, format!("extent offset '{w}' is not a number")))?,
        // Sparse extents may carry a partition UUID or device id after the name: ignored.
        _ => 0,
    };
    if sectors.checked_mul(512).is_none() || offset.checked_mul(512).is_none() {
        return Err(line_error(line_no, "extent size or offset is too large"));
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file: if kind == ExtentKind::Zero { None } else { file },
        offset,
        line: line_no,
    })
}

fn is_extent_line(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or("");
    ["RW", "RDONLY", "NOACCESS"]
        .iter()
        .any(|a| first.eq_ignore_ascii_case(a))
        && text.len() > first.len()
}

impl Descriptor {
    /// Parses descriptor text. Bytes after the first NUL are ignored (embedded descriptors
    /// are NUL-padded); invalid UTF-8 is replaced (old descriptors are windows-1252).
    pub fn parse(bytes: &[u8]) -> Result<Descriptor> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(&bytes[..end]);
        let mut version = None;
        let mut cid = None;
        let mut parent_cid = None;
        let mut create_type = None;
        let mut parent_hint = None;
        let mut extents = Vec::new();
        let mut ddb = Vec::new();
        let mut other = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let line = raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if is_extent_line(line) {
                if extents.len() >= MAX_EXTENTS {
                    return Err(line_error(
                        line_no,
                        format!("more than {MAX_EXTENTS} extents"),
                    ));
                }
                extents.push(parse_extent(line_no, line)?);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                let shown: String = line.chars().take(60).collect();
                return Err(line_error(
                    line_no,
                    format!("expected 'key = value' or an extent line, found '{shown}'"),
                ));
            };
            let key = key.trim();
            let value_text = unquote(value).to_string();
            if key.is_empty() {
                return Err(line_error(line_no, "setting has no name"));
            }
            if key.len() > 4 && key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("ddb.")) {
                ddb.push((key.to_string(), value_text));
                continue;
            }
            match key.to_ascii_lowercase().as_str() {
                "version" => {
                    let v: u32 = value_text.trim().parse().map_err(|_| {
                        line_error(line_no, format!("version '{value_text}' is not a number"))
                    })?;
                    version = Some(v);
                }
                "cid" => cid = Some(parse_cid(line_no, "CID", value)?),
                "parentcid" => parent_cid = Some(parse_cid(line_no, "parentCID", value)?),
                "createtype" => create_type = Some(value_text),
                "parentfilenamehint" => parent_hint = Some(value_text),
                _ => other.push((key.to_string(), value_text)),
            }
        }
        let version = version.ok_or_else(|| {
            Error::corrupt("descriptor has no 'version=' setting (is this a VMDK descriptor?)")
        })?;
        if !(1..=3).contains(&version) {
            return Err(Error::unsupported(format!(
                "descriptor version {version} is not supported (1, 2 and 3 are)"
            )));
        }
        Ok(Descriptor {
            version,
            cid: cid.unwrap_or(CID_NONE),
            parent_cid: parent_cid.unwrap_or(CID_NONE),
            create_type: create_type.unwrap_or_default(),
            parent_hint: parent_hint.filter(|h| !h.is_empty()),
            extents,
            ddb,
            other,
        })
    }

    /// A `ddb.` value by key (case-insensitive), e.g. `ddb.adapterType`.
    pub fn ddb_value(&self, key: &str) -> Option<&str> {
        self.ddb
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// True when the descriptor names a parent (a delta disk).
    pub fn has_parent(&self) -> bool {
        self.parent_cid != CID_NONE && self.parent_hint.is_some()
    }

    /// The total size of the extents in bytes.
    pub fn total_bytes(&self) -> Result<u64> {
        self.extents
            .iter()
            .try_fold(0u64, |acc, e| acc.checked_add(e.sectors * 512))
            .ok_or_else(|| Error::corrupt("the extents add up to more than 2^64 bytes"))
    }

    /// The descriptor as text, in the layout VMware's tools write.
    pub fn to_text(&self) -> String {
        let mut out = String::from("# Disk DescriptorFile\n");
        out.push_str(&format!("version={}\n", self.version));
        for (k, v) in &self.other {
            if k.eq_ignore_ascii_case("encoding") {
                out.push_str(&format!("{k}=\"{v}\"\n"));
            }
        }
        out.push_str(&format!("CID={:08x}\n", self.cid));
        out.push_str(&format!("parentCID={:08x}\n", self.parent_cid));
        for (k, v) in &self.other {
            if !k.eq_ignore_ascii_case("encoding") {
                out.push_str(&format!("{k}=\"{v}\"\n"));
            }
        }
        out.push_str(&format!("createType=\"{}\"\n", self.create_type));
        if let Some(hint) = &self.parent_hint {
            out.push_str(&format!("parentFileNameHint=\"{hint}\"\n"));
        }
        out.push_str("\n# Extent description\n");
        for e in &self.extents {
            out.push_str(&format!(
                "{} {} {}",
                e.access.word(),
                e.sectors,
                e.kind.word()
            ));
            if let Some(f) = &e.file {
                out.push_str(&format!(" \"{f}\""));
                // Only FLAT lines carry an offset: ESXi writes VMFS lines without one, and
                // qemu refuses a VMFS line with one.
                if e.kind == ExtentKind::Flat {
                    out.push_str(&format!(" {}", e.offset));
                }
            }
            out.push('\n');
        }
        out.push_str("\n# The Disk Data Base\n#DDB\n\n");
        for (k, v) in &self.ddb {
            out.push_str(&format!("{k} = \"{v}\"\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMWARE: &str = "# Disk DescriptorFile\r\nversion=1\r\nencoding=\"UTF-8\"\r\nCID=fffffffe\r\n\
parentCID=ffffffff\r\nisNativeSnapshot=\"no\"\r\ncreateType=\"twoGbMaxExtentSparse\"\r\n\r\n\
# Extent description\r\nRW 4192256 SPARSE \"test-s001.vmdk\"\r\nRW 2101248 SPARSE \"test s002.vmdk\"\r\n\
RDONLY 2048 FLAT \"raw.bin\" 63\r\nNOACCESS 100 ZERO\r\n\r\n# The Disk Data Base\r\n#DDB\r\n\r\n\
ddb.adapterType = \"ide\"\r\nddb.geometry.sectors=\"63\"\r\n";

    #[test]
    fn parses_what_vmware_writes() {
        let d = Descriptor::parse(VMWARE.as_bytes()).unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.cid, 0xffff_fffe);
        assert_eq!(d.parent_cid, CID_NONE);
        assert_eq!(d.create_type, "twoGbMaxExtentSparse");
        assert_eq!(d.extents.len(), 4);
        assert_eq!(d.extents[1].file.as_deref(), Some("test s002.vmdk"));
        assert_eq!(
            (d.extents[2].kind, d.extents[2].offset, d.extents[2].access),
            (ExtentKind::Flat, 63, Access::ReadOnly)
        );
        assert_eq!(
            (d.extents[3].kind, d.extents[3].file.as_ref()),
            (ExtentKind::Zero, None)
        );
        assert_eq!(d.ddb_value("DDB.ADAPTERTYPE"), Some("ide"));
        assert_eq!(d.ddb_value("ddb.geometry.sectors"), Some("63"));
        assert!(!d.has_parent());
        assert_eq!(
            d.total_bytes().unwrap(),
            (4192256 + 2101248 + 2048 + 100) * 512
        );
    }

    #[test]
    fn round_trips_through_text() {
        let d = Descriptor::parse(VMWARE.as_bytes()).unwrap();
        let again = Descriptor::parse(d.to_text().as_bytes()).unwrap();
        assert_eq!(d.extents.len(), again.extents.len());
        for (a, b) in d.extents.iter().zip(&again.extents) {
            assert_eq!(
                (a.kind, a.sectors, &a.file, a.offset),
                (b.kind, b.sectors, &b.file, b.offset)
            );
        }
        assert_eq!(d.ddb, again.ddb);
        assert_eq!(
            (d.cid, d.create_type.as_str()),
            (again.cid, again.create_type.as_str())
        );
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("version=1\nRW x SPARSE \"a\"\n", "line 2"),
            ("version=1\nRW 10 BOGUS \"a\"\n", "unknown extent type"),
            ("version=1\nRW 10 SPARSE\n", "names no file"),
            ("version=1\nRW 10 FLAT \"a\n", "no closing quote"),
            ("version=1\nRW 10 FLAT a\"b\n", "stray quote"),
            ("version=1\nCID=xyz\n", "line 2: CID"),
            ("version=1\njunk here\n", "line 2: expected"),
            ("CID=12345678\n", "no 'version='"),
            ("version=9\n", "version 9"),
            (
                "version=1\nRW 99999999999999999999 SPARSE \"a\"\n",
                "line 2",
            ),
        ];
        for (text, want) in cases {
            let err = Descriptor::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn multibyte_keys_do_not_panic() {
        // Found by the fuzzer: a key whose 4th byte is inside a character.
        let d =
            Descriptor::parse("version=1\nddé.x = 1\n\u{1f600}\u{1f600}=2\n".as_bytes()).unwrap();
        assert_eq!(d.other.len(), 2);
    }

    #[test]
    fn nul_padding_and_odd_spacing_are_accepted() {
        let mut bytes = b"  version = 1 \nCID = \"0A0B0C0D\"\nparentCID=12345678\nparentFileNameHint=\"p.vmdk\"\nRW 8 VMFSSPARSE \"d.vmdk\"\n".to_vec();
        bytes.extend_from_slice(&[0u8; 100]);
        bytes.extend_from_slice(b"garbage after the NUL");
        let d = Descriptor::parse(&bytes).unwrap();
        assert_eq!(d.cid, 0x0a0b_0c0d);
        assert!(d.has_parent());
        assert_eq!(d.extents[0].kind, ExtentKind::VmfsSparse);
    }
}
