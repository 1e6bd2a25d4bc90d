"""Chain errors, and the one place where a revert from any backend becomes a named Python exception.

Tree (under :class:`protocols.errors.DtnodeError`)::

    ChainError
    ├── ChainUnavailable(ChainError, ConnectionError)   RPC unreachable after the bounded retry
    ├── TransactionFailed                              not a contract revert: rejected tx, receipt timeout, ...
    └── ContractRevert                                 the contract reverted; .error_name, .args_decoded, .data
        ├── <one subclass per custom error in JobManager's ABI, named after it, generated at import>
        └── (Error(string) and Panic(uint256) stay plain ContractRevert with error_name "Error"/"Panic")

Every backend reports a revert differently: a Hardhat node answers JSON-RPC errors that web3.py turns into
``ContractCustomError``/``ContractLogicError`` carrying the revert data as hex; eth-tester raises its own
``TransactionFailed`` whose message is the ``repr`` of the revert bytes; anvil-style nodes put ``0x...`` in the
error's ``data`` field (sometimes nested in a dict). :func:`decode_revert` digs the revert bytes out of whichever
shape it is handed and decodes them against the ABI, so callers only ever see the classes above.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from protocols.chain.abi import load_artifact
from protocols.errors import DtnodeError


class ChainError(DtnodeError):
    """Something went wrong talking to the chain."""


class ChainUnavailable(ChainError, ConnectionError):
    """The RPC endpoint did not answer after the configured retries; check that the node runs and the URL."""


class TransactionFailed(ChainError):
    """A transaction failed for a reason other than a decoded contract revert (rejected, dropped, timed out)."""


class ContractRevert(ChainError):
    """The contract reverted. Subclasses are named after JobManager's custom errors.

    Attributes:
        error_name: the custom error's name ("JobNotOpen"), or "Error"/"Panic"/"Revert" (no data)/"Unknown".
        args_decoded: the error's arguments by name, in declaration order (addresses checksummed).
        data: the raw revert data.
    """

    error_name: str = "Revert"
    signature: str = ""
    selector: bytes = b""

    def __init__(self, error_name: str, args_decoded: Mapping[str, Any], data: bytes) -> None:
        self.error_name = error_name
        self.args_decoded: dict[str, Any] = dict(args_decoded)
        self.data = data
        shown = ", ".join(f"{k}={v!r}" for k, v in self.args_decoded.items())
        super().__init__(f"contract reverted: {error_name}({shown})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.error_name, self.args_decoded, self.data))


_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


def _abi_type(param: Mapping[str, Any]) -> str:
    """Canonical ABI type of a parameter, expanding tuples (structs) recursively."""
    typ = str(param["type"])
    if typ.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){typ[len('tuple') :]}"
    return typ


class _ErrorSpec:
    __slots__ = ("cls", "names", "types")

    def __init__(self, cls: type[ContractRevert], names: list[str], types: list[str]) -> None:
        self.cls = cls
        self.names = names
        self.types = types


def _build_registry() -> dict[bytes, _ErrorSpec]:
    registry: dict[bytes, _ErrorSpec] = {}
    reserved = set(globals())
    for entry in load_artifact().entries("error"):
        name = str(entry["name"])
        types = [_abi_type(p) for p in entry.get("inputs", [])]
        names = [str(p.get("name") or f"arg{i}") for i, p in enumerate(entry.get("inputs", []))]
        signature = f"{name}({','.join(types)})"
        selector = function_signature_to_4byte_selector(signature)
        if name in reserved:
            raise ImportError(f"custom error {name} collides with a name in protocols.chain.errors; rename it")
        cls = type(
            name,
            (ContractRevert,),
            {
                "__doc__": f"JobManager reverted with ``{signature}``.",
                "__module__": __name__,
                "signature": signature,
                "selector": selector,
            },
        )
        registry[selector] = _ErrorSpec(cls, names, types)
    return registry


_REGISTRY = _build_registry()
_BY_NAME: dict[str, type[ContractRevert]] = {spec.cls.__name__: spec.cls for spec in _REGISTRY.values()}
# Make `from protocols.chain.errors import JobNotOpen` work at run time (mypy users: use revert_class()).
globals().update(_BY_NAME)


def revert_class(name: str) -> type[ContractRevert]:
    """The exception class for one of JobManager's custom errors, by name.

    Raises:
        KeyError: the ABI has no custom error of that name (the export is stale or the name is misspelled).
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"JobManager has no custom error {name!r}; known: {sorted(_BY_NAME)}") from None


def custom_error_names() -> frozenset[str]:
    """Names of all custom errors in the shipped ABI."""
    return frozenset(_BY_NAME)


