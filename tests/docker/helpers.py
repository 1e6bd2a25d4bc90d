"""Shared readers for the docker/ checks: compose files, Dockerfiles and their ignore files, the compose CLI."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the compose files (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_JOIN = DOCKER / "compose.join.yaml"
DOCKERFILES = (DOCKER / "Dockerfile", DOCKER / "Dockerfile.chain")
DTNODE_DOCKERFILE = "docker/Dockerfile"
PRIVATE_KEY_RE = re.compile(r"0x[0-9a-fA-F]{64}(?![0-9a-fA-F])")

# What an operator supplies to compose.join.yaml (through .env); documentation-range IP, a placeholder endpoint.
JOIN_ENV = {
    "DTNODE_CHAIN_RPC_URL": "https://sepolia.example.org/v3/PROJECT",
    "DTNODE_CONTRACT_ADDRESS": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "DTNODE_ADVERTISE_IP": "203.0.113.7",
    "DTNODE_KEY_PASSPHRASE": "not-a-real-passphrase",
    "DTNODE_BOOTSTRAP": "/ip4/203.0.113.1/tcp/4001/p2p/16Uiu2HAm3mbawmP23UbcMy8Msksuws8oE5bRExE8MES2bduH3YiP",
}


def load_compose(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path} is not a YAML mapping"
    return doc


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` (the forms these files use)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg or ""
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, value)


def uses_dtnode_image(service: dict[str, Any]) -> bool:
    build = service.get("build") or {}
    return isinstance(build, dict) and build.get("dockerfile") == DTNODE_DOCKERFILE


def service_env(service: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): interpolate(str(v), env or {}) for k, v in raw.items()}


def service_command(service: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    command = service.get("command") or []
    assert isinstance(command, list), "write commands as lists (exec form), never as shell strings"
    return [interpolate(str(part), env or {}) for part in command]


def compose_cli() -> list[str] | None:
    """``docker compose`` when the plugin is installed, else the standalone ``docker-compose`` v2 binary."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    for candidate in (shutil.which("docker-compose"), str(ROOT / ".venv" / "bin" / "docker-compose")):
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "version"], capture_output=True, text=True, timeout=30)
            major = re.search(r"version v(\d+)\.", probe.stdout)
            if probe.returncode == 0 and major is not None and int(major.group(1)) >= 2:  # v1 (Python) is not it
                return [candidate]
    return None


def load_module(path: Path, name: str) -> ModuleType:
    """Import a script that lives outside the Python packages (docker/*.py) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ── Dockerfiles ───────────────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (as the Docker builder reads them)."""
    out: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    return out


def dockerignore_allows(ignore_file: Path, rel_path: str) -> bool:
    """Whether ``rel_path`` reaches the build context under an allow-list ignore file (``*`` then ``!path``)."""
    allowed = False
    for raw in ignore_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        matches = pattern == "*" or rel_path == pattern or rel_path.startswith(pattern + "/")
        if matches:
            allowed = negate
    return allowed
