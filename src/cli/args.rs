//! The command line, spelled as qemu-img spells it where the two overlap.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Reads, writes, converts and checks virtual disk images.
#[derive(Debug, Parser)]
#[command(
    name = "diskferry",
    version,
    about = "Convert, inspect and check virtual disk images (raw, VHD, VMDK, ...)",
    long_about = None,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show an image's format, sizes and properties
    Info(InfoArgs),
    /// Convert an image to another format (or copy it)
    Convert(ConvertArgs),
    /// Create a new, empty image
    Create(CreateArgs),
    /// Check an image's metadata for corruptions and leaks
    Check(CheckArgs),
    /// Compare the content of two images
    Compare(CompareArgs),
    /// Show where an image's data is stored
    Map(MapArgs),
    /// List, take, apply or delete a qcow2 image's internal snapshots (-l, -c, -a, -d)
    Snapshot(SnapshotArgs),
    /// Change an image's virtual size
    Resize(ResizeArgs),
    /// Change an image's options in place
    Amend(AmendArgs),
    /// Add, remove, clear, enable, disable or merge a qcow2 image's persistent dirty bitmaps
    /// (operations applied in the order given)
    Bitmap(BitmapArgs),
    /// Copy an image's data into its backing image, then empty it
    Commit(CommitArgs),
    /// Give an image a new backing image (or none), copying what would read differently
    Rebase(RebaseArgs),
    /// Print the file size a conversion to a format needs
    Measure(MeasureArgs),
    /// Copy a slice of an image into a new image (bs=, count=, skip=, if=, of=)
    Dd(DdArgs),
    /// Move a whole VM to another hypervisor: its disks converted and its description
    /// rewritten for the target
    Migrate(MigrateArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on standard output
    Completions(CompletionsArgs),
    /// Write the manual pages (diskferry.1 and one per command) into a folder
    Man(ManArgs),
}

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The folder to write the pages into (created if missing), such as
    /// /usr/local/share/man/man1
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `--output human|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lines for people.
    Human,
    /// JSON with qemu-img's keys.
    Json,
}

/// Which files an image may open: the open gate's policy, on every command that opens images.
#[derive(Debug, Clone, Args)]
pub struct GateArgs {
    /// Open only regular files inside the image's own folder through names the image holds
    /// (no absolute names, no `..` or symbolic link leading out): for untrusted images
    #[arg(long)]
    pub confine: bool,
    /// Open the image alone: do not follow its backing (parent) file; what it leaves to its
    /// parent reads as zeros
    #[arg(long)]
    pub no_backing: bool,
    /// Let names inside an image lead to block and character devices (VMware raw-device
    /// mappings); FIFOs, sockets, /proc and /sys stay refused
    #[arg(long)]
    pub allow_devices: bool,
    /// The image's parent is this file, whatever the image names (a differencing VDI whose
    /// VirtualBox machine file is lost, a moved parent); its identity is still checked
    #[arg(long, value_name = "FILE")]
    pub parent: Option<std::path::PathBuf>,
    /// In an OVA or OVF package, the disk to read: its index (0 first) or file name (needed
    /// when the package holds several)
    #[arg(long, value_name = "N|NAME")]
    pub disk: Option<String>,
}

/// Arguments of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Which files the image may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The image's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Show every image of the backing chain
    #[arg(long)]
    pub backing_chain: bool,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// The image
    pub image: PathBuf,
}

/// Arguments of `convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Which files the source may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// Write into the existing destination (an image of the output format and at least the
    /// source's size) instead of creating it
    #[arg(short = 'n')]
    pub no_create: bool,
    /// Read what a damaged or truncated source holds: missing data reads as zeros, with a
    /// warning, instead of failing
    #[arg(long)]
    pub salvage: bool,
    /// The source's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// The output format
    #[arg(short = 'O', value_name = "FMT", default_value = "raw")]
    pub output_format: String,
    /// Output options, key=value,... (-o help lists them)
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Compress the output where the format can
    #[arg(short = 'c')]
    pub compress: bool,
    /// Show a progress bar (on a terminal)
    #[arg(short = 'p')]
    pub progress: bool,
    /// Quiet: no progress bar, no warnings
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Runs of zeros at least this long become holes; 0 writes a fully allocated output
    /// (default 4k)
    #[arg(short = 'S', value_name = "SIZE")]
    pub sparse_size: Option<String>,
    /// Copy offloading: data is copied as it is, zeros included (no -S, no -c), with
    /// copy_file_range where source and destination allow, so the file system may share it
    #[arg(short = 'C')]
    pub copy_offload: bool,
    /// At most this many bytes read a second (suffixes k, M, G, T, P, E; 0: no limit)
    #[arg(short = 'r', value_name = "RATE", allow_hyphen_values = true)]
    pub rate: Option<String>,
    /// With -n: the existing destination reads as zeros already, so zeros are not written
    #[arg(long)]
    pub target_is_zero: bool,
    /// Copy the source's persistent dirty bitmaps (qcow2 to qcow2)
    #[arg(long)]
    pub bitmaps: bool,
    /// With --bitmaps: leave inconsistent bitmaps behind (with a warning) instead of refusing
    #[arg(long)]
    pub skip_broken_bitmaps: bool,
    /// Worker threads (default: one per core)
    #[arg(short = 'm', value_name = "N")]
    pub threads: Option<usize>,
    /// Make the output a differencing image over this backing image; only what differs is written
    #[arg(short = 'B', value_name = "BACKING")]
    pub backing: Option<PathBuf>,
    /// The backing image's format (default: detected)
    #[arg(short = 'F', value_name = "BACKING_FMT")]
    pub backing_format: Option<String>,
    /// Output cache mode, as qemu-img: "unsafe" (the default) leaves the finished output to the
    /// kernel's writeback; "writeback", "none", "directsync" or "writethrough" flush it to
    /// stable storage before it is renamed into place, so it survives a crash
    #[arg(short = 't', value_name = "CACHE")]
    pub cache: Option<String>,
    /// Source cache mode. By default large reads of what the page cache does not hold go
    /// around it (direct I/O), and what it holds is read from it; "writeback", "writethrough"
    /// or "unsafe" read everything through the page cache, "none" or "directsync" read
    /// directly wherever the file system allows
    #[arg(short = 'T', value_name = "SRC_CACHE")]
    pub source_cache: Option<String>,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// Out-of-order writes: each worker writes its data where it belongs as soon as it has it,
    /// where the output format places data at known offsets (raw, VHD, flat VMDK); helps
    /// outputs that take parallel writes (devices, network file systems)
    #[arg(short = 'W')]
    pub out_of_order: bool,
    /// Read this internal snapshot of a qcow2 source instead of its current state: an ID or a
    /// name, or snapshot.id=ID,snapshot.name=NAME
    #[arg(short = 'l', value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
    /// The snapshot to read, by ID or name (qemu-img's older spelling of -l)
    #[arg(short = 's', value_name = "SNAPSHOT", hide = true)]
    pub old_snapshot: Option<String>,
    /// The source is given as qemu's options (`driver=qcow2,file.filename=disk.qcow2`)
    #[arg(long)]
    pub image_opts: bool,
    /// The destination is given as qemu's options (with -n)
    #[arg(long)]
    pub target_image_opts: bool,
    /// A qemu object definition (`secret,id=sec0,data=...`): accepted so that scripts run;
    /// diskferry refuses encrypted images, so secrets are never used
    #[arg(long = "object", value_name = "OBJECTDEF")]
    pub objects: Vec<String>,
    /// The source image
    pub source: PathBuf,
    /// The new image ("-" for standard output, formats that stream only)
    pub destination: PathBuf,
}

