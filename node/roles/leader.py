"""Leader candidate for one job: stand, win or wait, and while leading run rounds until the job is done.

The chain is the only source of truth about who leads and which round is next, so a new leader resumes from the
last committed round and its checkpoint on IPFS (the checkpoint carries the outer optimizer's state), never from the
old leader's memory. A round:

1. hand each trainer that asks (trainers learn of the round from the chain) one ticket for a free slot, sized by
   its class and signed with EIP-712 for the current term (``submitUpdate`` checks it);
2. watch the chain for the submitted updates' verdicts: post the first panels' signed votes heard on the job's
   topic with one ``settleUpdates`` per poll (:mod:`node.roles.votes`), and draw on-chain the panels that are due
   (an escalation at once, a first panel that did not settle within its signing window);
3. close when every slot is decided, or when no ticket is outstanding, or at the round's deadline (before the lease
   runs out), so a trainer or validator that never answers cannot stall it;
4. aggregate the accepted deltas deterministically, evaluate, publish, ``commitRound`` with exactly the accepted
   slots (a verdict that lands meanwhile makes it revert ``WrongAcceptedSet``: re-read and aggregate again), which
   renews the lease, and ``payout`` every accepted trainer.

Standing costs a bond (``minLeaderBond``); when the leader's lease lapses, candidates call ``drawSuccessor`` and
the drawn one claims (any candidate once the grace window is over).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

import torch
import trio

from node.checkpoint import aggregate_checkpoint, decode_checkpoint
from node.limits import content_limits
from node.roles.chain_view import LEADERSHIP_EVENTS, RoundReads, ScanGate
from node.roles.context import NodeContext
from node.roles.decisions import (
    CloseReason,
    LeaderStep,
    RoundClose,
    RoundState,
    TicketLifetime,
    candidate_idle_s,
    candidate_poll_s,
    ineligibility,
    leader_step,
    lease_open,
    refuse_before_reading,
    refuse_slot,
    round_close,
)
from node.roles.votes import VoteGossip
from node.training.evaluate import evaluate
from node.training.models import model_ref
from node.training.objective import format_metric, headline
from node.training.task import task_size, work_units
from node.training.ticket_check import ticket_seed, ticket_shard
from protocols.chain.errors import ContractRevert
from protocols.chain.models import JobStatus, UpdateInfo, UpdateStatus
from protocols.errors import DtnodeError
from protocols.specs import JobSpec, RoundRecord, TaskTicket, UpdateManifest
from protocols.types import NodeClass, RejectCode
from protocols.wire import TaskRequest, TaskResponse


class CommitOutcome(enum.Enum):
    DONE = "done"
    """Committed (or the chain says the round is not ours to commit any more)."""
    STALE_SET = "stale-set"
    """``WrongAcceptedSet``: a verdict landed meanwhile; collect and aggregate again."""
    GAVE_UP = "gave-up"
    """Nothing committed: an accepted update cannot be fetched, or none was accepted; let the lease lapse."""


OPEN_WAIT_S = 2.0
"""How long a task request for the round about to open waits for it (well within a trainer's request timeout)."""


class LeaderRole:
    def __init__(self, ctx: NodeContext, job_id: int, *, eval_samples: int = 2000,
                 on_commit: Callable[[RoundRecord], None] | None = None) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.eval_samples = eval_samples
        self.on_commit = on_commit
        self.current: RoundState | None = None
        self._opened = trio.Event()
        """Set (and replaced) each time a round opens: a request for the next round waits for it
        (:meth:`_round_for`)."""
        self.records: list[RoundRecord] = []
        self._min_stake: int | None = None
        self._bond: int | None = None
        self._skew = 0.0
        """Chain time minus this machine's clock, as last read: ticket expiries are checked on-chain in block time,
        which runs ahead of the clock on a chain that mines a block per transaction (eth-tester)."""
        self.ticket_lifetime = TicketLifetime(base_s=ctx.config.task_timeout_s)
        """Learns how long this job's tasks take (see :class:`~node.roles.decisions.TicketLifetime`)."""
        self.votes = VoteGossip(ctx)
        """The first panels' signed votes heard on the job's topic, posted with ``settleUpdates``."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stand as candidate, then lead whenever the chain says so, until the job is finished or cancelled.

        Cancellation: the vote listener runs in this method's nursery and ends with it."""
        await self._stand()
        async with trio.open_nursery() as nursery:
            task_status.started()
            await self._lead(nursery)
            nursery.cancel_scope.cancel()

    async def _lead(self, nursery: trio.Nursery) -> None:
        """``nursery``: where the vote listener runs once this candidate first leads. A candidate that never leads
        does not follow the job's votes: each would cost it a receive and a forward per mesh peer, and it posts
        none. One that takes over hears a pending update's votes again: its validators gossip them anew every few
        polls while it waits (node/roles/validator.py)."""
        ctx = self.ctx
        poll_s = ctx.config.chain_poll_interval_s
        # An idle candidate (another node leads) reads the job in full only when the contract logged a leadership
        # event or its lease nears its end (candidate_idle_s): a round's ~30 other events are no news to it, and
        # the node's one eth_getLogs a poll replaces 3 reads.
        gate, idle_until = ScanGate(ctx.watch, events=LEADERSHIP_EVENTS), -math.inf
        while True:
            try:
                stamp = await gate.due(busy=time.monotonic() >= idle_until)
                if stamp is None:
                    await trio.sleep(candidate_poll_s(poll_s, idle_until - time.monotonic()))
                    continue
                job = await ctx.jobs.job(self.job_id)
                now = await ctx.jobs.chain_time() if job.status == JobStatus.ACTIVE else 0
                drawn = await ctx.jobs.successor(self.job_id) if job.successor_anchor else None
                standing = await self._standing() if job.status == JobStatus.ACTIVE and lease_open(job, now) else True
                step = leader_step(job, ctx.address, now, drawn, standing=standing)
                gate.scanned(stamp)
                idle_until = time.monotonic() + candidate_idle_s(step, job, ctx.address, now, poll_s)
                if step == LeaderStep.STOP:
                    ctx.log.info("job %d is closed (status %d): leader candidate stops", self.job_id, job.status)
                    await ctx.withdraw_pay(closing=True)
                    return
                if step == LeaderStep.LEAD:
                    await self.votes.follow(self.job_id, nursery)
                    await self._run_round(job.committed_rounds, job.term, job.lease_expiry, now)
                    continue
                if step == LeaderStep.STAND:
                    await self._stand()
                    continue  # the successor is drawn from the candidates at claim time: read it again
                if step == LeaderStep.DRAW_SUCCESSOR:
                    await self._draw_successor(job.leader or "nobody")
                if step == LeaderStep.CLAIM:
                    await self._try_claim(job.leader or "nobody")
            except DtnodeError as exc:  # chain down, content unreachable, bad data: retry, never crash the node
                ctx.log.warning("leader of job %d: %s: %s; retrying", self.job_id, type(exc).__name__, exc)
            await trio.sleep(ctx.config.chain_poll_interval_s)

    async def _standing(self) -> bool:
        candidates = await self.ctx.jobs.candidates(self.job_id)
        return self.ctx.address.lower() in [c.address.lower() for c in candidates]

    async def _stand(self) -> None:
        """Stand with the minimum bond unless already a candidate (the bond is locked while standing): at start,
        and again whenever the lease is open and this node lost its candidacy (``LeaderStep.STAND``)."""
        ctx = self.ctx
        if await self._standing():
            return
        bond = await ctx.jobs.min_leader_bond()
        try:
            await ctx.jobs.stand_for_leader(self.job_id, bond)
        except ContractRevert as exc:  # full list of larger bonds, or the job closed meanwhile: retried next poll
            ctx.log.warning("job %d: cannot stand as leader candidate (%s)", self.job_id, exc.error_name)
            return
        ctx.log.info("stood as leader candidate for job %d with a bond of %d wei", self.job_id, bond)

    async def _draw_successor(self, lapsed: str) -> None:
        ctx = self.ctx
        try:
            await ctx.jobs.draw_successor(self.job_id)
            ctx.log.warning("job %d: the lease of %s lapsed; successor draw requested", self.job_id, lapsed)
        except ContractRevert as exc:  # another candidate asked first (SuccessorDrawPending)
            ctx.log.debug("job %d: drawSuccessor: %s", self.job_id, exc.error_name)

    async def _try_claim(self, previous: str) -> None:
        ctx = self.ctx
        try:
            await ctx.jobs.claim_leadership(self.job_id)
            ctx.log.warning("job %d: took over leadership from %s", self.job_id, previous)
        except ContractRevert as exc:
            ctx.log.debug("job %d: cannot claim leadership yet (%s)", self.job_id, exc.error_name)

    # -- serving trainers -------------------------------------------------------------------------------------

    async def handle_task_request(self, request: TaskRequest, trainer: str) -> TaskResponse:
        """Answer one trainer's request for a task (called by the node's stream handler)."""
        ctx = self.ctx
        st = await self._round_for(request.round)
        refusal = refuse_before_reading(st, request.round)
        if refusal is not None:
            return refusal
        assert st is not None  # refused above when not leading
        key = trainer.lower()
        held = st.live_ticket(trainer, self._now())
        if held is not None:
            return TaskResponse(ticket=held)
        # Answer from memory wherever possible: a slow handler makes trainers time out and reset streams.
        spec = await ctx.spec(self.job_id)
        if key not in st.eligible:
            problem = await self._ineligible(trainer, spec)
            if problem:
                return TaskResponse(reject=RejectCode.NOT_REGISTERED, detail=problem)
            st.eligible.add(key)
        self.ticket_lifetime.lapsed(st.newly_lapsed(self._now()), cap_s=spec.payment.lease_seconds)
        refusal = refuse_slot(st, trainer, spec.tasks_per_round, self._now())
        if refusal is not None:
            return refusal
        slot = st.free_slot(spec.tasks_per_round, self._now())
        assert slot is not None  # refuse_slot refused a full round
        ticket = await self._make_ticket(spec, st, trainer, request.node_class, slot)
        st.tickets[key] = ticket
        st.issued_at[key] = self._now()
        ctx.log.info("job %d round %d: ticket for %s in slot %d (class %s, %d steps on shard %s, for %.0f s)",
                     self.job_id, st.round, trainer, slot, request.node_class, ticket.steps, ticket.shard_cid[-8:],
                     ticket.expires_at - st.issued_at[key])
        return TaskResponse(ticket=ticket)

    async def _round_for(self, r: int) -> RoundState | None:
        """The open round, once it is ``r`` or :data:`OPEN_WAIT_S` passed: a trainer hears of a commit as it is
        mined and asks for the next round's task while this node is still paying the last one and opening it; it
        gets its ticket the moment the round opens instead of a refusal and a poll later."""
        with trio.move_on_after(OPEN_WAIT_S):
            while (st := self.current) is None or st.round + 1 == r:
                await self._opened.wait()
        return self.current

    def _open(self, st: RoundState) -> None:
        """Hand out ``st``'s tickets from now on, and answer the requests waiting for it."""
        self.current = st
        self._opened.set()
        self._opened = trio.Event()

    def _now(self) -> float:
        """Chain time, from this machine's clock and the skew last read (answers without a chain read)."""
        return time.time() + self._skew

    async def _ineligible(self, trainer: str, spec: JobSpec) -> str:
        """Why the contract would refuse an update from ``trainer`` (empty when it would not): see
        :func:`~node.roles.decisions.ineligibility`."""
        info = await self.ctx.jobs.trainer_info(trainer)
        if self._min_stake is None or self._bond is None:
            self._min_stake = await self.ctx.jobs.min_trainer_stake()
            self._bond = await self.ctx.jobs.update_bond(self.job_id)
        return ineligibility(info, self._min_stake, self._bond)

    async def _make_ticket(self, spec: JobSpec, st: RoundState, trainer: str, node_class: NodeClass,
                           slot: int) -> TaskTicket:
        dataset = await self.ctx.dataset(spec.dataset_cid)
        shard = ticket_shard(dataset.shard_cids, spec, st.round, slot)
        size = task_size(spec, node_class)
        count = next(s.samples for s in dataset.shards if s.cid == shard)
        ticket = TaskTicket(
            job_id=self.job_id, round=st.round, term=st.term, slot=slot, base_cid=st.base_cid,
            shard_cid=shard, sample_start=0, sample_count=count, steps=size.steps,
            batch_size=size.batch_size, seed=ticket_seed(spec, self.job_id, st.round, slot),
            node_class=node_class, weight=size.weight, work_units=work_units(spec, node_class), trainer=trainer,
            leader=self.ctx.address,
            expires_at=self.ticket_lifetime.expiry(self._now(), st.hard_deadline - time.monotonic()),
        )
        return ticket.signed_by(self.ctx.account, await self.ctx.jobs.ticket_domain())

    # -- running a round --------------------------------------------------------------------------------------

    async def _run_round(self, r: int, term: int, lease_expiry: int, now: int) -> None:
        ctx = self.ctx
        spec = await ctx.spec(self.job_id)
        base_cid = await ctx.jobs.base_checkpoint(spec, self.job_id, r)
        # Commit well before the lease runs out, whatever the round timeout says.
        margin = max(5.0, spec.payment.lease_seconds * 0.2)
        budget = min(ctx.config.round_timeout_s, lease_expiry - now - margin)
        # Loaded before serving, so ticket requests are answered from memory.
        await ctx.dataset(spec.dataset_cid, ctx.customer_of(self.job_id))
        lease_left = lease_expiry - now - margin
        self._skew = now - time.time()
        st = RoundState(round=r, base_cid=base_cid, term=term, deadline=time.monotonic() + max(budget, 1.0),
                        hard_deadline=time.monotonic() + max(lease_left, 1.0))
        self._open(st)
        ctx.log.info("job %d: leading round %d/%d from %s (term %d)", self.job_id, r + 1, spec.rounds,
                     base_cid[-10:], term)
        try:
            while True:
                close = await self._collect(spec, st)
                self.current = None  # no more tickets for this round while it is being committed
                outcome = await self._commit(spec, st, close) if close.accepted else CommitOutcome.GAVE_UP
                if outcome != CommitOutcome.STALE_SET:
                    break
            if outcome == CommitOutcome.GAVE_UP:
                await trio.sleep(max(0.0, st.hard_deadline - time.monotonic()) + margin)
        finally:
            self.current = None

    async def _collect(self, spec: JobSpec, st: RoundState) -> RoundClose:
        """Wait for verdicts (drawing panels when due); returns how the round closes (see
        :func:`~node.roles.decisions.round_close`)."""
        ctx = self.ctx
        reads = RoundReads(ctx.jobs, ctx.watch, self.job_id, st.round)  # each read again only after its events
        settled = False  # verdicts this node just posted: read the updates again now, not at the watch's next look
        waiter = ctx.watch.wakeup.waiter()  # a new block, log or signed vote ends the wait
        while True:
            read: dict[int, UpdateInfo] = {}
            for sub in await reads.submissions():
                if sub.slot not in st.submitted and sub.trainer.lower() in st.issued_at:
                    self.ticket_lifetime.filled(self._now() - st.issued_at[sub.trainer.lower()])
                st.submitted[sub.slot] = sub.trainer.lower()
                if sub.slot in st.decided:
                    continue
                u = await reads.update(sub.slot, fresh=settled)
                if u.status in (UpdateStatus.ACCEPTED, UpdateStatus.REJECTED):
                    st.decided[sub.slot] = (u.status, sub.trainer, sub.update_cid)
                elif not (await ctx.jobs.draw_if_due(self.job_id, st.round, sub.slot, u)
                          or await ctx.jobs.escalate_if_due(self.job_id, st.round, sub.slot, u)):
                    read[sub.slot] = u  # not moved by this node: settle_ready need not read it again
            undecided = sorted(set(st.submitted) - set(st.decided))
            settled = bool(undecided) and await self.votes.settle_ready(self.job_id, st.round, undecided, read) > 0
            if settled:
                continue  # verdicts landed: read them at once
            self._skew = await ctx.jobs.chain_time() - time.time()
            close = round_close(st, spec.tasks_per_round, now=self._now(), mono=time.monotonic())
            if close is None:
                await waiter.sleep(ctx.config.chain_poll_interval_s)
                continue
            if close.reason == CloseReason.DEADLINE:
                ctx.log.warning("job %d round %d: deadline reached with %d accepted of %d submitted",
                                self.job_id, st.round, len(close.accepted), len(st.submitted))
            elif close.reason == CloseReason.LEASE_ENDING:
                ctx.log.warning("job %d round %d: no accepted update before the lease ends", self.job_id, st.round)
            return close

    def aggregate(self, spec: JobSpec, base_bytes: bytes, deltas: list[tuple[bytes, int]]) -> bytes:
        """The round's new checkpoint (runs in a worker thread; tests override it to play a cheating leader)."""
        return aggregate_checkpoint(spec, base_bytes, deltas)

    async def _fetch_accepted(self, spec: JobSpec, st: RoundState, slot: int, trainer: str,
                              manifest_cid: str) -> tuple[bytes, int] | None:
        """An accepted update's (delta bytes, weight), from its trainer or else from any peer that holds it (its
        validators fetched it to replay it), retried until the round's hard deadline; None if it never came."""
        ctx = self.ctx
        limits = content_limits(spec)
        holders = [trainer]
        while True:
            left = st.hard_deadline - time.monotonic()
            problem = f"no answer within {max(left, 1.0):.0f} s"
            with trio.move_on_after(max(left, 1.0)):
                try:
                    manifest = UpdateManifest.from_bytes(await ctx.fetch(manifest_cid, max_bytes=1 << 20,
                                                                         providers=holders))
                    delta = await ctx.fetch(manifest.delta_cid, max_bytes=limits.delta_bytes, providers=holders,
                                            timeout_s=limits.transfer_s(limits.delta_bytes, ctx.config.fetch_timeout_s))
                    return delta, manifest.ticket.weight
                except DtnodeError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= st.hard_deadline:
                ctx.log.error("job %d round %d: the accepted update %s of %s cannot be fetched (%s)", self.job_id,
                              st.round, manifest_cid, trainer, problem)
                return None
            ctx.log.warning("job %d round %d: fetching %s's accepted update failed (%s); retrying", self.job_id,
                            st.round, trainer, problem)
            if holders == [trainer]:
                u = await ctx.jobs.update(self.job_id, st.round, slot)
                holders = [trainer, *u.validators]
            await trio.sleep(ctx.config.chain_poll_interval_s)

    async def _commit(self, spec: JobSpec, st: RoundState, close: RoundClose) -> CommitOutcome:
        """Aggregate every accepted update, publish and commit exactly their slots."""
        ctx = self.ctx
        accepted = close.accepted
        limits = content_limits(spec)
        base_bytes = await ctx.fetch_cached(st.base_cid, max_bytes=limits.checkpoint_bytes,
                                            providers=ctx.customer_of(self.job_id),
                                            timeout_s=limits.transfer_s(limits.checkpoint_bytes,
                                                                        ctx.config.fetch_timeout_s))
        deltas: list[tuple[bytes, int]] = []
        used = [manifest_cid for _, _, manifest_cid in accepted]
        for slot, trainer, manifest_cid in accepted:
            fetched = await self._fetch_accepted(spec, st, slot, trainer, manifest_cid)
            if fetched is None:
                # Auditors recompute the round from every update the chain marks accepted: an aggregate without
                # this one would be a wrong checkpoint. Better no commit: the lease lapses and a successor (or
                # this node, re-elected) tries again, or the job stalls and its customer cancels it.
                ctx.log.error("job %d round %d: not committing: an aggregate without %s's accepted update would "
                              "not be the round's checkpoint; letting the lease lapse", self.job_id, st.round,
                              trainer)
                return CommitOutcome.GAVE_UP
            deltas.append(fetched)
        with ctx.timed("aggregation"):
            new_bytes = await trio.to_thread.run_sync(self.aggregate, spec, base_bytes, deltas)
        eval_set = await ctx.shard(spec.eval_cid, spec.max_dag_bytes, providers=ctx.customer_of(self.job_id))
        model_state, _ = decode_checkpoint(new_bytes, model_ref(spec), max_bytes=limits.checkpoint_bytes)

        def run_eval() -> tuple[float, float]:
            state: dict[str, torch.Tensor] = model_state
            return evaluate(model_ref(spec), state, eval_set, max_samples=self.eval_samples, task=spec.task)

        with ctx.timed("evaluation"):
            accuracy, loss = await trio.to_thread.run_sync(run_eval)
        new_cid = await ctx.store.put(new_bytes)
        await ctx.store.pin(new_cid)
        record = RoundRecord(job_id=self.job_id, round=st.round, base_cid=st.base_cid, checkpoint_cid=new_cid,
                             accepted=sorted(used), eval_accuracy_ppm=round(accuracy * 1e6),
                             eval_loss_micro=max(0, round(loss * 1e6)))
        record_cid = await ctx.store.put(record.to_bytes())
        await ctx.store.pin(record_cid)
        try:
            await ctx.jobs.commit_round(self.job_id, st.round, new_cid, close.mask)
        except ContractRevert as exc:
            if exc.error_name == "JobManagerWrongAcceptedSet":
                # A verdict settled between our read and the commit: re-read the round and aggregate again.
                ctx.log.warning("job %d round %d: the accepted set changed before the commit (%s); re-reading",
                                self.job_id, st.round, exc.args_decoded)
                return CommitOutcome.STALE_SET
            ctx.log.error("job %d round %d: commitRound reverted (%s)", self.job_id, st.round, exc.error_name)
            return CommitOutcome.DONE  # nothing to wait out: this round is not ours to commit (any more)
        self.records.append(record)
        if self.on_commit is not None:
            self.on_commit(record)
        ctx.log.info("job %d: committed round %d/%d: %d accepted, eval %s, checkpoint %s", self.job_id, st.round + 1,
                     spec.rounds, len(used), format_metric(*headline(spec.task, accuracy, loss)), new_cid[-10:])
        await self.pay(st.round)
        await ctx.withdraw_pay()
        return CommitOutcome.DONE

    async def pay(self, r: int) -> None:
        """``payout`` the round just committed: one call credits each of its accepted updates (tests override it:
        a leader that dies before paying; trainers then collect their pay themselves when the job closes)."""
        ctx = self.ctx
        try:
            await ctx.jobs.payout(self.job_id, r)
        except ContractRevert as exc:
            ctx.log.info("payout of round %d: %s", r, exc.error_name)
