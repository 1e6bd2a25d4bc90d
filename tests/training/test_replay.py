from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import pytest
import torch

from node.training.codec import State, decode_delta, encode_delta, state_hash
from node.training.data import ArraySet, make_shards
from node.training.errors import ReplayMismatch
from node.training.local import LocalResult, train_local
from node.training.models import initial_state
from node.training.replay import (
    BAD_SEGMENT_COUNT,
    BAD_SEGMENT_STATE,
    DELTA_MISMATCH,
    LOSS_MISMATCH,
    REPLAY_MISMATCH,
    Verdict,
    choose_segments,
    replay_verify,
)
from node.training.task import Task

MLP = "fmnist-mlp-v1"
TASK = Task(model_name=MLP, steps=30, batch_size=32, lr=1e-3, seed=11, segment_every=10)
TASK_FIELDS = {f.name for f in fields(Task)}


@dataclass(frozen=True)
class Setup:
    base: State
    shard: ArraySet
    other_shard: ArraySet
    honest: LocalResult


@pytest.fixture(scope="module")
def setup(small_train: ArraySet) -> Setup:
    shard, other = make_shards(small_train.subset(slice(0, 2000)), 2, seed=0)
    base = initial_state(MLP, 3)
    return Setup(base, shard, other, train_local(TASK, base, shard))


def verify(s: Setup, result: LocalResult, *, hashes: list[str] | None = None,
           states: list[State] | None = None, segments: list[int] | None = None, **claims: Any) -> Verdict:
    states = result.segment_states if states is None else states
    kwargs: dict[str, Any] = dict(
        claimed_segment_hashes=result.segment_hashes if hashes is None else hashes,
        segment_states_fetch=lambda i: states[i],
        claimed_delta=result.delta,
        claimed_loss_before=result.loss_before,
        claimed_loss_after=result.loss_after,
        segments_to_check=[0, 1, 2] if segments is None else segments,
    )
    kwargs.update(claims)
    task = replace(TASK, **{k: kwargs.pop(k) for k in list(kwargs) if k in TASK_FIELDS})
    return replay_verify(task, s.base, kwargs.pop("shard", s.shard), **kwargs)


def test_honest_task_is_accepted_bitwise(setup: Setup) -> None:
    verdict = verify(setup, setup.honest)
    assert verdict.ok, verdict
    assert verdict.max_distance == 0.0 and verdict.checked_segments == (0, 1, 2)
    verdict.raise_if_rejected()


def test_honest_int8_delta_is_accepted(setup: Setup) -> None:
    claimed = decode_delta(encode_delta(setup.honest.delta, kind="int8"), like=setup.base)
    assert verify(setup, setup.honest, claimed_delta=claimed, delta_kind="int8", segments=[1]).ok
    # ...but the f32 delta claimed as int8 (or vice versa) is not what the encoder gives
    assert verify(setup, setup.honest, claimed_delta=claimed, segments=[1]).reason == DELTA_MISMATCH


def test_random_delta_is_rejected(setup: Setup) -> None:
    gen = torch.Generator().manual_seed(0)
    fake = {k: torch.randn(v.shape, generator=gen) * 0.01 for k, v in setup.base.items()}
    verdict = verify(setup, setup.honest, claimed_delta=fake)
    assert not verdict.ok and verdict.reason == DELTA_MISMATCH
    with pytest.raises(ReplayMismatch, match=DELTA_MISMATCH):
        verdict.raise_if_rejected()


def test_scaled_delta_is_rejected(setup: Setup) -> None:
    scaled = {k: v * 2 for k, v in setup.honest.delta.items()}
    assert verify(setup, setup.honest, claimed_delta=scaled).reason == DELTA_MISMATCH


def test_lying_losses_are_rejected(setup: Setup) -> None:
    assert verify(setup, setup.honest, claimed_loss_after=setup.honest.loss_after - 0.05).reason == LOSS_MISMATCH
    assert verify(setup, setup.honest, claimed_loss_before=setup.honest.loss_before + 0.05).reason == LOSS_MISMATCH


def test_skipped_steps_are_rejected(setup: Setup) -> None:
    short = train_local(replace(TASK, steps=20), setup.base, setup.shard)
    assert verify(setup, short).reason == BAD_SEGMENT_COUNT
    # Padding the skipped segment with a copy of the previous state: the replay of that segment catches it.
    padded = short.segment_states + [short.segment_states[-1]]
    hashes = short.segment_hashes + [short.segment_hashes[-1]]
    verdict = verify(setup, short, hashes=hashes, states=padded, segments=[2])
    assert verdict.reason == REPLAY_MISMATCH and verdict.max_distance > 1e-4


