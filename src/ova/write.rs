//! Writing an OVA: a tar of the descriptor, its manifest and the disks, in that order (what
//! vSphere, VirtualBox and XenServer require), in one pass over each disk.
//!
//! A tar member's size goes in its header, in front of its bytes, and a disk's size is known
//! only once it is written (compressed). Into a file, the disks are therefore converted straight
//! into their places: room for the descriptor and the manifest is reserved at the front (the
//! descriptor is made once with the widest numbers to size it, and padded with trailing
//! whitespace, which XML allows after the root element, when made for real), each disk's
//! header is written once the disk is done, and the front is filled last. Nothing is copied,
//! and the manifest's digests are computed as the disks stream by. To a pipe, each disk is
//! first converted into an unnamed temporary file, then the finished tar streams out.
//!
//! The output appears only when complete (staged beside the destination and renamed), so a
//! failed or interrupted export leaves nothing.

use crate::convert::{ConvertOptions, Event, convert_image};
use crate::error::{Error, Result};
use crate::host_file::Durability;
use crate::image::Image;
use crate::sink::{
    Access, DigestAlgorithm, FileSink, HashingTee, Output, PipeSink, Sink, TarStream, member_header,
};
use crate::staging::Staging;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const BLOCK: u64 = 512;

/// One disk to put in the package.
pub struct PackageDisk {
    /// Its member name (`vm-disk1.vmdk`).
    pub member: String,
    /// The disk, opened.
    pub image: Arc<Image>,
    /// How to convert it: the target format, its `-o` options, `-c`, threads.
    pub convert: ConvertOptions,
}

/// A disk as written into the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenDisk {
    /// Its member name.
    pub member: String,
    /// Its size in the package (the file's size, the OVF `ovf:size`).
    pub file_size: u64,
    /// Its virtual size (the OVF `ovf:capacity`).
    pub capacity: u64,
    /// The bytes of the disk that hold data (the OVF `ovf:populatedSize`).
    pub populated: u64,
    /// Its digest in the manifest's algorithm, lowercase hex.
    pub digest: String,
}

/// What to package.
pub struct PackagePlan<'f> {
    /// The descriptor's member name (`vm.ovf`).
    pub descriptor_name: String,
    /// The manifest's member name (`vm.mf`).
    pub manifest_name: String,
    /// The manifest's digest.
    pub algorithm: DigestAlgorithm,
    /// The disks, in member order.
    pub disks: Vec<PackageDisk>,
    /// Makes the descriptor from the disks as written. It is called once more first with
    /// the widest values every number can take, to size the descriptor's place, so its
    /// length must not grow with anything but those numbers.
    pub descriptor: &'f dyn Fn(&[WrittenDisk]) -> Result<String>,
    /// The members' modification time (seconds since 1970).
    pub mtime: u64,
}

/// The manifest's name for an algorithm, as VMware spells it (`SHA256(name)= hex`, the only
/// spelling vSphere accepts).
fn manifest_tag(algorithm: DigestAlgorithm) -> &'static str {
    match algorithm {
        DigestAlgorithm::Sha1 => "SHA1",
        DigestAlgorithm::Sha256 => "SHA256",
        DigestAlgorithm::Sha512 => "SHA512",
    }
}

fn hex_len(algorithm: DigestAlgorithm) -> usize {
    match algorithm {
        DigestAlgorithm::Sha1 => 40,
        DigestAlgorithm::Sha256 => 64,
        DigestAlgorithm::Sha512 => 128,
    }
}

/// The manifest's text: one line per member, descriptor first.
fn manifest(plan: &PackagePlan<'_>, descriptor_digest: &str, disks: &[WrittenDisk]) -> String {
    manifest_text(
        plan.algorithm,
        &plan.descriptor_name,
        descriptor_digest,
        disks,
    )
}

/// A manifest in VMware's spelling: the descriptor's line, then one per disk.
pub(crate) fn manifest_text(
    algorithm: DigestAlgorithm,
    descriptor_name: &str,
    descriptor_digest: &str,
    disks: &[WrittenDisk],
) -> String {
    let tag = manifest_tag(algorithm);
    let mut text = format!("{tag}({descriptor_name})= {descriptor_digest}\n");
    for d in disks {
        text.push_str(&format!("{tag}({})= {}\n", d.member, d.digest));
    }
    text
}

