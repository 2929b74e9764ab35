#!/usr/bin/env bash
# Makes the fuzz seeds in OUT (one folder per target), with diskferry itself: nothing binary
# is committed. Usage:
#
#     fuzz/make-seeds.sh OUT [CORPUS]
#
# OUT gets open_any/, qcow_parse/, qcow2_check/, vhd_parse/, vmdk_descriptor/, vmdk_sparse/,
# vdi_parse/, ovf_parse/, libvirt_domain/ and bitmap_edit/ (made anew; bitmap_edit's need
# qemu-img and qemu-io).
# CORPUS, when given, is the shared third-party corpus (shared/corpus): a few of its small
# files, and every qcow2/qcow file, are read from there into OUT. The diskferry binary is
# $DISKFERRY, else target/release/diskferry of this checkout (built with
# `cargo build --release` when missing). Needs python3 for the hand-made seeds; qemu-img and qemu-io, when installed, make more.
set -euo pipefail

out=${1:?usage: make-seeds.sh OUT [CORPUS]}
corpus=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
diskferry=${DISKFERRY:-$root/target/release/diskferry}
if [ ! -x "$diskferry" ]; then
    (cd "$root" && cargo build --release --quiet)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out"
mkdir -p "$out"/{open_any,qcow_parse,qcow2_check,vhd_parse,vmdk_descriptor,vmdk_sparse,ovf_parse,libvirt_domain,vdi_parse,bitmap_edit}
out=$(cd "$out" && pwd)
cd "$work"

# 32 KiB: 4 KiB of text, 24 KiB of zeros, 4 KiB of text: small, compressible, with a hole
# for the sparse formats to leave out.
python3 - <<'EOF'
text = b"diskferry fuzz seed " * 205
open("s.raw", "wb").write(text[:4096] + bytes(24576) + text[-4096:])
EOF

df() { "$diskferry" "$@" >/dev/null; }
df convert -O vhd -o block_size=4K s.raw dyn.vhd
df convert -O vhd -o subformat=fixed s.raw fixed.vhd
df convert -O vhd -o block_size=4K -B dyn.vhd s.raw diff.vhd
df convert -O vmdk -o subformat=monolithicSparse s.raw sparse.vmdk
df convert -O vmdk -o subformat=streamOptimized s.raw stream.vmdk
df convert -O vmdk -o subformat=monolithicSparse -B sparse.vmdk s.raw delta.vmdk
df convert -O vmdk -o subformat=monolithicFlat s.raw flat.vmdk
df convert -O vmdk -o subformat=twoGbMaxExtentSparse s.raw split.vmdk
df convert -O vmdk -o subformat=vmfs s.raw vmfs.vmdk
df convert -O vdi -o block_size=4K s.raw dyn.vdi
df convert -O vdi -o block_size=4K,static=on s.raw static.vdi
df convert -O vdi -o block_size=4K -B dyn.vdi s.raw diff.vdi

# Regression: a differencing VHD whose first parent locator is a Mac X file URL with '%'
# before a multi-byte character ("file://%€/p.vhd"). The URL decoder once took the two bytes
# after '%' as a str slice, which ends inside the three-byte '€' and panicked (a two-byte
# character such as 'é' fills the slice exactly and would not). The W2ru locator of diff.vhd
# becomes MacX with that text, and the header checksum is made right again so the parser
# reaches the locator.
python3 - diff.vhd macx-percent.vhd <<'EOF'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
h = 512  # the dynamic header, right after the footer copy
assert b[h:h + 8] == b"cxsparse", "diff.vhd has no dynamic header at 512"
url = "file://%€/p.vhd".encode()
for i in range(8):
    e = h + 576 + 24 * i
    code, space, length, _, offset = struct.unpack(">4sIIIQ", b[e:e + 24])
    if code == b"W2ru":
        b[e:e + 12] = struct.pack(">4sII", b"MacX", space, len(url))
        b[offset:offset + max(length, len(url))] = url.ljust(max(length, len(url)), b"\0")
        break