def test_wrong_shard_is_rejected(setup: Setup) -> None:
    wrong = train_local(TASK, setup.base, setup.other_shard)
    for seg in ([0], [2]):
        verdict = verify(setup, wrong, segments=seg)
        assert not verdict.ok and verdict.reason in (REPLAY_MISMATCH, LOSS_MISMATCH)
    # With honest loss claims recomputed on the right shard, the replay itself must still catch it.
    assert verify(setup, wrong, segments=[1], loss_tolerance=10.0).reason == REPLAY_MISMATCH


def test_wrong_seed_is_rejected(setup: Setup) -> None:
    wrong = train_local(replace(TASK, seed=12), setup.base, setup.shard)
    verdict = verify(setup, wrong, segments=[1])
    assert verdict.reason == REPLAY_MISMATCH and verdict.checked_segments == (1,)


def test_copy_of_another_trainers_work_is_rejected(setup: Setup) -> None:
    # Trainer B's ticket names the other shard and another seed; it submits A's (honest) work as its own.
    other_task: dict[str, Any] = {"shard": setup.other_shard, "seed": 99}
    verdict = verify(setup, setup.honest, segments=[2], loss_tolerance=10.0, **other_task)
    assert verdict.reason == REPLAY_MISMATCH
    assert not verify(setup, setup.honest, segments=[0], **other_task).ok


def test_states_not_matching_their_hashes_are_rejected(setup: Setup) -> None:
    states = list(setup.honest.segment_states)
    states[1] = {k: v + 1e-3 if k.startswith("model/") else v for k, v in states[1].items()}
    assert verify(setup, setup.honest, states=states, segments=[2]).reason == BAD_SEGMENT_STATE


def _perturbed(s: Setup, eps: float) -> tuple[LocalResult, list[str]]:
    """The honest run as a slightly different CPU would publish it: the last state off by ``eps``."""
    states = list(s.honest.segment_states)
    states[-1] = {k: v + eps if k.startswith("model/") else v for k, v in states[-1].items()}
    final = {k[len("model/"):]: v for k, v in states[-1].items() if k.startswith("model/")}
    delta = {k: final[k] - s.base[k] for k in s.base}
    hashes = s.honest.segment_hashes[:-1] + [state_hash(states[-1])]
    result = LocalResult(delta, final, s.honest.loss_before, s.honest.loss_after, hashes, states)
    return result, hashes


def test_tolerance_accepts_tiny_hardware_differences_and_rejects_more(setup: Setup) -> None:
    close, _ = _perturbed(setup, 1e-6)
    verdict = verify(setup, close, segments=[2])
    assert verdict.ok and 0 < verdict.max_distance <= 2e-6
    far, _ = _perturbed(setup, 1e-3)
    verdict = verify(setup, far, segments=[2], loss_tolerance=1.0)
    assert verdict.reason == REPLAY_MISMATCH and verdict.max_distance > 5e-4


def test_honest_cnn_segment_replays_bitwise(small_train: ArraySet) -> None:
    base = initial_state("fmnist-cnn-v1", 0)
    shard = small_train.subset(slice(0, 500))
    task = Task(model_name="fmnist-cnn-v1", steps=12, batch_size=16, lr=1e-3, seed=1, segment_every=10)
    result = train_local(task, base, shard)
    verdict = replay_verify(
        task, base, shard,
        claimed_segment_hashes=result.segment_hashes, segment_states_fetch=lambda i: result.segment_states[i],
        claimed_delta=result.delta, claimed_loss_before=result.loss_before, claimed_loss_after=result.loss_after,
        segments_to_check=[1],
    )
    assert verdict.ok and verdict.max_distance == 0.0


def test_choose_segments() -> None:
    picks = choose_segments(b"block-hash", 20, 3)
    assert picks == choose_segments(b"block-hash", 20, 3)
    assert len(set(picks)) == 3 and picks == sorted(picks) and all(0 <= i < 20 for i in picks)
    assert choose_segments(b"x", 4, 10) == [0, 1, 2, 3]
    assert choose_segments(b"x", 0, 3) == []
    seen = {tuple(choose_segments(i.to_bytes(4, "big"), 10, 2)) for i in range(200)}
    assert len(seen) > 30  # spread over many pairs, not a fixed few
