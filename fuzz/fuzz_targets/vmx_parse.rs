//! Any bytes as a VMware .vmx (a `migrate` source): reading fails with one error naming the
//! file and a line, or gives a machine whose disks and files agree; that machine written for
//! Workstation and for ESXi reads back with the same devices (the writer maps what VMware
//! lacks), so hostile configurations cannot make the writer emit a file we cannot read.
#![no_main]

use diskferry::vmconfig::vmx::{self, hwversion::Product, layout, write};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = vmx::parse::probe(data);
    match vmx::read_vmx(data, Path::new("fuzz.vmx")) {
        Ok(c) => {
            assert_eq!(c.vm.disks.len(), c.disk_files.len());
            serde_json::to_string(&c.vm).expect("the model serializes");
            for product in [Product::Hosted, Product::Esxi] {
                // Only a machine of more than 244 drives has no layout.
                let Ok(l) = layout::layout(&c.vm) else {
                    assert!(c.vm.disks.len() + c.vm.cdroms.len() > 244);
                    continue;
                };
                let files: Vec<String> =
                    (1..=c.vm.disks.len()).map(|i| format!("d{i}.vmdk")).collect();
                let (text, _) = write::vmx_text(&c.vm, &files, &l, product);
                let back = vmx::read_vmx(text.as_bytes(), Path::new("out.vmx"))
                    .unwrap_or_else(|e| panic!("our own .vmx does not read back: {e}\n{text}"));
                assert_eq!(back.vm.disks.len(), c.vm.disks.len(), "{text}");
                assert_eq!(back.vm.nics.len(), c.vm.nics.len(), "{text}");
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("fuzz.vmx"), "error without the name: {text}");
            assert!(text.contains("line "), "error without a line: {text}");
        }
    }
});
