"""P2P benchmark on loopback: discovery time, gossip delivery rate and latency at 20 msg/s, stream throughput.

Run:  .venv/bin/python bench/bench_p2p.py --nodes 10 50            (all nodes in one trio process)
      .venv/bin/python bench/bench_p2p.py --nodes 50 --procs 5      (node 0 here, the rest spread over 5 processes)
In one process every node shares one core, so those figures are lower bounds for separate processes. The machine's
load average is printed next to each row because other work on the box moves the figures a lot.

Gossip: node 0 (not subscribed: it publishes through fanout peers, as a leader does on a job topic it serves)
publishes ``rate`` messages a second on a fixed schedule for ``seconds``; every other node subscribes. A message
counts as delivered when a subscriber's inbox yields it within ``--drain-s`` after the last publish; latency is
from the scheduled publish time to that moment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import trio
from libp2p.peer.id import ID

from protocols.p2p.hardening import install_hardening
from protocols.p2p.node import Delivery, P2PNode
from protocols.p2p.testing import Note, loopback_config, make_nodes, scratch_topic, start_node
from protocols.topics import TASK_PROTOCOL

TOPIC = scratch_topic(0)
SWARM: dict[str, Any] = {"presence_interval_s": 5.0, "peer_ttl_s": 30.0}


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


async def bench(n: int, rate: float, seconds: float, payload_mb: int, drain_s: float,
                swarm_timeout_s: float) -> dict[str, float | str]:
    out: dict[str, float | str] = {"nodes": n, "load_before": _load()}
    started = time.perf_counter()
    async with make_nodes(n, **SWARM) as nodes:
        # A swarm too big for the machine never converges; say how far it got instead of hanging.
        with trio.move_on_after(swarm_timeout_s):
            for node in nodes:
                await node.wait_for_peers(n - 1, timeout=swarm_timeout_s)
            out["swarm_up_s"] = time.perf_counter() - started
            # Knowing every peer must not take a connection to every peer (P2PConfig.target_peers).
            links = {frozenset((node.peer_id, peer)) for node in nodes for peer in node.connected_peers()}
            out["links"] = len(links)
            out["max_degree"] = max(len(node.connected_peers()) for node in nodes[1:])
        if "swarm_up_s" not in out:
            known = [len(node.peers()) for node in nodes]
            out["swarm_up_s"] = (f"no: after {swarm_timeout_s:.0f} s nodes knew {min(known)}-{max(known)} "
                                 f"(avg {sum(known) / n:.0f}) of {n - 1} peers")
            print(f"# {n} nodes: {out}", flush=True)
        else:
            # Discovery: a fresh node that knows only the bootstrap address.
            async with trio.open_nursery() as nursery:
                start = trio.current_time()
                config = loopback_config(bootstrap=(nodes[0].listen_addrs()[0],), **SWARM)
                async with start_node(nursery, config) as fresh:
                    await fresh.wait_for_peers(n, timeout=swarm_timeout_s)
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
            assert isinstance(msg, Note)
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
            await nodes[0].publish(TOPIC, Note(round=i, text=nodes[0].eth_address))
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


async def bench_procs(n: int, procs: int, rate: float, seconds: float, payload_mb: int,
                      drain_s: float) -> dict[str, float | str]:
    """Node 0 (bootstrap and publisher) and the fresh node here; the other ``n - 1`` nodes in ``procs`` workers."""
    out: dict[str, float | str] = {"nodes": n, "procs": procs, "load_before": _load()}
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        async with start_node(nursery, loopback_config(**SWARM)) as publisher:
            shares = [len(range(i, n - 1, procs)) for i in range(procs)]
            workers = [_Worker(await trio.lowlevel.open_process(
                [sys.executable, __file__, "--worker", str(share), "--bootstrap", publisher.listen_addrs()[0],
                 "--expect-peers", str(n - 1)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)) for share in shares]
            for worker in workers:
                assert (await worker.line()) == {"ready": True}
            await publisher.wait_for_peers(n - 1, timeout=600)
            out["swarm_up_s"] = time.perf_counter() - started
            start = trio.current_time()
            config = loopback_config(bootstrap=(publisher.listen_addrs()[0],), **SWARM)
            async with start_node(nursery, config) as fresh:
                await fresh.wait_for_peers(n, timeout=600)
                out["discover_all_s"] = trio.current_time() - start
            await publisher.wait_for_topic_peers(TOPIC, min(n - 1, 4), timeout=120)
            count = int(rate * seconds)
            offset = time.monotonic() - trio.current_time()  # workers stamp receipts with time.monotonic()
            t0 = trio.current_time() + 0.1
            cpu = time.process_time()
            for i in range(count):
                await trio.sleep_until(t0 + i / rate)
                await publisher.publish(TOPIC, Note(round=i, text=publisher.eth_address))
            out["publish_late_s"] = trio.current_time() - (t0 + (count - 1) / rate)
            out["publisher_cpu_s_per_s"] = (time.process_time() - cpu) / (trio.current_time() - t0)
            await trio.sleep_until(t0 + (count - 1) / rate + drain_s)
            latencies: list[float] = []
            for worker in workers:
                await worker.send("stop")
                for round_, at in (await worker.line())["received"]:
                    latency = at - offset - (t0 + round_ / rate)
                    if at - offset <= t0 + (count - 1) / rate + drain_s:
                        latencies.append(latency)
                await worker.process.wait()
            out["gossip_delivery_pct"] = 100.0 * len(latencies) / (count * (n - 1))
            if len(latencies) >= 2:
                q = statistics.quantiles(latencies, n=100)
                out["gossip_p50_ms"], out["gossip_p99_ms"] = 1000 * q[49], 1000 * q[98]
            print(f"# {n} nodes in {procs} + 1 processes: {out}", flush=True)
    out["stream_MBps"] = await _stream(payload_mb)
    out["load_after"] = _load()
    return out


class _Worker:
    """A worker process speaking one JSON object per line on stdin/stdout."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    async def line(self) -> Any:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"worker {self.process.pid} exited early (code {self.process.returncode})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    async def send(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")


async def worker(count: int, bootstrap: str, expect_peers: int) -> None:
    """Run ``count`` subscribing nodes; print ready once they know everyone, then receipts when told to stop."""
    received: list[tuple[int, float]] = []
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with trio.open_nursery() as nursery:
        config = loopback_config(bootstrap=(bootstrap,), **SWARM)
        nodes = [await nursery.start(_run_node, config) for _ in range(count)]
        for node in nodes:
            await node.wait_for_peers(expect_peers, timeout=600)
        inboxes = [await node.subscribe(TOPIC) for node in nodes]
        for node in nodes:
            await node.wait_for_topic_peers(TOPIC, 1, timeout=120)

        async def collect(inbox: trio.MemoryReceiveChannel[Delivery]) -> None:
            async for msg, _signer in inbox:
                assert isinstance(msg, Note)
                received.append((msg.round, time.monotonic()))

        for inbox in inboxes:
            nursery.start_soon(collect, inbox)
        print(json.dumps({"ready": True}), flush=True)
        await stdin.receive_some()  # "stop", or EOF if the parent died
        print(json.dumps({"received": received}), flush=True)
        for node in nodes:
            await node.stop()
        nursery.cancel_scope.cancel()


async def _run_node(config: Any, *, task_status: trio.TaskStatus[P2PNode] = trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as nursery, start_node(nursery, config) as node:
        task_status.started(node)
        await trio.sleep_forever()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--drain-s", type=float, default=5.0)
    parser.add_argument("--payload-mb", type=int, default=20)
    parser.add_argument("--swarm-timeout-s", type=float, default=240.0,
                        help="give up on a swarm whose nodes do not all know each other by then")
    parser.add_argument("--procs", type=int, default=1, help="worker processes for nodes 1..n-1 (1: all in one)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--expect-peers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    install_hardening()  # as the dtnode binary does at start-up, before any host
    # The library logs a warning per message for some conditions it handles (GRAFT floods at start, pending queues
    # of peers not on a topic); they cost time and say nothing about the figures.
    logging.getLogger("libp2p").setLevel(logging.ERROR)
    if args.worker is not None:
        await worker(args.worker, args.bootstrap, args.expect_peers)
        return
    if args.procs > 1:
        rows = [await bench_procs(n, args.procs, args.rate, args.seconds, args.payload_mb, args.drain_s)
                for n in args.nodes]
    else:
        rows = [await bench(n, args.rate, args.seconds, args.payload_mb, args.drain_s, args.swarm_timeout_s)
                for n in args.nodes]
    keys = ["nodes", "discover_all_s", "gossip_delivery_pct", "gossip_p50_ms", "gossip_p99_ms",
            "publish_late_s", "gossip_cpu_s_per_s", "stream_MBps", "load_before", "load_after", "swarm_up_s",
            "links", "max_degree"]
    print(" | ".join(f"{k:>19}" for k in keys))
    for row in rows:
        cells = [row.get(k, float("nan")) for k in keys]
        print(" | ".join(f"{c:>19.2f}" if isinstance(c, float | int) else f"{c:>19}" for c in cells))


if __name__ == "__main__":
    trio.run(main)
