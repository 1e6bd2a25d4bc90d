"""A request whose deadline expires mid-write must cost that request only, never the connection.

py-libp2p 0.8.1 cut yamux frames after Noise had encrypted them; the peer's next decryption failed and the
connection died, so every later stream to that peer failed (see protocols.p2p.hardening.make_yamux_frames_atomic).
"""

from __future__ import annotations

from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from protocols.p2p.errors import RequestTimeout
from protocols.p2p.testing import make_nodes

BIG = TProtocol("/dtnode-test/big/1.0.0")


async def test_requests_cancelled_mid_write_leave_the_connection_usable() -> None:
    async with make_nodes(2, wait_discovery_s=60, max_request_bytes=16 << 20) as (sender, receiver):

        async def accept(_request: bytes, _peer: ID) -> bytes:
            return b"ok"

        receiver.set_request_handler(BIG, accept)
        await sender.ping(receiver.peer_id, 30)
        # 8 MiB bodies under deadlines of 20–110 ms: each write is cut somewhere inside a frame (measured: unpatched,
        # the connection died within the first four requests).
        timeouts = 0
        for i in range(10):
            try:
                await sender.request(receiver.peer_id, BIG, b"y" * (8 << 20), timeout=0.02 + 0.01 * i)
            except RequestTimeout:
                timeouts += 1
        assert timeouts, "no request was cut: the test no longer exercises a cancelled write"
        for _ in range(3):
            await sender.ping(receiver.peer_id, 30)
        assert await sender.request(receiver.peer_id, BIG, b"small", timeout=30) == b"ok"
