"""Real NATs: dtnode hosts in Linux network namespaces, two of them behind nftables-masquerading routers.

Topology (``tests/p2p/netns_topology.py``): a public namespace with the relay / bootstrap (dial-back verdict:
public), and two private hosts h1 and h2, each behind its own nftables-masquerading router; h2 measures.

Each host is a separate ``python -m tests.p2p.netns_node`` process under ``ip netns exec``. Phase 1 (no hole
punching): both private hosts find themselves private, reserve a slot on the relay, announce their relayed address,
and h2 reaches h1 through the relay (echo RTT and throughput measured, and h2 → relay direct as the baseline).
Phase 2 (DCUtR on): the same hosts restarted; the test reports whether hole punching upgraded the connection to a
direct one through both NATs (and asserts it stays connected either way).

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); otherwise skipped with the reason. Namespaces are deleted
(and any process left in them ended) even when the test fails. Run alone:
``pytest -s tests/p2p/test_netns.py`` prints the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.p2p.netns_topology import PUBLIC_IP, Topology, netns_topology, private_ip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PORT = 4001
RELAY_IP = PUBLIC_IP


class Host:
    """One ``tests.p2p.netns_node`` process in a namespace."""

    def __init__(self, ns: str, workdir: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.status_path = workdir / f"{name}.json"
        self.status_path.unlink(missing_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.p2p.netns_node", "--status",
             str(self.status_path), *args],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def tail(self) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.log_path.read_text().splitlines()[-15:])


def wait_for(what: str, check: Any, timeout: float, hosts: list[Host]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        for host in hosts:
            if host.proc.poll() is not None:
                raise AssertionError(f"{host.name} exited ({host.proc.returncode}) waiting for {what}\n{host.tail()}")
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n" + "\n".join(h.tail() for h in hosts))


@pytest.fixture
def topology() -> Iterator[Topology]:
    with netns_topology() as topo:
        yield topo


def start_private_pair(topology: Topology, tmp_path: Path, relay_addr: str, *, hole_punching: bool,
                       label: str) -> list[Host]:
    extra = ["--hole-punching"] if hole_punching else []
    return [
        Host(topology.ns[f"h{i}"], tmp_path, f"{label}-h{i}",
             ["--listen", f"/ip4/{private_ip(i)}/tcp/{PORT}", "--bootstrap", relay_addr, *extra,
              *(["--measure"] if i == 2 else [])])
        for i in (1, 2)
    ]


def test_private_hosts_behind_nat_meet_through_the_relay(topology: Topology, tmp_path: Path) -> None:
    hosts: list[Host] = []  # running: wait_for fails at once if one exits
    stopped: list[Host] = []
    results: dict[str, Any] = {}
    try:
        relay = Host(topology.ns["pub"], tmp_path, "relay", ["--listen", f"/ip4/{RELAY_IP}/tcp/{PORT}"])
        hosts.append(relay)
        relay_addr = wait_for("the relay to listen", lambda: (relay.status().get("listen") or [None])[0], 30,
                              hosts)

        # Phase 1: relayed only.
        pair = start_private_pair(topology, tmp_path, relay_addr, hole_punching=False, label="relayed")
        hosts += pair
        h1, h2 = pair
        for host in pair:
            wait_for(f"{host.name} to reserve on the relay", lambda h=host: h.status().get("reservations"), 40, hosts)
        s1 = h1.status()
        assert s1["reachability"] == "private" and h2.status()["reachability"] == "private"
        assert relay.status()["reachability"] == "public" and relay.status()["relaying"]
        assert s1["announced"] == [f"{relay_addr}/p2p-circuit"]
        measured = wait_for("h2 to measure over the relay",
                            lambda: h2.status().get("measurements", {}).get("relayed"), 60, hosts)
        assert h2.status()["connections"][s1["peer_id"]] == "relayed"
        results["relayed"] = measured
        results["h2_to_relay_direct"] = h2.status()["measurements"]["to_relay"]
        for host in pair:
            host.stop()
            hosts.remove(host)
            stopped.append(host)

        # Phase 2: the same hosts with DCUtR.
        pair = start_private_pair(topology, tmp_path, relay_addr, hole_punching=True, label="punch")
        hosts += pair
        h1, h2 = pair
        peer1 = wait_for("h1 to reserve", lambda: h1.status().get("reservations") and h1.status()["peer_id"], 40,
                         hosts)
        wait_for("h2 to connect to h1", lambda: peer1 in h2.status().get("connections", {}), 40, hosts)
        started = time.monotonic()
        try:
            wait_for("hole punching", lambda: h2.status().get("connections", {}).get(peer1) == "direct", 20, hosts)
            results["hole_punch"] = {"outcome": "direct", "after_s": round(time.monotonic() - started, 1)}
            results["direct"] = wait_for(
                "h2 to measure the direct connection",
                lambda: h2.status().get("measurements", {}).get("direct"), 40, hosts)
        except AssertionError:
            results["hole_punch"] = {"outcome": "stayed relayed",
                                     "connection": h2.status().get("connections", {}).get(peer1)}
        results["punch_events"] = h2.status().get("events")
        assert h2.status()["connections"].get(peer1) in ("relayed", "direct")
    finally:
        for host in hosts:
            host.stop()
        for host in hosts + stopped:
            host.log.close()
        print("\nnetns NAT results:", json.dumps(results, indent=1))
