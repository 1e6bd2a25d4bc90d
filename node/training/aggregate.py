"""Aggregation: pure functions over weighted deltas, one small :class:`Strategy` class per rule over them (Flower's
style: :class:`FedAvg`, :class:`FedMedian`, :class:`FedTrimmedAvg`, :class:`Krum`, :class:`CenteredClip`, each with an
optional DiLoCo :class:`OuterOptimizer`), and :func:`strategy_from_spec`, the one place a job's ``AggregationSpec``
becomes a strategy (its defaults are the spec's: there is no second table).

Determinism is the point: anyone holding the accepted deltas must be able to recompute the leader's checkpoint bit
for bit, whatever order they received the deltas in and whatever CPU they run. So every function

- sorts its inputs canonically (by the sha256 of the delta's bytes, then weight) before reducing;
- computes in float64 with numpy element-wise operations only (IEEE-exact on every CPU; no fused multiply-add, no
  vectorized reductions whose order depends on the instruction set) and casts to float32 once at the end;
- computes the norms that steer selection or clipping (Krum, centered clipping) with ``math.fsum``, which is
  correctly rounded, so those decisions cannot differ between machines either.

Weights are the work a delta represents (samples processed, from :mod:`node.training.tasks`). Robust rules
(median, trimmed mean) ignore weights by design: a weight is claimed by the trainer's task size, and an attacker
must not buy influence over a coordinate-wise statistic.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch

from node.training.codec import State, state_hash
from node.training.errors import TrainingError
from protocols.specs import AggregationSpec

WeightedDelta = tuple[Mapping[str, torch.Tensor], float]
Vec = npt.NDArray[np.float64]


def _canonical(weighted: Sequence[WeightedDelta]) -> tuple[list[str], list[Vec], list[float], dict[str, torch.Size]]:
    """Sort by (delta hash, weight); flatten each delta to one float64 vector in sorted key order."""
    if not weighted:
        raise TrainingError("nothing to aggregate: no accepted deltas")
    keys = sorted(weighted[0][0])
    shapes = {k: weighted[0][0][k].shape for k in keys}
    rows: list[tuple[str, float, Vec]] = []
    for delta, weight in weighted:
        if sorted(delta) != keys or any(delta[k].shape != shapes[k] for k in keys):
            raise TrainingError("deltas to aggregate have different tensor names or shapes")
        w = float(weight)
        if not (math.isfinite(w) and w > 0):
            raise TrainingError(f"delta weight must be positive and finite, got {weight}")
        vec = np.concatenate([delta[k].detach().to(torch.float32).reshape(-1).numpy().astype(np.float64) for k in keys])
        rows.append((state_hash(delta), w, vec))
    rows.sort(key=lambda row: (row[0], row[1]))
    return keys, [r[2] for r in rows], [r[1] for r in rows], shapes


def _unflatten(vec: Vec, keys: list[str], shapes: Mapping[str, torch.Size]) -> State:
    out: State = {}
    offset = 0
    for key in keys:
        n = math.prod(shapes[key])
        out[key] = torch.from_numpy(vec[offset : offset + n].astype(np.float32)).reshape(shapes[key]).contiguous()
        offset += n
    return out


def _weighted_mean(vecs: Sequence[Vec], weights: Sequence[float]) -> Vec:
    total = math.fsum(weights)
    acc = np.zeros_like(vecs[0])
    for vec, w in zip(vecs, weights, strict=True):
        acc = acc + vec * (w / total)
    return acc


def _sqnorm(vec: Vec) -> float:
    return math.fsum((vec * vec).tolist())


def _median(vecs: Sequence[Vec]) -> Vec:
    stacked = np.sort(np.stack(vecs), axis=0)
    n = len(vecs)
    if n % 2:
        return np.asarray(stacked[n // 2], dtype=np.float64)
    return np.asarray((stacked[n // 2 - 1] + stacked[n // 2]) * 0.5, dtype=np.float64)


def aggregate_mean(weighted: Sequence[WeightedDelta]) -> State:
    """FedAvg: the work-weighted mean of the deltas."""
    keys, vecs, weights, shapes = _canonical(weighted)
    return _unflatten(_weighted_mean(vecs, weights), keys, shapes)


def aggregate_median(weighted: Sequence[WeightedDelta]) -> State:
    """Coordinate-wise median (mean of the two middle values for an even count); weights are ignored."""
    keys, vecs, _, shapes = _canonical(weighted)
    return _unflatten(_median(vecs), keys, shapes)


def aggregate_trimmed_mean(weighted: Sequence[WeightedDelta], beta: float) -> State:
    """Coordinate-wise mean after dropping the ``floor(beta · n)`` largest and smallest values (0 ≤ beta < 0.5)."""
    if not 0 <= beta < 0.5:
        raise TrainingError(f"trimmed mean beta must be in [0, 0.5), got {beta}")
    keys, vecs, _, shapes = _canonical(weighted)
    n = len(vecs)
    cut = math.floor(beta * n)
    stacked = np.sort(np.stack(vecs), axis=0)
    acc = np.zeros_like(vecs[0])
    for row in stacked[cut : n - cut]:
        acc = acc + row
    return _unflatten(acc / (n - 2 * cut), keys, shapes)


def krum_select(vecs: Sequence[Vec], f: int, m: int) -> list[int]:
    """Indices (into ``vecs``) of the ``m`` deltas with the lowest Krum score for ``f`` assumed attackers.

    A delta's score is the sum of squared distances to its ``n - f - 2`` nearest others (at least 1); ties go to
    the earlier (canonically sorted) delta.
    """
    n = len(vecs)
    if f < 0 or not 1 <= m <= n:
        raise TrainingError(f"Krum needs f >= 0 and 1 <= m <= n={n}, got f={f}, m={m}")
    neighbours = max(1, n - f - 2)
    dist = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            dist[i][j] = dist[j][i] = _sqnorm(vecs[i] - vecs[j])
    scores = [math.fsum(sorted(dist[i][j] for j in range(n) if j != i)[:neighbours]) if n > 1 else 0.0
              for i in range(n)]
    return sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])


def aggregate_krum(weighted: Sequence[WeightedDelta], f: int, m: int = 1) -> State:
    """Krum (m = 1) or multi-Krum: the work-weighted mean of the ``m`` best-scored deltas."""
    keys, vecs, weights, shapes = _canonical(weighted)
    chosen = krum_select(vecs, f, m)
    return _unflatten(_weighted_mean([vecs[i] for i in chosen], [weights[i] for i in chosen]), keys, shapes)


def aggregate_centered_clip(weighted: Sequence[WeightedDelta], tau: float, iters: int = 3) -> State:
    """Centered clipping (Karimireddy et al. 2021) started at the coordinate-wise median.

    ``v ← v + Σ wᵢ · clip_τ(xᵢ - v) / Σ wᵢ`` for ``iters`` iterations, where ``clip_τ`` scales a vector down to L2
    norm ``tau`` when it is longer. ``tau`` is in the units of the deltas' L2 norm.
    """
    if not (math.isfinite(tau) and tau > 0) or iters < 1:
        raise TrainingError(f"centered clipping needs tau > 0 and iters >= 1, got tau={tau}, iters={iters}")
    keys, vecs, weights, shapes = _canonical(weighted)
    total = math.fsum(weights)
    v = _median(vecs)
    for _ in range(iters):
        acc = np.zeros_like(v)
        for vec, w in zip(vecs, weights, strict=True):
            diff = vec - v
            norm = math.sqrt(_sqnorm(diff))
            factor = min(1.0, tau / norm) if norm > 0 else 1.0
            acc = acc + diff * (factor * w / total)
        v = v + acc
    return _unflatten(v, keys, shapes)


def _float32_tensor(values: np.ndarray | np.floating) -> torch.Tensor:
    """``values`` rounded to float32 as a tensor of the same shape. Arithmetic on a 0-d array (a BatchNorm's
    ``num_batches_tracked``) gives a NumPy scalar, which ``torch.from_numpy`` refuses: ``np.asarray`` keeps it 0-d."""
    return torch.from_numpy(np.asarray(values, dtype=np.float32)).contiguous()


_SPEC_DEFAULTS = AggregationSpec()
"""The one table of defaults: a rule built without a setting gets the job spec's default for it."""


