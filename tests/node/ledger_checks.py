"""Checks on a finished devnet job's on-chain ledger (:class:`node.devnet.ledger.Ledger`, the one the devnet reads),
shared by the embedded and the process end-to-end tests."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from node.devnet import Devnet, DevnetResult
from protocols.chain.models import UpdateStatus


def address_of(labels: dict[str, str], label: str) -> str:
    return next(a for a, lab in labels.items() if lab == label)


def earned(result: DevnetResult, label: str) -> int:
    return result.earnings.get(address_of(result.labels, label), 0)


def node_address(net: Devnet, label: str) -> str:
    return address_of(net.labels, label)


def check_ledger(result: DevnetResult, rounds: int) -> None:
    """Every round committed exactly once, in order, with exactly its accepted slots; every accepted update paid
    exactly once and nothing else paid; only rejected updates' bonds burnt; the contract's money conserved
    (escrow + stakes + paid + refunded + slashed == deposits + stakes in) and the deposit fully accounted for."""
    ledger = result.ledger
    assert [r for r, _leader, _mask in ledger.commits] == list(range(rounds)), ledger.commits
    for r, _leader, mask in ledger.commits:
        accepted = {u.slot for u in ledger.updates if u.round == r and u.status == UpdateStatus.ACCEPTED}
        assert accepted == {s for s in range(64) if mask >> s & 1}, f"round {r}: committed mask {mask:b}"
    rejected = Counter(u.trainer for u in ledger.updates if u.status == UpdateStatus.REJECTED)
    assert Counter(t for t, _amount in ledger.trainer_slashes) == rejected, ledger.trainer_slashes
    owed: Counter[str] = Counter()
    for u in ledger.updates:
        if u.status == UpdateStatus.ACCEPTED:
            assert u.paid, f"round {u.round}: accepted update of {u.trainer} unpaid"
            owed[u.trainer] += u.amount
        else:
            assert not u.paid and u.amount == 0, f"round {u.round}: {u.status.name} update of {u.trainer} paid"
    paid: Counter[str] = Counter()
    for trainer, amount in ledger.payouts:
        paid[trainer] += amount
    assert paid == owed, f"paid out {dict(paid)}, owed for accepted updates {dict(owed)}"
    assert result.totals_conserved
    assert sum(result.earnings.values()) + result.refund == result.deposit


def check_job_status(report: dict[str, Any], result: DevnetResult, *, samples: int) -> None:
    """What ``dtnode job status`` said about the finished job agrees with the chain and with the devnet's follower."""
    rounds = len(result.rounds)
    assert (report["status"], report["rounds"]) == ("FINISHED", f"{rounds}/{rounds}")
    assert [(h["round"], h["leader"]) for h in report["history"]] == [(r, who) for r, who, _ in result.ledger.commits]
    # Measured by the command on the evaluation shard it fetched: the very figures the follower measured on the
    # same held-out images while the job ran.
    assert report["accuracy_measured_on"]["samples"] == samples
    assert [h["accuracy"] for h in report["history"]] == pytest.approx([line.accuracy for line in result.rounds])
    assert report["payments_wei"] == result.earnings
