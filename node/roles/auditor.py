"""Auditor: draw audit panels, recompute the checkpoints this node is drawn to audit, report them (``auditRound``).

Aggregation is deterministic (:func:`node.checkpoint.aggregate_checkpoint`): the same base checkpoint and the same
accepted deltas, in any order, give the same bytes and so the same CID. Once round r of a job is committed, anyone
may draw its audit panel (``drawAuditors``, ``DRAW_DELAY`` blocks after the commit: this role does); a drawn auditor
rebuilds the round from what the chain alone says went into it — the base (the job's initial checkpoint, or round
r-1's committed CID) and exactly the slots of the ``acceptedMask`` that ``RoundCommitted`` names — and compares the
CID of the result, computed exactly as the content store names what it adds, with the CID the leader committed. A
unanimous first panel (``AUDIT_PANEL`` validators) settles; a split one escalates to a stake-weighted panel of up
to ``ESCALATION_PANEL`` drawn the same way, whose stake majority settles, and every voter on the losing side loses
stake. A failed verdict burns the leader's bond and lets the customer cancel at once.

Which rounds: every committed round until its audit closes. This role draws each panel when due, closes a window
that ran out (``escalateAudit`` for a silent first panel, ``lapseAudit`` for an escalation without a majority),
and reports only where the panel voting now drew it (the contract refuses anyone else's report), recomputing the
checkpoint once per round.

This module must never crash the node or vote on what it could not check: content or chain trouble leaves the
round for a later scan (missing content: up to ``MAX_ATTEMPTS`` times); content that arrives but cannot be
aggregated is logged and left unaudited, because a wrong verdict either way would be worse than none.
"""

from __future__ import annotations

import trio

from node.checkpoint import aggregate_checkpoint
from node.limits import content_limits
from node.roles.chain_view import AUDIT_EVENTS, GatedRead, JobScanner, ScanGate
from node.roles.context import NodeContext
from node.roles.decisions import asked_to_audit, audits_finished, rounds_to_audit
from protocols.chain.errors import ChainError, ContractRevert
from protocols.chain.models import AuditOutcome, RoundCommit, RoundInfo
from protocols.errors import DtnodeError
from protocols.p2p.errors import P2PError
from protocols.specs import UpdateManifest
from storage.cid import cid_to_str
from storage.errors import StorageError
from storage.unixfs import import_bytes

MAX_ATTEMPTS = 5
"""Scans that may fail to fetch a round's content before the auditor gives that round up."""


def content_cid(data: bytes) -> str:
    """The CID :meth:`ContentStore.put` gives ``data`` (UnixFS, 256 KiB chunks, raw leaves, CIDv1), unstored."""
    result, _blocks = import_bytes(data)
    return cid_to_str(result.root)


class AuditPending(DtnodeError):
    """The round's audit is open and needs nothing from this node now (a panel's block is not mined yet, another
    panel is voting, or this node reported in the current phase): not a failure, look again later."""


