"""Small helpers shared by the chain tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cid as py_cid
import multihash
from eth_account.signers.local import LocalAccount
from web3 import Web3

from protocols.chain.models import JobParams
from protocols.types import Cid

MIN_STAKE = 10**15
SLASH = 4 * 10**14
DEREG_DELAY = 3_600


@dataclass
class Chain:
    """One backend under test: its Web3 and the funded dev accounts."""

    name: str
    w3: Web3
    accounts: list[LocalAccount]


def cid_of(data: bytes, codec: str = "raw") -> Cid:
    """A real CIDv1 (base32) of ``data``, as IPFS would name it as a single raw block."""
    mh = multihash.encode(hashlib.sha256(data).digest(), "sha2-256")
    encoded = py_cid.make_cid(1, codec, mh).encode("base32")
    return Cid(encoded.decode() if isinstance(encoded, bytes) else str(encoded))


LEASE = 600
PARAMS = JobParams(
    spec_cid=cid_of(b"job spec"),
    rounds=2,
    tasks_per_round=3,
    local_steps=50,
    quorum=3,
    base_rate=10**12,
    bonus_rate=6 * 10**11,
    validator_fee=10**10,
    leader_fee=10**11,
    lease_seconds=LEASE,
)
