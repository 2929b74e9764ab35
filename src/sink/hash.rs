//! A hashing tee: bytes pass on to another sink and into a digest (OVA manifests, XVA
//! checksums), computed as they stream by rather than by reading the output again.

use super::{Access, Sink};
use crate::error::{Error, Result};
use sha1::Digest as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The digests manifests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// SHA-1 (OVF 1.x manifests, XVA `.checksum` files).
    Sha1,
    /// SHA-256 (OVF 2.0, VMware's default since vSphere 6.5).
    Sha256,
    /// SHA-512.
    Sha512,
}

enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algorithm: DigestAlgorithm) -> Hasher {
        match algorithm {
            DigestAlgorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            DigestAlgorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            DigestAlgorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where a [`HashingTee`] leaves its digest (lowercase hex) once finished.
#[derive(Debug, Clone, Default)]
pub struct Digest(Arc<Mutex<Option<String>>>);

impl Digest {
    /// The digest, once the tee has finished.
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|d| d.clone())
    }
}

/// Passes bytes to `inner` in order and digests them (gaps as the zeros they are).
pub struct HashingTee<'a> {
    inner: Box<dyn Sink + 'a>,
    hasher: Hasher,
    pos: u64,
    len: Option<u64>,
    digest: Digest,
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl<'a> HashingTee<'a> {
    /// A tee over the sequential sink `inner`; the digest appears in the returned [`Digest`]
    /// when the tee finishes.
    pub fn new(inner: Box<dyn Sink + 'a>, algorithm: DigestAlgorithm) -> (HashingTee<'a>, Digest) {
        let digest = Digest::default();
        (
            HashingTee {
                inner,
                hasher: Hasher::new(algorithm),
                pos: 0,
                len: None,
                digest: digest.clone(),
            },
            digest,
        )
    }

    fn zeros_to(&mut self, end: u64) -> Result<()> {
        while self.pos < end {
            let n = (end - self.pos).min(ZEROS.len() as u64) as usize;
            self.hasher.update(&ZEROS[..n]);
            self.inner.write_at(&ZEROS[..n], self.pos)?;
            self.pos += n as u64;
        }
        Ok(())
    }

    fn going_back(&self, offset: u64) -> Error {
        Error::invalid(format!(
            "internal error: a hashed stream cannot go back from byte {} to {offset}",
            self.pos
        ))
        .with_path(self.inner.name())
    }
}

impl Sink for HashingTee<'_> {
    fn name(&self) -> &Path {
        self.inner.name()
    }

    fn access(&self) -> Access {
        Access::Sequential
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if offset < self.pos {
            return Err(self.going_back(offset));
        }
        self.zeros_to(offset)?;
        self.hasher.update(buf);
        self.inner.write_at(buf, offset)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn write_zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        if offset < self.pos {
            return Err(self.going_back(offset));
        }
        self.zeros_to(offset.saturating_add(len))
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        self.len = Some(len);
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        if let Some(len) = self.len {
            self.zeros_to(len)?;
        }
        let this = *self;
        this.inner.finish()?;
        if let Ok(mut d) = this.digest.0.lock() {
            *d = Some(this.hasher.hex());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::PipeSink;
    use crate::sink::tests::Shared;

    #[test]
    fn digests_what_passed_through_gaps_included() {
        // Python's hashlib of b"ab\0\0c".
        for (alg, want) in [
            (
                DigestAlgorithm::Sha1,
                "efb3dc64159a4db25ad7f2a1529cdacbbe05080a",
            ),
            (
                DigestAlgorithm::Sha256,
                "10529036d0907727ec6f6d8c2ee3b4ba643d7933c0093dde2bbb8bc152e6a707",
            ),
            (
                DigestAlgorithm::Sha512,
                "748f94f856e424ae9cebf127bcd09c64437667d153816f5e3e24fee43ae27d06e82126fe144dfa986c8eab5b6b2f215edfd8c0a4b6eedc017fed2e8119d3656e",
            ),
        ] {
            let mem = Shared::default();
            let pipe = PipeSink::new(Box::new(mem.clone()), "-");
            let (tee, digest) = HashingTee::new(Box::new(pipe), alg);
            let mut tee: Box<dyn Sink> = Box::new(tee);
            tee.write_at(b"ab", 0).unwrap();
            tee.write_at(b"c", 4).unwrap();
            assert!(digest.get().is_none());
            tee.finish().unwrap();
            assert_eq!(&*mem.0.lock().unwrap(), b"ab\0\0c");
            assert_eq!(digest.get().unwrap(), want);
        }
    }
}