class Auditor:
    """Audits the committed rounds of ``jobs`` (every job on-chain when empty). Run as a trio service."""

    def __init__(self, ctx: NodeContext, *, jobs: tuple[int, ...] = ()) -> None:
        self.ctx = ctx
        self.scanner = JobScanner(ctx.jobs, only=jobs, watch=ctx.watch)
        self.verdicts: dict[tuple[int, int], bool] = {}
        """(job, round) → the verdict this node recomputed (sent in each phase whose panel drew it)."""
        self._handled: dict[int, set[int]] = {}
        """job → rounds audited, skipped or given up."""
        self._commits: dict[int, dict[int, RoundCommit]] = {}
        self._attempts: dict[tuple[int, int], int] = {}
        self._rounds: dict[tuple[int, int], GatedRead[RoundInfo]] = {}
        """(job, round) → the round as last read, read again after an audit event."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        gate, busy, waiter = ScanGate(self.ctx.watch), False, self.ctx.watch.wakeup.waiter()
        while True:
            try:
                stamp = await gate.due(busy=busy)  # idle: a full scan only once the contract logged something
                if stamp is not None:
                    busy = await self._scan()
                    gate.scanned(stamp)
            except DtnodeError as exc:  # chain down: retry on the next scan
                self.ctx.log.warning("auditor: %s: %s; retrying", type(exc).__name__, exc)
            await waiter.sleep(self.ctx.config.chain_poll_interval_s)

    async def _scan(self) -> bool:
        """True while a committed round is still to be audited (its draw and windows move with the chain)."""
        busy = False
        for job in await self.scanner.scan():
            handled = self._handled.setdefault(job.job_id, set())
            for r in rounds_to_audit(job.committed_rounds, handled):
                if await self._audit_guarded(job.job_id, r):
                    handled.add(r)
                    self._rounds.pop((job.job_id, r), None)
            busy = busy or bool(rounds_to_audit(job.committed_rounds, handled))
            if audits_finished(job, handled):
                self.scanner.finished.add(job.job_id)
        return busy

    async def _audit_guarded(self, job_id: int, r: int) -> bool:
        """Audit one round; True once it needs no more attention (audited, skipped or given up)."""
        log = self.ctx.log
        try:
            await self.audit(job_id, r)
            return True
        except AuditPending:  # open, nothing to do now (not drawable yet, others voting): look again next scan
            return False
        except ChainError as exc:  # the chain is down or behind: it will answer again, so never give up for that
            log.warning("audit of job %d round %d: %s: %s; will retry", job_id, r, type(exc).__name__, exc)
            return False
        except (StorageError, P2PError) as exc:  # not a verdict: content unreachable for now, perhaps for good
            attempts = self._attempts[(job_id, r)] = self._attempts.get((job_id, r), 0) + 1
            if attempts < MAX_ATTEMPTS:
                log.warning("audit of job %d round %d: %s: %s; will retry", job_id, r, type(exc).__name__, exc)
                return False
            log.error("audit of job %d round %d: gave up after %d attempts (%s: %s)", job_id, r, attempts,
                      type(exc).__name__, exc)
            return True
        except (DtnodeError, KeyError, ValueError) as exc:  # fetched, but no checkpoint can be built from it
            log.error("audit of job %d round %d: cannot recompute the aggregate (%s: %s); not voting", job_id, r,
                      type(exc).__name__, exc)
            return True

    async def _commit_of(self, job_id: int, r: int) -> RoundCommit:
        commits = self._commits.setdefault(job_id, {})
        if r not in commits:
            for commit in await self.ctx.jobs.round_commits(job_id):
                commits[commit.round] = commit
            if r not in commits:  # a node behind the one that answered getJob: ask again later
                raise ChainError(f"job {job_id}: no RoundCommitted event for round {r} yet")
        return commits[r]

    async def _round(self, job_id: int, r: int, *, fresh: bool = False) -> RoundInfo:
        """Round ``r`` of ``job_id`` as the chain has it: read again only after an :data:`AUDIT_EVENTS` event was
        logged since the last read (or at the gate's tenth call, or when ``fresh``). Nothing else changes an audit
        (``rescan_due``), so an auditor waiting on another panel reads the head, not the round, each poll."""
        read = self._rounds.get((job_id, r))
        if read is None:
            read = self._rounds[(job_id, r)] = GatedRead(ScanGate(self.ctx.watch, events=AUDIT_EVENTS,
                                                                  key=(job_id, r, None)))
        return await read.get(lambda: self.ctx.jobs.round_info(job_id, r), fresh=fresh)

    async def audit(self, job_id: int, r: int) -> bool | None:
        """Move round ``r``'s audit on and report in it where this node is drawn; returns the verdict it sent, or
        None once the audit is closed without one from this node.

        Raises AuditPending while the audit stays open, StorageError/P2PError/ChainError when content or the chain
        cannot be reached (retry later), and SchemaError/ValueError-like errors when what was fetched cannot be
        aggregated.
        """
        ctx = self.ctx
        me = ctx.address.lower()
        commit = await self._commit_of(job_id, r)
        info = await self._round(job_id, r)
        if info.audit_draw_due():
            if not await ctx.jobs.draw_ready(info.audit_anchor):
                raise AuditPending(f"job {job_id} round {r}: audit panel not drawable yet")
            try:
                await ctx.jobs.draw_auditors(job_id, r)
            except ContractRevert as exc:  # drawn by another node meanwhile
                ctx.log.debug("drawAuditors(%d, %d): %s", job_id, r, exc.error_name)
            info = await self._round(job_id, r, fresh=True)
        if info.audit != AuditOutcome.OPEN:
            return None
        if commit.leader == me or not asked_to_audit(me, info):
            if await ctx.jobs.move_stalled_audit(job_id, r, info):
                ctx.log.info("job %d round %d: audit window over without a verdict (%s)", job_id, r,
                             info.audit_phase.name)
            raise AuditPending(f"job {job_id} round {r}: audit open ({info.audit_phase.name})")
        ok = self.verdicts.get((job_id, r))
        if ok is None:
            ok = await self._recompute(job_id, r, commit)
            self.verdicts[(job_id, r)] = ok
        try:
            result = await ctx.jobs.audit_round(job_id, r, ok)
        except ContractRevert as exc:  # audited before a restart, moved on meanwhile, or left the validator pool
            ctx.log.info("audit of job %d round %d reverted: %s", job_id, r, exc.error_name)
            raise AuditPending(f"job {job_id} round {r}: report reverted ({exc.error_name})") from exc
        names = {ev.name for ev in result.events}
        if "AuditEscalated" in names:
            ctx.log.warning("job %d round %d: the audit panel disagrees; escalated to a stake-weighted panel",
                            job_id, r)
        if "RoundDisputed" in names:
            ctx.log.warning("job %d round %d: DISPUTED (a settled failed audit); its customer may cancel", job_id, r)
        if not names & {"RoundAuditPassed", "RoundDisputed"}:
            raise AuditPending(f"job {job_id} round {r}: reported {ok}; the audit is still open")
        return ok

    async def _recompute(self, job_id: int, r: int, commit: RoundCommit) -> bool:
        """Whether the base and exactly the committed updates of round ``r`` give the committed checkpoint."""
        ctx = self.ctx
        updates = [(sub, u) for sub, u in await ctx.jobs.updates(job_id, r) if commit.accepted_mask >> sub.slot & 1]

        spec = await ctx.spec(job_id)
        base_cid = await ctx.jobs.base_checkpoint(spec, job_id, r)
        # Who holds the base: the customer published the first; each later one, the leader that committed it.
        before = [*ctx.customer_of(job_id)] if r == 0 else [(await self._commit_of(job_id, r - 1)).leader]
        base_holders = [*before, commit.leader]
        limits = content_limits(spec)
        base = await ctx.fetch_cached(base_cid, max_bytes=limits.checkpoint_bytes, providers=base_holders,
                                      timeout_s=limits.transfer_s(limits.checkpoint_bytes, ctx.config.fetch_timeout_s))
        deltas: list[tuple[bytes, int]] = []
        for sub, u in updates:  # exactly the committed set, whatever the updates' status says now
            holders = [sub.trainer, *u.validators]  # the trainer published it; its validators fetched it to replay
            manifest = UpdateManifest.from_bytes(await ctx.fetch(sub.update_cid, max_bytes=1 << 20,
                                                                 what="update manifest", providers=holders))
            delta = await ctx.fetch(manifest.delta_cid, max_bytes=limits.delta_bytes, what="delta",
                                    providers=holders,
                                    timeout_s=limits.transfer_s(limits.delta_bytes, ctx.config.fetch_timeout_s))
            deltas.append((delta, manifest.ticket.weight))

        def recompute() -> str:
            return content_cid(aggregate_checkpoint(spec, base, deltas))

        with ctx.timed("audit"):
            recomputed = await trio.to_thread.run_sync(recompute)
        ok = recomputed == commit.checkpoint_cid
        if ok:
            ctx.log.info("job %d round %d: audit OK (%d accepted updates give the committed checkpoint %s)", job_id,
                         r, len(deltas), recomputed[-10:])
        else:
            ctx.log.warning("job %d round %d: audit FAILED: leader %s committed %s, but the base %s and the %d "
                            "accepted updates give %s", job_id, r, commit.leader, commit.checkpoint_cid, base_cid,
                            len(deltas), recomputed)
        return ok
