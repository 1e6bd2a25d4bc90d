"""Real libp2p hosts on 127.0.0.1, each with a block store and a bitswap exchange."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import multiaddr
import trio
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from protocols.p2p.hardening import install_hardening
from storage.blockstore import FilesystemBlockStore
from storage.content import LocalContentStore
from storage.exchange import BlockExchange, ExchangeConfig


def deterministic_bytes(size: int, seed: str, piece: int = 1 << 20) -> Iterator[bytes]:
    """Kubo's test/cli/harness/random_reader.go: ChaCha20 keyed by sha256(seed), zero nonce, counter 0."""
    key = hashlib.sha256(seed.encode()).digest()
    enc = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor()
    zero = bytes(piece)
    left = size
    while left:
        n = min(piece, left)
        yield enc.update(zero[:n])
        left -= n


def make_host() -> IHost:
    install_hardening()  # as the dtnode binary does at start-up (idempotent); bench_storage builds hosts here too
    key_pair = create_new_key_pair()
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)},
        muxer_opt={YAMUX_PROTOCOL_ID: Yamux},  # type: ignore[dict-item]
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


@dataclass
class StorageNode:
    host: IHost
    store: FilesystemBlockStore
    exchange: BlockExchange
    content: LocalContentStore
    cancel: trio.CancelScope

    @property
    def info(self) -> PeerInfo:
        return PeerInfo(self.host.get_id(), self.host.get_addrs())

    def stop(self) -> None:
        """Kill this node (host, listener, exchange), as a crash would."""
        self.cancel.cancel()


@asynccontextmanager
async def storage_nodes(
    n: int, root: Path, *, config: ExchangeConfig | None = None, max_bytes: int = 1 << 30
) -> AsyncIterator[list[StorageNode]]:
    nodes: list[StorageNode] = []
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nodes.append(await nursery.start(_run_node, root / f"node{i}", config, max_bytes))
        try:
            yield nodes
        finally:
            nursery.cancel_scope.cancel()


async def _run_node(
    root: Path, config: ExchangeConfig | None, max_bytes: int, *, task_status: trio.TaskStatus[StorageNode]
) -> None:
    host = make_host()
    store = FilesystemBlockStore(root, max_bytes=max_bytes, durable=False)
    exchange = BlockExchange(host, store, config=config)
    with trio.CancelScope() as cancel:
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            async with trio.open_nursery() as nursery:
                await nursery.start(exchange.run)
                node = StorageNode(host, store, exchange, LocalContentStore(store, exchange), cancel)
                task_status.started(node)
                await trio.sleep_forever()
