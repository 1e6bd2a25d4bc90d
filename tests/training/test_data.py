from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from node.training.data import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_ENV,
    ArraySet,
    decode_shard,
    encode_shard,
    load_fashion_mnist,
    make_shards,
    read_idx,
)
from node.training.errors import DatasetError


def test_real_dataset_shapes_and_balance(fmnist: tuple[ArraySet, ArraySet]) -> None:
    train, test = fmnist
    assert train.inputs.shape == (60000, 28, 28) and test.inputs.shape == (10000, 28, 28)
    assert train.inputs.dtype == np.uint8 and train.labels.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_missing_files_name_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(DatasetError, match="dataset-fashion-mnist") as info:
        load_fashion_mnist()
    assert "train-images-idx3-ubyte" in str(info.value) and str(tmp_path) in str(info.value)


def test_raw_idx_files_and_pinned_hash(tmp_path: Path) -> None:
    # Raw (decompressed) copies load the same; a changed label is caught by the pinned hash.
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((FASHION_MNIST_DIR / f"{name}.gz").read_bytes()))
    shutil.copy(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz", tmp_path)
    gz = read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    raw = read_idx(tmp_path / "t10k-labels-idx1-ubyte")
    assert np.array_equal(gz, raw)
    train, _ = load_fashion_mnist(tmp_path)
    assert len(train) == 60000
    data = bytearray((tmp_path / "t10k-labels-idx1-ubyte").read_bytes())
    data[-1] = (data[-1] + 1) % 10
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="pinned"):
        load_fashion_mnist(tmp_path)


def test_truncated_idx_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"\x01" * 9)
    with pytest.raises(DatasetError, match="promises 10"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(path)


def test_iid_shards_partition_the_set(small_train: ArraySet) -> None:
    shards = make_shards(small_train, 7, iid=True, seed=3)
    assert sum(len(s) for s in shards) == len(small_train)
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    total = sum(np.bincount(s.labels, minlength=10) for s in shards)
    assert np.array_equal(total, np.bincount(small_train.labels, minlength=10))
    again = make_shards(small_train, 7, iid=True, seed=3)
    assert [s.digest() for s in shards] == [s.digest() for s in again]
    assert [s.digest() for s in shards] != [s.digest() for s in make_shards(small_train, 7, seed=4)]


def test_dirichlet_shards_are_label_skewed(small_train: ArraySet) -> None:
    def mean_max_share(shards: list[ArraySet]) -> float:
        return float(np.mean([np.bincount(s.labels, minlength=10).max() / len(s) for s in shards]))

    skewed = make_shards(small_train, 8, iid=False, alpha=0.1, seed=1)
    assert sum(len(s) for s in skewed) == len(small_train)
    assert all(len(s) > 0 for s in skewed)
    assert mean_max_share(skewed) > 0.4 > mean_max_share(make_shards(small_train, 8, iid=True, seed=1))


def test_shard_bytes_round_trip_and_are_deterministic(small_train: ArraySet) -> None:
    shard = make_shards(small_train, 10, seed=0)[0]
    data = encode_shard(shard)
    assert data == encode_shard(shard.subset(slice(None)))
    back = decode_shard(data)
    assert back.digest() == shard.digest()


def test_bad_shard_bytes_are_rejected(small_train: ArraySet) -> None:
    from safetensors.numpy import save

    with pytest.raises(DatasetError, match="not valid safetensors"):
        decode_shard(b"\x00" * 40)
    with pytest.raises(DatasetError, match="exceeds"):
        decode_shard(encode_shard(small_train), max_bytes=1000)
    images = small_train.inputs[:4]
    with pytest.raises(DatasetError, match="uint8"):
        decode_shard(save({"inputs": images.astype(np.float64), "labels": small_train.labels[:4]}))
    with pytest.raises(DatasetError, match="exactly"):
        decode_shard(save({"inputs": images, "labels": small_train.labels[:4], "x": small_train.labels[:4]}))
    with pytest.raises(DatasetError, match="labels must have shape"):
        decode_shard(save({"inputs": images, "labels": small_train.labels[:3]}))
    with pytest.raises(DatasetError, match="out of range"):
        decode_shard(save({"inputs": images, "labels": np.full(4, 10, dtype=np.uint8)}), num_classes=10)
