"""Samples in memory (:class:`ArraySet`), shards for trainers and their byte format, and the Fashion-MNIST demo set.

A shard is safetensors holding either ``inputs`` (N × one sample's shape; uint8, int32 or float32) and ``labels``
(N integer class ids) for classification, or ``tokens`` (N × (context + 1) int32 ids) for a causal LM corpus, whose
inputs and targets are the same sequences shifted by one. Loading the formats customers have is
:mod:`node.training.datasets`; what a model makes of a sample is :mod:`node.training.objective`.

Never downloads anything: Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package (or a directory named
by ``DTNODE_FASHION_MNIST_DIR``). Debian recompressed the .gz files, so what is pinned is the sha256 of the decoded
arrays, which is the same for every copy of the real dataset.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from node.training.datasets.idx_file import read_idx
from node.training.errors import DatasetError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the files."""
FASHION_MNIST_ENV = "DTNODE_FASHION_MNIST_DIR"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
FASHION_MNIST_LICENCE = "Fashion-MNIST, (c) Zalando SE, MIT licence; from Debian's dataset-fashion-mnist"
MAX_SHARD_BYTES = 64 << 20
"""Upper bound on a shard's encoded size (a whole 60k-image training set is 47 MB)."""
INPUT_DTYPES = (np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.float32))
LABEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.int32))

# sha256 of ``images.tobytes()`` / ``labels.tobytes()`` (uint8, C order) of the real dataset.
PINNED_SHA256: dict[str, str] = {
    "train-images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
    "train-labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
    "t10k-images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
    "t10k-labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
}


@dataclass(frozen=True, eq=False)
class ArraySet:
    """N samples: ``inputs`` (N × sample shape) and class ``labels`` (N,), or token sequences with ``labels`` None.

    Treated as immutable. Labels are checked against a class count where one is known (:func:`check_labels`).
    """

    inputs: np.ndarray
    labels: np.ndarray | None

    def __post_init__(self) -> None:
        _validate_arrays(self.inputs, self.labels, what="ArraySet")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def is_sequences(self) -> bool:
        """Token sequences for a causal LM (inputs and targets from the same rows)."""
        return self.labels is None

    def subset(self, indices: npt.NDArray[np.int64] | slice) -> ArraySet:
        """A new set holding the selected samples, in the given order."""
        labels = None if self.labels is None else np.ascontiguousarray(self.labels[indices])
        return ArraySet(np.ascontiguousarray(self.inputs[indices]), labels)

    def digest(self) -> str:
        """sha256 hex over the arrays; two sets with the same samples in the same order have the same digest."""
        h = hashlib.sha256()
        h.update(self.inputs.tobytes())
        if self.labels is not None:
            h.update(self.labels.tobytes())
        return h.hexdigest()


