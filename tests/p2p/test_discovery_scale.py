"""Discovery that scales: bounded connections, full peer tables, and peer exchange that cannot forge presence."""

from __future__ import annotations

import collections
import json
import time

import pytest
import trio
from libp2p.peer.id import ID

from protocols.canonical import canonical_json
from protocols.errors import ConfigError
from protocols.messages import Presence, encode
from protocols.p2p.config import P2PConfig
from protocols.p2p.identity import NodeIdentity
from protocols.p2p.node import P2PNode
from protocols.p2p.testing import loopback_config, make_nodes, start_node
from protocols.topics import PEERS_PROTOCOL
from protocols.types import RejectCode
from protocols.wire import PeersRequest, PeersResponse

FORGED_ADDR = "/ip4/6.6.6.6/tcp/1"


def _presence(node: P2PNode, *, peer_id: str | None = None, addrs: tuple[str, ...] | None = None) -> Presence:
    return Presence(
        peer_id=peer_id or node.peer_id.to_base58(),
        addrs=addrs or tuple(a.split("/p2p/")[0] for a in node.listen_addrs()),
        eth_address=node.eth_address,
        roles=(),
        node_class="S",
        jobs=(),
        version="0.1.0",
    )


async def test_twelve_nodes_know_everyone_through_a_few_connections_each() -> None:
    n, target = 12, 3
    async with make_nodes(n, wait_discovery_s=120, target_peers=target) as nodes:
        edges = {frozenset((node.peer_id, peer)) for node in nodes for peer in node.connected_peers()}
        # Each node dials only while below target (plus its bootstrap), so the links are far fewer than a full
        # mesh's n(n-1)/2 = 66, yet every peer table is complete (make_nodes waited for that).
        assert len(edges) <= n * (target + 1) < n * (n - 1) // 2
        for node in nodes:
            assert len(node.peers()) == n - 1
        # A request to a known but unconnected peer dials it by the addresses in the peer table.
        a, b = next((x, y) for x in nodes[1:] for y in nodes[1:]
                    if x is not y and y.peer_id not in x.connected_peers())
        await a.ping(b.peer_id.to_base58(), timeout=20)
        assert b.peer_id in a.connected_peers()


async def test_a_newcomer_learns_the_network_from_its_bootstrap_by_peer_exchange() -> None:
    # A long presence interval: once the swarm is up nobody announces for 30 s, so only peer exchange can fill
    # the newcomer's table this fast (and only its own prompt announcement can fill the others').
    slow = {"presence_interval_s": 30.0, "peer_ttl_s": 90.0}
    async with make_nodes(6, wait_discovery_s=60, **slow) as nodes, trio.open_nursery() as nursery:
        config = loopback_config(bootstrap=(nodes[0].listen_addrs()[0],), **slow)
        async with start_node(nursery, config) as fresh:
            await fresh.wait_for_peers(6, timeout=10)
            for node in nodes:
                await node.wait_for_peers(6, timeout=20)


async def test_forged_or_stale_presence_in_a_peer_exchange_reply_is_rejected() -> None:
    async with make_nodes(3, wait_discovery_s=60) as (liar, honest, other), trio.open_nursery() as nursery:
        genuine = encode(_presence(honest), honest.identity, now=time.time()).decode()
        tampered = json.loads(genuine)
        tampered["payload"]["addrs"] = [FORGED_ADDR]
        impersonation = encode(_presence(liar, peer_id=other.peer_id.to_base58(), addrs=(FORGED_ADDR,)),
                               liar.identity, now=time.time()).decode()
        departed = NodeIdentity.generate()
        stale = encode(Presence(peer_id=departed.peer_id.to_base58(), addrs=(FORGED_ADDR,),
                                eth_address=departed.eth_address, roles=(), node_class="S", jobs=(),
                                version="0.1.0"), departed, now=time.time() - 600).decode()
        reply = PeersResponse(presences=(genuine, canonical_json(tampered).decode(), impersonation, stale,
                                         "not json")).to_bytes()

        async def lie(request: bytes, _peer: ID) -> bytes:
            PeersRequest.from_bytes(request)
            return reply

        liar.set_request_handler(PEERS_PROTOCOL, lie)
        async with start_node(nursery, loopback_config()) as victim:
            accepted = await victim.exchange_peers(liar.listen_addrs()[0], timeout=20)
            assert accepted == 1
            assert victim.metrics.rejected == collections.Counter({
                RejectCode.BAD_SIGNATURE: 1, RejectCode.WRONG_SIGNER: 1, RejectCode.STALE: 1,
                RejectCode.BAD_SCHEMA: 1,
            })
            entry = victim.peer_table.get(honest.peer_id.to_base58())
            assert entry is not None and FORGED_ADDR not in entry.addrs
            assert departed.peer_id.to_base58() not in victim.peer_table
            assert all(FORGED_ADDR not in e.addrs for e in victim.peers())


async def test_in_a_network_larger_than_presence_scale_peers_live_peers_stay_and_a_dead_one_ages_out() -> None:
    # 6 nodes, scale 2: each announces every ~3 s instead of 1 s, and the TTL grows from 6 s to ~15-18 s alike.
    async with make_nodes(6, wait_discovery_s=60, presence_scale_peers=2) as nodes:
        gone = nodes[5].peer_id.to_base58()
        await nodes[5].stop()
        await nodes[1].wait_until_gone(gone, timeout=60)
        for node in nodes[:5]:
            await node.wait_until_gone(gone, timeout=30)
            assert len(node.peers()) == 4


@pytest.mark.parametrize("settings", [
    {"target_peers": 0}, {"target_peers": 9, "max_connected_peers": 8}, {"presence_scale_peers": 0},
])
def test_discovery_settings_are_validated(settings: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=next(iter(settings))):
        P2PConfig(**settings)
