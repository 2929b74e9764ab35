//! OVF manifests (`.mf`) and certificates (`.cert`).
//!
//! A manifest line names a digest algorithm, a file and its digest: `SHA256(disk.vmdk)= 9f...`.
//! Vendors spell it several ways (`SHA1`, `SHA256`, `SHA512`, `SHA2-256`, `SHA-256`, spaces
//! around the parentheses and the `=`, upper- or lower-case hex, CRLF line ends, blank lines);
//! all are read. An unknown algorithm or a line that is not a digest is one error naming the
//! manifest and the line number.
//!
//! A certificate file holds the signer's PEM certificate(s) and a line like a manifest line
//! whose digest is the signature of the manifest. We note which algorithm signed which file;
//! we do **not** verify X.509 signatures or certificate chains (that needs a trust store and an
//! RSA implementation, and a package's integrity is checked here by its manifest's digests).

use crate::error::{Error, Result};
use crate::storage::{Storage, StorageExt};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::fmt;
use std::path::{Path, PathBuf};

/// A digest algorithm a manifest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-1 (OVF 1.x, vSphere 5.5/6.0).
    Sha1,
    /// SHA-256 (what current writers use).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The algorithm a manifest names, in any of the spellings vendors use (`SHA256`,
    /// `SHA-256`, `SHA2-256`, `sha256`, ...).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        let n: String = name
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_uppercase();
        match n.as_str() {
            "SHA1" => Some(Algorithm::Sha1),
            "SHA256" | "SHA2256" => Some(Algorithm::Sha256),
            "SHA384" | "SHA2384" => Some(Algorithm::Sha384),
            "SHA512" | "SHA2512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// The digest's length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    /// The canonical name, as written in a manifest (`SHA256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha384 => "SHA384",
            Algorithm::Sha512 => "SHA512",
        }
    }

    fn hasher(self) -> Box<dyn sha2::digest::DynDigest + Send> {
        match self {
            Algorithm::Sha1 => Box::new(Sha1::new()),
            Algorithm::Sha256 => Box::new(Sha256::new()),
            Algorithm::Sha384 => Box::new(Sha384::new()),
            Algorithm::Sha512 => Box::new(Sha512::new()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file the digest is of, as the manifest names it.
    pub file: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The digest.
    pub digest: Vec<u8>,
    /// The line it is on (from 1).
    pub line: usize,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest's name, for messages.
    pub name: PathBuf,
    /// Its entries, in order.
    pub entries: Vec<Entry>,
}

/// The signature line of a `.cert` file: which file is signed, how. Never verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertNote {
    /// The digest algorithm of the signature.
    pub algorithm: Algorithm,
    /// The file signed (the manifest).
    pub signed_file: String,
    /// The signature's length in bytes.
    pub signature_len: usize,
    /// How many PEM certificates the file holds.
    pub certificates: usize,
}

/// The most lines a manifest may have: far more than any package holds files (an XVA, which
/// has no manifest, is the only package with millions of members).
const MAX_LINES: usize = 1 << 20;

/// Splits `ALG(file)= hex` (with optional spaces) into its three parts.
fn split_line(line: &str) -> Option<(&str, &str, &str)> {
    let open = line.find('(')?;
    let eq = line.rfind('=')?;
    let before_eq = line[..eq].trim_end();
    let close = before_eq.strip_suffix(')')?;
    if close.len() < open + 1 {
        return None;
    }
    let algorithm = line[..open].trim();
    let file = &close[open + 1..];
    let hex = line[eq + 1..].trim();
    Some((algorithm, file, hex))
}

fn parse_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lines_of<'t>(name: &Path, text: &'t [u8]) -> Result<impl Iterator<Item = (usize, &'t str)>> {
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let text = std::str::from_utf8(text).map_err(|e| {
        Error::corrupt(format!("not UTF-8 text (byte {})", e.valid_up_to())).with_path(name)
    })?;
    Ok(text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty()))
}