/// Arguments of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Which files the backing image may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The new image's format
    #[arg(short = 'f', value_name = "FMT", default_value = "raw")]
    pub format: String,
    /// Creation options, key=value,... (-o help lists them)
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Make a differencing image over this backing image
    #[arg(short = 'b', value_name = "BACKING")]
    pub backing: Option<PathBuf>,
    /// The backing image's format (default: detected)
    #[arg(short = 'F', value_name = "BACKING_FMT")]
    pub backing_format: Option<String>,
    /// Record the backing file without opening it (it may not exist yet); needs the size
    #[arg(short = 'u')]
    pub unsafe_backing: bool,
    /// Quiet
    #[arg(short = 'q')]
    pub quiet: bool,
    /// The new image
    pub image: PathBuf,
    /// Its size: bytes, or with a suffix k, M, G, T (powers of 1024); default: the backing image's
    pub size: Option<String>,
}

/// `-r leaks|all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RepairArg {
    /// Repair leaks only
    Leaks,
    /// Repair leaks and the corruptions that can be repaired safely
    All,
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Which files the image may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The image's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Repair what can be repaired safely
    #[arg(short = 'r', value_enum, value_name = "leaks|all")]
    pub repair: Option<RepairArg>,
    /// Quiet
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// The image
    pub image: PathBuf,
}

