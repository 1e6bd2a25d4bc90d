"""The devnet's hand-over to a node process: the TOML it writes reads back as the very config it was given."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from node.config import NodeConfig, load_config
from node.devnet.config_file import config_toml, write_config

AWKWARD = NodeConfig(
    roles=("leader",), jobs=(3, 7), bootstrap=("/ip4/127.0.0.1/tcp/4001/p2p/Qm\"x\\y",),
    data_dir='C:\\dtnode "data"\\node\t1', key_file="it's a \\\\server\\key.json", node_class="S",
    audit_all_rounds=True, chain_poll_interval_s=0.25, trainer_stake_wei=10**17, max_dag_bytes=1 << 30,
    contract_address="0x" + "ab" * 20, dev_account=4,
)


def test_every_setting_reads_back_with_tomllib() -> None:
    table = tomllib.loads(config_toml(AWKWARD))
    expected = {f.name: getattr(AWKWARD, f.name) for f in dataclasses.fields(AWKWARD) if f.name != "extra"}
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()} == expected
    assert table["data_dir"] == 'C:\\dtnode "data"\\node\t1'
    assert table["audit_all_rounds"] is True and table["jobs"] == [3, 7]


def test_load_config_reads_the_written_file_as_the_same_config(tmp_path: Path) -> None:
    path = write_config(AWKWARD, tmp_path / "node.toml")
    assert load_config(toml_path=path, env={}, flags={}) == AWKWARD
    default = write_config(NodeConfig(), tmp_path / "default.toml")
    assert load_config(toml_path=default, env={}, flags={}) == NodeConfig()
