//! `-o key=value,...` creation options, validated against each format's list of keys.

use crate::error::{Error, Result};
use crate::format::Format;
use crate::size::parse_size;
use std::collections::BTreeMap;

/// The type of an option's value.
#[derive(Debug, Clone, Copy)]
pub enum OptionKind {
    /// A size with optional suffix (`2M`).
    Size,
    /// `on`/`off` (also `true`/`false`, `yes`/`no`).
    Flag,
    /// One of a fixed set of words (matched without regard to case).
    Choice(&'static [&'static str]),
    /// A whole number.
    Number,
    /// Free text (a file name, a version string).
    Text,
}

/// One option a format accepts.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The key, as typed after `-o`.
    pub key: &'static str,
    /// The value's type.
    pub kind: OptionKind,
    /// One line for `-o help`.
    pub help: &'static str,
}

/// Parsed and validated options for one format.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    format: Format,
    values: BTreeMap<&'static str, String>,
}

impl FormatOptions {
    /// No options: every key takes its default.
    pub fn empty(format: Format) -> FormatOptions {
        FormatOptions {
            format,
            values: BTreeMap::new(),
        }
    }

    /// Parses `key=value,key=value` (a doubled comma `,,` is a literal comma) against `specs`.
    /// Several `-o` arguments may be joined with commas before calling.
    pub fn parse(format: Format, specs: &[OptionSpec], text: &str) -> Result<FormatOptions> {
        let mut values = BTreeMap::new();
        for item in split_options(text) {
            if item.is_empty() {
                continue;
            }
            // A bare key (`force_size`) means `key=on`, as qemu-img reads it.
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v)),
                None => (item.trim(), None),
            };
            let spec = specs.iter().find(|s| s.key == key).ok_or_else(|| {
                Error::invalid(format!(
                    "unknown option '{key}' for format {format}; valid options: {}",
                    valid_keys(specs)
                ))
            })?;
            let value = match value {
                Some(v) => validate(format, spec, v.trim())?,
                None if matches!(spec.kind, OptionKind::Flag) => "on".to_string(),
                None => {
                    return Err(Error::invalid(format!(
                        "option '{key}' for {format} needs a value: write {key}=..."
                    )));
                }
            };
            values.insert(spec.key, value);
        }
        Ok(FormatOptions { format, values })
    }

    /// The format these options are for.
    pub fn format(&self) -> Format {
        self.format
    }

    /// True when `key` was given.
    pub fn contains(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// A size option, if given.
    pub fn size(&self, key: &str) -> Option<u64> {
        self.values
            .get(key)
            .map(|v| parse_size(v).expect("validated when parsed"))
    }

    /// A flag option, if given.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.values.get(key).map(|v| v == "on")
    }

    /// A choice (in the spelling of the spec) or text option, if given.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A number option, if given.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.values
            .get(key)
            .map(|v| v.parse().expect("validated when parsed"))
    }

    /// Every option given, for messages.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (*k, v.as_str()))
    }
}

fn valid_keys(specs: &[OptionSpec]) -> String {
    if specs.is_empty() {
        return "(none)".to_string();
    }
    specs.iter().map(|s| s.key).collect::<Vec<_>>().join(", ")
}

/// Splits on single commas; `,,` stands for a literal comma (qemu-img's escaping).
fn split_options(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                current.push(',');
            } else {
                items.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    items.push(current);
    items
}

fn validate(format: Format, spec: &OptionSpec, value: &str) -> Result<String> {
    let key = spec.key;
    match spec.kind {
        OptionKind::Size => {
            parse_size(value).map_err(|e| e.context(format!("option {key} for {format}")))?;
            Ok(value.to_string())
        }
        OptionKind::Flag => match value.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Ok("on".to_string()),
            "off" | "false" | "no" => Ok("off".to_string()),
            _ => Err(Error::invalid(format!(
                "option {key} for {format} takes on or off, not '{value}'"
            ))),
        },
        OptionKind::Choice(choices) => choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(value))
            .map(|c| c.to_string())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "option {key} for {format} takes one of {}, not '{value}'",
                    choices.join(", ")
                ))
            }),
        OptionKind::Number => value
            .parse::<u64>()
            .map(|_| value.to_string())
            .map_err(|_| {
                Error::invalid(format!(
                    "option {key} for {format} takes a whole number, not '{value}'"
                ))
            }),
        OptionKind::Text => Ok(value.to_string()),
    }
}

/// The text `-o help` prints for a format.
pub fn describe(format: Format, specs: &[OptionSpec]) -> String {
    let mut out = format!("Supported options for {format}:\n");
    if specs.is_empty() {
        out.push_str("  (none)\n");
    }
    for s in specs {
        let kind = match s.kind {
            OptionKind::Size => "size".to_string(),
            OptionKind::Flag => "on|off".to_string(),
            OptionKind::Choice(c) => c.join("|"),
            OptionKind::Number => "number".to_string(),
            OptionKind::Text => "text".to_string(),
        };
        out.push_str(&format!("  {}=<{kind}>\n      {}\n", s.key, s.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FMT: Format = crate::formats::vhd::FORMAT;

    const SPECS: &[OptionSpec] = &[
        OptionSpec {
            key: "subformat",
            kind: OptionKind::Choice(&["dynamic", "fixed"]),
            help: "",
        },
        OptionSpec {
            key: "block_size",
            kind: OptionKind::Size,
            help: "",
        },
        OptionSpec {
            key: "force_size",
            kind: OptionKind::Flag,
            help: "",
        },
        OptionSpec {
            key: "name",
            kind: OptionKind::Text,
            help: "",
        },
    ];

    #[test]
    fn parses_typed_values() {
        let o = FormatOptions::parse(
            FMT,
            SPECS,
            "subformat=Fixed,block_size=512k,force_size=yes,name=a,,b",
        )
        .unwrap();
        assert_eq!(o.text("subformat"), Some("fixed"));
        assert_eq!(o.size("block_size"), Some(512 << 10));
        assert_eq!(o.flag("force_size"), Some(true));
        assert_eq!(o.text("name"), Some("a,b"));
        assert_eq!(o.size("missing"), None);
        let bare = FormatOptions::parse(FMT, SPECS, "force_size").unwrap();
        assert_eq!(bare.flag("force_size"), Some(true));
    }

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let err = FormatOptions::parse(FMT, SPECS, "bogus=1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown option 'bogus'")
                && err.contains("subformat, block_size, force_size, name"),
            "{err}"
        );
        let err = FormatOptions::parse(FMT, &[], "x=1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("(none)"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        for text in [
            "subformat=weird",
            "block_size=lots",
            "force_size=maybe",
            "block_size",
        ] {
            assert!(FormatOptions::parse(FMT, SPECS, text).is_err(), "{text}");
        }
    }
}
