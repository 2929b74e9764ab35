#!/usr/bin/env bash
# Makes the seeds of the xva_parse target in OUT/xva_parse/ with python3 only (no diskferry
# build needed); nothing binary is committed. Usage:
#
#     fuzz/make-xva-seeds.sh OUT
#
# Small XVAs laid out as XAPI and Xen Orchestra write them, kept under 64 KiB by using short
# chunks (XAPI's importer accepts any length): SHA-1 and XXH64 checksums, an omitted chunk,
# a keep-alive empty chunk, two disks, a CD and a NIC, a PV guest; a gzip variant (python3's
# standard library has no zstd); and ova.xml alone (the target parses input that starts with
# '<' as ova.xml); and the legacy layout (appliance 0.1, gzip chunks).
set -euo pipefail
out=${1:?usage: make-xva-seeds.sh OUT}
mkdir -p "$out/xva_parse"
python3 - "$out/xva_parse" <<'PY'
import gzip, hashlib, io, os, sys, tarfile

M = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)

def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M

def rnd(acc, v):
    return (rotl((acc + v * P2) & M, 31) * P1) & M

def xxh64(b, seed=0):
    n, i = len(b), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M, (seed + P2) & M, seed, (seed - P1) & M]
        while i + 32 <= n:
            for j in range(4):
                v[j] = rnd(v[j], int.from_bytes(b[i + 8 * j:i + 8 * j + 8], "little"))
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M
        for x in v:
            h = ((h ^ rnd(0, x)) * P1 + P4) & M
    else:
        h = (seed + P5) & M
    h = (h + n) & M
    while i + 8 <= n:
        h ^= rnd(0, int.from_bytes(b[i:i + 8], "little"))
        h = (rotl(h, 27) * P1 + P4) & M
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(b[i:i + 4], "little") * P1) & M
        h = (rotl(h, 23) * P2 + P3) & M
        i += 4
    while i < n:
        h ^= (b[i] * P5) & M
        h = (rotl(h, 11) * P1) & M
        i += 1
    h ^= h >> 33; h = (h * P2) & M; h ^= h >> 29; h = (h * P3) & M; h ^= h >> 32
    return h

assert xxh64(b"") == 0xEF46DB3751D8E999

def v(x): return "<value>%s</value>" % x
def member(n, x): return "<member><name>%s</name>%s</member>" % (n, x)
def st(*ms): return "<value><struct>%s</struct></value>" % "".join(ms)
def arr(*xs): return "<value><array><data>%s</data></array></value>" % "".join(xs)
def obj(c, i, *ms): return st(member("class", v(c)), member("id", v(i)), member("snapshot", st(*ms)))

def ova_xml(disks, pv=False):
    objs = [obj("VM", "Ref:0",
        member("name_label", v("seed")), member("memory_static_max", v("1073741824")),
        member("memory_dynamic_max", v("536870912")), member("memory_dynamic_min", v("536870912")),
        member("VCPUs_max", v("<int>2</int>")), member("VCPUs_at_startup", v("2")),
        member("domain_type", v("pv" if pv else "hvm")),
        member("HVM_boot_policy", v("" if pv else "BIOS order")),
        member("HVM_boot_params", st(member("order", v("dc")), member("firmware", v("uefi")))),
        member("platform", st(member("secureboot", v("auto")), member("cores-per-socket", v("2")))),
        member("is_a_snapshot", v("<boolean>0</boolean>")),
        member("VBDs", arr(*[v("Ref:1%d" % i) for i in range(len(disks) + 1)])))]
    for i, (ref, ud, size, _) in enumerate(disks):
        objs.append(obj("VBD", "Ref:1%d" % i, member("VM", v("Ref:0")), member("VDI", v(ref)),
            member("userdevice", v(str(ud))), member("type", v("Disk")),
            member("bootable", v("<boolean>%d</boolean>" % (i == 0)))))
        objs.append(obj("VDI", ref, member("virtual_size", v(str(size))), member("name_label", v("d%d" % i))))
    objs.append(obj("VBD", "Ref:1%d" % len(disks), member("VM", v("Ref:0")), member("VDI", v("Ref:99")),
        member("userdevice", v("3")), member("type", v("CD"))))
    objs.append(obj("VIF", "Ref:30", member("VM", v("Ref:0")), member("network", v("Ref:31")),
        member("device", v("0")), member("MAC", v("aa:bb:cc:dd:ee:ff"))))
    objs.append(obj("network", "Ref:31", member("name_label", v("LAN"))))
    return ('<?xml version="1.0"?>' + st(
        member("version", st(member("product_brand", v("XCP-ng")), member("export_vsn", v("2")),
                              member("xapi_major", v("1")), member("xapi_minor", v("20")))),
        member("objects", arr(*objs)))).encode()

def tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name); info.size = len(data); info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()

def chunks(ref, parts, kind):
    out = []
    for number, data in parts:
        name = "%s/%08d" % (ref, number)
        out.append((name, data))
        if kind == "sha1":
            out.append((name + ".checksum", hashlib.sha1(data).hexdigest().encode()))
        else:
            out.append((name + ".xxhash", ("%016X" % xxh64(data)).encode()))
    return out

seeds = {}
a = os.urandom(3000)
# One disk, one short chunk.
seeds["one"] = [("Ref:3", 0, 3000, chunks("Ref:3", [(0, a)], "sha1"))]
# Short first chunk, an omitted chunk (1 MiB of zeros), a keep-alive, a short last chunk.
gap = 1000 + (1 << 20) + 700
seeds["gap"] = [("Ref:3", 0, gap, chunks("Ref:3", [(0, a[:1000]), (2, b""), (3, a[:700])], "xxh"))]
# Two disks, one of each checksum.
seeds["two"] = [("Ref:3", 0, 3000, chunks("Ref:3", [(0, a)], "sha1")),
                ("Ref:5", 1, 2000, chunks("Ref:5", [(0, a[:1500]), (1, a[:500])], "xxh"))]
for name, disks in seeds.items():
    xml = ova_xml([(r, u, s, c) for r, u, s, c in disks])
    members = [("ova.xml", xml)] + [m for d in disks for m in d[3]]
    data = tar(members)
    open(os.path.join(sys.argv[1], "seed-" + name + ".xva"), "wb").write(data)
    if name == "gap":
        open(os.path.join(sys.argv[1], "seed-" + name + ".xva.gz"), "wb").write(gzip.compress(data, mtime=0))
    open(os.path.join(sys.argv[1], "seed-" + name + ".ova.xml"), "wb").write(xml)
pv = ova_xml([("Ref:3", 0, 3000, None)], pv=True)
open(os.path.join(sys.argv[1], "seed-pv.ova.xml"), "wb").write(pv)
# The legacy layout (appliance 0.1): two disks, each a folder of gzip chunks.
legacy = ("<?xml version=\"1.0\" ?>\n<appliance version=\"0.1\"><vm name=\"vm\">"
          "<label>old</label><shortdesc>legacy</shortdesc><config mem_set=\"268435456\" vcpus=\"2\"/>"
          "<hacks is_hvm=\"false\" kernel_boot_cmdline=\"root=/dev/sda1 ro\"/>"
          "<vbd device=\"sda\" function=\"root\" mode=\"w\" vdi=\"vdi_sda\"/>"
          "<vbd device=\"sdb\" function=\"data\" mode=\"r\" vdi=\"vdi_sdb\"/></vm>"
          "<vdi name=\"vdi_sda\" size=\"5000\" source=\"file://sda\" type=\"dir-gzipped-chunks\" variety=\"system\"/>"
          "<vdi name=\"vdi_sdb\" size=\"4096\" source=\"file://sdb\" type=\"dir-gzipped-chunks\"/>"
          "</appliance>\n").encode()
gz = lambda b: gzip.compress(b, mtime=0)
data = tar([("ova.xml", legacy), ("sda/chunk-000000000.gz", gz(a[:2000])),
            ("sda/chunk-000000001.gz", gz(a[:2000])), ("sdb/chunk-000000000.gz", gz(a[:1000]))])
open(os.path.join(sys.argv[1], "seed-legacy.xva"), "wb").write(data)
open(os.path.join(sys.argv[1], "seed-legacy.ova.xml"), "wb").write(legacy)
PY
ls -la "$out/xva_parse"
