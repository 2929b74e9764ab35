#!/usr/bin/env bash
# Makes the seeds of the package targets (tar_index, manifest_parse) in OUT/<target>/ with GNU
# tar, coreutils and python3 only (no diskferry build needed); nothing binary is committed.
# Usage:
#
#     fuzz/make-package-seeds.sh OUT [CORPUS]
#
# tar_index: a small VM folder (OVF, manifest, a disk, a long name, a symlink, a directory,
# chunk parts, a gzip member, a gzip stream in chunk parts) archived in each GNU tar format (v7, ustar, oldgnu, gnu, pax),
# and hand-made archives with a base-256 size, a PAX global header and a GNU long link name.
# With CORPUS (shared/corpus), its OVAs (forklift-ova, glance) too.
# manifest_parse: manifests in each spelling vendors write, and a .cert file.
set -euo pipefail

out=${1:?usage: make-package-seeds.sh OUT [CORPUS]}
corpus=${2:-}
if [ -n "$corpus" ]; then corpus=$(cd "$corpus" && pwd); fi
rm -rf "$out/tar_index" "$out/manifest_parse"
mkdir -p "$out/tar_index" "$out/manifest_parse"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

mkdir vm
cd vm
printf '<?xml version="1.0"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>\n' >vm.ovf
head -c 3000 /dev/urandom >disk1.vmdk
printf 'chunk' >disk2.vmdk.000
printf 'ed' >disk2.vmdk.001
printf 'compress me %.0s' $(seq 40) | gzip -c >disk3.vmdk.gz
# A gzip stream in 512-byte chunk parts, as ovf:chunkSize with ovf:compression="gzip".
head -c 2000 /dev/urandom | gzip -c | split -b 512 -d -a 9 - disk4.vmdk.gz.
mkdir -p "$(printf 'dir%.0s' $(seq 30))"
printf 'long' >"$(printf 'dir%.0s' $(seq 30))/$(printf 'long-name-%.0s' $(seq 12))"
ln -s disk1.vmdk link.vmdk
sha256sum vm.ovf disk1.vmdk | sed -E 's/^([0-9a-f]+)  (.*)$/SHA256(\2)= \1/' >vm.mf
cd ..
for f in v7 ustar oldgnu gnu pax; do
    if [ $f = v7 ] || [ $f = ustar ]; then
        (cd vm && tar --format=$f -cf "$out/tar_index/$f.tar" vm.ovf vm.mf disk1.vmdk \
            disk2.vmdk.000 disk2.vmdk.001 disk3.vmdk.gz disk4.vmdk.gz.00000000* link.vmdk)
    else
        (cd vm && tar --format=$f -cf "$out/tar_index/$f.tar" .)
    fi
done
# The disk cut to 100 bytes keeps the seeds small.
python3 - "$out/tar_index" <<'PY'
import sys, os
out = sys.argv[1]
def header(name, size, typ, link=b"", base256=False):
    h = bytearray(512)
    h[:len(name)] = name
    h[100:108] = b"0000644\0"; h[108:116] = b"0000000\0"; h[116:124] = b"0000000\0"
    if base256:
        h[124] = 0x80
        h[128:136] = size.to_bytes(8, "big")
    else:
        h[124:136] = b"%011o\0" % size
    h[136:148] = b"15100666000\0"
    h[156] = typ
    h[157:157 + len(link)] = link
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)
def pad(b):
    return b + bytes(-len(b) % 512)
# A base-256 size (small, so the member fits).
a = header(b"vm.ovf", 5, ord("0"), base256=True) + pad(b"<a/>\n")
open(os.path.join(out, "base256.tar"), "wb").write(a + bytes(1024))
# A PAX global header, then a member whose size and path come from an x header.
g = b"19 comment=hello!!\n"
x = b"12 size=700\n" + b"22 path=dir/disk.vmdk\n"
b = (header(b"pax_global_header", len(g), ord("g")) + pad(g)
     + header(b"PaxHeaders/disk", len(x), ord("x")) + pad(x)
     + header(b"disk", 0, ord("0")) + pad(b"\x07" * 700))
open(os.path.join(out, "pax-records.tar"), "wb").write(b + bytes(1024))
# A GNU long link name before a symlink, a hard link, a directory.
k = b"target/" * 20 + b"\0"
c = (header(b"././@LongLink", len(k), ord("K")) + pad(k)
     + header(b"sym", 0, ord("2")) + header(b"hard", 0, ord("1"), b"sym")
     + header(b"dir/", 0, ord("5")))
open(os.path.join(out, "links.tar"), "wb").write(c + bytes(1024))
PY
if [ -n "$corpus" ]; then
    for f in "$corpus"/forklift-ova/*.ova "$corpus"/glance/*.ova; do
        [ -f "$f" ] && cp "$f" "$out/tar_index/corpus-$(basename "$f")"
    done
fi

cd vm
m=$out/manifest_parse
cp vm.mf "$m/sha256.mf"
sha1sum vm.ovf disk1.vmdk | sed -E 's/^([0-9a-f]+)  (.*)$/SHA1(\2)= \1/' >"$m/sha1.mf"
sha512sum vm.ovf | sed -E 's/^([0-9a-f]+)  (.*)$/SHA512(\2)= \1/' >"$m/sha512.mf"
sha256sum vm.ovf | sed -E 's/^([0-9a-f]+)  (.*)$/SHA256 (\2) = \1/' >"$m/spaced.mf"
sha256sum vm.ovf | sed -E 's/^([0-9a-f]+)  (.*)$/SHA2-256(\2)= \U\1/;s/$/\r/' >"$m/sha2-crlf.mf"
{ printf 'SHA256(vm.mf)= %s\n' "$(sha256sum vm.mf | cut -c1-64)$(sha256sum vm.ovf | cut -c1-64)"
  printf -- '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n'; } >"$m/vm.cert"
for t in tar_index manifest_parse; do
    echo "$t: $(ls "$out/$t" | wc -l) seeds"
done
