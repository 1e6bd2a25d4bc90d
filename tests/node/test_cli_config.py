"""The binary's surface: --help, --version, bad flags and config precedence (TOML < env < flags)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node import __version__
from node.cli import build_parser, main
from node.config import load_config
from protocols.errors import ConfigError


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", *argv], capture_output=True, text=True, timeout=60)


def test_version_and_help() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"dtnode {__version__}"
    out = run_cli("--help")
    assert out.returncode == 0
    for word in ("--role", "devnet", "dataset", "job", "keys"):
        assert word in out.stdout


def test_job_status_can_skip_measuring_accuracy() -> None:
    args = build_parser().parse_args(["job", "status", "5", "--no-eval"])
    assert (args.job_command, args.job_id, args.no_eval) == ("status", 5, True)
    assert build_parser().parse_args(["job", "status", "5"]).no_eval is False


def test_bad_flag_is_a_clear_error() -> None:
    out = run_cli("--no-such-flag")
    assert out.returncode != 0
    assert "unrecognized arguments: --no-such-flag" in out.stderr


def test_leader_without_job_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--role", "leader"]) == 2
    assert "setting 'jobs'" in capsys.readouterr().err


def test_unknown_role_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--role", "miner"]) == 2
    assert "unknown role 'miner'" in capsys.readouterr().err


def test_precedence_toml_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text('node_class = "S"\nfetch_timeout_s = 5\nroles = ["trainer"]\nchain_rpc_url = "http://a:1"\n')
    cfg = load_config(toml_path=toml, env={}, flags={})
    assert (cfg.node_class, cfg.fetch_timeout_s, cfg.roles) == ("S", 5.0, ("trainer",))
    cfg = load_config(toml_path=toml, env={"DTNODE_NODE_CLASS": "L", "DTNODE_CHAIN_RPC_URL": "http://b:2"}, flags={})
    assert (cfg.node_class, cfg.chain_rpc_url) == ("L", "http://b:2")
    cfg = load_config(toml_path=toml, env={"DTNODE_NODE_CLASS": "L"}, flags={"node_class": "M", "jobs": [3, 4]})
    assert (cfg.node_class, cfg.jobs) == ("M", (3, 4))


@pytest.mark.parametrize(
    ("toml_text", "env", "needle"),
    [
        ("node_class = 'XL'\n", {}, "setting 'node_class'"),
        ("bogus = 1\n", {}, "unknown setting 'bogus'"),
        ("fetch_timeout_s = -1\n", {}, "setting 'fetch_timeout_s'"),
        ("withdraw_min_wei = 0\n", {}, "setting 'withdraw_min_wei'"),
        ("", {"DTNODE_FETCH_TIMEOUT_S": "soon"}, "environment variable DTNODE_FETCH_TIMEOUT_S"),
        ("", {"DTNODE_CONTRACT_ADDRESS": "0x12"}, "setting 'contract_address'"),
        ("not toml [", {}, "not valid TOML"),
    ],
)
def test_invalid_values_name_the_setting(tmp_path: Path, toml_text: str, env: dict[str, str], needle: str) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text(toml_text)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        load_config(toml_path=toml, env=env, flags={})


def test_dev_accounts_are_refused_off_dev_chains() -> None:
    from node.commands import refuse_dev_account_off_dev_chain
    from node.config import NodeConfig

    dev = NodeConfig(dev_account=3)
    for chain_id in (31337, 131277322940537):
        refuse_dev_account_off_dev_chain(dev, chain_id)
    with pytest.raises(ConfigError, match="chain id 1, not a local dev chain"):
        refuse_dev_account_off_dev_chain(dev, 1)
    refuse_dev_account_off_dev_chain(NodeConfig(), 1)  # a keystore account is fine anywhere


def test_nat_flags_reach_the_node_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from node.commands import config_from_args

    for name in ("DTNODE_REACHABILITY", "DTNODE_RELAYS", "DTNODE_RELAY_SERVICE", "DTNODE_HOLE_PUNCHING"):
        monkeypatch.delenv(name, raising=False)
    relay = "/ip4/192.0.2.1/tcp/4001/p2p/12D3KooWLJmSLDPnTrnSb5nMRdwJ2CJ3ZakUTBRvUKuPMSNaeRyd"
    args = build_parser().parse_args(["--role", "trainer", "--reachability", "private", "--relay", relay,
                                      "--no-relay-service", "--no-hole-punching"])
    cfg = config_from_args(args)
    assert (cfg.reachability, cfg.relays, cfg.relay_service, cfg.hole_punching) == ("private", (relay,), False,
                                                                                     False)
    cfg = config_from_args(build_parser().parse_args(["--role", "trainer"]))
    assert (cfg.reachability, cfg.relays, cfg.relay_service, cfg.hole_punching) == ("auto", (), True, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--reachability", "sometimes"])
