"""One schema validator for everything that arrives from outside: job specs and manifests (``protocols.specs``),
stream bodies (``protocols.wire``) and gossip payloads (``protocols.messages``).

A schema is a frozen dataclass whose fields carry their check in ``Annotated`` metadata::

    @dataclass(frozen=True, kw_only=True)
    class TaskRequest(Record):
        schema: Annotated[str, Const("dtnode/task-request/1")] = "dtnode/task-request/1"
        job_id: Annotated[int, Int(1, 2**64)]

and :func:`decode_fields` turns a parsed JSON object into the keyword arguments of that class: exactly the declared
keys (unknown or missing ones are errors), each value checked and converted, every error a :class:`SchemaError`
naming the field. A field without metadata gets the default check of its type (``int``, ``str``, ``bool``,
``tuple[str, ...]``, ``tuple[int, ...]``). :class:`Record` adds ``to_bytes``/``from_bytes`` in canonical JSON
(:mod:`protocols.canonical`: sorted keys, no floats), the bytes that get hashed or signed; gossip payloads go inside
the signed envelope of :mod:`protocols.messages` instead.

Why not pydantic (pinned in requirements.lock), measured here (2 shared cores, best of 5 × 5,000, 2026-12): a
strict pydantic 2 model of the same schema decodes a TaskTicket in ~12-20 µs against ~37-50 µs here, and an
UpdateManifest with 10 segments in ~21-28 µs against ~130-150 µs. Both are small next to what follows every decode
(the ticket's signature check alone takes ~0.4-1.1 ms, a replay seconds), while pydantic would bring a second way to
declare a record (BaseModel beside the dataclasses of the whole tree), custom validators for our decimal strings and
enum names, and its own error texts to translate back into field-naming ``SchemaError``s; the canonical bytes would
stay ours either way. Should decoding ever show in a profile, the switch is local to this module's callers.
"""

from __future__ import annotations

import enum
import functools
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Protocol, Self

from protocols.canonical import canonical_json, parse_json_object
from protocols.errors import SchemaError

MAX_ITEMS = 64
"""Default list length of a field without its own limit (gossip payloads)."""
MAX_STRING = 512
"""Default string length of a field without its own limit (gossip payloads)."""


class Check(Protocol):
    """Validates one field's JSON value and returns what the dataclass holds; raises :class:`SchemaError`."""

    def __call__(self, name: str, value: Any) -> Any: ...


def _fail(name: str, problem: str) -> SchemaError:
    return SchemaError(f"field {name!r}: {problem}")


