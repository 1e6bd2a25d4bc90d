"""JobSpec / TaskTicket / UpdateManifest: strict validation, canonical bytes, leader signatures."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import SchemaError
from protocols.specs import JobSpec, TaskTicket, UpdateManifest

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
# Hardhat's public test mnemonic: dev keys only.
Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"
LEADER = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/1")
OTHER = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/2")


def spec() -> JobSpec:
    return JobSpec().with_content(dataset_cid=CID, eval_cid=CID, initial_checkpoint_cid=CID)


def ticket(**kw: object) -> TaskTicket:
    base = dict(job_id=1, round=0, term=1, base_cid=CID, shard_cid=CID, sample_start=0, sample_count=100,
                steps=50, batch_size=32, seed=7, node_class="M", weight=50, trainer=OTHER.address,
                leader=LEADER.address, expires_at=10**9)
    base.update(kw)
    return TaskTicket(**base)  # type: ignore[arg-type]


def test_job_spec_round_trip_is_canonical() -> None:
    s = spec()
    data = s.to_bytes()
    assert JobSpec.from_bytes(data) == s
    assert JobSpec.from_bytes(data).to_bytes() == data
    assert b" " not in data and data.index(b'"aggregation"') < data.index(b'"batch_size"')


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("rounds",), 0, "'rounds'"),
        (("dataset_cid",), "not-a-cid", "'dataset_cid'"),
        (("inner_lr",), 0.001, "decimal string"),
        (("aggregation", "strategy"), "average", "aggregation.strategy"),
        (("payment", "quorum"), 99, "payment.quorum"),
        (("schema",), "dtnode/jobspec/2", "schema"),
    ],
)
def test_job_spec_rejects_bad_fields(path: tuple[str, ...], value: object, needle: str) -> None:
    data = json.loads(spec().to_bytes())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SchemaError, match=needle):
        JobSpec.from_dict(data)


def test_job_spec_rejects_unknown_and_missing_fields() -> None:
    data = json.loads(spec().to_bytes())
    data["surprise"] = 1
    with pytest.raises(SchemaError, match="unknown field"):
        JobSpec.from_dict(data)
    del data["surprise"], data["rounds"]
    with pytest.raises(SchemaError, match="missing field"):
        JobSpec.from_dict(data)
    with pytest.raises(SchemaError, match="not valid UTF-8 JSON"):
        JobSpec.from_bytes(b"{nope")


def test_ticket_signature_binds_every_field() -> None:
    t = ticket().signed_by(LEADER)
    t.verify_leader()
    assert TaskTicket.from_bytes(t.to_bytes()) == t
    tampered = replace(t, steps=1)
    with pytest.raises(SchemaError, match="does not match"):
        tampered.verify_leader()
    with pytest.raises(SchemaError, match="being signed by"):
        ticket().signed_by(OTHER)
    forged = replace(ticket(leader=OTHER.address).signed_by(OTHER), leader=LEADER.address)
    with pytest.raises(SchemaError):
        forged.verify_leader()


@given(st.integers(0, 2**32), st.integers(1, 10_000), st.sampled_from(["S", "M", "L"]))
def test_ticket_round_trip(round_: int, steps: int, cls: str) -> None:
    t = ticket(round=round_, steps=steps, node_class=cls)
    assert TaskTicket.from_bytes(t.to_bytes()) == t


def test_manifest_validation() -> None:
    t = ticket().signed_by(LEADER)
    m = UpdateManifest(ticket=t.to_dict(), trainer=OTHER.address, delta_cid=CID, delta_encoding="f32",
                       loss_before_micro=2_300_000, loss_after_micro=900_000, segment_every=10,
                       segment_hashes=["ab" * 32] * 5, segment_cids=[CID] * 5)
    assert UpdateManifest.from_bytes(m.to_bytes()) == m
    assert m.task == t
    bad = json.loads(m.to_bytes())
    bad["segment_cids"] = [CID] * 4
    with pytest.raises(SchemaError, match="equal length"):
        UpdateManifest.from_dict(bad)
    bad = json.loads(m.to_bytes())
    bad["ticket"]["steps"] = "fifty"
    with pytest.raises(SchemaError, match="'steps'"):
        UpdateManifest.from_dict(bad)
