"""Errors of the P2P layer (``protocols.p2p``).

::

    P2PError(DtnodeError)
    ├── PeerUnreachable(P2PError, ConnectionError)   no connection or stream to the peer could be opened
    ├── RequestTimeout(P2PError, TimeoutError)       the peer did not answer within the request deadline
    ├── PayloadTooLarge(P2PError, ValueError)        a request or response exceeds its configured size limit
    ├── RemoteError(P2PError)                        the peer answered with a typed error (``code``, ``detail``)
    ├── KeystoreError(P2PError, ValueError)          a keystore file is missing, malformed, or the passphrase is wrong
    ├── LibraryDrift(P2PError, RuntimeError)         py-libp2p no longer has a name our hardening patches
    ├── HardeningNotInstalled(P2PError, RuntimeError) a host was built before ``install_hardening()`` ran
    ├── DiscoveryTimeout(P2PError, TimeoutError)     fewer peers than awaited were found in time
    ├── PartialFrameTimeout(P2PError, TimeoutError)  a peer began a pubsub RPC and did not finish it in time
    └── NotRunning(P2PError, RuntimeError)           the node was used before `run` started it or after it stopped
"""

from __future__ import annotations

from protocols.errors import DtnodeError


class P2PError(DtnodeError):
    """Root of the P2P layer's errors."""


class PeerUnreachable(P2PError, ConnectionError):
    """No connection or stream to the peer could be opened; check its address and that it is running."""


class RequestTimeout(P2PError, TimeoutError):
    """The peer did not answer within the request deadline."""


class PayloadTooLarge(P2PError, ValueError):
    """A request or response exceeds its size limit; send large data through storage and pass its CID."""


class RemoteError(P2PError):
    """The remote handler failed or refused the request; ``code`` is machine-readable, ``detail`` is for people."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"remote peer answered {code}: {detail}")
        self.code = code
        self.detail = detail


class KeystoreError(P2PError, ValueError):
    """A keystore file is missing, malformed, or the passphrase does not open it."""


class LibraryDrift(P2PError, RuntimeError):
    """py-libp2p changed a name our hardening relies on; pin libp2p==0.8.1 or update ``protocols.p2p.hardening``."""


class DiscoveryTimeout(P2PError, TimeoutError):
    """Fewer peers than needed were discovered before the deadline; check the bootstrap addresses."""


class PartialFrameTimeout(P2PError, TimeoutError):
    """A peer began a pubsub RPC and did not finish it within ``p2p.gossip_frame_timeout_s``; its stream is closed."""


class NotRunning(P2PError, RuntimeError):
    """The node is not running; start it with ``await nursery.start(node.run)`` first."""


class HardeningNotInstalled(P2PError, RuntimeError):
    """A P2P node was built in a process where ``protocols.p2p.hardening.install_hardening()`` has not run (or ran
    with smaller queue limits than the node's config asks for); call it once at start-up, before any host."""
