"""One devnet run: start the chain and the customer's node, post the job, start every other node, follow the job
to its end, read the ledger and print the summary; stop everything, whatever happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from node.chainio import AsyncChain
from node.config import NodeConfig
from node.devnet.customer_flow import RoundLine, final_model, follow_rounds, post_demo_job, withdraw_refund
from node.devnet.demos import SAMPLE_TEMPERATURE, sample_text
from node.devnet.ledger import Ledger, read_ledger, settle_payouts
from node.devnet.plan import DEV_ACCOUNTS, ETH, DevnetPlan, members, node_config
from node.devnet.supervisor import Devnet
from node.http.plot import CurvePoint, write_curve_png
from node.roles.context import NodeContext
from node.roles.customer import job_payments
from node.runtime import DtNode
from node.training.objective import format_metric, headline
from protocols.chain.backends import dev_accounts
from protocols.chain.client import JobManagerClient


@dataclass(frozen=True, kw_only=True)
class DevnetResult:
    job_id: int
    rounds: list[RoundLine]
    final_accuracy: float
    final_loss: float
    test_samples: int
    """How many test images ``final_accuracy`` was measured on."""
    task: str = "classification"
    """The job's task type: the summary reports its own metric (accuracy or perplexity)."""
    wall_s: float
    earnings: dict[str, int]
    """Wei credited per address (lower-case) by the job: trainers' pay, validators' and leaders' fees."""
    labels: dict[str, str]
    refund: int
    deposit: int
    totals_conserved: bool
    final_cid: str
    workdir: Path
    ledger: Ledger
    """Read at the end, once every accepted update is paid."""
    min_trainer_stake: int = 0
    sample: str = ""
    """A causal LM's text sampled from the final weights (empty for a classifier)."""
    curve_png: str = ""
    """The metric and loss per round as a picture, in the work folder."""


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


@dataclass(frozen=True)
class CustomerSide:
    """The chain and the customer's running node, as :func:`start_customer` leaves them."""

    client: JobManagerClient
    """The customer's chain client (the JobManager's deployer)."""
    chain: AsyncChain
    """Chain calls under the customer's ``chain_timeout_s``."""
    node: DtNode
    ctx: NodeContext
    """The customer node's context: its store provides the job's content."""


async def start_customer(net: Devnet, nursery: trio.Nursery) -> CustomerSide:
    """Start the chain (the JobManager deployed by the customer, dev account 0), its block ticker and the customer's
    node under ``nursery``; set ``net.bootstrap`` to the node's listen address, every other node's bootstrap peer.

    The start-up ``dtnode devnet`` and the peer benchmark (bench/peers_devnet.py) share."""
    plan, out = net.plan, net.plan.out
    customer = dev_accounts(DEV_ACCOUNTS)[0]
    client = await net.start_chain(customer)
    cfg = NodeConfig(data_dir=str(net.workdir / "customer"), http=plan.http, **plan.node_settings)
    nursery.start_soon(net.tick_blocks)
    node = DtNode(config=cfg, account=customer, client=client, log=logging.getLogger("dtnode.customer"),
                  p2p_overrides=dict(plan.p2p_settings))
    await nursery.start(node.run)
    assert node.ctx is not None
    net.bootstrap = node.ctx.net.listen_addrs()[0]
    out(f"bootstrap: {net.bootstrap}")
    if node.dashboard_url:
        out(f"dashboard: {node.dashboard_url} (open it in a browser; /metrics for Prometheus)")
    return CustomerSide(client=client, chain=AsyncChain(timeout_s=cfg.chain_timeout_s), node=node, ctx=node.ctx)


