"""UnixFS files exactly as Kubo builds them, and the reader that streams them back.

Importer: fixed-size chunks (256 KiB), raw leaves, a balanced DAG of dag-pb nodes with at most 174 links each,
CIDv1 — byte for byte what ``ipfs add --cid-version=1`` writes (boxo's ``balanced.Layout``), so a file added
here has the same CID as in any IPFS node. The legacy CIDv0 form (dag-pb leaves) is kept only to check the
layout against Kubo's published CIDv0 vectors.

Exporter: walks a DAG from its root through an async ``get_block`` function, checks every block against its
CID and every node's sizes against its children, and yields the file's bytes in order. It never yields bytes
from a block it has not verified. Neither side touches the network or the disk.

Both sides stream (:func:`rechunk`/:func:`split_file` feed the importer, :func:`export_file`/:func:`write_file`
drain the exporter): memory is one chunk plus the DAG's path, whatever the file's size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Final

from storage.cid import DAG_PB, RAW, ContentId, cid_from_bytes, decode_varint, encode_varint, make_cid
from storage.errors import DagTooLarge, InvalidCid, MalformedBlock

CHUNK_SIZE: Final = 256 * 1024
"""Kubo's default chunker, ``size-262144``."""
MAX_LINKS: Final = 174
"""Kubo's default ``Import.UnixFSFileMaxLinks`` (boxo ``helpers.DefaultLinksPerBlock``)."""
MAX_BLOCK_SIZE: Final = 2 * 1024 * 1024
"""The bitswap spec's largest block; anything bigger is refused on read."""

# UnixFS Data.DataType values (unixfs.proto)
UNIXFS_RAW: Final = 0
UNIXFS_FILE: Final = 2

Block = tuple[ContentId, bytes]
GetBlock = Callable[[ContentId], Awaitable[bytes]]
Sink = Callable[[bytes], Awaitable[object]]
"""Where :func:`write_file` puts the file's bytes (an async file's ``write``)."""


# ── protobuf by hand: the two schemas are tiny, and encoding must be byte-exact ───────────────────────────


def _key(field_no: int, wire: int) -> bytes:
    return encode_varint((field_no << 3) | wire)


def _bytes_field(field_no: int, value: bytes) -> bytes:
    return _key(field_no, 2) + encode_varint(len(value)) + value


def _varint_field(field_no: int, value: int) -> bytes:
    return _key(field_no, 0) + encode_varint(value)


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: ContentId
    name: str
    tsize: int


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...]
    data: bytes | None


def encode_pbnode(links: Iterable[PBLink], data: bytes | None) -> bytes:
    """dag-pb canonical form: Links (field 2) first, then Data (field 1); every link carries Name, as boxo does."""
    out = bytearray()
    for link in links:
        body = (
            _bytes_field(1, link.cid.to_bytes())
            + _bytes_field(2, link.name.encode("utf-8"))
            + _varint_field(3, link.tsize)
        )
        out += _bytes_field(2, body)
    if data is not None:
        out += _bytes_field(1, data)
    return bytes(out)


