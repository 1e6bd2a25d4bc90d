#!/usr/bin/env bash
# The optional Flower side of bench/bench_peers.py: a venv of its own (.venv-flower, git-ignored) with Flower 1.42,
# layered over dtnode's .venv (torch and the node package come from there), so neither environment's pins move.
#     bash bench/setup_flower.sh            # once; then: .venv/bin/python bench/bench_peers.py
set -euo pipefail
cd "$(dirname "$0")/.."
base_python="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
"$base_python" -m venv .venv-flower
.venv-flower/bin/pip install -q --no-deps -r bench/requirements-flower.txt
site_packages="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
flower_site="$(.venv-flower/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# Appended after Flower's own packages: flwr's pins win inside the Flower processes, torch and dtnode come from .venv.
echo "import site; site.addsitedir('$site_packages')" > "$flower_site/zz-dtnode-venv.pth"
.venv-flower/bin/python -c 'import flwr, torch, node.training; print("flwr", flwr.__version__, "ready")'
