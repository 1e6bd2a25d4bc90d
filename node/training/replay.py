"""Replay verification: re-run sampled segments of a trainer's task and compare with what it published.

A validator holds the task (from the signed ticket), the base checkpoint and the shard, the trainer's claimed
segment hashes, delta and losses, and can fetch any published segment state by index. It checks, in order:

1. the number of segment hashes matches the task (skipped or padded steps fail here);
2. the last segment state (fetched and hash-checked) minus the base equals the claimed delta, after encoding both
   with the claimed delta kind (deterministic bytes, so this is exact; a scaled or random delta fails here);
3. the claimed losses equal the losses recomputed on the task's data within ``loss_tolerance``;
4. each segment in ``segments_to_check`` (chosen after submission from randomness the trainer cannot predict,
   see :func:`choose_segments`), replayed from its published start state with the task's shard, seed and
   hyper-parameters, reproduces the published end state: bitwise (hash match) when the environment matches,
   otherwise within ``tolerance`` (max abs difference of the model weights). A wrong shard, wrong seed or a copy of
   another trainer's work fails here.

Tolerance (documented for job specs): :data:`DEFAULT_TOLERANCE` = 1e-5 on the max abs weight difference of one
segment (≤ 10 steps) replayed from the trainer's own start state. Measured here: the same settings give 0.0
(bitwise); a different thread count or CPU instruction set gives ~1e-6 for one 10-step CNN segment, while any
change of data, seed or step count moves weights by ≥ 1e-4 within one AdamW step at lr 1e-3. The tolerance does
not compound because each segment restarts from the trainer's published state.

Sampling k of n segments catches one fabricated segment with probability k/n per validator; quorum validators
sample independently.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from node.training.codec import State, decode_delta, encode_delta, max_abs_distance, state_hash, state_sub
from node.training.data import ArraySet
from node.training.errors import ReplayMismatch, TrainingError
from node.training.local import (
    deterministic_torch,
    initial_trainer_state,
    loss_to_micro,
    model_part,
    run_segment,
    task_loss,
    task_view,
)
from node.training.task import Task
from protocols.types import RejectCode

DEFAULT_TOLERANCE = 1e-5
DEFAULT_LOSS_TOLERANCE = 1e-4
"""Absolute tolerance on a reported loss (mean cross-entropy; bitwise-equal environments give 0)."""

OK = "OK"
"""The reason of an accepted verdict; a rejected one carries a :class:`RejectCode`."""
# The codes replay can reject with (short names for this module's checks and its tests).
BAD_SEGMENT_COUNT = RejectCode.BAD_SEGMENT_COUNT
BAD_SEGMENT_STATE = RejectCode.BAD_SEGMENT_STATE
DELTA_MISMATCH = RejectCode.DELTA_MISMATCH
LOSS_MISMATCH = RejectCode.LOSS_MISMATCH
REPLAY_MISMATCH = RejectCode.REPLAY_MISMATCH
BAD_TASK = RejectCode.BAD_TASK


@dataclass(frozen=True)
class Verdict:
    """The outcome of a replay check. ``max_distance`` is the largest weight distance seen over replayed segments."""

    ok: bool
    reason: str
    """:data:`OK`, a :class:`RejectCode` when rejected, or why the validator did not check (not drawn, ...)."""
    max_distance: float
    checked_segments: tuple[int, ...]
    detail: str = ""

    def raise_if_rejected(self) -> None:
        if not self.ok:
            raise ReplayMismatch(f"replay rejected the update: {self.reason} ({self.detail})")


def choose_segments(seed_bytes: bytes, n_segments: int, k: int) -> list[int]:
    """``min(k, n)`` distinct segment indices in ascending order, a pure function of ``seed_bytes``.

    Uses a Fisher-Yates shuffle driven by sha256(seed_bytes ‖ counter), so every validator that knows the seed
    (e.g. a block hash) computes the same choice, and nobody can steer it without steering the seed.
    """
    if n_segments < 0 or k < 0:
        raise TrainingError(f"n_segments and k must be >= 0, got {n_segments}, {k}")
    pool = list(range(n_segments))
    take = min(k, n_segments)
    for i in range(take):
        digest = hashlib.sha256(seed_bytes + i.to_bytes(8, "big")).digest()
        j = i + int.from_bytes(digest, "big") % (n_segments - i)
        pool[i], pool[j] = pool[j], pool[i]
    return sorted(pool[:take])


def _reject(reason: RejectCode, detail: str, distance: float, checked: list[int]) -> Verdict:
    return Verdict(False, reason, distance, tuple(checked), detail)


def replay_verify(
    task: Task,
    base_state: Mapping[str, torch.Tensor],
    shard: ArraySet,
    *,
    claimed_segment_hashes: list[str],
    segment_states_fetch: Callable[[int], Mapping[str, torch.Tensor]],
    claimed_delta: Mapping[str, torch.Tensor],
    claimed_loss_before: float,
    claimed_loss_after: float,
    segments_to_check: list[int],
    tolerance: float = DEFAULT_TOLERANCE,
    loss_tolerance: float = DEFAULT_LOSS_TOLERANCE,
    delta_kind: str = "f32",
    topk_frac: float = 0.01,
) -> Verdict:
    """Check a trainer's claimed work on ``task`` by replaying sampled segments; see the module docstring.

    ``segment_states_fetch(i)`` returns the published trainer state after segment ``i``; its hash is checked
    against ``claimed_segment_hashes[i]`` before use. ``claimed_delta`` is the decoded delta the trainer
    published (of kind ``delta_kind``). Fetch errors propagate to the caller (a missing state is not a verdict
    on the work, but the caller may treat it as a rejection).
    """
    checked: list[int] = []
    worst = 0.0
    try:
        data = task_view(shard, task.sample_range)
    except TrainingError as exc:
        return _reject(BAD_TASK, str(exc), math.inf, checked)
    model_name = task.model_name
    n = task.n_segments
    if len(claimed_segment_hashes) != n:
        return _reject(
            BAD_SEGMENT_COUNT,
            f"task of {task.steps} steps has {n} segments, claim lists {len(claimed_segment_hashes)}",
            math.inf, checked,
        )
    bad = [i for i in segments_to_check if not 0 <= i < n]
    if bad:
        return _reject(BAD_TASK, f"segments {bad} out of range 0..{n - 1}", math.inf, checked)

    fetched: dict[int, State] = {}

    def fetch(i: int) -> State | None:
        if i not in fetched:
            state = {k: v.detach().clone() for k, v in segment_states_fetch(i).items()}
            if state_hash(state) != claimed_segment_hashes[i]:
                return None
            fetched[i] = state
        return fetched[i]

    base = {k: v.detach().clone() for k, v in sorted(base_state.items())}
    last = fetch(n - 1)
    if last is None:
        return _reject(BAD_SEGMENT_STATE, f"published state {n - 1} does not match its claimed hash", math.inf, checked)
    final = model_part(last)
    if set(final) != set(base):
        return _reject(BAD_SEGMENT_STATE, "final state's tensors differ from the model's", math.inf, checked)
    expected_delta = state_sub(final, base)
    try:
        expected_bytes = encode_delta(expected_delta, kind=delta_kind, topk_frac=topk_frac)
        expected_decoded = decode_delta(expected_bytes, like=base)
    except TrainingError as exc:
        return _reject(DELTA_MISMATCH, f"cannot encode the expected delta: {exc}", math.inf, checked)
    if state_hash(expected_decoded) != state_hash(dict(claimed_delta)):
        dist = max_abs_distance(expected_decoded, claimed_delta)
        return _reject(DELTA_MISMATCH, f"delta != final - base (max abs diff {dist:.3g})", dist, checked)

    with deterministic_torch():
        loss_before = task_loss(model_name, base, data)
        loss_after = task_loss(model_name, final, data)
        claims = (("before", claimed_loss_before, loss_before), ("after", claimed_loss_after, loss_after))
        for label, claimed, actual in claims:
            if not math.isfinite(claimed) or abs(claimed - actual) > loss_tolerance:
                return _reject(
                    LOSS_MISMATCH, f"loss {label}: claimed {claimed:.6f}, replayed {actual:.6f}", math.inf, checked
                )
        for i in sorted(set(segments_to_check)):
            start = initial_trainer_state(base) if i == 0 else fetch(i - 1)
            end = fetch(i)
            if start is None or end is None:
                return _reject(BAD_SEGMENT_STATE, f"published state around segment {i} does not match its hash",
                               math.inf, checked)
            try:
                replayed = run_segment(task, start, data, i)
            except TrainingError as exc:
                return _reject(BAD_SEGMENT_STATE, f"segment {i}: {exc}", math.inf, checked)
            checked.append(i)
            if state_hash(replayed) == claimed_segment_hashes[i]:
                continue
            dist = max_abs_distance(model_part(replayed), model_part(end))
            worst = max(worst, dist)
            if not dist <= tolerance:
                return _reject(REPLAY_MISMATCH, f"segment {i}: max abs weight diff {dist:.3g} > {tolerance:g}",
                               worst, checked)
    return Verdict(True, OK, worst, tuple(checked), "")


def losses_micro(loss_before: float, loss_after: float) -> tuple[int, int]:
    """Both losses as integer micro-units (for manifests in canonical JSON)."""
    return loss_to_micro(loss_before), loss_to_micro(loss_after)
