"""Trainer: take a ticket from the job's leader, train K deterministic steps, publish, submit on-chain.

For each round of each job it serves, at most one task (the leader hands each trainer one slot per round; the
contract takes one update per slot, under the leader's EIP-712 ticket, with the loss reduction the manifest states).
Each pending update locks the job's update bond out of the trainer's stake: the trainer tops its stake up when its
free stake falls short (up to ``trainer_stake_wei``) or waits. Every step is re-read from the chain before acting,
so a restart or a leader change never leads to a double submission. Cancellation: a task cancelled mid-training
publishes nothing; one cancelled after publishing but before ``submitUpdate`` leaves only unreferenced blocks
(collected by GC).
"""

from __future__ import annotations

import hashlib
import time
from typing import ClassVar

import trio

from node.checkpoint import decode_checkpoint
from node.hardware import class_for_device
from node.limits import content_limits
from node.roles.chain_view import ROUND_CHANGE_EVENTS, UPDATE_STATE_EVENTS, GatedRead, JobScanner, ScanGate
from node.roles.context import NodeContext, ticket_expectations
from node.roles.decisions import (
    TrainerStep,
    claimed_loss_reduction,
    jobs_to_start,
    pay_left_unpaid,
    stake_shortfall,
    trainer_settles,
    trainer_step,
    wait_out_round,
)
from node.roles.votes import VoteGossip
from node.segments import SegmentSpill
from node.training.codec import State, encode_delta
from node.training.data import ArraySet
from node.training.device import resolve_device, training_device
from node.training.errors import UpdateWithheld
from node.training.local import LocalResult, loss_to_micro, train_local
from node.training.models import model_ref
from node.training.replay import loss_rise_exceeds
from node.training.task import Task
from node.training.ticket_check import check_ticket
from protocols.chain.errors import ChainError, ContractRevert
from protocols.chain.models import JobStatus, UpdateInfo
from protocols.errors import DtnodeError
from protocols.specs import JobSpec, TaskTicket, UpdateManifest
from protocols.topics import SEGMENT_PROTOCOL, TASK_PROTOCOL
from protocols.wire import TaskRequest, TaskResponse


