"""The root of dtnode's error tree.

Every error dtnode raises on purpose derives from :class:`DtnodeError`, and where it is also a kind of built-in
error it inherits that too (web3.py's pattern), so callers can catch either. Each subsystem keeps its own
subclasses in its own ``exceptions``/``errors`` module::

    DtnodeError
    ├── ConfigError(DtnodeError, ValueError)          node.config: a setting is invalid; names the setting
    ├── SchemaError(DtnodeError, ValueError)          protocols.schemas: a spec or message fails validation
    ├── MessageRejected(SchemaError)                  protocols.messages: BadSignature, BadSchema, StaleMessage, ...
    ├── SpecMismatch(SchemaError)                     node.roles.chain_view: a job's spec disagrees with its chain copy
    ├── ChainError                                    protocols.chain.errors
    │   ├── ChainUnavailable(ChainError, ConnectionError)
    │   │   └── ChainTimeout(ChainUnavailable, TimeoutError)     node.chainio
    │   ├── ContractRevert  (one subclass per custom error of JobManager, named after it)
    │   ├── TransactionFailed
    │   └── BackendStartError(ChainError, RuntimeError)        protocols.chain.backends
    ├── P2PError                                      protocols.p2p.errors
    │   ├── PeerUnreachable(P2PError, ConnectionError)
    │   ├── RequestTimeout(P2PError, TimeoutError)
    │   ├── PayloadTooLarge(P2PError, ValueError)
    │   ├── RemoteError (the peer answered with a typed error; ``code``)
    │   ├── KeystoreError(P2PError, ValueError)
    │   ├── LibraryDrift (py-libp2p changed under our workarounds)
    │   ├── DiscoveryTimeout
    │   └── NotRunning
    ├── StorageError                                  storage.errors
    │   ├── BlockNotFound(StorageError, LookupError)
    │   ├── CidMismatch(StorageError, ValueError)
    │   ├── MalformedBlock(StorageError, ValueError)
    │   ├── DagTooLarge(StorageError, ValueError)
    │   ├── FetchTimeout(StorageError, TimeoutError)
    │   ├── StoreFull(StorageError, OSError)
    │   ├── InvalidCid(StorageError, ValueError)
    │   └── KuboError
    └── TrainingError                                 node.training.errors
        ├── InvalidDelta(TrainingError, ValueError)
        ├── DatasetError(TrainingError, ValueError)
        ├── ReplayMismatch(TrainingError)
        └── TicketRejected(TrainingError, ValueError)   ``code``: a RejectCode
"""

from __future__ import annotations


class DtnodeError(Exception):
    """Root of every error dtnode raises on purpose. The message says what a user can do about it."""


class ConfigError(DtnodeError, ValueError):
    """A configuration value is invalid; the message names the setting."""


class SchemaError(DtnodeError, ValueError):
    """A spec or wire message does not match its schema."""
