"""Start-up hardware settlement: which device this node trains on, and which class it promises on each.

:func:`settle_hardware` runs once before a node starts (``dtnode --role ...``): it resolves ``device`` (``auto`` →
``cuda`` or ``cpu``; ``cuda`` without a GPU stops start-up with a message) and measures the node's class there
(:mod:`node.training.calibrate`), capping a declared class at the measured one. A GPU node also measures its CPU:
jobs that do not declare ``hardware_mismatch`` are trained on the CPU (:func:`node.training.device.training_device`),
and for those it requests tasks of its CPU's class (:func:`class_for_device`). It registers with its device's
class, the most it promises. The settled config has ``device`` ∈ {cpu, cuda} and ``node_class`` ∈ {S, M, L}.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from node.config import NodeConfig
from node.training.calibrate import measure_throughput, settle_class
from node.training.device import CPU, resolve_device
from protocols.types import NodeClass

_TRAINS = ("trainer", "leader")
"""Roles that register as a trainer (a leader-only node does: node/runtime.py) and so need a class."""


def settle_hardware(cfg: NodeConfig, *, log: logging.Logger | None = None) -> NodeConfig:
    """``cfg`` with its device resolved and its class measured (or declared, where it does not measure).

    Raises :class:`~node.training.device.DeviceUnavailable` (a DtnodeError: the CLI prints it) for an unusable
    device. Blocks for about two calibration runs on a GPU node, one on a CPU node, none for a node that trains
    nothing or has ``measure_class`` off.
    """
    kind = resolve_device(cfg.device)
    declared = NodeClass.from_name(cfg.node_class) if cfg.node_class else None
    if not cfg.measure_class or not any(r in _TRAINS for r in cfg.roles):
        return replace(cfg, device=kind, node_class=cfg.settled_class)
    measured = measure_throughput(kind)
    node_class = settle_class(measured.measured_class, declared)
    cpu_class = ""
    if kind != CPU:
        cpu_class = settle_class(measure_throughput(CPU).measured_class, declared).name
    if log is not None:
        log.info("calibration on %s: %.0f samples/s of the reference CNN (class %s)%s; registering as class %s",
                 kind, measured.samples_per_s, measured.measured_class.name,
                 f", declared {declared.name}" if declared is not None else "", node_class.name)
        if declared is not None and declared > measured.measured_class:
            log.warning("declared class %s is more than this node measured (%s): capped at %s", declared.name,
                        measured.measured_class.name, node_class.name)
    return replace(cfg, device=kind, node_class=node_class.name, cpu_node_class=cpu_class)


def class_for_device(cfg: NodeConfig, kind: str) -> NodeClass:
    """The class this node promises for a task it trains on ``kind``: its CPU's class for a CPU task on a GPU node,
    else its own (:attr:`~node.config.NodeConfig.settled_class`)."""
    if kind == CPU and cfg.cpu_node_class:
        return NodeClass.from_name(cfg.cpu_node_class)
    return NodeClass.from_name(cfg.settled_class)