def _validate_arrays(inputs: np.ndarray, labels: np.ndarray | None, *, what: str) -> None:
    if inputs.ndim < 2 or inputs.shape[0] < 1 or 0 in inputs.shape:
        raise DatasetError(f"{what}: inputs must have shape N × sample shape with N >= 1, got {tuple(inputs.shape)}")
    if labels is None:
        if inputs.dtype != np.int32 or inputs.ndim != 2 or inputs.shape[1] < 2:
            raise DatasetError(f"{what}: token sequences must be int32 N × (context + 1), got {inputs.dtype} "
                               f"{tuple(inputs.shape)}")
        if int(inputs.min()) < 0:
            raise DatasetError(f"{what}: token id {int(inputs.min())} is negative")
        return
    if inputs.dtype not in INPUT_DTYPES:
        raise DatasetError(f"{what}: inputs must be uint8, int32 or float32, got {inputs.dtype}")
    if inputs.dtype == np.float32 and not np.isfinite(inputs).all():
        raise DatasetError(f"{what}: inputs hold NaN or infinity")
    if labels.dtype not in LABEL_DTYPES:
        raise DatasetError(f"{what}: labels must be uint8 or int32 class ids, got {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != inputs.shape[0]:
        raise DatasetError(f"{what}: labels must have shape ({inputs.shape[0]},), got {tuple(labels.shape)}")
    if labels.size and int(labels.min()) < 0:
        raise DatasetError(f"{what}: label {int(labels.min())} out of range (class ids start at 0)")


def check_labels(data: ArraySet, num_classes: int, *, what: str) -> None:
    """Raise :class:`DatasetError` naming ``what`` if a label is not a class id ``0..num_classes - 1``."""
    if data.labels is not None and data.labels.size and int(data.labels.max()) >= num_classes:
        raise DatasetError(f"{what}: label {int(data.labels.max())} out of range 0..{num_classes - 1}")


def dataset_dir(root: Path | str | None = None) -> Path:
    """The directory to read: ``root`` if given, else ``$DTNODE_FASHION_MNIST_DIR``, else Debian's location."""
    if root is not None:
        return Path(root)
    env = os.environ.get(FASHION_MNIST_ENV)
    return Path(env) if env else FASHION_MNIST_DIR


def _find(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def load_fashion_mnist(root: Path | str | None = None, *, verify: bool = True) -> tuple[ArraySet, ArraySet]:
    """Load (train 60k, test 10k) from IDX files; checks the decoded arrays against the pinned sha256."""
    directory = dataset_dir(root)
    stems = {
        "train-images": "train-images-idx3-ubyte",
        "train-labels": "train-labels-idx1-ubyte",
        "t10k-images": "t10k-images-idx3-ubyte",
        "t10k-labels": "t10k-labels-idx1-ubyte",
    }
    paths = {key: _find(directory, stem) for key, stem in stems.items()}
    missing = [f"{stems[key]}[.gz]" for key, path in paths.items() if path is None]
    if missing:
        raise DatasetError(
            f"Fashion-MNIST files missing in {directory}: {', '.join(missing)}. Install Debian's "
            f"{DEBIAN_PACKAGE!r} package (apt-get install {DEBIAN_PACKAGE}) or set {FASHION_MNIST_ENV} to a "
            f"directory holding the four IDX files"
        )
    arrays = {key: read_idx(path) for key, path in paths.items() if path is not None}
    if verify:
        for key, array in arrays.items():
            digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            if digest != PINNED_SHA256[key]:
                raise DatasetError(
                    f"{paths[key]}: decoded {key} sha256 {digest} differs from the pinned {PINNED_SHA256[key]}; "
                    f"the file is corrupt or not Fashion-MNIST (reinstall {DEBIAN_PACKAGE!r})"
                )
    train = ArraySet(arrays["train-images"], arrays["train-labels"])
    test = ArraySet(arrays["t10k-images"], arrays["t10k-labels"])
    return train, test


def is_fashion_mnist(data: ArraySet) -> bool:
    """Whether ``data`` is Fashion-MNIST's training or test split, exactly (by the pinned hashes)."""
    if data.labels is None:
        return False
    pins = {(PINNED_SHA256["train-images"], PINNED_SHA256["train-labels"]),
            (PINNED_SHA256["t10k-images"], PINNED_SHA256["t10k-labels"])}
    digests = (hashlib.sha256(data.inputs.tobytes()).hexdigest(), hashlib.sha256(data.labels.tobytes()).hexdigest())
    return digests in pins


def make_shards(
    train: ArraySet, n: int, *, iid: bool = True, alpha: float = 0.5, seed: int = 0
) -> list[ArraySet]:
    """Split ``train`` into ``n`` disjoint shards, deterministically from ``seed``.

    IID: a seeded permutation cut into near-equal parts. Non-IID (classification only): label skew, each class's
    samples divided among the shards in proportions drawn from Dirichlet(``alpha``) (small α, more skew), as in Hsu
    et al. 2019. Every shard gets at least one sample; samples inside a shard are shuffled so no shard is sorted by
    label.
    """
    if n < 1 or n > len(train):
        raise DatasetError(f"cannot cut {len(train)} samples into {n} shards")
    if not iid and not alpha > 0:
        raise DatasetError(f"Dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    if iid:
        order = rng.permutation(len(train))
        return [train.subset(np.sort(part)) for part in np.array_split(order, n)]
    if train.labels is None:
        raise DatasetError("label-skewed (non-IID) shards need labels; a text corpus is cut IID")
    parts: list[list[np.ndarray]] = [[] for _ in range(n)]
    for cls in range(int(train.labels.max()) + 1):
        idx = np.flatnonzero(train.labels == cls)
        idx = idx[rng.permutation(idx.size)]
        props = rng.dirichlet(np.full(n, alpha))
        cuts = (np.cumsum(props)[:-1] * idx.size).astype(np.int64)
        for i, chunk in enumerate(np.split(idx, cuts)):
            parts[i].append(chunk)
    merged = [np.concatenate(p) for p in parts]
    # Guarantee non-empty shards by taking one sample from the largest shard for each empty one.
    for i, part in enumerate(merged):
        if part.size == 0:
            donor = int(np.argmax([p.size for p in merged]))
            merged[i], merged[donor] = merged[donor][-1:], merged[donor][:-1]
    return [train.subset(part[rng.permutation(part.size)]) for part in merged]


def hold_out(data: ArraySet, fraction: float, *, seed: int = 0) -> tuple[ArraySet, ArraySet]:
    """``(train, held out)``: a seeded ``fraction`` of the samples (at least one, and at least one left to train on)
    kept aside for evaluation, for datasets that do not come with a test split."""
    if not 0 < fraction < 1:
        raise DatasetError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    if len(data) < 2:
        raise DatasetError(f"{len(data)} sample(s): too few to hold any out for evaluation")
    n_out = min(len(data) - 1, max(1, round(len(data) * fraction)))
    order = np.random.default_rng([seed, 1]).permutation(len(data))
    return data.subset(np.sort(order[n_out:])), data.subset(np.sort(order[:n_out]))


def encode_shard(shard: ArraySet) -> bytes:
    """A shard's bytes: safetensors with ``inputs`` and ``labels``, or ``tokens`` (the same shard, the same bytes)."""
    if shard.labels is None:
        return bytes(st_save({"tokens": np.ascontiguousarray(shard.inputs)}))
    return bytes(st_save({"inputs": np.ascontiguousarray(shard.inputs), "labels": np.ascontiguousarray(shard.labels)}))


def decode_shard(data: bytes, *, max_bytes: int = MAX_SHARD_BYTES, num_classes: int | None = None) -> ArraySet:
    """Parse and validate shard bytes (labels against ``num_classes`` where given); raises :class:`DatasetError`
    naming what is wrong."""
    if len(data) > max_bytes:
        raise DatasetError(f"shard of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise DatasetError(f"shard bytes are not valid safetensors ({exc})") from exc
    if set(tensors) == {"tokens"}:
        return ArraySet(tensors["tokens"], None)
    if set(tensors) != {"inputs", "labels"}:
        raise DatasetError(f"shard must hold exactly 'inputs' and 'labels', or 'tokens'; got {sorted(tensors)}")
    shard = ArraySet(tensors["inputs"], tensors["labels"])
    if num_classes is not None:
        check_labels(shard, num_classes, what="shard")
    return shard