@dataclass(frozen=True, kw_only=True)
class OuterOptimizer:
    """DiLoCo's outer step: Nesterov momentum on the aggregated delta (the negated outer gradient).

    ``buf ← μ · buf + Δ``; ``θ ← θ + η · (Δ + μ · buf)``; equal to ``torch.optim.SGD(nesterov=True)`` with the
    pseudo-gradient ``-Δ``. The momentum buffer is kept as float32 tensors ``momentum/<name>`` (the outer state,
    published with the checkpoint so anyone can continue the computation).
    """

    lr: float = float(_SPEC_DEFAULTS.outer_lr)
    momentum: float = float(_SPEC_DEFAULTS.outer_momentum)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0) or not 0 <= self.momentum < 1:
            raise TrainingError(f"outer optimizer needs lr > 0 and 0 <= momentum < 1, got {self.lr}, {self.momentum}")

    def step(
        self, base: Mapping[str, torch.Tensor], delta: State, outer_state: Mapping[str, torch.Tensor]
    ) -> tuple[State, State]:
        new_state: State = {}
        new_outer: State = {}
        for key in sorted(base):
            b = base[key].detach().to(torch.float32).numpy().astype(np.float64)
            d = delta[key].numpy().astype(np.float64)
            prev = outer_state.get("momentum/" + key)
            buf = d if prev is None else prev.detach().to(torch.float32).numpy().astype(np.float64) * self.momentum + d
            buf32 = buf.astype(np.float32)
            update = d + buf32.astype(np.float64) * self.momentum
            new_state[key] = _float32_tensor(b + update * self.lr)
            new_outer["momentum/" + key] = _float32_tensor(buf32)
        return new_state, new_outer


