"""bench/bench_peers.py's pieces that need neither a devnet nor Flower: the one-process side trains the tasks the
devnet's tickets name and reaches the checkpoint the leader's code computes (same CID), the per-round comparison
reports a divergence, the figures, the log timeline and the process-tree measurement. The Flower side runs only
where its optional venv exists (``bash bench/setup_flower.sh``)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from peers_job import (  # noqa: E402
    JOB_ID,
    PeerJob,
    RoundMetric,
    checkpoint_cid,
    divergences,
    initial_model,
    peer_spec,
    run_one_process,
    slot_shard_index,
    steady_round_s,
    time_to_target,
)
from peers_measure import run_measured  # noqa: E402
from peers_timeline import round_phases, steady_phases  # noqa: E402

from node.checkpoint import aggregate_checkpoint, decode_checkpoint, initial_checkpoint  # noqa: E402
from node.training.codec import encode_delta  # noqa: E402
from node.training.data import ArraySet, load_fashion_mnist, make_shards  # noqa: E402
from node.training.local import train_local  # noqa: E402
from node.training.models import model_ref  # noqa: E402
from node.training.task import Task, task_size  # noqa: E402
from node.training.ticket_check import ticket_seed, ticket_shard  # noqa: E402
from protocols.types import NodeClass  # noqa: E402
from storage.cid import cid_to_str  # noqa: E402
from storage.unixfs import import_bytes  # noqa: E402

FLOWER_PYTHON = BENCH.parent / ".venv-flower" / "bin" / "python"


@pytest.fixture(scope="module")
def tiny_job() -> PeerJob:
    """The demo job's rules on a small slice of Fashion-MNIST: MLP, 2 rounds of 4 tasks of K=3, 16 shards."""
    train, test = load_fashion_mnist()
    spec = peer_spec(model="fmnist-mlp-v1", rounds=2, local_steps=3)
    shards: list[ArraySet | None] = list(make_shards(train.subset(slice(0, 1600)), 16, seed=spec.seed))
    return PeerJob(spec=spec, shards=shards, held_out=test.subset(slice(0, 200)))


def test_one_process_reaches_the_checkpoint_the_leaders_code_computes(tiny_job: PeerJob) -> None:
    spec = tiny_job.spec
    rounds = run_one_process(tiny_job)
    assert [m.round for m in rounds] == [1, 2]
    assert rounds[0].t_s <= rounds[1].t_s
    # Round 1 as the devnet computes it: tasks from the tickets' rules, deltas through the f32 codec, the leader's
    # aggregate_checkpoint on the bytes; the checkpoint published under the CID the leader's store gives it.
    base_bytes = initial_checkpoint(model_ref(spec), spec.seed)
    base, _ = decode_checkpoint(base_bytes, model_ref(spec), max_bytes=1 << 30)
    names = [f"shard-{i}" for i in range(16)]
    size = task_size(spec, NodeClass.M)
    deltas = []
    for slot in range(spec.tasks_per_round):
        shard = tiny_job.shards[names.index(ticket_shard(names, spec, 0, slot))]
        assert shard is not None
        task = Task(model_name=model_ref(spec), steps=size.steps, batch_size=size.batch_size, lr=float(spec.inner_lr),
                    seed=ticket_seed(spec, JOB_ID, 0, slot), segment_every=spec.segment_every,
                    optimizer=spec.inner_optimizer, sample_range=(0, len(shard)), task_type=spec.task)
        deltas.append((encode_delta(train_local(task, base, shard).delta, kind=spec.delta_encoding), size.weight))
    committed = aggregate_checkpoint(spec, base_bytes, deltas)
    assert rounds[0].cid == str(cid_to_str(import_bytes(committed)[0].root))


def test_one_process_is_deterministic_and_slots_walk_the_shards(tiny_job: PeerJob) -> None:
    first, second = run_one_process(tiny_job), run_one_process(tiny_job)
    assert [m.key() for m in first] == [m.key() for m in second]
    spec = tiny_job.spec
    assert sorted(slot_shard_index(spec, r, s) for r in range(4) for s in range(4)) == list(range(16))
    assert checkpoint_cid(initial_model(spec), None) != first[0].cid


def _rounds(*accuracies: float, step: float = 2.0) -> list[RoundMetric]:
    return [RoundMetric(i + 1, f"bafy{i}", a, 1.0 - a, 10.0 + step * i) for i, a in enumerate(accuracies)]


def test_divergences_name_the_side_and_round_and_a_missing_round() -> None:
    ref = _rounds(0.7, 0.85, 0.9)
    assert divergences({"one": ref, "flower": list(ref), "dtnode": list(ref)}, reference="one") == []
    changed = [ref[0], dataclasses.replace(ref[1], loss=ref[1].loss + 1e-12), ref[2]]
    problems = divergences({"one": ref, "dtnode": changed, "flower": ref[:2]}, reference="one")
    assert len(problems) == 2
    assert problems[0].startswith("dtnode round 2:")
    assert problems[1] == "flower: 2 rounds, one: 3 rounds"


