"""NAT traversal with real hosts on 127.0.0.1: dial-back reachability, relayed connections, hole punching.

A "private" node here is one told it is unreachable (``reachability="private"``): it announces only its relayed
address, so its peers can reach it only through the relay. The network-namespace test (``test_netns.py``) puts
real NATs in between.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from protocols.errors import ConfigError
from protocols.p2p.config import P2PConfig
from protocols.p2p.dialback import DIALBACK_PROTOCOL, Reachability, dial_candidates, verdict
from protocols.p2p.node import P2PNode
from protocols.p2p.testing import loopback_config, start_node
from protocols.topics import PING_PROTOCOL
from storage.blockstore import FilesystemBlockStore
from storage.content import LocalContentStore
from storage.exchange import BlockExchange

MB = 1 << 20


async def until(predicate: Any, timeout: float) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 (state changes in other tasks; nothing to wait on)
            await trio.sleep(0.05)


def relayed_only(node: P2PNode, peer: ID) -> bool:
    return peer in node.nat.relayed_peers()


def test_verdict_and_candidates() -> None:
    assert verdict([True]) is Reachability.PUBLIC and verdict([False]) is Reachability.PRIVATE
    assert verdict([True, None]) is Reachability.PUBLIC and verdict([False, None]) is Reachability.PRIVATE
    assert verdict([False, False]) is Reachability.PRIVATE
    # One liar among three that answer flips nothing: a private node stays private, a public one public.
    assert verdict([False, False, True]) is Reachability.PRIVATE
    assert verdict([True, True, False]) is Reachability.PUBLIC
    # A tie, or no answer: ask again later.
    assert verdict([None, False, True]) is Reachability.UNKNOWN
    assert verdict([None, None]) is Reachability.UNKNOWN
    assert verdict([]) is Reachability.UNKNOWN
    # Only the observed IP is dialled (no amplification), plus each advertised port there (port forwarding).
    chosen = [str(a) for a in dial_candidates(
        ["/ip4/10.0.1.2/tcp/4001", "/ip4/203.0.113.7/tcp/4002/p2p/x", "/ip4/1.2.3.4/tcp/1/p2p/r/p2p-circuit"],
        "203.0.113.7")]
    assert chosen == ["/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/tcp/4002"]
    with pytest.raises(ConfigError, match="reachability"):
        P2PConfig(reachability="sometimes")
    with pytest.raises(ConfigError, match="relays"):
        P2PConfig(relays=("/ip4/127.0.0.1/tcp/1",))


async def test_dial_back_finds_loopback_nodes_public() -> None:
    async with trio.open_nursery() as nursery:
        async with start_node(nursery, loopback_config()) as first:
            config = loopback_config(bootstrap=(first.listen_addrs()[0],))
            async with start_node(nursery, config) as second:
                assert await second.nat.wait_reachability(20) is Reachability.PUBLIC
                assert await first.nat.wait_reachability(20) is Reachability.PUBLIC
                assert first.nat.is_relaying()
                # Public nodes announce their listen addresses, as before.
                assert second.presence().addrs == tuple(a.split("/p2p/")[0] for a in second.listen_addrs())
        nursery.cancel_scope.cancel()


async def test_dial_back_fails_for_an_address_nobody_listens_on() -> None:
    async with trio.open_nursery() as nursery:
        async with start_node(nursery, loopback_config()) as first:
            config = loopback_config(bootstrap=(first.listen_addrs()[0],))
            async with start_node(nursery, config) as second:
                await until(lambda: first.peer_id in second.connected_peers(), 20)
                with trio.socket.socket() as probe:  # a free port, closed again: nothing answers there
                    await probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
                reply = await second.request(first.peer_id, DIALBACK_PROTOCOL,
                                             f'{{"addrs":["/ip4/127.0.0.1/tcp/{port}"]}}'.encode())
                assert reply == b'{"reached":null}'
        nursery.cancel_scope.cancel()


async def test_private_node_is_reached_through_the_relay(tmp_path: Path) -> None:
    base = dict(hole_punching=False)
    async with trio.open_nursery() as nursery:
        async with start_node(nursery, loopback_config(reachability="public", **base)) as relay:
            joined = loopback_config(bootstrap=(relay.listen_addrs()[0],), **base)
            # Both behind NATs (a private node would dial a public dialer directly, which is fine but not this test).
            private_config = dataclasses.replace(joined, reachability="private")
            async with start_node(nursery, private_config) as private, start_node(nursery, private_config) as dialer:
                await until(lambda: private.nat.reservations, 20)
                circuit = private.nat.reservations[relay.peer_id]
                assert circuit == relay.listen_addrs()[0] + "/p2p-circuit"
                assert private.presence().addrs == (circuit,)
                await dialer.wait_for_peers(1, timeout=20, predicate=lambda e: e.addrs == (circuit,))

                # Request/response: the dialer knows only the relayed address, so the connection is relayed.
                assert await dialer.request(private.peer_id, PING_PROTOCOL, b"x" * 300_000, timeout=20) == \
                    b"x" * 300_000
                assert relayed_only(dialer, private.peer_id) and relayed_only(private, dialer.peer_id)

                # Bitswap over the same relayed connection, in both directions.
                stores = []
                for node, name in ((private, "private"), (dialer, "dialer")):
                    store = FilesystemBlockStore(tmp_path / name, max_bytes=1 << 30, durable=False)
                    exchange = BlockExchange(node.host, store)
                    await nursery.start(exchange.run)
                    stores.append(LocalContentStore(store, exchange))
                data = os.urandom(3 * MB)
                cid = await stores[0].put(data)
                provider = PeerInfo(private.peer_id, [multiaddr.Multiaddr(circuit)])
                assert await stores[1].get(cid, max_bytes=4 * MB, timeout_s=60, providers=[provider]) == data
                back = os.urandom(MB)
                cid_back = await stores[1].put(back)
                dialer_info = PeerInfo(dialer.peer_id, [multiaddr.Multiaddr(dialer.nat.reservations[relay.peer_id])])
                assert await stores[0].get(cid_back, max_bytes=2 * MB, timeout_s=60, providers=[dialer_info]) == back
                assert relayed_only(dialer, private.peer_id)
        nursery.cancel_scope.cancel()


async def test_a_node_seen_at_another_ip_than_it_listens_on_is_private_and_reserves() -> None:
    # The node listens on 127.0.0.2 only, but its connections to the relay leave from 127.0.0.1 (the kernel's
    # source for 127.0.0.1), as a host behind a NAT is seen at its router's address. The relay dials only the
    # observed IP (anti-amplification): 127.0.0.2 is not tried although it would answer, 127.0.0.1 at the advertised
    # port refuses, so the verdict is PRIVATE and the node takes a relay slot.
    async with trio.open_nursery() as nursery:
        async with start_node(nursery, loopback_config()) as relay:
            config = loopback_config(bootstrap=(relay.listen_addrs()[0],), listen_addrs=("/ip4/127.0.0.2/tcp/0",))
            async with start_node(nursery, config) as node:
                listen = node.listen_addrs()[0].split("/p2p/")[0]
                reply = await node.request(relay.peer_id, DIALBACK_PROTOCOL, f'{{"addrs":["{listen}"]}}'.encode())
                assert reply == b'{"reached":null}'
                assert await node.nat.wait_reachability(20) is Reachability.PRIVATE
                await until(lambda: node.nat.reservations, 20)
                assert node.presence().addrs == (relay.listen_addrs()[0] + "/p2p-circuit",)
                assert relay.nat.reachability is not Reachability.PRIVATE
        nursery.cancel_scope.cancel()


async def test_hole_punching_upgrades_a_relayed_connection() -> None:
    # Both private: neither announces a direct address, so only DCUtR's address exchange can lead to a direct
    # connection; on loopback nothing blocks the simultaneous dial, so it must replace the relayed one.
    async with trio.open_nursery() as nursery:
        async with start_node(nursery, loopback_config(reachability="public")) as relay:
            private_config = loopback_config(bootstrap=(relay.listen_addrs()[0],), reachability="private")
            async with start_node(nursery, private_config) as private, start_node(nursery, private_config) as dialer:
                await until(lambda: private.nat.reservations, 20)
                circuit = private.nat.reservations[relay.peer_id]
                await dialer.wait_for_peers(1, timeout=20, predicate=lambda e: e.addrs == (circuit,))
                await dialer.ping(private.peer_id, timeout=20)
                await until(lambda: private.peer_id in dialer.connected_peers()
                            and not relayed_only(dialer, private.peer_id), 30)
                await dialer.ping(private.peer_id, timeout=10)
        nursery.cancel_scope.cancel()


async def test_relay_limits_and_relay_service_off() -> None:
    # One slot: the second private node is refused while the first holds it. A public node with relay_service off
    # refuses every reservation.
    async with trio.open_nursery() as nursery:
        async with start_node(nursery, loopback_config(reachability="public", relay_max_reservations=1)) as relay, \
                start_node(nursery, loopback_config(reachability="public", relay_service=False)) as no_relay:
            config = loopback_config(bootstrap=(relay.listen_addrs()[0],), reachability="private", hole_punching=False)
            async with start_node(nursery, config) as first:
                await until(lambda: first.nat.reservations, 20)
                async with start_node(nursery, config) as second:
                    await trio.sleep(3 * config.bootstrap_retry_s + 1)  # several tries of the reservation loop
                    assert not second.nat.reservations and second.presence().addrs == ()
            refused = loopback_config(bootstrap=(no_relay.listen_addrs()[0],), reachability="private")
            async with start_node(nursery, refused) as third:
                await until(lambda: no_relay.peer_id in third.connected_peers(), 20)
                await trio.sleep(3 * refused.bootstrap_retry_s + 1)
                assert not third.nat.reservations and not no_relay.nat.is_relaying()
        nursery.cancel_scope.cancel()
