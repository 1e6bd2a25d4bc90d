"""Fixtures for P2P tests; the swarm factory itself lives in ``protocols.p2p.testing`` so other areas reuse it."""

from __future__ import annotations

import time

import pytest

from protocols.messages import RoundAnnounce

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


def round_announce(job_id: int = 1, round_: int = 0) -> RoundAnnounce:
    return RoundAnnounce(job_id=job_id, round=round_, base_cid=CID, deadline=int(time.time()) + 600)


@pytest.fixture
def announce() -> RoundAnnounce:
    return round_announce()
