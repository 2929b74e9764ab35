//! QCOW2 (and QCOW version 1) images diskferry writes, judged by peers: identical to their
//! source by `qemu-img compare`, clean by `qemu-img check` (no leaks, no corruptions), read the
//! same by qemu-img, libyal and dissect, with their options shown by `qemu-img info`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const CLUSTER_SIZES: [u64; 13] = [
    512,
    1 << 10,
    2 << 10,
    4 << 10,
    8 << 10,
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
];

/// The size of the test disk: not a whole number of sectors (an odd tail).
const SIZE: u64 = (5 << 20) + 1234;

/// A sparse raw source: compressible data across cluster and L2-table boundaries, data that
/// does not compress, zero runs between and inside data, and data in the odd tail.
fn source(dir: &Path) -> PathBuf {
    let raw = dir.join("src.raw");
    make_raw(&raw, SIZE, &[]);
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog; "
        .iter()
        .cycle()
        .take(300_000)
        .copied()
        .collect();
    f.write_all_at(&text, 0).unwrap();
    // A zero run inside the data.
    f.write_all_at(&[0u8; 70_000], 100_000).unwrap();
    f.write_all_at(&pseudo_random(200_000, 7), (1 << 20) + 4096)
        .unwrap();
    f.write_all_at(&text[..150_000], 3 << 20).unwrap();
    f.write_all_at(&text[..5000], SIZE - 5000).unwrap();
    raw
}

/// The source's content as qcow2 holds it: padded with zeros to a whole sector.
fn padded_sha(raw: &Path) -> (u64, String) {
    use sha2::{Digest, Sha256};
    let mut bytes = std::fs::read(raw).unwrap();
    bytes.resize(bytes.len().next_multiple_of(512), 0);
    (bytes.len() as u64, hex::encode(Sha256::digest(&bytes)))
}

fn convert(args: &[&str], raw: &Path, out: &Path) {
    let mut all = vec!["convert"];
    all.extend_from_slice(args);
    all.extend([raw.to_str().unwrap(), out.to_str().unwrap()]);
    run_ok(&all);
}

fn assert_clean(image: &Path, what: &str) {
    let (code, out, err) = qemu_img(&["check", "-f", "qcow2", image.to_str().unwrap()]);
    assert_eq!(code, 0, "{what}: qemu-img check: {out}{err}");
    assert!(out.contains("No errors were found"), "{what}: {out}");
}

fn assert_same(raw: &Path, image: &Path, what: &str) {
    assert!(
        qemu_compare("raw", raw, "qcow2", image),
        "{what}: qemu-img compare says the content differs"
    );
}

/// Every option combination, at every cluster size, checked by qemu-img.
#[test]
fn every_option_at_every_cluster_size_is_identical_and_clean() {
    let test = "every_option_at_every_cluster_size_is_identical_and_clean";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = source(dir.path());
    let combos: &[(&str, &str, bool)] = &[
        ("plain", "", false),
        ("zlib", "", true),
        ("zstd", "compression_type=zstd", true),
        ("v2", "compat=0.10", false),
        ("v2-compressed", "compat=0.10", true),
        ("refcount-1", "refcount_bits=1", true),
        ("refcount-2", "refcount_bits=2", false),
        ("refcount-64", "refcount_bits=64", true),
        ("lazy", "lazy_refcounts=on", false),
        ("extended", "extended_l2=on", false),
        (
            "extended-compressed",
            "extended_l2=on,compression_type=zstd",
            true,
        ),
        ("metadata", "preallocation=metadata", false),
        ("falloc", "preallocation=falloc", false),
        ("full", "preallocation=full", false),
        ("data-file", "data_file=DIR/data.bin", false),
        (
            "data-file-raw",
            "data_file=DIR/data.bin,data_file_raw=on",
            false,
        ),
    ];
    let dir_name = dir.path().to_str().unwrap();
    for &cluster in &CLUSTER_SIZES {
        for &(name, opts, compress) in combos {
            if opts.contains("extended_l2") && cluster < 16 << 10 {
                continue;
            }
            let what = format!("{name} with {cluster}-byte clusters");
            let out = dir.path().join(format!("{name}-{cluster}.qcow2"));
            let o = if opts.is_empty() {
                format!("cluster_size={cluster}")
            } else {
                format!("cluster_size={cluster},{}", opts.replace("DIR", dir_name))
            };
            let mut args = vec!["-O", "qcow2", "-o", &o];
            if compress {
                args.push("-c");
            }
            convert(&args, &raw, &out);
            assert_clean(&out, &what);
            assert_same(&raw, &out, &what);
            if name == "data-file-raw" {
                // The data file alone is the disk.
                let data = dir.path().join("data.bin");
                assert!(qemu_compare("raw", &raw, "raw", &data), "{what}: data file");
            }
            std::fs::remove_file(&out).unwrap();
            let _ = std::fs::remove_file(dir.path().join("data.bin"));
        }
    }
}

