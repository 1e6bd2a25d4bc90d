"""``dtnode devnet``: a whole local network training a real job end to end (Fashion-MNIST; ``--task`` for others).

Default (processes): a Hardhat node from ``contracts/`` on a free port, the JobManager deployed, a customer node in
this process (the bootstrap peer and the provider of the job's content), and N trainer, M validator and two
leader-candidate ``dtnode`` processes on 127.0.0.1 that find each other by gossip from that one bootstrap address.
``--embedded``: the same network inside this process on an in-process py-evm chain (no Node.js needed; also what
the fast tests drive). Either way the customer posts the job with its deposit, follows the rounds, fetches the
final weights by CID, verifies and evaluates them, withdraws the refund and prints a summary.

- :mod:`~node.devnet.plan`: the demo spec, the plan, the account plan and each node's config (pure data);
- :mod:`~node.devnet.demos`: the demos (``--task fmnist|finetune|lm``): spec defaults, data, customer checkpoint;
- :mod:`~node.devnet.pretrain`: the fine-tuning demo's customer checkpoint, trained in one process;
- :mod:`~node.devnet.supervisor`: starting and stopping the chain and the nodes (processes or in-process);
- :mod:`~node.devnet.config_file`: a node's config as the TOML file its process reads;
- :mod:`~node.devnet.customer_flow`: the customer's steps, the customer role's code in order;
- :mod:`~node.devnet.ledger`: the job's money read from the chain at the end;
- :mod:`~node.devnet.run`: one run, start to summary.
"""

from node.devnet.plan import DevnetPlan, demo_spec
from node.devnet.run import DevnetResult, run_devnet
from node.devnet.supervisor import Devnet

__all__ = ["Devnet", "DevnetPlan", "DevnetResult", "demo_spec", "run_devnet"]
