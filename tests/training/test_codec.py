from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save

from node.training.codec import (
    decode_delta,
    decode_state,
    delta_kind_of,
    encode_delta,
    encode_state,
    iter_state_bytes,
    read_state,
    state_hash,
    write_state,
)
from node.training.errors import InvalidDelta
from node.training.models import initial_state

ROOT = Path(__file__).resolve().parents[2]

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)


@st.composite
def states(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    key = st.from_regex(r"[a-z]{1,4}(\.[a-z]{1,4})?", fullmatch=True)
    names = draw(st.lists(key, min_size=1, max_size=4, unique=True))
    out = {}
    for name in names:
        shape = draw(shapes)
        n = math.prod(shape)
        values = draw(st.lists(st.floats(-1e3, 1e3, width=32, allow_subnormal=False), min_size=n, max_size=n))
        out[name] = torch.tensor(values, dtype=torch.float32).reshape(shape)
    return out


@settings(max_examples=40, deadline=None)
@given(states())
def test_f32_round_trip_is_exact_and_bytes_are_deterministic(state: dict[str, torch.Tensor]) -> None:
    data = encode_state(state)
    reordered = dict(reversed(list(state.items())))
    assert encode_state(reordered) == data == encode_delta(state, kind="f32")
    back = decode_state(data, like=state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert state_hash(decode_delta(data, like=state)) == state_hash(state)


@settings(max_examples=40, deadline=None)
@given(states())
def test_int8_error_is_at_most_half_a_step(state: dict[str, torch.Tensor]) -> None:
    data = encode_delta(state, kind="int8")
    assert delta_kind_of(data) == "int8" and data == encode_delta(state, kind="int8")
    back = decode_delta(data, like=state)
    for key, tensor in state.items():
        step = float(tensor.abs().max()) / 127
        assert float((back[key].double() - tensor.double()).abs().max()) <= step / 2 + 1e-6 * (step + 1)


@settings(max_examples=40, deadline=None)
@given(states(), st.floats(0.01, 1.0))
def test_topk_keeps_the_largest_entries(state: dict[str, torch.Tensor], frac: float) -> None:
    back = decode_delta(encode_delta(state, kind="topk", topk_frac=frac), like=state)
    for key, tensor in state.items():
        kept = back[key] != 0
        k = max(1, math.ceil(frac * tensor.numel()))
        assert int(kept.sum()) <= k
        assert torch.equal(back[key][kept], tensor[kept])
        if (~kept).any() and kept.any():
            assert float(tensor[~kept].abs().max()) <= float(tensor[kept].abs().min())


def test_int8_is_four_times_smaller() -> None:
    state = initial_state("fmnist-cnn-v1", 0)
    assert len(encode_delta(state, kind="int8")) < len(encode_state(state)) / 3.9


def _like() -> dict[str, torch.Tensor]:
    return {"a": torch.zeros(2, 3), "b": torch.zeros(4)}


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"a": torch.zeros(2, 3)}, "missing"),
        ({"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}, "unexpected"),
        ({"a": torch.zeros(3, 2), "b": torch.zeros(4)}, "expected torch.float32"),
        ({"a": torch.zeros(2, 3, dtype=torch.float64), "b": torch.zeros(4)}, "expected torch.float32"),
        ({"a": torch.full((2, 3), float("nan")), "b": torch.zeros(4)}, "NaN"),
        ({"a": torch.zeros(2, 3), "b": torch.tensor([0.0, float("inf"), 0, 0])}, "NaN or Inf"),
    ],
)
def test_decode_rejects_bad_tensors(tensors: dict[str, torch.Tensor], match: str) -> None:
    data = save(tensors)
    with pytest.raises(InvalidDelta, match=match):
        decode_delta(data, like=_like())
    with pytest.raises(InvalidDelta):
        decode_state(data, like=_like())


def test_decode_rejects_oversize_garbage_and_bad_codec_fields() -> None:
    like = _like()
    good = encode_delta(like)
    with pytest.raises(InvalidDelta, match="exceeds"):
        decode_delta(good, like=like, max_bytes=len(good) - 1)
    with pytest.raises(InvalidDelta, match="not valid safetensors"):
        decode_delta(b"\xff" * 64, like=like)
    with pytest.raises(InvalidDelta, match="unknown kind"):
        decode_delta(save(like, metadata={"dtnode.delta": "zip"}), like=like)
    bad_scale = {"a": torch.zeros(2, 3, dtype=torch.int8), "a::scale": torch.tensor(-1.0),
                 "b": torch.zeros(4, dtype=torch.int8), "b::scale": torch.tensor(1.0)}
    with pytest.raises(InvalidDelta, match="scale"):
        decode_delta(save(bad_scale, metadata={"dtnode.delta": "int8"}), like=like)
    bad_idx = {"a::idx": torch.tensor([7]), "a::val": torch.tensor([1.0]),
               "b::idx": torch.tensor([0]), "b::val": torch.tensor([1.0])}
    with pytest.raises(InvalidDelta, match="out of range"):
        decode_delta(save(bad_idx, metadata={"dtnode.delta": "topk"}), like=like)
    with pytest.raises(InvalidDelta, match="metadata"):
        decode_state(encode_delta(like, kind="int8"), like=like)


