"""Content routing with an independent IPFS implementation: a Helia node (JS, ``@libp2p/kad-dht`` on
``/ipfs/kad/1.0.0``) adds a file and announces it in the DHT; a dtnode that is not connected to it and is not told
about it finds it through the DHT and fetches the file over bitswap, verified block by block.

Topology: Helia dials dtnode B (a DHT server) and sends B its provider record; dtnode A knows only B. This is the
"dataset pinned only in an IPFS node that has the DHT" case of issue 17, on loopback.
Skipped only when the Helia project is not installed (``scripts/setup.sh``); under CI that fails.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storage.cid import parse_cid
from storage.exchange import ExchangeConfig
from storage.unixfs import import_bytes
from tests.p2p.routing_nodes import routing_nodes
from tests.storage.conftest import deterministic_bytes
from tests.storage.helia import helia_running, require_helia
from tests.storage.test_exchange import until

FETCH_TIMEOUT_S = 30.0
FILE_BYTES = 2 * (1 << 20) + 777


@pytest.fixture(autouse=True)
def _helia_installed() -> None:
    require_helia("@libp2p/kad-dht")


async def test_dtnode_finds_a_file_helia_announced_in_the_dht(tmp_path: Path) -> None:
    data = b"".join(deterministic_bytes(FILE_BYTES, "helia-dht"))
    path = tmp_path / "dataset.bin"
    path.write_bytes(data)
    fast = ExchangeConfig(block_timeout_s=2.0, stream_timeout_s=5.0)
    async with routing_nodes(2, tmp_path, exchange=fast) as (a, b):
        await a.connect(b)
        b_addr = f"{b.host.get_addrs()[0]}"
        b_addr = b_addr if "/p2p/" in b_addr else f"{b_addr}/p2p/{b.peer_id.to_base58()}"
        async with helia_running("dht_provider.mjs", "--file", str(path), "--dial", b_addr,
                                 what="announced nothing") as helia:
            expected, _ = import_bytes(data)  # Kubo's layout: the CID a dtnode would give the same bytes
            assert helia["cid"] == str(expected.root)
            key = parse_cid(helia["cid"]).multihash
            # Helia prints once its ADD_PROVIDER was sent; B stores it when its handler has run (a moment later).
            await until(lambda: b.dht.provider_store.get_providers(key), timeout=5)
            assert [p.peer_id.to_base58() for p in b.dht.provider_store.get_providers(key)] == [helia["peer_id"]]
            assert helia["peer_id"] not in [p.to_base58() for p in a.host.get_connected_peers()]

            # A names B, which lacks the file; the DHT (B's record from Helia) names Helia.
            got = await a.content.get(helia["cid"], max_bytes=4 << 20, timeout_s=FETCH_TIMEOUT_S,
                                      providers=[b.peer_id])
            assert hashlib.sha256(got).hexdigest() == helia["sha256"]
            assert helia["peer_id"] in [p.to_base58() for p in a.host.get_connected_peers()]
            assert a.content.exchange is not None and a.content.exchange.penalties == {}
