"""Implementations of the ``dtnode`` commands; the parser lives in :mod:`node.cli`.

Each command validates its config before touching the network or the chain, and turns every expected failure into a
:class:`~protocols.errors.DtnodeError` with a message that says what to do.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.config import NodeConfig, load_config
from node.logs import setup_logging
from protocols.errors import ConfigError

if TYPE_CHECKING:
    from node.content import ContentNode
    from protocols.chain.client import JobManagerClient

T = TypeVar("T")

_FLAG_NAMES = (
    "chain_rpc_url", "chain_ws_url", "contract_address", "key_file", "dev_account", "data_dir", "node_class",
    "log_format", "log_level", "device", "http", "reachability", "relay_service", "hole_punching",
)
log = logging.getLogger("dtnode")


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Build the node's config from ``--config`` TOML < DTNODE_* env < flags."""
    flags: dict[str, Any] = {name: getattr(args, name, None) for name in _FLAG_NAMES}
    if getattr(args, "bootstrap", None):
        flags["bootstrap"] = list(args.bootstrap)
    if getattr(args, "relays", None):
        flags["relays"] = list(args.relays)
    if getattr(args, "listen", None):
        flags["listen"] = list(args.listen)
    if getattr(args, "role", None):
        flags["roles"] = args.role
    if getattr(args, "job", None):
        flags["jobs"] = list(args.job)
    return load_config(toml_path=getattr(args, "config", None), env=os.environ, flags=flags)


def _passphrase(cfg: NodeConfig, *, confirm: bool = False) -> str:
    value = os.environ.get(cfg.key_passphrase_env)
    if value:
        return value
    if not sys.stdin.isatty():
        raise ConfigError(f"setting 'key_passphrase_env': set {cfg.key_passphrase_env} to the keystore passphrase "
                          "(no terminal to prompt on)")
    first = getpass.getpass("keystore passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ConfigError("the two passphrases differ")
    return first


def load_account(cfg: NodeConfig) -> LocalAccount:
    """The node's account: an encrypted keystore, or (local devnets only) a Hardhat public dev account."""
    if cfg.dev_account >= 0:
        from protocols.chain.backends import dev_accounts

        if cfg.dev_account >= 20:
            raise ConfigError(f"setting 'dev_account': {cfg.dev_account} is not one of Hardhat's 20 dev accounts")
        return dev_accounts(20)[cfg.dev_account]
    if not cfg.key_file:
        raise ConfigError("setting 'key_file': create one with `dtnode keys new -o key.json` and pass --key-file "
                          "(or --dev-account N on a local devnet)")
    from protocols.p2p.keystore import load_identity

    identity = load_identity(cfg.key_file, _passphrase(cfg))
    account: LocalAccount = Account.from_key(identity.private_key_bytes())
    return account


def refuse_dev_account_off_dev_chain(cfg: NodeConfig, chain_id: int) -> None:
    """``--dev-account`` acts as a Hardhat account whose key is public: anyone can spend from it. Refuse it on any
    chain but a local dev chain (Hardhat's 31337, eth-tester's 131277322940537)."""
    from protocols.chain.backends import DEV_CHAIN_IDS

    if cfg.dev_account >= 0 and chain_id not in DEV_CHAIN_IDS:
        raise ConfigError(f"setting 'dev_account': {cfg.chain_rpc_url} serves chain id {chain_id}, not a local dev "
                          f"chain ({', '.join(map(str, sorted(DEV_CHAIN_IDS)))}); Hardhat's dev keys are public, so "
                          "anyone could spend from that account there: use --key-file (`dtnode keys new`)")


def _client(cfg: NodeConfig, account: LocalAccount) -> Any:
    from protocols.chain.backends import connect_http
    from protocols.chain.client import JobManagerClient

    if not cfg.contract_address:
        raise ConfigError("setting 'contract_address': pass --contract 0x... (the JobManager deployment)")
    w3 = connect_http(cfg.chain_rpc_url, request_timeout_s=min(cfg.chain_timeout_s, 10.0))
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # requests/urllib3 raise many types for a dead endpoint
        raise ConfigError(f"setting 'chain_rpc_url': {cfg.chain_rpc_url} does not answer ({exc.__class__.__name__});"
                          " is the chain running?") from exc
    refuse_dev_account_off_dev_chain(cfg, chain_id)
    if not w3.eth.get_code(w3.to_checksum_address(cfg.contract_address)):
        raise ConfigError(f"setting 'contract_address': no contract at {cfg.contract_address} on {cfg.chain_rpc_url}")
    return JobManagerClient(w3, cfg.contract_address, account)


async def _serve_until_signal(node: Any) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for sig in signals:
                    log.info("received %s: stopping cleanly", signal.Signals(sig).name)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch)


