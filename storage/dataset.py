"""Datasets as content: already-encoded shards, each a UnixFS file, listed by a manifest that is one too.

The manifest is canonical JSON (so the same shards always give the same dataset CID) and says what the samples
are, so a trainer or a customer can tell what a job will train on before fetching a shard::

    {"schema": "dtnode.dataset/2",
     "info": {"format": "image-folder", "task": "classification", "licence": "...",
              "input_shape": [3, 32, 32], "input_dtype": "uint8", "classes": ["cat", "dog"],
              "vocab_size": 0, "tokenizer": "", "alphabet": "", "tokenizer_cid": ""},
     "shards": [{"cid": "bafk...", "samples": 6000, "bytes": 4704123}, ...], "total_samples": 60000}

A text corpus records ``task: causal_lm``, its ``vocab_size`` and its tokenizer (``bytes``; ``chars`` with the
``alphabet`` whose positions are the ids; or ``tokenizers-json`` with the CID of the tokenizer file, published
beside the shards). This module knows nothing about what a shard's bytes hold (the training code encodes and
decodes them); it never imports ``node``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Final

import trio

from protocols.errors import SchemaError
from protocols.schema import CID, Choice, Const, Int, ListOf, Nested, Pattern, Record, Str
from protocols.specs import TASK_TYPES
from protocols.types import Cid
from storage.bitswap_fetch import Provider
from storage.cid import validate_cid
from storage.content import ContentStore
from storage.errors import FetchTimeout, InvalidCid

SCHEMA: Final = "dtnode.dataset/2"
MAX_MANIFEST_BYTES: Final = 1 << 20
MAX_SHARDS: Final = 10_000
MAX_CLASSES: Final = 65_536
FORMATS: Final = ("idx", "image-folder", "tensors", "text")
INPUT_DTYPES: Final = ("uint8", "int32", "float32")
TOKENIZERS: Final = ("", "bytes", "chars", "tokenizers-json")
"""``""`` for datasets that are not text."""
_OPTIONAL_CID = Pattern(r"(b[a-z2-7]{20,}|Qm[1-9A-HJ-NP-Za-km-z]{44})?", "a CID or empty")


@dataclass(frozen=True, kw_only=True)
class ShardEntry(Record):
    WHAT = "dataset shard entry"

    cid: Annotated[str, CID]
    samples: Annotated[int, Int(1, 2**40)]
    bytes: Annotated[int, Int(1, 2**40)]

    def _check(self) -> None:
        try:
            validate_cid(self.cid)
        except InvalidCid as exc:
            raise SchemaError(f"dataset manifest: shard cid: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class DatasetInfo(Record):
    """What the samples are: format, task, one sample's shape and dtype, the label set or the vocabulary."""

    WHAT = "dataset info"
    PREFIX = "info."

    format: Annotated[str, Choice(FORMATS)]
    task: Annotated[str, Choice(TASK_TYPES)]
    licence: Annotated[str, Str(2000)]
    input_shape: Annotated[tuple[int, ...], ListOf(Int(1, 2**31), max_items=8, min_items=1)]
    """One sample's shape (a text sample is ``[context_length + 1]`` token ids: inputs plus the shifted targets)."""
    input_dtype: Annotated[str, Choice(INPUT_DTYPES)]
    classes: Annotated[tuple[str, ...], ListOf(Str(200), max_items=MAX_CLASSES)] = ()
    """Label ``i`` is ``classes[i]`` (classification); empty for a corpus."""
    vocab_size: Annotated[int, Int(0, 2**31 - 1)] = 0
    tokenizer: Annotated[str, Choice(TOKENIZERS)] = ""
    alphabet: Annotated[str, Str(1 << 18)] = ""
    """The ``chars`` tokenizer's characters, id ``i`` being ``alphabet[i]``."""
    tokenizer_cid: Annotated[str, _OPTIONAL_CID] = ""
    """The ``tokenizers-json`` tokenizer file's CID."""

    def _check(self) -> None:
        if self.task == "classification":
            if not 2 <= len(self.classes) or self.vocab_size or self.tokenizer:
                raise SchemaError("dataset info: a classification dataset has at least 2 classes and no tokenizer")
            if len(set(self.classes)) != len(self.classes):
                raise SchemaError("dataset info: class names must be distinct")
            return
        if self.classes or not self.tokenizer or self.vocab_size < 2 or self.input_dtype != "int32":
            raise SchemaError("dataset info: a causal_lm corpus has int32 token ids, a tokenizer and a vocabulary "
                              "of at least 2, and no classes")
        if len(self.input_shape) != 1 or self.input_shape[0] < 2:
            raise SchemaError("dataset info: a causal_lm sample is one sequence of context_length + 1 >= 2 ids")
        if (self.tokenizer == "chars") != bool(self.alphabet) or (self.tokenizer == "tokenizers-json") != bool(
                self.tokenizer_cid):
            raise SchemaError("dataset info: 'alphabet' goes with the chars tokenizer and 'tokenizer_cid' with "
                              "tokenizers-json, and neither with another")
        if self.tokenizer == "bytes" and self.vocab_size != 256:
            raise SchemaError("dataset info: the bytes tokenizer has a vocabulary of 256")
        if self.tokenizer == "chars" and self.vocab_size != len(self.alphabet):
            raise SchemaError("dataset info: the chars tokenizer's vocabulary is its alphabet's length")

    @property
    def context_length(self) -> int:
        """Tokens a causal LM sees per sample (a sample holds one more: the last target)."""
        return self.input_shape[0] - 1 if self.task == "causal_lm" else 0


