"""Reading what the dashboard shows from the chain, incrementally: new logs since the last block read, and the
views of only what those logs say changed (a job, an update still pending, a round's audit, a node's stake).

:class:`ChainFacts` is blocking (web3.py's sync client): :mod:`node.http.feed` runs :meth:`ChainFacts.refresh` in a
worker thread under the chain deadline, one refresh at a time. It only calls views and ``eth_getLogs``: it never
sends a transaction (its only other read: a fast-path settlement's own transaction, for the votes in its calldata,
:mod:`node.http.signed`). Every refresh returns a new immutable :class:`ChainState`; readers never see one half-built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from node.http.facts import VERDICT_EVENTS, Vote
from node.http.signed import panel_votes, read_settle_call
from protocols.chain.events import ChainEvent
from protocols.chain.models import (
    JobInfo,
    JobStatus,
    RoundInfo,
    TrainerInfo,
    UpdateInfo,
    UpdateStatus,
    ValidatorInfo,
)
from protocols.chain.reader import JobManagerReader

T = TypeVar("T")
UpdateKey = tuple[int, int, int]
"""(job, round, slot)."""
_ACCOUNT_ARGS = ("trainer", "validator", "account", "candidate", "leader")


@dataclass(frozen=True)
class ChainState:
    """The chain as of ``block``: every log of the deployment and the views read for what they name."""

    block: int = -1
    events: tuple[ChainEvent, ...] = ()
    jobs: Mapping[int, JobInfo] = field(default_factory=dict)
    updates: Mapping[UpdateKey, UpdateInfo] = field(default_factory=dict)
    rounds: Mapping[tuple[int, int], RoundInfo] = field(default_factory=dict)
    trainers: Mapping[str, TrainerInfo] = field(default_factory=dict)
    validators: Mapping[str, ValidatorInfo] = field(default_factory=dict)
    signed_votes: Mapping[UpdateKey, tuple[Vote, ...]] = field(default_factory=dict)
    """The members' votes of updates settled on the fast path, from the settling transaction's calldata."""

    def job_events(self, job_id: int) -> list[ChainEvent]:
        return [ev for ev in self.events if ev.job_id == job_id]

    def job_updates(self, job_id: int) -> dict[tuple[int, int], UpdateInfo]:
        return {(r, s): u for (j, r, s), u in self.updates.items() if j == job_id}

    def job_signed_votes(self, job_id: int) -> dict[tuple[int, int], tuple[Vote, ...]]:
        return {(r, s): v for (j, r, s), v in self.signed_votes.items() if j == job_id}

    def job_rounds(self, job_id: int) -> dict[int, RoundInfo]:
        return {r: info for (j, r), info in self.rounds.items() if j == job_id}

    @property
    def rounds_committed(self) -> int:
        return sum(job.committed_rounds for job in self.jobs.values())

    def update_counts(self) -> dict[str, int]:
        """Updates by the contract's verdict (PENDING, ACCEPTED, REJECTED, EXPIRED)."""
        counts = {s.name: 0 for s in UpdateStatus if s != UpdateStatus.NONE}
        for u in self.updates.values():
            if u.status != UpdateStatus.NONE:
                counts[u.status.name] += 1
        return counts


def _settled(u: UpdateInfo) -> bool:
    """No view of this update can change any more."""
    return u.status in (UpdateStatus.REJECTED, UpdateStatus.EXPIRED) or (u.status == UpdateStatus.ACCEPTED and u.paid)