impl Manifest {
    /// Parses the manifest `text`, named `name` in messages.
    pub fn parse(name: impl AsRef<Path>, text: &[u8]) -> Result<Manifest> {
        let name = name.as_ref();
        let mut entries: Vec<Entry> = Vec::new();
        for (number, line) in lines_of(name, text)? {
            if number > MAX_LINES {
                return Err(
                    Error::corrupt(format!("more than {MAX_LINES} lines; not a manifest"))
                        .with_path(name),
                );
            }
            let bad = |why: String| Error::corrupt(format!("line {number}: {why}")).with_path(name);
            let (alg, file, hex) = split_line(line).ok_or_else(|| {
                bad(format!(
                    "'{}' is not a digest line (ALGORITHM(file)= hex)",
                    shorten(line)
                ))
            })?;
            let algorithm = Algorithm::from_name(alg).ok_or_else(|| {
                bad(format!(
                    "unknown digest algorithm '{}' (known: SHA1, SHA256, SHA384, SHA512)",
                    shorten(alg)
                ))
            })?;
            if file.is_empty() || file.contains('\0') {
                return Err(bad("the file name is empty or holds a NUL byte".into()));
            }
            let digest = parse_hex(hex)
                .filter(|d| d.len() == algorithm.digest_len())
                .ok_or_else(|| {
                    bad(format!(
                        "'{}' is not a {algorithm} digest ({} hex digits)",
                        shorten(hex),
                        2 * algorithm.digest_len()
                    ))
                })?;
            if let Some(earlier) = entries
                .iter()
                .find(|e| e.file == file && e.algorithm == algorithm)
            {
                if earlier.digest != digest {
                    return Err(bad(format!(
                        "a second, different {algorithm} digest for '{file}' (line {})",
                        earlier.line
                    )));
                }
                continue;
            }
            entries.push(Entry {
                file: file.to_string(),
                algorithm,
                digest,
                line: number,
            });
        }
        Ok(Manifest {
            name: name.to_path_buf(),
            entries,
        })
    }

    /// Reads and parses a manifest held in a storage (a tar member), at most 16 MiB.
    pub fn read(storage: &dyn Storage) -> Result<Manifest> {
        const MAX: u64 = 16 << 20;
        if storage.len() > MAX {
            return Err(Error::corrupt(format!(
                "a manifest of {} bytes; more than {MAX} is not a manifest",
                storage.len()
            ))
            .with_path(storage.name()));
        }
        let text = storage.read_vec(0, storage.len(), "manifest")?;
        Manifest::parse(storage.name(), &text)
    }

    /// The entries for `file` (one per algorithm the manifest lists it with).
    pub fn entries_for<'m>(&'m self, file: &'m str) -> impl Iterator<Item = &'m Entry> + 'm {
        self.entries.iter().filter(move |e| e.file == file)
    }

    /// Verifies `storage` against every entry for `file`. A file the manifest does not list is
    /// an error (a package whose manifest leaves out a disk is not verified).
    pub fn verify(&self, file: &str, storage: &dyn Storage) -> Result<()> {
        let mut any = false;
        for e in self.entries_for(file) {
            any = true;
            self.verify_entry(e, storage)?;
        }
        if !any {
            return Err(
                Error::corrupt(format!("the manifest lists no digest for '{file}'"))
                    .with_path(&self.name),
            );
        }
        Ok(())
    }

    /// Verifies every entry against the member of `index` it names. A member the manifest
    /// names but the package does not hold is an error naming it and the manifest's line.
    /// Members the manifest does not name are not checked here (the OVF decides which files
    /// matter; [`Manifest::verify`] refuses a file the manifest leaves out).
    pub fn verify_index(&self, index: &crate::package::TarIndex) -> Result<()> {
        for e in &self.entries {
            let member = index.open(&e.file).map_err(|err| {
                if index.member(&e.file).is_none() {
                    Error::corrupt(format!(
                        "the manifest names '{}' (line {}), which the package does not hold",
                        e.file, e.line
                    ))
                    .with_path(&self.name)
                } else {
                    err
                }
            })?;
            self.verify_entry(e, &member)?;
        }
        Ok(())
    }

    /// Verifies `storage` against one entry: an error naming the file, the expected and the
    /// actual digest when they differ.
    pub fn verify_entry(&self, entry: &Entry, storage: &dyn Storage) -> Result<()> {
        let actual = digest(storage, entry.algorithm)?;
        if actual != entry.digest {
            return Err(Error::corrupt(format!(
                "{} digest of '{}' does not match the manifest ({}, line {}): expected {}, actual {}",
                entry.algorithm,
                entry.file,
                self.name.display(),
                entry.line,
                hex_string(&entry.digest),
                hex_string(&actual)
            ))
            .with_path(storage.name()));
        }
        Ok(())
    }
}

