"""Stream bodies: round trips, canonical bytes, and typed refusals of anything malformed."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from protocols.chain.ticket import TicketDomain
from protocols.errors import SchemaError
from protocols.specs import TaskTicket
from protocols.types import NodeClass, RejectCode
from protocols.wire import PeersRequest, PeersResponse, TaskRequest, TaskResponse

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
# Hardhat's public test mnemonic: dev keys only.
Account.enable_unaudited_hdwallet_features()
LEADER = Account.from_mnemonic("test test test test test test test test test test test junk",
                               account_path="m/44'/60'/0'/0/1")
DOMAIN = TicketDomain(chain_id=31337, contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")


def _ticket() -> TaskTicket:
    return TaskTicket(job_id=1, round=0, term=1, slot=0, base_cid=CID, shard_cid=CID, sample_start=0, sample_count=100,
                      steps=50, batch_size=32, seed=7, node_class=NodeClass.L, weight=50, work_units=4,
                      trainer=LEADER.address, leader=LEADER.address, expires_at=10**9).signed_by(LEADER, DOMAIN)


def test_bodies_round_trip_with_the_wire_names() -> None:
    req = TaskRequest(job_id=3, round=2, node_class=NodeClass.S)
    assert req.to_bytes() == b'{"job_id":3,"node_class":"S","round":2,"schema":"dtnode/task-request/1"}'
    assert TaskRequest.from_bytes(req.to_bytes()) == req
    refusal = TaskResponse(reject=RejectCode.ROUND_FULL, detail="full")
    assert json.loads(refusal.to_bytes())["reject"] == "ROUND_FULL"
    assert TaskResponse.from_bytes(refusal.to_bytes()) == refusal
    answer = TaskResponse(ticket=_ticket())
    decoded = TaskResponse.from_bytes(answer.to_bytes())
    assert decoded == answer and decoded.ticket is not None and decoded.ticket.node_class is NodeClass.L
    decoded.ticket.verify_leader(DOMAIN)
    peers = PeersResponse(presences=("a", "b"))
    assert PeersResponse.from_bytes(peers.to_bytes()) == peers
    assert PeersRequest.from_bytes(PeersRequest(max_peers=5).to_bytes()).max_peers == 5


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"schema": "dtnode/task-request/2", "job_id": 1, "round": 0, "node_class": "S"}, "schema"),
        ({"schema": "dtnode/task-request/1", "job_id": 0, "round": 0, "node_class": "S"}, "'job_id'"),
        ({"schema": "dtnode/task-request/1", "job_id": 1, "round": True, "node_class": "S"}, "'round'"),
        ({"schema": "dtnode/task-request/1", "job_id": 1, "round": 0, "node_class": "XL"}, "'node_class'"),
        ({"schema": "dtnode/task-request/1", "job_id": 1, "round": 0}, "missing field"),
        ({"schema": "dtnode/task-request/1", "job_id": 1, "round": 0, "node_class": "S", "x": 1}, "unknown field"),
    ],
)
def test_task_request_refuses_malformed_bodies(body: dict[str, object], needle: str) -> None:
    with pytest.raises(SchemaError, match=needle):
        TaskRequest.from_bytes(json.dumps(body).encode())


def test_task_response_needs_exactly_one_answer() -> None:
    base = {"schema": "dtnode/task-response/1", "detail": ""}
    with pytest.raises(SchemaError, match="exactly one"):
        TaskResponse.from_bytes(json.dumps({**base, "ticket": None, "reject": None}).encode())
    with pytest.raises(SchemaError, match="exactly one"):
        TaskResponse.from_bytes(json.dumps({**base, "ticket": _ticket().to_dict(), "reject": "ROUND_FULL"}).encode())
    with pytest.raises(SchemaError, match="'reject'"):
        TaskResponse.from_bytes(json.dumps({**base, "ticket": None, "reject": "PLEASE_GO_AWAY"}).encode())
    with pytest.raises(SchemaError, match="too|exceeds"):
        TaskResponse.from_bytes(b" " * (64 * 1024 + 1))


def test_peers_bodies_are_bounded() -> None:
    with pytest.raises(SchemaError, match="'max_peers'"):
        PeersRequest.from_bytes(b'{"max_peers":257,"schema":"dtnode/peers-request/1"}')
    too_many = json.dumps({"schema": "dtnode/peers-response/1", "presences": ["p"] * 257}).encode()
    with pytest.raises(SchemaError, match="'presences'"):
        PeersResponse.from_bytes(too_many)