else:
    raise SystemExit("diff.vhd has no W2ru locator")
b[h + 36:h + 40] = bytes(4)
b[h + 36:h + 40] = struct.pack(">I", ~sum(b[h:h + 1024]) & 0xFFFFFFFF)
open(sys.argv[2], "wb").write(b)
EOF

# Each target's seeds. vmdk_sparse's first byte picks the magic it writes over the next four
# bytes (0 KDMV, 1 COWD, 2 SESPARSE): its seeds are a selector byte, then a sparse extent.
cp dyn.vhd fixed.vhd diff.vhd macx-percent.vhd "$out/vhd_parse/"
cp flat.vmdk split.vmdk vmfs.vmdk "$out/vmdk_descriptor/"
with_selector() { { printf "\\x$1"; cat "$2"; } >"$3"; }
with_selector 00 sparse.vmdk "$out/vmdk_sparse/sparse"
with_selector 00 stream.vmdk "$out/vmdk_sparse/stream"
with_selector 00 delta.vmdk "$out/vmdk_sparse/delta"
with_selector 00 split-s001.vmdk "$out/vmdk_sparse/split-s001"
cp dyn.vhd fixed.vhd diff.vhd macx-percent.vhd sparse.vmdk stream.vmdk delta.vmdk flat.vmdk \
    "$out/open_any/"
cp dyn.vdi static.vdi diff.vdi "$out/vdi_parse/"

