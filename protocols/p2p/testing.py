"""In-process swarms of real nodes on 127.0.0.1, for tests and benchmarks (the lead's role tests reuse this).

The factories install the py-libp2p hardening first (idempotent), as the binary does at start-up.

Usage::

    async with make_nodes(5, presence_interval_s=1.0) as nodes:
        await nodes[0].wait_for_peers(4, timeout=20)
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import trio

from protocols.messages import WireMessage, register_message
from protocols.p2p.config import P2PConfig
from protocols.p2p.hardening import install_hardening
from protocols.p2p.identity import NodeIdentity
from protocols.p2p.node import P2PNode


def scratch_topic(n: int) -> str:
    """A gossip topic for tests and benchmarks (the node itself gossips only presence)."""
    return f"dtnode/scratch/{n}"


@register_message
@dataclass(frozen=True)
class Note(WireMessage):
    """A gossip message for tests and benchmarks: the node gossips only ``Presence``, but the gossip layer carries
    any registered type, and its checks (signature, signer, age, schema, the application's verdict) apply alike."""

    TYPE: ClassVar[str] = "scratch_note"
    round: int
    text: str = ""
    schema: int = 1


TEST_DEFAULTS: dict[str, Any] = {
    "presence_interval_s": 1.0,
    "peer_ttl_s": 6.0,  # six missed announcements: tolerant of a loaded 2-core machine
    "request_timeout_s": 5.0,
    "dial_timeout_s": 5.0,
    "bootstrap_retry_s": 0.5,
    # Random walk queries every peer at start; on a loaded 2-core test machine it only adds noise.
    "enable_random_walk": False,
    # Every test node dials from 127.0.0.1: the per-IP limits (one home's worth) would refuse a 50-node swarm.
    # The flood tests set them back to the production defaults.
    "max_inbound_per_ip": 1024,
    "max_pending_per_ip": 256,
}


def loopback_config(**overrides: Any) -> P2PConfig:
    """A config with short timers for loopback tests; ``overrides`` win."""
    return P2PConfig(**{**TEST_DEFAULTS, **overrides})


@asynccontextmanager
async def start_node(
    nursery: trio.Nursery, config: P2PConfig, identity: NodeIdentity | None = None
) -> AsyncIterator[P2PNode]:
    """Start one node in ``nursery``; stops it on exit."""
    install_hardening(config)
    node = P2PNode(identity or NodeIdentity.generate(), config)
    await nursery.start(node.run)
    try:
        yield node
    finally:
        await node.stop()


@asynccontextmanager
async def make_nodes(
    n: int,
    *,
    identities: Sequence[NodeIdentity] | None = None,
    wait_discovery_s: float | None = None,
    **overrides: Any,
) -> AsyncIterator[list[P2PNode]]:
    """Start ``n`` nodes; node 0 is the bootstrap of all others. All are stopped on exit.

    With ``wait_discovery_s``, returns only once every node has every other in its peer table.
    """
    base = loopback_config(**overrides)
    install_hardening(base)
    async with trio.open_nursery() as nursery:
        nodes: list[P2PNode] = []
        try:
            first = P2PNode(identities[0] if identities else NodeIdentity.generate(), base)
            await nursery.start(first.run)
            nodes.append(first)
            config = dataclasses.replace(base, bootstrap=(first.listen_addrs()[0],))
            for i in range(1, n):
                node = P2PNode(identities[i] if identities else NodeIdentity.generate(), config)
                await nursery.start(node.run)
                nodes.append(node)
            if wait_discovery_s is not None:
                with trio.fail_after(wait_discovery_s):
                    for node in nodes:
                        await node.wait_for_peers(n - 1, timeout=wait_discovery_s)
            yield nodes
        finally:
            for node in nodes:
                await node.stop()
