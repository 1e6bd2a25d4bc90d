"""Datasets through the local store and bitswap; manifest validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocols.errors import SchemaError
from storage.dataset import DatasetManifest, fetch_dataset, fetch_dataset_manifest, publish_dataset
from tests.storage.conftest import storage_nodes


async def test_publish_on_one_node_fetch_on_another(tmp_path: Path) -> None:
    async with storage_nodes(2, tmp_path) as (a, b):
        shards = [os.urandom(300_000 + i) for i in range(4)]
        cid = await publish_dataset(a.content, shards, [100, 101, 102, 103], "fashion-mnist/npz", "MIT (Zalando)")
        manifest = await fetch_dataset_manifest(b.content, cid, timeout_s=30, providers=[a.info])
        assert manifest.total_samples == 406 and len(manifest.shard_cids) == 4
        _, got = await fetch_dataset(b.content, cid, max_shard_bytes=1 << 20, timeout_s=60, providers=[a.info])
        assert got == shards


def test_manifest_is_canonical_and_strict() -> None:
    good = (
        b'{"format":"f","licence":"l","schema":"dtnode.dataset/1","shards":[{"bytes":3,"cid":'
        b'"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","samples":1}],"total_samples":1}'
    )
    manifest = DatasetManifest.from_bytes(good)
    assert manifest.to_bytes() == good
    with pytest.raises(SchemaError, match="total_samples"):
        DatasetManifest.from_bytes(good.replace(b'"total_samples":1', b'"total_samples":2'))
    with pytest.raises(SchemaError, match="cid"):
        DatasetManifest.from_bytes(good.replace(b"bafkrei", b"zzkrei"))
