"""Canonical JSON: the one byte encoding of any object we hash or sign.

Sorted keys, no insignificant whitespace, UTF-8, and no floats (a float's text is not unique across
implementations), so the same object always gives the same bytes and so the same CID or signature.
"""

from __future__ import annotations

import json
from typing import Any

from protocols.errors import SchemaError


def _reject_floats(value: Any, path: str = "$") -> None:
    if isinstance(value, float):
        raise SchemaError(f"{path}: floats are not allowed where bytes are hashed; use an integer or a string")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SchemaError(f"{path}: object keys must be strings, got {type(key).__name__}")
            _reject_floats(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _reject_floats(item, f"{path}[{i}]")


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes. Raises :class:`SchemaError` on floats or non-string keys."""
    _reject_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_json_object(data: bytes, *, what: str, max_bytes: int = 1 << 20) -> dict[str, Any]:
    """Decode bytes that must hold one JSON object, with a size limit and a clear error."""
    if len(data) > max_bytes:
        raise SchemaError(f"{what}: {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{what}: not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise SchemaError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value