def run_node(args: argparse.Namespace) -> int:
    """``dtnode --role ...``: run until SIGINT/SIGTERM."""
    cfg = config_from_args(args)
    if not cfg.roles:
        raise ConfigError("setting 'roles': choose --role trainer, validator, leader or provider")
    setup_logging(fmt=cfg.log_format, level=cfg.log_level, name=os.environ.get("DTNODE_NODE_NAME", ""))
    from node.hardware import settle_hardware

    cfg = settle_hardware(cfg, log=log)  # device resolved, class measured: before any key or chain is touched
    account = load_account(cfg)
    client = _client(cfg, account)
    from node.runtime import DtNode

    node = DtNode(config=cfg, account=account, client=client)
    trio.run(_serve_until_signal, node)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from protocols.p2p.keystore import create_keystore, load_identity

    cfg = load_config(env=os.environ)
    if args.keys_command == "new":
        identity = create_keystore(args.out, _passphrase(cfg, confirm=True))
    else:
        identity = load_identity(args.path, _passphrase(cfg))
    print(json.dumps({"address": str(identity.eth_address), "peer_id": str(identity.peer_id_str)}))
    return 0


async def _with_store(cfg: NodeConfig, fn: Any, *, kubo: str | None = None) -> Any:
    """Run ``fn(store)`` with this node's block store (serving peers while it runs), or a Kubo daemon's."""
    if kubo:
        from storage.content import KuboContentStore

        store = KuboContentStore(kubo, timeout_s=cfg.fetch_timeout_s)
        try:
            return await fn(store)
        finally:
            store.close()
    return await _with_content(cfg, lambda node: fn(node.store))