/// The independent readers (libqcow cannot read compressed clusters and knows neither zstd nor
/// extended L2 entries; dissect reads none of the latter either, even qemu-img's own).
#[test]
fn independent_readers_read_what_was_written() {
    let test = "independent_readers_read_what_was_written";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = source(dir.path());
    let want = padded_sha(&raw);
    for cluster in [512u64, 4 << 10, 64 << 10, 2 << 20] {
        for (name, opts, compress) in [
            ("plain", "", false),
            ("zlib", "", true),
            ("zstd", ",compression_type=zstd", true),
            ("v2", ",compat=0.10", false),
            ("v2-compressed", ",compat=0.10", true),
        ] {
            let what = format!("{name} with {cluster}-byte clusters");
            let out = dir.path().join(format!("{name}-{cluster}.qcow2"));
            let o = format!("cluster_size={cluster}{opts}");
            let mut args = vec!["-O", "qcow2", "-o", &o];
            if compress {
                args.push("-c");
            }
            convert(&args, &raw, &out);
            let Some(readings) = oracle_read(test, "qcow2", &out) else {
                return;
            };
            for r in &readings {
                match (r.reader.as_str(), &r.result) {
                    (_, Ok(got)) => assert_eq!(got, &want, "{what}: {} read otherwise", r.reader),
                    ("libyal", Err(e)) if compress && e == "n/a" => {}
                    (reader, Err(e)) => panic!("{what}: {reader} could not read it: {e}"),
                }
            }
            assert!(
                readings.iter().any(|r| r.reader == "dissect"),
                "{what}: dissect did not answer"
            );
        }
    }
}

fn info_json(image: &Path) -> serde_json::Value {
    let out = qemu_img_ok(&["info", "--output", "json", image.to_str().unwrap()]);
    serde_json::from_str(&out).unwrap()
}

