"""Content routing over real hosts on 127.0.0.1: provider records in py-libp2p's Kademlia DHT, found by a node that
knows nobody holding the content, and fetched (verified) from whoever the DHT names, liars included."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from node.config import NodeConfig
from node.content import ContentNode, open_blockstore, start_content_node
from protocols.p2p.content_routing import MODE_CHECK_S, ContentRouting, initial_dht_mode
from protocols.p2p.hardening import disable_auto_connector
from protocols.p2p.identity import NodeIdentity
from protocols.p2p.node import P2PNode
from protocols.p2p.testing import make_nodes
from storage.bitswap_wire import PROTOCOLS as BITSWAP_PROTOCOLS
from storage.blockstore import FilesystemBlockStore
from storage.cid import parse_cid
from storage.content import LocalContentStore
from storage.errors import BlockNotFound
from storage.exchange import BlockExchange, ExchangeConfig
from tests.p2p.routing_nodes import RoutingNode, routing_config, routing_nodes
from tests.storage.conftest import make_host

MB = 1 << 20
FETCH_TIMEOUT_S = 40.0
STALL_S = 1.0
FAST = ExchangeConfig(block_timeout_s=STALL_S, stream_timeout_s=5.0, dial_timeout_s=5.0)


async def until(predicate: Any, timeout: float) -> None:
    """Poll a condition with a deadline (announcing runs in another task; there is no event to wait on)."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


def holds_record(server: RoutingNode, key: bytes, provider: RoutingNode) -> bool:
    return any(p.peer_id == provider.peer_id for p in server.dht.provider_store.get_providers(key))


async def read_forever(stream: INetStream) -> None:
    """A peer that accepts the stream and never answers (the worst a liar can do without being dropped at once)."""
    while await stream.read(65536):
        pass


async def test_a_node_finds_content_through_the_dht_and_fetches_it_verified(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with routing_nodes(3, tmp_path, exchange=FAST) as (a, b, c):
        await c.connect(b)
        data = os.urandom(3 * MB)
        cid = await c.content.put(data)  # stored and pinned: C announces it
        key = parse_cid(cid).multihash
        await until(lambda: holds_record(b, key, c), timeout=20)

        await a.connect(b)  # after the announcement: A learns of C only from the DHT
        assert c.peer_id not in a.host.get_connected_peers()
        assert not a.dht.provider_store.get_providers(key)
        # B, the only provider A names, lacks it: the fetch fails over to the DHT, which names C.
        got = await a.content.get(cid, max_bytes=8 * MB, timeout_s=FETCH_TIMEOUT_S, providers=[b.peer_id])
        assert got == data
        assert c.peer_id in a.host.get_connected_peers()
        # A's lookup did not turn C's record into one A serves to others as if C had announced it to A.
        assert not holds_record(a, key, c)
        # Every query a server answered ended with its client closing the stream: no warning for that.
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "DHT message" in r.getMessage()]


async def test_without_a_router_the_same_fetch_fails(tmp_path: Path) -> None:
    """The control for the test above: the named provider lacks the content, and nothing else is tried."""
    async with routing_nodes(3, tmp_path, exchange=FAST) as (a, b, c):
        await c.connect(b)
        cid = await c.content.put(os.urandom(MB))
        await until(lambda: holds_record(b, parse_cid(cid).multihash, c), timeout=20)
        await a.connect(b)
        a.content.router = None
        try:
            await a.content.get(cid, max_bytes=8 * MB, timeout_s=FETCH_TIMEOUT_S, providers=[b.peer_id])
        except BlockNotFound:
            return
        raise AssertionError("fetched from a provider that was never named nor found")


async def test_lying_providers_cost_a_bounded_time(tmp_path: Path) -> None:
    """Three liars announce a root they do not hold (one answers DONT_HAVE, one stalls every want, one has gone);
    the fetch still gets the verified content from the real provider, well inside its deadline."""
    async with routing_nodes(5, tmp_path, exchange=FAST) as (a, b, c, liar, gone):
        async with trio.open_nursery() as nursery:
            staller: Staller = await nursery.start(_stalling_provider)
            for node in (c, liar, gone):
                await node.connect(b)
            await staller.host.connect(b.info)
            await staller.dht.add_peer(b.peer_id, skip_server_mode_check=True)

            data = os.urandom(2 * MB)
            cid = await c.content.put(data)
            key = parse_cid(cid).multihash
            for router in (liar.routing, gone.routing, staller.routing):
                assert await router.provide_now(key)  # records for content they do not hold
            await until(lambda: len(b.dht.provider_store.get_providers(key)) == 4, timeout=20)
            gone.stop()

            await a.connect(b)
            start = trio.current_time()
            got = await a.content.get(cid, max_bytes=8 * MB, timeout_s=FETCH_TIMEOUT_S, providers=[liar.peer_id])
            elapsed = trio.current_time() - start
            assert got == data
            # Without fail-over the staller would hold its wants until the deadline (40 s); each liar costs at most
            # a stall (1 s), a DONT_HAVE or a failed dial (refused at once on loopback).
            assert elapsed < FETCH_TIMEOUT_S / 2, elapsed
            nursery.cancel_scope.cancel()


