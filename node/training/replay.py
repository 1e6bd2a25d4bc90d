"""Replay verification: re-run the challenged segments of a trainer's task and compare with what it committed.

A validator holds the task (from the signed ticket), the base checkpoint and the shard, the trainer's committed
segment hashes (in the manifest), its delta and losses, and fetches committed segment states on demand. Every
byte that can influence the delta is checked:

1. the number of segment hashes matches the task (skipped or padded steps fail here);
2. the delta-defining final state minus the base equals the claimed delta, after encoding both with the claimed
   delta kind: exact bytes, no tolerance (a scaled or random delta fails here);
3. the losses before and after, recomputed on the task's data, equal the claimed ones in integer micro-units
   (±1 micro-unit only under a declared hardware mismatch); the verdict carries the recomputed losses, which are
   what a validator reports, so a claim cannot raise a bonus. A loss that rises by more than the spec's
   ``max_loss_rise_ppm`` is ``LOSS_RISE``;
4. every committed state a check uses (the start of each challenged segment, and its end) is one a run of the task
   can reach (:func:`unreachable_because`): its step counters are the segment's end step, and its AdamW moments
   satisfy ``|m| ≤ κ·√v`` elementwise, which every AdamW run satisfies in exact arithmetic
   (``κ = (1 − β1) / √(1 − β2) / √(1 − β1²/β2) ≈ 7.27``; honest runs measured here stay below 0.98 κ);
5. each challenged segment (:func:`~node.training.challenge.choose_segments`: always the last one), replayed from
   its committed start state, reproduces the committed end state: the WHOLE trainer state, weights, optimizer
   moments and step counters, bit for bit (the replayed state's hash equals the committed hash).

What is fetched (:func:`states_to_fetch`): only the start state of each challenged segment, and not even that when
it is the end of another challenged segment (replayed first) or the initial state (made from the base). A committed
state is bound by its sha256, so a replay whose hash equals the commitment IS the committed end state: it is not
fetched, and it serves as the final state of step 2 and the start of the next challenged segment. An end state is
fetched only when its replay differs: under a declared hardware mismatch to measure the distance, otherwise to name
the reason (a mismatch under the bitwise rule is a rejection whatever the fetched bytes say). Each fetched state
is hashed once, on receipt, against its commitment (:class:`CommittedState`); so a validator of an honest update
fetches at most ``k`` states and hashes each state it uses once.

Why 4: a committed state is both the end of one segment and the start of the next, and the next segment is
replayed FROM it, honestly. AdamW's step is ``lr·m̂ / (√v̂ + ε)``: zeroing the second moment of a coordinate whose
first moment is not zero turns its next steps into ``lr·m/ε`` (ε = 1e-8). Measured here (2026-12, MLP, seed 3):
zeroing every ``v`` below 1e-5 of its tensor's largest and raising ``m`` by 1e-5 of its largest (relative distance
9.9e-6, inside the default tolerance) moved ``fc2.weight`` by 225 (its scale: 0.078) in the next segment, whose
replay from that state is exact. Step 4 rejects such a state wherever it is fetched, including as the start of a
challenged segment whose predecessor was not challenged.

Tolerance, only when the job spec declares ``hardware_mismatch``: names, shapes, dtypes and step counters must
still match exactly; every float tensor's relative distance ``max|a − b| / max|b|`` must be ≤ ``tolerance`` in
each challenged segment, and the mean over the challenged segments ≤ ``tolerance / 2``. What an adversary can
spend: the weights of each committed state may depart from an honest replay by ≤ ``tolerance`` of each tensor's
scale (≤ ``tolerance / 2`` on average over the challenged segments), and each departure is trained from; the moments
may move by ≤ ``tolerance`` of their tensor's largest, which under step 4 changes the following steps of the
coordinates whose moments are that small by at most AdamW's own per-step bound (~κ·lr). Measured over the next
segment (2026-12, 10 steps): a within-tolerance push of the moments that passes step 4 moved one tensor by 3.4% of
its scale (CNN; MLP 0.07%), a push of the weights alone by 1.1% (CNN; MLP 0.005%): AdamW's sign-like steps on
coordinates with tiny gradients amplify any start difference. So a job that declares ``hardware_mismatch`` accepts
a per-update departure of that order, whose direction the dynamics choose more than the adversary;
LOSS_RISE and robust aggregation bound what it does to the model. Moments are compared relative to their own
tensor's scale because absolute tolerance on ``exp_avg_sq`` (values ~1e-8) would let a trainer rewrite them freely.
Measured here (2026-12): the same settings give distance 0.0 (bitwise); a different thread count gives ≤ 4e-7
(MLP and CNN, one 10-step segment).

Devices (:func:`node.training.device.replay_rule`): the manifest declares the device kind the trainer trained on
(``cpu`` or ``cuda``) and the validator replays on ``device``. The same kind is judged as above; different kinds
are judged by the tolerance when the spec declares ``hardware_mismatch``, and are otherwise rejected
(``REPLAY_MISMATCH``) before anything is replayed: no replay on another kind is bitwise. The declaration cannot be
abused: claiming another kind than the real one only turns a bitwise replay into a rejection, and the tolerance
is the spec's to grant, not the trainer's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from node.training.challenge import choose_segments as choose_segments  # re-exported for the validator
from node.training.codec import State, decode_delta, encode_delta, max_abs_distance, state_hash, state_sub
from node.training.data import ArraySet
from node.training.device import CPU, ReplayRule, replay_rule
from node.training.errors import ReplayMismatch, TrainingError
from node.training.local import (
    OPTIM_PREFIX,
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
"""Per-segment relative tolerance, granted only under a declared hardware mismatch (see the module docstring)."""
DEFAULT_MAX_LOSS_RISE_PPM = 200_000
ADAM_BETAS = (0.9, 0.999)
"""AdamW's (β1, β2) as ``local._make_optimizer`` pins them (a test checks they agree)."""
ADAM_MOMENT_BOUND = (1 - ADAM_BETAS[0]) / math.sqrt((1 - ADAM_BETAS[1]) * (1 - ADAM_BETAS[0] ** 2 / ADAM_BETAS[1]))
"""κ ≈ 7.27: ``|m_t| ≤ κ·√v_t`` for every AdamW run (Cauchy-Schwarz over ``m_t = (1 − β1) Σ β1^(t−s) g_s`` and
``v_t = (1 − β2) Σ β2^(t−s) g_s²``), whatever the gradients."""
MISMATCH_LOSS_SLACK_MICRO = 1
"""Under a declared hardware mismatch a recomputed loss may round to a neighbouring micro-unit."""