class TrainerRole:
    withholds_rejected_work: ClassVar[bool] = True
    """Whether this trainer keeps back an update its own losses show validators would reject (``LOSS_RISE``): an
    honest one does (its bond stays free); the tests' cheating trainers submit whatever they made."""

    def __init__(self, ctx: NodeContext, *, jobs: tuple[int, ...] = ()) -> None:
        self.ctx = ctx
        self.scanner = JobScanner(ctx.jobs, only=jobs, watch=ctx.watch)
        self.completed: list[tuple[int, int, str]] = []
        """(job, round, manifest CID) of every update this node submitted."""
        self._slots: dict[tuple[int, int], int] = {}
        """(job, round) → the slot of this node's admitted update (a log never changes: read from the chain once,
        or known from its own submission)."""
        self._serving: set[int] = set()
        self.segments = SegmentSpill(ctx.config.data_path / "segments")
        """Committed segment states, served on request (node/segments.py); never published."""
        self.votes = VoteGossip(ctx)
        """Signed votes heard on the jobs' topics: a trainer posts its own update's panel if the leader does not."""
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve every open job (or only ``jobs``) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.ctx.net.set_request_handler(SEGMENT_PROTOCOL, self.segments.handle)
            task_status.started()
            while True:
                for job_id in jobs_to_start(await self.scanner.job_ids(), self._serving):
                    self._serving.add(job_id)
                    nursery.start_soon(self._serve_job, job_id)
                await trio.sleep(self.ctx.config.chain_poll_interval_s * 4)

    async def _serve_job(self, job_id: int) -> None:
        log = self.ctx.log
        try:
            if self._nursery is not None:
                await self.votes.follow(job_id, self._nursery)
            while True:
                job = await self.ctx.jobs.job(job_id)
                step = trainer_step(job)
                if step == TrainerStep.STOP:
                    log.info("job %d is closed (status %d): trainer stops serving it", job_id, job.status)
                    await self._claim_pay(job_id, job.committed_rounds)
                    return
                if step == TrainerStep.WAIT or job.leader is None:  # (WAIT is exactly "no leader")
                    await trio.sleep(self.ctx.config.chain_poll_interval_s)
                    continue
                r = job.committed_rounds
                if await self._my_slot(job_id, r) is not None:
                    await self._wait_round_change(job_id, r)
                    continue
                try:
                    done = await self._one_task(job_id, r, job.leader)
                except (DtnodeError, OSError) as exc:
                    log.warning("job %d round %d: task failed: %s", job_id, r, exc)
                    done = False
                # One poll, not the next block: a refusal that outlasts a block (not registered, no stake) would
                # otherwise be asked again at every block; the next round's request waits at the leader instead
                # (LeaderRole._round_for).
                if not done:
                    await trio.sleep(self.ctx.config.chain_poll_interval_s)
                await self.ctx.withdraw_pay()
        except Exception:
            self._serving.discard(job_id)
            log.exception("trainer loop for job %d crashed; it will be restarted", job_id)

    async def _my_slot(self, job_id: int, r: int) -> int | None:
        """The slot of this node's admitted update in round ``r`` (None: none yet)."""
        if (job_id, r) not in self._slots:
            me = self.ctx.address.lower()
            for sub in await self.ctx.jobs.submissions(job_id, r):
                if sub.trainer.lower() == me:
                    self._slots[(job_id, r)] = sub.slot
        return self._slots.get((job_id, r))

    async def _wait_round_change(self, job_id: int, r: int) -> None:
        """Until the job leaves round ``r``: it reads the job only when the contract logged what moves a round
        (:data:`ROUND_CHANGE_EVENTS`, one shared ``eth_getLogs`` a poll for the node) or every tenth poll, and
        the chain for its own update only once its votes were heard on the job's topic, and then only after an
        update event (:data:`UPDATE_STATE_EVENTS`)."""
        complete_since: float | None = None
        waiter = self.ctx.watch.wakeup.waiter()
        gate = ScanGate(self.ctx.watch, events=ROUND_CHANGE_EVENTS)
        slot = await self._my_slot(job_id, r)
        own: GatedRead[UpdateInfo] = GatedRead(ScanGate(self.ctx.watch, events=UPDATE_STATE_EVENTS,
                                                        key=(job_id, r, slot)))
        while True:
            stamp = await gate.due(busy=False)
            if stamp is not None:
                job = await self.ctx.jobs.job(job_id)
                if job.committed_rounds != r or job.status != JobStatus.ACTIVE:
                    return
                gate.scanned(stamp)
            if slot is not None:
                complete_since = await self._settle_own(job_id, r, slot, own, complete_since)
            await waiter.sleep(self.ctx.config.chain_poll_interval_s)

    async def _settle_own(self, job_id: int, r: int, slot: int, own: GatedRead[UpdateInfo],
                          complete_since: float | None) -> float | None:
        """Post this trainer's own update's complete panel of signed votes when the leader left it unposted for
        a few polls (``trainer_settles``). ``own``: the update, read again only after an update event. Returns
        since when the set has been complete (None: not complete)."""
        ctx = self.ctx
        if not self.votes.book(job_id).heard_any(r, slot):
            return None  # no vote heard yet: nothing the chain could add
        try:
            update = await own.get(lambda: ctx.jobs.update(job_id, r, slot))
            if not await self.votes.complete(job_id, r, slot, update):
                return None
            since = time.monotonic() if complete_since is None else complete_since
            if trainer_settles(since, time.monotonic(), 4 * ctx.config.chain_poll_interval_s):
                ctx.log.info("job %d round %d: posting my update's signed votes myself", job_id, r)
                await self.votes.settle_ready(job_id, r, [slot], {slot: update})
                return None
            return since
        except ChainError as exc:  # the chain is down: the leader (or a later poll) posts them
            ctx.log.info("job %d round %d: could not check my update's votes: %s", job_id, r, exc)
            return complete_since

    async def _one_task(self, job_id: int, r: int, leader: str) -> bool:
        ctx = self.ctx
        peer = ctx.peer_of(leader)
        if peer is None:
            ctx.log.info("job %d: leader %s is not among my peers yet; waiting for discovery", job_id, leader)
            return False
        spec = await ctx.spec(job_id)
        node_class = class_for_device(ctx.config, self.device_for(spec))  # a GPU node's CPU jobs: its CPU's class
        req = TaskRequest(job_id=job_id, round=r, node_class=node_class)
        raw = await ctx.request(peer, TASK_PROTOCOL, req.to_bytes())
        resp = TaskResponse.from_bytes(raw)
        if resp.ticket is None:
            ctx.log.info("job %d round %d: leader refused a task: %s %s", job_id, r, resp.reject, resp.detail)
            if wait_out_round(resp.reject):
                await self._wait_round_change(job_id, r)
            return False
        ticket = resp.ticket
        check_ticket(ticket, await ticket_expectations(ctx, spec, job_id, r, trainer=ctx.address, leaders=(leader,),
                                                       node_class=node_class, now=await ctx.jobs.chain_time()))
        if not await self._cover_bond(job_id):
            return False
        try:
            manifest_cid, claim = await self._train_and_publish(spec, ticket)
        except UpdateWithheld as exc:  # honest work the spec made useless: no bond at stake, wait for the next round
            ctx.log.warning("job %d round %d: not submitting my update (%s)", job_id, r, exc)
            await self._wait_round_change(job_id, r)
            return False
        try:
            await ctx.jobs.submit_update(ticket, manifest_cid, claim)
        except ContractRevert as exc:
            ctx.log.warning("job %d round %d: submitUpdate reverted (%s): the round moved on", job_id, r,
                            exc.error_name)
            return False
        self.completed.append((job_id, r, manifest_cid))
        self._slots[(job_id, r)] = ticket.slot
        ctx.log.info("job %d round %d: submitted update %s", job_id, r, manifest_cid)
        return True

    async def _cover_bond(self, job_id: int) -> bool:
        """Make sure free stake covers the job's update bond: top it up by the shortfall when the node's
        ``trainer_stake_wei`` allows (the stake it is willing to hold), else wait for pending updates to settle."""
        ctx = self.ctx
        bond = await ctx.jobs.update_bond(job_id)
        info = await ctx.jobs.trainer_info(ctx.address)
        short = stake_shortfall(info, bond)
        if short == 0:
            return True
        if info.stake + short > max(ctx.config.trainer_stake_wei, bond + info.locked):
            ctx.log.info("job %d: free stake %d wei below the update bond %d wei; waiting for pending updates",
                         job_id, info.free_stake, bond)
            return False
        await ctx.jobs.add_trainer_stake(short)
        ctx.log.info("job %d: added %d wei of stake to cover the update bond %d wei", job_id, short, bond)
        return True

    async def _train_and_publish(self, spec: JobSpec, ticket: TaskTicket) -> tuple[str, int]:
        """Train, publish the manifest; returns its CID and the loss reduction to claim on-chain."""
        ctx = self.ctx
        customer = ctx.customer_of(ticket.job_id)
        limits = content_limits(spec)
        base_bytes = await ctx.fetch_cached(ticket.base_cid, max_bytes=limits.checkpoint_bytes,
                                            timeout_s=limits.transfer_s(limits.checkpoint_bytes,
                                                                        ctx.config.fetch_timeout_s),
                                            providers=[ticket.leader, *customer])
        base_model, _ = decode_checkpoint(base_bytes, model_ref(spec), max_bytes=limits.checkpoint_bytes)
        shard = await ctx.shard(ticket.shard_cid, spec.max_dag_bytes, providers=customer)

        self.segments.reserve(limits.spill_bytes)
        with ctx.timed("training"):
            result = await trio.to_thread.run_sync(self.train, spec, ticket, base_model, shard)
        before, after = loss_to_micro(result.loss_before), loss_to_micro(result.loss_after)
        if self.withholds_rejected_work and loss_rise_exceeds(before, after, spec.max_loss_rise_ppm):
            raise UpdateWithheld(f"loss rose from {result.loss_before:.4f} to {result.loss_after:.4f}, past the spec's "
                                 f"{spec.max_loss_rise_ppm} ppm: validators would reject it as LOSS_RISE")
        # No provider records for a round's update: its readers (the panel, the leader, the auditors) name its holders
        # from the chain, and announcing would cost every peer DHT traffic each round (storage/content.py).
        delta_cid = await ctx.store.put(encode_delta(result.delta, kind=spec.delta_encoding), announce=False)
        if result.segment_states:  # a train() that returns its states rather than spilling them as it goes
            await trio.to_thread.run_sync(self.segments.keep, ticket.job_id, ticket.round, result.segment_states)
        manifest = UpdateManifest(
            ticket=ticket, trainer=ctx.address, delta_cid=delta_cid, delta_encoding=spec.delta_encoding,
            loss_before_micro=before, loss_after_micro=after,
            segment_every=spec.segment_every, segment_hashes=list(result.segment_hashes),
            device=self.device_for(spec),
        )
        manifest_cid = await ctx.store.put(manifest.to_bytes(), announce=False)
        ctx.log.info(
            "trained job %d round %d: %d steps, loss %.4f -> %.4f (%s)", ticket.job_id, ticket.round, ticket.steps,
            result.loss_before, result.loss_after, hashlib.sha256(manifest_cid.encode()).hexdigest()[:8],
        )
        return manifest_cid, claimed_loss_reduction(manifest)

    def train(self, spec: JobSpec, ticket: TaskTicket, base_model: State, shard: ArraySet) -> LocalResult:
        """The ticket's K deterministic local steps (blocking: runs in a worker thread).

        The one place a trainer's work is computed; the end-to-end tests' cheating trainer overrides it. Each
        segment state goes to the spill as soon as it is computed (one state in memory at a time).
        """
        return train_local(Task.from_ticket(spec, ticket), base_model, shard, device=self.device_for(spec),
                           keep=lambda state: self.segments.keep_state(ticket.job_id, ticket.round, state))

    def device_for(self, spec: JobSpec) -> str:
        """The device kind this node trains ``spec``'s tasks on (node.training.device.training_device)."""
        return training_device(resolve_device(self.ctx.config.device), hardware_mismatch=spec.hardware_mismatch)

    async def _claim_pay(self, job_id: int, committed: int) -> None:
        """Call ``payout`` for each round holding an accepted update of this trainer that nobody paid, then withdraw.

        Each leader pays its round right after committing, but one that dies after the commit that finishes the
        job pays nobody; ``payout`` is open to anyone, so the trainer collects its own pay (and the round's).
        """
        ctx = self.ctx
        me = ctx.address
        for r in range(committed):
            try:
                mine = [s for s in await ctx.jobs.submissions(job_id, r) if s.trainer.lower() == me.lower()]
                if any([pay_left_unpaid(await ctx.jobs.update(job_id, r, s.slot)) for s in mine]):
                    await ctx.jobs.payout(job_id, r)
                    ctx.log.info("job %d: collected round %d's pay a leader left unpaid", job_id, r)
            except ContractRevert as exc:  # paid meanwhile (NothingToPay)
                ctx.log.info("job %d: payout of round %d: %s", job_id, r, exc.error_name)
            except ChainError as exc:  # the chain is down: the pay stays claimable by anyone, later
                ctx.log.warning("job %d: could not check round %d for unpaid updates: %s", job_id, r, exc)
                break
        await self.ctx.withdraw_pay(closing=True)
