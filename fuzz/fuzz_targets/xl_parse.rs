//! Any bytes as a Xen xl.cfg (a `migrate` source): reading fails with one error naming the
//! file, or gives a machine with one file per disk that serializes to JSON.
#![no_main]

use diskferry::vmconfig::xl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = xl::probe(data);
    match xl::parse(data, "fuzz.cfg") {
        Ok(c) => {
            assert_eq!(c.vm.disks.len(), c.disk_files.len());
            serde_json::to_string(&c.vm).expect("the model serializes");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("fuzz.cfg: "), "error without the name: {text}");
            assert_eq!(text.lines().count(), 1, "one line: {text}");
        }
    }
});
