//! Any bytes as an OVF manifest and as a certificate file: parsing fails cleanly, or gives
//! entries whose digests have their algorithm's length and that survive a round trip through
//! the canonical spelling `ALG(file)= hex`.
#![no_main]

use diskferry::package::{Manifest, manifest};
use diskferry::storage::Memory;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = manifest::parse_cert("fuzz.cert", data);
    let Ok(m) = Manifest::parse("fuzz.mf", data) else {
        return;
    };
    let mut text = String::new();
    for e in &m.entries {
        assert_eq!(e.digest.len(), e.algorithm.digest_len());
        assert!(!e.file.is_empty());
        let hex: String = e.digest.iter().map(|b| format!("{b:02X}")).collect();
        text.push_str(&format!("{}({})= {hex}\r\n", e.algorithm, e.file));
    }
    let again = Manifest::parse("fuzz.mf", text.as_bytes()).expect("our own spelling parses");
    assert_eq!(again.entries.len(), m.entries.len());
    for (a, b) in m.entries.iter().zip(&again.entries) {
        assert_eq!(
            (&a.file, a.algorithm, &a.digest),
            (&b.file, b.algorithm, &b.digest)
        );
    }
    // Verifying a small storage against the first entry: a mismatch is an error, never a panic.
    if let Some(e) = m.entries.first() {
        let content = Memory::new("fuzz.member", data.to_vec());
        let _ = m.verify_entry(e, &content);
    }
});
