"""Serving the dashboard from inside the node's trio loop: hypercorn's trio worker over :mod:`node.http.app`.

:func:`serve_dashboard` is a trio service in the node's nursery; it reports the URL it listens on once bound.
Cancellation: cancelling it closes the listener and every open page's stream.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from node.http.address import HttpAddress
from node.http.app import build_app
from node.http.feed import Feed
from protocols.errors import ConfigError

if TYPE_CHECKING:
    from node.runtime import DtNode

log = logging.getLogger("dtnode.http")


def _config(address: HttpAddress) -> Config:
    config = Config()
    config.bind = [address.bind]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    # Pages and event streams only: a small request body and a short keep-alive bound what a client can hold.
    config.h11_max_incomplete_size = 16 * 1024
    config.keep_alive_timeout = 30.0
    return config


async def serve_dashboard(node: DtNode, address: HttpAddress, *,
                          task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``node``'s dashboard on ``address`` until cancelled; ``task_status`` gets its URL.

    Raises :class:`ConfigError` (setting ``http``) when the address cannot be bound.
    """
    assert node.ctx is not None, "start the dashboard after the node's context"
    config = _config(address)
    try:
        sockets = config.create_sockets()  # bound here, so a busy port is a config error, not a crash in a task
    except OSError as exc:
        raise ConfigError(f"setting 'http': cannot listen on {address.bind} ({exc.strerror}); choose another "
                          "HOST:PORT (port 0: any free port)") from exc
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    feed = Feed(node.ctx)
    app = wrap_app(build_app(node, feed), config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]  # Starlette's ASGI types are its own, not hypercorn's
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        binds = await nursery.start(lambda task_status: worker_serve(app, config, sockets=sockets,
                                                                     task_status=task_status))
        url = binds[0] if binds else f"http://{address.bind}"
        log.info("dashboard on %s (read-only; /metrics for Prometheus)", url)
        task_status.started(url)