/// `create` with each option, then qemu-img info shows it.
#[test]
fn created_images_show_their_options_in_qemu_img_info() {
    let test = "created_images_show_their_options_in_qemu_img_info";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    make_raw(&base, 3 << 20, &[(0, 100_000)]);
    let cases: &[(&str, &[(&str, serde_json::Value)])] = &[
        (
            "",
            &[
                ("compat", "1.1".into()),
                ("compression-type", "zlib".into()),
                ("refcount-bits", 16.into()),
                ("lazy-refcounts", false.into()),
                ("extended-l2", false.into()),
            ],
        ),
        ("compat=0.10", &[("compat", "0.10".into())]),
        ("compat=1.1", &[("compat", "1.1".into())]),
        ("lazy_refcounts=on", &[("lazy-refcounts", true.into())]),
        ("refcount_bits=1", &[("refcount-bits", 1.into())]),
        ("refcount_bits=64", &[("refcount-bits", 64.into())]),
        ("extended_l2=on", &[("extended-l2", true.into())]),
        (
            "compression_type=zstd",
            &[("compression-type", "zstd".into())],
        ),
        ("data_file=DIR/d.raw", &[("data-file", "DIR/d.raw".into())]),
        (
            "data_file=DIR/d.raw,data_file_raw=on",
            &[("data-file-raw", true.into())],
        ),
        ("preallocation=metadata", &[]),
        ("preallocation=falloc", &[]),
        ("preallocation=full", &[]),
        ("cluster_size=512", &[]),
        ("cluster_size=2M", &[]),
    ];
    let dir_name = dir.path().to_str().unwrap();
    for (opts, want) in cases {
        let opts = &opts.replace("DIR", dir_name);
        let img = dir.path().join("c.qcow2");
        let _ = std::fs::remove_file(&img);
        let mut args = vec!["create", "-f", "qcow2"];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        args.extend([img.to_str().unwrap(), "3M"]);
        run_ok(&args);
        assert_clean(&img, opts);
        let info = info_json(&img);
        assert_eq!(info["virtual-size"], 3 << 20, "{opts}: {info}");
        if let Some(cs) = opts.strip_prefix("cluster_size=") {
            let bytes = if cs == "2M" { 2 << 20 } else { 512 };
            assert_eq!(info["cluster-size"], bytes, "{opts}: {info}");
        }
        let data = &info["format-specific"]["data"];
        for (key, value) in *want {
            let value = match value.as_str() {
                Some(v) => v.replace("DIR", dir_name).into(),
                None => value.clone(),
            };
            assert_eq!(data[*key], value, "{opts}: {key} in {info}");
        }
        let zeros = dir.path().join("zeros.raw");
        make_raw(&zeros, 3 << 20, &[]);
        assert_same(&zeros, &img, opts);
        if opts.starts_with("preallocation") {
            // Every cluster is allocated.
            let map = qemu_img_ok(&["map", "--output", "json", img.to_str().unwrap()]);
            assert!(!map.contains("\"data\": false"), "{opts}: {map}");
        }
        let _ = std::fs::remove_file(dir.path().join("d.raw"));
    }
    // Backing files: -b -F and -o backing_file, the name stored as given.
    for args in [
        vec!["-b", "base.raw", "-F", "raw"],
        vec!["-o", "backing_file=base.raw,backing_fmt=raw"],
    ] {
        let img = dir.path().join("child.qcow2");
        let _ = std::fs::remove_file(&img);
        let mut all = vec!["create", "-f", "qcow2"];
        all.extend(args.iter().copied());
        all.extend([img.to_str().unwrap(), "3M"]);
        run_ok(&all);
        assert_clean(&img, "child");
        let info = info_json(&img);
        assert_eq!(info["backing-filename"], "base.raw", "{info}");
        assert_eq!(info["backing-filename-format"], "raw", "{info}");
        assert!(
            qemu_compare("raw", &base, "qcow2", &img),
            "{args:?}: the child does not read as its backing file"
        );
    }
}

