from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.canonical import canonical_json
from protocols.messages import (
    BadSchema,
    BadSignature,
    FutureMessage,
    Presence,
    StaleMessage,
    WireMessage,
    WrongType,
    decode,
    encode,
    register_message,
)
from protocols.p2p.identity import NodeIdentity
from protocols.p2p.testing import Note
from protocols.schema import Int
from protocols.topics import PRESENCE_TOPIC
from protocols.types import RejectCode

ALICE = NodeIdentity.generate()
NOW = 1_800_000_000.0


def _tamper(data: bytes, **changes: object) -> bytes:
    obj = json.loads(data)
    for key, value in changes.items():
        if key.startswith("payload."):
            obj["payload"][key.split(".", 1)[1]] = value
        else:
            obj[key] = value
    return canonical_json(obj)


def presence(**kw: object) -> Presence:
    fields: dict[str, object] = dict(peer_id=ALICE.peer_id.to_base58(), addrs=("/ip4/127.0.0.1/tcp/4001",),
                                     eth_address=ALICE.eth_address, roles=("trainer", "validator"), node_class="M",
                                     jobs=(1, 2), version="0.1.0")
    fields.update(kw)
    return Presence(**fields)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(jobs=st.lists(st.integers(0, 2**63), max_size=64), rnd=st.integers(0, 10**6), cls=st.sampled_from("SML"))
def test_encode_decode_is_identity(jobs: list[int], rnd: int, cls: str) -> None:
    for msg in (presence(jobs=tuple(jobs), node_class=cls), Note(round=rnd, text=str(jobs)[:500])):
        assert decode(encode(msg, ALICE, now=NOW), now=NOW, max_skew=5) == (msg, ALICE.eth_address)


def test_tampered_payload_fails_signature() -> None:
    data = encode(presence(), ALICE, now=NOW)
    with pytest.raises(BadSignature) as info:
        decode(_tamper(data, **{"payload.jobs": [9]}), now=NOW, max_skew=5)
    assert info.value.reason is RejectCode.BAD_SIGNATURE
    with pytest.raises(BadSignature):
        decode(_tamper(data, signer=NodeIdentity.generate().eth_address), now=NOW, max_skew=5)
    with pytest.raises(BadSignature):
        decode(_tamper(data, sig="0x" + "00" * 65), now=NOW, max_skew=5)


@pytest.mark.parametrize(
    "change",
    [
        {"payload.extra": 1},
        {"payload.jobs": "1"},
        {"payload.jobs": [True]},
        {"payload.jobs": [-1]},
        {"payload.jobs": list(range(65))},
        {"payload.node_class": "XL"},
        {"payload.eth_address": "0x1234"},
        {"payload.roles": ["king"]},
        {"payload.version": "v" * 513},
        {"payload.schema": 2},
        {"v": 2},
        {"ts": "now"},
    ],
)
def test_bad_schema_is_rejected(change: dict[str, object]) -> None:
    # Re-sign after the change, so only the schema (not the signature) is wrong.
    obj = json.loads(encode(presence(), ALICE, now=NOW))
    for key, value in change.items():
        if key.startswith("payload."):
            obj["payload"][key.split(".", 1)[1]] = value
        else:
            obj[key] = value
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    obj["sig"] = "0x" + ALICE.sign(canonical_json(unsigned)).hex()
    with pytest.raises(BadSchema) as info:
        decode(canonical_json(obj), now=NOW, max_skew=5)
    assert info.value.reason is RejectCode.BAD_SCHEMA


@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe", b"[]", b"{}", b"x" * 70_000, b'{"v":1}'])
def test_garbage_is_bad_schema(garbage: bytes) -> None:
    with pytest.raises(BadSchema):
        decode(garbage, now=NOW, max_skew=5)


def test_timestamp_window() -> None:
    data = encode(presence(), ALICE, now=NOW)
    with pytest.raises(StaleMessage):
        decode(data, now=NOW + 31, max_skew=30)
    with pytest.raises(FutureMessage):
        decode(data, now=NOW - 31, max_skew=30)
    assert decode(data, now=NOW + 100, max_skew=30, max_age=120)[1] == ALICE.eth_address


def test_wrong_type() -> None:
    data = encode(Note(round=1), ALICE, now=NOW)
    with pytest.raises(WrongType):
        decode(data, now=NOW, max_skew=5, expected=(Presence,))
    obj = json.loads(data)
    obj["type"] = "no_such_type"
    with pytest.raises(WrongType):
        decode(canonical_json(obj), now=NOW, max_skew=5)


def test_register_new_message_type() -> None:
    @register_message
    @dataclass(frozen=True)
    class TestAck(WireMessage):
        TYPE: ClassVar[str] = "test_ack"
        job_id: Annotated[int, Int(1, 9)]
        ok: bool
        schema: int = 1

    msg = TestAck(job_id=4, ok=True)
    assert decode(encode(msg, ALICE, now=NOW), now=NOW, max_skew=5)[0] == msg
    with pytest.raises(BadSchema, match="test_ack.job_id"):  # the declared check applies, naming the field
        decode(encode(TestAck(job_id=10, ok=True), ALICE, now=NOW), now=NOW, max_skew=5)
    with pytest.raises(TypeError, match="needs a check"):
        @register_message
        @dataclass(frozen=True)
        class Untyped(WireMessage):
            TYPE: ClassVar[str] = "test_untyped"
            amount: float
            schema: int = 1
    with pytest.raises(ValueError, match="already registered"):
        @register_message
        @dataclass(frozen=True)
        class Clash(WireMessage):
            TYPE: ClassVar[str] = "test_ack"
            schema: int = 1


def test_topics() -> None:
    assert PRESENCE_TOPIC == "dtnode/presence/1"


def test_encode_uses_wall_clock_milliseconds() -> None:
    now = time.time()
    assert abs(json.loads(encode(presence(), ALICE, now=now))["ts"] - now * 1000) < 2
