"""Joining under attack: handshake deadlines, per-IP limits, reserved slots and eviction on a real bootstrap.

Measured on py-libp2p 0.8.1 before ``protocols.p2p.admission``: 300 raw TCP connections re-opened in a loop held
every inbound slot and 3 of 3 new peers could not join until the flood stopped, with nothing logged. The flood here
comes from other loopback addresses (127.0.0.2-11: Linux routes all of 127/8 to ``lo``), the newcomers from
127.0.0.1, so the per-IP limits see an attacker and honest peers as a bootstrap on the internet would.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair as create_ed25519_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.utils.varint import encode_uvarint

from protocols.p2p.config import P2PConfig
from protocols.p2p.hardening import disable_auto_connector
from protocols.p2p.identity import NodeIdentity
from protocols.p2p.node import P2PNode
from protocols.p2p.testing import loopback_config, start_node

PRODUCTION = P2PConfig()
ADMISSION_DEFAULTS = {
    name: getattr(PRODUCTION, name)
    for name in ("max_inbound_per_ip", "max_pending_per_ip", "max_pending_handshakes", "handshake_timeout_s",
                 "max_inbound_connections")
}
"""The production admission settings: the flood tests run against these, not the loopback test overrides."""


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    # Counters have no change event; poll them under a deadline.
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.05)


def _port(node: P2PNode) -> int:
    return int(multiaddr.Multiaddr(node.listen_addrs()[0]).value_for_protocol("tcp"))


async def _slow_loris(port: int, source_ip: str, opened: list[int], stop: trio.Event) -> None:
    """One attacker slot: connect from ``source_ip``, send half a multistream header, hold; when the bootstrap
    closes it, re-open at once (backing off 50 ms so the loop does not spin on a refusal)."""
    header = b"\x13/multistream/1.0.0\n"
    while not stop.is_set():
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await sock.bind((source_ip, 0))
            await sock.connect(("127.0.0.1", port))
            opened[0] += 1
            await sock.send(header[:9])
            with trio.move_on_after(30):
                while await sock.recv(4096):  # until the bootstrap closes it
                    pass
        except OSError:
            pass  # reset by the bootstrap: that is the point
        finally:
            sock.close()
        await trio.sleep(0.05)


async def test_three_newcomers_join_through_a_bootstrap_under_a_slow_loris_flood(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="protocols.p2p.drops")
    slots, attacker_ips = 300, [f"127.0.0.{i}" for i in range(2, 12)]
    async with trio.open_nursery() as nursery:
        async with start_node(nursery, loopback_config(**ADMISSION_DEFAULTS)) as bootstrap:
            port, stop, opened = _port(bootstrap), trio.Event(), [0]
            async with trio.open_nursery() as flood:
                for i in range(slots):
                    flood.start_soon(_slow_loris, port, attacker_ips[i % len(attacker_ips)], opened, stop)
                # The flood is on: every pending slot the attacker may hold is held.
                await _until(lambda: bootstrap.admission.pending >= PRODUCTION.max_pending_handshakes - 4, 60)
                config = loopback_config(bootstrap=(bootstrap.listen_addrs()[0],))
                async with start_node(nursery, config) as a, start_node(nursery, config) as b, \
                        start_node(nursery, config) as c:
                    for newcomer in (a, b, c):
                        await newcomer.wait_for_peers(1, timeout=60)
                    await bootstrap.wait_for_peers(3, timeout=60)
                    for newcomer in (a, b, c):
                        assert await newcomer.ping(bootstrap.peer_id, timeout=10) < 10
                    assert bootstrap.admission.pending <= PRODUCTION.max_pending_handshakes
                    joined_under = opened[0]
                stop.set()
                flood.cancel_scope.cancel()
    assert joined_under > slots  # the attacker re-opened connections throughout
    dropped = bootstrap.metrics.dropped
    assert dropped["handshake_per_ip"] + dropped["handshake_evicted"] + dropped["handshake_timeout"] > slots // 2
    assert any(r.getMessage().startswith("dropped handshake_") for r in caplog.records)
    # Rate-limited: far fewer lines than drops.
    assert len(caplog.records) < sum(dropped.values()) // 4


async def test_a_partial_meshsub_frame_is_closed_after_the_deadline_and_an_idle_stream_is_not() -> None:
    config = loopback_config(gossip_frame_timeout_s=1.0)
    async with trio.open_nursery() as nursery, start_node(nursery, config) as victim, \
            _bare_host() as attacker:
        await attacker.connect(info_from_p2p_addr(multiaddr.Multiaddr(victim.listen_addrs()[0])))
        meshsub = [TProtocol("/meshsub/1.1.0")]
        idle = await attacker.new_stream(victim.peer_id, meshsub)
        partial = await attacker.new_stream(victim.peer_id, meshsub)
        await partial.write(bytes(encode_uvarint(100)) + b"\x0a" * 10)  # 10 of 100 bytes, then silence
        with trio.fail_after(15):
            assert await _read_until_closed(partial)
        assert victim.metrics.dropped["pubsub_partial_frame"] == 1
        with trio.move_on_after(2 * config.gossip_frame_timeout_s):
            await _read_until_closed(idle)
            pytest.fail("an idle pubsub stream (no frame begun) was closed")
        assert victim.metrics.dropped["pubsub_partial_frame"] == 1


async def test_a_peer_past_its_stream_limit_loses_only_its_own_new_streams() -> None:
    config = loopback_config(max_inbound_streams_per_peer=8)
    meshsub = [TProtocol("/meshsub/1.1.0")]
    async with trio.open_nursery() as nursery, start_node(nursery, config) as victim, \
            _bare_hosts(2) as (greedy, witness):
        for host in (greedy, witness):
            await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(victim.listen_addrs()[0])))
        streams, refused = [], 0
        for _ in range(12):
            try:
                streams.append(await greedy.new_stream(victim.peer_id, meshsub))
            except StreamFailure:  # reset before negotiation: the limit at work
                refused += 1
        assert refused >= 4 and victim.metrics.dropped["streams_per_peer"] >= 4
        assert victim.stream_limits.held_by(greedy.get_id()) <= 8
        # The others' streams are untouched: the witness opens one, and it stays open.
        kept = await witness.new_stream(victim.peer_id, meshsub)
        with trio.move_on_after(1.0):
            await _read_until_closed(kept)
            pytest.fail("a peer under its stream limit had its stream closed")
        for stream in streams:
            await stream.reset()


async def test_a_node_joins_through_the_second_bootstrap_when_the_first_is_down() -> None:
    async with trio.open_nursery() as nursery, start_node(nursery, loopback_config()) as live:
        gone = NodeIdentity.generate().peer_id.to_base58()
        dead = f"/ip4/127.0.0.1/tcp/{_unused_port()}/p2p/{gone}"
        config = loopback_config(bootstrap=(dead, live.listen_addrs()[0]))
        async with start_node(nursery, config) as fresh:
            await fresh.wait_for_peers(1, timeout=30)
            await live.wait_for_peers(1, timeout=30)


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_bootstrap_stays_healthy_with_200_dialers_and_bounded_inbound_connections() -> None:
    dialers, cap = 200, 128
    config = loopback_config(max_inbound_connections=cap, inbound_grace_s=1.0)
    async with trio.open_nursery() as nursery, start_node(nursery, config) as bootstrap:
        addr = info_from_p2p_addr(multiaddr.Multiaddr(bootstrap.listen_addrs()[0]))
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, bootstrap.admission.established)
                await trio.sleep(0.02)

        async def dial(host: IHost, done: list[int]) -> None:
            try:
                with trio.fail_after(60):
                    await host.connect(addr)
                done[0] += 1
            except Exception:  # refused or evicted: the bootstrap is full, as it should be
                pass

        nursery.start_soon(watch)
        connected = [0]
        async with _bare_hosts(dialers) as hosts:
            async with trio.open_nursery() as dials:
                for host in hosts:
                    dials.start_soon(dial, host, connected)
            # A dtnode peer joins after the storm and keeps its place (its gossip stream protects it).
            fresh_config = loopback_config(bootstrap=(bootstrap.listen_addrs()[0],))
            async with start_node(nursery, fresh_config) as fresh:
                # Generous: with 200 hosts in this process a 2-core machine under other load (~20) is slow.
                await fresh.wait_for_peers(1, timeout=180)
                await bootstrap.wait_for_peers(1, timeout=180)
                assert await fresh.ping(bootstrap.peer_id, timeout=30) < 30
                state = (f"established {bootstrap.admission.established}, most {most}, dials done {connected[0]}, "
                         f"dropped {dict(bootstrap.metrics.dropped)}")
                assert bootstrap.admission.established <= cap, state
                assert most <= cap, state
                assert connected[0] >= cap // 2, state
                assert bootstrap.metrics.dropped["inbound_evicted"] + bootstrap.metrics.dropped["inbound_full"] > 0, \
                    state
        nursery.cancel_scope.cancel()


async def _read_until_closed(stream: object) -> bool:
    try:
        while await stream.read(1024):  # type: ignore[attr-defined]
            pass
    except Exception:  # reset: closed too
        pass
    return True


@asynccontextmanager
async def _bare_host() -> AsyncIterator[IHost]:
    async with _bare_hosts(1) as hosts:
        yield hosts[0]


@asynccontextmanager
async def _bare_hosts(n: int) -> AsyncIterator[list[IHost]]:
    """``n`` lightweight hosts (Noise + yamux, no pubsub, no DHT) that only dial: cheap stand-ins for nodes."""
    hosts = []
    for _ in range(n):
        key_pair = create_ed25519_key_pair()
        host = new_host(
            key_pair=key_pair,
            sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)},
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        )
        disable_auto_connector(host)
        hosts.append(host)
    async with trio.open_nursery() as nursery:
        stop = trio.Event()

        async def run(host: IHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with host.run([]):
                task_status.started()
                await stop.wait()

        for host in hosts:
            await nursery.start(run, host)
        yield hosts
        stop.set()
