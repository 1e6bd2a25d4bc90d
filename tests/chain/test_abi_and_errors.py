"""The shipped ABI export: fresh, fully bound by the client; revert decoding for every backend's shape; CIDs."""

from __future__ import annotations

import re

import pytest
from eth_abi.abi import encode
from eth_utils.abi import function_signature_to_4byte_selector
from web3.exceptions import ContractCustomError, Web3RPCError

from protocols.chain import errors
from protocols.chain.abi import load_artifact, source_sha256
from protocols.chain.backends import CONTRACTS_DIR
from protocols.chain.cids import cid_from_bytes, cid_to_bytes, optional_cid_from_bytes
from protocols.chain.client import JobManagerClient
from protocols.chain.errors import ChainError, ContractRevert, TransactionFailed, decode_revert, revert_class
from protocols.chain.events import event_class, event_names
from protocols.errors import DtnodeError, SchemaError

from .helpers import cid_of

SOURCE = CONTRACTS_DIR / "contracts" / "JobManager.sol"
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_export_is_not_stale() -> None:
    if not SOURCE.exists():
        pytest.skip(f"{SOURCE} is not in this checkout (installed package)")
    assert load_artifact().source_hash == source_sha256(SOURCE), (
        "protocols/chain/abi/JobManager.json is older than contracts/contracts/JobManager.sol: run "
        "`./node_modules/.bin/hardhat compile && node scripts/export_abi.js` in contracts/"
    )


def _snake(name: str) -> str:
    return name.lower() if name.isupper() else re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_client_has_a_method_for_every_contract_function() -> None:
    missing = [
        fn["name"]
        for fn in load_artifact().entries("function")
        if not callable(getattr(JobManagerClient, _snake(fn["name"]), None))
    ]
    assert missing == [], f"JobManagerClient lacks methods for {missing}"


def test_every_custom_error_and_event_has_a_class() -> None:
    names = {e["name"] for e in load_artifact().entries("error")}
    assert names == errors.custom_error_names()
    for name in names:
        cls = revert_class(name)
        assert cls.__name__ == name and issubclass(cls, ContractRevert) and issubclass(cls, DtnodeError)
        assert getattr(errors, name) is cls
    assert {e["name"] for e in load_artifact().entries("event")} == event_names()
    assert event_class("RoundCommitted").__name__ == "RoundCommitted"
    with pytest.raises(KeyError):
        revert_class("NoSuchError")


def _not_leader_data() -> bytes:
    selector = function_signature_to_4byte_selector("JobManagerNotLeader(uint256,address,address)")
    return selector + encode(["uint256", "address", "address"], [7, ADDRESS, ADDRESS])


@pytest.mark.parametrize(
    "shape",
    [
        "bytes",
        "hex string",
        "web3 ContractCustomError",
        "anvil rpc error",
        "hardhat send error",
        "eth-tester repr",
    ],
)
def test_decode_revert_handles_each_backend_shape(shape: str) -> None:
    data = _not_leader_data()
    raised: BaseException | bytes | str
    if shape == "bytes":
        raised = data
    elif shape == "hex string":
        raised = "0x" + data.hex()
    elif shape == "web3 ContractCustomError":
        raised = ContractCustomError("0x" + data.hex(), data="0x" + data.hex())
    elif shape == "anvil rpc error":
        response = {"code": 3, "message": "execution reverted", "data": "0x" + data.hex()}
        raised = Web3RPCError(str(response), rpc_response={"jsonrpc": "2.0", "id": 1, "error": response})  # type: ignore[arg-type]
    elif shape == "hardhat send error":
        inner = {"message": "VM Exception while processing transaction", "txHash": "0x" + "ab" * 32,
                 "data": "0x" + data.hex()}  # fmt: skip
        raised = Web3RPCError(str({"code": -32603, "message": "Error: VM Exception", "data": inner}))
    else:
        raised = Exception(f"execution reverted: {data!r}")
    decoded = decode_revert(raised)
    assert type(decoded) is revert_class("JobManagerNotLeader")
    assert isinstance(decoded, ContractRevert)
    assert decoded.args_decoded == {"jobId": 7, "account": ADDRESS, "leader": ADDRESS}


def test_decode_revert_of_other_failures() -> None:
    assert decode_revert(b"").error_name == "Revert"  # type: ignore[attr-defined]
    assert decode_revert(b"\xde\xad\xbe\xef").error_name == "Unknown"  # type: ignore[attr-defined]
    reason = function_signature_to_4byte_selector("Error(string)") + encode(["string"], ["nope"])
    assert decode_revert(reason).args_decoded == {"reason": "nope"}  # type: ignore[attr-defined]
    not_a_revert = decode_revert(ValueError("nonce too low"))
    assert type(not_a_revert) is TransactionFailed and isinstance(not_a_revert, ChainError)


def test_cids_round_trip_through_chain_bytes() -> None:
    v1 = cid_of(b"payload")
    assert cid_from_bytes(cid_to_bytes(v1)) == v1
    v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
    assert cid_from_bytes(cid_to_bytes(v0)) == v0
    assert optional_cid_from_bytes(b"") is None
    with pytest.raises(SchemaError):
        cid_to_bytes("not a cid")
    with pytest.raises(SchemaError):
        cid_from_bytes(b"\x01junk")
