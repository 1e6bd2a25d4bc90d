"""JobSpec / TaskTicket / UpdateManifest: strict validation, canonical bytes, leader signatures."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from protocols.chain.ticket import TicketDomain
from protocols.errors import SchemaError
from protocols.specs import JobSpec, RoundRecord, TaskTicket, UpdateManifest
from protocols.types import NodeClass

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
# Hardhat's public test mnemonic: dev keys only.
Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"
LEADER = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/1")
OTHER = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/2")
DOMAIN = TicketDomain(chain_id=31337, contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")


def spec() -> JobSpec:
    return JobSpec().with_content(dataset_cid=CID, eval_cid=CID, initial_checkpoint_cid=CID)


def ticket(**kw: object) -> TaskTicket:
    base = dict(job_id=1, round=0, term=1, slot=0, base_cid=CID, shard_cid=CID, sample_start=0, sample_count=100,
                steps=50, batch_size=32, seed=7, node_class=NodeClass.M, weight=50, work_units=2, trainer=OTHER.address,
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
        (("schema",), "dtnode/jobspec/3", "schema"),
        # Version 1 measured its losses on a fixed 1,024 samples: a node recomputing them on loss_samples would vote
        # its trainers' honest work down, so it refuses the spec instead.
        (("schema",), "dtnode/jobspec/1", "'dtnode/jobspec/1' is not 'dtnode/jobspec/2'"),
        (("loss_samples",), 0, "'loss_samples'"),
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


def test_a_version_1_spec_is_refused_with_what_to_change() -> None:
    """A jobspec/1 file lacks loss_samples: the error says which version it is and how to move it, not only that a
    field is missing."""
    data = json.loads(spec().to_bytes())
    data["schema"] = "dtnode/jobspec/1"
    del data["loss_samples"]
    with pytest.raises(SchemaError, match=r"'loss_samples'.*1,024.*\"loss_samples\": 1024"):
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
    t = ticket().signed_by(LEADER, DOMAIN)
    t.verify_leader(DOMAIN)
    assert TaskTicket.from_bytes(t.to_bytes()) == t
    tampered = replace(t, steps=1)
    with pytest.raises(SchemaError, match="does not match"):
        tampered.verify_leader(DOMAIN)
    with pytest.raises(SchemaError, match="being signed by"):
        ticket().signed_by(OTHER, DOMAIN)
    forged = replace(ticket(leader=OTHER.address).signed_by(OTHER, DOMAIN), leader=LEADER.address)
    with pytest.raises(SchemaError):
        forged.verify_leader(DOMAIN)
    with pytest.raises(SchemaError, match="does not match"):  # EIP-712: bound to one chain and one contract
        t.verify_leader(TicketDomain(chain_id=1, contract=DOMAIN.contract))


@given(st.integers(0, 2**32), st.integers(1, 10_000), st.sampled_from(list(NodeClass)))
def test_ticket_round_trip(round_: int, steps: int, cls: NodeClass) -> None:
    t = ticket(round=round_, steps=steps, node_class=cls)
    assert TaskTicket.from_bytes(t.to_bytes()) == t


def test_manifest_validation() -> None:
    t = ticket().signed_by(LEADER, DOMAIN)
    m = UpdateManifest(ticket=t, trainer=OTHER.address, delta_cid=CID, delta_encoding="f32",
                       loss_before_micro=2_300_000, loss_after_micro=900_000, segment_every=10,
                       segment_hashes=["ab" * 32] * 5)
    assert UpdateManifest.from_bytes(m.to_bytes()) == m
    assert m.ticket == t
    bad = json.loads(m.to_bytes())
    bad["segment_cids"] = [CID] * 5  # v2: segment states are served on request, never listed by CID
    with pytest.raises(SchemaError, match="unknown field"):
        UpdateManifest.from_dict(bad)
    bad = json.loads(m.to_bytes())
    bad["segment_hashes"] = []
    with pytest.raises(SchemaError, match="segment_hashes"):
        UpdateManifest.from_dict(bad)
    bad = json.loads(m.to_bytes())
    bad["ticket"]["steps"] = "fifty"
    with pytest.raises(SchemaError, match="'steps'"):
        UpdateManifest.from_dict(bad)


def test_canonical_bytes_are_unchanged() -> None:
    """Golden hashes of the bytes the specs had before the schema refactor (CIDs and signatures depend on them)."""
    t = ticket().signed_by(LEADER, DOMAIN)
    m = UpdateManifest(ticket=t, trainer=OTHER.address, delta_cid=CID, delta_encoding="f32",
                       loss_before_micro=2_300_000, loss_after_micro=900_000, segment_every=10,
                       segment_hashes=["ab" * 32] * 5)
    r = RoundRecord(job_id=1, round=2, base_cid=CID, checkpoint_cid=CID, accepted=[CID], eval_accuracy_ppm=812000,
                    eval_loss_micro=512000)
    golden = {
        # dtnode/jobspec/2 (issue 18): loss_samples added; changed on purpose.
        "JobSpec": "85d4f9500f0f18256417b65b5ba308fa2175f9245f5365ad2e9dc33e77aae2f3",
        # dtnode/ticket/2 (issue 13): slot and work_units added, EIP-712 signature; changed on purpose.
        "TaskTicket": "6b3ccfb36b4b857c27978006436726f5df89119a25b406f6524ff8644ae84bcf",
        # dtnode/update/2 (issue 14): segment_cids dropped; its ticket is dtnode/ticket/2 (issue 13).
        "UpdateManifest": "85c4a2bcf92500b0a67dd63594b0dc8aed655b72d22375c4d23b2f458cff2ec8",
        "RoundRecord": "566b98ce68dc117ba9e8a5f943a186c45281ea3c5191089c61e7aac575daa90a",
    }
    # Issue 14 changed the defaults of segment_every (10 -> 2) and spot_check_segments (2 -> 3) on purpose; a spec
    # with the former values keeps its bytes.
    for obj in (replace(spec(), segment_every=10, spot_check_segments=2), t, m, r):
        assert hashlib.sha256(obj.to_bytes()).hexdigest() == golden[type(obj).__name__], type(obj).__name__
    assert json.loads(m.to_bytes())["ticket"] == json.loads(t.to_bytes())  # the manifest carries the ticket object
    UpdateManifest.from_bytes(m.to_bytes()).ticket.verify_leader(DOMAIN)


def test_fields_added_later_stay_out_of_the_bytes_at_their_default() -> None:
    """JobSpec's verification fields (issue 14) keep every existing spec's bytes and CID while at their default."""
    plain = spec()
    assert b"hardware_mismatch" not in plain.to_bytes() and b"max_loss_rise_ppm" not in plain.to_bytes()
    tuned = replace(plain, hardware_mismatch=True, max_loss_rise_ppm=50_000)
    assert JobSpec.from_bytes(tuned.to_bytes()) == tuned
    assert json.loads(tuned.to_bytes())["max_loss_rise_ppm"] == 50_000
    explicit = json.loads(plain.to_bytes())
    explicit["hardware_mismatch"] = False  # a second byte form of the same spec: refused
    with pytest.raises(SchemaError, match="hardware_mismatch"):
        JobSpec.from_dict(explicit)
