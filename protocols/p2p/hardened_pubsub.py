"""``HardenedPubsub``: py-libp2p 0.8.1's ``Pubsub`` made safe against remote peers and fast under our traffic.

Per host (the gossip layer builds one); why each override exists is in :mod:`protocols.p2p.hardening`'s module doc,
which also checks at start-up that every overridden name still exists (``check_library``).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.utils.varint import encode_varint_prefixed

from protocols.p2p.drops import DropLog
from protocols.p2p.errors import PartialFrameTimeout

logger = logging.getLogger(__name__)

PUBSUB_WRITE_BATCH_BYTES = 64 * 1024 - 12
"""Most bytes of queued RPCs written to a peer at once: one yamux frame (64 KiB less its 12-byte header), so a
batch never interleaves with another writer's frames on the same stream."""

SENDER_RECORD_RESEND_S = 600.0
"""Longest a pubsub stream goes without our signed peer record (GossipSub would attach it to every RPC)."""

PUBSUB_READ_CHUNK = 64 * 1024
"""Bytes asked of the muxed stream per read by :class:`BufferedReader`: one yamux frame's worth."""


class _FrameTracker:
    """Follows the varint-length-prefixed RPCs of a pubsub stream through the bytes handed to the parser, to know
    whether a frame is in progress and since when (the parser reads each length a byte at a time, then the body)."""

    def __init__(self) -> None:
        self._length = 0
        self._length_bytes = 0
        self._body_left = 0
        self.started_at: float | None = None
        """When the first byte of the frame in progress was handed out; None between frames."""

    def feed(self, data: bytes, now: float) -> None:
        i = 0
        while i < len(data):
            if self._body_left:
                step = min(self._body_left, len(data) - i)
                self._body_left -= step
                i += step
                if not self._body_left:
                    self.started_at = None
                continue
            if self.started_at is None:
                self.started_at = now
            byte = data[i]
            i += 1
            self._length |= (byte & 0x7F) << (7 * self._length_bytes)
            self._length_bytes += 1
            if not byte & 0x80:
                self._body_left, self._length, self._length_bytes = self._length, 0, 0
                if not self._body_left:
                    self.started_at = None


class BufferedReader:
    """A read-buffering view of a stream for parsers that read a few bytes at a time.

    ``read(n)`` returns at most ``n`` bytes, from the buffer when it has any, else from one ``read`` of the
    underlying stream of up to ``max(n, PUBSUB_READ_CHUNK)`` bytes (a muxed stream returns what it has, it does not
    wait for the full amount). Every other attribute is the stream's own, so the library can still reset it or
    ask for its connection.

    With ``frame_timeout_s``, the stream carries varint-length-prefixed frames: waiting for the rest of a frame
    whose first byte was handed out more than ``frame_timeout_s`` ago raises :class:`PartialFrameTimeout`. Waiting
    between frames has no deadline (a pubsub stream is idle whenever nobody publishes).
    """

    def __init__(self, stream: INetStream, *, frame_timeout_s: float | None = None) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._frame_timeout_s = frame_timeout_s
        self._frames = _FrameTracker() if frame_timeout_s is not None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        data = await self._read(n)
        if self._frames is not None:
            self._frames.feed(data, trio.current_time())
        return data

    async def _read(self, n: int | None) -> bytes:
        if n is None or n < 0:
            if self._buffer:
                return take(self._buffer, None)
            return await self._read_stream(n)
        if not self._buffer:
            data = await self._read_stream(max(n, PUBSUB_READ_CHUNK))
            if len(data) <= n:
                return data
            self._buffer += data
        return take(self._buffer, n)

    async def _read_stream(self, n: int | None) -> bytes:
        started = self._frames.started_at if self._frames is not None else None
        if started is None or self._frame_timeout_s is None:
            return await self._stream.read(n)
        with trio.move_on_at(started + self._frame_timeout_s):
            return await self._stream.read(n)
        raise PartialFrameTimeout(
            f"pubsub RPC begun {trio.current_time() - started:.1f} s ago not finished within "
            f"p2p.gossip_frame_timeout_s = {self._frame_timeout_s:.0f} s")


def take(buffer: bytearray, n: int | None) -> bytes:
    """Remove and return the first ``n`` bytes of ``buffer`` (all of them for ``None``)."""
    size = len(buffer) if n is None else min(n, len(buffer))
    data = bytes(buffer[:size])
    del buffer[:size]
    return data


