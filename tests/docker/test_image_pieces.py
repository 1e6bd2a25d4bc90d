"""What the containers run besides ``dtnode`` itself, exercised here for real: the health probe against a real
libp2p node, the demo job's CIDs against a real ``dataset add``, and both deployers (compose's one-shot and the
keystore-based one for public chains) against a real Hardhat node."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from node.config import load_config
from protocols.chain.backends import HardhatNode, dev_accounts, free_port, hardhat_available
from protocols.p2p.identity import NodeIdentity
from protocols.p2p.keystore import create_keystore, identity_from_account
from protocols.p2p.node import P2PNode
from protocols.p2p.testing import loopback_config
from protocols.specs import JobSpec

from .helpers import COMPOSE, DOCKER, ROOT, load_compose, load_module, service_command

health = load_module(DOCKER / "healthcheck.py", "dtnode_docker_healthcheck")
make_job = load_module(DOCKER / "demo" / "make_job.py", "dtnode_docker_make_job")
deployer_py = load_module(DOCKER / "deploy_jobmanager.py", "dtnode_docker_deploy_jobmanager")


def probe_env(port: int, host: str = "0.0.0.0") -> dict[str, str]:
    return {"DTNODE_LISTEN": f"/ip4/{host}/tcp/{port},/ip4/127.0.0.1/tcp/9"}


async def test_health_probe_passes_on_a_live_node_and_fails_on_a_dead_port() -> None:
    port = free_port()
    node = P2PNode(NodeIdentity.generate(), loopback_config(listen_addrs=(f"/ip4/0.0.0.0/tcp/{port}",)))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        assert await trio.to_thread.run_sync(health.main, probe_env(port)) == 0
        await node.stop()
    # (Not the same port after stop(): py-libp2p 0.8.1 leaves the listener open until the process exits.)
    assert await trio.to_thread.run_sync(health.main, probe_env(free_port())) == 1


async def test_health_probe_rejects_a_port_that_is_not_libp2p() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def accept_and_answer_garbage() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, accept_and_answer_garbage)
            assert await trio.to_thread.run_sync(health.main, probe_env(port, "127.0.0.1")) == 1


async def test_health_probe_times_out_on_a_listener_that_never_answers() -> None:
    # A stuck event loop: the kernel accepts the connection, nobody answers. A bare TCP check would pass.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        env = {**probe_env(port, "127.0.0.1"), "DTNODE_HEALTH_TIMEOUT_S": "0.5"}
        assert await trio.to_thread.run_sync(health.main, env) == 1


def test_health_probe_targets(capsys: pytest.CaptureFixture[str]) -> None:
    assert health.target({"DTNODE_LISTEN": "/ip4/0.0.0.0/tcp/4001"}) == ("127.0.0.1", 4001)
    assert health.target({"DTNODE_LISTEN": "/ip6/::/tcp/4001"}) == ("::1", 4001)
    assert health.target({"DTNODE_LISTEN": "/ip4/10.0.0.5/tcp/4001", "DTNODE_HEALTH_ADDR": "/ip4/127.0.0.1/tcp/5"}) \
        == ("127.0.0.1", 5)
    assert health.target({"DTNODE_LISTEN": "/ip4/127.0.0.1/tcp/0"}) is None
    assert health.main({}) == 0 and "nothing to probe" in capsys.readouterr().out
    assert health.main({"DTNODE_LISTEN": "/unix/tmp/sock"}) == 1
    assert "DTNODE_HEALTH_ADDR" in capsys.readouterr().out


def test_demo_job_names_the_cids_that_dataset_add_produces() -> None:
    """compose's publisher runs `dtnode dataset add ... --shards 16`; job.json must name exactly its CIDs."""
    publisher = service_command(load_compose(COMPOSE)["services"]["publisher"])
    assert publisher[publisher.index("--shards") + 1] == str(make_job.SHARDS)
    assert publisher[2] == "/usr/share/datasets/fashion-mnist"
    committed = JobSpec.from_bytes((DOCKER / "demo" / "job.json").read_bytes())
    fresh = trio.run(make_job.demo_job, committed)
    for field in ("dataset_cid", "eval_cid", "initial_checkpoint_cid"):
        assert getattr(committed, field) == getattr(fresh, field), (
            f"docker/demo/job.json's {field} is stale: regenerate it with "
            "`.venv/bin/python docker/demo/make_job.py > docker/demo/job.json`")


@pytest.mark.hardhat
def test_deployers_against_a_real_hardhat_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """deploy_once.js deploys, writes network.toml, then is a no-op; deploy_jobmanager.py deploys from a keystore."""
    if not hardhat_available() or shutil.which("node") is None:
        pytest.skip("Node.js or contracts/node_modules missing (run `npm ci` in contracts/)")
    contracts = ROOT / "contracts"
    health_js = DOCKER / "chain" / "rpc_health.js"
    dead = subprocess.run(["node", str(health_js), f"http://127.0.0.1:{free_port()}"], capture_output=True,
                          text=True, timeout=30)
    assert dead.returncode == 1 and "UNHEALTHY" in dead.stdout
    with HardhatNode() as chain:
        alive = subprocess.run(["node", str(health_js), chain.url], capture_output=True, text=True, timeout=30)
        assert alive.returncode == 0, alive.stdout + alive.stderr
        deployer = load_compose(COMPOSE)["services"]["deployer"]
        env = {**os.environ, **deployer["environment"], "HARDHAT_RPC_URL": chain.url,
               "NETWORK_DIR": str(tmp_path / "network")}
        run = [*deployer["entrypoint"], str(DOCKER / "chain" / "deploy_once.js")]
        first = subprocess.run(run, cwd=contracts, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr
        toml = tmp_path / "network" / "network.toml"
        cfg = load_config(toml_path=toml, env={}, flags={"chain_rpc_url": chain.url})
        w3 = chain.web3()
        assert w3.eth.get_code(w3.to_checksum_address(cfg.contract_address)), "no contract at the written address"
        written = toml.read_text()
        second = subprocess.run(run, cwd=contracts, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0 and "already deployed" in second.stdout, second.stdout + second.stderr
        assert toml.read_text() == written
        # docker/deploy_jobmanager.py: the README's route to a public chain, with a keystore (here a dev key's).
        keystore = tmp_path / "keys" / "key.json"
        create_keystore(keystore, "pw", identity=identity_from_account(dev_accounts(1)[0]), scrypt_n=2)
        for key in [k for k in os.environ if k.startswith("DTNODE_")]:
            monkeypatch.delenv(key)
        for key, value in {"DTNODE_CHAIN_RPC_URL": chain.url, "DTNODE_KEY_FILE": str(keystore),
                           "DTNODE_KEY_PASSPHRASE": "pw"}.items():
            monkeypatch.setenv(key, value)
        assert deployer_py.main(["--deregistration-delay-s", "60"]) == 0
        deployed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert w3.eth.get_code(w3.to_checksum_address(deployed["contract_address"]))
        assert deployed["chain_id"] == 31337 and deployed["deployer"] == dev_accounts(1)[0].address
