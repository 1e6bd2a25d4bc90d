"""CIDs as IPFS spells them: CIDv1, codec raw (0x55) or dag-pb (0x70), multihash sha2-256, base32 text.

The canonical text form is multibase base32 lower-case (``b`` prefix), the form Kubo prints for CIDv1. CIDv0
(``Qm...``) is accepted on input only where a peer or daemon hands one to us, and is never produced.
This module never touches the network or the disk.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Final

from protocols.types import Cid
from storage.errors import CidMismatch, InvalidCid

RAW: Final = 0x55
DAG_PB: Final = 0x70
SHA2_256: Final = 0x12
_CODECS: Final = {RAW: "raw", DAG_PB: "dag-pb"}
_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, as multiformats uses for every prefix."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode one unsigned varint at ``offset``; returns (value, next offset). Raises ValueError if malformed."""
    value = 0
    shift = 0
    pos = offset
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 9 bytes")
    raise ValueError("truncated varint")


@dataclass(frozen=True, slots=True)
class ContentId:
    """A parsed CID. ``codec`` is RAW or DAG_PB; ``digest`` is the 32-byte sha2-256 digest."""

    codec: int
    digest: bytes
    version: int = 1

    def __post_init__(self) -> None:
        if self.codec not in _CODECS:
            raise InvalidCid(f"unsupported codec 0x{self.codec:x}; dtnode accepts raw (0x55) and dag-pb (0x70)")
        if len(self.digest) != 32:
            raise InvalidCid(f"sha2-256 digest must be 32 bytes, got {len(self.digest)}")
        if self.version not in (0, 1) or (self.version == 0 and self.codec != DAG_PB):
            raise InvalidCid("CIDv0 must be dag-pb; only versions 0 and 1 exist")

    @property
    def multihash(self) -> bytes:
        return bytes([SHA2_256, 32]) + self.digest

    def to_bytes(self) -> bytes:
        """Binary CID (what dag-pb links and bitswap carry). A CIDv0 is its bare multihash."""
        if self.version == 0:
            return self.multihash
        return bytes([1]) + encode_varint(self.codec) + self.multihash

    def to_v1(self) -> ContentId:
        return ContentId(self.codec, self.digest, 1)

    def __str__(self) -> str:
        return cid_to_str(self)

    @property
    def codec_name(self) -> str:
        return _CODECS[self.codec]

    def verify(self, data: bytes) -> None:
        """Raise :class:`CidMismatch` unless ``data`` hashes to this CID."""
        if hashlib.sha256(data).digest() != self.digest:
            raise CidMismatch(f"block bytes do not hash to {self}; the copy is corrupt or forged")

    def matches(self, data: bytes) -> bool:
        return hashlib.sha256(data).digest() == self.digest


def make_cid(codec: int, data: bytes) -> ContentId:
    """The CIDv1 of ``data`` under ``codec``."""
    return ContentId(codec, hashlib.sha256(data).digest())


def cid_to_str(cid: ContentId) -> Cid:
    """Canonical text: base32 lower-case CIDv1 (a CIDv0 is upgraded, as ``ipfs cid base32`` does)."""
    raw = cid.to_v1().to_bytes()
    return Cid("b" + base64.b32encode(raw).decode("ascii").lower().rstrip("="))


def _b58decode(text: str) -> bytes:
    num = 0
    for char in text:
        index = _B58_ALPHABET.find(char)
        if index < 0:
            raise InvalidCid(f"{text!r}: invalid base58 character {char!r}")
        num = num * 58 + index
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\x00" * pad + body


def cid_from_bytes(raw: bytes) -> ContentId:
    """Parse a binary CID (v1, or a v0 bare sha2-256 multihash). Raises :class:`InvalidCid`."""
    if len(raw) == 34 and raw[0] == SHA2_256 and raw[1] == 32:
        return ContentId(DAG_PB, bytes(raw[2:]), 0)
    try:
        version, pos = decode_varint(raw)
        if version != 1:
            raise InvalidCid(f"unsupported CID version {version}")
        codec, pos = decode_varint(raw, pos)
        hash_code, pos = decode_varint(raw, pos)
        length, pos = decode_varint(raw, pos)
    except ValueError as exc:
        raise InvalidCid(f"malformed binary CID ({exc})") from exc
    if hash_code != SHA2_256:
        raise InvalidCid(f"unsupported multihash 0x{hash_code:x}; dtnode accepts sha2-256 only")
    if length != 32 or len(raw) - pos != 32:
        raise InvalidCid("sha2-256 multihash must carry exactly 32 digest bytes")
    return ContentId(codec, bytes(raw[pos:]), 1)


def parse_cid(value: str | bytes | ContentId) -> ContentId:
    """Parse a CID from text (base32 ``b...`` or CIDv0 ``Qm...``), binary, or pass a ContentId through."""
    if isinstance(value, ContentId):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return cid_from_bytes(bytes(value))
    if not isinstance(value, str) or not value:
        raise InvalidCid(f"expected a CID string, got {value!r}")
    text = value.strip()
    if text.startswith("Qm") and len(text) == 46:
        return cid_from_bytes(_b58decode(text))
    if text[0] not in "bB":
        raise InvalidCid(f"{text[:20]!r}...: only base32 CIDv1 ('b...') or CIDv0 ('Qm...') are accepted")
    body = text[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError as exc:
        raise InvalidCid(f"{text[:20]!r}...: not valid base32 ({exc})") from exc
    return cid_from_bytes(raw)


def validate_cid(value: str) -> Cid:
    """Return the canonical text of ``value`` or raise :class:`InvalidCid`."""
    return cid_to_str(parse_cid(value))


def cid_str_to_bytes(value: str) -> bytes:
    """Binary CIDv1 for storing on-chain; :func:`cid_bytes_to_str` reverses it."""
    return parse_cid(value).to_v1().to_bytes()


def cid_bytes_to_str(raw: bytes) -> Cid:
    return cid_to_str(cid_from_bytes(raw))
