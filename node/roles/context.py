"""What every role shares: config, the node's account, the chain (:attr:`NodeContext.jobs`, a
:class:`~node.roles.chain_view.ChainView`), the network and the content store.

Fetching content always goes through :meth:`NodeContext.fetch` (size limit + deadline + verification by the
store), and decoding of anything fetched happens here or in the role, never trusting the bytes.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from eth_account.signers.local import LocalAccount

from node.chainio import AsyncChain
from node.config import NodeConfig
from node.content import ContentNode
from node.limits import MIN_RATE, content_limits
from node.roles.chain_view import ChainView, ChainWatch, check_spec
from node.roles.decisions import signing_window_s
from node.training.data import ArraySet, decode_shard
from node.training.models.onnx_graph import load_model_files
from node.training.task import task_size
from node.training.tasks import capacity
from node.training.ticket_check import TicketExpectations
from protocols.chain.client import JobManagerClient
from protocols.chain.errors import ChainError
from protocols.errors import DtnodeError
from protocols.p2p.errors import RequestTimeout
from protocols.p2p.node import P2PNode
from protocols.specs import JobSpec
from protocols.types import NodeClass
from storage.content import ContentStore
from storage.dataset import DatasetManifest, fetch_dataset_manifest

_T = TypeVar("_T")


async def ticket_expectations(ctx: NodeContext, spec: JobSpec, job_id: int, r: int, *, trainer: str,
                              leaders: Collection[str], node_class: NodeClass | None = None,
                              now: float | None = None,
                              admitted: tuple[int, bytes] | None = None) -> TicketExpectations:
    """What the chain and the job's spec say a ticket of ``trainer`` in round ``r`` must be (for
    :func:`node.training.ticket_check.check_ticket`, shared by trainer and validator; ``admitted``: the slot and
    ``ticketHash`` the chain admitted, for a validator)."""
    base = await ctx.jobs.base_checkpoint(spec, job_id, r)
    dataset = await ctx.dataset(spec.dataset_cid, providers=ctx.customer_of(job_id))
    return TicketExpectations(spec=spec, domain=await ctx.jobs.ticket_domain(), job_id=job_id, round=r,
                              trainer=trainer, leaders=leaders, base_cid=base,
                              shard_samples={s.cid: s.samples for s in dataset.shards}, node_class=node_class,
                              now=now, admitted=admitted)


def expected_check_s(spec: JobSpec) -> float:
    """Seconds the first panel of a ``spec`` update needs to check it, on the slowest node and link the job's
    limits assume: the delta and ``spot_check_segments`` start states at :data:`~node.limits.MIN_RATE`, then their
    replay (``segment_every`` steps each, of the largest class's task) and the two loss passes of ``loss_samples``
    at class S's throughput; times ``tasks_per_round``, because a round's updates are submitted together and a
    member may sit on every panel of the round (a small pool)."""
    limits = content_limits(spec)
    task = task_size(spec, NodeClass.L)
    k = min(spec.spot_check_segments or limits.segments_per_task, math.ceil(task.steps / spec.segment_every))
    transfer_s = (limits.delta_bytes + k * limits.state_bytes) / MIN_RATE
    samples = k * spec.segment_every * task.batch_size + 2 * spec.loss_samples
    return spec.tasks_per_round * (transfer_s + samples / capacity(NodeClass.S).samples_per_s)


@dataclass
class NodeContext:
    config: NodeConfig
    account: LocalAccount
    client: JobManagerClient
    chain: AsyncChain
    net: P2PNode
    content: ContentNode
    """The node's block store and exchange (``content.store``), shared with the customer commands' assembly."""
    log: logging.Logger
    _specs: dict[int, JobSpec] = field(default_factory=dict)
    _datasets: dict[str, DatasetManifest] = field(default_factory=dict)
    _shards: dict[str, ArraySet] = field(default_factory=dict)
    _blobs: dict[str, bytes] = field(default_factory=dict)
    _customers: dict[int, str] = field(default_factory=dict)
    _inflight: dict[str, trio.Event] = field(default_factory=dict)
    """CID → set when the task loading it into ``_blobs`` or ``_shards`` ends (see ``_cached``)."""
    nursery: trio.Nursery | None = None
    """The node's nursery, for calls the caller may abandon (:meth:`request`)."""
    timings: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    """Seconds spent per activity (fetch, train, replay, aggregate, ...): the devnet benchmark's breakdown."""
    jobs: ChainView = field(init=False)
    """The job contract as this node's roles use it: every call under the chain deadline."""
    watch: ChainWatch = field(init=False)
    """Whether the contract logged anything, read once a poll for all roles (an idle role's ``ScanGate``)."""

    def __post_init__(self) -> None:
        self.jobs = ChainView(client=self.client, chain=self.chain, address=str(self.account.address),
                              signing_window=self.signing_window_s)
        self.watch = ChainWatch(self.jobs, poll_s=self.config.chain_poll_interval_s)

    async def signing_window_s(self, job_id: int) -> int:
        """Seconds a first panel of ``job_id`` has to sign before it may be drawn on-chain
        (:func:`~node.roles.decisions.signing_window_s` of the job's lease and :func:`expected_check_s`)."""
        return signing_window_s(await self.jobs.lease_seconds(job_id), expected_check_s(await self.spec(job_id)))

    async def withdraw_pay(self, *, closing: bool = False) -> None:
        """Withdraw this node's credited pay once it reaches ``withdraw_min_wei``, or all of it when ``closing`` (a
        job it served closed). A chain that is down only delays it: the credit stays on the contract."""
        try:
            owed = await self.jobs.withdraw_if_owed(1 if closing else self.config.withdraw_min_wei)
        except ChainError as exc:
            self.log.warning("withdraw failed: %s", exc)
            return
        if owed:
            self.log.info("withdrew %d wei", owed)

    @contextmanager
    def timed(self, what: str) -> Iterator[None]:
        start = trio.current_time()
        try:
            yield
        finally:
            self.timings[what] += trio.current_time() - start

    @property
    def address(self) -> str:
        return str(self.account.address)

    @property
    def store(self) -> ContentStore:
        return self.content.store

    async def fetch(self, cid: str, *, max_bytes: int | None = None, what: str = "content",
                    providers: Sequence[str] = (), timeout_s: float | None = None) -> bytes:
        """Verified bytes of ``cid`` under the fetch deadline (``timeout_s``, default the node's
        ``fetch_timeout_s``; model content passes :meth:`node.limits.ContentLimits.transfer_s`), asking ``providers``
        (addresses) first: see :meth:`node.content.ContentNode.fetch`."""
        limit = max_bytes if max_bytes is not None else self.config.max_dag_bytes
        with self.timed("transfer"):
            return await self.content.fetch(cid, max_bytes=limit, what=what, providers=providers, timeout_s=timeout_s)

    async def request(self, peer: Any, protocol: Any, payload: bytes) -> bytes:
        """A request/response call that the caller can always walk away from at its deadline.

        py-libp2p 0.8.1 resets a stream that failed to open inside a shielded cancel scope with no deadline
        (``BasicHost.new_stream``); on a wedged connection that reset never returns, so the library call can
        outlive any deadline we put around it. The call therefore runs in its own task in the node's nursery and
        the caller waits only until the deadline; a wedged call finishes (or not) on its own.
        """
        timeout = self.config.request_timeout_s
        if self.nursery is None:
            return await self.net.request(peer, protocol, payload, timeout=timeout)
        send, receive = trio.open_memory_channel[tuple[bytes | None, DtnodeError | None]](1)

        async def call() -> None:
            try:
                result = await self.net.request(peer, protocol, payload, timeout=timeout)
                send.send_nowait((result, None))
            except DtnodeError as exc:
                send.send_nowait((None, exc))

        self.nursery.start_soon(call)
        with trio.move_on_after(timeout + 2):
            result, error = await receive.receive()
            if error is not None:
                raise error
            assert result is not None
            return result
        raise RequestTimeout(f"{protocol} to {peer}: no answer within {timeout + 2:.0f} s")

    async def fetch_cached(self, cid: str, *, max_bytes: int | None = None, providers: Sequence[str] = (),
                           timeout_s: float | None = None) -> bytes:
        """Like :meth:`fetch`, memoised for immutable content this node reads repeatedly (checkpoints, shards)."""
        async def load() -> bytes:
            if len(self._blobs) > 64:
                self._blobs.clear()
            return await self.fetch(cid, max_bytes=max_bytes, providers=providers, timeout_s=timeout_s)

        return await self._cached(self._blobs, cid, load)

    async def _cached(self, cache: dict[str, _T], cid: str, load: Callable[[], Awaitable[_T]]) -> _T:
        """``cache[cid]``, loaded once by ``load()``. One transfer per CID at a time: a validator prefetches a
        round's checkpoint and shards when an update is admitted, and its check of the update may ask for them
        before they arrived. A load that failed leaves the cache empty and the next caller loads itself."""
        while (running := self._inflight.get(cid)) is not None:
            await running.wait()
        if cid not in cache:
            self._inflight[cid] = trio.Event()
            try:
                cache[cid] = await load()
            finally:
                self._inflight.pop(cid).set()
        return cache[cid]

    async def spec(self, job_id: int) -> JobSpec:
        """The job's spec, fetched by the CID recorded on-chain and validated, also against the job's on-chain
        parameters: raises :class:`~node.roles.chain_view.SpecMismatch` when they differ (the contract pays and
        counts by its own copy)."""
        if job_id not in self._specs:
            info = await self.jobs.job(job_id)
            data = await self.fetch(info.params.spec_cid, max_bytes=1 << 20, what="job spec",
                                    providers=[info.customer])
            self._customers[job_id] = info.customer
            spec = check_spec(JobSpec.from_bytes(data), info)
            # A customer's graph file is fetched (CID-checked) and vetted once, before any task builds the model.
            await load_model_files(spec, lambda cid, limit: self.fetch(cid, max_bytes=limit, what="model file",
                                                                       providers=[info.customer]))
            self._specs[job_id] = spec
        return self._specs[job_id]

    def customer_of(self, job_id: int) -> list[str]:
        """The job's customer (provider of its dataset and first checkpoint), once its spec was read."""
        return [self._customers[job_id]] if job_id in self._customers else []

    async def dataset(self, cid: str, providers: Sequence[str] = ()) -> DatasetManifest:
        if cid not in self._datasets:
            if providers:
                await self.fetch(cid, max_bytes=1 << 20, what="dataset manifest", providers=providers)
            self._datasets[cid] = await fetch_dataset_manifest(self.store, cid, timeout_s=self.config.fetch_timeout_s)
        return self._datasets[cid]

    async def shard(self, cid: str, max_bytes: int, providers: Sequence[str] = ()) -> ArraySet:
        async def load() -> ArraySet:
            data = await self.fetch(cid, max_bytes=max_bytes, what="data shard", providers=providers)
            return await trio.to_thread.run_sync(decode_shard, data)

        return await self._cached(self._shards, cid, load)

    def peer_of(self, address: str) -> Any | None:
        """The peer id of the node acting as ``address`` on-chain, or None: see :meth:`ContentNode.peer_of`."""
        return self.content.peer_of(address)