async def _with_content(cfg: NodeConfig, fn: Callable[[ContentNode], Awaitable[T]]) -> T:
    """Run ``fn`` with this machine's block store: offline without bootstrap peers, else behind a short-lived libp2p
    host (a fresh identity) that fetches from and serves to the network while ``fn`` runs. The same assembly as a
    running node's (:func:`node.content.start_content_node`)."""
    from node.content import ContentNode, open_blockstore, start_content_node

    if not cfg.bootstrap:
        return await fn(ContentNode(open_blockstore(cfg), fetch_timeout_s=cfg.fetch_timeout_s))
    from protocols.p2p.config import P2PConfig
    from protocols.p2p.identity import NodeIdentity
    from protocols.p2p.node import P2PNode

    net = P2PNode(NodeIdentity.generate(), P2PConfig(listen_addrs=tuple(cfg.listen), bootstrap=tuple(cfg.bootstrap)))
    async with trio.open_nursery() as nursery:
        node = await start_content_node(nursery, cfg, net)
        await net.wait_for_peers(1, cfg.fetch_timeout_s)
        result = await fn(node)
        nursery.cancel_scope.cancel()
    return result


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def job_status(cfg: NodeConfig, client: JobManagerClient, job_id: int, *, evaluate: bool = True,
                     progress: Callable[[str], None] = _progress) -> dict[str, Any]:
    """``dtnode job status N``: state, lease, money, and per committed round its leader, checkpoint and accuracy.

    The accuracy is measured here, on the job's evaluation shard, from each checkpoint fetched by its CID
    (``evaluate=False``: chain reads only).
    """
    from node.chainio import AsyncChain
    from node.roles.customer import evaluate_rounds, job_payments, round_history
    from protocols.chain.models import JobStatus

    chain = AsyncChain(timeout_s=cfg.chain_timeout_s)
    job = await chain(lambda: client.get_job(job_id), what=f"getJob({job_id})")
    history = await chain(lambda: round_history(client, job_id), what="RoundCommitted logs")
    payments = await chain(lambda: job_payments(client, job_id), what="PaidOut and FeePaid logs")
    measured_on: dict[str, Any] | None = None
    if evaluate and history:
        from storage.errors import StorageError

        try:
            eval_cid, samples, history = await _with_content(
                cfg, lambda node: evaluate_rounds(node, job, history, progress=progress))
        except StorageError as exc:
            if cfg.bootstrap:
                raise
            raise ConfigError(f"setting 'bootstrap': the job's spec or evaluation shard is not in {cfg.data_path} "
                              f"({exc}); pass --bootstrap MULTIADDR to fetch from the network, or --no-eval") from exc
        measured_on = {"eval_cid": eval_cid, "samples": samples}
    return {
        "job_id": job_id, "status": JobStatus(job.status).name, "rounds": f"{job.committed_rounds}/{job.params.rounds}",
        "leader": job.leader, "lease_expiry": job.lease_expiry, "term": job.term,
        "deposit_wei": job.deposit, "spent_wei": job.spent, "refunded_wei": job.refunded,
        "accuracy_measured_on": measured_on,
        "history": [{"round": e.round, "leader": e.leader, "checkpoint": e.checkpoint_cid, "accuracy": e.accuracy,
                     "loss": e.loss, **dict([e.metric] if e.metric else []), **({"error": e.error} if e.error else {})}
                    for e in history],
        "payments_wei": dict(sorted(payments.items(), key=lambda kv: -kv[1])),
    }


def _image_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    height, sep, width = text.lower().partition("x")
    if not (sep and height.isdigit() and width.isdigit()):
        raise ConfigError(f"--image-size {text!r}: expected HEIGHTxWIDTH, e.g. 32x32")
    return int(height), int(width)


def dataset_add(cfg: NodeConfig, args: argparse.Namespace) -> int:
    """``dtnode dataset add PATH --format …``: read, shard and publish a dataset; print its CIDs and description."""
    from node.roles.dataset_publish import publish_files
    from node.training.datasets.source import SourceOptions

    options = SourceOptions(format=args.format, licence=args.licence or "", image_size=_image_size(args.image_size),
                            context_length=args.context_length or 0, tokenizer=args.tokenizer or "")

    async def add(store: Any) -> Any:
        return await publish_files(store, Path(args.path), options, shards=args.shards,
                                   non_iid_alpha=args.non_iid_alpha, eval_samples=args.eval_samples,
                                   eval_fraction=args.eval_fraction, seed=args.seed)

    data = trio.run(lambda: _with_store(cfg, add, kubo=args.to_kubo))
    info = data.info
    print(json.dumps({"dataset_cid": data.dataset_cid, "eval_cid": data.eval_cid, "shards": data.shards,
                      "train_samples": data.train_samples, "eval_samples": data.eval_samples,
                      "format": info.format, "task": info.task, "input_shape": list(info.input_shape),
                      "input_dtype": info.input_dtype,
                      **({"classes": len(info.classes)} if info.classes else {"vocab_size": info.vocab_size,
                                                                               "tokenizer": info.tokenizer})}))
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    setup_logging(fmt=cfg.log_format, level=cfg.log_level)
    if args.dataset_command == "add":
        return dataset_add(cfg, args)
    from storage.dataset import fetch_dataset_manifest

    async def get(store: Any) -> Any:
        manifest = await fetch_dataset_manifest(store, args.cid, timeout_s=cfg.fetch_timeout_s)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for i, shard in enumerate(manifest.shards):
            data = await store.get(shard.cid, max_bytes=cfg.max_dag_bytes, timeout_s=cfg.fetch_timeout_s)
            (out / f"shard-{i:04d}.safetensors").write_bytes(data)
        (out / "manifest.json").write_bytes(manifest.to_bytes())
        return manifest

    manifest = trio.run(lambda: _with_store(cfg, get, kubo=args.from_kubo))
    print(json.dumps({"shards": len(manifest.shards), "samples": manifest.total_samples, "out": args.out}))
    return 0


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc


