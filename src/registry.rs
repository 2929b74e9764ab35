//! The registry: the list of format drivers, looked up by name and walked to detect a file's
//! format from its content.
//!
//! [`Registry::builtin`] holds the formats in [`crate::formats::BUILTIN`]. A library user (or a
//! test) can add formats of its own with [`Registry::with`]; everything that opens, detects or
//! writes images takes the registry from its options, so an added format is a full citizen.

use crate::detect::ProbeData;
use crate::error::{Error, Result};
use crate::format::{Capability, Format, Probe, refusal};
use crate::storage::Storage;

/// What detection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// The format.
    pub format: Format,
    /// True when no driver recognised the content and the fallback (raw) was assumed.
    pub guessed: bool,
}

/// An ordered list of format drivers. Detection asks them in order, so formats with a magic
/// number come before those recognised by weaker signs, and the fallback (raw) comes last.
#[derive(Debug, Clone)]
pub struct Registry {
    formats: Vec<Format>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::builtin()
    }
}

impl Registry {
    /// The formats diskferry knows.
    pub fn builtin() -> Registry {
        Registry {
            formats: crate::formats::BUILTIN.to_vec(),
        }
    }

    /// This registry with `format` added: detection asks it after the built-in formats with
    /// magic numbers and before the fallback. A format of the same name is replaced.
    pub fn with(mut self, format: Format) -> Registry {
        self.formats.retain(|f| *f != format);
        let fallback = self
            .formats
            .iter()
            .position(|f| f.driver().probe(&ProbeData::empty()) == Probe::Fallback)
            .unwrap_or(self.formats.len());
        self.formats.insert(fallback, format);
        self
    }

    /// Every format, in detection order.
    pub fn formats(&self) -> &[Format] {
        &self.formats
    }

    /// The format called `name` (or an alias of it, ignoring case).
    pub fn find(&self, name: &str) -> Result<Format> {
        self.formats
            .iter()
            .copied()
            .find(|f| f.answers_to(name))
            .ok_or_else(|| {
                let names: Vec<&str> = self.formats.iter().map(|f| f.name()).collect();
                let aliases: Vec<String> = self
                    .formats
                    .iter()
                    .flat_map(|f| {
                        f.driver()
                            .aliases()
                            .iter()
                            .map(move |a| format!("{a} for {}", f.name()))
                    })
                    .collect();
                let mut msg = format!(
                    "unknown format '{name}'; known formats: {}",
                    names.join(", ")
                );
                if !aliases.is_empty() {
                    msg.push_str(&format!(" (also accepted: {})", aliases.join(", ")));
                }
                Error::invalid(msg)
            })
    }

    /// The names of the formats that can do `cap`, for messages ("formats that can: vhd, vmdk").
    pub fn names_that_can(&self, cap: Capability) -> Vec<&'static str> {
        self.formats
            .iter()
            .filter(|f| f.can(cap))
            .map(|f| f.name())
            .collect()
    }

    /// Fails unless `format` can do `cap`, naming the formats that can.
    pub fn require(&self, format: Format, cap: Capability) -> Result<()> {
        if format.can(cap) {
            return Ok(());
        }
        let others = self.names_that_can(cap);
        let err = refusal(format.name(), cap);
        if others.is_empty() || matches!(cap, Capability::Read | Capability::Check) {
            return Err(err);
        }
        Err(err.context_after(format!("formats that can: {}", others.join(", "))))
    }

    /// Detects the format of `storage` from its content, never from its name.
    pub fn detect(&self, storage: &dyn Storage) -> Result<Detected> {
        if storage.is_empty() {
            return Err(Error::invalid(
                "file is empty: not a disk image (give -f raw to treat it as a zero-byte raw disk)",
            )
            .with_path(storage.name()));
        }
        let probe = ProbeData::read(storage)?;
        let detected = self.detect_probe(&probe).ok_or_else(|| {
            Error::unsupported("no format recognises this file").with_path(storage.name())
        })?;
        if let Some(refusal) = foreign_refusal(&probe).filter(|_| detected.guessed) {
            return Err(refusal.with_path(storage.name()));
        }
        Ok(detected)
    }

    /// Detects the format from probe data: the first driver that says yes, else the fallback
    /// (reported as guessed). `None` when no driver claims the data at all.
    pub fn detect_probe(&self, probe: &ProbeData) -> Option<Detected> {
        let mut fallback = None;
        for f in &self.formats {
            match f.driver().probe(probe) {
                Probe::Yes => {
                    return Some(Detected {
                        format: *f,
                        guessed: false,
                    });
                }
                Probe::Fallback if fallback.is_none() => fallback = Some(*f),
                _ => {}
            }
        }
        fallback.map(|format| Detected {
            format,
            guessed: true,
        })
    }
}

/// The refusal of probe data that is a kind of file diskferry recognises but does not read,
/// which detection would otherwise take as raw. `-f raw` still reads its bytes as they are.
pub fn foreign_refusal(probe: &ProbeData) -> Option<Error> {
    crate::detect::foreign(probe).map(|f| {
        Error::unsupported(format!(
            "this is {}: {} (or give -f raw to take its bytes as a raw disk)",
            f.what, f.hint
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_unknown_names() {
        let r = Registry::builtin();
        for f in r.formats() {
            assert_eq!(r.find(f.name()).unwrap(), *f);
            assert_eq!(r.find(&f.name().to_uppercase()).unwrap(), *f);
        }
        assert_eq!(r.find("VPC").unwrap().name(), "vhd");
        let err = r.find("foo").unwrap_err().to_string();
        assert!(
            err.contains("unknown format 'foo'") && err.contains("vmdk") && err.contains("vpc"),
            "{err}"
        );
    }

    fn probe(head: &[u8]) -> ProbeData {
        ProbeData {
            head: head.to_vec(),
            tail: head[head.len().saturating_sub(crate::detect::TAIL_LEN)..].to_vec(),
            file_len: head.len() as u64,
        }
    }

    #[test]
    fn binary_magics() {
        let r = Registry::builtin();
        let name = |p: &ProbeData| r.detect_probe(p).unwrap().format.name();
        let mut q = vec![0u8; 512];
        q[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
        assert_eq!(name(&probe(&q)), "qcow2");
        q[7] = 1;
        assert_eq!(name(&probe(&q)), "qcow");
        let mut x = vec![0u8; 512];
        x[..8].copy_from_slice(b"vhdxfile");
        assert_eq!(name(&probe(&x)), "vhdx");
        let mut v = vec![0u8; 512];
        v[0x40..0x44].copy_from_slice(&0xBEDA_107Fu32.to_le_bytes());
        assert_eq!(name(&probe(&v)), "vdi");
    }

    #[test]
    fn unknown_content_is_guessed_raw() {
        let d = Registry::builtin()
            .detect_probe(&probe(&[0x55u8; 4096]))
            .unwrap();
        assert_eq!((d.format.name(), d.guessed), ("raw", true));
    }
}
