//! Opens a disk image with the diskferry library, prints what it is and where its data lies,
//! and optionally converts it: a program that uses only the library's public API.
//!
//! ```sh
//! cargo run --release --example inspect -- disk.vmdk            # describe and map
//! cargo run --release --example inspect -- disk.vmdk out.vhd vhd # and convert
//! ```

use diskferry::convert::{ConvertOptions, Event, convert};
use diskferry::image::Allocation;
use diskferry::{Gate, Image, OpenOptions, Registry};
use std::path::PathBuf;

fn main() -> diskferry::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(source) = args.first().map(PathBuf::from) else {
        eprintln!("usage: inspect IMAGE [DESTINATION FORMAT]");
        std::process::exit(2);
    };
    // Names inside the image (extents, parents) may lead anywhere but to devices, FIFOs,
    // /proc or /sys, as on the command line; `Gate::confined()` would keep them in its folder.
    let options = OpenOptions {
        gate: Gate::anywhere(),
        ..OpenOptions::default()
    };
    let image = Image::open(&source, &options)?;
    println!(
        "{}: {} image of {} bytes, {} layer(s)",
        source.display(),
        image.top().format(),
        image.virtual_size(),
        image.layers().len()
    );
    for file in image.opened_files() {
        println!("  reads {}", file.display());
    }
    for warning in image.warnings() {
        println!("  warning: {warning}");
    }

    let (mut data, mut zero, mut unallocated) = (0u64, 0u64, 0u64);
    let mut pos = 0;
    while pos < image.virtual_size() {
        let run = image.block_status(pos, image.virtual_size() - pos)?;
        match run.mapping.allocation {
            Allocation::Data => data += run.mapping.length,
            Allocation::Zero => zero += run.mapping.length,
            Allocation::Unallocated => unallocated += run.mapping.length,
        }
        pos = run.mapping.end();
    }
    println!("  data {data} bytes, zeros {zero}, unallocated {unallocated}");

    let mut first = [0u8; 16];
    image.read_at(0, &mut first)?;
    println!("  first bytes: {first:02x?}");

    if let (Some(dest), Some(format)) = (args.get(1), args.get(2)) {
        let convert_options = ConvertOptions {
            source: options,
            target_format: Registry::builtin().find(format)?,
            ..ConvertOptions::default()
        };
        let stats = convert(&source, dest.as_ref(), &convert_options, &mut |event| {
            if let Event::Warning(w) = event {
                eprintln!("warning: {w}");
            }
        })?;
        println!(
            "converted to {dest} ({format}): {} bytes of data written, {} of zeros left out",
            stats.data_bytes, stats.zero_bytes
        );
    }
    Ok(())
}
