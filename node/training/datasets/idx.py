"""MNIST-style IDX folders: ``train-images-idx*-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``, and optionally
``t10k-…`` or ``test-…`` files for a test split. Any sample shape, element type and number of classes; Fashion-MNIST
(recognised by its pinned hashes) gets its class names and licence note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from node.training.data import FASHION_MNIST_CLASSES, FASHION_MNIST_LICENCE, ArraySet, is_fashion_mnist
from node.training.datasets.idx_file import read_idx
from node.training.datasets.source import NO_LICENCE, LoadedDataset, class_names
from node.training.errors import DatasetError
from storage.dataset import DatasetInfo


def _one(folder: Path, split: str, kind: str) -> Path | None:
    found = sorted(p for p in folder.glob(f"{split}-{kind}-idx*-ubyte*") if p.name.endswith(("-ubyte", "-ubyte.gz")))
    if len(found) > 1:
        raise DatasetError(f"{folder}: more than one {split} {kind} file ({', '.join(p.name for p in found)})")
    return found[0] if found else None


def as_inputs(array: np.ndarray, path: Path) -> np.ndarray:
    """IDX elements as sample inputs: uint8 pixels kept, every other type as float32 values."""
    if array.ndim < 2:
        raise DatasetError(f"{path}: inputs need a sample axis and at least one more, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    out = array.astype(np.float32)
    if not np.isfinite(out).all():
        raise DatasetError(f"{path}: holds NaN or infinity (or values beyond float32)")
    return out


def as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """Class ids as uint8 (up to 256 classes) or int32; refuses non-integers, negatives and wrong shapes."""
    if array.ndim != 1:
        raise DatasetError(f"{path}: labels must be one id per sample (1-D), got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise DatasetError(f"{path}: labels must be integers, got {array.dtype}")
    if array.size and int(array.min()) < 0:
        raise DatasetError(f"{path}: label {int(array.min())} out of range (class ids start at 0)")
    if array.size and int(array.max()) >= 2**31:
        raise DatasetError(f"{path}: label {int(array.max())} out of range")
    return array.astype(np.uint8 if not array.size or int(array.max()) < 256 else np.int32)


def _split(folder: Path, split: str) -> ArraySet | None:
    images, labels = _one(folder, split, "images"), _one(folder, split, "labels")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        raise DatasetError(f"{folder}: {split} {'labels' if images is None else 'images'} file without its "
                           f"{'images' if images is None else 'labels'} file")
    x, y = as_inputs(read_idx(images), images), as_labels(read_idx(labels), labels)
    if x.shape[0] != y.shape[0]:
        raise DatasetError(f"{images} holds {x.shape[0]} samples but {labels} holds {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise DatasetError(f"{images}: no samples")
    return ArraySet(x, y)


def load_idx_folder(folder: Path, *, licence: str = "") -> LoadedDataset:
    """The folder's train split (required) and test split (``t10k-`` or ``test-``, optional)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: an IDX dataset is a folder holding train-images-idx*-ubyte[.gz] and "
                           "train-labels-idx1-ubyte[.gz]")
    train = _split(folder, "train")
    if train is None:
        raise DatasetError(f"{folder}: no train-images-idx*-ubyte[.gz] / train-labels-idx1-ubyte[.gz] files")
    tests = [t for t in (_split(folder, "t10k"), _split(folder, "test")) if t is not None]
    if len(tests) > 1:
        raise DatasetError(f"{folder}: both t10k-* and test-* files; keep one test split")
    test = tests[0] if tests else None
    if test is not None and test.inputs.shape[1:] != train.inputs.shape[1:]:
        raise DatasetError(f"{folder}: test samples have shape {test.inputs.shape[1:]}, training samples "
                           f"{train.inputs.shape[1:]}")
    if test is not None and test.inputs.dtype != train.inputs.dtype:
        raise DatasetError(f"{folder}: test images are {test.inputs.dtype}, training images {train.inputs.dtype}")
    assert train.labels is not None
    count = max(int(train.labels.max()), int(test.labels.max()) if test and test.labels is not None else 0) + 1
    if count < 2:
        raise DatasetError(f"{folder}: every label is 0; classification needs at least 2 classes")
    known = is_fashion_mnist(train)
    info = DatasetInfo(
        format="idx", task="classification",
        licence=licence or (FASHION_MNIST_LICENCE if known else NO_LICENCE),
        input_shape=tuple(int(d) for d in train.inputs.shape[1:]), input_dtype=str(train.inputs.dtype),
        classes=FASHION_MNIST_CLASSES if known and count == len(FASHION_MNIST_CLASSES) else class_names(count),
    )
    return LoadedDataset(train, info, test)
