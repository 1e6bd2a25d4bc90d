"""Finding who holds content nobody named: a fetch that its named providers cannot serve asks a content router
(the node's DHT, :class:`protocols.p2p.content_routing.ContentRouting`) and tries the peers it names.

What a router returns are hints from strangers. They change nothing about verification: the exchange re-hashes
every block against the CID asked for, so a lying provider can only cost time, and that time is bounded: the
lookup by ``lookup_timeout_s``, providers that cannot be dialled by one ``dial_timeout_s`` (all are dialled at
once), one that lacks the content by its DONT_HAVE (or a failed stream), one that stalls by ``block_timeout_s``
before its wants move to another provider; the whole fetch stays under the caller's deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import trio
from libp2p.peer.peerinfo import PeerInfo

from storage.bitswap_fetch import Provider
from storage.cid import ContentId
from storage.errors import BlockNotFound, FetchTimeout
from storage.exchange import BlockExchange

logger = logging.getLogger(__name__)


class ContentRouter(Protocol):
    """Provider records by multihash: announce what this node holds, look up who holds the rest."""

    def announce(self, key: bytes) -> None:
        """Announce this node as a provider of ``key`` soon and keep it announced (returns at once)."""
        ...

    def withdraw(self, key: bytes) -> None:
        """Stop announcing ``key``."""
        ...

    async def find_providers(self, key: bytes, *, limit: int | None = None,
                             timeout_s: float | None = None) -> list[PeerInfo]:
        """Peers that claim to provide ``key`` (never this node), found within ``timeout_s``; never raises for a
        lookup that found nothing."""
        ...


async def fetch_dag_routed(exchange: BlockExchange, router: ContentRouter | None, root: ContentId,
                           providers: Sequence[Provider], *, timeout_s: float, max_bytes: int | None,
                           lookup_timeout_s: float) -> None:
    """Fetch the DAG under ``root`` from ``providers``; if they cannot serve it (:class:`BlockNotFound`, or none
    were named) and a ``router`` is given, look ``root`` up and fetch from the providers found, all within
    ``timeout_s``. Raises :class:`BlockNotFound` (nobody found could serve it), :class:`FetchTimeout`,
    :class:`DagTooLarge` as :meth:`BlockExchange.fetch_dag`."""
    deadline = trio.current_time() + timeout_s
    first: BlockNotFound | None = None
    if providers:
        try:
            await exchange.fetch_dag(root, providers, timeout_s=timeout_s, max_bytes=max_bytes)
            return
        except BlockNotFound as exc:
            if router is None:
                raise
            first = exc
    elif router is None:
        raise BlockNotFound(f"{root}: not held locally and no provider is known for it")
    left = deadline - trio.current_time()
    if left <= 0:
        raise FetchTimeout(f"{root}: no time left to look it up in the DHT after the named providers failed")
    named = {p.peer_id if isinstance(p, PeerInfo) else p for p in providers}
    found = [info for info in await router.find_providers(root.multihash, timeout_s=min(lookup_timeout_s, left))
             if info.peer_id not in named]
    why = f" ({first})" if first is not None else ""
    if not found:
        raise BlockNotFound(f"{root}: the {len(named)} named provider(s) could not serve it{why}, and the DHT "
                            f"named no other provider within {min(lookup_timeout_s, left):.0f} s")
    logger.info("%s: trying %d provider(s) found in the DHT%s", root, len(found), why)
    with trio.move_on_at(deadline):
        reachable = await _dial_all(exchange, found)
    if not reachable:
        raise BlockNotFound(f"{root}: none of the {len(found)} provider(s) the DHT named could be dialled{why}")
    left = deadline - trio.current_time()
    if left <= 0:
        raise FetchTimeout(f"{root}: the DHT lookup and dials used the time left for the fetch")
    await exchange.fetch_dag(root, reachable, timeout_s=left, max_bytes=max_bytes)


async def _dial_all(exchange: BlockExchange, found: list[PeerInfo]) -> list[Provider]:
    """The providers among ``found`` that could be dialled, all dialled at once: the exchange dials one after the
    other, so addresses that swallow dials would cost one ``dial_timeout_s`` each before the real provider."""
    reachable: list[Provider] = []

    async def dial(info: PeerInfo) -> None:
        try:
            with trio.fail_after(exchange.config.dial_timeout_s):
                await exchange.host.connect(info)
        except Exception as exc:  # an unreachable or lying provider is expected here; the others are tried
            logger.info("provider %s from the DHT unreachable: %r", info.peer_id, exc)
            return
        reachable.append(info.peer_id)

    async with trio.open_nursery() as nursery:
        for info in found:
            nursery.start_soon(dial, info)
    return reachable
