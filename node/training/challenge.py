"""Which segments of an update are challenged, and how likely a partial forgery is caught.

The trainer commits to every segment state (their hashes in the manifest, whose CID goes on-chain at submission);
the challenge follows from a 32-byte seed that exists only after that (the contract's ``challengeSeed(job, round,
slot)``, from a block after the submission). The trainer can neither see the seed before committing nor vary it
afterwards, so it cannot grind its manifest until only honest segments are drawn. The last segment defines the
delta (delta = its weights − base) and is always challenged.

Never derive the seed from anything the trainer controls (its manifest CID, its address): see issue 14.

Choosing n (segments per task) and k (challenged per update) is a trade between two goals (issue 14): a trainer that
fakes half its steps must be caught with ≥ 99 % over 5 updates (:func:`catch_probability`), and the replay summed
over the quorum, ``quorum · k / n`` of the trainer's steps (:func:`replay_share`), must leave room under 50 % of the
trainer's compute for what every validator does besides replaying (two loss evaluations and hashing the fetched and
replayed states). :func:`plan_challenge` finds the smallest such n; docs/protocol.md has the arithmetic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from math import comb

from node.training.errors import TrainingError

SEED_BYTES = 32


def choose_segments(seed: bytes, n: int, k: int) -> list[int]:
    """The ``min(max(k, 1), n)`` challenged segment indices of an ``n``-segment update, ascending.

    Always contains ``n - 1`` (the delta-defining segment); the other ``k - 1`` are a Fisher-Yates draw over
    ``0..n-2`` driven by sha256(seed ‖ counter), so every validator holding the seed computes the same set (the
    quorum must check the same segments to agree by majority). ``k = 0`` challenges only the last segment; the
    caller maps the spec's "0 = all" to ``k = n``.
    """
    if len(seed) != SEED_BYTES:
        raise TrainingError(f"the challenge seed must be {SEED_BYTES} bytes (challengeSeed), got {len(seed)}")
    if n < 0 or k < 0:
        raise TrainingError(f"n and k must be >= 0, got {n}, {k}")
    if n == 0:
        return []
    pool = list(range(n - 1))
    take = min(max(k, 1), n) - 1
    for i in range(take):
        digest = hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        j = i + int.from_bytes(digest, "big") % (len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return sorted(pool[:take]) + [n - 1]


def catch_probability(n: int, k: int, faked: int, *, updates: int = 1, last_faked: bool = False) -> float:
    """P(at least one faked segment is challenged) when ``faked`` of ``n`` segments are faked and ``k`` are
    challenged with :func:`choose_segments`, over ``updates`` independent updates (independent seeds).

    ``1 − C(n − faked, k) / C(n, k)`` per update for a uniform draw of ``k``. Because the last segment is always
    drawn, a trainer that fakes it is caught with certainty (``last_faked``); one that avoids it faces
    ``k − 1`` uniform draws over the other ``n − 1`` segments: ``1 − C(n − 1 − faked, k − 1) / C(n − 1, k − 1)``.
    """
    if not 0 <= faked <= n or n < 1 or k < 1:
        raise TrainingError(f"need 0 <= faked <= n, n >= 1, k >= 1; got n={n}, k={k}, faked={faked}")
    k = min(k, n)
    if faked == 0:
        return 0.0
    if last_faked:
        return 1.0
    if faked > n - 1:
        raise TrainingError("a trainer that avoids the last segment can fake at most n - 1 of them")
    draws, pool = k - 1, n - 1
    miss = comb(pool - faked, draws) / comb(pool, draws) if draws <= pool else 0.0
    return 1.0 - miss**updates


def catch_probability_uniform(n: int, k: int, fraction: float, *, updates: int = 1) -> float:
    """The textbook figure ``1 − (C(n − fn, k) / C(n, k))^updates`` for ``k`` uniform draws (no pinned segment)."""
    faked = round(fraction * n)
    if not 0 <= faked <= n or k < 0:
        raise TrainingError(f"need 0 <= fraction <= 1 and k >= 0; got {fraction}, {k}")
    k = min(k, n)
    miss = comb(n - faked, k) / comb(n, k)
    return 1.0 - miss**updates


def replay_share(n: int, k: int, quorum: int) -> float:
    """Steps replayed by a quorum of ``quorum`` validators, each replaying the same ``k`` of ``n`` equal segments,
    as a fraction of the trainer's steps."""
    if n < 1 or k < 1 or quorum < 1:
        raise TrainingError(f"need n, k, quorum >= 1; got {n}, {k}, {quorum}")
    return quorum * min(k, n) / n


@dataclass(frozen=True)
class ChallengePlan:
    n: int
    """Segments per task."""
    k: int
    """Challenged per update, the last one included."""
    catch_half_faked: float
    """P(caught) over ``updates`` updates of a trainer faking half the segments (the last one spared)."""
    replay_share: float
    """:func:`replay_share` for the quorum."""


def plan_challenge(quorum: int, *, max_share: float, target: float = 0.99, updates: int = 5,
                   max_k: int = 16, max_n: int = 10_000) -> ChallengePlan:
    """The smallest ``n`` (then the smallest ``k``) whose challenge catches a trainer faking half its segments
    (``⌊n / 2⌋`` of them, all but the last) with at least ``target`` over ``updates`` updates, while the quorum
    replays at most ``max_share`` of the trainer's steps. Raises TrainingError when none exists up to ``max_n``."""
    for n in range(2, max_n + 1):
        for k in range(2, min(max_k, n) + 1):
            share = replay_share(n, k, quorum)
            if share > max_share:
                break
            caught = catch_probability(n, k, n // 2, updates=updates)
            if caught >= target:
                return ChallengePlan(n, k, caught, share)
    raise TrainingError(f"no n <= {max_n} catches half-faked tasks with {target} at a replay share <= {max_share}")


def cheat_expected_value(*, saved: float, caught: float, bond: float, pay: float) -> float:
    """A faker's expected gain per update: the compute it ``saved`` (valued at most at its pay) when not caught,
    minus, with probability ``caught``, the burnt ``bond`` and the ``pay`` it loses. Negative means cheating does
    not pay."""
    if not 0.0 <= caught <= 1.0:
        raise TrainingError(f"caught must be a probability, got {caught}")
    return (1.0 - caught) * saved - caught * (bond + pay)
