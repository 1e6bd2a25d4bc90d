"""Sending one transaction safely: estimate, sign locally, send raw, wait for the receipt, explain a failure.

Blocking (web3.py's sync API): trio callers run these in ``trio.to_thread.run_sync``. Every RPC goes through the
bounded retry, every wait has a deadline, and every revert leaves as a named :class:`ContractRevert` subclass.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxParams, TxReceipt

from protocols.chain.errors import ChainError, ChainUnavailable, TransactionFailed, decode_revert
from protocols.chain.nonce import NonceManager
from protocols.chain.rpc import RetryPolicy, call_with_retry

T = TypeVar("T")


@dataclass(frozen=True)
class ClientConfig:
    """Timeouts, retries and gas policy of the chain adapter (named values the node's config fills in)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    receipt_timeout_s: float = 60.0
    """How long to wait for a sent transaction to be mined before :class:`TransactionFailed`."""
    receipt_poll_s: float = 0.05
    gas_multiplier: float = 1.3
    gas_headroom: int = 100_000
    """Added to the scaled estimate: a vote that becomes the deciding one, or a commit after more submissions,
    costs more than it did when estimated (unused gas is not charged)."""
    priority_fee_wei: int = 1_000_000_000
    base_fee_multiplier: int = 2
    """maxFeePerGas = base fee * this + priority fee: survives several full blocks of base-fee growth."""

    def __post_init__(self) -> None:
        if self.receipt_timeout_s <= 0 or self.receipt_poll_s <= 0:
            raise ValueError("ClientConfig: receipt_timeout_s and receipt_poll_s must be positive")
        if self.gas_multiplier < 1 or self.gas_headroom < 0 or self.priority_fee_wei < 0:
            raise ValueError("ClientConfig: gas_multiplier >= 1, gas_headroom >= 0, priority_fee_wei >= 0")


_NONCE_ERRORS = ("nonce too low", "nonce too high", "invalid nonce", "nonce has already been used")
_DUPLICATE_ERRORS = ("already known", "known transaction", "already imported", "nonce too low")

_registry_lock = threading.Lock()
_by_url: dict[tuple[str, str], NonceManager] = {}
_by_provider: weakref.WeakKeyDictionary[Any, dict[str, NonceManager]] = weakref.WeakKeyDictionary()


def nonce_manager_for(w3: Web3, account_address: str, retry: RetryPolicy) -> NonceManager:
    """The process-wide :class:`NonceManager` of one account on one chain endpoint.

    Every client of the same account on the same endpoint shares it, so they never race each other for nonces.
    """

    def fetch() -> int:
        return call_with_retry(
            lambda: w3.eth.get_transaction_count(to_checksum_address(account_address), "pending"),
            retry,
            what="eth_getTransactionCount",
        )

    url = getattr(w3.provider, "endpoint_uri", None)
    with _registry_lock:
        if url:
            return _by_url.setdefault((str(url), account_address), NonceManager(fetch))
        per_provider = _by_provider.setdefault(w3.provider, {})
        return per_provider.setdefault(account_address, NonceManager(fetch))


def _message(exc: BaseException) -> str:
    return str(exc).lower()


class Transactor:
    """Signs and sends transactions from one local account, and reads with the same retry policy."""

    def __init__(self, w3: Web3, account: LocalAccount, config: ClientConfig) -> None:
        self.w3 = w3
        self.account = account
        self.config = config
        self.nonces = nonce_manager_for(w3, account.address, config.retry)
        self._chain_id: int | None = None

    def rpc(self, fn: Callable[[], T], what: str) -> T:
        """One read with the bounded retry; a revert (from ``eth_call``) becomes its named exception."""
        try:
            return call_with_retry(fn, self.config.retry, what=what)
        except ChainError:
            raise
        except Exception as exc:  # any backend's revert shape: decoded in one place
            raise decode_revert(exc) from exc

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.rpc(lambda: self.w3.eth.chain_id, "eth_chainId")
        return self._chain_id

    def _fees(self) -> dict[str, int]:
        block = self.rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
        base = int(block.get("baseFeePerGas", 0))
        prio = self.config.priority_fee_wei
        return {"maxFeePerGas": base * self.config.base_fee_multiplier + prio, "maxPriorityFeePerGas": prio}

    def _gas_limit(self, tx: TxParams, what: str, min_gas: int) -> int:
        estimate = self.rpc(lambda: self.w3.eth.estimate_gas(tx), f"estimate gas for {what}")
        block = self.rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
        scaled = max(int(estimate * self.config.gas_multiplier) + self.config.gas_headroom, min_gas)
        return min(scaled, int(block["gasLimit"]))

    def _send_raw(self, raw: bytes, tx_hash: HexBytes, what: str) -> HexBytes:
        attempts = 0

        def once() -> HexBytes:
            nonlocal attempts
            attempts += 1
            try:
                return HexBytes(self.w3.eth.send_raw_transaction(raw))
            except Exception as exc:
                # A retry after a lost answer meets our own first attempt: it was sent.
                if attempts > 1 and any(m in _message(exc) for m in _DUPLICATE_ERRORS):
                    return tx_hash
                raise

        return call_with_retry(once, self.config.retry, what=f"send {what}")

    def send(self, tx: TxParams, what: str, *, min_gas: int = 0) -> TxReceipt:
        """Estimate, sign, send and wait for ``tx`` (``to``/``data``/``value`` set); returns a successful receipt.

        ``min_gas``: a floor on the gas limit, for a call whose cost can grow a lot between estimate and inclusion
        (a vote that turns out to settle the update pays every panel member's fee or slash).

        Raises:
            ContractRevert: (a named subclass) the contract refused, at estimation or on-chain.
            TransactionFailed: out of gas, rejected by the node, or not mined within ``receipt_timeout_s``.
            ChainUnavailable: the RPC did not answer within the retry policy.
        """
        tx = {**tx, "from": self.account.address}
        gas = self._gas_limit(tx, what, min_gas)
        for attempt in (1, 2):
            fees = self._fees()
            try:
                with self.nonces.reserve() as nonce:
                    full: dict[str, Any] = {
                        **{k: v for k, v in tx.items() if k != "from"},
                        "gas": gas,
                        "nonce": nonce,
                        "chainId": self.chain_id,
                        "type": 2,
                        **fees,
                    }
                    signed = self.account.sign_transaction(full)
                    tx_hash = self._send_raw(signed.raw_transaction, HexBytes(signed.hash), what)
            except ChainError:
                raise
            except Exception as exc:
                # Another process used this account: the counter was re-synced, one more try is safe.
                if attempt == 1 and any(m in _message(exc) for m in _NONCE_ERRORS):
                    continue
                raise decode_revert(exc) from exc
            receipt = self.wait_for_receipt(tx_hash, what)
            if receipt["status"] != 1:
                raise self._explain_failure(full, receipt, what)
            return receipt
        raise TransactionFailed(f"{what}: nonce kept colliding with another sender of {self.account.address}")

    def wait_for_receipt(self, tx_hash: HexBytes, what: str) -> TxReceipt:
        """Poll for the receipt until ``receipt_timeout_s``; :class:`TransactionFailed` after it."""
        deadline = time.monotonic() + self.config.receipt_timeout_s
        while True:
            try:
                receipt = call_with_retry(
                    lambda: self.w3.eth.get_transaction_receipt(tx_hash),
                    self.config.retry,
                    what="eth_getTransactionReceipt",
                )
                if receipt is not None:
                    return receipt
            except TransactionNotFound:
                pass
            if time.monotonic() > deadline:
                raise TransactionFailed(
                    f"{what}: transaction {tx_hash.to_0x_hex()} not mined within {self.config.receipt_timeout_s} s; "
                    "the node may be stalled or the fee too low (raise ClientConfig.receipt_timeout_s or the fees)"
                )
            time.sleep(self.config.receipt_poll_s)  # poll period, bounded by the deadline above

    def _explain_failure(self, full: dict[str, Any], receipt: TxReceipt, what: str) -> ChainError:
        """Why a mined transaction failed: replay it on the state before its block to get the revert data."""
        gas_used = int(receipt["gasUsed"])
        if gas_used >= int(full["gas"]):
            return TransactionFailed(
                f"{what}: ran out of gas ({gas_used}); raise ClientConfig.gas_headroom or gas_multiplier"
            )
        call = cast(
            TxParams,
            {
                "from": self.account.address,
                "to": full.get("to"),
                "data": full.get("data", b""),
                "value": full.get("value", 0),
                "gas": full["gas"],
            },
        )
        mined_in = int(receipt["blockNumber"])
        # The state after the block first: it holds whatever beat this transaction within the block (the usual
        # race); then the state before it.
        for block in (mined_in, max(mined_in - 1, 0)):

            def replay(block: int = block) -> bytes:
                return bytes(self.w3.eth.call(call, block))

            try:
                call_with_retry(replay, self.config.retry, what=f"replay {what}")
            except ChainUnavailable:
                raise
            except Exception as exc:
                return decode_revert(exc)
        return TransactionFailed(
            f"{what}: transaction {receipt['transactionHash'].to_0x_hex()} failed on-chain but its replay succeeded "
            "(state changed within the block)"
        )
