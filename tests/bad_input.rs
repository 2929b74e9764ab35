//! Bad input: one clear line on stderr naming the problem, exit 1 (2 for compare), no panic,
//! nothing left at the destination. Interrupted conversions leave no destination either.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs diskferry expecting failure: checks the exit code, that stderr is exactly one line
/// starting with "diskferry: " and containing every `needles`, and that stdout is empty.
fn assert_fails(args: &[&str], code: i32, needles: &[&str]) -> String {
    let (got, out, err) = run(args);
    assert_eq!(got, code, "diskferry {args:?}: stderr {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("diskferry: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} does not mention {n:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.is_empty(), "stdout: {out}");
    err
}

/// Nothing at all in `dir` but the files listed (no output, no temporary leftovers).
fn assert_only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want);
}

#[test]
fn a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.img");
    let out = dir.path().join("out.raw");
    assert_fails(
        &["convert", s(&missing), s(&out)],
        1,
        &["nope.img", "No such file"],
    );
    assert_fails(&["info", s(&missing)], 1, &["nope.img"]);
    assert_fails(&["map", s(&missing)], 1, &["nope.img"]);
    assert_fails(&["check", s(&missing)], 1, &["nope.img"]);
    assert_fails(&["compare", s(&missing), s(&missing)], 2, &["nope.img"]);
    assert_only(dir.path(), &[]);
}

#[test]
fn a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.raw");
    assert_fails(&["convert", s(dir.path()), s(&out)], 1, &["is a directory"]);
    assert_fails(&["info", s(dir.path())], 1, &["is a directory"]);
    assert_only(dir.path(), &[]);
    // A directory as the destination.
    let src = dir.path().join("src.raw");
    make_raw(&src, 1 << 20, &[(0, 512)]);
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert_fails(&["convert", s(&src), s(&sub)], 1, &["directory"]);
    assert_only(dir.path(), &["src.raw", "sub"]);
    assert_only(&sub, &[]);
}

#[test]
fn an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("secret.raw");
    make_raw(&src, 1 << 20, &[(0, 512)]);
    let out = dir.path().join("out.raw");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything; drop to nobody when we are root so the test means something.
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    let (code, stdout, err) = if is_root {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let o = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_diskferry"))
            .args(["convert", s(&src), s(&out)])
            .output();
        match o {
            Ok(o) => decode(o),
            Err(e) => {
                skip(
                    "an_unreadable_file",
                    &format!("running as root and setpriv failed: {e}"),
                );
                return;
            }
        }
    } else {
        run(&["convert", s(&src), s(&out)])
    };
    if is_root && err.contains("setpriv") {
        skip(
            "an_unreadable_file",
            &format!("setpriv could not drop privileges: {err}"),
        );
        return;
    }
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("secret.raw") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(stdout.is_empty());
    assert_only(dir.path(), &["secret.raw"]);
}

#[test]
fn an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let out = dir.path().join("out.raw");
    assert_fails(&["convert", s(&empty), s(&out)], 1, &["empty.img", "empty"]);
    assert_fails(&["info", s(&empty)], 1, &["empty.img", "empty"]);
    assert_only(dir.path(), &["empty.img"]);
    // Told it is raw, an empty file is a zero-byte disk, as qemu-img sees it.
    run_ok(&["convert", "-f", "raw", s(&empty), s(&out)]);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
}

#[test]
fn an_unknown_format_name() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_raw(&src, 1 << 20, &[(0, 512)]);
    let out = dir.path().join("out.img");
    assert_fails(
        &["convert", "-O", "foo", s(&src), s(&out)],
        1,
        &["unknown format 'foo'", "vmdk"],
    );
    assert_fails(
        &["convert", "-f", "bar", s(&src), s(&out)],
        1,
        &["unknown format 'bar'"],
    );
    assert_fails(
        &["create", "-f", "foo", s(&out), "1M"],
        1,
        &["unknown format 'foo'"],
    );
    assert_fails(
        &["compare", "-f", "foo", s(&src), s(&src)],
        2,
        &["unknown format 'foo'"],
    );
    assert_only(dir.path(), &["src.raw"]);
}

