"""Nonces for one sending account shared by several concurrent senders (trio tasks, each in a worker thread).

The lock is held from taking a nonce until the node has accepted (or refused) the signed transaction, so nonces
reach the node in order and a refused send cannot leave a gap. After any refusal the local counter is dropped and
re-read from the node's ``pending`` count, which is the truth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class NonceManager:
    """Hands out consecutive nonces for one address.

    ``fetch_pending`` returns the node's pending transaction count for the address (``get_transaction_count(addr,
    "pending")``); it is called at first use and after every failed send.
    """

    def __init__(self, fetch_pending: Callable[[], int]) -> None:
        self._fetch_pending = fetch_pending
        # A threading lock, not a trio one: the holders are worker threads running blocking web3 calls.
        self._lock = threading.Lock()
        self._next: int | None = None

    @contextmanager
    def reserve(self) -> Iterator[int]:
        """Hold the account's send slot and yield the next nonce.

        Leave the block normally once the node accepted the transaction (the nonce is then used); an exception
        means the node did not take it, and the counter is re-synced from the chain.
        """
        with self._lock:
            if self._next is None:
                self._next = self._fetch_pending()
            nonce = self._next
            try:
                yield nonce
            except BaseException:
                self._next = None
                raise
            self._next = nonce + 1

    def resync(self) -> None:
        """Forget the local counter; the next reservation re-reads it from the node."""
        with self._lock:
            self._next = None

    @property
    def peek(self) -> int | None:
        """The next nonce this manager would hand out, if known (for diagnostics and tests)."""
        return self._next
