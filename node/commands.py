"""Implementations of the ``dtnode`` commands; the parser lives in :mod:`node.cli`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from node.config import NodeConfig, load_config
from protocols.errors import DtnodeError

_FLAG_NAMES = (
    "chain_rpc_url", "contract_address", "key_file", "dev_account", "data_dir", "node_class",
    "log_format", "log_level",
)


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Build the node's config from ``--config`` TOML < DTNODE_* env < flags."""
    flags: dict[str, Any] = {name: getattr(args, name, None) for name in _FLAG_NAMES}
    if getattr(args, "bootstrap", None):
        flags["bootstrap"] = list(args.bootstrap)
    if getattr(args, "listen", None):
        flags["listen"] = list(args.listen)
    if getattr(args, "role", None):
        flags["roles"] = args.role
    if getattr(args, "job", None):
        flags["jobs"] = list(args.job)
    return load_config(toml_path=getattr(args, "config", None), env=os.environ, flags=flags)


def run_node(args: argparse.Namespace) -> int:
    config_from_args(args)
    raise DtnodeError("running a node is not available in this build yet")