/// Parses a `.cert` file: its PEM certificates are counted and its signature line read. The
/// signature is not verified (see the module documentation).
pub fn parse_cert(name: impl AsRef<Path>, text: &[u8]) -> Result<CertNote> {
    let name = name.as_ref();
    let mut note: Option<CertNote> = None;
    let mut certificates = 0;
    let mut in_pem = false;
    for (number, line) in lines_of(name, text)? {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            in_pem = true;
            if line.contains("CERTIFICATE") {
                certificates += 1;
            }
            continue;
        }
        if line.starts_with("-----END ") {
            in_pem = false;
            continue;
        }
        if in_pem {
            continue;
        }
        let bad = |why: String| Error::corrupt(format!("line {number}: {why}")).with_path(name);
        let (alg, file, hex) = split_line(line)
            .ok_or_else(|| bad(format!("'{}' is not a signature line", shorten(line))))?;
        let algorithm = Algorithm::from_name(alg)
            .ok_or_else(|| bad(format!("unknown digest algorithm '{}'", shorten(alg))))?;
        let sig = parse_hex(hex)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("the signature is not hexadecimal".into()))?;
        if note.is_some() {
            return Err(bad("a second signature line".into()));
        }
        note = Some(CertNote {
            algorithm,
            signed_file: file.to_string(),
            signature_len: sig.len(),
            certificates: 0,
        });
    }
    if in_pem {
        return Err(Error::corrupt("a PEM block is not closed (no -----END line)").with_path(name));
    }
    let mut note = note.ok_or_else(|| {
        Error::corrupt("no signature line (ALGORITHM(file.mf)= hex)").with_path(name)
    })?;
    if certificates == 0 {
        return Err(Error::corrupt("no PEM certificate").with_path(name));
    }
    note.certificates = certificates;
    Ok(note)
}

fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.escape_debug().to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{}...", cut.escape_debug())
    }
}

/// The chunk size for hashing: large enough that each read is one system call's worth of
/// streaming, small enough that two in flight cost little memory.
pub const HASH_CHUNK: usize = 8 << 20;

