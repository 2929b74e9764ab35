//! The .vmx text: `key = "value"` lines, keys case-insensitive, `|XX` hex escapes in values.
//!
//! VMware writes one `key = "value"` per line, in any order, with `#` comments and blank lines
//! (GSX's files begin with `#!/usr/bin/vmware`). Keys compare without regard to case
//! (`memsize` and `memSize` are the same key; Fusion writes both spellings). Values escape
//! a byte VMware does not leave as it is as `|` and two hex digits (`|22` for `"`, `|7C` for `|`,
//! `|0A` for a line break in an annotation); the bytes are then text in the file's
//! `.encoding` (UTF-8 when it is absent, as every product since Workstation 5 writes it).
//!
//! Everything here is untrusted: a malformed line is one error naming its line number, every
//! size is bounded, and a key given twice is refused (VMware keeps one of them, and which one a
//! reader takes would change the machine).

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// The longest value accepted (the largest real ones, `encryption.data` of an encrypted VM,
/// are some tens of KiB).
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// The most entries accepted (real files have a few hundred).
pub const MAX_ENTRIES: usize = 100_000;

/// One `key = "value"` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key as written.
    pub key: String,
    /// The value, unescaped and decoded.
    pub value: String,
    /// The 1-based line it is on, for messages.
    pub line: usize,
}

/// A parsed .vmx: its entries in file order and an index by lowercase key.
#[derive(Debug, Clone, Default)]
pub struct VmxFile {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl VmxFile {
    /// The entries in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry of `key` (case-insensitive).
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.index
            .get(&key.to_ascii_lowercase())
            .map(|&i| &self.entries[i])
    }

    /// The value of `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// The value of `key` as a boolean: `TRUE`/`FALSE` in any case (also `yes`/`no`, `1`/`0`,
    /// which old files have); `None` when absent or not a boolean.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key)
            .and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(true),
                "false" | "no" | "0" => Some(false),
                _ => None,
            })
    }
}

/// The text encodings a .vmx may declare that we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    /// ISO-8859-1 and windows-1252 (old Windows hosts): each byte is one character (the
    /// windows-1252 letters in 0x80..0x9F are taken as their Latin-1 code points).
    Latin1,
}

fn encoding_named(name: &str) -> Option<Encoding> {
    match name.trim().to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" => Some(Encoding::Utf8),
        "iso-8859-1" | "latin1" | "windows-1252" | "cp1252" | "us-ascii" | "ascii" => {
            Some(Encoding::Latin1)
        }
        _ => None,
    }
}

/// One line split into key and raw (still escaped) value bytes.
struct RawLine<'a> {
    key: &'a [u8],
    value: &'a [u8],
}

/// Splits one line; `Ok(None)` for a blank or comment line.
fn split_line(line: &[u8]) -> std::result::Result<Option<RawLine<'_>>, String> {
    let t = trim(line);
    if t.is_empty() || t[0] == b'#' {
        return Ok(None);
    }
    let eq = t
        .iter()
        .position(|&b| b == b'=')
        .ok_or_else(|| "expected key = \"value\", found no '='".to_string())?;
    let key = trim(&t[..eq]);
    if key.is_empty() {
        return Err("a line with no key before '='".into());
    }
    if let Some(b) = key
        .iter()
        .find(|b| b.is_ascii_whitespace() || **b == b'"' || b.is_ascii_control())
    {
        return Err(format!(
            "the key '{}' holds the character {:?}",
            String::from_utf8_lossy(key),
            *b as char
        ));
    }
    let rest = trim(&t[eq + 1..]);
    let (value, after) = if let Some(body) = rest.strip_prefix(b"\"") {
        let end = body
            .iter()
            .position(|&b| b == b'"')
            .ok_or_else(|| "unterminated quoted value (no closing '\"')".to_string())?;
        (&body[..end], trim(&body[end + 1..]))
    } else {
        // Old files leave some values unquoted (`memsize = 256`): a value up to a space or
        // a comment.
        let end = rest
            .iter()
            .position(|&b| b.is_ascii_whitespace() || b == b'#')
            .unwrap_or(rest.len());
        if rest[..end].contains(&b'"') {
            return Err("a stray '\"' in an unquoted value".into());
        }
        (&rest[..end], trim(&rest[end..]))
    };
    if !after.is_empty() && after[0] != b'#' {
        return Err(format!(
            "unexpected text after the value: '{}'",
            String::from_utf8_lossy(&after[..after.len().min(40)])
        ));
    }
    Ok(Some(RawLine { key, value }))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Undoes `|XX` escapes.
