"""The fine-tuning demo's customer checkpoint, made the way a customer would: one process, one dataset, no network.

``python -m node.devnet.pretrain -o model.safetensors`` trains ``fmnist-cnn-v1`` from the seed's initial weights on
the first 30,000 Fashion-MNIST training images, upright, and writes the weights as a safetensors state dict, the file
``dtnode job create --init`` takes. The network then fine-tunes it on another dataset: the other 30,000 training
images, transposed (rows become columns: turned a quarter and mirrored, as from a camera mounted sideways), which the
checkpoint has never seen and on which it starts at chance (~10%); it is measured on the 10,000 test images, transposed.

(Splitting by class instead, 0-4 then 5-9, was measured and dropped: from scratch the 5-class task is learnt in as
few rounds, so the checkpoint gave no head start worth a demo; docs/BENCHMARKS.md.)

Reproducible bit for bit: the training is the node's own deterministic local training
(:func:`node.training.local.train_local`: one thread, a seeded batch order, AdamW), and safetensors writes the same
tensors as the same bytes, so the same ``--steps`` and ``--seed`` give the same file (its sha256 is printed).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.torch import save as st_save

from node.training.data import ArraySet, load_fashion_mnist
from node.training.evaluate import evaluate
from node.training.local import train_local
from node.training.models import State, initial_state
from node.training.task import Task

MODEL = "fmnist-cnn-v1"
SPLIT = 30_000
"""Training images ``[0, SPLIT)`` pre-train the checkpoint; ``[SPLIT, 60,000)``, transposed, fine-tune it."""
PRETRAIN_STEPS = 600
"""AdamW steps of 32 images: 0.64 epochs of the 30,000 pre-training images."""
PRETRAIN_SEED = 0


def transposed(data: ArraySet) -> ArraySet:
    """``data`` with every image transposed (labels unchanged)."""
    return ArraySet(np.ascontiguousarray(data.inputs.transpose(0, 2, 1)), data.labels)


def pretrain_split(train: ArraySet) -> ArraySet:
    """The customer's pre-training data: the first :data:`SPLIT` training images, upright."""
    return train.subset(np.arange(SPLIT, dtype=np.int64))


def finetune_split(train: ArraySet) -> ArraySet:
    """The data the network fine-tunes on: the other training images, transposed."""
    return transposed(train.subset(np.arange(SPLIT, len(train), dtype=np.int64)))


def pretrain_state(train: ArraySet, *, steps: int = PRETRAIN_STEPS, seed: int = PRETRAIN_SEED) -> State:
    """``fmnist-cnn-v1`` after ``steps`` deterministic AdamW steps (lr 1e-3, batch 32) on :func:`pretrain_split`
    of ``train``."""
    task = Task(model_name=MODEL, steps=steps, batch_size=32, lr=1e-3, seed=seed)
    result = train_local(task, initial_state(MODEL, seed), pretrain_split(train),
                         keep=lambda _state: "")  # segment states are not needed: keep none in memory
    return result.final_state


def checkpoint_bytes(state: State) -> bytes:
    """The state as a safetensors file (what ``--init`` reads); the same tensors give the same bytes."""
    return bytes(st_save({key: value.contiguous() for key, value in sorted(state.items())}))


def make_checkpoint(path: Path, *, steps: int = PRETRAIN_STEPS, seed: int = PRETRAIN_SEED,
                    root: str | None = None) -> bytes:
    """Pre-train on Fashion-MNIST (``root``: its folder, None for the installed one), write ``path``, return its
    bytes."""
    train, _ = load_fashion_mnist(root)
    data = checkpoint_bytes(pretrain_state(train, steps=steps, seed=seed))
    path.write_bytes(data)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.devnet.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--out", required=True, help="the safetensors file to write")
    parser.add_argument("--steps", type=int, default=PRETRAIN_STEPS)
    parser.add_argument("--seed", type=int, default=PRETRAIN_SEED)
    args = parser.parse_args(argv)
    data = make_checkpoint(Path(args.out), steps=args.steps, seed=args.seed)
    _, test = load_fashion_mnist(None)
    from safetensors.torch import load as st_load

    state = st_load(data)
    for name, images in (("upright", test), ("transposed", transposed(test))):
        accuracy, _ = evaluate(MODEL, state, images)
        print(f"accuracy on the 10,000 test images, {name}: {accuracy * 100:.2f}%")
    print(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
