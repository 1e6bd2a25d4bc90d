"""P2P benchmark on loopback: discovery time, gossip delivery rate and latency at 20 msg/s, stream throughput.

Run:  .venv/bin/python bench/bench_p2p.py --nodes 10 50
All nodes run in one trio process (one core in effect), so the figures are lower bounds for separate processes;
the machine's load average is printed next to each row because other work on the box moves them a lot.

Gossip: node 0 (not subscribed: it publishes through fanout peers, as a leader does on a job topic it serves)
publishes ``rate`` messages a second on a fixed schedule for ``seconds``; every other node subscribes. A message
counts as delivered when a subscriber's inbox yields it within ``--drain-s`` after the last publish; latency is
from the scheduled publish time to that moment.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import trio
from libp2p.peer.id import ID

from protocols.messages import LeaderHeartbeat
from protocols.p2p.node import Delivery, P2PNode
from protocols.p2p.testing import loopback_config, make_nodes, start_node
from protocols.topics import TASK_PROTOCOL, job_topic

TOPIC = job_topic(0)
SWARM: dict[str, Any] = {"presence_interval_s": 5.0, "peer_ttl_s": 30.0}


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


async def bench(n: int, rate: float, seconds: float, payload_mb: int, drain_s: float) -> dict[str, float | str]:
    out: dict[str, float | str] = {"nodes": n, "load_before": _load()}
    started = time.perf_counter()
    async with make_nodes(n, wait_discovery_s=600, **SWARM) as nodes:
        out["swarm_up_s"] = time.perf_counter() - started
        # Discovery: a fresh node that knows only the bootstrap address.
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            config = loopback_config(bootstrap=(nodes[0].listen_addrs()[0],), **SWARM)
            async with start_node(nursery, config) as fresh:
                await fresh.wait_for_peers(n, timeout=600)
                out["discover_all_s"] = trio.current_time() - start
        await _gossip(nodes, out, rate=rate, seconds=seconds, drain_s=drain_s)
        print(f"# {n} nodes: {out}", flush=True)
    out["stream_MBps"] = await _stream(payload_mb)
    out["load_after"] = _load()
    return out


async def _gossip(nodes: list[P2PNode], out: dict[str, float | str], *, rate: float, seconds: float,
                  drain_s: float) -> None:
    n = len(nodes)
    inboxes = [await node.subscribe(TOPIC) for node in nodes[1:]]
    for node in nodes[1:]:
        await node.wait_for_topic_peers(TOPIC, 1, timeout=120)
    await nodes[0].wait_for_topic_peers(TOPIC, min(n - 1, 4), timeout=120)
    count = int(rate * seconds)
    expected = count * (n - 1)
    scheduled: dict[int, float] = {}
    latencies: list[float] = []
    all_in = trio.Event()

    async def collect(inbox: trio.MemoryReceiveChannel[Delivery]) -> None:
        async for msg, _signer in inbox:
            assert isinstance(msg, LeaderHeartbeat)
            latencies.append(trio.current_time() - scheduled[msg.round])
            if len(latencies) == expected:
                all_in.set()

    cpu = time.process_time()
    async with trio.open_nursery() as nursery:
        for inbox in inboxes:
            nursery.start_soon(collect, inbox)
        t0 = trio.current_time() + 0.1
        for i in range(count):
            scheduled[i] = t0 + i / rate
            await trio.sleep_until(scheduled[i])
            await nodes[0].publish(TOPIC, LeaderHeartbeat(job_id=0, term=1, round=i, leader=nodes[0].eth_address))
        out["publish_late_s"] = trio.current_time() - scheduled[count - 1]
        with trio.move_on_after(drain_s):
            await all_in.wait()
        nursery.cancel_scope.cancel()
    out["gossip_cpu_s_per_s"] = (time.process_time() - cpu) / (trio.current_time() - t0)
    out["gossip_delivery_pct"] = 100.0 * len(latencies) / expected
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100)
        out["gossip_p50_ms"], out["gossip_p99_ms"] = 1000 * q[49], 1000 * q[98]
    rejected = sum(node.metrics.rejected_total for node in nodes)
    dropped = sum(node.metrics.dropped_slow_subscriber for node in nodes)
    out["rejected+dropped"] = rejected + dropped


async def _stream(payload_mb: int) -> float:
    # Between two fresh nodes: the swarm above is still winding down its gossip, and stream negotiation on a busy
    # node is what the gossip figures measure.
    blob = b"\x5a" * (payload_mb << 20)

    async def serve(_req: bytes, _peer: ID) -> bytes:
        return blob

    async with make_nodes(2, max_response_bytes=(payload_mb + 1) << 20, request_timeout_s=120) as (a, b):
        a.set_request_handler(TASK_PROTOCOL, serve)
        start = trio.current_time()
        data = await b.request(a.listen_addrs()[0], TASK_PROTOCOL, b"get", timeout=120)
        assert len(data) == len(blob)
        return len(blob) / 1e6 / (trio.current_time() - start)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--drain-s", type=float, default=5.0)
    parser.add_argument("--payload-mb", type=int, default=20)
    args = parser.parse_args()
    rows = [await bench(n, args.rate, args.seconds, args.payload_mb, args.drain_s) for n in args.nodes]
    keys = ["nodes", "swarm_up_s", "discover_all_s", "gossip_delivery_pct", "gossip_p50_ms", "gossip_p99_ms",
            "publish_late_s", "gossip_cpu_s_per_s", "stream_MBps", "load_before", "load_after"]
    print(" | ".join(f"{k:>19}" for k in keys))
    for row in rows:
        cells = [row.get(k, float("nan")) for k in keys]
        print(" | ".join(f"{c:>19.2f}" if isinstance(c, float | int) else f"{c:>19}" for c in cells))


if __name__ == "__main__":
    trio.run(main)
