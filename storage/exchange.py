"""Block exchange between nodes: bitswap (``/ipfs/bitswap/1.2.0``, 1.1.0, 1.0.0) over any libp2p host.

:class:`BlockExchange` composes the two jobs over one host and one store: serving other peers' wantlists
(:mod:`storage.bitswap_server`) and fetching DAGs from named providers (:mod:`storage.bitswap_fetch`), both reached
through py-libp2p's bitswap stream handling (:mod:`storage.bitswap_wire`). A block fetched here is offered to peers
that wanted it earlier.

Cancellation: :meth:`BlockExchange.run` owns the reply tasks; cancelling it stops serving. A fetch cancelled
mid-way leaves only verified blocks in the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID as PeerID

from storage.bitswap_fetch import BitswapFetcher, Provider
from storage.bitswap_server import BitswapServer
from storage.bitswap_wire import BitswapWire, ExchangeConfig
from storage.blockstore import FilesystemBlockStore
from storage.cid import ContentId

__all__ = ["BlockExchange", "ExchangeConfig", "Provider"]


class BlockExchange:
    """Bitswap over ``host`` backed by ``store``. Start with ``await nursery.start(exchange.run)``."""

    server_cls: ClassVar[type[BitswapServer]] = BitswapServer
    """Tests swap in an adversarial server (one that corrupts blocks); production always uses BitswapServer."""

    def __init__(self, host: IHost, store: FilesystemBlockStore, *, config: ExchangeConfig | None = None) -> None:
        self.host = host
        self.store = store
        self.config = config or ExchangeConfig()
        self.server = self.server_cls(host, store, self.config)
        self.fetcher = BitswapFetcher(host, store, self.config, on_stored=self.server.notify_new_block)
        self._wire = BitswapWire(host, self)

    @property
    def penalties(self) -> dict[PeerID, int]:
        """Bad or unsolicited blocks seen per peer (for the node's peer scoring)."""
        return self.fetcher.penalties

    @property
    def served_blocks(self) -> int:
        return self.server.served_blocks

    @property
    def bytes_out(self) -> int:
        """Block bytes served to peers."""
        return self.server.served_bytes

    @property
    def bytes_in(self) -> int:
        """Block bytes peers sent this node, wanted or not."""
        return self.fetcher.received_bytes

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register the bitswap handlers on the host and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            self.server.attach(nursery)
            self.fetcher.streams.attach(nursery)
            await self._wire.start()
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.server.attach(None)
                self.fetcher.streams.attach(None)
                with trio.CancelScope(shield=True):
                    await self._wire.stop()

    async def fetch_dag(
        self,
        root: ContentId,
        providers: Sequence[Provider],
        *,
        timeout_s: float,
        max_bytes: int | None = None,
    ) -> int:
        """Fetch every block of the DAG under ``root`` from ``providers`` into the store; returns the bytes fetched.

        Raises :class:`FetchTimeout` (deadline passed), :class:`BlockNotFound` (every provider lacks a block,
        died, or misbehaved), :class:`DagTooLarge` (the DAG's declared or fetched size passes ``max_bytes``).
        On error the store holds only verified blocks; nothing is pinned.
        """
        return await self.fetcher.fetch_dag(root, providers, timeout_s=timeout_s, max_bytes=max_bytes)

    async def notify_new_block(self, cid: ContentId) -> None:
        """Send a block we just obtained to peers that wanted it earlier (the late-block path)."""
        await self.server.notify_new_block(cid)

    # ── what the wire reports (storage.bitswap_wire.WireEvents) ────────────────────────────────────────

    async def _serve_wantlist(self, peer: PeerID, protocol: str, wantlist: Any) -> None:
        await self.server.serve_wantlist(peer, protocol, wantlist)

    async def _receive_block(self, peer: PeerID, prefix: bytes | None, data: bytes) -> None:
        await self.fetcher.receive_block(peer, prefix, data)

    def _receive_presence(self, peer: PeerID, cid: ContentId, *, have: bool) -> None:
        self.fetcher.receive_presence(peer, cid, have=have)

    def _peer_gone(self, peer: PeerID) -> None:
        self.server.peer_gone(peer)
        self.fetcher.peer_gone(peer)
