//! Any bytes as a Hyper-V configuration (XML version 5, or a binary .vmcx when the bytes start
//! with its signature; the first byte chooses, so both parsers get every input): reading
//! fails with one error naming the file, or gives a machine whose disks and files agree and
//! that serializes.
#![no_main]

use diskferry::vmconfig::hyperv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hyperv::probe(data);
    let owned;
    let bytes = match data.split_first() {
        // Odd first byte: the input is a .vmcx body behind its signature.
        Some((b, rest)) if b & 1 == 1 => {
            owned = [&hyperv::vmcx::SIGNATURE[..], rest].concat();
            &owned[..]
        }
        _ => data,
    };
    match hyperv::parse(bytes, "fuzz.vmcx") {
        Ok(c) => {
            assert_eq!(c.vm.disks.len(), c.disk_files.len());
            serde_json::to_string(&c.vm).expect("the model serializes");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("fuzz.vmcx"), "error without the name: {text}");
            assert_eq!(text.lines().count(), 1, "{text}");
        }
    }
});
