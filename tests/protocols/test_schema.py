"""The one schema helper: each check refuses what it must and names the field; records round-trip canonically."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

import pytest

from protocols.errors import SchemaError
from protocols.schema import (
    CID,
    Const,
    DecimalStr,
    EnumName,
    EnumValue,
    Int,
    ListOf,
    Nested,
    Nullable,
    Record,
    Str,
    decode_fields,
    field_checks,
)
from protocols.types import NodeClass, RejectCode

GOOD_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@dataclass(frozen=True, kw_only=True)
class Inner(Record):
    WHAT = "inner"
    PREFIX = "inner."
    n: Annotated[int, Int(0, 9)]


@dataclass(frozen=True, kw_only=True)
class Outer(Record):
    WHAT = "outer"
    schema: Annotated[str, Const("test/outer/1")] = "test/outer/1"
    cls: Annotated[NodeClass, EnumName(NodeClass)]
    code: Annotated[RejectCode | None, Nullable(EnumValue(RejectCode))] = None
    lr: Annotated[str, DecimalStr(Decimal(0), Decimal(1))] = "0.5"
    cids: Annotated[tuple[str, ...], ListOf(CID, max_items=3)] = ()
    inner: Annotated[Inner, Nested(Inner.from_dict)]
    tags: tuple[str, ...] = ()
    note: str = ""


def test_record_round_trip_is_canonical() -> None:
    obj = Outer(cls=NodeClass.L, code=RejectCode.EXPIRED, cids=(GOOD_CID,), inner=Inner(n=3), tags=("a",))
    data = obj.to_bytes()
    assert data.startswith(b'{"cids":["bafk') and b'"cls":"L"' in data and b'"code":"EXPIRED"' in data
    assert Outer.from_bytes(data) == obj
    assert Outer.from_bytes(data).to_bytes() == data


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"schema": "test/outer/2"}, "'schema'"),
        ({"cls": "XL"}, "'cls'"),
        ({"cls": 2}, "'cls'"),
        ({"code": "NOPE"}, "'code'"),
        ({"lr": 0.5}, "decimal string"),
        ({"lr": "2"}, "'lr'"),
        ({"lr": "NaN"}, "'lr'"),
        ({"cids": [GOOD_CID, "nope"]}, r"'cids\[1\]'"),
        ({"cids": [GOOD_CID] * 4}, "'cids'"),
        ({"inner": {"n": 10}}, "'inner.n'"),
        ({"inner": {"n": True}}, "'inner.n'"),
        ({"inner": []}, "'inner'"),
        ({"tags": [1]}, r"'tags\[0\]'"),
        ({"note": "x" * 513}, "'note'"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_each_check_refuses_and_names_the_field(change: dict[str, object], needle: str) -> None:
    good = Outer(cls=NodeClass.S, inner=Inner(n=1)).to_dict()
    with pytest.raises(SchemaError, match=needle):
        Outer.from_dict({**good, **change})
    missing = dict(good)
    del missing["inner"]
    with pytest.raises(SchemaError, match="missing field"):
        Outer.from_dict(missing)


def test_a_field_without_a_check_is_refused_at_declaration() -> None:
    @dataclass(frozen=True)
    class Vague:
        ratio: float

    with pytest.raises(TypeError, match="needs a check"):
        field_checks(Vague)
    with pytest.raises(TypeError, match="not a dataclass"):
        decode_fields(int, {}, what="x")
    assert Str(3)("s", "abc") == "abc"
