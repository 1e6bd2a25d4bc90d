"""The node's chain feed: keeps a ``eth_subscribe`` connection (``chain_ws_url``) feeding its :class:`ChainWatch`.

Connected, the watch hears every new head and contract log as it is mined (the roles wake at once, and the node's
per-poll ``eth_getLogs`` and head reads stop); lost, the watch polls as a node without a feed does, and the feed
reconnects with a doubling delay (1 s to 30 s). The feed only ever makes a wait shorter: what a role decides is
read from the chain (see protocols/chain/feed.py).

Cancellation: :func:`run_chain_feed` runs until cancelled; its connection closes with it.
"""

from __future__ import annotations

import logging

import trio

from node.roles.chain_view import ChainWatch
from protocols.chain.errors import ChainError
from protocols.chain.feed import follow_chain

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


async def run_chain_feed(watch: ChainWatch, url: str, address: str, log: logging.Logger) -> None:
    """Follow the chain at ``url`` (contract ``address``) into ``watch`` until cancelled."""
    delay, warned = RETRY_FIRST_S, False
    while True:
        async def subscribed() -> None:
            nonlocal delay, warned
            await watch.catch_up()  # what was mined before the subscriptions began
            watch.set_live(True)
            log.info("chain feed: following new heads and the contract's logs at %s", url)
            delay, warned = RETRY_FIRST_S, False

        try:
            await follow_chain(url, address, on_heads=watch.heard_head, on_logs=watch.heard_logs,
                               on_subscribed=subscribed)
        except ChainError as exc:
            if not warned:  # once an outage: the node polls meanwhile
                log.warning("chain feed: %s; polling the chain every %.1f s meanwhile, reconnecting", exc,
                            watch.poll_s)
                warned = True
        finally:
            watch.set_live(False)
        await trio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_S)
