//! Any bytes as a Virtual PC / Virtual Server .vmc (a `migrate` source): reading fails with one
//! error naming the file, or gives a machine whose disks and files agree, that serializes, and
//! whose disk candidates are plain names.
#![no_main]

use diskferry::vmconfig::vmc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmc::probe(data);
    match vmc::parse(data, "fuzz.vmc") {
        Ok(c) => {
            assert_eq!(c.vm.disks.len(), c.disk_files.len());
            for i in 0..c.disk_files.len() {
                for name in vmc::read::disk_candidates(&c, i) {
                    assert!(!name.is_empty());
                }
            }
            serde_json::to_string(&c.vm).expect("the model serializes");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("fuzz.vmc"), "error without the name: {text}");
            assert_eq!(text.lines().count(), 1, "{text}");
        }
    }
});
