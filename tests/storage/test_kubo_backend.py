"""KuboContentStore against a real Kubo-RPC daemon: js-ipfs 0.66.1, offline, on 127.0.0.1, repo in tmp."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.cid import cid_to_str
from storage.content import KuboContentStore
from storage.dataset import DatasetInfo, fetch_dataset, publish_dataset
from storage.errors import DagTooLarge, FetchTimeout
from storage.unixfs import import_bytes
from tests.storage.conftest import deterministic_bytes

DAEMON_DIR = Path(__file__).resolve().parents[1] / "ipfs_daemon"
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def kubo_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (DAEMON_DIR / "node_modules" / "ipfs").is_dir():
        pytest.skip(f"js-ipfs not installed: run `npm ci` in {DAEMON_DIR}")
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not on PATH; the js-ipfs test daemon needs it")
    port = _free_port()
    repo = tmp_path_factory.mktemp("ipfs-repo")
    proc = subprocess.Popen(
        [node, "start.mjs", str(repo), str(port)],
        cwd=DAEMON_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    seen = b""
    try:
        while b"API ready" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError(f"js-ipfs daemon did not start: {seen.decode(errors='replace')[-2000:]}")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                seen += os.read(proc.stdout.fileno(), 4096)
        yield f"/ip4/127.0.0.1/tcp/{port}/http"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def test_put_get_pin_has(kubo_api: str) -> None:
    store = KuboContentStore(kubo_api, timeout_s=30)
    data = b"".join(deterministic_bytes(3 * 256 * 1024 + 1234, "kubo-backend"))
    cid = await store.put(data)
    # An independent UnixFS implementation (js-ipfs-unixfs-importer) builds the same multi-chunk CIDv1.
    assert cid == cid_to_str(import_bytes(data)[0].root)
    assert cid.startswith("bafybei")
    assert await store.get(cid, max_bytes=len(data), timeout_s=30) == data
    assert await store.has(cid)
    await store.unpin(cid)
    await store.pin(cid)
    with pytest.raises(DagTooLarge):
        await store.get(cid, max_bytes=1000, timeout_s=30)
    store.close()


async def test_small_and_empty_files_match_kubo_cids(kubo_api: str) -> None:
    store = KuboContentStore(kubo_api, timeout_s=30)
    assert await store.put(b"hello world") == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    assert await store.put(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    store.close()


async def test_missing_cid_times_out_with_a_clear_error(kubo_api: str) -> None:
    store = KuboContentStore(kubo_api, timeout_s=2, has_timeout_s=1)
    missing = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
    assert not await store.has(missing)
    with pytest.raises(FetchTimeout):
        await store.get(missing, max_bytes=1000, timeout_s=2)
    store.close()


async def test_dataset_round_trip_through_kubo(kubo_api: str) -> None:
    store = KuboContentStore(kubo_api, timeout_s=30)
    shards = [os.urandom(1000 + i) for i in range(3)]
    info = DatasetInfo(format="tensors", task="classification", licence="CC0", input_shape=(4,),
                       input_dtype="float32", classes=("a", "b"))
    cid = await publish_dataset(store, shards, [10, 11, 12], info)
    manifest, got = await fetch_dataset(store, cid, max_shard_bytes=10_000)
    assert got == shards and manifest.total_samples == 33
    store.close()