def _fields(buf: bytes, what: str) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) of a protobuf message; only varint and length-delimited."""
    pos = 0
    try:
        while pos < len(buf):
            key, pos = decode_varint(buf, pos)
            field_no, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = decode_varint(buf, pos)
                yield field_no, wire, value
            elif wire == 2:
                length, pos = decode_varint(buf, pos)
                if pos + length > len(buf):
                    raise MalformedBlock(f"{what}: field {field_no} runs past the end of the block")
                yield field_no, wire, buf[pos : pos + length]
                pos += length
            else:
                raise MalformedBlock(f"{what}: unsupported protobuf wire type {wire}")
    except ValueError as exc:
        raise MalformedBlock(f"{what}: bad varint ({exc})") from exc


def decode_pbnode(block: bytes) -> PBNode:
    links: list[PBLink] = []
    data: bytes | None = None
    for field_no, _wire, value in _fields(block, "dag-pb node"):
        if field_no == 2 and isinstance(value, bytes):
            cid: ContentId | None = None
            name = ""
            tsize = 0
            for lf, _lw, lv in _fields(value, "dag-pb link"):
                if lf == 1 and isinstance(lv, bytes):
                    try:
                        cid = cid_from_bytes(lv)
                    except InvalidCid as exc:
                        raise MalformedBlock(f"dag-pb link with an unusable CID: {exc}") from exc
                elif lf == 2 and isinstance(lv, bytes):
                    name = lv.decode("utf-8", errors="replace")
                elif lf == 3 and isinstance(lv, int):
                    tsize = lv
            if cid is None:
                raise MalformedBlock("dag-pb link without a Hash")
            links.append(PBLink(cid, name, tsize))
        elif field_no == 1 and isinstance(value, bytes):
            data = value
        else:
            raise MalformedBlock(f"dag-pb node: unexpected field {field_no}")
    return PBNode(tuple(links), data)


@dataclass(frozen=True, slots=True)
class UnixFSData:
    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())


def encode_unixfs(node: UnixFSData) -> bytes:
    out = _varint_field(1, node.type)
    if node.data:
        out += _bytes_field(2, node.data)
    if node.filesize is not None:
        out += _varint_field(3, node.filesize)
    for size in node.blocksizes:  # proto2 repeated, not packed: one key per entry
        out += _varint_field(4, size)
    return out


def decode_unixfs(buf: bytes) -> UnixFSData:
    kind: int | None = None
    data = b""
    filesize: int | None = None
    sizes: list[int] = []
    for field_no, wire, value in _fields(buf, "UnixFS data"):
        if field_no == 1 and isinstance(value, int):
            kind = value
        elif field_no == 2 and isinstance(value, bytes):
            data = value
        elif field_no == 3 and isinstance(value, int):
            filesize = value
        elif field_no == 4 and wire == 0 and isinstance(value, int):
            sizes.append(value)
        elif field_no == 4 and isinstance(value, bytes):  # tolerate a packed encoding from other writers
            pos = 0
            while pos < len(value):
                size, pos = decode_varint(value, pos)
                sizes.append(size)
    if kind is None:
        raise MalformedBlock("UnixFS data without a Type")
    return UnixFSData(kind, data, filesize, tuple(sizes))


# ── importer ─────────────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class _Built:
    cid: ContentId
    tsize: int  # cumulative serialized size of the sub-DAG (the parent's link Tsize)
    filesize: int  # file bytes under it (the parent's blocksizes entry)


class _Chunks:
    """A one-chunk look-ahead over the chunk stream: the layout needs to know 'done' before reading."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._next: bytes | None = None
        self._advance()

    def _advance(self) -> None:
        for chunk in self._it:
            if chunk:
                self._next = chunk
                return
        self._next = None

    def done(self) -> bool:
        return self._next is None

    def take(self) -> bytes:
        assert self._next is not None
        chunk = self._next
        self._advance()
        return chunk


