"""The importer against Kubo's published CIDs, and import/export round trips."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.cid import RAW, ContentId, cid_to_str, make_cid
from storage.errors import CidMismatch, DagTooLarge, MalformedBlock
from storage.unixfs import (
    decode_pbnode,
    decode_unixfs,
    encode_pbnode,
    encode_unixfs,
    import_bytes,
    import_chunks,
    read_file,
    rechunk,
    split_file,
    split_fixed,
)
from tests.storage.conftest import deterministic_bytes

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58(raw: bytes) -> str:
    num = int.from_bytes(raw, "big")
    out = ""
    while num:
        num, rem = divmod(num, 58)
        out = B58[rem] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def _root_text(size: int, seed: str, *, chunk: int, raw_leaves: bool, version: int) -> str:
    result = import_chunks(
        deterministic_bytes(size, seed, chunk), lambda c, b: None, raw_leaves=raw_leaves, cid_version=version
    )
    return cid_to_str(result.root) if version == 1 else b58(result.root.to_bytes())


def test_empty_file() -> None:
    # The raw CIDv1 of zero bytes: what `ipfs add --cid-version=1` prints for an empty file.
    result, blocks = import_bytes(b"")
    assert cid_to_str(result.root) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert blocks == [(result.root, b"")]


def test_one_chunk_file() -> None:
    # kubo test/cli/add_test.go: shortStringCidV1 ("hello world", CIDv1 raw leaf)
    result, _ = import_bytes(b"hello world")
    assert cid_to_str(result.root) == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    # kubo test/sharness/t0114-gateway-subdomains/README.md: `echo hello | ipfs add --cid-version 1`
    result, _ = import_bytes(b"hello\n")
    assert cid_to_str(result.root) == "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


# kubo test/cli/add_test.go, "ipfs init --profile=legacy-cid-v0 applies UnixFSChunker=size-262144 and
# UnixFSFileMaxLinks": 256 KiB chunks, 174 links per node (our defaults), dag-pb leaves, CIDv0.
# Input: harness IPFSAddDeterministic(size, seed) = ChaCha20(sha256(seed)) stream (random_reader.go).
@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (44544 * 1024, "QmUbBALi174SnogsUzLpYbD4xPiBSFANF4iztWCsHbMKh2"),  # 174 chunks: one full layer
        (44800 * 1024, "QmepeWtdmS1hHXx1oZXsPUv6bMrfRRKfZcoPPU4eEfjnbf"),  # 175 chunks: two levels
    ],
)
def test_kubo_balanced_layout_256k_174_links(size: int, expected: str) -> None:
    assert _root_text(size, "v0-seed", chunk=256 * 1024, raw_leaves=False, version=0) == expected


# kubo test/cli/add_test.go, "ipfs init --profile=test-cid-v1 applies UnixFSChunker=size-1048576":
# CIDv1, raw leaves, 174 links per node, 1 MiB chunks, seed "v1-seed".
@pytest.mark.parametrize(
    ("mib", "expected"),
    [
        (174, "bafybeigwduxcf2aawppv3isnfeshnimkyplvw3hthxjhr2bdeje4tdaicu"),  # many chunks, one layer
        (175, "bafybeidhd7lo2n2v7lta5yamob3xwhbxcczmmtmhquwhjesi35jntf7mpu"),  # multi-level (>174 chunks)
    ],
)
def test_kubo_cidv1_raw_leaves_many_and_multi_level(mib: int, expected: str) -> None:
    assert _root_text(mib << 20, "v1-seed", chunk=1 << 20, raw_leaves=True, version=1) == expected


def test_multi_level_root_has_two_links_and_right_sizes() -> None:
    data = b"".join(deterministic_bytes(175 * 1024, "levels"))
    result, blocks = import_bytes(data, chunk_size=1024)
    by_cid = dict(blocks)
    node = decode_pbnode(by_cid[result.root])
    assert len(node.links) == 2
    fs = decode_unixfs(node.data or b"")
    assert fs.filesize == len(data) and fs.blocksizes == (174 * 1024, 1024)
    # The lone leftover leaf is wrapped in its own depth-1 node, as boxo's balanced layout does.
    second = decode_pbnode(by_cid[node.links[1].cid])
    assert len(second.links) == 1 and second.links[0].cid.codec == RAW
    assert node.links[1].tsize == len(by_cid[node.links[1].cid]) + 1024


def _getter(blocks: list[tuple[ContentId, bytes]]):  # type: ignore[no-untyped-def]
    store = {cid.to_bytes(): data for cid, data in blocks}

    async def get(cid: ContentId) -> bytes:
        return store[cid.to_bytes()]

    return get, store


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    chunk=st.integers(min_value=1, max_value=300),
    links=st.integers(min_value=2, max_value=6),
)
async def test_round_trip(data: bytes, chunk: int, links: int) -> None:
    result, blocks = import_bytes(data, chunk_size=chunk, max_links=links)
    get, _ = _getter(blocks)
    assert result.size == len(data)
    assert await read_file(result.root, get) == data


async def test_round_trip_default_params_many_chunks() -> None:
    data = b"".join(deterministic_bytes(3 * 256 * 1024 + 17, "rt"))
    result, blocks = import_bytes(data)
    get, _ = _getter(blocks)
    assert await read_file(result.root, get) == data


async def test_corrupt_leaf_is_rejected() -> None:
    data = b"".join(deterministic_bytes(5000, "bad"))
    result, blocks = import_bytes(data, chunk_size=1000)
    get, store = _getter(blocks)
    leaf = blocks[2][0]
    store[leaf.to_bytes()] = b"X" + store[leaf.to_bytes()][1:]
    with pytest.raises(CidMismatch):
        await read_file(result.root, get)


async def test_node_whose_sizes_do_not_add_up_is_rejected() -> None:
    # A well-hashed root that claims a leaf holds more than it does: a truncation must not pass.
    leaf = b"abc"
    leaf_cid = make_cid(RAW, leaf)
    from storage.cid import DAG_PB
    from storage.unixfs import PBLink, UnixFSData

    root_block = encode_pbnode([PBLink(leaf_cid, "", 3)], encode_unixfs(UnixFSData(2, b"", 4, (4,))))
    root = make_cid(DAG_PB, root_block)
    get, _ = _getter([(root, root_block), (leaf_cid, leaf)])
    with pytest.raises(MalformedBlock):
        await read_file(root, get)


async def test_declared_size_over_limit_is_refused_before_fetching_leaves() -> None:
    result, blocks = import_bytes(bytes(10_000), chunk_size=1000)
    get, _ = _getter(blocks)
    with pytest.raises(DagTooLarge):
        await read_file(result.root, get, max_bytes=9_999)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12), st.integers(1, 17))
def test_rechunk_gives_the_fixed_chunks_of_the_concatenation(pieces: list[bytes], chunk: int) -> None:
    whole = b"".join(pieces)
    assert list(rechunk(pieces, chunk)) == list(split_fixed(whole, chunk))
    assert list(split_file(io.BytesIO(whole), chunk)) == list(split_fixed(whole, chunk))


def test_streamed_import_has_the_cid_of_the_whole_bytes() -> None:
    # A state imported tensor by tensor must land on the CID of its bytes (the manifest names it).
    data = b"".join(deterministic_bytes(3 * 256 * 1024 + 12345, "stream"))
    pieces = [memoryview(data)[i : i + 100_003] for i in range(0, len(data), 100_003)]
    streamed = import_chunks(rechunk(pieces), lambda c, b: None)
    assert streamed == import_bytes(data)[0]
