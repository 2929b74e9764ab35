//! Any bytes as a libvirt domain XML (a `migrate` source): reading fails with one error naming
//! the file, or gives a machine whose disks and files agree and that serializes to JSON.
#![no_main]

use diskferry::vmconfig::libvirt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = libvirt::probe(data);
    match libvirt::parse_domain(data, "fuzz.xml") {
        Ok(d) => {
            assert_eq!(d.vm.disks.len(), d.disk_files.len());
            serde_json::to_string(&d.vm).expect("the model serializes");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("fuzz.xml"), "error without the name: {text}");
        }
    }
});