class _Builder:
    def __init__(self, emit: Callable[[ContentId, bytes], None], *, max_links: int, raw_leaves: bool,
                 cid_version: int) -> None:
        if max_links < 2:
            raise ValueError("max_links must be at least 2")
        if cid_version == 0 and raw_leaves:
            raise ValueError("CIDv0 cannot address raw leaves")
        self._emit = emit
        self._max_links = max_links
        self._raw_leaves = raw_leaves
        self._version = cid_version

    def _pb_cid(self, block: bytes) -> ContentId:
        cid = make_cid(DAG_PB, block)
        return ContentId(DAG_PB, cid.digest, self._version)

    def leaf(self, chunk: bytes) -> _Built:
        if self._raw_leaves:
            cid = make_cid(RAW, chunk)
            self._emit(cid, chunk)
            return _Built(cid, len(chunk), len(chunk))
        block = encode_pbnode((), encode_unixfs(UnixFSData(UNIXFS_FILE, chunk, len(chunk))))
        cid = self._pb_cid(block)
        self._emit(cid, block)
        return _Built(cid, len(block), len(chunk))

    def internal(self, children: list[_Built]) -> _Built:
        filesize = sum(c.filesize for c in children)
        data = encode_unixfs(UnixFSData(UNIXFS_FILE, b"", filesize, tuple(c.filesize for c in children)))
        block = encode_pbnode((PBLink(c.cid, "", c.tsize) for c in children), data)
        cid = self._pb_cid(block)
        self._emit(cid, block)
        return _Built(cid, len(block) + sum(c.tsize for c in children), filesize)

    def fill(self, chunks: _Chunks, children: list[_Built], depth: int) -> _Built:
        # boxo balanced.fillNodeRec: fill this node up to max_links with leaves (depth 1) or full sub-DAGs
        while len(children) < self._max_links and not chunks.done():
            if depth == 1:
                children.append(self.leaf(chunks.take()))
            else:
                children.append(self.fill(chunks, [], depth - 1))
        return self.internal(children)

    def layout(self, chunks: _Chunks) -> _Built:
        # boxo balanced.Layout: the first leaf is the root until a second chunk exists; each time the root
        # is full at depth d it becomes the first child of a new root at depth d+1.
        if chunks.done():
            return self.leaf(b"")
        root = self.leaf(chunks.take())
        depth = 1
        while not chunks.done():
            root = self.fill(chunks, [root], depth)
            depth += 1
        return root


