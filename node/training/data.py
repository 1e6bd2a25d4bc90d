"""Fashion-MNIST from local IDX files, shards for trainers, and the shard byte format.

Never downloads anything: the files come from Debian's ``dataset-fashion-mnist`` package (or a directory named
by ``DTNODE_FASHION_MNIST_DIR``). Debian recompressed the .gz files, so what is pinned is the sha256 of the
decoded arrays, which is the same for every copy of the real dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from node.training.errors import DatasetError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the files."""
FASHION_MNIST_ENV = "DTNODE_FASHION_MNIST_DIR"
DEBIAN_PACKAGE = "dataset-fashion-mnist"

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
MAX_SHARD_BYTES = 64 << 20
"""Upper bound on a shard's encoded size (a whole 60k-image training set is 47 MB)."""

# sha256 of ``images.tobytes()`` / ``labels.tobytes()`` (uint8, C order) of the real dataset.
PINNED_SHA256: dict[str, str] = {
    "train-images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
    "train-labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
    "t10k-images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
    "t10k-labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
}

_IDX_DTYPES = {0x08: np.uint8}


@dataclass(frozen=True, eq=False)
class ArraySet:
    """Images (uint8, N×28×28) and their labels (uint8, N, values 0..9). Treated as immutable."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]

    def __post_init__(self) -> None:
        _validate_arrays(self.images, self.labels, what="ArraySet")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: npt.NDArray[np.int64] | slice) -> ArraySet:
        """A new set holding the selected samples, in the given order."""
        return ArraySet(np.ascontiguousarray(self.images[indices]), np.ascontiguousarray(self.labels[indices]))

    def digest(self) -> str:
        """sha256 hex over both arrays; two sets with the same samples in the same order have the same digest."""
        h = hashlib.sha256()
        h.update(self.images.tobytes())
        h.update(self.labels.tobytes())
        return h.hexdigest()


def _validate_arrays(images: np.ndarray, labels: np.ndarray, *, what: str) -> None:
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DatasetError(f"{what}: images and labels must be uint8, got {images.dtype} and {labels.dtype}")
    if images.ndim != 3 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise DatasetError(f"{what}: images must have shape N×28×28, got {tuple(images.shape)}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetError(f"{what}: labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DatasetError(f"{what}: label {int(labels.max())} out of range 0..{NUM_CLASSES - 1}")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw) into an array; rejects malformed headers and sizes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic)")
    dtype = _IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise DatasetError(f"{path}: unsupported IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - header != count:
        raise DatasetError(f"{path}: IDX header promises {count} elements but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).copy()


def _find(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def dataset_dir(root: Path | str | None = None) -> Path:
    """The directory to read: ``root`` if given, else ``$DTNODE_FASHION_MNIST_DIR``, else Debian's location."""
    if root is not None:
        return Path(root)
    env = os.environ.get(FASHION_MNIST_ENV)
    return Path(env) if env else FASHION_MNIST_DIR


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


def make_shards(
    train: ArraySet, n: int, *, iid: bool = True, alpha: float = 0.5, seed: int = 0
) -> list[ArraySet]:
    """Split ``train`` into ``n`` disjoint shards, deterministically from ``seed``.

    IID: a seeded permutation cut into near-equal parts. Non-IID: label skew, each class's samples divided among
    the shards in proportions drawn from Dirichlet(``alpha``) (small α, more skew), as in Hsu et al. 2019. Every
    shard gets at least one sample; samples inside a shard are shuffled so no shard is sorted by label.
    """
    if n < 1 or n > len(train):
        raise DatasetError(f"cannot cut {len(train)} samples into {n} shards")
    if not iid and not alpha > 0:
        raise DatasetError(f"Dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    if iid:
        order = rng.permutation(len(train))
        return [train.subset(np.sort(part)) for part in np.array_split(order, n)]
    parts: list[list[np.ndarray]] = [[] for _ in range(n)]
    for cls in range(NUM_CLASSES):
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


def encode_shard(shard: ArraySet) -> bytes:
    """A shard's bytes: safetensors with tensors ``images`` and ``labels`` (the same shard, the same bytes)."""
    return bytes(
        st_save({"images": np.ascontiguousarray(shard.images), "labels": np.ascontiguousarray(shard.labels)})
    )


def decode_shard(data: bytes, *, max_bytes: int = MAX_SHARD_BYTES) -> ArraySet:
    """Parse and validate shard bytes; raises :class:`DatasetError` naming what is wrong."""
    if len(data) > max_bytes:
        raise DatasetError(f"shard of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise DatasetError(f"shard bytes are not valid safetensors ({exc})") from exc
    if set(tensors) != {"images", "labels"}:
        raise DatasetError(f"shard must hold exactly 'images' and 'labels', got {sorted(tensors)}")
    images, labels = tensors["images"], tensors["labels"]
    _validate_arrays(images, labels, what="shard")
    if len(labels) == 0:
        raise DatasetError("shard holds no samples")
    return ArraySet(images, labels)