OK = "OK"
"""The reason of an accepted verdict; a rejected one carries a :class:`RejectCode`."""
# The codes replay can reject with (short names for this module's checks and its tests).
BAD_SEGMENT_COUNT = RejectCode.BAD_SEGMENT_COUNT
BAD_SEGMENT_STATE = RejectCode.BAD_SEGMENT_STATE
DELTA_MISMATCH = RejectCode.DELTA_MISMATCH
LOSS_MISMATCH = RejectCode.LOSS_MISMATCH
REPLAY_MISMATCH = RejectCode.REPLAY_MISMATCH
LOSS_RISE = RejectCode.LOSS_RISE
BAD_TASK = RejectCode.BAD_TASK


@dataclass(frozen=True)
class Verdict:
    """The outcome of a replay check. ``max_distance`` is the largest state distance (:func:`state_distance`)
    seen over replayed segments."""

    ok: bool
    reason: str
    """:data:`OK`, a :class:`RejectCode` when rejected, or why the validator did not check (not drawn, ...)."""
    max_distance: float
    checked_segments: tuple[int, ...]
    detail: str = ""
    loss_before_micro: int = 0
    loss_after_micro: int = 0
    """The losses the validator recomputed (0 when it did not get that far)."""

    @property
    def reduction_micro(self) -> int:
        """The loss reduction to report on-chain: the recomputed one, never the trainer's claim."""
        return max(0, self.loss_before_micro - self.loss_after_micro) if self.ok else 0

    def raise_if_rejected(self) -> None:
        if not self.ok:
            raise ReplayMismatch(f"replay rejected the update: {self.reason} ({self.detail})")


def _reject(reason: RejectCode, detail: str, distance: float, checked: list[int]) -> Verdict:
    return Verdict(False, reason, distance, tuple(checked), detail)


