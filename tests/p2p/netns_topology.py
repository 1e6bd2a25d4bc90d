"""The network-namespace topology the NAT tests share (``test_netns.py``, ``test_netns_job.py``).

Addresses from the documentation and private ranges; nothing leaves the test's own links::

    ns pub   br0 192.0.2.1/24     the public network: every public node binds this address
     ├── ns r1  wan 192.0.2.11 │ lan 10.0.1.1   masquerade on wan, forward only lan→wan and replies
     │    └── ns h1  10.0.1.2  a private host
     ├── ns r2  wan 192.0.2.12 │ lan 10.0.2.1   the same
     │    └── ns h2  10.0.2.2  a private host
     └── ns r3 / h3 (10.0.3.2)  the same, when a test asks for three private hosts

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); :func:`netns_topology` skips the test with the reason
otherwise. On the way out it ends every process still inside the namespaces (by the PIDs ``ip netns pids`` lists:
only processes the test started live there) and deletes the namespaces, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

PUBLIC_IP = "192.0.2.1"
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


def private_ip(i: int) -> str:
    """Host ``h{i}``'s address behind its router."""
    return f"10.0.{i}.2"


def router_wan_ip(i: int) -> str:
    """Router ``r{i}``'s public address: what the public network sees of host ``h{i}``."""
    return f"192.0.2.1{i}"


def why_not_runnable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns add)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install Debian's {package} (scripts/setup.sh does as root)"
    return None


def run(*cmd: str, stdin: str | None = None) -> str:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class Topology:
    """The namespaces above with ``private_hosts`` private hosts, named with this process's id so parallel runs do
    not collide."""

    def __init__(self, private_hosts: int = 2) -> None:
        tag = f"dt{os.getpid()}"
        self.private_hosts = tuple(range(1, private_hosts + 1))
        names = ["pub", *(f"r{i}" for i in self.private_hosts), *(f"h{i}" for i in self.private_hosts)]
        self.ns = {name: f"{tag}-{name}" for name in names}
        self.created: list[str] = []

    def exec_prefix(self, name: str) -> list[str]:
        """The command prefix that runs a program in namespace ``name`` (``pub``, ``h1`` ...)."""
        return ["ip", "netns", "exec", self.ns[name]]

    def build(self) -> None:
        for ns in self.ns.values():
            run("ip", "netns", "add", ns)
            self.created.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        pub = self.ns["pub"]
        run("ip", "-n", pub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", pub, "addr", "add", f"{PUBLIC_IP}/24", "dev", "br0")
        run("ip", "-n", pub, "link", "set", "br0", "up")
        for i in self.private_hosts:
            router, host = self.ns[f"r{i}"], self.ns[f"h{i}"]
            run("ip", "-n", router, "link", "add", "wan", "type", "veth", "peer", "name", f"port{i}", "netns", pub)
            run("ip", "-n", pub, "link", "set", f"port{i}", "master", "br0", "up")
            run("ip", "-n", router, "addr", "add", f"{router_wan_ip(i)}/24", "dev", "wan")
            run("ip", "-n", router, "link", "set", "wan", "up")
            run("ip", "-n", router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host)
            run("ip", "-n", router, "addr", "add", f"10.0.{i}.1/24", "dev", "lan")
            run("ip", "-n", router, "link", "set", "lan", "up")
            run("ip", "-n", host, "addr", "add", f"{private_ip(i)}/24", "dev", "eth0")
            run("ip", "-n", host, "link", "set", "eth0", "up")
            run("ip", "-n", host, "route", "add", "default", "via", f"10.0.{i}.1")
            run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            run("ip", "netns", "exec", router, "nft", "-f", "-", stdin=NFT_ROUTER)

    def pids(self) -> list[int]:
        """Processes still running inside the namespaces (all started by the test)."""
        found: list[int] = []
        for ns in self.created:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                found += [int(p) for p in run("ip", "netns", "pids", ns).split()]
        return found

    def destroy(self) -> None:
        # A namespace outlives `ip netns del` while a process is inside it: end the test's leftovers first.
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.created.clear()


@contextlib.contextmanager
def netns_topology(private_hosts: int = 2) -> Iterator[Topology]:
    """The topology built, or the test skipped with the reason it cannot be; torn down on the way out."""
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)
    topo = Topology(private_hosts)
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
