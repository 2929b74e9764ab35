//! Any bytes as an OVF descriptor: parsing fails with one error or gives a descriptor whose
//! references all resolve, whose numbers are in bounds, and that serializes to JSON.
#![no_main]

use diskferry::ovf;
use diskferry::vm::DiskSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let d = match ovf::parse(data, "fuzz.ovf") {
        Ok(d) => d,
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("fuzz.ovf"), "error without the name: {text}");
            return;
        }
    };
    for disk in &d.disks {
        if let Some(f) = &disk.file_ref {
            assert!(d.files.iter().any(|x| &x.id == f), "dangling fileRef {f}");
        }
        assert!(disk.capacity.is_none_or(|c| c <= ovf::MAX_CAPACITY));
    }
    for disk in &d.vm.disks {
        if let DiskSource::PackageFile { href, .. } = &disk.source {
            assert!(d.files.iter().any(|x| &x.href == href), "disk names unknown {href}");
            assert!(!href.split('/').any(|c| c == ".."), "escaping href {href}");
        }
        assert!(disk.capacity_bytes.is_none_or(|c| c <= ovf::MAX_CAPACITY));
    }
    assert!(d.vm.memory_bytes <= ovf::MAX_CAPACITY);
    let json = serde_json::to_string(&d).expect("serializes");
    // Deterministic: the same bytes give the same description.
    let again = ovf::parse(data, "fuzz.ovf").expect("parses twice");
    assert_eq!(serde_json::to_string(&again).unwrap(), json);
});
