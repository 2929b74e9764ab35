// Writes an XVA with Xen Orchestra's own XVA writer (@xen-orchestra/xva, what XO uses to
// import VMs into XAPI), as an independent producer for tests/xva.rs. The writer streams a
// tar into `xapi.putResource`; here a stand-in for XAPI's connection takes that stream into
// a file instead. Each raw disk file becomes one disk (Xen Orchestra pads the last chunk to
// 1 MiB and rounds the VDI's virtual size up to match).
//
// Usage: node write-xva.mjs OUT.xva NAME MAC DISK.raw [DISK.raw ...]
import { createReadStream, createWriteStream, statSync } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { importVm } from '@xen-orchestra/xva/importVm.mjs'

const [out, name, mac, ...disks] = process.argv.slice(2)

// The part of XAPI's client the writer calls: a task, and the HTTP PUT of the tar.
const xapi = {
  async task_create() {
    return 'OpaqueRef:task'
  },
  async putResource(stream) {
    await pipeline(stream, createWriteStream(out))
    return 'OpaqueRef:0123abcd-imported'
  },
}

const vm = {
  name_label: name,
  memory: 512 * 1024 * 1024,
  nCpus: 2,
  firmware: 'bios',
  vdis: disks.map((path, i) => ({ name_label: `disk${i}`, virtual_size: statSync(path).size })),
  vhds: disks.map(path => ({
    footer: { currentSize: statSync(path).size },
    rawContent: async () => createReadStream(path),
  })),
  networks: [{ macAddress: mac, isGenerated: false }],
}

await importVm(vm, xapi, { $ref: 'OpaqueRef:sr', name_label: 'Local storage' }, {
  name_label: 'LAN',
  bridge: 'xenbr0',
})
