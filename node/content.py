"""A node's content plumbing: its block store, and (online) its libp2p host with the bitswap exchange between them.

One assembly serves every running dtnode (:class:`node.runtime.DtNode`) and the customer commands that move content
(``dataset add|get``, ``job create|status|fetch``), so both find providers the same way: the nodes known to hold a
CID first (named per call by Ethereum address, looked up in the P2P layer's peer table), every connected peer
otherwise. It never talks to the chain, and it hands out content only through the store, which re-hashes every
block it fetches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from node.config import NodeConfig
from protocols.p2p.node import P2PNode
from storage.bitswap_fetch import Provider
from storage.blockstore import FilesystemBlockStore
from storage.cid import parse_cid
from storage.content import LocalContentStore
from storage.errors import StorageError
from storage.exchange import BlockExchange


def open_blockstore(cfg: NodeConfig) -> FilesystemBlockStore:
    """The block store in ``<data dir>/blocks`` (created if missing), bounded by ``store_max_bytes``."""
    blocks = cfg.data_path / "blocks"
    blocks.mkdir(parents=True, exist_ok=True)
    return FilesystemBlockStore(blocks, max_bytes=cfg.store_max_bytes)


class ContentNode:
    """A block store, fetching what it lacks over bitswap from peers of ``net`` (offline when ``net`` is None)."""

    def __init__(self, blockstore: FilesystemBlockStore, *, net: P2PNode | None = None,
                 exchange: BlockExchange | None = None, fetch_timeout_s: float = 60.0,
                 log: logging.Logger | None = None) -> None:
        self.net = net
        self.fetch_timeout_s = fetch_timeout_s
        self.log = log or logging.getLogger("dtnode.content")
        # Online, what the store adds or pins is announced in the DHT, and a fetch nobody known can serve looks
        # its root up there (protocols.p2p.content_routing).
        self.store = LocalContentStore(blockstore, exchange, default_providers=self._connected_peers,
                                       fetch_timeout_s=fetch_timeout_s,
                                       router=None if net is None else net.routing,
                                       lookup_timeout_s=10.0 if net is None else net.config.provider_lookup_timeout_s)

    async def fetch(self, cid: str, *, max_bytes: int, timeout_s: float | None = None, what: str = "content",
                    providers: Sequence[str] = ()) -> bytes:
        """Verified bytes of ``cid`` from the local store or a peer, within ``timeout_s`` (default: the node's).

        ``providers``: Ethereum addresses of nodes known to hold it (the trainer for its update, the customer for
        the dataset, the committing leader for a checkpoint). Asking them first matters: the exchange spreads wants
        over its providers, and a peer that lacks a block (or left) may never say so, which costs a stall timeout
        per block. If they cannot deliver within half the time, every connected peer is asked. Each try that the
        peers it asks cannot serve (they lack a block, or are gone) looks the root up in the DHT and tries the
        providers found there (:func:`storage.routing.fetch_dag_routed`).
        """
        timeout = timeout_s if timeout_s is not None else self.fetch_timeout_s
        if providers:
            known = self._peers_of(providers)
            try:
                # None when no named node is known here: the first try then asks every connected peer too.
                return await self.store.get(cid, max_bytes=max_bytes, timeout_s=timeout / 2,
                                            providers=known or None)
            except StorageError as exc:
                self.log.info("%s %s: named providers failed (%s); asking every peer", what, cid, exc)
        return await self.store.get(cid, max_bytes=max_bytes, timeout_s=timeout)

    def peer_of(self, address: str) -> str | None:
        """The peer id (base58) of the node acting as ``address`` on-chain, or None if this node knows no such
        peer: see :meth:`protocols.p2p.node.P2PNode.peer_of`."""
        if self.net is None:
            return None
        peer = self.net.peer_of(address)
        return None if peer is None else peer.to_base58()

    def _peers_of(self, addresses: Sequence[str]) -> list[Provider]:
        if self.net is None:
            return []
        peers = (self.net.peer_of(a) for a in addresses)
        return [p for p in peers if p is not None]

    def _connected_peers(self) -> list[Provider]:
        return [] if self.net is None else list(self.net.connected_peers())


async def start_content_node(nursery: trio.Nursery, cfg: NodeConfig, net: P2PNode, *,
                             log: logging.Logger | None = None) -> ContentNode:
    """Start the libp2p host ``net`` and a bitswap exchange over this node's block store in ``nursery``, and have
    the node announce the roots it has pinned in the DHT.

    Cancellation: cancelling ``nursery`` stops both; blocks already written stay (writes are atomic).
    """
    blockstore = open_blockstore(cfg)
    await nursery.start(net.run)
    exchange = BlockExchange(net.host, blockstore)
    await nursery.start(exchange.run)
    for pinned in blockstore.pins():  # provider records are not kept across restarts: announce what we hold again
        net.routing.announce(parse_cid(pinned).multihash)
    return ContentNode(blockstore, net=net, exchange=exchange, fetch_timeout_s=cfg.fetch_timeout_s, log=log)