/// Arguments of `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Which files the images may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The first image's format (default: detected)
    #[arg(short = 'f', value_name = "FMT")]
    pub format_a: Option<String>,
    /// The second image's format (default: detected)
    #[arg(short = 'F', value_name = "FMT")]
    pub format_b: Option<String>,
    /// Strict: sizes and allocation must match too
    #[arg(short = 's')]
    pub strict: bool,
    /// Quiet: report through the exit code only
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Show progress while comparing (a bar on a terminal, qemu-img's records otherwise)
    #[arg(short = 'p')]
    pub progress: bool,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// The first image
    pub image_a: PathBuf,
    /// The second image
    pub image_b: PathBuf,
}

/// Arguments of `map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// Which files the image may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The image's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Start at this virtual offset
    #[arg(short = 's', long = "start-offset", value_name = "OFFSET")]
    pub start_offset: Option<String>,
    /// Map at most this many bytes
    #[arg(short = 'l', long = "max-length", value_name = "LENGTH")]
    pub max_length: Option<String>,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// The image
    pub image: PathBuf,
}

/// Arguments of `snapshot`: one of -l, -c, -a, -d (listing when none is given, as qemu-img).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action")))]
pub struct SnapshotArgs {
    /// List the snapshots
    #[arg(short = 'l', group = "action")]
    pub list: bool,
    /// Take a snapshot of the current state, called NAME
    #[arg(short = 'c', value_name = "NAME", group = "action")]
    pub create: Option<String>,
    /// Revert the current state to the snapshot with this ID or name
    #[arg(short = 'a', value_name = "SNAPSHOT", group = "action")]
    pub apply: Option<String>,
    /// Delete the snapshot with this ID or name
    #[arg(short = 'd', value_name = "SNAPSHOT", group = "action")]
    pub delete: Option<String>,
    /// The image's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Quiet (accepted for qemu-img compatibility)
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// The image
    pub image: PathBuf,
}

/// Arguments of `resize`.
#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// Which files the image may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The image's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Allow a smaller size (data past the new end is lost)
    #[arg(long)]
    pub shrink: bool,
    /// How the added space is reserved
    #[arg(long, value_enum, value_name = "off|metadata|falloc|full")]
    pub preallocation: Option<PreallocationArg>,
    /// Quiet
    #[arg(short = 'q')]
    pub quiet: bool,
    /// The image
    pub image: PathBuf,
    /// The new size (`10G`), or a change of it (`+1G`, `-512M`)
    #[arg(allow_hyphen_values = true, value_name = "[+|-]SIZE")]
    pub size: String,
}

/// `--preallocation` of resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PreallocationArg {
    /// Nothing reserved
    Off,
    /// Metadata only (qcow2)
    Metadata,
    /// Space reserved with fallocate
    Falloc,
    /// Zeros written
    Full,
}

