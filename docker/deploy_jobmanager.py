"""Deploy JobManager to any chain (a public testnet such as Sepolia) with the node's own keystore.

Runs inside the dtnode image, so no private key ever leaves its encrypted keystore or enters an environment
variable, a shell history or a Hardhat config::

    docker run --rm -v dtnode-join_dtnode-keys:/keys:ro -e DTNODE_KEY_FILE=/keys/key.json \\
        -e DTNODE_KEY_PASSPHRASE -e DTNODE_CHAIN_RPC_URL --entrypoint python dtnode:local \\
        /opt/dtnode/deploy_jobmanager.py

The account must hold enough ether for the deployment gas. Prints one JSON line: the contract address (give it
to every node as DTNODE_CONTRACT_ADDRESS), the chain id, the deployer and the block.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from node.commands import load_account, refuse_dev_account_off_dev_chain
from node.config import load_config
from protocols.chain.backends import connect_http
from protocols.chain.client import DeploySettings, deploy
from protocols.errors import DtnodeError

ETH = 10**18


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-trainer-stake-wei", type=int, default=ETH // 10)
    parser.add_argument("--min-validator-stake-wei", type=int, default=ETH // 10)
    parser.add_argument("--min-update-bond-wei", type=int, default=ETH // 100)
    parser.add_argument("--validator-slash-wei", type=int, default=ETH // 100)
    parser.add_argument("--min-leader-bond-wei", type=int, default=ETH // 100)
    parser.add_argument("--deregistration-delay-s", type=int, default=3600)
    parser.add_argument("--min-quorum", type=int, default=DeploySettings().min_quorum,
                        help="smallest quorum a job may choose (5: <= 0.41%% acceptance of a fabricated update at "
                             "1/3 of the stake)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(env=os.environ)
        account = load_account(cfg)
        w3 = connect_http(cfg.chain_rpc_url, request_timeout_s=cfg.chain_timeout_s)
        balance = w3.eth.get_balance(account.address)
        if balance == 0:
            raise DtnodeError(f"{account.address} has no ether on {cfg.chain_rpc_url}: fund it for the gas first")
        refuse_dev_account_off_dev_chain(cfg, int(w3.eth.chain_id))
        client = deploy(w3, account, DeploySettings(
            min_trainer_stake=args.min_trainer_stake_wei, min_validator_stake=args.min_validator_stake_wei,
            min_update_bond=args.min_update_bond_wei, validator_slash=args.validator_slash_wei,
            min_leader_bond=args.min_leader_bond_wei, deregistration_delay=args.deregistration_delay_s,
            min_quorum=args.min_quorum))
    except DtnodeError as exc:
        print(f"deploy_jobmanager: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"contract_address": client.address, "chain_id": w3.eth.chain_id,
                      "deployer": account.address, "block": w3.eth.block_number}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
