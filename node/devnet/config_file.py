"""A node's config as the TOML file that ``dtnode --config FILE`` reads: the devnet's hand-over to a node process.

Written with ``tomli-w`` (the writer paired with the standard library's ``tomllib`` reader), so quoting and escaping
are the library's, and what :func:`node.config.load_config` reads back equals what was written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tomli_w

from node.config import NodeConfig


def config_toml(cfg: NodeConfig) -> str:
    """Every setting of ``cfg`` as TOML (``extra``, which no file can set, left out)."""
    table: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.name == "extra":
            continue
        value = getattr(cfg, f.name)
        table[f.name] = list(value) if isinstance(value, tuple) else value
    return tomli_w.dumps(table)


def write_config(cfg: NodeConfig, path: Path) -> Path:
    path.write_text(config_toml(cfg))
    return path
