#!/usr/bin/env python3
"""Alternating A/B timing of whole commands, for tuning the engine against qemu-img.

    bench/ab.py [--cold] [--rounds 12] [--workdir DIR] NAME=COMMAND [NAME=COMMAND ...]

Each round runs every command once (the order reversed every other round), after removing the
files whose names start with "out-ab" in the work folder, `sync`, and with --cold dropping the
page cache (root); the first round is a warm-up. Prints each command's median, min and max.
Commands run in the work folder; put `env VAR=1` in front of one to vary a setting.
Example:

    bench/ab.py --cold --rounds 16 \\
        'ours=target/release/diskferry convert -O raw realistic.raw out-ab1' \\
        'qemu=qemu-img convert -O raw realistic.raw out-ab2'
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--workdir", default="/var/tmp/diskferry-bench")
    ap.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    args = ap.parse_args()
    cmds = []
    for c in args.commands:
        name, sep, command = c.partition("=")
        if not sep:
            sys.exit(f"expected NAME=COMMAND, got {c!r}")
        cmds.append((name, shlex.split(command)))
    times = {name: [] for name, _ in cmds}
    for r in range(args.rounds + 1):
        order = cmds if r % 2 == 0 else list(reversed(cmds))
        for name, argv in order:
            for f in os.listdir(args.workdir):
                if f.startswith("out-ab"):
                    os.remove(os.path.join(args.workdir, f))
            os.sync()
            if args.cold:
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
            start = time.monotonic()
            p = subprocess.run(argv, cwd=args.workdir, capture_output=True)
            elapsed = time.monotonic() - start
            if p.returncode:
                sys.exit(f"{name} failed: {p.stderr.decode(errors='replace')[-500:]}")
            if r > 0:
                times[name].append(elapsed)
    for name, _ in cmds:
        t = times[name]
        print(f"{name:16} median {statistics.median(t):.3f} s  "
              f"min {min(t):.3f}  max {max(t):.3f}  ({len(t)} runs)")


if __name__ == "__main__":
    main()
