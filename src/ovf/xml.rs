//! A small namespace-resolved element tree, built from untrusted bytes within fixed bounds.
//!
//! The OVF reader works on this tree rather than on the event stream: sections refer to each
//! other (a disk item names a disk of DiskSection, which names a file of References), and a
//! tree makes those look-ups plain. The bounds keep a hostile descriptor from costing more
//! than a few times its size: [`MAX_SIZE`] bytes, [`MAX_DEPTH`] levels, [`MAX_ELEMENTS`]
//! elements; a DOCTYPE that declares entities is refused outright (entity expansion bombs),
//! and references to undeclared entities are errors, not silently kept.

use crate::error::{Error, Result};
use quick_xml::events::{BytesRef, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// The largest descriptor read (real ones are a few hundred KiB at most).
pub const MAX_SIZE: usize = 32 << 20;
/// The deepest element nesting accepted (OVF needs about 8).
pub const MAX_DEPTH: usize = 64;
/// The most elements accepted (a large vSphere export has a few thousand).
pub const MAX_ELEMENTS: usize = 200_000;
/// The most attributes on one element, and the most namespace bindings in scope (OVF writers
/// use about 15): quick-xml checks attributes for duplicates and resolves prefixes by scanning,
/// so both bound the cost per element.
pub const MAX_ATTRIBUTES: usize = 256;

/// The namespaces the OVF reader tells apart; everything else is [`Ns::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// No namespace.
    None,
    /// An OVF envelope namespace (0.9, 1.x or 2.x).
    Ovf,
    /// CIM_ResourceAllocationSettingData and its OVF 2.0 siblings (storage, Ethernet port).
    Rasd,
    /// CIM_VirtualSystemSettingData.
    Vssd,
    /// VMware's OVF extensions.
    Vmw,
    /// VirtualBox's machine section.
    Vbox,
    /// Citrix XenServer/XenCenter's extensions.
    Xenovf,
    /// XML Schema instance (xsi:type).
    Xsi,
    /// Any other namespace.
    Other,
}

/// The OVF envelope namespace URIs, with their version.
pub const OVF_09: &str = "http://www.vmware.com/schema/ovf/1/envelope";
/// OVF 1.x.
pub const OVF_1: &str = "http://schemas.dmtf.org/ovf/envelope/1";
/// OVF 2.x.
pub const OVF_2: &str = "http://schemas.dmtf.org/ovf/envelope/2";

const CIM_BASE: &str = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/";

fn classify(uri: &str) -> Ns {
    match uri {
        OVF_09 | OVF_1 | OVF_2 => Ns::Ovf,
        "http://www.vmware.com/schema/ovf" => Ns::Vmw,
        "http://www.virtualbox.org/ovf/machine" => Ns::Vbox,
        "http://schemas.citrix.com/ovf/envelope/1" => Ns::Xenovf,
        "http://www.w3.org/2001/XMLSchema-instance" => Ns::Xsi,
        _ => match uri.strip_prefix(CIM_BASE) {
            // VirtualBox writes the OVF 2.0 ones with a ".xsd" suffix.
            Some(rest) => match rest.strip_suffix(".xsd").unwrap_or(rest) {
                "CIM_ResourceAllocationSettingData"
                | "CIM_StorageAllocationSettingData"
                | "CIM_EthernetPortAllocationSettingData" => Ns::Rasd,
                "CIM_VirtualSystemSettingData" => Ns::Vssd,
                _ => Ns::Other,
            },
            None => Ns::Other,
        },
    }
}

/// One attribute.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Its namespace (attributes without a prefix have none).
    pub ns: Ns,
    /// Its local name.
    pub name: String,
    /// Its value, with references resolved.
    pub value: String,
}

/// One element.
#[derive(Debug, Clone)]
pub struct Element {
    /// Its namespace.
    pub ns: Ns,
    /// The namespace URI, for messages about unknown namespaces.
    pub ns_uri: Option<String>,
    /// Its local name.
    pub name: String,
    /// Its attributes.
    pub attrs: Vec<Attr>,
    /// Its child elements, in order.
    pub children: Vec<Element>,
    /// Its text content (character data of this element only, not its children's).
    pub text: String,
    /// The byte offset of its start tag in the descriptor.
    pub offset: u64,
}

impl Element {
    /// The value of the attribute `name` in namespace `ns`.
    pub fn attr(&self, ns: Ns, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == ns && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The value of an OVF attribute: `ovf:name`, or `name` without a prefix (hand-written
    /// descriptors drop the prefix; readers such as VirtualBox's accept them).
    pub fn ovf_attr(&self, name: &str) -> Option<&str> {
        self.attr(Ns::Ovf, name)
            .or_else(|| self.attr(Ns::None, name))
    }

    /// Child elements with namespace `ns` and local name `name`.
    pub fn children<'a>(&'a self, ns: Ns, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children
            .iter()
            .filter(move |c| c.ns == ns && c.name == name)
    }

    /// The first child with namespace `ns` and local name `name`.
    pub fn child(&self, ns: Ns, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.ns == ns && c.name == name)
    }