def test_bytes_and_training_are_identical_across_processes() -> None:
    # Safetensors' Rust side uses hash maps; a second interpreter (another hash seed) must give the same bytes,
    # and deterministic training must give the same weights.
    script = (
        "from node.training.models import initial_state\n"
        "from node.training.codec import state_hash, encode_delta\n"
        "from node.training.local import train_local\n"
        "from node.training.task import Task\n"
        "from node.training.data import load_fashion_mnist\n"
        "import hashlib\n"
        "s = initial_state('fmnist-mlp-v1', 5)\n"
        "tr, _ = load_fashion_mnist()\n"
        "t = Task(model_name='fmnist-mlp-v1', steps=12, batch_size=16, lr=1e-3, seed=9)\n"
        "r = train_local(t, s, tr.subset(slice(0, 500)))\n"
        "print(state_hash(s), hashlib.sha256(encode_delta(r.delta, kind='int8')).hexdigest(), r.segment_hashes[-1])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=120, env={**os.environ, "PYTHONHASHSEED": "12345"})
    from node.training.data import load_fashion_mnist
    from node.training.local import train_local
    from node.training.task import Task

    s = initial_state("fmnist-mlp-v1", 5)
    tr, _ = load_fashion_mnist()
    r = train_local(Task(model_name="fmnist-mlp-v1", steps=12, batch_size=16, lr=1e-3, seed=9), s,
                    tr.subset(slice(0, 500)))
    import hashlib

    here = f"{state_hash(s)} {hashlib.sha256(encode_delta(r.delta, kind='int8')).hexdigest()} {r.segment_hashes[-1]}"
    assert out.stdout.strip() == here
    assert np.isfinite(r.loss_after)


MIXED = {"model/w": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(), "optim/w/step": torch.tensor(3.0),
         "empty": torch.zeros(0), "idx": torch.arange(5), "q": torch.ones(3, dtype=torch.int8),
         "half": torch.ones(2, dtype=torch.bfloat16), "f64": torch.ones(2, dtype=torch.float64)}


@settings(max_examples=40, deadline=None)
@given(states())
def test_streamed_bytes_are_safetensors_bytes(state: dict[str, torch.Tensor]) -> None:
    # CIDs and commitments must not change with the streaming writer: it must write what safetensors writes.
    assert b"".join(iter_state_bytes(state)) == bytes(save(state))
    data = encode_delta(state, kind="int8")
    assert data == bytes(save(st_load(data), metadata={"dtnode.delta": "int8"}))


def test_streamed_bytes_match_safetensors_across_dtypes_and_layouts() -> None:
    reference = bytes(save({k: v.contiguous() for k, v in MIXED.items()}))
    assert encode_state(MIXED) == reference  # a transposed (strided) tensor, scalars, empty, ints, bf16, f64
    assert state_hash(MIXED) == hashlib.sha256(reference).hexdigest()
    delta = {"w": torch.linspace(-1, 1, 50), "v": torch.ones(2, 2)}
    for kind in ("int8", "topk"):
        data = encode_delta(delta, kind=kind, topk_frac=0.1)
        tensors = st_load(data)
        assert data == bytes(save(tensors, metadata={"dtnode.delta": kind}))


def test_write_and_read_state_stream_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    size, digest = write_state(MIXED, path)
    data = path.read_bytes()
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest()) and data == encode_state(MIXED)
    assert not list(tmp_path.glob("*.part"))
    back = read_state(path, like={k: v.contiguous() for k, v in MIXED.items()}, max_bytes=size)
    assert state_hash(back) == digest
    with pytest.raises(InvalidDelta, match="exceeds"):
        read_state(path, max_bytes=size - 1)
    path.write_bytes(data[:40])
    with pytest.raises(InvalidDelta, match="not valid safetensors"):
        read_state(path, max_bytes=size)
    path.write_bytes(data + b"x")
    with pytest.raises(InvalidDelta, match="after the last tensor"):
        read_state(path, max_bytes=size + 1)
    n = int.from_bytes(data[:8], "little")
    overlapping = data[8 : 8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[8,', 1)
    path.write_bytes(data[:8] + overlapping + data[8 + n :])
    with pytest.raises(InvalidDelta, match="gap or overlap|bytes of data"):
        read_state(path, max_bytes=size)
    path.write_bytes(encode_delta({"w": torch.ones(3)}, kind="int8"))
    with pytest.raises(InvalidDelta, match="metadata"):
        read_state(path, max_bytes=size)
