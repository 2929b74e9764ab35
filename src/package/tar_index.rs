//! An index of a tar archive read in place: every member's name, kind, and where its bytes lie,
//! found by positional reads of its headers only. Nothing is extracted or copied; a member is
//! read through a [`Window`] into the archive's storage.
//!
//! Headers are parsed here by hand rather than with the `tar` crate: the crate's GNU long-name
//! and PAX handling lives in its `Archive` iterator, which wants a `Read` stream over the whole
//! archive and copies every extension record through it, while an OVA or XVA index must come
//! from a few positional reads of a [`Storage`] (a file, a window, memory for fuzzing), and
//! must hold hostile archives to stated bounds (how long a name, how many members, how large a
//! PAX record) that we want to choose and test ourselves.
//!
//! Formats read: v7, POSIX ustar (with the `prefix` field), GNU and old GNU (long names and link
//! names in `L`/`K` members, base-256 numbers for sizes of 8 GiB and more), and PAX (`x` records
//! for `path`, `linkpath` and `size`; `g` global records apply to every member that follows, as
//! POSIX says, until a later `g` record replaces them).
//!
//! Policy, in the spirit of the open gate ([`crate::gate`]):
//! - every header's checksum is verified (the unsigned sum, or the signed one some old writers
//!   computed); numeric fields must be octal (or GNU base-256) and nothing else;
//! - names are normalised (`./` and empty components dropped, a trailing `/` removed) and must be
//!   relative, UTF-8, free of NUL bytes and of `..` components; a name that is not is refused
//!   with an error naming it and its header's offset;
//! - two members with the same normalised name are an error: an archive in which a manifest
//!   could be checked against one copy while a disk is read from another is not an archive we
//!   read (GNU tar would let the last copy win when extracting; we refuse to guess);
//! - a member whose data runs past the end of the storage is an error naming it and its offset;
//! - the archive ends at the first all-zero header block (GNU tar warns about a lone zero block
//!   and stops there too) or at the end of the storage on a block boundary; whatever follows the
//!   end is ignored, as GNU tar ignores it; an incomplete header at the end is ignored when it
//!   is all zeros and an error otherwise;
//! - directories, symbolic links, hard links, devices and FIFOs are listed but never followed;
//!   only regular files can be opened ([`TarIndex::open`]);
//! - every allocation a size field asks for is bounded ([`Limits`]).

use crate::error::{Error, Result};
use crate::storage::{Storage, Window};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The size of a tar block (headers, and the unit data is padded to).
pub const BLOCK: u64 = 512;

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file (type `0`, NUL in v7 archives, or `7`, contiguous file).
    File,
    /// A directory (type `5`, or a v7 regular-file header whose name ends in `/`).
    Directory,
    /// A symbolic link to the target stored in the archive (never followed).
    Symlink(String),
    /// A hard link to an earlier member (never followed).
    HardLink(String),
    /// A GNU sparse file (type `S`, or PAX `GNU.sparse.*` records): its data is not stored
    /// contiguously, so it is listed but not readable.
    Sparse,
    /// Anything else: a device, a FIFO, a volume label, an unknown type. The byte is the
    /// header's type flag.
    Other(u8),
}

impl MemberKind {
    /// A word for messages ("a symbolic link").
    pub fn describe(&self) -> String {
        match self {
            MemberKind::File => "a regular file".into(),
            MemberKind::Directory => "a directory".into(),
            MemberKind::Symlink(t) => format!("a symbolic link to '{t}'"),
            MemberKind::HardLink(t) => format!("a hard link to '{t}'"),
            MemberKind::Sparse => "a GNU sparse file".into(),
            MemberKind::Other(b'3') => "a character device".into(),
            MemberKind::Other(b'4') => "a block device".into(),
            MemberKind::Other(b'6') => "a FIFO".into(),
            MemberKind::Other(t) => format!("a member of type '{}'", t.escape_ascii()),
        }
    }
}

/// One member of a tar archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The normalised name: relative, `/`-separated, without `./` or a trailing `/`.
    pub name: String,
    /// Where the member's own header is (after any long-name or PAX headers before it).
    pub header_offset: u64,
    /// Where its data starts: right after its header, except for an old GNU sparse file
    /// whose sparse map continues in extension blocks.
    pub offset: u64,
    /// Its data's length in bytes.
    pub size: u64,
    /// What it is.
    pub kind: MemberKind,
}