    /// The trimmed text of the first child `ns:name`, when present and not empty.
    pub fn child_text(&self, ns: Ns, name: &str) -> Option<&str> {
        self.child(ns, name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }
}

/// Parses `bytes` into a tree. `name` names the descriptor in errors.
pub fn parse(bytes: &[u8], name: &str) -> Result<Element> {
    if bytes.len() > MAX_SIZE {
        return Err(Error::unsupported(format!(
            "OVF descriptor is {} bytes, more than the {} MiB diskferry reads",
            bytes.len(),
            MAX_SIZE >> 20
        ))
        .with_path(name));
    }
    // UTF-16 descriptors exist in theory; quick-xml without its encoding feature reads UTF-8
    // only, and XenCenter's "utf-16" declaration sits on UTF-8 bytes. A BOM tells real UTF-16.
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return Err(
            Error::unsupported("OVF descriptor is UTF-16 encoded; only UTF-8 is read")
                .with_path(name),
        );
    }
    let bytes = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(bytes);
    let mut reader = NsReader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    reader
        .resolver_mut()
        .set_max_namespace_bindings(MAX_ATTRIBUTES);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let pos = reader.buffer_position();
        let xml_err = |e: quick_xml::Error, at: u64| {
            Error::corrupt(format!("invalid XML: {e}"))
                .at_offset(at)
                .with_path(name)
        };
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (resolve(&ns), event),
            Err(e) => return Err(xml_err(e, reader.error_position())),
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(
                        Error::corrupt("invalid XML: content after the root element")
                            .at_offset(pos)
                            .with_path(name),
                    );
                }
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(Error::unsupported(format!(
                        "OVF descriptor has more than {MAX_ELEMENTS} elements"
                    ))
                    .at_offset(pos)
                    .with_path(name));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(Error::unsupported(format!(
                        "OVF descriptor nests elements deeper than {MAX_DEPTH} levels"
                    ))
                    .at_offset(pos)
                    .with_path(name));
                }
                let mut attrs = Vec::new();
                for (i, attr) in start.attributes().enumerate() {
                    if i >= MAX_ATTRIBUTES {
                        return Err(Error::unsupported(format!(
                            "an element of the OVF descriptor has more than {MAX_ATTRIBUTES} attributes"
                        ))
                        .at_offset(pos)
                        .with_path(name));
                    }
                    let attr = attr.map_err(|e| xml_err(e.into(), pos))?;
                    let (ans, local) = reader.resolver().resolve_attribute(attr.key);
                    if attr.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| xml_err(e, pos))?;
                    attrs.push(Attr {
                        ns: resolve(&ans).0,
                        name: local.as_ref().to_string(),
                        value: value.into_owned(),
                    });
                }
                let qname = start.name();
                let qname: &str = qname.as_ref();
                if !valid_name(qname) {
                    return Err(Error::corrupt(format!(
                        "invalid XML: '{}' is not an element name",
                        qname.chars().take(64).collect::<String>()
                    ))
                    .at_offset(pos)
                    .with_path(name));
                }
                let element = Element {
                    ns: ns.0,
                    ns_uri: ns.1,
                    name: start.local_name().as_ref().to_string(),
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                    offset: pos,
                };
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or_else(|| {
                    Error::corrupt("invalid XML: end tag without a start tag")
                        .at_offset(pos)
                        .with_path(name)
                })?;
                close(&mut stack, &mut root, element);
            }
            Event::Text(text) => {
                let text = text.xml10_content();
                append_text(&mut stack, &text, pos, name)?;
            }
            Event::CData(data) => {
                let text = data.xml10_content();
                append_text(&mut stack, &text, pos, name)?;
            }
            Event::GeneralRef(r) => {
                let text = resolve_ref(&r).map_err(|m| {
                    Error::corrupt(format!("invalid XML: {m}"))
                        .at_offset(pos)
                        .with_path(name)
                })?;
                append_text(&mut stack, &text, pos, name)?;
            }
            Event::DocType(doctype) => {
                let text = doctype.into_inner();
                if text.contains("<!ENTITY") {
                    return Err(Error::refused(
                        // Shared by the OVF and libvirt readers: the message names neither.
                        "the XML declares entities in its DOCTYPE; refused \
                         (entity expansion can make a small file take unbounded memory)",
                    )
                    .at_offset(pos)
                    .with_path(name));
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(
            Error::corrupt(format!("invalid XML: the file ends inside <{}>", open.name))
                .at_offset(bytes.len() as u64)
                .with_path(name),
        );
    }
    root.ok_or_else(|| {
        Error::corrupt("invalid XML: no root element (empty or not an XML file)").with_path(name)
    })
}

