"""Prints, as one JSON object, what COT (the Common OVF Tool) reads from an OVF descriptor:
the default configuration profile's CPUs, memory, NIC/serial/disk item counts, and each
DiskSection disk's capacity. Run with the venv tests/ovf_support/install-peers makes:
    target/peers/cot-venv/bin/python tests/ovf_support/cot_model.py FILE.ovf
On failure prints {"error": "..."} and exits 0, so the caller sees COT's refusal as data."""
import json
import logging
import sys

logging.disable(logging.CRITICAL)

from COT.vm_description import VMDescription  # noqa: E402
from COT.vm_description.ovf.utilities import programmatic_bytes_to_int  # noqa: E402


def main(path):
    try:
        with VMDescription.factory(path, None) as vm:
            profile = vm.default_config_profile
            cpu = vm.hardware.find_item('cpu', profile=profile)
            cpus = int(cpu.get_value(vm.VIRTUAL_QUANTITY, [profile])) if cpu else 0
            mem = 0
            ram = vm.hardware.find_item('memory', profile=profile)
            if ram:
                mem = programmatic_bytes_to_int(
                    ram.get_value(vm.VIRTUAL_QUANTITY, [profile]),
                    ram.get_value(vm.ALLOCATION_UNITS, [profile]))
            caps = []
            if vm.disk_section is not None:
                caps = [vm.get_capacity_from_disk(d)
                        for d in vm.disk_section.findall(vm.DISK)]
            out = {
                "profile": profile,
                "cpus": cpus,
                "memory": int(mem),
                "nics": vm.hardware.get_item_count('ethernet', profile),
                "serials": vm.hardware.get_item_count('serial', profile),
                "disks": vm.hardware.get_item_count('harddisk', profile),
                "capacities": caps,
            }
    except Exception as exc:  # COT's refusal is a result, not a crash of this script
        out = {"error": "%s: %s" % (type(exc).__name__, exc)}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
