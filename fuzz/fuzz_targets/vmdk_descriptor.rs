//! Any bytes as a VMDK text descriptor: parsing fails cleanly or gives a descriptor that
//! survives a round trip through the text we write.
#![no_main]

use diskferry::formats::vmdk::descriptor::Descriptor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = Descriptor::parse(data) else {
        return;
    };
    let _ = d.total_bytes();
    let _ = d.ddb_value("ddb.adapterType");
    let text = d.to_text();
    let again = Descriptor::parse(text.as_bytes()).expect("our own text parses");
    assert_eq!(again.extents.len(), d.extents.len());
    for (a, b) in d.extents.iter().zip(&again.extents) {
        assert_eq!((a.kind, a.sectors, &a.file), (b.kind, b.sectors, &b.file));
    }
    assert_eq!((again.cid, again.parent_cid), (d.cid, d.parent_cid));
});
