//! Any bytes as an XVA in memory: a tar whose ova.xml is parsed into the VM model and whose
//! disks are assembled from their chunks. Opening fails cleanly or gives disks whose stored
//! runs lie inside the disk; every disk is then read (bounded: its stored runs, and the whole
//! disk when small), each chunk's checksum verified on the way, and `info` is computed.
//! Input that begins with `<` is also parsed as ova.xml alone, and the VM it describes written
//! back as ova.xml and read again. A legacy export's disks (gzip chunks) are inflated when
//! they are small.
#![no_main]

use diskferry::storage::{Memory, Storage};
use diskferry::xva::ova_xml_write::{DiskRecord, Layout, ova_xml};
use diskferry::xva::{self, Compression, ExportKind, XvaPackage};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"<") {
        if let Ok(d) = xva::ova_xml::parse(data, "fuzz.xml") {
            assert_eq!(d.vm.disks.len(), d.disks.len());
            // What the writer makes of any VM the reader accepts reads back as the same
            // machine: the writer escapes whatever text came in.
            let layout = Layout::new(d.disks.len(), d.vm.cdroms.len(), d.vm.nics.len());
            let records: Vec<DiskRecord> = d
                .disks
                .iter()
                .zip(&layout.vdis)
                .map(|(x, id)| DiskRecord {
                    vdi: id.clone(),
                    virtual_size: x.virtual_size,
                    name: x.name.clone().unwrap_or_default(),
                })
                .collect();
            let (xml, _) = ova_xml(&d.vm, &layout, &records, "19700101T00:00:00Z");
            let back = xva::ova_xml::parse(xml.as_bytes(), "written.xml")
                .expect("diskferry reads the ova.xml it writes");
            assert_eq!(back.disks.len(), d.disks.len());
            assert_eq!(back.vm.nics.len(), d.vm.nics.len());
            assert_eq!(back.vm.cpus.count, d.vm.cpus.count.max(1));
            for (a, b) in back.disks.iter().zip(&d.disks) {
                assert_eq!(a.virtual_size, b.virtual_size);
            }
        }
        return;
    }
    let storage: Arc<dyn Storage> = Arc::new(Memory::new("fuzz.xva", data.to_vec()));
    let _ = xva::probe(storage.as_ref());
    let Ok(package) = XvaPackage::from_storage(Path::new("fuzz.xva"), Compression::None, storage)
    else {
        return;
    };
    let _ = package.info();
    let _ = package.select(Some("0"));
    for entry in package.disks() {
        if package.kind() == ExportKind::Legacy {
            // A legacy disk is inflated whole into a temporary file: small ones only.
            if let Ok(legacy) = package.legacy_disk(&entry)
                && legacy.virtual_size() <= 4 << 20
                && let Ok(disk) = legacy.inflate()
            {
                assert_eq!(disk.len(), entry.disk.virtual_size);
                let mut all = vec![0u8; disk.len() as usize];
                disk.read_exact_at(&mut all, 0).unwrap();
            }
            continue;
        }
        let Ok(disk) = package.disk_storage(&entry) else {
            continue;
        };
        assert_eq!(disk.len(), entry.disk.virtual_size);
        // The stored runs, at most 64 of them and 4 MiB in all.
        let mut at = 0u64;
        let mut budget = 4u64 << 20;
        for _ in 0..64 {
            let Some(d) = disk.next_data(at).unwrap() else {
                break;
            };
            assert!(d >= at && d < disk.len());
            let hole = disk.next_hole(d).unwrap();
            assert!(hole > d && hole <= disk.len());
            let n = (hole - d).min(budget);
            let mut buf = vec![0u8; n as usize];
            let _ = disk.read_exact_at(&mut buf, d);
            budget -= n;
            at = hole;
            if budget == 0 {
                break;
            }
        }
        if disk.len() <= 4 << 20 {
            let mut all = vec![0u8; disk.len() as usize];
            let _ = disk.read_exact_at(&mut all, 0);
        }
        let mut past = [0u8; 1];
        assert!(disk.read_exact_at(&mut past, disk.len()).is_err());
    }
});