def test_time_to_target_and_steady_round() -> None:
    rounds = _rounds(0.7, 0.85, 0.881, 0.9, step=3.0)
    assert time_to_target(rounds, 0.88) == (3, 16.0)
    assert time_to_target(rounds, 0.95) is None
    assert steady_round_s(rounds) == pytest.approx(3.0)
    assert steady_round_s(rounds[:1]) is None


def test_timeline_reads_a_rounds_critical_path(tmp_path: Path) -> None:
    (tmp_path / "leader-1.log").write_text("\n".join([
        "10:00:00 leader-1 INFO    job 1: leading round 1/2 from aaaa (term 1)",
        "10:00:01 leader-1 INFO    job 1 round 0: ticket for 0xA in slot 0 (class M, 100 steps on shard x)",
        "10:00:20 leader-1 INFO    job 1: committed round 1/2: 1 accepted, eval accuracy 70.00%, checkpoint b",
        "10:00:21 leader-1 INFO    job 1: leading round 2/2 from b (term 1)",
        "10:00:23 leader-1 INFO    job 1 round 1: ticket for 0xA in slot 0 (class M, 100 steps on shard y)",
        "10:00:40 leader-1 INFO    job 1: committed round 2/2: 1 accepted, eval accuracy 80.00%, checkpoint c",
    ]))
    (tmp_path / "trainer-1.log").write_text("\n".join([
        "10:00:06 trainer-1 INFO    job 1 round 0: submitted update bafkrei",
        "10:00:29 trainer-1 INFO    job 1 round 1: submitted update bafkrei",
    ]))
    (tmp_path / "validator-1.log").write_text("\n".join([
        "10:00:15 validator-1 INFO    job 1 round 0: update of 0xA in slot 0 is VALID (OK; segments [1], max "
        "distance 0)",
        "10:00:17 validator-1 INFO    job 1 round 0: update of 0xA in slot 0 is VALID (OK; segments [1], max "
        "distance 0)",
        "10:00:37 validator-1 INFO    job 1 round 1: update of 0xA in slot 0 is INVALID (BAD; segments [1], max "
        "distance 1)",
    ]))
    phases = round_phases(tmp_path)
    assert phases[1] == {"lead→tickets": 1.0, "tickets→submitted": 5.0, "submitted→verdicts": 9.0,
                         "verdicts→on-chain votes": 2.0, "votes→committed": 3.0, "committed→next lead": 1.0}
    assert phases[2] == {"lead→tickets": 2.0, "tickets→submitted": 6.0, "submitted→verdicts": 8.0,
                         "verdicts→on-chain votes": 0.0, "votes→committed": 3.0}
    assert steady_phases(phases) == {"lead→tickets": 2.0, "tickets→submitted": 6.0, "submitted→verdicts": 8.0,
                                     "verdicts→on-chain votes": 0.0, "votes→committed": 3.0}


def test_run_measured_counts_a_child_processes_cpu_and_memory() -> None:
    burn = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time; x = bytearray(64 << 20); t = time.process_time()\\nwhile time.process_time() - t < 0.6: "
            "pass'], check=True)")
    usage = run_measured([sys.executable, "-c", burn], interval_s=0.05)
    assert usage.exit_code == 0
    assert usage.cpu_total >= 0.4  # the grandchild's 0.6 s, less at most one sampling interval
    assert max(p.peak_rss for p in usage.processes.values()) >= 64 << 20
    assert usage.cpu_at(usage.times[-1]) == usage.cpu[-1]
    assert usage.cpu_at(usage.times[0] - 1) == 0.0


@pytest.mark.slow
@pytest.mark.skipif(not FLOWER_PYTHON.exists(), reason="the Flower side is optional: its venv is made by "
                    "`bash bench/setup_flower.sh` (flwr 1.42 pins typer and rich older than dtnode's)")
def test_flower_side_trains_the_same_checkpoints_as_one_process(tmp_path: Path) -> None:
    import json
    import subprocess

    out = tmp_path / "flower.json"
    subprocess.run([str(FLOWER_PYTHON), str(BENCH / "peers_flower.py"), "server", "--out", str(out), "--model",
                    "fmnist-mlp-v1", "--rounds", "1", "--local-steps", "2"], check=True, timeout=600)
    flower = [RoundMetric(**m) for m in json.loads(out.read_text())["rounds"]]
    from peers_job import load_job

    reference = run_one_process(load_job(peer_spec(model="fmnist-mlp-v1", rounds=1, local_steps=2)))
    assert divergences({"one": reference, "flower": flower}, reference="one") == []
    assert np.isfinite(flower[0].loss)
