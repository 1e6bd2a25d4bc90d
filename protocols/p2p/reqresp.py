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

import logging
import struct
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from protocols.canonical import canonical_json, parse_json_object
from protocols.errors import SchemaError
from protocols.p2p.errors import PayloadTooLarge, RemoteError

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
