"""Node configuration: a TOML file < ``DTNODE_*`` environment variables < command-line flags.

Everything is loaded into one frozen :class:`NodeConfig` and validated before start-up; an invalid value raises
:class:`~protocols.errors.ConfigError` naming the setting and where it came from. This module never touches the
network, the chain or the disk beyond reading the TOML file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.http.address import parse_http_address
from protocols.errors import ConfigError
from protocols.p2p.config import REACHABILITY_MODES
from protocols.types import NodeClass

ROLES = ("trainer", "validator", "leader", "provider")
"""``provider``: no work, only serve this node's block store and help peers find each other (a customer's node)."""
NODE_CLASSES = tuple(NodeClass.__members__)
DEVICES = ("cpu", "cuda", "auto")
"""``node.training.device.DEVICE_CHOICES`` (config does not import torch; a test checks they agree)."""
LOG_FORMATS = ("text", "json")
ENV_PREFIX = "DTNODE_"
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Every setting a node reads. Durations are seconds, sizes bytes."""

    roles: tuple[str, ...] = ()
    jobs: tuple[int, ...] = ()
    chain_rpc_url: str = "http://127.0.0.1:8545"
    chain_ws_url: str = ""
    """A WebSocket JSON-RPC endpoint of the same chain (Hardhat: ``ws://`` on its HTTP port; geth: ``--ws``, port
    8546): the node subscribes to new heads and the contract's logs there and acts as each block is mined, instead
    of up to a poll late (node/roles/chain_feed.py). Empty: poll only."""
    contract_address: str = ""
    key_file: str = ""
    key_passphrase_env: str = "DTNODE_KEY_PASSPHRASE"
    dev_account: int = -1
    """Index of a Hardhat public dev account to act as (local devnets only); -1 means use ``key_file``."""
    bootstrap: tuple[str, ...] = ()
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    data_dir: str = "~/.dtnode"
    node_class: str = ""
    """"" (the default): the class measured at start-up (node/hardware.py); S, M or L: the most this node promises,
    capped at the measured class (a node may promise less than it measures, never more)."""
    measure_class: bool = True
    """Measure the class at start-up. Local devnets turn it off: their plan sets each node's class, and nodes
    sharing one machine would measure each other's load; then ``node_class`` is taken as declared (M if empty)."""
    device: str = "auto"
    """Where this node trains and replays: cpu, cuda, or auto (cuda if torch sees a GPU, else cpu)."""
    cpu_node_class: str = ""
    """Set at start-up on a GPU node (node/hardware.py): its CPU's class, requested for the jobs it trains on the
    CPU (those that do not declare ``hardware_mismatch``). Empty: ``node_class``."""
    log_format: str = "text"
    log_level: str = "INFO"
    chain_timeout_s: float = 30.0
    chain_poll_interval_s: float = 0.5
    fetch_timeout_s: float = 60.0
    request_timeout_s: float = 20.0
    task_timeout_s: float = 300.0
    validation_timeout_s: float = 120.0
    content_deadline_s: float = 120.0
    """How long a drawn validator keeps trying to fetch an update's manifest and challenged segments; past it the
    update is voted invalid (withheld content costs its trainer the bond)."""
    round_timeout_s: float = 600.0
    audit_all_rounds: bool = False
    """Validators audit every committed round, not only those in which they were drawn to vote on an update."""
    withdraw_min_wei: int = 10**16
    """While it works, a node withdraws its credited pay (``withdraw``) once it has at least this much: each
    withdrawal is a transaction (gas), and the credit is safe on the contract meanwhile. When a job it served
    closes it withdraws whatever it has. 1: after every payment."""
    max_dag_bytes: int = 256 * 1024 * 1024
    store_max_bytes: int = 4 * 1024 * 1024 * 1024
    http: str = ""
    """``HOST:PORT`` of the read-only web dashboard and ``/metrics`` (node/http/); empty: none. A bare port is
    loopback."""
    trainer_stake_wei: int = 10**17
    validator_stake_wei: int = 10**17
    reachability: str = "auto"
    """Behind a NAT? ``auto``: peers dial this node back to find out; ``public`` / ``private``: known
    (``protocols.p2p.nat``; a private node reserves a relay slot and announces its ``/p2p-circuit`` address)."""
    relays: tuple[str, ...] = ()
    """Full multiaddrs of the relays a private node reserves on; empty: its bootstrap peers."""
    relay_service: bool = True
    """A node found public relays for private ones (within the P2P layer's limits)."""
    hole_punching: bool = True
    """Try DCUtR to turn a relayed connection into a direct one."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return Path(os.path.expanduser(self.data_dir))

    @property
    def settled_class(self) -> str:
        """The class this node registers and announces: ``node_class`` once settled (node/hardware.py), else M, the
        class every node had before measuring (a config that never went through start-up: in-process devnets,
        a customer's node)."""
        return self.node_class or "M"

    def validate(self) -> NodeConfig:
        for role in self.roles:
            if role not in ROLES:
                raise ConfigError(f"setting 'roles': unknown role {role!r}; choose from {', '.join(ROLES)}")
        if "leader" in self.roles and not self.jobs:
            raise ConfigError("setting 'jobs': --role leader needs --job N (the job to stand as leader for)")
        for job in self.jobs:
            if job <= 0:
                raise ConfigError(f"setting 'jobs': job ids start at 1, got {job}")
        if self.node_class and self.node_class not in NODE_CLASSES:
            raise ConfigError(f"setting 'node_class': {self.node_class!r} is not one of S, M, L (or empty: measured)")
        if self.cpu_node_class and self.cpu_node_class not in NODE_CLASSES:
            raise ConfigError(f"setting 'cpu_node_class': {self.cpu_node_class!r} is not one of S, M, L (or empty)")
        if self.device not in DEVICES:
            raise ConfigError(f"setting 'device': {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.reachability not in REACHABILITY_MODES:
            raise ConfigError(f"setting 'reachability': {self.reachability!r} is not one of "
                              f"{', '.join(REACHABILITY_MODES)}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"setting 'log_format': {self.log_format!r} is not one of text, json")
        if self.contract_address and not _ADDRESS_RE.match(self.contract_address):
            raise ConfigError(f"setting 'contract_address': {self.contract_address!r} is not a 0x address")
        if not self.chain_rpc_url.startswith(("http://", "https://")):
            raise ConfigError(f"setting 'chain_rpc_url': {self.chain_rpc_url!r} must be an http(s) URL")
        if self.chain_ws_url and not self.chain_ws_url.startswith(("ws://", "wss://")):
            raise ConfigError(f"setting 'chain_ws_url': {self.chain_ws_url!r} must be a ws(s) URL, or empty")
        for name in ("chain_timeout_s", "fetch_timeout_s", "request_timeout_s", "task_timeout_s",
                     "validation_timeout_s", "content_deadline_s", "round_timeout_s", "chain_poll_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"setting {name!r}: must be > 0, got {getattr(self, name)}")
        for name in ("max_dag_bytes", "store_max_bytes", "withdraw_min_wei"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"setting {name!r}: must be > 0, got {getattr(self, name)}")
        if self.http:
            parse_http_address(self.http)
        for addr in (*self.listen, *self.bootstrap, *self.relays):
            if not addr.startswith("/"):
                raise ConfigError(
                    f"setting 'listen'/'bootstrap'/'relays': {addr!r} is not a multiaddr "
                    "(e.g. /ip4/127.0.0.1/tcp/4001)"
                )
        return self


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig) if f.name != "extra"}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a TOML/env/flag value into the field's type, or raise ConfigError naming the setting and source."""
    default = _FIELDS[name].default
    try:
        if isinstance(default, tuple):
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, list | tuple):
                items = list(value)
            else:
                raise TypeError(f"expected a list, got {type(value).__name__}")
            if name == "jobs":
                return tuple(int(v) for v in items)
            return tuple(str(v) for v in items)
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, bool):
                raise TypeError("expected an integer, got a boolean")
            return int(value)
        if isinstance(default, float):
            return float(value)
        if not isinstance(value, str | int | float):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r} from {source}: {value!r} is invalid ({exc})") from exc


def load_config(
    *,
    toml_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Merge TOML < environment < flags into a validated :class:`NodeConfig`."""
    values: dict[str, Any] = {}
    if toml_path is not None:
        path = Path(toml_path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        for key, value in data.items():
            if key not in _FIELDS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, value, str(path))
    for key, value in (env if env is not None else os.environ).items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name in _FIELDS:
            values[name] = _coerce(name, value, f"environment variable {key}")
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(key, value, f"flag --{key.replace('_', '-')}")
    return NodeConfig(**values).validate()