@dataclass(frozen=True, kw_only=True)
class DatasetManifest(Record):
    WHAT = "dataset manifest"
    MAX_BYTES = MAX_MANIFEST_BYTES

    schema: Annotated[str, Const(SCHEMA)] = SCHEMA
    info: Annotated[DatasetInfo, Nested(DatasetInfo.from_dict)]
    shards: Annotated[tuple[ShardEntry, ...], ListOf(Nested(ShardEntry.from_dict), max_items=MAX_SHARDS,
                                                     min_items=1)] = field(default=())
    total_samples: Annotated[int, Int(1, 2**48)] = 0

    def _check(self) -> None:
        if self.total_samples != sum(s.samples for s in self.shards):
            raise SchemaError("dataset manifest: total_samples disagrees with the shards")

    @property
    def shard_cids(self) -> tuple[Cid, ...]:
        return tuple(Cid(s.cid) for s in self.shards)


async def publish_dataset(
    store: ContentStore,
    shards: Sequence[bytes],
    sample_counts: Sequence[int],
    info: DatasetInfo,
    *,
    tokenizer_file: bytes | None = None,
) -> Cid:
    """Add (and pin) every shard, the tokenizer file if any, and the manifest; returns the manifest's CID, which
    names the dataset. ``info.tokenizer_cid`` is filled in from ``tokenizer_file``."""
    if len(shards) != len(sample_counts) or not shards:
        raise SchemaError("publish_dataset: need one sample count per shard, and at least one shard")
    if (tokenizer_file is not None) != (info.tokenizer == "tokenizers-json"):
        raise SchemaError("publish_dataset: a tokenizer file goes with, and only with, the tokenizers-json tokenizer")
    if tokenizer_file is not None:
        info = replace(info, tokenizer_cid=await store.put(tokenizer_file))
    entries: list[ShardEntry] = []
    for shard, samples in zip(shards, sample_counts, strict=True):
        cid = await store.put(shard)
        entries.append(ShardEntry(cid=cid, samples=int(samples), bytes=len(shard)))
    manifest = DatasetManifest(info=info, shards=tuple(entries), total_samples=sum(e.samples for e in entries))
    manifest = DatasetManifest.from_bytes(manifest.to_bytes())  # the checks every reader applies, before publishing
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
