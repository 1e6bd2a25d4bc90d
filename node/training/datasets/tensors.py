"""Tensor files: a ``.safetensors`` or ``.npz`` file holding ``inputs`` (N × sample shape) and ``labels`` (N class
ids), and optionally ``test_inputs`` and ``test_labels`` for a test split.

``.npz`` is read with ``allow_pickle=False``: an object array (which only a pickle can hold, and unpickling runs
code) is refused, naming the file. Inputs keep uint8; other integers become int32 ids, other floats float32.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from node.training.data import ArraySet
from node.training.datasets.idx import as_labels
from node.training.datasets.source import LoadedDataset, class_names
from node.training.errors import DatasetError
from storage.dataset import DatasetInfo

KEYS = frozenset({"inputs", "labels"})
TEST_KEYS = frozenset({"test_inputs", "test_labels"})


def _read(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError, TypeError) as exc:
            raise DatasetError(f"{path}: not a valid safetensors file ({exc})") from exc
    if suffix != ".npz":
        raise DatasetError(f"{path}: a tensor dataset is a .safetensors or .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DatasetError(f"{path}: holds a pickled (object) array, refused: unpickling runs code; save plain "
                               "numeric arrays") from exc
        raise DatasetError(f"{path}: not a valid .npz file ({exc})") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a valid .npz file ({exc})") from exc


def _inputs(array: np.ndarray, path: Path, key: str) -> np.ndarray:
    if array.ndim < 2:
        raise DatasetError(f"{path}: '{key}' must be N × sample shape, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu":
        if array.size and (int(array.min()) < -(2**31) or int(array.max()) >= 2**31):
            raise DatasetError(f"{path}: '{key}' holds integers beyond int32")
        return array.astype(np.int32)
    if array.dtype.kind == "f":
        out = array.astype(np.float32)
        if not np.isfinite(out).all():
            raise DatasetError(f"{path}: '{key}' holds NaN or infinity (or values beyond float32)")
        return out
    raise DatasetError(f"{path}: '{key}' is {array.dtype}; inputs must be integers or floats")


def _pair(tensors: dict[str, np.ndarray], path: Path, x_key: str, y_key: str) -> ArraySet:
    x = _inputs(tensors[x_key], path, x_key)
    y = as_labels(tensors[y_key], path)
    if x.shape[0] != y.shape[0]:
        raise DatasetError(f"{path}: '{x_key}' holds {x.shape[0]} samples but '{y_key}' {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise DatasetError(f"{path}: '{x_key}' holds no samples")
    return ArraySet(x, y)


def load_tensor_file(path: Path, *, licence: str) -> LoadedDataset:
    """Read the file's arrays; refuses missing or unknown keys, ragged lengths, bad dtypes and out-of-range labels."""
    tensors = _read(path)
    keys = set(tensors)
    if not KEYS <= keys or keys - KEYS - TEST_KEYS or len(keys & TEST_KEYS) == 1:
        raise DatasetError(f"{path}: expected arrays 'inputs' and 'labels' (and optionally 'test_inputs' with "
                           f"'test_labels'), found {sorted(keys)}")
    train = _pair(tensors, path, "inputs", "labels")
    test = _pair(tensors, path, "test_inputs", "test_labels") if TEST_KEYS <= keys else None
    if test is not None and (test.inputs.shape[1:] != train.inputs.shape[1:] or test.inputs.dtype
                             != train.inputs.dtype):
        raise DatasetError(f"{path}: 'test_inputs' are {test.inputs.dtype} {test.inputs.shape[1:]}, 'inputs' "
                           f"{train.inputs.dtype} {train.inputs.shape[1:]}")
    assert train.labels is not None
    top = max(int(train.labels.max()), int(test.labels.max()) if test is not None and test.labels is not None else 0)
    if top < 1:
        raise DatasetError(f"{path}: every label is 0; classification needs at least 2 classes")
    info = DatasetInfo(format="tensors", task="classification", licence=licence,
                       input_shape=tuple(int(d) for d in train.inputs.shape[1:]), input_dtype=str(train.inputs.dtype),
                       classes=class_names(top + 1))
    return LoadedDataset(train, info, test)
