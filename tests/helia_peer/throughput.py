"""Bitswap throughput between a dtnode and Helia on loopback, both directions (not part of the test run).

    .venv/bin/python -m tests.helia_peer.throughput [MiB]    (default 64; needs scripts/setup.sh)

dtnode -> Helia: Helia's own timing of ``cat`` (dial excluded). Helia -> dtnode: ``BlockExchange.fetch_dag`` of
the same random bytes as Helia imported them with Kubo's layout (256 KiB leaves) and with its own (1 MiB leaves).
Every transfer is checked against the sha256 of the bytes sent.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from storage.cid import parse_cid
from storage.unixfs import read_file
from tests.storage.test_helia_interop import dtnode, helia_serving, run_helia


async def main(mib: int) -> None:
    size = mib << 20
    data = os.urandom(size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with dtnode(root / "serving") as node:
            cid = await node.content.put(data)
            (result,) = await run_helia("fetch", "--dial", node.addr, "--cid", cid, timeout_s=600)
            assert result["sha256"] == hashlib.sha256(data).hexdigest()
            print(f"dtnode -> Helia  {mib} MiB: {result['ms'] / 1000:.2f} s, {size / 1e3 / result['ms']:.1f} MB/s")
        path = root / "file.bin"
        path.write_bytes(data)
        async with dtnode(root / "fetching") as node, helia_serving(path, timeout_s=600) as helia:
            provider = info_from_p2p_addr(multiaddr.Multiaddr(helia["addrs"][0]))
            for layout in ("kubo", "helia"):
                cid_root = parse_cid(helia["cids"][layout])
                started = time.perf_counter()
                await node.exchange.fetch_dag(cid_root, [provider], timeout_s=600)
                took = time.perf_counter() - started
                assert await read_file(cid_root, node.store.get) == data
                print(f"Helia -> dtnode  {mib} MiB ({layout} layout): {took:.2f} s, {size / 1e6 / took:.1f} MB/s")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 64)
