"""Is this node reachable from outside? Peers dial it back on a fresh connection (``/dtnode/dialback/1.0.0``).

Why not py-libp2p 0.8.1's AutoNAT (``libp2p.host.autonat``): its server dials back with ``host.connect``, which
returns at once when a connection to the asker exists, and the asker always has one (it sent the request on it),
so every node is judged PUBLIC. Here the server opens a new transport connection to the asker's address and runs the
Noise handshake on it (which proves the asker's peer id answered), then closes it without adding it to the swarm.

Request and reply go over :mod:`protocols.p2p.reqresp` as canonical JSON::

    request: {"addrs": ["/ip4/…/tcp/…", …]}            the asker's listen addresses
    reply:   {"reached": "/ip4/…/tcp/…"} or {"reached": null}

Anti-amplification (as AutoNAT's spec asks): the server dials only addresses at the IP it sees the request come
from (plus, for each advertised TCP port, that port at the observed IP: a home router's port forwarding), at most
:data:`MAX_DIAL_ADDRS` of them, and refuses requests that arrive over a relayed connection.

Verdict (:func:`verdict`): the majority of the answers, PUBLIC (reached) or PRIVATE (tried and failed); UNKNOWN on no
answer or a tie (ask again later).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID

from protocols.canonical import canonical_json, parse_json_object
from protocols.errors import SchemaError
from protocols.p2p.errors import P2PError, RemoteError
from protocols.p2p.reqresp import Requests

logger = logging.getLogger(__name__)

DIALBACK_PROTOCOL = TProtocol("/dtnode/dialback/1.0.0")
MAX_DIAL_ADDRS = 4
"""Addresses one request makes the server dial, at most."""


class Reachability(enum.Enum):
    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


def verdict(answers: Sequence[bool | None]) -> Reachability:
    """``answers``: per asked peer, True (it reached us), False (it tried and failed), None (no answer). The verdict
    is the majority of the answers: one lying peer among three that answer cannot make a private node believe it
    is public (it would then hold no relay slot, and its challenged segments would be unavailable to validators:
    slashed) nor a public one private (relayed for nothing). A node that got one answer (at start, from its bootstrap
    peer) trusts that one; a tie is UNKNOWN (asked again soon)."""
    reached = sum(a is True for a in answers)
    failed = sum(a is False for a in answers)
    if reached > failed:
        return Reachability.PUBLIC
    if failed > reached:
        return Reachability.PRIVATE
    return Reachability.UNKNOWN


def is_relayed(addr: multiaddr.Multiaddr | str) -> bool:
    return "/p2p-circuit" in str(addr)


def _ip_of(addr: multiaddr.Multiaddr) -> str | None:
    for proto in ("ip4", "ip6"):
        try:
            return str(addr.value_for_protocol(proto))
        except Exception:  # the multiaddr library raises several types for a missing protocol
            continue
    return None


def dial_candidates(advertised: Sequence[str], observed_ip: str) -> list[multiaddr.Multiaddr]:
    """The addresses a server may dial for an asker seen at ``observed_ip`` (see the module docstring)."""
    chosen: list[multiaddr.Multiaddr] = []
    family = "ip6" if ":" in observed_ip else "ip4"
    for text in advertised:
        if is_relayed(text):
            continue
        try:
            addr = multiaddr.Multiaddr(text.split("/p2p/")[0])
            port = addr.value_for_protocol("tcp")
        except Exception:  # not a TCP address: QUIC and relayed addresses are not checked here
            continue
        for candidate in (addr, multiaddr.Multiaddr(f"/{family}/{observed_ip}/tcp/{port}")):
            if _ip_of(candidate) == observed_ip and str(candidate) not in {str(c) for c in chosen}:
                chosen.append(candidate)
    return chosen[:MAX_DIAL_ADDRS]


class DialBack:
    """Both sides of the check for one host: serves requests, and asks peers with :meth:`check`."""

    def __init__(self, host: IHost, requests: Requests, *, dial_timeout_s: float) -> None:
        self._host = host
        self._requests = requests
        self._dial_timeout_s = dial_timeout_s
        requests.set_handler(DIALBACK_PROTOCOL, self._serve)

    # --- asking ---------------------------------------------------------------------------------------------

    async def check(self, peers: Sequence[ID], timeout: float) -> Reachability:
        """Ask ``peers`` (at once) to dial this node back; the :func:`verdict` of their answers."""
        own = [str(a) for a in self._host.get_addrs() if not is_relayed(a)]
        answers: list[bool | None] = [None] * len(peers)

        async def ask(i: int, peer: ID) -> None:
            try:
                body = await self._requests.request(
                    peer, DIALBACK_PROTOCOL, canonical_json({"addrs": own}), timeout)
                answers[i] = parse_json_object(body, what="dial-back reply").get("reached") is not None
            except (P2PError, SchemaError) as exc:  # an older node without the protocol, or one that is busy
                logger.debug("dial-back request to %s: %s", peer, exc)

        async with trio.open_nursery() as nursery:
            for i, peer in enumerate(peers):
                nursery.start_soon(ask, i, peer)
        return verdict(answers)

    # --- serving --------------------------------------------------------------------------------------------

    async def _serve(self, request: bytes, peer: ID) -> bytes:
        try:
            addrs = parse_json_object(request, what="dial-back request").get("addrs")
        except SchemaError as exc:
            raise RemoteError("BAD_REQUEST", str(exc)) from exc
        if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
            raise RemoteError("BAD_REQUEST", "addrs must be a list of multiaddr strings")
        observed = self._observed_ip(peer)
        if observed is None:
            raise RemoteError("DIAL_REFUSED", "no direct connection from the asker (relayed requests are refused)")
        for addr in dial_candidates(addrs, observed):
            if await self._dial_fresh(addr, peer):
                return canonical_json({"reached": str(addr)})
        return canonical_json({"reached": None})

    def _observed_ip(self, peer: ID) -> str | None:
        for conn in self._host.get_network().connections.get(peer, []):
            addrs = conn.get_transport_addresses()
            if addrs and not any(is_relayed(a) for a in addrs):
                ip = _ip_of(addrs[0])
                if ip is not None:
                    return ip
        return None

    async def _dial_fresh(self, addr: multiaddr.Multiaddr, peer: ID) -> bool:
        """A new TCP connection to ``addr`` and a Noise handshake that must prove ``peer``; closed either way."""
        swarm = self._host.get_network()
        assert isinstance(swarm, Swarm)
        transport = swarm.transport_manager.transport_for_dialing(addr)
        if transport is None:
            return False
        raw = None
        try:
            with trio.fail_after(self._dial_timeout_s):
                raw = await transport.dial(addr)
                secured = await swarm.upgrader.upgrade_security(raw, True, peer)
                await secured.close()
                return True
        except trio.TooSlowError:
            logger.debug("dial-back to %s timed out", addr)
        except Exception as exc:  # refused, unreachable, another peer id: all mean "not reachable here"
            logger.debug("dial-back to %s failed: %r", addr, exc)
        finally:
            if raw is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await raw.close()
                    except Exception:  # already closed by the secured connection
                        pass
        return False
