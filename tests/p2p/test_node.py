"""Real libp2p hosts on 127.0.0.1 in one trio process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils.varint import encode_varint_prefixed

from protocols.canonical import canonical_json
from protocols.messages import Presence, encode
from protocols.p2p.errors import (
    DiscoveryTimeout,
    PayloadTooLarge,
    PeerUnreachable,
    RemoteError,
    RequestTimeout,
)
from protocols.p2p.identity import NodeIdentity
from protocols.p2p.node import P2PNode
from protocols.p2p.testing import loopback_config, make_nodes, scratch_topic, start_node
from protocols.topics import PRESENCE_TOPIC, TASK_PROTOCOL
from protocols.types import RejectCode
from tests.p2p.conftest import note

TOPIC = scratch_topic(1)


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    # Counters have no change event; poll them under a deadline.
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_ten_nodes_discover_each_other_from_one_bootstrap() -> None:
    # make_nodes returns once every node has had all 9 others in its table at once.
    async with make_nodes(10, wait_discovery_s=60) as nodes:
        everyone = {n.peer_id.to_base58() for n in nodes}
        for node in nodes:
            assert {e.peer_id for e in node.peers()} <= everyone - {node.peer_id.to_base58()}
            assert len(node.connected_peers()) >= 1
        entry = nodes[1].peer_table.get(nodes[2].peer_id.to_base58())
        assert entry is not None and entry.eth_address == nodes[2].eth_address and entry.node_class == "S"


async def test_a_message_reaches_every_subscriber() -> None:
    async with make_nodes(6, wait_discovery_s=60) as nodes:
        inboxes = [await node.subscribe(TOPIC) for node in nodes[1:]]
        await nodes[0].wait_for_topic_peers(TOPIC, 3, timeout=30)
        for node in nodes[1:]:
            await node.wait_for_topic_peers(TOPIC, 3, timeout=30)
        msg = note()
        await nodes[0].publish(TOPIC, msg)
        with trio.fail_after(20):
            for inbox in inboxes:
                assert await inbox.receive() == (msg, nodes[0].eth_address)


async def _raw_publish(node: P2PNode, topic: str, data: bytes) -> None:
    # Bypasses our encoder, not libp2p's own signing: the libp2p envelope stays valid.
    await node.gossip.pubsub.publish(topic, data)


async def test_invalid_messages_are_rejected_counted_and_never_delivered() -> None:
    async with make_nodes(2, wait_discovery_s=60) as (receiver, sender):
        rejecting_topic = scratch_topic(3)
        inbox = await receiver.subscribe(TOPIC)
        other = await receiver.subscribe(rejecting_topic, validator=lambda msg, signer: False)
        # The sender does not subscribe: a subscribed node validates its own publishes and would refuse to send.
        await sender.wait_for_topic_peers(TOPIC, 1, timeout=30)
        await sender.wait_for_topic_peers(rejecting_topic, 1, timeout=30)
        now = time.time()
        good = encode(note(), sender.identity, now=now)
        obj = json.loads(good)
        obj["payload"]["round"] = 7
        forged = canonical_json(obj)  # signature no longer matches
        bad_schema = b'{"v":1,"type":"scratch_note"}'
        someone_else = encode(note(), NodeIdentity.generate(), now=now)  # valid, but not the publisher
        stale = encode(note(), sender.identity, now=now - 3600)
        future = encode(note(), sender.identity, now=now + 3600)
        presence_elsewhere = encode(sender.presence(), sender.identity, now=now)
        for data in (forged, bad_schema, someone_else, stale, future, presence_elsewhere):
            await _raw_publish(sender, TOPIC, data)
        await sender.publish(rejecting_topic, note())
        expected = {
            RejectCode.BAD_SIGNATURE: 1, RejectCode.BAD_SCHEMA: 1, RejectCode.WRONG_SIGNER: 1,
            RejectCode.STALE: 1, RejectCode.FUTURE: 1,
            RejectCode.WRONG_TYPE: 1, RejectCode.REJECTED: 1,
        }
        try:
            await _until(lambda: all(receiver.metrics.rejected[r] >= c for r, c in expected.items()), 20, "")
        except trio.TooSlowError:
            raise AssertionError(f"rejections so far: {receiver.metrics.rejected}") from None
        valid = note(round_=5)
        await sender.publish(TOPIC, valid)
        with trio.fail_after(20):
            assert await inbox.receive() == (valid, sender.eth_address)  # the first delivery is the valid one
        with pytest.raises(trio.WouldBlock):
            other.receive_nowait()


async def test_garbage_on_every_protocol_leaves_the_node_serving() -> None:
    async with make_nodes(3, wait_discovery_s=60) as (victim, attacker, witness):
        inbox = await victim.subscribe(TOPIC)
        await witness.subscribe(TOPIC)
        protocols = [p for p in victim.host.get_mux().handlers if p is not None]
        assert "/meshsub/1.1.0" in protocols and "/ipfs/kad/1.0.0" in protocols and TASK_PROTOCOL not in protocols
        victim.set_request_handler(TASK_PROTOCOL, _echo)
        protocols.append(TASK_PROTOCOL)
        garbage = [
            b"\x00",
            b"\xff" * 64,
            encode_varint_prefixed(b"\x0a\xff\xff\xff\xff\x0f" + b"junk" * 40),  # framed, undecodable protobuf
            encode_varint_prefixed(_rpc_with_garbage_key(attacker.peer_id)),  # well framed, bad key
            b"\xff\xff\xff\xff\x0f",  # a huge length prefix, then nothing
        ]
        for protocol in protocols:
            for junk in garbage:
                try:
                    stream = await attacker.host.new_stream(victim.peer_id, [protocol])
                    await stream.write(junk)
                    await stream.close()
                except Exception:  # the victim may reset or drop the attacker: that is the point
                    pass
        # Raw bytes on the TCP port, before any security handshake.
        port = int(multiaddr.Multiaddr(victim.listen_addrs()[0]).value_for_protocol("tcp"))
        for junk in (b"\x00" * 10, b"/multistream/1.0.0\n" + b"\xff" * 100):
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            await tcp.send_all(junk)
            await tcp.aclose()
        # Still serving: requests from an honest peer and gossip from it.
        assert await witness.ping(victim.peer_id, timeout=10) < 10
        await witness.wait_for_topic_peers(TOPIC, 1, timeout=30)
        msg = note(round_=2)
        await witness.publish(TOPIC, msg)
        with trio.fail_after(20):
            assert await inbox.receive() == (msg, witness.eth_address)
        assert victim.metrics.request_errors["STREAM_FAILED"] + victim.metrics.request_errors[
            "PAYLOAD_TOO_LARGE"] >= 1


def _rpc_with_garbage_key(peer_id: ID) -> bytes:
    message = rpc_pb2.Message(data=b"x", topicIDs=[PRESENCE_TOPIC], from_id=peer_id.to_bytes(),
                              seqno=(1).to_bytes(8, "big"), key=b"\x08\x02\x12\x03bad", signature=b"junk")
    return rpc_pb2.RPC(publish=[message]).SerializeToString()


async def _echo(request: bytes, _peer: ID) -> bytes:
    return request


async def test_dead_node_ages_out() -> None:
    async with make_nodes(3, wait_discovery_s=60) as nodes:
        async with trio.open_nursery() as nursery:
            config = loopback_config(bootstrap=(nodes[0].listen_addrs()[0],))
            async with start_node(nursery, config) as leaving:
                gone_id = leaving.peer_id.to_base58()
                for node in nodes:
                    await node.wait_for_peers(3, timeout=30)
            for node in nodes:
                await node.wait_until_gone(gone_id, timeout=30)
                assert len(node.peers()) == 2
        with pytest.raises(DiscoveryTimeout):
            await nodes[0].wait_for_peers(5, timeout=0.2)


async def test_request_response_errors_are_typed() -> None:
    async with make_nodes(2, max_request_bytes=4096, max_response_bytes=1 << 20) as (server, client):

        async def handler(request: bytes, peer: ID) -> bytes:
            assert peer == client.peer_id
            if request == b"boom":
                raise ZeroDivisionError("handler bug")
            if request == b"refuse":
                raise RemoteError("NO_TASK", "no task left in this round")
            if request == b"slow":
                await trio.sleep(60)
            if request == b"huge":
                return b"x" * (2 << 20)
            return b"ack:" + request

        server.set_request_handler(TASK_PROTOCOL, handler)
        address = server.listen_addrs()[0]
        assert await client.request(address, TASK_PROTOCOL, b"hi") == b"ack:hi"
        assert await client.request(server.peer_id, TASK_PROTOCOL, b"x" * 4096) == b"ack:" + b"x" * 4096
        with pytest.raises(RemoteError) as info:
            await client.request(server.peer_id, TASK_PROTOCOL, b"boom")
        assert info.value.code == "INTERNAL" and "handler bug" not in info.value.detail
        with pytest.raises(RemoteError) as info:
            await client.request(server.peer_id, TASK_PROTOCOL, b"refuse")
        assert info.value.code == "NO_TASK"
        with pytest.raises(RequestTimeout):
            await client.request(server.peer_id, TASK_PROTOCOL, b"slow", timeout=0.5)
        with pytest.raises(PayloadTooLarge):
            await client.request(server.peer_id, TASK_PROTOCOL, b"x" * 4097)
        with pytest.raises(PayloadTooLarge):
            await client.request(server.peer_id, TASK_PROTOCOL, b"huge")
        with pytest.raises(PeerUnreachable):
            await client.request(NodeIdentity.generate().peer_id, TASK_PROTOCOL, b"hi", timeout=5)
        with pytest.raises(PeerUnreachable):
            await client.request(server.peer_id, "/dtnode/none/1.0.0", b"hi", timeout=5)  # type: ignore[arg-type]
        # A large response within limits goes through intact, and the server still answers after the failures.
        assert await client.request(server.peer_id, TASK_PROTOCOL, b"ok", timeout=5) == b"ack:ok"
        assert server.metrics.request_errors["INTERNAL"] == 1 and server.metrics.request_errors["NO_TASK"] == 1


async def test_remote_limit_smaller_than_ours_is_payload_too_large() -> None:
    async with trio.open_nursery() as nursery:
        async with start_node(nursery, loopback_config(max_request_bytes=100)) as server:
            server.set_request_handler(TASK_PROTOCOL, _echo)
            config = loopback_config(bootstrap=(server.listen_addrs()[0],), max_request_bytes=10_000)
            async with start_node(nursery, config) as client:
                with pytest.raises(PayloadTooLarge):
                    await client.request(server.listen_addrs()[0], TASK_PROTOCOL, b"x" * 1000)


async def test_presence_describes_the_node() -> None:
    async with make_nodes(2, wait_discovery_s=60, roles=("trainer",), node_class="L", jobs=(5,)) as (a, b):
        entry = a.peer_table.get(b.peer_id.to_base58())
        assert entry is not None
        assert (entry.roles, entry.node_class, entry.jobs) == (("trainer",), "L", (5,))
        assert a.peer_table.by_address(b.eth_address) == entry
        assert all(addr.startswith("/ip4/127.0.0.1/tcp/") for addr in entry.addrs)
        assert isinstance(Presence, type)
