"""Segment states on demand: the trainer keeps its committed segment states on local disk and serves them over
``/dtnode/segment/1.0.0``; a validator fetches only the challenged ones and checks each against the hash the
manifest commits to.

Why not the content store: an update's segment states are n × 12 B/param (weights and two AdamW moments), and a
validator needs only the challenged few. Publishing all of them cost 124 B/param per update at K=100, S=10
(issue 14); now an update publishes its delta and its manifest, nothing else.

The spill directory (``<data dir>/segments/<job>/<round>/<sha256>.safetensors``) is bounded: keeping a round of a
job drops that job's earlier rounds (a ticket for round r exists only once round r − 1 is committed, so nobody
can challenge them any more), and the oldest rounds of other jobs go first when the byte budget is exceeded.
This module never trusts a served state: :func:`fetch_segment` re-hashes it before it is decoded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from node.training.codec import State, decode_state, encode_state
from protocols.p2p.errors import P2PError, RemoteError
from protocols.topics import SEGMENT_PROTOCOL
from protocols.types import RejectCode
from protocols.wire import SegmentRequest

DEFAULT_SPILL_BYTES = 8 << 30
"""Disk the trainer may hold for segment states across all jobs (a 100M-parameter state is 1.2 GB)."""


class SegmentUnavailable(P2PError):
    """A challenged segment state was not served, or what was served does not match the committed hash.

    A P2P error, not a verdict: the validator retries until the contract's availability deadline, after which it
    votes ``SEGMENT_UNAVAILABLE`` (invalid)."""

    code = RejectCode.SEGMENT_UNAVAILABLE


class SegmentSpill:
    """The trainer's committed segment states on disk, by job, round and hash."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_SPILL_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def _round_dir(self, job_id: int, round_: int) -> Path:
        return self.root / str(job_id) / str(round_)

    def keep(self, job_id: int, round_: int, states: Sequence[State]) -> list[str]:
        """Write ``states`` (blocking: call in a worker thread) and return their hashes, in order.

        Drops this job's earlier rounds first, then the oldest rounds of other jobs while over the byte budget.
        """
        job_dir = self.root / str(job_id)
        if job_dir.is_dir():
            for old in job_dir.iterdir():
                if old.name.isdigit() and int(old.name) < round_:
                    shutil.rmtree(old, ignore_errors=True)
        target = self._round_dir(job_id, round_)
        target.mkdir(parents=True, exist_ok=True)
        hashes: list[str] = []
        for state in states:
            data = encode_state(state)
            digest = hashlib.sha256(data).hexdigest()
            tmp = target / f"{digest}.part"
            tmp.write_bytes(data)
            os.replace(tmp, target / f"{digest}.safetensors")  # a reader never sees half a file
            hashes.append(digest)
            del data
        self._enforce_budget(keep=target)
        return hashes

    def _enforce_budget(self, *, keep: Path) -> None:
        rounds = sorted((p for p in self.root.glob("*/*") if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
        total = sum(f.stat().st_size for f in self.root.glob("*/*/*.safetensors"))
        while total > self.max_bytes and rounds:
            victim = rounds.pop(0)
            total -= sum(f.stat().st_size for f in victim.glob("*.safetensors"))
            shutil.rmtree(victim, ignore_errors=True)

    def read(self, job_id: int, round_: int, state_hash: str) -> bytes | None:
        """The bytes of a kept state, or None."""
        path = self._round_dir(job_id, round_) / f"{state_hash}.safetensors"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def release(self, job_id: int) -> None:
        """Forget every state of a finished job."""
        shutil.rmtree(self.root / str(job_id), ignore_errors=True)

    async def handle(self, request: bytes, peer: Any) -> bytes:
        """The ``/dtnode/segment/1.0.0`` handler: the requested state's bytes, or ``SEGMENT_UNAVAILABLE``."""
        req = SegmentRequest.from_bytes(request)
        data = await trio.to_thread.run_sync(self.read, req.job_id, req.round, req.state_hash)
        if data is None:
            raise RemoteError(RejectCode.SEGMENT_UNAVAILABLE,
                              f"no state {req.state_hash[:12]}… of job {req.job_id} round {req.round} here")
        return data


Requester = Callable[[Any, Any, bytes], Awaitable[bytes]]
"""``NodeContext.request``: (peer, protocol, payload) → response bytes, under the node's request deadline."""


async def fetch_segment(
    request: Requester, peer: Any, *, job_id: int, round_: int, index: int, state_hash: str, max_bytes: int,
) -> State:
    """Ask ``peer`` (the trainer) for the committed state ``state_hash``; return it decoded once its sha256 matches.

    Raises :class:`SegmentUnavailable` when the trainer is unknown, refuses, or serves other bytes; other P2P
    errors (timeouts, unreachable peers) propagate as they are. The caller turns "still unavailable at the
    contract's deadline" into a rejection.
    """
    if peer is None:
        raise SegmentUnavailable(f"segment {index} of job {job_id} round {round_}: the trainer's peer is not known")
    body = SegmentRequest(job_id=job_id, round=round_, index=index, state_hash=state_hash).to_bytes()
    try:
        data = await request(peer, SEGMENT_PROTOCOL, body)
    except RemoteError as exc:
        raise SegmentUnavailable(f"segment {index} of job {job_id} round {round_}: {exc.detail}") from exc
    if len(data) > max_bytes:
        raise SegmentUnavailable(f"segment {index}: {len(data)} bytes exceeds the job's limit of {max_bytes}")
    if hashlib.sha256(data).hexdigest() != state_hash:
        raise SegmentUnavailable(f"segment {index} of job {job_id} round {round_}: served bytes do not match the "
                                 "committed hash")
    # Hash-matching but undecodable means the commitment itself is garbage: InvalidDelta propagates (a verdict).
    return await trio.to_thread.run_sync(lambda: decode_state(data, max_bytes=max_bytes))
