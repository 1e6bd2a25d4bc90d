"""Datasets as content: already-encoded shards, each a UnixFS file, listed by a manifest that is one too.

The manifest is canonical JSON (so the same shards always give the same dataset CID)::

    {"schema": "dtnode.dataset/1", "format": "...", "licence": "...",
     "shards": [{"cid": "bafk...", "samples": 6000, "bytes": 4704123}, ...], "total_samples": 60000}

This module knows nothing about what a shard holds (the training code encodes and decodes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from protocols.canonical import canonical_json, parse_json_object
from protocols.errors import SchemaError
from protocols.types import Cid
from storage.bitswap_fetch import Provider
from storage.cid import validate_cid
from storage.content import ContentStore
from storage.errors import FetchTimeout, InvalidCid

SCHEMA: Final = "dtnode.dataset/1"
MAX_MANIFEST_BYTES: Final = 1 << 20
MAX_SHARDS: Final = 10_000


@dataclass(frozen=True, slots=True)
class ShardEntry:
    cid: Cid
    samples: int
    bytes: int


@dataclass(frozen=True, slots=True)
class DatasetManifest:
    format: str
    licence: str
    shards: tuple[ShardEntry, ...]

    @property
    def shard_cids(self) -> tuple[Cid, ...]:
        return tuple(s.cid for s in self.shards)

    @property
    def total_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "format": self.format,
            "licence": self.licence,
            "shards": [{"cid": s.cid, "samples": s.samples, "bytes": s.bytes} for s in self.shards],
            "total_samples": self.total_samples,
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> DatasetManifest:
        obj = parse_json_object(data, what="dataset manifest", max_bytes=MAX_MANIFEST_BYTES)
        if set(obj) != {"schema", "format", "licence", "shards", "total_samples"}:
            raise SchemaError(f"dataset manifest: unexpected keys {sorted(obj)}")
        if obj["schema"] != SCHEMA:
            raise SchemaError(f"dataset manifest: schema {obj['schema']!r}, expected {SCHEMA!r}")
        for key in ("format", "licence"):
            if not isinstance(obj[key], str) or len(obj[key]) > 2000:
                raise SchemaError(f"dataset manifest: {key} must be a string of at most 2000 characters")
        raw_shards = obj["shards"]
        if not isinstance(raw_shards, list) or not 0 < len(raw_shards) <= MAX_SHARDS:
            raise SchemaError(f"dataset manifest: shards must be a list of 1..{MAX_SHARDS} entries")
        shards: list[ShardEntry] = []
        for i, entry in enumerate(raw_shards):
            if not isinstance(entry, dict) or set(entry) != {"cid", "samples", "bytes"}:
                raise SchemaError(f"dataset manifest: shards[{i}] must have exactly cid, samples, bytes")
            try:
                cid = validate_cid(entry["cid"])
            except InvalidCid as exc:
                raise SchemaError(f"dataset manifest: shards[{i}].cid: {exc}") from exc
            for key in ("samples", "bytes"):
                if not isinstance(entry[key], int) or isinstance(entry[key], bool) or entry[key] < 0:
                    raise SchemaError(f"dataset manifest: shards[{i}].{key} must be a non-negative integer")
            shards.append(ShardEntry(cid, entry["samples"], entry["bytes"]))
        manifest = cls(obj["format"], obj["licence"], tuple(shards))
        if obj["total_samples"] != manifest.total_samples:
            raise SchemaError("dataset manifest: total_samples disagrees with the shards")
        return manifest


async def publish_dataset(
    store: ContentStore,
    shards: Sequence[bytes],
    sample_counts: Sequence[int],
    format: str,
    licence: str,
) -> Cid:
    """Add (and pin) every shard and the manifest; returns the manifest's CID, which names the dataset."""
    if len(shards) != len(sample_counts) or not shards:
        raise SchemaError("publish_dataset: need one sample count per shard, and at least one shard")
    entries: list[ShardEntry] = []
    for shard, samples in zip(shards, sample_counts, strict=True):
        cid = await store.put(shard)
        entries.append(ShardEntry(cid, int(samples), len(shard)))
    manifest = DatasetManifest(format, licence, tuple(entries))
    return await store.put(manifest.to_bytes())


async def fetch_dataset_manifest(store: ContentStore, cid: str, *, timeout_s: float = 60.0,
                                 providers: Sequence[Provider] | None = None) -> DatasetManifest:
    """Fetch, verify and validate a dataset manifest (shards are fetched separately, on demand)."""
    data = await store.get(cid, max_bytes=MAX_MANIFEST_BYTES, timeout_s=timeout_s, providers=providers)
    return await trio.to_thread.run_sync(DatasetManifest.from_bytes, data)


async def fetch_dataset(
    store: ContentStore, cid: str, *, max_shard_bytes: int, timeout_s: float = 300.0,
    providers: Sequence[Provider] | None = None,
) -> tuple[DatasetManifest, list[bytes]]:
    """The manifest and every shard, each verified and checked against the manifest's recorded size."""
    with trio.move_on_after(timeout_s):
        manifest = await fetch_dataset_manifest(store, cid, timeout_s=timeout_s, providers=providers)
        shards: list[bytes] = []
        for entry in manifest.shards:
            if entry.bytes > max_shard_bytes:
                raise SchemaError(f"dataset {cid}: shard {entry.cid} has {entry.bytes} bytes, over {max_shard_bytes}")
            data = await store.get(entry.cid, max_bytes=max_shard_bytes, timeout_s=timeout_s, providers=providers)
            if len(data) != entry.bytes:
                raise SchemaError(
                    f"dataset {cid}: shard {entry.cid} holds {len(data)} bytes, manifest says {entry.bytes}"
                )
            shards.append(data)
        return manifest, shards
    raise FetchTimeout(f"dataset {cid}: not fetched within {timeout_s:.0f} s")