# qcow2 and qcow v1. diskferry's own writer makes a few (so qcow_parse has seeds without
# qemu-img); qemu-img, where it is installed, makes the rest: every layout qemu writes that
# the readers handle, small (512 B to 64 KiB clusters over the 32 KiB disk).
df convert -O qcow2 -o cluster_size=4096 s.raw df.qcow2
df convert -c -O qcow2 -o cluster_size=4096 s.raw df-zlib.qcow2
df convert -O qcow -c s.raw df-v1.qcow
cp df.qcow2 df-zlib.qcow2 df-v1.qcow "$out/qcow_parse/"
if command -v qemu-img >/dev/null; then
    q() { qemu-img "$@" >/dev/null; }
    q convert -f raw -O qcow2 -o cluster_size=4096 s.raw plain.qcow2
    q convert -c -f raw -O qcow2 -o cluster_size=4096 s.raw zlib.qcow2
    q convert -c -f raw -O qcow2 -o cluster_size=4096,compression_type=zstd s.raw zstd.qcow2
    q convert -f raw -O qcow2 -o cluster_size=16384,extended_l2=on s.raw subclusters.qcow2
    q convert -f raw -O qcow2 -o compat=0.10,cluster_size=4096 s.raw v2.qcow2
    q convert -f raw -O qcow2 -o cluster_size=512 s.raw c512.qcow2
    q convert -c -f raw -O qcow2 -o cluster_size=512 s.raw c512-zlib.qcow2
    q convert -f raw -O qcow2 s.raw c64k.qcow2
    q convert -f raw -O qcow2 -o cluster_size=4096,refcount_bits=1,lazy_refcounts=on s.raw \
        refcount1.qcow2
    q convert -f raw -O qcow2 -o cluster_size=4096,refcount_bits=64 s.raw refcount64.qcow2
    q create -f qcow2 -o cluster_size=4096,backing_file=plain.qcow2,backing_fmt=qcow2 \
        child.qcow2
    # Backing names the gate refuses or finds nowhere: absolute, leading out, missing.
    q create -f qcow2 -u -o cluster_size=4096 -b /nonexistent/base.qcow2 -F qcow2 \
        child-absolute.qcow2 32K
    q create -f qcow2 -u -o cluster_size=4096 -b ../../up/base.raw -F raw \
        child-dotdot.qcow2 32K
    # Data in an external file, raw and not (the file itself is not there at fuzz time).
    q create -f qcow2 -o cluster_size=4096,data_file=data.raw,data_file_raw=on \
        datafile-raw.qcow2 32K
    q create -f qcow2 -o cluster_size=4096,data_file=data2.raw datafile.qcow2 32K
    # Internal snapshots: one, and two with data written between them (two L1 tables that
    # differ), one name reused as the other's ID.
    cp plain.qcow2 snapshot.qcow2
    q snapshot -c one snapshot.qcow2
    cp plain.qcow2 snapshots.qcow2
    q snapshot -c first snapshots.qcow2
    qemu-io -f qcow2 -c 'write -P 0x5a 8k 8k' snapshots.qcow2 >/dev/null
    q snapshot -c 1 snapshots.qcow2
    qemu-io -f qcow2 -c 'write -z 0 4k' snapshots.qcow2 >/dev/null
    cp subclusters.qcow2 snapshot-l2ext.qcow2
    q snapshot -c sub snapshot-l2ext.qcow2
    # Persistent dirty bitmaps (the bitmaps extension and directory).
    cp plain.qcow2 bitmap.qcow2
    q bitmap --add bitmap.qcow2 b0
    q bitmap --add -g 65536 --disable bitmap.qcow2 b1
    q create -f vdi empty.vdi 32K
    cp empty.vdi "$out/vdi_parse/"
    # bitmap_edit's seeds: small qcow2 v3 images (1 MiB disks) whose bitmaps have bits set
    # (qemu-io's writes dirty the enabled ones), in 512 B, 4 KiB and 64 KiB clusters; bitmaps
    # of 512 B, 4 KiB and 64 KiB granularity, disabled, merged, and one flagged in use (as a
    # killed qemu leaves it); one image without bitmaps (the first is added) and a v2 image
    # (add is refused).
    bm() { # NAME CLUSTER: a 1 MiB image with b0 (enabled), b1 (64 KiB, disabled after a write)
        q create -f qcow2 -o cluster_size="$2" "$1" 1M
        q bitmap --add "$1" b0
        q bitmap --add -g 65536 "$1" b1
        qemu-io -f qcow2 -c 'write -P 0x11 0 4k' -c 'write -P 0x22 300k 70k' "$1" >/dev/null
        q bitmap --disable "$1" b1
        qemu-io -f qcow2 -c 'write -P 0x33 900k 8k' "$1" >/dev/null
    }
    bm bm-4k.qcow2 4096
    bm bm-512.qcow2 512
    bm bm-64k.qcow2 65536
    cp bm-4k.qcow2 bm-merged.qcow2
    q bitmap --add -g 512 bm-merged.qcow2 fine
    q bitmap --merge b1 --merge b0 bm-merged.qcow2 fine
    qemu-io -f qcow2 -c 'write -z 512k 64k' bm-merged.qcow2 >/dev/null
    # The in-use flag (bit 0 of the flags at byte 12 of each directory entry) set on b0,
    # the directory's first entry, as a qemu that was killed while it tracked writes left it.
    cp bm-4k.qcow2 bm-inuse.qcow2
    python3 - bm-inuse.qcow2 <<'EOF'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
at = struct.unpack(">I", b[100:104])[0]  # header_length: the extensions follow
while True:
    kind, length = struct.unpack(">II", b[at:at + 8])
    if kind == 0x23852875:  # the bitmaps extension
        _, _, _, directory = struct.unpack(">IIQQ", b[at + 8:at + 32])
        b[directory + 15] |= 1
        break
    if kind == 0:
        raise SystemExit("bm-inuse.qcow2 has no bitmaps extension")
    at += 8 + (length + 7) // 8 * 8