/// `convert -B` keeps only what differs from the backing file; qemu-img reads through it.
#[test]
fn differencing_images_read_through_their_backing_file() {
    let test = "differencing_images_read_through_their_backing_file";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = source(dir.path());
    let modified = dir.path().join("mod.raw");
    std::fs::copy(&base, &modified).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&modified)
            .unwrap();
        f.write_all_at(b"changed", 10).unwrap();
        // Zeros over the backing file's data, and new data where it has none.
        f.write_all_at(&[0u8; 300_000], (1 << 20) + 4096).unwrap();
        f.write_all_at(&pseudo_random(50_000, 9), 4 << 20).unwrap();
    }
    for (opts, compress) in [
        ("", false),
        ("", true),
        ("compat=0.10", false),
        ("compat=0.10", true),
        ("cluster_size=512", true),
        ("extended_l2=on", false),
        ("extended_l2=on,preallocation=metadata", false),
        ("compression_type=zstd", true),
    ] {
        let what = format!("-B with [{opts}] -c {compress}");
        let top = dir.path().join("top.qcow2");
        let _ = std::fs::remove_file(&top);
        let mut args = vec!["-O", "qcow2", "-B", "src.raw", "-F", "raw"];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        if compress {
            args.push("-c");
        }
        convert(&args, &modified, &top);
        assert_clean(&top, &what);
        assert_same(&modified, &top, &what);
        let info = info_json(&top);
        assert_eq!(info["backing-filename"], "src.raw", "{what}: {info}");
        assert_eq!(info["backing-filename-format"], "raw", "{what}: {info}");
        if !opts.contains("preallocation") {
            // Smaller than the whole disk: what the backing file holds is not copied.
            let alone = dir.path().join("alone.qcow2");
            let _ = std::fs::remove_file(&alone);
            let mut args = vec!["-O", "qcow2"];
            if !opts.is_empty() {
                args.extend(["-o", opts]);
            }
            if compress {
                args.push("-c");
            }
            convert(&args, &modified, &alone);
            let (a, b) = (
                std::fs::metadata(&top).unwrap().len(),
                std::fs::metadata(&alone).unwrap().len(),
            );
            assert!(a <= b, "{what}: {a} bytes, more than {b} without -B");
        }
    }
}

fn convert_to_stdout(args: &[&str], raw: &Path, out: &Path) -> (i32, String) {
    let file = std::fs::File::create(out).unwrap();
    let mut all = vec!["convert"];
    all.extend_from_slice(args);
    all.extend([raw.to_str().unwrap(), "-"]);
    let o = diskferry()
        .args(&all)
        .current_dir(raw.parent().unwrap())
        .stdout(Stdio::from(file))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `convert -O qcow2 SRC -` writes the image front to back to standard output.
#[test]
fn images_written_to_stdout_read_back() {
    let test = "images_written_to_stdout_read_back";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = source(dir.path());
    // A large sparse disk too: data far apart, each with its own tables.
    let sparse = dir.path().join("sparse.raw");
    make_raw(
        &sparse,
        (3 << 30) + 512,
        &[(0, 1 << 20), (1 << 30, 70_000), ((3 << 30) - 4096, 4608)],
    );
    for (src, opts) in [
        (&raw, ""),
        (&raw, "cluster_size=512"),
        (&raw, "cluster_size=2M"),
        (&raw, "compat=0.10"),
        (&raw, "refcount_bits=1,cluster_size=4k"),
        (&raw, "extended_l2=on"),
        (&raw, "preallocation=metadata"),
        (&raw, "preallocation=full,cluster_size=1k"),
        (&sparse, ""),
        (&sparse, "cluster_size=4k,refcount_bits=64"),
    ] {
        let what = format!("{} [{opts}] to stdout", src.display());
        let out = dir.path().join("piped.qcow2");
        let mut args = vec!["-O", "qcow2"];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        let (code, err) = convert_to_stdout(&args, src, &out);
        assert_eq!(code, 0, "{what}: {err}");
        assert_clean(&out, &what);
        assert_same(src, &out, &what);
    }
    // Over a backing file.
    let out = dir.path().join("piped-child.qcow2");
    let (code, err) = convert_to_stdout(&["-O", "qcow2", "-B", "src.raw", "-F", "raw"], &raw, &out);
    assert_eq!(code, 0, "{err}");
    // The child was written elsewhere: its backing file is named relative to the source's
    // folder, where it is read from.
    assert_clean(&out, "-B to stdout");
    assert_same(&raw, &out, "-B to stdout");
    // Compressed: made in a temporary file, then copied out.
    for opts in ["cluster_size=64k", "compression_type=zstd,cluster_size=4k"] {
        let out = dir.path().join("piped-compressed.qcow2");
        let (code, err) = convert_to_stdout(&["-c", "-O", "qcow2", "-o", opts], &raw, &out);
        assert_eq!(code, 0, "{err}");
        assert_clean(&out, "-c to stdout");
        assert_same(&raw, &out, "-c to stdout");
    }
}

/// Options that cannot go together are refused before anything is written, as qemu-img
/// refuses them.
#[test]
fn impossible_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = source(dir.path());
    for (opts, compress, words) in [
        ("compat=0.10,lazy_refcounts=on", false, "compat=1.1"),
        ("compat=0.10,refcount_bits=1", false, "compat=1.1"),
        ("compat=0.10,extended_l2=on", false, "compat=1.1"),
        ("compat=0.10,compression_type=zstd", true, "compat=1.1"),
        ("extended_l2=on,cluster_size=8k", false, "16K"),
        ("cluster_size=4M", false, "2M"),
        ("cluster_size=3k", false, "power of two"),
        ("refcount_bits=3", false, "power of two"),
        ("preallocation=full", true, "preallocation"),
        ("data_file=d.raw", true, "data_file"),
        ("data_file_raw=on", false, "needs data_file"),
    ] {
        let out = dir.path().join("x.qcow2");
        let mut args = vec!["convert", "-O", "qcow2", "-o", opts];
        if compress {
            args.push("-c");
        }
        args.extend([raw.to_str().unwrap(), out.to_str().unwrap()]);
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{opts} was accepted");
        assert!(err.contains(words), "{opts}: {err}");
        assert!(!out.exists(), "{opts}: a file was left");
    }
}

