"""Gossip topic names and stream protocol ids. Versioned: a breaking change gets a new id, never a reused one."""

from __future__ import annotations

from libp2p.custom_types import TProtocol

PRESENCE_TOPIC = "dtnode/presence/1"
"""Network-wide: every node announces its peer id, addresses, account, roles, class and jobs here."""

_JOB_TOPIC_PREFIX = "dtnode/job/"
_JOB_TOPIC_VERSION = "/1"

TASK_PROTOCOL = TProtocol("/dtnode/task/1.0.0")
"""Trainer → leader: task request; answer: a signed task ticket."""

PEERS_PROTOCOL = TProtocol("/dtnode/peers/1.0.0")
"""Peer exchange: a newcomer asks its bootstrap for the signed presence envelopes of the peers it knows."""

PING_PROTOCOL = TProtocol("/dtnode/ping/1.0.0")
"""Liveness and round-trip checks between dtnodes; answers the request bytes back."""


def job_topic(job_id: int) -> str:
    """The gossip topic of one job: round announcements, update notices, leader heartbeats."""
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 0:
        raise ValueError(f"job id must be a non-negative integer, got {job_id!r}")
    return f"{_JOB_TOPIC_PREFIX}{job_id}{_JOB_TOPIC_VERSION}"


def job_of_topic(topic: str) -> int | None:
    """The job id a job topic names, or ``None`` for any other topic."""
    if not (topic.startswith(_JOB_TOPIC_PREFIX) and topic.endswith(_JOB_TOPIC_VERSION)):
        return None
    middle = topic[len(_JOB_TOPIC_PREFIX) : -len(_JOB_TOPIC_VERSION)]
    if not middle.isdigit() or (len(middle) > 1 and middle[0] == "0"):
        return None
    return int(middle)