open(sys.argv[1], "wb").write(b)
EOF
    q create -f qcow2 -o cluster_size=4096 bm-none.qcow2 1M
    qemu-io -f qcow2 -c 'write -P 0x44 64k 4k' bm-none.qcow2 >/dev/null
    q create -f qcow2 -o compat=0.10,cluster_size=4096 bm-v2.qcow2 1M
    cp bm-4k.qcow2 bm-512.qcow2 bm-64k.qcow2 bm-merged.qcow2 bm-inuse.qcow2 bm-none.qcow2 \
        bm-v2.qcow2 bitmap.qcow2 "$out/bitmap_edit/"
    # QCOW version 1: plain and over a backing file (qemu-img convert -c fails for qcow: the
    # compressed one, df-v1.qcow, is diskferry's).
    q convert -f raw -O qcow s.raw v1.qcow
    q create -f qcow -u -b plain.qcow2 -F qcow2 v1-child.qcow 32K
    cp plain.qcow2 zlib.qcow2 zstd.qcow2 subclusters.qcow2 v2.qcow2 child.qcow2 \
        snapshot.qcow2 v1.qcow "$out/open_any/"
    cp plain.qcow2 zlib.qcow2 zstd.qcow2 subclusters.qcow2 v2.qcow2 c512.qcow2 \
        c512-zlib.qcow2 c64k.qcow2 refcount1.qcow2 refcount64.qcow2 child.qcow2 \
        child-absolute.qcow2 child-dotdot.qcow2 datafile-raw.qcow2 datafile.qcow2 \
        snapshot.qcow2 snapshots.qcow2 snapshot-l2ext.qcow2 bitmap.qcow2 v1.qcow v1-child.qcow \
        "$out/qcow_parse/"
fi

