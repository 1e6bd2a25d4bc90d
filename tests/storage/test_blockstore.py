"""The on-disk block store: persistence, verification, pins, gc, budget, full disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from storage.blockstore import FilesystemBlockStore
from storage.cid import RAW, cid_to_str, make_cid
from storage.errors import BlockNotFound, CidMismatch, StoreFull
from storage.unixfs import import_bytes, read_file


def _file(store: FilesystemBlockStore, data: bytes, chunk: int = 1000):  # type: ignore[no-untyped-def]
    result, blocks = import_bytes(data, chunk_size=chunk)
    for cid, block in blocks:
        store.put_sync(cid, block)
    return result.root, blocks


async def test_blocks_and_pins_survive_a_restart(tmp_path: Path) -> None:
    store = FilesystemBlockStore(tmp_path, max_bytes=1 << 20)
    root, _ = _file(store, os.urandom(5000))
    store.pin_sync(root)
    used = store.used_bytes
    again = FilesystemBlockStore(tmp_path, max_bytes=1 << 20)
    assert again.used_bytes == used
    assert again.pins() == [cid_to_str(root)]
    assert len(await read_file(root, again.get)) == 5000


def test_put_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    store = FilesystemBlockStore(tmp_path, max_bytes=1 << 20)
    with pytest.raises(CidMismatch):
        store.put_sync(make_cid(RAW, b"a"), b"b")
    assert store.used_bytes == 0


def test_corrupt_file_on_disk_is_detected_and_removed(tmp_path: Path) -> None:
    store = FilesystemBlockStore(tmp_path, max_bytes=1 << 20)
    cid = make_cid(RAW, b"payload")
    store.put_sync(cid, b"payload")
    path = next((tmp_path / "blocks").rglob(cid_to_str(cid)))
    path.write_bytes(b"pAyload")
    with pytest.raises(CidMismatch):
        store.get_sync(cid)
    assert not store.has_sync(cid)
    with pytest.raises(BlockNotFound):
        store.get_sync(cid)


def test_gc_keeps_pinned_dags_only(tmp_path: Path) -> None:
    store = FilesystemBlockStore(tmp_path, max_bytes=1 << 20)
    kept, kept_blocks = _file(store, os.urandom(4000))
    gone, gone_blocks = _file(store, os.urandom(3000))
    store.pin_sync(kept)
    result = store.gc_sync()
    assert result.removed_blocks == len(gone_blocks)
    assert all(store.has_sync(c) for c, _ in kept_blocks)
    assert not any(store.has_sync(c) for c, _ in gone_blocks)
    store.unpin_sync(kept)
    store.gc_sync()
    assert store.used_bytes == 0 and store.all_cids() == []


def test_pin_needs_the_whole_dag(tmp_path: Path) -> None:
    store = FilesystemBlockStore(tmp_path, max_bytes=1 << 20)
    root, blocks = _file(store, os.urandom(4000))
    store.delete_sync(blocks[0][0])
    with pytest.raises(BlockNotFound, match="1 block"):
        store.pin_sync(root)


def test_budget_raises_store_full_and_keeps_the_store_usable(tmp_path: Path) -> None:
    store = FilesystemBlockStore(tmp_path, max_bytes=2500)
    a, b, c = (os.urandom(1000) for _ in range(3))
    store.put_sync(make_cid(RAW, a), a)
    store.put_sync(make_cid(RAW, b), b)
    with pytest.raises(StoreFull, match="budget"):
        store.put_sync(make_cid(RAW, c), c)
    assert store.used_bytes == 2000
    assert store.get_sync(make_cid(RAW, a)) == a


def test_full_disk_is_a_clear_error_and_leaves_no_partial_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemBlockStore(tmp_path, max_bytes=1 << 20)
    ok = b"first"
    store.put_sync(make_cid(RAW, ok), ok)

    def no_space(fd: int) -> None:  # fault injection: the disk fills up during the write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("storage.blockstore.os.fsync", no_space)
    data = b"second"
    with pytest.raises(StoreFull, match="disk full"):
        store.put_sync(make_cid(RAW, data), data)
    monkeypatch.undo()
    assert not store.has_sync(make_cid(RAW, data))
    assert list((tmp_path / "tmp").iterdir()) == []
    assert store.used_bytes == len(ok)
    reopened = FilesystemBlockStore(tmp_path, max_bytes=1 << 20)
    assert reopened.get_sync(make_cid(RAW, ok)) == ok
