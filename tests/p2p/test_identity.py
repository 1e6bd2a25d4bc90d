from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from eth_account import Account

from protocols.p2p.errors import KeystoreError
from protocols.p2p.identity import NodeIdentity, address_of_peer, recover_signer, verify
from protocols.p2p.keystore import create_keystore, identity_from_account, load_identity

FAST_SCRYPT = 2**10


def test_peer_id_and_eth_address_come_from_one_key() -> None:
    identity = NodeIdentity.generate()
    assert Account.from_key(identity.private_key_bytes()).address == identity.eth_address
    assert address_of_peer(identity.peer_id) == identity.eth_address


def test_signature_recovers_signer_and_rejects_tampering() -> None:
    identity = NodeIdentity.generate()
    sig = identity.sign(b"round 3")
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert identity.verify(b"round 3", sig)
    assert recover_signer(b"round 3", sig) == identity.eth_address
    assert not verify(b"round 4", sig, identity.eth_address)
    assert not verify(b"round 3", sig, NodeIdentity.generate().eth_address)
    assert recover_signer(b"round 3", sig[:64] + b"\x05") is None
    assert recover_signer(b"round 3", b"\x00" * 65) is None


def test_repr_never_shows_the_key() -> None:
    identity = NodeIdentity.generate()
    assert identity.private_key_bytes().hex() not in repr(identity)


def test_keystore_round_trip_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.json"
    created = create_keystore(path, "correct horse", scrypt_n=FAST_SCRYPT)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert created.private_key_bytes().hex() not in path.read_text()
    loaded = load_identity(path, "correct horse")
    assert loaded.eth_address == created.eth_address and loaded.peer_id == created.peer_id


def test_keystore_errors_are_actionable(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    create_keystore(path, "pw", scrypt_n=FAST_SCRYPT)
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load_identity(path, "not pw")
    with pytest.raises(KeystoreError, match="already exists"):
        create_keystore(path, "pw", scrypt_n=FAST_SCRYPT)
    with pytest.raises(KeystoreError, match="keys new"):
        load_identity(tmp_path / "missing.json", "pw")
    with pytest.raises(KeystoreError, match="empty passphrase"):
        create_keystore(tmp_path / "other.json", "")


def test_identity_from_dev_account() -> None:
    account = Account.create()
    assert identity_from_account(account).eth_address == account.address