class ChainFacts:
    """The incremental reader; one instance per dashboard, driven by one task (not thread-safe)."""

    def __init__(self, client: JobManagerReader) -> None:
        self.client = client
        self.state = ChainState()
        self.calls = 0
        """Chain calls made so far (the dashboard's own load on the chain)."""

    def refresh(self) -> ChainState:
        """Read the logs since the last refresh and the views they make stale; returns the new state (the same
        object when nothing happened). Raises the client's ``ChainError`` subclasses."""
        old = self.state
        head = self._read(self.client.block_number)
        if head <= old.block:
            return old
        new = self._read(self._logs, old.block + 1, head)
        if not new and old.block >= 0:
            self.state = ChainState(head, old.events, old.jobs, old.updates, old.rounds, old.trainers, old.validators,
                                    old.signed_votes)
            return self.state
        jobs = dict(old.jobs)
        touched_jobs = {ev.job_id for ev in new if ev.job_id is not None}
        count = self._read(self.client.job_count)
        for job_id in range(1, count + 1):
            known = jobs.get(job_id)
            if known is None or known.status == JobStatus.ACTIVE or job_id in touched_jobs:
                jobs[job_id] = self._read(self.client.get_job, job_id)
        events = old.events + tuple(new)
        updates = dict(old.updates)
        rounds = dict(old.rounds)
        slots_hit = {(ev.job_id, int(ev.args["round"]), int(ev.args["slot"])) for ev in new
                     if ev.job_id is not None and "slot" in ev.args}
        rounds_hit = {(ev.job_id, int(ev.args["round"])) for ev in new
                      if ev.job_id is not None and "round" in ev.args and "slot" not in ev.args}
        paid_jobs = {ev.job_id for ev in new if ev.name == "PaidOut"}
        for ev in events:
            if ev.job_id is None:
                continue
            if ev.name == "UpdateSubmitted":
                key = (ev.job_id, int(ev.args["round"]), int(ev.args["slot"]))
                seen = updates.get(key)
                if seen is None or key in slots_hit or (ev.job_id in paid_jobs and not _settled(seen)):
                    updates[key] = self._read(self.client.get_update, *key)
            elif ev.name == "RoundCommitted":
                rkey = (ev.job_id, int(ev.args["round"]))
                if rkey not in rounds or rkey in rounds_hit:
                    rounds[rkey] = self._read(self.client.get_round, *rkey)
        trainers, validators = dict(old.trainers), dict(old.validators)
        registered_t = {str(ev.args["trainer"]) for ev in events if ev.name == "TrainerRegistered"}
        registered_v = {str(ev.args["validator"]) for ev in events if ev.name == "ValidatorRegistered"}
        mentioned = {str(ev.args[a]) for ev in new for a in _ACCOUNT_ARGS if a in ev.args}
        for addr in registered_t:
            if addr not in trainers or addr in mentioned:
                trainers[addr] = self._read(self.client.trainers, addr)
        for addr in registered_v:
            if addr not in validators or addr in mentioned:
                validators[addr] = self._read(self.client.validators, addr)
        signed = dict(old.signed_votes)
        signed.update(self._signed_votes(new, events, updates))
        self.state = ChainState(head, events, MappingProxyType(jobs), MappingProxyType(updates),
                                MappingProxyType(rounds), MappingProxyType(trainers), MappingProxyType(validators),
                                MappingProxyType(signed))
        return self.state

    def _signed_votes(self, new: list[ChainEvent], events: tuple[ChainEvent, ...],
                      updates: Mapping[UpdateKey, UpdateInfo]) -> dict[UpdateKey, tuple[Vote, ...]]:
        """The votes of the updates that ``new`` settles on the fast path: a verdict with no on-chain vote before it
        (``settleUpdates`` records none for a unanimous panel), read once per settling transaction."""
        voted = {(ev.job_id, int(ev.args["round"]), int(ev.args["slot"])) for ev in events
                 if ev.name == "UpdateVoted"}
        fast: dict[str, set[UpdateKey]] = {}
        for ev in new:
            if ev.name in VERDICT_EVENTS and ev.job_id is not None:
                key = (ev.job_id, int(ev.args["round"]), int(ev.args["slot"]))
                if key not in voted:
                    fast.setdefault(ev.tx_hash, set()).add(key)
        if not fast:
            return {}
        domain = self._read(self.client.ticket_domain)
        out: dict[UpdateKey, tuple[Vote, ...]] = {}
        for tx_hash, keys in fast.items():
            call = self._read(read_settle_call, self.client, tx_hash)
            if call is None:
                continue
            for vote_set in call.sets:
                key = (call.job_id, call.round, vote_set.slot)
                info = updates.get(key)
                if key in keys and info is not None:
                    out[key] = panel_votes(vote_set, job_id=call.job_id, round=call.round,
                                           anchor_block=info.anchor_block, domain=domain)
        return out

    def _logs(self, first: int, last: int) -> list[ChainEvent]:
        return self.client.get_events(from_block=first, to_block=last)

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self.calls += 1
        return fn(*args)