/// Bounds on what an archive may make the index allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most members an archive may hold. An XVA holds two per MiB of disk.
    pub max_members: usize,
    /// The longest name (GNU `L`/`K` member, PAX `path`/`linkpath`), in bytes.
    pub max_name_len: u64,
    /// The largest PAX extended header (`x` or `g`), in bytes.
    pub max_pax_len: u64,
}

impl Default for Limits {
    /// 8 Mi members (an XVA of a 4 TiB disk), names of 64 KiB, PAX headers of 1 MiB.
    fn default() -> Limits {
        Limits {
            max_members: 8 << 20,
            max_name_len: 64 << 10,
            max_pax_len: 1 << 20,
        }
    }
}

/// The members of a tar archive held in a storage, in archive order.
#[derive(Debug, Clone)]
pub struct TarIndex {
    storage: Arc<dyn Storage>,
    members: Vec<Member>,
    by_name: HashMap<String, usize>,
    end: u64,
}

/// The PAX keys the index uses; `None` means "not set", `Some("")` in an `x` header means
/// "unset the global value for this member".
#[derive(Debug, Default, Clone)]
struct Pax {
    path: Option<String>,
    linkpath: Option<String>,
    size: Option<String>,
    /// `GNU.sparse.name`: a PAX sparse file's real name (its header holds a made-up one).
    sparse_name: Option<String>,
    sparse: bool,
}

/// Extension headers seen since the last member, applying to the next one.
#[derive(Debug, Default)]
struct Pending {
    long_name: Option<String>,
    long_link: Option<String>,
    pax: Pax,
    /// Where the first extension header of this member is, for messages.
    first: Option<u64>,
}

impl TarIndex {
    /// Indexes the tar archive in `storage` with the default [`Limits`].
    pub fn read(storage: Arc<dyn Storage>) -> Result<TarIndex> {
        TarIndex::read_with(storage, Limits::default())
    }

    /// Indexes the tar archive in `storage`, holding it to `limits`.
    pub fn read_with(storage: Arc<dyn Storage>, limits: Limits) -> Result<TarIndex> {
        let len = storage.len();
        let mut members = Vec::new();
        let mut by_name = HashMap::new();
        let mut global = Pax::default();
        let mut pending = Pending::default();
        let mut pos = 0u64;
        let mut block = [0u8; BLOCK as usize];
        let end = loop {
            if pos >= len {
                // The last member's padding may be cut short by the end of the storage.
                break len;
            }
            if len - pos < BLOCK {
                // A partial block at the end: padding some writers leave, or a cut archive.
                let mut tail = vec![0u8; (len - pos) as usize];
                storage.read_exact_at(&mut tail, pos)?;
                if tail.iter().all(|&b| b == 0) {
                    break pos;
                }
                let why = if pos == 0 {
                    "not a tar archive: shorter than one 512-byte header"
                } else {
                    "the archive ends inside a header"
                };
                return Err(corrupt(&storage, pos, why));
            }
            storage.read_exact_at(&mut block, pos)?;
            if block.iter().all(|&b| b == 0) {
                break pos;
            }
            verify_checksum(&block).map_err(|why| {
                if pos == 0 {
                    Error::corrupt(format!("not a tar archive: {why}"))
                        .at_offset(0)
                        .with_path(storage.name())
                } else {
                    corrupt(&storage, pos, &format!("tar header: {why}"))
                }
            })?;
            let typeflag = block[156];
            let size = number(&block[124..136])
                .map_err(|why| corrupt(&storage, pos, &format!("tar header size field: {why}")))?;
            let data = pos + BLOCK;
            let padded = size
                .checked_add(BLOCK - 1)
                .map(|s| s / BLOCK * BLOCK)
                .and_then(|s| data.checked_add(s));
            match typeflag {
                b'L' | b'K' => {
                    pending.first.get_or_insert(pos);
                    let what = if typeflag == b'L' {
                        "GNU long name"
                    } else {
                        "GNU long link name"
                    };
                    if size > limits.max_name_len {
                        return Err(corrupt(
                            &storage,
                            pos,
                            &format!(
                                "{what} of {size} bytes is longer than the {} bytes allowed",
                                limits.max_name_len
                            ),
                        ));
                    }
                    let bytes = read_data(&storage, data, size, what, pos)?;
                    let text = long_name(&bytes)
                        .map_err(|why| corrupt(&storage, pos, &format!("{what}: {why}")))?;
                    if typeflag == b'L' {
                        pending.long_name = Some(text);
                    } else {
                        pending.long_link = Some(text);
                    }
                }
                b'x' | b'g' => {
                    let what = if typeflag == b'x' {
                        "PAX extended header"
                    } else {
                        "PAX global header"
                    };
                    if size > limits.max_pax_len {
                        return Err(corrupt(
                            &storage,
                            pos,
                            &format!(
                                "{what} of {size} bytes is larger than the {} bytes allowed",
                                limits.max_pax_len
                            ),
                        ));
                    }
                    let bytes = read_data(&storage, data, size, what, pos)?;
                    if typeflag == b'x' {
                        pending.first.get_or_insert(pos);
                    }
                    let target = if typeflag == b'x' {
                        &mut pending.pax
                    } else {
                        &mut global
                    };
                    parse_pax(&bytes, target, limits.max_name_len)
                        .map_err(|why| corrupt(&storage, pos, &format!("{what}: {why}")))?;
                }
                _ => {
                    let member =
                        Self::member_from(&storage, &block, pos, size, &global, &mut pending)?;
                    if members.len() >= limits.max_members {
                        return Err(corrupt(
                            &storage,
                            pos,
                            &format!(
                                "the archive holds more than {} members, the most allowed",
                                limits.max_members
                            ),
                        ));
                    }
                    if let Some(&earlier) = by_name.get(&member.name) {
                        let first: &Member = &members[earlier];
                        return Err(corrupt(
                            &storage,
                            pos,
                            &format!(
                                "member '{}' appears twice (its first header is at offset {}); an archive whose names are ambiguous is refused",
                                member.name, first.header_offset
                            ),
                        ));
                    }
                    // GNU tar does not skip data after a directory header or a hard link.
                    let skip = match member.kind {
                        MemberKind::Directory | MemberKind::HardLink(_) => 0,
                        _ => member.size,
                    };
                    let offset = member.offset;
                    by_name.insert(member.name.clone(), members.len());
                    members.push(member);
                    pending = Pending::default();
                    let next = offset
                        .checked_add(skip.div_ceil(BLOCK) * BLOCK)
                        .ok_or_else(|| corrupt(&storage, pos, "member size overflows"))?;
                    pos = next;
                    continue;
                }
            }
            pos = padded.ok_or_else(|| corrupt(&storage, pos, "extension size overflows"))?;
        };
        if let Some(first) = pending.first {
            return Err(corrupt(
                &storage,
                first,
                "the archive ends after an extended header (long name or PAX) without the member it describes",
            ));
        }
        Ok(TarIndex {
            storage,
            members,
            by_name,
            end,
        })
    }

