"""The P2P layer's counters, shared by gossip, discovery and request/response; read by operators and tests."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class P2PMetrics:
    """Counters for operators and tests. Plain ints and Counters; read them, never write them."""

    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    """Gossip messages rejected, by :class:`~protocols.types.RejectCode`."""
    delivered: int = 0
    dropped_slow_subscriber: int = 0
    """Valid messages dropped because a subscriber's channel was full."""
    contained: collections.Counter[str] = field(default_factory=collections.Counter)
    """Remote-triggered exceptions contained inside the library (pubsub stream, pubsub message)."""
    gossip_bytes_in: collections.Counter[str] = field(default_factory=collections.Counter)
    """Bytes of GossipSub RPC frames read from peers, by pubsub protocol (``/meshsub/1.1.0``, ...)."""
    gossip_bytes_out: collections.Counter[str] = field(default_factory=collections.Counter)
    """Bytes of GossipSub RPC frames written to peers, by pubsub protocol (all but the hello RPC at connect)."""
    requests_served: int = 0
    request_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    """Requests we answered with an error, or whose stream failed, by code."""
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    """Connections and streams this node closed on purpose (limits, deadlines, evictions), by reason; see
    :mod:`protocols.p2p.drops`."""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