async def _run(net: Devnet, on_ready: Hook | None, on_finished: Hook | None) -> DevnetResult:
    plan, out = net.plan, net.plan.out
    started = time.monotonic()
    accounts = dev_accounts(DEV_ACCOUNTS)

    async with trio.open_nursery() as nursery:
        side = await start_customer(net, nursery)
        client, chain, store = side.client, side.chain, side.ctx.store

        posted = await post_demo_job(plan, store, client, workdir=net.workdir)
        for m in members(plan):
            cfg = node_config(plan, m, job_id=posted.job_id, data_dir=net.workdir / m.label,
                              bootstrap=net.bootstrap, rpc=net.rpc_url, contract=client.address)
            await net.start_member(nursery, m, cfg, accounts[m.account_index])
        out(f"nodes: {plan.leaders} leader candidates, {plan.trainers} trainers, {plan.validators} validators "
            f"({'in-process' if plan.embedded else 'processes; logs in ' + str(net.workdir)})")
        if on_ready is not None:  # tests: kill a node mid-round, and the like
            nursery.start_soon(on_ready, net, posted.job_id)

        rounds = await follow_rounds(plan, chain, client, side.ctx.content, posted, labels=net.labels,
                                     started=started, check=net.check_children, logs=net.workdir)
        await settle_payouts(chain, client, posted.job_id, posted.spec.rounds, timeout_s=side.chain.timeout_s)
        if on_finished is not None:
            await on_finished(net, posted.job_id)
        final = await final_model(chain, client, store, posted, test_samples=plan.final_eval_samples)
        sample = ""
        if posted.spec.task == "causal_lm":
            sample = await trio.to_thread.run_sync(lambda: sample_text(posted.spec, final.weights, posted.info))
        await withdraw_refund(chain, client)
        job_id = posted.job_id
        earnings = await chain(lambda: job_payments(client, job_id), what="PaidOut and FeePaid logs")
        conserved = (await chain(client.totals, what="totals()")).conserved
        trainers = [a for a, label in net.labels.items() if label.startswith("trainer")]
        ledger = await chain(lambda: read_ledger(client, job_id, posted.spec.rounds, trainers), what="the ledger")
        min_stake = await chain(client.min_trainer_stake, what="minTrainerStake()")
        nursery.cancel_scope.cancel()

    points = [CurvePoint(line.round + 1, *line.metric, line.loss) for line in rounds]
    curve = await trio.to_thread.run_sync(lambda: write_curve_png(
        net.workdir / "curve.png", points, title=f"job {job_id}: metric and loss per round"))
    result = DevnetResult(
        job_id=job_id, rounds=rounds, final_accuracy=final.accuracy, final_loss=final.loss,
        test_samples=final.test_samples, wall_s=time.monotonic() - started, earnings=earnings, labels=net.labels,
        refund=final.job.refunded, deposit=posted.deposit, totals_conserved=conserved,
        final_cid=final.job.last_checkpoint_cid or "", workdir=net.workdir, ledger=ledger,
        min_trainer_stake=min_stake, task=posted.spec.task, sample=sample, curve_png=str(curve),
    )
    out(summary_table(result))
    return result


def summary_table(r: DevnetResult) -> str:
    """The run's closing summary: accuracy, final weights, and where every wei of the deposit went."""
    rows = [
        "",
        "=" * 64,
        f" job {r.job_id} finished: {len(r.rounds)} rounds in {r.wall_s:.1f} s",
        f" final test {format_metric(*headline(r.task, r.final_accuracy, r.final_loss))} on {r.test_samples} "
        f"held-out samples (loss {r.final_loss:.4f})",
        f" {r.rounds[0].metric[0] if r.rounds else 'metric'} per round: "
        + " ".join(f"{line.metric[1] * 100:.1f}%" if line.metric[0] == "accuracy" else f"{line.metric[1]:.3g}"
                   for line in r.rounds),
        f" final weights: {r.final_cid}",
        *([f" curve: {r.curve_png}"] if r.curve_png else []),
        *([f" sampled from them (temperature {SAMPLE_TEMPERATURE}, seed 0):", *_indented(r.sample)] if r.sample
          else []),
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


def _indented(text: str) -> list[str]:
    """Sampled text as summary rows: control characters shown escaped, each line indented."""
    shown = "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)
    return [f"   | {line}" for line in shown.splitlines()]