    fn member_from(
        storage: &Arc<dyn Storage>,
        block: &[u8; BLOCK as usize],
        pos: u64,
        header_size: u64,
        global: &Pax,
        pending: &mut Pending,
    ) -> Result<Member> {
        let typeflag = block[156];
        let pick = |local: &Option<String>, global: &Option<String>| -> Option<String> {
            match local {
                Some(v) if v.is_empty() => None,
                Some(v) => Some(v.clone()),
                None => global.clone().filter(|v| !v.is_empty()),
            }
        };
        let path = pending
            .pax
            .sparse_name
            .clone()
            .or_else(|| pick(&pending.pax.path, &global.path));
        let raw_name = match path {
            Some(p) => p,
            None => match pending.long_name.take() {
                Some(n) => n,
                None => header_name(block)
                    .map_err(|why| corrupt(storage, pos, &format!("member name: {why}")))?,
            },
        };
        let size = match pick(&pending.pax.size, &global.size) {
            Some(s) => decimal(&s)
                .ok_or_else(|| corrupt(storage, pos, &format!("PAX size '{s}' is not a number")))?,
            None => header_size,
        };
        let link = || -> Result<String> {
            if let Some(l) = pick(&pending.pax.linkpath, &global.linkpath) {
                return Ok(l);
            }
            if let Some(l) = pending.long_link.clone() {
                return Ok(l);
            }
            let field = cstr(&block[157..257]);
            String::from_utf8(field.to_vec())
                .map_err(|_| corrupt(storage, pos, "link target is not UTF-8"))
        };
        let sparse = pending.pax.sparse || global.sparse;
        let kind = match typeflag {
            _ if sparse => MemberKind::Sparse,
            b'0' | b'7' => MemberKind::File,
            // v7 archives mark directories by a trailing slash on a regular-file header.
            0 if raw_name.ends_with('/') => MemberKind::Directory,
            0 => MemberKind::File,
            b'5' => MemberKind::Directory,
            b'2' => MemberKind::Symlink(link()?),
            b'1' => MemberKind::HardLink(link()?),
            b'S' => MemberKind::Sparse,
            other => MemberKind::Other(other),
        };
        let name = normalize(&raw_name, &kind).map_err(|why| {
            Error::corrupt(format!(
                "member '{}' refused: {why}",
                raw_name.escape_debug()
            ))
            .at_offset(pos)
            .with_path(storage.name())
        })?;
        let mut offset = pos + BLOCK;
        if typeflag == b'S' && block[482] != 0 {
            // An old GNU sparse file whose map does not fit its header continues it in
            // extension blocks (each flagging whether another follows) before the data.
            let mut ext = [0u8; BLOCK as usize];
            loop {
                if offset.checked_add(BLOCK).is_none_or(|e| e > storage.len()) {
                    return Err(corrupt(
                        storage,
                        pos,
                        "a GNU sparse member's map runs past the end of the archive",
                    ));
                }
                storage.read_exact_at(&mut ext, offset)?;
                offset += BLOCK;
                if ext[504] == 0 {
                    break;
                }
            }
        }
        let data_len = match kind {
            MemberKind::Directory | MemberKind::HardLink(_) => 0,
            _ => size,
        };
        if offset
            .checked_add(data_len)
            .is_none_or(|end| end > storage.len())
        {
            return Err(Error::corrupt(format!(
                "member '{name}' of {size} bytes runs past the end of the archive ({} bytes)",
                storage.len()
            ))
            .at_offset(pos)
            .with_path(storage.name()));
        }
        Ok(Member {
            name,
            header_offset: pos,
            offset,
            size: data_len,
            kind,
        })
    }

