"""Storage errors: every failure of content addressing, the block store and block exchange.

    StorageError(DtnodeError)
    ├── BlockNotFound(StorageError, LookupError)   no local copy and no provider has it
    ├── CidMismatch(StorageError, ValueError)      bytes do not hash to the CID they came under
    ├── DagTooLarge(StorageError, ValueError)      a DAG exceeds the caller's byte limit
    ├── FetchTimeout(StorageError, TimeoutError)   providers did not deliver before the deadline
    ├── StoreFull(StorageError, OSError)           the store's budget or the disk is exhausted
    ├── InvalidCid(StorageError, ValueError)       a string or bytes is not a CID we accept
    ├── MalformedBlock(StorageError, ValueError)   a block hashes right but is not valid dag-pb/UnixFS
    └── KuboError(StorageError, ConnectionError)   the Kubo RPC daemon failed or is unreachable
"""

from __future__ import annotations

from protocols.errors import DtnodeError


class StorageError(DtnodeError):
    """Root of storage errors."""


class BlockNotFound(StorageError, LookupError):
    """A block is neither in the local store nor available from any provider."""


class CidMismatch(StorageError, ValueError):
    """Bytes do not hash to the CID they were stored or sent under."""


class DagTooLarge(StorageError, ValueError):
    """A DAG (or file) is larger than the limit the caller set."""


class FetchTimeout(StorageError, TimeoutError):
    """Providers did not deliver the content before the deadline."""


class StoreFull(StorageError, OSError):
    """The block store's size budget or the disk under it is exhausted."""


class InvalidCid(StorageError, ValueError):
    """A value is not a CID this node accepts (CIDv1, raw or dag-pb, sha2-256)."""


class MalformedBlock(StorageError, ValueError):
    """A block matches its CID but is not a dag-pb/UnixFS file node we can read."""


class KuboError(StorageError, ConnectionError):
    """The Kubo RPC daemon answered with an error or could not be reached."""
