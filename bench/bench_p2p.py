"""P2P benchmark on loopback: discovery time, gossip delivery rate and latency at 20 msg/s, stream throughput.

Run:  .venv/bin/python bench/bench_p2p.py --nodes 10 50
All nodes run in one trio process (one core in effect); figures are lower bounds for separate processes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio
from libp2p.peer.id import ID

from protocols.messages import LeaderHeartbeat
from protocols.p2p.node import P2PNode
from protocols.p2p.testing import loopback_config, make_nodes, start_node
from protocols.topics import TASK_PROTOCOL, job_topic

TOPIC = job_topic(0)


async def bench(n: int, rate: float, seconds: float, payload_mb: int) -> dict[str, float]:
    out: dict[str, float] = {"nodes": n}
    async with make_nodes(n, wait_discovery_s=300, presence_interval_s=2.0, peer_ttl_s=30.0,
                          max_response_bytes=(payload_mb + 1) << 20, request_timeout_s=120) as nodes:
        # Discovery: a fresh node that knows only the bootstrap address.
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            config = loopback_config(bootstrap=(nodes[0].listen_addrs()[0],), presence_interval_s=2.0,
                                     peer_ttl_s=30.0)
            async with start_node(nursery, config) as fresh:
                await fresh.wait_for_peers(n, timeout=300)
                out["discover_all_s"] = trio.current_time() - start
        # Gossip: node 0 publishes at `rate`; every other node subscribes.
        inboxes = [await node.subscribe(TOPIC) for node in nodes[1:]]
        for node in nodes[1:]:
            await node.wait_for_topic_peers(TOPIC, 1, timeout=60)
        await nodes[0].wait_for_topic_peers(TOPIC, min(n - 1, 4), timeout=60)
        sent: dict[int, float] = {}
        latencies: list[float] = []
        received = 0

        async def collect(inbox: trio.MemoryReceiveChannel[tuple[object, str]]) -> None:
            nonlocal received
            async for msg, _signer in inbox:
                assert isinstance(msg, LeaderHeartbeat)
                latencies.append(time.perf_counter() - sent[msg.round])
                received += 1

        count = int(rate * seconds)
        async with trio.open_nursery() as nursery:
            for inbox in inboxes:
                nursery.start_soon(collect, inbox)
            for i in range(count):
                sent[i] = time.perf_counter()
                await nodes[0].publish(TOPIC, LeaderHeartbeat(job_id=0, term=1, round=i,
                                                              leader=nodes[0].eth_address))
                await trio.sleep(1 / rate)
            await trio.sleep(3)  # drain: messages still in flight count as delivered
            nursery.cancel_scope.cancel()
        expected = count * (n - 1)
        out["gossip_delivery_pct"] = 100.0 * received / expected
        if latencies:
            q = statistics.quantiles(latencies, n=100)
            out["gossip_p50_ms"], out["gossip_p99_ms"] = 1000 * q[49], 1000 * q[98]
        print(f"# {n} nodes: {out}", flush=True)
    # Stream: a payload_mb response over one stream, between two fresh nodes (the swarm above is still winding
    # down its gossip; stream negotiation on a busy node is measured by the gossip figures instead).
    blob = b"\x5a" * (payload_mb << 20)

    async def serve(_req: bytes, _peer: ID) -> bytes:
        return blob

    async with make_nodes(2, max_response_bytes=(payload_mb + 1) << 20, request_timeout_s=120) as (a, b):
        a.set_request_handler(TASK_PROTOCOL, serve)
        start = trio.current_time()
        data = await b.request(a.listen_addrs()[0], TASK_PROTOCOL, b"get", timeout=120)
        assert len(data) == len(blob)
        out["stream_MBps"] = len(blob) / 1e6 / (trio.current_time() - start)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--payload-mb", type=int, default=20)
    args = parser.parse_args()
    rows = [await bench(n, args.rate, args.seconds, args.payload_mb) for n in args.nodes]
    keys = ["nodes", "discover_all_s", "gossip_delivery_pct", "gossip_p50_ms", "gossip_p99_ms", "stream_MBps"]
    print(" | ".join(f"{k:>19}" for k in keys))
    for row in rows:
        print(" | ".join(f"{row.get(k, float('nan')):>19.2f}" for k in keys))
    _ = P2PNode  # the benchmarked class


if __name__ == "__main__":
    trio.run(main)
