"""Validator: replay the updates the contract draws this node for and vote: signed off-chain on the fast path,
on-chain once a panel is drawn on-chain.

First panel, fast path: the panel is not stored; ``votePanel`` recomputes it from the draw seed, and a drawn node
replays the update, signs its vote (EIP-712 ``Vote``, bound to the draw's anchor block) and gossips it on the job's
topic (:mod:`node.roles.votes`), again every few polls while the update waits (a late subscriber still hears it);
the leader posts the panel's signatures with one ``settleUpdates``. A draw gone stale (the pool changed since its
anchor) is re-anchored by the same call. A first panel that has not settled within its signing window after its anchor
(``signing_window_s``: the checks' expected time, between a sixteenth and an eighth of a lease) is drawn on-chain
(``first_draw_due``) and votes there, like an escalation panel.

A check starts early and fetches in parallel: the round's base checkpoint and the update's shard (neither is the
trainer's) are prefetched as soon as the update is admitted; once drawn, the manifest is read, then the delta and the
challenged start states are fetched at once (at most three states in transfer per node).

The contract draws each update's panel (stake-weighted) from the hash of a block mined after the submission
(``drawValidators``, which anyone may call once that block exists: validators do, as they are the ones waiting), so
neither the trainer nor the leader picks it; a disagreeing panel escalates to a bigger one, drawn the same way, and
this node votes again if drawn again. A first panel whose vote window closes without a verdict (a silent member)
is escalated by whoever sees it first (``escalateUpdate``: this role does). Segments to replay follow from
``challengeSeed(job, round, slot)``, fixed by the first draw: the trainer could not know it when it committed to its
segment hashes, and every drawn validator reads the same seed, so honest panel members check the same segments and
agree. A vote is on the exact claim the
chain holds: the ticket the chain admitted (its ``ticketHash``), the manifest's replayed work, and the loss
reduction stated at submission. Content that cannot be fetched is retried until ``content_deadline_s`` after the
first failure, then voted invalid (``CONTENT_UNAVAILABLE``); anything fetched that cannot be parsed or verified is
a rejection with a logged reason, never a crash; a vote that reverts (already settled, escalated meanwhile) is
logged and dropped.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable
from typing import Any

import trio

from node.checkpoint import decode_checkpoint
from node.limits import content_deadline_s, content_limits
from node.roles.auditor import Auditor
from node.roles.chain_view import ELECTION_EVENTS, GatedRead, JobScanner, RoundReads, ScanGate
from node.roles.context import NodeContext, ticket_expectations
from node.roles.decisions import (
    claimed_loss_reduction,
    content_given_up,
    fast_path_open,
    skip_check,
)
from node.roles.votes import VoteGossip
from node.segments import fetch_segment
from node.training.codec import decode_delta
from node.training.device import replay_device, resolve_device
from node.training.errors import TicketRejected
from node.training.local import micro_to_loss
from node.training.models import model_ref
from node.training.replay import CommittedState, Verdict, choose_segments, replay_verify, states_to_fetch
from node.training.task import Task
from node.training.ticket_check import check_update_ticket, ticket_shard
from protocols.chain.errors import ChainError, ContractRevert
from protocols.chain.models import Phase, Submission, UpdateInfo, UpdateStatus
from protocols.errors import DtnodeError
from protocols.p2p.errors import P2PError
from protocols.specs import JobSpec, UpdateManifest
from protocols.types import RejectCode
from storage.errors import StorageError

VoteKey = tuple[int, int, int, int]
"""(job, round, slot, phase): a validator votes once per phase it is drawn in."""
SignKey = tuple[int, int, int, int]
"""(job, round, slot, anchor block): a validator signs once per first-panel draw it is drawn in."""


class ValidatorRole:
    def __init__(self, ctx: NodeContext, *, jobs: tuple[int, ...] = ()) -> None:
        self.ctx = ctx
        self.scanner = JobScanner(ctx.jobs, only=jobs, watch=ctx.watch)
        self.verdicts: dict[VoteKey, Verdict] = {}
        """(job, round, slot, phase) → the verdict this node voted."""
        self._in_progress: set[VoteKey] = set()
        self._unavailable_since: dict[VoteKey, float] = {}
        """When fetching an update's content first failed (monotonic), for ``content_deadline_s``."""
        self._limit = trio.Semaphore(3)
        self._state_fetches = trio.Semaphore(3)
        """Segment states in transfer at once, over all checks (a 100M-parameter state is 1.2 GB)."""
        self._rounds: dict[int, RoundReads] = {}
        """job → its open round's submissions and admitted updates as last read (:class:`RoundReads`: read again
        only after an event that changes them). An update's base checkpoint and shard are prefetched when it is
        first seen, and it is not read again once decided (accepted, rejected or expired is final, as a slot is
        submitted once a round)."""
        self._leaders: dict[int, GatedRead[set[str]]] = {}
        """job → every leader it ever had, as last read (:meth:`_leader_history`)."""
        self.auditor = Auditor(ctx, jobs=jobs)
        """Draws audit panels and recomputes the rounds it is drawn to audit (node/roles/auditor.py)."""
        self.votes = VoteGossip(ctx)
        self.signed: dict[SignKey, tuple[bool, float]] = {}
        """(job, round, slot, anchor block) → (the vote signed, when it was last gossiped: monotonic)."""
        self._signing: set[SignKey] = set()
        self._first_checks: dict[tuple[int, int, int], trio.Event] = {}
        """(job, round, slot) → set when this node's first-panel check of that update ends (see _first_verdict)."""
        self.first_verdicts: dict[tuple[int, int, int], Verdict] = {}
        """(job, round, slot) → the verdict signed for its first panel: the same panel, drawn on-chain later (same
        seed, same challenge), votes it without a second replay."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.auditor.run)
            task_status.started()
            gate, busy, waiter = ScanGate(self.ctx.watch), False, self.ctx.watch.wakeup.waiter()
            while True:
                try:
                    stamp = await gate.due(busy=busy or bool(self._in_progress))
                    if stamp is not None:
                        busy = await self._scan(nursery)
                        gate.scanned(stamp)
                except DtnodeError as exc:  # chain down or content unreachable: retry on the next scan
                    self.ctx.log.warning("validator: %s: %s; retrying", type(exc).__name__, exc)
                await waiter.sleep(self.ctx.config.chain_poll_interval_s)

    async def _scan(self, nursery: trio.Nursery) -> bool:
        """Read every open job's admitted updates and act on each; True when one is pending (its draw, signing
        window or vote window moves with the chain: the next poll scans again, not only on a logged event)."""
        ctx = self.ctx
        pending = False
        closed = len(self.scanner.finished)
        jobs = await self.scanner.open_jobs()
        if len(self.scanner.finished) > closed:  # a job closed: its fees are all credited, take them home
            await ctx.withdraw_pay(closing=True)
        for job in jobs:
            job_id, r = job.job_id, job.committed_rounds
            reads = self._rounds.get(job_id)
            if reads is None or reads.round != r:  # a new round: the job's earlier ones are forgotten
                reads = self._rounds[job_id] = RoundReads(ctx.jobs, ctx.watch, job_id, r)
            for sub in await reads.submissions():
                last = reads.last(sub.slot)
                if last is not None and last.status != UpdateStatus.PENDING:
                    continue  # decided: nothing left to do on it
                if not reads.known(sub.slot):  # first seen: prefetch
                    nursery.start_soon(self._prefetch, job_id, r, sub.slot, job.leader)
                update = await reads.update(sub.slot)
                if fast_path_open(update):
                    await self._sign_if_drawn(nursery, job_id, r, sub, update)
                if (await ctx.jobs.draw_if_due(job_id, r, sub.slot, update)
                        or await ctx.jobs.escalate_if_due(job_id, r, sub.slot, update)):
                    update = await reads.update(sub.slot, fresh=True)
                if update.status != UpdateStatus.PENDING:
                    continue  # skip_check's "decided"
                pending = True
                key = (job_id, r, sub.slot, int(update.phase))
                if key in self.verdicts or key in self._in_progress or skip_check(update, ctx.address) is not None:
                    continue
                # Several checks at once: most of a check is waiting for content; the replay itself is short.
                self._in_progress.add(key)
                nursery.start_soon(self._validate_guarded, job_id, r, sub, update, key)
        return pending

    async def _sign_if_drawn(self, nursery: trio.Nursery, job_id: int, r: int, sub: Submission,
                             update: UpdateInfo) -> None:
        """The fast path: replay, sign and gossip this node's vote when ``votePanel`` draws it; re-gossip a vote
        already signed every few polls while the update waits; re-anchor a stale draw."""
        ctx = self.ctx
        if not await ctx.jobs.draw_ready(update.anchor_block):
            return
        anchor = update.anchor_block
        try:
            panel = await self.votes.panel(job_id, r, sub.slot, anchor)
        except ContractRevert:  # the seed block is not visible to a view yet
            return
        if not panel:  # the pool changed since the anchor: move the draw (settleUpdates re-anchors a stale one)
            await self.votes.reanchor(job_id, r, sub.slot)
            return
        if ctx.address.lower() not in (m.lower() for m in panel):
            return
        key = (job_id, r, sub.slot, anchor)
        if key in self.signed:
            valid, sent = self.signed[key]
            if time.monotonic() - sent >= 5 * ctx.config.chain_poll_interval_s:
                await self._gossip(key, valid)
            return
        if key not in self._signing:
            self._signing.add(key)
            self._first_checks.setdefault((job_id, r, sub.slot), trio.Event())
            nursery.start_soon(self._validate_guarded, job_id, r, sub, update, key)

    async def _prefetch(self, job_id: int, r: int, slot: int, leader: str | None) -> None:
        """Fetch the base checkpoint and the shard of an admitted update into the node's caches, so that a check
        drawn for it starts from the trainer's content alone. Neither is the trainer's (the round's committed
        checkpoint; the slot's shard of the customer's dataset, :func:`ticket_shard`): an update this node is not
        drawn for costs it no trainer content. A failure is only logged: the check fetches again."""
        ctx = self.ctx
        try:
            spec = await ctx.spec(job_id)
            customer = ctx.customer_of(job_id)
            dataset = await ctx.dataset(spec.dataset_cid, providers=customer)
            shard_cid = ticket_shard([s.cid for s in dataset.shards], spec, r, slot)
            base_cid = await ctx.jobs.base_checkpoint(spec, job_id, r)
            await _first_error_unwrapped(self._base(spec, job_id, base_cid, providers=[leader] if leader else []),
                                         ctx.shard(shard_cid, spec.max_dag_bytes, providers=customer))
        except (DtnodeError, KeyError, ValueError, OSError) as exc:  # never the role's end: it runs in its nursery
            ctx.log.info("job %d round %d slot %d: prefetch failed (the check fetches again): %s", job_id, r, slot,
                         exc)

    async def _base(self, spec: JobSpec, job_id: int, cid: str, *, providers: list[str]) -> bytes:
        """The round's base checkpoint, through the node's cache."""
        limits = content_limits(spec)
        return await self.ctx.fetch_cached(cid, max_bytes=limits.checkpoint_bytes,
                                           timeout_s=limits.transfer_s(limits.checkpoint_bytes,
                                                                       self.ctx.config.fetch_timeout_s),
                                           providers=[*providers, *self.ctx.customer_of(job_id)])

    async def _gossip(self, key: SignKey, valid: bool) -> None:
        job_id, r, slot, anchor = key
        try:
            await self.votes.publish(job_id, r, slot, anchor, valid)
        except DtnodeError as exc:  # not connected yet: the next poll gossips it again
            self.ctx.log.info("job %d round %d slot %d: vote not gossiped: %s", job_id, r, slot, exc)
        self.signed[key] = (valid, time.monotonic())

    async def _validate_guarded(self, job_id: int, r: int, sub: Submission, update: UpdateInfo,
                                key: VoteKey) -> None:
        ctx = self.ctx
        try:
            # Awaited outside the limit: the first-panel check it may wait for needs a place under it.
            signed = await self._first_verdict(job_id, r, sub.slot) if update.phase == Phase.VOTING else None
            async with self._limit:
                try:
                    verdict = signed if signed is not None else await self.check(job_id, r, sub)
                except (StorageError, P2PError) as exc:  # content not there (yet): retry until the deadline
                    # The spec is cached by then (check reads it first); one that cannot be read is the job's
                    # problem, not the trainer's: it propagates and is retried, never voted on.
                    deadline = content_deadline_s(await ctx.spec(job_id), ctx.config.content_deadline_s)
                    first = self._unavailable_since.setdefault(key, time.monotonic())
                    if not content_given_up(first, time.monotonic(), deadline):
                        raise
                    verdict = Verdict(False, RejectCode.CONTENT_UNAVAILABLE, math.inf, (),
                                      f"unavailable for {deadline:.0f} s: {exc}")
                await self._vote(job_id, r, sub, verdict, key)
        except DtnodeError as exc:
            ctx.log.warning("validating slot %d (%s) in job %d round %d failed: %s; will retry", sub.slot,
                            sub.trainer, job_id, r, exc)
        finally:
            self._in_progress.discard(key)
            if key in self._signing:
                self._signing.discard(key)
                self._first_checks.pop((job_id, r, sub.slot), trio.Event()).set()

    async def _first_verdict(self, job_id: int, r: int, slot: int) -> Verdict | None:
        """The verdict signed for the update's first panel, waiting for a first-panel check still running (the
        panel drawn on-chain after the signing window is the same panel with the same challenge: a second replay
        of the same update would only double the work); None when this node signed none."""
        running = self._first_checks.get((job_id, r, slot))
        if running is not None:
            await running.wait()
        return self.first_verdicts.get((job_id, r, slot))

    async def _vote(self, job_id: int, r: int, sub: Submission, verdict: Verdict, key: VoteKey) -> None:
        ctx = self.ctx
        ctx.log.info("job %d round %d: update of %s in slot %d is %s (%s; segments %s, max distance %.3g)", job_id,
                     r, sub.trainer, sub.slot, "VALID" if verdict.ok else "INVALID", verdict.reason,
                     list(verdict.checked_segments),
                     verdict.max_distance if math.isfinite(verdict.max_distance) else -1)
        if key in self._signing:  # fast path: a signed vote on the draw at key's anchor, gossiped
            self.first_verdicts[(job_id, r, sub.slot)] = verdict
            await self._gossip(key, verdict.ok)
            return
        try:
            await ctx.jobs.validate_update(job_id, r, sub.slot, verdict.ok)
        except ContractRevert as exc:
            ctx.log.info("vote on slot %d in job %d round %d reverted: %s", sub.slot, job_id, r, exc.error_name)
        # Recorded once the chain answered (a vote that failed to be mined is checked and sent again).
        self.verdicts[key] = verdict

    async def _leader_history(self, job_id: int, signer: str) -> set[str]:
        """Every leader the job ever had: its ``LeaderElected`` logs, read again only after one more was logged,
        and at once when ``signer`` is not among them (an election the node's watch has not seen yet must not
        reject the new leader's first tickets)."""
        read = self._leaders.get(job_id)
        if read is None:
            read = self._leaders[job_id] = GatedRead(ScanGate(self.ctx.watch, events=ELECTION_EVENTS,
                                                              key=(job_id, None, None)))
        fetch = functools.partial(self.ctx.jobs.leader_history, job_id)
        leaders = await read.get(fetch)
        return leaders if signer.lower() in leaders else await read.get(fetch, fresh=True)

    async def check(self, job_id: int, r: int, sub: Submission) -> Verdict:
        """Verify one admitted update's claim. Raises StorageError/P2PError while its content cannot be fetched
        (the caller retries until ``content_deadline_s``) and ChainError when the chain cannot be read."""
        ctx = self.ctx
        trainer = sub.trainer
        # Outside the verdict: a spec that cannot be read or disagrees with the chain is the job's problem, not
        # the trainer's (SpecMismatch), and is retried rather than voted on.
        spec = await ctx.spec(job_id)
        try:
            manifest = UpdateManifest.from_bytes(await ctx.fetch(sub.update_cid, max_bytes=1 << 20,
                                                                 providers=[trainer]))
            ticket = manifest.ticket
            # Any leader the job ever had (the chain checked the signer led the ticket's term). No expiry: the chain
            # admitted the update in time. The ticket must be the very one the chain admitted for this slot.
            expect = await ticket_expectations(ctx, spec, job_id, r, trainer=trainer,
                                               leaders=await self._leader_history(job_id, ticket.leader),
                                               admitted=(sub.slot, sub.ticket_hash))
            try:
                check_update_ticket(manifest, expect)
            except TicketRejected as exc:
                return Verdict(False, exc.code, math.inf, (), exc.detail)
            if claimed_loss_reduction(manifest) != sub.loss_reduction:
                return Verdict(False, RejectCode.LOSS_MISMATCH, math.inf, (),
                               f"claimed loss reduction {sub.loss_reduction} on-chain, the manifest's losses give "
                               f"{claimed_loss_reduction(manifest)}")
            limits = content_limits(spec)
            n = len(manifest.segment_hashes)
            # The chain's randomness, fixed by the first draw after submission: the same for every panel member.
            seed = await ctx.jobs.challenge_seed(job_id, r, sub.slot)
            k = spec.spot_check_segments or n
            chosen = choose_segments(seed, n, k)
            task = Task.from_ticket(spec, ticket)  # segment_every: the spec's, which check_update_ticket checked
            # The start states of the challenged segments, before the replay; an end state only if a replay differs
            # from its commitment (node.training.replay.states_to_fetch), fetched from the replay's thread. None for
            # a manifest with the wrong number of segments: replay rejects it before asking for any.
            wanted = states_to_fetch(chosen, n) if n == task.n_segments else []
            states: dict[int, CommittedState] = {}

            async def fetch_one(i: int) -> CommittedState:
                async with self._state_fetches:  # each state spills to a file as it arrives, then is decoded
                    with ctx.timed("transfer"):
                        return await fetch_segment(ctx.request, ctx.peer_of(trainer), job_id=job_id, round_=r,
                                                   index=i, state_hash=manifest.segment_hashes[i],
                                                   max_bytes=limits.state_bytes,
                                                   workdir=ctx.config.data_path / "fetched-segments")

            async def fetch_into(i: int) -> None:
                states[i] = await fetch_one(i)

            async def fetch_delta() -> bytes:
                return await ctx.fetch(manifest.delta_cid, max_bytes=limits.delta_bytes, providers=[trainer],
                                       timeout_s=limits.transfer_s(limits.delta_bytes, ctx.config.fetch_timeout_s))

            # Everything a replay needs, at once: the base and the shard (prefetched when the update was admitted,
            # see _prefetch), the delta and the challenged states.
            base_bytes, shard, delta_bytes, *_ = await _first_error_unwrapped(
                self._base(spec, job_id, ticket.base_cid, providers=[ticket.leader, trainer]),
                ctx.shard(ticket.shard_cid, spec.max_dag_bytes, providers=[*ctx.customer_of(job_id), trainer]),
                fetch_delta(), *(fetch_into(i) for i in wanted))
            base_model, _ = decode_checkpoint(base_bytes, model_ref(spec), max_bytes=limits.checkpoint_bytes)
            delta = decode_delta(delta_bytes, like=base_model, max_bytes=limits.delta_bytes)
            # Kept (pinned): the leader aggregating this update and the auditors recomputing its round may have to
            # fetch it from us, e.g. when its trainer is gone by then; they name us (the panel is on-chain), so no
            # provider record (storage/content.py).
            for cid in (sub.update_cid, manifest.delta_cid):
                await ctx.store.pin(cid, announce=False)

            def fetch_state(i: int) -> CommittedState:
                # Handed over, not shared: replay owns each state (a 100M-parameter state is 1.2 GB).
                return states.pop(i) if i in states else trio.from_thread.run(fetch_one, i)

            def work() -> Verdict:
                return replay_verify(
                    task, base_model, shard,
                    claimed_segment_hashes=manifest.segment_hashes, segment_states_fetch=fetch_state,
                    claimed_delta=delta, claimed_loss_before=micro_to_loss(manifest.loss_before_micro),
                    claimed_loss_after=micro_to_loss(manifest.loss_after_micro), segments_to_check=chosen,
                    hardware_mismatch=spec.hardware_mismatch, tolerance=float(spec.replay_tolerance),
                    max_loss_rise_ppm=spec.max_loss_rise_ppm, delta_kind=manifest.delta_encoding,
                    trainer_device=manifest.device,
                    device=replay_device(manifest.device, resolve_device(ctx.config.device)),
                )

            with ctx.timed("validation"):
                verdict = await trio.to_thread.run_sync(work)
        except (StorageError, P2PError, ChainError):
            # Not a verdict on the work: content we could not fetch (yet) or a chain hiccup. The caller retries, and
            # votes invalid once content stays unavailable past content_deadline_s (withholding costs the bond).
            raise
        except (DtnodeError, KeyError, ValueError) as exc:  # fetched, and malformed or inconsistent: invalid
            return Verdict(False, RejectCode.UNVERIFIABLE, math.inf, (), f"{type(exc).__name__}: {exc}")
        return verdict


async def _first_error_unwrapped(*calls: Awaitable[Any]) -> list[Any]:
    """Await ``calls`` concurrently and return their results in order; if any failed, raise the first failure as it
    is, not in an exception group (the caller tells content not there yet, retried, from content that fails its
    checks, a verdict, by the exception's type). A failure does not cancel the others: a segment transfer cancelled
    mid-way would leave its partial file behind (``fetch_segment`` removes it on the way out, which a cancelled task
    cannot await)."""
    results: list[Any] = [None] * len(calls)
    failed: list[Exception] = []

    async def one(i: int, call: Awaitable[Any]) -> None:
        try:
            results[i] = await call
        except Exception as exc:
            failed.append(exc)

    async with trio.open_nursery() as nursery:
        for i, call in enumerate(calls):
            nursery.start_soon(one, i, call)
    if failed:
        raise failed[0]
    return results
