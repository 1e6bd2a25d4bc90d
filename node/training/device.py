"""Where training runs (CPU or a CUDA GPU), and which replays a cross-hardware result may get.

A node names a device (``--device cpu|cuda|auto``); :func:`resolve_device` turns it into a device *kind* once, at
start-up. Whatever the kind, every state, delta and published byte is a CPU float32 tensor in the same format: a
GPU-trained segment is copied to the CPU before it is hashed (:mod:`node.training.local`).

The replay rule (:func:`replay_rule`, docs/protocol.md "Verification"): a replay on the device kind the trainer
declared in its manifest must be bitwise, as on CPU. Across device kinds bitwise equality is not attainable (GPU
kernels sum in another order), so it is granted the spec's tolerance only when the spec declares
``hardware_mismatch``; otherwise it is a rejection that says so. A trainer therefore trains a job on its GPU only
when the job declares ``hardware_mismatch`` (:func:`training_device`): most validators replay on CPU.

Never imported by ``protocols``; the CUDA settings here are process-wide, like the CPU ones in
:func:`node.training.local.deterministic_torch`, which applies them.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from node.training.errors import TrainingError

DEVICE_CHOICES = ("cpu", "cuda", "auto")
"""What a node may ask for; ``auto``: CUDA where ``torch.cuda.is_available()``, else CPU."""
DEVICE_KINDS = ("cpu", "cuda")
"""What a trainer declares in its manifest (``protocols.specs.DEVICE_KINDS`` repeats it: protocols never imports
node; a test checks they agree)."""
CPU, CUDA = DEVICE_KINDS
CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS picks reduction splits per call from a shared workspace unless the workspace is fixed; with this value
(NVIDIA's documented one) its matmuls are reproducible, and ``use_deterministic_algorithms`` raises without it."""


class DeviceUnavailable(TrainingError, ValueError):
    """The configured device does not exist on this machine (e.g. ``--device cuda`` without a usable GPU)."""


def resolve_device(requested: str, *, cuda_available: bool | None = None) -> str:
    """The device kind a node trains on: ``cpu`` or ``cuda``.

    ``cuda_available`` defaults to ``torch.cuda.is_available()`` (tests pass it). Raises :class:`DeviceUnavailable`
    for ``cuda`` without a GPU and for an unknown name, naming the setting.
    """
    if requested not in DEVICE_CHOICES:
        raise DeviceUnavailable(f"setting 'device': {requested!r} is not one of {', '.join(DEVICE_CHOICES)}")
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if requested == CUDA and not has_cuda:
        raise DeviceUnavailable("setting 'device': cuda was requested but torch sees no usable CUDA GPU "
                                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); install a "
                                "CUDA build of torch and a driver, or run with --device cpu")
    kind = (CUDA if has_cuda else CPU) if requested == "auto" else requested
    if kind == CUDA:  # before anything starts cuBLAS in this process (see CUBLAS_WORKSPACE)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return kind


def training_device(own_kind: str, *, hardware_mismatch: bool) -> str:
    """The device kind a trainer whose device is ``own_kind`` trains a job on.

    Its GPU only when the job declares ``hardware_mismatch``: without it a replay on another device kind is a
    rejection (:func:`replay_rule`), and validators are not known to have a GPU, so a GPU-trained update would
    cost its trainer the bond. CPU otherwise, which every validator can replay bit for bit.
    """
    return own_kind if hardware_mismatch else CPU


def replay_device(trainer_kind: str, own_kind: str) -> str:
    """The device kind a validator whose device is ``own_kind`` replays a ``trainer_kind`` update on: the
    trainer's when the validator has it (a GPU node can always replay on its CPU), else its own."""
    return trainer_kind if trainer_kind in (CPU, own_kind) else own_kind


class ReplayRule(enum.StrEnum):
    """How a replayed segment must match the committed one."""

    BITWISE = "bitwise"
    """The whole trainer state's hash (the default: same device kind, no declared mismatch)."""
    TOLERANCE = "tolerance"
    """Within the spec's ``replay_tolerance`` (:mod:`node.training.replay`): only under ``hardware_mismatch``."""
    REFUSED = "refused"
    """Trained and replayed on different device kinds in a job that requires bitwise replay: rejected."""


def replay_rule(trainer_kind: str, replay_kind: str, *, hardware_mismatch: bool) -> ReplayRule:
    """The rule a replay on ``replay_kind`` of an update trained on ``trainer_kind`` is judged by.

    ``hardware_mismatch`` grants the tolerance whatever the kinds (thread counts and CPU instruction sets differ
    too); without it, equal kinds need bitwise equality and different kinds cannot pass.
    """
    if hardware_mismatch:
        return ReplayRule.TOLERANCE
    return ReplayRule.BITWISE if trainer_kind == replay_kind else ReplayRule.REFUSED


def torch_device(kind: str) -> torch.device:
    """The torch device of a kind (``cuda`` is the current GPU: one GPU per node process)."""
    if kind not in DEVICE_KINDS:
        raise DeviceUnavailable(f"unknown device kind {kind!r}; expected one of {', '.join(DEVICE_KINDS)}")
    return torch.device(kind)


def to_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A detached CPU copy: ``clone`` on the CPU (the same bytes and strides as before devices existed), a device
    to host copy from a GPU."""
    tensor = tensor.detach()
    return tensor.clone() if tensor.device.type == CPU else tensor.to(CPU)


@contextmanager
def cuda_deterministic() -> Iterator[None]:
    """Run the body with CUDA's reproducible settings; restore the previous ones after.

    Why each: ``CUBLAS_WORKSPACE_CONFIG`` fixes cuBLAS's reduction splits (see :data:`CUBLAS_WORKSPACE`; read when
    cuBLAS first starts in the process, so it is set here before any CUDA work, and never overridden if the operator
    set it); ``cudnn.benchmark`` off, because autotuning picks the fastest convolution algorithm per run, which may
    differ between runs; ``cudnn.deterministic`` on, for the algorithms that are reproducible; TF32 off for matmul
    and cuDNN, because TF32 rounds inputs to 10-bit mantissas: results would differ from float32 replays by ~1e-3,
    far beyond any replay tolerance (torch 2.14 maps these ``allow_tf32`` flags onto its newer ``fp32_precision``
settings: ``ieee`` for matmul; checked here). ``use_deterministic_algorithms(True)`` itself is set by the caller
    (:func:`node.training.local.deterministic_torch`), which also makes non-deterministic kernels raise.
    Call under that function's lock: these settings are process-wide.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    cudnn = torch.backends.cudnn
    prev = (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32 = False, True, False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32 = prev[0], prev[1], prev[2]
        torch.backends.cuda.matmul.allow_tf32 = prev[3]
