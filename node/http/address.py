"""Where the dashboard listens: ``--http HOST:PORT`` parsed and checked before start-up.

Loopback unless the operator names another address: ``--http 8080`` listens on 127.0.0.1. This module only parses;
it never opens a socket.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from protocols.errors import ConfigError

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class HttpAddress:
    host: str
    port: int
    """0: the system picks a free port (tests); the bound address is reported once serving."""

    @property
    def bind(self) -> str:
        """The address in hypercorn's ``bind`` form (IPv6 hosts in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_http_address(text: str) -> HttpAddress:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (loopback); raises :class:`ConfigError` naming the setting."""
    value = text.strip()
    host, port_text = LOOPBACK, value
    if value.startswith("["):
        inside, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"setting 'http': {text!r} is not [IPV6]:PORT")
        host, port_text = inside, rest[1:]
    elif ":" in value:
        host, _, port_text = value.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"setting 'http': {text!r} has no port in 0..65535 (expected HOST:PORT, e.g. "
                          f"{LOOPBACK}:8080)")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ConfigError(f"setting 'http': {host!r} is not an IP address (expected HOST:PORT, e.g. "
                              f"{LOOPBACK}:8080; 0.0.0.0 to listen on every interface)") from exc
    return HttpAddress(host, int(port_text))