    /// The members, in archive order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member called `name` (normalised as member names are: `./disk.vmdk` finds
    /// `disk.vmdk`).
    pub fn member(&self, name: &str) -> Option<&Member> {
        let mut key = normalize_lookup(name);
        if key.is_empty() {
            // The archive's root folder (`./`), which normalises to nothing, is listed as `.`.
            key = ".".into();
        }
        self.by_name.get(&key).map(|&i| &self.members[i])
    }

    /// The storage the archive is in.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Where the archive's last member (with its padding) ends: the offset of the end-of-archive
    /// blocks, or of the end of the storage.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The data of `member` as a storage of its own, named `ARCHIVE:MEMBER` in messages. Only
    /// regular files have data that can be read.
    pub fn window(&self, member: &Member) -> Result<Window> {
        if member.kind != MemberKind::File {
            return Err(Error::refused(format!(
                "member '{}' is {}; only regular files are read from a package, links are never followed",
                member.name,
                member.kind.describe()
            ))
            .with_path(self.storage.name()));
        }
        Window::new(
            Arc::clone(&self.storage),
            member.offset,
            member.size,
            self.member_label(&member.name),
        )
    }

    /// The data of the regular file `name` as a storage (see [`TarIndex::window`]). A name the
    /// archive does not hold is an error listing what it holds (the first few names).
    pub fn open(&self, name: &str) -> Result<Window> {
        match self.member(name) {
            Some(m) => self.window(m),
            None => Err(self.missing(name)),
        }
    }

    /// The error for a file the archive does not hold.
    pub fn missing(&self, name: &str) -> Error {
        const SHOWN: usize = 8;
        let mut names: Vec<&str> = self
            .members
            .iter()
            .take(SHOWN)
            .map(|m| m.name.as_str())
            .collect();
        if self.members.len() > SHOWN {
            names.push("...");
        }
        let holds = if names.is_empty() {
            "it holds no members".to_string()
        } else {
            format!("it holds: {}", names.join(", "))
        };
        Error::corrupt(format!(
            "the package has no member '{}' ({holds})",
            name.escape_debug()
        ))
        .with_path(self.storage.name())
    }

    /// The name messages use for a member: `ARCHIVE:MEMBER`.
    pub fn member_label(&self, name: &str) -> PathBuf {
        label(self.storage.name(), name)
    }
}

fn corrupt(storage: &Arc<dyn Storage>, pos: u64, what: &str) -> Error {
    Error::corrupt(what.to_string())
        .at_offset(pos)
        .with_path(storage.name())
}

fn read_data(
    storage: &Arc<dyn Storage>,
    data: u64,
    size: u64,
    what: &str,
    header: u64,
) -> Result<Vec<u8>> {
    if data.checked_add(size).is_none_or(|e| e > storage.len()) {
        return Err(corrupt(
            storage,
            header,
            &format!(
                "{what} of {size} bytes runs past the end of the archive ({} bytes)",
                storage.len()
            ),
        ));
    }
    // Bounded by the caller's limits before we get here.
    let mut buf = vec![0u8; size as usize];
    storage.read_exact_at(&mut buf, data)?;
    Ok(buf)
}

