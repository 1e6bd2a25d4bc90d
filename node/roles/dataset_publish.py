"""The customer's ``dtnode dataset add``: read a dataset in the format it came in, cut it into content-addressed
shards, hold out an evaluation shard, and publish shards, tokenizer file and manifest to the block store.

Reading is :mod:`node.training.datasets` (in a worker thread: decoding and tokenising are blocking), publishing is
:func:`storage.dataset.publish_dataset`. Fashion-MNIST, the demo's dataset, goes the same way with its pinned hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trio

from node.training.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_LICENCE,
    MAX_SHARD_BYTES,
    ArraySet,
    encode_shard,
    hold_out,
    load_fashion_mnist,
    make_shards,
)
from node.training.datasets.source import LoadedDataset, SourceOptions, load_dataset
from node.training.errors import DatasetError
from protocols.specs import JobSpec
from storage.content import ContentStore
from storage.dataset import DatasetInfo, publish_dataset

DEFAULT_EVAL_FRACTION = 0.1
"""Held out for evaluation from a dataset that comes without a test split."""


@dataclass(frozen=True)
class PublishedData:
    dataset_cid: str
    eval_cid: str
    shards: int
    train_samples: int
    eval_samples: int
    info: DatasetInfo


def eval_subset(test: ArraySet, n: int) -> ArraySet:
    """The first ``n`` samples of ``test`` (the evaluation shard of a dataset with a test split)."""
    return test.subset(np.arange(min(n, len(test)), dtype=np.int64))


def _cut(loaded: LoadedDataset, shards: int, non_iid_alpha: float | None, eval_samples: int, eval_fraction: float,
         seed: int) -> tuple[list[ArraySet], list[bytes], ArraySet, bytes]:
    train, test = loaded.train, loaded.test
    if test is None:
        train, test = hold_out(train, eval_fraction, seed=seed)
    held_out = eval_subset(test, eval_samples)
    if non_iid_alpha is not None and loaded.info.task != "classification":
        raise DatasetError("--non-iid-alpha (label-skewed shards) is for classification datasets")
    parts = make_shards(train, shards, iid=non_iid_alpha is None, alpha=non_iid_alpha or 0.5, seed=seed)
    encoded = [encode_shard(p) for p in parts]
    eval_bytes = encode_shard(held_out)
    largest = max(len(b) for b in [*encoded, eval_bytes])
    if largest > MAX_SHARD_BYTES:
        raise DatasetError(f"a shard of {largest} bytes exceeds the {MAX_SHARD_BYTES}-byte limit trainers accept; "
                           "pass more --shards (or fewer --eval-samples)")
    return parts, encoded, held_out, eval_bytes


async def publish_loaded(store: ContentStore, loaded: LoadedDataset, *, shards: int = 16,
                         non_iid_alpha: float | None = None, eval_samples: int = 2000,
                         eval_fraction: float = DEFAULT_EVAL_FRACTION, seed: int = 0) -> PublishedData:
    """Shard ``loaded``'s training samples into the store, plus an evaluation shard of at most ``eval_samples``:
    from its test split, or held out (``eval_fraction``, seeded) when it has none."""
    parts, encoded, held_out, eval_bytes = await trio.to_thread.run_sync(
        lambda: _cut(loaded, shards, non_iid_alpha, eval_samples, eval_fraction, seed))
    dataset_cid = await publish_dataset(store, encoded, [len(p) for p in parts], loaded.info,
                                        tokenizer_file=loaded.tokenizer_file)
    eval_cid = await store.put(eval_bytes)
    return PublishedData(dataset_cid, eval_cid, len(parts), sum(len(p) for p in parts), len(held_out), loaded.info)


async def publish_files(store: ContentStore, path: Path, options: SourceOptions, *, shards: int = 16,
                        non_iid_alpha: float | None = None, eval_samples: int = 2000,
                        eval_fraction: float = DEFAULT_EVAL_FRACTION, seed: int = 0) -> PublishedData:
    """``dtnode dataset add PATH --format …``: read ``path`` as ``options`` say, then :func:`publish_loaded`."""
    loaded = await trio.to_thread.run_sync(lambda: load_dataset(path, options))
    return await publish_loaded(store, loaded, shards=shards, non_iid_alpha=non_iid_alpha, eval_samples=eval_samples,
                                eval_fraction=eval_fraction, seed=seed)


def check_spec_data(spec: JobSpec, info: DatasetInfo) -> None:
    """Refuse a job whose dataset (its manifest's ``info``) is not what the spec's task and model sizes take: a
    corpus for a classifier, a tokenizer's vocabulary larger than the model's, sequences longer than its context, more
    classes than its outputs. Raises :class:`DatasetError` naming the field to change."""
    config = spec.model_config
    if info.task != spec.task:
        raise DatasetError(f"job spec: task {spec.task!r}, but dataset {spec.dataset_cid} is a {info.task} dataset "
                           f"({info.format}); use a {spec.task} dataset or set \"task\": \"{info.task}\"")
    if info.task == "causal_lm":
        if config.vocab and config.vocab < info.vocab_size:
            raise DatasetError(f"job spec: model_config.vocab {config.vocab} is smaller than the dataset's "
                               f"{info.tokenizer} vocabulary of {info.vocab_size}")
        if config.context and config.context < info.context_length:
            raise DatasetError(f"job spec: model_config.context {config.context} is shorter than the dataset's "
                               f"sequences of {info.context_length} tokens (re-add it with --context-length "
                               f"{config.context})")
    elif config.classes and config.classes < len(info.classes):
        raise DatasetError(f"job spec: model_config.classes {config.classes} is fewer than the dataset's "
                           f"{len(info.classes)} classes")


async def publish_fashion_mnist(store: ContentStore, *, shards: int = 16, eval_samples: int = 2000,
                                non_iid_alpha: float | None = None, seed: int = 0,
                                root: str | None = None) -> PublishedData:
    """Shard Fashion-MNIST's training set (hash-checked) into the store, plus an evaluation shard from its test set."""
    loaded = await trio.to_thread.run_sync(lambda: fashion_mnist_loaded(root))
    return await publish_loaded(store, loaded, shards=shards, non_iid_alpha=non_iid_alpha,
                                eval_samples=eval_samples, seed=seed)


def fashion_mnist_loaded(root: str | None = None) -> LoadedDataset:
    """Fashion-MNIST (hash-checked) with its description and test split, as ``dtnode dataset add`` reads it."""
    train, test = load_fashion_mnist(root)
    info = DatasetInfo(format="idx", task="classification", licence=FASHION_MNIST_LICENCE, input_shape=(28, 28),
                       input_dtype="uint8", classes=FASHION_MNIST_CLASSES)
    return LoadedDataset(train, info, test)
