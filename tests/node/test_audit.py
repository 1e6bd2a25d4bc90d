"""Validators audit committed aggregates, end to end: real in-process nodes on an in-process py-evm chain.

(a) An honest job: every committed round's audit panel (drawn by ``drawAuditors`` after the commit) audits it OK
(the committing leader never audits itself), and nothing is disputed. (b) A leader that commits a perturbed
aggregate: the panel's audits fail, the unanimous panel disputes the round (the leader's bond burnt), and the
customer cancels at once — while the cheat's lease still runs — and gets the unspent deposit back; the contract's
money adds up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import trio

from node.checkpoint import decode_checkpoint, encode_checkpoint
from node.devnet import Devnet, DevnetPlan, demo_spec, run_devnet
from node.roles.decisions import RoundClose, RoundState
from node.roles.leader import CommitOutcome, LeaderRole
from protocols.chain.client import JobManagerClient
from protocols.chain.events import ChainEvent
from protocols.chain.models import JobStatus, Phase, UpdateStatus
from protocols.errors import DtnodeError
from protocols.specs import JobSpec

pytestmark = pytest.mark.slow

WAIT_S = 120.0


class PerturbingLeader(LeaderRole):
    """Aggregates honestly, then nudges one weight before publishing and committing: a wrong checkpoint that still
    decodes and evaluates like a real one."""

    def aggregate(self, spec: JobSpec, base_bytes: bytes, deltas: list[tuple[bytes, int]]) -> bytes:
        model, outer = decode_checkpoint(super().aggregate(spec, base_bytes, deltas), spec.model,
                                         max_bytes=spec.max_dag_bytes)
        name = sorted(model)[0]
        return encode_checkpoint({**model, name: model[name] + 1e-3}, outer)


def _plan(**overrides: object) -> DevnetPlan:
    spec = demo_spec(rounds=2, trainers=2, model="fmnist-mlp-v1", local_steps=20, lease_seconds=120, quorum=2)
    settings: dict[str, object] = dict(spec=spec, trainers=2, validators=2, leaders=1, embedded=True, shards=8,
                                       eval_samples=300, final_eval_samples=500, timeout_s=400.0,
                                       out=lambda _line: None)
    settings.update(overrides)
    return DevnetPlan(**settings)  # type: ignore[arg-type]


async def _events(client: JobManagerClient, job_id: int, *names: str) -> list[ChainEvent]:
    return await trio.to_thread.run_sync(lambda: client.get_events(names=list(names), job_id=job_id))


async def _until(what: str, check: Callable[[], object], timeout_s: float = WAIT_S) -> None:
    """Polls an async-free ``check`` (run in a thread: it reads the chain) until it is truthy, or fails naming it."""
    deadline = time.monotonic() + timeout_s
    while not await trio.to_thread.run_sync(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        await trio.sleep(0.5)


async def test_honest_rounds_are_audited_ok_by_their_validators() -> None:
    audits: dict[int, dict[str, bool]] = {}
    expected: dict[int, set[str]] = {}

    async def on_finished(net: Devnet, job_id: int) -> None:
        client = net.client
        assert client is not None
        committers = {int(e.args["round"]): str(e.args["leader"]).lower()
                      for e in await _events(client, job_id, "RoundCommitted")}

        def all_audited() -> bool:
            for ev in client.get_events(names=["AuditorsDrawn"], job_id=job_id):  # asked: the round's audit panel
                if ev.args["phase"] == Phase.VOTING:  # an honest round never escalates (asserted below)
                    expected[int(ev.args["round"])] = {v.lower() for v in ev.args["auditors"]}
            if set(expected) != set(committers):
                return False
            audits.clear()
            for ev in client.get_events(names=["RoundAudited"], job_id=job_id):
                audits.setdefault(int(ev.args["round"]), {})[str(ev.args["auditor"]).lower()] = bool(ev.args["ok"])
            return all(set(audits.get(r, {})) >= who for r, who in expected.items())

        await _until(f"every committed round audited by its audit panel {expected}", all_audited)
        assert not any(committers[r] in who for r, who in expected.items()), "a leader never audits its commit"

        assert await _events(client, job_id, "RoundDisputed") == []
        assert await _events(client, job_id, "AuditEscalated") == []
        assert not (await trio.to_thread.run_sync(lambda: client.get_job(job_id))).disputed

    result = await run_devnet(_plan(), on_finished=on_finished)
    assert len(result.rounds) == 2 and result.totals_conserved
    assert set(expected) == {0, 1} and all(expected.values()), expected  # every round had auditors
    assert {r: set(by) for r, by in audits.items()} == expected, "only the drawn audit panel audits"
    assert all(ok for by in audits.values() for ok in by.values()), audits


async def test_a_wrong_aggregate_is_disputed_and_the_customer_cancels_at_once() -> None:
    plan = _plan(spec=demo_spec(rounds=3, trainers=2, model="fmnist-mlp-v1", local_steps=20, lease_seconds=120,
                                quorum=1),
                 leader_cls={"leader-1": PerturbingLeader})
    net = Devnet(plan)
    seen: dict[str, object] = {}

    async def on_ready(net: Devnet, job_id: int) -> None:
        client = net.client
        assert client is not None
        await _until("a RoundDisputed event", lambda: client.get_events(names=["RoundDisputed"], job_id=job_id))
        job = await trio.to_thread.run_sync(lambda: client.get_job(job_id))
        chain_now = await trio.to_thread.run_sync(lambda: int(client.w3.eth.get_block("latest")["timestamp"]))
        assert job.disputed and job.status == JobStatus.ACTIVE and chain_now < job.lease_expiry
        seen["cancelled"] = await trio.to_thread.run_sync(lambda: client.cancel_job(job_id))
        seen["job_id"] = job_id

    with pytest.raises(BaseException) as stopped:  # noqa: PT011 (an ExceptionGroup from the devnet's nursery)
        await run_devnet(plan, devnet=net, on_ready=on_ready)
    _, others = _split(stopped.value)
    assert others is None, f"the devnet stopped for another reason: {others!r}"

    client, job_id = net.client, int(str(seen["job_id"]))
    assert client is not None
    job = client.get_job(job_id)
    assert job.status == JobStatus.CANCELLED and job.disputed
    disputed = client.get_events(names=["RoundDisputed"], job_id=job_id)
    # The whole first panel failed it: AUDIT_PANEL capped by the devnet's two validators.
    assert [int(e.args["round"]) for e in disputed] == [0] and disputed[0].args["failures"] == 2
    round0 = [e for e in client.get_events(names=["RoundAudited"], job_id=job_id) if int(e.args["round"]) == 0]
    leader = str(client.get_events(names=["RoundCommitted"], job_id=job_id)[0].args["leader"])
    assert round0 and not any(e.args["ok"] for e in round0), "every audit of the perturbed round failed"
    assert leader not in {e.args["auditor"] for e in round0}, "a leader never audits its own commit"
    burnt = client.get_events(names=["LeaderBondForfeited"], job_id=job_id)
    assert [e.args["leader"] for e in burnt] == [leader], "the dispute burns the committing leader's bond"
    refund = int(seen["cancelled"].event("JobCancelled").args["refund"])  # type: ignore[attr-defined]
    assert refund == job.refunded == job.deposit - job.spent > 0
    assert client.balance_of(client.sender) == refund
    assert client.totals().conserved


def _split(exc: BaseException) -> tuple[object, object]:
    """(the devnet's "job was cancelled" error, anything else) out of what run_devnet raised."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(lambda e: isinstance(e, DtnodeError) and "cancelled" in str(e))
    if isinstance(exc, DtnodeError) and "cancelled" in str(exc):
        return exc, None
    return None, exc


async def test_an_accepted_update_of_a_dead_trainer_still_goes_into_the_aggregate() -> None:
    """The leader fetches it from the validators that replayed it (they keep what they fetched), so the round's
    audits pass; an aggregate without it would fail them."""
    about_to_commit, killed = trio.Event(), trio.Event()
    victim: list[str] = []

    class WaitingLeader(LeaderRole):
        async def _commit(self, spec: JobSpec, st: RoundState, close: RoundClose) -> CommitOutcome:
            if st.round == 0 and not victim:
                victim.append(close.accepted[0][1].lower())
                about_to_commit.set()
                with trio.fail_after(WAIT_S):
                    await killed.wait()
            return await super()._commit(spec, st, close)

    async def on_ready(net: Devnet, job_id: int) -> None:
        with trio.fail_after(WAIT_S):
            await about_to_commit.wait()
        net.kill(net.labels[victim[0]])
        killed.set()

    audits: list[ChainEvent] = []

    async def on_finished(net: Devnet, job_id: int) -> None:
        client = net.client
        assert client is not None
        def round0_audited() -> bool:
            audits[:] = [e for e in client.get_events(names=["RoundAudited"], job_id=job_id)
                         if int(e.args["round"]) == 0]
            return bool(audits)

        await _until("round 0 audited", round0_audited)

    result = await run_devnet(_plan(leader_cls={"leader-1": WaitingLeader}), on_ready=on_ready,
                              on_finished=on_finished)
    assert len(result.rounds) == 2 and result.totals_conserved
    dead = [u for u in result.ledger.updates if u.round == 0 and u.trainer == victim[0]]
    assert [(u.status, u.paid) for u in dead] == [(UpdateStatus.ACCEPTED, True)]
    assert audits and all(e.args["ok"] for e in audits), [dict(e.args) for e in audits]
