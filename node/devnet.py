"""``dtnode devnet``: a whole local network training a real Fashion-MNIST job, end to end.

Default (processes): a Hardhat node from ``contracts/`` on a free port, the JobManager deployed, a customer node in
this process (the bootstrap peer and the provider of the job's content), and N trainer, M validator and two
leader-candidate ``dtnode`` processes on 127.0.0.1 that find each other by gossip from that one bootstrap address.
``--embedded``: the same network inside this process on an in-process py-evm chain (no Node.js needed; also what
the fast tests drive). Either way the customer posts the job with its deposit, follows the rounds, fetches the
final weights by CID, verifies and evaluates them, withdraws the refund and prints a summary.

Every child process and the Hardhat node are stopped by PID on exit, whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import trio

from node.config import NodeConfig
from node.roles.context import NodeContext
from node.roles.customer import (
    eval_subset,
    evaluate_checkpoint,
    fetch_final_weights,
    job_payments,
    post_job,
    publish_fashion_mnist,
)
from node.roles.leader import LeaderRole
from node.roles.trainer import TrainerRole
from node.roles.validator import ValidatorRole
from node.runtime import DtNode
from node.training.data import load_fashion_mnist
from node.training.evaluate import evaluate
from protocols.chain.backends import HardhatNode, dev_accounts, in_process_chain
from protocols.chain.client import JobManagerClient, deploy
from protocols.chain.errors import ContractRevert
from protocols.chain.models import JobInfo, JobStatus, UpdateStatus
from protocols.errors import DtnodeError
from protocols.specs import AggregationSpec, JobSpec, PaymentSpec

log = logging.getLogger("dtnode.devnet")

ETH = 10**18
MIN_STAKE = ETH // 10


def demo_spec(*, rounds: int = 14, trainers: int = 4, model: str = "fmnist-cnn-v1", local_steps: int = 100,
              lease_seconds: int = 300, quorum: int = 3) -> JobSpec:
    """The embedded defaults: CNN, DiLoCo (AdamW inner, Nesterov outer 0.7/0.9), K=100, one task per trainer.

    Measured (bench/bench_training.py, simulate): this algorithm reaches 88% test accuracy at round 11.
    """
    return JobSpec(
        name="fashion-mnist-demo", model=model, rounds=rounds, tasks_per_round=trainers, local_steps=local_steps,
        batch_size=32, inner_optimizer="adamw", inner_lr="0.001", segment_every=10, spot_check_segments=2,
        delta_encoding="f32", aggregation=AggregationSpec(strategy="mean", outer="nesterov"),
        payment=PaymentSpec(base_rate_wei=10**15, bonus_rate_wei=5 * 10**14, validator_fee_wei=2 * 10**14,
                            leader_fee_wei=10**15, quorum=quorum, lease_seconds=lease_seconds),
    )


@dataclass(frozen=True, kw_only=True)
class DevnetPlan:
    trainers: int = 4
    validators: int = 3
    leaders: int = 2
    spec: JobSpec = field(default_factory=demo_spec)
    classes: tuple[str, ...] = ("M",)
    shards: int = 16
    eval_samples: int = 2000
    final_eval_samples: int | None = None
    """Test samples for the final accuracy (None: all 10,000)."""
    embedded: bool = False
    workdir: Path | None = None
    log_format: str = "text"
    node_settings: dict[str, Any] = field(default_factory=lambda: {
        "chain_poll_interval_s": 1.0, "task_timeout_s": 120.0, "round_timeout_s": 180.0, "fetch_timeout_s": 60.0,
        "request_timeout_s": 15.0, "chain_timeout_s": 30.0,
    })
    p2p_settings: dict[str, Any] = field(default_factory=lambda: {"presence_interval_s": 3.0, "peer_ttl_s": 15.0})
    timeout_s: float = 1800.0
    trainer_cls: dict[str, type[TrainerRole]] = field(default_factory=dict)
    """label → TrainerRole subclass (embedded runs only; tests use it for adversaries)."""
    validator_cls: dict[str, type[ValidatorRole]] = field(default_factory=dict)
    """label → ValidatorRole subclass (embedded runs only; tests use it for adversaries)."""
    leader_cls: dict[str, type[LeaderRole]] = field(default_factory=dict)
    """label → LeaderRole subclass (embedded runs only; tests use it for adversaries)."""
    commands: dict[str, list[str]] = field(default_factory=dict)
    """label → the command that runs that node's process, before ``--config FILE`` (default ``python -m node.cli``);
    tests use it to run adversaries."""
    out: Callable[[str], None] = print


@dataclass
class RoundLine:
    round: int
    leader: str
    accuracy: float
    wall_s: float


class UpdateLine(NamedTuple):
    round: int
    trainer: str
    """Address, lower-case."""
    status: UpdateStatus
    paid: bool
    amount: int
    """Wei owed for it (base + bonus; zero unless accepted)."""


@dataclass
class DevnetResult:
    job_id: int
    rounds: list[RoundLine]
    final_accuracy: float
    final_loss: float
    wall_s: float
    earnings: dict[str, int]
    labels: dict[str, str]
    refund: int
    deposit: int
    totals_conserved: bool
    final_cid: str
    workdir: Path
    updates: list[UpdateLine] = field(default_factory=list)
    """Every submitted update, read at the end."""
    trainer_stakes: dict[str, int] = field(default_factory=dict)
    min_trainer_stake: int = 0
    commits: list[tuple[int, str]] = field(default_factory=list)
    """(round, leader address lower-case) of every RoundCommitted event, in chain order."""
    payouts: list[tuple[str, int]] = field(default_factory=list)
    """(trainer address lower-case, amount) of every PaidOut event, in chain order."""


# -- account plan -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    label: str
    role: str
    account_index: int
    node_class: str = "M"


def members(plan: DevnetPlan) -> list[Member]:
    """Dev account 0 deploys and is the customer; then leaders, trainers, validators (Hardhat has 20)."""
    out: list[Member] = []
    i = 1
    for n in range(plan.leaders):
        out.append(Member(f"leader-{n + 1}", "leader", i))
        i += 1
    for n in range(plan.trainers):
        out.append(Member(f"trainer-{n + 1}", "trainer", i, plan.classes[n % len(plan.classes)]))
        i += 1
    for n in range(plan.validators):
        out.append(Member(f"validator-{n + 1}", "validator", i))
        i += 1
    if i > 20:
        raise DtnodeError(f"devnet: {i} accounts needed but Hardhat has 20 dev accounts; use fewer nodes")
    return out


def node_config(plan: DevnetPlan, m: Member, *, job_id: int, data_dir: Path, bootstrap: str, rpc: str = "",
                contract: str = "") -> NodeConfig:
    settings = dict(plan.node_settings)
    return NodeConfig(
        roles=(m.role,), jobs=(job_id,) if m.role == "leader" else (), node_class=m.node_class,
        bootstrap=(bootstrap,), data_dir=str(data_dir), dev_account=m.account_index,
        chain_rpc_url=rpc or "http://127.0.0.1:8545", contract_address=contract, log_format=plan.log_format,
        trainer_stake_wei=MIN_STAKE, validator_stake_wei=MIN_STAKE, **settings,
    ).validate()


# -- the run ----------------------------------------------------------------------------------------------------

class Devnet:
    """Owns everything a devnet starts; ``close()`` stops it all (idempotent)."""

    def __init__(self, plan: DevnetPlan) -> None:
        self.plan = plan
        self._own_workdir = plan.workdir is None
        self.workdir = Path(plan.workdir or tempfile.mkdtemp(prefix="dtnode-devnet-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hardhat: HardhatNode | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nodes: dict[str, DtNode] = {}
        self.labels: dict[str, str] = {}
        self.contract_address = ""
        self.rpc_url = ""
        self.bootstrap = ""
        """The customer node's listen address, every other node's bootstrap peer."""
        self.client: JobManagerClient | None = None
        """The customer's chain client, once the contract is deployed (embedded tests read the chain with it)."""

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()
        if self.hardhat is not None:
            self.hardhat.stop()
            self.hardhat = None

    def kill(self, label: str, sig: int = signal.SIGKILL) -> None:
        """Stop one node abruptly, with no hand-over (tests: a leader or a trainer dying mid-round).

        A node process gets ``sig``. An embedded node has its scope cancelled, the closest in-process analogue of
        SIGKILL: its host closes and its roles stop at their next checkpoint, sending nothing more (a transaction
        already handed to the chain may still be mined, as with a killed process; a training step already in a
        worker thread runs to its end, unpublished). Either way the node is then listed as ``killed:<label>``.
        """
        if label in self.nodes:
            node = self.nodes.pop(label)
            node.stop()
            self.nodes[f"killed:{label}"] = node
            return
        proc = self.procs.pop(label)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=10)
        self.procs[f"killed:{label}"] = proc

    def spawn(self, m: Member, cfg: NodeConfig) -> None:
        toml = self.workdir / f"{m.label}.toml"
        lines = []
        for key, value in cfg.__dict__.items():
            if key == "extra":
                continue
            if isinstance(value, tuple):
                lines.append(f"{key} = [{', '.join(repr(v) if isinstance(v, int) else _q(v) for v in value)}]")
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int | float):
                lines.append(f"{key} = {value!r}")
            else:
                lines.append(f"{key} = {_q(str(value))}")
        toml.write_text("\n".join(lines) + "\n")
        log_file = open(self.workdir / f"{m.label}.log", "wb")  # noqa: SIM115 (owned by the child until close)
        env = dict(os.environ, DTNODE_NODE_NAME=m.label, PYTHONUNBUFFERED="1")
        command = self.plan.commands.get(m.label, [sys.executable, "-m", "node.cli"])
        self.procs[m.label] = subprocess.Popen(
            [*command, "--config", str(toml)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log_file.close()

    def check_children(self) -> None:
        for label, proc in self.procs.items():
            code = proc.poll()
            if code is not None and code != 0 and not label.startswith("killed:"):
                tail = (self.workdir / f"{label}.log").read_bytes()[-3000:].decode("utf-8", "replace")
                raise DtnodeError(f"devnet: node {label} exited with {code}; its log ends with:\n{tail}")


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


Hook = Callable[[Devnet, int], Awaitable[None]]
"""A test's coroutine, given the devnet and the job id."""


async def run_devnet(plan: DevnetPlan, *, devnet: Devnet | None = None, on_ready: Hook | None = None,
                     on_finished: Hook | None = None) -> DevnetResult:
    """Start the network, run one job to the end, and return what happened.

    ``on_ready`` runs beside the job once every node is up (tests: kill a node mid-round); ``on_finished`` is
    awaited once the job has finished, while every node still serves (tests: query the network about the job).
    """
    net = devnet or Devnet(plan)
    try:
        return await _run(net, on_ready, on_finished)
    finally:
        net.close()


async def _run(net: Devnet, on_ready: Hook | None, on_finished: Hook | None) -> DevnetResult:
    plan, out = net.plan, net.plan.out
    started = time.monotonic()
    accounts = dev_accounts(20)
    customer = accounts[0]
    if plan.embedded:
        out("chain: in-process py-evm (eth-tester)")
        w3 = in_process_chain()
        rpc = ""
    else:
        out("chain: starting a Hardhat node from contracts/ ...")
        net.hardhat = HardhatNode()
        await trio.to_thread.run_sync(net.hardhat.start)
        w3 = net.hardhat.web3()
        # Like a real chain, produce a block every second even when nobody sends: with automine alone the block
        # time stands still while the chain is quiet, and a lease that expired by the clock has not expired for
        # the EVM, so gas estimation of a successor's claimLeadership keeps reverting (LeaseNotExpired).
        w3.provider.make_request("evm_setIntervalMining", [1000])  # type: ignore[arg-type]
        rpc = net.hardhat.url
        out(f"chain: Hardhat node on {rpc} (pid {net.hardhat.pid})")
    client = await trio.to_thread.run_sync(lambda: deploy(
        w3, customer, min_trainer_stake=MIN_STAKE, min_validator_stake=MIN_STAKE, slash_amount=MIN_STAKE // 2,
        deregistration_delay=3600))
    out(f"contract: JobManager at {client.address}")
    net.contract_address, net.rpc_url, net.client = client.address, rpc, client
    net.labels[customer.address.lower()] = "customer"

    async with trio.open_nursery() as nursery:
        customer_cfg = NodeConfig(data_dir=str(net.workdir / "customer"), **plan.node_settings)
        customer_node = DtNode(config=customer_cfg, account=customer, client=client,
                               log=logging.getLogger("dtnode.customer"), p2p_overrides=dict(plan.p2p_settings))
        await nursery.start(customer_node.run)
        assert customer_node.ctx is not None
        store = customer_node.ctx.store
        bootstrap = net.bootstrap = customer_node.ctx.net.listen_addrs()[0]
        out(f"bootstrap: {bootstrap}")

        out(f"customer: sharding Fashion-MNIST into {plan.shards} shards and adding them to IPFS ...")
        data = await publish_fashion_mnist(store, shards=plan.shards, eval_samples=plan.eval_samples,
                                           seed=plan.spec.seed)
        out(f"dataset: {data.dataset_cid} ({data.train_samples} samples), eval shard {data.eval_cid}")
        spec = replace(plan.spec, dataset_cid=data.dataset_cid, eval_cid=data.eval_cid)
        job_id, spec_cid, deposit = await post_job(store, client, spec)
        out(f"job {job_id}: spec {spec_cid}, deposit {deposit / ETH:.4f} ETH, {spec.rounds} rounds x "
            f"{spec.tasks_per_round} tasks, model {spec.model}")

        for m in members(plan):
            account = accounts[m.account_index]
            net.labels[account.address.lower()] = m.label
            cfg = node_config(plan, m, job_id=job_id, data_dir=net.workdir / m.label, bootstrap=bootstrap, rpc=rpc,
                              contract=client.address)
            if plan.embedded:
                # One py-evm chain serves every node through one lock: poll it less often than a real node would.
                cfg = replace(cfg, chain_poll_interval_s=max(cfg.chain_poll_interval_s, 1.0))
                node = DtNode(config=cfg, account=account, client=client.with_account(account),
                              log=logging.getLogger(f"dtnode.{m.label}"), p2p_overrides=dict(plan.p2p_settings))
                node.trainer_cls = plan.trainer_cls.get(m.label, TrainerRole)
                node.validator_cls = plan.validator_cls.get(m.label, ValidatorRole)
                node.leader_cls = plan.leader_cls.get(m.label, LeaderRole)
                await nursery.start(node.run)
                net.nodes[m.label] = node
            else:
                net.spawn(m, cfg)
        out(f"nodes: {plan.leaders} leader candidates, {plan.trainers} trainers, {plan.validators} validators "
            f"({'in-process' if plan.embedded else 'processes; logs in ' + str(net.workdir)})")
        if on_ready is not None:  # tests: kill a node mid-round, and the like
            nursery.start_soon(on_ready, net, job_id)

        rounds = await _follow(net, client, job_id, spec, customer_node.ctx, started)
        await _settle_payouts(client, job_id, spec.rounds, timeout_s=customer_cfg.chain_timeout_s)
        if on_finished is not None:
            await on_finished(net, job_id)
        job = await trio.to_thread.run_sync(lambda: client.get_job(job_id))
        model = await fetch_final_weights(store, job, spec)
        _, test = await trio.to_thread.run_sync(lambda: load_fashion_mnist(None))
        test_set = test if plan.final_eval_samples is None else eval_subset(test, plan.final_eval_samples)
        accuracy, loss = await trio.to_thread.run_sync(lambda: evaluate(spec.model, model, test_set))
        refund = job.refunded
        if await trio.to_thread.run_sync(lambda: client.balance_of(customer.address)) > 0:
            await trio.to_thread.run_sync(client.withdraw)
        earnings = await trio.to_thread.run_sync(lambda: job_payments(client, job_id))
        conserved = (await trio.to_thread.run_sync(client.totals)).conserved
        ledger = await trio.to_thread.run_sync(lambda: _ledger(client, job_id, spec.rounds, net.labels))
        min_stake = await trio.to_thread.run_sync(client.min_trainer_stake)
        nursery.cancel_scope.cancel()

    result = DevnetResult(
        job_id=job_id, rounds=rounds, final_accuracy=accuracy, final_loss=loss, wall_s=time.monotonic() - started,
        earnings=earnings, labels=net.labels, refund=refund, deposit=deposit, totals_conserved=conserved,
        final_cid=job.last_checkpoint_cid or "", workdir=net.workdir, min_trainer_stake=min_stake, **ledger,
    )
    out(summary_table(result, test_samples=len(test_set)))
    return result


async def _follow(net: Devnet, client: JobManagerClient, job_id: int, spec: JobSpec, ctx: NodeContext,
                  started: float) -> list[RoundLine]:
    """Print a line per committed round until the job finishes; raise if it stalls past the plan's timeout."""
    plan, out = net.plan, net.plan.out
    _, test = await trio.to_thread.run_sync(lambda: load_fashion_mnist(None))
    held_out = eval_subset(test, plan.eval_samples)
    lines: list[RoundLine] = []
    seen = 0
    deadline = time.monotonic() + plan.timeout_s
    while True:
        net.check_children()
        job: JobInfo = await trio.to_thread.run_sync(lambda: client.get_job(job_id))
        while seen < job.committed_rounds:
            commits = await trio.to_thread.run_sync(lambda: client.round_commits(job_id))
            commit = next(c for c in commits if c.round == seen)  # noqa: B023
            committer = commit.leader
            # Ask the committing leader first: it holds the checkpoint, and a peer that left (a killed leader)
            # costs a stall timeout when asked.
            data = await ctx.fetch(commit.checkpoint_cid, max_bytes=spec.max_dag_bytes,
                                   what=f"round {seen + 1} checkpoint", providers=[committer])
            acc, _ = await evaluate_checkpoint(data, spec, held_out)
            leader = net.labels.get(committer, committer)
            line = RoundLine(seen, leader, acc, time.monotonic() - started)
            lines.append(line)
            bar = "#" * (seen + 1) + "-" * (spec.rounds - seen - 1)
            out(f"[{bar}] round {seen + 1:>2}/{spec.rounds}  accuracy {acc * 100:5.2f}%  leader {leader:<9} "
                f"spent {job.spent / ETH:.4f} ETH  t={line.wall_s:5.1f}s")
            seen += 1
        if job.status == JobStatus.FINISHED:
            return lines
        if job.status == JobStatus.CANCELLED:
            raise DtnodeError(f"job {job_id} was cancelled")
        if time.monotonic() > deadline:
            raise DtnodeError(f"devnet: job {job_id} did not finish within {plan.timeout_s:.0f} s "
                              f"(committed {job.committed_rounds}/{spec.rounds}); see the node logs in {net.workdir}")
        await trio.sleep(0.5)


async def _settle_payouts(client: JobManagerClient, job_id: int, rounds: int, *, timeout_s: float) -> None:
    """Wait until every accepted update is paid, so the ledger read next is final.

    The last round's leader pays its trainers right after the commit that finishes the job, so the follower can see
    the job finished before those payouts are mined. A leader that died in between never pays: after
    ``timeout_s`` the customer calls ``payout`` itself (anyone may).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        owed = await trio.to_thread.run_sync(lambda: _owed(client, job_id, rounds))
        if not owed:
            return
        if time.monotonic() > deadline:
            for trainer in owed:
                log.warning("job %d: %s is still owed for an accepted update; paying out as the customer", job_id,
                            trainer)
                with contextlib.suppress(ContractRevert):  # paid meanwhile: NothingToPay
                    await trio.to_thread.run_sync(lambda: client.payout(job_id, trainer))  # noqa: B023
            return
        await trio.sleep(0.5)


def _owed(client: JobManagerClient, job_id: int, rounds: int) -> set[str]:
    """Trainers with an accepted update not paid yet."""
    return {u.trainer for u in _updates(client, job_id, rounds) if u.status == UpdateStatus.ACCEPTED and not u.paid}


def _updates(client: JobManagerClient, job_id: int, rounds: int) -> list[UpdateLine]:
    updates: list[UpdateLine] = []
    for r in range(rounds):
        for trainer in client.get_round_updates(job_id, r):
            u = client.get_update(job_id, r, trainer)
            updates.append(UpdateLine(r, trainer.lower(), u.status, u.paid, u.amount))
    return updates


def _ledger(client: JobManagerClient, job_id: int, rounds: int, labels: dict[str, str]) -> dict[str, Any]:
    """The :class:`DevnetResult` fields read from the chain: every update's final status and paid flag, every
    trainer's remaining stake, every round commit and every payout."""
    updates = _updates(client, job_id, rounds)
    stakes = {a: client.trainers(a).stake for a, label in labels.items() if label.startswith("trainer")}
    commits = [(c.round, c.leader) for c in client.round_commits(job_id)]
    payouts = [(str(ev.args["trainer"]).lower(), int(ev.args["amount"]))
               for ev in client.get_events(names=["PaidOut"], job_id=job_id)]
    return {"updates": updates, "trainer_stakes": stakes, "commits": commits, "payouts": payouts}


def summary_table(r: DevnetResult, *, test_samples: int) -> str:
    rows = [
        "",
        "=" * 64,
        f" job {r.job_id} finished: {len(r.rounds)} rounds in {r.wall_s:.1f} s",
        f" final test accuracy: {r.final_accuracy * 100:.2f}% on {test_samples} held-out images "
        f"(loss {r.final_loss:.4f})",
        f" final weights: {r.final_cid}",
        "-" * 64,
        f" {'node':<14}{'address':<44}{'earned (ETH)':>12}",
    ]
    for addr, label in sorted(r.labels.items(), key=lambda kv: kv[1]):
        if label == "customer":
            continue
        rows.append(f" {label:<14}{addr:<44}{r.earnings.get(addr, 0) / ETH:>12.6f}")
    paid = sum(r.earnings.values())
    rows += [
        "-" * 64,
        f" deposit {r.deposit / ETH:.6f} ETH = paid {paid / ETH:.6f} + refunded {r.refund / ETH:.6f}"
        f" + unspent {(r.deposit - paid - r.refund) / ETH:.6f}",
        f" contract money conserved: {'yes' if r.totals_conserved else 'NO'}",
        "=" * 64,
    ]
    return "\n".join(rows)
