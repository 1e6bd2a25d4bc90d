"""Fixtures for P2P tests; the swarm factory itself lives in ``protocols.p2p.testing`` so other areas reuse it."""

from __future__ import annotations

from protocols.p2p.testing import Note

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


def note(round_: int = 0) -> Note:
    return Note(round=round_, text="hello")