def state_distance(replayed: Mapping[str, torch.Tensor], published: Mapping[str, torch.Tensor]) -> float:
    """The largest per-tensor relative distance ``max|a − b| / max|b|`` over the whole trainer state.

    ``inf`` when names, shapes or dtypes differ, or a non-float tensor or a step counter (``…/step``) differs at all:
    only rounding in float tensors can be hardware, never a count.
    """
    if set(replayed) != set(published):
        return math.inf
    worst = 0.0
    for key, a in replayed.items():
        b = published[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            return math.inf
        if not a.numel():
            continue
        if key.endswith("/step") or not a.is_floating_point():
            if not torch.equal(a, b):
                return math.inf
            continue
        diff = float((a.double() - b.double()).abs().max())
        if diff == 0.0:
            continue
        scale = float(b.double().abs().max())
        worst = max(worst, diff / scale if scale > 0 else math.inf)
    return worst


def unreachable_because(state: Mapping[str, torch.Tensor], *, end_step: int) -> str:
    """Why no run of a task reaches ``state`` as its trainer state after step ``end_step`` ("" when one can).

    Every float tensor is finite; every optimizer step counter (``optim/<param>/step``) is ``end_step``; every
    AdamW second moment is ≥ 0 and every first moment satisfies ``|m| ≤ κ·√v`` (:data:`ADAM_MOMENT_BOUND`, with a
    1e-3 relative and 1e-20 absolute margin for rounding; honest runs stay below 0.98 κ).
    """
    for key, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"{key} is not finite"
        if key.startswith(OPTIM_PREFIX) and key.endswith("/step") and not bool((t == end_step).all()):
            return f"{key} is {t.flatten()[:1].tolist()}, not the segment's end step {end_step}"
    for key, m in state.items():
        if not (key.startswith(OPTIM_PREFIX) and key.endswith("/exp_avg")):
            continue
        v = state.get(key + "_sq")
        if v is None or v.shape != m.shape:
            return f"{key} has no second moment of its shape"
        if bool((v < 0).any()):
            return f"{key}_sq has negative entries"
        # In float32 when both are (every honest state): its rounding (~1e-7 relative) is far inside the 1e-3 margin,
        # and it spares the validator two float64 copies of every moment (this check cost 8x a sha256 of the state).
        # Any other dtype is compared in float64, so that a low-precision state cannot hide in its own rounding.
        exact = torch.float32 if m.dtype == v.dtype == torch.float32 else torch.float64
        bound = v.to(exact).sqrt().mul_(ADAM_MOMENT_BOUND * (1 + 1e-3)).add_(1e-20)
        if bool((m.to(exact).abs() > bound).any()):
            worst = float((m.double().abs() / v.double().sqrt().clamp(min=1e-300)).max())
            return (f"{key}: |m| / sqrt(v) reaches {worst:.3g}, beyond the {ADAM_MOMENT_BOUND:.3g} every AdamW run "
                    "stays within (a rewritten optimizer state)")
    return ""


@dataclass(frozen=True)
class CommittedState:
    """A committed segment state as a fetcher received it: the tensors and the sha256 of the bytes they were decoded
    from, which the fetcher compared with the commitment as the bytes arrived and checked to be the canonical
    encoding of the tensors (:func:`node.segments.fetch_segment`), so ``sha256 == state_hash(tensors)``. Replay
    compares the digest instead of hashing a 1.2 GB state a second time, and owns the tensors (no copy)."""

    tensors: State
    sha256: str


SegmentFetch = Callable[[int], "Mapping[str, torch.Tensor] | CommittedState"]
"""``fetch(i)``: the committed trainer state after segment ``i``; a plain mapping is hashed and copied by replay."""


def states_to_fetch(segments_to_check: list[int], n: int) -> list[int]:
    """The committed states a replay of ``segments_to_check`` (plus the last) fetches before replaying: the start of
    each challenged segment, i.e. the end of the segment before it, unless that one is challenged too (its replay,
    once it reproduces the committed hash, IS that state) or it is the task's initial state (made from the base).

    End states are fetched only when a replay does not reproduce its commitment: to measure the distance under a
    declared hardware mismatch, or to name the reason of a rejection. So an honest update costs a validator at most
    ``k`` states, never ``2k``."""
    challenged = set(segments_to_check) | ({n - 1} if n else set())
    return sorted(c - 1 for c in challenged if c >= 1 and c - 1 not in challenged)


def _committed(got: Mapping[str, torch.Tensor] | CommittedState) -> tuple[State, str]:
    if isinstance(got, CommittedState):
        return got.tensors, got.sha256
    state = {k: v.detach().clone() for k, v in got.items()}
    return state, state_hash(state)


def replay_verify(
    task: Task,
    base_state: Mapping[str, torch.Tensor],
    shard: ArraySet,
    *,
    claimed_segment_hashes: list[str],
    segment_states_fetch: SegmentFetch,
    claimed_delta: Mapping[str, torch.Tensor],
    claimed_loss_before: float,
    claimed_loss_after: float,
    segments_to_check: list[int],
    hardware_mismatch: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    max_loss_rise_ppm: int = DEFAULT_MAX_LOSS_RISE_PPM,
    delta_kind: str = "f32",
    topk_frac: float = 0.01,
    trainer_device: str = CPU,
    device: str = CPU,
) -> Verdict:
    """Check a trainer's claimed work on ``task`` by replaying challenged segments; see the module docstring.

    ``segment_states_fetch(i)`` returns the committed trainer state after segment ``i`` (a :class:`CommittedState`
    from a fetcher that hashed it on receipt, or a plain mapping that is hashed here); its hash is checked against
    ``claimed_segment_hashes[i]`` before use. It is called for :func:`states_to_fetch` first, and for the end state
    of a challenged segment only when the replay does not reproduce that segment's hash. The last segment is
    replayed whatever ``segments_to_check`` says. ``claimed_delta`` is the decoded delta the trainer published (of
    kind ``delta_kind``). ``tolerance`` is used only with ``hardware_mismatch``. Fetch errors propagate to the caller
    (a state that stays unavailable past the deadline is the caller's ``CONTENT_UNAVAILABLE`` rejection).
    ``trainer_device`` is the device kind the manifest declares, ``device`` the one this replay runs on
    (:func:`~node.training.device.replay_rule`).
    """
    checked: list[int] = []
    worst = 0.0
    rule = replay_rule(trainer_device, device, hardware_mismatch=hardware_mismatch)
    if rule == ReplayRule.REFUSED:
        return _reject(REPLAY_MISMATCH, f"trained on {trainer_device}, replayed on {device}: the job does not declare "
                                        "hardware_mismatch, so a replay must be bitwise, which no replay on another "
                                        "device kind is (train such jobs on the CPU)", math.inf, checked)
    try:
        data = task_view(shard, task.sample_range)
    except TrainingError as exc:
        return _reject(BAD_TASK, str(exc), math.inf, checked)
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
    challenged = sorted(set(segments_to_check) | {n - 1})

    def fetch_checked(i: int) -> State | Verdict:
        """Committed state ``i``: bound to its commitment, and one some run of the task reaches (module docstring,
        step 4); else the rejection."""
        state, digest = _committed(segment_states_fetch(i))
        if digest != claimed_segment_hashes[i]:
            return _reject(BAD_SEGMENT_STATE, f"published state {i} does not match its claimed hash", math.inf,
                           checked)
        problem = unreachable_because(state, end_step=task.segment_bounds(i)[1])
        if problem:
            return _reject(BAD_SEGMENT_STATE, f"published state {i} is one no run of the task reaches: {problem}",
                           math.inf, checked)
        return state

    # The committed states the replays start from, each checked before anything is replayed.
    committed: dict[int, State] = {}
    for i in states_to_fetch(challenged, n):
        got = fetch_checked(i)
        if isinstance(got, Verdict):
            return got
        committed[i] = got

    base = {k: v.detach().clone() for k, v in sorted(base_state.items())}
    slack = MISMATCH_LOSS_SLACK_MICRO if hardware_mismatch else 0

    def loss_claim_wrong(label: str, claimed: float, actual: int) -> Verdict | None:
        if not math.isfinite(claimed) or abs(loss_to_micro(claimed) - actual) > slack:
            return _reject(LOSS_MISMATCH, f"loss {label}: claimed {claimed:.6f}, recomputed {actual / 1e6:.6f}",
                           math.inf, checked)
        return None

    with deterministic_torch():
        before = loss_to_micro(task_loss(task, base, data))
    wrong = loss_claim_wrong("before", claimed_loss_before, before)
    if wrong:
        return wrong

    distances: list[float] = []
    for i in challenged:
        start = initial_trainer_state(base) if i == 0 else committed.pop(i - 1)
        try:
            with deterministic_torch(device=device):
                replayed = run_segment(task, start, data, i, device=device)
        except TrainingError as exc:
            return _reject(BAD_SEGMENT_STATE, f"segment {i}: {exc}", math.inf, checked)
        del start
        checked.append(i)
        if state_hash(replayed) == claimed_segment_hashes[i]:
            # The replay IS the committed state (same hash): nothing to fetch. Still checked for reachability, as
            # a fetched state would be: it may be the start of the next challenged segment.
            problem = unreachable_because(replayed, end_step=task.segment_bounds(i)[1])
            if problem:
                return _reject(BAD_SEGMENT_STATE, f"published state {i} is one no run of the task reaches: "
                                                  f"{problem}", math.inf, checked)
            committed[i] = replayed
            distances.append(0.0)
            continue
        end = fetch_checked(i)  # only now: the distance (and the reason) needs the committed bytes
        if isinstance(end, Verdict):
            return end
        committed[i] = end
        dist = state_distance(replayed, end)
        del replayed
        worst = max(worst, dist)
        if rule == ReplayRule.BITWISE:
            return _reject(REPLAY_MISMATCH, f"segment {i}: the replayed trainer state differs from the committed "
                                            f"one (relative distance {dist:.3g}; bitwise required)", worst, checked)
        if not dist <= tolerance:
            return _reject(REPLAY_MISMATCH, f"segment {i}: relative distance {dist:.3g} > {tolerance:g}",
                           worst, checked)
        distances.append(dist)
    mean = sum(distances) / len(distances)
    if mean > tolerance / 2:
        return _reject(REPLAY_MISMATCH, f"mean distance {mean:.3g} over segments {checked} exceeds the cumulative "
                                        f"bound {tolerance / 2:g}", worst, checked)

    # The committed final state (replayed bitwise, or fetched and within the tolerance) defines the delta.
    final = model_part(committed.pop(n - 1))
    committed.clear()
    if set(final) != set(base):
        return _reject(BAD_SEGMENT_STATE, "final state's tensors differ from the model's", math.inf, checked)
    expected_delta = state_sub(final, base)
    try:
        expected_bytes = encode_delta(expected_delta, kind=delta_kind, topk_frac=topk_frac)
        # Our own bytes: bounded by the model, not by the default size limit (a 100M-parameter delta is 400 MB).
        expected_decoded = decode_delta(expected_bytes, like=base, max_bytes=len(expected_bytes))
    except TrainingError as exc:
        return _reject(DELTA_MISMATCH, f"cannot encode the expected delta: {exc}", math.inf, checked)
    del expected_delta, expected_bytes
    if not same_bits(expected_decoded, claimed_delta):
        dist = max_abs_distance(expected_decoded, claimed_delta)
        return _reject(DELTA_MISMATCH, f"delta != final - base (max abs diff {dist:.3g})", dist, checked)

    with deterministic_torch():
        after = loss_to_micro(task_loss(task, final, data))
    wrong = loss_claim_wrong("after", claimed_loss_after, after)
    if wrong:
        return wrong
    if loss_rise_exceeds(before, after, max_loss_rise_ppm):
        return _reject(LOSS_RISE, f"loss rose from {before / 1e6:.6f} to {after / 1e6:.6f}, beyond the spec's "
                                  f"{max_loss_rise_ppm} ppm", math.inf, checked)
    return Verdict(True, OK, worst, tuple(checked), "", before, after)


def loss_rise_exceeds(before_micro: int, after_micro: int, max_loss_rise_ppm: int) -> bool:
    """Whether a task's loss on its own data rose past the spec's bound (``LOSS_RISE``): validators reject such an
    update, and its trainer, which computed the same two losses, withholds it rather than put its bond at stake."""
    return after_micro * 1_000_000 > before_micro * (1_000_000 + max_loss_rise_ppm)


def same_bits(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """Whether two states hold the same names, dtypes, shapes and bytes (what equal :func:`state_hash` means,
    compared in memory: no sha256 over both)."""
    if set(a) != set(b):
        return False
    for key, x in a.items():
        y = b[key]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if not torch.equal(x.detach().contiguous().reshape(-1).view(torch.uint8),
                           y.detach().contiguous().reshape(-1).view(torch.uint8)):
            return False
    return True
