//! Any bytes as a VirtualBox machine settings file (a `migrate` source): reading fails with
//! one error naming the file, or gives a machine whose disks and files agree; that machine,
//! written back as a .vbox, reads again with the same name and devices.
#![no_main]

use diskferry::vmconfig::vbox::{probe, read, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = probe(data);
    match read::parse(data, "fuzz.vbox") {
        Ok(c) => {
            assert_eq!(c.vm.disks.len(), c.disk_files.len());
            serde_json::to_string(&c.vm).expect("the model serializes");
            let media: Vec<write::Medium> = (0..c.vm.disks.len())
                .map(|i| write::Medium {
                    uuid: uuid::Uuid::from_u128(i as u128 + 1),
                    location: format!("d{i}.vdi"),
                })
                .collect();
            if let Ok((xml, _)) = write::settings_file(&c.vm, &media) {
                let back = read::parse(xml.as_bytes(), "back.vbox").expect("our .vbox reads");
                assert_eq!(back.vm.name, c.vm.name.trim());
                assert_eq!(back.vm.disks.len(), c.vm.disks.len());
                assert_eq!(back.vm.cdroms.len(), c.vm.cdroms.len());
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("fuzz.vbox"), "error without the name: {text}");
        }
    }
});