/// The digest of all of `storage`'s bytes. Reading and hashing overlap: a second thread reads
/// the next chunk while this one hashes the last, so a file in the page cache hashes at the
/// hash's speed and one on a disk at the disk's. Holes are hashed from zeros without reading.
pub fn digest(storage: &dyn Storage, algorithm: Algorithm) -> Result<Vec<u8>> {
    let mut hasher = algorithm.hasher();
    let len = storage.len();
    // Through the page cache: the digest is checked by a thread of its own while another
    // reads the same bytes to convert them (Storage::read_exact_at_cached).
    if len <= HASH_CHUNK as u64 {
        let mut bytes = vec![0u8; len as usize];
        storage.read_exact_at_cached(&mut bytes, 0)?;
        hasher.update(&bytes);
        return Ok(hasher.finalize().to_vec());
    }
    let (full_tx, full_rx) = crossbeam_channel::bounded::<Result<Vec<u8>>>(1);
    let (empty_tx, empty_rx) = crossbeam_channel::bounded::<Vec<u8>>(2);
    for _ in 0..2 {
        let _ = empty_tx.send(vec![0u8; HASH_CHUNK]);
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut pos = 0u64;
            while pos < len {
                let Ok(mut buf) = empty_rx.recv() else { return };
                let n = (len - pos).min(HASH_CHUNK as u64) as usize;
                buf.resize(n, 0);
                let read = match storage.is_hole(pos, n as u64) {
                    Ok(true) => {
                        buf.fill(0);
                        Ok(())
                    }
                    _ => storage.read_exact_at_cached(&mut buf, pos),
                };
                let failed = read.is_err();
                if full_tx.send(read.map(|()| buf)).is_err() || failed {
                    return;
                }
                pos += n as u64;
            }
        });
        for chunk in full_rx.iter() {
            let buf = chunk?;
            hasher.update(&buf);
            // The reader may have finished; a failed send only drops the buffer.
            let _ = empty_tx.send(buf);
        }
        Ok(hasher.finalize().to_vec())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Memory;

    #[test]
    fn every_spelling_parses() {
        let sha1_abc = "a9993e364706816aba3e25717850c26c9cd0d89d";
        let sha256_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let text = format!(
            "\u{feff}SHA1(a.ovf)= {sha1_abc}\r\n\r\nSHA256 (disk 1.vmdk) = {}\r\n  \nSHA2-256(x(1).vmdk)={sha256_abc}\nsha-256(y)= {sha256_abc}\n",
            sha256_abc.to_uppercase()
        );
        let m = Manifest::parse("vm.mf", text.as_bytes()).unwrap();
        let files: Vec<(&str, Algorithm, usize)> = m
            .entries
            .iter()
            .map(|e| (e.file.as_str(), e.algorithm, e.line))
            .collect();
        assert_eq!(
            files,
            [
                ("a.ovf", Algorithm::Sha1, 1),
                ("disk 1.vmdk", Algorithm::Sha256, 3),
                ("x(1).vmdk", Algorithm::Sha256, 5),
                ("y", Algorithm::Sha256, 6)
            ]
        );
        let abc = Memory::new("vm.ova:y", b"abc".to_vec());
        m.verify("y", &abc).unwrap();
        m.verify("a.ovf", &abc).unwrap();
        let other = Memory::new("vm.ova:y", b"abd".to_vec());
        let err = m.verify("y", &other).unwrap_err().to_string();
        assert!(
            err.contains("'y'") && err.contains(sha256_abc) && err.contains("expected"),
            "{err}"
        );
        assert!(m.verify("missing", &abc).is_err());
    }

    #[test]
    fn bad_lines_name_the_manifest_and_line() {
        for (text, want) in [
            ("SHA1(a)= 00\n", "line 1"),
            (
                "\n\nMD5(a)= d41d8cd98f00b204e9800998ecf8427e\n",
                "line 3: unknown digest algorithm 'MD5'",
            ),
            ("SHA256 a = 00\n", "not a digest line"),
            (
                "SHA1(a)= zz9993e364706816aba3e25717850c26c9cd0d89d\n",
                "not a SHA1 digest",
            ),
            (
                "SHA1()= a9993e364706816aba3e25717850c26c9cd0d89d\n",
                "empty",
            ),
            (
                "SHA1(a)= a9993e364706816aba3e25717850c26c9cd0d89d\nSHA1(a)= b9993e364706816aba3e25717850c26c9cd0d89d\n",
                "line 2: a second",
            ),
        ] {
            let err = Manifest::parse("vm.mf", text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("vm.mf: ") && err.contains(want), "{err}");
        }
        assert!(Manifest::parse("vm.mf", b"\xff\xfe").is_err());
    }

    #[test]
    fn certificates_are_noted() {
        let text =
            "SHA256(vm.mf)= 0a0b0c\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let note = parse_cert("vm.cert", text.as_bytes()).unwrap();
        assert_eq!(note.algorithm, Algorithm::Sha256);
        assert_eq!(note.signed_file, "vm.mf");
        assert_eq!((note.signature_len, note.certificates), (3, 1));
        assert!(parse_cert("vm.cert", b"SHA256(vm.mf)= 0a\n").is_err());
        assert!(parse_cert("vm.cert", b"-----BEGIN CERTIFICATE-----\nabc\n").is_err());
    }

    #[test]
    fn large_storages_hash_in_overlapped_chunks() {
        let bytes: Vec<u8> = (0..(HASH_CHUNK * 2 + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let want = Sha256::digest(&bytes).to_vec();
        let m = Memory::new("big", bytes);
        assert_eq!(digest(&m, Algorithm::Sha256).unwrap(), want);
    }
}
