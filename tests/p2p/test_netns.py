"""Real NATs: dtnode hosts in Linux network namespaces, two of them behind nftables-masquerading routers.

Topology (addresses from the documentation and private ranges; nothing leaves the test's own links)::

    ns pub   br0 192.0.2.1/24 ── the relay / bootstrap (dial-back verdict: public)
     ├── ns r1  wan 192.0.2.11 │ lan 10.0.1.1   masquerade on wan, forward only lan→wan and replies
     │    └── ns h1  10.0.1.2  a private host (verdict: private)
     └── ns r2  wan 192.0.2.12 │ lan 10.0.2.1   the same
          └── ns h2  10.0.2.2  a private host that measures

Each host is a separate ``python -m tests.p2p.netns_node`` process under ``ip netns exec``. Phase 1 (no hole
punching): both private hosts find themselves private, reserve a slot on the relay, announce their relayed address,
and h2 reaches h1 through the relay (echo RTT and throughput measured, and h2 → relay direct as the baseline).
Phase 2 (DCUtR on): the same hosts restarted; the test reports whether hole punching upgraded the connection to a
direct one through both NATs (and asserts it stays connected either way).

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); otherwise skipped with the reason. Namespaces are deleted in
a ``finally`` even when the test fails. Run alone: ``pytest -s tests/p2p/test_netns.py`` prints the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PORT = 4001
RELAY_IP = "192.0.2.1"
NFT_ROUTER = """
table ip nat {
  chain postrouting { type nat hook postrouting priority 100; oifname "wan" masquerade; }
}
table ip filter {
  chain forward { type filter hook forward priority 0; policy drop;
    iifname "lan" oifname "wan" accept; ct state established,related accept; }
  chain input { type filter hook input priority 0; policy drop;
    iifname { "lo", "lan" } accept; ct state established,related accept; }
}
"""
"""A home router: masquerade, and unsolicited packets from the internet dropped (not answered), in forward and input.
Measured without the input chain (the router answers a SYN to a port with no mapping with a RST): DCUtR's
simultaneous dials were refused by the other router every time (see docs/BENCHMARKS.md)."""


def _why_not_runnable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns add)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install Debian's {package} (scripts/setup.sh does as root)"
    return None


def _run(*cmd: str, stdin: str | None = None) -> None:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")


class Topology:
    """The namespaces above, named with this process's id so parallel runs do not collide."""

    def __init__(self) -> None:
        tag = f"dt{os.getpid()}"
        self.ns = {name: f"{tag}-{name}" for name in ("pub", "r1", "r2", "h1", "h2")}
        self.created: list[str] = []

    def build(self) -> None:
        for ns in self.ns.values():
            _run("ip", "netns", "add", ns)
            self.created.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        pub = self.ns["pub"]
        _run("ip", "-n", pub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", pub, "addr", "add", f"{RELAY_IP}/24", "dev", "br0")
        _run("ip", "-n", pub, "link", "set", "br0", "up")
        for i in (1, 2):
            router, host = self.ns[f"r{i}"], self.ns[f"h{i}"]
            _run("ip", "-n", router, "link", "add", "wan", "type", "veth", "peer", "name", f"port{i}", "netns", pub)
            _run("ip", "-n", pub, "link", "set", f"port{i}", "master", "br0", "up")
            _run("ip", "-n", router, "addr", "add", f"192.0.2.1{i}/24", "dev", "wan")
            _run("ip", "-n", router, "link", "set", "wan", "up")
            _run("ip", "-n", router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host)
            _run("ip", "-n", router, "addr", "add", f"10.0.{i}.1/24", "dev", "lan")
            _run("ip", "-n", router, "link", "set", "lan", "up")
            _run("ip", "-n", host, "addr", "add", f"10.0.{i}.2/24", "dev", "eth0")
            _run("ip", "-n", host, "link", "set", "eth0", "up")
            _run("ip", "-n", host, "route", "add", "default", "via", f"10.0.{i}.1")
            _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _run("ip", "netns", "exec", router, "nft", "-f", "-", stdin=NFT_ROUTER)

    def destroy(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.created.clear()


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
    reason = _why_not_runnable()
    if reason:
        pytest.skip(reason)
    topo = Topology()
    try:
        try:
            topo.build()
        except RuntimeError as exc:
            if not topo.created or "netns add" in str(exc):
                pytest.skip(f"cannot create network namespaces here: {exc}")
            raise
        yield topo
    finally:
        topo.destroy()


def start_private_pair(topology: Topology, tmp_path: Path, relay_addr: str, *, hole_punching: bool,
                       label: str) -> list[Host]:
    extra = ["--hole-punching"] if hole_punching else []
    return [
        Host(topology.ns[f"h{i}"], tmp_path, f"{label}-h{i}",
             ["--listen", f"/ip4/10.0.{i}.2/tcp/{PORT}", "--bootstrap", relay_addr, *extra,
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