def cmd_job(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    setup_logging(fmt=cfg.log_format, level=cfg.log_level)
    account = load_account(cfg)
    client = _client(cfg, account)
    from protocols.specs import JobSpec

    if args.job_command == "create":
        from node.job_model import prepare_job_model
        from node.roles.customer import post_job

        spec = JobSpec.from_bytes(_read_file(args.spec, "job spec file"))
        init_weights = _read_file(args.init, "--init file") if args.init else None
        model_file = _read_file(args.model_file, "--model-file") if args.model_file else None

        async def create(store: Any) -> Any:
            full, initial = await prepare_job_model(store, spec, model_file=model_file, init_weights=init_weights,
                                                    timeout_s=cfg.fetch_timeout_s)
            return await post_job(store, client, full, initial=initial)

        job_id, spec_cid, deposit = trio.run(lambda: _with_store(cfg, create))
        print(json.dumps({"job_id": job_id, "spec_cid": spec_cid, "deposit_wei": deposit}))
        return 0
    if args.job_command == "cancel":
        client.cancel_job(args.job_id)
        owed = client.balance_of(account.address)
        if owed:
            client.withdraw()
        print(json.dumps({"job_id": args.job_id, "cancelled": True, "refund_withdrawn_wei": owed}))
        return 0
    if args.job_command == "status":
        if args.plot and args.no_eval:
            raise ConfigError("--plot draws the measured rounds: drop --no-eval")
        report = trio.run(lambda: job_status(cfg, client, args.job_id, evaluate=not args.no_eval))
        if args.plot:
            from node.http.plot import points_from_status, write_curve_png

            report["plot"] = str(write_curve_png(Path(args.plot), points_from_status(report["history"]),
                                                 title=f"job {args.job_id}: metric and loss per round"))
        print(json.dumps(report, indent=2))
        return 0
    job = client.get_job(args.job_id)
    # fetch
    from node.roles.customer import fetch_final_weights
    from node.training.codec import encode_state
    from node.training.models.onnx_graph import load_model_files

    async def fetch(store: Any) -> Any:
        spec_bytes = await store.get(job.params.spec_cid, max_bytes=1 << 20, timeout_s=cfg.fetch_timeout_s)
        spec = JobSpec.from_bytes(spec_bytes)
        await load_model_files(spec, lambda cid, limit: store.get(cid, max_bytes=limit, timeout_s=cfg.fetch_timeout_s))
        return await fetch_final_weights(store, job, spec, timeout_s=cfg.fetch_timeout_s)

    model = trio.run(lambda: _with_store(cfg, fetch))
    Path(args.out).write_bytes(encode_state(model))
    print(json.dumps({"job_id": args.job_id, "checkpoint": job.last_checkpoint_cid, "out": args.out}))
    return 0


def cmd_devnet(args: argparse.Namespace) -> int:
    from node.devnet import run_devnet
    from node.devnet.demos import demo_plan

    setup_logging(fmt=args.log_format, level="WARNING")
    plan = demo_plan(args.task, trainers=args.trainers, rounds=args.rounds, validators=args.validators,
                     embedded=args.embedded, workdir=Path(args.workdir) if args.workdir else None,
                     log_format=args.log_format)
    plan = dataclasses.replace(plan, http=args.http)
    spec = plan.spec
    if plan.trainers < 1 or args.validators < spec.payment.quorum:
        raise ConfigError(f"devnet: need at least 1 trainer and {spec.payment.quorum} validators (the quorum)")
    result = trio.run(run_devnet, plan)
    return 0 if result.final_accuracy > 0 else 1