@dataclass
class Staller:
    host: IHost
    dht: KadDHT
    routing: ContentRouting


async def _stalling_provider(advertised: tuple[str, ...] | None = None, *,
                             task_status: trio.TaskStatus[Staller]) -> None:
    """A DHT node whose bitswap accepts wants and never answers (its records name ``advertised`` if given)."""
    host = make_host()
    disable_auto_connector(host)
    dht = KadDHT(host, DHTMode.SERVER, enable_random_walk=False)
    routing = ContentRouting(host, dht, routing_config(),
                             advertised=None if advertised is None else (lambda: advertised))
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        for protocol in BITSWAP_PROTOCOLS:
            host.set_stream_handler(protocol, read_forever)
        task_status.started(Staller(host, dht, routing))
        await trio.sleep_forever()


async def test_a_lookup_returns_by_its_deadline_when_a_dht_peer_never_answers(tmp_path: Path) -> None:
    async with routing_nodes(1, tmp_path) as (a,):
        mute = make_host()
        async with mute.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            mute.set_stream_handler(KAD_PROTOCOL, read_forever)
            await a.host.connect(PeerInfo(mute.get_id(), mute.get_addrs()))
            await a.dht.add_peer(mute.get_id(), skip_server_mode_check=True)
            start = trio.current_time()
            found = await a.routing.find_providers(parse_cid(_SOME_CID).multihash, timeout_s=2.0)
            assert found == []
            assert trio.current_time() - start < 4.0


async def test_announcements_are_bounded_and_withdrawn_on_unpin(tmp_path: Path) -> None:
    async with routing_nodes(2, tmp_path, config=routing_config(provide_max_roots=3)) as (a, b):
        await a.connect(b)
        cids = [await a.content.put(os.urandom(1000 + i)) for i in range(5)]
        keys = [parse_cid(c).multihash for c in cids]
        assert a.routing.announcing() == keys[2:]  # the most recent three
        await until(lambda: all(holds_record(b, k, a) for k in keys[2:]), timeout=20)
        await a.content.unpin(cids[4])
        assert a.routing.announcing() == keys[2:4]
        assert a.host.get_id() not in [p.peer_id for p in a.dht.provider_store.get_providers(keys[4])]
        # Re-announcing is ours, not the library's all-at-once republish.
        assert not a.dht.provider_store.providing_keys


_SOME_CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


async def test_a_full_node_announces_what_it_stores_and_its_fetches_fall_back_to_the_dht(tmp_path: Path) -> None:
    """The wiring in node.content: a P2PNode's store announces through the node's DHT, and a fetch whose named
    provider lacks the content is served by the provider the DHT names."""
    async with make_nodes(3, wait_discovery_s=30, provide_spacing_s=0.05) as nets:
        async with trio.open_nursery() as nursery:
            nodes = []
            for i, net in enumerate(nets):
                store = FilesystemBlockStore(tmp_path / f"n{i}", max_bytes=1 << 30, durable=False)
                exchange = BlockExchange(net.host, store, config=FAST)
                await nursery.start(exchange.run)
                nodes.append(ContentNode(store, net=net, exchange=exchange, fetch_timeout_s=FETCH_TIMEOUT_S))
            data = os.urandom(MB)
            quiet = await nodes[2].store.put(os.urandom(1000), announce=False)  # a round's update: no record
            await nodes[2].store.pin(quiet, announce=False)
            cid = await nodes[2].store.put(data)
            assert nets[2].routing.announcing() == [parse_cid(cid).multihash]
            await until(lambda: nets[2].routing.announced >= 1, timeout=20)
            got = await nodes[0].store.get(cid, max_bytes=2 * MB, timeout_s=FETCH_TIMEOUT_S,
                                           providers=[nets[1].peer_id])
            assert got == data
            nursery.cancel_scope.cancel()


async def test_a_restarted_node_announces_what_it_had_pinned(tmp_path: Path) -> None:
    cfg = NodeConfig(data_dir=str(tmp_path / "node")).validate()
    cid = await LocalContentStore(open_blockstore(cfg)).put(os.urandom(5000))  # pinned before the node starts
    net = P2PNode(NodeIdentity.generate(), routing_config())  # start_content_node starts it
    async with trio.open_nursery() as nursery:
        await start_content_node(nursery, cfg, net)
        assert net.routing.announcing() == [parse_cid(cid).multihash]
        nursery.cancel_scope.cancel()


