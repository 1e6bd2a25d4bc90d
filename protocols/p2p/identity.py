"""One secp256k1 key per node: its libp2p peer id and its Ethereum account are the same key.

Signatures are Ethereum personal-sign signatures (EIP-191) over the keccak-256 digest of the signed bytes, 65 bytes
``r || s || v`` with ``v`` in {27, 28}, so the same signature can be checked by any Ethereum tool and on-chain with
OpenZeppelin's ``ECDSA.recover(MessageHashUtils.toEthSignedMessageHash(keccak256(data)), sig)``.

This module never logs or prints a private key; ``repr`` shows the address only.
"""

from __future__ import annotations

import functools

import coincurve
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.secp256k1 import Secp256k1PrivateKey, Secp256k1PublicKey
from libp2p.peer.id import ID

from protocols.types import Address, PeerIdStr

SIGNATURE_LENGTH = 65
_EIP191_PREFIX_32 = b"\x19Ethereum Signed Message:\n32"


def signing_digest(data: bytes) -> bytes:
    """The 32-byte hash a signature over ``data`` commits to: EIP-191 of keccak-256(data)."""
    return keccak(_EIP191_PREFIX_32 + keccak(data))


def address_of_public_key(public_key: coincurve.PublicKey) -> Address:
    """The EIP-55 Ethereum address of a secp256k1 public key."""
    return _checksummed(keccak(public_key.format(compressed=False)[1:])[-20:])


@functools.lru_cache(maxsize=4096)
def _checksummed(raw: bytes) -> Address:
    # EIP-55 costs a keccak and ~40 Python steps; every gossip message recovers one of a few signers.
    return Address(to_checksum_address(raw))


def recover_signer(data: bytes, signature: bytes) -> Address | None:
    """The address whose key made ``signature`` over ``data``, or ``None`` if the signature is malformed."""
    if len(signature) != SIGNATURE_LENGTH or signature[64] not in (27, 28):
        return None
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), signing_digest(data), hasher=None
        )
    except ValueError:
        return None
    return address_of_public_key(public_key)


def verify(data: bytes, signature: bytes, address: str) -> bool:
    """True when ``signature`` over ``data`` was made by the key of ``address`` (compared case-insensitively)."""
    signer = recover_signer(data, signature)
    return signer is not None and signer.lower() == address.lower()


@functools.lru_cache(maxsize=4096)
def address_of_peer(peer_id: ID) -> Address | None:
    """The Ethereum address behind a secp256k1 peer id (inlined key), or ``None`` for other key types.

    Cached: asked for every gossip message, and a peer id always maps to the same address.
    """
    try:
        public_key = peer_id.extract_public_key()
    except Exception:  # a peer id from the wire may hold any bytes; not ours to trust
        return None
    if public_key is None or public_key.get_type() != KeyType.Secp256k1:
        return None
    if not isinstance(public_key, Secp256k1PublicKey):
        return None
    return address_of_public_key(public_key.impl)


class NodeIdentity:
    """A node's key: libp2p key pair, peer id and Ethereum address, all from one secp256k1 secret.

    Build with :meth:`from_secret` / :meth:`generate`, or load one from a keystore
    (:func:`protocols.p2p.keystore.load_identity`).
    """

    __slots__ = ("_private", "eth_address", "key_pair", "peer_id")

    def __init__(self, private_key: Secp256k1PrivateKey) -> None:
        self._private = private_key
        public_key = private_key.get_public_key()
        self.key_pair = KeyPair(private_key, public_key)
        self.peer_id: ID = ID.from_pubkey(public_key)
        self.eth_address: Address = address_of_public_key(coincurve.PublicKey.from_secret(private_key.to_bytes()))

    @classmethod
    def from_secret(cls, secret: bytes) -> NodeIdentity:
        """An identity from a 32-byte private key."""
        if len(secret) != 32:
            raise ValueError(f"a secp256k1 private key is 32 bytes, got {len(secret)}")
        return cls(Secp256k1PrivateKey.from_bytes(secret))

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A fresh random identity (for tests and ``dtnode keys new``)."""
        return cls(Secp256k1PrivateKey.new())

    @property
    def peer_id_str(self) -> PeerIdStr:
        return PeerIdStr(self.peer_id.to_base58())

    def private_key_bytes(self) -> bytes:
        """The raw secret, for the keystore and the chain signer only. Never log it."""
        return self._private.to_bytes()

    def sign(self, data: bytes) -> bytes:
        """A 65-byte recoverable Ethereum signature over ``data`` (see module docstring)."""
        raw = self._private.impl.sign_recoverable(signing_digest(data), hasher=None)
        return raw[:64] + bytes([raw[64] + 27])

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` over ``data`` was made by this identity."""
        return verify(data, signature, self.eth_address)

    def __repr__(self) -> str:
        return f"NodeIdentity(eth_address={self.eth_address}, peer_id={self.peer_id.to_base58()})"
