"""What this node itself is doing: its roles, peers, store, counters and current activity.

Read from the running :class:`~node.runtime.DtNode` in the trio thread (no I/O, no chain); the chain-wide facts
are :mod:`node.http.gather`'s.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from node.roles.context import NodeContext
    from node.runtime import DtNode
    from node.training.replay import Verdict


@dataclass(frozen=True)
class PeerFacts:
    peer_id: str
    address: str
    roles: tuple[str, ...]
    node_class: str
    last_seen_s: float


@dataclass(frozen=True)
class LocalFacts:
    address: str
    peer_id: str
    roles: tuple[str, ...]
    listen: tuple[str, ...]
    connected_peers: int
    peers: tuple[PeerFacts, ...]
    bytes_in: int
    bytes_out: int
    """Payload bytes exchanged with peers, all protocols (see :func:`bytes_by_protocol`)."""
    store_used_bytes: int
    store_max_bytes: int
    gossip_delivered: int
    gossip_rejected: int
    requests_served: int
    seconds_by_activity: dict[str, float]
    activity: tuple[str, ...]
    """One line per thing under way (a leader's round, a validator's checks)."""


def peers_last_seen(node: DtNode) -> dict[str, float]:
    """Seconds since each peer's last presence, by lower-case Ethereum address."""
    if node.ctx is None:
        return {}
    now = trio.current_time()
    return {e.eth_address.lower(): round(now - e.last_seen, 1) for e in node.ctx.net.peers()}


def own_verdicts(node: DtNode) -> dict[tuple[int, int, int], Verdict]:
    """This node's validator's verdict per update, by (job, round, slot): one per update (a first-panel verdict it
    signed may be voted again on-chain when the same panel is drawn there: the signed one counts)."""
    if node.validator is None:
        return {}
    by_update = {key[:3]: v for key, v in node.validator.verdicts.items()}
    by_update.update(node.validator.first_verdicts)
    return by_update


def own_reject_reasons(node: DtNode, job_id: int) -> dict[tuple[int, int], str]:
    """(round, slot) → why this node's validator found the job's update invalid (its own replay's reject code;
    the chain records only valid or invalid)."""
    return {(r, s): str(v.reason) for (j, r, s), v in own_verdicts(node).items() if j == job_id and not v.ok}


def bytes_by_protocol(ctx: NodeContext) -> Counter[tuple[str, str]]:
    """Payload bytes exchanged with peers by (protocol, direction "in"/"out"): request/response bodies by stream
    protocol, bitswap block data as ``bitswap``, GossipSub RPC frames by pubsub protocol (``/meshsub/1.1.0``)."""
    moved: Counter[tuple[str, str]] = Counter()
    net = ctx.net
    for direction, counts in (("in", net.requests.bytes_in), ("out", net.requests.bytes_out),
                              ("in", net.metrics.gossip_bytes_in), ("out", net.metrics.gossip_bytes_out)):
        for protocol, n in counts.items():
            moved[protocol, direction] += n
    exchange = ctx.content.store.exchange
    if exchange is not None:
        moved["bitswap", "in"] += exchange.bytes_in
        moved["bitswap", "out"] += exchange.bytes_out
    return moved


def local_facts(node: DtNode) -> LocalFacts:
    ctx = node.ctx
    assert ctx is not None, "the dashboard starts after the node's context"
    now = trio.current_time()
    net, blocks = ctx.net, ctx.content.store.blockstore
    activity = []
    for job_id, leader in sorted(node.leaders.items()):
        st = leader.current
        activity.append(f"leader of job {job_id}: " + (f"collecting round {st.round + 1}" if st is not None
                                                        else "standing by"))
    if node.validator is not None:
        activity.append(f"validator: {len(node.validator.verdicts)} votes cast on-chain, "
                        f"{len(node.validator.first_verdicts)} signed")
    if node.trainer is not None:
        activity.append("trainer: serving " + (", ".join(f"job {j}" for j in node.config.jobs) or "every open job"))
    moved = bytes_by_protocol(ctx)
    bytes_in = sum(n for (_, direction), n in moved.items() if direction == "in")
    bytes_out = sum(n for (_, direction), n in moved.items() if direction == "out")
    timings = {k: round(v, 2) for k, v in sorted(ctx.timings.items())}
    timings["chain"] = round(ctx.chain.seconds, 2)
    return LocalFacts(
        address=ctx.address, peer_id=net.peer_id.to_base58(), roles=tuple(node.config.roles) or ("provider",),
        listen=tuple(net.listen_addrs()), connected_peers=len(net.connected_peers()),
        peers=tuple(PeerFacts(e.peer_id, e.eth_address, e.roles, e.node_class, round(now - e.last_seen, 1))
                    for e in net.peers()),
        bytes_in=bytes_in, bytes_out=bytes_out, store_used_bytes=blocks.used_bytes, store_max_bytes=blocks.max_bytes,
        gossip_delivered=net.metrics.delivered, gossip_rejected=net.metrics.rejected_total,
        requests_served=net.metrics.requests_served, seconds_by_activity=timings, activity=tuple(activity))
