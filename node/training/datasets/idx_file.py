"""The IDX file format (MNIST's): a magic, an element type, big-endian dimensions, then the elements in C order.

Pure parsing, no dataset semantics: :mod:`node.training.datasets.idx` turns image and label files into samples.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from node.training.errors import DatasetError

IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
"""The format's element types (multi-byte ones big-endian, as the format says)."""


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw) into a native-endian array; rejects malformed headers and sizes."""
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
    dtype = IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise DatasetError(f"{path}: unsupported IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(raw) - header != count * dtype.itemsize:
        raise DatasetError(f"{path}: IDX header promises {count} elements but the file holds "
                           f"{(len(raw) - header) // dtype.itemsize}")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)
