"""Per-peer and total limits on the inbound streams one host serves, applied before protocol negotiation.

py-libp2p 0.8.1 bounds inbound streams only by one process-wide semaphore (the resource manager's ``max_streams``,
10,000) on which extra streams *queue*, so one peer opening streams in a loop starves everyone's. Here each stream
is counted for as long as its handler runs: a peer at ``max_inbound_streams_per_peer`` has its new stream reset (its
own, nobody else's); when all peers together hold ``max_inbound_streams``, the newest stream of the peer holding the
most is reset to make room. Every reset goes through :class:`~protocols.p2p.drops.DropLog`.

Cancellation: :meth:`InboundStreamLimits.handle` runs in the connection's stream task; cancelling it ends the
stream's handler as before.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from protocols.p2p.config import P2PConfig
from protocols.p2p.drops import DropLog
from protocols.p2p.errors import LibraryDrift

logger = logging.getLogger(__name__)


class InboundStreamLimits:
    """Stream limits for one host (see the module doc). Install with :meth:`install` after the host is built."""

    def __init__(self, network: Any, config: P2PConfig, drops: DropLog) -> None:
        if not hasattr(network, "common_stream_handler") or not hasattr(network, "set_stream_handler"):
            raise LibraryDrift("py-libp2p's swarm lacks common_stream_handler/set_stream_handler, which "
                               "protocols.p2p.stream_limits wraps; pin libp2p==0.8.1")
        self._network = network
        self._config = config
        self._drops = drops
        self._inner = network.common_stream_handler
        self._streams: dict[ID, list[INetStream]] = collections.defaultdict(list)
        self._total = 0

    def install(self) -> None:
        self._network.set_stream_handler(self.handle)

    def held_by(self, peer: ID) -> int:
        return len(self._streams.get(peer, ()))

    async def handle(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        cfg = self._config
        held = self._streams[peer]
        if len(held) >= cfg.max_inbound_streams_per_peer:
            self._drops.drop("streams_per_peer", f"{peer} opened a stream past p2p.max_inbound_streams_per_peer = "
                             f"{cfg.max_inbound_streams_per_peer}; reset")
            await _reset(stream)
            return
        if self._total >= cfg.max_inbound_streams:
            heaviest = max(self._streams, key=lambda p: len(self._streams[p]))
            victim = self._streams[heaviest].pop()
            self._total -= 1
            self._drops.drop("streams_evicted", f"newest stream of {heaviest} ({len(self._streams[heaviest]) + 1} "
                             f"held) reset for one from {peer}: p2p.max_inbound_streams = {cfg.max_inbound_streams}")
            await _reset(victim)
        held.append(stream)
        self._total += 1
        try:
            await self._inner(stream)
        finally:
            if stream in held:  # an eviction removed it already
                held.remove(stream)
                self._total -= 1
            if not held:
                self._streams.pop(peer, None)


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(1.0):
        try:
            await stream.reset()
        except Exception:  # the stream may already be gone
            logger.debug("reset of a refused stream failed", exc_info=True)
