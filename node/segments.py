"""Segment states on demand: the trainer keeps its committed segment states on local disk and serves them over
``/dtnode/segment/1.0.0``; a validator fetches only the challenged ones, chunk by chunk, and checks each against
the hash the manifest commits to before decoding it.

Why not the content store: an update's segment states are n × 12 B/param (weights and two AdamW moments), and a
validator needs only the challenged few. Publishing all of them cost 124 B/param per update at K=100, S=10
(issue 14); now an update publishes its delta and its manifest, nothing else.

Why chunks: a 100M-parameter state is 1.2 GB, far over one reply's limit (``max_response_bytes``, 64 MiB) and one
request's deadline. Each reply carries at most :data:`SEGMENT_CHUNK_BYTES`; the fetcher appends them to a file
while hashing, and decodes the file only once the whole state's sha256 equals the commitment. Nothing is used
before that, and memory stays one chunk during the transfer and one state after it.

The spill directory (``<data dir>/segments/<job>/<round>/<sha256>.safetensors``) is bounded: keeping a round of a
job drops that job's earlier rounds (a ticket for round r exists only once round r − 1 is committed, so nobody
can challenge them any more), and the oldest rounds of other jobs go first when the byte budget is exceeded.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from node.training.codec import State, iter_state_bytes, read_state, write_state
from node.training.errors import InvalidDelta
from node.training.replay import CommittedState
from protocols.p2p.errors import P2PError, RemoteError
from protocols.topics import SEGMENT_PROTOCOL
from protocols.types import RejectCode
from protocols.wire import SegmentRequest

DEFAULT_SPILL_BYTES = 8 << 30
"""Disk the trainer may hold for segment states across all jobs when the node sets no budget (a 100M-parameter
state is 1.2 GB; :func:`node.limits.content_limits` sizes it per job)."""
SEGMENT_CHUNK_BYTES = 4 << 20
"""Most state bytes in one ``/dtnode/segment/1.0.0`` reply: far under ``max_response_bytes`` (64 MiB), and
transferred within one request deadline (20 s) down to ~0.2 MB/s."""
_SIZE_BYTES = 8
"""The reply's prefix: the state's total size, big-endian."""


class SegmentUnavailable(P2PError):
    """A challenged segment state was not served, or what was served does not match the committed hash.

    A P2P error, not a verdict: the validator retries until the contract's availability deadline
    (``content_deadline_s``), after which it votes the update invalid as ``CONTENT_UNAVAILABLE``: the one code for
    any content of an update that stays unavailable (manifest, delta or challenged segment), on the wire and in
    votes."""

    code = RejectCode.CONTENT_UNAVAILABLE


class SegmentSpill:
    """The trainer's committed segment states on disk, by job, round and hash."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_SPILL_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def reserve(self, nbytes: int) -> None:
        """Raise the byte budget to at least ``nbytes`` (a job's :attr:`node.limits.ContentLimits.spill_bytes`), so
        that a large model's states do not evict the other jobs' rounds that may still be challenged."""
        self.max_bytes = max(self.max_bytes, nbytes)

    def _round_dir(self, job_id: int, round_: int) -> Path:
        return self.root / str(job_id) / str(round_)

    def keep(self, job_id: int, round_: int, states: Sequence[State]) -> list[str]:
        """Write ``states`` (blocking: call in a worker thread) and return their hashes, in order.

        Drops this job's earlier rounds first, then the oldest rounds of other jobs while over the byte budget.
        """
        return [self.keep_state(job_id, round_, state) for state in states]

    def keep_state(self, job_id: int, round_: int, state: State) -> str:
        """Write one state of ``round_`` (streamed: no copy of it in memory) and return its hash; as :meth:`keep`.

        For a trainer that spills each segment as it is computed, so it never holds more than one."""
        job_dir = self.root / str(job_id)
        if job_dir.is_dir():
            for old in job_dir.iterdir():
                if old.name.isdigit() and int(old.name) < round_:
                    shutil.rmtree(old, ignore_errors=True)
        target = self._round_dir(job_id, round_)
        target.mkdir(parents=True, exist_ok=True)
        pending = target / f"pending-{threading.get_ident()}"
        _size, digest = write_state(state, pending)
        pending.replace(target / f"{digest}.safetensors")  # a reader never sees half a file
        self._enforce_budget(keep=target)
        return digest

    def _enforce_budget(self, *, keep: Path) -> None:
        rounds = sorted((p for p in self.root.glob("*/*") if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
        total = sum(f.stat().st_size for f in self.root.glob("*/*/*.safetensors"))
        while total > self.max_bytes and rounds:
            victim = rounds.pop(0)
            total -= sum(f.stat().st_size for f in victim.glob("*.safetensors"))
            shutil.rmtree(victim, ignore_errors=True)

    def path(self, job_id: int, round_: int, state_hash: str) -> Path:
        return self._round_dir(job_id, round_) / f"{state_hash}.safetensors"

    def read(self, job_id: int, round_: int, state_hash: str) -> bytes | None:
        """The bytes of a kept state, or None."""
        try:
            return self.path(job_id, round_, state_hash).read_bytes()
        except FileNotFoundError:
            return None

    def read_chunk(self, job_id: int, round_: int, state_hash: str, offset: int) -> tuple[int, bytes] | None:
        """(total size, at most :data:`SEGMENT_CHUNK_BYTES` from ``offset``) of a kept state, or None."""
        try:
            with open(self.path(job_id, round_, state_hash), "rb") as fh:
                fh.seek(0, 2)
                total = fh.tell()
                fh.seek(min(offset, total))
                return total, fh.read(SEGMENT_CHUNK_BYTES)
        except FileNotFoundError:
            return None

    def release(self, job_id: int) -> None:
        """Forget every state of a finished job."""
        shutil.rmtree(self.root / str(job_id), ignore_errors=True)

    async def handle(self, request: bytes, peer: Any) -> bytes:
        """The ``/dtnode/segment/1.0.0`` handler: the requested state's size and one chunk of its bytes, or
        ``CONTENT_UNAVAILABLE``."""
        req = SegmentRequest.from_bytes(request)
        found = await trio.to_thread.run_sync(self.read_chunk, req.job_id, req.round, req.state_hash, req.offset)
        if found is None:
            raise RemoteError(RejectCode.CONTENT_UNAVAILABLE,
                              f"no state {req.state_hash[:12]}… of job {req.job_id} round {req.round} here")
        total, chunk = found
        return segment_reply(total, chunk)


def segment_reply(total: int, chunk: bytes) -> bytes:
    """One reply of ``/dtnode/segment/1.0.0``: the state's total size, then the chunk."""
    return total.to_bytes(_SIZE_BYTES, "big") + chunk


Requester = Callable[[Any, Any, bytes], Awaitable[bytes]]
"""``NodeContext.request``: (peer, protocol, payload) → response bytes, under the node's request deadline."""


async def fetch_segment(
    request: Requester, peer: Any, *, job_id: int, round_: int, index: int, state_hash: str, max_bytes: int,
    workdir: Path,
) -> CommittedState:
    """Ask ``peer`` (the trainer) for the committed state ``state_hash``, chunk by chunk into a file under
    ``workdir``; return it decoded once the whole file's sha256 matches, with that digest. The file is removed either
    way.

    The bytes are hashed once, as they arrive; decoding then requires them to be the canonical encoding of the
    tensors (:func:`~node.training.codec.iter_state_bytes`: the header is what the tensors give, and the data tile
    the file), so the digest kept in the :class:`~node.training.replay.CommittedState` is the tensors'
    :func:`~node.training.codec.state_hash` and replay need not hash them again.

    Raises :class:`SegmentUnavailable` when the trainer is unknown, refuses, announces more than ``max_bytes``,
    sends a chunk that does not fit what it announced, or serves other bytes; other P2P errors (timeouts,
    unreachable peers) propagate as they are. Each chunk is one request under the node's request deadline. The
    caller turns "still unavailable at the contract's deadline" into a rejection. Bytes that match the commitment
    but are not a canonical state raise :class:`~node.training.errors.InvalidDelta` (a verdict: the commitment
    itself is garbage).
    """
    if peer is None:
        raise SegmentUnavailable(f"segment {index} of job {job_id} round {round_}: the trainer's peer is not known")
    what = f"segment {index} of job {job_id} round {round_}"
    workdir.mkdir(parents=True, exist_ok=True)
    # A name of its own per fetch: the same state can be fetched twice at once (every trainer of a round starts
    # from the same base state, and a validator checks a round's updates concurrently).
    path = trio.Path(workdir / f"{state_hash}.{job_id}.{round_}.{secrets.token_hex(8)}.part")
    digest = hashlib.sha256()
    try:
        async with await path.open("wb") as sink:
            offset, total = 0, None
            while total is None or offset < total:
                body = SegmentRequest(job_id=job_id, round=round_, index=index, state_hash=state_hash,
                                      offset=offset).to_bytes()
                try:
                    reply = await request(peer, SEGMENT_PROTOCOL, body)
                except RemoteError as exc:
                    raise SegmentUnavailable(f"{what}: {exc.detail}") from exc
                announced = int.from_bytes(reply[:_SIZE_BYTES], "big")
                chunk = reply[_SIZE_BYTES:]
                if len(reply) < _SIZE_BYTES or (total is not None and announced != total):
                    raise SegmentUnavailable(f"{what}: malformed reply (size prefix missing or changed)")
                if announced > max_bytes:
                    raise SegmentUnavailable(f"{what}: {announced} bytes exceeds the job's limit of {max_bytes}")
                total = announced
                if len(chunk) != min(SEGMENT_CHUNK_BYTES, total - offset):
                    raise SegmentUnavailable(f"{what}: a chunk of {len(chunk)} bytes at offset {offset} of {total}")
                digest.update(chunk)
                await sink.write(chunk)
                offset += len(chunk)
        if digest.hexdigest() != state_hash:
            raise SegmentUnavailable(f"{what}: served bytes do not match the committed hash")
        # Hash-matching but undecodable means the commitment itself is garbage: InvalidDelta propagates (a verdict).
        tensors = await trio.to_thread.run_sync(lambda: read_canonical_state(Path(path), max_bytes=max_bytes))
        return CommittedState(tensors, state_hash)
    finally:
        await path.unlink(missing_ok=True)


def read_canonical_state(path: Path, *, max_bytes: int) -> State:
    """:func:`~node.training.codec.read_state` of ``path``, which must hold exactly the canonical bytes of the
    tensors it decodes to (so that the file's sha256 is their ``state_hash``). Blocking: call in a worker thread.

    ``read_state`` already requires the tensors' data to tile the file in header order; the header is then the only
    freedom left (key order, spacing, JSON spelling), and it is compared with the one the tensors give."""
    tensors = read_state(path, max_bytes=max_bytes)
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = n.to_bytes(8, "little") + fh.read(n)
    if next(iter(iter_state_bytes(tensors))) != header:
        raise InvalidDelta(f"state file {path.name}: not the canonical encoding of its tensors (header differs)")
    return tensors
