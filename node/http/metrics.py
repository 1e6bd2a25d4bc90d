"""``/metrics``: the node's counters in Prometheus' text format, written by ``prometheus-client``.

One registry per node (a test process runs several nodes), filled by one :class:`NodeCollector` that reads the
counters the node already keeps at scrape time: the P2P layer's (:class:`~protocols.p2p.metrics.P2PMetrics`), the
roles' seconds per activity, the chain adapter's calls and wait, the store's bytes, this validator's verdicts by
reason, and the chain facts the dashboard reads (rounds committed, updates by verdict). Nothing here counts twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
        updates = CounterMetricFamily(f"{PREFIX}_updates", "Updates by the contract's verdict, all jobs",
                                      labels=["verdict"])
        for verdict, n in sorted(state.update_counts().items()):
            updates.add_metric([verdict.lower()], n)
        yield updates
        verdicts: Counter[tuple[str, str]] = Counter()
        if self.node.validator is not None:
            # One verdict per update: a signed first-panel verdict may be voted again on-chain when drawn there.
            by_update = {key[:3]: v for key, v in self.node.validator.verdicts.items()}
            by_update.update(self.node.validator.first_verdicts)
            for v in by_update.values():
                verdicts["valid" if v.ok else "invalid", "" if v.ok else str(v.reason)] += 1
        checks = CounterMetricFamily(f"{PREFIX}_validator_verdicts", "Updates this validator checked, by verdict "
                                     "and reject reason (empty for valid)", labels=["verdict", "reason"])
        for (verdict, reason), n in sorted(verdicts.items()):
            checks.add_metric([verdict, reason], n)
        yield checks

        p2p = ctx.net.metrics
        yield _counter("gossip_delivered", "Gossip messages delivered to subscribers", p2p.delivered)
        rejected = CounterMetricFamily(f"{PREFIX}_gossip_rejected", "Gossip messages rejected, by reason",
                                       labels=["reason"])
        for reason, n in sorted(p2p.rejected.items()):
            rejected.add_metric([str(reason)], n)
        yield rejected
        yield _counter("gossip_dropped_slow_subscriber", "Valid gossip dropped: a subscriber's channel was full",
                       p2p.dropped_slow_subscriber)
        dropped = CounterMetricFamily(f"{PREFIX}_p2p_dropped", "Connections and streams this node closed on purpose "
                                      "(limits, deadlines, evictions), by reason", labels=["reason"])
        for reason, n in sorted(p2p.dropped.items()):
            dropped.add_metric([str(reason)], n)
        yield dropped
        yield _counter("requests_served", "Request/response streams served", p2p.requests_served)
        errors = CounterMetricFamily(f"{PREFIX}_request_errors", "Requests answered with an error, by code",
                                     labels=["code"])
        for code, n in sorted(p2p.request_errors.items()):
            errors.add_metric([str(code)], n)
        yield errors
        exchange = ctx.content.store.exchange
        moved = CounterMetricFamily(f"{PREFIX}_p2p_bytes", "Payload bytes exchanged with peers, by protocol and "
                                    "direction (request/response bodies; bitswap block data)",
                                    labels=["protocol", "direction"])
        for direction, counts in (("in", ctx.net.requests.bytes_in), ("out", ctx.net.requests.bytes_out)):
            for protocol, n in sorted(counts.items()):
                moved.add_metric([protocol, direction], n)
        if exchange is not None:
            moved.add_metric(["bitswap", "in"], exchange.bytes_in)
            moved.add_metric(["bitswap", "out"], exchange.bytes_out)
        yield moved
        yield _counter("bitswap_blocks_served", "Blocks this node served to peers",
                       exchange.served_blocks if exchange is not None else 0)

        seconds = CounterMetricFamily(f"{PREFIX}_activity_seconds", "Seconds spent per activity (train, replay, "
                                      "transfer, aggregate, ...)", labels=["activity"])
        for activity, s in sorted(ctx.timings.items()):
            seconds.add_metric([activity], s)
        yield seconds
        calls = CounterMetricFamily(f"{PREFIX}_chain_calls", "Chain calls made by the roles, by contract function",
                                    labels=["call"])
        for call, n in sorted(ctx.chain.calls.items()):
            calls.add_metric([call], n)
        yield calls
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


def node_registry(node: DtNode, feed: Feed) -> CollectorRegistry:
    """A registry of this node's metrics alone (not the process-wide default: one process may run many nodes)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, feed))
    return registry