@dataclass(frozen=True, kw_only=True)
class Strategy(ABC):
    """An aggregation rule (one subclass per rule, over the pure functions above) and an optional outer optimizer.

    Build a job's with :func:`strategy_from_spec`; subclasses validate their settings when constructed.
    """

    name: ClassVar[str]
    outer: OuterOptimizer | None = None
    """DiLoCo's Nesterov step on the aggregated delta; None adds the delta to the base as it is."""

    @abstractmethod
    def aggregate(self, weighted: Sequence[WeightedDelta]) -> State:
        """The aggregated delta of ``weighted`` (any order, same bits)."""

    def apply(
        self,
        base_state: Mapping[str, torch.Tensor],
        weighted_deltas: Sequence[WeightedDelta],
        outer_state: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[State, State]:
        """The next checkpoint and outer state from the base and the accepted deltas (any order, same bits)."""
        delta = self.aggregate(weighted_deltas)
        if set(delta) != set(base_state):
            raise TrainingError("deltas' tensor names differ from the base checkpoint's")
        if self.outer is not None:
            return self.outer.step(base_state, delta, outer_state or {})
        new_state = {
            key: _float32_tensor(base_state[key].detach().to(torch.float32).numpy().astype(np.float64)
                                 + delta[key].numpy().astype(np.float64))
            for key in sorted(base_state)
        }
        return new_state, {}


@dataclass(frozen=True, kw_only=True)
class FedAvg(Strategy):
    """The work-weighted mean (with ``outer``: DiLoCo)."""

    name: ClassVar[str] = "mean"

    def aggregate(self, weighted: Sequence[WeightedDelta]) -> State:
        return aggregate_mean(weighted)


@dataclass(frozen=True, kw_only=True)
class FedMedian(Strategy):
    """The coordinate-wise median; weights ignored."""

    name: ClassVar[str] = "median"

    def aggregate(self, weighted: Sequence[WeightedDelta]) -> State:
        return aggregate_median(weighted)


@dataclass(frozen=True, kw_only=True)
class FedTrimmedAvg(Strategy):
    """The coordinate-wise mean without the ``floor(beta · n)`` largest and smallest values; weights ignored."""

    name: ClassVar[str] = "trimmed_mean"
    beta: float = float(_SPEC_DEFAULTS.trim_ratio)

    def __post_init__(self) -> None:
        if not 0 <= self.beta < 0.5:
            raise TrainingError(f"trimmed_mean beta must be in [0, 0.5), got {self.beta}")

    def aggregate(self, weighted: Sequence[WeightedDelta]) -> State:
        return aggregate_trimmed_mean(weighted, self.beta)


@dataclass(frozen=True, kw_only=True)
class Krum(Strategy):
    """(Multi-)Krum for ``f`` assumed attackers: the weighted mean of the ``m`` best-scored deltas (fewer when
    fewer arrived)."""

    name: ClassVar[str] = "krum"
    f: int = _SPEC_DEFAULTS.krum_f
    m: int = 1

    def __post_init__(self) -> None:
        if self.f < 0 or self.m < 1:
            raise TrainingError(f"krum needs f >= 0 and m >= 1, got f={self.f}, m={self.m}")

    def aggregate(self, weighted: Sequence[WeightedDelta]) -> State:
        return aggregate_krum(weighted, self.f, min(self.m, len(weighted)))


@dataclass(frozen=True, kw_only=True)
class CenteredClip(Strategy):
    """Centered clipping from the median, ``iters`` times, to L2 norm ``tau`` (in the deltas' units)."""

    name: ClassVar[str] = "centered_clip"
    tau: float = float(_SPEC_DEFAULTS.clip_tau)
    iters: int = 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tau) and self.tau > 0) or self.iters < 1:
            raise TrainingError(f"centered_clip needs tau > 0 and iters >= 1, got tau={self.tau}, iters={self.iters}")

    def aggregate(self, weighted: Sequence[WeightedDelta]) -> State:
        return aggregate_centered_clip(weighted, self.tau, self.iters)


