"""A real job across hosts: both trainers behind home NATs in their own network namespaces get their work paid.

Topology (``tests/p2p/netns_topology.py``, three private hosts): in the public namespace a Hardhat node with the
JobManager, the customer's node (the bootstrap peer, circuit relay and content provider), a leader and validator-1,
all on 192.0.2.1; trainer-1 in h1, trainer-2 in h2 and validator-2 in h3, each behind its own nftables-masquerading
router that drops unsolicited inbound packets. The job is the devnet's (``tests/p2p/netns_job.py`` runs
:func:`node.devnet.run_devnet` in the public namespace; the devnet supervisor starts each private node as a
``dtnode`` process under ``ip netns exec``): MLP, 2 rounds of 2 tasks, quorum 2, so the NATed validator-2 fetches
every delta from behind another NAT.

Asserted: the private nodes found themselves private and reserved a slot on the relay (their logs), the customer's
node found itself public; the public side only ever saw the private nodes as their routers' addresses; the job
committed both rounds; on-chain, both trainers' accepted updates were paid (the ledger's paid flags and PaidOut
logs), validator-2 earned its fees, and every wei is accounted for. Printed (``pytest -s``): the time, which public
nodes each private node held a direct TCP connection with, and whether validator-2 reached each trainer directly
(a hole punched through both NATs: nothing else can connect two private hosts) or only through the relay (sampled
each second with ``ss`` in the namespaces).

Needs root, ``ip``, ``nft`` and the contracts' npm install; otherwise skipped with the reason.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.devnet import DevnetResult
from protocols.chain.backends import hardhat_available
from protocols.chain.models import UpdateStatus
from tests.node.ledger_checks import address_of, check_ledger, earned
from tests.p2p.netns_job import PLACEMENT, ROUNDS
from tests.p2p.netns_topology import PUBLIC_IP, Topology, netns_topology, private_ip, router_wan_ip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.hardhat,
    pytest.mark.skipif(not hardhat_available(), reason="contracts/node_modules missing: run `make test` (npm ci)"),
]

ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 480.0
"""The whole run, chain start to refund (~150 s on a quiet machine); past it the devnet is stopped and the test
fails with the logs' ends."""


@pytest.fixture
def topology() -> Iterator[Topology]:
    with netns_topology(private_hosts=len(PLACEMENT)) as topo:
        yield topo


def established(topology: Topology, ns: str) -> set[tuple[int, str]]:
    """Namespace ``ns``'s established TCP connections: (local port, peer IP)."""
    out = subprocess.run([*topology.exec_prefix(ns), "ss", "-tnH", "state", "established"],
                         capture_output=True, text=True, timeout=10).stdout
    found = set()
    for line in out.splitlines():
        local, peer = line.split()[-2:]
        found.add((int(local.rsplit(":", 1)[1]), peer.rsplit(":", 1)[0]))
    return found


def log_tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def listen_port(text: str, pattern: str) -> int:
    found = re.search(pattern, text)
    assert found, f"no match for {pattern!r}"
    return int(found.group(1))


