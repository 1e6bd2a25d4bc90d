"""Request/response over one libp2p stream per call, with size limits, deadlines and typed errors.

Frames (all lengths unsigned 32-bit big-endian)::

    request:   u32 length | body
    response:  u8 status  | u32 length | body          status 0 = ok, 1 = error
    error body: canonical JSON {"code": "...", "detail": "..."}

Why not py-libp2p's ``request_response``: it has no typed error reply, so a failing handler looks like a dropped
stream to the caller. Here a handler exception becomes a ``RemoteError`` with a code at the caller, and only that
stream is affected.
"""

from __future__ import annotations

import collections
import logging
import struct
from collections.abc import Awaitable, Callable

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.protocol_muxer.exceptions import MultiselectClientError

from protocols.canonical import canonical_json, parse_json_object
from protocols.errors import SchemaError
from protocols.p2p.config import P2PConfig
from protocols.p2p.errors import P2PError, PayloadTooLarge, PeerUnreachable, RemoteError, RequestTimeout
from protocols.p2p.metrics import P2PMetrics
from protocols.p2p.peers import PeerTable

logger = logging.getLogger(__name__)

RequestHandler = Callable[[bytes, ID], Awaitable[bytes]]
"""``async handler(request_bytes, remote_peer) -> response_bytes``. Raise ``RemoteError(code, detail)`` to refuse
with a code the caller can act on; any other exception reaches the caller as code ``INTERNAL``."""

STATUS_OK = 0
STATUS_ERROR = 1
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">BI")

CODE_TOO_LARGE = "PAYLOAD_TOO_LARGE"
CODE_BAD_REQUEST = "BAD_REQUEST"
CODE_INTERNAL = "INTERNAL"
CODE_TIMEOUT = "HANDLER_TIMEOUT"


class StreamClosedEarly(Exception):
    """The other side closed or reset the stream before a whole frame arrived (internal)."""


async def read_exactly(stream: INetStream, n: int, chunk: int) -> bytes:
    """Read exactly ``n`` bytes or raise :class:`StreamClosedEarly`."""
    parts: list[bytes] = []
    remaining = n
    while remaining:
        try:
            data = await stream.read(min(remaining, chunk))
        except trio.Cancelled:
            raise
        except Exception as exc:  # EOF and reset are several library types
            raise StreamClosedEarly(f"stream ended with {remaining} of {n} bytes missing ({exc!r})") from exc
        if not data:
            raise StreamClosedEarly(f"stream ended with {remaining} of {n} bytes missing")
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


async def write_all(stream: INetStream, data: bytes, chunk: int) -> None:
    """Write in chunks so a large body does not sit in one buffer twice."""
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        await stream.write(bytes(view[start : start + chunk]))


def error_body(code: str, detail: str) -> bytes:
    return canonical_json({"code": code, "detail": detail[:500]})


def parse_error_body(body: bytes) -> RemoteError:
    try:
        obj = parse_json_object(body, what="error reply", max_bytes=4096)
        code, detail = obj.get("code"), obj.get("detail")
    except SchemaError:
        code, detail = None, None
    if not isinstance(code, str) or not isinstance(detail, str):
        return RemoteError("MALFORMED_ERROR", "the peer sent an unreadable error reply")
    if code == CODE_TOO_LARGE:
        return PayloadTooLargeRemote(code, detail)
    return RemoteError(code, detail)


class PayloadTooLargeRemote(RemoteError, PayloadTooLarge):
    """The remote peer refused the request for its size (its limit may be lower than ours)."""