/// The header and its extensions must fit in one cluster with the backing file's name.
#[test]
fn a_backing_name_too_long_for_the_first_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = "d".repeat(200);
    std::fs::create_dir(dir.path().join(&folder)).unwrap();
    let name = format!("{folder}/{}.raw", "b".repeat(200));
    let base = dir.path().join(&name);
    make_raw(&base, 1 << 20, &[]);
    let img = dir.path().join("c.qcow2");
    let (code, _, err) = run(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512",
        "-b",
        &name,
        "-F",
        "raw",
        img.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("more than one cluster"), "{err}");
    run_ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=1k",
        "-b",
        &name,
        "-F",
        "raw",
        img.to_str().unwrap(),
    ]);
    if have_qemu("a_backing_name_too_long_for_the_first_cluster_is_refused") {
        assert_clean(&img, "long backing name");
    }
}

/// QCOW version 1, with and without -c, over a backing file too: qemu-img reads it as its
/// source.
#[test]
fn qcow_version_1_reads_as_its_source() {
    let test = "qcow_version_1_reads_as_its_source";
    if !have_qemu(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = source(dir.path());
    let modified = dir.path().join("mod.raw");
    std::fs::copy(&raw, &modified).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&modified)
            .unwrap();
        f.write_all_at(&[0u8; 100_000], 0).unwrap();
        f.write_all_at(b"new", 4 << 20).unwrap();
    }
    for compress in [false, true] {
        let out = dir.path().join(format!("v1-{compress}.qcow"));
        let mut args = vec!["-O", "qcow"];
        if compress {
            args.push("-c");
        }
        convert(&args, &raw, &out);
        assert!(
            qemu_compare("raw", &raw, "qcow", &out),
            "qcow -c {compress} differs"
        );
        let info = info_json(&out);
        assert_eq!(info["format"], "qcow", "{info}");
        let child = dir.path().join(format!("v1-child-{compress}.qcow"));
        args.extend(["-B", "src.raw", "-F", "raw"]);
        convert(&args, &modified, &child);
        assert!(
            qemu_compare("raw", &modified, "qcow", &child),
            "qcow -B -c {compress} differs"
        );
        assert_eq!(info_json(&child)["backing-filename"], "src.raw");
    }
    if compress_shrinks(
        &dir.path().join("v1-true.qcow"),
        &dir.path().join("v1-false.qcow"),
    ) {
        return;
    }
    panic!("qcow -c is not smaller than without");
}

fn compress_shrinks(compressed: &Path, plain: &Path) -> bool {
    std::fs::metadata(compressed).unwrap().len() < std::fs::metadata(plain).unwrap().len()
}
