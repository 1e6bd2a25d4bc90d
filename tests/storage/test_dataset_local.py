"""Datasets through the local store and bitswap; manifest validation."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from protocols.errors import SchemaError
from storage.dataset import DatasetInfo, DatasetManifest, fetch_dataset, fetch_dataset_manifest, publish_dataset
from tests.storage.conftest import storage_nodes

INFO = DatasetInfo(format="idx", task="classification", licence="MIT (Zalando)", input_shape=(28, 28),
                   input_dtype="uint8", classes=tuple("0123456789"))


async def test_publish_on_one_node_fetch_on_another(tmp_path: Path) -> None:
    async with storage_nodes(2, tmp_path) as (a, b):
        shards = [os.urandom(300_000 + i) for i in range(4)]
        cid = await publish_dataset(a.content, shards, [100, 101, 102, 103], INFO)
        manifest = await fetch_dataset_manifest(b.content, cid, timeout_s=30, providers=[a.info])
        assert manifest.total_samples == 406 and len(manifest.shard_cids) == 4 and manifest.info == INFO
        _, got = await fetch_dataset(b.content, cid, max_shard_bytes=1 << 20, timeout_s=60, providers=[a.info])
        assert got == shards


async def test_tokenizer_file_is_published_and_named_by_cid(tmp_path: Path) -> None:
    corpus = DatasetInfo(format="text", task="causal_lm", licence="CC0", input_shape=(65,), input_dtype="int32",
                         vocab_size=300, tokenizer="tokenizers-json")
    async with storage_nodes(1, tmp_path) as (a,):
        cid = await publish_dataset(a.content, [b"shard"], [3], corpus, tokenizer_file=b'{"version": "1.0"}')
        manifest = DatasetManifest.from_bytes(await a.content.get(cid, max_bytes=1 << 20, timeout_s=5))
        assert await a.content.get(manifest.info.tokenizer_cid, max_bytes=100, timeout_s=5) == b'{"version": "1.0"}'
        assert manifest.info.context_length == 64
        with pytest.raises(SchemaError, match="tokenizer file"):
            await publish_dataset(a.content, [b"shard"], [3], corpus)


def test_manifest_is_canonical_and_strict() -> None:
    good = (
        b'{"info":{"alphabet":"","classes":["a","b"],"format":"tensors","input_dtype":"float32","input_shape":[3],'
        b'"licence":"l","task":"classification","tokenizer":"","tokenizer_cid":"","vocab_size":0},'
        b'"schema":"dtnode.dataset/2","shards":[{"bytes":3,"cid":'
        b'"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","samples":1}],"total_samples":1}'
    )
    manifest = DatasetManifest.from_bytes(good)
    assert manifest.to_bytes() == good
    assert manifest.info.classes == ("a", "b") and manifest.info.input_shape == (3,)
    with pytest.raises(SchemaError, match="total_samples"):
        DatasetManifest.from_bytes(good.replace(b'"total_samples":1', b'"total_samples":2'))
    with pytest.raises(SchemaError, match="cid"):
        DatasetManifest.from_bytes(good.replace(b"bafkrei", b"zzkrei"))
    with pytest.raises(SchemaError, match="schema"):
        DatasetManifest.from_bytes(good.replace(b"dataset/2", b"dataset/1"))
    with pytest.raises(SchemaError, match="at least 2 classes"):
        DatasetManifest.from_bytes(good.replace(b'["a","b"]', b'["a"]'))
    with pytest.raises(SchemaError, match="format"):
        DatasetManifest.from_bytes(good.replace(b'"tensors"', b'"pickle"'))


@pytest.mark.parametrize("change, problem", [
    ({"tokenizer": "bytes", "vocab_size": 255}, "256"),
    ({"tokenizer": "chars", "alphabet": "abc", "vocab_size": 4}, "alphabet's length"),
    ({"tokenizer": "bytes", "vocab_size": 256, "alphabet": "ab"}, "alphabet"),
    ({"tokenizer": "bytes", "vocab_size": 256, "classes": ("x", "y")}, "no classes"),
    ({"tokenizer": "bytes", "vocab_size": 256, "input_shape": (8, 8)}, "one sequence"),
])
def test_corpus_info_is_consistent(change: dict[str, object], problem: str) -> None:
    ok = DatasetInfo(format="text", task="causal_lm", licence="", input_shape=(9,), input_dtype="int32",
                     vocab_size=256, tokenizer="bytes")
    assert DatasetInfo.from_dict(ok.to_dict()) == ok
    with pytest.raises(SchemaError, match=problem):
        DatasetInfo.from_dict(replace(ok, **change).to_dict())  # type: ignore[arg-type]