/// Checks the header checksum: the sum of the header's bytes with the checksum field counted as
/// spaces, as unsigned bytes (POSIX) or as signed ones (some historic writers).
fn verify_checksum(block: &[u8; BLOCK as usize]) -> std::result::Result<(), String> {
    let stored = octal(&block[148..156]).map_err(|why| format!("checksum field: {why}"))?;
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(format!(
            "header checksum {stored:o} (octal) does not match the header's bytes (sum {unsigned:o})"
        ))
    }
}

/// A numeric header field: octal digits, or GNU base-256 when the first byte's high bit is set.
/// In base-256 the first byte's next bit is the sign (a negative size is corrupt) and its six
/// low bits are the number's top bits; the other bytes follow, big-endian.
fn number(field: &[u8]) -> std::result::Result<u64, String> {
    match field.first() {
        Some(&first) if first & 0x80 != 0 => {
            if first & 0x40 != 0 {
                return Err("negative base-256 number".into());
            }
            let mut v = u64::from(first & 0x3f);
            for &b in &field[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or("base-256 number is too large")?;
            }
            Ok(v)
        }
        _ => octal(field),
    }
}

/// An octal field: optional leading spaces, octal digits, then only NULs and spaces. A field
/// with no digits at all is 0 (v7 and some writers leave unused fields blank).
fn octal(field: &[u8]) -> std::result::Result<u64, String> {
    let mut i = 0;
    while i < field.len() && field[i] == b' ' {
        i += 1;
    }
    let mut v: u64 = 0;
    while i < field.len() && (b'0'..=b'7').contains(&field[i]) {
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(field[i] - b'0')))
            .ok_or("octal number is too large")?;
        i += 1;
    }
    if field[i..].iter().all(|&b| b == 0 || b == b' ') {
        Ok(v)
    } else {
        Err(format!(
            "'{}' is not an octal number",
            cstr(field).escape_ascii()
        ))
    }
}

/// A decimal PAX value.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The bytes of a NUL-terminated field up to its first NUL.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// The name in a header: `prefix/name` in POSIX ustar headers (magic `ustar\0`), `name` alone
/// in GNU and v7 headers (old GNU keeps other things where ustar has its prefix).
fn header_name(block: &[u8; BLOCK as usize]) -> std::result::Result<String, String> {
    let name = cstr(&block[0..100]);
    let posix = &block[257..263] == b"ustar\0";
    let prefix = if posix { cstr(&block[345..500]) } else { &[] };
    let mut full = Vec::with_capacity(prefix.len() + 1 + name.len());
    if !prefix.is_empty() {
        full.extend_from_slice(prefix);
        full.push(b'/');
    }
    full.extend_from_slice(name);
    String::from_utf8(full).map_err(|_| "the name is not UTF-8".to_string())
}

/// A GNU long name: the member's data, NUL-terminated (trailing NULs are dropped; a NUL before
/// them is refused).
fn long_name(bytes: &[u8]) -> std::result::Result<String, String> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let text = &bytes[..end];
    if text.contains(&0) {
        return Err("the name holds a NUL byte".into());
    }
    String::from_utf8(text.to_vec()).map_err(|_| "the name is not UTF-8".into())
}

/// Parses PAX records (`LEN KEY=VALUE\n`, LEN counting the whole record) into `into`.
fn parse_pax(bytes: &[u8], into: &mut Pax, max_value: u64) -> std::result::Result<(), String> {
    let mut at = 0usize;
    while at < bytes.len() {
        // Writers pad the last block with NULs.
        if bytes[at..].iter().all(|&b| b == 0) {
            break;
        }
        let rest = &bytes[at..];
        let space = rest
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or_else(|| format!("record at byte {at} has no length"))?;
        let len_text = std::str::from_utf8(&rest[..space]).map_err(|_| "bad record length")?;
        let len: usize = decimal(len_text)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| format!("record at byte {at} has a bad length '{len_text}'"))?;
        if len <= space + 1 || len > rest.len() {
            return Err(format!(
                "record at byte {at} claims {len} bytes, but {} remain",
                rest.len()
            ));
        }
        let record = &rest[space + 1..len];
        let Some((&b'\n', body)) = record.split_last() else {
            return Err(format!("record at byte {at} does not end with a newline"));
        };
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| format!("record at byte {at} has no '='"))?;
        let key = &body[..eq];
        let value = &body[eq + 1..];
        let text = |what: &str| -> std::result::Result<String, String> {
            if value.len() as u64 > max_value {
                return Err(format!("{what} of {} bytes is too long", value.len()));
            }
            if value.contains(&0) {
                return Err(format!("{what} holds a NUL byte"));
            }
            String::from_utf8(value.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
        };
        match key {
            b"path" => into.path = Some(text("path")?),
            b"linkpath" => into.linkpath = Some(text("linkpath")?),
            b"size" => into.size = Some(text("size")?),
            b"GNU.sparse.name" => {
                into.sparse_name = Some(text("GNU.sparse.name")?);
                into.sparse = true;
            }
            k if k.starts_with(b"GNU.sparse.") => into.sparse = true,
            _ => {}
        }
        at += len;
    }
    Ok(())
}

