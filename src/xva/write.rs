//! Writing an XVA, front to back, so it can go to a pipe as well as to a file.
//!
//! `ova.xml` comes first (everything in it is known before any disk is read), then each disk
//! as 1 MiB chunk members `<vdi>/<8-digit number>`, each followed by its checksum member
//! (`.xxhash`, XXH64, by default; `.checksum`, SHA-1, for hosts older than XenServer 8.1).
//! All-zero chunks are left out except a disk's first and last, which XAPI's importer
//! requires; the last chunk is short when the disk is not a whole number of MiB. Every
//! member's size is known before its header, so nothing is ever sought back to.
//!
//! The disks go through the conversion engine: its workers read the source, find the zero
//! chunks and hash the others (the checksum is the engine's "encoding" of a chunk), and the
//! ordered writer turns them into tar members. With `compress=gzip|zstd` the whole tar goes
//! through the compressor on its way out.

use super::disk::CHUNK;
use super::ova_xml_write::{DiskRecord, Layout, ova_xml};
use crate::convert::{ConvertOptions, Event, convert_with_writer};
use crate::error::{Error, Result};
use crate::host_file::Durability;
use crate::image::Image;
use crate::sink::{PipeSink, Sink, TarStream};
use crate::staging::Staging;
use crate::vm::Vm;
use crate::writer::{ChunkEncoder, ImageWriter, Piece};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which checksum follows each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkChecksum {
    /// `.xxhash`: XXH64, 16 uppercase hex digits (XenServer 8.1+, XCP-ng 8.1+, Xen Orchestra).
    #[default]
    Xxh64,
    /// `.checksum`: SHA-1, 40 lowercase hex digits (every XAPI).
    Sha1,
}

impl ChunkChecksum {
    fn extension(self) -> &'static str {
        match self {
            ChunkChecksum::Xxh64 => "xxhash",
            ChunkChecksum::Sha1 => "checksum",
        }
    }

    /// The checksum member's text for `data`.
    fn text(self, data: &[u8]) -> String {
        use sha1::Digest as _;
        match self {
            ChunkChecksum::Xxh64 => format!("{:016X}", xxhash_rust::xxh64::xxh64(data, 0)),
            ChunkChecksum::Sha1 => sha1::Sha1::digest(data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    fn text_len(self) -> usize {
        match self {
            ChunkChecksum::Xxh64 => 16,
            ChunkChecksum::Sha1 => 40,
        }
    }
}

/// How the whole file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XvaCompression {
    /// A plain tar (what `xe vm-export` writes by default).
    #[default]
    None,
    /// gzip (`xe vm-export compress=true`).
    Gzip,
    /// zstd (`xe vm-export compress=zstd`, XenServer 8+).
    Zstd,
}

/// The XVA writer's `-o` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XvaOptions {
    /// `checksum=xxhash|sha1`.
    pub checksum: ChunkChecksum,
    /// `compress=none|gzip|zstd`.
    pub compression: XvaCompression,
}

impl XvaOptions {
    /// Parses `-o` text (`checksum=sha1,compress=zstd`); an unknown key or value is an error
    /// naming the known ones.
    pub fn parse(text: &str) -> Result<XvaOptions> {
        let mut o = XvaOptions::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "-o '{item}' for an XVA is not key=value; XVA options: checksum=xxhash|sha1, compress=none|gzip|zstd"
                ))
            })?;
            match (key.trim(), value.trim()) {
                ("checksum", "xxhash" | "xxh64") => o.checksum = ChunkChecksum::Xxh64,
                ("checksum", "sha1") => o.checksum = ChunkChecksum::Sha1,
                ("compress", "none" | "off") => o.compression = XvaCompression::None,
                ("compress", "gzip" | "true") => o.compression = XvaCompression::Gzip,
                ("compress", "zstd") => o.compression = XvaCompression::Zstd,
                ("checksum", v) => {
                    return Err(Error::invalid(format!(
                        "-o checksum={v}: an XVA's chunks carry checksum=xxhash (XenServer 8.1+) or checksum=sha1"
                    )));
                }
                ("compress", v) => {
                    return Err(Error::invalid(format!(
                        "-o compress={v}: an XVA is compress=none, gzip or zstd"
                    )));
                }
                (k, _) => {
                    return Err(Error::invalid(format!(
                        "unknown -o option '{k}' for an XVA; XVA options: checksum=xxhash|sha1, compress=none|gzip|zstd"
                    )));
                }
            }
        }
        Ok(o)
    }
}

/// One disk to write.
pub struct XvaDiskSource {
    /// The disk, opened.
    pub image: Arc<Image>,
    /// Its name (the VDI's name_label).
    pub name: String,
}

/// Hashes each 1 MiB chunk on the engine's workers: the "encoding" of a granule is the
/// checksum text of each chunk it holds, one after the other.
struct ChunkHasher(ChunkChecksum);

impl ChunkEncoder for ChunkHasher {
    fn encode(&self, _offset: u64, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        for chunk in data.chunks(CHUNK as usize) {
            out.extend_from_slice(self.0.text(chunk).as_bytes());
        }
        Ok(())
    }
}

