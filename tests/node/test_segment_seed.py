"""Which segments the drawn validators replay: unknown before submission, the same for the whole quorum."""

from __future__ import annotations

import hashlib

from node.roles.validator import segment_seed
from node.training.replay import choose_segments

DRAWN = ["0xAaAa000000000000000000000000000000000001", "0xbbbb000000000000000000000000000000000002",
         "0xcccc000000000000000000000000000000000003"]


def test_the_quorum_shares_one_seed_that_depends_on_the_submission() -> None:
    seed = segment_seed(5, 2, "bafy-update", DRAWN)
    # Every drawn validator computes it, whatever order or case it reads the drawn set in: the quorum's honest
    # members replay the same segments and so agree.
    assert segment_seed(5, 2, "bafy-update", [d.upper() for d in reversed(DRAWN)]) == seed
    # It is the seed validators have always used (a change would split a network running mixed versions).
    assert seed == hashlib.sha256(b"5:2:bafy-update:" + ",".join(sorted(d.lower() for d in DRAWN)).encode()).digest()
    # Another update, round or drawn set (which the contract draws only at submission) gives another seed.
    assert segment_seed(5, 2, "bafy-other", DRAWN) != seed
    assert segment_seed(5, 3, "bafy-update", DRAWN) != seed
    assert segment_seed(5, 2, "bafy-update", DRAWN[:2]) != seed


def test_choices_spread_over_all_segments() -> None:
    """Over many submissions every segment is drawn about k/n of the time: a trainer has no safe segment to forge."""
    counts = [0] * 10
    for u in range(500):
        for i in choose_segments(segment_seed(1, 0, f"bafy-{u}", DRAWN), 10, 2):
            counts[i] += 1
    assert sum(counts) == 1000
    assert all(70 <= c <= 130 for c in counts), counts  # expected 100 each