/// An XML name as far as it matters here: not empty, no markup characters, not starting with
/// a digit, '-' or '.' (quick-xml itself accepts `<<a>` as an element named `<a`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        && !name.chars().any(|c| {
            matches!(c, '<' | '>' | '&' | '"' | '\'' | '=' | '/' | '!' | '?') || c.is_whitespace()
        })
}

fn resolve(ns: &ResolveResult<'_>) -> (Ns, Option<String>) {
    match ns {
        ResolveResult::Bound(uri) => (classify(uri.as_ref()), Some(uri.as_ref().to_string())),
        ResolveResult::Unbound => (Ns::None, None),
        ResolveResult::Unknown(_) => (Ns::Other, None),
    }
}

fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn append_text(stack: &mut [Element], text: &str, pos: u64, name: &str) -> Result<()> {
    match stack.last_mut() {
        Some(e) => e.text.push_str(text),
        None if text.trim().is_empty() => {}
        None => {
            return Err(Error::corrupt("invalid XML: text outside the root element")
                .at_offset(pos)
                .with_path(name));
        }
    }
    Ok(())
}

/// The text of `&name;`: the five predefined entities and character references; anything else
/// would need a DTD, which is refused.
fn resolve_ref(r: &BytesRef<'_>) -> std::result::Result<String, String> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) => Ok(c.to_string()),
            Ok(None) | Err(_) => Err(format!("bad character reference &{};", &**r)),
        };
    }
    let name: &str = r;
    Ok(match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        other => return Err(format!("reference to undeclared entity &{other};")),
    }
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_resolve_whatever_the_prefix() {
        let xml = br#"<e:Envelope xmlns:e="http://schemas.dmtf.org/ovf/envelope/1"
            xmlns:r="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
            <e:Item e:required="false"><r:ResourceType>3</r:ResourceType></e:Item>
            <Other a="&lt;&#65;"/></e:Envelope>"#;
        let root = parse(xml, "t.ovf").unwrap();
        assert_eq!((root.ns, root.name.as_str()), (Ns::Ovf, "Envelope"));
        let item = root.child(Ns::Ovf, "Item").unwrap();
        assert_eq!(item.ovf_attr("required"), Some("false"));
        assert_eq!(item.child_text(Ns::Rasd, "ResourceType"), Some("3"));
        assert_eq!(
            root.child(Ns::None, "Other").unwrap().attr(Ns::None, "a"),
            Some("<A")
        );
    }

    #[test]
    fn refuses_entities_and_reports_positions() {
        let bomb = b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]><x>&a;</x>";
        let e = parse(bomb, "bomb.ovf").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Refused);
        assert!(e.to_string().contains("bomb.ovf"), "{e}");

        let e = parse(b"<x>&a;</x>", "u.ovf").unwrap_err();
        assert!(e.to_string().contains("undeclared entity"), "{e}");

        let e = parse(b"<a>\n<b></a>", "bad.ovf").unwrap_err();
        assert!(e.offset().is_some(), "{e}");
        assert!(e.to_string().starts_with("bad.ovf: invalid XML"), "{e}");

        let e = parse(b"<a><b>", "short.ovf").unwrap_err();
        assert!(e.to_string().contains("ends inside <b>"), "{e}");
        assert!(parse(b"", "empty.ovf").is_err());
        assert!(parse(b"<a/><b/>", "two.ovf").is_err());
        let e = parse(b"<a>\n<OpenTag> does not match <<ClosingTag>>", "g.ovf").unwrap_err();
        assert!(e.to_string().contains("not an element name"), "{e}");
    }

    #[test]
    fn bounds_attributes_and_bindings() {
        let many: String = (0..MAX_ATTRIBUTES + 1)
            .map(|i| format!(" a{i}=\"\""))
            .collect();
        let e = parse(format!("<x{many}/>").as_bytes(), "attrs.ovf").unwrap_err();
        assert!(e.to_string().contains("attributes"), "{e}");
        let ns: String = (0..MAX_ATTRIBUTES + 1)
            .map(|i| format!(" xmlns:p{i}=\"urn:{i}\""))
            .collect();
        assert!(parse(format!("<x{ns}/>").as_bytes(), "ns.ovf").is_err());
    }

    #[test]
    fn bounds_depth() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        let e = parse(deep.as_bytes(), "deep.ovf").unwrap_err();
        assert!(e.to_string().contains("deeper"), "{e}");
    }
}
