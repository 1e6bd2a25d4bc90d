"""Starting and stopping what a devnet runs: the chain (a Hardhat node, or py-evm in this process), the contract,
and each node, as a ``dtnode`` OS process or as a :class:`~node.runtime.DtNode` in this process.

Every child process and the Hardhat node are stopped by PID on :meth:`Devnet.close`, whatever happens; this module
never stops a process it did not start.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio
from eth_account.signers.local import LocalAccount

from node.config import NodeConfig
from node.devnet.config_file import write_config
from node.devnet.plan import MIN_STAKE, DevnetPlan, Member
from node.roles.leader import LeaderRole
from node.roles.trainer import TrainerRole
from node.roles.validator import ValidatorRole
from node.runtime import DtNode
from protocols.chain.backends import HardhatNode, HardhatNodeConfig, in_process_chain, keep_time
from protocols.chain.client import DeploySettings, JobManagerClient, deploy
from protocols.errors import DtnodeError

DEVNET_SETTINGS = DeploySettings(min_trainer_stake=MIN_STAKE, min_validator_stake=MIN_STAKE,
                                 min_update_bond=MIN_STAKE // 10, validator_slash=MIN_STAKE // 10,
                                 min_leader_bond=MIN_STAKE // 10, deregistration_delay=3600, min_quorum=3)
"""The devnet's JobManager: every stake at ``MIN_STAKE``; bonds and slashes a tenth of it; quorum 3 allowed (it runs
3 validators; a network deploys with ``minQuorum`` 5, see docs/economy.md)."""
BLOCK_INTERVAL_S = 1.0
"""Seconds between the in-process chain's empty blocks (Hardhat's interval mining uses the same)."""

STOP_GRACE_S = 10.0
"""How long a node process has to exit after SIGTERM before it gets SIGKILL."""


class Devnet:
    """Owns everything a devnet starts; ``close()`` stops it all (idempotent)."""

    def __init__(self, plan: DevnetPlan) -> None:
        self.plan = plan
        self.workdir = Path(plan.workdir or tempfile.mkdtemp(prefix="dtnode-devnet-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hardhat: HardhatNode | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nodes: dict[str, DtNode] = {}
        self.labels: dict[str, str] = {}
        """Address (lower-case) → label (``customer``, ``leader-1``, ``trainer-2`` ...)."""
        self.contract_address = ""
        self.rpc_url = ""
        self.bootstrap = ""
        """The customer node's listen address, every other node's bootstrap peer."""
        self.client: JobManagerClient | None = None
        """The customer's chain client, once the contract is deployed (embedded tests read the chain with it)."""

    async def start_chain(self, customer: LocalAccount) -> JobManagerClient:
        """Start the chain (Hardhat, or py-evm when embedded) and deploy the JobManager as ``customer``."""
        out = self.plan.out
        w3: Any
        if self.plan.embedded:
            out("chain: in-process py-evm (eth-tester)")
            w3 = in_process_chain()
        else:
            out("chain: starting a Hardhat node from contracts/ ...")
            self.hardhat = HardhatNode(HardhatNodeConfig(host=self.plan.chain_host))
            await trio.to_thread.run_sync(self.hardhat.start)
            w3 = self.hardhat.web3()
            # Like a real chain, produce a block every second even when nobody sends: with automine alone the block
            # time stands still while the chain is quiet, and a lease that expired by the clock has not expired for
            # the EVM, so gas estimation of a successor's claimLeadership keeps reverting (LeaseNotExpired).
            w3.provider.make_request("evm_setIntervalMining", [1000])
            self.rpc_url = self.hardhat.url
            out(f"chain: Hardhat node on {self.rpc_url} (pid {self.hardhat.pid})")
        # A devnet runs 3 validators (or fewer in tests): its job's quorum, at most 3, is its floor.
        settings = replace(DEVNET_SETTINGS, min_quorum=min(DEVNET_SETTINGS.min_quorum, self.plan.spec.payment.quorum))
        client = await trio.to_thread.run_sync(lambda: deploy(w3, customer, settings))
        logging.getLogger("dtnode.devnet").warning(
            "devnet: JobManager deployed with minQuorum %d, below the network's floor of %d (a local devnet has 3 "
            "validators; at 1/3 of the stake a fabricated update passes a whole panel of q with p = (1/3)^q: "
            "3.7 %% at q = 3, 0.41 %% at q = 5)", settings.min_quorum, DeploySettings().min_quorum)
        out(f"contract: JobManager at {client.address}")
        self.contract_address, self.client = client.address, client
        self.labels[customer.address.lower()] = "customer"
        return client

    async def tick_blocks(self, *, interval_s: float = BLOCK_INTERVAL_S) -> None:
        """Mine an empty block every ``interval_s`` on the in-process chain while its time is not ahead of the
        clock, like Hardhat's interval mining does for the process devnet: draws need ``DRAW_DELAY`` blocks after
        their anchor and leases need the block time to move, and eth-tester mines only on transactions. A chain
        that fell behind the clock catches up in one block (see :func:`~protocols.chain.backends.keep_time`)."""
        if not self.plan.embedded or self.client is None:
            return
        w3 = self.client.w3
        while True:
            await trio.to_thread.run_sync(lambda: keep_time(w3, time.time()))
            await trio.sleep(interval_s)

    async def start_member(self, nursery: trio.Nursery, m: Member, cfg: NodeConfig, account: LocalAccount) -> None:
        """Start one node: in this process under ``nursery`` when embedded, else as a ``dtnode`` process."""
        self.labels[account.address.lower()] = m.label
        if not self.plan.embedded:
            self.spawn(m, cfg)
            return
        assert self.client is not None, "start_chain first"
        # One py-evm chain serves every node through one lock: poll it less often than a real node would.
        cfg = replace(cfg, chain_poll_interval_s=max(cfg.chain_poll_interval_s, 1.0))
        node = DtNode(config=cfg, account=account, client=self.client.with_account(account),
                      log=logging.getLogger(f"dtnode.{m.label}"), p2p_overrides=dict(self.plan.p2p_settings))
        node.trainer_cls = self.plan.trainer_cls.get(m.label, TrainerRole)
        node.validator_cls = self.plan.validator_cls.get(m.label, ValidatorRole)
        node.leader_cls = self.plan.leader_cls.get(m.label, LeaderRole)
        await nursery.start(node.run)
        self.nodes[m.label] = node

    def spawn(self, m: Member, cfg: NodeConfig) -> None:
        """Run one node as a ``dtnode --config FILE`` process in its own session, its output in ``LABEL.log``."""
        config_file = write_config(cfg, self.workdir / f"{m.label}.toml")
        log_file = open(self.workdir / f"{m.label}.log", "wb")  # noqa: SIM115 (owned by the child until close)
        env = dict(os.environ, DTNODE_NODE_NAME=m.label, PYTHONUNBUFFERED="1")
        command = self.plan.commands.get(m.label, [sys.executable, "-m", "node.cli"])
        self.procs[m.label] = subprocess.Popen(
            [*self.plan.launch_prefix.get(m.label, []), *command, "--config", str(config_file)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log_file.close()

    def check_children(self) -> None:
        """Raise :class:`~protocols.errors.DtnodeError` with its log's end if a node process failed (not killed)."""
        for label, proc in self.procs.items():
            code = proc.poll()
            if code is not None and code != 0 and not label.startswith("killed:"):
                tail = (self.workdir / f"{label}.log").read_bytes()[-3000:].decode("utf-8", "replace")
                raise DtnodeError(f"devnet: node {label} exited with {code}; its log ends with:\n{tail}")

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

    def close(self) -> None:
        """SIGTERM every node process (SIGKILL after :data:`STOP_GRACE_S`), then stop the Hardhat node."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
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
