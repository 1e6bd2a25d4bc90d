"""The ``dtnode`` command line: one binary, role chosen at start-up, plus customer and devnet commands.

Heavy imports (torch, web3, libp2p) happen inside the command that needs them, so ``--help`` and config errors
answer at once. Every :class:`~protocols.errors.DtnodeError` becomes a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from node import __version__
from protocols.errors import DtnodeError
from protocols.types import NodeClass

EXIT_USER_ERROR = 2
DEVNET_DEMOS = ("fmnist", "finetune", "lm")
"""``dtnode devnet --task`` (node.devnet.demos.DEMOS, named here so that --help imports no torch)."""


def _add_node_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("node settings (TOML file < DTNODE_* environment < flags)")
    g.add_argument("--config", metavar="FILE", help="TOML config file")
    g.add_argument("--rpc", dest="chain_rpc_url", metavar="URL", help="chain JSON-RPC URL")
    g.add_argument("--ws", dest="chain_ws_url", metavar="URL",
                   help="the chain's WebSocket JSON-RPC URL: act on each block as it is mined (default: poll)")
    g.add_argument("--contract", dest="contract_address", metavar="ADDR", help="JobManager contract address")
    g.add_argument("--key-file", dest="key_file", metavar="FILE", help="encrypted keystore JSON (dtnode keys new)")
    g.add_argument("--dev-account", dest="dev_account", type=int, metavar="N",
                   help="act as Hardhat public dev account N (local devnets only)")
    g.add_argument("--bootstrap", metavar="MULTIADDR", action="append", help="bootstrap peer (repeatable)")
    g.add_argument("--listen", metavar="MULTIADDR", action="append", help="listen address (repeatable)")
    g.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="block store, keys and state")
    g.add_argument("--class", "--node-class", dest="node_class", choices=list(NodeClass.__members__),
                   help="node class: measured at start-up by default; a declared one is capped at the measured one")
    g.add_argument("--device", dest="device", choices=["cpu", "cuda", "auto"],
                   help="train and replay on: cpu, cuda, or auto (default: cuda if torch sees a GPU, else cpu)")
    g.add_argument("--log-format", dest="log_format", choices=["text", "json"], help="log output format")
    g.add_argument("--http", dest="http", metavar="HOST:PORT",
                   help="serve the read-only web dashboard and /metrics here (off by default; a bare port is "
                        "loopback)")
    g.add_argument("--log-level", dest="log_level", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR")
    nat = p.add_argument_group("behind a NAT (docs/api/p2p.md)")
    nat.add_argument("--reachability", dest="reachability", choices=["auto", "public", "private"],
                     help="auto (default): ask peers to dial back; private: reserve a relay slot at once")
    nat.add_argument("--relay", dest="relays", metavar="MULTIADDR", action="append",
                     help="a relay to reserve a slot on when private (repeatable; default: the bootstrap peers)")
    nat.add_argument("--no-relay-service", dest="relay_service", action="store_const", const=False,
                     help="do not relay for private peers even when public")
    nat.add_argument("--no-hole-punching", dest="hole_punching", action="store_const", const=False,
                     help="stay on relayed connections (no DCUtR upgrade)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dtnode",
        description="Decentralized training node. Run a role (--role trainer|validator|leader), "
        "manage datasets and jobs, or start a local network (devnet).",
    )
    parser.add_argument("--version", action="version", version=f"dtnode {__version__}")
    parser.add_argument("--role", metavar="ROLES",
                        help="comma-separated roles to run: trainer, validator, leader (e.g. trainer,validator)")
    parser.add_argument("--job", metavar="N", type=int, action="append",
                        help="job id this node serves (required with --role leader; repeatable)")
    _add_node_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    keys = sub.add_parser("keys", help="node identity (one secp256k1 key: libp2p peer id and Ethereum account)")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    kn = keys_sub.add_parser("new", help="create an encrypted keystore")
    kn.add_argument("-o", "--out", required=True, help="keystore file to write (mode 0600)")
    ks = keys_sub.add_parser("show", help="print a keystore's peer id and address")
    ks.add_argument("path")

    ds = sub.add_parser("dataset", help="publish or fetch a dataset")
    ds_sub = ds.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    da = ds_sub.add_parser("add", help="shard a dataset, add it to the block store, print its CID")
    da.add_argument("path", help="the dataset: a folder of IDX files (e.g. Fashion-MNIST's), an image folder, a "
                    ".safetensors/.npz file, or a text file or folder")
    da.add_argument("--format", choices=["idx", "image-folder", "tensors", "text"], default="idx",
                    help="idx: {train,t10k,test}-{images,labels}-idx*-ubyte[.gz]; image-folder: one sub-folder of "
                    "PNG/JPEG per class; tensors: arrays inputs, labels (and test_inputs, test_labels); text: UTF-8")
    da.add_argument("--shards", type=int, default=16)
    da.add_argument("--non-iid-alpha", type=float, default=None, help="Dirichlet alpha for label-skewed shards")
    da.add_argument("--licence", default=None, help="the data's licence note, recorded in the manifest")
    da.add_argument("--image-size", default=None, metavar="HxW", help="image-folder: resize every image to HxW "
                    "(default: all images must have the first one's size)")
    da.add_argument("--context-length", type=int, default=None, help="text: tokens per training sequence")
    da.add_argument("--tokenizer", default=None, metavar="bytes|chars|FILE.json",
                    help="text: UTF-8 bytes, the corpus's characters, or a tokenizers JSON file (published too)")
    da.add_argument("--eval-samples", type=int, default=2000, help="size cap of the evaluation shard")
    da.add_argument("--eval-fraction", type=float, default=0.1,
                    help="held out for evaluation when the data has no test split")
    da.add_argument("--seed", type=int, default=0, help="seeds the shard split and the held-out samples")
    da.add_argument("--to-kubo", metavar="API", help="pin to a Kubo RPC daemon (e.g. /ip4/127.0.0.1/tcp/5001)")
    _add_node_flags(da)
    dg = ds_sub.add_parser("get", help="fetch and verify a dataset by CID")
    dg.add_argument("cid")
    dg.add_argument("-o", "--out", required=True)
    dg.add_argument("--from-kubo", metavar="API")
    _add_node_flags(dg)

    job = sub.add_parser("job", help="customer commands")
    job_sub = job.add_subparsers(dest="job_command", metavar="ACTION", required=True)
    jc = job_sub.add_parser("create", help="publish spec and initial checkpoint, deposit, print the job id")
    jc.add_argument("spec", help="job.json")
    jc.add_argument("--init", metavar="FILE.safetensors",
                    help="fine-tune: start from these weights (the model's state dict, safetensors only; checked "
                         "tensor by tensor against the spec's model) instead of a checkpoint generated from the seed")
    jc.add_argument("--model-file", metavar="FILE.onnx",
                    help="model onnx-v1: the ONNX graph to train (published with the job; its CID goes into the "
                         "spec's model_config.onnx_cid)")
    _add_node_flags(jc)
    js = job_sub.add_parser("status", help="rounds, leader, accuracy per round, payments")
    js.add_argument("job_id", type=int)
    js.add_argument("--no-eval", action="store_true",
                    help="skip measuring each round's accuracy (which fetches the checkpoints and the eval shard)")
    js.add_argument("--plot", metavar="FILE.png", help="also write the metric and loss per round as a PNG picture")
    _add_node_flags(js)
    jf = job_sub.add_parser("fetch", help="fetch the verified final weights")
    jf.add_argument("job_id", type=int)
    jf.add_argument("-o", "--out", required=True)
    _add_node_flags(jf)
    jx = job_sub.add_parser("cancel", help="cancel a job no leader serves; refund the rest")
    jx.add_argument("job_id", type=int)
    _add_node_flags(jx)

    dv = sub.add_parser("devnet", help="start a local network and train a demo job end to end (Fashion-MNIST; "
                        "--task finetune or lm for the others)")
    dv.add_argument("--task", choices=DEVNET_DEMOS, default=DEVNET_DEMOS[0],
                    help="fmnist: a CNN from scratch on Fashion-MNIST (the default); finetune: the customer's CNN "
                    "pre-trained on upright Fashion-MNIST (job create --init), fine-tuned on other images transposed; "
                    "lm: a small GPT-2 on Vim's manual, perplexity per round and sampled text. Each has its own "
                    "rounds and sizes")
    dv.add_argument("--trainers", type=int, default=None, help="default: the demo's (4)")
    dv.add_argument("--validators", type=int, default=3)
    dv.add_argument("--rounds", type=int, default=None, help="override the demo job's rounds")
    dv.add_argument("--embedded", action="store_true", help="in-process py-evm chain instead of a Hardhat node")
    dv.add_argument("--workdir", default=None, help="where the devnet keeps its data (default: a temp dir)")
    dv.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                    help="where the customer's node serves the live dashboard (default 127.0.0.1:8080; port 0: any "
                         "free port)")
    dv.add_argument("--log-format", dest="log_format", choices=["text", "json"], default="text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from protocols.p2p.hardening import install_hardening  # libp2p: imported only past --help

        install_hardening()  # once per process, before any command builds a libp2p host
        return _dispatch(parser, args)
    except DtnodeError as exc:
        print(f"dtnode: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dtnode: interrupted", file=sys.stderr)
        return 130


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command is None:
        if not args.role and not args.config and not os.environ.get("DTNODE_ROLES"):
            parser.print_help(sys.stderr)
            print("\ndtnode: error: choose --role trainer|validator|leader or a command", file=sys.stderr)
            return EXIT_USER_ERROR
        from node.commands import run_node

        return run_node(args)
    from node import commands

    handler = getattr(commands, f"cmd_{args.command}")
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
