"""One dtnode P2P host for the network-namespace NAT test (``test_netns.py`` runs it under ``ip netns exec``).

Writes its state as JSON to ``--status`` every 0.25 s: peer id, listen and announced addresses, reachability,
relay reservations, and for each connected peer whether the connection is relayed. With ``--measure`` it also
measures, for the first other private node it finds: echo round-trip time and bulk throughput over the relayed
connection, and again once the connection is direct (if hole punching upgrades it).

    python -m tests.p2p.netns_node --listen /ip4/10.0.1.2/tcp/4001 --bootstrap <relay addr> --status s.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from protocols.p2p.config import P2PConfig
from protocols.p2p.hardening import install_hardening
from protocols.p2p.identity import NodeIdentity
from protocols.p2p.node import P2PNode
from protocols.topics import PING_PROTOCOL

BULK_REQUESTS = 8
BULK_BYTES = 1 << 20  # per request, echoed back: 16 MiB moved per measurement
PINGS = 10


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--reachability", default="auto")
    parser.add_argument("--hole-punching", action="store_true")
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--status", required=True)
    return parser.parse_args()


def connection_kinds(node: P2PNode) -> dict[str, str]:
    relayed = set(node.nat.relayed_peers())
    return {p.to_base58(): ("relayed" if p in relayed else "direct") for p in node.connected_peers()}


async def measure(node: P2PNode, peer: ID) -> dict[str, float]:
    rtts = []
    for _ in range(PINGS):
        rtts.append(await node.ping(peer, timeout=20))
    payload = os.urandom(BULK_BYTES)
    start = trio.current_time()
    for _ in range(BULK_REQUESTS):
        assert await node.request(peer, PING_PROTOCOL, payload, timeout=60) == payload
    seconds = trio.current_time() - start
    return {"rtt_ms": round(1000 * sorted(rtts)[len(rtts) // 2], 2),
            "mib_per_s": round(2 * BULK_REQUESTS * BULK_BYTES / (1 << 20) / seconds, 2)}


async def main(args: argparse.Namespace) -> None:
    config = P2PConfig(
        listen_addrs=(args.listen,), bootstrap=(args.bootstrap,) if args.bootstrap else (),
        reachability=args.reachability, hole_punching=args.hole_punching,
        presence_interval_s=1.0, peer_ttl_s=6.0, bootstrap_retry_s=0.5, enable_random_walk=False,
        request_timeout_s=10.0, max_request_bytes=2 * BULK_BYTES,
    )
    install_hardening(config)
    node = P2PNode(NodeIdentity.generate(), config)
    state: dict[str, Any] = {"measurements": {}, "events": []}
    started = time.monotonic()

    def write_status() -> None:
        state.update(
            peer_id=node.peer_id.to_base58(), listen=node.listen_addrs(), announced=list(node.presence().addrs),
            reachability=node.nat.reachability.value, relaying=node.nat.is_relaying(),
            reservations=list(node.nat.reservations.values()), connections=connection_kinds(node),
            peers=[e.peer_id for e in node.peers()], uptime_s=round(time.monotonic() - started, 2))
        tmp = Path(args.status + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(args.status)

    async def measure_loop() -> None:
        relay = ID.from_base58(args.bootstrap.rsplit("/p2p/", 1)[1])
        while relay not in node.connected_peers():  # noqa: ASYNC110 (set by discovery's dial)
            await trio.sleep(0.2)
        # Baseline: the direct path from behind this NAT to the relay (one NAT, no relaying).
        state["measurements"]["to_relay"] = await measure(node, relay)
        while True:
            await trio.sleep(0.2)
            others = [e for e in node.peers() if e.addrs and all("/p2p-circuit" in a for a in e.addrs)]
            if not others:
                continue
            peer = ID.from_base58(others[0].peer_id)
            try:
                kind = connection_kinds(node).get(peer.to_base58())
                if kind is None:
                    await node.ping(peer, timeout=20)  # dials through the relay
                    state["events"].append([round(time.monotonic() - started, 2), "connected"])
                    continue
                if kind not in state["measurements"]:
                    state["events"].append([round(time.monotonic() - started, 2), kind])
                    result = await measure(node, peer)
                    # The connection may have changed kind during the measurement: keep it only if it did not.
                    if connection_kinds(node).get(peer.to_base58()) == kind:
                        state["measurements"][kind] = result
            except Exception as exc:  # record and go on: the test reads what happened
                state["events"].append([round(time.monotonic() - started, 2), f"error: {exc!r}"[:300]])

    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        if args.measure:
            nursery.start_soon(measure_loop)
        while True:
            write_status()
            await trio.sleep(0.25)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The hole-punch outcome is the point of phase 2: keep DCUtR's own account of it in the log.
    logging.getLogger("libp2p.relay.circuit_v2.dcutr").setLevel(logging.DEBUG)
    trio.run(main, parse())