/// The lowercase hex digest of `bytes`.
pub(crate) fn digest_of(algorithm: DigestAlgorithm, bytes: &[u8]) -> String {
    use sha1::Digest as _;
    let raw: Vec<u8> = match algorithm {
        DigestAlgorithm::Sha1 => sha1::Sha1::digest(bytes).to_vec(),
        DigestAlgorithm::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
        DigestAlgorithm::Sha512 => sha2::Sha512::digest(bytes).to_vec(),
    };
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// The disks with the widest values, to size the descriptor's place.
fn widest(plan: &PackagePlan<'_>) -> Vec<WrittenDisk> {
    plan.disks
        .iter()
        .map(|d| WrittenDisk {
            member: d.member.clone(),
            file_size: u64::MAX,
            capacity: u64::MAX,
            populated: u64::MAX,
            digest: "f".repeat(hex_len(plan.algorithm)),
        })
        .collect()
}

/// A region of a file, from `base`, written front to back: a disk's place in the package.
struct Region<'s> {
    inner: &'s mut dyn Sink,
    base: u64,
    name: PathBuf,
    /// Where the disk ends, once finished.
    end: Arc<Mutex<u64>>,
    written: u64,
}

impl Sink for Region<'_> {
    fn name(&self) -> &Path {
        &self.name
    }

    fn access(&self) -> Access {
        Access::Sequential
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        self.written = self.written.max(offset + buf.len() as u64);
        self.inner.write_at(buf, self.base + offset)
    }

    fn write_zeros(&mut self, offset: u64, len: u64) -> Result<()> {
        self.written = self.written.max(offset + len);
        self.inner.write_zeros(self.base + offset, len)
    }

    fn set_len(&mut self, len: u64) -> Result<()> {
        self.written = self.written.max(len);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        *self.end.lock().expect("end lock") = self.written;
        Ok(())
    }
}