async def serve_stream(
    stream: INetStream,
    handler: RequestHandler,
    *,
    max_request_bytes: int,
    max_response_bytes: int,
    read_timeout_s: float,
    handler_timeout_s: float,
    chunk: int,
    on_error: Callable[[str], None],
) -> None:
    """Answer one request on ``stream``. Never raises (except cancellation): failures reset this stream only."""
    peer_id = stream.muxed_conn.peer_id
    try:
        with trio.fail_after(read_timeout_s):
            (length,) = _U32.unpack(await read_exactly(stream, _U32.size, chunk))
            if length > max_request_bytes:
                on_error(CODE_TOO_LARGE)
                await _reply(stream, STATUS_ERROR, error_body(
                    CODE_TOO_LARGE, f"request of {length} bytes exceeds this node's limit of {max_request_bytes}"),
                    chunk)
                return
            request = await read_exactly(stream, length, chunk)
        try:
            with trio.fail_after(handler_timeout_s):
                response = await handler(request, peer_id)
            if not isinstance(response, bytes | bytearray):
                raise TypeError(f"request handler returned {type(response).__name__}, not bytes")
        except trio.TooSlowError:
            on_error(CODE_TIMEOUT)
            await _reply(stream, STATUS_ERROR, error_body(CODE_TIMEOUT, "the handler ran past its deadline"), chunk)
            return
        except RemoteError as exc:
            on_error(exc.code)
            await _reply(stream, STATUS_ERROR, error_body(exc.code, exc.detail), chunk)
            return
        except SchemaError as exc:
            on_error(CODE_BAD_REQUEST)
            await _reply(stream, STATUS_ERROR, error_body(CODE_BAD_REQUEST, str(exc)), chunk)
            return
        except Exception as exc:  # task boundary: a handler bug must not take the node down
            logger.exception("request handler failed for a request from %s", peer_id)
            on_error(CODE_INTERNAL)
            await _reply(stream, STATUS_ERROR, error_body(CODE_INTERNAL, type(exc).__name__), chunk)
            return
        if len(response) > max_response_bytes:
            on_error(CODE_TOO_LARGE)
            await _reply(stream, STATUS_ERROR, error_body(
                CODE_TOO_LARGE, f"response of {len(response)} bytes exceeds the limit of {max_response_bytes}"), chunk)
            return
        await _reply(stream, STATUS_OK, bytes(response), chunk)
    except trio.Cancelled:
        raise
    except Exception as exc:  # task boundary: garbage, early close, slow peer: reset this stream only
        logger.debug("request stream from %s failed: %r", peer_id, exc)
        on_error("STREAM_FAILED")
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await stream.reset()
            except Exception:  # already gone
                pass


async def _reply(stream: INetStream, status: int, body: bytes, chunk: int) -> None:
    await stream.write(_HEADER.pack(status, len(body)))
    await write_all(stream, body, chunk)
    await stream.close()


async def call_stream(
    stream: INetStream, payload: bytes, *, max_response_bytes: int, chunk: int
) -> bytes:
    """Send one request on an open stream and return the response body; raises typed errors."""
    await stream.write(_U32.pack(len(payload)))
    await write_all(stream, payload, chunk)
    status, length = _HEADER.unpack(await read_exactly(stream, _HEADER.size, chunk))
    if status == STATUS_ERROR:
        if length > 4096:
            raise RemoteError("MALFORMED_ERROR", f"error reply of {length} bytes")
        raise parse_error_body(await read_exactly(stream, length, chunk))
    if status != STATUS_OK:
        raise RemoteError("PROTOCOL_VIOLATION", f"unknown response status {status}")
    if length > max_response_bytes:
        raise PayloadTooLarge(f"response of {length} bytes exceeds max_response_bytes={max_response_bytes}")
    body = await read_exactly(stream, length, chunk)
    await stream.close()
    return body


