//! Reading stream-optimized VMDKs front to back (from a pipe): diskferry's own files,
//! qemu-img's (no footer, no end-of-stream marker) and VMware's, through the public
//! `open_stream`, fed by a plain `Read`.

mod common;
mod vmdk_build;

use common::*;
use diskferry::formats::vmdk::open_stream;
use diskferry::stream::StreamPayload;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Reassembles the disk a stream holds; returns (size, sha256).
fn read_stream(reader: Box<dyn Read + Send>) -> diskferry::Result<(u64, String)> {
    let mut source = open_stream(reader)?;
    let size = source.virtual_size();
    let mut h = Sha256::new();
    let mut pos = 0u64;
    let zeros = vec![0u8; 1 << 20];
    let feed_zeros = |h: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            h.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    while let Some(run) = source.next_run()? {
        assert!(run.offset >= pos && run.len > 0 && run.len <= 16 << 20);
        feed_zeros(&mut h, run.offset - pos);
        let bytes = match run.payload {
            StreamPayload::Plain(b) => b,
            StreamPayload::Encoded { bytes, decoder } => {
                let mut out = vec![0u8; run.len as usize];
                decoder.decode(&bytes, &mut out)?;
                out
            }
        };
        assert_eq!(bytes.len() as u64, run.len);
        h.update(&bytes);
        pos = run.offset + run.len;
    }
    feed_zeros(&mut h, size - pos);
    Ok((size, hex::encode(h.finalize())))
}

fn file_reader(path: &Path) -> Box<dyn Read + Send> {
    Box::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()))
}

#[test]
fn our_stream_files_read_back_from_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("r.raw");
    make_raw(
        &raw,
        (40 << 20) + 1536,
        &[(0, 1 << 20), (33 << 20, 70_000), ((40 << 20) - 512, 2048)],
    );
    let image = dir.path().join("s.vmdk");
    run_ok(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        raw.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    let got = read_stream(file_reader(&image)).unwrap();
    assert_eq!(
        got,
        (
            std::fs::metadata(&raw).unwrap().len().div_ceil(512) * 512,
            sha256_file(&raw)
        )
    );
}

#[test]
fn qemu_and_vmware_stream_files_read_from_a_pipe() {
    let test = "qemu_and_vmware_stream_files_read_from_a_pipe";
    let dir = tempfile::tempdir().unwrap();
    if have_qemu(test) {
        let raw = dir.path().join("r.raw");
        make_raw(&raw, 20 << 20, &[(0, 1 << 20), (9 << 20, 300_000)]);
        let image = dir.path().join("q.vmdk");
        qemu_img_ok(&[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            raw.to_str().unwrap(),
            image.to_str().unwrap(),
        ]);
        assert_eq!(
            read_stream(file_reader(&image)).unwrap(),
            (20 << 20, sha256_file(&raw))
        );
    }
    let Some(shared) = shared_dir(test) else {
        return;
    };
    let mut checked = 0;
    for row in manifest(&shared) {
        if !row.format.contains("streamOptimized") || row.raw_sha256.is_none() {
            continue;
        }
        let image = corpus_file(&shared, &row.path, dir.path());
        let got = read_stream(file_reader(&image)).unwrap_or_else(|e| panic!("{}: {e}", row.path));
        assert_eq!(Some(got.1), row.raw_sha256, "{}", row.path);
        checked += 1;
    }
    // A manifest without its stream files would otherwise pass this part with nothing read.
    assert!(
        checked >= 5,
        "only {checked} stream-optimized corpus files were read"
    );
}

#[test]
fn streams_that_cannot_be_read_front_to_back_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Not stream-optimized.
    let raw = dir.path().join("r.raw");
    make_raw(&raw, 1 << 20, &[(0, 4096)]);
    let sparse = dir.path().join("m.vmdk");
    run_ok(&[
        "convert",
        "-O",
        "vmdk",
        raw.to_str().unwrap(),
        sparse.to_str().unwrap(),
    ]);
    let err = read_stream(file_reader(&sparse)).unwrap_err().to_string();
    assert!(err.contains("not stream-optimized"), "{err}");
    let err = read_stream(file_reader(&raw)).unwrap_err().to_string();
    assert!(err.contains("not a sparse VMDK"), "{err}");
    // Grains out of order.
    let g = |lba: u64| vmdk_build::RawGrain {
        lba,
        payload: vmdk_build::zlib(&vec![lba as u8 + 1; 65536]),
    };
    let backwards = vmdk_build::stream_vmdk(1024, &[g(256), g(0)]);
    let err = read_stream(Box::new(std::io::Cursor::new(backwards.clone())))
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of order"), "{err}");
    // ... which the file reader handles fine.
    let f = dir.path().join("backwards.vmdk");
    std::fs::write(&f, &backwards).unwrap();
    run_ok(&[
        "convert",
        "-O",
        "raw",
        f.to_str().unwrap(),
        dir.path().join("b.raw").to_str().unwrap(),
    ]);
    // Truncated inside a grain.
    let cut = vmdk_build::stream_vmdk(1024, &[g(0), g(256)]);
    let err = read_stream(Box::new(std::io::Cursor::new(
        cut[..3 * 512 + 700].to_vec(),
    )))
    .unwrap_err()
    .to_string();
    assert!(err.contains("ends"), "{err}");
    // A grain that inflates too far.
    let big = vmdk_build::stream_vmdk(
        1024,
        &[vmdk_build::RawGrain {
            lba: 0,
            payload: vmdk_build::zlib(&vec![1u8; 200_000]),
        }],
    );
    let err = read_stream(Box::new(std::io::Cursor::new(big)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than one grain"), "{err}");
}
