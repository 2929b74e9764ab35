//! `measure` for qcow2: the file sizes qemu-img measure predicts, computed the same way.
//!
//! The fully allocated size is the data (the virtual size in whole clusters) plus the metadata
//! that would describe all of it: the header cluster, every L2 table (whole tables), the L1
//! table (whole clusters), and refcount blocks and table clusters enough to count everything
//! including themselves (the fixed point qemu finds). The required size is the fully allocated
//! one with the data clusters nothing needs taken out: only the clusters the source's data
//! touches stay (all of them with preallocation=falloc|full, or when an image converted from a
//! source has a backing file, since qemu cannot tell what it shares with it).
//!
//! `bitmaps` is reported whenever the source's format holds bitmaps and the image to be made
//! is version 3, as qemu-img reports it (0 for a source that holds none): the size of copying
//! them all with `convert --bitmaps`.

use crate::edit::{MeasureRequest, Measurement};
use crate::error::{Error, Result};
use crate::formats::qcow2::bitmaps::measured_size;
use crate::formats::qcow2::header::{MAX_CLUSTER_BITS, MAX_L1_BYTES, MIN_CLUSTER_BITS};

/// Predicts the size of a qcow2 image made as `req` says.
pub fn measure(req: &MeasureRequest<'_>) -> Result<Measurement> {
    let o = req.options;
    let extended = o.flag("extended_l2").unwrap_or(false);
    let cluster = o.size("cluster_size").unwrap_or(64 << 10);
    let min_bits = if extended { 14 } else { MIN_CLUSTER_BITS };
    if !cluster.is_power_of_two()
        || !((1u64 << min_bits)..=(1u64 << MAX_CLUSTER_BITS)).contains(&cluster)
    {
        return Err(Error::invalid(format!(
            "Cluster size must be a power of two between {} and {}k",
            1u64 << min_bits,
            1u64 << (MAX_CLUSTER_BITS - 10)
        )));
    }
    let version = match o.text("compat") {
        Some("0.10") | Some("v2") => 2,
        _ => 3,
    };
    let refcount_bits = o.number("refcount_bits").unwrap_or(16);
    if refcount_bits > 64 || !refcount_bits.is_power_of_two() {
        return Err(Error::invalid(
            "Refcount width must be a power of two and may not exceed 64 bits",
        ));
    }
    if version < 3 && refcount_bits != 16 {
        return Err(Error::invalid(
            "Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)",
        ));
    }
    if version < 3 && extended {
        return Err(Error::invalid(
            "Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
        ));
    }
    let full_data = matches!(o.text("preallocation"), Some("falloc") | Some("full"));
    let has_backing = o.text("backing_file").is_some();
    let virtual_size = req.virtual_size.next_multiple_of(cluster);
    let entry = if extended { 16 } else { 8 };
    let l2_tables = (virtual_size / cluster).div_ceil(cluster / entry);
    if l2_tables * 8 > MAX_L1_BYTES {
        return Err(Error::invalid(
            "The image size is too large (try using a larger cluster size)",
        ));
    }
    // From a source, a backing file counts every cluster (qemu cannot tell what the new
    // image will share with it); `--size` (no ranges) counts none.
    let data = if full_data || (has_backing && !req.allocated.is_empty()) {
        virtual_size
    } else {
        req.units_touched(cluster) * cluster
    };
    let fully = fully_allocated(virtual_size, cluster, refcount_bits.trailing_zeros(), entry);
    let bitmaps = req.source_bitmaps.filter(|_| version >= 3).map(|listed| {
        let sizes: Vec<(usize, u64)> = listed
            .iter()
            .map(|b| (b.name.len(), b.granularity))
            .collect();
        measured_size(&sizes, req.virtual_size, cluster)
    });
    Ok(Measurement {
        required: fully - virtual_size + data,
        fully_allocated: fully,
        bitmaps,
    })
}

/// The file size of an image of `size` bytes (whole clusters) with every cluster allocated.
fn fully_allocated(size: u64, cluster: u64, refcount_order: u32, l2_entry: u64) -> u64 {
    let per_l2 = cluster / l2_entry;
    let l2_entries = (size / cluster).next_multiple_of(per_l2);
    let mut meta = cluster + l2_entries * l2_entry;
    let l1_entries = (l2_entries * l2_entry / cluster).next_multiple_of(cluster / 8);
    meta += l1_entries * 8;
    meta += refcount_metadata(
        size.div_ceil(cluster) + meta / cluster,
        cluster,
        refcount_order,
    );
    meta + size
}

/// Bytes of refcount blocks and table that count `clusters` clusters and themselves.
fn refcount_metadata(clusters: u64, cluster: u64, refcount_order: u32) -> u64 {
    let per_block = (cluster * 8) >> refcount_order;
    let per_table_cluster = cluster / 8;
    let (mut blocks, mut table) = (0u64, 0u64);
    loop {
        let b = (clusters + blocks + table).div_ceil(per_block);
        let t = b.div_ceil(per_table_cluster);
        if (b, t) == (blocks, table) {
            return (blocks + table) * cluster;
        }
        (blocks, table) = (b, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_gigabyte_measures_as_qemu_img_says() {
        // qemu-img measure -O qcow2 --size 1G: required 393216, fully allocated 1074135040.
        let opts = crate::options::FormatOptions::empty(crate::formats::qcow2::FORMAT);
        let req = MeasureRequest {
            virtual_size: 1 << 30,
            allocated: &[],
            options: &opts,
            source_bitmaps: None,
        };
        let m = measure(&req).unwrap();
        assert_eq!((m.required, m.fully_allocated), (393216, 1074135040));
    }
}
