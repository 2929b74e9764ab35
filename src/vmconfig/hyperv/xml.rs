//! Hyper-V's XML configuration (version 5, Windows Server 2012 R2 and before) into the key
//! tree: UTF-16LE with a byte-order mark, root `<configuration>`, every value an element
//! with a `type` attribute (`string`, `integer`, `bool`, `bytes`).
//!
//! The UTF-16 decoding here also serves Virtual PC's .vmc ([`crate::vmconfig::vmc`]), the same
//! Microsoft convention a generation earlier.

use super::tree::{Node, Value};
use crate::error::{Error, Result};
use crate::ovf::xml::Element;

/// The text of an XML file that may be UTF-16 (with a byte-order mark, or without one when
/// it starts with `<` as UTF-16LE) or UTF-8: decoded, checked, as UTF-8. Unpaired surrogates
/// and an odd byte count are errors naming the offset.
pub fn decode_text(bytes: &[u8], name: &str) -> Result<String> {
    let (body, big_endian, base) = if let Some(b) = bytes.strip_prefix(&[0xff, 0xfe]) {
        (b, false, 2)
    } else if let Some(b) = bytes.strip_prefix(&[0xfe, 0xff]) {
        (b, true, 2)
    } else if bytes.starts_with(b"<\0") {
        (bytes, false, 0)
    } else {
        let b = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(bytes);
        return std::str::from_utf8(b).map(str::to_string).map_err(|e| {
            Error::corrupt("the file is neither UTF-16 nor valid UTF-8")
                .at_offset(e.valid_up_to() as u64)
                .with_path(name)
        });
    };
    if body.len() % 2 != 0 {
        return Err(
            Error::corrupt("UTF-16 text with an odd number of bytes (truncated?)")
                .at_offset(bytes.len() as u64 - 1)
                .with_path(name),
        );
    }
    let units = body.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    let mut out = String::with_capacity(body.len() / 2);
    for (i, ch) in char::decode_utf16(units).enumerate() {
        match ch {
            Ok(c) => out.push(c),
            Err(_) => {
                return Err(Error::corrupt("invalid UTF-16: an unpaired surrogate")
                    .at_offset((base + 2 * i) as u64)
                    .with_path(name));
            }
        }
    }
    Ok(out)
}

/// `s` as it may appear in a one-line message: at most 40 characters, control characters
/// escaped.
pub fn shown(s: &str) -> String {
    s.chars().take(40).flat_map(char::escape_debug).collect()
}

/// The parsed XML tree of a UTF-16 (or UTF-8) Microsoft XML file, through the crate's
/// bounded parser (no entity declarations, bounded depth and size).
pub fn parse_xml(bytes: &[u8], name: &str) -> Result<Element> {
    let text = decode_text(bytes, name)?;
    crate::ovf::xml::parse(text.as_bytes(), name).map_err(|e| one_line(e, name))
}

/// `e` with control characters in its message escaped: the XML parser quotes the document's
/// text in some messages, and an error is one line.
fn one_line(e: Error, name: &str) -> Error {
    if !e.message().chars().any(char::is_control) {
        return e;
    }
    let message: String = e
        .message()
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    let out = match e.kind() {
        crate::error::ErrorKind::Unsupported => Error::unsupported(message),
        crate::error::ErrorKind::InvalidInput => Error::invalid(message),
        _ => Error::corrupt(message),
    };
    let out = out.with_path(name);
    match e.offset() {
        Some(o) => out.at_offset(o),
        None => out,
    }
}

/// The typed value of a Microsoft settings element (`<x type="integer">5</x>`).
pub fn typed_value(e: &Element, name: &str) -> Result<Value> {
    let ty = e
        .attrs
        .iter()
        .find(|a| a.name == "type")
        .map(|a| a.value.as_str());
    let text = e.text.trim();
    Ok(match ty {
        Some("integer") => {
            if text.is_empty() {
                Value::None
            } else {
                Value::Int(text.parse().map_err(|_| {
                    Error::corrupt(format!("<{}> '{}' is not an integer", e.name, shown(text)))
                        .at_offset(e.offset)
                        .with_path(name)
                })?)
            }
        }
        Some("bool") | Some("boolean") => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => {
                return Err(Error::corrupt(format!(
                    "<{}> '{}' is not a boolean",
                    e.name,
                    shown(text)
                ))
                .at_offset(e.offset)
                .with_path(name));
            }
        },
        Some(_) => Value::Str(e.text.clone()),
        None if e.children.is_empty() && !text.is_empty() => Value::Str(e.text.clone()),
        None => Value::None,
    })
}

/// An element tree as a key tree.
pub fn to_tree(e: &Element, name: &str) -> Result<Node> {
    Ok(Node {
        name: e.name.clone(),
        value: typed_value(e, name)?,
        children: e
            .children
            .iter()
            .map(|c| to_tree(c, name))
            .collect::<Result<_>>()?,
    })
}

/// Reads a Hyper-V XML configuration into a root node (named `""`) whose one child is the
/// document's root element, as [`super::vmcx::parse`] gives it.
pub fn parse(bytes: &[u8], name: &str) -> Result<Node> {
    let root = parse_xml(bytes, name)?;
    Ok(Node {
        name: String::new(),
        value: Value::None,
        children: vec![to_tree(&root, name)?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        let mut b = vec![0xff, 0xfe];
        for u in s.encode_utf16() {
            b.extend(u.to_le_bytes());
        }
        b
    }

    #[test]
    fn utf16_is_decoded_and_bad_utf16_is_one_error() {
        assert_eq!(decode_text(&utf16("<a/>"), "x").unwrap(), "<a/>");
        let mut odd = utf16("<a/>");
        odd.push(0);
        assert!(
            decode_text(&odd, "x")
                .unwrap_err()
                .to_string()
                .contains("odd")
        );
        let mut lone = utf16("<a>");
        lone.extend(0xd800u16.to_le_bytes());
        lone.extend(utf16("</a>")[2..].iter());
        let e = decode_text(&lone, "x.xml").unwrap_err().to_string();
        assert!(e.contains("surrogate") && e.starts_with("x.xml"), "{e}");
    }

    #[test]
    fn typed_values() {
        let t = parse(
            &utf16("<configuration><a type=\"integer\">5</a><b type=\"bool\">True</b><c type=\"string\">x</c></configuration>"),
            "x",
        )
        .unwrap();
        let c = &t.children[0];
        assert_eq!(c.int_at("a"), Some(5));
        assert_eq!(c.bool_at("b"), Some(true));
        assert_eq!(c.str_at("c"), Some("x"));
        assert!(parse(&utf16("<c><a type=\"integer\">x</a></c>"), "x").is_err());
    }
}
