"""Logging set-up: readable text for people, one JSON object per line for machines (``--log-format json``).

Nothing here ever formats a private key: log records carry addresses and CIDs only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(*, fmt: str = "text", level: str = "INFO", name: str = "", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"{name} " if name else ""
        formatter = logging.Formatter(f"%(asctime)s {prefix}%(levelname)-7s %(message)s", "%H:%M:%S")
        formatter.converter = time.localtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # py-libp2p and web3 are chatty at INFO; their warnings still show.
    for noisy in ("libp2p", "web3", "urllib3", "multiaddr", "async_service", "eth"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # py-libp2p 0.8.1's Kademlia logs a warning with an empty message every time a peer closes a DHT stream
    # (normal when peers come and go); keep its errors only.
    logging.getLogger("libp2p.kad_dht").setLevel(max(logging.ERROR, root.level))
