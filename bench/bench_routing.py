"""Content-routing benchmark: time to announce a root and to find its provider in the DHT, N hosts on loopback.

    .venv/bin/python bench/bench_routing.py [--nodes 16] [--degree 3] [--lookups 10] [--seed 1]

N lightweight nodes (a libp2p host, py-libp2p's Kademlia DHT as server, :class:`ContentRouting`, a block store and
bitswap; no gossip or discovery) run in one trio process. Each connects to ``degree`` random others plus its ring
neighbour, so most pairs are not connected and a lookup has to walk the DHT. For each lookup a random node stores
64 KiB (which announces it), and a random node not connected to it looks the root up: the first provider
(``limit=1``), the whole walk (default limit), and a fetch that names no provider (lookup + dial + bitswap,
verified). An announcement goes to the k = 20 peers closest to the key, so in a network of up to ~20 nodes nearly
every node holds the record and a lookup is local: only nodes that were not given the record are measured (use
``--nodes 32`` or more for lookups that walk). Prints one JSON line per figure with median / p90 / max in
milliseconds, and the load average.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libp2p.peer.id import ID  # noqa: E402

from storage.cid import parse_cid  # noqa: E402
from tests.p2p.routing_nodes import RoutingNode, routing_config, routing_nodes  # noqa: E402


def summary(name: str, samples_s: list[float], **extra: object) -> str:
    ms = sorted(s * 1000 for s in samples_s)
    if not ms:
        return json.dumps({"figure": name, "n": 0, **extra})
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    return json.dumps({"figure": name, "n": len(ms), "median_ms": round(statistics.median(ms), 1),
                       "p90_ms": round(p90, 1), "max_ms": round(ms[-1], 1), **extra})


async def connect_graph(nodes: list[RoutingNode], degree: int, rng: random.Random) -> set[tuple[int, int]]:
    edges: set[tuple[int, int]] = set()
    for i in range(len(nodes)):
        others = [j for j in range(len(nodes)) if j != i]
        for j in [(i + 1) % len(nodes), *rng.sample(others, degree)]:
            edges.add((min(i, j), max(i, j)))
    for i, j in sorted(edges):
        await nodes[i].connect(nodes[j])
    return edges


async def reset_to_graph(nodes: list[RoutingNode], edges: set[tuple[int, int]]) -> None:
    """Close the connections the last lookup and fetch opened, so that every lookup starts from the same sparse
    graph (routing tables keep what they learnt, as a long-running node's would)."""
    index = {n.peer_id: i for i, n in enumerate(nodes)}

    async def disconnect(node: RoutingNode, peer: ID) -> None:
        with trio.move_on_after(5):
            await node.host.disconnect(peer)

    async with trio.open_nursery() as nursery:
        for i, node in enumerate(nodes):
            for peer in list(node.host.get_connected_peers()):
                j = index.get(peer)
                if j is not None and (min(i, j), max(i, j)) not in edges:
                    nursery.start_soon(disconnect, node, peer)


async def bench(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    cfg = routing_config(provide_spacing_s=0.05, provider_lookup_timeout_s=10.0)
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        async with routing_nodes(args.nodes, Path(tmp), config=cfg) as nodes:
            edges = await connect_graph(nodes, args.degree, rng)
            print(json.dumps({"nodes": args.nodes, "edges": len(edges), "lookups": args.lookups,
                              "load_before": os.getloadavg()}), flush=True)
            announce, first, walk, fetch = [], [], [], []
            found_counts, holders, local = [], [], 0
            for _ in range(args.lookups):
                holder = rng.choice(nodes)
                data = os.urandom(64 * 1024)
                cid = await holder.content.put(data)
                key = parse_cid(cid).multihash
                holder.routing.withdraw(key)  # announced below, timed, instead of by the background task
                await reset_to_graph(nodes, edges)
                start = trio.current_time()
                assert await holder.routing.provide_now(key)
                announce.append(trio.current_time() - start)
                await reset_to_graph(nodes, edges)  # the announcement dialled the closest peers
                # A lookup from a node the record was sent to ends at once (the record is local): measure those
                # that must walk, i.e. neither connected to the holder nor holding its record.
                has_record = [n for n in nodes if n is not holder and any(
                    p.peer_id == holder.peer_id for p in n.dht.provider_store.get_providers(key))]
                holders.append(len(has_record))
                strangers = [n for n in nodes if n is not holder and n not in has_record
                             and holder.peer_id not in n.host.get_connected_peers()]
                if len(strangers) < 2:
                    local += 1
                    continue
                seeker, fetcher = rng.sample(strangers, 2)

                start = trio.current_time()
                got = await seeker.routing.find_providers(key, limit=1)
                first.append(trio.current_time() - start)
                assert [p.peer_id for p in got] == [holder.peer_id], got
                start = trio.current_time()
                found_counts.append(len(await seeker.routing.find_providers(key)))
                walk.append(trio.current_time() - start)

                start = trio.current_time()
                assert await fetcher.content.get(cid, max_bytes=1 << 20, timeout_s=30.0, providers=[]) == data
                fetch.append(trio.current_time() - start)
            print(summary("announce (walk + ADD_PROVIDER)", announce,
                          nodes_given_the_record=sorted(set(holders))), flush=True)
            print(json.dumps({"lookups_skipped_every_stranger_held_the_record": local}), flush=True)
            print(summary("find first provider (limit=1)", first), flush=True)
            print(summary("find providers (whole walk, limit 8)", walk, found=sorted(set(found_counts))), flush=True)
            print(summary("fetch 64 KiB naming no provider (lookup + dial + bitswap)", fetch), flush=True)
            print(json.dumps({"load_after": os.getloadavg()}), flush=True)


def main() -> None:
    # py-libp2p logs a WARNING per DHT stream that a closed connection cut; the figures are what this prints.
    logging.getLogger("libp2p").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--degree", type=int, default=2, help="random peers each node dials, plus its ring neighbour")
    parser.add_argument("--lookups", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    trio.run(bench, parser.parse_args())


if __name__ == "__main__":
    main()
