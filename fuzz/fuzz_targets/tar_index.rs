//! Any bytes as a tar archive (an OVA or XVA) in memory: indexing fails cleanly or gives
//! members that lie inside the archive, with names that stay inside the package; every
//! regular member is then read through its window, as a manifest, as chunk parts and as a
//! gzip stream (bounded), alone and as chunk parts (`package::open_file`).
#![no_main]

use diskferry::package::{self, GzipStorage, Limits, Manifest, MemberKind, TarIndex};
use diskferry::storage::{Memory, Storage, StorageExt};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let storage: Arc<dyn Storage> = Arc::new(Memory::new("fuzz.ova", data.to_vec()));
    let limits = Limits {
        max_members: 4096,
        max_name_len: 4096,
        max_pax_len: 16 << 10,
    };
    let Ok(index) = TarIndex::read_with(storage, limits) else {
        return;
    };
    assert!(index.end() <= data.len() as u64);
    let mut previous_end = 0u64;
    for m in index.members() {
        assert!(m.offset.checked_add(m.size).unwrap() <= data.len() as u64);
        assert!(m.header_offset >= previous_end && m.offset >= m.header_offset + 512);
        previous_end = m.offset;
        assert!(!m.name.is_empty() && !m.name.starts_with('/') && !m.name.contains('\0'));
        assert!(!m.name.split(['/', '\\']).any(|c| c == ".."), "{}", m.name);
        assert!(std::ptr::eq(index.member(&m.name).unwrap(), m));
        match index.window(m) {
            Ok(w) => {
                assert_eq!(m.kind, MemberKind::File);
                assert_eq!(w.len(), m.size);
                let head = w.read_vec(0, m.size.min(64), "head").unwrap();
                let at = m.offset as usize;
                assert_eq!(&head[..], &data[at..at + head.len()]);
                let _ = Manifest::read(&w);
                let _ = package::manifest::parse_cert("fuzz.cert", &head);
                if head.starts_with(&[0x1f, 0x8b]) {
                    let _ = GzipStorage::inflate(&w, Some(1 << 20), None, "fuzz.gz");
                }
            }
            Err(_) => assert_ne!(m.kind, MemberKind::File),
        }
        // Every name as a chunked file's prefix (the parts' checks), with two chunk sizes.
        if let Some((href, _)) = m.name.rsplit_once('.') {
            for chunk in [1, 512] {
                if let Ok(c) = package::chunked(&index, href, chunk) {
                    if c.len() > 0 {
                        let _ = c.read_vec(c.len() - 1, 1, "last").unwrap();
                    }
                    // The same parts as one gzip stream, as an OVF File element names them.
                    let gz = c.len() >= 2 && c.read_vec(0, 2, "magic").unwrap() == [0x1f, 0x8b];
                    if gz {
                        let file = package::FileRef {
                            href,
                            chunk_size: Some(chunk),
                            compression: Some("gzip"),
                            inflate_limit: Some(1 << 20),
                        };
                        let _ = package::open_file(&index, &file, None);
                    }
                }
            }
        }
    }
});
