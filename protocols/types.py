"""Typed ids used across packages."""

from __future__ import annotations

from typing import NewType

JobId = NewType("JobId", int)
Round = NewType("Round", int)
Cid = NewType("Cid", str)
"""A CID in its canonical string form (CIDv1 base32, ``bafy...``)."""
Address = NewType("Address", str)
"""An EIP-55 checksummed Ethereum address."""
PeerIdStr = NewType("PeerIdStr", str)
"""A libp2p peer id in base58."""
