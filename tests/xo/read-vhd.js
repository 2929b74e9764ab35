// Reads a dynamic or differencing-free VHD with Xen Orchestra's vhd-lib, which checks the
// footer and header checksums, that the two footer copies are equal and its header rules,
// then streams the disk's content. Prints {"size": N, "sha256": "..."} on success; on a
// refusal prints the library's error to stderr and exits 1.
//
// Usage: node read-vhd.js IMAGE.vhd
'use strict'
const crypto = require('crypto')
const fs = require('fs/promises')
const { createContentStream } = require('vhd-lib')

// The file-system handler vhd-lib expects (the subset it uses), over node's fs.
const handler = {
  async openFile(path) {
    return fs.open(path, 'r')
  },
  async closeFile(file) {
    await file.close()
  },
  async read(file, buffer, position) {
    const { bytesRead } = await file.read(buffer, 0, buffer.length, position)
    return { bytesRead, buffer }
  },
  async getSize(file) {
    return (await file.stat()).size
  },
}

async function main() {
  const hash = crypto.createHash('sha256')
  let size = 0
  for await (const chunk of createContentStream(handler, process.argv[2])) {
    hash.update(chunk)
    size += chunk.length
  }
  console.log(JSON.stringify({ size, sha256: hash.digest('hex') }))
}

main().catch(error => {
  console.error(`vhd-lib: ${error.message}`)
  process.exit(1)
})
