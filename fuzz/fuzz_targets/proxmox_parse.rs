//! Any bytes as a Proxmox VE VM configuration (a `migrate` source): reading fails with one
//! error naming the file and its line, or gives a machine with one volume per disk that
//! serializes to JSON.
#![no_main]

use diskferry::vmconfig::proxmox;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = proxmox::probe(data);
    match proxmox::parse(data, "fuzz.conf") {
        Ok(c) => {
            assert_eq!(c.vm.disks.len(), c.volumes.len());
            serde_json::to_string(&c.vm).expect("the model serializes");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("fuzz.conf: line "), "error without the name and line: {text}");
            assert_eq!(text.lines().count(), 1, "one line: {text}");
        }
    }
});
