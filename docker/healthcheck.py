"""Container health probe for a running ``dtnode``: does its libp2p listener answer a multistream handshake?

A bare TCP connect would pass even when the node's event loop is stuck (the kernel completes the handshake from
the listen backlog), so the probe sends the multistream-select header every libp2p connection starts with and
waits for the node to send its own back: an answer proves the trio loop is alive and serving the p2p port. The
probe then closes the connection; the node drops the half-negotiated connection like any failed dial.

Which address: ``DTNODE_HEALTH_ADDR`` if set, else the first entry of ``DTNODE_LISTEN`` (the same variable the
node reads). ``0.0.0.0``/``::`` become loopback. With no fixed port configured (port 0 or no listen address,
e.g. a one-shot ``dtnode keys new`` container) there is nothing to probe: it says so and reports healthy.

Exit status: 0 healthy, 1 unhealthy (Docker's HEALTHCHECK contract). Standard library only, so it runs with the
image's system Python too. Never prints or reads a secret.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping

MULTISTREAM = b"/multistream/1.0.0\n"
DEFAULT_TIMEOUT_S = 5.0


class ProbeError(Exception):
    """The node did not answer as a libp2p listener should."""


def _frame(payload: bytes) -> bytes:
    # multistream-select messages are unsigned-varint length-prefixed; the header is 19 bytes, one varint byte.
    return bytes([len(payload)]) + payload


def target(env: Mapping[str, str]) -> tuple[str, int] | None:
    """(host, port) to probe, or None when no fixed p2p port is configured."""
    raw = env.get("DTNODE_HEALTH_ADDR") or env.get("DTNODE_LISTEN", "")
    first = next((a.strip() for a in raw.split(",") if a.strip()), "")
    if not first:
        return None
    parts = first.strip("/").split("/")
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6", "dns4", "dns6", "dns") or parts[2] != "tcp":
        raise ProbeError(f"cannot probe {first!r}: expected /ip4/<addr>/tcp/<port> (set DTNODE_HEALTH_ADDR)")
    host, port_text = parts[1], parts[3]
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ProbeError(f"cannot probe {first!r}: port {port_text!r} is not a number") from exc
    if port == 0:
        return None
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


def probe(host: str, port: int, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Raise ProbeError unless ``host:port`` answers the multistream-select header within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(_frame(MULTISTREAM))
            expected = _frame(MULTISTREAM)
            got = b""
            while len(got) < len(expected):
                chunk = sock.recv(len(expected) - len(got))
                if not chunk:
                    break
                got += chunk
    except TimeoutError as exc:
        raise ProbeError(f"{host}:{port} accepted but did not answer within {timeout_s} s (node stuck?)") from exc
    except OSError as exc:
        raise ProbeError(f"{host}:{port} unreachable: {exc}") from exc
    if got != expected:
        raise ProbeError(f"{host}:{port} is not a libp2p listener (answered {got[:32]!r})")


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        where = target(env)
        if where is None:
            print("dtnode health: no fixed p2p port configured (DTNODE_LISTEN); nothing to probe")
            return 0
        probe(*where, timeout_s=float(env.get("DTNODE_HEALTH_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    except (ProbeError, ValueError) as exc:
        print(f"dtnode health: UNHEALTHY: {exc}")
        return 1
    print(f"dtnode health: ok ({where[0]}:{where[1]} answered the libp2p handshake)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
