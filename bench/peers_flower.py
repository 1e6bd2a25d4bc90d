"""The Flower side of ``bench_peers.py``: Flower 1.42's gRPC server and 4 long-lived client processes.

Run with the Flower venv's Python (``bash bench/setup_flower.sh`` makes it); ``bench_peers.py`` starts it:

    .venv-flower/bin/python bench/peers_flower.py server --out flower.json [--rounds N] [--model NAME]

The server process (``flwr.server.start_server``, the gRPC transport) starts one client process per slot
(``flwr.client.start_client`` with a :class:`~flwr.client.NumPyClient`); each stays connected for the whole run,
holding its slot's shards, as a federated client does. The clock starts once all of them are connected (the
network is running) and the server hands out round 1's parameters: the run's submission. The strategy is the
job's own (:mod:`peers_job`): slot ``s`` trains the task the devnet's ticket for slot ``s`` names, the server
aggregates with the spec's mean + Nesterov step and scores the checkpoint on the evaluation shard after each round.

Flower's in-process simulation (Ray) and its newer deployment engine (a fresh ClientApp process per message) are
not long-lived clients; the deprecated-but-present ``start_server``/``start_client`` pair is.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.client import NumPyClient, start_client
from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig, start_server
from flwr.server.strategy import Strategy
from peers_job import (
    Busy,
    PeerJob,
    RoundMetric,
    aggregate,
    initial_model,
    load_job,
    peer_spec,
    score,
    slot_shard_index,
    train_slot,
)

CONNECT_TIMEOUT_S = 600.0
"""How long the server waits for every client to connect (each loads torch and its shards first)."""


def to_arrays(state: dict[str, torch.Tensor]) -> list[np.ndarray[Any, Any]]:
    return [state[k].numpy() for k in sorted(state)]


def to_state(arrays: list[np.ndarray[Any, Any]], keys: list[str]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(a, dtype=np.float32, copy=True)) for k, a in zip(keys, arrays, strict=True)}


class SlotClient(NumPyClient):  # type: ignore[misc]
    """One long-lived client: trains its slot's task of every round."""

    def __init__(self, job: PeerJob, slot: int) -> None:
        self.job, self.slot = job, slot
        self.keys = sorted(initial_model(job.spec))

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
        began = time.monotonic()
        base = to_state(parameters, self.keys)
        trained_from = time.monotonic()
        delta = train_slot(self.job, int(config["round"]), self.slot, base)
        train_s = time.monotonic() - trained_from
        arrays = to_arrays(delta)
        return arrays, int(self.job.weight), {"slot": self.slot, "train_s": train_s,
                                              "fit_s": time.monotonic() - began}


class PeerStrategy(Strategy):  # type: ignore[misc]
    """The job's own rule as a Flower strategy: every client every round, the spec's aggregation, central scoring."""

    def __init__(self, job: PeerJob) -> None:
        self.job = job
        self.model = initial_model(job.spec)
        self.keys = sorted(self.model)
        self.outer: dict[str, torch.Tensor] | None = None
        self.rounds: list[RoundMetric] = []
        self.busy = Busy()
        self.since = 0.0
        self.submitted_at = 0.0

    def initialize_parameters(self, client_manager: Any) -> Parameters:
        if not client_manager.wait_for(self.job.spec.tasks_per_round, timeout=int(CONNECT_TIMEOUT_S)):
            raise RuntimeError(f"flower: {self.job.spec.tasks_per_round} clients not connected in "
                               f"{CONNECT_TIMEOUT_S:.0f} s")
        self.since, self.submitted_at = time.monotonic(), time.time()
        return ndarrays_to_parameters(to_arrays(self.model))

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> list[Any]:
        n = self.job.spec.tasks_per_round
        clients = client_manager.sample(num_clients=n, min_num_clients=n)
        return [(c, FitIns(parameters, {"round": server_round - 1})) for c in clients]

    def aggregate_fit(self, server_round: int, results: list[Any], failures: list[Any]) -> tuple[Parameters, dict]:
        if failures:
            raise RuntimeError(f"flower round {server_round}: {len(failures)} clients failed: {failures[:1]}")
        slots = sorted(int(res.metrics["slot"]) for _, res in results)
        if slots != list(range(self.job.spec.tasks_per_round)):
            raise RuntimeError(f"flower round {server_round}: slots {slots} trained, each slot once expected")
        began = time.monotonic()
        deltas = [to_state(parameters_to_ndarrays(res.parameters), self.keys) for _, res in results]
        self.model, self.outer = aggregate(self.job, self.model, deltas, self.outer)
        for _, res in results:
            self.busy.add("training", float(res.metrics["train_s"]))
            self.busy.add("client other", float(res.metrics["fit_s"]) - float(res.metrics["train_s"]))
        parameters = ndarrays_to_parameters(to_arrays(self.model))
        self.busy.add("aggregation", time.monotonic() - began)
        return parameters, {}

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: Any) -> list[Any]:
        return []

    def aggregate_evaluate(self, server_round: int, results: list[Any], failures: list[Any]) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Any]] | None:
        if server_round == 0:  # Flower scores the initial parameters; the devnet does not
            return None
        began = time.monotonic()
        metric = score(self.job, server_round - 1, self.model, self.outer, self.since)
        self.busy.add("evaluation", time.monotonic() - began)
        self.rounds.append(metric)
        print(f"flower round {metric.round}: accuracy {metric.accuracy:.4f} t={metric.t_s:.1f}s", flush=True)
        return metric.loss, {"accuracy": metric.accuracy}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(args: argparse.Namespace) -> None:
    spec = peer_spec(model=args.model, rounds=args.rounds, local_steps=args.local_steps)
    job = load_job(spec, keep=lambda _i: False)  # the server scores; it trains nothing
    port = _free_port()
    common = ["--port", str(port), "--model", args.model, "--rounds", str(args.rounds),
              "--local-steps", str(args.local_steps)]
    clients = {f"flower-client-{s}": subprocess.Popen([sys.executable, __file__, "client", "--slot", str(s), *common])
               for s in range(spec.tasks_per_round)}
    strategy = PeerStrategy(job)
    try:
        start_server(server_address=f"127.0.0.1:{port}", config=ServerConfig(num_rounds=spec.rounds),
                     strategy=strategy)
        for proc in clients.values():
            proc.wait(timeout=60)
    finally:
        for proc in clients.values():
            if proc.poll() is None:
                proc.kill()
    Path(args.out).write_text(json.dumps({
        "rounds": [asdict(m) for m in strategy.rounds], "busy": strategy.busy.seconds,
        "submitted_at": strategy.submitted_at,
        "labels": {str(os.getpid()): "flower-server", **{str(p.pid): label for label, p in clients.items()}},
    }))


def client(args: argparse.Namespace) -> None:
    spec = peer_spec(model=args.model, rounds=args.rounds, local_steps=args.local_steps)
    wanted = {slot_shard_index(spec, r, args.slot) for r in range(spec.rounds)}  # as a trainer fetches only these
    job = load_job(spec, keep=lambda i: i in wanted)
    start_client(server_address=f"127.0.0.1:{args.port}", client=SlotClient(job, args.slot).to_client(),
                 insecure=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["server", "client"])
    ap.add_argument("--out", default="flower.json")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--slot", type=int, default=0)
    ap.add_argument("--model", default="fmnist-cnn-v1")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--local-steps", type=int, default=100)
    args = ap.parse_args()
    serve(args) if args.mode == "server" else client(args)


if __name__ == "__main__":
    main()
