"""CIDs on-chain: the contract stores a CID's raw binary form, so the chain alone is enough to recover it.

A CIDv1 goes on-chain as ``<version><codec><multihash>`` and comes back as its canonical base32 string
(``bafy...``); a CIDv0 (a bare sha2-256 multihash) comes back as ``Qm...``. This module never touches IPFS.
"""

from __future__ import annotations

import cid as py_cid

from protocols.errors import SchemaError
from protocols.types import Cid

_CIDV0_PREFIX = b"\x12\x20"  # sha2-256, 32 bytes: a CIDv0 is just this multihash
_CIDV0_LEN = 34


def cid_to_bytes(value: str) -> bytes:
    """The binary form of a CID string, as stored on-chain.

    Raises:
        SchemaError: ``value`` is not a valid CID.
    """
    try:
        parsed = py_cid.make_cid(value)
    except (ValueError, TypeError, KeyError) as exc:
        raise SchemaError(f"not a valid CID: {value!r} ({exc})") from exc
    return bytes(parsed.buffer)


def cid_from_bytes(raw: bytes) -> Cid:
    """The canonical string of a CID read from the chain (base32 for v1, base58 for v0).

    Raises:
        SchemaError: the bytes are not a CID (the contract accepts any ``bytes``, so a caller may have stored junk).
    """
    try:
        if len(raw) == _CIDV0_LEN and raw.startswith(_CIDV0_PREFIX):
            return Cid(str(py_cid.CIDv0(raw)))
        encoded = py_cid.from_bytes(raw).encode("base32")
    except (ValueError, TypeError, KeyError) as exc:
        raise SchemaError(f"chain holds bytes that are not a CID: 0x{raw.hex()} ({exc})") from exc
    return Cid(encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded))


def optional_cid_from_bytes(raw: bytes) -> Cid | None:
    """Like :func:`cid_from_bytes`, but empty bytes (an unset slot) give ``None``."""
    return cid_from_bytes(raw) if raw else None
