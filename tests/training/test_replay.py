from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import pytest
import torch

from node.training.codec import State, decode_delta, encode_delta, state_hash, state_sub
from node.training.data import ArraySet, make_shards
from node.training.errors import ReplayMismatch, TrainingError
from node.training.local import (
    LocalResult,
    _make_optimizer,
    deterministic_torch,
    loss_to_micro,
    model_part,
    run_segment,
    task_loss,
    task_view,
    train_local,
)
from node.training.models import initial_state
from node.training.replay import (
    ADAM_BETAS,
    ADAM_MOMENT_BOUND,
    BAD_SEGMENT_COUNT,
    BAD_SEGMENT_STATE,
    DEFAULT_MAX_LOSS_RISE_PPM,
    DELTA_MISMATCH,
    LOSS_MISMATCH,
    LOSS_RISE,
    REPLAY_MISMATCH,
    CommittedState,
    Verdict,
    choose_segments,
    loss_rise_exceeds,
    replay_verify,
    state_distance,
    states_to_fetch,
    unreachable_because,
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


def recomputed_losses(task: Task, base: State, result: LocalResult, shard: ArraySet) -> dict[str, Any]:
    """The loss claims that pass the loss check on ``shard``, so that a test reaches the replay itself."""
    data = task_view(shard, task.sample_range)
    with deterministic_torch():
        return {"claimed_loss_before": task_loss(task, base, data),
                "claimed_loss_after": task_loss(task, result.final_state, data)}


def test_honest_task_is_accepted_bitwise(setup: Setup) -> None:
    verdict = verify(setup, setup.honest)
    assert verdict.ok, verdict
    assert verdict.max_distance == 0.0 and verdict.checked_segments == (0, 1, 2)
    verdict.raise_if_rejected()
    # The verdict carries the recomputed losses: what a validator reports, never the trainer's claim.
    assert (verdict.loss_before_micro, verdict.loss_after_micro) == (setup.honest.loss_before_micro,
                                                                     setup.honest.loss_after_micro)
    assert verdict.reduction_micro == setup.honest.loss_before_micro - setup.honest.loss_after_micro


def test_last_segment_is_always_replayed(setup: Setup) -> None:
    verdict = verify(setup, setup.honest, segments=[0])
    assert verdict.ok and verdict.checked_segments == (0, 2)


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
    # Exact in micro-units: one micro-unit more reduction than recomputed is a lie (no window to inflate a bonus).
    one_micro_lower = (setup.honest.loss_after_micro - 1) / 1e6
    assert verify(setup, setup.honest, claimed_loss_after=one_micro_lower).reason == LOSS_MISMATCH


def test_losses_are_measured_on_the_specs_loss_samples(setup: Setup) -> None:
    """``loss_samples`` is part of the task every node derives from the spec: claims measured on another count are
    not the validator's figures (so nodes that disagreed on it would vote honest work down; hence the spec's schema
    version changed with it)."""
    few = replace(TASK, loss_samples=64)
    claims = recomputed_losses(few, setup.base, setup.honest, setup.shard)
    assert claims["claimed_loss_before"] != setup.honest.loss_before  # another sample: another figure
    assert verify(setup, setup.honest, loss_samples=64, **claims).ok
    assert verify(setup, setup.honest, **claims).reason == LOSS_MISMATCH
    assert verify(setup, setup.honest, loss_samples=64).reason == LOSS_MISMATCH
    # A count past the range's length measures the whole range (it does not fail).
    whole = replace(TASK, loss_samples=65_536)
    assert verify(setup, setup.honest, loss_samples=65_536,
                  **recomputed_losses(whole, setup.base, setup.honest, setup.shard)).ok


def test_loss_that_rises_beyond_the_spec_bound_is_rejected(setup: Setup) -> None:
    steep = replace(TASK, lr=0.2)  # an honest run whose loss explodes (2.3 -> ~5.9)
    result = train_local(steep, setup.base, setup.shard)
    assert result.loss_after > result.loss_before * 1.2
    verdict = verify(setup, result, lr=0.2)
    assert not verdict.ok and verdict.reason == LOSS_RISE
    assert verify(setup, result, lr=0.2, max_loss_rise_ppm=10**7).ok  # a job that allows it
    # The trainer computed the same two losses: the rule it withholds by is the one the validator rejects by.
    before, after = loss_to_micro(result.loss_before), loss_to_micro(result.loss_after)
    assert loss_rise_exceeds(before, after, DEFAULT_MAX_LOSS_RISE_PPM)
    assert not loss_rise_exceeds(before, after, 10**7)
    assert not loss_rise_exceeds(1_000_000, 1_200_000, 200_000) and loss_rise_exceeds(1_000_000, 1_200_001, 200_000)


def test_skipped_steps_are_rejected(setup: Setup) -> None:
    short = train_local(replace(TASK, steps=20), setup.base, setup.shard)
    assert verify(setup, short).reason == BAD_SEGMENT_COUNT
    # Padding the skipped segment with a copy of the previous state: the replay of that segment catches it.
    padded = short.segment_states + [short.segment_states[-1]]
    hashes = short.segment_hashes + [short.segment_hashes[-1]]
    verdict = verify(setup, short, hashes=hashes, states=padded, segments=[2])
    assert verdict.reason == BAD_SEGMENT_STATE and "end step" in verdict.detail  # its step counters say 20, not 30
    # ...and with the counters set to 30 as well, the replay of that segment catches it.
    padded[-1] = {k: torch.full_like(v, 30) if k.endswith("/step") else v for k, v in padded[-1].items()}
    hashes[-1] = state_hash(padded[-1])
    verdict = verify(setup, short, hashes=hashes, states=padded, segments=[2])
    assert verdict.reason == REPLAY_MISMATCH and verdict.max_distance > 1e-4


def test_wrong_shard_is_rejected(setup: Setup) -> None:
    wrong = train_local(TASK, setup.base, setup.other_shard)
    for seg in ([0], [2]):
        verdict = verify(setup, wrong, segments=seg)
        assert not verdict.ok and verdict.reason in (REPLAY_MISMATCH, LOSS_MISMATCH)
    # With honest loss claims recomputed on the right shard, the replay itself must still catch it.
    losses = recomputed_losses(TASK, setup.base, wrong, setup.shard)
    assert verify(setup, wrong, segments=[1], **losses).reason == REPLAY_MISMATCH


def test_wrong_seed_is_rejected(setup: Setup) -> None:
    wrong = train_local(replace(TASK, seed=12), setup.base, setup.shard)
    verdict = verify(setup, wrong, segments=[1])
    assert verdict.reason == REPLAY_MISMATCH and verdict.checked_segments == (1,)


def test_copy_of_another_trainers_work_is_rejected(setup: Setup) -> None:
    # Trainer B's ticket names the other shard and another seed; it submits A's (honest) work as its own.
    other_task: dict[str, Any] = {"shard": setup.other_shard, "seed": 99}
    losses = recomputed_losses(replace(TASK, seed=99), setup.base, setup.honest, setup.other_shard)
    verdict = verify(setup, setup.honest, segments=[2], **losses, **other_task)
    assert verdict.reason == REPLAY_MISMATCH
    assert not verify(setup, setup.honest, segments=[0], **other_task).ok


def test_states_not_matching_their_hashes_are_rejected(setup: Setup) -> None:
    states = list(setup.honest.segment_states)
    states[1] = {k: v + 1e-3 if k.startswith("model/") else v for k, v in states[1].items()}
    assert verify(setup, setup.honest, states=states, segments=[2]).reason == BAD_SEGMENT_STATE


def _republished(s: Setup, states: list[State], task: Task = TASK) -> LocalResult:
    """A trainer's publication built from ``states``: hashes, delta and losses all consistent with them, so
    only a replay can tell."""
    final = model_part(states[-1])
    data = task_view(s.shard, task.sample_range)
    with deterministic_torch():
        after = task_loss(task, final, data)
    return LocalResult(state_sub(final, s.base), final, s.honest.loss_before, after,
                       [state_hash(x) for x in states], states)


def _perturbed(s: Setup, eps: float) -> LocalResult:
    """The honest run as a slightly different CPU would publish it: the last state's weights off by ``eps``
    relative to each tensor's scale."""
    states = list(s.honest.segment_states)
    states[-1] = {k: v + eps * v.abs().max() if k.startswith("model/") else v for k, v in states[-1].items()}
    return _republished(s, states)


def test_any_difference_is_rejected_without_a_declared_hardware_mismatch(setup: Setup) -> None:
    verdict = verify(setup, _perturbed(setup, 1e-7), segments=[2])
    assert verdict.reason == REPLAY_MISMATCH and 0 < verdict.max_distance <= 2e-7


def test_tolerance_accepts_tiny_hardware_differences_and_rejects_more(setup: Setup) -> None:
    close = _perturbed(setup, 1e-6)
    verdict = verify(setup, close, segments=[2], hardware_mismatch=True)
    assert verdict.ok and 0 < verdict.max_distance <= 2e-6
    far = _perturbed(setup, 1e-3)
    verdict = verify(setup, far, segments=[2], hardware_mismatch=True)
    assert verdict.reason == REPLAY_MISMATCH and verdict.max_distance > 5e-4


def _trained_on_from(s: Setup, states: list[State], first: int) -> list[State]:
    """``states`` up to ``first`` as given, then honest segments trained on from the (tampered) state before."""
    out = list(states[:first])
    data = task_view(s.shard, TASK.sample_range)
    with deterministic_torch():
        for i in range(first, TASK.n_segments):
            out.append(run_segment(TASK, out[i - 1], data, i))
    return out


LAX: dict[str, Any] = {"max_loss_rise_ppm": 10**7}
"""A job without the plausibility bound: so that a test shows what replay alone catches."""


def test_tampered_optimizer_state_is_rejected(setup: Setup) -> None:
    """The attack of issue 14: rewrite the committed moments of one segment and train on from them honestly.

    The segments after it replay bitwise from the tampered start. The tampered state is no state AdamW reaches
    (``|m| > κ·√v``), and neither is the next one trained from it (its first moment still remembers what its
    second moment forgot), so the update is rejected whichever segments are challenged: the start of the last one is
    always fetched. Before the reachability check, any draw without segment 0 replayed bitwise and the update
    passed (with no loss-rise bound)."""
    states = list(setup.honest.segment_states)
    states[0] = {k: v * 1e-6 if k.endswith("exp_avg_sq") else v for k, v in states[0].items()}
    forged = _republished(setup, _trained_on_from(setup, states, 1))
    assert state_hash(model_part(forged.segment_states[0])) == state_hash(model_part(setup.honest.segment_states[0]))
    for segments in ([0], [1], [2], [0, 1, 2]):
        for mismatch in (False, True):
            verdict = verify(setup, forged, segments=segments, hardware_mismatch=mismatch, **LAX)
            assert verdict.reason == BAD_SEGMENT_STATE and "AdamW" in verdict.detail, (segments, verdict)
    # ...and a tampered step counter is never hardware.
    bumped = list(setup.honest.segment_states)
    bumped[-1] = {k: v + 1 if k.endswith("/step") else v for k, v in bumped[-1].items()}
    verdict = verify(setup, _republished(setup, bumped), hardware_mismatch=True)
    assert verdict.reason == BAD_SEGMENT_STATE and "end step" in verdict.detail


def test_moments_rewritten_within_the_tolerance_are_rejected(setup: Setup) -> None:
    """A patient adversary under a declared hardware mismatch spends the tolerance on the moments, not the weights.

    Zeroing every second moment below 1e-5 of its tensor's largest and raising every first moment by 1e-5 of its
    largest is a relative distance of ~1e-5, inside the tolerance. AdamW's next steps on those coordinates are
    ``lr·m/ε``: the honest replay of the next segment from that state moves a weight tensor by thousands of times
    its scale, and replays exactly. Accepted before the reachability check (with no loss-rise bound)."""
    tol = 1e-5
    states = list(setup.honest.segment_states)
    tampered: State = {}
    for key, value in states[0].items():
        if key.endswith("exp_avg_sq"):
            tampered[key] = torch.where(value < 0.99 * tol * value.max(), torch.zeros_like(value), value)
        elif key.endswith("exp_avg"):
            tampered[key] = value + 0.99 * tol * value.abs().max()
        else:
            tampered[key] = value
    states[0] = tampered
    assert 0 < state_distance(tampered, setup.honest.segment_states[0]) < tol
    forged = _republished(setup, _trained_on_from(setup, states, 1))
    blown = max(float((forged.delta[k] - setup.honest.delta[k]).abs().max() / setup.honest.delta[k].abs().max())
                for k in forged.delta)
    assert blown > 100, blown  # the steered delta: far beyond anything the tolerance was meant to allow
    for segments in ([0, 2], [1, 2], [0, 1, 2]):
        verdict = verify(setup, forged, segments=segments, hardware_mismatch=True, tolerance=tol, **LAX)
        assert verdict.reason == BAD_SEGMENT_STATE and "AdamW" in verdict.detail, (segments, verdict)


def test_honest_states_are_reachable(setup: Setup) -> None:
    for i, state in enumerate(setup.honest.segment_states):
        assert unreachable_because(state, end_step=TASK.segment_bounds(i)[1]) == ""
        ratio = max(float((state[k].double().abs() / state[k + "_sq"].double().sqrt().clamp(min=1e-300)).max())
                    for k in state if k.endswith("/exp_avg"))
        assert 0 < ratio < 0.99 * ADAM_MOMENT_BOUND  # honest runs keep a margin to the bound
    negative = {k: -v if k.endswith("exp_avg_sq") else v for k, v in setup.honest.segment_states[0].items()}
    assert "negative" in unreachable_because(negative, end_step=10)
    nan = {k: v * float("nan") if k.endswith("fc1.bias") else v for k, v in setup.honest.segment_states[0].items()}
    assert "not finite" in unreachable_because(nan, end_step=10)


def test_replay_uses_the_optimizers_betas() -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = _make_optimizer(TASK, model)
    assert tuple(optimizer.param_groups[0]["betas"]) == ADAM_BETAS


def test_tolerance_cannot_be_spent_in_every_segment(setup: Setup) -> None:
    """A patient adversary pushes every segment's weights by just under the tolerance, always in one direction.

    Each segment alone passes the per-segment bound; the mean over the challenged segments exceeds half of it, so
    the update is rejected. What it could still spend (≤ tolerance / 2 on average) is the documented bound."""
    tol = 1e-5
    eps = 0.9 * tol
    states: list[State] = []
    data = task_view(setup.shard, TASK.sample_range)
    with deterministic_torch():
        state: State = {f"model/{k}": v.clone() for k, v in setup.base.items()}
        for i in range(TASK.n_segments):
            state = run_segment(TASK, state, data, i)
            state = {k: v + eps * v.abs().max() if k.startswith("model/") else v for k, v in state.items()}
            states.append(state)
    pushed = _republished(setup, states)
    for i in range(TASK.n_segments):
        single = verify(setup, pushed, segments=[i], hardware_mismatch=True, tolerance=tol)
        assert single.reason == REPLAY_MISMATCH and single.checked_segments[-1] == 2
    verdict = verify(setup, pushed, hardware_mismatch=True, tolerance=tol)
    assert verdict.reason == REPLAY_MISMATCH and "cumulative" in verdict.detail
    assert 0.5 * tol < verdict.max_distance <= tol


def test_state_distance_is_relative_and_exact_on_counts() -> None:
    a = {"model/w": torch.tensor([1.0, 2.0]), "optim/w/exp_avg_sq": torch.tensor([1e-8, 2e-8]),
         "optim/w/step": torch.tensor(3.0)}
    assert state_distance(a, a) == 0.0
    b = dict(a, **{"optim/w/exp_avg_sq": torch.tensor([1e-12, 2e-8])})  # tiny in absolute terms, half in relative
    assert state_distance(b, a) == pytest.approx(0.5, rel=1e-3)
    assert state_distance(dict(a, **{"optim/w/step": torch.tensor(4.0)}), a) == float("inf")
    assert state_distance({"model/w": a["model/w"]}, a) == float("inf")


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
    seed = bytes(range(32))
    picks = choose_segments(seed, 20, 3)
    assert picks == choose_segments(seed, 20, 3)
    assert len(set(picks)) == 3 and picks == sorted(picks) and all(0 <= i < 20 for i in picks)
    assert picks[-1] == 19  # the delta-defining segment is always challenged
    assert choose_segments(seed, 4, 10) == [0, 1, 2, 3]
    assert choose_segments(seed, 0, 3) == []
    assert choose_segments(seed, 5, 0) == [4]
    seen = {tuple(choose_segments(i.to_bytes(32, "big"), 10, 3)) for i in range(200)}
    assert all(p[-1] == 9 for p in seen)
    assert len(seen) > 30  # the others spread over many pairs of 0..8, not a fixed few
    with pytest.raises(TrainingError, match="32 bytes"):
        choose_segments(b"block-hash", 20, 3)  # the seed is the contract's challengeSeed, nothing shorter


def test_a_validator_fetches_start_states_only_unless_a_replay_differs(setup: Setup) -> None:
    """Issue 14's fetch goal: an honest update costs a validator at most k states (the starts of the challenged
    segments), never their ends: a replay that reproduces the committed hash is the committed state."""
    assert states_to_fetch([0], 3) == [1] and states_to_fetch([1], 3) == [0] and states_to_fetch([0, 1, 2], 3) == []
    assert states_to_fetch([3, 7], 10) == [2, 6, 8] and states_to_fetch([], 1) == []

    def counting(result: LocalResult) -> tuple[list[int], Any]:
        asked: list[int] = []

        def fetch(i: int) -> State:
            asked.append(i)
            return result.segment_states[i]
        return asked, fetch

    for segments, starts in (([0], [1]), ([1], [0]), ([0, 1, 2], [])):
        for mismatch in (False, True):
            asked, fetch = counting(setup.honest)
            verdict = verify(setup, setup.honest, segments=segments, segment_states_fetch=fetch,
                             hardware_mismatch=mismatch)
            assert verdict.ok and asked == starts, (segments, mismatch, asked)
    # Under a declared hardware mismatch, a replay that differs fetches that end state to measure the distance...
    close = _perturbed(setup, 1e-6)
    asked, fetch = counting(close)
    assert verify(setup, close, segments=[0], segment_states_fetch=fetch, hardware_mismatch=True).ok
    assert asked == [1, 2]
    # ...and under the bitwise rule, to name the rejection.
    asked, fetch = counting(close)
    assert verify(setup, close, segments=[0], segment_states_fetch=fetch).reason == REPLAY_MISMATCH
    assert asked == [1, 2]


def test_a_fetched_states_digest_is_compared_not_recomputed(setup: Setup) -> None:
    """A :class:`CommittedState` carries the sha256 its fetcher verified on receipt; replay compares it with the
    commitment (one hash per state, not two) and still rejects a digest that is not the committed one."""
    honest = setup.honest
    committed = [CommittedState(dict(s), h) for s, h in zip(honest.segment_states, honest.segment_hashes, strict=True)]
    assert verify(setup, honest, segments=[1], segment_states_fetch=lambda i: committed[i]).ok
    wrong = [CommittedState(c.tensors, honest.segment_hashes[2]) for c in committed]
    verdict = verify(setup, honest, segments=[1], segment_states_fetch=lambda i: wrong[i])
    assert verdict.reason == BAD_SEGMENT_STATE and "claimed hash" in verdict.detail


def test_the_moment_bound_is_decided_as_in_float64() -> None:
    """The reachability check runs in float32 for float32 states (a validator's largest fixed cost otherwise): its
    rounding must not move the 1e-3 margin. Other dtypes are compared in float64."""
    gen = torch.Generator().manual_seed(5)
    v = torch.rand(100_000, generator=gen) * torch.logspace(-30, 0, 100_000)
    for factor, ok in ((0.98, True), (1.0009, True), (1.0011, False), (1.5, False)):
        for dtype in (torch.float32, torch.float64):
            m = (ADAM_MOMENT_BOUND * factor * v.double().sqrt()).to(dtype)
            state = {"optim/w/exp_avg": m, "optim/w/exp_avg_sq": v.to(dtype), "optim/w/step": torch.tensor(10.0)}
            assert (unreachable_because(state, end_step=10) == "") == ok, (factor, dtype)