def _normalize(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
        return to_checksum_address(value)
    if isinstance(value, tuple | list):
        return tuple(_normalize(v) for v in value)
    return value


def decode_revert_data(data: bytes) -> ContractRevert:
    """Decode raw revert data (selector + ABI-encoded args) into the matching exception instance."""
    if len(data) < 4:
        return ContractRevert("Revert", {}, data)
    selector, payload = data[:4], data[4:]
    spec = _REGISTRY.get(selector)
    try:
        if spec is not None:
            values = abi_decode(spec.types, payload)
            return spec.cls(spec.cls.__name__, dict(zip(spec.names, map(_normalize, values), strict=True)), data)
        if selector == _ERROR_STRING_SELECTOR:
            (reason,) = abi_decode(["string"], payload)
            return ContractRevert("Error", {"reason": reason}, data)
        if selector == _PANIC_SELECTOR:
            (code,) = abi_decode(["uint256"], payload)
            return ContractRevert("Panic", {"code": code}, data)
    except DecodingError:
        pass
    return ContractRevert("Unknown", {}, data)


_HEX_RE = re.compile(r"0x[0-9a-fA-F]*")


def _bytes_from_text(text: str) -> Iterator[bytes]:
    """Revert data hidden in a message: ``0x..`` hex, or the ``repr`` of bytes that eth-tester produces."""
    stripped = text.strip()
    marker = "execution reverted: "
    if marker in stripped:
        stripped = stripped.split(marker, 1)[1].strip()
    if stripped[:2] in ("b'", 'b"'):
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, bytes):
            yield value
            return
    for match in _HEX_RE.finditer(stripped):
        digits = match.group(0)[2:]
        if len(digits) % 2 == 0 and len(digits) != 64 and len(digits) != 40:  # not a hash or an address
            yield bytes.fromhex(digits)


def _candidates(obj: Any, depth: int = 0) -> Iterator[bytes]:
    """Every byte string that could be revert data, searched through the shapes backends raise."""
    if depth > 6 or obj is None:
        return
    if isinstance(obj, bytes | bytearray):
        yield bytes(obj)
    elif isinstance(obj, str):
        yield from _bytes_from_text(obj)
    elif isinstance(obj, Mapping):
        for key in ("data", "error", "originalError", "message"):
            if key in obj:
                yield from _candidates(obj[key], depth + 1)
    elif isinstance(obj, BaseException):
        for attr in ("data", "rpc_response"):
            yield from _candidates(getattr(obj, attr, None), depth + 1)
        for arg in obj.args:
            yield from _candidates(arg, depth + 1)
        yield from _candidates(obj.__cause__, depth + 1)
        # web3's eth-tester provider re-raises inside ``except`` (no ``from``): the original, with the raw revert
        # bytes, survives only as the implicit context. Its own message may be a wrongly decoded Error(string).
        yield from _candidates(obj.__context__, depth + 1)


def _looks_like_revert(exc: BaseException) -> bool:
    """Whether a backend exception reports an EVM revert (as opposed to a transport or validation problem)."""
    name = type(exc).__name__
    if name in ("ContractLogicError", "ContractCustomError", "ContractPanicError", "TransactionFailed"):
        return True
    text = str(exc).lower()
    return "revert" in text or "vm exception" in text


def _reason_from_message(message: str) -> str:
    marker = "execution reverted: "
    if marker not in message:
        return ""
    reason = message.split(marker, 1)[1].strip()
    return "" if reason.startswith(("b'", 'b"', "0x", "Error: VM Exception")) else reason


def decode_revert(exc_or_data: BaseException | bytes | str) -> ChainError:
    """Turn whatever a backend raised (or raw revert data) into the right :class:`ChainError`.

    Returns (does not raise) a :class:`ContractRevert` subclass when revert data is found, a plain
    ``ContractRevert("Revert")`` for a revert without data, and :class:`TransactionFailed` for anything that is not a
    revert, so callers write ``raise decode_revert(exc) from exc``.
    """
    if isinstance(exc_or_data, ChainError):
        return exc_or_data
    found = list(_candidates(exc_or_data))
    for data in found:
        if data[:4] in _REGISTRY or data[:4] in (_ERROR_STRING_SELECTOR, _PANIC_SELECTOR):
            return decode_revert_data(data)
    if isinstance(exc_or_data, bytes | str):
        return decode_revert_data(found[0] if found else b"")
    if _looks_like_revert(exc_or_data):
        nonempty = [d for d in found if len(d) >= 4]
        if nonempty:
            return decode_revert_data(nonempty[0])
        # eth-tester decodes Error(string) itself and keeps only the text: "execution reverted: <reason>".
        reason = _reason_from_message(str(exc_or_data))
        if reason:
            return ContractRevert("Error", {"reason": reason}, b"")
        return decode_revert_data(b"")
    return TransactionFailed(f"{type(exc_or_data).__name__}: {exc_or_data}")