@dataclass(frozen=True)
class Int:
    """An integer (never a bool) in ``[lo, hi]``."""

    lo: int = -(2**255)
    hi: int = 2**256 - 1

    def __call__(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(name, f"expected an integer, got {type(value).__name__}")
        if not self.lo <= value <= self.hi:
            raise _fail(name, f"{value} is outside [{self.lo}, {self.hi}]")
        return value


@dataclass(frozen=True)
class Bool:
    def __call__(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _fail(name, "expected a boolean")
        return value


@dataclass(frozen=True)
class Str:
    """A string of at most ``max_len`` characters."""

    max_len: int = 200

    def __call__(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > self.max_len:
            raise _fail(name, f"expected a string of at most {self.max_len} characters")
        return value


@dataclass(frozen=True)
class Const:
    """Exactly ``value``: a schema id (a peer speaking another version gets a message that says so)."""

    value: str

    def __call__(self, name: str, value: Any) -> str:
        if value != self.value:
            raise _fail(name, f"schema {value!r} is not {self.value!r}")
        return self.value


@dataclass(frozen=True)
class Choice:
    """One of a few strings."""

    choices: tuple[str, ...]

    def __call__(self, name: str, value: Any) -> str:
        if value not in self.choices:
            raise _fail(name, f"{value!r} is not one of {', '.join(self.choices)}")
        return str(value)


@dataclass(frozen=True)
class Pattern:
    """A string matching ``regex`` (compiled once); ``meaning`` says what it should be."""

    regex: str
    meaning: str
    _match: Callable[[str], re.Match[str] | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_match", re.compile(self.regex).fullmatch)

    def __call__(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not self._match(value):
            raise _fail(name, f"{value!r} is not {self.meaning}")
        return value


CID = Pattern(r"b[a-z2-7]{20,}|Qm[1-9A-HJ-NP-Za-km-z]{44}", "a CID (expected CIDv1 base32 'bafy...')")
ADDRESS = Pattern(r"0x[0-9a-fA-F]{40}", "a 0x Ethereum address")
SHA256_HEX = Pattern(r"[0-9a-f]{64}", "64 lowercase hex digits")


@dataclass(frozen=True)
class DecimalStr:
    """A real number as a decimal string in ``[lo, hi]`` (floats have no canonical text, so never a JSON float)."""

    lo: Decimal
    hi: Decimal

    def __call__(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _fail(name, f"expected a decimal string like \"0.001\", got {type(value).__name__}")
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise _fail(name, f"{value!r} is not a decimal number") from None
        if not number.is_finite() or not self.lo <= number <= self.hi:
            raise _fail(name, f"{value} is outside [{self.lo}, {self.hi}]")
        return value


@dataclass(frozen=True)
class EnumName:
    """An enum member, by name on the wire (``NodeClass.M`` is ``"M"``)."""

    enum: type[enum.Enum]

    def __call__(self, name: str, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.enum.__members__:
            raise _fail(name, f"{value!r} is not one of {', '.join(self.enum.__members__)}")
        return self.enum[value]


@dataclass(frozen=True)
class EnumValue:
    """An enum member, by value on the wire (a ``StrEnum`` code)."""

    enum: type[enum.Enum]

    def __call__(self, name: str, value: Any) -> Any:
        try:
            return self.enum(value)
        except ValueError:
            raise _fail(name, f"unknown value {value!r}") from None


@dataclass(frozen=True)
class ListOf:
    """A JSON list of ``min_items..max_items`` items, each checked by ``item``; a tuple or a list in Python."""

    item: Check
    max_items: int = MAX_ITEMS
    min_items: int = 0
    as_tuple: bool = True

    def __call__(self, name: str, value: Any) -> tuple[Any, ...] | list[Any]:
        if not isinstance(value, list) or not self.min_items <= len(value) <= self.max_items:
            raise _fail(name, f"expected a list of {self.min_items} to {self.max_items} items")
        check = self.item
        try:
            items = [check(name, v) for v in value]
        except SchemaError:
            for i, v in enumerate(value):  # again, to name the item (errors are rare; names cost on every item)
                check(f"{name}[{i}]", v)
            raise
        return tuple(items) if self.as_tuple else items


@dataclass(frozen=True)
class Nullable:
    """``null`` or a value that passes ``check``."""

    check: Check

    def __call__(self, name: str, value: Any) -> Any:
        return None if value is None else self.check(name, value)


@dataclass(frozen=True)
class Nested:
    """An object decoded by another schema's ``from_dict`` (which names its own fields in errors)."""

    from_dict: Callable[[dict[str, Any]], Any]

    def __call__(self, name: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise _fail(name, "expected an object")
        return self.from_dict(value)


_DEFAULTS: dict[Any, Check] = {
    int: Int(),
    bool: Bool(),
    str: Str(MAX_STRING),
    tuple[str, ...]: ListOf(Str(MAX_STRING)),
    tuple[int, ...]: ListOf(Int()),
}


@functools.cache
def field_checks(cls: type) -> Mapping[str, Check]:
    """The check of each field of the dataclass ``cls``: its ``Annotated`` metadata, else its type's default.

    Raises ``TypeError`` (at import time, where classes are declared) for a field that has neither.
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    hints = typing.get_type_hints(cls, include_extras=True)
    checks: dict[str, Check] = {}
    for f in fields(cls):
        hint = hints[f.name]
        found = [m for m in getattr(hint, "__metadata__", ()) if callable(m)]
        if found:
            checks[f.name] = found[0]
        elif hint in _DEFAULTS:
            checks[f.name] = _DEFAULTS[hint]
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: type {hint} needs a check in Annotated[...] metadata")
    return checks


def decode_fields(cls: type, data: Mapping[str, Any], *, what: str, prefix: str = "") -> dict[str, Any]:
    """The keyword arguments of ``cls`` from the JSON object ``data``: exactly its fields, each checked.

    ``what`` names the object in errors ("task ticket"); ``prefix`` is put before field names ("aggregation.").
    """
    checks = field_checks(cls)
    if data.keys() != checks.keys():
        missing = checks.keys() - data.keys()
        if missing:
            raise SchemaError(f"{what}: missing field(s) {', '.join(sorted(missing))}")
        unknown = data.keys() - checks.keys()
        raise SchemaError(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")
    return {name: check(prefix + name, data[name]) for name, check in checks.items()}


def _to_json(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, enum.StrEnum):
        return value.value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


class Record:
    """Base of a frozen dataclass that travels as one JSON object: a spec on IPFS or a stream body.

    ``to_bytes`` is canonical JSON of :meth:`to_dict` (string enums by value, other enums by name, tuples as
    lists, nested records as objects); ``from_bytes``/``from_dict`` validate with :func:`decode_fields`, then
    :meth:`_check` for rules across fields.
    """

    WHAT: ClassVar[str] = "object"
    """How errors name the object ("task ticket")."""
    PREFIX: ClassVar[str] = ""
    """Put before field names in errors ("aggregation.")."""
    MAX_BYTES: ClassVar[int] = 1 << 20
    OMIT_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset()
    """Fields added after the record's bytes were fixed: left out of the JSON while at their default, so every
    record that does not use them keeps its bytes (and CID). Present at the default, they are refused: one record,
    one byte form."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object whose canonical bytes are hashed, signed or sent."""
        return {
            f.name: _to_json(getattr(self, f.name))
            for f in fields(self)  # type: ignore[arg-type]
            if not (f.name in self.OMIT_AT_DEFAULT and getattr(self, f.name) == f.default)
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return cls.from_dict(parse_json_object(data, what=cls.WHAT, max_bytes=cls.MAX_BYTES))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Validate a parsed JSON object against the declared fields; raises :class:`SchemaError`."""
        if cls.OMIT_AT_DEFAULT:
            data = dict(data)
            for f in fields(cls):  # type: ignore[arg-type]
                if f.name not in cls.OMIT_AT_DEFAULT:
                    continue
                if f.name not in data:
                    data[f.name] = _to_json(f.default)
                elif data[f.name] == _to_json(f.default):
                    raise SchemaError(f"{cls.WHAT}: field {cls.PREFIX}{f.name!r} is at its default and must be left "
                                      "out (one record, one byte form)")
        obj = cls(**decode_fields(cls, data, what=cls.WHAT, prefix=cls.PREFIX))
        obj._check()
        return obj

    def _check(self) -> None:
        """Rules across fields, checked after each field passed its own."""
