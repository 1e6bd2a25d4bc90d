#!/usr/bin/env bash
# `make bench`: every benchmark in its quick form, one after another (each prints its own side-by-side ratios).
# The full forms, and the figures they produced, are in docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m[bench]\033[0m %s\n' "$*"; }
PY=.venv/bin/python
say "storage";  $PY bench/bench_storage.py --mb 16 --runs 1
say "chain";    $PY bench/bench_chain.py --n 10
say "p2p";      $PY bench/bench_p2p.py --nodes 10
say "training"; $PY bench/bench_training.py --quick
say "devnet";   $PY bench/bench_devnet.py --processes --quick
