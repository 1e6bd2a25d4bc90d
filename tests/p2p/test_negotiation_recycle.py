"""Which ``new_stream`` failures cost a connection: only a negotiation the peer left unanswered (the connection is
recycled, the next request dials again), never a protocol the peer does not speak."""

from __future__ import annotations

from libp2p.host.exceptions import StreamFailure
from libp2p.protocol_muxer.exceptions import MultiselectClientError

from protocols.p2p.reqresp import negotiation_timed_out


def failure(cause: BaseException) -> StreamFailure:
    try:
        raise StreamFailure("failed to open a stream to peer X") from cause
    except StreamFailure as exc:
        return exc


def test_only_an_unanswered_negotiation_recycles_the_connection() -> None:
    timed_out = MultiselectClientError("response timed out after 10s, protocols tried: ['/dtnode/segment/1.0.0']")
    assert negotiation_timed_out(failure(timed_out))
    unsupported = MultiselectClientError("protocols not supported: ['/dtnode/segment/1.0.0']")
    assert not negotiation_timed_out(failure(unsupported))
    assert not negotiation_timed_out(failure(ConnectionResetError("reset")))
    assert not negotiation_timed_out(ValueError("timed out"))  # the message alone is not enough