class Requests:
    """Request/response on ``host``: serve protocols with handlers, call peers with deadlines and typed errors.

    A peer known from ``peer_table`` but not connected is dialled by the addresses it announced.
    """

    def __init__(self, host: IHost, config: P2PConfig, metrics: P2PMetrics, peer_table: PeerTable) -> None:
        self._host = host
        self.config = config
        self.metrics = metrics
        self._peer_table = peer_table
        self.bytes_in: collections.Counter[str] = collections.Counter()
        """Request/response payload bytes received (requests served, responses to our calls), by protocol."""
        self.bytes_out: collections.Counter[str] = collections.Counter()
        """Request/response payload bytes sent (our requests, our answers), by protocol."""

    def set_handler(self, protocol: TProtocol, handler: RequestHandler) -> None:
        """See :meth:`protocols.p2p.node.P2PNode.set_request_handler`."""

        async def counted(request: bytes, peer: ID) -> bytes:
            self.bytes_in[protocol] += len(request)
            response = await handler(request, peer)
            self.bytes_out[protocol] += len(response)
            return response

        async def on_stream(stream: INetStream) -> None:
            self.metrics.requests_served += 1
            await serve_stream(
                stream,
                counted,
                max_request_bytes=self.config.max_request_bytes,
                max_response_bytes=self.config.max_response_bytes,
                read_timeout_s=self.config.request_timeout_s,
                handler_timeout_s=self.config.handler_timeout_s,
                chunk=self.config.stream_chunk_bytes,
                on_error=self._count_error,
            )

        self._host.set_stream_handler(protocol, on_stream)

    async def request(
        self, peer: ID | str, protocol: TProtocol, payload: bytes, timeout: float | None = None
    ) -> bytes:
        """See :meth:`protocols.p2p.node.P2PNode.request`."""
        if len(payload) > self.config.max_request_bytes:
            raise PayloadTooLarge(
                f"request of {len(payload)} bytes exceeds max_request_bytes={self.config.max_request_bytes}; "
                "put large data in storage and send its CID"
            )
        deadline = self.config.request_timeout_s if timeout is None else timeout
        stream: INetStream | None = None
        try:
            with trio.fail_after(deadline):
                peer_id = await self._resolve(peer)
                try:
                    stream = await self._host.new_stream(peer_id, [protocol])
                except trio.Cancelled:
                    raise
                except Exception as exc:  # dial, upgrade and negotiation failures have many types
                    if negotiation_timed_out(exc):
                        await self._recycle(peer_id)
                    raise PeerUnreachable(f"cannot open {protocol} to {peer_id}: {exc}") from exc
                self.bytes_out[protocol] += len(payload)
                response = await call_stream(
                    stream, payload, max_response_bytes=self.config.max_response_bytes,
                    chunk=self.config.stream_chunk_bytes,
                )
                self.bytes_in[protocol] += len(response)
                return response
        except trio.TooSlowError:
            await _reset_quietly(stream)
            raise RequestTimeout(f"{protocol} to {peer} got no answer within {deadline} s") from None
        except StreamClosedEarly as exc:
            await _reset_quietly(stream)
            raise RemoteError("STREAM_CLOSED", str(exc)) from exc
        except (RemoteError, PayloadTooLarge):
            await _reset_quietly(stream)
            raise
        except P2PError:
            await _reset_quietly(stream)
            raise
        except trio.Cancelled:
            await _reset_quietly(stream)
            raise
        except Exception as exc:  # a write to a dying connection
            await _reset_quietly(stream)
            raise PeerUnreachable(f"{protocol} to {peer} failed: {exc!r}") from exc

    async def _recycle(self, peer_id: ID) -> None:
        """Close the connection to ``peer_id`` so that the next request dials a fresh one. Seen under load: once a
        stream's protocol negotiation timed out on a yamux connection, every later stream on it timed out too (for
        minutes, until the round was lost), while a new connection to the same peer works."""
        with trio.move_on_after(self.config.request_timeout_s), trio.CancelScope(shield=True):
            try:
                await self._host.disconnect(peer_id)
            except Exception as exc:  # a connection already closing raises several types
                logger.debug("closing the connection to %s failed: %s", peer_id, exc)
        logger.info("negotiation with %s timed out: connection closed, the next request dials again", peer_id)

    async def _resolve(self, peer: ID | str) -> ID:
        if isinstance(peer, ID):
            return self._with_table_addrs(peer)
        if peer.startswith("/"):
            try:
                info = info_from_p2p_addr(multiaddr.Multiaddr(peer))
            except Exception as exc:  # the multiaddr library raises several types
                raise PeerUnreachable(f"{peer!r} is not a multiaddr with /p2p/<peer id>") from exc
            try:
                await self._host.connect(info)
            except trio.Cancelled:
                raise
            except Exception as exc:
                raise PeerUnreachable(f"cannot connect to {peer}: {exc}") from exc
            return info.peer_id
        try:
            peer_id = ID.from_base58(peer)
        except Exception as exc:  # base58 errors
            raise PeerUnreachable(f"{peer!r} is not a peer id") from exc
        return self._with_table_addrs(peer_id)

    def _with_table_addrs(self, peer_id: ID) -> ID:
        # Connections are bounded (target_peers): a peer we know but are not connected to is dialled by the
        # addresses it announced.
        entry = self._peer_table.get(peer_id.to_base58())
        if entry is not None and peer_id not in self._host.get_network().connections:
            self._host.get_peerstore().add_addrs(peer_id, [multiaddr.Multiaddr(a) for a in entry.addrs], 600)
        return peer_id

    def _count_error(self, code: str) -> None:
        self.metrics.request_errors[code] += 1


def negotiation_timed_out(exc: BaseException) -> bool:
    """Whether ``new_stream`` failed because the peer did not answer protocol negotiation in time (py-libp2p raises
    ``StreamFailure`` from a ``MultiselectClientError`` whose message says so; "protocol not supported" is the same
    class with another message, and must not cost the connection)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, MultiselectClientError) and "timed out" in str(cause):
            return True
        cause = cause.__cause__
    return False


async def _reset_quietly(stream: INetStream | None) -> None:
    if stream is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception:  # the stream may already be closed or reset
            logger.debug("stream reset failed", exc_info=True)
