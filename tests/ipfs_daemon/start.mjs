// Start js-ipfs 0.66.1 as an offline Kubo-compatible RPC daemon for dtnode's storage tests.
// Usage: node start.mjs REPO_DIR API_PORT
// Prints "API ready /ip4/127.0.0.1/tcp/PORT" once /api/v0 answers; stops cleanly on SIGTERM/SIGINT.
import { create } from 'ipfs-core'
import { HttpApi } from 'ipfs-http-server'

const [repo, apiPort] = process.argv.slice(2)
if (!repo || !apiPort) {
  console.error('usage: node start.mjs REPO_DIR API_PORT')
  process.exit(2)
}

const ipfs = await create({
  repo,
  offline: true, // no swarm, no bootstrap, nothing leaves the machine
  silent: true,
  config: {
    Addresses: { API: `/ip4/127.0.0.1/tcp/${apiPort}`, Gateway: '', Swarm: [], RPC: '' },
    Bootstrap: [],
    Discovery: { MDNS: { Enabled: false }, webRTCStar: { Enabled: false } }
  }
})
const api = new HttpApi(ipfs)
await api.start()
console.log(`API ready /ip4/127.0.0.1/tcp/${apiPort}`)

let stopping = false
async function stop () {
  if (stopping) return
  stopping = true
  try {
    await api.stop()
    await ipfs.stop()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