/// Turns the engine's ordered pieces of one disk into chunk members.
struct ChunkWriter<'t, 'a> {
    tar: &'t mut TarStream<'a>,
    prefix: String,
    size: u64,
    checksum: ChunkChecksum,
    mtime: u64,
    /// Chunks written.
    chunks: u64,
}

impl ChunkWriter<'_, '_> {
    fn member(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut m: Box<dyn Sink + '_> =
            Box::new(self.tar.member(name, bytes.len() as u64, self.mtime)?);
        m.write_at(bytes, 0)?;
        m.finish()
    }

    /// Writes chunk `number` holding `bytes` with its checksum `sum`.
    fn chunk(&mut self, number: u64, bytes: &[u8], sum: &[u8]) -> Result<()> {
        let name = format!("{}/{number:08}", self.prefix);
        self.member(&name, bytes)?;
        self.member(&format!("{name}.{}", self.checksum.extension()), sum)?;
        self.chunks += 1;
        Ok(())
    }

    /// Writes chunk `number`, which reads as zeros.
    fn zero_chunk(&mut self, number: u64) -> Result<()> {
        let len = (self.size - number * CHUNK).min(CHUNK) as usize;
        let zeros = vec![0u8; len];
        let sum = self.checksum.text(&zeros);
        self.chunk(number, &zeros, sum.as_bytes())
    }

    fn last_number(&self) -> u64 {
        self.size.div_ceil(CHUNK) - 1
    }
}

impl ImageWriter for ChunkWriter<'_, '_> {
    fn granularity(&self) -> u64 {
        CHUNK
    }

    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        Some(Arc::new(ChunkHasher(self.checksum)))
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        match piece {
            Piece::Data { bytes, encoded } => {
                let Some(sums) = encoded else {
                    return Err(Error::invalid(
                        "internal error: a data chunk reached the XVA writer unhashed",
                    ));
                };
                let w = self.checksum.text_len();
                for (i, chunk) in bytes.chunks(CHUNK as usize).enumerate() {
                    let sum = sums.get(i * w..(i + 1) * w).ok_or_else(|| {
                        Error::invalid("internal error: a chunk's checksum is missing")
                    })?;
                    self.chunk(offset / CHUNK + i as u64, chunk, sum)?;
                }
                Ok(())
            }
            Piece::Zero(len) | Piece::Unallocated(len) => {
                if len == 0 || self.size == 0 {
                    return Ok(());
                }
                // XAPI's importer needs the first chunk and the last; the zeros in between
                // are left out and read back as zeros.
                let first = offset / CHUNK;
                let last = (offset + len - 1) / CHUNK;
                if first == 0 {
                    self.zero_chunk(0)?;
                }
                if last == self.last_number() && last != 0 {
                    self.zero_chunk(last)?;
                }
                Ok(())
            }
            Piece::Placed(_) => Err(Error::invalid(
                "internal error: the XVA writer takes no placed data",
            )),
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// The output stream, compressed or not; `finish` ends the compressed stream.
enum Out<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Out<W> {
    fn new(inner: W, compression: XvaCompression) -> Result<Out<W>> {
        Ok(match compression {
            XvaCompression::None => Out::Plain(inner),
            XvaCompression::Gzip => Out::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::fast(),
            )),
            XvaCompression::Zstd => Out::Zstd(
                zstd::stream::write::Encoder::new(inner, 3)
                    .map_err(|e| Error::io("cannot start zstd", e))?,
            ),
        })
    }

    fn finish(self) -> std::io::Result<W> {
        match self {
            Out::Plain(w) => Ok(w),
            Out::Gzip(g) => g.finish(),
            Out::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Out<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::Plain(w) => w.write(buf),
            Out::Gzip(g) => g.write(buf),
            Out::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Plain(w) => w.flush(),
            Out::Gzip(g) => g.flush(),
            Out::Zstd(z) => z.flush(),
        }
    }
}