/// Normalises a member name and applies the name policy (see the module documentation).
fn normalize(raw: &str, kind: &MemberKind) -> std::result::Result<String, String> {
    if raw.contains('\0') {
        return Err("the name holds a NUL byte".into());
    }
    if raw.starts_with('/') || raw.starts_with('\\') || has_drive(raw) {
        return Err("an absolute name; package members must be relative".into());
    }
    // Backslashes are separators to Windows tools: a `..\` must not slip past.
    if raw.split(['/', '\\']).any(|c| c == "..") {
        return Err("the name has a '..' component, which would lead out of the package".into());
    }
    let name = normalize_lookup(raw);
    if name.is_empty() {
        return if *kind == MemberKind::Directory {
            Ok(".".into())
        } else {
            Err("the name is empty".into())
        };
    }
    Ok(name)
}

/// `C:` or `C:\...`: absolute (or drive-relative) to Windows.
fn has_drive(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// The name without `.` and empty components and without a trailing `/`.
fn normalize_lookup(raw: &str) -> String {
    raw.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Where a storage name and a member name meet in messages, for callers building their own.
pub fn label(archive: &Path, member: &str) -> PathBuf {
    let mut label = archive.as_os_str().to_owned();
    label.push(":");
    label.push(member);
    PathBuf::from(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Memory, StorageExt};

    /// A header block with `name`, `size`, `typeflag`, magic (`None` for v7) and a correct
    /// checksum.
    fn header(name: &[u8], size: u64, typeflag: u8, magic: Option<&[u8; 8]>) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = typeflag;
        if let Some(m) = magic {
            h[257..265].copy_from_slice(m);
        }
        seal(&mut h);
        h
    }

    fn seal(h: &mut [u8; 512]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    fn archive(parts: &[(&[u8; 512], &[u8])]) -> Arc<dyn Storage> {
        let mut out = Vec::new();
        for (h, data) in parts {
            out.extend_from_slice(&h[..]);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        Arc::new(Memory::new("t.tar", out))
    }

    const USTAR: &[u8; 8] = b"ustar\x0000";
    const GNU: &[u8; 8] = b"ustar  \0";

    #[test]
    fn numbers() {
        assert_eq!(octal(b"0000644\0").unwrap(), 0o644);
        assert_eq!(octal(b"  644 \0\0").unwrap(), 0o644);
        assert_eq!(octal(b"\0\0\0").unwrap(), 0);
        assert!(octal(b"0009\0").is_err());
        assert!(octal(b"12 3").is_err());
        assert!(octal(b"7777777777777777777777777").is_err());
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..].copy_from_slice(&(10u64 << 30).to_be_bytes());
        assert_eq!(number(&f).unwrap(), 10 << 30);
        f[0] = 0xff;
        assert!(number(&f).is_err());
        assert!(number(&[0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert_eq!(number(&[0x81, 0, 0, 0, 0, 0, 0, 0]).unwrap(), 1 << 56);
        let mut big = [0xffu8; 12];
        big[0] = 0x80;
        assert!(number(&big).is_err());
        assert_eq!(number(b"77777777777\0").unwrap(), (8 << 30) - 1);
        assert_eq!(number(b"777777777777").unwrap(), (64 << 30) - 1);
    }

    #[test]
    fn ustar_prefix_and_members_read_back() {
        let mut h = header(b"disk.vmdk", 5, b'0', Some(USTAR));
        h[345..352].copy_from_slice(b"vm/sub/");
        seal(&mut h);
        let d = header(b"vm/", 0, b'5', Some(USTAR));
        let s = header(b"vm/link", 0, b'2', Some(USTAR));
        let idx = TarIndex::read(archive(&[(&d, b""), (&h, b"hello"), (&s, b"")])).unwrap();
        let names: Vec<&str> = idx.members().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["vm", "vm/sub/disk.vmdk", "vm/link"]);
        assert_eq!(idx.member("vm/").unwrap().kind, MemberKind::Directory);
        let root = header(b"./", 0, b'5', Some(GNU));
        let r = TarIndex::read(archive(&[(&root, b"")])).unwrap();
        assert_eq!(r.members()[0].name, ".");
        assert!(r.member("./").is_some() && r.member(".").is_some());
        let w = idx.open("./vm/sub/disk.vmdk").unwrap();
        assert_eq!(w.read_vec(0, 5, "x").unwrap(), b"hello");
        assert_eq!(w.name(), Path::new("t.tar:vm/sub/disk.vmdk"));
        let err = idx.open("vm/link").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Refused);
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(idx.open("vm").is_err());
        let err = idx.open("nope").unwrap_err().to_string();
        assert!(
            err.contains("no member 'nope'") && err.contains("vm/link"),
            "{err}"
        );
    }

    #[test]
    fn gnu_prefix_area_is_not_a_prefix() {
        let mut h = header(b"a.ovf", 1, b'0', Some(GNU));
        h[345..350].copy_from_slice(b"12345"); // old GNU atime
        seal(&mut h);
        let idx = TarIndex::read(archive(&[(&h, b"x")])).unwrap();
        assert_eq!(idx.members()[0].name, "a.ovf");
    }

    #[test]
    fn signed_checksums_are_accepted() {
        let mut h = header(b"\xc3\xa9t\xc3\xa9", 0, b'0', Some(USTAR));
        h[148..156].copy_from_slice(b"        ");
        let sum: i64 = h.iter().map(|&b| i64::from(b as i8)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let idx = TarIndex::read(archive(&[(&h, b"")])).unwrap();
        assert_eq!(idx.members()[0].name, "été");
        h[0] = b'X';
        let err = TarIndex::read(archive(&[(&h, b"")])).unwrap_err();
        assert!(err.to_string().contains("not a tar archive"), "{err}");
    }

    #[test]
    fn gnu_long_names_and_pax_records() {
        let long = "d/".repeat(100) + "disk.vmdk";
        let l = header(b"././@LongLink", long.len() as u64 + 1, b'L', Some(GNU));
        let f = header(b"truncated", 3, b'0', Some(GNU));
        let mut data = long.clone().into_bytes();
        data.push(0);
        let rec = format!("path=p/{long}\n");
        let rec = format!("{} {rec}", rec.len() + 4);
        let x = header(b"PaxHeaders/x", rec.len() as u64, b'x', Some(USTAR));
        let g_rec = "19 comment=hello!!\n";
        assert_eq!(g_rec.len(), 19);
        let g = header(b"global", g_rec.len() as u64, b'g', Some(USTAR));
        let f2 = header(b"short", 2, b'0', Some(USTAR));
        let idx = TarIndex::read(archive(&[
            (&l, &data),
            (&f, b"abc"),
            (&g, g_rec.as_bytes()),
            (&x, rec.as_bytes()),
            (&f2, b"xy"),
        ]))
        .unwrap();
        let names: Vec<&str> = idx.members().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, [long.clone(), format!("p/{long}")]);
        assert_eq!(
            idx.open(&long).unwrap().read_vec(0, 3, "x").unwrap(),
            b"abc"
        );
    }

    #[test]
    fn pax_size_overrides_the_header() {
        let rec = "12 size=700\n";
        let x = header(b"x", rec.len() as u64, b'x', Some(USTAR));
        let f = header(b"big", 0, b'0', Some(USTAR));
        let idx = TarIndex::read(archive(&[(&x, rec.as_bytes()), (&f, &[7u8; 700])])).unwrap();
        assert_eq!(idx.members()[0].size, 700);
        assert_eq!(idx.members().len(), 1);
    }

    #[test]
    fn hostile_pax_records_are_errors() {
        for rec in [
            "99999999999999999999 path=a\n",
            "5 pa\n",
            "0 path=a\n",
            "x path=a\n",
            "10 path=a",
            "11 path=a\0\n",
            "12 size=-10\n",
        ] {
            let x = header(b"x", rec.len() as u64, b'x', Some(USTAR));
            let f = header(b"f", 0, b'0', Some(USTAR));
            assert!(
                TarIndex::read(archive(&[(&x, rec.as_bytes()), (&f, b"")])).is_err(),
                "{rec:?}"
            );
        }
        // A PAX header claiming more than the limit is refused before anything is read.
        let mut x = header(b"x", 0, b'x', Some(USTAR));
        x[124..136].fill(0);
        x[124] = 0x80;
        x[128..136].copy_from_slice(&(1u64 << 40).to_be_bytes());
        seal(&mut x);
        let err = TarIndex::read(archive(&[(&x, b"")])).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn names_that_leave_the_package_are_refused() {
        for bad in [
            &b"../etc/passwd"[..],
            b"/etc/passwd",
            b"a/../../b",
            b"a/../b",
            b"..\\x",
            b"C:\\x",
        ] {
            let h = header(bad, 0, b'0', Some(USTAR));
            let err = TarIndex::read(archive(&[(&h, b"")])).unwrap_err();
            assert!(err.to_string().contains("refused"), "{err}");
        }
        let l = header(b"././@LongLink", 4, b'L', Some(GNU));
        let f = header(b"f", 0, b'0', Some(GNU));
        assert!(TarIndex::read(archive(&[(&l, b"a\0b\0"), (&f, b"")])).is_err());
    }

    #[test]
    fn duplicates_and_truncation_are_errors() {
        let a = header(b"a", 1, b'0', Some(USTAR));
        let a2 = header(b"./a", 1, b'0', Some(USTAR));
        let err = TarIndex::read(archive(&[(&a, b"1"), (&a2, b"2")])).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        let big = header(b"disk.vmdk", 4096, b'0', Some(USTAR));
        let mut bytes = big.to_vec();
        bytes.extend_from_slice(&[1u8; 1000]);
        let err = TarIndex::read(Arc::new(Memory::new("t.tar", bytes))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("disk.vmdk")
                && text.contains("past the end")
                && text.contains("offset 0"),
            "{text}"
        );
    }

    #[test]
    fn end_of_archive_and_trailing_bytes() {
        let a = header(b"a", 1, b'0', None);
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(&[b'1'; 512]);
        // No end blocks: the end of the storage ends the archive.
        let idx = TarIndex::read(Arc::new(Memory::new("t", bytes.clone()))).unwrap();
        assert_eq!(idx.members().len(), 1);
        // A partial block of zeros, or garbage after the end blocks, is ignored.
        let mut z = bytes.clone();
        z.extend_from_slice(&[0u8; 100]);
        assert_eq!(
            TarIndex::read(Arc::new(Memory::new("t", z))).unwrap().end(),
            1024
        );
        // The last member's padding cut off: its data is whole, the archive ends with it.
        let mut p = bytes.clone();
        p.truncate(512 + 5);
        p[124..136].copy_from_slice(b"00000000005\0");
        let mut h: [u8; 512] = p[..512].try_into().unwrap();
        seal(&mut h);
        p[..512].copy_from_slice(&h);
        let idx = TarIndex::read(Arc::new(Memory::new("t", p))).unwrap();
        assert_eq!((idx.members()[0].size, idx.end()), (5, 517));
        let mut g = bytes.clone();
        g.extend_from_slice(&[0u8; 1024]);
        g.extend_from_slice(b"garbage");
        assert_eq!(
            TarIndex::read(Arc::new(Memory::new("t", g)))
                .unwrap()
                .members()
                .len(),
            1
        );
        // A partial block that is not zeros is a cut header.
        let mut c = bytes;
        c.extend_from_slice(b"disk");
        assert!(TarIndex::read(Arc::new(Memory::new("t", c))).is_err());
        // An empty archive is an empty index.
        let idx = TarIndex::read(Arc::new(Memory::new("t", vec![0u8; 1024]))).unwrap();
        assert!(idx.members().is_empty());
    }

    #[test]
    fn an_extension_without_its_member_is_an_error() {
        let l = header(b"././@LongLink", 4, b'L', Some(GNU));
        let err = TarIndex::read(archive(&[(&l, b"abc\0")])).unwrap_err();
        assert!(err.to_string().contains("without the member"), "{err}");
    }

    #[test]
    fn member_count_is_bounded() {
        let a = header(b"a", 0, b'0', Some(USTAR));
        let b = header(b"b", 0, b'0', Some(USTAR));
        let limits = Limits {
            max_members: 1,
            ..Limits::default()
        };
        let err = TarIndex::read_with(archive(&[(&a, b""), (&b, b"")]), limits).unwrap_err();
        assert!(err.to_string().contains("more than 1 members"), "{err}");
    }
}
