"""Start-up hardware settlement (issue 15): --device and the node class, from flags to the settled config."""

from __future__ import annotations

import pytest
import torch

from node.cli import build_parser, main
from node.commands import config_from_args
from node.config import NodeConfig, load_config
from node.hardware import class_for_device, settle_hardware
from protocols.errors import ConfigError
from protocols.types import NodeClass


def test_device_and_class_flags_reach_the_config() -> None:
    args = build_parser().parse_args(["--role", "trainer", "--device", "cpu", "--node-class", "S"])
    cfg = config_from_args(args)
    assert (cfg.device, cfg.node_class) == ("cpu", "S")
    assert build_parser().parse_args(["--class", "L"]).node_class == "L"  # the former spelling still works
    default = load_config(env={})
    assert (default.device, default.node_class, default.measure_class) == ("auto", "", True)


def test_bad_device_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="setting 'device'"):
        load_config(env={"DTNODE_DEVICE": "tpu"})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--device", "tpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_stops_start_up_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--role", "trainer", "--device", "cuda", "--dev-account", "1"]) == 2
    err = capsys.readouterr().err
    assert "setting 'device': cuda was requested" in err and "--device cpu" in err


def test_a_node_that_does_not_measure_keeps_its_declared_class() -> None:
    cfg = settle_hardware(NodeConfig(roles=("trainer",), node_class="L", measure_class=False, device="cpu"))
    assert (cfg.device, cfg.node_class, cfg.cpu_node_class) == ("cpu", "L", "")
    cfg = settle_hardware(NodeConfig(roles=("validator",), device="auto"))  # trains nothing: no benchmark
    assert cfg.node_class == "M" and cfg.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_trainer_measures_its_class_and_a_declared_one_is_capped() -> None:
    measured = settle_hardware(NodeConfig(roles=("trainer",), device="cpu"))
    assert measured.node_class in ("S", "M", "L") and measured.device == "cpu"
    # The smallest class is never above what was measured: declared as is.
    assert settle_hardware(NodeConfig(roles=("trainer",), device="cpu", node_class="S")).node_class == "S"


def test_class_for_device() -> None:
    gpu = NodeConfig(node_class="L", cpu_node_class="S", device="cuda")
    assert class_for_device(gpu, "cuda") == NodeClass.L and class_for_device(gpu, "cpu") == NodeClass.S
    cpu = NodeConfig(node_class="M", device="cpu")
    assert class_for_device(cpu, "cpu") == NodeClass.M
    assert class_for_device(NodeConfig(), "cpu") == NodeClass.M  # unsettled and undeclared: the former default
    # In-process nodes (devnets, a customer's node) never settle: they register and announce M, as before.
    assert NodeConfig().settled_class == "M" and NodeConfig(node_class="S").settled_class == "S"
