"""Aggregation strategies: pure functions over weighted deltas, and a :class:`Strategy` chosen by name.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from node.training.codec import State, state_hash
from node.training.errors import TrainingError

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


@dataclass(frozen=True)
class OuterOptimizer:
    """DiLoCo's outer step: Nesterov momentum on the aggregated delta (the negated outer gradient).

    ``buf ← μ · buf + Δ``; ``θ ← θ + η · (Δ + μ · buf)``; equal to ``torch.optim.SGD(nesterov=True)`` with the
    pseudo-gradient ``-Δ``. The momentum buffer is kept as float32 tensors ``momentum/<name>`` (the outer state,
    published with the checkpoint so anyone can continue the computation).
    """

    lr: float = 0.7
    momentum: float = 0.9

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
            new_state[key] = torch.from_numpy((b + update * self.lr).astype(np.float32)).contiguous()
            new_outer["momentum/" + key] = torch.from_numpy(buf32).contiguous()
        return new_state, new_outer


STRATEGY_NAMES: tuple[str, ...] = ("mean", "fedavg", "median", "trimmed_mean", "krum", "centered_clip", "diloco")
_DEFAULTS: dict[str, dict[str, float | int]] = {
    "mean": {},
    "median": {},
    "trimmed_mean": {"beta": 0.1},
    "krum": {"f": 1, "m": 1},
    "centered_clip": {"tau": 5.0, "iters": 3},
}
_INT_PARAMS = {"f", "m", "iters"}


@dataclass(frozen=True)
class Strategy:
    """An aggregation rule with its parameters and an optional outer optimizer. Build with :func:`get_strategy`."""

    name: str
    params: tuple[tuple[str, float | int], ...] = ()
    outer: OuterOptimizer | None = None

    def aggregate(self, weighted: Sequence[WeightedDelta]) -> State:
        p = dict(self.params)
        if self.name == "mean":
            return aggregate_mean(weighted)
        if self.name == "median":
            return aggregate_median(weighted)
        if self.name == "trimmed_mean":
            return aggregate_trimmed_mean(weighted, float(p["beta"]))
        if self.name == "krum":
            return aggregate_krum(weighted, int(p["f"]), min(int(p["m"]), len(weighted)))
        if self.name == "centered_clip":
            return aggregate_centered_clip(weighted, float(p["tau"]), int(p["iters"]))
        raise TrainingError(f"unknown aggregation rule {self.name!r}")

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
            key: torch.from_numpy(
                (base_state[key].detach().to(torch.float32).numpy().astype(np.float64)
                 + delta[key].numpy().astype(np.float64)).astype(np.float32)
            ).contiguous()
            for key in sorted(base_state)
        }
        return new_state, {}

    def to_spec(self) -> dict[str, Any]:
        """A canonical-JSON-safe description (numbers as decimal strings); :func:`strategy_from_spec` inverts it."""
        spec: dict[str, Any] = {"name": self.name, "params": {k: repr(v) for k, v in self.params}}
        if self.outer is not None:
            spec["outer"] = {"kind": "nesterov", "lr": repr(self.outer.lr), "momentum": repr(self.outer.momentum)}
        return spec


def _number(key: str, value: object) -> float | int:
    try:
        if key in _INT_PARAMS:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(str(value)) if not isinstance(value, float) else int(value)
        number = float(str(value)) if not isinstance(value, int | float) else float(value)
    except ValueError:
        raise TrainingError(f"strategy parameter {key}={value!r} is not a valid number") from None
    if not math.isfinite(number):
        raise TrainingError(f"strategy parameter {key}={value!r} must be finite")
    return number


def get_strategy(
    name: str,
    *,
    outer: str | None = None,
    outer_lr: float | str = 0.7,
    outer_momentum: float | str = 0.9,
    **params: object,
) -> Strategy:
    """A strategy by name: ``mean``/``fedavg``, ``median``, ``trimmed_mean(beta)``, ``krum(f, m)``,
    ``centered_clip(tau, iters)``, or ``diloco`` (mean + Nesterov outer optimizer). ``outer="nesterov"`` adds the
    outer optimizer to any rule. Numbers may be given as strings (as they travel in canonical JSON).
    """
    rule = {"fedavg": "mean", "diloco": "mean"}.get(name, name)
    if rule not in _DEFAULTS:
        raise TrainingError(f"unknown aggregation strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")
    unknown = set(params) - set(_DEFAULTS[rule])
    if unknown:
        raise TrainingError(
            f"strategy {name!r} takes no parameter(s) {sorted(unknown)}; it takes {sorted(_DEFAULTS[rule])}"
        )
    merged = {k: _number(k, params.get(k, v)) for k, v in _DEFAULTS[rule].items()}
    if rule == "trimmed_mean" and not 0 <= merged["beta"] < 0.5:
        raise TrainingError(f"trimmed_mean beta must be in [0, 0.5), got {merged['beta']}")
    if rule == "krum" and (int(merged["f"]) < 0 or int(merged["m"]) < 1):
        raise TrainingError(f"krum needs f >= 0 and m >= 1, got f={merged['f']}, m={merged['m']}")
    if rule == "centered_clip" and (not merged["tau"] > 0 or int(merged["iters"]) < 1):
        raise TrainingError(f"centered_clip needs tau > 0 and iters >= 1, got {merged}")
    if name == "diloco" and outer is None:
        outer = "nesterov"
    optimizer: OuterOptimizer | None = None
    if outer is not None:
        if outer != "nesterov":
            raise TrainingError(f"unknown outer optimizer {outer!r}; the only one is 'nesterov'")
        lr, mom = _number("outer_lr", outer_lr), _number("outer_momentum", outer_momentum)
        if not lr > 0 or not 0 <= mom < 1:
            raise TrainingError(f"outer optimizer needs lr > 0 and 0 <= momentum < 1, got {lr}, {mom}")
        optimizer = OuterOptimizer(lr=float(lr), momentum=float(mom))
    return Strategy(name=rule, params=tuple(sorted(merged.items())), outer=optimizer)


def strategy_from_spec(spec: Mapping[str, Any]) -> Strategy:
    """Inverse of :meth:`Strategy.to_spec`."""
    try:
        name = spec["name"]
        params = dict(spec.get("params", {}))
        outer = spec.get("outer")
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"strategy spec is malformed ({exc}); expected name, params, optional outer") from exc
    if outer is None:
        return get_strategy(str(name), **params)
    if not isinstance(outer, Mapping):
        raise TrainingError("strategy spec 'outer' must be an object")
    return get_strategy(
        str(name), outer=str(outer.get("kind", "nesterov")), outer_lr=outer.get("lr", 0.7),
        outer_momentum=outer.get("momentum", 0.9), **params,
    )
