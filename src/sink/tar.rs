//! Tar archives written front to back (OVA, XVA): each member is a sink of a size declared
//! before its bytes, so a whole package can go to a pipe.

use super::{Access, Sink};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A tar archive being written into a sequential sink.
pub struct TarStream<'a> {
    sink: Box<dyn Sink + 'a>,
    /// Where the next member's header goes.
    pos: u64,
}

const BLOCK: u64 = 512;

impl<'a> TarStream<'a> {
    /// An archive written into `sink` from its first byte.
    pub fn new(sink: Box<dyn Sink + 'a>) -> TarStream<'a> {
        TarStream { sink, pos: 0 }
    }

    /// Starts a member called `name` of exactly `size` bytes, modified at `mtime` (seconds
    /// since 1970). Its bytes go through the returned sink, which must be finished before the
    /// next member starts.
    pub fn member(&mut self, name: &str, size: u64, mtime: u64) -> Result<TarMember<'_, 'a>> {
        let header = member_header(name, size, mtime).map_err(|e| e.with_path(self.sink.name()))?;
        self.sink.write_at(&header, self.pos)?;
        let base = self.pos + BLOCK;
        let label = PathBuf::from(format!("{}:{name}", self.sink.name().display()));
        Ok(TarMember {
            stream: self,
            base,
            size,
            name: label,
        })
    }

    /// Ends the archive (two zero blocks) and finishes the sink.
    pub fn finish(mut self) -> Result<()> {
        self.sink.write_zeros(self.pos, 2 * BLOCK)?;
        self.sink.set_len(self.pos + 2 * BLOCK)?;
        self.sink.finish()
    }
}

/// The 512-byte header of a regular file member: ustar, which every OVA consumer reads (vSphere
/// and VirtualBox refuse PAX headers), with GNU's base-256 size past 8 GiB where octal ends.
pub fn member_header(name: &str, size: u64, mtime: u64) -> Result<[u8; 512]> {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(name)
        .map_err(|e| Error::invalid(format!("cannot name a tar member '{name}': {e}")))?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(*header.as_bytes())
}

/// One member of a [`TarStream`]: a sequential sink of a declared size.
pub struct TarMember<'s, 'a> {
    stream: &'s mut TarStream<'a>,
    base: u64,
    size: u64,
    name: PathBuf,
}

impl TarMember<'_, '_> {
    fn check(&self, offset: u64, len: u64) -> Result<()> {
        if offset.saturating_add(len) > self.size {
            return Err(Error::invalid(format!(
                "internal error: {len} bytes at {offset} do not fit the tar member's declared {} bytes",
                self.size
            ))
            .with_path(&self.name));
        }
        Ok(())
    }
}

impl Sink for TarMember<'_, '_> {
    fn name(&self) -> &Path {
        &self.name
    }

    fn access(&self) -> Access {
        Access::Sequential
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.check(offset, buf.len() as u64)?;
        self.stream.sink.write_at(buf, self.base + offset)
    }

    fn write_zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        self.check(offset, len)?;
        self.stream.sink.write_zeros(self.base + offset, len)
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        if len != self.size {
            return Err(Error::invalid(format!(
                "internal error: the tar member was declared {} bytes, not {len}",
                self.size
            ))
            .with_path(&self.name));
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        // Pad the member to its declared size, then to a whole block; the next header
        // follows.
        let end = self.base + self.size.div_ceil(BLOCK) * BLOCK;
        let this = *self;
        let written_to = this.base + this.size;
        this.stream.sink.write_zeros(written_to, end - written_to)?;
        this.stream.pos = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::PipeSink;
    use crate::sink::tests::Shared;
    use std::io::Read;

    #[test]
    fn a_member_past_8_gib_gets_a_base_256_size_in_a_ustar_header() {
        let size = 9u64 << 30;
        let h = member_header("disk.vmdk", size, 0).unwrap();
        assert_eq!(&h[257..263], b"ustar\0", "ustar, no PAX");
        assert_eq!(h[124] & 0x80, 0x80, "GNU base-256 marker");
        let mut n = 0u64;
        for &b in &h[125..136] {
            n = (n << 8) | u64::from(b);
        }
        assert_eq!(n, size);
        // Our own index reads it back.
        let mut bytes = h.to_vec();
        bytes.resize(1024, 0);
        let mem = crate::storage::Memory::new("t.tar", bytes);
        let err = crate::package::TarIndex::read(std::sync::Arc::new(mem)).unwrap_err();
        assert!(err.to_string().contains("disk.vmdk"), "{err}");
    }

    #[test]
    fn members_read_back_with_the_tar_crate() {
        let mem = Shared::default();
        let mut tar = TarStream::new(Box::new(PipeSink::new(Box::new(mem.clone()), "out.ova")));
        {
            let mut m: Box<dyn Sink + '_> =
                Box::new(tar.member("vm.ovf", 5, 1_700_000_000).unwrap());
            m.write_at(b"<ovf>", 0).unwrap();
            m.finish().unwrap();
        }
        {
            let mut m: Box<dyn Sink + '_> =
                Box::new(tar.member("disk.vmdk", 1000, 1_700_000_000).unwrap());
            m.write_at(b"KDMV", 0).unwrap();
            assert!(m.write_at(b"x", 1000).is_err());
            m.finish().unwrap();
        }
        tar.finish().unwrap();
        let bytes = mem.0.lock().unwrap().clone();
        assert_eq!(bytes.len() % 512, 0);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            seen.push((name, content));
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], ("vm.ovf".to_string(), b"<ovf>".to_vec()));
        assert_eq!(seen[1].0, "disk.vmdk");
        assert_eq!(&seen[1].1[..4], b"KDMV");
        assert!(seen[1].1[4..].iter().all(|&b| b == 0));
        assert_eq!(seen[1].1.len(), 1000);
    }
}