/// Arguments of `amend`.
#[derive(Debug, Args)]
pub struct AmendArgs {
    /// Which files the image may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The image's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// The options to change (`-o help` lists them)
    #[arg(short = 'o', value_name = "OPTIONS", required = true)]
    pub options: Vec<String>,
    /// Make changes that need it (qemu-img's --force)
    #[arg(long)]
    pub force: bool,
    /// Progress (accepted for qemu-img compatibility; amend is quick)
    #[arg(short = 'p')]
    pub progress: bool,
    /// Quiet
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Cache mode (accepted for qemu-img compatibility)
    #[arg(short = 't', value_name = "CACHE", hide = true)]
    pub cache: Option<String>,
    /// The image
    pub image: PathBuf,
}

/// Arguments of `bitmap`: `(--merge SOURCE | --add | --remove | --clear | --enable |
/// --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRANULARITY] [--object OBJ]
/// [--image-opts | -f FMT] FILENAME BITMAP`, as qemu-img. The operations may repeat and run
/// in the order given on the command line ([`bitmap_ops_in_order`] reads it).
#[derive(Debug, Args)]
#[command(
    override_usage = "diskferry bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRANULARITY] [--object OBJ] [--image-opts | -f FMT] FILENAME BITMAP",
    after_help = "Operations run in the order given; the first that fails stops the rest, and the ones before it stay done (as in qemu-img). --add makes an empty bitmap that tracks writes; add --disable to make a frozen one. Inconsistent bitmaps (flagged in-use, left by an unclean stop) can only be removed."
)]
pub struct BitmapArgs {
    /// Set the bits that bitmap SOURCE has set (of this image, or of -b's image)
    #[arg(long = "merge", value_name = "SOURCE")]
    pub merge: Vec<String>,
    /// Create the bitmap: empty and enabled
    #[arg(long, action = clap::ArgAction::Append, num_args = 0, default_missing_value = "true")]
    pub add: Vec<bool>,
    /// Delete the bitmap
    #[arg(long, action = clap::ArgAction::Append, num_args = 0, default_missing_value = "true")]
    pub remove: Vec<bool>,
    /// Clear every bit of the bitmap
    #[arg(long, action = clap::ArgAction::Append, num_args = 0, default_missing_value = "true")]
    pub clear: Vec<bool>,
    /// Make the bitmap track writes
    #[arg(long, action = clap::ArgAction::Append, num_args = 0, default_missing_value = "true")]
    pub enable: Vec<bool>,
    /// Make the bitmap stop tracking writes
    #[arg(long, action = clap::ArgAction::Append, num_args = 0, default_missing_value = "true")]
    pub disable: Vec<bool>,
    /// The image --merge reads its SOURCE bitmap from (default: FILENAME itself)
    #[arg(short = 'b', value_name = "SOURCE_FILE")]
    pub source_file: Option<PathBuf>,
    /// The format of -b's image (default: detected from the content)
    #[arg(short = 'F', value_name = "SOURCE_FMT")]
    pub source_format: Option<String>,
    /// With --add: bytes of the disk one bit covers, a power of two from 512 to 2G (default:
    /// the cluster size, kept within 4k to 64k)
    #[arg(short = 'g', value_name = "GRANULARITY", allow_hyphen_values = true)]
    pub granularity: Option<String>,
    /// A qemu object definition (accepted for secrets only)
    #[arg(long = "object", value_name = "OBJECTDEF")]
    pub objects: Vec<String>,
    /// FILENAME is qemu's options (`driver=qcow2,file.filename=PATH`)
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// The image's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// FILENAME and BITMAP: the image and the bitmap the operations apply to
    #[arg(value_name = "FILENAME BITMAP", num_args = 0..)]
    pub operands: Vec<String>,
}

/// One operation flag of `bitmap`, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BitmapFlag {
    /// `--merge SOURCE`.
    Merge(String),
    /// `--add`.
    Add,
    /// `--remove`.
    Remove,
    /// `--clear`.
    Clear,
    /// `--enable`.
    Enable,
    /// `--disable`.
    Disable,
}

