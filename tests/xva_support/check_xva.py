"""Reads an XVA with Python alone, as an independent check of the XVAs diskferry writes
(tests/xva_write.rs): the tar with `tarfile` (plain or gzip), each chunk's checksum with
`hashlib` (SHA-1, `.checksum`) and the `xxhash` package (XXH64, `.xxhash`), and ova.xml with
`xmlrpc.client.loads`; a zstd-compressed XVA is inflated by the `zstd` tool first (Python's
tarfile reads gzip itself, zstd only from 3.14). Prints one JSON document: the members in order, each chunk with whether
its checksum matched, and ova.xml as Python loaded it.

Usage: python check_xva.py FILE.xva
"""

import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import xmlrpc.client

import xxhash


def main(path):
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"\x28\xb5\x2f\xfd":
        with tempfile.NamedTemporaryFile(suffix=".xva") as plain:
            subprocess.run(["zstd", "-dc", path], stdout=plain, check=True)
            plain.flush()
            return read(plain.name)
    return read(path)


def read(path):
    members = []
    chunks = []
    ova = None
    pending = None  # (name, data) of the chunk waiting for its checksum member
    with tarfile.open(path, "r:*") as tar:
        for info in tar:
            data = tar.extractfile(info).read() if info.isfile() else b""
            members.append({"name": info.name, "size": info.size, "type": info.type.decode()})
            if info.name == "ova.xml":
                text = data.decode("utf-8")
                text = re.sub(r"^<\?xml[^>]*\?>", "", text.strip())
                # ova.xml is a bare <value>: wrap it as the response xmlrpc.client reads.
                wrapped = "<methodResponse><params><param>" + text + "</param></params></methodResponse>"
                (ova,), _ = xmlrpc.client.loads(wrapped)
                continue
            if info.name.endswith(".checksum") or info.name.endswith(".xxhash"):
                base, ext = info.name.rsplit(".", 1)
                if pending is None or pending[0] != base:
                    chunks.append({"name": info.name, "error": "checksum without its chunk"})
                    continue
                stored = data.decode("ascii")
                if ext == "checksum":
                    got = hashlib.sha1(pending[1]).hexdigest()
                else:
                    got = xxhash.xxh64(pending[1], seed=0).hexdigest().upper()
                chunks.append(
                    {
                        "name": base,
                        "size": len(pending[1]),
                        "kind": ext,
                        "stored": stored,
                        "ok": stored == got,
                    }
                )
                pending = None
                continue
            if pending is not None:
                chunks.append({"name": pending[0], "error": "chunk without a checksum member"})
            pending = (info.name, data)
    if pending is not None:
        chunks.append({"name": pending[0], "error": "chunk without a checksum member"})
    json.dump({"members": members, "chunks": chunks, "ova": ova}, sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1])
