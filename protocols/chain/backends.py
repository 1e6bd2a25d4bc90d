"""Chains to run against: a Hardhat node process, an in-process py-evm chain, and the dev accounts both fund.

Both backends fund the same accounts: the ones Hardhat derives from its public test mnemonic. Their keys are
derived here at run time with eth_account's HD wallet; no private key is ever written into the repository.
These accounts are public knowledge: never use them on a real network.

Blocking by nature (subprocesses, HTTP): trio callers go through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.currency import to_wei
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.types import RPCEndpoint, RPCResponse

from protocols.chain.errors import ChainError, ChainUnavailable

# Hardhat's documented test mnemonic and HD path (m/44'/60'/0'/0/i): public, for local development only.
HARDHAT_MNEMONIC = "test test test test test test test test test test test junk"
HARDHAT_HD_PATH = "m/44'/60'/0'/0"
HARDHAT_ACCOUNT_COUNT = 20
HARDHAT_ACCOUNT_BALANCE_ETH = 10_000
HARDHAT_CHAIN_ID = 31337
GENESIS_GAS_LIMIT = 30_000_000  # Hardhat's default block gas limit, so gas behaves alike on both backends

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
"""The Hardhat project in the source checkout (absent in an installed wheel)."""


class BackendStartError(ChainError, RuntimeError):
    """A local chain could not be started; the message says why (and shows the node's log tail)."""


@functools.cache
def _dev_account(index: int) -> LocalAccount:
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(HARDHAT_MNEMONIC, account_path=f"{HARDHAT_HD_PATH}/{index}")
    return account


def dev_accounts(n: int = 10) -> list[LocalAccount]:
    """The first ``n`` Hardhat dev accounts (funded on both backends; at most 20)."""
    if not 0 < n <= HARDHAT_ACCOUNT_COUNT:
        raise ValueError(f"dev_accounts(n): n must be 1..{HARDHAT_ACCOUNT_COUNT}, got {n}")
    return [_dev_account(i) for i in range(n)]


class _LockedEthereumTesterProvider(EthereumTesterProvider):
    """eth-tester is not thread-safe; callers reach it from several worker threads, so serialize every request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            return super().make_request(method, params)

    def mine_blocks(self, n: int) -> None:
        """Mine ``n`` empty blocks under the same lock as every request (a block ticker runs in its own thread)."""
        with self._lock:
            self.ethereum_tester.mine_blocks(n)  # type: ignore[union-attr]

    def keep_time(self, now: int) -> None:
        """:func:`keep_time` for this chain, read and mined under the lock (a transaction mined by another thread
        between the read and the travel would make eth-tester refuse to travel backwards)."""
        with self._lock:
            tester = self.ethereum_tester
            latest = int(tester.get_block_by_number("latest")["timestamp"])  # type: ignore[union-attr]
            if latest >= now:
                return
            pending = int(tester.get_block_by_number("pending")["timestamp"])  # type: ignore[union-attr]
            if now > pending:
                # py-evm mines the travel block one second before the target it is given.
                tester.time_travel(now + 1)  # type: ignore[union-attr]
            else:
                tester.mine_blocks(1)  # type: ignore[union-attr]


def _single_run_gas_estimate(state: Any, transaction: Any) -> int:
    """Gas estimate from one execution at the block gas limit (py-evm's default bisects: ~12 executions).

    Returns the gas the transaction consumed before refunds. The 63/64 rule can make the minimum viable limit a
    little higher than that: the adapter's margin (``ClientConfig.gas_multiplier``/``gas_headroom``) covers it.
    """
    from eth.vm.spoof import SpoofTransaction

    trial = SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0)
    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(trial)  # what py-evm's own estimator runs, once
    finally:
        state.revert(snapshot)
    if computation.is_error:
        raise computation.error
    return int(transaction.intrinsic_gas + computation.get_gas_used())


def _indexed_backend_class() -> type[Any]:
    """PyEVMBackend whose transaction lookups use py-evm's hash index instead of scanning blocks from the head.

    eth-tester 0.13.0b1 finds a transaction by walking back block by block, so ``eth_getLogs`` over a chain of n
    transactions costs O(n^2) block loads while holding the provider lock, stalling every node of an in-process
    devnet. py-evm already keeps a ``tx hash -> (block, index)`` index; this uses it (same serializers, same output).
    """
    from eth.exceptions import TransactionNotFound as EVMTransactionNotFound
    from eth_tester import PyEVMBackend
    from eth_tester.backends.pyevm.serializers import serialize_transaction, serialize_transaction_receipt
    from eth_tester.exceptions import TransactionNotFound

    class IndexedPyEVMBackend(PyEVMBackend):  # type: ignore[misc]
        def _find(self, transaction_hash: bytes) -> tuple[Any, Any, int]:
            pending = self.chain.get_block()
            for index, tx in enumerate(pending.transactions):
                if tx.hash == transaction_hash:
                    return pending, tx, index
            try:
                number, index = self.chain.chaindb.get_transaction_index(transaction_hash)
            except EVMTransactionNotFound as exc:
                raise TransactionNotFound(f"No transaction found for hash 0x{transaction_hash.hex()}") from exc
            block = self.chain.get_canonical_block_by_number(number)
            return block, block.transactions[index], index

        def get_transaction_by_hash(self, transaction_hash: bytes) -> Any:
            block, tx, index = self._find(transaction_hash)
            is_pending = block.number == self.chain.get_block().number
            return serialize_transaction(block, tx, index, is_pending)

        def get_transaction_receipt(self, transaction_hash: bytes) -> Any:
            block, tx, index = self._find(transaction_hash)
            is_pending = block.number == self.chain.get_block().number
            receipts = block.get_receipts(self.chain.chaindb)
            return serialize_transaction_receipt(block, receipts, tx, index, is_pending, self.chain.get_vm())

    return IndexedPyEVMBackend


def in_process_chain(*, accounts: int = HARDHAT_ACCOUNT_COUNT, balance_eth: int = HARDHAT_ACCOUNT_BALANCE_ETH) -> Web3:
    """A fresh py-evm chain (eth-tester, auto-mining) whose genesis funds the first ``accounts`` dev accounts."""
    from eth_tester import EthereumTester, PyEVMBackend

    backend_class = _indexed_backend_class()
    state_defaults = {"balance": to_wei(balance_eth, "ether"), "nonce": 0, "code": b"", "storage": {}}
    genesis_state = {bytes.fromhex(acct.address[2:]): dict(state_defaults) for acct in dev_accounts(accounts)}
    backend = backend_class(
        genesis_parameters=PyEVMBackend.generate_genesis_params(overrides={"gas_limit": GENESIS_GAS_LIMIT}),
        genesis_state=genesis_state,
    )
    # The chain class is created per backend, so this touches no other chain in the process. The instance keeps
    # its own copy (set at construction); the class attribute covers chains rebuilt by snapshot reverts.
    type(backend.chain).gas_estimator = staticmethod(_single_run_gas_estimate)
    backend.chain.gas_estimator = _single_run_gas_estimate
    return Web3(_LockedEthereumTesterProvider(EthereumTester(backend)))


def connect_http(url: str, *, request_timeout_s: float = 10.0) -> Web3:
    """A sync Web3 over HTTP whose every request gives up after ``request_timeout_s``.

    web3.py's own silent retries are off: :class:`protocols.chain.rpc.RetryPolicy` is the one retry layer, so the
    total wait for a dead node is bounded and known.
    """
    provider = HTTPProvider(url, request_kwargs={"timeout": request_timeout_s}, exception_retry_configuration=None)
    return Web3(provider)


def is_eth_tester(w3: Web3) -> bool:
    """Whether ``w3`` runs on an in-process eth-tester chain."""
    return isinstance(w3.provider, EthereumTesterProvider)


def increase_time(w3: Web3, seconds: int) -> int:
    """Move the chain's clock forward by ``seconds`` and mine a block; returns that block's timestamp.

    For tests (lease expiry, deregistration delay). Works on Hardhat (``evm_increaseTime``+``evm_mine``) and
    eth-tester (``time_travel``); anvil accepts the Hardhat calls too.
    """
    if seconds <= 0:
        raise ValueError("increase_time: seconds must be positive")
    if is_eth_tester(w3):
        tester = w3.provider.ethereum_tester  # type: ignore[attr-defined]
        pending = int(tester.get_block_by_number("pending")["timestamp"])
        latest = int(w3.eth.get_block("latest")["timestamp"])
        # py-evm mines the travel block one second before the target it is given.
        tester.time_travel(max(pending, latest + seconds) + 1)
    else:
        w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
        w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    return int(w3.eth.get_block("latest")["timestamp"])


DEV_CHAIN_IDS = frozenset({HARDHAT_CHAIN_ID, 131277322940537})
"""Chains whose accounts are public test accounts: Hardhat's (31337) and eth-tester's py-evm chain."""


def mine_blocks(w3: Web3, n: int = 1) -> None:
    """Mine ``n`` empty blocks: draws need ``DRAW_DELAY`` blocks after their anchor, and a chain that mines only on
    transactions (Hardhat automine, eth-tester) does not advance by itself. Safe from any thread."""
    provider = w3.provider
    if isinstance(provider, _LockedEthereumTesterProvider):
        provider.mine_blocks(n)
    elif is_eth_tester(w3):
        provider.ethereum_tester.mine_blocks(n)  # type: ignore[attr-defined]
    else:
        for _ in range(n):
            w3.provider.make_request(RPCEndpoint("evm_mine"), [])


def keep_time(w3: Web3, now: float) -> None:
    """One tick of an in-process chain's clock: mine an empty block when the chain's time is behind ``now``, stamped
    ``now`` when it is more than a second behind (eth-tester stamps a block one second after its parent, so a
    ticker that fell behind, e.g. starved on a loaded machine, would otherwise never catch up, and every lease and
    vote window would stretch in wall time). A chain ahead of ``now`` (busy: one second per transaction) gets no
    block: mining anyway would run it further ahead and shorten every lease and ticket in wall time."""
    provider = w3.provider
    if isinstance(provider, _LockedEthereumTesterProvider):
        provider.keep_time(int(now))
    elif int(w3.eth.get_block("latest")["timestamp"]) < now:
        mine_blocks(w3, 1)


def set_automine(w3: Web3, enabled: bool) -> None:
    """Turn mining of each transaction on arrival on or off (tests that need two transactions in one block)."""
    if is_eth_tester(w3):
        tester = w3.provider.ethereum_tester  # type: ignore[attr-defined]
        if enabled:
            tester.enable_auto_mine_transactions()
        else:
            tester.disable_auto_mine_transactions()
    else:
        w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [enabled])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hardhat_available(contracts_dir: Path = CONTRACTS_DIR) -> bool:
    """Whether the Hardhat project's npm install is present (the Hardhat backend needs it)."""
    return (contracts_dir / "node_modules" / ".bin" / "hardhat").exists()


@dataclass(frozen=True)
class HardhatNodeConfig:
    """How to start a Hardhat node. ``port=0`` picks a free port."""

    contracts_dir: Path = CONTRACTS_DIR
    port: int = 0
    host: str = "127.0.0.1"
    """The address it listens on (and is reached at): a test network namespace's own address, else loopback."""
    start_timeout_s: float = 90.0
    """Hardhat loads its config and plugins before it answers: several seconds on a loaded 2-core machine."""
    stop_timeout_s: float = 10.0
    request_timeout_s: float = 10.0


class HardhatNode:
    """A ``hardhat node`` process on 127.0.0.1 (or ``config.host``), started and stopped by PID (and process group).

    Use as a context manager; ``start()`` returns once the RPC answers or raises :class:`BackendStartError` at
    the deadline. The node's output goes to a log file (a pipe nobody reads would fill and block it).
    """

    def __init__(self, config: HardhatNodeConfig | None = None) -> None:
        self.config = config or HardhatNodeConfig()
        self.port = self.config.port or free_port()
        self.url = f"http://{self.config.host}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        binary = self.config.contracts_dir / "node_modules" / ".bin" / "hardhat"
        if not binary.exists():
            raise BackendStartError(f"{binary} not found: run `npm ci` in {self.config.contracts_dir}")
        fd, log_name = tempfile.mkstemp(prefix="hardhat-node-", suffix=".log")
        self._log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log:
            # Call the binary directly (not npx) so the PID is the server's; a new session makes it a group leader
            # so stop() can take any children down with it.
            self._proc = subprocess.Popen(
                [str(binary), "node", "--hostname", self.config.host, "--port", str(self.port)],
                cwd=self.config.contracts_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.config.start_timeout_s
        while True:
            returncode = self._proc.poll()
            if returncode is not None:
                tail = self.log_tail()
                self.stop()
                raise BackendStartError(f"hardhat node exited with {returncode} at start:\n{tail}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise BackendStartError(
                    f"hardhat node on {self.url} did not answer within {self.config.start_timeout_s} s:\n{tail}"
                )
            time.sleep(0.1)  # poll interval while waiting for the RPC to come up (bounded by the deadline)

    def _answers(self) -> bool:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=1.0) as response:
                return b"result" in response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def web3(self) -> Web3:
        """A Web3 connected to this node."""
        if self._proc is None:
            raise ChainUnavailable("HardhatNode.web3(): the node is not started")
        return connect_http(self.url, request_timeout_s=self.config.request_timeout_s)

    def log_tail(self, n_bytes: int = 4000) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        data = self._log_path.read_bytes()
        return data[-n_bytes:].decode("utf-8", "replace")

    def stop(self) -> None:
        """Terminate the node's process group (SIGTERM, then SIGKILL after ``stop_timeout_s``). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.config.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self.config.stop_timeout_s)
        if self._log_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._log_path.unlink()
            self._log_path = None

    def __enter__(self) -> HardhatNode:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
