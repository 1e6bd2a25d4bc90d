"""One running dtnode: the libp2p host, the block store and exchange, the chain client, and the chosen roles.

:class:`DtNode` is a trio service (``await nursery.start(node.run)``); the same object runs in the ``dtnode``
process and, several at once, inside one test process. It registers on-chain for its roles if it is not yet
registered, serves the task and update-notice streams, and starts one role task per role (leaders: one per job).
Cancellation: cancelling :meth:`run` stops every role; a task in flight publishes nothing half-written (blocks
are written atomically and only referenced once complete).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from eth_account.signers.local import LocalAccount
from libp2p.peer.id import ID

from node.chainio import AsyncChain
from node.config import NodeConfig
from node.content import start_content_node
from node.roles.chain_feed import run_chain_feed
from node.roles.context import NodeContext
from node.roles.leader import LeaderRole
from node.roles.trainer import TrainerRole
from node.roles.validator import ValidatorRole
from node.training.local import warm_up
from protocols.chain.client import JobManagerClient
from protocols.chain.models import NodeClass
from protocols.errors import DtnodeError
from protocols.p2p.config import P2PConfig
from protocols.p2p.errors import RemoteError
from protocols.p2p.identity import address_of_peer
from protocols.p2p.keystore import identity_from_account
from protocols.p2p.node import P2PNode
from protocols.topics import TASK_PROTOCOL
from protocols.types import RejectCode
from protocols.wire import TaskRequest, TaskResponse


@dataclass
class DtNode:
    config: NodeConfig
    account: LocalAccount
    client: JobManagerClient
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("dtnode"))
    p2p_overrides: dict[str, Any] = field(default_factory=dict)
    ctx: NodeContext | None = None
    trainer: TrainerRole | None = None
    validator: ValidatorRole | None = None
    leaders: dict[int, LeaderRole] = field(default_factory=dict)
    trainer_cls: type[TrainerRole] = TrainerRole
    validator_cls: type[ValidatorRole] = ValidatorRole
    leader_cls: type[LeaderRole] = LeaderRole
    """Tests swap in adversaries (a trainer that fabricates deltas, a validator that never votes, a leader that
    commits a wrong aggregate); production always uses TrainerRole, ValidatorRole and LeaderRole."""
    dashboard_url: str = ""
    """Where this node serves its dashboard (``--http``), once started; empty when it serves none."""
    _cancel: trio.CancelScope | None = None

    def p2p_config(self) -> P2PConfig:
        cfg = self.config
        settings: dict[str, Any] = dict(
            listen_addrs=tuple(cfg.listen), bootstrap=tuple(cfg.bootstrap), roles=tuple(cfg.roles),
            node_class=cfg.settled_class, jobs=tuple(cfg.jobs), request_timeout_s=cfg.request_timeout_s,
            reachability=cfg.reachability, relays=tuple(cfg.relays), relay_service=cfg.relay_service,
            hole_punching=cfg.hole_punching,
        )
        settings.update(self.p2p_overrides)
        return P2PConfig(**settings)

    async def run(self, *, task_status: trio.TaskStatus[DtNode] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        finally:
            self._write_timings()

    def _write_timings(self) -> None:
        """Leave the seconds this node spent per activity (``timings.json``) and its chain calls by function
        (``chain_calls.json``) in its data dir (read by bench/bench_devnet.py and bench/bench_peers.py)."""
        if self.ctx is None:
            return
        timings = dict(self.ctx.timings)
        timings["chain"] = self.ctx.chain.seconds
        data = Path(self.config.data_path)
        with contextlib.suppress(OSError):
            (data / "timings.json").write_text(json.dumps({k: round(v, 3) for k, v in timings.items()},
                                                          sort_keys=True))
            (data / "chain_calls.json").write_text(json.dumps(dict(self.ctx.chain.calls), sort_keys=True))

    async def _run(self, task_status: trio.TaskStatus[DtNode]) -> None:
        cfg = self.config
        with trio.CancelScope() as scope:
            self._cancel = scope
            async with trio.open_nursery() as nursery:
                net = P2PNode(identity_from_account(self.account), self.p2p_config())
                content = await start_content_node(nursery, cfg, net, log=self.log)
                ctx = NodeContext(config=cfg, account=self.account, client=self.client,
                                  chain=AsyncChain(timeout_s=cfg.chain_timeout_s), net=net, content=content,
                                  log=self.log, nursery=nursery)
                self.ctx = ctx
                if cfg.chain_ws_url:
                    nursery.start_soon(run_chain_feed, ctx.watch, cfg.chain_ws_url, self.client.address, self.log)
                await self._register(ctx)
                net.set_request_handler(TASK_PROTOCOL, self._on_task_request)
                if "trainer" in cfg.roles:
                    self.trainer = self.trainer_cls(ctx, jobs=cfg.jobs)
                    await nursery.start(self.trainer.run)
                if self.in_validator_pool:
                    # Every node in the contract's validator pool must vote: updates draw their validators from all
                    # registered validators, leader candidates included (they stand with a validator's stake), and a
                    # drawn validator that never votes leaves the update pending until its round is given up.
                    # Measured: with one validator and one leader (quorum 1) every update drew the leader, so no
                    # round was ever accepted.
                    self.validator = self.validator_cls(ctx)
                    await nursery.start(self.validator.run)
                if "trainer" in cfg.roles or self.in_validator_pool:
                    # Off the round's clock: the first task or replay would load torch's compiler stack itself.
                    nursery.start_soon(partial(trio.to_thread.run_sync, warm_up, abandon_on_cancel=True))
                if "leader" in cfg.roles:
                    for job_id in cfg.jobs:
                        self.leaders[job_id] = self.leader_cls(ctx, job_id)
                        await nursery.start(self.leaders[job_id].run)
                if cfg.http:
                    from node.http.address import parse_http_address
                    from node.http.server import serve_dashboard

                    self.dashboard_url = await nursery.start(serve_dashboard, self, parse_http_address(cfg.http))
                self.log.info("dtnode %s up: roles %s, listening on %s", self.account.address,
                              ",".join(cfg.roles) or "none", " ".join(net.listen_addrs()))
                task_status.started(self)

    @property
    def in_validator_pool(self) -> bool:
        """Whether this node registers (and so is drawn) as a validator; see :meth:`_register`."""
        return "validator" in self.config.roles

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def _register(self, ctx: NodeContext) -> None:
        """Register on-chain for the roles this node runs, unless already registered (idempotent across restarts)."""
        cfg, me = self.config, self.account.address
        # The contract takes leader candidates among registered nodes. A leader-only node registers as a trainer
        # (it never submits), not as a validator: a drawn panel member that stops voting holds its update until the
        # vote window closes and someone calls escalateUpdate (and is slashed for it), so a leader, which may be
        # replaced and stop at any time, stays out of the validator pool.
        wants_trainer = "trainer" in cfg.roles or ("leader" in cfg.roles and not self.in_validator_pool)
        wants_validator = self.in_validator_pool
        if wants_trainer and not (await ctx.jobs.trainer_info(me)).registered:
            await ctx.jobs.register_trainer(NodeClass[cfg.settled_class], cfg.trainer_stake_wei)
            self.log.info("registered as a class-%s trainer (stake %d wei)", cfg.settled_class,
                          cfg.trainer_stake_wei)
        if wants_validator and not (await ctx.jobs.validator_info(me)).registered:
            await ctx.jobs.register_validator(cfg.validator_stake_wei)
            self.log.info("registered as a validator (stake %d wei)", cfg.validator_stake_wei)

    async def _on_task_request(self, request: bytes, peer: ID) -> bytes:
        trainer = address_of_peer(peer)
        if trainer is None:
            raise RemoteError(RejectCode.PROTOCOL_VIOLATION, "peer id carries no secp256k1 key")
        try:
            req = TaskRequest.from_bytes(request)
        except DtnodeError as exc:
            raise RemoteError(RejectCode.PROTOCOL_VIOLATION, str(exc)) from exc
        leader = self.leaders.get(req.job_id)
        if leader is None:
            return TaskResponse(reject=RejectCode.NOT_LEADER, detail=f"not a candidate for job {req.job_id}").to_bytes()
        return (await leader.handle_task_request(req, trainer)).to_bytes()

