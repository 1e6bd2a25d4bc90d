"""Signed first-panel votes: a validator signs its vote (EIP-712 ``Vote``) and gossips it on the job's topic; the
leader (or a trainer whose update waits) hears them and posts every complete panel of a round with one
``settleUpdates`` transaction.

Nothing here decides a verdict: the validator's replay does. A vote heard on the topic is kept only when its
EIP-712 signature recovers to the node that gossiped it; whether that node sits on the panel is the contract's
check (``votePanel`` gives the panel, ``settleUpdates`` refuses any other signer). Once a first panel is drawn
on-chain (``first_draw_due``: its signing window passed without a settlement) the validators vote there instead.

Cancellation: :meth:`VoteGossip.follow` starts one task in the caller's nursery; cancelling it ends the task.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from node.roles.context import NodeContext
from node.roles.decisions import VoteBook, fast_path_open
from protocols.chain.errors import ChainError, ContractRevert
from protocols.chain.models import UpdateInfo
from protocols.chain.ticket import ChainVote, VoteSet, sign_vote, vote_signer
from protocols.errors import DtnodeError, SchemaError
from protocols.messages import SignedVote, WireMessage
from protocols.topics import job_topic
from protocols.types import Address


class VoteGossip:
    """The signed votes one node has heard, per job, and the two things done with them: publish, settle."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.books: dict[int, VoteBook] = {}
        self._following: set[int] = set()
        self._panels: dict[tuple[int, int, int, int], tuple[str, ...]] = {}

    def book(self, job_id: int) -> VoteBook:
        return self.books.setdefault(job_id, VoteBook())

    async def follow(self, job_id: int, nursery: trio.Nursery) -> None:
        """Subscribe to the job's topic (once) and record every well-signed vote heard on it, in ``nursery``."""
        if job_id in self._following:
            return
        try:
            # Subscribing announces the topic to every peer: bounded, like every wait on peers.
            with trio.fail_after(self.ctx.config.request_timeout_s):
                channel = await self.ctx.net.subscribe(job_topic(job_id))
        except (DtnodeError, trio.TooSlowError) as exc:  # settlements fall back to the on-chain path
            self.ctx.log.warning("job %d: cannot follow signed votes (%s); on-chain votes only", job_id,
                                 exc or "subscription timed out")
            return
        self._following.add(job_id)
        nursery.start_soon(self._record, job_id, channel)

    async def _record(self, job_id: int, channel: trio.MemoryReceiveChannel[tuple[WireMessage, Address]]) -> None:
        domain = await self.ctx.jobs.ticket_domain()
        async with channel:
            async for msg, sender in channel:
                if not isinstance(msg, SignedVote) or msg.job_id != job_id:
                    continue
                vote = ChainVote(msg.job_id, msg.round, msg.slot, msg.anchor_block, msg.valid)
                signature = bytes.fromhex(msg.signature[2:])
                try:
                    if vote_signer(vote, domain, signature).lower() != sender.lower():
                        continue  # a vote relayed or forged by another node: only its own signer may gossip it
                except SchemaError:
                    continue
                self.book(job_id).add(msg.round, msg.slot, msg.anchor_block, sender, msg.valid, signature)
                self.ctx.watch.wakeup.fire()  # a leader waiting on the panel settles at once

    async def publish(self, job_id: int, r: int, slot: int, anchor: int, valid: bool) -> None:
        """Sign this node's vote on the draw at ``anchor``, keep it, and gossip it on the job's topic."""
        ctx = self.ctx
        vote = ChainVote(job_id, r, slot, anchor, valid)
        signature = sign_vote(vote, await ctx.jobs.ticket_domain(), ctx.account)
        self.book(job_id).add(r, slot, anchor, ctx.address, valid, signature)
        await ctx.net.publish(job_topic(job_id), SignedVote(job_id=job_id, round=r, slot=slot, anchor_block=anchor,
                                                            valid=valid, signature="0x" + signature.hex()))

    async def panel(self, job_id: int, r: int, slot: int, anchor: int) -> tuple[str, ...]:
        """``votePanel`` for the draw at ``anchor``, cached once known (a draw's panel never changes; a stale one
        reads empty and is not cached). Raises ContractRevert before the seed block is visible to a view."""
        key = (job_id, r, slot, anchor)
        if key not in self._panels:
            panel, at = await self.ctx.jobs.vote_panel(job_id, r, slot)
            if not panel or at != anchor:
                return ()
            self._panels[key] = panel
        return self._panels[key]

    async def reanchor(self, job_id: int, r: int, slot: int) -> None:
        """Move a stale draw (the pool changed since its anchor) with ``settleUpdates``; a race with another node
        doing the same reverts harmlessly."""
        await self._post(job_id, r, [VoteSet(slot=slot, valid_mask=0, signatures=())])

    async def _open_set(self, job_id: int, r: int, slot: int, update: UpdateInfo | None = None) -> VoteSet | None:
        """The complete set heard for an update the fast path can still settle, or None. Reads the chain only for
        an update of which at least one vote was heard, and not when the caller just read it (``update``)."""
        ctx = self.ctx
        if not self.book(job_id).heard_any(r, slot):  # nothing heard: no chain read
            return None
        if update is None:
            update = await ctx.jobs.update(job_id, r, slot)
        if not fast_path_open(update) or not self.book(job_id).heard(r, slot, update.anchor_block):
            return None
        try:
            panel = await self.panel(job_id, r, slot, update.anchor_block)
        except ContractRevert:  # seed block not visible to a view yet
            return None
        return self.book(job_id).vote_set(r, slot, update.anchor_block, panel)

    async def complete(self, job_id: int, r: int, slot: int, update: UpdateInfo | None = None) -> bool:
        """Whether this node heard a whole first panel's votes on an update the fast path can still settle
        (``update``: as the caller read it, not read again)."""
        return await self._open_set(job_id, r, slot, update) is not None

    async def settle_ready(self, job_id: int, r: int, slots: list[int],
                           read: Mapping[int, UpdateInfo] | None = None) -> int:
        """Post every complete panel heard for ``slots`` of round ``r`` in one ``settleUpdates``. ``read``: slot →
        the update as the caller read it this poll (not read again). Returns how many sets were posted (0 when none
        was complete, or when the call reverted because another node settled first)."""
        read = read or {}
        sets = [found for slot in slots
                if (found := await self._open_set(job_id, r, slot, read.get(slot))) is not None]
        if not sets or not await self._post(job_id, r, sets):
            return 0
        self.ctx.log.info("job %d round %d: settled %d update(s) from signed votes in one transaction", job_id, r,
                          len(sets))
        return len(sets)

    async def _post(self, job_id: int, r: int, sets: list[VoteSet]) -> bool:
        ctx = self.ctx
        try:
            await ctx.jobs.settle_updates(job_id, r, sets)
        except ContractRevert as exc:  # settled, re-anchored or drawn by another node meanwhile: re-read later
            ctx.log.info("job %d round %d: settleUpdates reverted (%s)", job_id, r, exc.error_name)
            return False
        except ChainError as exc:
            ctx.log.warning("job %d round %d: settleUpdates failed: %s", job_id, r, exc)
            return False
        return True