def test_job_with_both_trainers_behind_nat_pays_them(topology: Topology, tmp_path: Path) -> None:
    workdir, result_path, driver_log = tmp_path / "devnet", tmp_path / "result.pickle", tmp_path / "customer.log"
    private_logs = {label: workdir / f"{label}.log" for label in PLACEMENT}
    validator_ns = f"h{PLACEMENT['validator-2']}"
    seen_public: set[tuple[int, str]] = set()
    """(public node's port, peer IP)."""
    seen_validator: dict[str, list[str]] = {}
    """validator-2's direct peers' IPs → the clock times (as its log writes them) they were seen connected."""
    started = time.monotonic()
    with driver_log.open("w") as log:
        driver = subprocess.Popen(
            [*topology.exec_prefix("pub"), sys.executable, "-m", "tests.p2p.netns_job", "--workdir", str(workdir),
             "--result", str(result_path), "--timeout", str(JOB_TIMEOUT_S),
             "--host-ns", *(topology.ns[f"h{i}"] for i in topology.private_hosts)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    try:
        while driver.poll() is None and time.monotonic() - started < JOB_TIMEOUT_S:
            seen_public |= established(topology, "pub")
            for _port, ip in established(topology, validator_ns):
                seen_validator.setdefault(ip, []).append(time.strftime("%H:%M:%S"))
            time.sleep(1.0)
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGINT)  # the driver stops its devnet; the fixture ends what is left
            try:
                driver.wait(timeout=30)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait(timeout=10)
    wall_s = time.monotonic() - started
    logs = "\n".join(log_tail(p) for p in (driver_log, *private_logs.values(), workdir / "validator-1.log"))
    assert driver.returncode == 0 and result_path.exists(), f"the job did not finish ({driver.returncode}):\n{logs}"
    result: DevnetResult = pickle.loads(result_path.read_bytes())

    # The job ran to its end, and on-chain every accepted update was paid once, both NATed trainers' included.
    assert len(result.rounds) == ROUNDS
    check_ledger(result, ROUNDS)
    for label in ("trainer-1", "trainer-2"):
        trainer = address_of(result.labels, label)
        accepted = [u for u in result.ledger.updates if u.trainer == trainer and u.status == UpdateStatus.ACCEPTED]
        assert accepted and all(u.paid for u in accepted), f"{label}: {result.ledger.updates}"
        assert earned(result, label) == sum(u.amount for u in accepted) > 0
    assert earned(result, "validator-2") > 0, "the NATed validator earned no fee"

    # They were really behind the NATs: private by the dial-back check, reachable through a relay slot.
    customer_text = driver_log.read_text(errors="replace")
    assert "reachability: public" in customer_text, log_tail(driver_log)
    for label, path in private_logs.items():
        text = path.read_text(errors="replace")
        assert f"listening on /ip4/{private_ip(PLACEMENT[label])}/tcp/" in text, log_tail(path)
        assert "reachability: private" in text and "reserved a relay slot" in text, log_tail(path)
    routers = {router_wan_ip(i): label for label, i in PLACEMENT.items()}
    assert {ip for _port, ip in seen_public} <= {PUBLIC_IP, *routers}, seen_public
    assert set(routers) <= {ip for _port, ip in seen_public}, seen_public

    # What carried the traffic: each private node's direct connections with the public nodes (by their listen
    # ports), and validator-2's with the trainers (through both NATs: punched).
    ports = {
        listen_port(customer_text, r"chain: Hardhat node on http://[\d.]+:(\d+)"): "chain",
        listen_port(customer_text, r"bootstrap: /ip4/[\d.]+/tcp/(\d+)"): "customer (relay)",
    }
    for label in ("leader-1", "validator-1"):
        ports[listen_port((workdir / f"{label}.log").read_text(), r"listening on /ip4/[\d.]+/tcp/(\d+)")] = label
    direct: dict[str, set[str]] = {label: set() for label in PLACEMENT}
    for port, ip in seen_public:
        if ip in routers:
            direct[routers[ip]].add(ports.get(port, f"port {port}"))
    verdicts = re.findall(r"^(\S+) validator-2 INFO .* is VALID", private_logs["validator-2"].read_text(), re.M)
    punched = {routers[ip]: f"punched: direct {times[0]}-{times[-1]}" for ip, times in seen_validator.items()
               if ip in routers}
    print("\nnetns job:", json.dumps({
        "wall_s": round(wall_s, 1), "devnet_s": round(result.wall_s, 1), "rounds": len(result.rounds),
        "paid_wei": {label: earned(result, label) for label in PLACEMENT},
        "direct_tcp_with_public_nodes": {label: sorted(peers) for label, peers in direct.items()},
        "validator-2_to_trainers": {label: punched.get(label, "relayed only") for label in ("trainer-1", "trainer-2")},
        "validator-2_verdicts_at": sorted(set(verdicts)),
    }, indent=1))