fn unescape(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'|' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|_| raw[i + 1].is_ascii_hexdigit() && raw[i + 2].is_ascii_hexdigit());
            match hex {
                Some(b) => out.push(b),
                None => {
                    return Err(format!(
                        "bad escape '{}' at column {} of the value ('|' must be followed by two hex digits)",
                        String::from_utf8_lossy(&raw[i..raw.len().min(i + 3)]),
                        i + 1
                    ));
                }
            }
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn decode(bytes: Vec<u8>, encoding: Encoding) -> std::result::Result<String, String> {
    match encoding {
        Encoding::Utf8 => String::from_utf8(bytes).map_err(|e| {
            format!(
                "the value is not UTF-8 (byte {})",
                e.utf8_error().valid_up_to() + 1
            )
        }),
        Encoding::Latin1 => Ok(bytes.into_iter().map(char::from).collect()),
    }
}

/// Parses a .vmx (`path` names it in errors).
pub fn parse(bytes: &[u8], path: &Path) -> Result<VmxFile> {
    let err =
        |line: usize, what: String| Error::invalid(format!("line {line}: {what}")).with_path(path);
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    // The encoding is declared by a line of its own, normally the first; find it before
    // decoding anything.
    let mut encoding = Encoding::Utf8;
    let mut raw = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = n + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&0) {
            return Err(err(line_no, "a NUL byte: this is not a text .vmx".into()));
        }
        let Some(l) = split_line(line).map_err(|w| err(line_no, w))? else {
            continue;
        };
        if l.value.len() > MAX_VALUE_BYTES {
            return Err(err(
                line_no,
                format!(
                    "the value of '{}' is {} bytes, more than the {} accepted",
                    String::from_utf8_lossy(l.key),
                    l.value.len(),
                    MAX_VALUE_BYTES
                ),
            ));
        }
        if raw.len() >= MAX_ENTRIES {
            return Err(err(line_no, format!("more than {MAX_ENTRIES} entries")));
        }
        if l.key.eq_ignore_ascii_case(b".encoding") {
            let name = String::from_utf8_lossy(l.value);
            encoding = encoding_named(&name)
                .ok_or_else(|| err(line_no, format!("the encoding '{name}' is not supported (UTF-8, ISO-8859-1 and windows-1252 are)")))?;
        }
        raw.push((line_no, l.key, l.value));
    }
    let mut file = VmxFile::default();
    for (line, key, value) in raw {
        // Keys are ASCII in every file VMware writes; anything else is kept as read.
        let key = String::from_utf8_lossy(key).into_owned();
        let value = unescape(value)
            .and_then(|v| decode(v, encoding))
            .map_err(|w| err(line, format!("'{key}': {w}")))?;
        let lower = key.to_ascii_lowercase();
        if let Some(&first) = file.index.get(&lower) {
            return Err(err(
                line,
                format!(
                    "the key '{key}' is given twice (first on line {})",
                    file.entries[first].line
                ),
            ));
        }
        file.index.insert(lower, file.entries.len());
        file.entries.push(Entry { key, value, line });
    }
    Ok(file)
}

