"""The devnet side of ``test_netns_job.py``: one small job through the devnet's own code, run in the public namespace.

``test_netns_job.py`` runs this under ``ip netns exec <pub>``: the Hardhat node, the customer's node (bootstrap,
relay and content provider, in this process), the leader and validator-1 bind the public address; the nodes of
:data:`PLACEMENT` are started by the devnet supervisor under ``ip netns exec <h1|h2|h3>``, each behind its own
masquerading router. The finished run's :class:`~node.devnet.DevnetResult` (rounds, on-chain ledger and payments)
is pickled to ``--result`` for the test to check.

    ip netns exec NS-pub python -m tests.p2p.netns_job --workdir DIR --result R.pickle --host-ns NS-h1 NS-h2 NS-h3
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import trio

from node.devnet import DevnetPlan, demo_spec, run_devnet
from node.logs import setup_logging
from protocols.p2p.hardening import install_hardening
from tests.p2p.netns_topology import PUBLIC_IP, private_ip

ROUNDS = 2
PLACEMENT = {"trainer-1": 1, "trainer-2": 2, "validator-2": 3}
"""Node label → the private host (``h{i}``) it runs on. validator-2 sits behind a NAT too: with quorum 2 it votes
on every update, so it must fetch each trainer's delta from behind one NAT to behind another (through the relay,
or directly once DCUtR punched through both); the public validator-1 is dialled by the trainers themselves."""
PRIVATE_PORT = 4001
NODE_SETTINGS = {
    "chain_poll_interval_s": 0.3, "task_timeout_s": 45.0, "round_timeout_s": 150.0, "fetch_timeout_s": 30.0,
    "request_timeout_s": 20.0, "chain_timeout_s": 30.0,
}
"""The process devnet tests' settings (tests/node/test_devnet_processes.py)."""


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--host-ns", nargs=len(PLACEMENT), required=True, metavar="NS",
                        help="the namespaces of the private hosts h1, h2, h3")
    parser.add_argument("--timeout", type=float, default=420.0)
    return parser.parse_args()


def netns_plan(args: argparse.Namespace) -> DevnetPlan:
    """The smallest real job (MLP, 2 rounds of 2 tasks of 20 steps, 2 validators, quorum 2), nodes placed by
    namespace."""
    spec = demo_spec(rounds=ROUNDS, trainers=2, model="fmnist-mlp-v1", local_steps=20, lease_seconds=120, quorum=2)
    return DevnetPlan(
        trainers=2, validators=2, leaders=1, spec=spec, shards=8, eval_samples=500, final_eval_samples=500,
        workdir=Path(args.workdir), timeout_s=args.timeout, chain_host=PUBLIC_IP,
        # The customer's node (built from node_settings), the leader and validator-1: the public address.
        node_settings={**NODE_SETTINGS, "listen": (f"/ip4/{PUBLIC_IP}/tcp/0",)},
        member_settings={label: {"listen": (f"/ip4/{private_ip(i)}/tcp/{PRIVATE_PORT}",)}
                         for label, i in PLACEMENT.items()},
        launch_prefix={label: ["ip", "netns", "exec", args.host_ns[i - 1]] for label, i in PLACEMENT.items()},
    )


def main() -> None:
    args = parse()
    setup_logging(level="INFO", name="customer")
    install_hardening()  # as the dtnode binary does, before any host is built
    # On its deadline the test sends SIGINT: trio raises KeyboardInterrupt in the run and run_devnet's finally stops
    # the nodes and the chain.
    result = trio.run(run_devnet, netns_plan(args))
    tmp = Path(args.result + ".tmp")
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(args.result)


if __name__ == "__main__":
    main()