async def test_a_lookup_walks_past_neighbours_without_the_record(tmp_path: Path) -> None:
    """A - B - D - C: the record is at D (and C); A's only neighbour B lacks it, so the lookup must walk the DHT."""
    async with routing_nodes(4, tmp_path, exchange=FAST) as (a, b, c, d):
        await c.connect(d)
        data = os.urandom(MB)
        cid = await c.content.put(data)
        key = parse_cid(cid).multihash
        await until(lambda: holds_record(d, key, c), timeout=20)
        await b.connect(d)
        await a.connect(b)
        assert not b.dht.provider_store.get_providers(key)
        assert [p.peer_id for p in await a.routing.find_providers(key)] == [c.peer_id]
        got = await a.content.get(cid, max_bytes=2 * MB, timeout_s=FETCH_TIMEOUT_S, providers=[b.peer_id])
        assert got == data


def test_the_dht_mode_follows_the_config() -> None:
    assert initial_dht_mode(routing_config()) is DHTMode.SERVER
    assert initial_dht_mode(routing_config(dht_mode="client")) is DHTMode.CLIENT
    assert initial_dht_mode(routing_config(reachability="private")) is DHTMode.CLIENT
    assert initial_dht_mode(routing_config(reachability="private", dht_mode="server")) is DHTMode.SERVER


async def test_in_auto_mode_a_node_found_private_stops_serving_the_dht(autojump_clock: Any) -> None:
    host = make_host()
    dht = KadDHT(host, DHTMode.SERVER, enable_random_walk=False)
    private = False
    routing = ContentRouting(host, dht, routing_config(), is_private=lambda: private)
    async with trio.open_nursery() as nursery:
        await nursery.start(routing.run)
        await trio.sleep(MODE_CHECK_S + 1)
        assert KAD_PROTOCOL in host.get_mux().handlers
        private = True
        await trio.sleep(MODE_CHECK_S + 1)
        assert KAD_PROTOCOL not in host.get_mux().handlers  # peers can no longer query it
        assert dht.mode.value == "CLIENT"
        nursery.cancel_scope.cancel()


async def test_a_record_names_the_addresses_the_node_advertises(tmp_path: Path) -> None:
    """A node behind a NAT advertises its relayed address; its provider records must carry that one, and a node
    with no dialable address yet (no relay slot) sends none."""
    async with routing_nodes(1, tmp_path) as (b,):
        relayed = f"{b.host.get_addrs()[0]}/p2p-circuit"
        relayed = relayed if "/p2p/" in relayed else relayed.replace("/p2p-circuit",
                                                                     f"/p2p/{b.peer_id.to_base58()}/p2p-circuit")
        advertised: tuple[str, ...] = ()
        host = make_host()
        disable_auto_connector(host)
        dht = KadDHT(host, DHTMode.SERVER, enable_random_walk=False)
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            routing = ContentRouting(host, dht, routing_config(), advertised=lambda: advertised)
            await host.connect(b.info)
            await dht.add_peer(b.peer_id, skip_server_mode_check=True)
            key = parse_cid(_SOME_CID).multihash
            assert not await routing.provide_now(key)
            assert not b.dht.provider_store.get_providers(key)
            advertised = (relayed,)
            assert await routing.provide_now(key)
            await until(lambda: bool(b.dht.provider_store.get_providers(key)), timeout=10)
            [record] = b.dht.provider_store.get_providers(key)
            assert record.peer_id == host.get_id() and [str(a) for a in record.addrs] == [relayed]


async def test_records_naming_addresses_that_swallow_dials_cost_one_dial_timeout(tmp_path: Path) -> None:
    """B holds three records naming peers at an address that accepts TCP and never answers (what a liar sends in an
    ADD_PROVIDER without a signed peer record); the providers found are dialled at once, so they cost one dial
    timeout together, not one each before the real provider (the exchange alone dials in turn)."""

    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, silent, [listener])
        hole = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{listener.socket.getsockname()[1]}")
        async with routing_nodes(3, tmp_path, exchange=FAST) as (a, b, c):
            data = os.urandom(MB)
            cid = await c.content.put(data)
            key = parse_cid(cid).multihash
            for _ in range(3):
                b.dht.provider_store.add_provider(key, PeerInfo(ID.from_pubkey(create_new_key_pair().public_key),
                                                                [hole]))
            await c.connect(b)
            await until(lambda: holds_record(b, key, c), timeout=20)
            await a.connect(b)
            start = trio.current_time()
            got = await a.content.get(cid, max_bytes=2 * MB, timeout_s=FETCH_TIMEOUT_S, providers=[])
            assert got == data
            assert trio.current_time() - start < 2 * FAST.dial_timeout_s
        nursery.cancel_scope.cancel()
