"""``/metrics``: the node's counters in Prometheus' text format, written by ``prometheus-client``.

One registry per node (a test process runs several nodes), filled by one :class:`NodeCollector` that reads the
counters the node already keeps at scrape time: the P2P layer's (:class:`~protocols.p2p.metrics.P2PMetrics`), the
roles' seconds per activity, the chain adapter's calls and wait, the store's bytes, this validator's verdicts by
reason, and the chain facts the dashboard reads (rounds committed, updates by verdict). Nothing here counts twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.http.local import bytes_by_protocol, own_verdicts

if TYPE_CHECKING:
    from node.http.feed import Feed
    from node.runtime import DtNode

PREFIX = "dtnode"


class NodeCollector(Collector):
    def __init__(self, node: DtNode, feed: Feed) -> None:
        self.node = node
        self.feed = feed

    def collect(self) -> Iterator[Metric]:
        ctx = self.node.ctx
        if ctx is None:
            return
        state = self.feed.state
        yield _counter("rounds_committed", "Rounds committed on-chain, all jobs (from the chain)",
                       state.rounds_committed)
        yield _by_label("updates", "Updates by the contract's verdict, all jobs", ["verdict"],
                        {verdict.lower(): n for verdict, n in state.update_counts().items()})
        verdicts: Counter[tuple[str, str]] = Counter()
        for v in own_verdicts(self.node).values():
            verdicts["valid" if v.ok else "invalid", "" if v.ok else str(v.reason)] += 1
        yield _by_label("validator_verdicts", "Updates this validator checked, by verdict and reject reason (empty "
                        "for valid)", ["verdict", "reason"], verdicts)

        p2p = ctx.net.metrics
        yield _counter("gossip_delivered", "Gossip messages delivered to subscribers", p2p.delivered)
        yield _by_label("gossip_rejected", "Gossip messages rejected, by reason", ["reason"], p2p.rejected)
        yield _counter("gossip_dropped_slow_subscriber", "Valid gossip dropped: a subscriber's channel was full",
                       p2p.dropped_slow_subscriber)
        yield _by_label("p2p_dropped", "Connections and streams this node closed on purpose (limits, deadlines, "
                        "evictions), by reason", ["reason"], p2p.dropped)
        yield _counter("requests_served", "Request/response streams served", p2p.requests_served)
        yield _by_label("request_errors", "Requests answered with an error, by code", ["code"], p2p.request_errors)
        yield _by_label("p2p_bytes", "Payload bytes exchanged with peers, by protocol and direction (request/"
                        "response bodies; bitswap block data; GossipSub RPC frames)", ["protocol", "direction"],
                        bytes_by_protocol(ctx))
        exchange = ctx.content.store.exchange
        yield _counter("bitswap_blocks_served", "Blocks this node served to peers",
                       exchange.served_blocks if exchange is not None else 0)

        yield _by_label("activity_seconds", "Seconds spent per activity (train, replay, transfer, aggregate, ...)",
                        ["activity"], ctx.timings)
        yield _by_label("chain_calls", "Chain calls made by the roles, by contract function", ["call"],
                        ctx.chain.calls)
        yield _counter("chain_wait_seconds", "Seconds the roles waited on the chain (all calls)", ctx.chain.seconds)
        yield _counter("dashboard_chain_calls", "Chain calls made by the dashboard", self.feed.facts.calls)
        yield _counter("dashboard_refresh_seconds", "Seconds the dashboard spent reading the chain",
                       self.feed.refresh_seconds)
        yield _counter("dashboard_measure_seconds", "Seconds the dashboard spent measuring checkpoints",
                       self.feed.measurer.seconds)

        blocks = ctx.content.store.blockstore
        yield GaugeMetricFamily(f"{PREFIX}_store_bytes", "Bytes held in the block store", value=blocks.used_bytes)
        yield GaugeMetricFamily(f"{PREFIX}_store_max_bytes", "The block store's byte budget", value=blocks.max_bytes)
        yield GaugeMetricFamily(f"{PREFIX}_peers_connected", "Peers connected now",
                                value=len(ctx.net.connected_peers()))
        yield GaugeMetricFamily(f"{PREFIX}_peers_known", "Peers in the presence table", value=len(ctx.net.peers()))
        yield GaugeMetricFamily(f"{PREFIX}_chain_block", "Latest block the dashboard read", value=state.block)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _by_label(name: str, doc: str, labels: list[str],
              counts: Mapping[str, float] | Mapping[tuple[str, str], float]) -> CounterMetricFamily:
    """A counter family with one sample per key of ``counts`` (a string, or a tuple of one string per label)."""
    family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [str(key)], n)
    return family


def node_registry(node: DtNode, feed: Feed) -> CollectorRegistry:
    """A registry of this node's metrics alone (not the process-wide default: one process may run many nodes)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, feed))
    return registry