#[test]
fn an_unknown_option_key_lists_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_raw(&src, 1 << 20, &[(0, 512)]);
    let out = dir.path().join("out.raw");
    assert_fails(
        &["convert", "-o", "bogus=1", s(&src), s(&out)],
        1,
        &["unknown option 'bogus'", "preallocation"],
    );
    assert_fails(
        &["create", "-f", "raw", "-o", "bogus=1", s(&out), "1M"],
        1,
        &["unknown option 'bogus'", "preallocation"],
    );
    assert_fails(
        &[
            "create",
            "-f",
            "raw",
            "-o",
            "preallocation=lots",
            s(&out),
            "1M",
        ],
        1,
        &["off, falloc, full"],
    );
    assert_only(dir.path(), &["src.raw"]);
    let help = run_ok(&["create", "-f", "raw", "-o", "help", s(&out), "1M"]);
    assert!(help.contains("preallocation"), "{help}");
    assert_only(dir.path(), &["src.raw"]);
}

#[test]
fn a_destination_in_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_raw(&src, 1 << 20, &[(0, 512)]);
    let out = dir.path().join("no/such/dir/out.raw");
    assert_fails(
        &["convert", s(&src), s(&out)],
        1,
        &["does not exist", "out.raw"],
    );
    assert_fails(&["create", s(&out), "1M"], 1, &["does not exist"]);
    assert_only(dir.path(), &["src.raw"]);
}

#[test]
fn a_destination_equal_to_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_raw(&src, 1 << 20, &[(0, 4096)]);
    let before = sha256_file(&src);
    assert_fails(
        &["convert", s(&src), s(&src)],
        1,
        &["same file as the source"],
    );
    // The same file under another name is still the same file.
    let alias = dir.path().join("alias.raw");
    std::fs::hard_link(&src, &alias).unwrap();
    assert_fails(
        &["convert", s(&src), s(&alias)],
        1,
        &["same file as the source"],
    );
    let dotted = format!("{}/./src.raw", dir.path().display());
    assert_fails(
        &["convert", s(&src), &dotted],
        1,
        &["same file as the source"],
    );
    assert_eq!(sha256_file(&src), before);
    assert_only(dir.path(), &["alias.raw", "src.raw"]);
}

#[test]
fn bad_sizes_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.raw");
    assert_fails(&["create", s(&out), "12X"], 1, &["invalid size '12X'"]);
    assert_fails(&["create", s(&out)], 1, &["no size given"]);
    let src = dir.path().join("src.raw");
    make_raw(&src, 1 << 20, &[(0, 512)]);
    assert_fails(
        &["convert", "-S", "100", s(&src), s(&out)],
        1,
        &["not a multiple of 512"],
    );
    assert_fails(&["convert", "-m", "0", s(&src), s(&out)], 1, &["-m"]);
    let (code, _, err) = run(&["convert", s(&src)]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = run(&["compare", s(&src)]);
    assert_eq!(code, 2);
    assert_only(dir.path(), &["src.raw"]);
}

