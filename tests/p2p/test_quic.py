"""py-libp2p 0.8.1's QUIC transport, checked before we would offer it next to TCP (docs/api/p2p.md, "QUIC").

Measured (two hosts on loopback, one process, load ~10 on 2 cores): a QUIC connection is made in ~0.26 s and
request/response streams work, but one stream carries 0.5-0.6 MiB/s where TCP+Noise+yamux carries 15-17.5 MiB/s
(1-16 MiB, /tmp probes), and a stream whose opener half-closes it and then waits for the answer is reset ("Unexpected
outbound stream 4 in data event"). So QUIC is not a listen transport of the node; these tests keep the facts checked:
the strict xfail starts passing, and fails the run, when a py-libp2p release fixes the half-close.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from protocols.p2p.identity import NodeIdentity

ECHO = TProtocol("/dtnode/test/echo/1.0.0")
QUIC = multiaddr.Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1")


@asynccontextmanager
async def _quic_pair() -> AsyncIterator[tuple[IHost, IHost]]:
    a = new_host(key_pair=NodeIdentity.generate().key_pair, listen_addrs=[QUIC])
    b = new_host(key_pair=NodeIdentity.generate().key_pair, listen_addrs=[QUIC])

    async def echo(stream: INetStream) -> None:
        await stream.write(await stream.read(100))
        await stream.close()

    async with a.run([QUIC]), b.run([QUIC]):
        a.set_stream_handler(ECHO, echo)
        addr = str(a.get_addrs()[0])
        assert "/quic-v1" in addr
        with trio.fail_after(20):
            await b.connect(info_from_p2p_addr(multiaddr.Multiaddr(
                addr if "/p2p/" in addr else f"{addr}/p2p/{a.get_id()}")))
        yield a, b


async def test_two_hosts_connect_over_quic_and_exchange_requests() -> None:
    async with _quic_pair() as (a, b):
        for i in range(10):
            with trio.fail_after(10):
                stream = await b.new_stream(a.get_id(), [ECHO])
                await stream.write(b"ping %d" % i)
                assert await stream.read(100) == b"ping %d" % i
                await stream.close()


@pytest.mark.xfail(strict=True, reason="py-libp2p 0.8.1 QUIC resets a stream whose opener half-closed it before "
                                       "the answer ('Unexpected outbound stream ... in data event')")
async def test_an_answer_after_the_openers_half_close_arrives_over_quic() -> None:
    async with _quic_pair() as (a, b):
        with trio.fail_after(10):
            stream = await b.new_stream(a.get_id(), [ECHO])
            await stream.write(b"ping")
            await stream.close()
            assert await stream.read(100) == b"ping"
