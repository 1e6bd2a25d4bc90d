"""A persistent block store on disk: verified blocks by CID, recursive pins, garbage collection, a size budget.

Layout under ``root``::

    blocks/<2 chars>/<cid>   one file per block, named by its base32 CIDv1
    tmp/                     writes in progress (emptied on open)
    pins.json                the pinned root CIDs (written atomically)

Every write is tmp file + fsync + rename, so a crash leaves either the whole block or none, and the store
survives restarts. Every read re-hashes the block: a corrupt file is deleted and reported as
:class:`CidMismatch`, never returned. A write that would exceed ``max_bytes`` raises :class:`StoreFull`; a full
disk raises :class:`StoreFull` too, after removing the partial file, so the store stays consistent.

Blocking file I/O runs in worker threads (``trio.to_thread``) from the async methods; a lock keeps the size
accounting and the pin set consistent across them. This module never touches the network.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from storage.cid import ContentId, cid_to_str, parse_cid
from storage.errors import BlockNotFound, CidMismatch, InvalidCid, StoreFull
from storage.unixfs import child_cids

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GcResult:
    removed_blocks: int
    removed_bytes: int
    kept_blocks: int


class FilesystemBlockStore:
    """Blocks on disk under ``root``, at most ``max_bytes`` of them (block bytes, not counting file overhead)."""

    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int, durable: bool = True) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._durable = durable  # fsync each block; off only for throwaway stores in benchmarks
        self._blocks = self.root / "blocks"
        self._tmp = self.root / "tmp"
        self._pins_path = self.root / "pins.json"
        self._lock = threading.Lock()
        self._blocks.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():  # half-written blocks from a crash
            leftover.unlink(missing_ok=True)
        self._used = sum(entry.stat().st_size for entry in self._iter_block_files())
        self._pins: set[str] = self._load_pins()

    # ── paths and bookkeeping ──────────────────────────────────────────────────────────────────────────

    def _path(self, cid: ContentId) -> Path:
        name = cid_to_str(cid)
        return self._blocks / name[-2:] / name

    def _iter_block_files(self) -> Iterator[Path]:
        for shard in self._blocks.iterdir():
            if shard.is_dir():
                yield from (p for p in shard.iterdir() if p.is_file())

    def _load_pins(self) -> set[str]:
        if not self._pins_path.exists():
            return set()
        try:
            value = json.loads(self._pins_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidCid(f"{self._pins_path}: pin file unreadable ({exc}); restore it or delete it") from exc
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidCid(f"{self._pins_path}: expected a JSON list of CIDs")
        return {cid_to_str(parse_cid(v)) for v in value}

    def _write_atomic(self, final: Path, data: bytes) -> None:
        tmp = self._tmp / f"{final.name}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self._durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(
                    errno.ENOSPC, f"disk full under {self.root}; free space or run gc (store left intact)"
                ) from exc
            raise

    @property
    def used_bytes(self) -> int:
        return self._used

    # ── blocking core (called directly by sync code, or through the async wrappers) ─────────────────

    def put_sync(self, cid: ContentId, data: bytes) -> bool:
        """Store a block after checking its hash. Returns False if it was already present."""
        cid.verify(data)
        path = self._path(cid)
        with self._lock:
            if path.exists():
                return False
            if self._used + len(data) > self.max_bytes:
                raise StoreFull(
                    errno.ENOSPC,
                    f"block store {self.root} budget of {self.max_bytes} bytes reached "
                    f"({self._used} used); unpin and gc, or raise the budget",
                )
            self._used += len(data)  # reserve before the write so concurrent puts cannot overshoot
        try:
            self._write_atomic(path, data)
        except BaseException:
            with self._lock:
                self._used -= len(data)
            raise
        return True

    def get_sync(self, cid: ContentId) -> bytes:
        path = self._path(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlockNotFound(f"block {cid} is not in the local store") from None
        if not cid.matches(data):
            logger.error("block file %s is corrupt; deleting it so it can be fetched again", path)
            self._remove(path)
            raise CidMismatch(f"stored block {cid} was corrupt on disk and has been removed; fetch it again")
        return data

    def has_sync(self, cid: ContentId) -> bool:
        return self._path(cid).exists()

    def _remove(self, path: Path) -> int:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        with self._lock:
            self._used -= size
        return size

    def delete_sync(self, cid: ContentId) -> None:
        self._remove(self._path(cid))

    def missing_sync(self, root: ContentId) -> list[ContentId]:
        """Blocks of the DAG under ``root`` that are not here (walks what is present)."""
        missing: list[ContentId] = []
        for cid, present in self._walk(root):
            if not present:
                missing.append(cid)
        return missing

    def _walk(self, root: ContentId) -> Iterator[tuple[ContentId, bool]]:
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            key = cid.to_v1().to_bytes()
            if key in seen:
                continue
            seen.add(key)
            try:
                data = self.get_sync(cid)
            except (BlockNotFound, CidMismatch):
                yield cid, False
                continue
            yield cid, True
            stack.extend(child_cids(cid, data))

    def pin_sync(self, root: ContentId) -> None:
        """Pin the DAG under ``root`` recursively. Every block must already be here (else BlockNotFound)."""
        missing = self.missing_sync(root)
        if missing:
            raise BlockNotFound(f"cannot pin {root}: {len(missing)} block(s) missing locally, e.g. {missing[0]}")
        with self._lock:
            self._pins.add(cid_to_str(root))
            self._save_pins()

    def unpin_sync(self, root: ContentId) -> None:
        with self._lock:
            self._pins.discard(cid_to_str(root))
            self._save_pins()

    def _save_pins(self) -> None:
        self._write_atomic(self._pins_path, json.dumps(sorted(self._pins)).encode("utf-8"))

    def pins(self) -> list[str]:
        with self._lock:
            return sorted(self._pins)

    def is_pinned(self, root: ContentId) -> bool:
        with self._lock:
            return cid_to_str(root) in self._pins

    def gc_sync(self, *, min_age_s: float = 0.0) -> GcResult:
        """Delete every block not reachable from a pinned root and older than ``min_age_s``.

        The age grace protects blocks a concurrent import or fetch has written but not pinned yet.
        """
        now = time.time()
        keep: set[str] = set()
        for pin in self.pins():
            for cid, present in self._walk(parse_cid(pin)):
                if present:
                    keep.add(cid_to_str(cid))
        removed = removed_bytes = kept = 0
        for path in list(self._iter_block_files()):
            if path.name in keep:
                kept += 1
                continue
            if min_age_s > 0:
                try:
                    if now - path.stat().st_mtime < min_age_s:
                        kept += 1
                        continue
                except FileNotFoundError:
                    continue
            removed_bytes += self._remove(path)
            removed += 1
        return GcResult(removed, removed_bytes, kept)

    def all_cids(self) -> list[ContentId]:
        out: list[ContentId] = []
        for path in self._iter_block_files():
            try:
                out.append(parse_cid(path.name))
            except InvalidCid:
                logger.warning("ignoring stray file %s in the block store", path)
        return out

    # ── async API ──────────────────────────────────────────────────────────────────────────────────────

    async def put(self, cid: ContentId, data: bytes) -> bool:
        return await trio.to_thread.run_sync(self.put_sync, cid, data)

    async def put_many(self, blocks: list[tuple[ContentId, bytes]]) -> None:
        def work() -> None:
            for cid, data in blocks:
                self.put_sync(cid, data)

        await trio.to_thread.run_sync(work)

    async def get(self, cid: ContentId) -> bytes:
        return await trio.to_thread.run_sync(self.get_sync, cid)

    async def has(self, cid: ContentId) -> bool:
        return self.has_sync(cid)  # one stat(): cheaper than a thread hop

    async def delete(self, cid: ContentId) -> None:
        await trio.to_thread.run_sync(self.delete_sync, cid)

    async def pin(self, root: ContentId) -> None:
        await trio.to_thread.run_sync(self.pin_sync, root)

    async def unpin(self, root: ContentId) -> None:
        await trio.to_thread.run_sync(self.unpin_sync, root)

    async def gc(self, *, min_age_s: float = 0.0) -> GcResult:
        return await trio.to_thread.run_sync(lambda: self.gc_sync(min_age_s=min_age_s))