/// A convert stopped by a signal midway leaves nothing behind: no destination and, where the
/// file system has `O_TMPFILE` (the output is written without a name until complete), no
/// partial file either, even after SIGKILL. Elsewhere the caught signals remove the hidden
/// temporary file and SIGKILL, which cannot be caught, may leave it, but never the destination.
///
/// Every signal must really arrive mid-copy: the convert is frozen with SIGSTOP once it has
/// written part of its output (and not all of it), given the signal, and let go with SIGCONT,
/// so the signal is pending while the copy is unfinished. Should the copy still win (it
/// exits 0), the attempt is repeated with a larger source; a signal that can never be caught
/// mid-copy fails the test rather than skipping it.
#[test]
fn killing_a_convert_midway_leaves_nothing_behind() {
    let test = "killing_a_convert_midway_leaves_nothing_behind";
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.raw");
    // Non-zero data, so every byte is read and written; grown when a copy outruns a signal.
    let chunk = pseudo_random(16 << 20, 3);
    let mut src_len = 0u64;
    let grow_source_to = |src_len: &mut u64, target: u64| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&src)
            .unwrap();
        while *src_len < target {
            f.write_all(&chunk).unwrap();
            *src_len += chunk.len() as u64;
        }
    };
    grow_source_to(&mut src_len, 256 << 20);
    let unnamed_files = rustix::fs::open(
        dir.path(),
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .is_ok();
    if !unnamed_files {
        note_weaker(
            test,
            "the temporary folder's file system has no O_TMPFILE: SIGKILL may leave a hidden partial file",
        );
    }
    let started = Instant::now();
    // Every signal is tried, and every failure reported together.
    let mut problems = Vec::new();
    for signal in ["INT", "TERM", "HUP", "QUIT", "USR1", "KILL"] {
        let out = dir.path().join(format!("out-{signal}.raw"));
        let mut outcome = None;
        for attempt in 1..=3 {
            let mut child = diskferry()
                .args(["convert", "-m", "1", s(&src), s(&out)])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id().to_string();
            let send = |sig: &str| {
                let ok = std::process::Command::new("kill")
                    .args([&format!("-{sig}"), &pid])
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "kill -{sig} {pid} failed");
            };
            // Wait until part of the output is written, then freeze the copy.
            let wait_start = Instant::now();
            while written_bytes(child.id()).is_some_and(|w| w < 8 << 20) {
                assert!(
                    wait_start.elapsed() < Duration::from_secs(30),
                    "{signal}: the convert wrote nothing in 30 s"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            send("STOP");
            let written = written_bytes(child.id());
            let delivered =
                child.try_wait().unwrap().is_none() && written.is_some_and(|w| w < src_len);
            if delivered {
                send(signal);
            }
            send("CONT");
            let output = child.wait_with_output().unwrap();
            let status = output.status;
            let err = String::from_utf8_lossy(&output.stderr).into_owned();
            if status.success() {
                // The copy finished before the signal was sent or handled: more to copy.
                eprintln!(
                    "{test}: {signal} attempt {attempt}: the copy of {src_len} bytes finished first; retrying with a larger source"
                );
                std::fs::remove_file(&out).unwrap();
                let bigger = src_len * 2;
                grow_source_to(&mut src_len, bigger);
                continue;
            }
            if !delivered {
                outcome = Some(Err(format!(
                    "{signal}: the convert failed on its own before the signal ({status}): {err}"
                )));
                break;
            }
            outcome = Some(check_interrupted(
                dir.path(),
                &out,
                signal,
                status,
                &err,
                unnamed_files,
            ));
            break;
        }
        match outcome {
            Some(Ok(())) => {}
            Some(Err(problem)) => problems.push(problem),
            None => problems.push(format!(
                "{signal}: the copy finished before the signal in every attempt (source grown to {src_len} bytes); the signal was never tested"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the signal tests took {:?}",
        started.elapsed()
    );
}

/// What a convert stopped by `signal` mid-copy must leave: exit status 130 after a caught
/// signal (death by the signal for SIGKILL), no destination, and nothing else beside the
/// source (except, without `O_TMPFILE`, the hidden file SIGKILL cannot clean up).
fn check_interrupted(
    dir: &Path,
    out: &Path,
    signal: &str,
    status: std::process::ExitStatus,
    err: &str,
    unnamed_files: bool,
) -> Result<(), String> {
    use std::os::unix::process::ExitStatusExt;
    let mut problems = Vec::new();
    if signal == "KILL" {
        if status.signal() != Some(9) {
            problems.push(format!("KILL: ended with {status}: {err}"));
        }
    } else if status.code() != Some(130) {
        problems.push(format!(
            "{signal}: a caught signal must end the convert with exit status 130, got {status}; stderr: {err:?}"
        ));
    }
    if out.exists() {
        problems.push(format!("{signal}: the destination exists after the signal"));
    }
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "big.raw")
        .collect();
    if (signal != "KILL" || unnamed_files) && !left.is_empty() {
        problems.push(format!("{signal}: left behind: {left:?}"));
    }
    for name in left {
        let _ = std::fs::remove_file(dir.join(name));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Bytes a live process has written (`wchar` in /proc/PID/io); `None` once it has gone.
fn written_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Formats diskferry recognises but does not read (other hypervisors' disks, encrypted
/// volumes, archives) are refused by name instead of being taken as raw by elimination, which
/// would convert their headers and compressed bytes as disk data; `-f raw` still copies them.
#[test]
fn formats_diskferry_does_not_read_are_named_not_taken_as_raw() {
    let Some(shared) = shared_dir("formats_diskferry_does_not_read_are_named_not_taken_as_raw")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("unpacked");
    std::fs::create_dir(&scratch).unwrap();
    let mut cases: Vec<(std::path::PathBuf, &str)> = Vec::new();
    // Real files from the corpus, made by the tools of those formats (two of each kind).
    for (kind, says) in [
        ("DMG (UDIF)", "Apple disk image (DMG"),
        ("Parallels (WithoutFreeSpace)", "Parallels disk"),
        ("Parallels (WithouFreSpacExt)", "Parallels disk"),
        ("cloop", "cloop"),
        ("Bochs", "Bochs"),
        ("Apple sparseimage", "Apple sparse image"),
        ("Apple ASIF", "Apple sparse image (ASIF)"),
    ] {
        // Files stored as they are first (some packed copies unpack to hundreds of MB).
        let mut rows: Vec<_> = manifest(&shared)
            .into_iter()
            .filter(|r| r.format == kind && !r.malformed)
            .collect();
        rows.sort_by_key(|r| r.path.ends_with(".gz") || r.path.ends_with(".bz2"));
        rows.truncate(2);
        assert!(!rows.is_empty(), "no {kind} in the corpus");
        for r in rows {
            cases.push((corpus_file(&shared, &r.path, &scratch), says));
        }
    }
    // Compressed files and archives made by Python's own libraries, and the headers of a LUKS
    // volume and a QED image (cryptsetup and qemu-img put these magics first).
    let py = r#"
import bz2, gzip, lzma, sys, tarfile, zipfile, io, os
d = sys.argv[1]
data = bytes(range(256)) * 4096
open(os.path.join(d, 'disk.raw.gz'), 'wb').write(gzip.compress(data))
open(os.path.join(d, 'disk.raw.bz2'), 'wb').write(bz2.compress(data))
open(os.path.join(d, 'disk.raw.xz'), 'wb').write(lzma.compress(data))
with zipfile.ZipFile(os.path.join(d, 'disk.zip'), 'w') as z: z.writestr('disk.raw', data)
with tarfile.open(os.path.join(d, 'disk.tar'), 'w', format=tarfile.USTAR_FORMAT) as t:
    info = tarfile.TarInfo('disk.raw'); info.size = len(data); t.addfile(info, io.BytesIO(data))
open(os.path.join(d, 'luks.img'), 'wb').write(b'LUKS\xba\xbe\x00\x02' + bytes(4088) + data)
open(os.path.join(d, 'disk.qed'), 'wb').write(b'QED\x00' + bytes(4092) + data)
"#;
    let made = std::process::Command::new("python3")
        .args(["-c", py, s(dir.path())])
        .status()
        .unwrap();
    assert!(made.success());
    for (name, says) in [
        ("disk.raw.gz", "gzip-compressed"),
        ("disk.raw.bz2", "bzip2-compressed"),
        ("disk.raw.xz", "xz-compressed"),
        ("disk.zip", "zip archive"),
        // The OVA probe takes every tar and says what it holds.
        ("disk.tar", "so not an OVA; it holds: 'disk.raw'"),
        ("luks.img", "LUKS encrypted volume"),
        ("disk.qed", "QED image"),
    ] {
        cases.push((dir.path().join(name), says));
    }
    let out = dir.path().join("out.qcow2");
    for (file, says) in &cases {
        let name = file.file_name().unwrap().to_str().unwrap();
        let err = assert_fails(&["info", s(file)], 1, &[name, says]);
        assert!(err.contains("-f raw") || name == "disk.tar", "{err}");
        assert_fails(
            &["convert", "-O", "qcow2", s(file), s(&out)],
            1,
            &[name, says],
        );
        assert!(!out.exists(), "{name}");
        // Said outright, the bytes are a raw disk, as qemu-img -f raw takes them.
        let info = run_ok(&["info", "--output=json", "-f", "raw", s(file)]);
        assert!(info.contains("\"format\": \"raw\""), "{name}: {info}");
    }
    // The same from a pipe, where the refusal names standard input.
    let gz = std::fs::read(dir.path().join("disk.raw.gz")).unwrap();
    let mut child = diskferry()
        .args(["convert", "-O", "qcow2", "-", s(&out)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let _ = child.stdin.take().unwrap().write_all(&gz);
    let (code, _, err) = decode(child.wait_with_output().unwrap());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("<stdin>") && err.contains("gzip-compressed"),
        "{err}"
    );
    assert!(!out.exists());
}
