"""Gossip topic names and stream protocol ids. Versioned: a breaking change gets a new id, never a reused one."""

from __future__ import annotations

from libp2p.custom_types import TProtocol

PRESENCE_TOPIC = "dtnode/presence/1"
"""Network-wide: every node announces its peer id, addresses, account, roles, class and jobs here."""


def job_topic(job_id: int) -> str:
    """Per job: first-panel validators publish their signed votes (``SignedVote``) here; the leader (or a trainer
    whose update waits) posts a whole panel's with ``settleUpdates``. Jobs and rounds are read from the chain."""
    return f"dtnode/job/{job_id}/votes/1"

TASK_PROTOCOL = TProtocol("/dtnode/task/1.0.0")
"""Trainer → leader: task request; answer: a signed task ticket."""

PEERS_PROTOCOL = TProtocol("/dtnode/peers/1.0.0")
"""Peer exchange: a newcomer asks its bootstrap for the signed presence envelopes of the peers it knows."""

PING_PROTOCOL = TProtocol("/dtnode/ping/1.0.0")
"""Liveness and round-trip checks between dtnodes; answers the request bytes back."""


SEGMENT_PROTOCOL = TProtocol("/dtnode/segment/1.0.0")
"""Validator → trainer: one committed segment state of an update (``protocols.wire.SegmentRequest``); answer: the
state's safetensors bytes, which the caller checks against the hash committed in the manifest. Segment states are
never published to the content store: they are served only when challenged."""
