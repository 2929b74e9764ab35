//! A small valid VHDX (differencing, with sector bitmaps and a pending log; built by
//! tests/vhdx_support from the specification) damaged as the input says, then opened from
//! memory as a VHDX, mapped and read. Each 12 bytes of input are one mutation (an area, an
//! offset in it, a width and a value); the first byte says which checksums to re-seal, so the
//! damage reaches the region table, metadata, BAT and log behind them. Errors are fine;
//! panics, hangs and unbounded allocations are not.
#![no_main]

use diskferry::format::{OpenContext, Provenance, Salvage};
use diskferry::formats::vhdx::VhdxLayer;
use diskferry::image::{Allocation, Layer};
use diskferry::storage::Memory;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

#[path = "../../tests/vhdx_support/mod.rs"]
mod vx;

/// The seed file and the length of its log entry.
fn seed() -> &'static (Vec<u8>, usize) {
    static SEED: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    SEED.get_or_init(|| {
        let mut spec = vx::Spec::new(5 * vx::MIB + 4096, vx::MIB);
        spec.parent = Some(vec![
            (
                "parent_linkage".into(),
                "{11112222-3333-4444-5555-666677778888}".into(),
            ),
            ("relative_path".into(), ".\\p.vhdx".into()),
        ]);
        let present: Vec<bool> = (0..2048).map(|i| i % 5 == 0).collect();
        spec.blocks = vec![
            (0, vx::Block::Full(vec![0x11; vx::MIB as usize])),
            (1, vx::Block::Partial(vec![0x22; vx::MIB as usize], present)),
            (2, vx::Block::State(2)),
            (5, vx::Block::Full(vec![0x55; 4096])),
        ];
        let mut file = vx::build(&spec);
        let block = file.len() as u64;
        file.extend_from_slice(&vec![0x33; vx::MIB as usize]);
        let len = file.len() as u64;
        let entry = vx::Spec::entry_offset(spec.payload_index(3));
        let start = entry / 4096 * 4096;
        let mut sector = file[start..start + 4096].to_vec();
        sector[entry - start..entry - start + 8].copy_from_slice(&(block | 6).to_le_bytes());
        let guid = uuid::Uuid::from_u128(0x10C);
        let e = vx::log_entry(
            9,
            0,
            &guid,
            len,
            len,
            &[
                vx::Desc::Data {
                    file_offset: start as u64,
                    sector,
                },
                vx::Desc::Zero {
                    file_offset: len - 8192,
                    length: 4096,
                },
            ],
        );
        let entry_len = e.len();
        vx::add_log(&mut file, &spec, &guid, &[(0, e)]);
        (file, entry_len)
    })
}

fuzz_target!(|data: &[u8]| {
    let (good, entry_len) = seed();
    let mut b = good.clone();
    let Some((&reseal, rest)) = data.split_first() else {
        return;
    };
    let meta = vx::METADATA_OFFSET as usize;
    let log = vx::LOG_OFFSET as usize;
    for m in rest.chunks_exact(12).take(64) {
        let (start, span) = match m[0] % 8 {
            0 => (vx::HEADER1, 4096),
            1 => (vx::REGION1, 4096),
            2 => (meta, 4096),
            3 => (meta + 0x10000, 4096),
            4 | 5 => (vx::BAT_OFFSET as usize, 4096),
            6 => (log, *entry_len),
            _ => (0, b.len()),
        };
        let at = start + u16::from_le_bytes([m[1], m[2]]) as usize % span;
        let width = [1usize, 2, 4, 8][(m[3] % 4) as usize];
        let at = at.min(b.len() - width);
        b[at..at + width].copy_from_slice(&m[4..4 + width]);
    }
    if reseal & 1 != 0 {
        for at in [vx::HEADER1, vx::HEADER2] {
            vx::seal(&mut b[at..at + 4096], 4);
        }
    }
    if reseal & 2 != 0 {
        vx::reseal_regions(&mut b);
    }
    if reseal & 4 != 0 {
        vx::seal(&mut b[log..log + entry_len], 4);
    }
    let gate = diskferry::Gate::confined();
    let ctx = OpenContext {
        gate: &gate,
        provenance: Provenance::User,
        salvage: Salvage::Refuse,
        snapshot: None,
        data_files: diskferry::image::DataFilePolicy::Require,
    };
    let Ok(layer) = VhdxLayer::open(Arc::new(Memory::new("f.vhdx", b)), &ctx) else {
        return;
    };
    let _ = layer.details();
    let size = layer.virtual_size();
    let mut pos = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..4096 {
        if pos >= size {
            break;
        }
        let Ok(m) = layer.map(pos, size - pos) else {
            return;
        };
        assert!(
            m.start == pos && m.length > 0 && m.length <= size - pos,
            "bad mapping {m:?}"
        );
        if m.allocation == Allocation::Data {
            let n = m.length.min(buf.len() as u64) as usize;
            if layer.read_data(pos, &mut buf[..n]).is_err() {
                return;
            }
        }
        pos = m.end();
    }
});
