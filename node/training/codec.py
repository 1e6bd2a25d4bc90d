"""Deterministic bytes for checkpoints and deltas (safetensors), and strict decoding of untrusted bytes.

The same tensors always give the same bytes, hence the same CID and :func:`state_hash` (``torch.save`` does not:
it embeds pickled storage ids). Safetensors writes tensors in a fixed order and we never add more than one
metadata entry (its metadata map is a hash map whose order is not fixed in the Rust library).

Delta kinds:

- ``f32``: the float32 tensors as they are; these bytes equal :func:`encode_state` of the delta.
- ``int8``: per tensor, ``q = round(x / s)`` clipped to ±127 with ``s = max|x| / 127``, stored as ``<key>`` (int8)
  and ``<key>::scale`` (float32 scalar). 4× smaller; the error per element is at most ``s / 2``.
- ``topk``: per tensor the ``ceil(frac · n)`` entries of largest magnitude, as ``<key>::idx`` (int64, ascending
  flat indices) and ``<key>::val`` (float32); ties are broken by index so the choice is deterministic.

Decoding never trusts the bytes: size limit first, then exactly the expected tensor names, shapes and dtypes, and
no NaN or Inf anywhere.

Streaming (issue 14: a 100M-parameter trainer state is 1.2 GB): :func:`iter_state_bytes` yields the safetensors
bytes piece by piece (the header, then each tensor's memory as it is, no copy), so hashing
(:func:`state_hash`), writing to a file (:func:`write_state`) or importing into the block store never holds a
second copy of the state. The bytes are exactly ``safetensors.torch.save``'s (the tests compare them), so CIDs and
hashes are unchanged. :func:`read_state` reads a file straight into the tensors (one copy).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from node.training.errors import InvalidDelta

State = dict[str, torch.Tensor]
DeltaKind = Literal["f32", "int8", "topk"]
DELTA_KINDS: tuple[str, ...] = ("f32", "int8", "topk")
CODEC_METADATA_KEY = "dtnode.delta"
MAX_STATE_BYTES = 64 << 20
"""Default upper bound on checkpoint/delta bytes (the CNN's float32 checkpoint is 424 kB)."""

_SCALE, _IDX, _VAL = "::scale", "::idx", "::val"


def _prepared(state: Mapping[str, torch.Tensor]) -> State:
    out: State = {}
    for key in sorted(state):
        tensor = state[key]
        if not isinstance(tensor, torch.Tensor):
            raise InvalidDelta(f"{key}: expected a tensor, got {type(tensor).__name__}")
        if "::" in key:
            raise InvalidDelta(f"{key}: tensor names must not contain '::' (reserved by the delta codec)")
        out[key] = tensor.detach().to("cpu").contiguous()  # a copy only when it is not contiguous on the CPU
    return out


def _checked(state: Mapping[str, torch.Tensor]) -> None:
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise InvalidDelta(f"{key}: expected a tensor, got {type(tensor).__name__}")
        if "::" in key:
            raise InvalidDelta(f"{key}: tensor names must not contain '::' (reserved by the delta codec)")


def _order(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The order safetensors lays tensors out in (by dtype, largest alignment first, then by name), asked of the
    library itself on empty stand-ins so a new release that changes its dtype ranking cannot change our bytes."""
    stand_ins = {key: torch.empty(0, dtype=tensor.dtype) for key, tensor in state.items()}
    header = bytes(st_save(stand_ins))
    n = int.from_bytes(header[:8], "little")
    return list(json.loads(header[8 : 8 + n]))


def iter_state_bytes(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
                     ) -> Iterator[bytes | memoryview]:
    """The safetensors bytes of ``state`` (plus ``metadata``) in pieces: the header, then each tensor's raw memory.

    Byte for byte what ``safetensors.torch.save`` returns, without ever holding them whole: a piece is a view of
    one tensor (a contiguous CPU copy only when the tensor is not already one). Consume each piece before asking
    for the next.
    """
    _checked(state)
    return _pieces(state, metadata)


def _pieces(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None) -> Iterator[bytes | memoryview]:
    order = _order(state) if state else []
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for key in order:
        tensor = state[key]
        size = tensor.numel() * tensor.element_size()
        header[key] = {"dtype": _ST_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    yield len(text).to_bytes(8, "little") + text
    for key in order:
        tensor = state[key].detach()
        if tensor.numel() == 0:
            continue
        tensor = tensor.to("cpu").contiguous()
        yield tensor.reshape(-1).view(torch.uint8).numpy().data  # the tensor's own memory


_ST_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def encode_state(state: Mapping[str, torch.Tensor]) -> bytes:
    """Safetensors bytes of ``state``; deterministic: the same tensors always give the same bytes."""
    return b"".join(iter_state_bytes(state))


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex of :func:`encode_state` bytes: the identity of a checkpoint, a delta or a segment state.

    Hashed piece by piece: no copy of the state is made."""
    digest = hashlib.sha256()
    for piece in iter_state_bytes(state):
        digest.update(piece)
    return digest.hexdigest()


def write_state(state: Mapping[str, torch.Tensor], path: Path) -> tuple[int, str]:
    """Write :func:`encode_state` bytes of ``state`` to ``path`` atomically (tmp file + rename), streaming;
    returns (size, sha256 hex). Blocking: call in a worker thread."""
    digest = hashlib.sha256()
    size = 0
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        for piece in iter_state_bytes(state):
            digest.update(piece)
            size += fh.write(piece)
    os.replace(tmp, path)  # a reader never sees half a file
    return size, digest.hexdigest()


def read_state(path: Path, *, like: Mapping[str, torch.Tensor] | None = None, max_bytes: int) -> State:
    """:func:`decode_state` of a file's bytes, read tensor by tensor straight into the tensors' memory (no second
    copy, no memory map). The header is checked as safetensors checks it: known dtypes, sizes that match the
    shapes, and data offsets that tile the rest of the file exactly."""
    size = path.stat().st_size
    if size > max_bytes:
        raise InvalidDelta(f"checkpoint of {size} bytes exceeds the limit of {max_bytes}")
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n > size - 8:
                raise ValueError("header length exceeds the file")
            header = json.loads(fh.read(n))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")  # noqa: TRY004 (one error type for the caller)
            metadata = _metadata_of(header)
            layout = sorted(((_layout(key, entry), key) for key, entry in header.items() if key != "__metadata__"),
                            key=lambda item: (item[0][0], item[0][1], item[1]))
            tensors: State = {}
            offset = 0
            for (begin, end, dtype, shape), key in layout:
                if begin != offset:
                    raise ValueError(f"tensor {key!r}: data offsets leave a gap or overlap at byte {offset}")
                tensor = torch.empty(shape, dtype=dtype)
                if end > begin and fh.readinto(tensor.reshape(-1).view(torch.uint8).numpy().data) != end - begin:
                    raise ValueError(f"tensor {key!r}: the file ends inside its data")
                tensors[key] = tensor
                offset = end
            if 8 + n + offset != size:
                raise ValueError(f"{size - 8 - n - offset} bytes after the last tensor")
    except (ValueError, TypeError, KeyError, OverflowError, RuntimeError) as exc:
        raise InvalidDelta(f"checkpoint file {path.name} is not valid safetensors ({exc})") from exc
    return _checked_checkpoint(tensors, metadata, like)


_DTYPES_BY_NAME = {name: dtype for dtype, name in _ST_DTYPES.items()}


def _layout(key: str, entry: object) -> tuple[int, int, torch.dtype, tuple[int, ...]]:
    """(begin, end, dtype, shape) of one header entry, or ValueError."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"tensor {key!r}: malformed header entry")
    dtype = _DTYPES_BY_NAME.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
    shape, offsets = entry["shape"], entry["data_offsets"]
    if dtype is None:
        raise ValueError(f"tensor {key!r}: unsupported dtype {entry['dtype']!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ValueError(f"tensor {key!r}: bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise ValueError(f"tensor {key!r}: bad data offsets {offsets!r}")
    begin, end = offsets
    if end - begin != math.prod(shape) * torch.empty(0, dtype=dtype).element_size() or begin < 0:
        raise ValueError(f"tensor {key!r}: {end - begin} bytes of data for a {entry['dtype']} tensor of {shape}")
    return begin, end, dtype, tuple(shape)


def _load(data: bytes, *, max_bytes: int, what: str) -> tuple[State, dict[str, str]]:
    if len(data) > max_bytes:
        raise InvalidDelta(f"{what} of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        tensors = st_load(data)
        # safe_open reads only the header here; the tensors themselves came from st_load above.
        metadata = _metadata(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise InvalidDelta(f"{what} bytes are not valid safetensors ({exc})") from exc
    return tensors, metadata


def _metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("shorter than the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header length exceeds the data")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")  # noqa: TRY004 (callers catch ValueError)
    return _metadata_of(header)


def _metadata_of(header: dict[str, object]) -> dict[str, str]:
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("__metadata__ must map strings to strings")
    return dict(meta)


def _check_finite(key: str, tensor: torch.Tensor, what: str) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise InvalidDelta(f"{what}: tensor {key!r} holds NaN or Inf")


def _check_like(tensors: State, like: Mapping[str, torch.Tensor] | None, what: str) -> None:
    if like is None:
        return
    if set(tensors) != set(like):
        missing = sorted(set(like) - set(tensors))
        extra = sorted(set(tensors) - set(like))
        raise InvalidDelta(f"{what}: tensor names differ from the model's (missing {missing}, unexpected {extra})")
    for key, ref in like.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(ref.shape) or got.dtype != ref.dtype:
            raise InvalidDelta(
                f"{what}: tensor {key!r} is {got.dtype} {tuple(got.shape)}, expected {ref.dtype} {tuple(ref.shape)}"
            )


def decode_state(
    data: bytes, *, like: Mapping[str, torch.Tensor] | None = None, max_bytes: int = MAX_STATE_BYTES
) -> State:
    """Parse checkpoint bytes; with ``like``, require exactly its names, shapes and dtypes. Rejects NaN/Inf."""
    tensors, metadata = _load(data, max_bytes=max_bytes, what="checkpoint")
    return _checked_checkpoint(tensors, metadata, like)


def _checked_checkpoint(tensors: State, metadata: Mapping[str, str], like: Mapping[str, torch.Tensor] | None
                        ) -> State:
    if metadata:
        raise InvalidDelta(f"checkpoint: unexpected safetensors metadata {sorted(metadata)} (is this a delta?)")
    for key, tensor in tensors.items():
        _check_finite(key, tensor, "checkpoint")
    _check_like(tensors, like, "checkpoint")
    return tensors


def encode_delta(delta: Mapping[str, torch.Tensor], *, kind: str = "f32", topk_frac: float = 0.01) -> bytes:
    """Encode a float delta as ``kind`` (see the module docstring); deterministic bytes."""
    prepared = _prepared(delta)
    for key, tensor in prepared.items():
        if tensor.dtype != torch.float32:
            raise InvalidDelta(f"delta tensor {key!r} must be float32, got {tensor.dtype}")
        _check_finite(key, tensor, "delta")
    if kind == "f32":
        return b"".join(iter_state_bytes(prepared))
    out: State = {}
    if kind == "int8":
        for key, tensor in prepared.items():
            peak = float(tensor.abs().max()) if tensor.numel() else 0.0
            scale = peak / 127.0 if peak > 0 else 1.0
            q = torch.clamp(torch.round(tensor.double() / scale), -127, 127).to(torch.int8)
            out[key] = q.contiguous()
            out[key + _SCALE] = torch.tensor(scale, dtype=torch.float32)
    elif kind == "topk":
        if not 0 < topk_frac <= 1:
            raise InvalidDelta(f"topk_frac must be in (0, 1], got {topk_frac}")
        for key, tensor in prepared.items():
            flat = tensor.reshape(-1).numpy()
            k = min(flat.size, max(1, math.ceil(topk_frac * flat.size))) if flat.size else 0
            # Stable sort on -|x|: equal magnitudes keep index order, so the kept set is deterministic.
            order = np.argsort(-np.abs(flat), kind="stable")[:k]
            idx = np.sort(order).astype(np.int64)
            out[key + _IDX] = torch.from_numpy(idx.copy())
            out[key + _VAL] = torch.from_numpy(flat[idx].astype(np.float32).copy())
    else:
        raise InvalidDelta(f"unknown delta kind {kind!r}; expected one of {', '.join(DELTA_KINDS)}")
    return b"".join(_pieces(out, {CODEC_METADATA_KEY: kind}))


def delta_kind_of(data: bytes) -> str:
    """The kind recorded in delta bytes (``f32`` when none is recorded)."""
    try:
        return _metadata(data).get(CODEC_METADATA_KEY, "f32")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidDelta(f"delta bytes are not valid safetensors ({exc})") from exc


def decode_delta(
    data: bytes, *, like: Mapping[str, torch.Tensor], max_bytes: int = MAX_STATE_BYTES
) -> State:
    """Decode untrusted delta bytes of any kind into float32 tensors shaped like ``like``.

    Raises :class:`InvalidDelta` for oversize payloads, unknown kinds, missing/extra tensors, wrong shapes or
    dtypes, NaN/Inf, out-of-range top-k indices, and negative or non-finite int8 scales.
    """
    tensors, metadata = _load(data, max_bytes=max_bytes, what="delta")
    extra_meta = set(metadata) - {CODEC_METADATA_KEY}
    if extra_meta:
        raise InvalidDelta(f"delta: unexpected safetensors metadata {sorted(extra_meta)}")
    kind = metadata.get(CODEC_METADATA_KEY, "f32")
    for key, tensor in tensors.items():
        _check_finite(key, tensor, "delta")
    ref = {key: value for key, value in like.items()}
    for key, value in ref.items():
        if value.dtype != torch.float32:
            raise InvalidDelta(f"delta: model tensor {key!r} is {value.dtype}; only float32 models are supported")
    if kind == "f32":
        _check_like(tensors, ref, "delta")
        return tensors
    if kind == "int8":
        expected = {k for key in ref for k in (key, key + _SCALE)}
        _check_names(tensors, expected)
        out: State = {}
        for key, shape_ref in ref.items():
            q, scale = tensors[key], tensors[key + _SCALE]
            if q.dtype != torch.int8 or tuple(q.shape) != tuple(shape_ref.shape):
                raise InvalidDelta(
                    f"delta: {key!r} must be int8 {tuple(shape_ref.shape)}, got {q.dtype} {tuple(q.shape)}"
                )
            if scale.dtype != torch.float32 or scale.numel() != 1 or scale.dim() != 0 or not float(scale) >= 0:
                raise InvalidDelta(f"delta: scale of {key!r} must be a finite non-negative float32 scalar")
            if int(q.min()) < -127 if q.numel() else False:
                raise InvalidDelta(f"delta: {key!r} holds -128, outside the symmetric int8 range")
            out[key] = (q.double() * float(scale)).to(torch.float32)
            _check_finite(key, out[key], "delta")
        return out
    if kind == "topk":
        expected = {k for key in ref for k in (key + _IDX, key + _VAL)}
        _check_names(tensors, expected)
        out = {}
        for key, shape_ref in ref.items():
            idx, val = tensors[key + _IDX], tensors[key + _VAL]
            n = shape_ref.numel()
            if idx.dtype != torch.int64 or val.dtype != torch.float32 or idx.dim() != 1 or val.shape != idx.shape:
                raise InvalidDelta(
                    f"delta: top-k entries of {key!r} must be int64 indices and float32 values of one length"
                )
            if idx.numel() > n or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n)):
                raise InvalidDelta(f"delta: top-k indices of {key!r} out of range 0..{n - 1}")
            if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
                raise InvalidDelta(f"delta: top-k indices of {key!r} must be strictly ascending")
            flat = torch.zeros(n, dtype=torch.float32)
            flat[idx] = val
            out[key] = flat.reshape(shape_ref.shape)
        return out
    raise InvalidDelta(f"delta: unknown kind {kind!r}; expected one of {', '.join(DELTA_KINDS)}")


def _check_names(tensors: State, expected: set[str]) -> None:
    if set(tensors) != expected:
        missing = sorted(expected - set(tensors))
        extra = sorted(set(tensors) - expected)
        raise InvalidDelta(f"delta: tensor names differ from the model's (missing {missing}, unexpected {extra})")


def state_sub(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> State:
    """``a - b`` key by key (float32), e.g. a trainer's delta = final weights - base weights."""
    if set(a) != set(b):
        raise InvalidDelta("cannot subtract states with different tensor names")
    return {key: (a[key] - b[key]).contiguous() for key in sorted(a)}


def state_add(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> State:
    """``a + b`` key by key."""
    if set(a) != set(b):
        raise InvalidDelta("cannot add states with different tensor names")
    return {key: (a[key] + b[key]).contiguous() for key in sorted(a)}


def max_abs_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Largest element-wise ``|a - b|`` over all tensors (``inf`` when names or shapes differ)."""
    if set(a) != set(b):
        return math.inf
    worst = 0.0
    for key in a:
        if a[key].shape != b[key].shape:
            return math.inf
        if a[key].numel():
            worst = max(worst, float((a[key].double() - b[key].double()).abs().max()))
    return worst