def split_fixed(data: bytes | memoryview, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Kubo's ``size-N`` chunker over bytes in memory."""
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        yield bytes(view[start : start + chunk_size])


def rechunk(pieces: Iterable[bytes | memoryview], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Kubo's ``size-N`` chunker over a stream of pieces of any sizes (a file read in parts, a state's tensors):
    the same chunks :func:`split_fixed` gives for their concatenation, holding at most one chunk plus one piece."""
    buf = bytearray()
    for piece in pieces:
        view = memoryview(piece).cast("B")
        start = 0
        if buf:
            take = min(chunk_size - len(buf), len(view))
            buf += view[:take]
            start = take
            if len(buf) < chunk_size:
                continue
            yield bytes(buf)
            buf.clear()
        while len(view) - start >= chunk_size:
            yield bytes(view[start : start + chunk_size])
            start += chunk_size
        buf += view[start:]
    if buf:
        yield bytes(buf)


def split_file(fh: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Kubo's ``size-N`` chunker over an open binary file, read one chunk at a time."""
    while chunk := fh.read(chunk_size):
        while len(chunk) < chunk_size:  # a pipe or socket may return short reads before the end
            more = fh.read(chunk_size - len(chunk))
            if not more:
                break
            chunk += more
        yield chunk


@dataclass(frozen=True, slots=True)
class ImportResult:
    root: ContentId
    size: int
    """File bytes."""
    dag_size: int
    """Bytes of all blocks (the root's cumulative size)."""


def import_chunks(
    chunks: Iterable[bytes],
    emit: Callable[[ContentId, bytes], None],
    *,
    max_links: int = MAX_LINKS,
    raw_leaves: bool = True,
    cid_version: int = 1,
) -> ImportResult:
    """Build the UnixFS file DAG over ``chunks`` (each a full chunk but the last), calling ``emit`` per block.

    Blocks are emitted children first, so a store that receives them in order never holds a parent without
    its children.
    """
    built = _Builder(emit, max_links=max_links, raw_leaves=raw_leaves, cid_version=cid_version).layout(
        _Chunks(chunks)
    )
    return ImportResult(built.cid, built.filesize, built.tsize)


def import_bytes(
    data: bytes, *, chunk_size: int = CHUNK_SIZE, max_links: int = MAX_LINKS, raw_leaves: bool = True,
    cid_version: int = 1,
) -> tuple[ImportResult, list[Block]]:
    """Import a file held in memory; returns the result and every block (children before parents)."""
    blocks: list[Block] = []
    result = import_chunks(
        split_fixed(data, chunk_size),
        lambda cid, block: blocks.append((cid, block)),
        max_links=max_links,
        raw_leaves=raw_leaves,
        cid_version=cid_version,
    )
    return result, blocks


# ── exporter ─────────────────────────────────────────────────────────────────────────────────────────────


def file_node_info(cid: ContentId, block: bytes) -> tuple[list[ContentId], bytes, int]:
    """For a verified block: (child CIDs in order, the node's own data bytes, the file size it declares)."""
    if cid.codec == RAW:
        return [], block, len(block)
    node = decode_pbnode(block)
    if node.data is None:
        raise MalformedBlock(f"{cid}: dag-pb node without UnixFS data")
    fs = decode_unixfs(node.data)
    if fs.type not in (UNIXFS_FILE, UNIXFS_RAW):
        raise MalformedBlock(f"{cid}: UnixFS type {fs.type} is not a file (directories are not supported)")
    if node.links and len(fs.blocksizes) != len(node.links):
        raise MalformedBlock(f"{cid}: {len(node.links)} links but {len(fs.blocksizes)} blocksizes")
    declared = len(fs.data) + sum(fs.blocksizes)
    if fs.filesize is not None and fs.filesize != declared:
        raise MalformedBlock(f"{cid}: filesize {fs.filesize} disagrees with its parts ({declared})")
    return [link.cid for link in node.links], fs.data, declared


def child_cids(cid: ContentId, block: bytes) -> list[ContentId]:
    """Links of a block (none for raw); used by the exchange to walk a DAG it fetches."""
    if cid.codec == RAW:
        return []
    return [link.cid for link in decode_pbnode(block).links]


async def export_file(root: ContentId, get_block: GetBlock, *, max_bytes: int | None = None) -> AsyncIterator[bytes]:
    """Yield the file under ``root`` in order, verifying every block against its CID before using it.

    ``get_block`` returns a block's bytes (it may fetch them); this function re-hashes them regardless.
    Raises :class:`CidMismatch`, :class:`MalformedBlock`, :class:`DagTooLarge` (declared size over
    ``max_bytes``), or whatever ``get_block`` raises. A node whose children do not add up to the size it
    declares is rejected, so a truncated or padded file cannot pass.
    """

    async def walk(cid: ContentId, expected: int | None, depth: int) -> AsyncIterator[bytes]:
        if depth > 64:
            raise MalformedBlock(f"{cid}: DAG deeper than 64 levels")
        block = await get_block(cid)
        if len(block) > MAX_BLOCK_SIZE:
            raise MalformedBlock(f"{cid}: block of {len(block)} bytes exceeds {MAX_BLOCK_SIZE}")
        cid.verify(block)
        children, data, declared = file_node_info(cid, block)
        if expected is not None and declared != expected:
            raise MalformedBlock(f"{cid}: holds {declared} bytes, its parent says {expected}")
        if max_bytes is not None and declared > max_bytes:
            raise DagTooLarge(f"{root}: file declares {declared} bytes, over the limit of {max_bytes}")
        if data:
            yield data
        if children:
            sizes = decode_unixfs(decode_pbnode(block).data or b"").blocksizes
            for child, size in zip(children, sizes, strict=True):
                async for piece in walk(child, size, depth + 1):
                    yield piece

    async for piece in walk(root, None, 0):
        yield piece


async def write_file(root: ContentId, get_block: GetBlock, write: Sink, *, max_bytes: int | None = None) -> int:
    """Pass the file under ``root`` (verified block by block) to ``write`` in order; returns its size. On an error
    only a verified prefix was written: the caller discards it."""
    size = 0
    async for piece in export_file(root, get_block, max_bytes=max_bytes):
        await write(piece)
        size += len(piece)
    return size


async def read_file(root: ContentId, get_block: GetBlock, *, max_bytes: int | None = None) -> bytes:
    """The whole file under ``root`` (verified), or an error; never a partial result."""
    parts = [piece async for piece in export_file(root, get_block, max_bytes=max_bytes)]
    return b"".join(parts)
