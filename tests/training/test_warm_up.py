"""node.training.local.warm_up: what a node runs at start-up so that its first task or replay loads nothing on the
round's clock (``torch.use_deterministic_algorithms`` imports torch's compiler stack on first use). Run in a fresh
interpreter: this test process has loaded that stack long ago."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, torch
from node.training.local import deterministic_torch, warm_up
threads = torch.get_num_threads()
before = set(sys.modules)
warm_up()
loaded = set(sys.modules) - before
assert torch.get_num_threads() == threads, "warm_up changed the thread count"
assert not torch.are_deterministic_algorithms_enabled(), "warm_up left deterministic algorithms on"
with deterministic_torch():
    pass
print(len(loaded), len(set(sys.modules) - before - loaded))
"""


def test_warm_up_loads_what_the_first_deterministic_run_would() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=300)
    loaded, late = map(int, done.stdout.split())
    assert loaded > 100  # torch._dynamo, torch._inductor, sympy ...: hundreds of modules
    assert late == 0
