#!/usr/bin/env python3
"""diskferry vs qemu-img, same inputs, same run.

Runs `diskferry convert` and `qemu-img convert` alternately on the same input files several
times and prints, per case, the median wall time of each, the ratio (qemu-img time / diskferry
time: above 1 means diskferry is faster), the peak resident memory of each (from wait4), and the
output sizes. After timing, it checks that both tools' outputs hold the same content
(`qemu-img compare`), so a fast wrong answer cannot win.

Inputs (made once, kept in the work folder):
  realistic.raw  an ext4 file system made with `mke2fs -d` from a system folder (real binaries)
                 with free space left, as a real VM disk has;
  sparse-1t.raw  a 1 TiB raw file with three 8 MiB data regions;
  and the same realistic disk in other formats (made with qemu-img) for the *-to-raw cases.

Usage: bench/bench.py [--runs 11] [--quick-runs 31] [--cold] [--cases a,b] [--workdir DIR] [--source-dir DIR] [--fs-size 2G]
The machine is shared and noisy: compare medians, and rerun before quoting a figure.
"""
import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (input file, diskferry arguments, qemu-img arguments). {src} and {dst} are filled in.
CASES = {
    "raw-to-raw": (
        "realistic.raw",
        ["convert", "-O", "raw", "{src}", "{dst}"],
        ["convert", "-O", "raw", "{src}", "{dst}"],
    ),
    "sparse-1t-to-raw": (
        "sparse-1t.raw",
        ["convert", "-O", "raw", "{src}", "{dst}"],
        ["convert", "-O", "raw", "{src}", "{dst}"],
    ),
    "raw-to-vhd": (
        "realistic.raw",
        ["convert", "-O", "vhd", "{src}", "{dst}"],
        ["convert", "-O", "vpc", "{src}", "{dst}"],
    ),
    "vhd-to-raw": (
        "realistic.vhd",
        ["convert", "-f", "vhd", "-O", "raw", "{src}", "{dst}"],
        ["convert", "-f", "vpc", "-O", "raw", "{src}", "{dst}"],
    ),
    "raw-to-vmdk-stream": (
        "realistic.raw",
        ["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "{src}", "{dst}"],
        ["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", "{src}", "{dst}"],
    ),
    "vmdk-stream-to-raw": (
        "realistic-stream.vmdk",
        ["convert", "-f", "vmdk", "-O", "raw", "{src}", "{dst}"],
        ["convert", "-f", "vmdk", "-O", "raw", "{src}", "{dst}"],
    ),
    "raw-to-qcow2": (
        "realistic.raw",
        ["convert", "-O", "qcow2", "{src}", "{dst}"],
        ["convert", "-O", "qcow2", "{src}", "{dst}"],
    ),
    # -c: diskferry compresses on every core; qemu-img on one thread, or (-W, out-of-order
    # writes) on up to four.
    "raw-to-qcow2-c": (
        "realistic.raw",
        ["convert", "-c", "-O", "qcow2", "{src}", "{dst}"],
        ["convert", "-c", "-O", "qcow2", "{src}", "{dst}"],
    ),
    "raw-to-qcow2-c-vs-W": (
        "realistic.raw",
        ["convert", "-c", "-O", "qcow2", "{src}", "{dst}"],
        ["convert", "-W", "-c", "-O", "qcow2", "{src}", "{dst}"],
    ),
    "raw-to-qcow2-zstd-vs-W": (
        "realistic.raw",
        ["convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", "{src}", "{dst}"],
        ["convert", "-W", "-c", "-O", "qcow2", "-o", "compression_type=zstd", "{src}", "{dst}"],
    ),
    "qcow2-to-raw": (
        "realistic.qcow2",
        ["convert", "-f", "qcow2", "-O", "raw", "{src}", "{dst}"],
        ["convert", "-f", "qcow2", "-O", "raw", "{src}", "{dst}"],
    ),
    # Compressed clusters are inflated on every core by diskferry, on one thread by qemu-img.
    "qcow2-c-to-raw": (
        "realistic-c.qcow2",
        ["convert", "-f", "qcow2", "-O", "raw", "{src}", "{dst}"],
        ["convert", "-f", "qcow2", "-O", "raw", "{src}", "{dst}"],
    ),
    "raw-to-vdi": (
        "realistic.raw",
        ["convert", "-O", "vdi", "{src}", "{dst}"],
        ["convert", "-O", "vdi", "{src}", "{dst}"],
    ),
    "vdi-to-raw": (
        "realistic.vdi",
        ["convert", "-f", "vdi", "-O", "raw", "{src}", "{dst}"],
        ["convert", "-f", "vdi", "-O", "raw", "{src}", "{dst}"],
    ),
    # A whole-VM export as a VMware OVA (stream-optimized VMDK, SHA256 manifest, tar) against
    # the qemu-img way of making one: convert, sha256sum, tar. Run it with raw-to-vmdk-stream
    # to see what the packaging costs over the conversion alone. migrate flushes the OVA before
    # it is in place, so the qemu-img way ends with `sync` of its tar too.
    "ova-export": (
        "realistic.raw",
        ["migrate", "--to", "vsphere", "--name", "bench", "{src}", "{dst}"],
        ["sh", "-c",
         "qemu-img convert -O vmdk -o subformat=streamOptimized {src} {dst}.vmdk"
         " && sha256sum {dst}.vmdk > {dst}.mf && tar -cf {dst} {dst}.mf {dst}.vmdk"
         " && rm {dst}.vmdk {dst}.mf && sync {dst}"],
    ),
    # The OVA export against diskferry's own raw to stream-optimized VMDK conversion (issue 12:
    # at most 1.15 times), both flushing their output before it is in place (migrate always
    # does; convert does with -t writeback), so the ratio is the packaging's cost alone.
    "ova-export-vs-stream": (
        "realistic.raw",
        ["migrate", "--to", "vsphere", "--name", "bench", "{src}", "{dst}"],
        ["{ours}", "convert", "-t", "writeback", "-O", "vmdk", "-o", "subformat=streamOptimized",
         "{src}", "{dst}"],
    ),
    # Reading a disk out of an OVA in place against reading the same VMDK extracted from it,
    # both with diskferry (the peer column is diskferry here): the ratio shows what reading
    # through the tar costs (manifest digest included).
    "ova-disk-to-raw": (
        "realistic.ova",
        ["convert", "-O", "raw", "{src}", "{dst}"],
        ["{ours}", "convert", "-O", "raw", "realistic-disk1.vmdk", "{dst}"],
    ),
    # The same OVA without its manifest (the same members, in the same order, minus the .mf):
    # what reading through the tar costs with no digest to check. The difference between this
    # case and ova-disk-to-raw is the manifest's SHA-256, which both cores' inflating leaves no
    # idle core to hide.
    "ova-nomf-disk-to-raw": (
        "realistic-nomf.ova",
        ["convert", "-O", "raw", "{src}", "{dst}"],
        ["{ours}", "convert", "-O", "raw", "realistic-disk1.vmdk", "{dst}"],
    ),
    # Reading a disk out of an XVA in place (every chunk's SHA-1 verified) against diskferry's
    # raw to raw copy of the same disk (the peer column is diskferry here): issue 13 wants at
    # most 1.2 times. The XVA is written by write_xva below, as XAPI lays one out.
    "xva-disk-to-raw": (
        "realistic.xva",
        ["convert", "-O", "raw", "{src}", "{dst}"],
        ["{ours}", "convert", "-O", "raw", "realistic.raw", "{dst}"],
    ),
    # The same with the XVA diskferry writes (XXH64 chunks, as XenServer 8 and XCP-ng 8.x
    # export by default), against the same raw to raw copy.
    "xva-xxhash-disk-to-raw": (
        "realistic-xx.xva",
        ["convert", "-O", "raw", "{src}", "{dst}"],
        ["{ours}", "convert", "-O", "raw", "realistic.raw", "{dst}"],
    ),
    # Exporting the realistic disk as an XVA (ova.xml, 1 MiB chunks each with its XXH64, zero
    # chunks left out) against diskferry's raw to raw copy of the same disk (the peer column is
    # diskferry here): issue 13 wants at most 1.2 times.
    "xva-export": (
        "realistic.raw",
        ["migrate", "--to", "xenserver", "--name", "bench", "{src}", "{dst}"],
        ["{ours}", "convert", "-O", "raw", "{src}", "{dst}"],
    ),
    "raw-to-vhdx": (
        "realistic.raw",
        ["convert", "-O", "vhdx", "{src}", "{dst}"],
        ["convert", "-O", "vhdx", "{src}", "{dst}"],
    ),
    "vhdx-to-raw": (
        "realistic.vhdx",
        ["convert", "-f", "vhdx", "-O", "raw", "{src}", "{dst}"],
        ["convert", "-f", "vhdx", "-O", "raw", "{src}", "{dst}"],
    ),
    "sparse-1t-qcow2-to-raw": (
        "sparse-1t.qcow2",
        ["convert", "-f", "qcow2", "-O", "raw", "{src}", "{dst}"],
        ["convert", "-f", "qcow2", "-O", "raw", "{src}", "{dst}"],
    ),
    "sparse-1t-qcow2-to-vhd": (
        "sparse-1t.qcow2",
        ["convert", "-f", "qcow2", "-O", "vhd", "{src}", "{dst}"],
        ["convert", "-f", "qcow2", "-O", "vpc", "{src}", "{dst}"],
    ),
}

# How each derived input is made from realistic.raw, with qemu-img (the peer's own output, so
# neither tool reads a file the other wrote).
DERIVED = {
    "realistic.vhd": ["convert", "-O", "vpc", "realistic.raw", "realistic.vhd"],
    "realistic-stream.vmdk": [
        "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
        "realistic.raw", "realistic-stream.vmdk",
    ],
    "realistic.qcow2": ["convert", "-O", "qcow2", "realistic.raw", "realistic.qcow2"],
    "realistic-c.qcow2": ["convert", "-c", "-O", "qcow2", "realistic.raw", "realistic-c.qcow2"],
    "sparse-1t.qcow2": ["convert", "-O", "qcow2", "sparse-1t.raw", "sparse-1t.qcow2"],
    "realistic.vdi": ["convert", "-O", "vdi", "realistic.raw", "realistic.vdi"],
    "realistic.vhdx": ["convert", "-O", "vhdx", "realistic.raw", "realistic.vhdx"],
}

# The output format of each case, for the content check.
OUTPUT_FORMAT = {
    "raw-to-raw": ("raw", "raw"),
    "sparse-1t-to-raw": ("raw", "raw"),
    "raw-to-vhd": ("vpc", "vpc"),
    "vhd-to-raw": ("raw", "raw"),
    "raw-to-vmdk-stream": ("vmdk", "vmdk"),
    "vmdk-stream-to-raw": ("raw", "raw"),
    "raw-to-qcow2": ("qcow2", "qcow2"),
    "raw-to-qcow2-c": ("qcow2", "qcow2"),
    "raw-to-qcow2-c-vs-W": ("qcow2", "qcow2"),
    "raw-to-qcow2-zstd-vs-W": ("qcow2", "qcow2"),
    "qcow2-to-raw": ("raw", "raw"),
    "qcow2-c-to-raw": ("raw", "raw"),
    "raw-to-vdi": ("vdi", "vdi"),
    "vdi-to-raw": ("raw", "raw"),
    "raw-to-vhdx": ("vhdx", "vhdx"),
    # Packages: the disks inside are checked by tests/migrate.rs, not here.
    "ova-export": None,
    "ova-export-vs-stream": None,
    "ova-disk-to-raw": ("raw", "raw"),
    "ova-nomf-disk-to-raw": ("raw", "raw"),
    "xva-disk-to-raw": ("raw", "raw"),
    # An XVA: its chunks and disks are checked by tests/xva_write.rs, not here.
    "xva-export": None,
    "xva-xxhash-disk-to-raw": ("raw", "raw"),
    "vhdx-to-raw": ("raw", "raw"),
    "sparse-1t-qcow2-to-raw": ("raw", "raw"),
    "sparse-1t-qcow2-to-vhd": ("vpc", "vpc"),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def write_xva(raw, xva):
    """An XVA of one disk laid out as XAPI exports one: ova.xml first, then 1 MiB chunks
    `Ref:2/%08d` each followed by its `.checksum` (SHA-1; Python has no XXH64), all-zero chunks
    left out except the first and the last."""
    import io
    import tarfile
    size = os.path.getsize(raw)

    def member(name, value):
        return f"<member><name>{name}</name><value>{value}</value></member>"

    def obj(cls, ref, *members):
        return ("<value><struct>" + member("class", cls) + member("id", ref)
                + "<member><name>snapshot</name><value><struct>" + "".join(members)
                + "</struct></value></member></struct></value>")

    objects = [
        obj("VM", "Ref:0", member("name_label", "bench"), member("HVM_boot_policy", "BIOS order"),
            "<member><name>VBDs</name><value><array><data><value>Ref:1</value></data></array>"
            "</value></member>"),
        obj("VBD", "Ref:1", member("VM", "Ref:0"), member("VDI", "Ref:2"),
            member("userdevice", "0"), member("type", "Disk")),
        obj("VDI", "Ref:2", member("virtual_size", str(size))),
    ]
    xml = ('<?xml version="1.0"?><value><struct><member><name>version</name><value><struct>'
           + member("export_vsn", "2") + "</struct></value></member>"
           + "<member><name>objects</name><value><array><data>" + "".join(objects)
           + "</data></array></value></member></struct></value>").encode()
    chunk = 1 << 20
    count = (size + chunk - 1) // chunk
    with open(raw, "rb") as f, tarfile.open(xva + ".tmp", "w", format=tarfile.USTAR_FORMAT) as t:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        add("ova.xml", xml)
        for k in range(count):
            data = f.read(chunk)
            if 0 < k < count - 1 and not any(data):
                continue
            add("Ref:2/%08d" % k, data)
            add("Ref:2/%08d.checksum" % k, hashlib.sha1(data).hexdigest().encode())
    os.rename(xva + ".tmp", xva)


def make_inputs(workdir, needed, source_dir, fs_size):
    os.makedirs(workdir, exist_ok=True)
    realistic = os.path.join(workdir, "realistic.raw")
    if not os.path.exists(realistic):
        log(f"making realistic.raw: ext4 of {fs_size} from {source_dir} (mke2fs -d)")
        tmp = realistic + ".tmp"
        subprocess.run(["truncate", "-s", fs_size, tmp], check=True)
        subprocess.run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-d", source_dir, tmp],
            check=True,
        )
        os.rename(tmp, realistic)
    sparse = os.path.join(workdir, "sparse-1t.raw")
    if not os.path.exists(sparse):
        log("making sparse-1t.raw: 1 TiB with three 8 MiB data regions")
        with open(sparse + ".tmp", "wb") as f:
            f.truncate(1 << 40)
            for i, offset in enumerate([0, 100 << 20, 500_000 << 20]):
                f.seek(offset)
                f.write(hashlib.shake_256(bytes([i])).digest(8 << 20))
        os.rename(sparse + ".tmp", sparse)
    for name in needed:
        path = os.path.join(workdir, name)
        if name == "realistic.ova" and not os.path.exists(path):
            # Made by diskferry (a VMware OVA of one disk), with its disk extracted beside it.
            log("making realistic.ova with diskferry migrate")
            ours = os.path.join(REPO, "target/release/diskferry")
            subprocess.run([ours, "migrate", "-q", "--to", "vsphere", "--name", "realistic",
                            "realistic.raw", "realistic.ova"], cwd=workdir, check=True)
            subprocess.run(["tar", "-xf", "realistic.ova", "realistic-disk1.vmdk"],
                           cwd=workdir, check=True)
        if name == "realistic-nomf.ova" and not os.path.exists(path):
            log("making realistic-nomf.ova: realistic.ova's members but its manifest (GNU tar)")
            make_inputs(workdir, ["realistic.ova"], source_dir, fs_size)
            members = subprocess.run(["tar", "-tf", "realistic.ova"], cwd=workdir, check=True,
                                     capture_output=True, text=True).stdout.split()
            kept = [m for m in members if not m.endswith(".mf")]
            stage = os.path.join(workdir, "nomf.tmp")
            os.makedirs(stage, exist_ok=True)
            subprocess.run(["tar", "-xf", os.path.join(workdir, "realistic.ova"), "-C", stage]
                           + kept, check=True)
            subprocess.run(["tar", "--format=ustar", "-cf", path + ".tmp", "-C", stage] + kept,
                           check=True)
            shutil.rmtree(stage)
            os.rename(path + ".tmp", path)
        if name == "realistic-xx.xva" and not os.path.exists(path):
            log("making realistic-xx.xva with diskferry migrate (XXH64 chunks)")
            ours = os.path.join(REPO, "target/release/diskferry")
            subprocess.run([ours, "migrate", "-q", "--to", "xenserver", "--name", "realistic",
                            "realistic.raw", "realistic-xx.xva"], cwd=workdir, check=True)
        if name == "realistic.xva" and not os.path.exists(path):
            log("making realistic.xva (write_xva)")
            write_xva(realistic, path)
        if name in DERIVED and not os.path.exists(path):
            log(f"making {name} with qemu-img")
            subprocess.run(["qemu-img"] + DERIVED[name], cwd=workdir, check=True)


GNU_TIME = "/usr/bin/time"


def timed(argv, cwd):
    """Runs argv; returns (seconds, peak RSS in KiB or None, exit code, stderr).

    The peak RSS comes from GNU time, which execs the tool from a small process: Linux carries
    the pre-exec high-water mark across exec, so wait4 on a child of this (large) Python
    process would report Python's size instead of the tool's."""
    rss_file = os.path.join(cwd, ".bench-rss")
    wrapped = argv
    if os.access(GNU_TIME, os.X_OK):
        wrapped = [GNU_TIME, "-f", "%M", "-o", rss_file] + argv
    start = time.monotonic()
    proc = subprocess.run(wrapped, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.monotonic() - start
    peak = None
    if wrapped is not argv and os.path.exists(rss_file):
        with open(rss_file) as f:
            lines = [line for line in f.read().splitlines() if line.strip().isdigit()]
        peak = int(lines[-1]) if lines else None
        os.remove(rss_file)
    return elapsed, peak, proc.returncode, proc.stderr.decode(errors="replace")


def outputs_of(workdir, dst):
    """The output file and, for multi-file formats, its extents (same stem)."""
    return [os.path.join(workdir, f) for f in os.listdir(workdir) if f.startswith(dst)]


def remove_outputs(workdir, dst):
    for p in outputs_of(workdir, dst):
        os.remove(p)


def size_of(workdir, dst):
    paths = outputs_of(workdir, dst)
    apparent = sum(os.stat(p).st_size for p in paths)
    on_disk = sum(os.stat(p).st_blocks * 512 for p in paths)
    return apparent, on_disk


def human(n):
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"]:
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def run_case(name, workdir, ours, runs, quick_runs, cold, settle=0.0):
    src, ours_args, qemu_args = CASES[name]
    tools = {
        "diskferry": [ours] + ours_args,
        # A case whose peer is a pipeline (qemu-img plus other tools) gives its whole argv.
        "qemu-img": (
            qemu_args if qemu_args[0] == "sh"
            else [ours] + qemu_args[1:] if qemu_args[0] == "{ours}"
            else ["qemu-img"] + qemu_args
        ),
    }
    dst = {t: f"out-{name}-{t}" for t in tools}
    times = {t: [] for t in tools}
    rss = {t: 0 for t in tools}
    sizes = {}
    failed = {}
    if not cold:
        # Warm means the inputs are in the page cache. A warm-up run does not put them there
        # for diskferry, whose large reads of what the cache does not hold go around it
        # (host_file/direct.rs), so read every input file of the case once through the cache.
        inputs = {src} | {a for argv in tools.values() for a in argv
                          if not a.startswith("-") and os.path.isfile(os.path.join(workdir, a))}
        for input_name in sorted(inputs):
            with open(os.path.join(workdir, input_name), "rb") as f:
                while f.read(8 << 20):
                    pass
    # One warm-up run each (binary load), then alternate tool order every round.
    # Cases under a second get more rounds: on a shared VM one stalled run in a few is common,
    # and at this scale it moves a median of 11 noticeably.
    warmup = {}
    round_ = 0
    while round_ <= runs:
        order = list(tools) if round_ % 2 == 0 else list(reversed(tools))
        for t in order:
            if t in failed:
                continue
            argv = [a.format(src=src, dst=dst[t]) for a in tools[t]]
            remove_outputs(workdir, dst[t])
            # Start every run from the same state: without this, the previous run's hundreds
            # of MiB of dirty pages are written back during the next run and the timings
            # swing fourfold. Not timed; neither tool flushes by default.
            os.sync()
            if cold:
                # Read the input from the storage, as a migration does.
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
                # ...but not the tools themselves: qemu-img loads far more shared libraries,
                # and loading them is not what is measured.
                for tool in (ours, "qemu-img"):
                    subprocess.run([tool, "--version"], capture_output=True)
                # On a VM whose balloon reports free pages to the host, the memory the drop
                # just freed is handed back a few seconds later, and a run that starts
                # meanwhile races that hand-back for it; a real migration starts long after.
                if settle > 0:
                    time.sleep(settle)
            secs, peak, code, err = timed(argv, workdir)
            if code != 0:
                failed[t] = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
                continue
            if round_ > 0:
                times[t].append(secs)
                rss[t] = max(rss[t], peak or 0)
            else:
                warmup[t] = secs
            sizes[t] = size_of(workdir, dst[t])
        if round_ == 0 and warmup and max(warmup.values()) < 1.0:
            runs = max(runs, quick_runs)
        round_ += 1
    same = None
    if not failed and OUTPUT_FORMAT.get(name) is not None:
        fa, fb = OUTPUT_FORMAT[name]
        cmp = subprocess.run(
            ["qemu-img", "compare", "-f", fa, "-F", fb, dst["diskferry"], dst["qemu-img"]],
            cwd=workdir, capture_output=True, text=True,
        )
        same = cmp.returncode == 0
    for t in tools:
        remove_outputs(workdir, dst[t])
    return times, rss, sizes, failed, same


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--quick-runs", type=int, default=31,
                    help="timed runs for cases whose warm-up takes under a second")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--workdir", default="/var/tmp/diskferry-bench")
    ap.add_argument("--source-dir", default=None,
                    help="folder copied into the realistic disk (default: the largest of "
                         "/usr/lib/x86_64-linux-gnu, /usr/lib, /usr/bin that exists)")
    ap.add_argument("--fs-size", default="2G")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="with --cold, seconds to wait after dropping the page cache before "
                         "each run (lets a ballooned VM finish reporting the freed memory)")
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache before every run (needs root), so inputs are "
                         "read from the storage")
    ap.add_argument("--diskferry", default=os.path.join(REPO, "target/release/diskferry"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()

    if shutil.which("qemu-img") is None:
        sys.exit("qemu-img is required (apt-get install qemu-utils)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    source_dir = args.source_dir or next(
        d for d in ["/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/bin"] if os.path.isdir(d)
    )
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            sys.exit(f"unknown case {c}; known: {', '.join(CASES)}")
    make_inputs(args.workdir, {CASES[c][0] for c in cases}, source_dir, args.fs_size)

    qemu_version = subprocess.run(["qemu-img", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0]
    ours_version = subprocess.run([args.diskferry, "--version"], capture_output=True,
                                  text=True).stdout.strip()
    print(f"# diskferry benchmark, {date.today().isoformat()}")
    print()
    print(f"- machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB RAM, "
          f"kernel {platform.release()}")
    print(f"- tools: {ours_version}; {qemu_version}")
    print(f"- realistic disk: ext4 of {args.fs_size} made with mke2fs -d {source_dir}")
    print(f"- {args.runs} timed runs per tool ({args.quick_runs} where a run takes under a "
          "second) after one warm-up, alternating order; medians; "
          f"{'page cache dropped (cold input)' if args.cold else 'input in the page cache'}"
          f"{f', then {args.settle:g} s of settling' if args.cold and args.settle else ''}, "
          "dirty pages flushed (sync) before every run, outputs not "
          "flushed by either tool (their default)")
    print()
    print("| case | diskferry median (min–max) | qemu-img median (min–max) | speed-up (medians) "
          "| peak RSS diskferry / qemu-img "
          "| output size (on disk) diskferry / qemu-img | same content |")
    print("|---|---|---|---|---|---|---|")
    for name in cases:
        log(f"running {name}")
        times, rss, sizes, failed, same = run_case(name, args.workdir, args.diskferry, args.runs,
                                                      args.quick_runs, args.cold, args.settle)
        cells = []
        for t in ["diskferry", "qemu-img"]:
            cells.append(f"failed: {failed[t]}" if t in failed
                         else f"{statistics.median(times[t]):.3f} s "
                              f"({min(times[t]):.3f}–{max(times[t]):.3f})")
        if not failed:
            ratio = statistics.median(times["qemu-img"]) / statistics.median(times["diskferry"])
            speed = f"{ratio:.2f}x"
            mem = (f"{human(rss['diskferry'] * 1024)} / {human(rss['qemu-img'] * 1024)}"
                   if rss["diskferry"] and rss["qemu-img"] else "n/a (no /usr/bin/time)")
            size = (f"{human(sizes['diskferry'][1])} / {human(sizes['qemu-img'][1])}")
        else:
            speed = mem = size = "n/a"
        print(f"| {name} | {cells[0]} | {cells[1]} | {speed} | {mem} | {size} | "
              f"{'yes' if same else 'n/a' if same is None else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
