"""The hand-framed bitswap block message parses as the protobuf one, and is byte for byte the same for non-empty
blocks (Kubo and Helia parse it as a protobuf ``Message``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from libp2p.bitswap.pb.bitswap_pb2 import Message

from storage.bitswap_wire import encode_blocks_message
from storage.cid import decode_varint, encode_varint

_blocks = st.lists(st.tuples(st.one_of(st.none(), st.binary(min_size=1, max_size=8)), st.binary(max_size=300)),
                   max_size=6)


@given(_blocks.filter(lambda bs: len({p is None for p, _ in bs}) <= 1))  # one protocol version per message
def test_encoded_blocks_message_equals_the_protobuf_serialization(blocks: list[tuple[bytes | None, bytes]]) -> None:
    msg = Message()
    for prefix, data in blocks:
        if prefix is None:
            msg.blocks.append(data)
        else:
            block = msg.payload.add()
            block.prefix = prefix
            block.data = data
    body = msg.SerializeToString()
    frame = encode_blocks_message(blocks)
    if all(data for _prefix, data in blocks):  # protobuf leaves an empty bytes field out; we write it (same parse)
        assert frame == encode_varint(len(body)) + body
    length, start = decode_varint(frame)
    parsed = Message()
    parsed.ParseFromString(frame[start : start + length])
    assert parsed == msg
