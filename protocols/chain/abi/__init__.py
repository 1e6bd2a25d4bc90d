"""The JobManager ABI and bytecode the adapter uses, as exported from the Hardhat build.

``JobManager.json`` next to this module is written by ``contracts/scripts/export_abi.js`` (never by hand). It carries
the sha256 of the Solidity source it was compiled from (``sourceHash``), so a test can tell when the export is stale.
This module only reads the file; it never compiles anything.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from protocols.errors import DtnodeError

ARTIFACT_NAME = "JobManager.json"


class AbiExportError(DtnodeError, FileNotFoundError):
    """The exported ABI file is missing or malformed: re-run ``node scripts/export_abi.js`` in contracts/."""


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: its ABI entries, creation bytecode and the hash of the source it came from."""

    contract_name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes
    views_bytecode: bytes
    """JobManagerViews' creation bytecode: deployed first, its address is JobManager's last constructor argument."""
    source_hash: str
    """Hex sha256 of the ``.sol`` file's bytes at export time."""

    def entries(self, kind: str) -> tuple[dict[str, Any], ...]:
        """ABI entries of one ``type`` (``function``, ``event``, ``error``, ...)."""
        return tuple(e for e in self.abi if e.get("type") == kind)

    def abi_list(self) -> list[dict[str, Any]]:
        """The ABI as the plain list web3.py expects."""
        return [dict(e) for e in self.abi]


def artifact_path() -> Path:
    """Where the shipped export lives."""
    return Path(str(resources.files(__name__).joinpath(ARTIFACT_NAME)))


def _hex_to_bytes(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


@functools.cache
def load_artifact() -> Artifact:
    """Read and validate the shipped export once per process.

    Raises:
        AbiExportError: the file is missing or lacks ``abi``/``bytecode``/``viewsBytecode``/``sourceHash``.
    """
    path = artifact_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AbiExportError(
            f"{path} is missing: run `./node_modules/.bin/hardhat compile && node scripts/export_abi.js` in contracts/"
        ) from exc
    except json.JSONDecodeError as exc:
        raise AbiExportError(f"{path} is not valid JSON ({exc}); re-export it") from exc
    try:
        abi = raw["abi"]
        bytecode = raw["bytecode"]
        views_bytecode = raw["viewsBytecode"]
        source_hash = raw["sourceHash"]
    except (KeyError, TypeError) as exc:
        raise AbiExportError(f"{path} lacks {exc}; re-export it with contracts/scripts/export_abi.js") from exc
    if not isinstance(abi, list) or not isinstance(bytecode, str) or not isinstance(source_hash, str) \
            or not isinstance(views_bytecode, str):
        raise AbiExportError(f"{path} has fields of the wrong type; re-export it")
    return Artifact(
        contract_name=str(raw.get("contractName", "JobManager")),
        abi=tuple(abi),
        bytecode=_hex_to_bytes(bytecode),
        views_bytecode=_hex_to_bytes(views_bytecode),
        source_hash=source_hash.removeprefix("0x").lower(),
    )


def source_sha256(sol_path: Path) -> str:
    """Hex sha256 of a Solidity file, computed the way the exporter does (raw bytes)."""
    return hashlib.sha256(sol_path.read_bytes()).hexdigest()
