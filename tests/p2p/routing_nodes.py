"""Lightweight nodes for content-routing tests and ``bench/bench_routing.py``: a real libp2p host on 127.0.0.1 with
py-libp2p's Kademlia DHT, our :class:`ContentRouting` over it, a block store and the bitswap exchange, wired as
:mod:`node.content` wires a full node, but with no gossip or discovery, so a test decides who is connected to whom.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from protocols.p2p.config import P2PConfig
from protocols.p2p.content_routing import ContentRouting
from protocols.p2p.hardening import disable_auto_connector
from protocols.p2p.testing import loopback_config
from storage.blockstore import FilesystemBlockStore
from storage.content import LocalContentStore
from storage.exchange import BlockExchange, ExchangeConfig
from tests.storage.conftest import make_host

ROUTING_TEST_DEFAULTS = {"provide_spacing_s": 0.05, "provider_lookup_timeout_s": 5.0}


@dataclass
class RoutingNode:
    host: IHost
    dht: KadDHT
    routing: ContentRouting
    content: LocalContentStore
    cancel: trio.CancelScope

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    @property
    def info(self) -> PeerInfo:
        return PeerInfo(self.host.get_id(), self.host.get_addrs())

    async def connect(self, other: RoutingNode) -> None:
        """Dial ``other`` and put each in the other's routing table (as discovery does for a full node)."""
        await self.host.connect(other.info)
        await self.dht.add_peer(other.peer_id, skip_server_mode_check=True)
        await other.dht.add_peer(self.peer_id, skip_server_mode_check=True)

    def stop(self) -> None:
        self.cancel.cancel()


def routing_config(**overrides: object) -> P2PConfig:
    return loopback_config(**{**ROUTING_TEST_DEFAULTS, **overrides})


@asynccontextmanager
async def routing_nodes(n: int, root: Path, *, config: P2PConfig | None = None,
                        exchange: ExchangeConfig | None = None) -> AsyncIterator[list[RoutingNode]]:
    """``n`` unconnected nodes (DHT servers), stopped on exit."""
    cfg = config or routing_config()
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(_run_node, root / f"node{i}", cfg, exchange) for i in range(n)]
        try:
            yield nodes
        finally:
            nursery.cancel_scope.cancel()


async def _run_node(root: Path, config: P2PConfig, exchange_config: ExchangeConfig | None, *,
                    task_status: trio.TaskStatus[RoutingNode]) -> None:
    host = make_host()
    disable_auto_connector(host)  # as P2PNode does: only the test (or the DHT) decides whom to dial
    dht = KadDHT(host, DHTMode.SERVER, enable_random_walk=False)
    routing = ContentRouting(host, dht, config)
    store = FilesystemBlockStore(root, max_bytes=1 << 30, durable=False)
    exchange = BlockExchange(host, store, config=exchange_config)
    content = LocalContentStore(store, exchange, router=routing, lookup_timeout_s=config.provider_lookup_timeout_s)
    with trio.CancelScope() as cancel:
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]), background_trio_service(dht):
            async with trio.open_nursery() as nursery:
                await nursery.start(exchange.run)
                await nursery.start(routing.run)
                task_status.started(RoutingNode(host, dht, routing, content, cancel))
                await trio.sleep_forever()
