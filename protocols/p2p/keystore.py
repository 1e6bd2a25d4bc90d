"""The node key at rest: an Ethereum keystore JSON (scrypt + AES-128-CTR), readable by the owner only.

The same file opens in any Ethereum wallet, so the account that earns on-chain can be managed with ordinary tools.
Passphrases and keys are never logged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from protocols.p2p.errors import KeystoreError
from protocols.p2p.identity import NodeIdentity

KEYSTORE_MODE = 0o600


def identity_from_account(account: LocalAccount) -> NodeIdentity:
    """The node identity of an eth-account key (dev and test accounts)."""
    return NodeIdentity.from_secret(bytes(account.key))


def create_keystore(
    path: str | os.PathLike[str],
    passphrase: str,
    *,
    identity: NodeIdentity | None = None,
    scrypt_n: int | None = None,
) -> NodeIdentity:
    """Write a new (or the given) identity to ``path``, encrypted with ``passphrase``; file mode 0600.

    Refuses to overwrite an existing file (a lost key is lost money). ``scrypt_n`` lowers the KDF cost for tests;
    leave it ``None`` (eth-account's default, 2**18) for real keys.
    """
    if not passphrase:
        raise KeystoreError("an empty passphrase would leave the key unprotected; set DTNODE_KEY_PASSPHRASE")
    identity = identity or NodeIdentity.generate()
    document = Account.encrypt(identity.private_key_bytes(), passphrase, kdf="scrypt", iterations=scrypt_n)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEYSTORE_MODE)
    except FileExistsError as exc:
        raise KeystoreError(f"{target} already exists; move it away or choose another --keystore path") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    return identity


def load_identity(path: str | os.PathLike[str], passphrase: str) -> NodeIdentity:
    """Open the keystore at ``path`` with ``passphrase``."""
    target = Path(path)
    try:
        document: Any = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise KeystoreError(f"no keystore at {target}; create one with `dtnode keys new`") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise KeystoreError(f"{target} is not a readable keystore JSON file ({exc})") from exc
    try:
        secret = Account.decrypt(document, passphrase)
    except ValueError as exc:
        raise KeystoreError(f"cannot open {target}: wrong passphrase or corrupted keystore") from exc
    except (KeyError, TypeError) as exc:
        raise KeystoreError(f"{target} is not an Ethereum keystore (missing {exc})") from exc
    return NodeIdentity.from_secret(bytes(secret))