/// The operation flags of `bitmap` in command-line order: clap keeps each flag's values
/// apart (each flag appends one value per use, so that a repeated one is seen twice), its
/// indices tell the order, which decides the result (`--add --disable` makes a
/// frozen bitmap, `--disable --add` fails on the missing one).
pub fn bitmap_ops_in_order(m: &clap::ArgMatches) -> Vec<BitmapFlag> {
    let mut ops: Vec<(usize, BitmapFlag)> = Vec::new();
    if let (Some(at), Some(values)) = (m.indices_of("merge"), m.get_many::<String>("merge")) {
        ops.extend(
            at.zip(values)
                .map(|(i, v)| (i, BitmapFlag::Merge(v.clone()))),
        );
    }
    for (id, flag) in [
        ("add", BitmapFlag::Add),
        ("remove", BitmapFlag::Remove),
        ("clear", BitmapFlag::Clear),
        ("enable", BitmapFlag::Enable),
        ("disable", BitmapFlag::Disable),
    ] {
        if let Some(at) = m.indices_of(id) {
            ops.extend(at.map(|i| (i, flag.clone())));
        }
    }
    ops.sort_by_key(|(i, _)| *i);
    ops.into_iter().map(|(_, f)| f).collect()
}

/// Arguments of `migrate`.
#[derive(Debug, Args)]
#[command(
    after_help = "Targets: vsphere, esxi, workstation (an OVA for VMware); virtualbox (an OVA); xenserver, xcp-ng (an XVA for xe vm-import and Xen Orchestra, -o checksum=xxhash|sha1, -o compress=none|gzip|zstd; a destination named *.ova gets an OVA with VHD disks for XenCenter's import instead); xenserver-vhd (a folder: dynamic VHDs named <uuid>.vhd for a file SR, and the xe commands); kvm (a folder: qcow2 disks and a libvirt domain XML); ovf (a folder); disks (a folder of disks in the -O format).\n\nSources described on the command line: one or more disk images (the first boots), with --name, --cpus, --memory, --firmware, --os and --nic."
)]
pub struct MigrateArgs {
    /// Which files the source may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// Where the VM goes
    #[arg(long = "to", value_name = "TARGET")]
    pub target: String,
    /// Disk format of the `disks` target (default qcow2)
    #[arg(short = 'O', value_name = "FMT")]
    pub output_format: Option<String>,
    /// Disk options of the `disks` target, key=value,...; for an XVA (--to xenserver):
    /// checksum=xxhash|sha1, compress=none|gzip|zstd
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// The VM's name (default: the first disk's file name)
    #[arg(long)]
    pub name: Option<String>,
    /// Virtual CPUs (default 1)
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Cores per socket
    #[arg(long, value_name = "N")]
    pub cores_per_socket: Option<u32>,
    /// Memory: bytes or with a suffix (M, G); default 1G
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Firmware: bios, uefi or uefi-secure (UEFI with Secure Boot)
    #[arg(long, value_name = "FIRMWARE")]
    pub firmware: Option<String>,
    /// The guest OS: a VMware guestOS id (ubuntu-64), VirtualBox OS type (Ubuntu_64), libosinfo
    /// id (ubuntu22.04) or CIM number
    #[arg(long = "os", value_name = "ID")]
    pub guest_os: Option<String>,
    /// The disks' controller: sata (default), scsi, ide, nvme or virtio
    #[arg(long, value_name = "BUS")]
    pub disk_bus: Option<String>,
    /// A network adapter, MODEL[,mac=MAC][,network=NAME] (MODEL: e1000, e1000e, vmxnet3,
    /// virtio, rtl8139, pcnet); repeat for more; "none" for no adapter (default: one e1000)
    #[arg(long, value_name = "NIC")]
    pub nic: Vec<String>,
    /// Show a progress bar over the whole VM (on a terminal)
    #[arg(short = 'p')]
    pub progress: bool,
    /// Quiet: no progress, no summary; the warnings of what was not carried are still given
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Worker threads (default: one per core)
    #[arg(short = 'm', value_name = "N")]
    pub threads: Option<usize>,
    /// Print the device mapping from the --from source kind to the --to target (what each
    /// controller, NIC model and firmware setting becomes, and the warnings given, as
    /// docs/device-mapping.md has it) instead of migrating
    #[arg(long, requires = "from", conflicts_with = "paths")]
    pub show_mapping: bool,
    /// With --show-mapping: the source kind (disks, vmx, vbox, vmc, hyperv, libvirt, xl,
    /// proxmox, ovf, xva)
    #[arg(long, value_name = "SOURCE", requires = "show_mapping")]
    pub from: Option<String>,
    /// The source (an OVA or OVF, or disk images) followed by the destination (an OVA file, or
    /// a new folder; "-" streams an OVA or an XVA to standard output)
    #[arg(required_unless_present = "show_mapping", num_args = 2.., value_name = "SRC... DEST")]
    pub paths: Vec<PathBuf>,
}

