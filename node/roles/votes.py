"""Signed first-panel votes: a validator signs its vote (EIP-712 ``Vote``) and gossips it on the job's topic; the
leader (or a trainer whose update waits) hears them and posts every complete panel of a round with one
``settleUpdates`` transaction.

Nothing here decides a verdict: the validator's replay does. A vote heard on the topic is kept only when its
EIP-712 signature recovers to the node that gossiped it; whether that node sits on the panel is the contract's
check (``votePanel`` gives the panel, ``settleUpdates`` refuses any other signer). Once a first panel is drawn
on-chain (``first_draw_due``: a sixteenth of a lease without a settlement) the validators vote there instead.

Cancellation: :meth:`VoteGossip.follow` starts one task in the caller's nursery; cancelling it ends the task.
"""

from __future__ import annotations

import trio

from node.roles.context import NodeContext
from node.roles.decisions import VoteBook, fast_path_open
from protocols.chain.errors import ChainError, ContractRevert
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

    async def publish(self, job_id: int, r: int, slot: int, anchor: int, valid: bool) -> None:
        """Sign this node's vote on the draw at ``anchor``, keep it, and gossip it on the job's topic."""
        ctx = self.ctx
        vote = ChainVote(job_id, r, slot, anchor, valid)
        signature = sign_vote(vote, await ctx.jobs.ticket_domain(), ctx.account)
        self.book(job_id).add(r, slot, anchor, ctx.address, valid, signature)
        await ctx.net.publish(job_topic(job_id), SignedVote(job_id=job_id, round=r, slot=slot, anchor_block=anchor,
                                                            valid=valid, signature="0x" + signature.hex()))

    async def complete(self, job_id: int, r: int, slot: int) -> bool:
        """Whether this node heard a whole first panel's votes on an update the fast path can still settle."""
        ctx = self.ctx
        try:
            update = await ctx.jobs.update(job_id, r, slot)
            if not fast_path_open(update) or not await ctx.jobs.draw_ready(update.anchor_block):
                return False
            panel, anchor = await ctx.jobs.vote_panel(job_id, r, slot)
        except ContractRevert:
            return False
        return bool(panel) and self.book(job_id).vote_set(r, slot, anchor, panel) is not None

    async def settle_ready(self, job_id: int, r: int, slots: list[int]) -> int:
        """Post every complete panel heard for ``slots`` of round ``r`` in one ``settleUpdates``; a slot whose
        draw went stale (pool changed) is re-anchored by the same call. Returns how many sets were posted (0 when
        none was complete, or when the call reverted because another node settled first)."""
        ctx = self.ctx
        sets: list[VoteSet] = []
        for slot in slots:
            try:
                update = await ctx.jobs.update(job_id, r, slot)
                if not fast_path_open(update) or not await ctx.jobs.draw_ready(update.anchor_block):
                    continue
                panel, anchor = await ctx.jobs.vote_panel(job_id, r, slot)
            except ContractRevert:  # seed block not mined for the view yet
                continue
            if not panel:
                sets.append(VoteSet(slot=slot, valid_mask=0, signatures=()))  # stale draw: re-anchors
                continue
            found = self.book(job_id).vote_set(r, slot, anchor, panel)
            if found is not None:
                sets.append(found)
        if not sets:
            return 0
        try:
            await ctx.jobs.settle_updates(job_id, r, sets)
        except ContractRevert as exc:  # settled or drawn by another node meanwhile: the next poll re-reads
            ctx.log.info("job %d round %d: settleUpdates reverted (%s)", job_id, r, exc.error_name)
            return 0
        except ChainError as exc:
            ctx.log.warning("job %d round %d: settleUpdates failed: %s", job_id, r, exc)
            return 0
        ctx.log.info("job %d round %d: settled %d update(s) from signed votes in one transaction", job_id, r,
                     len(sets))
        return len(sets)