/// Escapes a value for a .vmx: `"`, `|`, `#` and control characters as `|XX`, as VMware
/// writes them (libvirt's annotation test: `|22` for a quote, `|7C` for a pipe; VMware's own
/// files: `|23` for `#`, `|0A` for a line break).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '"' || c == '|' || c == '#' || (c.is_ascii_control()) {
            out.push_str(&format!("|{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// True when `head` (a file's first bytes) reads as a .vmx: its first line that is not blank
/// or a comment is `key = "value"` with a quoted value, most of its complete lines are, and it
/// names at least one key every .vmx carries (`.encoding`, `config.version`,
/// `virtualHW.version`, `displayName`, `guestOS`, `memsize`). A malformed line further on does
/// not make it something else: [`parse`] then says which line is wrong.
pub fn probe(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    if head.contains(&0) {
        return false;
    }
    let mut lines: Vec<&[u8]> = head.split(|&b| b == b'\n').collect();
    if !head.ends_with(b"\n") && lines.len() > 1 {
        // The last line may be cut off by the 4 KiB window.
        lines.pop();
    }
    let (mut known, mut good, mut bad) = (false, 0usize, 0usize);
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let t = trim(line);
        if t.is_empty() || t[0] == b'#' {
            continue;
        }
        // Quoted values only: an xl.cfg or a shell file has unquoted ones.
        let quoted = t
            .iter()
            .position(|&b| b == b'=')
            .is_some_and(|eq| trim(&t[eq + 1..]).starts_with(b"\""));
        match split_line(line) {
            Ok(Some(l)) if quoted => {
                good += 1;
                let k = String::from_utf8_lossy(l.key).to_ascii_lowercase();
                known |= matches!(
                    k.as_str(),
                    ".encoding"
                        | "config.version"
                        | "virtualhw.version"
                        | "displayname"
                        | "guestos"
                        | "memsize"
                );
            }
            _ if good == 0 => return false,
            _ => bad += 1,
        }
    }
    known && good > bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<VmxFile> {
        parse(text.as_bytes(), Path::new("t.vmx"))
    }

    #[test]
    fn keys_are_case_insensitive_and_escapes_undone() {
        let f = p("#!/usr/bin/vmware\n.encoding = \"UTF-8\"\nmemSize = \"2048\"\n\n# c\nannotation = \"a|7Cb|22c|0Ad\"  # trailing\nold = 256\n").unwrap();
        assert_eq!(f.get("MEMSIZE"), Some("2048"));
        assert_eq!(f.get("annotation"), Some("a|b\"c\nd"));
        assert_eq!(f.get("old"), Some("256"));
        assert_eq!(f.entry("memsize").unwrap().line, 3);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        for (text, want) in [
            ("a = \"1\"\nb = \"2", "line 2: unterminated"),
            (
                "a = \"1\"\nA = \"2\"\n",
                "line 2: the key 'A' is given twice (first on line 1)",
            ),
            ("x = \"|ZZ\"\n", "line 1: 'x': bad escape '|ZZ'"),
            ("x = \"|4\"\n", "line 1: 'x': bad escape"),
            ("just words\n", "line 1: expected key"),
            ("a = \"1\" b\n", "line 1: unexpected text"),
            (
                ".encoding = \"Shift_JIS\"\n",
                "line 1: the encoding 'Shift_JIS'",
            ),
        ] {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let e = parse(b"a = \"\xff\"\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1: 'a': the value is not UTF-8"), "{e}");
    }

    #[test]
    fn huge_values_are_refused() {
        let text = format!("a = \"{}\"\n", "x".repeat(MAX_VALUE_BYTES + 1));
        assert!(
            p(&text)
                .unwrap_err()
                .to_string()
                .contains("line 1: the value of 'a'")
        );
    }

    #[test]
    fn latin1_files_decode() {
        let f = parse(
            b".encoding = \"windows-1252\"\ndisplayName = \"caf\xe9\"\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(f.get("displayname"), Some("caf\u{e9}"));
    }

    #[test]
    fn escape_round_trips() {
        let s = "Some |text| \"q\" #1\nline2";
        let e = escape(s);
        assert!(!e.contains(['"', '#', '\n']));
        let f = p(&format!("a = \"{e}\"\n")).unwrap();
        assert_eq!(f.get("a"), Some(s));
    }

    #[test]
    fn probe_accepts_vmx_and_refuses_look_alikes() {
        assert!(probe(b".encoding = \"UTF-8\"\nconfig.version = \"8\"\n"));
        assert!(probe(
            b"#!/usr/bin/vmware\nconfig.version = \"8\"\nvirtualHW.version = \"4\"\nscsi0.pre"
        ));
        assert!(!probe(b"name = \"guest\"\nmemory = 1024\n"));
        assert!(!probe(b"memory: 1024\ncores: 2\n"));
        assert!(!probe(b"<domain type='kvm'>"));
        assert!(!probe(b"a = \"1\"\n"));
        assert!(!probe(b""));
        // A malformed line after good ones is still a .vmx (parse names the line).
        assert!(probe(
            b".encoding = \"UTF-8\"\nconfig.version = \"8\"\ndisplayName = \"web\n"
        ));
    }
}