if [ -n "$corpus" ]; then
    # TARGET FILE...: corpus files that exist, decompressed when .gz or .bz2, named after
    # their corpus folder too (corpus-dissect.hypervisor-snapshot.qcow2): a bare basename
    # overwrote the seed of the same name made above.
    add() {
        local target=$1
        shift
        for f in "$@"; do
            local p=$corpus/$f name
            name=corpus-${f%%/*}-$(basename "$f")
            case $f in
            *.gz) [ -f "$p" ] && zcat "$p" >"$out/$target/${name%.gz}" ;;
            *.bz2) [ -f "$p" ] && bzcat "$p" >"$out/$target/${name%.bz2}" ;;
            *) [ -f "$p" ] && cat "$p" >"$out/$target/$name" ;;
            esac
        done
        return 0
    }
    add vhd_parse qemu-iotests/afl5.img libyal/libvhdi/file_footer.1 \
        qemu-iotests/virtualpc-dynamic.vhd qemu-iotests/hyperv2012r2-dynamic.vhd
    add vmdk_descriptor libyal/libvmdk/descriptor_file.1 vmdk-descriptors/ms3-win.vmdk \
        vmdk-rs/monolithicFlat.vmdk
    add open_any qemu-iotests/afl5.img qemu-iotests/afl9.vmdk qemu-iotests/empty.bochs \
        qemu-iotests/fake.parallels qemu-iotests/iotest-version3.vmdk \
        qemu-iotests/virtualpc-dynamic.vhd qemu-iotests/bz2/simple-dmg.dmg.bz2 \
        libyal/libqcow/file_header.1 dissect.hypervisor/qcow2/backing-chain-3.qcow2.gz
    # Every qcow2 and qcow file of the corpus: real images from other tools (dfvfs,
    # dissect.hypervisor) and libqcow's header-only test file, whose tables lie past its end.
    # The larger ones are cut to -max_len by libFuzzer.
    add qcow_parse libyal/libqcow/file_header.1 dfvfs/image.qcow2 dfvfs/vsstest.qcow2 \
        dfvfs/ext2.qcow2 dfvfs/ext2.prev-76a07f7.qcow2 dfvfs/lvm.qcow2 dfvfs/lvmtest.qcow2 \
        dfvfs/windows_volume.qcow2 dissect.hypervisor/qcow2/backing-chain-1.qcow2.gz \
        dissect.hypervisor/qcow2/backing-chain-2.qcow2.gz \
        dissect.hypervisor/qcow2/backing-chain-3.qcow2.gz \
        dissect.hypervisor/qcow2/basic.qcow2.gz dissect.hypervisor/qcow2/basic-zstd.qcow2.gz \
        dissect.hypervisor/qcow2/data-file.qcow2.gz dissect.hypervisor/qcow2/snapshot.qcow2.gz
    # The SESPARSE sample, with its selector byte (it is large: -max_len cuts it).
    if [ -f "$corpus/dissect.hypervisor/vmdk/sesparse.vmdk.gz" ]; then
        { printf '\x02'; zcat "$corpus/dissect.hypervisor/vmdk/sesparse.vmdk.gz"; } \
            >"$out/vmdk_sparse/sesparse"
    fi
    if [ -f "$corpus/qemu-iotests/afl9.vmdk" ]; then
        with_selector 00 "$corpus/qemu-iotests/afl9.vmdk" "$out/vmdk_sparse/afl9"
    fi
fi

# ovf_parse's seeds: a small descriptor of our own, and with CORPUS every corpus OVF (plain,
# and the .ovf member of each corpus OVA).
cat >"$out/ovf_parse/small.ovf" <<'OVF'
<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:id="f1" ovf:href="d.vmdk" ovf:size="1024"/></References>
  <DiskSection><Info/><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="2"
    ovf:capacityAllocationUnits="byte * 2^30"
    ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="vm"><Info/><Name>vm</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest"><Info/></OperatingSystemSection>
    <VirtualHardwareSection><Info/>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType><rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType></Item>
      <Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:Parent>3</rasd:Parent><rasd:AddressOnParent>0</rasd:AddressOnParent></Item>
      <Item><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:Connection>VM Network</rasd:Connection><rasd:Address>00:50:56:aa:bb:cc</rasd:Address></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
OVF
if [ -n "$corpus" ]; then
    for f in "$corpus"/cot/*.ovf "$corpus"/virt-v2v-ovf/*.ovf "$corpus"/configs/ovf/*.ovf; do
        [ -f "$f" ] && cp "$f" "$out/ovf_parse/corpus-$(basename "$(dirname "$f")")-$(basename "$f")"
    done
    for ova in "$corpus"/forklift-ova/*.ova "$corpus"/glance/*.ova; do
        [ -f "$ova" ] || continue
        python3 - "$ova" "$out/ovf_parse/corpus-$(basename "$ova").ovf" <<'PY' || true
import sys, tarfile
try:
    with tarfile.open(sys.argv[1]) as t:
        for m in t.getmembers():
            if m.name.endswith(".ovf") and m.isfile():
                open(sys.argv[2], "wb").write(t.extractfile(m).read())
                break
except tarfile.TarError:
    pass
PY
    done
fi

if [ -n "$corpus" ]; then
    add vdi_parse pyVBox/TestHD-2009-sun.vdi pyVBox/TestHD.vdi
fi

# qcow2_check's seeds: qcow_parse's QCOW2 files.
cp "$out"/qcow_parse/*.qcow2 "$out/qcow2_check/"
for t in open_any qcow_parse qcow2_check vhd_parse vmdk_descriptor vmdk_sparse ovf_parse vdi_parse \
    bitmap_edit; do
    echo "$t: $(ls "$out/$t" | wc -l) seeds, largest $(wc -c "$out/$t"/* | sort -n | tail -2 | head -1 | awk '{print $1}') bytes"
done

# libvirt_domain's seeds: the corpus's libvirt domain XMLs, when CORPUS is given.
if [ -n "${2:-}" ]; then
  for f in "$2"/configs/libvirt/*.xml "$2"/configs/xen/*.xml "$2"/configs/libvirt-vmx2xml/*.xml; do
    [ -f "$f" ] && cp "$f" "$out/libvirt_domain/$(basename "$f")"
  done
fi
