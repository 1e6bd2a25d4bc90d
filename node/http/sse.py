"""``/events``: server-sent events telling open pages that the facts changed (they then re-read their JSON).

Each stream waits on :meth:`node.http.feed.Feed.wait_change`, so an idle page costs nothing but a keep-alive comment
every :data:`KEEPALIVE_S`; at most :data:`MAX_STREAMS` streams are open at once (more get 503), so watchers cannot
pile up tasks in the node's loop.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

if TYPE_CHECKING:
    from node.http.feed import Feed

KEEPALIVE_S = 15.0
MAX_STREAMS = 16


def change_stream(request: Request, feed: Feed) -> Response:
    if feed.streams >= MAX_STREAMS:
        return PlainTextResponse(f"{MAX_STREAMS} event streams are open already", status_code=503)

    async def stream() -> AsyncIterator[str]:
        feed.streams += 1
        try:
            seen = -1
            yield "retry: 2000\n\n"
            while True:
                version = await feed.wait_change(seen, KEEPALIVE_S)
                if version == seen:
                    yield ": keep-alive\n\n"
                    continue
                seen = version
                yield f"event: change\ndata: {json.dumps({'version': version, 'block': feed.state.block})}\n\n"
        finally:
            feed.streams -= 1

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