/// Arguments of `commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Which files the image may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The image's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// Cache mode (accepted for qemu-img compatibility; the base is always flushed)
    #[arg(short = 't', value_name = "CACHE")]
    pub cache: Option<String>,
    /// The image of the backing chain to commit into (default: the direct backing image);
    /// implies -d
    #[arg(short = 'b', value_name = "BASE")]
    pub base: Option<PathBuf>,
    /// Keep the image's data after committing it (do not empty it)
    #[arg(short = 'd')]
    pub keep: bool,
    /// Show progress
    #[arg(short = 'p')]
    pub progress: bool,
    /// Quiet
    #[arg(short = 'q')]
    pub quiet: bool,
    /// At most this many bytes a second (suffixes k, M, G)
    #[arg(short = 'r', value_name = "RATE")]
    pub rate: Option<String>,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// The image
    pub image: PathBuf,
}

/// Arguments of `rebase`.
#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// Which files the image may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The image's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// The new backing image's format (default: detected; qemu-img requires it)
    #[arg(short = 'F', value_name = "BACKING_FMT")]
    pub backing_format: Option<String>,
    /// Compress the clusters a safe rebase copies (qcow2, qcow)
    #[arg(short = 'c')]
    pub compress: bool,
    /// Unsafe: change the recorded name only, copy nothing (the new backing image must read
    /// as the old one)
    #[arg(short = 'u')]
    pub unsafe_mode: bool,
    /// Show progress
    #[arg(short = 'p')]
    pub progress: bool,
    /// Quiet
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Cache mode (accepted for qemu-img compatibility)
    #[arg(short = 't', value_name = "CACHE")]
    pub cache: Option<String>,
    /// Source cache mode (accepted for qemu-img compatibility)
    #[arg(short = 'T', value_name = "SRC_CACHE")]
    pub source_cache: Option<String>,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// The new backing image, as the image is to name it (relative to the image's folder);
    /// "" for none
    #[arg(short = 'b', value_name = "BACKING")]
    pub backing: Option<String>,
    /// The image
    pub image: PathBuf,
}

/// Arguments of `measure`.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// Which files the image may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// Output format
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// The source's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// The format of the image to be made
    #[arg(short = 'O', value_name = "OUTPUT_FMT", default_value = "raw")]
    pub output_format: String,
    /// Options of the image to be made, key=value,...
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Measure this internal snapshot of the source: an ID or a name, or
    /// snapshot.id=ID,snapshot.name=NAME
    #[arg(short = 'l', value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
    /// Measure an empty image of this size instead of a source
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// The source image
    pub image: Option<PathBuf>,
}

/// Arguments of `dd`.
#[derive(Debug, Args)]
pub struct DdArgs {
    /// Which files the input may open
    #[command(flatten)]
    pub gate: GateArgs,
    /// The input's format (default: detected from the content)
    #[arg(short = 'f', value_name = "FMT")]
    pub format: Option<String>,
    /// The output's format
    #[arg(short = 'O', value_name = "OUTPUT_FMT", default_value = "raw")]
    pub output_format: String,
    /// Accepted for qemu-img compatibility (diskferry never locks images)
    #[arg(short = 'U', long = "force-share", hide = true)]
    pub force_share: bool,
    /// bs=BYTES (default 512, suffixes k, M, G), count=BLOCKS, skip=BLOCKS, if=INPUT,
    /// of=OUTPUT
    #[arg(value_name = "OPERAND")]
    pub operands: Vec<String>,
}
