"""CID parsing, canonical text and the bytes form stored on-chain."""

from __future__ import annotations

import pytest

from storage.cid import (
    DAG_PB,
    RAW,
    cid_bytes_to_str,
    cid_str_to_bytes,
    make_cid,
    parse_cid,
    validate_cid,
)
from storage.errors import CidMismatch, InvalidCid

EMPTY_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_raw_cid_of_empty_bytes_is_kubos() -> None:
    assert str(make_cid(RAW, b"")) == EMPTY_RAW


def test_text_bytes_round_trip() -> None:
    raw = cid_str_to_bytes(EMPTY_RAW)
    assert raw[:4] == bytes([1, 0x55, 0x12, 0x20])
    assert cid_bytes_to_str(raw) == EMPTY_RAW


def test_cidv0_is_accepted_and_upgraded_to_base32() -> None:
    # kubo test/sharness/t0114-gateway-subdomains/README.md: CIDv0 of "hello\n" and its `ipfs cid base32`
    assert validate_cid("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN") == (
        "bafybeiffndsajwhk3lwjewwdxqntmjm4b5wxaaanokonsggenkbw6slwk4"
    )
    assert parse_cid("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN").codec == DAG_PB


def test_upper_case_base32_is_normalised() -> None:
    assert validate_cid("B" + EMPTY_RAW[1:].upper()) == EMPTY_RAW


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "expected a CID"),
        ("zb2rhj7crUKTQYRGCRATFaQ6YFLTde2YzdqbbhAASkL9uRDXn", "only base32"),
        ("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk", "not valid base32"),  # truncated
        ("b!!!!", "not valid base32"),
        # kubo t0114 README: the sha2-512 CIDv1 of "hello\n"
        ("bafkrgqhhyivzstcz3hhswshfjgy6ertgmnqeleynhwt4dlfsthi4hn7zgh4uvlsb5xncykzapi3ocd4lzogukir6ksdy6wzrnz6ohnv4aglcs",
         "sha2-256"),
        ("bagaaierasords4njcts6vs7qvdjfcvgnume4hqohf65zsfguprqphs3icwea", "codec"),  # dag-json
    ],
)
def test_invalid_cids_are_refused_with_a_reason(value: str, needle: str) -> None:
    with pytest.raises(InvalidCid, match=needle):
        parse_cid(value)


def test_verify_rejects_other_bytes() -> None:
    cid = make_cid(RAW, b"hello")
    cid.verify(b"hello")
    with pytest.raises(CidMismatch):
        cid.verify(b"hellO")
