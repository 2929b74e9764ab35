//! Persistent dirty bitmaps as qemu itself loads them: qemu-storage-daemon's QMP
//! `query-named-block-nodes` (name, granularity, recording, dirty count) and
//! `x-debug-block-dirty-bitmap-sha256` (a digest of the bits), for tests that judge bitmaps
//! written by diskferry against qemu-img's (`convert --bitmaps`, `bitmap`).

use super::{have_qemu, qemu_img_ok, s, skip};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// True when qemu-img, qemu-io and qemu-storage-daemon are all there (else a skip line).
pub fn peers(test: &str) -> bool {
    if !have_qemu(test) {
        return false;
    }
    for tool in ["qemu-io", "qemu-storage-daemon"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            skip(
                test,
                &format!("{tool} is not installed (apt-get install qemu-utils)"),
            );
            return false;
        }
    }
    true
}

/// One bitmap as qemu loads it: name, granularity, recording (enabled), dirty bytes and the
/// digest of its bits.
#[derive(Debug, PartialEq, Eq)]
pub struct Loaded {
    pub name: String,
    pub granularity: u64,
    pub recording: bool,
    pub count: u64,
    pub sha256: String,
}

/// The bitmaps of the qcow2 `img` as qemu-storage-daemon loads them, sorted by name.
pub fn loaded_bitmaps(img: &Path) -> Vec<Loaded> {
    let file = format!(
        "driver=file,filename={},node-name=f,read-only=on",
        img.display()
    );
    let mut child = Command::new("qemu-storage-daemon")
        .args([
            "--blockdev",
            &file,
            "--blockdev",
            "driver=qcow2,file=f,node-name=n,read-only=on",
            "--chardev",
            "stdio,id=m",
            "--monitor",
            "chardev=m",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-storage-daemon runs");
    // A daemon that stops early (an image it cannot open) says why on stderr, shown below.
    let query = |out: &mut dyn Write, cmd: &str| {
        let _ = writeln!(out, "{cmd}");
    };
    let mut stdin = child.stdin.take().unwrap();
    query(&mut stdin, r#"{"execute":"qmp_capabilities"}"#);
    query(
        &mut stdin,
        r#"{"execute":"query-named-block-nodes","arguments":{"flat":true}}"#,
    );
    // The names come from qemu-img info, which reads the same directory.
    let info: Value =
        serde_json::from_str(&qemu_img_ok(&["info", "--output=json", s(img)])).unwrap();
    let names: Vec<String> = info["format-specific"]["data"]["bitmaps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    for name in &names {
        query(
            &mut stdin,
            &serde_json::json!({"execute": "x-debug-block-dirty-bitmap-sha256",
                "arguments": {"node": "n", "name": name}})
            .to_string(),
        );
    }
    query(&mut stdin, r#"{"execute":"quit"}"#);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let replies: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("return").is_some() || v.get("error").is_some())
        .collect();
    assert!(
        replies.iter().all(|r| r.get("error").is_none()),
        "qemu-storage-daemon on {}: {replies:?} {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // qmp_capabilities, query-named-block-nodes, one digest per name, quit.
    assert_eq!(replies.len(), names.len() + 3, "{replies:?}");
    let nodes = replies[1]["return"].as_array().unwrap();
    let node = nodes.iter().find(|n| n["node-name"] == "n").unwrap();
    let dirty = node["dirty-bitmaps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut loaded: Vec<Loaded> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let d = dirty
                .iter()
                .find(|d| d["name"] == name.as_str())
                .unwrap_or_else(|| panic!("{name} not loaded: {dirty:?}"));
            assert_eq!(d["persistent"], true, "{d}");
            assert_eq!(d["inconsistent"], Value::Null, "{d}");
            Loaded {
                name: name.clone(),
                granularity: d["granularity"].as_u64().unwrap(),
                recording: d["recording"].as_bool().unwrap(),
                count: d["count"].as_u64().unwrap(),
                sha256: replies[2 + i]["return"]["sha256"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            }
        })
        .collect();
    loaded.sort_by(|a, b| a.name.cmp(&b.name));
    loaded
}

/// The bitmaps `qemu-img info --output=json` lists (`null` when none).
pub fn info_bitmaps(img: &Path) -> Value {
    let info: Value =
        serde_json::from_str(&qemu_img_ok(&["info", "--output=json", s(img)])).unwrap();
    info["format-specific"]["data"]["bitmaps"].clone()
}