/// A shared file written front to back.
struct FileWriter(Arc<std::fs::File>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

/// What [`write_xva`] wrote.
#[derive(Debug, Clone, Default)]
pub struct XvaWritten {
    /// What XAPI cannot be told about the VM.
    pub warnings: Vec<String>,
    /// Each disk's VDI id and the number of chunks written for it.
    pub disks: Vec<(String, u64)>,
}

/// How to write an XVA.
#[derive(Debug, Clone)]
pub struct XvaSettings {
    /// The `-o` options.
    pub options: XvaOptions,
    /// The engine's settings for each disk (its threads and `-S`; the format is not used).
    pub convert: ConvertOptions,
    /// Whether the file is flushed before it is renamed into place.
    pub durability: Durability,
    /// The members' modification time and the export's date (seconds since 1970).
    pub mtime: u64,
}

/// Writes `vm` with its disks `disks` (in `vm.disks` order) as an XVA at `dest` (`-` for
/// standard output). A file appears only when complete.
pub fn write_xva(
    dest: &Path,
    vm: &Vm,
    disks: &[XvaDiskSource],
    settings: &XvaSettings,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<XvaWritten> {
    let XvaSettings {
        options,
        convert,
        durability,
        mtime,
    } = settings;
    let (durability, mtime) = (*durability, *mtime);
    if vm.disks.len() != disks.len() {
        return Err(Error::invalid(format!(
            "internal error: the machine lists {} disks but {} were given",
            vm.disks.len(),
            disks.len()
        )));
    }
    let layout = Layout::new(disks.len(), vm.cdroms.len(), vm.nics.len());
    let records: Vec<DiskRecord> = disks
        .iter()
        .zip(&layout.vdis)
        .map(|(d, id)| DiskRecord {
            vdi: id.clone(),
            virtual_size: d.image.virtual_size(),
            name: d.name.clone(),
        })
        .collect();
    let (xml, warnings) = ova_xml(vm, &layout, &records, &iso_date(mtime));
    let mut staging = Staging::with_durability(durability);
    let (inner, name): (Box<dyn Write + Send>, PathBuf) = if crate::convert::is_stdio(dest) {
        (Box::new(std::io::stdout()), PathBuf::from("-"))
    } else {
        let file = staging.create(dest)?;
        (Box::new(FileWriter(file)), dest.to_path_buf())
    };
    let buffered = std::io::BufWriter::with_capacity(1 << 20, inner);
    let mut out = Out::new(buffered, options.compression).map_err(|e| e.with_path(&name))?;
    let mut written = XvaWritten {
        warnings,
        disks: Vec::new(),
    };
    {
        let sink = PipeSink::new(Box::new(&mut out), name.clone());
        let mut tar = TarStream::new(Box::new(sink));
        {
            let mut m: Box<dyn Sink + '_> =
                Box::new(tar.member("ova.xml", xml.len() as u64, mtime)?);
            m.write_at(xml.as_bytes(), 0)?;
            m.finish()?;
        }
        let total: u64 = disks.iter().map(|d| d.image.virtual_size()).sum();
        let mut before = 0;
        for (d, rec) in disks.iter().zip(&records) {
            let mut chunks = 0;
            {
                let writer = ChunkWriter {
                    tar: &mut tar,
                    prefix: rec.vdi.clone(),
                    size: rec.virtual_size,
                    checksum: options.checksum,
                    mtime,
                    chunks: 0,
                };
                let counted = Counted {
                    inner: writer,
                    chunks: &mut chunks,
                };
                convert_with_writer(&d.image, Box::new(counted), convert, &mut |e| match e {
                    Event::Progress { done, .. } => on_event(Event::Progress {
                        done: before + done,
                        total,
                    }),
                    other => on_event(other),
                })
                .map_err(|e| e.with_path(&name))?;
            }
            before += rec.virtual_size;
            written.disks.push((rec.vdi.clone(), chunks));
        }
        tar.finish()?;
    }
    for d in disks {
        d.image.finish_checks()?;
    }
    let buffered = out
        .finish()
        .map_err(|e| Error::io("cannot finish the compressed stream", e).with_path(&name))?;
    buffered
        .into_inner()
        .map_err(|e| Error::io("cannot write", e.into_error()).with_path(&name))?
        .flush()
        .map_err(|e| Error::io("cannot write", e).with_path(&name))?;
    staging.commit()?;
    Ok(written)
}

/// A chunk writer that reports how many chunks it wrote when finished.
struct Counted<'c, 't, 'a> {
    inner: ChunkWriter<'t, 'a>,
    chunks: &'c mut u64,
}

impl ImageWriter for Counted<'_, '_, '_> {
    fn granularity(&self) -> u64 {
        self.inner.granularity()
    }

    fn encoder(&self) -> Option<Arc<dyn ChunkEncoder>> {
        self.inner.encoder()
    }

    fn write(&mut self, offset: u64, piece: Piece<'_>) -> Result<()> {
        self.inner.write(offset, piece)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        *self.chunks = self.inner.chunks;
        Ok(())
    }
}

/// `mtime` as XAPI writes the export date (`20260102T03:04:05Z`).
fn iso_date(mtime: u64) -> String {
    let days = (mtime / 86400) as i64;
    let secs = mtime % 86400;
    // Civil from days (Howard Hinnant's algorithm), for a date without a time crate.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_refuse_unknown_keys() {
        assert_eq!(XvaOptions::parse("").unwrap(), XvaOptions::default());
        let o = XvaOptions::parse("checksum=sha1,compress=zstd").unwrap();
        assert_eq!(o.checksum, ChunkChecksum::Sha1);
        assert_eq!(o.compression, XvaCompression::Zstd);
        let e = XvaOptions::parse("subformat=dynamic")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown -o option 'subformat'"), "{e}");
        assert!(XvaOptions::parse("checksum=md5").is_err());
        assert!(XvaOptions::parse("compress").is_err());
    }

    #[test]
    fn dates_are_xapi_spelled() {
        assert_eq!(iso_date(0), "19700101T00:00:00Z");
        assert_eq!(iso_date(1_767_323_045), "20260102T03:04:05Z");
    }

    #[test]
    fn checksum_texts() {
        assert_eq!(ChunkChecksum::Xxh64.text(b""), "EF46DB3751D8E999");
        assert_eq!(
            ChunkChecksum::Sha1.text(b""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }
}
