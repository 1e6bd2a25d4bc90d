"""Segment states on demand (issue 14): kept on the trainer's disk, served chunk by chunk over /dtnode/segment/1.0.0
to real libp2p hosts on loopback, checked against the committed hash by the fetcher before it decodes them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import trio

from node.segments import (
    SEGMENT_CHUNK_BYTES,
    SegmentSpill,
    SegmentUnavailable,
    fetch_segment,
    read_canonical_state,
    segment_reply,
)
from node.training.codec import State, encode_state, state_hash
from node.training.errors import InvalidDelta
from node.training.replay import CommittedState
from protocols.p2p.testing import make_nodes
from protocols.topics import SEGMENT_PROTOCOL
from protocols.wire import SegmentRequest


def states(n: int, size: int = 1000) -> list[State]:
    gen = torch.Generator().manual_seed(n)
    return [{"model/w": torch.randn(size, generator=gen), "optim/w/step": torch.tensor(float(i + 1))}
            for i in range(n)]


def test_spill_keeps_by_hash_and_drops_committed_rounds(tmp_path: Path) -> None:
    spill = SegmentSpill(tmp_path)
    r0 = states(3)
    hashes = spill.keep(7, 0, r0)
    assert hashes == [state_hash(s) for s in r0]
    assert spill.read(7, 0, hashes[1]) == encode_state(r0[1])
    assert spill.read(7, 1, hashes[1]) is None
    spill.keep(7, 1, states(2))  # round 1's ticket means round 0 is committed: nobody can challenge it any more
    assert spill.read(7, 0, hashes[1]) is None
    spill.release(7)
    assert not (tmp_path / "7").exists()


def test_spill_stays_within_its_byte_budget(tmp_path: Path) -> None:
    one = len(encode_state(states(1)[0]))
    spill = SegmentSpill(tmp_path, max_bytes=3 * one)
    old = spill.keep(1, 0, states(2))
    new = spill.keep(2, 0, states(2))  # over budget: the other job's oldest round goes first
    assert spill.read(1, 0, old[0]) is None and spill.read(2, 0, new[0]) is not None
    assert sum(f.stat().st_size for f in tmp_path.rglob("*.safetensors")) <= 3 * one


async def test_served_on_request_and_checked_against_the_commitment(tmp_path: Path) -> None:
    kept = states(3)
    spill = SegmentSpill(tmp_path / "spill")
    work = tmp_path / "fetched"
    hashes = spill.keep(5, 2, kept)
    async with make_nodes(2, wait_discovery_s=60) as (trainer, validator):
        trainer.set_request_handler(SEGMENT_PROTOCOL, spill.handle)
        peer = trainer.peer_id.to_base58()
        got = await fetch_segment(validator.request, peer, job_id=5, round_=2, index=1, state_hash=hashes[1],
                                  max_bytes=1 << 20, workdir=work)
        assert state_hash(got.tensors) == got.sha256 == hashes[1]  # the digest kept is the tensors' hash
        with pytest.raises(SegmentUnavailable, match="no state"):
            await fetch_segment(validator.request, peer, job_id=5, round_=3, index=1, state_hash=hashes[1],
                                max_bytes=1 << 20, workdir=work)

        # A trainer that serves other bytes than it committed to is refused by the fetcher.
        async def liar(request: bytes, remote: object) -> bytes:
            return segment_reply(len(encode_state(kept[0])), encode_state(kept[0]))

        trainer.set_request_handler(SEGMENT_PROTOCOL, liar)
        with pytest.raises(SegmentUnavailable, match="do not match"):
            await fetch_segment(validator.request, peer, job_id=5, round_=2, index=1, state_hash=hashes[1],
                                max_bytes=1 << 20, workdir=work)
        with pytest.raises(SegmentUnavailable, match="not known"):
            await fetch_segment(validator.request, None, job_id=5, round_=2, index=1, state_hash=hashes[1],
                                max_bytes=1 << 20, workdir=work)
    assert not list(work.iterdir())  # nothing left behind, whatever the outcome
    assert hashlib.sha256(encode_state(kept[1])).hexdigest() == hashes[1]


async def test_a_state_larger_than_one_reply_arrives_in_chunks(tmp_path: Path) -> None:
    big = states(1, size=(2 * SEGMENT_CHUNK_BYTES) // 4 + 1000)[0]  # three chunks
    spill = SegmentSpill(tmp_path / "spill")
    work = tmp_path / "fetched"
    (digest,) = spill.keep(9, 0, [big])
    total = len(encode_state(big))
    seen: list[int] = []

    async def counting(request: bytes, remote: object) -> bytes:
        seen.append(SegmentRequest.from_bytes(request).offset)
        return await spill.handle(request, remote)

    async with make_nodes(2, wait_discovery_s=60) as (trainer, validator):
        trainer.set_request_handler(SEGMENT_PROTOCOL, counting)
        peer = trainer.peer_id.to_base58()
        got = await fetch_segment(validator.request, peer, job_id=9, round_=0, index=0, state_hash=digest,
                                  max_bytes=total, workdir=work)
        assert state_hash(got.tensors) == got.sha256 == digest
        assert seen == [0, SEGMENT_CHUNK_BYTES, 2 * SEGMENT_CHUNK_BYTES]
        with pytest.raises(SegmentUnavailable, match="exceeds the job's limit"):  # refused before any transfer
            await fetch_segment(validator.request, peer, job_id=9, round_=0, index=0, state_hash=digest,
                                max_bytes=total - 1, workdir=work)

        # A server that changes the announced size, or sends a chunk of the wrong length, is cut off.
        async def shifty(request: bytes, remote: object) -> bytes:
            req = SegmentRequest.from_bytes(request)
            reply = await spill.handle(request, remote)
            return segment_reply(total + req.offset, reply[8:])

        async def short(request: bytes, remote: object) -> bytes:
            return (await spill.handle(request, remote))[:-1]

        for server, match in ((shifty, "size prefix"), (short, "a chunk of")):
            trainer.set_request_handler(SEGMENT_PROTOCOL, server)
            with pytest.raises(SegmentUnavailable, match=match):
                await fetch_segment(validator.request, peer, job_id=9, round_=0, index=0, state_hash=digest,
                                    max_bytes=2 * total, workdir=work)
    assert not list(work.iterdir())


def test_reserve_raises_the_budget_so_other_jobs_rounds_survive(tmp_path: Path) -> None:
    one = len(encode_state(states(1)[0]))
    tight = SegmentSpill(tmp_path / "tight", max_bytes=2 * one)
    first = tight.keep(1, 0, states(2))
    tight.keep(2, 0, states(2))
    assert tight.read(1, 0, first[0]) is None  # over budget: job 1's round went
    roomy = SegmentSpill(tmp_path / "roomy", max_bytes=2 * one)
    roomy.reserve(4 * one)
    first = roomy.keep(1, 0, states(2))
    roomy.keep(2, 0, states(2))
    assert roomy.read(1, 0, first[0]) is not None
    roomy.reserve(one)  # never lowered
    assert roomy.max_bytes == 4 * one


def test_training_spills_each_state_as_it_is_computed(tmp_path: Path) -> None:
    # The trainer role's path: one state in memory at a time, the same commitments as training in memory.
    from node.training.data import load_fashion_mnist
    from node.training.local import train_local
    from node.training.models import initial_state
    from node.training.task import Task

    train, _ = load_fashion_mnist()
    task = Task(model_name="fmnist-mlp-v1", steps=6, batch_size=8, lr=1e-3, seed=3, segment_every=2)
    base, shard = initial_state("fmnist-mlp-v1", 0), train.subset(slice(0, 64))
    spill = SegmentSpill(tmp_path)
    spilled = train_local(task, base, shard, keep=lambda state: spill.keep_state(3, 1, state))
    in_memory = train_local(task, base, shard)
    assert spilled.segment_states == [] and len(in_memory.segment_states) == 3
    assert spilled.segment_hashes == in_memory.segment_hashes
    assert all(spill.read(3, 1, h) == encode_state(s) for h, s in zip(spilled.segment_hashes,
                                                                       in_memory.segment_states, strict=True))
    assert state_hash(spilled.delta) == state_hash(in_memory.delta)


async def test_one_state_fetched_twice_at_once_arrives_twice(tmp_path: Path) -> None:
    """Every trainer of a round starts from the same base state and a validator checks a round's updates
    concurrently, so the same state is fetched twice at once: each fetch writes a file of its own (the devnet
    failed with FileNotFoundError when both shared one and the first removed it while the second still wrote)."""
    big = states(1, size=(2 * SEGMENT_CHUNK_BYTES) // 4 + 1000)[0]  # three chunks per fetch
    spill = SegmentSpill(tmp_path / "spill")
    (digest,) = spill.keep(4, 1, [big])
    total = len(encode_state(big))
    got: list[CommittedState] = []
    served = 0

    async def last_chunk_late(request: bytes, remote: object) -> bytes:
        nonlocal served
        served += 1
        if served == 6:  # the last of the six chunks: the other fetch is done (and cleaned up) by then
            await trio.sleep(1.0)
        return await spill.handle(request, remote)

    async with make_nodes(2, wait_discovery_s=60) as (trainer, validator):
        trainer.set_request_handler(SEGMENT_PROTOCOL, last_chunk_late)
        peer = trainer.peer_id.to_base58()

        async def fetch() -> None:
            got.append(await fetch_segment(validator.request, peer, job_id=4, round_=1, index=0, state_hash=digest,
                                           max_bytes=total, workdir=tmp_path / "fetched"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            nursery.start_soon(fetch)
    assert [state_hash(s.tensors) for s in got] == [digest, digest]
    assert not list((tmp_path / "fetched").iterdir())


def test_a_fetched_state_must_be_the_canonical_encoding_of_its_tensors(tmp_path: Path) -> None:
    """The fetcher keeps the sha256 of the bytes it received as the state's hash, and replay trusts it instead of
    hashing the state again: so the bytes must be exactly what the tensors encode to. The same tensors behind
    another spelling of the header (a second commitment for one state) are refused."""
    state = states(1)[0]
    canonical = encode_state(state)
    (tmp_path / "ok").write_bytes(canonical)
    assert state_hash(read_canonical_state(tmp_path / "ok", max_bytes=1 << 20)) == hashlib.sha256(canonical).hexdigest()
    n = int.from_bytes(canonical[:8], "little")
    header = json.dumps(json.loads(canonical[8:8 + n]), indent=1).encode()
    header += b" " * (-len(header) % 8)
    (tmp_path / "spelt").write_bytes(len(header).to_bytes(8, "little") + header + canonical[8 + n:])
    with pytest.raises(InvalidDelta, match="canonical"):
        read_canonical_state(tmp_path / "spelt", max_bytes=1 << 20)
