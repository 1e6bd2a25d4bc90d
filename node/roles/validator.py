"""Validator: replay the updates the contract drew this node for, and vote on-chain.

The contract draws each update's validators from chain randomness at submission, so neither the trainer nor the
leader picks them. Segments to replay are chosen from a seed the trainer could not know before submitting (the
drawn validator set and the manifest CID), then checked against the published segment hashes. Anything that cannot
be fetched, parsed or verified is a rejection with a logged reason, never a crash; a vote that reverts (round
already committed, quorum already reached) is logged and dropped.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import torch
import trio

from node.checkpoint import decode_checkpoint
from node.roles.auditor import Auditor
from node.roles.chain_view import JobScanner
from node.roles.context import NodeContext, ticket_expectations
from node.roles.decisions import segments_to_fetch, skip_check
from node.segments import fetch_segment
from node.training.codec import decode_delta
from node.training.errors import TicketRejected
from node.training.local import micro_to_loss
from node.training.replay import Verdict, choose_segments, replay_verify
from node.training.task import Task
from node.training.ticket_check import check_update_ticket
from protocols.chain.errors import ChainError, ContractRevert
from protocols.chain.models import UpdateInfo
from protocols.errors import DtnodeError
from protocols.p2p.errors import P2PError
from protocols.specs import UpdateManifest
from protocols.types import RejectCode
from storage.errors import StorageError


def segment_seed(job_id: int, round_: int, update_cid: str, drawn: Sequence[str]) -> bytes:
    """The seed of the segments the drawn validators replay for one update.

    Fixed only at submission (the contract draws the validator set then, so the trainer cannot know it), and the
    same for every drawn validator on purpose: the quorum decides by strict majority, so honest validators must
    check the same segments to agree. With choices of their own, one validator catching a forged segment would be
    outvoted by two who replayed other segments: P(caught) would fall from k/n to P(a majority catches it).
    """
    voters = ",".join(sorted(v.lower() for v in drawn))
    return hashlib.sha256(f"{job_id}:{round_}:{update_cid}:{voters}".encode()).digest()


class ValidatorRole:
    def __init__(self, ctx: NodeContext, *, jobs: tuple[int, ...] = ()) -> None:
        self.ctx = ctx
        self.scanner = JobScanner(ctx.jobs, only=jobs)
        self.verdicts: dict[tuple[int, int, str], Verdict] = {}
        """(job, round, trainer) → the verdict this node voted."""
        self._in_progress: set[tuple[int, int, str]] = set()
        self._limit = trio.Semaphore(3)
        self.auditor = Auditor(ctx, jobs=jobs)
        """Recomputes the rounds committed after this node was drawn in them (node/roles/auditor.py)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.auditor.run)
            task_status.started()
            while True:
                try:
                    await self._scan(nursery)
                except DtnodeError as exc:  # chain down or content unreachable: retry on the next scan
                    self.ctx.log.warning("validator: %s: %s; retrying", type(exc).__name__, exc)
                await trio.sleep(self.ctx.config.chain_poll_interval_s)

    async def _scan(self, nursery: trio.Nursery) -> None:
        ctx = self.ctx
        for job in await self.scanner.open_jobs():
            job_id, r = job.job_id, job.committed_rounds
            for trainer in await ctx.jobs.round_updates(job_id, r):
                key = (job_id, r, trainer.lower())
                if key in self.verdicts or key in self._in_progress:
                    continue
                update = await ctx.jobs.update(job_id, r, trainer)
                skip = skip_check(update, ctx.address)
                if skip is None and await ctx.jobs.has_voted(job_id, r, trainer):
                    skip = "voted-before-restart"
                if skip is not None:
                    self.verdicts[key] = Verdict(True, skip, 0.0, ())  # never re-read: the draw is final
                    continue
                # Several checks at once: most of a check is waiting for content; the replay itself is short.
                self._in_progress.add(key)
                nursery.start_soon(self._validate_guarded, job_id, r, trainer, update, key)

    async def _validate_guarded(self, job_id: int, r: int, trainer: str, update: UpdateInfo,
                                key: tuple[int, int, str]) -> None:
        try:
            async with self._limit:
                await self._validate_and_vote(job_id, r, trainer, update)
        except DtnodeError as exc:
            self.ctx.log.warning("validating %s in job %d round %d failed: %s; will retry", trainer, job_id, r, exc)
        finally:
            self._in_progress.discard(key)

    async def _validate_and_vote(self, job_id: int, r: int, trainer: str, update: UpdateInfo) -> None:
        ctx = self.ctx
        verdict, reduction = await self.check(job_id, r, trainer, update)
        self.verdicts[(job_id, r, trainer.lower())] = verdict
        ctx.log.info("job %d round %d: update of %s is %s (%s; segments %s, max distance %.3g)", job_id, r,
                     trainer, "VALID" if verdict.ok else "INVALID", verdict.reason, list(verdict.checked_segments),
                     verdict.max_distance if math.isfinite(verdict.max_distance) else -1)
        try:
            await ctx.jobs.validate_update(job_id, r, trainer, verdict.ok, reduction)
        except ContractRevert as exc:
            ctx.log.info("vote on %s in job %d round %d reverted: %s", trainer, job_id, r, exc.error_name)

    async def check(self, job_id: int, r: int, trainer: str, update: UpdateInfo) -> tuple[Verdict, int]:
        """Verify one update; returns the verdict and the loss reduction (micro-units) to report."""
        ctx = self.ctx
        # Outside the verdict: a spec that cannot be read or disagrees with the chain is the job's problem, not
        # the trainer's (SpecMismatch), and is retried rather than voted on.
        spec = await ctx.spec(job_id)
        try:
            manifest = UpdateManifest.from_bytes(await ctx.fetch(update.cid or "", max_bytes=1 << 20,
                                                                 providers=[trainer]))
            ticket = manifest.ticket
            # Any leader the job ever had: the update may have been handed out before a change of leader. No
            # expiry: the chain accepted the update within its round.
            expect = await ticket_expectations(ctx, spec, job_id, r, trainer=trainer,
                                               leaders=await ctx.jobs.leader_history(job_id))
            try:
                check_update_ticket(manifest, expect)
            except TicketRejected as exc:
                return Verdict(False, exc.code, math.inf, (), exc.detail), 0
            customer = ctx.customer_of(job_id)
            base_bytes = await ctx.fetch_cached(ticket.base_cid, max_bytes=spec.max_dag_bytes,
                                                providers=[ticket.leader, trainer, *customer])
            base_model, _ = decode_checkpoint(base_bytes,
                                              spec.model, max_bytes=spec.max_dag_bytes)
            shard = await ctx.shard(ticket.shard_cid, spec.max_dag_bytes, providers=[*customer, trainer])
            delta = decode_delta(await ctx.fetch(manifest.delta_cid, max_bytes=spec.max_dag_bytes,
                                                 providers=[trainer]), like=base_model,
                                 max_bytes=spec.max_dag_bytes)
            # Kept (pinned): the leader aggregating this update and the auditors recomputing its round may have to
            # fetch it from us, e.g. when its trainer is gone by then.
            for cid in (update.cid or "", manifest.delta_cid):
                await ctx.store.pin(cid)
            n = len(manifest.segment_hashes)
            seed = segment_seed(job_id, r, update.cid or "", update.validators)
            k = spec.spot_check_segments or n
            chosen = choose_segments(seed, n, k)
            states: dict[int, Mapping[str, torch.Tensor]] = {}
            for i in segments_to_fetch(chosen, n):
                with ctx.timed("transfer"):
                    states[i] = await fetch_segment(ctx.request, ctx.peer_of(trainer), job_id=job_id, round_=r,
                                                    index=i, state_hash=manifest.segment_hashes[i],
                                                    max_bytes=spec.max_dag_bytes)

            def fetch_state(i: int) -> Mapping[str, torch.Tensor]:
                return states[i]

            def work() -> Verdict:
                return replay_verify(
                    # segment_every: the spec's, which check_update_ticket checked the manifest claims too.
                    Task.from_ticket(spec, ticket), base_model, shard,
                    claimed_segment_hashes=manifest.segment_hashes, segment_states_fetch=fetch_state,
                    claimed_delta=delta, claimed_loss_before=micro_to_loss(manifest.loss_before_micro),
                    claimed_loss_after=micro_to_loss(manifest.loss_after_micro), segments_to_check=chosen,
                    hardware_mismatch=spec.hardware_mismatch, tolerance=float(spec.replay_tolerance),
                    max_loss_rise_ppm=spec.max_loss_rise_ppm, delta_kind=manifest.delta_encoding,
                )

            with ctx.timed("validation"):
                verdict = await trio.to_thread.run_sync(work)
        except (StorageError, P2PError, ChainError):
            # Not a verdict on the work: content we could not fetch (yet) or a chain hiccup. Retry later; a trainer
            # that withholds its content never gets a vote, so its update expires unpaid at the round's commit.
            raise
        except (DtnodeError, KeyError, ValueError) as exc:  # fetched, and malformed or inconsistent: invalid
            return Verdict(False, RejectCode.UNVERIFIABLE, math.inf, (), f"{type(exc).__name__}: {exc}"), 0
        reduction = verdict.reduction_micro  # recomputed, never the trainer's claim
        return verdict, reduction