def _setting(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise TrainingError(f"aggregation.{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise TrainingError(f"aggregation.{name}={value!r} must be finite")
    return number


def strategy_from_spec(spec: AggregationSpec) -> Strategy:
    """The strategy a job's spec asks for: the one translation from spec to rule, for leaders and auditors alike.

    Raises :class:`TrainingError` naming the setting when the spec's rule, outer optimizer or a number is invalid.
    """
    if spec.outer not in ("none", "nesterov"):
        raise TrainingError(f"unknown outer optimizer aggregation.outer={spec.outer!r}; use 'none' or 'nesterov'")
    outer = None if spec.outer == "none" else OuterOptimizer(
        lr=_setting("outer_lr", spec.outer_lr), momentum=_setting("outer_momentum", spec.outer_momentum))
    if spec.strategy == FedAvg.name:
        return FedAvg(outer=outer)
    if spec.strategy == FedMedian.name:
        return FedMedian(outer=outer)
    if spec.strategy == FedTrimmedAvg.name:
        return FedTrimmedAvg(beta=_setting("trim_ratio", spec.trim_ratio), outer=outer)
    if spec.strategy == Krum.name:
        return Krum(f=spec.krum_f, outer=outer)
    if spec.strategy == CenteredClip.name:
        return CenteredClip(tau=_setting("clip_tau", spec.clip_tau), outer=outer)
    raise TrainingError(f"unknown aggregation.strategy {spec.strategy!r}; known: mean, median, trimmed_mean, krum, "
                        "centered_clip")