/// Converts `disk` into `inner` from byte `base` on, through a hashing tee.
fn convert_hashed(
    disk: &PackageDisk,
    inner: &mut dyn Sink,
    base: u64,
    name: PathBuf,
    algorithm: DigestAlgorithm,
    progress: (u64, u64),
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<WrittenDisk> {
    let end = Arc::new(Mutex::new(0));
    let region = Region {
        inner,
        base,
        name,
        end: Arc::clone(&end),
        written: 0,
    };
    let (tee, digest) = HashingTee::new(Box::new(region), algorithm);
    let (before, total) = progress;
    let stats = convert_image(
        &disk.image,
        Output::single(Box::new(tee)),
        &disk.convert,
        &mut |e| match e {
            Event::Progress { done, .. } => on_event(Event::Progress {
                done: before + done,
                total,
            }),
            other => on_event(other),
        },
    )?;
    let file_size = *end.lock().expect("end lock");
    Ok(WrittenDisk {
        member: disk.member.clone(),
        file_size,
        capacity: disk.image.virtual_size(),
        populated: stats.data_bytes,
        digest: digest
            .get()
            .ok_or_else(|| Error::invalid("internal error: the disk's digest was not computed"))?,
    })
}

/// Writes the package `plan` to `dest` (`-` for standard output). Returns the disks as
/// written. Progress is reported over all the disks together.
pub fn write_ova(
    dest: &Path,
    plan: &PackagePlan<'_>,
    durability: Durability,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<WrittenDisk>> {
    if crate::convert::is_stdio(dest) {
        return write_to_stream(plan, on_event);
    }
    let mut staging = Staging::with_durability(durability);
    let file = staging.create(dest)?;
    let mut sink: Box<dyn Sink> = Box::new(FileSink::new_file(file, dest, durability));
    let descriptor_room =
        ((plan.descriptor)(&widest(plan))?.len() as u64 + 1024).next_multiple_of(BLOCK);
    let widest_manifest = manifest(plan, &"f".repeat(hex_len(plan.algorithm)), &widest(plan));
    let manifest_len = widest_manifest.len() as u64;
    let mut header_at = BLOCK + descriptor_room + BLOCK + manifest_len.next_multiple_of(BLOCK);
    let mut written = Vec::new();
    let total = total_size(plan);
    let mut before = 0;
    for disk in &plan.disks {
        let base = header_at + BLOCK;
        let name = PathBuf::from(format!("{}:{}", dest.display(), disk.member));
        let w = convert_hashed(
            disk,
            sink.as_mut(),
            base,
            name,
            plan.algorithm,
            (before, total),
            on_event,
        )?;
        before += disk.image.virtual_size();
        sink.write_at(
            &member_header(&disk.member, w.file_size, plan.mtime)?,
            header_at,
        )?;
        let padded = w.file_size.next_multiple_of(BLOCK);
        sink.write_zeros(base + w.file_size, padded - w.file_size)?;
        header_at = base + padded;
        written.push(w);
    }
    let mut descriptor = (plan.descriptor)(&written)?.into_bytes();
    if descriptor.len() as u64 > descriptor_room {
        return Err(Error::invalid(format!(
            "internal error: the descriptor ({} bytes) outgrew its room ({descriptor_room} bytes)",
            descriptor.len()
        )));
    }
    // Trailing whitespace after the root element is part of a well-formed XML document.
    descriptor.push(b'\n');
    descriptor.resize(descriptor_room as usize, b' ');
    descriptor[descriptor_room as usize - 1] = b'\n';
    let descriptor_digest = digest_of(plan.algorithm, &descriptor);
    let manifest = manifest(plan, &descriptor_digest, &written);
    if manifest.len() as u64 != manifest_len {
        return Err(Error::invalid(
            "internal error: the manifest's length changed between sizing and writing",
        ));
    }
    sink.write_at(
        &member_header(&plan.descriptor_name, descriptor_room, plan.mtime)?,
        0,
    )?;
    sink.write_at(&descriptor, BLOCK)?;
    let mf_at = BLOCK + descriptor_room;
    sink.write_at(
        &member_header(&plan.manifest_name, manifest_len, plan.mtime)?,
        mf_at,
    )?;
    sink.write_at(manifest.as_bytes(), mf_at + BLOCK)?;
    let mf_end = mf_at + BLOCK + manifest_len;
    sink.write_zeros(mf_end, mf_end.next_multiple_of(BLOCK) - mf_end)?;
    sink.write_zeros(header_at, 2 * BLOCK)?;
    sink.set_len(header_at + 2 * BLOCK)?;
    sink.finish()?;
    finish_checks(plan)?;
    staging.commit()?;
    Ok(written)
}

/// The sources' own checks (a package member's digest) before anything is committed.
fn finish_checks(plan: &PackagePlan<'_>) -> Result<()> {
    for d in &plan.disks {
        d.image.finish_checks()?;
    }
    Ok(())
}

fn total_size(plan: &PackagePlan<'_>) -> u64 {
    plan.disks.iter().map(|d| d.image.virtual_size()).sum()
}

/// To a pipe: every disk staged in an unnamed temporary file, then the tar streamed.
fn write_to_stream(
    plan: &PackagePlan<'_>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<WrittenDisk>> {
    let mut staged = Vec::new();
    let mut written = Vec::new();
    let total = total_size(plan);
    let mut before = 0;
    for disk in &plan.disks {
        let file = Arc::new(crate::staging::scratch_file(&std::env::temp_dir())?);
        let name = PathBuf::from(format!("-:{}", disk.member));
        let mut inner = FileSink::new_file(Arc::clone(&file), &name, Durability::Unsafe);
        let w = convert_hashed(
            disk,
            &mut inner,
            0,
            name,
            plan.algorithm,
            (before, total),
            on_event,
        )?;
        before += disk.image.virtual_size();
        Box::new(inner).finish()?;
        staged.push(file);
        written.push(w);
    }
    finish_checks(plan)?;
    let descriptor = (plan.descriptor)(&written)?;
    let descriptor_digest = digest_of(plan.algorithm, descriptor.as_bytes());
    let manifest = manifest(plan, &descriptor_digest, &written);
    let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    let mut tar = TarStream::new(Box::new(PipeSink::new(Box::new(out), "-")));
    for (name, bytes) in [
        (&plan.descriptor_name, descriptor.as_bytes()),
        (&plan.manifest_name, manifest.as_bytes()),
    ] {
        let mut m: Box<dyn Sink + '_> =
            Box::new(tar.member(name, bytes.len() as u64, plan.mtime)?);
        m.write_at(bytes, 0)?;
        m.finish()?;
    }
    let mut buf = vec![0u8; 1 << 20];
    for (file, w) in staged.iter().zip(&written) {
        let mut m: Box<dyn Sink + '_> = Box::new(tar.member(&w.member, w.file_size, plan.mtime)?);
        let mut pos = 0u64;
        while pos < w.file_size {
            let n = (w.file_size - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], pos)
                .map_err(|e| Error::io("cannot read a staged disk", e).with_path(&w.member))?;
            m.write_at(&buf[..n], pos)?;
            pos += n as u64;
        }
        m.finish()?;
    }
    tar.finish()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_are_vmware_spelled() {
        let digest = "a".repeat(64);
        let plan = PackagePlan {
            descriptor_name: "vm.ovf".into(),
            manifest_name: "vm.mf".into(),
            algorithm: DigestAlgorithm::Sha256,
            disks: Vec::new(),
            descriptor: &|_| Ok(String::new()),
            mtime: 0,
        };
        let disks = [WrittenDisk {
            member: "vm-disk1.vmdk".into(),
            file_size: 1,
            capacity: 1,
            populated: 1,
            digest: "b".repeat(64),
        }];
        let text = manifest(&plan, &digest, &disks);
        assert_eq!(
            text,
            format!(
                "SHA256(vm.ovf)= {digest}\nSHA256(vm-disk1.vmdk)= {}\n",
                "b".repeat(64)
            )
        );
    }
}