class _Framer:
    """Varint-frames the RPCs of one pubsub stream, sending our signed peer record only when the peer needs it."""

    def __init__(self) -> None:
        self._record = b""
        self._record_sent_at = -SENDER_RECORD_RESEND_S

    def encode(self, rpc: rpc_pb2.RPC) -> bytes:
        record = rpc.senderRecord
        now = trio.current_time()
        if not record or record != self._record or now - self._record_sent_at >= SENDER_RECORD_RESEND_S:
            if record:
                self._record, self._record_sent_at = record, now
            return bytes(encode_varint_prefixed(rpc.SerializeToString()))
        # The RPC may sit in other peers' queues too: clear and restore without yielding in between.
        rpc.ClearField("senderRecord")
        try:
            return bytes(encode_varint_prefixed(rpc.SerializeToString()))
        finally:
            rpc.senderRecord = record


class HardenedPubsub(Pubsub):
    """``Pubsub`` whose per-stream and per-message tasks contain remote-triggered exceptions.

    ``Pubsub.__init__`` registers ``self.stream_handler`` for the router's protocols, so overriding the method is
    enough. ``on_contained`` is called with a short label each time an exception is contained (for metrics).
    """

    def __init__(self, *args: Any, on_contained: Any = None, frame_timeout_s: float | None = None,
                 drops: DropLog | None = None, **kwargs: Any) -> None:
        self._on_contained = on_contained
        self._frame_timeout_s = frame_timeout_s
        self._drops = drops
        self._in_flight: set[bytes] = set()
        super().__init__(*args, **kwargs)

    def _contained(self, label: str) -> None:
        if self._on_contained is not None:
            self._on_contained(label)

    async def stream_handler(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id
        try:
            await super().stream_handler(stream)
        except trio.Cancelled:
            raise
        except Exception as exc:  # task boundary: a remote peer's bytes must not take the host down
            detail = f"pubsub stream from {peer_id} ({type(exc).__name__}: {exc}); peer dropped from pubsub"
            if self._drops is not None:
                reason = "pubsub_partial_frame" if isinstance(exc, PartialFrameTimeout) else "pubsub_stream"
                self._drops.drop(reason, detail)
            else:
                logger.warning("dropped %s", detail)
            self._contained("pubsub_stream")
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:  # the stream may already be gone; nothing left to protect
                    logger.debug("reset of a failed pubsub stream from %s failed", peer_id)
            if self.manager.is_running:
                self._handle_dead_peer(peer_id)

    async def continuously_read_stream(self, stream: INetStream) -> None:
        # Buffered: see the module doc. Only reads go through the buffer; resets and peer ids reach the stream.
        # With a frame deadline: a peer that begins an RPC and stalls is cut off (see BufferedReader).
        reader = BufferedReader(stream, frame_timeout_s=self._frame_timeout_s)
        await super().continuously_read_stream(reader)  # type: ignore[arg-type]

    async def handle_sending_messages(self, peer_id: ID, stream: INetStream, queue: Any) -> None:
        """The library's per-peer sending loop, writing what is queued in batches (see the module doc)."""
        pending = bytearray()
        frames = _Framer()
        try:
            while True:
                rpc = await queue.pop()
                while rpc is not None:
                    frame = frames.encode(rpc)
                    if pending and len(pending) + len(frame) > PUBSUB_WRITE_BATCH_BYTES:
                        await stream.write(bytes(pending))
                        pending.clear()
                    pending += frame
                    # pop() returns at once, without yielding, while the queue holds anything.
                    rpc = await queue.pop() if len(queue) else None
                if not pending:
                    return  # the queue was closed: the peer is gone
                await stream.write(bytes(pending))
                pending.clear()
        except (StreamClosed, StreamReset):
            logger.debug("pubsub stream to %s closed while sending", peer_id)
            self._handle_dead_peer(peer_id)
        except Exception:  # task boundary, as in the library's loop: the peer is dropped, the host lives on
            logger.debug("sending loop for %s terminated with error", peer_id, exc_info=True)
            self._handle_dead_peer(peer_id)

    def _is_subscribed_to_msg(self, msg: rpc_pb2.Message) -> bool:
        # Asked by the reader before it spawns push_msg; a duplicate would be dropped there (see the module doc).
        return bool(super()._is_subscribed_to_msg(msg)) and not self._is_msg_seen(msg)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder == self.my_id:
            # Our own publish: let errors reach the caller of publish().
            await super().push_msg(msg_forwarder, msg)
            return
        msg_id = self.get_message_id(msg)
        if msg_id in self._in_flight:
            return  # the same message from another peer, still being validated (see the module doc)
        self._in_flight.add(msg_id)
        try:
            await super().push_msg(msg_forwarder, msg)
        except trio.Cancelled:
            raise
        except Exception as exc:  # task boundary: runs as its own task per received message
            logger.warning("pubsub message forwarded by %s failed (%s: %s); dropped", msg_forwarder,
                           type(exc).__name__, exc)
            self._contained("pubsub_message")
        finally:
            self._in_flight.discard(msg_id)
