"""Write docker/demo/job.json: the devnet's demo job, naming the CIDs that ``dtnode dataset add`` produces.

Content addressing makes those CIDs a pure function of the data and the sharding (16 IID shards, seed 0, a
2,000-image evaluation shard), so the compose network's publisher (``dtnode dataset add ... --shards 16``) yields
exactly these, and the customer's ``dtnode job create`` can post the file as it is. ``tests/docker`` recomputes
them and fails with this command when they drift:

    .venv/bin/python docker/demo/make_job.py > docker/demo/job.json
"""

from __future__ import annotations

import json
import sys
import tempfile

import trio

from node.checkpoint import initial_checkpoint
from node.devnet import demo_spec
from node.roles.customer import publish_fashion_mnist
from protocols.specs import JobSpec
from storage.blockstore import FilesystemBlockStore
from storage.content import LocalContentStore

SHARDS = 16
TRAINERS = 4
"""Tasks per round: one per trainer service in compose.yaml."""


async def demo_job(base: JobSpec | None = None, *, dataset_root: str | None = None) -> JobSpec:
    """``base`` (default: the devnet's demo spec for 4 trainers) with the content CIDs filled in."""
    spec = base or demo_spec(trainers=TRAINERS)
    with tempfile.TemporaryDirectory(prefix="dtnode-demo-job-") as tmp:
        store = LocalContentStore(FilesystemBlockStore(tmp, max_bytes=1 << 32, durable=False))
        data = await publish_fashion_mnist(store, shards=SHARDS, root=dataset_root)
        checkpoint = await store.put(initial_checkpoint(spec.model, spec.seed))
    return spec.with_content(dataset_cid=data.dataset_cid, eval_cid=data.eval_cid,
                             initial_checkpoint_cid=checkpoint)


def render(spec: JobSpec) -> str:
    return json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(trio.run(demo_job)))
