//! Azure takes fixed VHDs whose virtual size is a whole number of MiB: `convert -O vhd -o
//! subformat=fixed` of such a disk gives a file of exactly that size + 512 bytes, the disk then
//! a valid fixed footer, whether written to a file or to a pipe.

mod common;
mod vhd_support;

use common::*;
use vhd_support::*;

#[test]
fn fixed_output_of_whole_mib_is_size_plus_512() {
    let test = "fixed_output_of_whole_mib_is_size_plus_512";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (mib, regions) in [
        (1u64, vec![(0, 4096)]),
        (30, vec![(0, MIB), (29 * MIB, MIB)]),
        (1024, vec![(512 * MIB, 4096)]),
    ] {
        let size = mib * MIB;
        let raw = raw_with(d, "src.raw", size, &regions);
        let vhd = d.join("azure.vhd");
        let _ = std::fs::remove_file(&vhd);
        run_ok(&[
            "convert",
            "-O",
            "vhd",
            "-o",
            "subformat=fixed",
            raw.to_str().unwrap(),
            vhd.to_str().unwrap(),
        ]);
        let len = std::fs::metadata(&vhd).unwrap().len();
        assert_eq!(len, size + 512, "{mib} MiB");
        let mut footer = vec![0u8; 512];
        use std::os::unix::fs::FileExt;
        std::fs::File::open(&vhd)
            .unwrap()
            .read_exact_at(&mut footer, size)
            .unwrap();
        assert_eq!(&footer[..8], b"conectix");
        assert_eq!(be32(&footer, 64), vhd_checksum(&footer, 64), "checksum");
        assert_eq!(be32(&footer, 60), 2, "fixed disk type");
        assert_eq!(be64(&footer, 16), u64::MAX, "no next structure");
        assert_eq!(
            (be64(&footer, 40), be64(&footer, 48)),
            (size, size),
            "exact size"
        );
        assert_eq!(
            be32(&footer, 56),
            spec_chs(size),
            "geometry per the specification"
        );
        if have_qemu(test) {
            assert!(qemu_compare("raw", &raw, "vpc", &vhd), "{mib} MiB differs");
        }
        // The same through a pipe, byte for byte apart from the creation time and UUID.
        let out = diskferry()
            .args([
                "convert",
                "-O",
                "vhd",
                "-o",
                "subformat=fixed",
                raw.to_str().unwrap(),
                "-",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len() as u64, size + 512, "{mib} MiB piped");
        let file = std::fs::read(&vhd).unwrap();
        assert_eq!(&out.stdout[..size as usize], &file[..size as usize]);
        assert_eq!(
            &out.stdout[size as usize + 40..size as usize + 64],
            &footer[40..64]
        );
    }
    // The biggest: 1 GiB sparse stays sparse on disk.
    assert!(disk_usage(&d.join("azure.vhd")) < 16 * MIB);
}
